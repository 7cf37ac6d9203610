"""The JetStream layer against a stream that lies, a server that misbehaves and names that
cannot be: a typed error, or loss reported with its range, never a traceback, a hang or a
message silently lost, duplicated or reordered.

Real nats-server processes (the ``nats_url`` fixture of tests/test_jetstream.py); records
are written by hand where the point is a stream no bridge would write.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
import threading
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest

from client_support import SESSION
from moldudp64.events import Event, Message, MessagesDelivered, MessagesLost, SessionEnded
from moldudp64.exceptions import ConfigError
from moldudp64.sync.server import RerequestServer
from moldudp64.wire import Packet, RetransmissionRequest, encode_session

if TYPE_CHECKING:
    from nats.js import JetStreamContext

nats = pytest.importorskip("nats", reason="nats-py is not installed (pip install '.[test]')")

import test_jetstream  # noqa: E402
from moldudp64.jetstream import (  # noqa: E402
    Bridge,
    JetStreamError,
    JetStreamStore,
    connect,
    ensure_stream,
    find_record,
    iter_session,
    latest_session,
    read_batches,
    read_session,
    session_subject,
)

nats_url = test_jetstream.nats_url  # the fixture: a fresh single-node JetStream server
from moldudp64.jetstream.stream import _pick_session  # noqa: E402
from nats_support import free_tcp_port, listening, server_command, start_server  # noqa: E402

STREAM = "FEED"
TOP = 1 << 64


def run(coro: Any, timeout: float = 30) -> Any:
    return asyncio.run(asyncio.wait_for(coro, timeout))


def blocks(messages: list[bytes]) -> bytes:
    return b"".join(len(m).to_bytes(2, "big") + m for m in messages)


@contextlib.asynccontextmanager
async def stream_context(url: str) -> AsyncIterator[JetStreamContext]:
    """A connection's JetStream context, with the stream made (closed at the end)."""
    nc = await connect(url)
    try:
        js = nc.jetstream()
        await ensure_stream(js, STREAM)
        yield js
    finally:
        await nc.close()


async def put(
    js: Any,
    kind: str,
    seq: object,
    count: object = None,
    payload: bytes = b"",
    session: str = SESSION,
) -> None:
    """Append one record by hand, as a foreign writer would."""
    headers = {"Mold-Kind": kind, "Mold-Seq": str(seq)}
    if count is not None:
        headers["Mold-Count"] = str(count)
    await js.publish(session_subject(STREAM, session), payload, headers=headers)


async def read_all(js: Any, start: int = 1, session: str = SESSION) -> list[Event]:
    return [ev async for ev in read_batches(js, STREAM, session, start, idle_timeout=2)]


def as_messages(events: list[Event]) -> list[Message | Event]:
    """Batches spelled out one message at a time (so the assertions read plainly)."""
    out: list[Message | Event] = []
    for ev in events:
        if isinstance(ev, MessagesDelivered):
            out.extend(Message(ev.session, ev.seq_num + i, m) for i, m in enumerate(ev.messages))
        else:
            out.append(ev)
    return out


def msgs(first: int, last: int, tag: bytes = b"m") -> list[bytes]:
    return [tag + b"%d" % s for s in range(first, last + 1)]


def want(first: int, last: int, tag: bytes = b"m") -> list[Message]:
    return [Message(SESSION, s, tag + b"%d" % s) for s in range(first, last + 1)]


# -- records that lie ----------------------------------------------------------------------

LIES: list[tuple[str, dict[str, str] | None, bytes]] = [
    ("no headers at all", None, b"hello"),
    ("Mold-Count says 5, the payload holds 3", {"Mold-Count": "5"}, blocks(msgs(1, 3))),
    ("a block cut short", {"Mold-Count": "2"}, blocks(msgs(1, 2))[:-1]),
    ("more blocks than Mold-Count", {"Mold-Count": "1"}, blocks(msgs(1, 3))),
    ("sequence number 0", {"Mold-Seq": "0"}, blocks(msgs(1, 1))),
    ("a negative sequence number", {"Mold-Seq": "-5"}, blocks(msgs(1, 1))),
    ("a count past 2**64", {"Mold-Count": str(TOP)}, b""),
    (
        "a lost range past 2**64",
        {"Mold-Kind": "lost", "Mold-Seq": "4", "Mold-Count": str(TOP)},
        b"",
    ),
    ("an unknown kind", {"Mold-Kind": "gift"}, blocks(msgs(1, 1))),
    ("a fraction", {"Mold-Count": "1.5"}, blocks(msgs(1, 1))),
    ("Python's 1_0 for 10", {"Mold-Seq": "1_0"}, blocks(msgs(1, 1))),
    (
        "Arabic-Indic digits (nats-py hands them over as an email Header)",
        {"Mold-Seq": "\u0661"},
        blocks(msgs(1, 1)),
    ),
]


