"""Blocking SoupBinTCP client and server over the cores in :mod:`moldudp64.soupbintcp`.

:class:`SoupBinTCP` reads a session in the calling thread (no background thread), and
reconnects and resumes from the next number when the connection drops::

    with SoupBinTCP(("127.0.0.1", 30010), session="TEST000001") as client:
        for message in client.messages():
            ...                                  # ends after End of Session

:class:`SoupServer` serves a :class:`~moldudp64.store.MessageStore` as one session to
many clients, each at its own pace, from one selector thread.
"""

from __future__ import annotations

import contextlib
import logging
import selectors
import socket
import threading
import time
from collections.abc import Iterator
from itertools import chain
from types import TracebackType
from typing import Any

from ..events import Address, Event, Message, MessagesDelivered, MessagesLost
from ..exceptions import ClientClosed, ConfigError, SocketError
from ..soupbintcp import (
    DEFAULT_HEARTBEAT_INTERVAL,
    DEFAULT_MAX_OUTPUT,
    DEFAULT_TIMEOUT,
    REJECT_LINGER,
    CannotResume,
    ConnectionClosed,
    LoginRejectedError,
    LoginRequest,
    LogoutRequested,
    MessageRun,
    SoupClientCore,
    SoupServerCore,
    SoupServerStats,
    SoupStats,
    StoreSession,
)

__all__ = ["CannotResume", "SoupBinTCP", "SoupServer"]

logger = logging.getLogger(__name__)

_READ_SIZE = 1 << 20
#: A server's turn fills and writes a client's buffer at most this many times.
_TURN_FILLS = 8
#: Seconds the first reconnect waits; doubled each failure up to :data:`_MAX_BACKOFF`.
_BACKOFF = 0.1
_MAX_BACKOFF = 5.0
#: Seconds a server stops accepting after ``accept()`` failed (out of descriptors).
_ACCEPT_PAUSE = 0.25


