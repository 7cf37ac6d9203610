"""What only the blocking client does: its receiver thread, pull mode, ``batches()``,
``on_datagram``, ``coalesce`` and the low-level API, over loopback unicast.

What every client does is in tests/test_client_contract.py (run against thread mode,
pull mode and the asyncio client); the flows over real multicast are in
tests/test_client_multicast.py.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator, Sequence
from itertools import chain
from typing import Any

import pytest

from client_support import (
    FAST,
    GROUP_ADDR,
    SESSION,
    Loop,
    Responder,
    end_of_session,
    expected,
    heartbeat,
    make_messages,
    make_packets,
    wait_until,
)
from moldudp64.events import (
    Address,
    Event,
    Message,
    MessagesDelivered,
    SessionChanged,
    SessionEnded,
    SessionStarted,
    Source,
)
from moldudp64.exceptions import ClientClosed, ConfigError, EncodeError, MoldUDP64Error
from moldudp64.sync.client import (
    MoldUDP64,
)
from moldudp64.wire import Packet, RetransmissionRequest


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


# --------------------------------------------------------------------------- API behaviour


@pytest.mark.parametrize("receiver_thread", [True, False], ids=["thread", "pull"])
def test_close_from_another_thread_ends_a_blocked_iteration(
    loop: Loop, receiver_thread: bool
) -> None:
    msgs = make_messages(10)
    c = client([], receiver_thread=receiver_thread).open_with_sockets(loop.line, loop.rereq)
    with pytest.raises(TimeoutError):
        next(c.messages(timeout=0.05))
    first = threading.Event()
    got: list[Message] = []
    errors: list[BaseException] = []

    def consume() -> None:
        try:
            for m in c.messages():  # blocks (pull mode: in the read) once the ten are out
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
    assert list(c.messages()) == []
    with pytest.raises(ClientClosed):
        c.open()


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


# --------------------------------------------------------------------------- back-pressure


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


def test_the_blocking_clients_own_settings_are_in_its_signature() -> None:
    """help(MoldUDP64) shows receiver_thread, on_datagram and coalesce (no **io_options),
    and says whose names the first settings keep."""
    import inspect

    from moldudp64.asyncio.client import AsyncMoldUDP64

    params = inspect.signature(MoldUDP64).parameters
    for name in ("receiver_thread", "on_datagram", "coalesce"):
        assert params[name].kind is inspect.Parameter.KEYWORD_ONLY, name
    assert params["receiver_thread"].default is True and params["coalesce"].default == 0.0
    for cls in (MoldUDP64, AsyncMoldUDP64):
        kinds = {p.kind for p in inspect.signature(cls).parameters.values()}
        assert inspect.Parameter.VAR_KEYWORD not in kinds, cls
    doc = " ".join((MoldUDP64.__doc__ or "").split())  # as help() reads it, unwrapped
    assert "Rust seed" not in doc and "Rust ``moldudp`` crate" in doc
    with pytest.raises(TypeError, match="receiver_thread"):
        AsyncMoldUDP64(("239.1.1.1", 30001), receiver_thread=False)  # type: ignore[call-arg]
    with pytest.raises(TypeError, match="no_such_setting"):
        MoldUDP64(("239.1.1.1", 30001), no_such_setting=1)  # type: ignore[call-arg]
    with pytest.raises(ConfigError, match="coalesce"):
        MoldUDP64(("239.1.1.1", 30001), receiver_thread=False, coalesce=1.0)