def test_records_that_lie_about_themselves_are_typed_errors(nats_url: str) -> None:
    async def main() -> list[str]:
        nc = await connect(nats_url)
        failures = []
        try:
            js = nc.jetstream()
            await ensure_stream(js, STREAM)
            for i, (lie, changes, payload) in enumerate(LIES):
                session = f"LIE{i:07d}"
                headers = {"Mold-Kind": "data", "Mold-Seq": "1", "Mold-Count": "1"}
                headers.update(changes or {})
                subject = session_subject(STREAM, session)
                await js.publish(subject, payload, headers=headers if changes else None)
                try:
                    await read_all(js, session=session)
                    failures.append(f"{lie}: read without error")
                except JetStreamError as exc:
                    assert "record" in str(exc), (lie, exc)
        finally:
            await nc.close()
        return failures

    assert run(main()) == []


def test_every_record_before_a_damaged_one_is_read_before_the_error(nats_url: str) -> None:
    async def main() -> list[Event]:
        nc = await connect(nats_url)
        got: list[Event] = []
        try:
            js = nc.jetstream()
            await ensure_stream(js, STREAM)
            for first in range(1, 100, 10):  # ten records, all in one read-ahead
                await put(js, "data", first, 10, blocks(msgs(first, first + 9)))
            await put(js, "data", 101, 9, b"\x00")
            with pytest.raises(JetStreamError, match="damaged data record"):
                async for ev in read_batches(js, STREAM, SESSION):
                    got.append(ev)
        finally:
            await nc.close()
        return got

    assert as_messages(run(main())) == want(1, 100)


def test_overlapping_and_stale_records_are_errors_naming_them_after_the_data_before(
    nats_url: str,
) -> None:
    """A record starting behind the end of the one before it (a bridge starts each record
    where the last ends) contradicts the stream: the reader stops at it naming it, after
    every message before it; each such record deleted, the session reads back."""

    async def main() -> tuple[list[Event], list[str], list[Event], list[Event]]:
        got: list[Event] = []
        errors: list[str] = []
        async with stream_context(nats_url) as js:
            await put(js, "data", 1, 5, blocks(msgs(1, 5)))
            await put(js, "data", 3, 5, blocks(msgs(3, 7, b"X")))  # 3..5 again, other bytes
            await put(js, "data", 2, 2, blocks(msgs(2, 3, b"Y")))  # behind the tail
            await put(js, "data", 6, 4, blocks(msgs(6, 9)))
            await put(js, "end", 10)
            for stray in (2, 3):
                with pytest.raises(JetStreamError) as raised:
                    async for ev in read_batches(js, STREAM, SESSION, idle_timeout=2):
                        got.append(ev)
                errors.append(str(raised.value))
                await js.delete_msg(STREAM, stray)
            return got, errors, await read_all(js), await read_all(js, start=4)

    got, errors, whole, tail = run(main())
    assert as_messages(got) == [*want(1, 5), *want(1, 5)]
    assert "stream message 2 on FEED.s." in errors[0] and "data 3..7, behind message 5" in errors[0]
    assert "stream message 3 on FEED.s." in errors[1] and "data 2..3, behind message 5" in errors[1]
    assert as_messages(whole) == [*want(1, 9), SessionEnded(SESSION, 10)]
    assert as_messages(tail) == [*want(4, 9), SessionEnded(SESSION, 10)]


def test_an_end_record_behind_what_was_read_is_an_error_naming_it_after_the_data(
    nats_url: str,
) -> None:
    async def main() -> list[Event]:
        got: list[Event] = []
        async with stream_context(nats_url) as js:
            await put(js, "data", 1, 5, blocks(msgs(1, 5)))
            await put(js, "end", 3)  # a lie: 1..5 are stored
            await put(js, "data", 6, 2, blocks(msgs(6, 7)))
            with pytest.raises(JetStreamError, match=r"stream message 2 .* ends the session at 3"):
                async for ev in read_batches(js, STREAM, SESSION, idle_timeout=2):
                    got.append(ev)
        return got

    assert as_messages(run(main())) == want(1, 5)


