"""The contract suite's harness: three clients, driven by one blocking API.

``tests/test_client_contract.py`` runs every contract test against each of
:data:`KINDS`: the blocking client with its receiver thread (``thread``), in pull mode
(``pull``: the consumer's thread reads) and the asyncio client (``asyncio``, its event
loop run by an :class:`asyncio.Runner` inside each call, so nothing is read between
calls, as in pull mode), and the asyncio client on a loop whose datagram transports
cannot pause reading (``asyncio-nopause``, as CPython 3.11.2's: Debian 12's ``python3``).
:class:`Driven` gives the calls a test needs; the client itself is ``driven.client`` for
its records and stats.
"""

from __future__ import annotations

import asyncio
import socket
from collections.abc import Awaitable, Callable, Sequence
from typing import Any, TypeVar

from client_support import FAST, GROUP_ADDR, Closing, wait_until
from moldudp64.asyncio.client import AsyncMoldUDP64
from moldudp64.events import Address, Event, Message
from moldudp64.sync.client import MoldUDP64

T = TypeVar("T")

KINDS = ["thread", "pull", "asyncio", "asyncio-nopause"]


class _NoPauseDatagramTransport(asyncio.selector_events._SelectorDatagramTransport):  # type: ignore[misc, name-defined]
    """A datagram transport as CPython 3.11.2 has it: pausing raises NotImplementedError."""

    def pause_reading(self) -> None:
        raise NotImplementedError

    def resume_reading(self) -> None:
        raise NotImplementedError


class NoPauseLoop(asyncio.SelectorEventLoop):
    """An event loop whose datagram transports cannot pause reading (CPython 3.11.2)."""

    def _make_datagram_transport(
        self,
        sock: socket.socket,
        protocol: Any,
        address: Any = None,
        waiter: Any = None,
        extra: Any = None,
    ) -> Any:
        return _NoPauseDatagramTransport(self, sock, protocol, address, waiter, extra)


class Driven(Closing):
    """One client of ``kind``, every call blocking until done (``asyncio``: on a runner)."""

    def __init__(
        self,
        kind: str,
        servers: Sequence[Address] = (),
        receiver_options: dict[str, Any] | None = None,
        **kw: Any,
    ) -> None:
        self.kind = kind
        opts: dict[str, Any] = {**FAST, **(receiver_options or {})}
        self.client: MoldUDP64 | AsyncMoldUDP64
        self._runner: asyncio.Runner | None = None
        if kind.startswith("asyncio"):
            factory = NoPauseLoop if kind == "asyncio-nopause" else None
            self._runner = asyncio.Runner(loop_factory=factory)
            self.client = AsyncMoldUDP64(
                GROUP_ADDR, rerequest_server_addrs=servers, receiver_options=opts, **kw
            )
        else:
            self.client = MoldUDP64(
                GROUP_ADDR,
                rerequest_server_addrs=servers,
                receiver_options=opts,
                receiver_thread=kind == "thread",
                **kw,
            )

    def _run(self, coro: Awaitable[T]) -> T:
        assert self._runner is not None
        return self._runner.run(asyncio.wait_for(coro, 20))  # type: ignore[arg-type]

    @property
    def sync(self) -> MoldUDP64:
        assert isinstance(self.client, MoldUDP64)
        return self.client

    @property
    def aio(self) -> AsyncMoldUDP64:
        assert isinstance(self.client, AsyncMoldUDP64)
        return self.client

    def open_with_sockets(
        self, downstream: socket.socket | Sequence[socket.socket], rereq: socket.socket
    ) -> Driven:
        if self._runner is None:
            self.sync.open_with_sockets(downstream, rereq)
        else:
            self._run(self.aio.open_with_sockets(downstream, rereq))
        return self

    def start_with_sockets(self, downstream: socket.socket, rereq: socket.socket) -> Any:
        """The low-level pair ``(datagrams, requests)``; ``requests.try_send`` works alike."""
        if self._runner is None:
            return self.sync.start_with_sockets(downstream, rereq)
        return self._run(self.aio.start_with_sockets(downstream, rereq))

    def close(self) -> None:
        if self._runner is None:
            self.sync.close()
            return
        try:
            self._run(self.aio.close())
        finally:
            self._runner.close()

    def messages(
        self, timeout: float | None = 5, into: list[Message] | None = None, most: int | None = None
    ) -> list[Message]:
        """``messages()`` until it ends (or ``most`` were taken: then break out); each one
        is appended to ``into`` as it comes, so what came before an exception is kept."""
        got: list[Message] = [] if into is None else into
        start = len(got)
        if most == 0:
            return got
        if self._runner is None:
            for m in self.sync.messages(timeout=timeout):
                got.append(m)
                if most is not None and len(got) - start >= most:
                    break
            return got

        async def take() -> list[Message]:
            async for m in self.aio.messages(timeout=timeout):
                got.append(m)
                if most is not None and len(got) - start >= most:
                    break
            return got

        return self._run(take())

    def events(self, timeout: float | None = 5) -> list[Event]:
        """``events()`` until it ends."""
        if self._runner is None:
            return list(self.sync.events(timeout=timeout))

        async def take() -> list[Event]:
            return [e async for e in self.aio.events(timeout=timeout)]

        return self._run(take())

    def wait_until(self, predicate: Callable[[], bool], timeout: float = 5.0) -> bool:
        """Wait for ``predicate`` (asyncio: with the loop running, so the client reads)."""
        if self._runner is None:
            return wait_until(predicate, timeout)

        async def poll() -> bool:
            loop = asyncio.get_running_loop()
            deadline = loop.time() + timeout
            while not predicate():
                if loop.time() >= deadline:
                    return False
                await asyncio.sleep(0.001)
            return True

        return self._run(poll())
