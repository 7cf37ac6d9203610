"""The blocking MoldUDP64 client: join the feed, recover from loss, hand messages to the user.

High-level use (recommended)::

    with MoldUDP64(("239.1.1.1", 30001), rerequest_server_addrs=[("10.0.0.1", 30002)]) as client:
        for msg in client.messages():          # Message(session, seq_num, data), in order, once
            handle(msg.data)

Low-level use, as the Rust ``moldudp`` crate::

    datagrams, requests = MoldUDP64(("239.1.1.1", 30001), ...).start()
    for datagram in datagrams:                 # live and retransmitted, in arrival order,
        packet = Packet(datagram.bytes())      # until the end of the session (or close())
        requests.try_send(RetransmissionRequest(packet.session_ident_raw, 1, 10))

Events other than messages (loss, session changes, end of session, a stale feed, a
server taken out of rotation, overruns) go to ``on_event`` in order with the messages,
are recorded (``lost_ranges``, ``messages_lost``, ``session``, ...), are logged at WARNING
when they mean loss, and in ``strict`` mode loss raises :class:`MessagesLostError`;
``events()`` yields all of them, messages in batches.

One receiver thread, never more: ``epoll`` over every socket (line A, optional line B,
the re-request socket) and a wake-up socket pair, driving
:class:`~moldudp64.receiver.ReceiverCore`. Line sockets are read with ``recvmmsg()`` (256
datagrams a call, through the C accelerator when it is built), so the thread takes the
GIL once per batch rather than once per datagram. The core's events go to the consumer
one batch per wake-up through a :class:`queue.SimpleQueue`. When the consumer falls more
than ``max_backlog`` messages behind, the thread stops reading, so the kernel's receive
buffer absorbs the burst; what the kernel then drops is counted (``SO_RXQ_OVFL``, and the
socket's drop counter in ``/proc/net/udp``) and reported as
:class:`~moldudp64.events.ConsumerOverrun`, and the core sees those datagrams as gaps that
it recovers from the re-request servers or reports as
:class:`~moldudp64.events.MessagesLost`. Memory stays bounded by ``max_backlog`` plus one
read batch. Re-request answers are always read before line data, so catching up never
starves the gap fills.

Pull mode (``receiver_thread=False``, what ``moldudp64 listen`` uses): no thread and no
queue; the consumer's own thread polls, reads and runs the core whenever it has used up
its events, so there is no hand-off between threads at all; the kernel's receive buffer
takes the bursts and what it drops is reported as above. :meth:`MoldUDP64.batches` hands
out whole event lists for consumers that write in bulk; ``on_datagram`` taps every
datagram received and request sent (``listen --capture``).
"""

from __future__ import annotations

import builtins
import contextlib
import logging
import math
import queue
import select
import socket
import struct
import threading
import time
from collections import deque
from collections.abc import Callable, Iterable, Iterator, Sequence
from itertools import chain
from types import TracebackType
from typing import Any

from .._client import (
    AB_REQUEST_DELAY,
    DEFAULT_MAX_BACKLOG,
    DROP_POLL_INTERVAL,
    HOT_STREAK,
    READ_BATCH,
    ClientBase,
    ClientOptions,
    ClientRecords,
    ClientStats,
    Datagram,
    EventHandler,
    LineSockets,
    batch_size,
)
from ..events import (
    Address,
    Event,
    Message,
    MessagesDelivered,
    Source,
)
from ..exceptions import ClientClosed, ConfigError, MessagesLostError, MoldUDP64Error
from ..net import (
    DEFAULT_RCVBUF,
    RXQ_OVFL,
    c_recv_batch,
    c_recv_batch_drops,
    enable_drop_counter,
    open_client_sockets,
    open_line_sockets,
    open_request_socket,
    read_kernel_drops,
    socket_inode,
)
from ..receiver import ReceiverCore
from ..wire import MAX_DATAGRAM, RetransmissionPacket

__all__ = [
    "AB_REQUEST_DELAY",
    "ClientOptions",
    "ClientRecords",
    "ClientStats",
    "Datagram",
    "DatagramHook",
    "DatagramStream",
    "EventHandler",
    "MessagesLostError",
    "MoldUDP64",
    "RequestSender",
    "open_line_sockets",
    "open_request_socket",
    "read_kernel_drops",
]

logger = logging.getLogger(__name__)

#: ``on_datagram(data, source, addr, sent)``: every datagram received or request sent.
DatagramHook = Callable[[bytes, Source, "Address | None", bool], None]