def test_the_blocking_reader_stops_at_a_foreign_end_naming_it_too(nats_url: str) -> None:
    async def fill() -> None:
        async with stream_context(nats_url) as js:
            await put(js, "data", 1, 5, blocks(msgs(1, 5)))
            await put(js, "end", 1)  # mid-feed, from something that is no bridge
            await put(js, "data", 6, 2, blocks(msgs(6, 7)))

    run(fill())
    got = []
    with pytest.raises(JetStreamError, match=r"stream message 2 on FEED\.s\..* at 1, behind"):
        for item in iter_session(nats_url, STREAM, SESSION, idle_timeout=2):
            got.append(item)
    assert got == want(1, 5)


@pytest.mark.parametrize("where", ["behind", "at the tail", "ahead"])
def test_a_foreign_end_of_session_mid_feed_is_refused_and_the_reader_names_it(
    nats_url: str, where: str
) -> None:
    """A writer that is no bridge appends an end of session while a bridge stores a feed:
    the bridge stores the rest after it (not "0 lost" with the rest missing) and a reader
    stops at it with an error naming it, after every message before it; the record
    deleted, the whole session reads back."""

    async def main() -> tuple[Bridge, list[Event], list[Event], str]:
        async with stream_context(nats_url) as js:
            bridge = Bridge(js, STREAM, window=100, linger=0.01, lost_grace=0)

            async def feed() -> AsyncIterator[Event]:
                for first in range(1, 3001, 100):
                    yield MessagesDelivered(SESSION, first, msgs(first, first + 99))
                    await asyncio.sleep(0.01)
                    if first == 1001:  # 1..1100 taken, some stored: the forger strikes
                        await asyncio.sleep(0.2)
                        tail = bridge.stats.stored_next_seq
                        forged = {"behind": 1, "at the tail": tail, "ahead": tail + 500}
                        await put(js, "end", forged[where])
                yield SessionEnded(SESSION, 3001)

            await bridge.run(feed())
            got: list[Event] = []
            with pytest.raises(JetStreamError) as raised:
                async for ev in read_batches(js, STREAM, SESSION, idle_timeout=2):
                    got.append(ev)
            forged = int(str(raised.value).split("stream message ")[1].split()[0])
            await js.delete_msg(STREAM, forged)
            return bridge, got, await read_all(js), str(raised.value)

    bridge, before, after, error = run(main())
    assert bridge.records_refused == 1 and len(bridge.refused) == 1, bridge.refused
    assert "end of session at" in bridge.refused[0]
    assert "ends the session at" in error and "a record no bridge writes" in error
    read = as_messages(before)
    assert read == want(1, len(read)) and len(read) >= 1000  # all before it, in order
    assert as_messages(after) == [*want(1, 3000), SessionEnded(SESSION, 3001)]


def test_a_foreign_data_record_ahead_of_the_stored_end_is_refused_and_the_rest_stored(
    nats_url: str,
) -> None:
    """A record claiming numbers beyond the stored end with nothing stored between: a
    bridge would have stored the numbers between first, so the bridge refuses it and
    stores its own messages for those numbers; a reader stops at it naming it (the
    bridge's record after it fills the hole it leaves), never reads it as loss."""

    async def main() -> tuple[Bridge, list[Event], list[Event]]:
        async with stream_context(nats_url) as js:
            bridge = Bridge(js, STREAM, window=100, linger=0.01, lost_grace=0)

            async def feed() -> AsyncIterator[Event]:
                for first in range(1, 3001, 100):
                    yield MessagesDelivered(SESSION, first, msgs(first, first + 99))
                    await asyncio.sleep(0.01)
                    if first == 1001:
                        await asyncio.sleep(0.2)
                        tail = bridge.stats.stored_next_seq
                        await put(js, "data", tail + 500, 2, blocks(msgs(1, 2, b"forged")))
                yield SessionEnded(SESSION, 3001)

            await bridge.run(feed())
            before: list[Event] = []
            with pytest.raises(JetStreamError) as raised:
                async for ev in read_batches(js, STREAM, SESSION, idle_timeout=2):
                    before.append(ev)
            forged = int(bridge.refused[0].split("stream message ")[1].split()[0])
            assert f"stream message {forged} on " in str(raised.value), str(raised.value)
            assert "leaving a hole after message" in str(raised.value)
            await js.delete_msg(STREAM, forged)
            return bridge, before, await read_all(js)

    bridge, before, after = run(main())
    assert bridge.records_refused == 1 and "is not stored" in bridge.refused[0], bridge.refused
    read = as_messages(before)
    assert read == want(1, len(read)) and len(read) >= 1000  # all before it, no loss
    assert as_messages(after) == [*want(1, 3000), SessionEnded(SESSION, 3001)]


