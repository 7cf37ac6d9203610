"""The publisher core: numbers messages, packs them into packets, heartbeats, end of session.

No I/O: every call that depends on time takes ``now`` (seconds, monotonic), and the
datagrams to send come out of :meth:`PublisherCore.datagrams_to_send`. An I/O layer
publishes messages, sends what comes out, and calls :meth:`~PublisherCore.handle_timer`
at :meth:`~PublisherCore.get_timer`::

    pub = PublisherCore("SESSION001")
    pub.publish(b"hello", now)
    for datagram in pub.datagrams_to_send(now):
        sock.sendto(datagram, group)

Timing rules (on the simulated or real clock the caller passes in):

- a partial packet goes out ``flush_delay`` seconds after its first message was
  published (0: at the next :meth:`~PublisherCore.datagrams_to_send`); a full one at once;
- when nothing was sent for ``heartbeat_interval`` seconds a heartbeat (count 0)
  carrying the next sequence number goes out;
- :meth:`~PublisherCore.end_session` sends the pending messages, then an end-of-session
  packet (count 0xFFFF, next sequence number, no blocks) at once and every
  ``end_of_session_interval`` seconds (default: the heartbeat interval, at most a quarter
  of the period) for ``end_of_session_duration`` seconds, in place of heartbeats; then
  :attr:`~PublisherCore.ended` is true and the core is silent.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Protocol

from .events import Address
from .exceptions import ConfigError, EncodeError, MessageTooLarge, SessionAlreadyEnded
from .faults import FaultInjector
from .rerequest import DEFAULT_RATE_LIMIT, IPNetwork, RateLimit, RerequestStats
from .store import MemoryStore, MessageStore, extend_store
from .validation import (
    check_batch_size,
    check_max_payload,
    check_publish_group,
    check_rate,
    check_seconds,
    check_seq_num,
    check_session,
    check_ttl,
)
from .wire import (
    DEFAULT_MAX_PAYLOAD,
    HEADER,
    MAX_MESSAGE_COUNT,
    MAX_SEQ_NUM,
    Buffer,
    Packer,
    build_end_of_session,
    build_heartbeat,
    decode_session,
    join_blocks,
)

if TYPE_CHECKING:
    import socket

__all__ = [
    "Pacer",
    "PublisherCore",
    "PublisherOptions",
    "PublisherStats",
    "RunResult",
    "SessionAlreadyEnded",
]


@dataclass(frozen=True, slots=True)
class PublisherStats:
    """What a publisher core has put out so far."""

    packets: int
    messages: int
    heartbeats: int
    end_of_session: int
    bytes: int
    next_seq_num: int


@dataclass(frozen=True, slots=True)
class RunResult:
    """What a publisher's ``run()`` (blocking or asyncio) did."""

    messages: int
    first_seq_num: int
    next_seq_num: int
    seconds: float
    stopped: bool
    stats: PublisherStats


def _non_negative(value: object, name: str, *, allow_none: bool = False) -> float | None:
    return None if value is None and allow_none else check_seconds(value, name)


