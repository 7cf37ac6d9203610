"""Both clients over real multicast on loopback, inside the test run's private namespace.

A real :class:`~moldudp64.sync.server.Publisher` sends to a 239.x group with packets
dropped on purpose (a seeded :class:`~moldudp64.faults.FaultInjector`); one or two
re-request servers answer; the client's output must equal what was published. Every test
here needs the ``multicast`` fixture, which skips with the reason when no private network
namespace could be made; the same flows run over loopback unicast in
test_client_contract.py (every client), sync/test_client.py and asyncio/test_client.py.
"""

from __future__ import annotations

import asyncio
import errno
import threading
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import Any

import pytest

from client_support import (
    FAST,
    GIVE_UP,
    PAYLOAD,
    SESSION,
    Responder,
    end_of_session,
    expected,
    free_udp_port,
    make_messages,
    make_packets,
    sender,
)
from moldudp64.asyncio.client import AsyncMoldUDP64
from moldudp64.events import (
    Address,
    Event,
    Message,
    MessagesLost,
    ServerDisabled,
    SessionChanged,
    Source,
)
from moldudp64.exceptions import ConfigError, SocketError
from moldudp64.faults import FaultInjector
from moldudp64.store import MemoryStore
from moldudp64.sync.client import MoldUDP64
from moldudp64.sync.server import Publisher, RerequestServer
from moldudp64.wire import Packet

GROUP = "239.192.7.2"
#: Quick timers; an end of session believed after 0.3 s of quiet (end_confirm: its 2.5 s
#: default would make every test whose feed ends wait that out).

pytestmark = pytest.mark.usefixtures("multicast")


def group() -> Address:
    return (GROUP, free_udp_port())


def publisher(session: str, addr: Address, *, drop: float = 0.0, seed: int = 1) -> Publisher:
    """A publisher on ``addr`` with its own re-request server on 127.0.0.1."""
    return Publisher(
        session,
        addr,
        interface_addr="127.0.0.1",
        max_payload=PAYLOAD,
        heartbeat_interval=0.05,
        end_of_session_duration=0.3,
        end_of_session_interval=0.02,
        rerequest_bind=("127.0.0.1", 0),
        rate_limit=None,
        faults=FaultInjector(drop=drop, seed=seed) if drop else None,
    )


def second_server(session: str, messages: Sequence[bytes]) -> RerequestServer:
    store = MemoryStore(max_bytes=None)
    for m in messages:
        store.append(m)
    return RerequestServer(session, store, ("127.0.0.1", 0), max_payload=PAYLOAD, rate_limit=None)


@contextmanager
def running(pub: Publisher, messages: Sequence[bytes], *, end: bool = True) -> Iterator[None]:
    """Publish ``messages`` from a thread (then end the session) while the body consumes.

    The run is waited for (its end-of-session period, 0.3 s) before the publisher is
    closed: closing it while ``run()`` is between sending the end of session and
    waiting it out makes ``run()`` raise ConfigError (reported to the server's owner).
    """
    errors: list[BaseException] = []

    def run() -> None:
        try:
            pub.run(messages, end_session=end)
        except BaseException as exc:  # pragma: no cover - reported below
            errors.append(exc)

    t = threading.Thread(target=run, name="test-publisher")
    pub.start()
    t.start()
    try:
        yield
        t.join(10)
    finally:
        pub.close()
        t.join(10)
    assert not t.is_alive() and errors == []


def client(addr: Address, servers: Sequence[Address], **kw: Any) -> MoldUDP64:
    opts = {**FAST, **kw.pop("receiver_options", {})}
    return MoldUDP64(addr, "127.0.0.1", servers, receiver_options=opts, rcvbuf=4 << 20, **kw)


# --------------------------------------------------------------------------- blocking


def test_blocking_client_recovers_dropped_packets_from_two_servers() -> None:
    msgs = make_messages(4000)
    addr = group()
    pub = publisher(SESSION, addr, drop=0.1, seed=7)
    with second_server(SESSION, msgs) as other:
        assert pub.rerequest_address is not None
        servers = [pub.rerequest_address, other.address]
        c = client(addr, servers)
        with c, running(pub, msgs):
            got = list(c.messages(timeout=10))
        assert got == expected(msgs)
        stats = c.stats.receiver
        assert stats.gaps_detected > 0 and stats.messages_recovered > 0
        # Which of the two answers is the core's choice (one that answers keeps being
        # asked while it has nothing outstanding), so only their sum is certain.
        assert sum(stats.answers.values()) > 0
    assert c.lost_ranges == [] and c.session_ended


def test_two_clients_on_one_host_on_one_group_both_complete() -> None:
    msgs = make_messages(3000)
    addr = group()
    pub = publisher(SESSION, addr, drop=0.05, seed=3)
    assert pub.rerequest_address is not None
    a = client(addr, [pub.rerequest_address])
    b = client(addr, [pub.rerequest_address])
    results: dict[str, list[Message]] = {}
    with a, b:
        t = threading.Thread(target=lambda: results.setdefault("b", list(b.messages(timeout=10))))
        t.start()
        with running(pub, msgs):
            results["a"] = list(a.messages(timeout=10))
            t.join(10)
    assert results["a"] == expected(msgs)
    assert results["b"] == expected(msgs)


