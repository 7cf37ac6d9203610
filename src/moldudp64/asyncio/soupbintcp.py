"""SoupBinTCP on asyncio: :class:`AsyncSoupBinTCP` (client) and :class:`AsyncSoupServer`,
over the cores in :mod:`moldudp64.soupbintcp` (the blocking ones' twins; no threads)::

    async with AsyncSoupBinTCP(("127.0.0.1", 30010), session="TEST000001") as client:
        async for message in client.messages():
            ...                                   # ends after End of Session
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator
from types import TracebackType
from typing import Any

from ..events import Address, Event, Message, MessagesDelivered, MessagesLost
from ..exceptions import ConfigError, SocketError
from ..soupbintcp import (
    DEFAULT_HEARTBEAT_INTERVAL,
    DEFAULT_MAX_OUTPUT,
    DEFAULT_TIMEOUT,
    REJECT_LINGER,
    CannotResume,
    ConnectionClosed,
    LoginRejectedError,
    LoginRequest,
    SoupClientCore,
    SoupServerCore,
    SoupServerStats,
    SoupStats,
    StoreSession,
)

__all__ = ["AsyncSoupBinTCP", "AsyncSoupServer"]

logger = logging.getLogger(__name__)

_READ_SIZE = 1 << 18
_BACKOFF = 0.1
_MAX_BACKOFF = 5.0
#: Bytes a server connection hands its transport before waiting for the client to read.
_TRANSPORT_HIGH = 256 * 1024


class AsyncSoupBinTCP:
    """The asyncio SoupBinTCP client: as :class:`moldudp64.sync.soupbintcp.SoupBinTCP`
    (resume after a drop, ``max_retries`` reconnects in a row, ``login_timeout``, the
    accepted session and number checked, :class:`CannotResume`,
    :class:`LoginRejectedError`), iterated with ``async for``."""

    def __init__(
        self,
        address: Address,
        *,
        username: str = "",
        password: str = "",
        session: str = "",
        seq_num: int = 1,
        max_retries: int = 5,
        connect_timeout: float = 5.0,
        heartbeat_interval: float = DEFAULT_HEARTBEAT_INTERVAL,
        timeout: float = DEFAULT_TIMEOUT,
        login_timeout: float | None = None,
    ) -> None:
        if max_retries < 0:
            raise ConfigError(f"max_retries {max_retries!r} must be >= 0")
        self.address = address
        self.core = SoupClientCore(
            username,
            password,
            session,
            seq_num,
            heartbeat_interval=heartbeat_interval,
            timeout=timeout,
            login_timeout=login_timeout,
        )
        self.max_retries = max_retries
        self.connect_timeout = connect_timeout
        self._reader: asyncio.StreamReader | None = None
        self._writer: asyncio.StreamWriter | None = None
        self._pending: list[Event] = []
        self._failures = 0
        self._retry_at: float | None = None
        self._closed = False
        self._error: BaseException | None = None
        self.connections = 0
        self.disconnects: list[str] = []
        self.lost_ranges: list[MessagesLost] = []

    async def __aenter__(self) -> AsyncSoupBinTCP:
        return self

    async def __aexit__(
        self, et: type[BaseException] | None, ev: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.close()

    async def close(self) -> None:
        """Log out (best effort) and close; iteration then ends."""
        self._closed = True
        writer = self._writer
        if writer is not None:
            if self.core.is_open and self.core.logged_in:
                with contextlib.suppress(OSError):
                    writer.write(b"\x00\x01O")
            await self._drop_connection()
        self.core.close("closed")

    @property
    def stats(self) -> SoupStats:
        """The core's counters (a snapshot)."""
        return self.core.stats.snapshot()

    @property
    def next_seq_num(self) -> int:
        """The number of the next message expected."""
        return self.core.next_seq_num

    async def messages(self, timeout: float | None = None) -> AsyncIterator[Message]:
        """Every message as :class:`~moldudp64.events.Message`."""
        async for batch in self.batches(timeout):
            for ev in batch:
                if type(ev) is MessagesDelivered:
                    session, seq = ev.session, ev.seq_num
                    for i, data in enumerate(ev.messages):
                        yield Message(session, seq + i, data)

    async def events(self, timeout: float | None = None) -> AsyncIterator[Event]:
        """Every event (messages as :class:`MessagesDelivered` batches)."""
        async for batch in self.batches(timeout):
            for ev in batch:
                yield ev

    async def batches(self, timeout: float | None = None) -> AsyncIterator[list[Event]]:
        """The events a list at a time, as they were read."""
        while (batch := await self._next_batch(timeout)) is not None:
            yield batch

    async def _next_batch(self, timeout: float | None) -> list[Event] | None:
        loop = asyncio.get_running_loop()
        deadline = None if timeout is None else loop.time() + timeout
        core = self.core
        while True:
            if self._pending:
                batch, self._pending = self._pending, []
                return batch
            if self._error is not None:
                raise self._error
            if self._closed or core.ended:
                return None
            if self._reader is None:
                await self._connect(deadline)
                continue
            now = loop.time()
            due = core.get_timer()
            wait = None if due is None else max(0.0, due - now)
            if deadline is not None:
                if now >= deadline:
                    raise TimeoutError("no event within the timeout")
                wait = deadline - now if wait is None else min(wait, deadline - now)
            await self._step(wait)

    async def _step(self, wait: float | None) -> None:
        reader, writer = self._reader, self._writer
        assert reader is not None and writer is not None
        core = self.core
        loop = asyncio.get_running_loop()
        try:
            await self._flush(writer)
            try:
                data: bytes | None = await asyncio.wait_for(reader.read(_READ_SIZE), wait)
            except TimeoutError:
                data = None
            now = loop.time()
            if data == b"":
                await self._lost("the server closed the connection")
                return
            if data is not None:
                core.receive(data, now)
            core.handle_timer(now)
            await self._flush(writer)
        except OSError as exc:
            await self._lost(f"connection error: {exc.strerror or exc}")
            return
        await self._take_events()

    async def _flush(self, writer: asyncio.StreamWriter) -> None:
        core = self.core
        if core.output_bytes:
            data = core.outgoing(core.output_bytes)
            writer.write(data)
            core.consumed(len(data))
            await writer.drain()

    async def _take_events(self) -> None:
        core = self.core
        for ev in core.events_received():
            kind = type(ev)
            if kind is ConnectionClosed:
                assert isinstance(ev, ConnectionClosed)
                if core.rejected is not None:
                    self._error = LoginRejectedError(core.rejected)
                    await self._drop_connection()
                elif core.broken is not None:
                    self._error = CannotResume(
                        f"session {core.session!r} from {self.address[0]}:{self.address[1]}: "
                        f"{core.broken}"
                    )
                    await self._drop_connection()
                elif core.ended:
                    await self._drop_connection()
                else:
                    await self._lost(ev.reason)
                continue
            if kind is MessagesLost:
                assert isinstance(ev, MessagesLost)
                if len(self.lost_ranges) < 10_000:
                    self.lost_ranges.append(ev)
            elif kind is MessagesDelivered:
                # Progress: the retries count afresh (a login alone is not progress: a
                # server that accepts and then fails every time is still given up on).
                self._failures = 0
            self._pending.append(ev)

    async def _drop_connection(self) -> None:
        writer = self._writer
        self._reader = self._writer = None
        if writer is not None:
            writer.close()
            with contextlib.suppress(OSError, asyncio.CancelledError):
                await writer.wait_closed()

    async def _lost(self, reason: str) -> None:
        await self._drop_connection()
        self.core.close(reason)
        if self._closed:
            return
        self.disconnects = [*self.disconnects[-99:], reason]
        logger.warning(
            "SoupBinTCP connection to %s:%d lost (%s); resuming at %d",
            *self.address,
            reason,
            self.core.next_seq_num,
        )

    async def _connect(self, deadline: float | None) -> None:
        """Connect and queue the login, after the backoff (at most until ``deadline``:
        :class:`TimeoutError` then, and the wait goes on at the next call)."""
        loop = asyncio.get_running_loop()
        if self.connections and self._retry_at is None:
            self._failures += 1
            if self._failures > self.max_retries:
                last = self.disconnects[-1] if self.disconnects else "?"
                self._error = CannotResume(
                    f"cannot resume session {self.core.session!r} at {self.core.next_seq_num} "
                    f"from {self.address[0]}:{self.address[1]}: {self.max_retries} reconnects "
                    f"failed (last: {last})"
                )
                raise self._error
            backoff = min(_MAX_BACKOFF, _BACKOFF * 2 ** (self._failures - 1))
            self._retry_at = loop.time() + backoff
        if self._retry_at is not None:
            now = loop.time()
            if deadline is not None and deadline < self._retry_at:
                await asyncio.sleep(max(0.0, deadline - now))
                raise TimeoutError("no event within the timeout")
            await asyncio.sleep(max(0.0, self._retry_at - now))
            self._retry_at = None
        self.connections += 1
        try:
            self._reader, self._writer = await asyncio.wait_for(
                asyncio.open_connection(*self.address, limit=_READ_SIZE), self.connect_timeout
            )
        except (OSError, TimeoutError) as exc:
            text = getattr(exc, "strerror", None) or str(exc) or type(exc).__name__
            if self.connections == 1 and self.max_retries == 0:
                raise SocketError(
                    f"cannot connect to {self.address[0]}:{self.address[1]}: {text}",
                    address=self.address,
                    cause=exc if isinstance(exc, OSError) else None,
                ) from exc
            self.disconnects = [*self.disconnects[-99:], f"connect: {text}"]
            return
        self.core.connect(asyncio.get_running_loop().time())