class PublisherCore:
    """Numbers, packs and times the downstream packets of one session (no I/O).

    ``store``, when given, receives every published message (so a re-request server can
    answer from it); its ``next_seq_num`` must equal ``first_seq_num``.
    ``heartbeat_interval`` and ``flush_delay`` may be None: no heartbeats / no timed
    flush (partial packets then go out when full, on :meth:`flush`, or at heartbeat time).
    """

    def __init__(
        self,
        session: str | bytes,
        first_seq_num: int = 1,
        max_payload: int = DEFAULT_MAX_PAYLOAD,
        flush_delay: float | None = 0.0,
        heartbeat_interval: float | None = 1.0,
        end_of_session_duration: float = 2.0,
        end_of_session_interval: float | None = None,
        store: MessageStore | None = None,
    ) -> None:
        raw_session = check_session(session)
        check_seq_num(first_seq_num)
        check_max_payload(max_payload)
        self._flush_delay = _non_negative(flush_delay, "flush_delay", allow_none=True)
        self._heartbeat_interval = _non_negative(
            heartbeat_interval, "heartbeat_interval", allow_none=True
        )
        if self._heartbeat_interval == 0.0:
            raise ConfigError("heartbeat_interval must be > 0 (None turns heartbeats off)")
        eos_duration = _non_negative(end_of_session_duration, "end_of_session_duration")
        assert eos_duration is not None
        self._eos_duration = eos_duration
        if end_of_session_interval is None:
            # at least four over the period: a receiver believes an end of session that
            # follows lost data only once another one confirms it
            end_of_session_interval = min(self._heartbeat_interval or 1.0, eos_duration / 4 or 1.0)
        eos_interval = _non_negative(end_of_session_interval, "end_of_session_interval")
        if not eos_interval:
            raise ConfigError("end_of_session_interval must be > 0")
        self._eos_interval = eos_interval
        if store is not None and store.next_seq_num != first_seq_num:
            raise ConfigError(
                f"the store's next sequence number is {store.next_seq_num}, "
                f"but the publisher starts at {first_seq_num}"
            )
        self._session = raw_session
        self._packer = Packer(raw_session, first_seq_num, max_payload)
        self.max_payload = max_payload
        self.first_seq_num = first_seq_num
        self.store = store
        self._out: list[bytes] = []
        self._sent_next = first_seq_num  # next seq after every message queued in a packet
        self._last_send: float | None = None  # None: clock not started
        self._pending_since: float | None = None
        self._eos_end: float | None = None
        self._next_eos: float | None = None
        self._ended = False
        self._packets = 0
        self._messages = 0
        self._heartbeats = 0
        self._eos_packets = 0
        self._bytes = 0

    # -- properties ---------------------------------------------------------------------

    @property
    def session(self) -> str:
        """The session name as sent (10 characters, space padded)."""
        return decode_session(self._session)

    @property
    def session_ident_raw(self) -> bytes:
        """The 10 session bytes on the wire."""
        return self._session

    @property
    def next_seq_num(self) -> int:
        """The sequence number the next published message gets."""
        return self._packer.next_seq_num

    @property
    def pending(self) -> int:
        """Messages published but not yet in a packet."""
        return self._packer.pending

    @property
    def ending(self) -> bool:
        """Whether :meth:`end_session` was called."""
        return self._eos_end is not None

    @property
    def ended(self) -> bool:
        """Whether the end-of-session period is over (nothing more will be sent)."""
        return self._ended

    @property
    def flush_delay(self) -> float | None:
        """Seconds a partial packet may wait for more messages."""
        return self._flush_delay

    @property
    def heartbeat_interval(self) -> float | None:
        """Seconds of silence before a heartbeat."""
        return self._heartbeat_interval

    @property
    def stats(self) -> PublisherStats:
        """Counts so far (a snapshot)."""
        return PublisherStats(
            packets=self._packets,
            messages=self._messages,
            heartbeats=self._heartbeats,
            end_of_session=self._eos_packets,
            bytes=self._bytes,
            next_seq_num=self.next_seq_num,
        )

    # -- input --------------------------------------------------------------------------

    def start(self, now: float) -> None:
        """Start the heartbeat clock (done implicitly by the first call that takes ``now``)."""
        if self._last_send is None:
            self._last_send = now

    def publish(self, message: Buffer, now: float) -> int:
        """Queue one message; return its sequence number.

        Raises :class:`~moldudp64.exceptions.MessageTooLarge` for a message that cannot
        fit alone in a packet (nothing is queued), :class:`SessionAlreadyEnded` after
        :meth:`end_session`.
        """
        if self._eos_end is not None:
            raise SessionAlreadyEnded(f"session {self.session.rstrip()!r} has ended")
        if self._last_send is None:
            self._last_send = now
        length = len(message)
        if length + 2 > self.max_payload:
            raise MessageTooLarge(
                f"message of {length} bytes cannot fit in a packet of "
                f"{self.max_payload} payload bytes",
                length=length,
                limit=min(self.max_payload - 2, 0xFFFF),
            )
        if self.store is not None:
            self.store.append(message)  # first: a store that refuses leaves nothing queued
        packer = self._packer
        seq = packer.next_seq_num
        done = packer.add(message)
        if done is not None:
            self._queue_data(done, now)
            self._pending_since = now
        elif self._pending_since is None:
            self._pending_since = now
        return seq

    def publish_many(self, messages: Iterable[Buffer], now: float) -> range:
        """Queue several messages; return the range of sequence numbers they got.

        All or nothing: a message too large for any packet raises
        :class:`~moldudp64.exceptions.MessageTooLarge` before any of them is queued.
        The result is the same as publishing them one by one, only faster: whole packets
        are built in one step.
        """
        if self._eos_end is not None:
            raise SessionAlreadyEnded(f"session {self.session.rstrip()!r} has ended")
        batch = [m if type(m) is bytes else bytes(m) for m in messages]
        packer = self._packer
        first = packer.next_seq_num
        n = len(batch)
        if not n:
            return range(first, first)
        limit = self.max_payload
        sizes = [len(m) + 2 for m in batch]
        if max(sizes) > limit:
            index = next(i for i, size in enumerate(sizes) if size > limit)
            length = sizes[index] - 2
            raise MessageTooLarge(
                f"message {index} of the batch ({length} bytes) cannot fit in a packet of "
                f"{limit} payload bytes",
                length=length,
                limit=min(limit - 2, 0xFFFF),
            )
        if first + n - 1 > MAX_SEQ_NUM:
            raise EncodeError("sequence numbers overflow 2**64")
        if self._last_send is None:
            self._last_send = now
        if self.store is not None:
            extend_store(self.store, batch)
        # Fill the partial packet with what still fits, as publish() would.
        room = limit - packer.pending_bytes
        pending = packer.pending
        i = 0
        while i < n and sizes[i] <= room and pending < MAX_MESSAGE_COUNT:
            room -= sizes[i]
            pending += 1
            i += 1
        add = packer.add
        for message in batch[:i]:
            add(message)
        if i == n:
            if self._pending_since is None:
                self._pending_since = now
            return range(first, first + n)
        self._flush(now)
        # Whole packets straight from the batch; the last, partial one goes to the packer.
        raw = self._session
        seq = first + i
        start = i
        used = 0
        queue = self._queue_data
        while i < n:
            size = sizes[i]
            if used + size > limit or i - start >= MAX_MESSAGE_COUNT:
                queue(HEADER.pack(raw, seq, i - start) + join_blocks(batch[start:i]), now)
                seq += i - start
                start = i
                used = 0
            used += size
            i += 1
        self._packer = packer = Packer(raw, seq, limit)
        add = packer.add
        for message in batch[start:]:
            add(message)
        self._pending_since = now
        return range(first, first + n)

    def flush(self, now: float) -> None:
        """Close the partial packet now."""
        if self._last_send is None:
            self._last_send = now
        self._flush(now)

    def end_session(self, now: float) -> None:
        """Send pending messages, then end-of-session packets for the configured period."""
        if self._eos_end is not None:
            return
        self._flush(now)
        self._eos_end = now + self._eos_duration
        self._queue_control(build_end_of_session(self._session, self._sent_next), now)
        self._eos_packets += 1
        if self._eos_duration <= 0:
            self._ended = True
            self._next_eos = None
        else:
            self._next_eos = now + self._eos_interval

    # -- timers and output --------------------------------------------------------------

    def get_timer(self) -> float | None:
        """The earliest time :meth:`handle_timer` has work to do, or None."""
        if self._ended or self._last_send is None:
            return None
        if self._eos_end is not None:
            assert self._next_eos is not None
            return min(self._next_eos, self._eos_end)
        timer: float | None = None
        if self._pending_since is not None and self._flush_delay is not None:
            timer = self._pending_since + self._flush_delay
        if self._heartbeat_interval is not None:
            beat = self._last_send + self._heartbeat_interval
            if timer is None or beat < timer:
                timer = beat
        return timer

    def handle_timer(self, now: float) -> None:
        """Do what is due at ``now``: flush a waiting packet, heartbeat, end of session."""
        if self._ended:
            return
        if self._last_send is None:
            self._last_send = now
            return
        if self._eos_end is not None:
            assert self._next_eos is not None
            if now >= self._eos_end:
                self._ended = True
                return
            if now >= self._next_eos:
                self._queue_control(build_end_of_session(self._session, self._sent_next), now)
                self._eos_packets += 1
                self._next_eos += self._eos_interval
                if self._next_eos <= now:  # a late timer: do not burst to catch up
                    self._next_eos = now + self._eos_interval
            return
        if (
            self._pending_since is not None
            and self._flush_delay is not None
            and now >= self._pending_since + self._flush_delay
        ):
            self._flush(now)
        if self._heartbeat_interval is not None and now >= (
            self._last_send + self._heartbeat_interval
        ):
            if self._packer.pending:
                self._flush(now)
            else:
                self._queue_control(build_heartbeat(self._session, self._sent_next), now)
                self._heartbeats += 1

    def datagrams_to_send(self, now: float) -> list[bytes]:
        """Run what is due at ``now``, then hand over the queued datagrams (oldest first)."""
        timer = self.get_timer()
        if timer is not None and timer <= now:
            self.handle_timer(now)
        elif self._last_send is None:
            self._last_send = now
        out = self._out
        if out:
            self._out = []
        return out

    # -- internals ----------------------------------------------------------------------

    def _queue_data(self, packet: bytes, now: float) -> None:
        count = (packet[18] << 8) | packet[19]
        self._out.append(packet)
        self._last_send = now
        self._sent_next += count
        self._packets += 1
        self._messages += count
        self._bytes += len(packet)

    def _flush(self, now: float) -> None:
        packet = self._packer.flush()
        self._pending_since = None
        if packet is not None:
            self._queue_data(packet, now)

    def _queue_control(self, packet: bytes, now: float) -> None:
        self._out.append(packet)
        self._packets += 1
        self._bytes += len(packet)
        self._last_send = now


