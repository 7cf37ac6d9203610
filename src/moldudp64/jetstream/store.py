"""JetStreamStore: a read-only re-request store over one stored session."""

from __future__ import annotations

import asyncio
import bisect
import contextlib
import logging
import threading
from collections import OrderedDict
from typing import TYPE_CHECKING, Any

from ..exceptions import ConfigError
from ..wire import Buffer
from .connection import JetStreamError, _cancel_the_rest, _nats, connect, jetstream_errors
from .records import Record, _decode
from .search import _find, _reaches, _record_at_or_after
from .stream import _stream_info, session_subject, stored_sessions

if TYPE_CHECKING:
    from nats.aio.client import Client as NATS

_log = logging.getLogger(__name__)

#: Records a JetStreamStore remembers the place of (about 100 bytes each).
_KNOWN_RECORDS = 65536


class JetStreamStore:
    """A read-only :class:`~moldudp64.store.MessageStore` over one stored session.

    Runs its own NATS connection on a private event-loop thread, so the blocking and the
    asyncio re-request servers both call it as they call any store (``blocking_io`` is
    true: a cache miss waits one round trip, so the asyncio server calls it from a worker
    thread). Records read are kept
    in an LRU cache of ``cache_records`` records (at most ``cache_records * window``
    messages); the place of every record seen (not its messages; at most 65,536) narrows
    later searches, so a record not cached usually costs one or two lookups (direct gets
    on a stream of one replica). ``next_seq_num`` is re-read at most every ``refresh``
    seconds; a purge (the first record moved) forgets what was known.
    """

    def __init__(
        self,
        servers: str | list[str],
        stream: str,
        session: str,
        *,
        cache_records: int = 64,
        refresh: float = 0.1,
        timeout: float = 5.0,
    ) -> None:
        _nats()
        #: get() and next_seq_num may wait on the network (see MessageStore).
        self.blocking_io = True
        if not isinstance(cache_records, int) or cache_records < 1:
            raise ConfigError(f"cache_records {cache_records!r} must be a positive int")
        self.stream, self.session = stream, session
        self.subject = session_subject(stream, session)
        self.cache_records, self.refresh, self.timeout = cache_records, refresh, timeout
        self._cache: OrderedDict[int, Record] = OrderedDict()  # by first seq
        self._starts: list[int] = []  # sorted first seqs of cached records
        # Every record seen, without its messages (bounded): where to search next time.
        self._known: dict[int, Record] = {}
        self._known_starts: list[int] = []
        self._known_lock = threading.Lock()  # a timed-out search may still be learning
        self._first_stream_seq = 0  # of the session's first record, to see a purge
        self._direct = False  # direct gets: a stream of one replica allowing them
        #: Stream lookups made for records not in the cache.
        self.lookups = 0
        self._first = 1
        self._next = 1
        self._checked = -1.0
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, daemon=True)
        self._thread.start()
        self._nc: NATS | None = None
        try:
            self._nc = self._call(connect(servers))
            self._js = self._nc.jetstream()
            config = self._call(_stream_info(self._js, stream)).config  # never made here
            self._direct = bool(config.allow_direct) and (config.num_replicas or 1) == 1
            self._refresh(force=True)
        except BaseException:
            self.close()
            raise

    def _call(self, coro: Any) -> Any:
        try:
            future = asyncio.run_coroutine_threadsafe(coro, self._loop)
        except RuntimeError:  # the loop is closed: close() ran (from another thread)
            coro.close()
            raise JetStreamError(f"stream {self.stream}: the store is closed") from None
        try:
            with jetstream_errors(f"stream {self.stream}"):
                return future.result(self.timeout)
        except TimeoutError as exc:
            future.cancel()
            raise JetStreamError(f"stream {self.stream}: no answer in {self.timeout}s") from exc

    def _refresh(self, force: bool = False) -> None:
        now = self._loop.time()
        if not force and now - self._checked < self.refresh:
            return
        self._checked = now
        nats = _nats()

        async def tail() -> tuple[Record | None, Record | None]:
            first = await _record_at_or_after(self._js, self.stream, self.subject, 1)
            try:
                last = _decode(await self._js.get_last_msg(self.stream, self.subject))
            except nats.js.errors.NotFoundError:
                last = None
            return first, last

        try:
            first, last = self._call(tail())
        except JetStreamError as exc:  # keep the bounds known; the next refresh tries again
            _log.info("JetStreamStore %s: %s", self.stream, exc)
            return
        if first is not None and last is not None:
            moved = first.stream_seq != self._first_stream_seq
            if moved and not (self._first_stream_seq and first.seq > self._first):
                self._forget()  # new, or purged and refilled: the same numbers elsewhere
            # (The first record moving on to later numbers is retention removing the
            # oldest: what is known of the rest still holds.)
            self._first_stream_seq = first.stream_seq
            self._learn(first)
            self._learn(last)
            self._first, self._next = first.seq, last.next_seq

    def _forget(self) -> None:
        """Drop every record known and cached (the stream is not what it was)."""
        self._forget_places()
        self._cache.clear()
        self._starts.clear()

    def _forget_places(self) -> None:
        """Drop the places of the records known (not the cached records)."""
        with self._known_lock:
            self._known.clear()
            self._known_starts.clear()

    def _learn(self, rec: Record) -> None:
        """Remember where ``rec`` is (not its messages), for later searches."""
        light = Record(rec.stream_seq, rec.kind, rec.seq, rec.count, [], rec.reason)
        with self._known_lock:
            if rec.seq not in self._known:
                if len(self._known) >= _KNOWN_RECORDS:
                    self._known.clear()
                    self._known_starts.clear()
                bisect.insort(self._known_starts, rec.seq)
            self._known[rec.seq] = light

    def _bracket(self, seq: int) -> tuple[Record | None, Record | None]:
        """The nearest known records not reaching ``seq`` and reaching it (or None)."""
        with self._known_lock:
            starts, known = self._known_starts, self._known
            j = bisect.bisect_right(starts, seq)
            below = known[starts[j - 1]] if j > 0 else None
            above = known[starts[j]] if j < len(starts) else None
            if below is not None and _reaches(below, seq):
                above = below
                below = known[starts[j - 2]] if j > 1 else None
            return below, above

    @property
    def first_seq_num(self) -> int:
        """The first stored number of the session."""
        return self._first

    @property
    def next_seq_num(self) -> int:
        """One past the last stored number (re-read at most every ``refresh`` seconds)."""
        self._refresh()
        return self._next

    def stored_sessions(self) -> dict[str, int]:
        """The sessions the stream holds, each with its number of records."""
        sessions: dict[str, int] = self._call(stored_sessions(self._js, self.stream))
        return sessions

    def append(self, message: Buffer) -> int:
        """Refused: the bridge writes the stream."""
        raise ConfigError("JetStreamStore is read-only: a bridge appends to the stream")

    def _find(self, seq: int, below: Record | None, above: Record | None) -> Record | None:
        """The record for ``seq`` (see :func:`find_record`), searched between known records;
        None where the record found does not start where the one before it ends (a record
        no bridge writes is there: serving nothing beats serving what it claims)."""
        found: tuple[Record | None, Record | None, int] = self._call(
            _find(
                self._js,
                self.stream,
                self.session,
                seq,
                below=below,
                above=above,
                direct=self._direct,
                seen=self._learn,
            )
        )
        rec, low, lookups = found
        self.lookups += lookups
        if rec is not None and low is not None and low.kind != "end" and low.next_seq != rec.seq:
            _log.warning(
                "stream %s: stream messages %d and %d on %s do not tile (a record no bridge "
                "writes): not serving %d from them",
                self.stream, low.stream_seq, rec.stream_seq, self.subject, seq,
            )  # fmt: skip
            return None
        return rec

    def _record(self, seq: int) -> Record | None:
        i = bisect.bisect_right(self._starts, seq) - 1
        if i >= 0:
            rec = self._cache.get(self._starts[i])
            if rec is not None and seq < rec.next_seq:
                self._cache.move_to_end(rec.seq)
                return rec
        rec = self._find(seq, *self._bracket(seq))
        if (rec is None or not rec.seq <= seq < rec.next_seq) and self._known:
            # What was known may be stale (a purge, then a refill from a later number):
            # search once more from the stream's own first and last records.
            self._forget_places()
            rec = self._find(seq, None, None)
        if rec is None or not rec.seq <= seq < rec.next_seq or rec.kind != "data":
            return None
        if rec.seq not in self._cache:  # overlapping records may share a start
            bisect.insort(self._starts, rec.seq)
        self._cache[rec.seq] = rec
        while len(self._cache) > self.cache_records:
            old, _ = self._cache.popitem(last=False)
            del self._starts[bisect.bisect_left(self._starts, old)]
        return rec

    def get(self, seq_num: int, max_count: int, max_bytes: int) -> list[bytes]:
        """Whole messages from ``seq_num`` on (empty when not held or lost)."""
        out: list[bytes] = []
        budget = max_bytes
        seq = seq_num
        while len(out) < max_count:
            rec = self._record(seq)
            if rec is None:
                break
            for message in rec.messages[seq - rec.seq :]:
                budget -= 2 + len(message)
                if budget < 0 or len(out) >= max_count:
                    return out
                out.append(message)
            seq = rec.next_seq
        return out

    def close(self) -> None:
        """Close the connection and stop the private loop (idempotent)."""
        if self._loop.is_closed():
            return
        if self._nc is not None:
            nc, self._nc = self._nc, None
            with contextlib.suppress(Exception):  # closing anyway
                self._call(nc.close())
        with contextlib.suppress(Exception):
            self._call(_cancel_the_rest())
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(self.timeout)
        self._loop.close()

    def __repr__(self) -> str:
        return (
            f"JetStreamStore(stream={self.stream!r}, session={self.session!r}, "
            f"first_seq_num={self._first}, next_seq_num={self._next})"
        )
