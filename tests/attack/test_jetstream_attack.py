"""Hostile tests of the JetStream layer: foreign records, a stream re-created, an outage.

Each test is a defect found by attacking the documented behaviour (README "Beyond one
machine", ``help(moldudp64.jetstream)``, issue 18 items 13-14): it fails on the code it
was written against and passes once the promise holds. A real single-node nats-server
(tests/nats_support.py) on 127.0.0.1; the bridge is driven through its Python API with
plain events (no feed needed), readers are ``moldudp64 listen nats://`` subprocesses.

The stream every foreign-record test starts from: a running :class:`Bridge` (window 100)
appends messages 1..500 (stream messages 1-5), a stray client then publishes one record
on the session's subject (stream message 6), and the same bridge goes on with 501..700
and the end of session. The bridge refuses the stray record (it says so and counts it in
``records_refused``) and appends the true 501..700 after it; what is tested is what
readers then make of the stream.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from cli_helpers import run, start
from client_support import free_udp_port
from moldudp64 import Message, SessionEnded

pytest.importorskip("nats", reason="nats-py is not installed (pip install '.[test]')")

from moldudp64.jetstream import (
    Bridge,
    JetStreamError,
    connect,
    ensure_stream,
    iter_session,
    session_subject,
)
from nats_support import free_tcp_port, nats_server, server_command, start_server, wait_listening

STREAM = "FEED"
SESSION = "TEST000001"
FOREIGN = "stream message 6"  # where the stray record lands


@pytest.fixture
def nats_url(tmp_path: Path) -> Iterator[str]:
    """A fresh single-node JetStream server."""
    with nats_server(tmp_path / "js") as url:
        yield url


def real(seq: int) -> bytes:
    """The payload of message ``seq`` as the feed sent it."""
    return b"m%06d" % seq


def feed(first: int, last: int) -> list[Message]:
    return [Message(SESSION, seq, real(seq)) for seq in range(first, last + 1)]


def blocks(messages: list[bytes]) -> bytes:
    """MoldUDP64 message blocks, as a data record's payload holds them."""
    return b"".join(len(m).to_bytes(2, "big") + m for m in messages)


def stray(kind: str, seq: int, count: int) -> tuple[dict[str, str], bytes]:
    """A record as a stray client would publish it (data: forged payloads)."""
    headers = {"Mold-Kind": kind, "Mold-Seq": str(seq), "Mold-Count": str(count)}
    payload = blocks([b"FORGED%04d" % i for i in range(count)]) if kind == "data" else b""
    return headers, payload


async def store_with_stray(url: str, headers: dict[str, str], payload: bytes) -> None:
    """1..500 by a bridge, the stray record, then 501..700 and the end by the same bridge
    (which refuses the stray record and appends after it)."""
    nc = await connect(url)
    try:
        js = nc.jetstream()
        await ensure_stream(js, STREAM)
        bridge = Bridge(js, STREAM, window=100)
        for message in feed(1, 500):
            await bridge.add(message)
        await bridge.flush()
        await js.publish(session_subject(STREAM, SESSION), payload, headers=headers)
        await bridge.run([*feed(501, 700), SessionEnded(SESSION, 701)])
        assert bridge.stats.records_refused == 1  # the bridge did its part
    finally:
        await nc.close()


def replay(url: str, *args: str) -> tuple[int, list[tuple[int, bytes]], str]:
    """``listen nats://`` of the session: exit code, (seq, data) written, stderr."""
    proc = run(
        "listen", f"{url}/{STREAM}", "--session", SESSION, "-o", "-", "--format", "jsonl",
        "--idle-timeout", "5", *args, timeout=30,
    )  # fmt: skip
    written = [
        (int(obj["seq"]), bytes.fromhex(str(obj["data"])))
        for obj in map(json.loads, proc.stdout.decode().splitlines())
    ]
    return proc.returncode, written, proc.stderr.decode()


def forged(written: list[tuple[int, bytes]]) -> list[int]:
    """The numbers written with a payload the feed never sent."""
    return [seq for seq, data in written if data != real(seq)]