def test_a_lost_range_to_the_last_sequence_number_is_one_event(nats_url: str) -> None:
    async def main() -> list[Event]:
        async with stream_context(nats_url) as js:
            await put(js, "data", 1, 3, blocks(msgs(1, 3)))
            await put(js, "lost", 4, TOP - 4)
            await put(js, "end", TOP)
            return await read_all(js)

    assert run(main()) == [
        MessagesDelivered(SESSION, 1, msgs(1, 3)),
        MessagesLost(SESSION, 4, TOP - 1, ""),
        SessionEnded(SESSION, TOP),
    ]


def test_the_latest_session_ignores_foreign_subjects_and_refuses_forged_ones(
    nats_url: str,
) -> None:
    async def main() -> None:
        async with stream_context(nats_url) as js:
            assert await latest_session(js, STREAM) is None
            await put(js, "data", 1, 1, blocks(msgs(1, 1)), session="A")
            await js.publish(f"{STREAM}.notes", b"not a record")  # newest, not a session
            await js.publish(f"{STREAM}.s.ab.cd", b"nor this")
            assert await latest_session(js, STREAM) == "A         "
            for forged in ("41424344", "zz", "41" * 11, "4A" * 10):
                await js.publish(f"{STREAM}.s.{forged}", b"")
                with pytest.raises(JetStreamError, match="names no session"):
                    await latest_session(js, STREAM)
            with pytest.raises(JetStreamError, match="no stream NOSUCH"):
                await latest_session(js, "NOSUCH")

    run(main())


# -- a stream with another config -----------------------------------------------------------


@pytest.mark.parametrize(
    ("config", "says"),
    [
        ({"subjects": ["other.>"]}, "do not take FEED.s.*"),
        ({"subjects": ["FEED.x.>"]}, "do not take FEED.s.*"),
        ({"retention": "interest"}, "interest retention"),
        ({"no_ack": True}, "no_ack"),
        ({"max_bytes": 65536}, "max_bytes=65536 is smaller than one record"),
        ({"max_msg_size": 1000}, "max_msg_size=1000 is smaller than one record"),
        ({"max_msgs_per_subject": 1}, "max_msgs_per_subject=1 keeps one record per session"),
        ({"max_msgs": 1}, "max_msgs=1 keeps one record"),
    ],
)
def test_an_existing_stream_a_bridge_cannot_append_to_is_refused_at_once(
    nats_url: str, config: dict[str, Any], says: str
) -> None:
    api = nats.js.api

    async def main() -> None:
        nc = await connect(nats_url)
        try:
            js = nc.jetstream()
            options = {"subjects": ["FEED.>"], **config}
            if "retention" in options:
                options["retention"] = api.RetentionPolicy(options["retention"])
            await js.add_stream(api.StreamConfig(name=STREAM, **options))
            with pytest.raises(JetStreamError, match=says):
                await ensure_stream(js, STREAM)
        finally:
            await nc.close()

    run(main())


def test_an_existing_stream_with_narrower_or_wider_subjects_that_cover_sessions_is_used(
    nats_url: str,
) -> None:
    async def main() -> list[Event]:
        nc = await connect(nats_url)
        try:
            js = nc.jetstream()
            api = nats.js.api
            await js.add_stream(api.StreamConfig(name=STREAM, subjects=["FEED.s.*", "more.>"]))
            await ensure_stream(js, STREAM)
            events = [MessagesDelivered(SESSION, 1, msgs(1, 3)), SessionEnded(SESSION, 4)]
            await Bridge(js, STREAM).run(events)
            return await read_all(js)
        finally:
            await nc.close()

    assert run(main()) == [MessagesDelivered(SESSION, 1, msgs(1, 3)), SessionEnded(SESSION, 4)]


