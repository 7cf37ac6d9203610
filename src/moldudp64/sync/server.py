"""Blocking publisher and re-request server over the protocol cores.

:class:`RerequestServer` answers request packets on a UDP port from a message store, in
one selector thread. :class:`Publisher` sends a session to a multicast group (TTL 1 and
multicast loopback on by default), drives heartbeats and end of session from a timer
thread, and owns a :class:`RerequestServer` when given ``rerequest_bind``::

    with Publisher("SESSION001", ("239.1.1.1", 30001), rerequest_bind=("0.0.0.0", 30002)) as pub:
        pub.run(messages, rate=100_000, progress=print)   # ends the session at the end

Every socket error at start-up is a :class:`~moldudp64.exceptions.SocketError`; errors
while running are counted (``send_errors``), never raised into a background thread.
"""

from __future__ import annotations

import contextlib
import logging
import math
import selectors
import socket
import threading
import time
from collections.abc import Callable, Iterable
from types import TracebackType

from ..events import Address
from ..exceptions import ConfigError
from ..faults import FaultInjector
from ..net import open_multicast_sender, open_unicast_socket
from ..publisher import Pacer, PublisherFront, PublisherOptions, PublisherStats, RunResult
from ..rerequest import (
    DEFAULT_RATE_LIMIT,
    REQUEST_READ_SIZE,
    IPNetwork,
    PeerTable,
    RateLimit,
    RerequestServerCore,
    RerequestStats,
)
from ..store import MessageStore
from ..wire import DEFAULT_MAX_PAYLOAD, Buffer

__all__ = ["Publisher", "RerequestServer", "RunResult"]

logger = logging.getLogger(__name__)

_RECV_BATCH = 256
#: Seconds of reading and answering per round of the loop: the shared socket first, then
#: the adopted clients, longest adopted first; those not reached wait for the next round
#: (their requests stay queued in their own sockets), so a flood of adopted sources
#: cannot delay a client adopted before it by more than about this.
_ROUND_SECONDS = 0.02


