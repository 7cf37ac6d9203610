"""The blocking client over loopback unicast (``open_with_sockets`` / ``start_with_sockets``).

Real sockets on 127.0.0.1, a re-request server in a thread, packets dropped on purpose.
The same flows over real multicast are in test_client_multicast.py.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterable, Iterator, Sequence
from itertools import chain
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from client_support import (
    SESSION,
    Repeater,
    Responder,
    closed_port_address,
    end_of_session,
    heartbeat,
    make_messages,
    make_packets,
    publish,
    sender,
    wait_until,
)
from moldudp64.events import (
    Address,
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
from moldudp64.exceptions import ClientClosed, ConfigError, EncodeError, MoldUDP64Error
from moldudp64.net import open_unicast_socket
from moldudp64.sync.client import (
    READ_BATCH,
    BatchCursor,
    EventPolicy,
    MessagesLostError,
    MoldUDP64,
)
from moldudp64.wire import Packet, RetransmissionRequest

GROUP_ADDR = ("239.192.7.1", 30001)
#: Fast recovery timers so the tests take milliseconds.
FAST = {"request_timeout": 0.02, "max_request_timeout": 0.1, "loss_grace": 0.02}
#: Give up quickly when every server is dead.
GIVE_UP = {**FAST, "max_request_attempts": 3}


def expected(messages: list[bytes], session: str = SESSION, first: int = 1) -> list[Message]:
    return [Message(session, first + i, m) for i, m in enumerate(messages)]


class Loop:
    """A line socket, a request socket, and a sender, all on 127.0.0.1."""

    def __init__(self, rcvbuf: int | None = 4 << 20) -> None:
        self.line = open_unicast_socket(("127.0.0.1", 0), rcvbuf=rcvbuf)
        self.rereq = open_unicast_socket(("127.0.0.1", 0))
        self.dest = self.line.getsockname()
        self.tx = sender()

    def send(
        self,
        packets: list[bytes],
        drop: Iterable[int] | Callable[[int], bool] = (),
        end_repeats: int = 0,
    ) -> None:
        publish(self.tx, self.dest, packets, drop, end_repeats)


@pytest.fixture
def loop() -> Iterator[Loop]:
    lp = Loop()
    yield lp
    lp.tx.close()
    lp.line.close()
    lp.rereq.close()


def client(
    servers: Sequence[Address] = (),
    receiver_options: dict[str, Any] | None = None,
    **kw: Any,
) -> MoldUDP64:
    """A client on GROUP_ADDR (never joined: tests hand it loopback sockets), fast timers."""
    opts: dict[str, Any] = {**FAST, **(receiver_options or {})}
    return MoldUDP64(GROUP_ADDR, rerequest_server_addrs=servers, receiver_options=opts, **kw)


# --------------------------------------------------------------------------- delivery


def test_in_order_feed_is_delivered_exactly_once(loop: Loop) -> None:
    msgs = make_messages(1500)
    seen: list[Event] = []
    with client(on_event=seen.append).open_with_sockets(loop.line, loop.rereq) as c:
        loop.send([*make_packets(msgs), end_of_session(msgs)])
        got = list(c.messages(timeout=5))
    assert got == expected(msgs)
    assert isinstance(seen[0], SessionStarted)
    assert seen[-1] == SessionEnded(SESSION, len(msgs) + 1)
    assert c.session_ended and c.messages_lost == 0
    assert c.stats.datagrams_received == len(make_packets(msgs)) + 1


def test_dropped_packets_are_recovered_from_the_server(loop: Loop) -> None:
    msgs = make_messages(3000)
    packets = make_packets(msgs)
    drop = {0, 1, 5, 40, 41, 42, len(packets) - 1, *range(100, len(packets), 7)}
    with Responder({SESSION: msgs}) as server:
        with client([server.address]).open_with_sockets(loop.line, loop.rereq) as c:
            loop.send([*packets, end_of_session(msgs)], drop, end_repeats=2)
            got = list(c.messages(timeout=5))
        assert server.answers > 0
    assert got == expected(msgs)
    assert c.lost_ranges == []
    assert c.stats.receiver.messages_recovered > 0


@settings(
    max_examples=8, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(drop=st.sets(st.integers(0, 43), max_size=30))
def test_any_drop_pattern_is_recovered(drop: set[int]) -> None:
    msgs = make_messages(600)
    packets = make_packets(msgs)
    assert len(packets) == 44
    lp = Loop()
    try:
        with (
            Responder({SESSION: msgs}) as server,
            client([server.address]).open_with_sockets(lp.line, lp.rereq) as c,
        ):
            lp.send([*packets, end_of_session(msgs)], drop, end_repeats=2)
            got = list(c.messages(timeout=5))
        assert got == expected(msgs)
    finally:
        lp.tx.close()


def test_dead_server_beside_a_live_one(loop: Loop) -> None:
    msgs = make_messages(2000)
    packets = make_packets(msgs)
    drop = set(range(3, len(packets), 4))
    seen: list[Event] = []
    with Responder({SESSION: msgs}, silent=True) as dead, Responder({SESSION: msgs}) as live:
        c = client([dead.address, live.address], max_rerequest_retries=1, on_event=seen.append)
        with c.open_with_sockets(loop.line, loop.rereq):
            loop.send([*packets, end_of_session(msgs)], drop, end_repeats=2)
            got = list(c.messages(timeout=5))
        assert dead.requests > 0 and live.answers > 0
    assert got == expected(msgs)
    assert ServerDisabled(dead.address, 1) in seen
    assert c.messages_lost == 0


def test_unreachable_server_beside_a_live_one(loop: Loop) -> None:
    """Nothing listens at the first server's port: it is taken out, the other answers."""
    msgs = make_messages(1000)
    packets = make_packets(msgs)
    with Responder({SESSION: msgs}) as live:
        c = client([closed_port_address(), live.address], max_rerequest_retries=1)
        with c.open_with_sockets(loop.line, loop.rereq):
            loop.send([*packets, end_of_session(msgs)], range(2, len(packets), 3))
            got = list(c.messages(timeout=5))
    assert got == expected(msgs)
    assert c.stats.receiver.servers_in_rotation == 1


