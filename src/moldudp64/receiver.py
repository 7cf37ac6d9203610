"""The MoldUDP64 client protocol core: sessions, sequencing, gap recovery and timers.

:class:`ReceiverCore` does no I/O and reads no clock. The live client, the asyncio client
and the capture reader feed it datagrams (:meth:`~ReceiverCore.receive_datagram`) and
timer ticks (:meth:`~ReceiverCore.handle_timer`), and take out events
(:meth:`~ReceiverCore.events_received`) and request datagrams with the server each goes to
(:meth:`~ReceiverCore.datagrams_to_send`); :meth:`~ReceiverCore.get_timer` says when to
call back.

What it guarantees: every sequence number of the session is delivered exactly once and in
order (:class:`~moldudp64.events.MessagesDelivered`, one event per run of consecutive
messages), or reported lost (:class:`~moldudp64.events.MessagesLost`) in its place in the
stream. Packets that arrive early are kept (bounded), only missing ranges are requested,
partial answers are completed at once, unanswered requests are retried on a timer with
backoff over the servers in turn, and a new session is never spliced into the old one.

How it is built: the state is the next sequence number to deliver (``expected``), the
highest sequence number known to exist (``horizon``), the messages held between them
(disjoint pieces keyed by their first sequence number), the missing ranges between them
(sorted "segments", each with its request state), and ranges given up but not yet reached
(delivered in order as ``MessagesLost``). Every number below ``horizon`` and at or above
``expected`` is in exactly one of held, missing or given up. A packet whose sequence number
is the expected one while nothing is missing takes the fast path: one header unpack, two
compares, :func:`~moldudp64.wire.parse_blocks` (validates and splits), and its messages
join the pending :class:`~moldudp64.events.MessagesDelivered` the previous fast-path packet
made (while that is still the newest event not taken), else one new event.
:meth:`~ReceiverCore.receive_datagrams` takes a batch (one ``recvmmsg`` or one run of a
capture) and :meth:`~ReceiverCore.receive_in_order` runs the fast path over a batch in one
loop. While a gap is open, a live packet carrying the next number beyond everything held is
held without the general checks, and a lower bound on the segments' due times spares
walking every open gap per packet.
"""

from __future__ import annotations

import logging
import struct
from bisect import bisect_right
from collections.abc import Sequence
from dataclasses import dataclass, field
from operator import attrgetter

from .events import (
    Address,
    DatagramDropped,
    DatagramReceived,
    Event,
    FeedResumed,
    FeedStale,
    GapDetected,
    GapFilled,
    MessagesDelivered,
    MessagesLost,
    ServerDisabled,
    ServerEnabled,
    SessionChanged,
    SessionEnded,
    SessionStarted,
    Source,
)
from .exceptions import ConfigError, EncodeError, MalformedPacket
from .wire import (
    END_OF_SESSION,
    HEADER,
    MAX_MESSAGE_COUNT,
    Buffer,
    RetransmissionPacket,
    c_parse_blocks,
    decode_session,
    encode_session,
    parse_blocks,
)

__all__ = [
    "LOST_ALL_SERVERS_OUT",
    "LOST_ATTEMPTS_EXHAUSTED",
    "LOST_END_OF_INPUT",
    "LOST_HELD_LIMIT",
    "LOST_NO_SERVERS",
    "LOST_SESSION_CHANGED",
    "ReceiverConfig",
    "ReceiverCore",
    "ReceiverStats",
]

logger = logging.getLogger(__name__)

#: ``MessagesLost.reason`` values.
LOST_NO_SERVERS = "no re-request servers"
LOST_ALL_SERVERS_OUT = "all re-request servers out of rotation"
LOST_ATTEMPTS_EXHAUSTED = "request attempts exhausted"
LOST_HELD_LIMIT = "held-packet limit exceeded"
LOST_END_OF_INPUT = "end of input"
LOST_SESSION_CHANGED = "session changed"

#: ``DatagramDropped.reason`` values besides the ``MalformedPacket.reason`` tags.
DROP_WRONG_SESSION = "wrong_session"
DROP_OLD_SESSION = "old_session"
DROP_AFTER_END = "after_end_of_session"

_unpack_header = HEADER.unpack_from
_RETX = Source.RETRANSMISSION
_start_of = attrgetter("start")


def _parse_blocks_or_none(data: bytes) -> list[bytes] | None:
    """:func:`parse_blocks`, None instead of raising for a malformed packet."""
    try:
        return parse_blocks(data)
    except MalformedPacket:
        return None


#: The fast path's splitter: the C accelerator's own entry point when it is built.
_parse_or_none = c_parse_blocks if c_parse_blocks is not None else _parse_blocks_or_none
_INF = float("inf")
#: Sessions remembered as "already left" so their late packets never switch us back.
_MAX_PAST_SESSIONS = 64


def _check_address(addr: object) -> Address:
    if (
        not isinstance(addr, tuple)
        or len(addr) != 2
        or not isinstance(addr[0], str)
        or not addr[0]
        or not isinstance(addr[1], int)
        or isinstance(addr[1], bool)
        or not 0 < addr[1] < 65536
    ):
        raise ConfigError(f"re-request server address {addr!r} is not a (host, port) pair")
    return (addr[0], addr[1])