class RerequestServer:
    """Answers MoldUDP64 request packets on ``bind`` from ``store`` (one background thread).

    ``start()`` (or ``with``) starts the thread; ``close()`` stops it and closes the
    socket. ``serve_forever()`` runs the loop in the calling thread instead. ``lock``,
    when given, is held around each answer: pass the lock of whatever appends to the
    store from another thread (:class:`Publisher` does this itself). ``faults`` applies
    seeded drop / duplicate / reorder to the answers.
    """

    def __init__(
        self,
        session: str | bytes,
        store: MessageStore,
        bind: Address = ("127.0.0.1", 0),
        *,
        max_payload: int = DEFAULT_MAX_PAYLOAD,
        rate_limit: RateLimit | None = DEFAULT_RATE_LIMIT,
        allow: Iterable[IPNetwork | str] | None = None,
        faults: FaultInjector | None = None,
        rcvbuf: int | None = 4 * 1024 * 1024,
        lock: threading.Lock | threading.RLock | None = None,
        sock: socket.socket | None = None,
    ) -> None:
        self.core = RerequestServerCore(
            session, store, max_payload=max_payload, rate_limit=rate_limit, allow=allow
        )
        self.faults = faults
        self._lock = lock if lock is not None else threading.Lock()
        self._sock = sock if sock is not None else open_unicast_socket(bind, rcvbuf=rcvbuf)
        self._sock.setblocking(False)
        # Lets a known client's own connected socket share the port (see _adopt_peer); a
        # second server on the port still fails to bind, as it does not set it.
        self._sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self._sel: selectors.BaseSelector | None = None
        self._peers: PeerTable[socket.socket] = PeerTable()
        self._wake_r, self._wake_w = socket.socketpair()
        self._wake_r.setblocking(False)
        self._closed = threading.Event()
        self._thread: threading.Thread | None = None
        self._send_errors = 0
        self._recv_errors = 0
        self._last_request_at: float | None = None

    @property
    def address(self) -> Address:
        """The ``(host, port)`` the server listens on."""
        host, port = self._sock.getsockname()[:2]
        return (str(host), int(port))

    @property
    def last_request_at(self) -> float | None:
        """``time.monotonic()`` when the last datagram was read, or None (none yet)."""
        return self._last_request_at

    @property
    def stats(self) -> RerequestStats:
        """The core's counts: answers, bytes, refusals by reason."""
        with self._lock:
            return self.core.stats

    @property
    def send_errors(self) -> int:
        """Answers the socket refused to send (buffer full, unreachable)."""
        return self._send_errors

    @property
    def closed(self) -> bool:
        """Whether :meth:`close` was called."""
        return self._closed.is_set()

    def start(self) -> RerequestServer:
        """Serve in a daemon thread; return self."""
        if self._closed.is_set():
            raise ConfigError("the re-request server is closed")
        if self._thread is None:
            self._thread = threading.Thread(
                target=self.serve_forever,
                name=f"moldudp64-rerequest-{self.address[1]}",
                daemon=True,
            )
            self._thread.start()
        return self

    def serve_forever(self) -> None:
        """Answer requests until :meth:`close` is called."""
        sel = self._sel = selectors.DefaultSelector()
        sel.register(self._sock, selectors.EVENT_READ, None)
        sel.register(self._wake_r, selectors.EVENT_READ, "wake")
        core = self.core
        try:
            while not self._closed.is_set():
                with self._lock:
                    timer = core.get_timer()
                timeout = None if timer is None else max(0.0, timer - time.monotonic())
                if self._peers:  # look again in a while to close idle ones
                    idle = self._peers.idle_after
                    timeout = idle if timeout is None else min(timeout, idle)
                ready = sel.select(timeout=timeout)
                read = False
                since = self._peers.since
                keys = sorted(
                    (key for key, _ in ready if key.data != "wake"),
                    key=lambda k: -math.inf if k.data is None else since(k.data),
                )
                round_end = time.monotonic() + _ROUND_SECONDS
                for key in keys:  # one batch from each ready socket, seniors first
                    self._read_batch(key.fileobj, key.data)  # type: ignore[arg-type]
                    read = True
                    if time.monotonic() > round_end:
                        break
                if not read and timer is not None:
                    with self._lock:
                        answers = core.answers_due(time.monotonic())
                    self._send_all(answers)
                self._close_idle_peers()
        finally:
            for peer in self._peers.addresses():
                self._drop_peer(peer)
            sel.close()
            self._flush_faults()

    def _read_batch(self, sock: socket.socket, peer: Address | None) -> None:
        """Read up to one batch from ``sock`` (the server's, or ``peer``'s own) and answer it."""
        batch: list[tuple[bytes, Address]] = []
        if peer is None:
            recvfrom = sock.recvfrom
            for _ in range(_RECV_BATCH):
                try:
                    data, addr = recvfrom(REQUEST_READ_SIZE)
                except (BlockingIOError, InterruptedError):
                    break
                except OSError as exc:  # e.g. an ICMP error reported on a later call
                    self._recv_errors += 1
                    logger.debug("re-request server recvfrom: %s", exc)
                    continue
                batch.append((data, addr))
        else:
            # recvfrom, not recv: a datagram from anyone may have landed here between the
            # socket's bind() and its connect(); it is answered as from whoever sent it.
            recvfrom = sock.recvfrom
            for _ in range(_RECV_BATCH):
                try:
                    batch.append(recvfrom(REQUEST_READ_SIZE))
                except (BlockingIOError, InterruptedError):
                    break
                except OSError as exc:  # the peer's port is closed (ICMP): forget it
                    logger.debug("re-request peer %s:%s: %s", peer[0], peer[1], exc)
                    self._drop_peer(peer)
                    break
            self._peers.touch(peer, time.monotonic())
        if batch:
            self._last_request_at = time.monotonic()
        with self._lock:
            answers = self.core.handle_requests(batch, time.monotonic())
        self._send_all(answers)

    def _send_all(self, answers: list[tuple[bytes, Address]]) -> None:
        faults = self.faults
        for answer, addr in answers:
            if faults is None:
                self._send(answer, addr)
            else:
                for out, to in faults.process_to(answer, addr):
                    self._send(out, to)
            if self._peers.answered(addr):
                self._adopt_peer(addr)

    def _adopt_peer(self, addr: Address) -> None:
        """Give a client that got an answer its own connected socket on the server's port.

        The kernel then queues that client's requests apart from everyone else's, so a
        flood that overflows the server's socket costs known clients nothing. When the
        table is full of clients active within ``idle_after`` seconds, none is dropped for
        a newcomer (which is served on the shared socket).
        """
        sel = self._sel
        if sel is None or self._closed.is_set():
            return
        self._close_idle_peers()
        if self._peers.full:
            return  # every adopted client is active: a flood cannot push one out
        if not self._peers.may_adopt(time.monotonic()):
            return  # a later answer adopts it
        sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        try:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            sock.bind(self._sock.getsockname())
            sock.connect(addr)
            sock.setblocking(False)
            sel.register(sock, selectors.EVENT_READ, addr)
        except (OSError, ValueError) as exc:  # no isolation for this one; still served
            logger.debug("no own socket for re-request peer %s:%s: %s", addr[0], addr[1], exc)
            sock.close()
            return
        self._peers.add(addr, sock, time.monotonic())

    def _drop_peer(self, addr: Address) -> None:
        sock = self._peers.pop(addr)
        if sock is not None:
            if self._sel is not None:
                with contextlib.suppress(KeyError, ValueError):
                    self._sel.unregister(sock)
            sock.close()

    def _close_idle_peers(self) -> None:
        if self._peers:
            for addr in self._peers.idle(time.monotonic()):
                self._drop_peer(addr)

    def _send(self, data: bytes, addr: Address) -> None:
        peer = self._peers.get(addr)
        try:
            if peer is not None:
                peer.send(data)
            else:
                self._sock.sendto(data, addr)
        except OSError as exc:
            self._send_errors += 1
            logger.debug("re-request answer to %s:%s not sent: %s", addr[0], addr[1], exc)

    def _flush_faults(self) -> None:
        if self.faults is not None:
            for out, to in self.faults.flush_to():
                self._send(out, to)

    def close(self) -> None:
        """Stop serving, wait for the thread, close the socket (idempotent)."""
        if self._closed.is_set():
            return
        self._closed.set()
        with contextlib.suppress(OSError):
            self._wake_w.send(b"x")
        if self._thread is not None and self._thread is not threading.current_thread():
            self._thread.join()
        self._sock.close()
        self._wake_r.close()
        self._wake_w.close()

    def __enter__(self) -> RerequestServer:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()