def test_a_stray_end_on_another_session_does_not_take_over_the_default_session(
    nats_url: str,
) -> None:
    """The newest record a lone ``end`` on a session holding nothing else (a stray client):
    the default session stays the newest one holding data, and the CLI is told why."""

    async def main() -> tuple[str | None, str]:
        async with stream_context(nats_url) as js:
            await put(js, "data", 1, 3, blocks(msgs(1, 3)))
            await put(js, "end", 1, session="OTHER")
            return await _pick_session(js, STREAM)

    session, note = run(main())
    assert session == SESSION
    assert "stream message 2, a lone end record" in note and repr(SESSION) in note, note


def test_retention_removing_records_under_a_reader_is_reported_lost_in_place(
    nats_url: str,
) -> None:
    async def main() -> list[Event]:
        nc = await connect(nats_url)
        try:
            js = nc.jetstream()
            api = nats.js.api
            await js.add_stream(api.StreamConfig(name=STREAM, subjects=["FEED.>"], max_msgs=3))
            await ensure_stream(js, STREAM)  # limits retention: a bridge may use it
            for first in (1, 101, 201):
                await put(js, "data", first, 100, blocks(msgs(first, first + 99)))
            got: list[Event] = []
            async for ev in read_batches(js, STREAM, SESSION, 1, idle_timeout=2):
                got.append(ev)
                if len(got) == 1:  # the reader is slow: four appends push out 101..300
                    for first in (301, 401, 501):
                        await put(js, "data", first, 100, blocks(msgs(first, first + 99)))
                    await put(js, "end", 601)
            return got
        finally:
            await nc.close()

    assert as_messages(run(main())) == [
        *want(1, 100),
        MessagesLost(SESSION, 101, 400, "not in the stream"),
        *want(401, 600),
        SessionEnded(SESSION, 601),
    ]


@pytest.mark.parametrize("recreate", [False, True])
def test_a_stream_deleted_under_a_waiting_reader_is_a_typed_error(
    nats_url: str, recreate: bool
) -> None:
    async def main() -> list[Event]:
        nc = await connect(nats_url)
        got: list[Event] = []
        try:
            js = nc.jetstream()
            await ensure_stream(js, STREAM)
            await put(js, "data", 1, 3, blocks(msgs(1, 3)))
            async for ev in read_batches(js, STREAM, SESSION):  # no idle timeout
                got.append(ev)
                await js.delete_stream(STREAM)
                if recreate:  # a namesake (a bridge's ensure_stream, say): numbers anew
                    await ensure_stream(js, STREAM)
        finally:
            await nc.close()
        return got

    says = "deleted and created again" if recreate else "was deleted while being read"
    with pytest.raises(JetStreamError, match=says):
        run(main(), timeout=20)


def test_a_reader_whose_server_is_gone_for_good_gets_a_typed_error(tmp_path: Path) -> None:
    port = free_tcp_port()
    url = f"nats://127.0.0.1:{port}"
    server = start_server(server_command(port, tmp_path / "js"))

    async def main() -> list[Event]:
        await listening(port)
        nc = await connect(
            url, connect_timeout=0.5, max_reconnect_attempts=1, reconnect_time_wait=0.2
        )
        got: list[Event] = []
        try:
            js = nc.jetstream(timeout=1.0)
            await ensure_stream(js, STREAM)
            await put(js, "data", 1, 3, blocks(msgs(1, 3)))
            async for ev in read_batches(js, STREAM, SESSION):  # no idle timeout
                got.append(ev)
                server.kill()
        finally:
            await nc.close()
        return got

    try:
        with pytest.raises(JetStreamError, match="reading stream FEED: the NATS connection closed"):
            run(main(), timeout=30)
    finally:
        server.kill()
        server.wait()


@pytest.fixture
def not_nats() -> Iterator[dict[str, int]]:
    """Loopback TCP ports that are not NATS: one silent, one answering as an HTTP server."""
    silent = socket.create_server(("127.0.0.1", 0))
    http = socket.create_server(("127.0.0.1", 0))
    held: list[socket.socket] = []

    def accept(sock: socket.socket, answer: bytes | None) -> None:
        while True:
            try:
                conn, _ = sock.accept()
            except OSError:
                return
            held.append(conn)
            if answer is not None:
                conn.sendall(answer)
                conn.close()

    for sock, answer in ((silent, None), (http, b"HTTP/1.1 400 Bad Request\r\n\r\n")):
        threading.Thread(target=accept, args=(sock, answer), daemon=True).start()
    try:
        yield {"silent": silent.getsockname()[1], "http": http.getsockname()[1]}
    finally:
        for s in (silent, http, *held):
            s.close()