@dataclass(frozen=True, slots=True)
class ReceiverConfig:
    """What a :class:`ReceiverCore` wants and how hard it tries to recover gaps.

    Names follow the ``moldudp`` Rust client where it has one. Defaults:

    - ``expected_session_ident`` None: lock onto the first session seen. When set, the
      session is pinned: packets of any other session are dropped and counted.
    - ``expected_seq_num`` None (means 1): the first message wanted; gaps before it are
      never requested. ``start_from_first_seen`` True instead starts from whatever
      sequence number arrives first (not both).
    - ``rerequest_server_addrs`` empty: no recovery; a gap waits ``loss_grace`` (0.1 s)
      for reordered packets, then is reported lost.
    - ``max_rerequest_retries`` 100: consecutive unanswered requests before a server is
      taken out of rotation (:class:`ServerDisabled`); it is tried again after
      ``server_retry_interval`` (5 s) when no other server is usable, and back in
      rotation (:class:`ServerEnabled`) as soon as it answers.
    - ``request_timeout`` 0.05 s for the first attempt, multiplied by ``request_backoff``
      (2.0) per attempt up to ``max_request_timeout`` (1.0 s); ``max_request_attempts``
      8 unanswered attempts per range (about 4.5 s) before it is reported lost.
    - ``request_delay`` 0.0: how long a new gap waits before it is requested (give a
      few milliseconds when a B line or reordering usually fills gaps by itself).
    - ``max_messages_per_request`` 1024 (at most 0xFFFE), ``max_requests_in_flight`` 32.
    - ``max_held_packets`` 50,000 and ``max_held_bytes`` 64 MiB bound the early packets
      held; past either, the oldest gap is reported lost and delivery goes on.
    - ``stale_after`` 3.0 s without a live datagram raises :class:`FeedStale` (None: never).
    - ``raw`` False: True is the low-level mode, :class:`DatagramReceived` for every valid
      datagram in arrival order instead of :class:`MessagesDelivered`; gaps are still
      requested automatically and :meth:`ReceiverCore.request` adds requests.
    - ``follow_session_changes`` True: when not pinned, a new session on the feed is
      followed (:class:`SessionChanged`); False keeps the first session only. While the
      old session still has gaps being recovered, the new one's datagrams wait (within
      the held bounds) so that the old one is finished first; packets of a session left
      behind are dropped (``old_session``), never spliced in.
    """

    expected_session_ident: str | bytes | None = None
    expected_seq_num: int | None = None
    rerequest_server_addrs: Sequence[Address] = ()
    max_rerequest_retries: int = 100
    start_from_first_seen: bool = False
    raw: bool = False
    follow_session_changes: bool = True
    request_timeout: float = 0.05
    request_backoff: float = 2.0
    max_request_timeout: float = 1.0
    max_request_attempts: int = 8
    request_delay: float = 0.0
    max_messages_per_request: int = 1024
    max_requests_in_flight: int = 32
    max_held_packets: int = 50_000
    max_held_bytes: int = 64 * 1024 * 1024
    stale_after: float | None = 3.0
    loss_grace: float = 0.1
    server_retry_interval: float = 5.0

    def __post_init__(self) -> None:
        session = self.expected_session_ident
        if session is not None:
            try:
                encode_session(session)
            except EncodeError as exc:
                raise ConfigError(f"expected_session_ident: {exc}") from None
        seq = self.expected_seq_num
        if seq is not None and (
            not isinstance(seq, int) or isinstance(seq, bool) or not 1 <= seq < 2**64
        ):
            raise ConfigError(f"expected_seq_num {seq!r} is not an integer in 1..2**64-1")
        if seq is not None and self.start_from_first_seen:
            raise ConfigError("give expected_seq_num or start_from_first_seen, not both")
        if isinstance(self.rerequest_server_addrs, str | bytes):
            raise ConfigError("rerequest_server_addrs must be a list of (host, port) pairs")
        try:
            servers = tuple(_check_address(a) for a in self.rerequest_server_addrs)
        except TypeError:
            raise ConfigError(
                "rerequest_server_addrs must be a list of (host, port) pairs"
            ) from None
        if len(set(servers)) != len(servers):
            raise ConfigError(f"rerequest_server_addrs lists a server twice: {servers!r}")
        object.__setattr__(self, "rerequest_server_addrs", servers)
        for name, low, high in (
            ("max_rerequest_retries", 1, None),
            ("max_request_attempts", 1, None),
            ("max_messages_per_request", 1, MAX_MESSAGE_COUNT),
            ("max_requests_in_flight", 1, None),
            ("max_held_packets", 1, None),
            ("max_held_bytes", 1, None),
        ):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool):
                raise ConfigError(f"{name} must be an int, not {type(value).__name__}")
            if value < low or (high is not None and value > high):
                bound = f"{low}..{high}" if high is not None else f">= {low}"
                raise ConfigError(f"{name} {value} is outside {bound}")
        for name, positive in (
            ("request_timeout", True),
            ("max_request_timeout", True),
            ("server_retry_interval", True),
            ("request_delay", False),
            ("loss_grace", False),
        ):
            value = getattr(self, name)
            if not isinstance(value, int | float) or isinstance(value, bool):
                raise ConfigError(f"{name} must be a number, not {type(value).__name__}")
            if not value >= 0 or (positive and value == 0) or value == float("inf"):
                raise ConfigError(f"{name} {value} must be a finite number > 0")
        if self.max_request_timeout < self.request_timeout:
            raise ConfigError("max_request_timeout is smaller than request_timeout")
        if not isinstance(self.request_backoff, int | float) or not (
            1.0 <= self.request_backoff < 1000.0
        ):
            raise ConfigError(f"request_backoff {self.request_backoff!r} is outside 1..1000")
        stale = self.stale_after
        if stale is not None and (
            not isinstance(stale, int | float) or isinstance(stale, bool) or not 0 < stale < 1e9
        ):
            raise ConfigError(f"stale_after {stale!r} must be a number > 0 or None")


