"""The asyncio client over loopback unicast (``open_with_sockets`` / ``start_with_sockets``).

What only the asyncio client does (closing from another task, the low-level API on an
event loop, its errors); what every client does is in tests/test_client_contract.py, the
flows over real multicast in tests/test_client_multicast.py.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Sequence
from typing import Any, TypeVar

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
)
from moldudp64.asyncio.client import AsyncMoldUDP64
from moldudp64.events import (
    Address,
    Message,
    MessagesDelivered,
    SessionEnded,
    Source,
)
from moldudp64.exceptions import ClientClosed, ConfigError, MoldUDP64Error
from moldudp64.wire import Packet, RetransmissionRequest

T = TypeVar("T")


def client(
    servers: Sequence[Address] = (), receiver_options: dict[str, Any] | None = None, **kw: Any
) -> AsyncMoldUDP64:
    opts: dict[str, Any] = {**FAST, **(receiver_options or {})}
    return AsyncMoldUDP64(GROUP_ADDR, rerequest_server_addrs=servers, receiver_options=opts, **kw)


def run(make: Callable[[Loop], Awaitable[T]], rcvbuf: int = 4 << 20) -> T:
    lp = Loop(rcvbuf)
    try:
        return asyncio.run(asyncio.wait_for(make(lp), 20))
    finally:
        lp.close()


async def collect(c: AsyncMoldUDP64, timeout: float = 5) -> list[Message]:
    return [m async for m in c.messages(timeout=timeout)]


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

                async def answer_at(seq: int) -> Packet:
                    """The next answer numbered ``seq``, from the server. Late copies of
                    answers already held may come first (the core asked again for a gap
                    whose answer was slow on a loaded machine): each must be one."""
                    while True:
                        d = await datagrams.recv(timeout=5)
                        assert d.source is Source.RETRANSMISSION and d.addr == server.address
                        p = d.packet()
                        if p.seq_num == seq:
                            return p
                        first = p.seq_num - 1
                        assert (
                            p.seq_num in held
                            and [bytes(m) for m in p] == msgs[first : first + p.msg_count]
                        )

                # packet 0 (numbers 1..13) came live: no request of the core brings 2 or 10
                assert requests.try_send(RetransmissionRequest(SESSION, 2, 2))
                assert [bytes(m) for m in await answer_at(2)] == msgs[1:3]
                await requests.send(RetransmissionRequest(SESSION, 10, 1))
                assert [bytes(m) for m in await answer_at(10)] == [msgs[9]]
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