# --------------------------------------------------------------------------- server


class AsyncSoupServer:
    """Serves ``store`` as one SoupBinTCP session, as
    :class:`moldudp64.sync.soupbintcp.SoupServer` does, one task per client.

    ``await start()`` listens; :meth:`notify` after appending to a live store,
    :meth:`finish` when it is over; ``await close()`` (every connection ends at once,
    even one whose client reads nothing). When ``max_clients`` are connected, a new
    connection takes the slot of the oldest one not logged in yet, as the blocking server.
    """

    def __init__(
        self,
        store: Any,
        session: str,
        bind: Address = ("127.0.0.1", 0),
        *,
        username: str | None = None,
        password: str | None = None,
        finished: bool = True,
        max_clients: int = 256,
        max_output: int = DEFAULT_MAX_OUTPUT,
        heartbeat_interval: float = DEFAULT_HEARTBEAT_INTERVAL,
        timeout: float = DEFAULT_TIMEOUT,
        login_timeout: float | None = None,
    ) -> None:
        self.session = StoreSession(
            session, store, username=username, password=password, finished=finished
        )
        self.bind = bind
        self.max_clients = max_clients
        self.max_output = max_output
        self.heartbeat_interval = heartbeat_interval
        self.timeout = timeout
        self.login_timeout = login_timeout
        self._closing = False
        #: Each connection's core and its wake-up, in the order they connected.
        self._waits: dict[SoupServerCore, asyncio.Event] = {}
        self._stats = SoupServerStats()
        self._server: asyncio.Server | None = None
        self._cores: set[SoupServerCore] = set()
        self._wakeups: set[asyncio.Event] = set()
        self._tasks: set[asyncio.Task[None]] = set()

    @property
    def address(self) -> Address:
        """Where the server listens (after :meth:`start`)."""
        assert self._server is not None, "start() the server first"
        host, port = self._server.sockets[0].getsockname()[:2]
        return (host, port)

    @property
    def stats(self) -> SoupServerStats:
        """The server's counters (connected clients' messages included)."""
        stats = self._stats.snapshot()
        stats.clients = len(self._cores)
        stats.messages_sent += sum(core.stats.messages_sent for core in self._cores)
        return stats

    async def start(self) -> AsyncSoupServer:
        """Listen on ``bind``."""
        try:
            self._server = await asyncio.start_server(self._serve, *self.bind, backlog=128)
        except OSError as exc:
            raise SocketError(
                f"cannot listen on {self.bind[0]}:{self.bind[1]}: {exc.strerror or exc}",
                address=self.bind,
                cause=exc,
            ) from exc
        return self

    async def __aenter__(self) -> AsyncSoupServer:
        return await self.start()

    async def __aexit__(
        self, et: type[BaseException] | None, ev: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.close()

    def notify(self) -> None:
        """The store grew: wake every client waiting at its end."""
        for event in self._wakeups:
            event.set()

    def finish(self) -> None:
        """The live session is over: End of Session once each client has it all."""
        self.session.finished = True
        self.notify()

    async def close(self) -> None:
        """Stop listening and close every connection (aborted: unread output is dropped)."""
        self._closing = True
        if self._server is not None:
            self._server.close()
        for task in list(self._tasks):
            task.cancel()
        for task in list(self._tasks):
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
        if self._server is not None:
            await self._server.wait_closed()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._tasks.add(task)
        self._stats.connections += 1
        peer = writer.get_extra_info("peername") or ("?", 0)
        try:
            if len(self._cores) >= self.max_clients:
                self._evict_one()
            if len(self._cores) >= self.max_clients or self._closing:
                self._stats.refused_full += 1
                writer.transport.abort()
                return
            await self._connection(reader, writer, (str(peer[0]), int(peer[1])))
        except asyncio.CancelledError:
            if not self._closing:
                raise
            # close() ended it: a normal end (a task ending cancelled is reported, with a
            # traceback, by the stream protocol's done callback).
            task.uncancel()
        finally:
            self._tasks.discard(task)

    def _evict_one(self) -> None:
        """Full: close the oldest connection that has not logged in (a real client logs
        in at once; an idle connection costs its peer nothing)."""
        for core, wake in self._waits.items():
            if not core.login_seen and core.is_open:
                core.close("evicted: not logged in while the server was full")
                self._stats.refused_full += 1
                del self._waits[core]
                self._cores.discard(core)
                wake.set()
                return

    async def _connection(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, peer: Address
    ) -> None:
        loop = asyncio.get_running_loop()
        core = SoupServerCore(
            heartbeat_interval=self.heartbeat_interval,
            timeout=self.timeout,
            max_output=self.max_output,
            login_timeout=self.login_timeout,
        )
        core.connected(loop.time())
        wake = asyncio.Event()
        self._cores.add(core)
        self._wakeups.add(wake)
        self._waits[core] = wake
        reason = "closed"
        transport = writer.transport

        # Only this coroutine touches the core: reads are futures it collects, so a store
        # that blocks (``blocking_io``) can be read in a worker thread meanwhile.
        blocking = bool(getattr(self.session.store, "blocking_io", False))
        reading: asyncio.Future[bytes] = asyncio.ensure_future(reader.read(65536))
        added = 0
        try:
            while True:
                if reading.done():
                    data = reading.result()  # a reset raises: "connection error" below
                    if not data:
                        reason = "client closed the connection"
                        break
                    core.receive(data, loop.time())
                    reading = asyncio.ensure_future(reader.read(65536))
                now = loop.time()
                core.handle_timer(now)
                for ev in core.events_received():
                    if isinstance(ev, LoginRequest):
                        refused = self.session.login(core, ev, now)
                        if refused is None:
                            self._stats.logins_accepted += 1
                        else:
                            rejected = self._stats.logins_rejected
                            rejected[refused] = rejected.get(refused, 0) + 1
                added = await self._fill(core, now, blocking)
                # Hand the transport at most _TRANSPORT_HIGH; the rest stays in the core,
                # which counts it against max_output and times a client that stops reading.
                while core.output_bytes and transport.get_write_buffer_size() < _TRANSPORT_HIGH:
                    data = core.outgoing(_TRANSPORT_HIGH)
                    writer.write(data)
                    core.consumed(len(data))
                    self._stats.bytes_sent += len(data)
                    added += await self._fill(core, now, blocking)
                if not core.is_open:
                    reason = core.close_reason or "closed"
                    if reason.startswith("login rejected"):
                        reading = await self._linger(writer, reader, reading, REJECT_LINGER)
                    break
                if core.ended and not core.output_bytes:
                    reason = "end of session sent"
                    reading = await self._linger(writer, reader, reading, self.timeout)
                    break
                due = core.get_timer()
                wait = 0.5 if due is None else max(0.0, min(0.5, due - loop.time()))
                wake.clear()
                waiters: list[asyncio.Future[Any]] = [asyncio.ensure_future(wake.wait()), reading]
                if transport.get_write_buffer_size() >= _TRANSPORT_HIGH:
                    waiters.append(asyncio.ensure_future(writer.drain()))
                elif core.logged_in and (
                    added if blocking else core.next_seq_num < self.session.store.next_seq_num
                ):
                    wait = 0.0  # more in the store for it: round again (after others ran)
                _, pending = await asyncio.wait(
                    waiters, timeout=wait, return_when=asyncio.FIRST_COMPLETED
                )
                for fut in pending:
                    if fut is not reading:
                        fut.cancel()
        except (OSError, ConnectionError) as exc:
            reason = f"connection error: {exc}"
        finally:
            reading.cancel()
            self._cores.discard(core)
            self._wakeups.discard(wake)
            self._waits.pop(core, None)
            self._stats.count_closed(reason, core)
            level = logging.WARNING if reason.startswith("client not reading") else logging.INFO
            logger.log(level, "SoupBinTCP client %s:%d disconnected: %s", *peer, reason)
            if self._closing or core.output_bytes or reason.startswith("client not reading"):
                transport.abort()  # what is unread is dropped: closing never waits on it
            else:
                writer.close()
            with contextlib.suppress(
                OSError, ConnectionError, asyncio.CancelledError, TimeoutError
            ):
                await asyncio.wait_for(writer.wait_closed(), REJECT_LINGER)
            if not transport.is_closing() or transport.get_write_buffer_size():
                transport.abort()

    async def _fill(self, core: SoupServerCore, now: float, blocking: bool) -> int:
        """Messages from the store into ``core`` (in a worker thread for a store whose
        reads wait on the network); how many."""
        if not (core.is_open and core.logged_in) or core.room() <= 0:
            return 0
        if blocking:
            return await asyncio.to_thread(self.session.fill, core, now)
        return self.session.fill(core, now)

    async def _linger(
        self,
        writer: asyncio.StreamWriter,
        reader: asyncio.StreamReader,
        reading: asyncio.Future[bytes],
        seconds: float,
    ) -> asyncio.Future[bytes]:
        """After the last packet: shut our side, let the client close (at most ``seconds``,
        and ``timeout``); the read still pending at the end."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + min(seconds, self.timeout)
        with contextlib.suppress(OSError, ConnectionError):
            await writer.drain()
            if writer.can_write_eof():
                writer.write_eof()
            while True:  # what the client still sends (heartbeats), until it closes
                done, _ = await asyncio.wait([reading], timeout=max(0.0, deadline - loop.time()))
                if not done or not reading.result():
                    break
                reading = asyncio.ensure_future(reader.read(65536))
        return reading