@dataclass(frozen=True, slots=True, kw_only=True)
class PublisherOptions:
    """Every setting of a publisher (blocking or asyncio), checked once when made.

    ``group`` is checked (IPv4 multicast unless ``unicast``; normalised to a
    ``(host, port)`` tuple) and ``ttl``; the core's own settings are checked by
    :meth:`new_core`, which makes the :class:`PublisherCore` and, for one that serves
    re-requests without a ``store``, a :class:`~moldudp64.store.MemoryStore`. Socket
    settings (``interface_addr``, ``rerequest_bind``) are checked when the sockets open.
    """

    session: str | bytes
    group: Address
    interface_addr: str | None = None
    ttl: int = 1
    loopback: bool = True
    unicast: bool = False
    first_seq_num: int = 1
    max_payload: int = DEFAULT_MAX_PAYLOAD
    flush_delay: float | None = 0.0
    heartbeat_interval: float | None = 1.0
    end_of_session_duration: float = 2.0
    end_of_session_interval: float | None = None
    store: MessageStore | None = None
    rerequest_bind: Address | None = None
    rate_limit: RateLimit | None = DEFAULT_RATE_LIMIT
    allow: Iterable[IPNetwork | str] | None = None
    faults: FaultInjector | None = None
    answer_faults: FaultInjector | None = None
    sock: socket.socket | None = None

    def __post_init__(self) -> None:
        object.__setattr__(self, "group", check_publish_group(self.group, unicast=self.unicast))
        check_ttl(self.ttl)

    def new_core(self) -> tuple[PublisherCore, MessageStore | None]:
        """The publisher's core and its store (None when nothing keeps the messages)."""
        store = self.store
        if self.rerequest_bind is not None and store is None:
            store = MemoryStore(first_seq_num=self.first_seq_num)
        core = PublisherCore(
            self.session,
            first_seq_num=self.first_seq_num,
            max_payload=self.max_payload,
            flush_delay=self.flush_delay,
            heartbeat_interval=self.heartbeat_interval,
            end_of_session_duration=self.end_of_session_duration,
            end_of_session_interval=self.end_of_session_interval,
            store=store,
        )
        return core, store


