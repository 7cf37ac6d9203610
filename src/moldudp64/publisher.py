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
  published (0: at the next :meth:`datagrams_to_send`); a full one at once;
- when nothing was sent for ``heartbeat_interval`` seconds a heartbeat (count 0)
  carrying the next sequence number goes out;
- :meth:`end_session` sends the pending messages, then an end-of-session packet (count
  0xFFFF, next sequence number, no blocks) at once and every ``end_of_session_interval``
  seconds (default: the heartbeat interval, at most a quarter of the period) for
  ``end_of_session_duration`` seconds, in place of heartbeats; then
  :attr:`ended` is true and the core is silent.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable
from dataclasses import dataclass

from .events import Address
from .exceptions import ConfigError, EncodeError, MessageTooLarge, SessionAlreadyEnded
from .store import MemoryStore, MessageStore, extend_store
from .wire import (
    DEFAULT_MAX_PAYLOAD,
    HEADER,
    HEADER_SIZE,
    MAX_DATAGRAM,
    MAX_MESSAGE_COUNT,
    MAX_SEQ_NUM,
    Buffer,
    Packer,
    build_end_of_session,
    build_heartbeat,
    decode_session,
    encode_session,
    join_blocks,
)

__all__ = [
    "PublisherCore",
    "PublisherStats",
    "RunResult",
    "SessionAlreadyEnded",
    "core_for_group",
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
    if value is None and allow_none:
        return None
    if isinstance(value, bool) or not isinstance(value, int | float) or value < 0:
        raise ConfigError(f"{name} {value!r} must be a number of seconds >= 0")
    return float(value)


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
        try:
            raw_session = encode_session(session)
        except ValueError as exc:
            raise ConfigError(f"session: {exc}") from None
        if isinstance(first_seq_num, bool) or not isinstance(first_seq_num, int):
            raise ConfigError(f"first_seq_num {first_seq_num!r} must be an int")
        if not 1 <= first_seq_num <= MAX_SEQ_NUM:
            raise ConfigError(f"first_seq_num {first_seq_num} must be 1..2**64-1")
        limit = MAX_DATAGRAM - HEADER_SIZE
        if isinstance(max_payload, bool) or not isinstance(max_payload, int):
            raise ConfigError(f"max_payload {max_payload!r} must be an int")
        if not 3 <= max_payload <= limit:
            raise ConfigError(f"max_payload {max_payload} must be 3..{limit} bytes")
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


def core_for_group(
    session: str | bytes,
    group: object,
    *,
    ttl: object,
    serves_requests: bool,
    unicast: bool = False,
    store: MessageStore | None,
    first_seq_num: int,
    max_payload: int,
    flush_delay: float | None,
    heartbeat_interval: float | None,
    end_of_session_duration: float,
    end_of_session_interval: float | None,
) -> tuple[PublisherCore, Address, MessageStore | None]:
    """Check a publisher's destination and TTL and build its core, its group and its store.

    Shared by the blocking and asyncio publishers. The group must be an IPv4 multicast
    address, as on the command line, unless ``unicast`` (then any host: a test, a
    relay). One that serves re-requests needs a store: a
    :class:`~moldudp64.store.MemoryStore` is made when none is given.
    """
    if not isinstance(group, tuple) or len(group) != 2 or not isinstance(group[0], str):
        raise ConfigError(f"group {group!r} must be a (host, port) tuple")
    if not unicast:
        try:
            multicast = ipaddress.IPv4Address(group[0]).is_multicast
        except ValueError:
            multicast = False
        if not multicast:
            raise ConfigError(
                f"group {group[0]!r} is not a multicast group (224.0.0.0/4); "
                "pass unicast=True to publish to a unicast address"
            )
    port = group[1]
    if isinstance(port, bool) or not isinstance(port, int) or not 1 <= port <= 65535:
        raise ConfigError(f"group port {port!r} is not a port number (1..65535)")
    if isinstance(ttl, bool) or not isinstance(ttl, int) or not 0 <= ttl <= 255:
        raise ConfigError(f"multicast TTL {ttl!r} is outside 0..255")
    if serves_requests and store is None:
        store = MemoryStore(first_seq_num=first_seq_num)
    core = PublisherCore(
        session,
        first_seq_num=first_seq_num,
        max_payload=max_payload,
        flush_delay=flush_delay,
        heartbeat_interval=heartbeat_interval,
        end_of_session_duration=end_of_session_duration,
        end_of_session_interval=end_of_session_interval,
        store=store,
    )
    return core, (group[0], port), store