def test_dead_server_beside_a_live_one() -> None:
    msgs = make_messages(2000)
    addr = group()
    pub = publisher(SESSION, addr, drop=0.1, seed=11)
    seen: list[Event] = []
    with Responder({SESSION: msgs}, silent=True) as dead:
        assert pub.rerequest_address is not None
        c = client(
            addr,
            [dead.address, pub.rerequest_address],
            # Gaps are asked for once the burst has passed them (request_delay), so the dead
            # server's silence counts against it: silence about numbers the feed has not
            # passed never does, and once the live server answers, the dead one is not
            # asked again. The publisher is a thread beside the reader: on a loaded machine
            # it can stall for tens of milliseconds. Attempts to spare, as a starved reader
            # is not what this test is about, and 0.3 s for the live server to answer (one
            # unanswered request takes a server out: 20 ms is a loaded machine's delay).
            receiver_options={
                "max_request_attempts": 40,
                "request_delay": 0.2,
                "request_timeout": 0.3,
                "max_request_timeout": 1.0,
            },
            max_rerequest_retries=1,
            on_event=seen.append,
        )
        with c, running(pub, msgs):
            got = list(c.messages(timeout=10))
        assert dead.requests > 0
    assert got == expected(msgs)
    assert ServerDisabled(dead.address, 1) in seen
    assert c.messages_lost == 0


def test_all_servers_dead_loss_is_reported_and_the_client_keeps_going() -> None:
    msgs = make_messages(2000)
    addr = group()
    pub = publisher(SESSION, addr, drop=0.05, seed=5)
    with Responder({SESSION: msgs}, silent=True) as dead:
        c = client(addr, [dead.address], receiver_options=GIVE_UP)
        with c, running(pub, msgs):
            got = list(c.messages(timeout=10))
    lost = {s for e in c.lost_ranges for s in range(e.first_seq, e.last_seq + 1)}
    assert lost and c.messages_lost == len(lost)
    assert all(isinstance(e, MessagesLost) for e in c.lost_ranges)
    assert got == [m for m in expected(msgs) if m.seq_num not in lost]
    assert c.session_ended  # it went on to the end of the session


def test_session_change_mid_stream() -> None:
    a = make_messages(800, b"a")
    b = make_messages(900, b"b")
    addr = group()
    seen: list[Event] = []
    pub_a = publisher("SESSIONAAA", addr, drop=0.05, seed=2)
    pub_b = publisher("SESSIONBBB", addr, drop=0.05, seed=4)
    assert pub_a.rerequest_address is not None and pub_b.rerequest_address is not None
    c = client(
        addr,
        [pub_a.rerequest_address, pub_b.rerequest_address],
        on_event=seen.append,
        receiver_options={"stale_after": 0.3},
    )
    with c:
        with running(pub_a, a, end=False):
            it = c.messages(timeout=10)
            first = [next(it) for _ in a]  # session A complete (heartbeats reveal its tail)
        # A never ended: B is followed once A has been silent for stale_after
        with running(pub_b, b):
            rest = list(c.messages(timeout=10))
    assert first == expected(a, "SESSIONAAA")
    assert rest == expected(b, "SESSIONBBB")
    assert SessionChanged("SESSIONAAA", "SESSIONBBB", 1) in seen


def test_low_level_start_over_multicast() -> None:
    msgs = make_messages(1000)
    addr = group()
    pub = publisher(SESSION, addr, drop=0.1, seed=9)
    assert pub.rerequest_address is not None
    c = client(addr, [pub.rerequest_address])
    datagrams, _requests = c.start()
    held: dict[int, Packet] = {}
    sources = set()
    try:
        with running(pub, msgs):
            while sum(len(p) for p in held.values()) < len(msgs):
                d = datagrams.recv(timeout=10)
                p = d.packet()
                if p.msg_count and p.msg_count != 0xFFFF:
                    held[p.seq_num] = p
                    sources.add(d.source)
    finally:
        c.close()
    assert [bytes(m) for _, p in sorted(held.items()) for m in p] == msgs
    assert sources == {Source.LINE_A, Source.RETRANSMISSION}


def test_line_b_on_a_second_group_fills_line_a_gaps() -> None:
    msgs = make_messages(2000)
    packets = [*make_packets(msgs), end_of_session(msgs)]
    line_a, line_b = group(), ("239.192.7.3", free_udp_port())
    # no server: a gap on one line waits up to loss_grace for the other line
    c = client(line_a, [], line_b_addr=line_b, receiver_options={"loss_grace": 1.0})
    tx = sender()
    try:
        with c:
            for i, p in enumerate(packets):
                if i % 3 != 0 or i == len(packets) - 1:  # A loses every third packet
                    tx.sendto(p, line_a)
                if i % 3 != 1 or i == len(packets) - 1:  # B loses a different third
                    tx.sendto(p, line_b)
            got = list(c.messages(timeout=10))
    finally:
        tx.close()
    assert got == expected(msgs)
    assert c.stats.receiver.packets[Source.LINE_B] > 0
    assert c.stats.requests_sent == 0 and c.lost_ranges == []