class Publisher(PublisherFront):
    """Publishes one MoldUDP64 session to ``group`` and, optionally, serves re-requests.

    ``group`` is ``(address, port)``: a multicast group (TTL ``ttl``, default 1;
    ``loopback`` lets listeners on this host receive), or with ``unicast=True`` any
    address (otherwise a unicast one is a :class:`ConfigError`, as on the command line).
    ``interface_addr`` picks the outgoing interface. With ``rerequest_bind`` a
    :class:`RerequestServer` answers from ``store`` (a :class:`MemoryStore` is made when
    none is given). Timing options are those of :class:`PublisherCore`. ``faults``
    applies seeded faults to the live packets, ``answer_faults`` to the answers.

    Publishing methods are thread-safe; a timer thread (started by :meth:`start`, ``with``
    or the first publish) sends heartbeats, timed flushes and end-of-session packets.
    :meth:`close` (or leaving ``with``) stops everything; it does not end the session
    (call :meth:`end_session` or let :meth:`run` do it).
    """

    _lock: threading.RLock
    rerequest_server: RerequestServer | None

    def _setup(self, options: PublisherOptions) -> None:
        self._lock = threading.RLock()
        self._wake = threading.Condition(self._lock)
        self._closed = False
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._sock = (
            options.sock
            if options.sock is not None
            else open_multicast_sender(
                options.interface_addr, ttl=options.ttl, loopback=options.loopback
            )
        )
        # A publisher waits for the kernel rather than drop its own packets.
        self._sock.setblocking(True)
        if options.rerequest_bind is not None:
            assert self.store is not None
            try:
                self.rerequest_server = RerequestServer(
                    options.session,
                    self.store,
                    options.rerequest_bind,
                    max_payload=options.max_payload,
                    rate_limit=options.rate_limit,
                    allow=options.allow,
                    faults=options.answer_faults,
                    lock=self._lock,
                )
            except BaseException:
                self._sock.close()
                raise

    @property
    def stats(self) -> PublisherStats:
        """Packets, messages, heartbeats, end-of-session packets and bytes sent."""
        with self._lock:
            return self.core.stats

    # -- life cycle ---------------------------------------------------------------------

    def start(self) -> Publisher:
        """Start the timer thread and the re-request server; return self (idempotent)."""
        with self._lock:
            if self._closed:
                raise ConfigError("the publisher is closed")
            if self._thread is None:
                self.core.start(time.monotonic())
                if self.rerequest_server is not None:
                    self.rerequest_server.start()
                self._thread = threading.Thread(
                    target=self._timer_loop, name="moldudp64-publisher-timer", daemon=True
                )
                self._thread.start()
        return self

    def close(self) -> None:
        """Stop the timer, the re-request server and any :meth:`run`; close sockets."""
        with self._lock:
            if self._closed:
                return
            self._closed = True
            self._stop.set()
            self._wake.notify_all()
        if self._thread is not None and self._thread is not threading.current_thread():
            self._thread.join()
        if self.rerequest_server is not None:
            self.rerequest_server.close()
        with self._lock:
            if self.faults is not None:
                for datagram in self.faults.flush():
                    self._sendto(datagram)
            self._sock.close()

    def stop(self) -> None:
        """Make a running :meth:`run` return soon (thread- and signal-handler-safe)."""
        self._stop.set()

    def __enter__(self) -> Publisher:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    # -- publishing ---------------------------------------------------------------------

    def publish(self, message: Buffer) -> int:
        """Publish one message; return its sequence number."""
        if self._thread is None:
            self.start()
        with self._lock:
            self._check_open()
            seq = self.core.publish(message, time.monotonic())
            self._send_due()
        return seq

    def publish_many(self, messages: Iterable[Buffer]) -> range:
        """Publish several messages, packed together; return their sequence numbers."""
        if self._thread is None:
            self.start()
        with self._lock:
            self._check_open()
            seqs = self.core.publish_many(messages, time.monotonic())
            self._send_due()
        return seqs

    def flush(self) -> None:
        """Send the partial packet now."""
        if self._thread is None:
            self.start()
        with self._lock:
            self._check_open()
            self.core.flush(time.monotonic())
            self._send_due()

    def end_session(self, *, wait: bool = True, timeout: float | None = None) -> bool:
        """Send pending messages, then end-of-session packets for the configured period.

        With ``wait`` block until that period is over (re-requests are served meanwhile);
        return whether it is.
        """
        if self._thread is None:
            self.start()
        with self._lock:
            self._check_open()
            self.core.end_session(time.monotonic())
            self._send_due()
        if not wait:
            return self.core.ended
        return self.wait_ended(timeout)

    def wait_ended(self, timeout: float | None = None) -> bool:
        """Block until the end-of-session period is over, or ``timeout``; return whether it is.

        Returns at once (with whether the period was over) when the publisher is closed,
        also when :meth:`close` comes from another thread while this waits.
        """
        try:
            self.start()
        except ConfigError:
            if self._closed:  # closed before or while we got here: nothing to wait for
                return self.core.ended
            raise
        deadline = None if timeout is None else time.monotonic() + timeout
        with self._lock:
            while not self.core.ended and not self._closed:
                left = None if deadline is None else deadline - time.monotonic()
                if left is not None and left <= 0:
                    break
                self._wake.wait(left)
            return self.core.ended

    def run(
        self,
        messages: Iterable[Buffer],
        *,
        rate: float | None = None,
        end_session: bool = True,
        progress: Callable[[int], None] | None = None,
        progress_interval: float = 0.5,
        batch_size: int = 512,
    ) -> RunResult:
        """Publish every message of ``messages``, paced at ``rate`` messages a second if given.

        Then, with ``end_session``, end the session and wait out its end-of-session period.
        ``progress(count)`` is called with the messages published so far at most every
        ``progress_interval`` seconds and once at the end. :meth:`stop` or :meth:`close`
        from another thread ends the run early (``stopped`` in the result).

        Unpaced, messages are taken ``batch_size`` at a time and packed together (fast for
        files and lists); for a source that produces slowly (a pipe), pass
        ``batch_size=1`` or call :meth:`publish` per message so nothing waits for a batch.
        When publishing fails (a message too large, an error from ``messages``), the session
        is still ended, with ``end_session``, before the error is raised.
        """
        pacer = Pacer(rate, batch_size, progress_interval)
        self.start()
        pacer.start(time.monotonic(), self.core.next_seq_num)
        stop = self._stop
        try:
            for message in messages:
                if stop.is_set():
                    break
                wait = pacer.add(message, time.monotonic)
                if wait is not None:
                    if not self._publish_batch(pacer.batch):
                        break
                    pacer.done()
                    if wait > 0 and stop.wait(wait):
                        break
                if progress is not None and pacer.progress_due(time.monotonic()):
                    progress(pacer.count)
            if pacer.batch and not stop.is_set() and self._publish_batch(pacer.batch):
                pacer.done()
            stopped = stop.is_set()
            if not stopped:
                with self._lock:
                    if not self._closed:
                        self.core.flush(time.monotonic())
                        self._send_due()
        except Exception:
            # A message too large, a source that fails: still end the session properly.
            if end_session:
                with contextlib.suppress(Exception):
                    self.end_session(wait=True)
            raise
        if progress is not None:
            progress(pacer.count)
        if end_session and not stopped:
            self.end_session(wait=True)
        return pacer.result(time.monotonic(), stop.is_set(), self.stats)

    # -- internals ----------------------------------------------------------------------

    def _publish_batch(self, batch: list[Buffer]) -> bool:
        """Publish a batch for :meth:`run`; False when the publisher was closed meanwhile."""
        with self._lock:
            if self._closed:
                return False
            self.core.publish_many(batch, time.monotonic())
            self._send_due()
        return True

    def _check_open(self) -> None:
        if self._closed:
            raise ConfigError("the publisher is closed")

    def _sendto(self, datagram: bytes) -> None:
        try:
            self._sock.sendto(datagram, self.group)
        except OSError as exc:
            self._send_errors += 1
            logger.debug("publisher send to %s:%s failed: %s", *self.group, exc)

    def _send_due(self) -> None:
        """Send what the core has queued (lock held); wake the timer thread."""
        datagrams = self.core.datagrams_to_send(time.monotonic())
        faults = self.faults
        for datagram in datagrams:
            if faults is None:
                self._sendto(datagram)
            else:
                for out in faults.process(datagram):
                    self._sendto(out)
        self._wake.notify_all()

    def _timer_loop(self) -> None:
        with self._lock:
            while not self._closed:
                timer = self.core.get_timer()
                now = time.monotonic()
                if timer is not None and timer <= now:
                    self.core.handle_timer(now)
                    self._send_due()
                    continue
                self._wake.wait(None if timer is None else timer - now)
