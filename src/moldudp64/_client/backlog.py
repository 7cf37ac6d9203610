"""Back-pressure and overrun accounting, the same for both clients (no I/O).

A client's reader hands event batches to its consumer and weighs each with
:func:`~moldudp64._client.consumer.batch_size`. Once the consumer is more than
``max_backlog`` behind, the reader pauses (stops reading, so the kernel's receive buffer
takes the burst) and resumes when the consumer is back to half of it. What the kernel
drops meanwhile (its per-socket counters, read by the I/O layer) becomes one
:class:`~moldudp64.events.ConsumerOverrun`, handed to the consumer ahead of the next
batch; the core sees those datagrams as gaps.
"""

from __future__ import annotations

from collections.abc import Mapping

from ..events import ConsumerOverrun

__all__ = ["Backlog"]


class Backlog:
    """Pause at ``limit`` messages behind, resume at half; count kernel drops once.

    In the blocking client ``add`` runs in the receiver thread and ``take`` in the
    consumer's: each counter has one writer, and the level is their difference.
    """

    __slots__ = (
        "_base",
        "_pending",
        "_seen",
        "consumed",
        "limit",
        "paused",
        "pauses",
        "produced",
        "resume_asked",
    )

    def __init__(self, limit: int) -> None:
        if limit < 1:
            raise ValueError(f"backlog limit {limit!r} must be positive")
        self.limit = limit
        self.produced = 0  #: weight handed to the consumer (reader only)
        self.consumed = 0  #: weight the consumer took (consumer only)
        self.paused = False
        self.resume_asked = False
        self.pauses = 0
        self._seen: dict[int, int] = {}
        self._base = 0
        self._pending = 0

    # ---------------------------------------------------------------- back-pressure

    @property
    def level(self) -> int:
        """Weight handed out and not yet taken."""
        return self.produced - self.consumed

    def add(self, weight: int) -> bool:
        """The reader handed out ``weight`` more; True if it must pause now."""
        self.produced += weight
        return not self.paused and self.produced - self.consumed > self.limit

    def over(self) -> bool:
        """Whether the consumer is more than ``limit`` behind."""
        return self.produced - self.consumed > self.limit

    def low(self) -> bool:
        """Whether the consumer is back to half the limit (a paused reader may resume)."""
        return self.produced - self.consumed <= self.limit // 2

    def pause(self) -> None:
        """The reader stopped reading."""
        self.paused = True
        self.resume_asked = False
        self.pauses += 1

    def take(self, weight: int) -> bool:
        """The consumer took ``weight``; True once (per pause) when the reader should resume."""
        self.consumed += weight
        if self.paused and not self.resume_asked and self.low():
            self.resume_asked = True
            return True
        return False

    def resume(self) -> None:
        """The reader reads again."""
        self.paused = False
        self.resume_asked = False

    # ---------------------------------------------------------------- kernel drops

    def start_drops(self, inodes: list[int], base: Mapping[int, int] | None) -> None:
        """Watch these sockets; what ``base`` says they dropped already is not ours."""
        base = base or {}
        self._seen = {inode: base.get(inode, 0) for inode in inodes}
        self._base = sum(self._seen.values())
        self._pending = 0

    def count_drops(self, inode: int, total: int) -> None:
        """The kernel says ``inode`` dropped ``total`` datagrams so far (counters only grow)."""
        before = self._seen.get(inode)
        if before is None:
            return  # not a socket of ours
        if total > before:
            self._seen[inode] = total
            self._pending += total - before

    def poll_drops(self, found: Mapping[int, int] | None) -> None:
        """Every counter read at once (:func:`moldudp64.net.read_kernel_drops`)."""
        if found:
            for inode, total in found.items():
                self.count_drops(inode, total)

    def take_overrun(self) -> ConsumerOverrun | None:
        """The drops not reported yet, as one event (None if there are none)."""
        pending = self._pending
        if not pending:
            return None
        self._pending = 0
        return ConsumerOverrun(pending)

    @property
    def kernel_drops(self) -> int:
        """Datagrams the kernel dropped on these sockets since :meth:`start_drops`."""
        return sum(self._seen.values()) - self._base