def test_all_servers_dead_loss_is_reported_and_delivery_goes_on(loop: Loop) -> None:
    msgs = make_messages(1000)
    packets = make_packets(msgs)
    drop = {3, 4, 10}
    lost = [
        (
            sum(len(Packet(p)) for p in packets[:i]) + 1,
            sum(len(Packet(p)) for p in packets[: j + 1]),
        )
        for i, j in ((3, 4), (10, 10))
    ]
    with Responder({SESSION: msgs}, silent=True) as dead:
        c = client([dead.address, closed_port_address()], receiver_options=GIVE_UP)
        with c.open_with_sockets(loop.line, loop.rereq):
            loop.send([*packets, end_of_session(msgs)], drop, end_repeats=2)
            got = list(c.messages(timeout=5))
    missing = {s for a, b in lost for s in range(a, b + 1)}
    assert got == [m for m in expected(msgs) if m.seq_num not in missing]
    assert [(e.first_seq, e.last_seq) for e in c.lost_ranges] == lost
    assert c.messages_lost == len(missing)
    assert c.session_ended


def test_strict_mode_raises_on_loss_and_resumes(loop: Loop) -> None:
    msgs = make_messages(400)
    packets = make_packets(msgs)
    c = client([], strict=True)
    got: list[Message] = []
    with c.open_with_sockets(loop.line, loop.rereq):
        loop.send([*packets, end_of_session(msgs)], {5})
        with pytest.raises(MessagesLostError) as info:
            for m in c.messages(timeout=5):
                got.append(m)
        assert isinstance(info.value.event, MessagesLost)
        got.extend(c.messages(timeout=5))
    first = info.value.event.first_seq
    last = info.value.event.last_seq
    assert got == [m for m in expected(msgs) if not first <= m.seq_num <= last]


def test_session_change_mid_stream(loop: Loop) -> None:
    a = make_messages(500, b"a")
    b = make_messages(700, b"b")
    pa = make_packets(a, "SESSIONAAA")
    pb = make_packets(b, "SESSIONBBB")
    seen: list[Event] = []
    with Responder({"SESSIONAAA": a, "SESSIONBBB": b}) as server:
        # without an end of session, A must fall silent for stale_after before B is followed
        c = client([server.address], on_event=seen.append, receiver_options={"stale_after": 0.3})
        with c.open_with_sockets(loop.line, loop.rereq):
            loop.send(pa, {4})
            loop.send([heartbeat(a, "SESSIONAAA")])
            # wait until session A is complete before session B starts
            first = [m for _, m in zip(range(len(a)), c.messages(timeout=5), strict=False)]
            loop.send([*pb, end_of_session(b, "SESSIONBBB")], {0, 9}, end_repeats=2)
            rest = list(c.messages(timeout=5))
    assert first == expected(a, "SESSIONAAA")
    assert rest == expected(b, "SESSIONBBB")
    assert SessionChanged("SESSIONAAA", "SESSIONBBB", 1) in seen
    assert c.session == "SESSIONBBB"