#: Bound on low-level requests waiting for the receiver thread.
MAX_PENDING_REQUESTS = 1024

_U32 = struct.Struct("=I")
_RECV_SIZE = MAX_DATAGRAM + 1  # one more byte than legal, so an oversized datagram is seen


class _Poller:
    """Readiness of a fixed set of file descriptors: ``epoll`` on Linux, ``poll`` elsewhere."""

    def __init__(self, fds: list[int]) -> None:
        self._epoll = select.epoll() if hasattr(select, "epoll") else None
        self._poll = None if self._epoll is not None else select.poll()
        for fd in fds:
            if self._epoll is not None:
                self._epoll.register(fd, select.EPOLLIN)
            else:
                assert self._poll is not None
                self._poll.register(fd, select.POLLIN)

    def poll(self, timeout: float | None) -> list[int]:
        """File descriptors ready to read within ``timeout`` seconds (None: wait)."""
        if self._epoll is not None:
            return [fd for fd, _ in self._epoll.poll(-1 if timeout is None else timeout)]
        assert self._poll is not None
        ms = None if timeout is None else math.ceil(timeout * 1000)
        return [fd for fd, _ in self._poll.poll(ms)]

    def close(self) -> None:
        """Release the epoll descriptor."""
        if self._epoll is not None:
            self._epoll.close()


