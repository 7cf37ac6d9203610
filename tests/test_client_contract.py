"""The client contract: what every client promises, run against each of them.

Each test runs against the blocking client with its receiver thread, the blocking client
in pull mode and the asyncio client (``kind``; see client_contract.py), over loopback
unicast with a re-request server in a thread and packets dropped on purpose. What only
one client does is tested in tests/sync/ and tests/asyncio/.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Iterator

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from client_contract import KINDS, Driven
from client_support import (
    GIVE_UP,
    SESSION,
    Loop,
    Repeater,
    Responder,
    closed_port_address,
    end_of_session,
    expected,
    heartbeat,
    make_messages,
    make_packets,
    sender,
)
from moldudp64._client import READ_BATCH
from moldudp64.asyncio.client import AsyncMoldUDP64
from moldudp64.events import (
    ConsumerOverrun,
    DatagramDropped,
    Event,
    FeedStale,
    Message,
    MessagesDelivered,
    MessagesLost,
    ServerDisabled,
    SessionChanged,
    SessionEnded,
    SessionStarted,
    Source,
)
from moldudp64.exceptions import ConfigError, MessagesLostError
from moldudp64.net import open_unicast_socket
from moldudp64.sync.client import MoldUDP64
from moldudp64.wire import Packet, RetransmissionRequest

CLIENT_LOGGERS = ("moldudp64.sync.client", "moldudp64.asyncio.client")


@pytest.fixture(params=KINDS)
def kind(request: pytest.FixtureRequest) -> str:
    value: str = request.param
    return value


@pytest.fixture
def loop() -> Iterator[Loop]:
    lp = Loop()
    yield lp
    lp.close()


# --------------------------------------------------------------------------- delivery


def test_in_order_feed_is_delivered_exactly_once(loop: Loop, kind: str) -> None:
    msgs = make_messages(1500)
    seen: list[Event] = []
    before = threading.active_count()
    with Driven(kind, on_event=seen.append).open_with_sockets(loop.line, loop.rereq) as d:
        # a receiver thread in thread mode only
        assert threading.active_count() == before + (kind == "thread")
        loop.send([*make_packets(msgs), end_of_session(msgs)])
        got = d.messages()
    c = d.client
    assert got == expected(msgs)
    assert isinstance(seen[0], SessionStarted)
    assert seen[-1] == SessionEnded(SESSION, len(msgs) + 1)
    assert c.session_ended and c.messages_lost == 0
    assert c.stats.datagrams_received == len(make_packets(msgs)) + 1
    assert loop.line.fileno() == -1 and loop.rereq.fileno() == -1
    if kind == "pull":
        assert d.sync._thread is None


def test_dropped_packets_are_recovered_from_the_server(loop: Loop, kind: str) -> None:
    msgs = make_messages(3000)
    packets = make_packets(msgs)
    drop = {0, 1, 5, 40, 41, 42, len(packets) - 1, *range(100, len(packets), 7)}
    seen: list[Event] = []
    with Responder({SESSION: msgs}) as server:
        d = Driven(kind, [server.address], on_event=seen.append)
        with d.open_with_sockets(loop.line, loop.rereq):
            loop.send([*packets, end_of_session(msgs)], drop, end_repeats=2)
            got = d.messages()
        assert server.answers > 0
    c = d.client
    assert got == expected(msgs)
    assert c.lost_ranges == []
    assert c.stats.receiver.messages_recovered > 0
    assert isinstance(seen[0], SessionStarted) and isinstance(seen[-1], SessionEnded)
    assert c.stats.requests_sent > 0 and c.local_request_address is not None
    assert c.closed


@settings(
    max_examples=8, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(drop=st.sets(st.integers(0, 43), max_size=30))
def test_any_drop_pattern_is_recovered(kind: str, drop: set[int]) -> None:
    msgs = make_messages(600)
    packets = make_packets(msgs)
    assert len(packets) == 44
    lp = Loop()
    try:
        with (
            Responder({SESSION: msgs}) as server,
            Driven(kind, [server.address]).open_with_sockets(lp.line, lp.rereq) as d,
        ):
            lp.send([*packets, end_of_session(msgs)], drop, end_repeats=2)
            got = d.messages()
        assert got == expected(msgs)
        assert d.client.lost_ranges == []
    finally:
        lp.close()


#: One unanswered request takes a server out (max_rerequest_retries=1): the live server,
#: a thread of this process, has 0.3 s to answer (20 ms, FAST's, is a loaded machine's
#: scheduling delay: the live server was taken out too, its gaps reported lost).
ONE_STRIKE = {
    "max_request_attempts": 40,
    "request_delay": 0.05,
    "request_timeout": 0.3,
    "max_request_timeout": 1.0,
}


def test_dead_server_beside_a_live_one(loop: Loop, kind: str) -> None:
    msgs = make_messages(2000)
    packets = make_packets(msgs)
    drop = set(range(3, len(packets), 4))
    seen: list[Event] = []
    with Responder({SESSION: msgs}, silent=True) as dead, Responder({SESSION: msgs}) as live:
        d = Driven(
            kind,
            [dead.address, live.address],
            # the fast timers give up after ~0.6 s; a loaded machine can starve the reader
            # that long, which is not what this test is about. Gaps are asked for once the
            # burst has passed them (request_delay), so the dead server's silence counts
            # against it (silence about numbers the feed has not passed never does).
            receiver_options=ONE_STRIKE,
            max_rerequest_retries=1,
            on_event=seen.append,
        )
        with d.open_with_sockets(loop.line, loop.rereq):
            loop.send([*packets, end_of_session(msgs)], drop, end_repeats=2)
            got = d.messages()
        assert dead.requests > 0 and live.answers > 0
    assert got == expected(msgs)
    assert ServerDisabled(dead.address, 1) in seen
    assert d.client.messages_lost == 0


def test_unreachable_server_beside_a_live_one(loop: Loop, kind: str) -> None:
    """Nothing listens at the first server's port: it is taken out, the other answers."""
    msgs = make_messages(1000)
    packets = make_packets(msgs)
    with Responder({SESSION: msgs}) as live:
        d = Driven(
            kind,
            [closed_port_address(), live.address],
            # as above: gaps are asked for once the burst passed them, so the closed port's
            # silence counts against it (silence about numbers the feed has not passed never
            # does; on a loaded machine the live server could answer everything first)
            receiver_options=ONE_STRIKE,
            max_rerequest_retries=1,
        )
        with d.open_with_sockets(loop.line, loop.rereq):
            loop.send([*packets, end_of_session(msgs)], range(2, len(packets), 3))
            got = d.messages()
    assert got == expected(msgs)
    assert d.client.stats.receiver.servers_in_rotation == 1


