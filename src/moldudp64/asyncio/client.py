"""The asyncio MoldUDP64 client: the blocking client's two uses, on an event loop.

High-level use::

    async with AsyncMoldUDP64(("239.1.1.1", 30001), rerequest_server_addrs=[...]) as client:
        async for msg in client.messages():    # Message(session, seq_num, data)
            handle(msg.data)

Low-level use::

    datagrams, requests = await AsyncMoldUDP64(...).start()
    async for datagram in datagrams:           # arrival order, live and retransmitted,
        ...                                    # until the end of the session (or close())
    requests.try_send(RetransmissionRequest(...))

Each socket is a ``loop.create_datagram_endpoint`` transport feeding the same
:class:`~moldudp64.receiver.ReceiverCore`; the core's timer is one ``loop.call_at`` re-armed
from ``core.get_timer()``. No threads. When the consumer falls behind by more than
``max_backlog`` messages, reading pauses (``transport.pause_reading()``) so the kernel
buffer absorbs the burst; what the kernel then drops becomes gaps the core recovers.
Where the loop's datagram transports cannot pause (early CPython 3.11 releases such as
3.11.2, Debian 12's ``python3``, raise ``NotImplementedError``), each socket is read by
``loop.add_reader`` instead of a transport, and pausing removes that reader: the same
contract.
Settings, events and records are those of :class:`moldudp64.sync.client.MoldUDP64`, and
come from the same shared pieces (:mod:`moldudp64._client`); this module does not import
the blocking client.
"""

from __future__ import annotations

import asyncio
import logging
import socket
from collections import deque
from collections.abc import AsyncIterator, Sequence
from types import TracebackType
from typing import Any

from .._client import (
    DROP_POLL_INTERVAL,
    HOT_STREAK,
    READ_BATCH,
    ClientBase,
    Datagram,
    LineSockets,
    batch_size,
    message_iter,
)
from ..events import (
    Address,
    Event,
    Message,
    MessagesDelivered,
    Source,
)
from ..exceptions import ClientClosed, ConfigError, MoldUDP64Error
from ..net import (
    open_client_sockets,
    read_kernel_drops,
    socket_inode,
)
from ..wire import MAX_DATAGRAM, RetransmissionPacket

__all__ = ["AsyncDatagramStream", "AsyncMoldUDP64", "AsyncRequestSender"]

_RECV_SIZE = MAX_DATAGRAM + 1  # one more byte than legal, so an oversized datagram is seen

logger = logging.getLogger(__name__)

#: Whether datagram transports of a loop class can pause reading, found once per class.
_PAUSE_WORKS: dict[type[asyncio.AbstractEventLoop], bool] = {}


async def _datagram_pause_works(loop: asyncio.AbstractEventLoop) -> bool:
    """Whether this loop's datagram transports implement ``pause_reading``.

    Those of early CPython 3.11 releases (3.11.2, Debian 12's) raise
    ``NotImplementedError``. Tried once per loop class on a throwaway local socket pair
    (no network).
    """
    known = _PAUSE_WORKS.get(type(loop))
    if known is not None:
        return known
    a, b = socket.socketpair(socket.AF_UNIX, socket.SOCK_DGRAM)
    b.close()
    transport, _ = await loop.create_datagram_endpoint(asyncio.DatagramProtocol, sock=a)
    try:
        transport.pause_reading()  # type: ignore[attr-defined]
        transport.resume_reading()  # type: ignore[attr-defined]
        works = True
    except NotImplementedError:
        works = False
    finally:
        transport.close()
    _PAUSE_WORKS[type(loop)] = works
    return works