@pytest.mark.parametrize("kind", ["silent", "http"])
def test_a_port_that_is_not_nats_is_a_typed_error(not_nats: dict[str, int], kind: str) -> None:
    url = f"nats://127.0.0.1:{not_nats[kind]}"
    fast = {"connect_timeout": 0.5, "max_reconnect_attempts": 1, "reconnect_time_wait": 0.1}
    with pytest.raises(JetStreamError, match="cannot connect to NATS"):
        run(connect(url, **fast))


def test_stream_names_nats_cannot_take_are_config_errors(nats_url: str) -> None:
    async def main() -> None:
        nc = await connect(nats_url)
        try:
            js = nc.jetstream()
            for name in ("A.B", "A B", "A/B", "A\\B", "A*", "A>", "", "A\nB", "X" * 256):
                with pytest.raises(ConfigError, match="stream name"):
                    await ensure_stream(js, name)
                with pytest.raises(ConfigError, match="stream name"):
                    await latest_session(js, name)
                with pytest.raises(ConfigError, match="stream name"):
                    await find_record(js, name, SESSION, 1)
                with pytest.raises(ConfigError, match="stream name"):
                    await anext(read_session(js, name, SESSION))
        finally:
            await nc.close()

    run(main())


# -- the re-request store ------------------------------------------------------------------


def request(session: str, seq: int, count: int) -> bytes:
    """A re-request datagram as anyone may send it (no checks on the numbers)."""
    return encode_session(session) + seq.to_bytes(8, "big") + count.to_bytes(2, "big")


def test_the_store_answers_up_to_a_lost_range_and_the_end_and_its_cache_stays_bounded(
    nats_url: str,
) -> None:
    async def fill() -> None:
        async with stream_context(nats_url) as js:
            for first in range(1, 101, 10):
                await put(js, "data", first, 10, blocks(msgs(first, first + 9)))
            await put(js, "lost", 101, 50)
            await put(js, "data", 151, 50, blocks(msgs(151, 200)))
            await put(js, "end", 201)

    run(fill())
    store = JetStreamStore(nats_url, STREAM, SESSION, cache_records=2)
    try:
        assert (store.first_seq_num, store.next_seq_num) == (1, 201)
        assert store.get(95, 20, 1 << 16) == msgs(95, 100)  # stops at the lost range
        assert store.get(120, 5, 1 << 16) == []  # inside it
        assert store.get(199, 10, 1 << 16) == msgs(199, 200)  # stops at the end
        assert store.get(201, 10, 1 << 16) == []
        for first in range(1, 100, 3):  # every record, more than the cache holds
            assert store.get(first, 2, 1 << 16) == msgs(first, first + 1)
        assert len(store._cache) <= 2
    finally:
        store.close()


def test_a_request_server_over_the_store_refuses_hostile_requests_and_keeps_answering(
    nats_url: str,
) -> None:
    async def fill() -> None:
        async with stream_context(nats_url) as js:
            await put(js, "data", 1, 100, blocks(msgs(1, 100)))

    run(fill())
    store = JetStreamStore(nats_url, STREAM, SESSION)
    hostile = [
        b"",
        b"\x00" * 5,
        request("OTHERSESS", 1, 5),
        request(SESSION, 0, 5),
        request(SESSION, 101, 5),  # beyond what is stored
        request(SESSION, TOP - 1, 0xFFFF),
        request(SESSION, 1, 0),
        request(SESSION, 1, 5) + b"trailing",
    ]
    with RerequestServer(SESSION, store) as server, socket.socket(type=socket.SOCK_DGRAM) as s:
        s.settimeout(0.3)
        for data in hostile:
            s.sendto(data, server.address)
        answer = b""
        for _ in range(20):
            s.sendto(bytes(RetransmissionRequest(SESSION, 98, 10)), server.address)
            try:
                while (answer := s.recv(2048)) and Packet(answer).seq_num != 98:
                    pass
                break
            except TimeoutError:
                continue
        assert Packet(answer).messages() == msgs(98, 100)
    store.close()


# -- defects left for others (Bridge intake, JetStreamStore, the request core) --------------