class MoldUDP64(ClientBase):
    """Blocking MoldUDP64 client over :class:`~moldudp64.receiver.ReceiverCore`.

    The first six settings keep the names (and order) of the client in the Rust
    ``moldudp`` crate, so code written against that crate reads the same:

    - ``multicast_addr``: ``(group, port)`` or ``"group:port"`` of line A; the group must
      be IPv4 multicast.
    - ``interface_addr``: local address of the interface to join on; ``"0.0.0.0"`` lets
      the kernel choose. It must be an address of this host, or the name of one of its
      interfaces (``"eth0"``).
    - ``rerequest_server_addrs``: ``[(host, port), ...]`` re-request servers; requests
      are spread over them and answers come back to a socket of their own.
    - ``expected_session_ident``: only this session is accepted (None: the first seen).
    - ``expected_seq_num``: first sequence number wanted (None: 1).
    - ``max_rerequest_retries``: consecutive failures before a server is taken out of
      rotation (:class:`~moldudp64.events.ServerDisabled`).

    And what a feed handler needs: ``line_b_addr`` (second line for A/B arbitration),
    ``rcvbuf`` (kernel receive buffer per socket, default 8 MiB, forced past
    ``net.core.rmem_max`` when root), ``reuse`` (SO_REUSEADDR, so several processes can
    listen to one group), ``request_timeout`` and ``stale_after`` (seconds, handed to the
    core), ``max_backlog`` (messages queued for a slow consumer before the receiver
    thread stops reading), ``follow_session_changes``, ``stop_at_end_of_session``
    (``messages()`` ends after :class:`~moldudp64.events.SessionEnded`), ``on_event``
    (called in the consumer's thread with every event that is not a message),
    ``strict`` (``messages()`` raises :class:`MessagesLostError` on loss),
    ``request_delay`` (seconds a new gap waits before it is requested; default 0, or
    ``AB_REQUEST_DELAY``, 5 ms, with a B line: the other line fills most gaps by
    itself, so only what both lines miss is requested) and ``receiver_options`` (any
    other :class:`~moldudp64.receiver.ReceiverConfig` field).

    ``receiver_thread=False`` selects pull mode: no receiver thread and no queue; the
    consumer's own thread reads the sockets (``epoll`` + ``recvmmsg()``), runs the core
    and its timers whenever it has used up the events it has. That takes the fewest CPU
    cycles and no thread hand-offs, which is what keeps pace with a full-blast feed, but
    nothing is read (and no re-request timer runs) while nobody iterates: the kernel's
    receive buffer (``rcvbuf``) must absorb what comes in between, and what it drops is
    reported as :class:`~moldudp64.events.ConsumerOverrun`. ``max_backlog`` does not
    apply there. ``on_datagram(data, source, addr, sent)`` is called (in the thread that
    reads) with every datagram received (``sent`` False) and every request sent
    (``sent`` True, ``addr`` the server): a tap for captures. With it, line sockets are
    read with ``recvmsg()`` so the sender's address is known. ``coalesce`` (pull mode,
    seconds, default 0): how long to let datagrams gather once a socket is readable
    and the last read did not fill a batch; fewer, larger reads (less CPU per datagram)
    for that much latency.

    Every value is checked in the constructor (:class:`~moldudp64.exceptions.ConfigError`);
    sockets open on :meth:`open` / ``with`` / :meth:`start`, failing with
    :class:`~moldudp64.exceptions.SocketError`. Per-packet failures are counted
    (:attr:`stats`) and never stop the client. One consumer at a time.
    """

    _log = logger

    def __init__(
        self,
        multicast_addr: Address | str,
        interface_addr: str = "0.0.0.0",
        rerequest_server_addrs: Iterable[Address | str] = (),
        expected_session_ident: str | None = None,
        expected_seq_num: int | None = None,
        max_rerequest_retries: int = 100,
        *,
        line_b_addr: Address | str | None = None,
        rcvbuf: int | None = DEFAULT_RCVBUF,
        reuse: bool = True,
        request_timeout: float | None = None,
        stale_after: float | None = None,
        max_backlog: int = DEFAULT_MAX_BACKLOG,
        follow_session_changes: bool = True,
        stop_at_end_of_session: bool = True,
        on_event: EventHandler | None = None,
        strict: bool = False,
        receiver_options: dict[str, Any] | None = None,
        request_delay: float | None = None,
        receiver_thread: bool = True,
        on_datagram: DatagramHook | None = None,
        coalesce: float = 0.0,
    ) -> None:
        # the blocking client's own settings, read by _setup (run by ClientBase.__init__)
        self._receiver_thread = receiver_thread
        self._on_datagram = on_datagram
        self._coalesce_setting = coalesce
        super().__init__(
            multicast_addr,
            interface_addr,
            rerequest_server_addrs,
            expected_session_ident,
            expected_seq_num,
            max_rerequest_retries,
            line_b_addr=line_b_addr,
            rcvbuf=rcvbuf,
            reuse=reuse,
            request_timeout=request_timeout,
            stale_after=stale_after,
            max_backlog=max_backlog,
            follow_session_changes=follow_session_changes,
            stop_at_end_of_session=stop_at_end_of_session,
            on_event=on_event,
            strict=strict,
            receiver_options=receiver_options,
            request_delay=request_delay,
        )

    def _setup(self) -> None:
        receiver_thread = self._receiver_thread
        on_datagram = self._on_datagram
        coalesce = self._coalesce_setting
        self._inputs: list[tuple[socket.socket, Source]] = []
        self._rereq: socket.socket | None = None
        self._wake_r: socket.socket | None = None
        self._wake_w: socket.socket | None = None
        self._thread: threading.Thread | None = None
        # pull mode (receiver_thread=False): the consumer's thread reads the sockets
        self._pull = not receiver_thread
        self._tap = on_datagram
        if (
            not isinstance(coalesce, int | float)
            or isinstance(coalesce, bool)
            or not (0.0 <= coalesce <= 0.1)
        ):
            raise ConfigError(f"coalesce {coalesce!r} must be 0..0.1 seconds")
        self._coalesce = float(coalesce) if self._pull else 0.0  # pull mode only
        self._turn_lock = threading.RLock()  # pull mode: one reader at a time
        self._poller: _Poller | None = None
        #: every socket, polled without waiting before the core's timer runs
        self._waiting: _Poller | None = None
        self._by_fd: dict[int, tuple[socket.socket, Source] | None] = {}
        self._hot: list[int] = []
        self._streak = 0
        self._next_drop_poll = 0.0
        # (weight, events) batches, or None to wake the consumer on close / failure.
        self._queue: queue.SimpleQueue[tuple[int, list[Event]] | None] = queue.SimpleQueue()
        self._requests: deque[RetransmissionPacket] = deque()
        self._closed = False
        self._error: BaseException | None = None
        self._state_lock = threading.Lock()
        self._inode_of: dict[int, int] = {}  # socket inode by file descriptor

    # ---------------------------------------------------------------- opening

    def open(self) -> MoldUDP64:
        """Open the sockets, join the group(s) and start the receiver thread (high level)."""
        self._open_sockets(raw=False)
        return self

    def __enter__(self) -> MoldUDP64:
        if not self._started:
            self.open()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def start(self) -> tuple[DatagramStream, RequestSender]:
        """Open the sockets in low-level mode: every valid datagram, in arrival order.

        Returns ``(datagrams, requests)``: iterate ``datagrams`` (or call ``recv``) for
        :class:`~moldudp64.sync.Datagram` objects, live and retransmitted interleaved; give
        ``requests`` your own :class:`~moldudp64.wire.RetransmissionRequest`. The core
        still detects gaps and re-requests them. Iterating ``datagrams`` ends after the
        end of session (see :class:`~moldudp64.sync.DatagramStream`); close with :meth:`close`.
        """
        self._open_sockets(raw=True)
        return DatagramStream(self), RequestSender(self)

    def start_with_sockets(
        self,
        downstream: socket.socket | Sequence[socket.socket],
        rereq: socket.socket,
        servers: Sequence[Address] | None = None,
    ) -> tuple[DatagramStream, RequestSender]:
        """:meth:`start` over sockets the caller opened (the test seam; unicast works).

        ``downstream`` is line A's socket or ``[line_a, line_b]``; ``rereq`` sends the
        requests and receives the answers; ``servers`` overrides the configured servers.
        The client owns the sockets from then on and closes them.
        """
        self._launch(*self._given_sockets(downstream, rereq, servers), raw=True)
        return DatagramStream(self), RequestSender(self)

    def open_with_sockets(
        self,
        downstream: socket.socket | Sequence[socket.socket],
        rereq: socket.socket,
        servers: Sequence[Address] | None = None,
    ) -> MoldUDP64:
        """:meth:`open` (high level) over sockets the caller opened (see start_with_sockets)."""
        self._launch(*self._given_sockets(downstream, rereq, servers), raw=False)
        return self

    def _open_sockets(self, *, raw: bool) -> None:
        self._check_unopened()
        self._launch(*open_client_sockets(self.options), None, raw=raw)

    def _launch(
        self, lines: LineSockets, rereq: socket.socket, servers: Sequence[Address] | None, raw: bool
    ) -> None:
        self._start_core(raw, servers, rereq.getsockname())
        self._inputs = [*lines, (rereq, Source.RETRANSMISSION)]
        self._rereq = rereq
        for sock, _ in self._inputs:
            enable_drop_counter(sock)
        self._inode_of = {sock.fileno(): socket_inode(sock) for sock, _ in self._inputs}
        inodes = list(self._inode_of.values())
        # drops before we started are not ours to report
        self._backlog.start_drops(inodes, read_kernel_drops(inodes))
        self._wake_r, self._wake_w = socket.socketpair()
        self._wake_r.setblocking(False)
        self._wake_w.setblocking(False)
        self._started = True
        if self._pull:
            wake_fd = self._wake_r.fileno()
            self._by_fd = {wake_fd: None}
            for sock, source in self._inputs:
                self._by_fd[sock.fileno()] = (sock, source)
            self._poller = self._waiting = _Poller(list(self._by_fd))
            self._next_drop_poll = time.monotonic() + DROP_POLL_INTERVAL
            return
        self._thread = threading.Thread(target=self._run, name="moldudp64-receiver", daemon=True)
        self._thread.start()

    # ---------------------------------------------------------------- closing

    def close(self) -> None:
        """Stop the receiver thread, close every socket, end any iteration in progress.

        Safe from any thread, more than once. A consumer blocked in ``messages()``,
        ``events()`` or ``recv()`` returns (iteration ends; ``recv`` raises
        :class:`~moldudp64.exceptions.ClientClosed`). Batches not yet read are discarded.
        """
        with self._state_lock:
            if self._closed:
                return
            self._closing = True
            self._wake()
            self._queue.put(None)
            thread = self._thread
            if thread is not None and thread is not threading.current_thread():
                thread.join()
            with self._turn_lock:  # pull mode: wait for a consumer inside a read to leave
                self._closed = True
                if self._poller is not None:
                    self._poller.close()
            for sock, _ in self._inputs:
                sock.close()
            for s in (self._wake_r, self._wake_w):
                if s is not None:
                    s.close()
            while not self._queue.empty():  # drop unread batches
                self._queue.get_nowait()
            self._queue.put(None)

    def _wake(self) -> None:
        w = self._wake_w
        if w is not None:
            with contextlib.suppress(OSError):  # full (already woken) or closed
                w.send(b"\0")

    # ---------------------------------------------------------------- receiver thread

    def _run(self) -> None:
        try:
            self._loop()
        except BaseException as exc:  # report to the consumer instead of dying silently
            logger.exception("moldudp64 receiver thread failed")
            self._error = exc
        finally:
            self._queue.put(None)

    def _loop(self) -> None:
        assert self._wake_r is not None
        wake_fd = self._wake_r.fileno()
        by_fd: dict[int, tuple[socket.socket, Source] | None] = {wake_fd: None}
        for sock, source in self._inputs:
            by_fd[sock.fileno()] = (sock, source)
        poller = _Poller(list(by_fd))
        idle = _Poller([wake_fd])
        self._by_fd = by_fd
        self._poller = self._waiting = poller
        self._next_drop_poll = time.monotonic() + DROP_POLL_INTERVAL
        try:
            self._serve(self._core, idle)
        finally:
            self._poller = self._waiting = None
            poller.close()
            idle.close()

    def _serve(self, core: ReceiverCore, idle: _Poller) -> None:
        """Thread mode: loop turns, their events queued for the consumer, until closed."""
        backlog = self._backlog
        put = self._queue.put
        while not self._closing:
            if backlog.over():
                # The consumer is behind: stop reading so the kernel buffer takes the
                # burst, and wait for the consumer (or close) to wake us.
                backlog.pause()
                while not self._closing and not backlog.low():
                    if idle.poll(None):
                        self._clear_wakeups()
                backlog.resume()
                self._poll_drops()
                continue
            events = self._turn(core, None)
            if events:
                size = batch_size(events)
                backlog.add(size)
                put((size, events))

    def _turn(self, core: ReceiverCore, deadline: float | None) -> list[Event]:
        """One turn of the receiver loop, in either mode; the events it produced.

        Wait for a socket (at most until the core's timer or ``deadline``), read every
        ready one, answers first; poll the kernel's drop counters now and then; run the
        core's timer when due and send its requests (:meth:`_send_requests`: only after
        every socket was read once more).
        """
        monotonic = time.monotonic
        if self._hot and self._streak < HOT_STREAK:
            # The last read filled a whole batch: more is surely waiting. Read again
            # without polling; every system call lets a busy consumer take the GIL
            # for up to a switch interval, so this doubles what we take per turn.
            # Answers first, always: starving them while catching up would hold
            # every live packet behind an open gap (and feed back into more lag).
            assert self._rereq is not None
            ready = [self._rereq.fileno(), *self._hot]
            self._streak += 1
        else:
            timer = core.get_timer()
            now = monotonic()
            wait = None if timer is None else max(0.0, timer - now)
            if deadline is not None:
                left = max(0.0, deadline - now)
                wait = left if wait is None or left < wait else wait
            assert self._poller is not None
            ready = self._poller.poll(wait)
            self._streak = 0
            if len(ready) > 1:
                ready.sort(key=self._answers_first)
            if ready and self._coalesce:
                time.sleep(self._coalesce)  # let a batch gather: fewer wake-ups per datagram
        now = monotonic()
        self._hot = self._read_ready(ready, core, now)
        if now >= self._next_drop_poll:
            self._next_drop_poll = now + DROP_POLL_INTERVAL
            self._poll_drops()
        return self._collect(core, now)  # runs the core's timer when due

    def _answers_first(self, fd: int) -> int:
        """Sort key: the re-request socket's answers are read before the lines' data."""
        return 0 if self._rereq is not None and fd == self._rereq.fileno() else 1

    def _clear_wakeups(self) -> None:
        assert self._wake_r is not None
        try:
            while self._wake_r.recv(4096):
                pass
        except OSError:
            pass

    def _take_requests(self, core: ReceiverCore, now: float) -> None:
        requests = self._requests
        while requests:
            req = requests.popleft()
            try:
                core.request(req, now)
            except MoldUDP64Error as exc:
                self._n_internal += 1
                logger.warning("request %r refused: %s", req, exc)

    def _read_batch(
        self, sock: socket.socket, source: Source, core: ReceiverCore, now: float
    ) -> int:
        """A line socket, through one ``recvmmsg()`` (C accelerator): one GIL release per
        batch, not one per datagram, which keeps the consumer thread from stalling us."""
        receive = core.receive_datagram
        fd = sock.fileno()
        try:
            if c_recv_batch_drops is not None:
                datas, drops = c_recv_batch_drops(fd, READ_BATCH, 65536)
                if drops > 0:  # SO_RXQ_OVFL: the kernel's drop count so far
                    self._backlog.count_drops(self._inode_of[fd], drops)
            else:
                datas = c_recv_batch(fd, READ_BATCH, 65536)  # type: ignore[misc]
        except OSError as exc:
            self._n_recv_errors += 1
            logger.debug("receive error on %s: %s", source.name, exc)
            return 0
        n = len(datas)
        self._n_datagrams += n
        take = getattr(core, "receive_in_order", None)
        i = 0
        while i < n:
            if take is not None:
                # the in-order run in one call to the core; the first datagram that is
                # not in order goes through receive_datagram below
                try:
                    i = take(datas, i, source, now)
                except Exception:  # a core bug must not stop the client
                    self._n_internal += 1
                    logger.exception("receiver core failed on a batch from %s", source.name)
                    take = None
                if i >= n:
                    break
            try:
                receive(datas[i], source, now, None)
            except Exception:  # a core bug must not stop the client
                self._n_internal += 1
                logger.exception("receiver core failed on a datagram from %s", source.name)
            i += 1
        return n

    def _read(self, sock: socket.socket, source: Source, core: ReceiverCore, now: float) -> int:
        receive = core.receive_datagram
        recvmsg = sock.recvmsg
        hook = self._tap
        fd = sock.fileno()
        n = 0
        try:
            while n < READ_BATCH:
                data, anc, _flags, addr = recvmsg(_RECV_SIZE, 64)
                n += 1
                if anc:
                    self._note_drops(fd, anc)
                if hook is not None:
                    self._call_tap(data, source, (str(addr[0]), int(addr[1])), False)
                try:
                    receive(data, source, now, addr)
                except Exception:  # a core bug must not stop the client
                    self._n_internal += 1
                    logger.exception("receiver core failed on a datagram from %s", addr)
        except BlockingIOError:
            pass
        except OSError as exc:
            # e.g. ECONNREFUSED on the request socket after an ICMP port unreachable
            self._n_recv_errors += 1
            logger.debug("receive error on %s: %s", source.name, exc)
        self._n_datagrams += n
        return n

    def _note_drops(self, fd: int, anc: list[tuple[int, int, builtins.bytes]]) -> None:
        for level, kind, payload in anc:
            if level == socket.SOL_SOCKET and kind == RXQ_OVFL and len(payload) >= 4:
                self._backlog.count_drops(self._inode_of[fd], _U32.unpack_from(payload)[0])

    def _poll_drops(self) -> None:
        self._backlog.poll_drops(read_kernel_drops(self._inode_of.values()))

    def _read_ready(self, ready: list[int], core: ReceiverCore, now: float) -> list[int]:
        """Read each ready descriptor; return the line sockets whose read filled a batch.

        The re-request socket is read with ``recvmsg()`` (:meth:`_read`), so the core sees
        every answer's true source address and drops what no configured server sent; line
        sockets go through ``recvmmsg()`` (:meth:`_read_batch`, no addresses needed).
        """
        hot: list[int] = []
        by_fd = self._by_fd
        read = self._read
        read_batch = self._read_batch if c_recv_batch is not None and self._tap is None else read
        for fd in ready:
            entry = by_fd[fd]
            if entry is None:
                self._clear_wakeups()
                self._take_requests(core, now)
            elif entry[1] is Source.RETRANSMISSION:
                read(entry[0], entry[1], core, now)
            elif read_batch(entry[0], entry[1], core, now) >= READ_BATCH:
                hot.append(fd)
        return hot

    def _read_waiting(self, core: ReceiverCore, now: float) -> None:
        """Read what already waits on every socket, without blocking: a batch from each
        ready socket, again while some read filled a whole batch (``HOT_STREAK`` rounds
        at most, so a sustained flood cannot hold the timer off for ever)."""
        poller = self._waiting
        if poller is None:
            return
        for _ in range(HOT_STREAK):
            ready = poller.poll(0)
            if not ready:
                return
            if len(ready) > 1:
                ready.sort(key=self._answers_first)
            if not self._read_ready(ready, core, now):
                return

    def _send_requests(self, core: ReceiverCore, now: float) -> None:
        """Run the core's timer if due, then send the requests it wants sent.

        Requests only come out of the timer (a gap waits ``request_delay`` first), and
        before it runs every socket is read once more without waiting: a gap that line
        B's copy, or an answer, already waiting in the kernel would fill is never
        requested just because that socket was not read yet in this turn.
        """
        timer = core.get_timer()
        if timer is not None and timer <= now:
            self._read_waiting(core, now)
            core.handle_timer(now)
        rereq = self._rereq
        assert rereq is not None
        hook = self._tap
        for data, addr in core.datagrams_to_send(now):
            try:
                rereq.sendto(data, addr)
                self._n_sent += 1
            except OSError as exc:
                self._n_send_errors += 1
                logger.debug("cannot send request to %s: %s", addr, exc)
                continue
            if hook is not None:
                self._call_tap(bytes(data), Source.RETRANSMISSION, addr, True)

    def _call_tap(
        self, data: builtins.bytes, source: Source, addr: Address | None, sent: bool
    ) -> None:
        assert self._tap is not None
        try:
            self._tap(data, source, addr, sent)
        except Exception:  # a tap's failure must not stop the client
            self._n_internal += 1
            logger.exception("on_datagram failed")

    def _collect(self, core: ReceiverCore, now: float) -> list[Event]:
        """Send what the core wants sent; the events it produced (overruns first)."""
        self._send_requests(core, now)
        events: list[Event] = core.events_received()
        overrun = self._backlog.take_overrun()
        if overrun is not None:
            events.insert(0, overrun)
        return events

    # ---------------------------------------------------------------- consumer side

    def _next_batch(self, timeout: float | None) -> list[Event] | None:
        """The next batch of events, None once closed; TimeoutError after ``timeout``."""
        if self._closing:
            return None
        if self._pull:
            return self._pull_batch(timeout)
        try:
            item = self._queue.get(timeout=timeout)
        except queue.Empty:
            raise TimeoutError(f"nothing received in {timeout} s") from None
        if item is None or self._closing:
            self._queue.put(None)  # keep later calls from blocking
            if self._error is not None and not self._closing:
                raise MoldUDP64Error(f"receiver thread failed: {self._error!r}") from self._error
            return None
        size, batch = item
        if self._backlog.take(size):
            self._wake()  # the paused receiver thread may read again
        return batch

    def _pull_batch(self, timeout: float | None) -> list[Event] | None:
        """Pull mode: read the sockets in this thread until the core has events."""
        with self._turn_lock:
            monotonic = time.monotonic
            deadline = None if timeout is None else monotonic() + timeout
            core = self._core
            while not self._closing:
                events = self._turn(core, deadline)
                if events:
                    return events
                if deadline is not None and monotonic() >= deadline:
                    raise TimeoutError(f"nothing received in {timeout} s")
            return None

    def _ensure_started(self, *, raw: bool) -> None:
        if not self._started:
            if self._closing:
                raise ClientClosed("the client is closed")
            if raw:
                raise MoldUDP64Error("call start() first")
            self.open()
        elif self._raw != raw:
            which = "start()" if self._raw else "open()"
            raise MoldUDP64Error(f"the client was started with {which}; that mode only")

    def messages(self, timeout: float | None = None) -> Iterator[Message]:
        """Every message, in order, exactly once, as :class:`~moldudp64.events.Message`.

        Other events go to ``on_event`` (if given) in order with the messages, and are
        recorded (:attr:`lost_ranges`, :attr:`messages_lost`, :attr:`session`, ...);
        loss is logged at WARNING, and in ``strict`` mode raises
        :class:`MessagesLostError`. Iteration ends after the end of the session
        (unless ``stop_at_end_of_session=False``; call again to follow the next
        session) or when the client is closed, from any thread. ``timeout``: seconds
        to wait for the next event before raising :class:`TimeoutError`. Breaking out
        and calling again resumes with the next message. Opens the client if needed.
        """
        self._ensure_started(raw=False)
        return chain.from_iterable(self._cursor.batches(lambda: self._next_batch(timeout)))

    def events(self, timeout: float | None = None) -> Iterator[Event]:
        """Every event, batches of messages included (:class:`MessagesDelivered`).

        The fastest way to consume: one event per batch. Events are recorded as for
        :meth:`messages` but not passed to ``on_event``, and ``strict`` does not apply.
        Ends after :class:`SessionEnded` (which it yields) unless
        ``stop_at_end_of_session=False``, or on close; ``timeout`` as for :meth:`messages`.
        After breaking out of :meth:`messages` mid-batch, the rest of that batch comes
        first, as one :class:`MessagesDelivered`.
        """
        self._ensure_started(raw=False)
        return self._events(timeout)

    def _events(self, timeout: float | None) -> Iterator[Event]:
        record = self._policy.record
        cursor = self._cursor
        while True:
            ev = cursor.next_any()
            if ev is not None:
                stop = record(ev)
                yield ev
                if stop:
                    return
            elif (got := self._next_batch(timeout)) is not None:
                cursor.load(got)
            else:
                return

    def batches(self, timeout: float | None = None) -> Iterator[list[Event]]:
        """Every event as :meth:`events` gives them, a list at a time, as they came in.

        For consumers that write whole batches (``moldudp64 listen``): no per-event
        generator step. Events are recorded as for :meth:`events`; a list is consumed once
        yielded. Ends after the list holding :class:`SessionEnded` (its last event) unless
        ``stop_at_end_of_session=False``, or on close; ``timeout`` as for :meth:`messages`.
        """
        self._ensure_started(raw=False)
        return self._batches(timeout)

    def _batches(self, timeout: float | None) -> Iterator[list[Event]]:
        record = self._policy.record
        cursor = self._cursor
        rest = cursor.take_current()
        if rest is not None:
            yield [rest]
        while True:
            batch = cursor.batch
            pos = cursor.pos
            n = len(batch)
            if pos >= n:
                got = self._next_batch(timeout)
                if got is None:
                    return
                cursor.load(got)
                continue
            end = n
            stop = False
            for i in range(pos, n):
                ev = batch[i]
                if type(ev) is not MessagesDelivered and record(ev):
                    end = i + 1
                    stop = True
                    break
            cursor.pos = end
            yield batch if pos == 0 and end == n else batch[pos:end]
            if stop:
                return

    def _datagram(self, timeout: float | None, stop_at_end: bool = False) -> Datagram | None:
        """Low level: the next datagram; other events go to the policy. With
        ``stop_at_end``, None once the session ended (its end-of-session datagram was
        handed out before; ``stop_at_end_of_session`` must be on)."""
        self._ensure_started(raw=True)
        while (got := self._cursor.take_datagram(stop_at_end)) is False:
            if (batch := self._next_batch(timeout)) is None:
                raise ClientClosed("the client is closed")
            self._cursor.load(batch)
        return None if got is True else got

    def _request(self, req: RetransmissionPacket, block: bool, timeout: float | None) -> bool:
        self._check_request(req)
        if not self._started:
            raise MoldUDP64Error("call start() first")
        if not self._core.config.rerequest_server_addrs:
            raise ConfigError("no re-request server configured to send the request to")
        deadline = None if timeout is None else time.monotonic() + timeout
        delay = 0.0005
        while len(self._requests) >= MAX_PENDING_REQUESTS:
            if not block:
                return False
            if self._closing:
                raise ClientClosed("the client is closed")
            if deadline is not None and time.monotonic() >= deadline:
                return False
            time.sleep(delay)  # the receiver thread drains the queue on every wake-up
            delay = min(delay * 2, 0.05)
        self._requests.append(req)
        if self._pull and self._turn_lock.acquire(blocking=False):
            try:  # nobody is reading: send it now rather than at the next read
                if not self._closed:
                    now = time.monotonic()
                    self._take_requests(self._core, now)
                    self._send_requests(self._core, now)
            finally:
                self._turn_lock.release()
        else:
            self._wake()
        return True