def test_pinned_session_ignores_other_sessions(loop: Loop) -> None:
    msgs = make_messages(300)
    other = make_packets(make_messages(50, b"x"), "OTHERSESS1")
    seen: list[Event] = []
    c = client([], expected_session_ident=SESSION, on_event=seen.append)
    with c.open_with_sockets(loop.line, loop.rereq):
        loop.send(other)
        loop.send([*make_packets(msgs), end_of_session(msgs)])
        got = list(c.messages(timeout=5))
    assert got == expected(msgs)
    assert any(isinstance(e, DatagramDropped) and e.reason == "wrong_session" for e in seen)


def test_expected_seq_num_starts_there(loop: Loop) -> None:
    msgs = make_messages(300)
    packets = make_packets(msgs)
    start = len(Packet(packets[0])) + len(Packet(packets[1])) + 1
    with Responder({SESSION: msgs}) as server:
        c = client([server.address], expected_seq_num=start)
        with c.open_with_sockets(loop.line, loop.rereq):
            loop.send([*packets[3:], end_of_session(msgs)])  # packet 2 must be requested
            got = list(c.messages(timeout=5))
    assert got == expected(msgs)[start - 1 :]


def test_malformed_datagrams_are_counted_and_never_stop_the_client(loop: Loop) -> None:
    msgs = make_messages(200)
    seen: list[Event] = []
    with client([], on_event=seen.append).open_with_sockets(loop.line, loop.rereq) as c:
        loop.send([b"short", make_packets(msgs)[0][:-3], b"x" * 25])
        loop.send([*make_packets(msgs), end_of_session(msgs)])
        got = list(c.messages(timeout=5))
    assert got == expected(msgs)
    assert sum(isinstance(e, DatagramDropped) for e in seen) == 3
    assert sum(c.stats.receiver.malformed.values()) == 3


def test_line_b_fills_line_a_gaps_without_requests() -> None:
    msgs = make_messages(1000)
    packets = make_packets(msgs)
    a, b, rereq = (open_unicast_socket(("127.0.0.1", 0), rcvbuf=4 << 20) for _ in range(3))
    tx = sender()
    try:
        with client([]).open_with_sockets([a, b], rereq) as c:
            for i, packet in enumerate([*packets, end_of_session(msgs)]):
                if i % 3 != 0:  # every third packet lost on A ...
                    tx.sendto(packet, a.getsockname())
                if i % 3 != 1:  # ... and a different third on B
                    tx.sendto(packet, b.getsockname())
            got = list(c.messages(timeout=5))
        assert got == expected(msgs)
        assert c.stats.requests_sent == 0
        assert c.stats.receiver.packets[Source.LINE_B] > 0
    finally:
        tx.close()


# --------------------------------------------------------------------------- API behaviour


def test_events_yields_batches_and_stops_at_end_of_session(loop: Loop) -> None:
    msgs = make_messages(500)
    with client([]).open_with_sockets(loop.line, loop.rereq) as c:
        loop.send([*make_packets(msgs), end_of_session(msgs)])
        events = list(c.events(timeout=5))
    assert isinstance(events[0], SessionStarted)
    assert isinstance(events[-1], SessionEnded)
    batches = [e for e in events if isinstance(e, MessagesDelivered)]
    flat = [Message(e.session, e.seq_num + i, m) for e in batches for i, m in enumerate(e.messages)]
    assert flat == expected(msgs)


def test_breaking_out_and_resuming_hands_each_message_out_once(loop: Loop) -> None:
    msgs = make_messages(900)
    got: list[Message] = []
    with client([]).open_with_sockets(loop.line, loop.rereq) as c:
        loop.send([*make_packets(msgs), end_of_session(msgs)])
        for step in (1, 7, 13, 250):
            for i, m in enumerate(c.messages(timeout=5)):
                got.append(m)
                if i + 1 == step:
                    break
        got.extend(c.messages(timeout=5))
    assert got == expected(msgs)


def test_stop_at_end_of_session_false_follows_the_next_session(loop: Loop) -> None:
    a = make_messages(100, b"a")
    b = make_messages(100, b"b")
    with client([], stop_at_end_of_session=False).open_with_sockets(loop.line, loop.rereq) as c:
        loop.send([*make_packets(a, "SESSIONAAA"), end_of_session(a, "SESSIONAAA")])
        loop.send([*make_packets(b, "SESSIONBBB"), end_of_session(b, "SESSIONBBB")])
        it = c.messages(timeout=5)
        got = [next(it) for _ in range(200)]
    assert got == expected(a, "SESSIONAAA") + expected(b, "SESSIONBBB")


def test_timeout_raises_timeout_error(loop: Loop) -> None:
    with client([]).open_with_sockets(loop.line, loop.rereq) as c, pytest.raises(TimeoutError):
        next(c.messages(timeout=0.05))