def test_a_full_discard_new_stream_stops_the_bridge_saying_so(nats_url: str) -> None:
    async def main() -> None:
        nc = await connect(nats_url)
        try:
            js = nc.jetstream()
            api = nats.js.api
            config = api.StreamConfig(
                name=STREAM, subjects=["FEED.>"], max_msgs=2, discard=api.DiscardPolicy.NEW
            )
            await js.add_stream(config)
            await ensure_stream(js, STREAM)
            bridge = Bridge(js, STREAM, window=10, timeout=0.5, outage=1.0)
            with pytest.raises(JetStreamError, match="maximum messages exceeded"):
                await bridge.run([MessagesDelivered(SESSION, 1, msgs(1, 50))])
        finally:
            await nc.close()

    run(main())


@pytest.mark.parametrize(
    "limits",
    [{"max_bytes": 300_000}, {"max_msgs_per_subject": 3}, {"max_msgs": 2}],
    ids=["max_bytes", "max_msgs_per_subject", "max_msgs"],
)
def test_a_stream_whose_limits_remove_what_a_bridge_just_appended_stops_it_saying_so(
    nats_url: str, limits: dict[str, int]
) -> None:
    """Limits ensure_stream lets through (each holds a record or two) that still remove
    records as the next ones come: the bridge says so instead of reporting them stored."""

    async def main() -> None:
        nc = await connect(nats_url)
        try:
            js = nc.jetstream()
            await js.add_stream(
                nats.js.api.StreamConfig(name=STREAM, subjects=["FEED.>"], **limits)
            )
            await ensure_stream(js, STREAM)
            events = [
                MessagesDelivered(SESSION, 1, [b"m" * 30] * 20_000),
                SessionEnded(SESSION, 20_001),
            ]
            name, value = next(iter(limits.items()))
            with pytest.raises(
                JetStreamError,
                match="does not keep what the bridge appends: record"
                f" data 1..2048 .*{name}={value}",
            ):
                await Bridge(js, STREAM).run(events)
        finally:
            await nc.close()

    run(main())


def test_a_session_with_bytes_above_ascii_is_stored_and_read_back(nats_url: str) -> None:
    session = "\xe9COLE\xa0 001"

    async def main() -> list[Event | Message]:
        async with stream_context(nats_url) as js:
            events = [MessagesDelivered(session, 1, msgs(1, 3)), SessionEnded(session, 4)]
            await Bridge(js, STREAM).run(events)
            return [ev async for ev in read_session(js, STREAM, session, idle_timeout=2)]

    assert run(main()) == [
        *[Message(session, s, b"m%d" % s) for s in (1, 2, 3)],
        SessionEnded(session, 4),
    ]


def test_the_store_cache_stays_bounded_over_overlapping_records(nats_url: str) -> None:
    """Records no bridge writes (1..5 over 1..2): the cache stays bounded, and what the
    overlapping record claims past 1..2 is not served (it does not tile)."""

    async def fill() -> None:
        async with stream_context(nats_url) as js:
            await put(js, "data", 1, 2, blocks(msgs(1, 2)))
            await put(js, "data", 1, 5, blocks(msgs(1, 5)))  # the same start, longer
            await put(js, "data", 6, 3, blocks(msgs(6, 8)))

    run(fill())
    store = JetStreamStore(nats_url, STREAM, SESSION, cache_records=1)
    try:
        for _ in range(20):
            assert store.get(1, 1, 1 << 16) == msgs(1, 1)
            assert store.get(4, 1, 1 << 16) == []
            assert store.get(7, 1, 1 << 16) == msgs(7, 7)
        assert len(store._starts) <= store.cache_records
    finally:
        store.close()


def test_the_store_finds_records_again_after_a_purge_and_a_refill_from_later_numbers(
    nats_url: str,
) -> None:
    """What the store learned of where records are goes stale when the stream is purged
    and a bridge refills the session from a later number: it searches afresh and answers."""

    async def fill(first: int, last: int, purge: bool) -> None:
        async with stream_context(nats_url) as js:
            if purge:
                await js.purge_stream(STREAM)
            for start in range(first, last + 1, 10):
                await put(js, "data", start, 10, blocks(msgs(start, start + 9)))

    run(fill(1, 100, purge=False))
    store = JetStreamStore(nats_url, STREAM, SESSION, cache_records=1, refresh=3600)
    try:
        for seq in (5, 55, 95):  # learns where every record it passes is
            assert store.get(seq, 1, 1 << 16) == msgs(seq, seq)
        run(fill(71, 200, purge=True))  # purged, then 71..200 stored again after
        assert store.get(85, 1, 1 << 16) == msgs(85, 85)  # where it knew other places
        assert store.get(175, 2, 1 << 16) == msgs(175, 176)  # beyond all it knew
    finally:
        store.close()