@dataclass(frozen=True, slots=True)
class ReceiverStats:
    """A snapshot of a :class:`ReceiverCore`'s counters and state.

    Packets count every datagram handed in, by source; messages count the messages of the
    valid data packets of the followed session, by source (duplicates included). Held
    packets and bytes include the datagrams of a next session waiting for the current one
    to finish recovering. ``requests_sent`` includes the user's own requests (also counted
    in ``user_requests``) when they went to a configured server.
    """

    packets: dict[Source, int]
    messages: dict[Source, int]
    messages_delivered: int
    heartbeats: int
    end_of_session_packets: int
    duplicate_packets: int
    duplicate_messages: int
    gaps_detected: int
    gap_messages: int
    messages_recovered: int
    messages_lost: int
    requests_sent: dict[Address, int]
    user_requests: int
    answers: dict[Address, int]
    timeouts: dict[Address, int]
    malformed: dict[str, int]
    dropped: dict[str, int]
    held_packets: int
    held_bytes: int
    peak_held_packets: int
    peak_held_bytes: int
    open_gaps: int
    missing_messages: int
    requests_in_flight: int
    servers_in_rotation: int
    session: str | None
    next_seq_num: int | None
    stale: bool
    ended: bool


@dataclass(slots=True)
class _Segment:
    """A missing range ``[start, end)`` and the state of its request."""

    start: int
    end: int
    detected: float
    attempts: int = 0
    #: When to (re)send it; None while the request ``req_seq`` is in flight.
    due: float | None = None
    req_seq: int = -1


@dataclass(slots=True)
class _Request:
    """A request in flight: ``[seq, end)`` sent to ``server``."""

    end: int
    server: _Server
    deadline: float


@dataclass(slots=True)
class _Server:
    """A re-request server and its health."""

    addr: Address
    failures: int = 0
    disabled: bool = False
    retry_at: float = 0.0
    requests: int = 0
    answers: int = 0
    timeouts: int = 0


@dataclass(slots=True)
class _Held:
    msgs: list[bytes]
    nbytes: int = field(default=0)