def test_feed_stale_reaches_the_user(loop: Loop) -> None:
    msgs = make_messages(20)
    stale = threading.Event()

    def on_event(ev: Event) -> None:
        if isinstance(ev, FeedStale):
            stale.set()

    c = client([], stale_after=0.05, on_event=on_event)
    with c.open_with_sockets(loop.line, loop.rereq):
        loop.send([*make_packets(msgs), heartbeat(msgs)])  # a lone packet waits for a second
        it = c.messages(timeout=5)
        assert [next(it) for _ in msgs] == expected(msgs)
        # nothing more arrives: FeedStale comes out of the iteration, then the timeout
        with pytest.raises(TimeoutError):
            next(c.messages(timeout=0.5))
    assert stale.is_set() and c.stale


def test_close_from_another_thread_ends_a_blocked_iteration(loop: Loop) -> None:
    msgs = make_messages(10)
    c = client([]).open_with_sockets(loop.line, loop.rereq)
    first = threading.Event()
    got: list[Message] = []
    errors: list[BaseException] = []

    def consume() -> None:
        try:
            for m in c.messages():
                got.append(m)
                if len(got) == len(msgs):
                    first.set()
        except BaseException as exc:
            errors.append(exc)

    t = threading.Thread(target=consume)
    t.start()
    loop.send([*make_packets(msgs), heartbeat(msgs)])  # a lone packet waits for a second
    assert first.wait(5)
    c.close()
    t.join(5)
    assert not t.is_alive() and errors == []
    assert got == expected(msgs)
    assert c.closed
    assert loop.line.fileno() == -1 and loop.rereq.fileno() == -1


def test_user_exception_in_loop_shuts_everything_down(loop: Loop) -> None:
    msgs = make_messages(50)
    c = client([])
    with pytest.raises(RuntimeError, match="user bug"), c.open_with_sockets(loop.line, loop.rereq):
        loop.send([*make_packets(msgs), heartbeat(msgs)])  # a lone packet waits for a second
        for _ in c.messages(timeout=5):
            raise RuntimeError("user bug")
    assert c._thread is not None and not c._thread.is_alive()
    assert loop.line.fileno() == -1 and loop.rereq.fileno() == -1
    with pytest.raises(ClientClosed):
        c.open()
    c.close()  # idempotent


def test_on_event_raising_propagates_and_keeps_the_rest(loop: Loop) -> None:
    msgs = make_messages(100)

    def on_event(ev: Event) -> None:
        if isinstance(ev, SessionStarted):
            raise ValueError("from on_event")

    with client([], on_event=on_event).open_with_sockets(loop.line, loop.rereq) as c:
        loop.send([*make_packets(msgs), end_of_session(msgs)])
        with pytest.raises(ValueError, match="from on_event"):
            next(c.messages(timeout=5))
        got = list(c.messages(timeout=5))
    assert got == expected(msgs)


# --------------------------------------------------------------------------- back-pressure


def test_slow_consumer_pauses_the_reader_and_loses_nothing(loop: Loop) -> None:
    msgs = make_messages(10_000)
    packets = make_packets(msgs)
    with client([], max_backlog=100).open_with_sockets(loop.line, loop.rereq) as c:
        loop.send([*packets, end_of_session(msgs)])
        assert wait_until(lambda: c.stats.backlog_pauses >= 1)
        # The reader stopped after a read batch or two: the rest waits in the kernel buffer.
        assert c.stats.datagrams_received < 2 * READ_BATCH < len(packets)
        got = list(c.messages(timeout=5))
    assert got == expected(msgs)
    assert c.stats.backlog_pauses >= 2


def test_kernel_drops_while_paused_are_reported_and_recovered() -> None:
    msgs = make_messages(4000)
    packets = make_packets(msgs)
    lp = Loop(rcvbuf=4096)  # tiny buffer: the kernel drops while the reader is paused
    seen: list[Event] = []
    try:
        with Responder({SESSION: msgs}) as server:
            c = client([server.address], max_backlog=50, on_event=seen.append)
            with c.open_with_sockets(lp.line, lp.rereq):
                lp.send(packets)
                assert wait_until(lambda: c.stats.backlog_pauses >= 1)
                # the end of session comes again and again, as a real server sends it
                with Repeater(lp.tx, lp.dest, end_of_session(msgs)):
                    got = list(c.messages(timeout=10))
        assert got == expected(msgs)
        overruns = [e for e in seen if isinstance(e, ConsumerOverrun)]
        assert overruns and sum(e.dropped for e in overruns) == c.datagrams_overrun > 0
        assert c.stats.kernel_drops >= c.datagrams_overrun
        assert c.stats.receiver.messages_recovered > 0
    finally:
        lp.tx.close()


# --------------------------------------------------------------------------- low level