class SoupBinTCP:
    """A SoupBinTCP client: every sequenced message of a session, in order, once.

    ``seq_num`` is the first number wanted (0: from the most recent); ``session`` blank
    means the server's current one. When the connection drops the client connects again
    and logs in with the session it was given and the next number it needs, up to
    ``max_retries`` times in a row (waits of 0.1 s doubling to 5 s); then iteration raises
    :class:`CannotResume`. A connection whose login is not answered within
    ``login_timeout`` seconds (default ``timeout``) is a failed one. The server must accept
    the session named (when one is) at the number asked for or later: another session, or
    an earlier number, is a failed connection too (nothing below the number asked for is
    ever delivered). A message numbered past 2**64-1 raises :class:`CannotResume`. A Login
    Rejected raises :class:`LoginRejectedError` (after the events before it). Iteration
    ends after End of Session or :meth:`close`. With
    ``runs=True`` :meth:`events` and :meth:`batches` give the messages as
    :class:`~moldudp64.soupbintcp.MessageRun` events (BinaryFILE blocks, for a recorder)
    instead of ``MessagesDelivered``; :meth:`messages` is the same either way.
    """

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
        runs: bool = False,
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
            runs=runs,
            login_timeout=login_timeout,
        )
        self.max_retries = max_retries
        self.connect_timeout = connect_timeout
        self._sock: socket.socket | None = None
        self._buf = bytearray(_READ_SIZE)
        self._pending: list[Event] = []
        self._failures = 0
        self._retry_at: float | None = None  # the next reconnect waits until then
        self._closed = False
        self._error: BaseException | None = None
        #: Connections made (1 + reconnects).
        self.connections = 0
        #: Why each dropped connection dropped (the most recent last; at most 100).
        self.disconnects: list[str] = []
        self.lost_ranges: list[MessagesLost] = []

    # -- life
    def __enter__(self) -> SoupBinTCP:
        return self

    def __exit__(
        self, et: type[BaseException] | None, ev: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()

    def close(self) -> None:
        """Log out (best effort) and close; iteration then ends."""
        self._closed = True
        sock = self._sock
        self._sock = None
        if sock is not None:
            if self.core.is_open and self.core.logged_in:
                with contextlib.suppress(OSError):
                    sock.send(b"\x00\x01O")
            sock.close()
        self.core.close("closed")

    @property
    def stats(self) -> SoupStats:
        """The core's counters (a snapshot)."""
        return self.core.stats.snapshot()

    @property
    def session(self) -> str:
        """The session (the one accepted once logged in)."""
        return self.core.session

    @property
    def next_seq_num(self) -> int:
        """The number of the next message expected."""
        return self.core.next_seq_num

    # -- iteration
    def messages(self, timeout: float | None = None) -> Iterator[Message]:
        """Every message as :class:`~moldudp64.events.Message`; ``timeout``: seconds
        without an event before :class:`TimeoutError`."""
        for batch in self.batches(timeout):
            for ev in batch:
                if type(ev) is MessagesDelivered or type(ev) is MessageRun:
                    session, seq = ev.session, ev.seq_num
                    for i, data in enumerate(ev.messages):
                        yield Message(session, seq + i, data)

    def events(self, timeout: float | None = None) -> Iterator[Event]:
        """Every event (messages as :class:`MessagesDelivered` batches)."""
        return chain.from_iterable(self.batches(timeout))

    def batches(self, timeout: float | None = None) -> Iterator[list[Event]]:
        """The events a list at a time, as they were read."""
        while True:
            batch = self._next_batch(timeout)
            if batch is None:
                return
            yield batch

    # -- the loop
    def _next_batch(self, timeout: float | None) -> list[Event] | None:
        deadline = None if timeout is None else time.monotonic() + timeout
        core = self.core
        while True:
            if self._pending:
                batch, self._pending = self._pending, []
                return batch
            if self._error is not None:
                raise self._error
            if self._closed or core.ended:
                return None
            if self._sock is None:
                self._connect(deadline)
                continue
            now = time.monotonic()
            due = core.get_timer()
            wait = None if due is None else max(0.0, due - now)
            if deadline is not None:
                if now >= deadline:
                    raise TimeoutError("no event within the timeout")
                wait = deadline - now if wait is None else min(wait, deadline - now)
            self._step(wait)

    def _step(self, wait: float | None) -> None:
        sock = self._sock
        assert sock is not None
        core = self.core
        try:
            if core.output_bytes:
                self._write(sock)
            sock.settimeout(wait)
            buf = self._buf
            try:
                n: int | None = sock.recv_into(buf)
            except (TimeoutError, BlockingIOError):
                n = None
            now = time.monotonic()
            if n == 0:
                self._lost("the server closed the connection")
                return
            if n is not None:
                # One buffer read into again and again: the core keeps no view of it.
                with memoryview(buf) as view, view[:n] as data:
                    core.receive(data, now)
            core.handle_timer(now)
            if core.output_bytes:
                self._write(sock)
        except OSError as exc:
            self._lost(f"connection error: {exc.strerror or exc}")
            return
        self._take_events()

    def _write(self, sock: socket.socket) -> None:
        core = self.core
        sock.settimeout(self.connect_timeout)
        while core.output_bytes:
            core.consumed(sock.send(core.outgoing()))

    def _take_events(self) -> None:
        core = self.core
        for ev in core.events_received():
            kind = type(ev)
            if kind is ConnectionClosed:
                assert isinstance(ev, ConnectionClosed)
                if core.rejected is not None:
                    self._error = LoginRejectedError(core.rejected)
                    self._drop_socket()
                elif core.broken is not None:
                    self._error = CannotResume(
                        f"session {core.session!r} from {self.address[0]}:{self.address[1]}: "
                        f"{core.broken}"
                    )
                    self._drop_socket()
                elif core.ended:
                    self._drop_socket()
                else:
                    self._lost(ev.reason)
                continue
            if kind is MessagesLost:
                assert isinstance(ev, MessagesLost)
                if len(self.lost_ranges) < 10_000:
                    self.lost_ranges.append(ev)
            elif kind is MessagesDelivered or kind is MessageRun:
                # Progress: the retries count afresh (a login alone is not progress: a
                # server that accepts and then fails every time is still given up on).
                self._failures = 0
            self._pending.append(ev)

    def _drop_socket(self) -> None:
        if self._sock is not None:
            self._sock.close()
            self._sock = None

    def _lost(self, reason: str) -> None:
        """The connection dropped: reconnect on the next turn (or give up)."""
        self._drop_socket()
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

    def _connect(self, deadline: float | None) -> None:
        """Connect and queue the login, waiting the backoff first after a failure (no
        longer than ``deadline``: :class:`TimeoutError` then, the wait goes on at the next
        call, so a caller polling with a timeout still sees its stop flag)."""
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
            self._retry_at = time.monotonic() + backoff
        if self._retry_at is not None:
            now = time.monotonic()
            if deadline is not None and deadline < self._retry_at:
                time.sleep(max(0.0, deadline - now))
                raise TimeoutError("no event within the timeout")
            time.sleep(max(0.0, self._retry_at - now))
            self._retry_at = None
        self.connections += 1
        try:
            sock = socket.create_connection(self.address, timeout=self.connect_timeout)
        except OSError as exc:
            if self.connections == 1 and self.max_retries == 0:
                raise SocketError(
                    f"cannot connect to {self.address[0]}:{self.address[1]}: {exc.strerror or exc}",
                    address=self.address,
                    cause=exc,
                ) from exc
            self.disconnects = [*self.disconnects[-99:], f"connect: {exc.strerror or exc}"]
            return
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        with contextlib.suppress(OSError):
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4 << 20)
        self._sock = sock
        self.core.connect(time.monotonic())
        if self._closed:
            self._drop_socket()
            raise ClientClosed("the client is closed")