class DatagramStream:
    """Low-level output of :meth:`MoldUDP64.start`: datagrams in arrival order.

    Iterate it or call :meth:`recv`. Iteration ends once the session has ended (after
    its end-of-session datagram, and the answers to gaps still open then, were yielded:
    the core's :class:`~moldudp64.events.SessionEnded`; unless
    ``stop_at_end_of_session=False``; iterating again goes on with what comes next) or
    when the client is closed, from any thread. Events that are not datagrams (loss,
    session changes, ...) go to the client's ``on_event`` and its records, as in
    high-level use.
    """

    def __init__(self, client: MoldUDP64) -> None:
        self.client = client

    def recv(self, timeout: float | None = None) -> Datagram:
        """The next datagram; TimeoutError after ``timeout`` s, ClientClosed once closed."""
        got = self.client._datagram(timeout)
        assert got is not None
        return got

    def __iter__(self) -> Iterator[Datagram]:
        while True:
            try:
                got = self.client._datagram(None, stop_at_end=True)
            except ClientClosed:
                return
            if got is None:
                return
            yield got


class RequestSender:
    """Low-level request channel of :meth:`MoldUDP64.start`.

    Requests go to the core, which sends them to a re-request server (spread over the
    servers, retried on timeout) and merges the answers into the datagram stream.
    """

    def __init__(self, client: MoldUDP64) -> None:
        self.client = client

    def send(self, request: RetransmissionPacket, timeout: float | None = None) -> None:
        """Queue ``request``, waiting while 1024 others wait; TimeoutError after ``timeout``."""
        if not self.client._request(request, True, timeout):
            raise TimeoutError("request queue still full")

    def try_send(self, request: RetransmissionPacket) -> bool:
        """Queue ``request`` if there is room; False when the queue is full."""
        return self.client._request(request, False, None)