# --------------------------------------------------------------------------- asyncio


def test_asyncio_client_recovers_dropped_packets_from_two_servers() -> None:
    msgs = make_messages(4000)
    addr = group()
    pub = publisher(SESSION, addr, drop=0.1, seed=13)

    async def main(servers: list[Address]) -> tuple[list[Message], AsyncMoldUDP64]:
        c = AsyncMoldUDP64(addr, "127.0.0.1", servers, receiver_options=FAST, rcvbuf=4 << 20)
        async with c:
            with running(pub, msgs):
                got = [m async for m in c.messages(timeout=10)]
        return got, c

    with second_server(SESSION, msgs) as other:
        assert pub.rerequest_address is not None
        got, c = asyncio.run(main([pub.rerequest_address, other.address]))
    assert got == expected(msgs)
    assert c.stats.receiver.messages_recovered > 0 and c.lost_ranges == []


def test_asyncio_and_blocking_clients_side_by_side() -> None:
    msgs = make_messages(2000)
    addr = group()
    pub = publisher(SESSION, addr, drop=0.05, seed=21)
    assert pub.rerequest_address is not None
    servers = [pub.rerequest_address]
    blocking = client(addr, servers)
    out: dict[str, list[Message]] = {}

    async def main() -> None:
        async with AsyncMoldUDP64(addr, "127.0.0.1", servers, receiver_options=FAST) as ac:
            with running(pub, msgs):
                t = threading.Thread(
                    target=lambda: out.setdefault("sync", list(blocking.messages(timeout=10)))
                )
                t.start()
                out["async"] = [m async for m in ac.messages(timeout=10)]
                await asyncio.get_running_loop().run_in_executor(None, t.join, 10)

    with blocking:
        asyncio.run(main())
    assert out["sync"] == expected(msgs)
    assert out["async"] == expected(msgs)


# --------------------------------------------------------------------------- errors


def test_port_in_use_without_reuse_is_a_socket_error() -> None:
    addr = group()
    with client(addr, []):
        c = MoldUDP64(addr, "127.0.0.1", reuse=False)
        with pytest.raises(SocketError) as info:
            c.open()
    assert info.value.cause is not None and info.value.cause.errno == errno.EADDRINUSE
    assert f"{addr[0]}:{addr[1]}" in str(info.value)
    assert info.value.address is not None


def test_asyncio_port_in_use_without_reuse_is_a_socket_error() -> None:
    addr = group()

    async def main() -> None:
        async with AsyncMoldUDP64(addr, "127.0.0.1"):
            with pytest.raises(SocketError) as info:
                await AsyncMoldUDP64(addr, "127.0.0.1", reuse=False).open()
            assert info.value.cause is not None
            assert info.value.cause.errno == errno.EADDRINUSE

    asyncio.run(main())


def test_joining_a_non_multicast_address_is_refused_before_any_socket() -> None:
    with pytest.raises(ConfigError, match="not a multicast group"):
        MoldUDP64(("127.0.0.1", free_udp_port()))
    with pytest.raises(ConfigError, match="not a multicast group"):
        AsyncMoldUDP64(("10.1.2.3", 30001))


def test_unknown_interface_is_refused() -> None:
    with pytest.raises(ConfigError, match=r"10\.99\.0\.1 is not an address of this host"):
        MoldUDP64(group(), "10.99.0.1")
    with pytest.raises(ConfigError, match="not an address of this host"):
        AsyncMoldUDP64(group(), "192.0.2.55")


def test_gap_fill_latency_benchmark_runs_and_recovers_everything(multicast: None) -> None:
    """benchmarks/bench_latency.py --quick: a publisher process at 50,000 packets/s with 5%
    dropped, both client modes; every message arrives, every gap is filled (no timing
    assertion: speed belongs to the benchmark)."""
    import re
    import subprocess
    import sys
    from pathlib import Path

    bench = Path(__file__).resolve().parent.parent / "benchmarks" / "bench_latency.py"
    done = subprocess.run(
        [sys.executable, str(bench), "--quick"],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    rows = re.findall(
        r"fills=(\d+), gaps=(\d+),.*? messages=(\d+), of=(\d+), lost=(\d+)", done.stdout
    )
    assert len(rows) == 2, done.stdout  # receiver thread, pull mode
    for fills, gaps, got, sent, lost in rows:
        assert int(sent) > 0 and got == sent and lost == "0"
        assert int(gaps) > 0 and int(fills) >= int(gaps)
    assert "receiver thread" in done.stdout and "pull mode" in done.stdout