@pytest.mark.parametrize(
    ("servers", "drop"),
    [("silent+closed", {3, 4, 10}), ("closed", {3}), ("silent", {6, 7})],
)
def test_all_servers_dead_loss_is_reported_and_delivery_goes_on(
    loop: Loop, kind: str, servers: str, drop: set[int]
) -> None:
    msgs = make_messages(1000)
    packets = make_packets(msgs)
    # the ranges lost: runs of consecutive dropped packets
    runs: list[tuple[int, int]] = []
    for i in sorted(drop):
        if runs and runs[-1][1] == i - 1:
            runs[-1] = (runs[-1][0], i)
        else:
            runs.append((i, i))
    lost = [
        (
            sum(len(Packet(p)) for p in packets[:i]) + 1,
            sum(len(Packet(p)) for p in packets[: j + 1]),
        )
        for i, j in runs
    ]
    with Responder({SESSION: msgs}, silent=True) as dead:
        addrs = {
            "silent+closed": [dead.address, closed_port_address()],
            "closed": [closed_port_address()],
            "silent": [dead.address],
        }[servers]
        d = Driven(kind, addrs, receiver_options=GIVE_UP)
        with d.open_with_sockets(loop.line, loop.rereq):
            loop.send([*packets, end_of_session(msgs)], drop, end_repeats=2)
            got = d.messages()
    c = d.client
    missing = {s for a, b in lost for s in range(a, b + 1)}
    assert got == [m for m in expected(msgs) if m.seq_num not in missing]
    assert [(e.first_seq, e.last_seq) for e in c.lost_ranges] == lost
    assert c.messages_lost == len(missing) == sum(e.count for e in c.lost_ranges) > 0
    assert c.session_ended


