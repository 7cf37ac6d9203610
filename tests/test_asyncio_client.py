"""The asyncio client over loopback unicast (``open_with_sockets`` / ``start_with_sockets``).

The same flows as test_sync_client.py on an event loop; the multicast versions are in
test_client_multicast.py.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Sequence
from typing import Any, TypeVar

import pytest

from client_support import (
    SESSION,
    Repeater,
    Responder,
    end_of_session,
    heartbeat,
    make_messages,
    make_packets,
    publish,
    sender,
)
from moldudp64.asyncio.client import AsyncMoldUDP64
from moldudp64.events import (
    Address,
    ConsumerOverrun,
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
from moldudp64.exceptions import ClientClosed, ConfigError, MoldUDP64Error
from moldudp64.net import open_unicast_socket
from moldudp64.sync.client import MessagesLostError
from moldudp64.wire import Packet, RetransmissionRequest

GROUP_ADDR = ("239.192.7.1", 30001)
FAST = {"request_timeout": 0.02, "max_request_timeout": 0.1, "loss_grace": 0.02}
GIVE_UP = {**FAST, "max_request_attempts": 3}

T = TypeVar("T")


def expected(messages: Sequence[bytes], session: str = SESSION) -> list[Message]:
    return [Message(session, i + 1, m) for i, m in enumerate(messages)]


def client(
    servers: Sequence[Address] = (), receiver_options: dict[str, Any] | None = None, **kw: Any
) -> AsyncMoldUDP64:
    opts: dict[str, Any] = {**FAST, **(receiver_options or {})}
    return AsyncMoldUDP64(GROUP_ADDR, rerequest_server_addrs=servers, receiver_options=opts, **kw)


class Loop:
    """A line socket, a request socket and a sender on 127.0.0.1."""

    def __init__(self, rcvbuf: int = 4 << 20) -> None:
        self.line = open_unicast_socket(("127.0.0.1", 0), rcvbuf=rcvbuf)
        self.rereq = open_unicast_socket(("127.0.0.1", 0))
        self.dest: Address = self.line.getsockname()
        self.tx = sender()

    def send(self, packets: list[bytes], drop: Any = (), end_repeats: int = 0) -> None:
        publish(self.tx, self.dest, packets, drop, end_repeats)

    def close(self) -> None:
        self.tx.close()
        self.line.close()
        self.rereq.close()


def run(make: Callable[[Loop], Awaitable[T]], rcvbuf: int = 4 << 20) -> T:
    lp = Loop(rcvbuf)
    try:
        return asyncio.run(asyncio.wait_for(make(lp), 20))
    finally:
        lp.close()


async def collect(c: AsyncMoldUDP64, timeout: float = 5) -> list[Message]:
    return [m async for m in c.messages(timeout=timeout)]


def test_dropped_packets_are_recovered() -> None:
    msgs = make_messages(3000)
    packets = make_packets(msgs)
    drop = {0, 3, 4, 50, len(packets) - 1, *range(60, len(packets), 5)}
    seen: list[Event] = []

    async def main(lp: Loop) -> tuple[list[Message], AsyncMoldUDP64]:
        with Responder({SESSION: msgs}) as server:
            c = client([server.address], on_event=seen.append)
            async with await c.open_with_sockets(lp.line, lp.rereq):
                lp.send([*packets, end_of_session(msgs)], drop, end_repeats=2)
                return await collect(c), c

    got, c = run(main)
    assert got == expected(msgs)
    assert isinstance(seen[0], SessionStarted) and isinstance(seen[-1], SessionEnded)
    assert c.stats.receiver.messages_recovered > 0 and c.lost_ranges == []
    assert c.stats.requests_sent > 0 and c.local_request_address is not None
    assert c.closed


def test_dead_server_beside_a_live_one() -> None:
    msgs = make_messages(2000)
    packets = make_packets(msgs)
    seen: list[Event] = []

    async def main(lp: Loop) -> list[Message]:
        with Responder({SESSION: msgs}, silent=True) as dead, Responder({SESSION: msgs}) as live:
            c = client([dead.address, live.address], max_rerequest_retries=1, on_event=seen.append)
            async with await c.open_with_sockets(lp.line, lp.rereq):
                lp.send([*packets, end_of_session(msgs)], range(2, len(packets), 4))
                got = await collect(c)
            assert ServerDisabled(dead.address, 1) in seen
            return got

    assert run(main) == expected(msgs)


def test_all_servers_dead_loss_is_reported_and_delivery_goes_on() -> None:
    msgs = make_messages(1000)
    packets = make_packets(msgs)

    async def main(lp: Loop) -> tuple[list[Message], AsyncMoldUDP64]:
        with Responder({SESSION: msgs}, silent=True) as dead:
            c = client([dead.address], receiver_options=GIVE_UP)
            async with await c.open_with_sockets(lp.line, lp.rereq):
                lp.send([*packets, end_of_session(msgs)], {6, 7})
                return await collect(c), c

    got, c = run(main)
    first = sum(len(Packet(p)) for p in packets[:6]) + 1
    last = first + len(Packet(packets[6])) + len(Packet(packets[7])) - 1
    assert [(e.first_seq, e.last_seq) for e in c.lost_ranges] == [(first, last)]
    assert got == [m for m in expected(msgs) if not first <= m.seq_num <= last]
    assert c.session_ended and c.messages_lost == last - first + 1


def test_strict_mode_raises_and_resumes() -> None:
    msgs = make_messages(300)

    async def main(lp: Loop) -> tuple[list[Message], MessagesLost]:
        c = client([], strict=True)
        got: list[Message] = []
        async with await c.open_with_sockets(lp.line, lp.rereq):
            lp.send([*make_packets(msgs), end_of_session(msgs)], {3})
            with pytest.raises(MessagesLostError) as info:
                async for m in c.messages(timeout=5):
                    got.append(m)
            got.extend(await collect(c))
        return got, info.value.event

    got, lost = run(main)
    assert got == [m for m in expected(msgs) if not lost.first_seq <= m.seq_num <= lost.last_seq]


def test_session_change_mid_stream() -> None:
    a = make_messages(400, b"a")
    b = make_messages(500, b"b")
    seen: list[Event] = []

    async def main(lp: Loop) -> tuple[list[Message], list[Message]]:
        with Responder({"SESSIONAAA": a, "SESSIONBBB": b}) as server:
            # without an end of session, A must fall silent for stale_after before B
            c = client([server.address], {"stale_after": 0.3}, on_event=seen.append)
            async with await c.open_with_sockets(lp.line, lp.rereq):
                lp.send(make_packets(a, "SESSIONAAA"), {2})
                lp.send([heartbeat(a, "SESSIONAAA")])
                it = c.messages(timeout=5)
                first = [await anext(it) for _ in a]
                packets_b = [*make_packets(b, "SESSIONBBB"), end_of_session(b, "SESSIONBBB")]
                lp.send(packets_b, {0, 5}, end_repeats=2)
                rest = await collect(c)
        return first, rest

    first, rest = run(main)
    assert first == expected(a, "SESSIONAAA")
    assert rest == expected(b, "SESSIONBBB")
    assert SessionChanged("SESSIONAAA", "SESSIONBBB", 1) in seen


def test_line_b_fills_line_a_gaps() -> None:
    msgs = make_messages(900)
    packets = [*make_packets(msgs), end_of_session(msgs)]

    async def main(lp: Loop) -> list[Message]:
        b = open_unicast_socket(("127.0.0.1", 0), rcvbuf=4 << 20)
        c = client([])
        async with await c.open_with_sockets([lp.line, b], lp.rereq):
            for i, p in enumerate(packets):
                if i % 2:
                    lp.tx.sendto(p, lp.dest)
                if i % 2 == 0 or i == len(packets) - 1:
                    lp.tx.sendto(p, b.getsockname())
            got = await collect(c)
        assert c.stats.receiver.packets[Source.LINE_B] > 0 and c.stats.requests_sent == 0
        return got

    assert run(main) == expected(msgs)


def test_events_breaking_out_and_timeouts() -> None:
    msgs = make_messages(600)

    async def main(lp: Loop) -> None:
        c = client([])
        async with await c.open_with_sockets(lp.line, lp.rereq):
            with pytest.raises(TimeoutError):
                await anext(c.messages(timeout=0.05))
            lp.send([*make_packets(msgs), end_of_session(msgs)])
            got: list[Message] = []
            for step in (1, 5, 77):
                async for m in c.messages(timeout=5):
                    got.append(m)
                    if len(got) % step == 0:
                        break
            events = [e async for e in c.events(timeout=5)]
            assert isinstance(events[-1], SessionEnded)
            for e in events:
                if isinstance(e, MessagesDelivered):
                    got.extend(
                        Message(e.session, e.seq_num + i, m) for i, m in enumerate(e.messages)
                    )
            assert got == expected(msgs)

    run(main)


def test_feed_stale_reaches_the_user() -> None:
    msgs = make_messages(10)

    async def main(lp: Loop) -> list[Event]:
        seen: list[Event] = []
        c = client([], stale_after=0.05, on_event=seen.append)
        async with await c.open_with_sockets(lp.line, lp.rereq):
            lp.send([*make_packets(msgs), heartbeat(msgs)])  # a lone packet waits for a second
            it = c.messages(timeout=5)
            assert [await anext(it) for _ in msgs] == expected(msgs)
            with pytest.raises(TimeoutError):
                await anext(c.messages(timeout=0.5))
        assert c.stale
        return seen

    assert any(isinstance(e, FeedStale) for e in run(main))


def test_close_from_another_task_ends_a_waiting_iteration() -> None:
    msgs = make_messages(5)

    async def main(lp: Loop) -> list[Message]:
        c = client([])
        await c.open_with_sockets(lp.line, lp.rereq)
        got: list[Message] = []
        first = asyncio.Event()

        async def consume() -> None:
            async for m in c.messages():
                got.append(m)
                if len(got) == len(msgs):
                    first.set()

        task = asyncio.create_task(consume())
        lp.send([*make_packets(msgs), heartbeat(msgs)])
        await asyncio.wait_for(first.wait(), 5)
        await c.close()
        await asyncio.wait_for(task, 5)  # ends cleanly, no exception
        assert lp.line.fileno() == -1 and lp.rereq.fileno() == -1
        await c.close()  # idempotent
        with pytest.raises(ClientClosed):
            await c.open()
        return got

    assert run(main) == expected(msgs)


def test_user_exception_closes_everything() -> None:
    async def main(lp: Loop) -> None:
        c = client([])
        with pytest.raises(RuntimeError, match="user bug"):
            async with await c.open_with_sockets(lp.line, lp.rereq):
                lp.send(make_packets(make_messages(20)))
                async for _ in c.messages(timeout=5):
                    raise RuntimeError("user bug")
        await asyncio.sleep(0)
        assert lp.line.fileno() == -1 and lp.rereq.fileno() == -1 and c.closed

    run(main)


def test_slow_consumer_pauses_reading_and_loses_nothing() -> None:
    msgs = make_messages(6000)
    packets = make_packets(msgs)

    async def main(lp: Loop) -> tuple[list[Message], AsyncMoldUDP64]:
        c = client([], max_backlog=100)
        async with await c.open_with_sockets(lp.line, lp.rereq):
            lp.send([*packets, end_of_session(msgs)])
            while c.stats.backlog_pauses == 0:
                await asyncio.sleep(0.001)  # let the loop read until the backlog bound
            assert c.stats.datagrams_received < len(packets)  # the rest waits in the kernel
            return await collect(c), c

    got, c = run(main)
    assert got == expected(msgs)
    assert c.stats.backlog_pauses >= 1


def test_kernel_drops_while_paused_are_recovered() -> None:
    msgs = make_messages(4000)
    packets = make_packets(msgs)

    async def main(lp: Loop) -> tuple[list[Message], AsyncMoldUDP64, list[Event]]:
        seen: list[Event] = []
        with Responder({SESSION: msgs}) as server:
            c = client([server.address], max_backlog=50, on_event=seen.append)
            async with await c.open_with_sockets(lp.line, lp.rereq):
                lp.send(packets)
                while c.stats.backlog_pauses == 0:
                    await asyncio.sleep(0.001)
                with Repeater(lp.tx, lp.dest, end_of_session(msgs)):
                    got = await collect(c, 10)
        return got, c, seen

    got, c, seen = run(main, rcvbuf=4096)
    assert got == expected(msgs)
    assert c.stats.receiver.messages_recovered > 0
    overruns = [e for e in seen if isinstance(e, ConsumerOverrun)]
    assert overruns and sum(e.dropped for e in overruns) == c.datagrams_overrun > 0
    assert c.stats.kernel_drops == c.datagrams_overrun


def test_low_level_datagrams_and_requests() -> None:
    msgs = make_messages(500)
    packets = make_packets(msgs)

    async def main(lp: Loop) -> None:
        with Responder({SESSION: msgs}) as server:
            c = client([server.address])
            datagrams, requests = await c.start_with_sockets(lp.line, lp.rereq)
            try:
                lp.send(packets, {1, 4})
                held: dict[int, Packet] = {}
                sources = set()
                while len(held) < len(packets):
                    d = await datagrams.recv(timeout=5)
                    held[d.packet().seq_num] = d.packet()
                    sources.add(d.source)
                assert [bytes(m) for _, p in sorted(held.items()) for m in p] == msgs
                assert sources == {Source.LINE_A, Source.RETRANSMISSION}
                assert requests.try_send(RetransmissionRequest(SESSION, 2, 2))
                d = await datagrams.recv(timeout=5)
                assert d.addr == server.address and [bytes(m) for m in d.packet()] == msgs[1:3]
                await requests.send(RetransmissionRequest(SESSION, 10, 1))
                assert [bytes(m) for m in (await datagrams.recv(timeout=5)).packet()] == [msgs[9]]
                with pytest.raises(MoldUDP64Error, match="start"):
                    c.messages()
            finally:
                await c.close()
            with pytest.raises(ClientClosed):
                await datagrams.recv()
            assert [d async for d in datagrams] == []

    run(main)


def test_request_without_server_and_unopened_use_are_errors() -> None:
    async def main(lp: Loop) -> None:
        c = client([])
        with pytest.raises(MoldUDP64Error, match="open the client first"):
            c.messages()
        _, requests = await c.start_with_sockets(lp.line, lp.rereq)
        try:
            with pytest.raises(ConfigError, match="no re-request server"):
                requests.try_send(RetransmissionRequest(SESSION, 1, 1))
            with pytest.raises(MoldUDP64Error, match="already started"):
                await c.open()
        finally:
            await c.close()

    run(main)


def test_bad_settings_are_config_errors() -> None:
    with pytest.raises(ConfigError, match="not a multicast group"):
        AsyncMoldUDP64(("127.0.0.1", 30001))
    with pytest.raises(ConfigError, match="max_backlog"):
        AsyncMoldUDP64(GROUP_ADDR, max_backlog=-5)
    with pytest.raises(ConfigError, match="expected_seq_num"):
        AsyncMoldUDP64(GROUP_ADDR, expected_seq_num=0)
