"""Events the protocol cores emit, as small frozen dataclasses.

Sequence ranges are inclusive at both ends: ``first_seq`` to ``last_seq``.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, field
from typing import NamedTuple

__all__ = [
    "Address",
    "ConsumerOverrun",
    "DatagramDropped",
    "DatagramReceived",
    "Event",
    "FeedResumed",
    "FeedStale",
    "GapDetected",
    "GapFilled",
    "Message",
    "MessagesAfterEnd",
    "MessagesDelivered",
    "MessagesLost",
    "ServerDisabled",
    "ServerEnabled",
    "SessionChanged",
    "SessionEnded",
    "SessionStarted",
    "Source",
]

#: A UDP endpoint, ``(host, port)``.
Address = tuple[str, int]


class Source(enum.IntEnum):
    """Where a datagram came from: a live line, or an answer to a re-request."""

    LINE_A = 0
    LINE_B = 1
    RETRANSMISSION = 2

    def __str__(self) -> str:
        """The name (``LINE_A``), not the number an IntEnum would print."""
        return self.name

    def __format__(self, spec: str) -> str:
        """``f"{source}"`` is the name too; a numeric spec (``:d``) formats the number."""
        if spec and spec[-1] in "bcdoxXn":
            return format(int(self), spec)
        return format(self.name, spec)


class Message(NamedTuple):
    """One message as the high-level clients hand it to the user."""

    session: str
    seq_num: int
    data: bytes


@dataclass(frozen=True, slots=True)
class Event:
    """Base of every event."""


@dataclass(frozen=True, slots=True)
class MessagesDelivered(Event):
    """Consecutive messages, in order: ``messages[i]`` has sequence ``seq_num + i``."""

    session: str
    seq_num: int
    messages: list[bytes] = field(repr=False)

    @property
    def last_seq(self) -> int:
        """Sequence number of the last message of the batch."""
        return self.seq_num + len(self.messages) - 1


@dataclass(frozen=True, slots=True)
class DatagramReceived(Event):
    """Low-level mode: one valid datagram, in arrival order, as it came."""

    data: bytes = field(repr=False)
    source: Source
    addr: Address | None = None


@dataclass(frozen=True, slots=True)
class SessionStarted(Event):
    """The receiver locked onto ``session``; the first message it wants is ``seq_num``."""

    session: str
    seq_num: int


@dataclass(frozen=True, slots=True)
class SessionChanged(Event):
    """A different session appeared on the feed; the receiver now follows ``new_session``."""

    old_session: str
    new_session: str
    seq_num: int


@dataclass(frozen=True, slots=True)
class SessionEnded(Event):
    """Everything before the end of session was delivered or reported lost."""

    session: str
    next_seq_num: int


@dataclass(frozen=True, slots=True)
class GapDetected(Event):
    """Messages ``first_seq`` to ``last_seq`` are missing and will be recovered if possible."""

    session: str
    first_seq: int
    last_seq: int


@dataclass(frozen=True, slots=True)
class GapFilled(Event):
    """Messages ``first_seq`` to ``last_seq``, once missing, were recovered."""

    session: str
    first_seq: int
    last_seq: int


@dataclass(frozen=True, slots=True)
class MessagesLost(Event):
    """Messages ``first_seq`` to ``last_seq`` will never be delivered; ``reason`` says why."""

    session: str
    first_seq: int
    last_seq: int
    reason: str

    @property
    def count(self) -> int:
        """How many messages were lost."""
        return self.last_seq - self.first_seq + 1


@dataclass(frozen=True, slots=True)
class MessagesAfterEnd(Event):
    """Messages ``first_seq``..``last_seq`` of ``session`` arrived beyond its believed end
    of session (``end_seq``), or beyond the number at which the receiver left it for
    another session (then ``end_seq`` is that number): not delivered, named here instead
    of dropped silently. On an unauthenticated feed this means the end was forged or the
    publisher misbehaved."""

    session: str
    first_seq: int
    last_seq: int
    end_seq: int

    @property
    def count(self) -> int:
        """How many messages arrived beyond the end."""
        return self.last_seq - self.first_seq + 1


@dataclass(frozen=True, slots=True)
class FeedStale(Event):
    """No datagram arrived for ``silent_for`` seconds: neither of the session followed
    nor of one waiting to be followed (the feed as a whole is silent)."""

    silent_for: float


@dataclass(frozen=True, slots=True)
class FeedResumed(Event):
    """Datagrams arrive again after a :class:`FeedStale`."""

    silent_for: float


@dataclass(frozen=True, slots=True)
class ServerDisabled(Event):
    """A re-request server failed ``failures`` times in a row and is out of rotation."""

    server: Address
    failures: int


@dataclass(frozen=True, slots=True)
class ServerEnabled(Event):
    """A re-request server that was out of rotation answered again."""

    server: Address


@dataclass(frozen=True, slots=True)
class DatagramDropped(Event):
    """A datagram was dropped: malformed, wrong session, and so on; ``reason`` says which."""

    reason: str
    source: Source
    addr: Address | None = None


@dataclass(frozen=True, slots=True)
class ConsumerOverrun(Event):
    """The user fell behind: ``dropped`` datagrams were discarded before the core saw them."""

    dropped: int