class _Endpoint(asyncio.DatagramProtocol):
    """Feeds one socket's datagrams to the client, tagged with the line they came in on.

    The transport reads one datagram per wake-up; the endpoint then drains up to
    ``READ_BATCH`` more that are already queued (non-blocking ``recvfrom`` on the same
    socket), so the core's events reach the consumer in large batches.
    """

    def __init__(self, client: AsyncMoldUDP64, source: Source, sock: socket.socket) -> None:
        self.client = client
        self.source = source
        self.sock = sock

    def datagram_received(self, data: bytes, addr: tuple[str | Any, int]) -> None:
        self.client._receive(data, self.source, addr)
        self.read_waiting(READ_BATCH - 1)

    def read_ready(self) -> None:
        """The socket is readable (``loop.add_reader`` callback where transports cannot pause)."""
        self.read_waiting(READ_BATCH)

    def read_waiting(self, most: int) -> int:
        """Read up to ``most`` datagrams already waiting on the socket, without blocking;
        return how many were read.

        ``recvfrom`` gives every datagram's true source address, which the core needs to
        tell a configured server's answer from a forgery.
        """
        client = self.client
        receive = client._receive
        source = self.source
        recvfrom = self.sock.recvfrom
        for n in range(most):
            if client._backlog.paused or client._closing:
                return n
            try:
                data, addr = recvfrom(_RECV_SIZE)
            except (BlockingIOError, InterruptedError):
                return n
            except OSError as exc:
                self.error_received(exc)
                return n
            receive(data, source, addr)
        return most

    def error_received(self, exc: Exception) -> None:
        # e.g. ECONNREFUSED after a request to a dead server: counted, never fatal
        self.client._n_recv_errors += 1
        logger.debug("receive error on %s: %s", self.source.name, exc)