class _Answering(Protocol):
    """A re-request server as a publisher reports it."""

    @property
    def address(self) -> Address: ...

    @property
    def stats(self) -> RerequestStats: ...


class PublisherFront:
    """The constructor and the read-only state the blocking and asyncio publishers share.

    The constructor gathers its arguments in one :class:`PublisherOptions` (checked
    there), makes the core and the store, then calls :meth:`_setup` of the I/O layer.
    """

    core: PublisherCore
    rerequest_server: _Answering | None

    def __init__(
        self,
        session: str | bytes,
        group: Address,
        *,
        interface_addr: str | None = None,
        ttl: int = 1,
        loopback: bool = True,
        unicast: bool = False,
        first_seq_num: int = 1,
        max_payload: int = DEFAULT_MAX_PAYLOAD,
        flush_delay: float | None = 0.0,
        heartbeat_interval: float | None = 1.0,
        end_of_session_duration: float = 2.0,
        end_of_session_interval: float | None = None,
        store: MessageStore | None = None,
        rerequest_bind: Address | None = None,
        rate_limit: RateLimit | None = DEFAULT_RATE_LIMIT,
        allow: Iterable[IPNetwork | str] | None = None,
        faults: FaultInjector | None = None,
        answer_faults: FaultInjector | None = None,
        sock: socket.socket | None = None,
    ) -> None:
        options = PublisherOptions(
            session=session,
            group=group,
            interface_addr=interface_addr,
            ttl=ttl,
            loopback=loopback,
            unicast=unicast,
            first_seq_num=first_seq_num,
            max_payload=max_payload,
            flush_delay=flush_delay,
            heartbeat_interval=heartbeat_interval,
            end_of_session_duration=end_of_session_duration,
            end_of_session_interval=end_of_session_interval,
            store=store,
            rerequest_bind=rerequest_bind,
            rate_limit=rate_limit,
            allow=allow,
            faults=faults,
            answer_faults=answer_faults,
            sock=sock,
        )
        self.options = options
        self.core, self.store = options.new_core()
        self.group: Address = options.group
        self.faults = faults
        self._send_errors = 0
        self.rerequest_server = None
        self._setup(options)

    def _setup(self, options: PublisherOptions) -> None:
        """Make the I/O layer's sockets, locks and re-request server."""
        raise NotImplementedError

    @property
    def rerequest_address(self) -> Address | None:
        """Where re-requests are served, or None."""
        return None if self.rerequest_server is None else self.rerequest_server.address

    @property
    def stats(self) -> PublisherStats:
        """Packets, messages, heartbeats, end-of-session packets and bytes sent."""
        return self.core.stats

    @property
    def rerequest_stats(self) -> RerequestStats | None:
        """The re-request server's counts, or None without one."""
        return None if self.rerequest_server is None else self.rerequest_server.stats

    @property
    def send_errors(self) -> int:
        """Datagrams not sent: socket errors."""
        return self._send_errors

    @property
    def next_seq_num(self) -> int:
        """The sequence number the next published message gets."""
        return self.core.next_seq_num

    @property
    def ended(self) -> bool:
        """Whether the end-of-session period is over."""
        return self.core.ended


