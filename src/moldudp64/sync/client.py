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
import os
import queue
import select
import socket
import struct
import sys
import threading
import time
from collections import deque
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, fields
from itertools import chain, count, repeat
from types import TracebackType
from typing import Any

from ..events import (
    Address,
    ConsumerOverrun,
    DatagramReceived,
    Event,
    FeedResumed,
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
from ..exceptions import (
    ClientClosed,
    ConfigError,
    EncodeError,
    MessagesLostError,
    MoldUDP64Error,
)
from ..net import (
    DEFAULT_RCVBUF,
    c_recv_batch,
    c_recv_batch_drops,
    check_interface_addr,
    check_multicast_addr,
    format_address,
    open_multicast_receiver,
    open_unicast_socket,
    parse_address,
)
from ..receiver import ReceiverConfig, ReceiverCore
from ..wire import MAX_DATAGRAM, Packet, RetransmissionPacket, encode_session

__all__ = [
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
    "read_kernel_drops",
]

logger = logging.getLogger(__name__)

#: Called with every event that is not a message, in order with the messages.
EventHandler = Callable[[Event], None]
#: ``on_datagram(data, source, addr, sent)``: every datagram received or request sent.
DatagramHook = Callable[[bytes, Source, "Address | None", bool], None]

#: Default bound on messages (plus other events) queued between receiver thread and
#: consumer: about 40 MB of 36-byte messages; past it the kernel buffer takes the burst.
DEFAULT_MAX_BACKLOG = 500_000
#: Most datagrams read from one socket per wake-up before timers and flushing run.
READ_BATCH = 256
#: Most reads in a row without polling, while every read fills a whole batch.
HOT_STREAK = 8
#: Seconds between reads of the kernel's drop counters while the feed flows.
DROP_POLL_INTERVAL = 1.0
#: Bound on low-level requests waiting for the receiver thread.
MAX_PENDING_REQUESTS = 1024
#: How many lost ranges :attr:`MoldUDP64.lost_ranges` keeps (the oldest are forgotten).
MAX_LOST_RANGES = 10_000
#: Default ``request_delay`` when a B line is configured: the arbitration window a new gap
#: waits for the other line before it is requested. A and B copies of a packet normally
#: arrive well under a millisecond apart; 5 ms covers a slow path at 5 ms of added
#: latency for what both lines really lost (request timeouts are ten times that).
AB_REQUEST_DELAY = 0.005

_SO_RXQ_OVFL = getattr(socket, "SO_RXQ_OVFL", 40) if sys.platform.startswith("linux") else None
_U32 = struct.Struct("=I")
_RECV_SIZE = MAX_DATAGRAM + 1  # one more byte than legal, so an oversized datagram is seen


# --------------------------------------------------------------------------- options


@dataclass(frozen=True, slots=True)
class ClientOptions:
    """Validated client settings shared by :class:`MoldUDP64` and ``AsyncMoldUDP64``."""

    multicast_addr: Address
    interface_addr: str
    rerequest_server_addrs: tuple[Address, ...]
    expected_session_ident: str | None
    expected_seq_num: int | None
    max_rerequest_retries: int
    line_b_addr: Address | None
    rcvbuf: int | None
    reuse: bool
    max_backlog: int
    follow_session_changes: bool
    stop_at_end_of_session: bool
    strict: bool
    receiver_options: dict[str, Any]

    def receiver_config(
        self, *, raw: bool, servers: Sequence[Address] | None = None
    ) -> ReceiverConfig:
        """The :class:`~moldudp64.receiver.ReceiverConfig` these options stand for."""
        kwargs: dict[str, Any] = {
            "expected_session_ident": self.expected_session_ident,
            "expected_seq_num": self.expected_seq_num,
            "rerequest_server_addrs": list(
                self.rerequest_server_addrs if servers is None else servers
            ),
            "max_rerequest_retries": self.max_rerequest_retries,
            "raw": raw,
            "follow_session_changes": self.follow_session_changes,
        }
        kwargs.update(self.receiver_options)
        try:
            return ReceiverConfig(**kwargs)
        except (TypeError, ValueError) as exc:
            if isinstance(exc, MoldUDP64Error):
                raise
            raise ConfigError(f"bad receiver option: {exc}") from None


def _as_address(value: object, what: str) -> Address:
    if isinstance(value, str):
        return parse_address(value, what)
    if isinstance(value, tuple) and len(value) == 2 and isinstance(value[0], str):
        port = value[1]
        if not isinstance(port, int) or isinstance(port, bool):
            raise ConfigError(f"{what} {value!r}: port must be an integer")
        return parse_address(f"{value[0]}:{port}", what)
    raise ConfigError(f"{what} {value!r} must be (host, port) or 'host:port'")


def _as_group(value: object, what: str) -> Address:
    if isinstance(value, str):
        host, sep, port = value.rpartition(":")
        if not sep or not port.isdigit():
            raise ConfigError(f"{what} {value!r} is not GROUP:PORT")
        value = (host, int(port))
    return check_multicast_addr(value, what)


def _positive_int(value: object, what: str, *, allow_none: bool = False) -> int | None:
    if value is None and allow_none:
        return None
    if not isinstance(value, int) or isinstance(value, bool) or value < 1:
        raise ConfigError(f"{what} {value!r} must be a positive integer")
    return value


def make_options(
    multicast_addr: object,
    interface_addr: object = "0.0.0.0",
    rerequest_server_addrs: Iterable[object] = (),
    expected_session_ident: object = None,
    expected_seq_num: object = None,
    max_rerequest_retries: object = 100,
    *,
    line_b_addr: object = None,
    rcvbuf: object = DEFAULT_RCVBUF,
    reuse: bool = True,
    max_backlog: object = DEFAULT_MAX_BACKLOG,
    request_timeout: object = None,
    stale_after: object = None,
    follow_session_changes: bool = True,
    stop_at_end_of_session: bool = True,
    strict: bool = False,
    receiver_options: dict[str, Any] | None = None,
    request_delay: object = None,
) -> ClientOptions:
    """Check every client setting and raise :class:`ConfigError` naming the first bad one.

    Runs before any socket is opened (the interface check binds a throw-away probe).
    ``request_delay`` None means the core's default (no delay), or
    :data:`AB_REQUEST_DELAY` when a B line is configured.
    """
    group = _as_group(multicast_addr, "multicast address")
    line_b = None if line_b_addr is None else _as_group(line_b_addr, "line B address")
    if line_b is not None and line_b == group:
        raise ConfigError(f"line B address {format_address(line_b)} is the same as line A")
    iface = check_interface_addr(interface_addr)
    if isinstance(rerequest_server_addrs, str) or (
        isinstance(rerequest_server_addrs, tuple)
        and len(rerequest_server_addrs) == 2
        and isinstance(rerequest_server_addrs[1], int)
    ):
        raise ConfigError(
            f"rerequest_server_addrs {rerequest_server_addrs!r} must be a list of addresses"
        )
    servers = tuple(_as_address(s, "re-request server") for s in rerequest_server_addrs)
    if len(set(servers)) != len(servers):
        raise ConfigError(f"re-request servers listed twice: {servers}")
    session: str | None = None
    if expected_session_ident is not None:
        if not isinstance(expected_session_ident, str | bytes):
            raise ConfigError(f"expected_session_ident {expected_session_ident!r} is not text")
        try:
            raw = encode_session(expected_session_ident)
        except EncodeError as exc:
            raise ConfigError(f"expected_session_ident: {exc}") from None
        session = raw.decode("ascii")
    seq = _positive_int(expected_seq_num, "expected_seq_num", allow_none=True)
    retries = _positive_int(max_rerequest_retries, "max_rerequest_retries")
    assert retries is not None
    buf = _positive_int(rcvbuf, "rcvbuf", allow_none=True)
    backlog = _positive_int(max_backlog, "max_backlog")
    assert backlog is not None
    extra = dict(receiver_options or {})
    known = {f.name for f in fields(ReceiverConfig)}
    for name, value, aliases in (
        ("request_timeout", request_timeout, ("request_timeout", "rerequest_timeout")),
        ("stale_after", stale_after, ("stale_after", "stale_interval", "stale_timeout")),
    ):
        if value is None:
            continue
        if not isinstance(value, int | float) or isinstance(value, bool) or not value > 0:
            raise ConfigError(f"{name} {value!r} must be a positive number of seconds")
        target = next((a for a in aliases if a in known), None)
        if target is None:
            raise ConfigError(f"{name} is not supported by this receiver core")
        extra.setdefault(target, float(value))
    if request_delay is not None:
        if (
            not isinstance(request_delay, int | float)
            or isinstance(request_delay, bool)
            or not 0 <= request_delay < math.inf
        ):
            raise ConfigError(f"request_delay {request_delay!r} must be a number of seconds >= 0")
        extra.setdefault("request_delay", float(request_delay))
    elif line_b is not None:
        extra.setdefault("request_delay", AB_REQUEST_DELAY)
    unknown = sorted(set(extra) - known)
    if unknown:
        raise ConfigError(f"unknown receiver option(s): {', '.join(unknown)}")
    options = ClientOptions(
        multicast_addr=group,
        interface_addr=iface,
        rerequest_server_addrs=servers,
        expected_session_ident=session,
        expected_seq_num=seq,
        max_rerequest_retries=retries,
        line_b_addr=line_b,
        rcvbuf=buf,
        reuse=bool(reuse),
        max_backlog=backlog,
        follow_session_changes=bool(follow_session_changes),
        stop_at_end_of_session=bool(stop_at_end_of_session),
        strict=bool(strict),
        receiver_options=extra,
    )
    options.receiver_config(raw=False)  # let the core reject bad values now
    return options


def open_line_sockets(options: ClientOptions) -> list[tuple[socket.socket, Source]]:
    """Open and join the downstream sockets (line A, then line B if configured)."""
    opened: list[tuple[socket.socket, Source]] = []
    try:
        for addr, source in (
            (options.multicast_addr, Source.LINE_A),
            (options.line_b_addr, Source.LINE_B),
        ):
            if addr is None:
                continue
            sock = open_multicast_receiver(
                addr[0], addr[1], options.interface_addr, rcvbuf=options.rcvbuf, reuse=options.reuse
            )
            opened.append((sock, source))
    except BaseException:
        for sock, _ in opened:
            sock.close()
        raise
    return opened


def open_request_socket(options: ClientOptions) -> socket.socket:
    """Open the unicast socket requests go out on and answers come back to (never the feed port)."""
    return open_unicast_socket(("0.0.0.0", 0), rcvbuf=options.rcvbuf)


def enable_drop_counter(sock: socket.socket) -> bool:
    """Ask Linux to report the socket's kernel drop count with each datagram (SO_RXQ_OVFL)."""
    if _SO_RXQ_OVFL is None:
        return False
    try:
        sock.setsockopt(socket.SOL_SOCKET, _SO_RXQ_OVFL, 1)
    except OSError:
        return False
    return True


def socket_inode(sock: socket.socket) -> int:
    """The inode that names ``sock`` in ``/proc/net/udp``."""
    return os.fstat(sock.fileno()).st_ino


def read_kernel_drops(inodes: Iterable[int]) -> dict[int, int] | None:
    """Datagrams the kernel dropped so far on each of these sockets, by inode.

    Read from ``/proc/self/net/udp``; None where it cannot be read (not Linux). Used where
    ``SO_RXQ_OVFL`` cannot be (asyncio transports read with ``recvfrom``) and when a
    paused reader resumes (``SO_RXQ_OVFL`` only reports with the next datagram).
    """
    wanted = {str(i): i for i in inodes}
    found: dict[int, int] = {}
    try:
        with open("/proc/self/net/udp", encoding="ascii") as f:
            next(f, None)
            for line in f:
                cols = line.split()
                if len(cols) >= 13 and cols[9] in wanted:
                    found[wanted[cols[9]]] = int(cols[-1])
    except (OSError, ValueError):
        return None
    return found


# --------------------------------------------------------------------------- shared pieces


class Datagram:
    """One datagram of the low-level API: ``bytes()`` gives its bytes, ``packet()`` a view."""

    __slots__ = ("addr", "data", "source")

    def __init__(self, data: builtins.bytes, source: Source, addr: Address | None) -> None:
        self.data = data
        self.source = source
        self.addr = addr

    def bytes(self) -> builtins.bytes:
        """The datagram as received."""
        return self.data

    def packet(self) -> Packet:
        """A zero-copy :class:`~moldudp64.wire.Packet` over the datagram."""
        return Packet(self.data)

    def __repr__(self) -> str:
        return f"Datagram({len(self.data)} bytes, {self.source.name}, addr={self.addr})"


@dataclass(frozen=True, slots=True)
class ClientStats:
    """A snapshot of the client's counters, and the core's own (``receiver``)."""

    datagrams_received: int
    recv_errors: int
    requests_sent: int
    send_errors: int
    kernel_drops: int
    backlog_pauses: int
    internal_errors: int
    receiver: Any


class EventPolicy:
    """What a high-level client does with the events that are not messages.

    Records loss (``lost_ranges``, ``messages_lost``), the session and whether it ended
    or went stale; logs loss at WARNING so it is never silent; passes each event to the
    user's ``on_event``; in ``strict`` mode raises :class:`MessagesLostError`.
    :meth:`handle` returns True when iteration should stop (end of session).
    """

    def __init__(self, on_event: EventHandler | None, strict: bool, stop_at_end: bool) -> None:
        self.on_event = on_event
        self.strict = strict
        self.stop_at_end = stop_at_end
        self.lost_ranges: deque[MessagesLost] = deque(maxlen=MAX_LOST_RANGES)
        self.messages_lost = 0
        self.datagrams_overrun = 0
        self.session: str | None = None
        self.session_ended = False
        self.stale = False

    def record(self, event: Event) -> bool:
        """Update the records from ``event``; True if it ends the session's iteration."""
        kind = type(event)
        if kind is MessagesLost:
            assert isinstance(event, MessagesLost)
            self.lost_ranges.append(event)
            self.messages_lost += event.count
            logger.warning(
                "messages %d..%d of session %r lost: %s",
                event.first_seq,
                event.last_seq,
                event.session,
                event.reason,
            )
        elif kind is SessionStarted:
            assert isinstance(event, SessionStarted)
            self.session = event.session
            self.session_ended = False
        elif kind is SessionChanged:
            assert isinstance(event, SessionChanged)
            logger.info("session changed from %r to %r", event.old_session, event.new_session)
            self.session = event.new_session
            self.session_ended = False
        elif kind is SessionEnded:
            assert isinstance(event, SessionEnded)
            self.session = event.session
            self.session_ended = True
            return self.stop_at_end
        elif kind is ConsumerOverrun:
            assert isinstance(event, ConsumerOverrun)
            self.datagrams_overrun += event.dropped
            logger.warning("%d datagrams dropped: the consumer fell behind", event.dropped)
        elif kind is ServerDisabled:
            assert isinstance(event, ServerDisabled)
            logger.warning(
                "re-request server %s disabled after %d failures",
                format_address(event.server),
                event.failures,
            )
        elif kind is FeedStale:
            self.stale = True
        elif kind is FeedResumed:
            self.stale = False
        return False

    def handle(self, event: Event) -> bool:
        """Record, call ``on_event``, raise in strict mode; True to stop iterating."""
        stop = self.record(event)
        if self.on_event is not None:
            self.on_event(event)
        if self.strict and type(event) is MessagesLost:
            assert isinstance(event, MessagesLost)
            raise MessagesLostError(event)
        return stop


def batch_size(events: list[Event]) -> int:
    """How much a batch weighs against the backlog bound: one per message or other event."""
    n = 0
    for ev in events:
        n += len(ev.messages) if type(ev) is MessagesDelivered else 1
    return n


def message_iter(event: MessagesDelivered) -> Iterator[Message]:
    """The messages of a batch as :class:`Message` tuples, built at C speed."""
    return map(
        tuple.__new__,
        repeat(Message),
        zip(repeat(event.session), count(event.seq_num), event.messages),
    )


class BatchCursor:
    """Flattens event batches into messages, remembering where a consumer stopped.

    Used by the sync and asyncio clients: a consumer that breaks out mid-batch, raises,
    or stops at end of session resumes exactly where it was on the next call, so every
    message is handed out once. ``batch[pos:]`` are the events not yet looked at;
    ``current`` the message iterator of the batch being handed out.
    """

    def __init__(self, policy: EventPolicy) -> None:
        self.policy = policy
        self.current: Iterator[Message] | None = None
        self.batch: list[Event] = []
        self.pos = 0

    def next_event(self) -> Event | None:
        """The next event already received, or None."""
        pos = self.pos
        if pos < len(self.batch):
            self.pos = pos + 1
            return self.batch[pos]
        return None

    def take_current(self) -> MessagesDelivered | None:
        """The rest of a batch a ``messages()`` consumer broke out of, as one event."""
        current = self.current
        if current is None:
            return None
        self.current = None
        rest = list(current)
        if not rest:
            return None
        return MessagesDelivered(rest[0].session, rest[0].seq_num, [m.data for m in rest])

    def load(self, batch: list[Event]) -> None:
        """Start on a new batch (the previous one must be used up)."""
        self.batch = batch
        self.pos = 0

    def batches(self, next_batch: Callable[[], list[Event] | None]) -> Iterator[Iterator[Message]]:
        """Yield one message iterator per delivered batch; handle other events in order."""
        handle = self.policy.handle
        if self.current is not None:
            yield self.current
            self.current = None
        while True:
            batch = self.batch
            pos = self.pos
            if pos >= len(batch):
                got = next_batch()
                if got is None:
                    return
                batch = self.batch = got
                pos = 0
            n = len(batch)
            while pos < n:
                ev = batch[pos]
                pos += 1
                self.pos = pos  # saved first: the user may break out, or handle() raise
                if type(ev) is MessagesDelivered:
                    it = message_iter(ev)
                    self.current = it
                    yield it
                    self.current = None
                elif handle(ev):
                    return


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


# --------------------------------------------------------------------------- blocking client


class ClientRecords:
    """What the consumer of a client has read so far: losses, session, feed health.

    Shared by the blocking and the asyncio client, which keep the records in an
    :class:`EventPolicy`.
    """

    _policy: EventPolicy
    _closing: bool
    _rereq_addr: Address | None

    @property
    def lost_ranges(self) -> list[MessagesLost]:
        """Every :class:`MessagesLost` seen by the consumer so far (the last 10,000)."""
        return list(self._policy.lost_ranges)

    @property
    def messages_lost(self) -> int:
        """Total messages reported lost to the consumer so far."""
        return self._policy.messages_lost

    @property
    def datagrams_overrun(self) -> int:
        """Datagrams dropped because this client fell behind, as reported so far."""
        return self._policy.datagrams_overrun

    @property
    def session(self) -> str | None:
        """The session the consumer is in, as far as it has read."""
        return self._policy.session

    @property
    def session_ended(self) -> bool:
        """Whether the consumer has read the end of the current session."""
        return self._policy.session_ended

    @property
    def stale(self) -> bool:
        """Whether the last feed-health event the consumer read was :class:`FeedStale`."""
        return self._policy.stale

    @property
    def closed(self) -> bool:
        """Whether :meth:`close` was called."""
        return self._closing

    @property
    def local_request_address(self) -> Address | None:
        """Where re-request answers come back to (None before opening)."""
        return self._rereq_addr


class MoldUDP64(ClientRecords):
    """Blocking MoldUDP64 client over :class:`~moldudp64.receiver.ReceiverCore`.

    Settings keep the Rust seed's names:

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
    :data:`AB_REQUEST_DELAY`, 5 ms, with a B line: the other line fills most gaps by
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
        receiver_thread: bool = True,
        on_datagram: DatagramHook | None = None,
        coalesce: float = 0.0,
        request_delay: float | None = None,
    ) -> None:
        self.options = make_options(
            multicast_addr,
            interface_addr,
            rerequest_server_addrs,
            expected_session_ident,
            expected_seq_num,
            max_rerequest_retries,
            line_b_addr=line_b_addr,
            rcvbuf=rcvbuf,
            reuse=reuse,
            max_backlog=max_backlog,
            request_timeout=request_timeout,
            stale_after=stale_after,
            follow_session_changes=follow_session_changes,
            stop_at_end_of_session=stop_at_end_of_session,
            strict=strict,
            receiver_options=receiver_options,
            request_delay=request_delay,
        )
        self._policy = EventPolicy(
            on_event, self.options.strict, self.options.stop_at_end_of_session
        )
        self._cursor = BatchCursor(self._policy)
        self._core: Any = None
        self._raw = False
        self._inputs: list[tuple[socket.socket, Source]] = []
        self._rereq: socket.socket | None = None
        self._rereq_addr: Address | None = None
        self._wake_r: socket.socket | None = None
        self._wake_w: socket.socket | None = None
        self._thread: threading.Thread | None = None
        self._started = False
        # pull mode (receiver_thread=False): the consumer's thread reads the sockets
        self._pull = not receiver_thread
        self._on_datagram = on_datagram
        if (
            not isinstance(coalesce, int | float)
            or isinstance(coalesce, bool)
            or not (0.0 <= coalesce <= 0.1)
        ):
            raise ConfigError(f"coalesce {coalesce!r} must be 0..0.1 seconds")
        self._coalesce = float(coalesce)
        self._pump_lock = threading.RLock()
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
        self._produced = 0  # written by the receiver thread only
        self._consumed = 0  # written by the consumer only
        self._paused = False  # written by the receiver thread only
        self._resume_asked = False
        self._closing = False
        self._closed = False
        self._error: BaseException | None = None
        self._state_lock = threading.Lock()
        # counters (receiver thread)
        self._n_datagrams = 0
        self._n_recv_errors = 0
        self._n_sent = 0
        self._n_send_errors = 0
        self._n_pauses = 0
        self._n_internal = 0
        self._drops_seen: dict[int, int] = {}  # by socket inode
        self._drops_base = 0
        self._inode_of: dict[int, int] = {}
        self._pending_overrun = 0

    # ---------------------------------------------------------------- stats

    @property
    def stats(self) -> ClientStats:
        """A snapshot of the counters (client's and core's)."""
        drops = sum(self._drops_seen.values()) - self._drops_base
        return ClientStats(
            datagrams_received=self._n_datagrams,
            recv_errors=self._n_recv_errors,
            requests_sent=self._n_sent,
            send_errors=self._n_send_errors,
            kernel_drops=drops,
            backlog_pauses=self._n_pauses,
            internal_errors=self._n_internal,
            receiver=None if self._core is None else self._core.stats,
        )

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
        :class:`Datagram` objects, live and retransmitted interleaved; give
        ``requests`` your own :class:`~moldudp64.wire.RetransmissionRequest`. The core
        still detects gaps and re-requests them. Iterating ``datagrams`` ends after the
        end of session (see :class:`DatagramStream`); close with :meth:`close`.
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
        self._use_sockets(downstream, rereq, servers, raw=True)
        return DatagramStream(self), RequestSender(self)

    def open_with_sockets(
        self,
        downstream: socket.socket | Sequence[socket.socket],
        rereq: socket.socket,
        servers: Sequence[Address] | None = None,
    ) -> MoldUDP64:
        """:meth:`open` (high level) over sockets the caller opened (see start_with_sockets)."""
        self._use_sockets(downstream, rereq, servers, raw=False)
        return self

    def _open_sockets(self, *, raw: bool) -> None:
        self._check_unopened()
        lines = open_line_sockets(self.options)
        try:
            rereq = open_request_socket(self.options)
        except BaseException:
            for sock, _ in lines:
                sock.close()
            raise
        self._launch(lines, rereq, None, raw)

    def _use_sockets(
        self,
        downstream: socket.socket | Sequence[socket.socket],
        rereq: socket.socket,
        servers: Sequence[Address] | None,
        *,
        raw: bool,
    ) -> None:
        self._check_unopened()
        socks = [downstream] if isinstance(downstream, socket.socket) else list(downstream)
        if not 1 <= len(socks) <= 2:
            raise ConfigError("downstream must be one socket or [line_a, line_b]")
        server_list = (
            None if servers is None else [_as_address(s, "re-request server") for s in servers]
        )
        for sock in [*socks, rereq]:
            sock.setblocking(False)
        lines = list(zip(socks, (Source.LINE_A, Source.LINE_B), strict=False))
        self._launch(lines, rereq, server_list, raw)

    def _check_unopened(self) -> None:
        if self._closing:
            raise ClientClosed("the client is closed")
        if self._started:
            raise MoldUDP64Error("the client is already started")

    def _launch(
        self,
        lines: list[tuple[socket.socket, Source]],
        rereq: socket.socket,
        servers: Sequence[Address] | None,
        raw: bool,
    ) -> None:
        self._raw = raw
        self._core = ReceiverCore(self.options.receiver_config(raw=raw, servers=servers))
        self._inputs = [*lines, (rereq, Source.RETRANSMISSION)]
        self._rereq = rereq
        host, port = rereq.getsockname()[:2]
        self._rereq_addr = (host, port)
        for sock, _ in self._inputs:
            enable_drop_counter(sock)
        self._inode_of = {sock.fileno(): socket_inode(sock) for sock, _ in self._inputs}
        base = read_kernel_drops(self._inode_of.values()) or {}
        # drops before we started are not ours to report; every key exists from here on
        self._drops_seen = {ino: base.get(ino, 0) for ino in self._inode_of.values()}
        self._drops_base = sum(self._drops_seen.values())
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
            with self._pump_lock:  # pull mode: wait for a consumer inside a read to leave
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
        self._waiting = poller
        try:
            self._serve(self._core, poller, idle)
        finally:
            self._waiting = None
            poller.close()
            idle.close()

    def _serve(
        self,
        core: ReceiverCore,
        poller: _Poller,
        idle: _Poller,
    ) -> None:
        monotonic = time.monotonic
        max_backlog = self.options.max_backlog
        assert self._rereq is not None
        rereq_fd = self._rereq.fileno()
        read_ready = self._read_ready
        next_drop_poll = monotonic() + DROP_POLL_INTERVAL
        hot: list[int] = []
        streak = 0
        while not self._closing:
            if self._produced - self._consumed > max_backlog:
                # The consumer is behind: stop reading so the kernel buffer takes the
                # burst, and wait for the consumer (or close) to wake us.
                self._paused = True
                self._n_pauses += 1
                while not self._closing and self._produced - self._consumed > max_backlog // 2:
                    if idle.poll(None):
                        self._drain_wake()
                self._paused = False
                self._resume_asked = False
                self._poll_drops()
                continue
            timer = core.get_timer()
            if timer is None:
                timeout = None
            else:
                timeout = timer - monotonic()
                if timeout < 0:
                    timeout = 0
            if hot and streak < HOT_STREAK:
                # The last read filled a whole batch: more is surely waiting. Read again
                # without polling; every system call lets a busy consumer take the GIL
                # for up to a switch interval, so this doubles what we take per turn.
                # Answers first, always: starving them while catching up would hold
                # every live packet behind an open gap (and feed back into more lag).
                ready = [rereq_fd, *hot]
                streak += 1
            else:
                ready = poller.poll(timeout)
                streak = 0
                if len(ready) > 1:
                    ready.sort(key=self._answers_first)
            now = monotonic()
            hot = read_ready(ready, core, now)
            if now >= next_drop_poll:
                next_drop_poll = now + DROP_POLL_INTERVAL
                self._poll_drops()
            self._flush(core, now)  # runs the core's timer when due (see _send_requests)

    def _answers_first(self, fd: int) -> int:
        """Sort key: the re-request socket's answers are read before the lines' data."""
        return 0 if self._rereq is not None and fd == self._rereq.fileno() else 1

    def _drain_wake(self) -> None:
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
                    self._count_drops(self._inode_of[fd], drops)
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
        hook = self._on_datagram
        fd = sock.fileno()
        n = 0
        try:
            while n < READ_BATCH:
                data, anc, _flags, addr = recvmsg(_RECV_SIZE, 64)
                n += 1
                if anc:
                    self._note_drops(fd, anc)
                if hook is not None:
                    self._call_hook(data, source, (str(addr[0]), int(addr[1])), False)
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
            if level == socket.SOL_SOCKET and kind == _SO_RXQ_OVFL and len(payload) >= 4:
                self._count_drops(self._inode_of[fd], _U32.unpack_from(payload)[0])

    def _count_drops(self, inode: int, total: int) -> None:
        before = self._drops_seen.get(inode, 0)
        if total > before:
            self._drops_seen[inode] = total
            self._pending_overrun += total - before

    def _poll_drops(self) -> None:
        found = read_kernel_drops(self._inode_of.values())
        if found:
            for inode, total in found.items():
                self._count_drops(inode, total)

    def _read_ready(self, ready: list[int], core: ReceiverCore, now: float) -> list[int]:
        """Read each ready descriptor; return the line sockets whose read filled a batch.

        The re-request socket is read with ``recvmsg()`` (:meth:`_read`), so the core sees
        every answer's true source address and drops what no configured server sent; line
        sockets go through ``recvmmsg()`` (:meth:`_read_batch`, no addresses needed).
        """
        hot: list[int] = []
        by_fd = self._by_fd
        read = self._read
        read_batch = (
            self._read_batch if c_recv_batch is not None and self._on_datagram is None else read
        )
        for fd in ready:
            entry = by_fd[fd]
            if entry is None:
                self._drain_wake()
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
        hook = self._on_datagram
        for data, addr in core.datagrams_to_send(now):
            try:
                rereq.sendto(data, addr)
                self._n_sent += 1
            except OSError as exc:
                self._n_send_errors += 1
                logger.debug("cannot send request to %s: %s", addr, exc)
                continue
            if hook is not None:
                self._call_hook(bytes(data), Source.RETRANSMISSION, addr, True)

    def _call_hook(
        self, data: builtins.bytes, source: Source, addr: Address | None, sent: bool
    ) -> None:
        assert self._on_datagram is not None
        try:
            self._on_datagram(data, source, addr, sent)
        except Exception:  # a tap's failure must not stop the client
            self._n_internal += 1
            logger.exception("on_datagram failed")

    def _collect(self, core: ReceiverCore, now: float) -> list[Event]:
        """Send what the core wants sent; the events it produced (overruns first)."""
        self._send_requests(core, now)
        events: list[Event] = core.events_received()
        overrun = self._pending_overrun
        if overrun:
            self._pending_overrun = 0
            events.insert(0, ConsumerOverrun(overrun))
        return events

    def _flush(self, core: ReceiverCore, now: float) -> None:
        self._send_requests(core, now)
        events: list[Event] = core.events_received()
        overrun = self._pending_overrun
        if overrun:
            self._pending_overrun = 0
            events.insert(0, ConsumerOverrun(overrun))
        if events:
            size = batch_size(events)
            self._produced += size
            self._queue.put((size, events))

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
        self._consumed += size
        if (
            self._paused
            and not self._resume_asked
            and self._produced - self._consumed <= self.options.max_backlog // 2
        ):
            self._resume_asked = True
            self._wake()
        return batch

    def _pull_batch(self, timeout: float | None) -> list[Event] | None:
        """Pull mode: read the sockets in this thread until the core has events."""
        with self._pump_lock:
            monotonic = time.monotonic
            deadline = None if timeout is None else monotonic() + timeout
            core = self._core
            while not self._closing:
                events = self._pump(core, deadline)
                if events:
                    return events
                if deadline is not None and monotonic() >= deadline:
                    raise TimeoutError(f"nothing received in {timeout} s")
            return None

    def _pump(self, core: ReceiverCore, deadline: float | None) -> list[Event]:
        """One turn of the receiver loop in the consumer's thread: wait (at most until
        the core's timer or ``deadline``), read, run timers, send; the events produced."""
        monotonic = time.monotonic
        if self._hot and self._streak < HOT_STREAK:
            # The last read filled a whole batch: more is surely waiting. Answers first,
            # always: starving them while catching up holds every packet behind a gap.
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
        rest = cursor.take_current()
        if rest is not None:
            yield rest
        while True:
            ev = cursor.next_event()
            if ev is None:
                got = self._next_batch(timeout)
                if got is None:
                    return
                cursor.load(got)
                continue
            stop = record(ev)
            yield ev
            if stop:
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
        cursor = self._cursor
        handle = self._policy.handle
        while True:
            ev = cursor.next_event()
            if ev is None:
                got = self._next_batch(timeout)
                if got is None:
                    raise ClientClosed("the client is closed")
                cursor.load(got)
            elif type(ev) is DatagramReceived:
                assert isinstance(ev, DatagramReceived)
                return Datagram(ev.data, ev.source, ev.addr)
            elif handle(ev) and stop_at_end:
                return None

    def _request(self, req: RetransmissionPacket, block: bool, timeout: float | None) -> bool:
        if not isinstance(req, RetransmissionPacket):
            raise TypeError(f"expected a RetransmissionRequest, got {type(req).__name__}")
        req.build()  # refuse what cannot go on the wire (EncodeError) here, not in the thread
        if self._closing:
            raise ClientClosed("the client is closed")
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
        if self._pull and self._pump_lock.acquire(blocking=False):
            try:  # nobody is reading: send it now rather than at the next read
                if not self._closed:
                    now = time.monotonic()
                    self._take_requests(self._core, now)
                    self._send_requests(self._core, now)
            finally:
                self._pump_lock.release()
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