def test_a_refused_stray_data_record_overlapping_the_tail_is_not_replayed_with_exit_0(
    nats_url: str,
) -> None:
    """Promise: a record no bridge writes that contradicts the stream makes `listen
    nats://` fail loudly (non-zero, naming it), never exit 0 with the wrong data.

    A stray data record 450..549 (its 450..500 contradict the stored 401..500; it is not
    at the stored end, the documented exception) is refused by the running bridge, which
    appends the true 501..700 after it. Observed: `listen` writes the forged payloads for
    501..549, skips the true ones, and exits 0 with "700 messages written ... 0 lost".
    """
    asyncio.run(store_with_stray(nats_url, *stray("data", 450, 100)))
    code, written, err = replay(nats_url)
    assert forged(written) == [], (code, err)
    assert code == 2 and FOREIGN in err, (code, err)


def test_iter_session_raises_at_a_refused_stray_data_record(nats_url: str) -> None:
    """Promise (README): ``read_session`` and ``iter_session`` write every message before
    a record no bridge writes, then raise ``JetStreamError`` naming it.

    The stream of the test above (stray data 450..549, refused by the bridge). Observed:
    ``iter_session`` yields 700 messages, 49 of them (501..549) with the forged payloads,
    then ``SessionEnded``; nothing is raised.
    """
    asyncio.run(store_with_stray(nats_url, *stray("data", 450, 100)))
    items = []
    with pytest.raises(JetStreamError, match=FOREIGN):
        for item in iter_session(nats_url, STREAM, SESSION):
            items.append(item)
    assert [m.seq_num for m in items if isinstance(m, Message) and m.data != real(m.seq_num)] == []


@pytest.mark.parametrize("start", [1, 600])
def test_a_refused_stray_data_record_past_the_tail_is_not_replayed(
    nats_url: str, start: int
) -> None:
    """Promise: as above; and data wins: stored messages are never reported lost.

    A stray data record 600..609 (a hole before it: 501 is not stored) is refused by the
    running bridge, which appends the true 501..700 after it. Observed: from 1, `listen`
    reports 501-599 lost (exit 3, though the stream holds them), writes forged 600..609
    and skips the true ones; from --start-seq 600 it writes the forged 600..609 and exits
    0, "0 lost".
    """
    asyncio.run(store_with_stray(nats_url, *stray("data", 600, 10)))
    code, written, err = replay(nats_url, "--start-seq", str(start))
    assert forged(written) == [], (code, err)
    assert code == 2 and FOREIGN in err, (code, err)


@pytest.mark.parametrize(("first", "count"), [(450, 100), (600, 10)])
def test_a_refused_stray_lost_record_does_not_make_stored_messages_lost(
    nats_url: str, first: int, count: int
) -> None:
    """Promise: a stray record that contradicts the stream makes the reader fail naming
    it; data wins: messages the stream holds are never reported lost.

    A stray lost record overlapping the stored tail (450..549) or past it (600..609) is
    refused by the running bridge, which stores the true 501..700 after it. Observed:
    `listen` exits 3 with "messages lost for good: 501-549" (or "501-599, 600-609"),
    messages the stream holds, and never names the stray record.
    """
    asyncio.run(store_with_stray(nats_url, *stray("lost", first, count)))
    code, written, err = replay(nats_url)
    assert forged(written) == [], (code, err)
    assert "lost for good" not in err, (code, err)
    assert code == 2 and FOREIGN in err, (code, err)


def test_the_reader_names_the_stray_record_not_the_real_end_after_it(nats_url: str) -> None:
    """Promise: the reader fails naming the record no bridge writes ("delete it from the
    stream to read on").

    A stray lost record 490..10**15+489 (overlapping the stored 401..500, refused by the
    running bridge). Observed: `listen` exits 2 blaming stream message 9, the bridge's own
    end of session ("ends the session at 701, behind message 1000000000000489 read before
    it"): a user who deletes the record it names deletes the real end.
    """
    asyncio.run(store_with_stray(nats_url, *stray("lost", 490, 10**15)))
    code, _, err = replay(nats_url)
    assert code == 2, (code, err)
    assert FOREIGN in err and "stream message 9" not in err, err