def test_strict_mode_raises_on_loss_and_resumes(loop: Loop, kind: str) -> None:
    msgs = make_messages(400)
    packets = make_packets(msgs)
    got: list[Message] = []
    with Driven(kind, [], strict=True).open_with_sockets(loop.line, loop.rereq) as d:
        loop.send([*packets, end_of_session(msgs)], {5})
        with pytest.raises(MessagesLostError) as info:
            d.messages(into=got)
        assert isinstance(info.value.event, MessagesLost)
        d.messages(into=got)
    first = info.value.event.first_seq
    last = info.value.event.last_seq
    assert got == [m for m in expected(msgs) if not first <= m.seq_num <= last]


def test_session_change_mid_stream(loop: Loop, kind: str) -> None:
    a = make_messages(500, b"a")
    b = make_messages(700, b"b")
    pa = make_packets(a, "SESSIONAAA")
    pb = make_packets(b, "SESSIONBBB")
    seen: list[Event] = []
    with Responder({"SESSIONAAA": a, "SESSIONBBB": b}) as server:
        # without an end of session, A must fall silent for stale_after before B is followed
        d = Driven(kind, [server.address], {"stale_after": 0.3}, on_event=seen.append)
        with d.open_with_sockets(loop.line, loop.rereq):
            loop.send(pa, {4})
            loop.send([heartbeat(a, "SESSIONAAA")])
            # wait until session A is complete before session B starts
            first = d.messages(most=len(a))
            loop.send([*pb, end_of_session(b, "SESSIONBBB")], {0, 9}, end_repeats=2)
            rest = d.messages()
    assert first == expected(a, "SESSIONAAA")
    assert rest == expected(b, "SESSIONBBB")
    assert SessionChanged("SESSIONAAA", "SESSIONBBB", 1) in seen
    assert d.client.session == "SESSIONBBB"


def test_pinned_session_ignores_other_sessions(loop: Loop, kind: str) -> None:
    msgs = make_messages(300)
    other = make_packets(make_messages(50, b"x"), "OTHERSESS1")
    seen: list[Event] = []
    d = Driven(kind, [], expected_session_ident=SESSION, on_event=seen.append)
    with d.open_with_sockets(loop.line, loop.rereq):
        loop.send(other)
        loop.send([*make_packets(msgs), end_of_session(msgs)])
        got = d.messages()
    assert got == expected(msgs)
    assert any(isinstance(e, DatagramDropped) and e.reason == "wrong_session" for e in seen)


def test_expected_seq_num_starts_there(loop: Loop, kind: str) -> None:
    msgs = make_messages(300)
    packets = make_packets(msgs)
    start = len(Packet(packets[0])) + len(Packet(packets[1])) + 1
    with Responder({SESSION: msgs}) as server:
        d = Driven(kind, [server.address], expected_seq_num=start)
        with d.open_with_sockets(loop.line, loop.rereq):
            loop.send([*packets[3:], end_of_session(msgs)])  # packet 2 must be requested
            got = d.messages()
    assert got == expected(msgs)[start - 1 :]