def test_low_level_datagrams_in_arrival_order_with_retransmissions(loop: Loop) -> None:
    msgs = make_messages(600)
    packets = make_packets(msgs)
    with Responder({SESSION: msgs}) as server:
        c = client([server.address])
        datagrams, requests = c.start_with_sockets(loop.line, loop.rereq)
        try:
            loop.send(packets, {2, 5})
            seen: dict[int, Packet] = {}
            sources = []
            while len(seen) < len(packets):
                d = datagrams.recv(timeout=5)
                p = Packet(d.bytes())
                seen[p.seq_num] = p
                sources.append(d.source)
            assert Source.RETRANSMISSION in sources
            assert b"".join(bytes(p.data) for _, p in sorted(seen.items())) != b""
            got = [bytes(m) for _, p in sorted(seen.items()) for m in p]
            assert got == msgs[: len(got)] and len(got) == len(msgs)
            # the user's own request: messages 1..3 again
            assert requests.try_send(RetransmissionRequest(SESSION, 1, 3))
            d = datagrams.recv(timeout=5)
            assert d.source is Source.RETRANSMISSION and d.addr == server.address
            assert list(map(bytes, d.packet())) == msgs[:3]
            requests.send(RetransmissionRequest(SESSION, 4, 1), timeout=5)
            assert list(map(bytes, datagrams.recv(timeout=5).packet())) == msgs[3:4]
            with pytest.raises(EncodeError):
                requests.try_send(RetransmissionRequest(SESSION, 1, 0))
        finally:
            c.close()
    with pytest.raises(ClientClosed):
        datagrams.recv(timeout=1)
    assert list(datagrams) == []
    with pytest.raises(ClientClosed):
        requests.try_send(RetransmissionRequest(SESSION, 1, 3))


def test_low_level_iteration_ends_on_close(loop: Loop) -> None:
    c = client([])
    datagrams, _ = c.start_with_sockets(loop.line, loop.rereq)
    out: list[object] = []
    t = threading.Thread(target=lambda: out.extend(datagrams))
    t.start()
    loop.send(make_packets(make_messages(10)))
    assert wait_until(lambda: len(out) == 1)
    c.close()
    t.join(5)
    assert not t.is_alive() and len(out) == 1


def test_modes_do_not_mix(loop: Loop) -> None:
    c = client([])
    c.start_with_sockets(loop.line, loop.rereq)
    try:
        with pytest.raises(MoldUDP64Error, match="start"):
            c.messages()
        with pytest.raises(MoldUDP64Error, match="already started"):
            c.open()
    finally:
        c.close()


# --------------------------------------------------------------------------- configuration


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"multicast_addr": ("10.0.0.1", 30001)}, "not a multicast group"),
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
        ({"request_timeout": 0}, "request_timeout"),
        ({"stale_after": "soon"}, "stale_after"),
        ({"line_b_addr": ("239.1.1.1", 30001)}, "same as line A"),
        ({"line_b_addr": ("127.0.0.1", 30002)}, "not a multicast group"),
        ({"receiver_options": {"no_such_option": 1}}, "no_such_option"),
        ({"receiver_options": {"max_request_attempts": 0}}, "max_request_attempts"),
    ],
)
def test_bad_settings_are_config_errors(kwargs: dict[str, object], match: str) -> None:
    args: dict[str, object] = {"multicast_addr": ("239.1.1.1", 30001)}
    args.update(kwargs)
    with pytest.raises(ConfigError, match=match):
        MoldUDP64(**args)  # type: ignore[arg-type]


def test_settings_accept_strings_and_names() -> None:
    c = MoldUDP64(
        "239.1.1.1:30001",
        "127.0.0.1",
        ["localhost:9000", ("127.0.0.2", 9001)],
        expected_session_ident="ABC",
        line_b_addr="239.1.1.2:30001",
        request_timeout=0.5,
        stale_after=2,
    )
    o = c.options
    assert o.multicast_addr == ("239.1.1.1", 30001)
    assert o.line_b_addr == ("239.1.1.2", 30001)
    assert o.rerequest_server_addrs == (("127.0.0.1", 9000), ("127.0.0.2", 9001))
    assert o.expected_session_ident == "ABC       "
    # with a B line, a new gap waits 5 ms for it before it is requested
    assert o.receiver_options == {
        "request_timeout": 0.5,
        "stale_after": 2.0,
        "request_delay": 0.005,
    }
    assert c.local_request_address is None


def test_request_without_server_is_refused_in_the_callers_thread(loop: Loop) -> None:
    c = client([])
    _, requests = c.start_with_sockets(loop.line, loop.rereq)
    try:
        with pytest.raises(ConfigError, match="no re-request server"):
            requests.try_send(RetransmissionRequest(SESSION, 1, 1))
    finally:
        c.close()