@pytest.mark.parametrize(
    ("kind", "first"),
    [("data", 1), ("lost", 201)],
    ids=["stray-data-1..100", "stray-lost-201..300"],
)
def test_a_stray_record_behind_the_tail_does_not_make_a_late_start_lose_stored_data(
    nats_url: str, kind: str, first: int
) -> None:
    """Promise: data wins (messages the stream holds are never reported lost); a stray
    record makes the reader fail naming it, never report loss in its place.

    A stray record wholly behind the stored tail (data 1..100 with forged payloads, or lost
    201..300), refused by the running bridge. A reader from 1 skips it correctly, but
    `listen --start-seq 450` exits 3 with "messages lost for good: 450-500", which the
    stream holds (stream message 5). (find_record's docstring admits the search may land
    past a record holding the number on such a stream; the README promises otherwise.)
    """
    asyncio.run(store_with_stray(nats_url, *stray(kind, first, 100)))
    code, written, err = replay(nats_url, "--start-seq", "450")
    assert forged(written) == [], (code, err)
    assert "lost for good" not in err, (code, err)
    if code == 0:
        assert [seq for seq, _ in written] == list(range(450, 701)), err
    else:
        assert code == 2 and FOREIGN in err, (code, err)


def test_a_bridge_whose_stream_is_deleted_and_recreated_does_not_finish_as_if_all_stored(
    nats_url: str,
) -> None:
    """Promise: never 0 with data missing; a bridge whose records the stream no longer
    keeps (purged, deleted, limits) stops non-zero naming it.

    A purge under a running bridge is caught ("does not keep what the bridge appends").
    Deleting the stream and re-creating it (an operator, or a second bridge's
    ensure_stream) is not: stream sequence 1 exists again, now holding 501..600, the
    bridge's check is satisfied, and ``run`` returns normally with all 700 messages
    counted as stored (the command would say "0 lost", exit 0) while 1..500 are gone.
    """

    async def attack() -> None:
        nc = await connect(nats_url)
        try:
            js = nc.jetstream()
            await ensure_stream(js, STREAM)
            bridge = Bridge(js, STREAM, window=100)
            for message in feed(1, 500):
                await bridge.add(message)
            await bridge.flush()
            await js.delete_stream(STREAM)
            await ensure_stream(js, STREAM)
            with pytest.raises(JetStreamError):
                await asyncio.wait_for(
                    bridge.run([*feed(501, 700), SessionEnded(SESSION, 701)]), 15
                )
        finally:
            await nc.close()

    asyncio.run(attack())


def test_a_bridge_does_not_hammer_a_stream_that_is_gone(nats_url: str) -> None:
    """Promise (README): the bridge *waits* for an unreachable stream (a restart, a leader
    election) up to its outage bound, then fails naming it.

    Observed: with the stream deleted the bridge retries with no pause at all: about
    1,700 failed appends a second (5,135 in a 3 s outage bound; 58,697 over the default
    30 s), a request storm on the NATS servers exactly while they recover.
    """

    async def attack() -> tuple[int, float]:
        nc = await connect(nats_url)
        try:
            js = nc.jetstream()
            await ensure_stream(js, STREAM)
            bridge = Bridge(js, STREAM, window=100, outage=2.0)
            for message in feed(1, 100):
                await bridge.add(message)
            await bridge.flush()
            await js.delete_stream(STREAM)
            started = time.monotonic()
            with pytest.raises(JetStreamError):
                await asyncio.wait_for(bridge.run(feed(101, 300)), 15)
            return bridge.stats.publish_errors, time.monotonic() - started
        finally:
            await nc.close()

    errors, took = asyncio.run(attack())
    assert took < 10
    assert errors <= 100, f"{errors} failed appends in {took:.1f} s"