class AsyncMoldUDP64(ClientBase):
    """asyncio MoldUDP64 client; same settings as :class:`moldudp64.sync.client.MoldUDP64`.

    ``async with`` opens it (sockets and transports) and closes it; ``messages()`` and
    ``events()`` are async iterators; :meth:`start` gives the low-level pair. Every
    value is checked in the constructor (ConfigError); sockets fail with SocketError.
    ``on_event`` runs in the consumer's task. One consumer at a time.
    """

    _log = logger

    def _setup(self) -> None:
        self._loop: asyncio.AbstractEventLoop | None = None
        self._transports: list[asyncio.DatagramTransport] = []
        self._endpoints: list[_Endpoint] = []
        self._rereq: asyncio.DatagramTransport | None = None
        self._rereq_sock: socket.socket | None = None
        self._readers: list[_Endpoint] = []  # read by loop.add_reader (no transport)
        self._queue: deque[list[Event]] = deque()
        self._sizes: deque[int] = deque()
        self._waiter: asyncio.Future[None] | None = None
        self._timer: asyncio.TimerHandle | None = None
        self._timer_at: float | None = None
        self._deliver_pending = False
        self._inodes: list[int] = []
        self._next_drop_poll = 0.0

    # ---------------------------------------------------------------- opening

    async def open(self) -> AsyncMoldUDP64:
        """Open the sockets, join the group(s), start receiving (high level)."""
        await self._open_sockets(raw=False)
        return self

    async def __aenter__(self) -> AsyncMoldUDP64:
        if not self._started:
            await self.open()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.close()

    async def start(self) -> tuple[AsyncDatagramStream, AsyncRequestSender]:
        """Low-level mode: ``(datagrams, requests)``, as ``MoldUDP64.start``."""
        await self._open_sockets(raw=True)
        return AsyncDatagramStream(self), AsyncRequestSender(self)

    async def start_with_sockets(
        self,
        downstream: socket.socket | Sequence[socket.socket],
        rereq: socket.socket,
        servers: Sequence[Address] | None = None,
    ) -> tuple[AsyncDatagramStream, AsyncRequestSender]:
        """:meth:`start` over sockets the caller opened (the test seam; unicast works)."""
        await self._launch(*self._given_sockets(downstream, rereq, servers), raw=True)
        return AsyncDatagramStream(self), AsyncRequestSender(self)

    async def open_with_sockets(
        self,
        downstream: socket.socket | Sequence[socket.socket],
        rereq: socket.socket,
        servers: Sequence[Address] | None = None,
    ) -> AsyncMoldUDP64:
        """:meth:`open` over sockets the caller opened; the client closes them."""
        await self._launch(*self._given_sockets(downstream, rereq, servers), raw=False)
        return self

    async def _open_sockets(self, *, raw: bool) -> None:
        self._check_unopened()
        await self._launch(*open_client_sockets(self.options), None, raw=raw)

    async def _launch(
        self, lines: LineSockets, rereq: socket.socket, servers: Sequence[Address] | None, raw: bool
    ) -> None:
        loop = asyncio.get_running_loop()
        self._loop = loop
        self._started = True
        self._start_core(raw, servers, rereq.getsockname())
        self._rereq_sock = rereq
        pending = [*lines, (rereq, Source.RETRANSMISSION)]
        self._inodes = [socket_inode(sock) for sock, _ in pending]
        self._backlog.start_drops(self._inodes, read_kernel_drops(self._inodes))
        try:
            if await _datagram_pause_works(loop):
                await self._add_transports(pending)
            else:
                self._add_readers(pending)
        except BaseException:
            opened = {t.get_extra_info("socket") for t in self._transports}
            for t in self._transports:
                t.close()
            for endpoint in self._readers:
                loop.remove_reader(endpoint.sock)
            self._readers = []
            for sock, _ in pending:
                if sock not in opened:
                    sock.close()
            self._closing = True
            raise
        self._arm_timer()

    async def _add_transports(self, pending: list[tuple[socket.socket, Source]]) -> None:
        """One ``create_datagram_endpoint`` transport per socket."""
        assert self._loop is not None
        for sock, source in pending:
            transport, endpoint = await self._loop.create_datagram_endpoint(
                lambda source=source, sock=sock: _Endpoint(self, source, sock),  # type: ignore[misc]
                sock=sock,
            )
            transport.max_size = _RECV_SIZE  # type: ignore[attr-defined]
            self._transports.append(transport)
            self._endpoints.append(endpoint)
            if source is Source.RETRANSMISSION:
                self._rereq = transport

    def _add_readers(self, pending: list[tuple[socket.socket, Source]]) -> None:
        """Read every socket with ``loop.add_reader`` (no transports): the fallback for
        loops whose datagram transports cannot pause. Requests go out by ``sock.sendto``."""
        assert self._loop is not None
        for sock, source in pending:
            sock.setblocking(False)
            endpoint = _Endpoint(self, source, sock)
            self._endpoints.append(endpoint)
            self._readers.append(endpoint)
        for endpoint in self._readers:
            self._loop.add_reader(endpoint.sock, endpoint.read_ready)

    # ---------------------------------------------------------------- closing

    async def close(self) -> None:
        """Close every transport and socket; a consumer waiting in an iteration returns."""
        if self._closing and not self._transports and not self._readers:
            return
        self._closing = True
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        transports, self._transports = self._transports, []
        readers, self._readers = self._readers, []
        self._endpoints = []
        for transport in transports:
            transport.close()
        for endpoint in readers:
            assert self._loop is not None
            self._loop.remove_reader(endpoint.sock)
            endpoint.sock.close()
        self._queue.clear()
        self._sizes.clear()
        self._wake_consumer()
        if transports:
            await asyncio.sleep(0)  # let the transports' connection_lost callbacks run

    # ---------------------------------------------------------------- receiving

    def _receive(self, data: bytes, source: Source, addr: Any) -> None:
        """One datagram to the core; its events are delivered soon (``call_soon``)."""
        self._n_datagrams += 1
        loop = self._loop
        assert loop is not None
        try:
            self._core.receive_datagram(data, source, loop.time(), addr)
        except Exception:  # a core bug must not stop the client
            self._n_internal += 1
            logger.exception("receiver core failed on a datagram from %s", addr)
        if not self._deliver_pending:
            self._deliver_pending = True
            loop.call_soon(self._deliver)

    def _on_timer(self) -> None:
        """The core's timer: the only place gap requests go out from.

        What already waits on every socket is read first (a batch from each, again
        while some socket filled a batch, ``HOT_STREAK`` rounds at most): the transports
        read one datagram per readiness callback, and a request must not go out for a
        gap that line B's copy, or an answer, already waiting in the kernel would fill.
        """
        self._timer = None
        self._timer_at = None
        if self._closing:
            return
        assert self._loop is not None
        endpoints = self._endpoints
        for _ in range(HOT_STREAK):
            if max([e.read_waiting(READ_BATCH) for e in endpoints], default=0) < READ_BATCH:
                break
        self._core.handle_timer(self._loop.time())
        self._deliver(timer=True)

    def _arm_timer(self) -> None:
        when = self._core.get_timer()
        if when == self._timer_at:
            return
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        self._timer_at = when
        if when is not None:
            assert self._loop is not None
            self._timer = self._loop.call_at(when, self._on_timer)

    def _deliver(self, timer: bool = False) -> None:
        """Hand the core's events to the consumer and send its requests; re-arm the timer.

        Run soon after datagrams came in (``call_soon``) and from the timer. Outside the
        timer, requests are sent only while the core's timer is not due (so
        ``datagrams_to_send`` cannot run it): a due timer runs in :meth:`_on_timer`, after
        the reads of its loop iteration and a read of every socket.
        """
        self._deliver_pending = False
        if self._closing:
            return
        core = self._core
        assert self._loop is not None
        now = self._loop.time()
        rereq = self._rereq
        due = core.get_timer()
        if timer or due is None or due > now:
            for data, addr in core.datagrams_to_send(now):
                try:
                    if rereq is not None:
                        rereq.sendto(data, addr)
                    else:  # read by add_reader: no transport to buffer a full socket
                        assert self._rereq_sock is not None
                        self._rereq_sock.sendto(data, addr)
                    self._n_sent += 1
                except OSError as exc:
                    self._n_send_errors += 1
                    logger.debug("cannot send request to %s: %s", addr, exc)
        if now >= self._next_drop_poll:
            self._next_drop_poll = now + DROP_POLL_INTERVAL
            self._poll_drops()
        events: list[Event] = core.events_received()
        if events:
            self._hand_over(events)
        self._arm_timer()

    def _hand_over(self, events: list[Event]) -> None:
        """Queue a batch for the consumer; pause reading once it is too far behind."""
        size = batch_size(events)
        self._queue.append(events)
        self._sizes.append(size)
        self._wake_consumer()
        if self._backlog.add(size):
            self._pause()

    def _pause(self) -> None:
        self._backlog.pause()
        for transport in self._transports:
            pause = getattr(transport, "pause_reading", None)
            if pause is not None:
                pause()
        assert self._loop is not None
        for endpoint in self._readers:
            self._loop.remove_reader(endpoint.sock)

    def _resume(self) -> None:
        self._backlog.resume()
        for transport in self._transports:
            resume = getattr(transport, "resume_reading", None)
            if resume is not None:
                resume()
        assert self._loop is not None
        if not self._closing:
            for endpoint in self._readers:
                self._loop.add_reader(endpoint.sock, endpoint.read_ready)
        self._poll_drops()

    def _poll_drops(self) -> None:
        """Report what the kernel dropped since last time (the core sees the gaps)."""
        self._backlog.poll_drops(read_kernel_drops(self._inodes))
        overrun = self._backlog.take_overrun()
        if overrun is not None:
            self._hand_over([overrun])

    def _wake_consumer(self) -> None:
        waiter = self._waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    # ---------------------------------------------------------------- consumer side

    async def _next_batch(self, timeout: float | None) -> list[Event] | None:
        """The next batch of events, None once closed; TimeoutError after ``timeout``."""
        queue = self._queue
        if not queue:
            if self._closing:
                return None
            assert self._loop is not None
            self._waiter = self._loop.create_future()
            try:
                if timeout is None:
                    await self._waiter
                else:
                    try:
                        await asyncio.wait_for(self._waiter, timeout)
                    except TimeoutError:
                        raise TimeoutError(f"nothing received in {timeout} s") from None
            finally:
                self._waiter = None
            if not queue:
                return None
        if self._closing:
            return None
        batch = queue.popleft()
        if self._backlog.take(self._sizes.popleft()):
            self._resume()
        return batch

    def _ensure_started(self, *, raw: bool) -> None:
        if not self._started:
            if self._closing:
                raise ClientClosed("the client is closed")
            raise MoldUDP64Error("open the client first (async with, open() or start())")
        if self._raw != raw:
            which = "start()" if self._raw else "open()"
            raise MoldUDP64Error(f"the client was started with {which}; that mode only")

    def messages(self, timeout: float | None = None) -> AsyncIterator[Message]:
        """Every message in order, exactly once; see ``MoldUDP64.messages``.

        Ends at end of session (unless ``stop_at_end_of_session=False``) or on
        :meth:`close`; ``timeout`` raises TimeoutError when nothing arrives for that long.
        """
        self._ensure_started(raw=False)
        return _AsyncMessages(self, timeout)

    def events(self, timeout: float | None = None) -> AsyncIterator[Event]:
        """Every event, message batches included; see ``MoldUDP64.events``."""
        self._ensure_started(raw=False)
        return _AsyncEvents(self, timeout)

    async def _datagram(self, timeout: float | None, stop_at_end: bool = False) -> Datagram | None:
        """The next datagram; with ``stop_at_end``, None once the session ended."""
        self._ensure_started(raw=True)
        while (got := self._cursor.take_datagram(stop_at_end)) is False:
            if (batch := await self._next_batch(timeout)) is None:
                raise ClientClosed("the client is closed")
            self._cursor.load(batch)
        return None if got is True else got

    def _request(self, req: RetransmissionPacket) -> None:
        self._check_request(req)
        self._ensure_started(raw=True)
        if not self._core.config.rerequest_server_addrs:
            raise ConfigError("no re-request server configured to send the request to")
        assert self._loop is not None
        self._core.request(req, self._loop.time())
        self._deliver()


