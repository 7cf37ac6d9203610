"""The consumer's side of both clients: datagrams, stats, event policy, batch cursor, records.

Nothing here does I/O: the blocking and the asyncio client hand their event batches to
these pieces, which turn them into messages and keep the records a consumer reads.
"""

from __future__ import annotations

import builtins
import logging
from collections import deque
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from itertools import count, repeat
from typing import Any

from ..events import (
    Address,
    ConsumerOverrun,
    DatagramReceived,
    Event,
    FeedResumed,
    FeedStale,
    Message,
    MessagesAfterEnd,
    MessagesDelivered,
    MessagesLost,
    ServerDisabled,
    SessionChanged,
    SessionEnded,
    SessionStarted,
    Source,
)
from ..exceptions import MessagesLostError
from ..net import format_address
from ..wire import Packet

__all__ = [
    "MAX_LOST_RANGES",
    "BatchCursor",
    "ClientRecords",
    "ClientStats",
    "Datagram",
    "EventHandler",
    "EventPolicy",
    "batch_size",
    "message_iter",
]

#: Called with every event that is not a message, in order with the messages.
EventHandler = Callable[[Event], None]
#: How many lost ranges :attr:`MoldUDP64.lost_ranges` keeps (the oldest are forgotten).
MAX_LOST_RANGES = 10_000
#: ``MessagesAfterEnd`` events logged one line each, at most; after them, one line each
#: time their count grows tenfold (a forger's or a stray publisher's data cannot flood the
#: log; every range is still in the events and the counts).
AFTER_END_LOGGED = 10


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
    #: Messages handed to the consumer and not yet taken (0 in pull mode).
    backlog: int = 0


class EventPolicy:
    """What a high-level client does with the events that are not messages.

    Records loss (``lost_ranges``, ``messages_lost``), the session and whether it ended
    or went stale; logs loss at WARNING on ``log`` (the owning client's logger, once per
    range) so it is never silent; passes each event to the user's ``on_event``; in
    ``strict`` mode raises :class:`MessagesLostError`. :meth:`handle` returns True when
    iteration should stop (end of session).
    """

    def __init__(
        self,
        on_event: EventHandler | None,
        strict: bool,
        stop_at_end: bool,
        log: logging.Logger | None = None,
    ) -> None:
        self.log = logging.getLogger(__name__) if log is None else log
        self.on_event = on_event
        self.strict = strict
        self.stop_at_end = stop_at_end
        self.lost_ranges: deque[MessagesLost] = deque(maxlen=MAX_LOST_RANGES)
        self.messages_lost = 0
        self.datagrams_overrun = 0
        self.session: str | None = None
        self.session_ended = False
        self.stale = False
        #: Data that arrived beyond an end of session (``MessagesAfterEnd``): ranges and
        #: messages seen so far (logged one by one only up to :data:`AFTER_END_LOGGED`).
        self.after_end_ranges = 0
        self.after_end_messages = 0

    def record(self, event: Event) -> bool:
        """Update the records from ``event``; True if it ends the session's iteration."""
        kind = type(event)
        logger = self.log
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
        elif kind is MessagesAfterEnd:
            assert isinstance(event, MessagesAfterEnd)
            self.after_end_ranges += 1
            self.after_end_messages += event.count
            n = self.after_end_ranges
            if n <= AFTER_END_LOGGED:
                logger.warning(
                    "messages %d..%d of session %r arrived after its end of session at %d%s",
                    event.first_seq,
                    event.last_seq,
                    event.session,
                    event.end_seq,
                    "" if n < AFTER_END_LOGGED else " (more are logged only in summary)",
                )
            elif n == AFTER_END_LOGGED * 10 ** (len(str(n // AFTER_END_LOGGED)) - 1):
                logger.warning(
                    "%d ranges, %d messages, arrived after their end of session so far "
                    "(the last: %d..%d of session %r, its end at %d)",
                    n,
                    self.after_end_messages,
                    event.first_seq,
                    event.last_seq,
                    event.session,
                    event.end_seq,
                )
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

    def next_any(self) -> Event | None:
        """For ``events()``: the rest of a batch a ``messages()`` consumer broke out of
        (as one event), else the next event already received; None if there is none."""
        rest = self.take_current()
        return rest if rest is not None else self.next_event()

    def load(self, batch: list[Event]) -> None:
        """Start on a new batch (the previous one must be used up)."""
        self.batch = batch
        self.pos = 0

    def take_datagram(self, stop_at_end: bool) -> Datagram | bool:
        """Low level: the next datagram of the batch loaded, other events to the policy.

        False when the batch is used up (load the next); True once the session ended
        (its end-of-session datagram was handed out before), with ``stop_at_end``.
        """
        handle = self.policy.handle
        while True:
            ev = self.next_event()
            if ev is None:
                return False
            if type(ev) is DatagramReceived:
                assert isinstance(ev, DatagramReceived)
                return Datagram(ev.data, ev.source, ev.addr)
            if handle(ev) and stop_at_end:
                return True

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