class ReceiverCore:
    """The client protocol core: datagrams and timer ticks in, events and requests out.

    Never raises on received data. Not thread-safe: drive it from one thread or task.
    """

    def __init__(self, config: ReceiverConfig | None = None) -> None:
        cfg = config if config is not None else ReceiverConfig()
        self.config = cfg
        self._events: list[Event] = []
        self._out: list[tuple[bytes, Address]] = []
        self._pinned = cfg.expected_session_ident is not None
        self._session_raw: bytes | None = (
            encode_session(cfg.expected_session_ident)
            if cfg.expected_session_ident is not None
            else None
        )
        self._session: str | None = (
            decode_session(self._session_raw) if self._session_raw is not None else None
        )
        self._past_sessions: list[bytes] = []
        #: Datagrams of the next session, kept while the current one still recovers gaps.
        self._next: list[tuple[bytes, Source, float, Address | None]] = []
        self._next_session: bytes | None = None
        self._next_bytes = 0
        self._started = False
        first = 1 if cfg.expected_seq_num is None else cfg.expected_seq_num
        self._expected = first
        self._horizon = first
        #: Equals ``_expected`` when the fast path may be taken, else -1.
        self._fast_seq = -1
        self._eos: int | None = None
        self._ended = False
        self._held: dict[int, _Held] = {}
        self._held_bytes = 0
        self._lost: dict[int, tuple[int, str]] = {}
        self._segs: list[_Segment] = []
        #: No segment is due before this (inf: none is); the earliest ``due`` exactly while
        #: ``_floor_exact``. Lets a packet skip walking every open gap.
        self._due_floor = _INF
        self._floor_exact = True
        self._requests: dict[int, _Request] = {}
        self._servers = [_Server(a) for a in cfg.rerequest_server_addrs]
        self._by_addr = {s.addr: s for s in self._servers}
        self._rr = 0
        self._timer: float | None = None
        self._last_live: float | None = None
        self._stale = False
        self._debug = logger.isEnabledFor(logging.DEBUG)
        #: The fast path's last event and its message list, extended while it is the
        #: newest event not yet taken (one event per run of consecutive messages).
        self._open: Event | None = None
        self._open_msgs: list[bytes] = []
        # counters
        self._packets = [0, 0, 0]
        self._messages = [0, 0, 0]
        self._delivered = 0
        self._heartbeats = 0
        self._eos_packets = 0
        self._dup_packets = 0
        self._dup_messages = 0
        self._gaps = 0
        self._gap_messages = 0
        self._recovered = 0
        self._lost_messages = 0
        self._user_requests = 0
        self._malformed: dict[str, int] = {}
        self._dropped: dict[str, int] = {}
        self._peak_held = 0
        self._peak_held_bytes = 0

    # ------------------------------------------------------------------ public API

    @property
    def session(self) -> str | None:
        """The session followed (or pinned), None before the first packet."""
        return self._session

    @property
    def next_seq_num(self) -> int | None:
        """The next sequence number to deliver; None until the first packet names it
        (``start_from_first_seen``)."""
        if not self._started and self.config.start_from_first_seen:
            return None
        return self._expected

    @property
    def ended(self) -> bool:
        """Whether the session ended and everything before its end was delivered or lost."""
        return self._ended

    def events_received(self) -> list[Event]:
        """Return the events since the last call (and forget them)."""
        events = self._events
        self._events = []
        return events

    def datagrams_to_send(self, now: float) -> list[tuple[bytes, Address]]:
        """Return the request datagrams to send, each with its server (and forget them)."""
        if self._timer is not None and self._timer <= now:
            self.handle_timer(now)
        out = self._out
        self._out = []
        return out

    def get_timer(self) -> float | None:
        """The earliest time :meth:`handle_timer` should be called, or None."""
        timer = self._timer
        stale_after = self.config.stale_after
        if (
            stale_after is not None
            and self._last_live is not None
            and not self._stale
            and not self._ended
        ):
            stale_at = self._last_live + stale_after
            if timer is None or stale_at < timer:
                return stale_at
        return timer

    def handle_timer(self, now: float) -> None:
        """Act on whatever is due at ``now``: retries, timeouts, grace periods, staleness."""
        stale_after = self.config.stale_after
        if (
            stale_after is not None
            and self._last_live is not None
            and not self._stale
            and not self._ended
            and now - self._last_live >= stale_after
        ):
            self._stale = True
            self._fast_seq = -1
            self._events.append(FeedStale(now - self._last_live))
        if self._requests or self._segs:
            self._expire_requests(now)
            self._drain()
            self._enforce_held_bound()
            self._pump(now)
            self._drain()
        if self._next and not self._segs:
            self._switch_to_next(now)
        self._refresh(now)

    def receive_datagram(
        self, data: Buffer, source: Source, now: float, addr: Address | None = None
    ) -> None:
        """Take one datagram from ``source`` (line A, line B or a re-request answer)."""
        try:
            session, seq, count = _unpack_header(data)
        except struct.error:
            self._receive_slow(data, source, now, addr)
            return
        if (
            seq == self._fast_seq
            and session == self._session_raw
            and 0 < count < END_OF_SESSION
            and source != _RETX
            and type(data) is bytes
        ):
            msgs = _parse_or_none(data)
            if msgs is not None:
                events = self._events
                if events and events[-1] is self._open:
                    # the previous fast-path event is still pending: extend its run
                    self._open_msgs.extend(msgs)
                else:
                    self._open = MessagesDelivered(self._session, seq, msgs)  # type: ignore[arg-type]
                    self._open_msgs = msgs
                    events.append(self._open)
                self._expected = self._horizon = self._fast_seq = seq + count
                self._packets[source] += 1
                self._messages[source] += count
                self._delivered += count
                self._last_live = now
                return
        elif (
            seq == self._horizon
            and self._segs
            and session == self._session_raw
            and 0 < count < END_OF_SESSION
            and source != _RETX
            and type(data) is bytes
            and type(source) is Source
            and self._eos is None
            and not self._stale
            and not self._next
            and self._started
            and not self.config.raw
            and self._receive_beyond(data, source, now, seq, count)
        ):
            return
        self._receive_slow(data, source, now, addr)

    def _receive_beyond(
        self, data: bytes, source: Source, now: float, seq: int, count: int
    ) -> bool:
        """A live data packet right after the highest held while gaps are open (the usual
        packet while a gap waits): held as :meth:`_receive_slow` would, without its general
        checks. False (nothing done) when it is malformed."""
        msgs = _parse_or_none(data)
        if msgs is None:
            return False
        self._packets[source] += 1
        self._last_live = now
        self._messages[source] += count
        self._horizon = seq + count
        nbytes = sum(map(len, msgs)) + 2 * count
        held = self._held
        held[seq] = _Held(msgs, nbytes)
        self._held_bytes += nbytes
        # Nothing to deliver: a gap lies between ``expected`` and this packet.
        cfg = self.config
        if len(held) > cfg.max_held_packets or self._held_bytes > cfg.max_held_bytes:
            self._enforce_held_bound()
        else:
            if len(held) > self._peak_held:
                self._peak_held = len(held)
            if self._held_bytes > self._peak_held_bytes:
                self._peak_held_bytes = self._held_bytes
        if self._segs and self._due_floor <= now:  # a request (or give-up) may be due
            self._pump(now)
            self._drain()
        self._refresh(now)
        return True

    def receive_datagrams(
        self,
        datagrams: Sequence[Buffer],
        source: Source,
        now: float,
        addr: Address | None = None,
    ) -> None:
        """Take a batch of datagrams that came together from ``source`` at ``now``.

        The same as calling :meth:`receive_datagram` on each in turn (same events, same
        state), with the in-order run taken in one loop.
        """
        i = 0
        n = len(datagrams)
        receive = self.receive_datagram
        take = self.receive_in_order
        while i < n:
            i = take(datagrams, i, source, now)
            if i < n:
                receive(datagrams[i], source, now, addr)
                i += 1

    def receive_in_order(
        self, datagrams: Sequence[Buffer], start: int, source: Source, now: float
    ) -> int:
        """Take ``datagrams[start:]`` while each takes the fast path; return the index of
        the first that does not (``len(datagrams)`` when all did).

        The fast path is a valid data packet (``bytes``) of the followed session carrying
        the next sequence number while nothing is missing, from line A or B: for those
        this is exactly :meth:`receive_datagram` (``now`` is their arrival time); hand the
        datagram at the returned index to :meth:`receive_datagram` yourself.
        """
        expected = self._fast_seq
        n = len(datagrams)
        if (
            expected < 0
            or start >= n
            or source == _RETX
            or self._session_raw is None
            or type(source) is not Source
        ):
            return start
        session_raw = self._session_raw
        unpack = _unpack_header
        parse = _parse_or_none
        events = self._events
        out = self._open_msgs if events and events[-1] is self._open else []
        first = expected
        i = start
        try:
            while i < n:
                data = datagrams[i]
                session, seq, count = unpack(data)
                if (
                    seq != expected
                    or session != session_raw
                    or not 0 < count < END_OF_SESSION
                    or type(data) is not bytes
                ):
                    break
                msgs = parse(data)
                if msgs is None:
                    break
                out += msgs
                expected += count
                i += 1
        except struct.error:
            pass
        if i == start:
            return start
        taken = expected - first
        if out is not self._open_msgs:  # no pending fast-path event to extend
            self._open = MessagesDelivered(self._session, first, out)  # type: ignore[arg-type]
            self._open_msgs = out
            events.append(self._open)
        self._expected = self._horizon = self._fast_seq = expected
        self._packets[source] += i - start
        self._messages[source] += taken
        self._delivered += taken
        self._last_live = now
        return i

    def request(
        self,
        packet: RetransmissionPacket,
        now: float,
        server: Address | None = None,
    ) -> None:
        """Send a request of the user's own (low-level mode) to ``server`` or the next one.

        Its answer is processed like any other. Raises :class:`ConfigError` when no server
        is given and none is configured, :class:`EncodeError` for a count of 0.
        """
        data = packet.build()
        if server is None:
            chosen = self._pick_server(now)
            if chosen is None:
                if not self._servers:
                    raise ConfigError("no re-request server configured to send the request to")
                chosen = self._servers[self._rr % len(self._servers)]
            target = chosen.addr
            chosen.requests += 1
        else:
            target = _check_address(server)
            known = self._by_addr.get(target)
            if known is not None:
                known.requests += 1
        self._user_requests += 1
        self._out.append((data, target))

    def finish(self, now: float) -> None:
        """End of input: report every open gap lost and deliver everything held.

        Requests in flight or not yet sent are forgotten. Datagrams that come later are
        handled as usual (as if the stream resumed).
        """
        self._segs_give_up(0, len(self._segs), LOST_END_OF_INPUT)
        self._drain()
        if self._next:
            self._switch_to_next(now)
            self._segs_give_up(0, len(self._segs), LOST_END_OF_INPUT)
            self._drain()
        self._requests.clear()
        self._out.clear()
        self._refresh(now)

    @property
    def stats(self) -> ReceiverStats:
        """A snapshot of the counters and the current state."""
        sources = list(Source)
        return ReceiverStats(
            packets={s: self._packets[s] for s in sources},
            messages={s: self._messages[s] for s in sources},
            messages_delivered=self._delivered,
            heartbeats=self._heartbeats,
            end_of_session_packets=self._eos_packets,
            duplicate_packets=self._dup_packets,
            duplicate_messages=self._dup_messages,
            gaps_detected=self._gaps,
            gap_messages=self._gap_messages,
            messages_recovered=self._recovered,
            messages_lost=self._lost_messages,
            requests_sent={s.addr: s.requests for s in self._servers},
            user_requests=self._user_requests,
            answers={s.addr: s.answers for s in self._servers},
            timeouts={s.addr: s.timeouts for s in self._servers},
            malformed=dict(self._malformed),
            dropped=dict(self._dropped),
            held_packets=len(self._held) + len(self._next),
            held_bytes=self._held_bytes + self._next_bytes,
            peak_held_packets=self._peak_held,
            peak_held_bytes=self._peak_held_bytes,
            open_gaps=len(self._segs),
            missing_messages=sum(s.end - s.start for s in self._segs),
            requests_in_flight=len(self._requests),
            servers_in_rotation=sum(1 for s in self._servers if not s.disabled),
            session=self._session,
            next_seq_num=self.next_seq_num,
            stale=self._stale,
            ended=self._ended,
        )

    def __repr__(self) -> str:
        return (
            f"ReceiverCore(session={self._session!r}, next_seq_num={self.next_seq_num}, "
            f"gaps={len(self._segs)}, held={len(self._held)}, "
            f"in_flight={len(self._requests)}, ended={self._ended})"
        )

    # ------------------------------------------------------------------ slow path

    def _drop(self, reason: str, source: Source, addr: Address | None, malformed: bool) -> None:
        counts = self._malformed if malformed else self._dropped
        counts[reason] = counts.get(reason, 0) + 1
        self._events.append(DatagramDropped(reason, source, addr))
        if self._debug:
            logger.debug("dropped datagram from %s %s: %s", source.name, addr, reason)

    def _receive_slow(
        self,
        data: Buffer,
        source: Source,
        now: float,
        addr: Address | None,
        replay: bool = False,
    ) -> None:
        if type(source) is not Source:
            try:
                source = Source(source)
            except ValueError:
                source = _RETX
        if not replay:
            self._packets[source] += 1
            if source != _RETX:
                if self._stale:
                    self._stale = False
                    last = self._last_live if self._last_live is not None else now
                    self._events.append(FeedResumed(now - last))
                self._last_live = now
        if type(data) is not bytes:
            data = bytes(data)
        try:
            msgs = parse_blocks(data)
        except MalformedPacket as exc:
            self._drop(exc.reason, source, addr, malformed=True)
            self._refresh(now)
            return
        session_raw, seq, count = _unpack_header(data)
        if (
            seq + count <= self._expected
            and 0 < count < END_OF_SESSION
            and session_raw == self._session_raw
            and source != _RETX
            and self._started
            and not self.config.raw
        ):  # a live copy of what was delivered (line B behind line A): count it, done
            self._messages[source] += count
            self._dup_packets += 1
            self._dup_messages += count
            return
        if self._session_raw is None:
            self._session_raw = session_raw
            self._session = decode_session(session_raw)
        elif session_raw != self._session_raw:
            if (
                self._pinned
                or not self.config.follow_session_changes
                or session_raw in self._past_sessions
            ):
                reason = (
                    DROP_OLD_SESSION if session_raw in self._past_sessions else (DROP_WRONG_SESSION)
                )
                self._drop(reason, source, addr, malformed=False)
                self._refresh(now)
                return
            if self._segs and self._servers and self._defer(session_raw, data, source, now, addr):
                self._refresh(now)
                return
            self._switch_session(session_raw, seq, now)
        if not self._started:
            self._started = True
            if self.config.start_from_first_seen:
                self._expected = self._horizon = seq
            self._events.append(SessionStarted(self._session or "", self._expected))
        if self.config.raw and not replay:
            self._events.append(DatagramReceived(data, source, addr))
        if count == 0:
            self._heartbeats += 1
            if self._eos is None or seq <= self._eos:
                self._extend_horizon(seq, now)
        elif count == END_OF_SESSION:
            self._eos_packets += 1
            if self._eos is None and seq >= self._expected:
                self._eos = seq
                self._extend_horizon(seq, now)
        else:
            self._messages[source] += count
            if self._eos is not None and seq + count > self._eos:
                self._drop(DROP_AFTER_END, source, addr, malformed=False)
            else:
                if self.config.raw:  # the user has the datagram; hold only the count
                    msgs = [b""] * count
                self._accept(seq, msgs, now)
            if source == _RETX:
                self._on_answer(seq, addr, now)
        self._drain()
        self._enforce_held_bound()
        if self._segs:
            self._pump(now)
            self._drain()
        if self._next and not self._segs and not replay:
            self._switch_to_next(now)
        self._refresh(now)

    def _defer(
        self, session_raw: bytes, data: bytes, source: Source, now: float, addr: Address | None
    ) -> bool:
        """Keep a datagram of the next session while the current one still recovers gaps
        (end of session is the last chance to fill them); False when it cannot be kept."""
        cfg = self.config
        if self._next_session not in (None, session_raw):
            return False
        if (
            len(self._next) >= cfg.max_held_packets
            or self._next_bytes + len(data) > cfg.max_held_bytes
        ):
            return False
        self._next_session = session_raw
        self._next.append((data, source, now, addr))
        self._next_bytes += len(data)
        if self.config.raw:
            self._events.append(DatagramReceived(data, source, addr))
        held = len(self._held) + len(self._next)
        if held > self._peak_held:
            self._peak_held = held
        return True

    def _switch_to_next(self, now: float) -> None:
        """The current session is done with: follow the session whose datagrams wait."""
        assert self._next_session is not None
        first_seq = _unpack_header(self._next[0][0])[1]
        self._switch_session(self._next_session, first_seq, now)

    def _switch_session(self, session_raw: bytes, seq: int, now: float) -> None:
        """Leave the current session for ``session_raw``: close the old one's books, then
        take the new session's datagrams that waited for it."""
        old = self._session or ""
        self._segs_give_up(0, len(self._segs), LOST_SESSION_CHANGED)
        self._requests.clear()
        self._drain()
        for held_seq in sorted(self._held):  # cannot happen after a drain; kept for safety
            del self._held[held_seq]
        self._held_bytes = 0
        if self._session_raw is not None:
            self._past_sessions.append(self._session_raw)
            del self._past_sessions[:-_MAX_PAST_SESSIONS]
        self._session_raw = session_raw
        self._session = decode_session(session_raw)
        if self._next and self._next_session == session_raw:
            seq = _unpack_header(self._next[0][0])[1]  # the first that came
        start = seq if self.config.start_from_first_seen else 1
        self._expected = self._horizon = start
        self._eos = None
        self._ended = False
        self._lost.clear()
        self._started = True
        self._events.append(SessionChanged(old, self._session, start))
        waiting, self._next = self._next, []
        waiting_session, self._next_session = self._next_session, None
        self._next_bytes = 0
        for data, source, at, addr in waiting:
            if waiting_session == session_raw:
                self._receive_slow(data, source, max(at, now), addr, replay=True)
            else:  # a third session came first; these were never followed
                self._drop(DROP_OLD_SESSION, source, addr, malformed=False)

    def _extend_horizon(self, seq: int, now: float) -> None:
        """A packet shows that messages up to ``seq`` (exclusive) exist."""
        horizon = self._horizon
        if seq > horizon:
            self._new_gap(horizon, seq, now)
            self._horizon = seq

    def _new_gap(self, start: int, end: int, now: float) -> None:
        due = now + self.config.request_delay
        self._segs.append(_Segment(start, end, now, due=due))
        if due < self._due_floor:
            self._due_floor = due
        self._gaps += 1
        self._gap_messages += end - start
        self._events.append(GapDetected(self._session or "", start, end - 1))
        if self._debug:
            logger.debug("gap %d..%d (%d messages)", start, end - 1, end - start)

    def _accept(self, seq: int, msgs: list[bytes], now: float) -> None:
        """Take the data messages ``msgs`` numbered from ``seq``: keep only what is new."""
        end = seq + len(msgs)
        expected = self._expected
        if end <= expected:
            self._dup_packets += 1
            self._dup_messages += len(msgs)
            return
        if seq < expected:
            self._dup_messages += expected - seq
            msgs = msgs[expected - seq :]
            seq = expected
        horizon = self._horizon
        pieces: list[tuple[int, list[bytes]]] = []
        if seq >= horizon:
            if seq > horizon:
                self._new_gap(horizon, seq, now)
            pieces.append((seq, msgs))
            self._horizon = end
        else:
            upto = min(end, horizon)
            filled = self._fill(seq, upto)
            new = 0
            for a, b in filled:
                pieces.append((a, msgs[a - seq : b - seq]))
                new += b - a
                self._events.append(GapFilled(self._session or "", a, b - 1))
            self._recovered += new
            self._dup_messages += (upto - seq) - new
            if end > horizon:
                pieces.append((horizon, msgs[horizon - seq :]))
                self._horizon = end
            elif not filled:
                self._dup_packets += 1
        held = self._held
        for start, part in pieces:
            nbytes = sum(map(len, part)) + 2 * len(part)
            held[start] = _Held(part, nbytes)
            self._held_bytes += nbytes

    def _fill(self, start: int, end: int) -> list[tuple[int, int]]:
        """Remove ``[start, end)`` from the missing segments; return the ranges removed."""
        segs = self._segs
        i = bisect_right(segs, start, key=_start_of) - 1
        if i < 0 or segs[i].end <= start:
            i += 1
        filled: list[tuple[int, int]] = []
        while i < len(segs) and segs[i].start < end:
            seg = segs[i]
            a = seg.start if seg.start > start else start
            b = seg.end if seg.end < end else end
            filled.append((a, b))
            if seg.start < a:
                if b < seg.end:
                    right = _Segment(b, seg.end, seg.detected, seg.attempts, seg.due, seg.req_seq)
                    seg.end = a
                    segs.insert(i + 1, right)
                    i += 2
                else:
                    seg.end = a
                    i += 1
            elif b < seg.end:
                seg.start = b
                i += 1
            else:
                del segs[i]
                self._floor_exact = False
        return filled

    def _on_answer(self, seq: int, addr: Address | None, now: float) -> None:
        """A re-request answer starting at ``seq`` came: credit its server, finish the rest."""
        req = self._requests.pop(seq, None)
        server = self._by_addr.get(addr) if addr is not None else None
        if server is None and req is not None:
            server = req.server
        if server is not None:
            server.answers += 1
            server.failures = 0
            if server.disabled:
                server.disabled = False
                self._events.append(ServerEnabled(server.addr))
        if req is None:
            return
        segs = self._segs
        i = bisect_right(segs, seq, key=_start_of)
        i = max(i - 1, 0)
        while i < len(segs) and segs[i].start < req.end:
            seg = segs[i]
            if seg.req_seq == seq and seg.due is None:
                # partial answer: request the rest at once, as a fresh range
                seg.req_seq = -1
                seg.due = now
                seg.attempts = 0
                if now < self._due_floor:
                    self._due_floor = now
            i += 1

    def _drain(self) -> None:
        """Deliver what is held from ``expected`` on and pass over ranges given up."""
        expected = self._expected
        held = self._held
        if expected not in held and expected not in self._lost:  # waiting on a gap
            if self._eos is not None and not self._ended and expected >= self._eos:
                self._ended = True
                self._events.append(SessionEnded(self._session or "", self._eos))
            return
        lost = self._lost
        batch: list[bytes] | None = None
        batch_seq = expected
        events = self._events
        raw = self.config.raw
        session = self._session or ""
        while True:
            piece = held.pop(expected, None)
            if piece is not None:
                self._held_bytes -= piece.nbytes
                msgs = piece.msgs
                if batch is None:
                    batch = msgs
                    batch_seq = expected
                else:
                    batch += msgs
                expected += len(msgs)
                continue
            gone = lost.pop(expected, None)
            if gone is None:
                break
            if batch is not None:
                self._deliver(batch_seq, batch, raw, events, session)
                batch = None
            stop, reason = gone
            while True:  # merge consecutive ranges given up for the same reason
                nxt = lost.get(stop)
                if nxt is None or nxt[1] != reason:
                    break
                del lost[stop]
                stop = nxt[0]
            events.append(MessagesLost(session, expected, stop - 1, reason))
            logger.info("messages %d..%d of %r lost: %s", expected, stop - 1, session, reason)
            expected = stop
        if batch is not None:
            self._deliver(batch_seq, batch, raw, events, session)
        self._expected = expected
        if self._eos is not None and not self._ended and expected >= self._eos:
            self._ended = True
            events.append(SessionEnded(session, self._eos))

    def _deliver(
        self, seq: int, batch: list[bytes], raw: bool, events: list[Event], session: str
    ) -> None:
        self._delivered += len(batch)
        if not raw:
            events.append(MessagesDelivered(session, seq, batch))

    def _give_up_range(self, start: int, end: int, reason: str) -> None:
        self._lost[start] = (end, reason)
        self._lost_messages += end - start

    def _segs_give_up(self, i: int, j: int, reason: str) -> None:
        """Report segments ``i..j-1`` lost (delivered in order by :meth:`_drain`)."""
        for seg in self._segs[i:j]:
            self._give_up_range(seg.start, seg.end, reason)
        del self._segs[i:j]
        self._floor_exact = False

    def _enforce_held_bound(self) -> None:
        """Past the held bound, give up the oldest gap (and deliver what it held back)."""
        cfg = self.config
        while self._segs and (
            len(self._held) > cfg.max_held_packets or self._held_bytes > cfg.max_held_bytes
        ):
            segs = self._segs
            j = 1
            while j < len(segs) and segs[j].start == segs[j - 1].end:
                j += 1
            self._segs_give_up(0, j, LOST_HELD_LIMIT)
            self._drain()
        held = len(self._held)
        if held > self._peak_held:
            self._peak_held = held
        if self._held_bytes > self._peak_held_bytes:
            self._peak_held_bytes = self._held_bytes

    # ------------------------------------------------------------------ requests

    def _pick_server(self, now: float) -> _Server | None:
        """The next healthy server in turn; else a disabled one due for another try."""
        servers = self._servers
        n = len(servers)
        for k in range(n):
            server = servers[(self._rr + k) % n]
            if not server.disabled:
                self._rr = (self._rr + k + 1) % n
                return server
        for k in range(n):
            server = servers[(self._rr + k) % n]
            if server.retry_at <= now:
                self._rr = (self._rr + k + 1) % n
                return server
        return None

    def _timeout_for(self, attempts: int) -> float:
        cfg = self.config
        timeout = cfg.request_timeout * cfg.request_backoff ** max(attempts - 1, 0)
        return min(timeout, cfg.max_request_timeout)

    def _pump(self, now: float) -> None:
        """Send the requests that are due, within the in-flight bound."""
        cfg = self.config
        segs = self._segs
        limit = cfg.max_requests_in_flight
        most = cfg.max_messages_per_request
        session_raw = self._session_raw
        if session_raw is None or self._due_floor > now:
            return  # nothing is due
        i = 0
        while i < len(segs):
            seg = segs[i]
            due = seg.due
            if due is None or due > now:
                i += 1
                continue
            if len(self._requests) >= limit:
                break
            server = self._pick_server(now)
            if server is None:
                give_up_at = seg.detected + cfg.loss_grace
                if now >= give_up_at:
                    reason = LOST_NO_SERVERS if not self._servers else LOST_ALL_SERVERS_OUT
                    self._segs_give_up(i, i + 1, reason)
                    continue
                # wait for the grace period, or for a server due for another try
                retry = min((s.retry_at for s in self._servers), default=give_up_at)
                seg.due = min(give_up_at, max(retry, now))
                i += 1
                continue
            if seg.end - seg.start > most:
                rest = _Segment(seg.start + most, seg.end, seg.detected, 0, seg.due)
                seg.end = seg.start + most
                segs.insert(i + 1, rest)
            count = seg.end - seg.start
            seg.attempts += 1
            seg.due = None
            seg.req_seq = seg.start
            deadline = now + self._timeout_for(seg.attempts)
            self._requests[seg.start] = _Request(seg.end, server, deadline)
            server.requests += 1
            self._out.append((HEADER.pack(session_raw, seg.start, count), server.addr))
            i += 1
        self._recompute_floor()

    def _recompute_floor(self) -> None:
        floor = _INF
        for seg in self._segs:
            due = seg.due
            if due is not None and due < floor:
                floor = due
        self._due_floor = floor
        self._floor_exact = True

    def _expire_requests(self, now: float) -> None:
        """Requests unanswered past their deadline: count the failure, retry or give up."""
        expired = [seq for seq, req in self._requests.items() if req.deadline <= now]
        cfg = self.config
        for seq in expired:
            req = self._requests.pop(seq)
            server = req.server
            server.timeouts += 1
            server.failures += 1
            if server.disabled:
                server.retry_at = now + cfg.server_retry_interval
            elif server.failures >= cfg.max_rerequest_retries:
                server.disabled = True
                server.retry_at = now + cfg.server_retry_interval
                self._events.append(ServerDisabled(server.addr, server.failures))
            segs = self._segs
            i = max(bisect_right(segs, seq, key=_start_of) - 1, 0)
            while i < len(segs) and segs[i].start < req.end:
                seg = segs[i]
                if seg.req_seq == seq and seg.due is None:
                    if seg.attempts >= cfg.max_request_attempts:
                        self._segs_give_up(i, i + 1, LOST_ATTEMPTS_EXHAUSTED)
                        continue
                    seg.req_seq = -1
                    seg.due = now
                    if now < self._due_floor:
                        self._due_floor = now
                i += 1

    def _refresh(self, now: float) -> None:
        """Recompute the protocol timer and whether the fast path may be taken."""
        timer: float | None = None
        if self._requests:
            timer = min(req.deadline for req in self._requests.values())
        if self._segs and len(self._requests) < self.config.max_requests_in_flight:
            if not self._floor_exact:
                self._recompute_floor()
            floor = self._due_floor
            if floor != _INF and (timer is None or floor < timer):
                timer = floor
        self._timer = timer
        self._fast_seq = (
            self._expected
            if (
                self._started
                and self._horizon == self._expected
                and not self.config.raw
                and not self._stale
                and self._eos is None
            )
            else -1
        )