def test_malformed_datagrams_are_counted_and_never_stop_the_client(loop: Loop, kind: str) -> None:
    msgs = make_messages(200)
    seen: list[Event] = []
    with Driven(kind, [], on_event=seen.append).open_with_sockets(loop.line, loop.rereq) as d:
        loop.send([b"short", make_packets(msgs)[0][:-3], b"x" * 25])
        loop.send([*make_packets(msgs), end_of_session(msgs)])
        got = d.messages()
    assert got == expected(msgs)
    assert sum(isinstance(e, DatagramDropped) for e in seen) == 3
    assert sum(d.client.stats.receiver.malformed.values()) == 3


def test_line_b_fills_line_a_gaps_without_requests(kind: str) -> None:
    msgs = make_messages(1000)
    packets = make_packets(msgs)
    a, b, rereq = (open_unicast_socket(("127.0.0.1", 0), rcvbuf=4 << 20) for _ in range(3))
    tx = sender()
    try:
        with Driven(kind, []).open_with_sockets([a, b], rereq) as d:
            for i, packet in enumerate([*packets, end_of_session(msgs)]):
                if i % 3 != 0:  # every third packet lost on A ...
                    tx.sendto(packet, a.getsockname())
                if i % 3 != 1:  # ... and a different third on B
                    tx.sendto(packet, b.getsockname())
            got = d.messages()
        assert got == expected(msgs)
        assert d.client.stats.requests_sent == 0
        assert d.client.stats.receiver.packets[Source.LINE_B] > 0
    finally:
        tx.close()


# --------------------------------------------------------------------------- API behaviour


def test_events_yields_batches_and_stops_at_end_of_session(loop: Loop, kind: str) -> None:
    msgs = make_messages(500)
    with Driven(kind, []).open_with_sockets(loop.line, loop.rereq) as d:
        loop.send([*make_packets(msgs), end_of_session(msgs)])
        events = d.events()
    assert isinstance(events[0], SessionStarted)
    assert isinstance(events[-1], SessionEnded)
    batches = [e for e in events if isinstance(e, MessagesDelivered)]
    flat = [Message(e.session, e.seq_num + i, m) for e in batches for i, m in enumerate(e.messages)]
    assert flat == expected(msgs)


def test_breaking_out_and_resuming_hands_each_message_out_once(loop: Loop, kind: str) -> None:
    msgs = make_messages(900)
    got: list[Message] = []
    with Driven(kind, []).open_with_sockets(loop.line, loop.rereq) as d:
        loop.send([*make_packets(msgs), end_of_session(msgs)])
        for step in (1, 7, 13, 250):
            d.messages(into=got, most=step)
        d.messages(into=got)
    assert got == expected(msgs)


def test_events_after_breaking_out_of_messages_continue_mid_batch(loop: Loop, kind: str) -> None:
    msgs = make_messages(400)
    with Driven(kind, []).open_with_sockets(loop.line, loop.rereq) as d:
        loop.send([*make_packets(msgs), end_of_session(msgs)])
        got = d.messages(most=5)  # breaks off inside the first packet's batch
        for ev in d.events():
            if isinstance(ev, MessagesDelivered):
                got.extend(
                    Message(ev.session, ev.seq_num + i, m) for i, m in enumerate(ev.messages)
                )
    assert got == expected(msgs)


def test_stop_at_end_of_session_false_follows_the_next_session(loop: Loop, kind: str) -> None:
    a = make_messages(100, b"a")
    b = make_messages(100, b"b")
    d = Driven(kind, [], stop_at_end_of_session=False)
    with d.open_with_sockets(loop.line, loop.rereq):
        loop.send([*make_packets(a, "SESSIONAAA"), end_of_session(a, "SESSIONAAA")])
        loop.send([*make_packets(b, "SESSIONBBB"), end_of_session(b, "SESSIONBBB")])
        got = d.messages(most=200)
    assert got == expected(a, "SESSIONAAA") + expected(b, "SESSIONBBB")


def test_timeout_raises_timeout_error(loop: Loop, kind: str) -> None:
    with (
        Driven(kind, []).open_with_sockets(loop.line, loop.rereq) as d,
        pytest.raises(TimeoutError),
    ):
        d.messages(timeout=0.05, most=1)