class _AsyncMessages:
    """``async for`` over messages; resumes exactly where the last iteration stopped."""

    def __init__(self, client: AsyncMoldUDP64, timeout: float | None) -> None:
        self._client = client
        self._cursor = client._cursor
        self._handle = client._policy.handle
        self._timeout = timeout
        self._stopped = False

    def __aiter__(self) -> _AsyncMessages:
        return self

    async def __anext__(self) -> Message:
        cursor = self._cursor
        current = cursor.current
        if current is not None:
            for msg in current:
                return msg
            cursor.current = None
        if self._stopped:
            raise StopAsyncIteration
        handle = self._handle
        while True:
            ev = cursor.next_event()
            if ev is None:
                got = await self._client._next_batch(self._timeout)
                if got is None:
                    self._stopped = True
                    raise StopAsyncIteration
                cursor.load(got)
            elif type(ev) is MessagesDelivered:
                assert isinstance(ev, MessagesDelivered)
                it = message_iter(ev)
                for msg in it:
                    cursor.current = it
                    return msg
            elif handle(ev):
                self._stopped = True
                raise StopAsyncIteration


class _AsyncEvents:
    """``async for`` over every event."""

    def __init__(self, client: AsyncMoldUDP64, timeout: float | None) -> None:
        self._client = client
        self._timeout = timeout
        self._stopped = False

    def __aiter__(self) -> _AsyncEvents:
        return self

    async def __anext__(self) -> Event:
        if self._stopped:
            raise StopAsyncIteration
        client = self._client
        cursor = client._cursor
        while (ev := cursor.next_any()) is None:
            got = await client._next_batch(self._timeout)
            if got is None:
                self._stopped = True
                raise StopAsyncIteration
            cursor.load(got)
        if client._policy.record(ev):
            self._stopped = True
        return ev