def test_events_after_breaking_out_of_messages_continue_mid_batch(loop: Loop) -> None:
    msgs = make_messages(400)
    with client([]).open_with_sockets(loop.line, loop.rereq) as c:
        loop.send([*make_packets(msgs), end_of_session(msgs)])
        it = c.messages(timeout=5)
        got = [next(it) for _ in range(5)]  # breaks off inside the first packet's batch
        for ev in c.events(timeout=5):
            if isinstance(ev, MessagesDelivered):
                got.extend(
                    Message(ev.session, ev.seq_num + i, m) for i, m in enumerate(ev.messages)
                )
    assert got == expected(msgs)


def test_one_receiver_thread_whatever_the_number_of_servers(loop: Loop) -> None:
    msgs = make_messages(300)
    before = threading.active_count()
    servers = [Responder({SESSION: msgs}) for _ in range(3)]
    try:
        with_servers = threading.active_count()
        c = client([s.address for s in servers])
        with c.open_with_sockets(loop.line, loop.rereq):
            assert threading.active_count() == with_servers + 1
            loop.send([*make_packets(msgs), end_of_session(msgs)], {1, 2, 3})
            assert list(c.messages(timeout=5)) == expected(msgs)
        assert threading.active_count() == with_servers
    finally:
        for s in servers:
            s.close()
    assert threading.active_count() == before


@settings(max_examples=60, deadline=None)
@given(
    sizes=st.lists(st.integers(0, 6), min_size=1, max_size=8),
    extra=st.lists(st.sampled_from(["lost", "stale", "end"]), max_size=4),
    stops=st.lists(st.integers(1, 9), max_size=6),
)
def test_batch_cursor_hands_each_message_out_once(
    sizes: list[int], extra: list[str], stops: list[int]
) -> None:
    """Any batches, interleaved events and break points: every message exactly once."""
    batches: list[list[Event]] = []
    seq = 1
    want: list[Message] = []
    for n, size in enumerate(sizes):
        batch: list[Event] = []
        data = [b"%d" % (seq + i) for i in range(size)]
        if data:
            batch.append(MessagesDelivered(SESSION, seq, data))
            want.extend(Message(SESSION, seq + i, d) for i, d in enumerate(data))
            seq += size
        if n < len(extra):
            kind = extra[n]
            batch.append(
                MessagesLost(SESSION, seq, seq, "test")
                if kind == "lost"
                else FeedStale(1.0)
                if kind == "stale"
                else SessionEnded(SESSION, seq)
            )
        batches.append(batch)
    feed = iter(batches)
    seen: list[Event] = []
    cursor = BatchCursor(EventPolicy(seen.append, strict=False, stop_at_end=True))
    got: list[Message] = []
    for stop in [*stops, 10**9, 10**9, 10**9, 10**9, 10**9]:
        for i, m in enumerate(chain.from_iterable(cursor.batches(lambda: next(feed, None)))):
            got.append(m)
            if i + 1 == stop:
                break
    assert got == want
    assert seen == [e for b in batches for e in b if not isinstance(e, MessagesDelivered)]


def test_receiver_thread_failure_reaches_the_consumer(loop: Loop) -> None:
    c = client([])
    with c.open_with_sockets(loop.line, loop.rereq):

        def broken(now: float) -> None:
            raise RuntimeError("core bug")

        c._core.handle_timer = broken  # the next timer tick kills the thread
        c._core.get_timer = lambda: 0.0
        c._wake()
        with pytest.raises(MoldUDP64Error, match="receiver thread failed") as info:
            list(c.messages(timeout=5))
        assert isinstance(info.value.__cause__, RuntimeError)
        with pytest.raises(MoldUDP64Error):  # and again: it does not hang
            list(c.messages(timeout=5))


# --------------------------------------------------------------------------- pull mode


def pull_client(servers: Sequence[Address] = (), **kw: Any) -> MoldUDP64:
    """A client in pull mode: the consumer's thread reads (no receiver thread)."""
    return client(servers, receiver_thread=False, **kw)


def test_pull_mode_delivers_in_order_once_without_a_thread(loop: Loop) -> None:
    msgs = make_messages(1500)
    seen: list[Event] = []
    before = threading.active_count()
    with pull_client(on_event=seen.append).open_with_sockets(loop.line, loop.rereq) as c:
        assert threading.active_count() == before  # no receiver thread
        loop.send([*make_packets(msgs), end_of_session(msgs)])
        got = list(c.messages(timeout=5))
    assert got == expected(msgs)
    assert isinstance(seen[0], SessionStarted)
    assert seen[-1] == SessionEnded(SESSION, len(msgs) + 1)
    assert c._thread is None
    assert loop.line.fileno() == -1 and loop.rereq.fileno() == -1