def test_feed_stale_reaches_the_user(loop: Loop, kind: str) -> None:
    msgs = make_messages(20)
    seen: list[Event] = []
    d = Driven(kind, [], stale_after=0.05, on_event=seen.append)
    with d.open_with_sockets(loop.line, loop.rereq):
        loop.send([*make_packets(msgs), heartbeat(msgs)])  # a lone packet waits for a second
        assert d.messages(most=len(msgs)) == expected(msgs)
        # nothing more arrives: FeedStale comes out of the iteration, then the timeout
        with pytest.raises(TimeoutError):
            d.messages(timeout=0.5, most=1)
    assert any(isinstance(e, FeedStale) for e in seen) and d.client.stale


def test_on_event_raising_propagates_and_keeps_the_rest(loop: Loop, kind: str) -> None:
    msgs = make_messages(100)

    def on_event(ev: Event) -> None:
        if isinstance(ev, SessionStarted):
            raise ValueError("from on_event")

    with Driven(kind, [], on_event=on_event).open_with_sockets(loop.line, loop.rereq) as d:
        loop.send([*make_packets(msgs), end_of_session(msgs)])
        with pytest.raises(ValueError, match="from on_event"):
            d.messages(most=1)
        got = d.messages()
    assert got == expected(msgs)


def test_loss_is_logged_once_by_the_clients_own_logger(
    loop: Loop, kind: str, caplog: pytest.LogCaptureFixture
) -> None:
    """One WARNING per lost range, from the client's module (never the other client's);
    the core's own line is INFO."""
    msgs = make_messages(300)
    own = "moldudp64.asyncio.client" if kind.startswith("asyncio") else "moldudp64.sync.client"
    # every logger that could speak, at INFO: a command run in this process before may
    # have quieted one (``moldudp64 listen`` does, as it reports loss itself)
    for name in ("moldudp64", "moldudp64.receiver", *CLIENT_LOGGERS):
        caplog.set_level(logging.INFO, logger=name)
    d = Driven(kind, [], receiver_options=GIVE_UP)
    with d.open_with_sockets(loop.line, loop.rereq):
        loop.send([*make_packets(msgs), end_of_session(msgs)], {3})
        d.messages()
    assert len(d.client.lost_ranges) == 1
    warnings = [r for r in caplog.records if r.levelno >= logging.WARNING and "lost" in r.message]
    assert [r.name for r in warnings] == [own]
    core = [r for r in caplog.records if r.name == "moldudp64.receiver" and "lost" in r.message]
    assert [r.levelno for r in core] == [logging.INFO]


# --------------------------------------------------------------------------- back-pressure


def test_slow_consumer_pauses_the_reader_and_loses_nothing(loop: Loop, kind: str) -> None:
    if kind == "pull":
        pytest.skip("pull mode has no backlog: nothing is read while nobody iterates")
    msgs = make_messages(10_000)
    packets = make_packets(msgs)
    with Driven(kind, [], max_backlog=100).open_with_sockets(loop.line, loop.rereq) as d:
        c = d.client
        loop.send([*packets, end_of_session(msgs)])
        assert d.wait_until(lambda: c.stats.backlog_pauses >= 1)
        # The reader stopped after a read batch or two: the rest waits in the kernel buffer.
        assert c.stats.datagrams_received < len(packets)
        if kind == "thread":
            assert c.stats.datagrams_received < 2 * READ_BATCH
        got = d.messages()
    assert got == expected(msgs)
    assert c.stats.backlog_pauses >= (2 if kind == "thread" else 1)


