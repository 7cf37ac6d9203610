"""The bridge: a receiver's events appended to a stream, many messages per record, by
any number of bridges at once (see the package docstring for the redundancy rule)."""

from __future__ import annotations

import asyncio
import logging
import secrets
from collections import deque
from collections.abc import AsyncIterable, Iterable
from dataclasses import dataclass
from time import monotonic as _monotonic
from typing import TYPE_CHECKING

from ..events import Event, Message, MessagesDelivered, MessagesLost, SessionEnded
from ..exceptions import ConfigError
from ..wire import join_blocks
from .connection import (
    _IN_PROCESS,
    _STREAM_FULL,
    _WRONG_LAST_SEQUENCE,
    JetStreamError,
    _nats,
    _transient,
)
from .records import Record, _decode
from .stream import _HEADER_ROOM, DEFAULT_MAX_BYTES, limits_text, session_subject

if TYPE_CHECKING:
    from nats.js import JetStreamContext

_log = logging.getLogger(__name__)
#: Refused records a bridge describes (the rest are counted).
_REFUSED_KEPT = 16
#: How often (seconds) a bridge checks that the stream still holds what it appended ...
_RETAIN_PROBE = 1.0
#: ... namely its oldest record appended within this many seconds.
_RETAIN_WINDOW = 10.0
#: A failed append (the stream away) is retried after this pause (seconds), doubling up
#: to _BACKOFF_MAX, within the outage bound.
_BACKOFF_FIRST = 0.05
_BACKOFF_MAX = 1.0
#: Below this max_payload, records keep only the room their headers can take (else 1 KiB).
_SMALL_PAYLOAD = 8 * _HEADER_ROOM

#: Sequence numbers per aligned batch (one JetStream message holds at most this many).
DEFAULT_WINDOW = 2048
#: A partial batch is appended after the feed was quiet this long (seconds).
DEFAULT_LINGER = 0.05
#: A bridge waits this long (seconds) for an unreachable stream, then fails.
DEFAULT_OUTAGE = 30.0
#: A bridge holds a lost range this long (seconds) before storing it, so that another
#: bridge that has those messages stores them first.
DEFAULT_LOST_GRACE = 0.25


@dataclass(frozen=True, slots=True)
class BridgeStats:
    """A snapshot of a :class:`Bridge`'s counters (``bridge --metrics-port`` serves them).

    ``records_refused`` are records no bridge writes that contradict what the stream holds
    or what the feed has (a foreign end of session behind the stored data, say): the
    bridge appends after them instead of believing them (see ``Bridge.refused``).
    ``lag_messages`` are messages of the newest session the bridge has taken from the feed
    and not yet seen stored (by it or another bridge); ``lag_seconds`` is how long the
    oldest of them has waited (0 when all are stored).
    """

    records_appended: int
    records_skipped: int
    records_refused: int
    conflicts: int
    messages_stored: int
    publish_errors: int
    session: str | None
    taken_next_seq: int
    stored_next_seq: int
    lag_messages: int
    lag_seconds: float


class _Session:
    """What a bridge knows of one session's stored tail."""

    def __init__(self, session: str, subject: str) -> None:
        self.session = session
        self.subject = subject
        self.last_stream_seq = 0  # of the session's last record; 0: none
        self.next_seq: int | None = None  # one past the last stored number
        self.ended = False
        self.end: Record | None = None  # the stored end record, while believed
        # Of the last record believed (appended here, or read and taken as the tail); 0:
        # none. A foreign record after it is refused only while this one is still stored.
        self.tail_stream_seq = 0