# --------------------------------------------------------------------------- server


class _Client:
    __slots__ = ("addr", "closing", "core", "reason", "sock", "writing")

    def __init__(self, sock: socket.socket, addr: Address, core: SoupServerCore) -> None:
        self.sock = sock
        self.addr = addr
        self.core = core
        self.writing = False
        #: When the server shut its side (after its last packet), and why.
        self.closing: float | None = None
        self.reason = ""


class SoupServer:
    """Serves ``store`` as SoupBinTCP session ``session`` on ``bind`` (one thread).

    Each client logs in at the number it wants and gets the messages from there at its
    own pace: at most ``max_output`` bytes are queued per client; one that does not read
    for ``timeout`` seconds is disconnected (logged with the reason). With
    ``finished=True`` (a recorded day) a client that reaches the end gets End of Session;
    with ``finished=False`` (a live store another thread appends to) it waits for more,
    until :meth:`finish`. Call :meth:`notify` after appending (or the server looks again
    within 50 ms). ``max_clients`` connections at once: when full, a new connection takes
    the slot of the oldest one that has not sent its Login Request yet (counted under
    ``closed['evicted']`` and ``refused_full``), else it is closed at once
    (``refused_full``). A connection has
    ``login_timeout`` seconds (default 5) to log in. A failing ``accept()`` (out of file
    descriptors) pauses accepting for a while and is logged once per 10 s with a count.
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
        lock: Any = None,
    ) -> None:
        self.session = StoreSession(
            session, store, username=username, password=password, finished=finished
        )
        self.max_clients = max_clients
        self.max_output = max_output
        self.heartbeat_interval = heartbeat_interval
        self.timeout = timeout
        self.login_timeout = login_timeout
        self._lock = lock if lock is not None else contextlib.nullcontext()
        self._stats = SoupServerStats()
        self._stats_lock = threading.Lock()
        try:
            self._listener = socket.create_server(bind, backlog=128, reuse_port=False)
        except OSError as exc:
            raise SocketError(
                f"cannot listen on {bind[0]}:{bind[1]}: {exc.strerror or exc}",
                address=bind,
                cause=exc,
            ) from exc
        self._listener.setblocking(False)
        self._wake_r, self._wake_w = socket.socketpair()
        self._wake_r.setblocking(False)
        self._wake_w.setblocking(False)
        self._selector = selectors.DefaultSelector()
        self._selector.register(self._listener, selectors.EVENT_READ, None)
        self._selector.register(self._wake_r, selectors.EVENT_READ, "wake")
        self._clients: dict[int, _Client] = {}
        self._thread: threading.Thread | None = None
        self._stop = False
        self._last_full_log = -1e9
        self._accept_paused_until = 0.0
        self._accept_failures = 0
        self._last_accept_log = -1e9

    @property
    def address(self) -> Address:
        """The address the server listens on."""
        host, port = self._listener.getsockname()[:2]
        return (host, port)

    @property
    def stats(self) -> SoupServerStats:
        """The server's counters (a snapshot; connected clients' messages included)."""
        with self._stats_lock:
            stats = self._stats.snapshot()
            stats.clients = len(self._clients)
            stats.messages_sent += sum(c.core.stats.messages_sent for c in self._clients.values())
        return stats

    def __enter__(self) -> SoupServer:
        return self.start()

    def __exit__(
        self, et: type[BaseException] | None, ev: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()

    def start(self) -> SoupServer:
        """Serve in a background thread."""
        if self._thread is None:
            self._thread = threading.Thread(target=self.serve_forever, name="soup-server")
            self._thread.daemon = True
            self._thread.start()
        return self

    def notify(self) -> None:
        """The store grew (or the session finished): send to the waiting clients."""
        with contextlib.suppress(OSError):
            self._wake_w.send(b"x")

    def finish(self) -> None:
        """The live session is over: End of Session to each client once it has it all."""
        self.session.finished = True
        self.notify()

    def close(self) -> None:
        """Stop serving: every connection is closed."""
        self._stop = True
        self.notify()
        if self._thread is not None and self._thread is not threading.current_thread():
            self._thread.join(10)
        for client in list(self._clients.values()):
            self._drop(client, "server stopped")
        with contextlib.suppress(KeyError, ValueError):
            self._selector.unregister(self._listener)
        self._listener.close()
        self._selector.close()
        self._wake_r.close()
        self._wake_w.close()

    # -- the loop
    def serve_forever(self) -> None:
        """The server's loop (in the calling thread) until :meth:`close`."""
        while not self._stop:
            now = time.monotonic()
            wait = 0.05
            for client in list(self._clients.values()):
                due = client.core.get_timer()
                if due is not None:
                    wait = min(wait, max(0.0, due - now))
            if self._accept_paused_until and now >= self._accept_paused_until:
                self._accept_paused_until = 0.0
                self._selector.register(self._listener, selectors.EVENT_READ, None)
            elif self._accept_paused_until:
                wait = min(wait, self._accept_paused_until - now)
            for key, mask in self._selector.select(wait):
                if self._stop:
                    break
                if key.data is None:
                    self._accept()
                elif key.data == "wake":
                    with contextlib.suppress(OSError):
                        self._wake_r.recv(4096)
                else:
                    client = key.data
                    if mask & selectors.EVENT_READ:
                        self._read(client)
                    if mask & selectors.EVENT_WRITE and client.core.is_open:
                        self._write(client)
            now = time.monotonic()
            for client in list(self._clients.values()):
                self._service(client, now)

    def _accept(self) -> None:
        for _ in range(64):
            try:
                sock, addr = self._listener.accept()
            except (BlockingIOError, InterruptedError):
                return
            except OSError as exc:
                self._accept_failed(exc)
                return
            with self._stats_lock:
                self._stats.connections += 1
            if len(self._clients) >= self.max_clients:
                self._evict_one()
            if len(self._clients) >= self.max_clients:
                with self._stats_lock:
                    self._stats.refused_full += 1
                now = time.monotonic()
                if now - self._last_full_log >= 10:
                    self._last_full_log = now
                    logger.warning(
                        "SoupBinTCP: %d clients already, connection from %s:%d closed",
                        len(self._clients),
                        *addr[:2],
                    )
                sock.close()
                continue
            sock.setblocking(False)
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            core = SoupServerCore(
                heartbeat_interval=self.heartbeat_interval,
                timeout=self.timeout,
                max_output=self.max_output,
                login_timeout=self.login_timeout,
            )
            core.connected(time.monotonic())
            client = _Client(sock, (addr[0], addr[1]), core)
            self._clients[sock.fileno()] = client
            self._selector.register(sock, selectors.EVENT_READ, client)

    def _accept_failed(self, exc: OSError) -> None:
        """``accept()`` failed (out of descriptors, say): stop accepting for a while (the
        pending connection stays in the backlog) and log once per 10 s with a count."""
        self._accept_failures += 1
        now = time.monotonic()
        if now - self._last_accept_log >= 10:
            self._last_accept_log = now
            logger.warning(
                "SoupBinTCP accept failed: %s (%d failure(s) so far; accepting paused %.1f s)",
                exc,
                self._accept_failures,
                _ACCEPT_PAUSE,
            )
        with contextlib.suppress(KeyError, ValueError):
            self._selector.unregister(self._listener)
        self._accept_paused_until = now + _ACCEPT_PAUSE

    def _evict_one(self) -> None:
        """Full: drop the oldest connection that has not logged in (it costs its peer
        nothing to hold, a real client logs in at once)."""
        for client in self._clients.values():  # in the order they connected
            if not client.core.login_seen and client.closing is None and client.core.is_open:
                with self._stats_lock:
                    self._stats.refused_full += 1
                self._drop(client, "evicted: not logged in while the server was full")
                return

    def _read(self, client: _Client) -> None:
        try:
            data = client.sock.recv(65536)
        except (BlockingIOError, InterruptedError):
            return
        except OSError as exc:
            self._drop(client, f"connection error: {exc.strerror or exc}")
            return
        if not data:
            self._drop(client, client.reason or "client closed the connection")
            return
        if client.closing is None:
            client.core.receive(data, time.monotonic())

    def _write(self, client: _Client) -> None:
        core = client.core
        sock = client.sock
        try:
            while core.output_bytes:
                sent = sock.send(core.outgoing())
                core.consumed(sent)
                with self._stats_lock:
                    self._stats.bytes_sent += sent
        except (BlockingIOError, InterruptedError):
            pass
        except OSError as exc:
            self._drop(client, f"connection error: {exc.strerror or exc}")

    def _service(self, client: _Client, now: float) -> None:
        """Events, timers, messages from the store, writes, for one client."""
        core = client.core
        if core.is_open:
            core.handle_timer(now)
        for ev in core.events_received():
            if isinstance(ev, LoginRequest):
                with self._lock:
                    refused = self.session.login(core, ev, now)
                with self._stats_lock:
                    if refused is None:
                        self._stats.logins_accepted += 1
                    else:
                        rejected = self._stats.logins_rejected
                        rejected[refused] = rejected.get(refused, 0) + 1
                logger.info(
                    "SoupBinTCP client %s:%d %s", *client.addr,
                    f"rejected ({refused})" if refused else f"logged in at {core.next_seq_num}",
                )  # fmt: skip
            elif isinstance(ev, LogoutRequested):
                pass
        if client.sock.fileno() < 0:
            return
        # Fill and write until the socket is full (or a turn's share went): a client
        # reading fast is never held to one buffer per turn, nor starves the others.
        for _ in range(_TURN_FILLS):
            if not (core.is_open and core.logged_in):
                break
            with self._lock:
                added = self.session.fill(core, now)
            if not core.output_bytes:
                break
            self._write(client)
            if core.output_bytes or not added or client.sock.fileno() < 0:
                break
        if core.output_bytes and client.sock.fileno() >= 0:
            self._write(client)
        if client.sock.fileno() < 0:
            return
        if not core.is_open:
            reason = core.close_reason or "closed"
            if not reason.startswith("login rejected"):
                self._drop(client, reason)
            elif core.output_bytes:
                self._want_write(client, True)  # the Login Rejected still to go
            else:
                self._half_close(client, reason, now)
        elif core.ended and core.output_bytes == 0:
            self._half_close(client, "end of session sent", now)
        else:
            # Writable matters while output waits, or while the store has more for it.
            more = core.logged_in and core.next_seq_num < self.session.store.next_seq_num
            self._want_write(client, bool(core.output_bytes) or more)

    def _half_close(self, client: _Client, reason: str, now: float) -> None:
        """The last packet is written: shut our side and let the client close (closing
        with its heartbeats unread would reset the connection under what it has not
        read yet); it gets ``timeout`` seconds to read the rest."""
        if client.closing is None:
            client.closing = now
            client.reason = reason
            self._want_write(client, False)
            try:
                client.sock.shutdown(socket.SHUT_WR)
            except OSError:
                self._drop(client, reason)
        elif now - client.closing >= self._linger(reason):
            self._drop(client, reason)

    def _linger(self, reason: str) -> float:
        return min(self.timeout, REJECT_LINGER) if reason.startswith("login") else self.timeout

    def _want_write(self, client: _Client, writing: bool) -> None:
        if writing != client.writing:
            client.writing = writing
            mask = selectors.EVENT_READ | (selectors.EVENT_WRITE if writing else 0)
            self._selector.modify(client.sock, mask, client)

    def _drop(self, client: _Client, reason: str) -> None:
        fd = client.sock.fileno()
        if fd < 0:
            return
        self._clients.pop(fd, None)
        with contextlib.suppress(KeyError, ValueError):
            self._selector.unregister(client.sock)
        client.sock.close()
        level = logging.WARNING if reason.startswith("client not reading") else logging.INFO
        logger.log(level, "SoupBinTCP client %s:%d disconnected: %s", *client.addr, reason)
        with self._stats_lock:
            self._stats.count_closed(reason, client.core)
        client.core.close(reason)