def test_a_stray_message_outside_the_session_subjects_does_not_stop_the_bridge(
    nats_url: str,
) -> None:
    """Promise: a record no bridge writes is refused and the bridge appends after it (the
    README's advice, "let only the bridges publish to NAME.s.>", is the whole defence).

    The bridge's ``Nats-Msg-Id`` is predictable (subject:first seq) and JetStream
    de-duplicates across the whole stream. One message on FEED.junk (a subject no reader
    looks at, outside NAME.s.>) carrying the id of the bridge's next record: the server
    answers the bridge's append as a duplicate, and the bridge stops with "refused as a
    duplicate ... of a record no longer in the stream (deleted or purged ...)", which is
    false (it is stream message 6, on FEED.junk, still there); every bridge on the feed
    stops the same way for the whole duplicate window. Wanted: the append is stored
    (501..700 and the end readable), or the error names the stray message.
    """

    async def attack() -> None:
        nc = await connect(nats_url)
        try:
            js = nc.jetstream()
            await ensure_stream(js, STREAM)
            bridge = Bridge(js, STREAM, window=100)
            for message in feed(1, 500):
                await bridge.add(message)
            await bridge.flush()
            msg_id = f"{session_subject(STREAM, SESSION)}:501"
            await js.publish(f"{STREAM}.junk", b"junk", headers={"Nats-Msg-Id": msg_id})
            try:
                await asyncio.wait_for(
                    bridge.run([*feed(501, 700), SessionEnded(SESSION, 701)]), 15
                )
            except JetStreamError as e:
                assert FOREIGN in str(e) or f"{STREAM}.junk" in str(e), str(e)
                return
        finally:
            await nc.close()
        code, written, err = replay(nats_url)
        assert code == 0 and written == [(s, real(s)) for s in range(1, 701)], (code, err)

    asyncio.run(attack())


def test_the_bridge_cuts_records_to_a_small_max_payload(multicast: None, tmp_path: Path) -> None:
    """Promise (README): "Records are cut to fit the server's max_payload (headers
    counted); a message that cannot fit alone is exit 2 naming it."

    A server with ``max_payload: 1024`` and a feed of ITCH messages (under 50 bytes each,
    far below what fits with the headers). Observed: `bridge` stores nothing and exits 2
    with "bridge to FEED: MaxPayloadError()", naming no message (1500 works: 1,424 records
    for 20,000 messages).
    """
    conf = tmp_path / "nats.conf"
    conf.write_text("max_payload: 1024\n")
    port = free_tcp_port()
    server = start_server([*server_command(port, tmp_path / "js"), "-c", str(conf)])
    try:
        wait_listening(port, server)
        url = f"nats://127.0.0.1:{port}"
        feed_port = free_udp_port()
        group = "239.7.7.19"
        bridge = start(
            "bridge", f"{group}:{feed_port}", "--nats", url, "--stream", STREAM,
            "--request-server", f"127.0.0.1:{feed_port + 1}", "--idle-timeout", "20",
        )  # fmt: skip
        try:
            assert bridge.stderr is not None
            bridge.stderr.readline()  # joined
            pub = run(
                "publish", f"{group}:{feed_port}", "--session", SESSION, "--generate", "2000",
                "--request-port", str(feed_port + 1), "--end-of-session-duration", "0.5",
            )  # fmt: skip
            assert pub.returncode == 0, pub.stderr.decode()
            _, err = bridge.communicate(timeout=30)
        finally:
            bridge.kill()
            bridge.wait()
        assert bridge.returncode == 0, err.decode()
        code, written, err2 = replay(url)
        assert code == 0 and len(written) == 2000, (code, err2)
    finally:
        server.kill()
        server.wait()


def test_a_damaged_stray_data_record_is_named_by_the_reader(nats_url: str) -> None:
    """Promise: the reader fails naming the record ("delete it from the stream to read
    on"), as it does for a record without headers ("stream message 6 is not a moldudp64
    record").

    A stray data record at 501 whose payload holds 3 blocks where its Mold-Count says 10
    (the bridge refuses it, naming stream message 6). Observed: `listen` exits 2 with
    "damaged data record: 3 whole blocks of 10 in 9 bytes": no stream sequence, no subject,
    so the user cannot tell which message to delete.
    """
    headers = {"Mold-Kind": "data", "Mold-Seq": "501", "Mold-Count": "10"}
    asyncio.run(store_with_stray(nats_url, headers, blocks([b"x"] * 3)))
    code, written, err = replay(nats_url)
    assert written == [(s, real(s)) for s in range(1, 501)], err
    assert code == 2 and FOREIGN in err, (code, err)
