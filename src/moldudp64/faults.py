"""Seeded fault injection: drop, duplicate and reorder datagrams to test handlers against loss.

A :class:`FaultInjector` sits between a core and its socket (live packets or re-request
answers). Each datagram is independently dropped with probability ``drop``; a datagram
that survives is sent twice with probability ``duplicate``; and with probability
``reorder`` it is held back and released after the next datagram that goes out (so the
two swap places). The same seed gives the same faults for the same input.
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from typing import TypeAlias

from .events import Address
from .validation import check_probability

__all__ = ["FaultInjector", "FaultStats"]

_Item: TypeAlias = tuple[bytes, Address | None]


@dataclass(frozen=True, slots=True)
class FaultStats:
    """What a fault injector did so far."""

    seen: int
    dropped: int
    duplicated: int
    reordered: int
    sent: int


class FaultInjector:
    """Drops, duplicates and reorders datagrams at seeded random.

    :meth:`process` takes one datagram and returns the datagrams to send now (none, one,
    two or three); :meth:`flush` returns a datagram still held back (call it when the
    stream ends). :meth:`process_to` / :meth:`flush_to` do the same for datagrams with a
    destination address (re-request answers), keeping each datagram with its address.
    Use one kind per injector: a datagram held by one kind is not released by the other.
    A held datagram waits for the next one (on a live feed, the next heartbeat at most).
    """

    __slots__ = (
        "_dropped",
        "_duplicated",
        "_held",
        "_random",
        "_reordered",
        "_seen",
        "_sent",
        "drop",
        "duplicate",
        "reorder",
        "seed",
    )

    def __init__(
        self,
        drop: float = 0.0,
        duplicate: float = 0.0,
        reorder: float = 0.0,
        seed: int | None = None,
    ) -> None:
        self.drop = check_probability(drop, "drop")
        self.duplicate = check_probability(duplicate, "duplicate")
        self.reorder = check_probability(reorder, "reorder")
        self.seed = seed
        self._random = random.Random(seed)
        self._held: _Item | None = None
        self._seen = 0
        self._dropped = 0
        self._duplicated = 0
        self._reordered = 0
        self._sent = 0

    @property
    def active(self) -> bool:
        """Whether any fault can happen."""
        return bool(self.drop or self.duplicate or self.reorder)

    @property
    def holding(self) -> bool:
        """Whether a datagram is held back waiting for the next one."""
        return self._held is not None

    @property
    def stats(self) -> FaultStats:
        """Counts so far."""
        return FaultStats(
            seen=self._seen,
            dropped=self._dropped,
            duplicated=self._duplicated,
            reordered=self._reordered,
            sent=self._sent,
        )

    def _apply(self, item: _Item) -> list[_Item]:
        self._seen += 1
        rand = self._random.random
        out: list[_Item] = []
        held_now = False
        if self.drop and rand() < self.drop:
            self._dropped += 1
        else:
            copies = 1
            if self.duplicate and rand() < self.duplicate:
                copies = 2
                self._duplicated += 1
            if self._held is None and self.reorder and rand() < self.reorder:
                self._held = item
                self._reordered += 1
                copies -= 1
                held_now = True
            out.extend([item] * copies)
        if not held_now and self._held is not None:
            out.append(self._held)
            self._held = None
        self._sent += len(out)
        return out

    def process(self, datagram: bytes) -> list[bytes]:
        """The datagrams to send now in place of ``datagram``."""
        if not self.active and self._held is None:
            self._seen += 1
            self._sent += 1
            return [datagram]
        return [data for data, _ in self._apply((datagram, None))]

    def process_to(self, datagram: bytes, addr: Address) -> list[tuple[bytes, Address]]:
        """Like :meth:`process` for a datagram bound for ``addr``; each keeps its address."""
        if not self.active and self._held is None:
            self._seen += 1
            self._sent += 1
            return [(datagram, addr)]
        return [(data, to) for data, to in self._apply((datagram, addr)) if to is not None]

    def flush(self) -> list[bytes]:
        """Release the datagram held back, if any."""
        held, self._held = self._held, None
        if held is None:
            return []
        self._sent += 1
        return [held[0]]

    def flush_to(self) -> list[tuple[bytes, Address]]:
        """Release the addressed datagram held back, if any."""
        held, self._held = self._held, None
        if held is None or held[1] is None:
            return []
        self._sent += 1
        return [(held[0], held[1])]

    def __repr__(self) -> str:
        return (
            f"FaultInjector(drop={self.drop}, duplicate={self.duplicate}, "
            f"reorder={self.reorder}, seed={self.seed})"
        )