def test_a_damaged_record_appended_later_does_not_stop_the_answers_before_it(
    nats_url: str,
) -> None:
    async def append(kind: str, seq: int, count: int, payload: bytes) -> None:
        nc = await connect(nats_url)
        try:
            await ensure_stream(nc.jetstream(), STREAM)
            await put(nc.jetstream(), kind, seq, count, payload)
        finally:
            await nc.close()

    def ask(s: socket.socket, address: Any) -> list[bytes] | None:
        for _ in range(4):
            s.sendto(bytes(RetransmissionRequest(SESSION, 1, 2)), address)
            try:
                return Packet(s.recv(2048)).messages()
            except TimeoutError:
                continue
        return None

    run(append("data", 1, 10, blocks(msgs(1, 10))))
    store = JetStreamStore(nats_url, STREAM, SESSION, refresh=0.0)
    try:
        with RerequestServer(SESSION, store) as server, socket.socket(type=socket.SOCK_DGRAM) as s:
            s.settimeout(0.5)
            assert ask(s, server.address) == msgs(1, 2)
            run(append("data", 11, 3, b"\x00"))  # damaged
            assert ask(s, server.address) == msgs(1, 2)
    finally:
        store.close()


def test_a_request_server_over_the_store_outlives_a_nats_restart(tmp_path: Path) -> None:
    port = free_tcp_port()
    url = f"nats://127.0.0.1:{port}"
    cmd = server_command(port, tmp_path / "js")
    servers = [start_server(cmd)]

    async def fill() -> None:
        await listening(port)
        async with stream_context(url) as js:
            await put(js, "data", 1, 100, blocks(msgs(1, 100)))

    def ask(s: socket.socket, seq: int, tries: int) -> list[bytes] | None:
        """The answer to a request for seq (an answer to an earlier request, answered late
        once NATS came back, is passed over)."""
        for _ in range(tries):
            s.sendto(bytes(RetransmissionRequest(SESSION, seq, 2)), server.address)
            try:
                while (packet := Packet(s.recv(2048))).seq_num != seq:
                    continue
                return packet.messages()
            except TimeoutError:
                continue
        return None

    try:
        run(fill())
        store = JetStreamStore(url, STREAM, SESSION, timeout=0.5, refresh=0.0)
        with RerequestServer(SESSION, store) as server, socket.socket(type=socket.SOCK_DGRAM) as s:
            s.settimeout(0.5)
            assert ask(s, 10, 10) == msgs(10, 11)
            servers[0].kill()
            servers[0].wait()
            ask(s, 20, 2)  # NATS away: no answer, and no harm
            servers.append(start_server(cmd))
            assert ask(s, 30, 10) == msgs(30, 31)
        store.close()
    finally:
        for p in servers:
            p.kill()
            p.wait()


def test_the_store_serves_no_forged_messages_from_a_stray_record_overlapping_the_tail(
    nats_url: str,
) -> None:
    """A stray data record 450..549 over a bridge's 1..500, then the bridge's own 501..700
    after it: ``serve --nats`` answers re-requests from the true records or not at all,
    never with what the stray record claims."""

    async def fill() -> None:
        async with stream_context(nats_url) as js:
            bridge = Bridge(js, STREAM, window=100, lost_grace=0)
            for first in range(1, 501, 100):
                await bridge.add(MessagesDelivered(SESSION, first, msgs(first, first + 99)))
            await bridge.flush()
            await put(js, "data", 450, 100, blocks(msgs(450, 549, b"forged")))
            tail = [MessagesDelivered(SESSION, 501, msgs(501, 700)), SessionEnded(SESSION, 701)]
            await bridge.run(tail)
            assert bridge.records_refused == 1

    run(fill())
    store = JetStreamStore(nats_url, STREAM, SESSION)
    try:
        for seq in (1, 450, 520, 550, 600, 650):
            got = store.get(seq, 10, 65536)
            assert got == msgs(seq, seq + len(got) - 1), (seq, got)
        assert store.get(650, 10, 65536) == msgs(650, 659)
    finally:
        store.close()