@settings(
    max_examples=8, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(drop=st.sets(st.integers(0, 43), max_size=30))
def test_pull_mode_recovers_any_drop_pattern(drop: set[int]) -> None:
    msgs = make_messages(600)
    packets = make_packets(msgs)
    lp = Loop()
    try:
        with (
            Responder({SESSION: msgs}) as server,
            pull_client([server.address]).open_with_sockets(lp.line, lp.rereq) as c,
        ):
            lp.send([*packets, end_of_session(msgs)], drop, end_repeats=2)
            got = list(c.messages(timeout=5))
        assert got == expected(msgs)
        assert c.lost_ranges == []
    finally:
        lp.tx.close()


def test_pull_mode_reports_loss_when_every_server_is_dead(loop: Loop) -> None:
    msgs = make_messages(300)
    packets = make_packets(msgs)
    c = pull_client([closed_port_address()], receiver_options=GIVE_UP)
    with c.open_with_sockets(loop.line, loop.rereq):
        loop.send([*packets, end_of_session(msgs)], {3})
        got = list(c.messages(timeout=5))
    lost = c.lost_ranges
    assert len(lost) == 1 and c.messages_lost == lost[0].count > 0
    assert [m.seq_num for m in got] == [
        s for s in range(1, len(msgs) + 1) if not lost[0].first_seq <= s <= lost[0].last_seq
    ]


def test_pull_mode_timeout_and_close_from_another_thread(loop: Loop) -> None:
    msgs = make_messages(10)
    c = pull_client([]).open_with_sockets(loop.line, loop.rereq)
    with pytest.raises(TimeoutError):
        next(c.messages(timeout=0.05))
    got: list[Message] = []
    errors: list[BaseException] = []
    first = threading.Event()

    def consume() -> None:
        try:
            for m in c.messages():  # blocks in the read once the ten are out
                got.append(m)
                if len(got) == len(msgs):
                    first.set()
        except BaseException as exc:
            errors.append(exc)

    t = threading.Thread(target=consume)
    t.start()
    loop.send([*make_packets(msgs), heartbeat(msgs)])  # a lone packet waits for a second
    assert first.wait(5)
    c.close()
    t.join(5)
    assert not t.is_alive() and errors == []
    assert got == expected(msgs)
    assert loop.line.fileno() == -1 and loop.rereq.fileno() == -1
    assert list(c.messages()) == []
    with pytest.raises(ClientClosed):
        c.open()


def test_pull_mode_kernel_drops_are_reported_and_recovered() -> None:
    msgs = make_messages(4000)
    packets = make_packets(msgs)
    lp = Loop(rcvbuf=4096)  # tiny buffer: nobody reads until messages() is called
    seen: list[Event] = []
    try:
        with Responder({SESSION: msgs}) as server:
            c = pull_client([server.address], on_event=seen.append)
            with c.open_with_sockets(lp.line, lp.rereq):
                lp.send(packets)
                with Repeater(lp.tx, lp.dest, end_of_session(msgs)):
                    got = list(c.messages(timeout=10))
        assert got == expected(msgs)
        overruns = [e for e in seen if isinstance(e, ConsumerOverrun)]
        assert overruns and sum(e.dropped for e in overruns) == c.datagrams_overrun > 0
        assert c.stats.kernel_drops >= c.datagrams_overrun
        assert c.stats.receiver.messages_recovered > 0
    finally:
        lp.tx.close()


def test_pull_mode_low_level_requests_go_out_while_nobody_reads(loop: Loop) -> None:
    msgs = make_messages(60)
    with Responder({SESSION: msgs}) as server:
        c = pull_client([server.address])
        datagrams, requests = c.start_with_sockets(loop.line, loop.rereq)
        try:
            loop.send([*make_packets(msgs), heartbeat(msgs)])  # a lone packet waits for a second
            first = datagrams.recv(timeout=5)
            assert first.source is Source.LINE_A
            assert requests.try_send(RetransmissionRequest(SESSION, 1, 3))
            assert wait_until(lambda: server.requests >= 1)  # sent from try_send itself
            while True:
                d = datagrams.recv(timeout=5)
                if d.source is Source.RETRANSMISSION:
                    break
            assert d.addr == server.address
            assert list(map(bytes, d.packet())) == msgs[:3]
        finally:
            c.close()
    with pytest.raises(ClientClosed):
        datagrams.recv(timeout=1)


# --------------------------------------------------------------------------- batches()


@pytest.mark.parametrize("receiver_thread", [True, False])
def test_batches_give_what_events_give_and_stop_at_end_of_session(
    loop: Loop, receiver_thread: bool
) -> None:
    msgs = make_messages(2000)
    packets = make_packets(msgs)
    after = make_messages(5, b"after")
    with client([], receiver_thread=receiver_thread).open_with_sockets(loop.line, loop.rereq) as c:
        loop.send([*packets, end_of_session(msgs)])
        batches = list(c.batches(timeout=5))
        assert all(isinstance(b, list) and b for b in batches)
        flat = list(chain.from_iterable(batches))
        assert isinstance(flat[0], SessionStarted)
        assert flat[-1] == SessionEnded(SESSION, len(msgs) + 1)
        assert batches[-1][-1] is flat[-1]  # the list ends with the end of session
        got = [m for ev in flat if isinstance(ev, MessagesDelivered) for m in ev.messages]
        assert got == msgs
        assert c.session_ended and c.session == SESSION
        # the next session's events come from the next call
        loop.send(make_packets(after, session="NEXT000001"))
        seen: list[Event] = []
        with pytest.raises(TimeoutError):
            for batch in c.batches(timeout=0.5):
                seen.extend(batch)
        assert any(isinstance(e, SessionChanged) for e in seen)
        assert [m for e in seen if isinstance(e, MessagesDelivered) for m in e.messages] == after


def test_batches_after_breaking_out_of_messages_continue_mid_batch(loop: Loop) -> None:
    msgs = make_messages(400)
    with pull_client([]).open_with_sockets(loop.line, loop.rereq) as c:
        loop.send([*make_packets(msgs), end_of_session(msgs)])
        it = c.messages(timeout=5)
        got = [next(it).data for _ in range(5)]  # breaks off inside the first batch
        for batch in c.batches(timeout=5):
            for ev in batch:
                if isinstance(ev, MessagesDelivered):
                    got.extend(ev.messages)
    assert got == msgs


# --------------------------------------------------------------------------- on_datagram


@pytest.mark.parametrize("receiver_thread", [True, False])
def test_on_datagram_sees_every_datagram_received_and_request_sent(
    loop: Loop, receiver_thread: bool
) -> None:
    msgs = make_messages(300)
    packets = make_packets(msgs)
    tapped: list[tuple[bytes, Source, Address | None, bool]] = []

    def tap(data: bytes, source: Source, addr: Address | None, sent: bool) -> None:
        tapped.append((data, source, addr, sent))

    with Responder({SESSION: msgs}) as server:
        c = client([server.address], receiver_thread=receiver_thread, on_datagram=tap)
        with c.open_with_sockets(loop.line, loop.rereq):
            loop.send([*packets, end_of_session(msgs)], {4, 7})
            got = list(c.messages(timeout=5))
    assert got == expected(msgs)
    received = [t for t in tapped if not t[3]]
    sent = [t for t in tapped if t[3]]
    assert len(received) == c.stats.datagrams_received
    line = [t for t in received if t[1] is Source.LINE_A]
    assert [t[0] for t in line] == [p for i, p in enumerate(packets) if i not in {4, 7}] + [
        end_of_session(msgs)
    ]
    assert all(t[2] == ("127.0.0.1", loop.tx.getsockname()[1]) for t in line)
    answers = [t for t in received if t[1] is Source.RETRANSMISSION]
    assert answers and all(t[2] == server.address for t in answers)
    assert len(sent) == c.stats.requests_sent > 0
    assert all(t[2] == server.address and len(t[0]) == 20 for t in sent)


def test_on_datagram_failure_is_counted_and_never_stops_the_client(loop: Loop) -> None:
    msgs = make_messages(100)

    def tap(data: bytes, source: Source, addr: Address | None, sent: bool) -> None:
        raise RuntimeError("tap bug")

    with pull_client([], on_datagram=tap).open_with_sockets(loop.line, loop.rereq) as c:
        loop.send([*make_packets(msgs), end_of_session(msgs)])
        got = list(c.messages(timeout=5))
    assert got == expected(msgs)
    assert c.stats.internal_errors == len(make_packets(msgs)) + 1


@pytest.mark.parametrize("coalesce", [-0.1, 0.5, "1", True])
def test_bad_coalesce_is_a_config_error(coalesce: object) -> None:
    with pytest.raises(ConfigError, match="coalesce"):
        client([], receiver_thread=False, coalesce=coalesce)


def test_coalesce_delivers_the_same(loop: Loop) -> None:
    msgs = make_messages(2000)
    with pull_client([], coalesce=0.001).open_with_sockets(loop.line, loop.rereq) as c:
        loop.send([*make_packets(msgs), end_of_session(msgs)])
        got = list(c.messages(timeout=5))
    assert got == expected(msgs)