def test_kernel_drops_are_reported_and_recovered(kind: str) -> None:
    msgs = make_messages(4000)
    packets = make_packets(msgs)
    lp = Loop(rcvbuf=4096)  # tiny buffer: the kernel drops while nobody reads
    seen: list[Event] = []
    try:
        with Responder({SESSION: msgs}) as server:
            # thread mode and asyncio read until the backlog bound, then pause; pull mode
            # and asyncio between calls read nothing until messages() is called
            d = Driven(kind, [server.address], max_backlog=50, on_event=seen.append)
            c = d.client
            with d.open_with_sockets(lp.line, lp.rereq):
                lp.send(packets)
                if kind != "pull":
                    assert d.wait_until(lambda: c.stats.backlog_pauses >= 1)
                # the end of session comes again and again, as a real server sends it
                with Repeater(lp.tx, lp.dest, end_of_session(msgs)):
                    got = d.messages(timeout=10)
        assert got == expected(msgs)
        overruns = [e for e in seen if isinstance(e, ConsumerOverrun)]
        assert overruns and sum(e.dropped for e in overruns) == c.datagrams_overrun > 0
        assert c.stats.kernel_drops >= c.datagrams_overrun
        if kind.startswith("asyncio"):
            assert c.stats.kernel_drops == c.datagrams_overrun
        assert c.stats.receiver.messages_recovered > 0
    finally:
        lp.close()


# --------------------------------------------------------------------------- configuration


def test_request_without_server_is_refused_in_the_callers_thread(loop: Loop, kind: str) -> None:
    d = Driven(kind, [])
    _, requests = d.start_with_sockets(loop.line, loop.rereq)
    try:
        with pytest.raises(ConfigError, match="no re-request server"):
            requests.try_send(RetransmissionRequest(SESSION, 1, 1))
    finally:
        d.close()


@pytest.mark.parametrize("cls", [MoldUDP64, AsyncMoldUDP64])
@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"multicast_addr": ("10.0.0.1", 30001)}, "not a multicast group"),
        ({"multicast_addr": ("127.0.0.1", 30001)}, "not a multicast group"),
        ({"multicast_addr": ("239.1.1.1", 0)}, "port"),
        ({"multicast_addr": ("239.1.1.1", 70000)}, "port"),
        ({"multicast_addr": "239.1.1.1"}, "GROUP:PORT"),
        ({"multicast_addr": ("nonsense", 1)}, "IPv4"),
        ({"interface_addr": "10.255.255.77"}, "not an address of this host"),
        ({"interface_addr": "eth99"}, "IPv4"),
        ({"rerequest_server_addrs": [("127.0.0.1", 0)]}, "port"),
        ({"rerequest_server_addrs": ("127.0.0.1", 9000)}, "list"),
        ({"rerequest_server_addrs": ["127.0.0.1"]}, "HOST:PORT"),
        ({"rerequest_server_addrs": ["127.0.0.1:9", "127.0.0.1:9"]}, "twice"),
        ({"expected_session_ident": "ELEVENCHARS"}, "expected_session_ident"),
        ({"expected_session_ident": 5}, "expected_session_ident"),
        ({"expected_seq_num": 0}, "expected_seq_num"),
        ({"max_rerequest_retries": 0}, "max_rerequest_retries"),
        ({"rcvbuf": -1}, "rcvbuf"),
        ({"max_backlog": 0}, "max_backlog"),
        ({"max_backlog": -5}, "max_backlog"),
        ({"request_timeout": 0}, "request_timeout"),
        ({"stale_after": "soon"}, "stale_after"),
        ({"line_b_addr": ("239.1.1.1", 30001)}, "same as line A"),
        ({"line_b_addr": ("127.0.0.1", 30002)}, "not a multicast group"),
        ({"receiver_options": {"no_such_option": 1}}, "no_such_option"),
        ({"receiver_options": {"max_request_attempts": 0}}, "max_request_attempts"),
    ],
)
def test_bad_settings_are_config_errors(
    cls: type[MoldUDP64 | AsyncMoldUDP64], kwargs: dict[str, object], match: str
) -> None:
    args: dict[str, object] = {"multicast_addr": ("239.1.1.1", 30001)}
    args.update(kwargs)
    with pytest.raises(ConfigError, match=match):
        cls(**args)  # type: ignore[arg-type]