class Bridge:
    """Appends a receiver's events to a JetStream stream, many messages per record.

    ``await bridge.run(events)`` takes an async or plain iterable of events
    (``AsyncMoldUDP64.events()``, for one) and returns when it ends. ``MessagesDelivered``
    and ``Message`` become ``data`` records, ``MessagesLost`` a ``lost`` record and
    ``SessionEnded`` the ``end`` record; other events are ignored. Memory is bounded by
    one batch plus ``queue_size`` events waiting (the receiver's own backlog bounds the
    rest). When the stream stops answering (a server restart, a lost leader) the bridge
    waits up to ``outage`` seconds, then raises :class:`JetStreamError` naming that bound;
    meanwhile the receiver's backlog fills and pauses reading, and what the kernel drops
    becomes gaps recovered from the re-request servers. See the module docstring for the
    redundancy rule.
    """

    def __init__(
        self,
        js: JetStreamContext,
        stream: str,
        *,
        window: int = DEFAULT_WINDOW,
        max_bytes: int = DEFAULT_MAX_BYTES,
        linger: float = DEFAULT_LINGER,
        queue_size: int = 1024,
        timeout: float = 5.0,
        outage: float = DEFAULT_OUTAGE,
        lost_grace: float = DEFAULT_LOST_GRACE,
    ) -> None:
        if not isinstance(window, int) or not 1 <= window <= 65535:
            raise ConfigError(f"window {window!r} must be an int in 1..65535")
        if not isinstance(max_bytes, int) or max_bytes < 2:
            raise ConfigError(f"max_bytes {max_bytes!r} must be an int >= 2")
        self.js = js
        self.stream = stream
        self.window = window
        #: This bridge run's part of each Nats-Msg-Id: a stray message elsewhere in the
        #: stream cannot take the id of a record it is about to append.
        self.run_id = secrets.token_hex(8)
        # Records must fit the server's max_payload (1 MiB unless configured lower).
        limit = getattr(getattr(js, "_nc", None), "max_payload", None)
        self._max_payload = limit if isinstance(limit, int) and limit > 0 else None
        if self._max_payload is not None:
            room = _HEADER_ROOM if self._max_payload >= _SMALL_PAYLOAD else _header_bound(stream)
            max_bytes = max(2, min(max_bytes, self._max_payload - room))
        self.max_bytes = max_bytes
        self.linger = linger
        self.timeout = timeout
        self.outage = outage
        self.lost_grace = lost_grace
        self._trouble_since: float | None = None
        self._backoff = _BACKOFF_FIRST  # the next pause after a failed append
        self._queue: asyncio.Queue[Event | Message | None] = asyncio.Queue(queue_size)
        self._sessions: dict[str, _Session] = {}
        self._batch: list[bytes] = []
        self._batch_session = ""
        self._batch_seq = 0
        self._batch_bytes = 0
        #: Records appended by this bridge / skipped as stored by another / refused appends.
        self.appended = 0
        self.skipped = 0
        self.conflicts = 0
        #: Records refused (counted), and the first ``_REFUSED_KEPT`` described: each names
        #: its stream sequence and what it says against the stream or the feed.
        self.records_refused = 0
        self.refused: list[str] = []
        #: Messages this bridge stored (in its own records).
        self.messages_stored = 0
        #: Appends that failed: the stream away or refusing (each retried or fatal).
        self.publish_errors = 0
        # Lag: the newest session taken, one past its last number taken and stored, and
        # (one past the last number, loop time) per event taken and not yet stored.
        self._lag_session: str | None = None
        self._taken_next = 0
        self._stored_next = 0
        self._taken: deque[tuple[int, float]] = deque()
        # Records appended, (stream seq, time, kind, seq, count, Nats-Msg-Id), for the
        # retention probe.
        self._appends: deque[tuple[int, float, str, int, int, str]] = deque()
        self._probed = -_RETAIN_PROBE

    @property
    def stats(self) -> BridgeStats:
        """The counters and the lag behind the feed, now (safe from another thread)."""
        taken: list[tuple[int, float]] = []
        for _ in range(3):  # the loop's thread may change the deque meanwhile
            try:
                taken = list(self._taken)
                break
            except RuntimeError:
                continue
        stored = self._stored_next
        waiting = [t for nxt, t in taken if nxt > stored]
        return BridgeStats(
            records_appended=self.appended,
            records_skipped=self.skipped,
            records_refused=self.records_refused,
            conflicts=self.conflicts,
            messages_stored=self.messages_stored,
            publish_errors=self.publish_errors,
            session=self._lag_session,
            taken_next_seq=self._taken_next,
            stored_next_seq=stored,
            lag_messages=max(0, self._taken_next - stored) if self._taken_next else 0,
            lag_seconds=max(0.0, _monotonic() - waiting[0]) if waiting else 0.0,
        )

    def _note_taken(self, session: str, next_seq: int) -> None:
        """Messages of ``session`` up to ``next_seq`` were taken from the feed now."""
        if session != self._lag_session:
            self._lag_session, self._stored_next = session, 0
            self._taken.clear()
        self._taken_next = max(self._taken_next, next_seq) if self._taken else next_seq
        self._taken.append((next_seq, _monotonic()))

    def _note_stored(self, state: _Session) -> None:
        """The stream holds ``state``'s session up to its ``next_seq``."""
        if state.next_seq is None or state.session != self._lag_session:
            return
        self._stored_next = max(self._stored_next, state.next_seq)
        taken = self._taken
        while taken and taken[0][0] <= self._stored_next:
            taken.popleft()

    # -- intake ------------------------------------------------------------------------
    async def run(self, events: AsyncIterable[Event | Message] | Iterable[Event | Message]) -> None:
        """Append every event of ``events``; return when it ends and all is stored."""
        nats = _nats()
        feeder = asyncio.ensure_future(self._feed(events))
        try:
            await self._drain()
            await feeder  # its exception, if any
            await self._probe_retained()  # the last look: is what was appended still there?
        except nats.errors.Error as exc:
            raise JetStreamError(f"bridge to {self.stream}: {exc!r}") from exc
        finally:
            feeder.cancel()

    async def _feed(
        self, events: AsyncIterable[Event | Message] | Iterable[Event | Message]
    ) -> None:
        queue = self._queue
        take = self._take
        try:
            if isinstance(events, AsyncIterable):
                async for ev in events:
                    take(ev)
                    if queue.full():
                        await queue.put(ev)
                    else:
                        queue.put_nowait(ev)
            else:
                for ev in events:
                    take(ev)
                    await queue.put(ev)
        finally:
            await queue.put(None)

    def _take(self, ev: Event | Message) -> None:
        if isinstance(ev, MessagesDelivered):
            self._note_taken(ev.session, ev.seq_num + len(ev.messages))
        elif isinstance(ev, Message):
            self._note_taken(ev.session, ev.seq_num + 1)

    async def _drain(self) -> None:
        queue = self._queue
        while True:
            if not queue.empty():
                ev = queue.get_nowait()  # no wait, no timer: the common case at full rate
            elif self._batch:
                try:
                    ev = await asyncio.wait_for(queue.get(), self.linger)
                except TimeoutError:
                    await self.flush()
                    continue
            else:
                ev = await queue.get()
            if ev is None:
                await self.flush()
                return
            await self.add(ev)

    async def add(self, ev: Event | Message) -> None:
        """Take one event (batched; call :meth:`flush` to store a partial batch now)."""
        if isinstance(ev, MessagesDelivered):
            await self._add_messages(ev.session, ev.seq_num, ev.messages)
        elif isinstance(ev, Message):
            await self._add_message(ev.session, ev.seq_num, ev.data)
        elif isinstance(ev, MessagesLost):
            await self.flush()
            if self.lost_grace > 0:  # another bridge may have these: let it store them first
                await asyncio.sleep(self.lost_grace)
                await self._sync_quietly(self._session(ev.session))
            await self._append(ev.session, "lost", ev.first_seq, ev.count, [], ev.reason)
        elif isinstance(ev, SessionEnded):
            await self.flush()
            await self._append(ev.session, "end", ev.next_seq_num, 0, [])

    async def _add_messages(self, session: str, seq: int, messages: list[bytes]) -> None:
        """Messages seq, seq+1, ... batched as :meth:`_add_message` would, a window-aligned
        slice at a time (one await per slice, not per message)."""
        window, pos, end = self.window, 0, len(messages)
        while pos < end:
            batch = self._batch
            if batch and (session != self._batch_session or seq != self._batch_seq + len(batch)):
                await self.flush()
                batch = self._batch
            stop = min(end, pos + window - (seq - 1) % window)  # to this window's last number
            part = messages[pos:stop]
            size = 2 * len(part) + sum(map(len, part))
            if self._batch_bytes + size > self.max_bytes:  # a max_bytes cut in this slice
                for data in part:
                    await self._add_message(session, seq, data)
                    seq += 1
                pos = stop
                continue
            if not batch:
                self._batch_session, self._batch_seq = session, seq
            batch.extend(part)
            self._batch_bytes += size
            seq += len(part)
            pos = stop
            if (seq - 1) % window == 0:  # the slice ended its aligned window
                await self.flush()

    async def _add_message(self, session: str, seq: int, data: bytes) -> None:
        batch = self._batch
        if batch and (
            session != self._batch_session
            or seq != self._batch_seq + len(batch)
            or self._batch_bytes + 2 + len(data) > self.max_bytes
        ):
            await self.flush()
            batch = self._batch
        if not batch:
            self._batch_session, self._batch_seq = session, seq
        batch.append(data)
        self._batch_bytes += 2 + len(data)
        if seq % self.window == 0:  # the last number of an aligned window
            await self.flush()

    async def flush(self) -> None:
        """Append the partial batch, if any."""
        if self._batch:
            batch, self._batch, self._batch_bytes = self._batch, [], 0
            await self._append(self._batch_session, "data", self._batch_seq, len(batch), batch)

    # -- appending ---------------------------------------------------------------------
    def _session(self, session: str) -> _Session:
        state = self._sessions.get(session)
        if state is None:
            state = self._sessions[session] = _Session(
                session, session_subject(self.stream, session)
            )
        return state

    async def _sync(self, state: _Session) -> None:
        """Read the session's last record and take it as the stored tail, unless it is
        foreign: damaged, starting behind the tail this bridge knows (a bridge starts each
        record at the stored end), or beyond it with no record between, while that tail
        is still stored."""
        nats = _nats()
        try:
            msg = await self.js.get_last_msg(self.stream, state.subject)
        except nats.js.errors.NotFoundError:
            state.last_stream_seq, state.next_seq, state.ended = 0, None, False
            state.end, state.tail_stream_seq = None, 0
            return
        if (msg.seq or 0) == state.last_stream_seq:
            return  # what this bridge knows (an append that timed out but was stored)
        try:
            record = _decode(msg)
        except JetStreamError as exc:
            if not await self._tail_still_stored(state):
                raise
            self._refuse(state, msg.seq or 0, str(exc))
            return
        known = state.next_seq
        if known is not None and record.seq < known and await self._tail_still_stored(state):
            said = _said(record)
            self._refuse(state, record.stream_seq, f"{said}, behind message {known - 1} stored")
            return
        if (
            known is not None
            and record.seq > known
            and await self._next_after_tail(state) == record.stream_seq  # nothing between
        ):  # a bridge stores the numbers between (as lost if it must) before going on
            said = _said(record)
            self._refuse(state, record.stream_seq, f"{said}, but {known} is not stored")
            return
        state.last_stream_seq = state.tail_stream_seq = record.stream_seq
        state.next_seq = record.next_seq
        state.ended = record.kind == "end"
        state.end = record if state.ended else None
        self._note_stored(state)

    async def _tail_still_stored(self, state: _Session) -> bool:
        """Whether the last record this bridge believed of the session is still stored
        (not purged or removed by retention: then the stream's tail is the truth)."""
        if not state.tail_stream_seq:
            return False
        nats = _nats()
        try:
            await self.js.get_msg(self.stream, state.tail_stream_seq)
        except nats.js.errors.NotFoundError:
            return False
        return True

    async def _next_after_tail(self, state: _Session) -> int | None:
        """The stream sequence of the session's first record after the one this bridge
        believed last (None: none, or that one is gone)."""
        if not state.tail_stream_seq:
            return None
        nats = _nats()
        try:
            msg = await self.js.get_msg(
                self.stream, seq=state.tail_stream_seq + 1, subject=state.subject, next=True
            )
        except nats.js.errors.NotFoundError:
            return None
        return msg.seq

    def _refuse(self, state: _Session, stream_seq: int, what: str) -> None:
        """Append after the foreign record ``stream_seq`` without believing it; say so."""
        self.records_refused += 1
        text = f"stream message {stream_seq} on {state.subject}: {what}"
        if len(self.refused) < _REFUSED_KEPT:
            self.refused.append(text)
        _log.warning(
            "stream %s: refused %s (a record no bridge writes); appending after it",
            self.stream,
            text,
        )
        state.last_stream_seq = stream_seq
        state.ended, state.end = False, None
        self._note_stored(state)

    async def _append(
        self, session: str, kind: str, seq: int, count: int, messages: list[bytes], reason: str = ""
    ) -> None:
        state = self._session(session)
        if state.last_stream_seq == 0 and state.next_seq is None:
            await self._sync_quietly(state)
        while True:
            end = state.end
            if end is not None and kind == "data" and seq + count > end.seq:
                # The feed has messages at or after the stored end: the end is a lie.
                first = max(seq, end.seq)
                self._refuse(state, end.stream_seq, f"{_said(end)}, the feed has message {first}")
            elif state.ended:
                self.skipped += 1
                return
            stored = state.next_seq
            if stored is not None:
                if seq + count <= stored and kind != "end":
                    self.skipped += 1
                    return
                if kind == "end" and seq < stored:
                    seq = stored  # cannot end before what is stored
                if seq < stored:
                    cut = stored - seq
                    messages = messages[cut:] if kind == "data" else messages
                    seq, count = stored, count - cut
                elif seq > stored:
                    await self._append(
                        session, "lost", stored, seq - stored, [], "not received by the bridge"
                    )
                    continue
            if await self._publish(state, kind, seq, count, messages, reason):
                if kind == "data":
                    self.messages_stored += count
                return

    async def _publish(
        self, state: _Session, kind: str, seq: int, count: int, messages: list[bytes], reason: str
    ) -> bool:
        """One conditional append; False (state re-read) when another bridge was first."""
        nats = _nats()
        headers = {
            "Mold-Kind": kind,
            "Mold-Seq": str(seq),
            "Mold-Count": str(count),
            "Nats-Msg-Id": f"{state.subject}:{seq}:{self.run_id}",
            "Nats-Expected-Last-Subject-Sequence": str(state.last_stream_seq),
        }
        if reason:
            headers["Mold-Reason"] = reason
        payload = join_blocks(messages) if messages else b""
        limit = self._max_payload
        if limit is not None:
            size = len(payload) + 12 + sum(len(k) + len(v) + 4 for k, v in headers.items())
            if size > limit:  # one message larger than the server takes
                raise JetStreamError(
                    f"append to {self.stream}: message {seq} makes a record of {size} bytes, "
                    f"over the NATS server's max_payload ({limit}): raise max_payload"
                )
        for attempt in range(50):
            try:
                ack = await self.js.publish(
                    state.subject, payload, timeout=self.timeout, headers=headers
                )
                break
            except _transient() as exc:
                self.publish_errors += 1
                if getattr(exc, "err_code", None) == _STREAM_FULL:
                    raise JetStreamError(
                        f"stream {self.stream} is full and discards new messages: "
                        f"{getattr(exc, 'description', None) or exc!r}"
                    ) from exc
                now = asyncio.get_running_loop().time()
                if self._trouble_since is None:
                    self._trouble_since = now
                elif now - self._trouble_since > self.outage:
                    raise JetStreamError(
                        f"appends to {self.stream} failing for {self.outage} s (the bridge's "
                        f"outage bound): {exc!r}"
                    ) from exc
                _log.info("append to %s: %r; waiting for the stream", self.stream, exc)
                # A pause, doubling up to _BACKOFF_MAX: no request storm on servers that
                # are recovering (within the outage bound).
                left = self._trouble_since + self.outage - now
                await asyncio.sleep(max(0.0, min(self._backoff, left)))
                self._backoff = min(_BACKOFF_MAX, self._backoff * 2)
                await self._sync_quietly(state)
                return False
            except nats.js.errors.APIError as exc:
                if exc.err_code == _WRONG_LAST_SEQUENCE:
                    self.conflicts += 1  # another bridge appended first: not an error
                    await self._sync_quietly(state)
                    return False
                if exc.err_code == _IN_PROCESS:
                    await asyncio.sleep(0.01 * (attempt + 1))
                    continue
                self.publish_errors += 1
                raise JetStreamError(f"append to {self.stream} refused: {exc}") from exc
            except nats.errors.MaxPayloadError as exc:
                self.publish_errors += 1
                raise JetStreamError(
                    f"append to {self.stream}: {_said_new(kind, seq, count)} makes a stream "
                    f"message of {len(payload)} bytes and headers, over the NATS server's "
                    f"max_payload ({limit}): raise max_payload"
                ) from exc
        else:
            raise JetStreamError(f"append to {self.stream}: duplicate still in process")
        self._trouble_since = None
        self._backoff = _BACKOFF_FIRST
        if ack.duplicate:
            self.conflicts += 1
            await self._sync_quietly(state)
            if not state.ended and (state.next_seq is None or state.next_seq <= seq):
                # The message the server remembers by this id (this run's own, the id
                # holds the run's random part) is not the session's record: retrying would
                # be refused the same way until the duplicate window passes.
                raise JetStreamError(
                    f"append to {self.stream} refused as a duplicate (Nats-Msg-Id "
                    f"{headers['Nats-Msg-Id']}) of stream message {ack.seq}, which is not "
                    "the session's record (deleted or purged within the stream's duplicate "
                    "window, or a message no bridge writes): wait for the window to pass, "
                    "or use another stream"
                )
            return False
        self.appended += 1
        state.last_stream_seq = state.tail_stream_seq = ack.seq
        state.next_seq = seq + count
        state.ended = kind == "end"
        state.end = None  # this bridge's own end: nothing more to store
        self._note_stored(state)
        await self._check_retained(ack.seq, kind, seq, count, headers["Nats-Msg-Id"])
        return True

    async def _check_retained(
        self, stream_seq: int, kind: str, seq: int, count: int, msg_id: str
    ) -> None:
        """Note an append; every ``_RETAIN_PROBE`` seconds, :meth:`_probe_retained`."""
        now = _monotonic()
        self._appends.append((stream_seq, now, kind, seq, count, msg_id))
        if len(self._appends) > 4096:
            self._appends.popleft()
        if now - self._probed >= _RETAIN_PROBE:
            await self._probe_retained()

    async def _probe_retained(self) -> None:
        """That the oldest record this bridge appended in the last ``_RETAIN_WINDOW``
        seconds is still stored (the message at its stream sequence carries its
        Nats-Msg-Id: a stream deleted and created again reuses the sequences);
        JetStreamError naming the stream's limits when it is gone (they discard appends:
        what the bridge stores could not be read back)."""
        now = self._probed = _monotonic()
        appends = self._appends
        while appends and now - appends[0][1] > _RETAIN_WINDOW:
            appends.popleft()
        if not appends:
            return
        nats = _nats()
        stream_seq, when, kind, seq, count, msg_id = appends[0]
        try:
            msg = await self.js.get_msg(self.stream, stream_seq)
        except nats.js.errors.NotFoundError:
            pass
        except _transient():  # away: the appends find out
            return
        else:
            found = str((msg.headers or {}).get("Nats-Msg-Id", ""))
            if found == msg_id:
                return
            what = _said_new(kind, seq, count)
            raise JetStreamError(
                f"stream {self.stream} was deleted and created again (or replaced) under the "
                f"bridge: stream sequence {stream_seq}, where it appended record {what}, now "
                f"holds another message; what it appended before is gone"
            )
        try:
            limits = limits_text((await self.js.stream_info(self.stream)).config)
        except nats.errors.Error:
            limits = "unknown"
        what = _said_new(kind, seq, count)
        raise JetStreamError(
            f"stream {self.stream} does not keep what the bridge appends: record {what} "
            f"(stream sequence {stream_seq}) was gone {now - when:.1f} s after it was "
            f"appended (the stream's limits: {limits}; or it was purged, or the record deleted)"
        )

    async def _sync_quietly(self, state: _Session) -> None:
        """Re-read the session's tail, waiting up to ``outage`` seconds for the stream."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.outage
        delay = 0.05
        while True:
            try:
                await self._sync(state)
                return
            except _transient() as exc:
                if loop.time() >= deadline:
                    raise JetStreamError(
                        f"stream {self.stream} unreachable for {self.outage} s (the bridge's "
                        f"outage bound): {exc!r}"
                    ) from exc
                await asyncio.sleep(delay)
                delay = min(1.0, delay * 2)


def _said_new(kind: str, seq: int, count: int) -> str:
    """A record about to be (or just) appended, in words."""
    return f"{kind} {seq}" + (f"..{seq + count - 1}" if count > 1 else "")


def _header_bound(stream: str) -> int:
    """The most bytes the headers of one of a bridge's records take on ``stream`` (NATS
    counts them in max_payload): the version line, each ``Key: value``, the blank line."""
    subject = len(stream) + 3 + 20  # NAME.s.<20 hex digits>
    values = {
        "Mold-Kind": 4,
        "Mold-Seq": 20,
        "Mold-Count": 20,
        "Nats-Msg-Id": subject + 1 + 20 + 1 + 16,
        "Nats-Expected-Last-Subject-Sequence": 20,
    }
    return len("NATS/1.0\r\n\r\n") + sum(len(k) + 4 + n for k, n in values.items())


def _said(record: Record) -> str:
    """What ``record`` claims, in words."""
    if record.kind == "end":
        return f"end of session at {record.seq}"
    last = record.next_seq - 1
    return f"{record.kind} {record.seq}" + (f"..{last}" if last > record.seq else "")