class AsyncDatagramStream:
    """Low-level output of :meth:`AsyncMoldUDP64.start`: datagrams in arrival order.

    ``async for`` ends once the session has ended (after its end-of-session datagram
    was yielded; unless ``stop_at_end_of_session=False``) or when the client is closed.
    """

    def __init__(self, client: AsyncMoldUDP64) -> None:
        self.client = client

    async def recv(self, timeout: float | None = None) -> Datagram:
        """The next datagram; TimeoutError after ``timeout`` s, ClientClosed once closed."""
        got = await self.client._datagram(timeout)
        assert got is not None
        return got

    def __aiter__(self) -> AsyncIterator[Datagram]:
        return self._iterate()

    async def _iterate(self) -> AsyncIterator[Datagram]:
        while True:
            try:
                got = await self.client._datagram(None, stop_at_end=True)
            except ClientClosed:
                return
            if got is None:
                return
            yield got


class AsyncRequestSender:
    """Low-level request channel of :meth:`AsyncMoldUDP64.start` (never blocks)."""

    def __init__(self, client: AsyncMoldUDP64) -> None:
        self.client = client

    async def send(self, request: RetransmissionPacket) -> None:
        """Hand ``request`` to the core, which sends it and retries it on timeout."""
        self.client._request(request)

    def try_send(self, request: RetransmissionPacket) -> bool:
        """As :meth:`send`, without awaiting; always True (there is no queue to fill)."""
        self.client._request(request)
        return True