class Pacer:
    """Batches and paces the messages of a publisher's ``run()`` (no I/O, no clock).

    Unpaced (``rate`` None), a batch goes out every ``batch_size`` messages. Paced, the
    n-th message is due at ``start + n / rate``: a batch goes out as soon as its last
    message is not yet due (then wait until it is) or it is full::

        pacer = Pacer(rate, batch_size)
        pacer.start(now)
        for message in messages:
            wait = pacer.add(message, clock)
            if wait is not None:
                publish(pacer.batch); pacer.done()
                sleep(wait)
        publish(pacer.batch); pacer.done()
    """

    __slots__ = (
        "_next_progress",
        "batch",
        "batch_size",
        "count",
        "first_seq_num",
        "progress_interval",
        "rate",
        "t0",
    )

    def __init__(
        self, rate: float | None, batch_size: int = 512, progress_interval: float = 0.5
    ) -> None:
        self.rate = check_rate(rate)
        self.batch_size = check_batch_size(batch_size)
        self.progress_interval = progress_interval
        self.batch: list[Buffer] = []
        #: Messages published so far.
        self.count = 0
        self.t0 = 0.0
        self.first_seq_num = 1
        self._next_progress = progress_interval

    def start(self, now: float, first_seq_num: int = 1) -> None:
        """Start the clock: the first message (``first_seq_num``) is due at ``now``."""
        self.t0 = now
        self.first_seq_num = first_seq_num
        self._next_progress = now + self.progress_interval

    def add(self, message: Buffer, clock: Callable[[], float]) -> float | None:
        """Add ``message`` to the batch: None to go on collecting, or the seconds to wait
        (0.0: none) after publishing :attr:`batch` now. ``clock`` is read only when paced."""
        batch = self.batch
        batch.append(message)
        rate = self.rate
        if rate is None:
            return 0.0 if len(batch) >= self.batch_size else None
        due = self.t0 + (self.count + len(batch)) / rate
        now = clock()
        if due > now or len(batch) >= self.batch_size:
            return max(0.0, due - now)
        return None

    def done(self, published: bool = True) -> None:
        """The batch went out (counted) or was dropped (``published`` False); start a new one."""
        if published:
            self.count += len(self.batch)
        self.batch = []

    def result(self, now: float, stopped: bool, stats: PublisherStats) -> RunResult:
        """What the run did, as it ends at ``now``."""
        return RunResult(
            messages=self.count,
            first_seq_num=self.first_seq_num,
            next_seq_num=stats.next_seq_num,
            seconds=now - self.t0,
            stopped=stopped,
            stats=stats,
        )

    def progress_due(self, now: float) -> bool:
        """Whether to report progress now (something published, ``progress_interval`` since
        the last report)."""
        if self.count and now >= self._next_progress:
            self._next_progress = now + self.progress_interval
            return True
        return False
