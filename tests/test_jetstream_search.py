"""Finding a sequence number in a stored session: ``find_record`` and ``JetStreamStore``'s
index of known records, against record layouts a bridge writes (data and lost records
tiling the session from any first number, an end record, other sessions interleaved, a
purged prefix) generated at random, each checked against a plain linear scan.

One real nats-server for the module; every example writes its own session subject.
"""

from __future__ import annotations

import asyncio
import math
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

nats = pytest.importorskip("nats", reason="nats-py is not installed (pip install '.[test]')")

from moldudp64.jetstream import (  # noqa: E402
    JetStreamStore,
    connect,
    ensure_stream,
    find_record,
    session_subject,
)
from nats_support import nats_server  # noqa: E402

STREAM = "SEARCH"


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """One single-node JetStream server on 127.0.0.1 for the module (file storage)."""
    with nats_server(tmp_path_factory.mktemp("js")) as url:

        async def make() -> None:
            nc = await connect(url)
            try:
                await ensure_stream(nc.jetstream(), STREAM)
            finally:
                await nc.close()

        asyncio.run(make())
        yield url


@dataclass(frozen=True)
class Layout:
    """A session as a bridge stores it: ``first`` is its first stored number; ``records``
    are (kind, count) in order (``data`` or ``lost``); ``end``: an end record follows;
    ``others[i]``: records of other sessions appended before record i; the first
    ``purged`` records are removed afterwards (as retention would)."""

    first: int
    records: list[tuple[str, int]]
    end: bool
    others: list[int]
    purged: int


@st.composite
def layouts(draw: Any) -> Layout:
    n = draw(st.integers(0, 60))
    records: list[tuple[str, int]] = []
    for _ in range(n):  # lost ranges may be huge: numbers are far from even over records
        if draw(st.integers(0, 3)) == 0:
            records.append(("lost", draw(st.one_of(st.integers(1, 9), st.integers(1, 10**6)))))
        else:
            records.append(("data", draw(st.integers(1, 9))))
    end = draw(st.booleans())
    others = [draw(st.integers(0, 3)) for _ in range(n + 1)]
    purged = draw(st.integers(0, min(n, 3))) if draw(st.booleans()) else 0
    return Layout(draw(st.integers(1, 1000)), records, end, others, purged)


def payload(first: int, count: int) -> bytes:
    return b"".join(
        len(m).to_bytes(2, "big") + m for m in (b"m%d" % s for s in range(first, first + count))
    )


async def write(js: Any, session: str, layout: Layout) -> list[tuple[int, str, int, int]]:
    """Append ``layout`` as ``session``; its records left as (stream seq, kind, seq, count)."""
    subject = session_subject(STREAM, session)
    other = session_subject(STREAM, session[::-1])
    stored: list[tuple[int, str, int, int]] = []
    seq = layout.first
    rows: list[tuple[str, int]] = [*layout.records, *([("end", 0)] if layout.end else [])]
    for i, (kind, count) in enumerate(rows):
        for _ in range(layout.others[min(i, len(layout.others) - 1)]):
            await js.publish(other, b"", headers={"Mold-Kind": "end", "Mold-Seq": "1"})
        headers = {"Mold-Kind": kind, "Mold-Seq": str(seq), "Mold-Count": str(count)}
        data = payload(seq, count) if kind == "data" else b""
        ack = await js.publish(subject, data, headers=headers)
        stored.append((ack.seq, kind, seq, count))
        seq += count
    for stream_seq, *_ in stored[: layout.purged]:
        await js.delete_msg(STREAM, stream_seq)
    return stored[layout.purged :]


def linear(records: list[tuple[int, str, int, int]], seq: int) -> int | None:
    """The stream seq a reader wanting ``seq`` takes, by a scan: the first record holding
    ``seq`` or more (or the end), else the last one."""
    for stream_seq, kind, first, count in records:
        if kind == "end" or first + count > seq:
            return stream_seq
    return records[-1][0] if records else None


def probes(records: list[tuple[int, str, int, int]], first: int) -> list[int]:
    """Every record's edges, and numbers before, between and after them."""
    out = {1, max(1, first - 1), first}
    for _, _, seq, count in records:
        out.update((seq, seq + count - 1, seq + count, seq + count + 1))
    return sorted(s for s in out if s >= 1)


_names = iter(range(1, 1 << 30))


@settings(
    max_examples=25,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(layout=layouts(), direct=st.booleans())
def test_find_record_takes_what_a_linear_scan_takes_in_log_n_lookups(
    server: str, layout: Layout, direct: bool
) -> None:
    session = f"F{next(_names):09d}"

    async def main() -> list[str]:
        nc = await connect(server)
        wrong: list[str] = []
        try:
            js = nc.jetstream()
            records = await write(js, session, layout)
            bound = 2 * math.log2(max(1, len(records))) + 4
            for seq in probes(records, layout.first):
                rec, lookups = await find_record(js, STREAM, session, seq, direct=direct)
                got = None if rec is None else rec.stream_seq
                if got != linear(records, seq) or lookups > bound:
                    wrong.append(f"seq {seq}: {got} in {lookups} lookups, {records}")
                if rec is not None and rec.kind == "data":  # whole, as stored
                    assert rec.messages == [b"m%d" % s for s in range(rec.seq, rec.next_seq)]
        finally:
            await nc.close()
        return wrong

    assert asyncio.run(asyncio.wait_for(main(), 60)) == []


@settings(
    max_examples=15,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(layout=layouts(), cache_records=st.integers(1, 4))
def test_the_store_answers_every_number_as_the_records_hold_it(
    server: str, layout: Layout, cache_records: int
) -> None:
    """Asked for every record's edges and neighbours out of order (its index of known
    records growing as it goes, its cache small), the store gives exactly the messages
    stored from there (up to a lost range or the end); its bounds are the records' own."""
    session = f"S{next(_names):09d}"

    async def main() -> list[tuple[int, str, int, int]]:
        nc = await connect(server)
        try:
            return await write(nc.jetstream(), session, layout)
        finally:
            await nc.close()

    records = asyncio.run(main())
    held = {
        s: b"m%d" % s
        for _, kind, first, count in records
        if kind == "data"
        for s in range(first, first + count)
    }
    order = probes(records, layout.first)
    order = order[1::2] + order[::2][::-1]  # odd ones up, even ones down: not in order
    store = JetStreamStore(server, STREAM, session, cache_records=cache_records)
    try:
        for seq in order:
            expect = []
            while seq + len(expect) in held and len(expect) < 5:
                expect.append(held[seq + len(expect)])
            assert store.get(seq, 5, 1000) == expect, (seq, records)
        if records:
            assert store.first_seq_num == records[0][2]
            assert store.next_seq_num == records[-1][2] + records[-1][3]
    finally:
        store.close()
