"""Reading a stored session: from any sequence number, following live appends."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator, Iterator
from typing import TYPE_CHECKING, Any

from ..events import Message, MessagesDelivered, MessagesLost, SessionEnded
from ..exceptions import ConfigError
from .connection import (
    JetStreamError,
    _cancel_the_rest,
    _nats,
    _transient,
    connect,
    jetstream_errors,
)
from .records import Record, _decode
from .search import _find, _message_at_or_after, _record_at_or_after
from .stream import (
    _stream_created,
    _stream_info,
    check_stream_name,
    latest_session,
    session_subject,
)

if TYPE_CHECKING:
    from nats.aio.client import Client as NATS
    from nats.js import JetStreamContext
    from nats.js.api import RawStreamMsg

_log = logging.getLogger(__name__)


async def _next_records(
    js: JetStreamContext, stream: str, subject: str, after: int, ahead: int, direct: bool = False
) -> list[Record]:
    """The subject's records from stream sequence ``after`` on, ``ahead`` lookups at once.

    Lookup i asks for the first record at or after ``after + i``: every record of the
    subject in ``after .. after + ahead - 1`` answers its own lookup, so the distinct
    answers, sorted, are all of them (and maybe the next one): none is skipped. Answers
    after the first "none" are dropped: a replica answering a direct get may lag the
    leader, and what it holds is a prefix of the stream, so a record it did return is truly
    the first at or after its lookup, but a "none" may hide records a later lookup's
    replica returned past. Empty when there is none yet or the stream is briefly away. A
    damaged record ends the list, and is the JetStreamError of the call that finds it first.
    """
    try:
        found = await asyncio.gather(
            *(_message_at_or_after(js, stream, subject, after + i, direct) for i in range(ahead))
        )
    except _transient() as exc:
        _log.info("reading %s: %r; trying again", stream, exc)
        return []
    unique: dict[int, RawStreamMsg] = {}
    for msg in found:
        if msg is None:
            break
        unique[msg.seq or 0] = msg
    records: list[Record] = []
    for k in sorted(unique):
        try:
            records.append(_decode(unique[k]))
        except JetStreamError:
            if records:
                break  # those before it are read first
            raise
    return records


async def _check_same_stream(js: JetStreamContext, stream: str, created: object) -> None:
    """JetStreamError when ``stream`` was deleted (or replaced) while being read."""
    try:
        now = await _stream_created(js, stream)
    except _transient() as exc:  # away for now: the reads wait it out too
        _log.info("reading %s: %r; trying again", stream, exc)
        return
    except JetStreamError:
        raise JetStreamError(f"stream {stream} was deleted while being read") from None
    if now != created:
        raise JetStreamError(f"stream {stream} was deleted and created again while being read")


#: A reader waiting for records checks this often (seconds) that its stream still exists.
_STREAM_CHECK = 1.0


@contextlib.contextmanager
def _reading(stream: str) -> Iterator[None]:
    """nats-py's errors as JetStreamError; a closed connection says why it closed."""
    nats = _nats()
    try:
        with jetstream_errors(f"reading stream {stream}"):
            yield
    except JetStreamError as exc:
        if isinstance(exc.__cause__, nats.errors.ConnectionClosedError):
            raise JetStreamError(
                f"reading stream {stream}: the NATS connection closed (no server answered "
                "its reconnect attempts)"
            ) from exc.__cause__
        raise


class _Patience:
    """A reader waiting for records: ``poll`` seconds a turn, until ``idle_timeout`` (None:
    for ever), checking every ``_STREAM_CHECK`` seconds that its stream is still the one
    created at ``created`` (JetStreamError when deleted or replaced)."""

    def __init__(
        self,
        js: JetStreamContext,
        stream: str,
        created: object,
        poll: float,
        idle_timeout: float | None,
        loop: asyncio.AbstractEventLoop,
    ) -> None:
        self.js, self.stream, self.created = js, stream, created
        self.poll, self.idle_timeout, self.loop = poll, idle_timeout, loop
        self.restart()

    def restart(self) -> None:
        """Something came: the idle clock starts again."""
        self.idle_since = self.checked = self.loop.time()

    async def wait(self) -> bool:
        """One turn of waiting; False once idle for ``idle_timeout``."""
        now = self.loop.time()
        if self.idle_timeout is not None and now - self.idle_since > self.idle_timeout:
            return False
        if now - self.checked >= _STREAM_CHECK:
            self.checked = now
            await _check_same_stream(self.js, self.stream, self.created)
        await asyncio.sleep(self.poll)
        return True


async def read_batches(
    js: JetStreamContext,
    stream: str,
    session: str,
    start_seq: int = 1,
    *,
    poll: float = 0.02,
    idle_timeout: float | None = None,
    ahead: int = 16,
) -> AsyncIterator[MessagesDelivered | MessagesLost | SessionEnded]:
    """The stored session from ``start_seq`` on, a record at a time: ``MessagesDelivered``,
    ``MessagesLost`` where the bridge stored loss (or where no record covers a number: the
    stream was written by something else, or a retention limit removed its oldest records),
    following live appends (``ahead`` lookups in flight); ends after ``SessionEnded`` (the
    stored end of session; its ``next_seq_num`` is below ``start_seq`` when the session
    ended before it), or after ``idle_timeout`` seconds without a new record.

    Records behind what was read (overlapping or out of order) are skipped; the stream
    away for a while is waited out (as long as the connection keeps reconnecting); the
    stream deleted while waiting, a damaged record, an end of session behind what was read
    or with records after it (a record no bridge writes), or a closed connection are
    JetStreamError (naming the record), after everything before it."""
    if not isinstance(start_seq, int) or start_seq < 1:
        raise ConfigError(f"start_seq {start_seq!r} must be a positive int")
    check_stream_name(stream)
    subject = session_subject(stream, session)
    loop = asyncio.get_running_loop()
    with _reading(stream):
        info = await _stream_info(js, stream)
        created = info.created
        direct = bool(info.config.allow_direct)  # cheaper gets, where the stream allows them
        patience = _Patience(js, stream, created, poll, idle_timeout, loop)
        while True:
            try:
                rec, low, _ = await _find(js, stream, session, start_seq)
                if rec is not None and low is not None and low.next_seq != rec.seq:
                    # The tiling is broken where the search landed: a record no bridge
                    # writes may have misled it; read from the session's first record.
                    rec = await _record_at_or_after(js, stream, subject, 1, direct)
            except _transient() as exc:
                _log.info("reading %s: %r; trying again", stream, exc)
                rec = None
            if rec is not None:
                break
            if not await patience.wait():
                return
        want = start_seq  # the next number to deliver
        prev: Record | None = None  # the last record taken
        records = [rec]
        while True:
            for i, rec in enumerate(records):
                follows = records[i + 1] if i + 1 < len(records) else None
                if prev is not None and prev.kind != "end" and rec.seq != prev.next_seq:
                    await _check_tiling(js, stream, subject, prev, rec, follows, direct)
                if rec.kind == "end":
                    await _check_end(js, stream, subject, rec, follows, want, start_seq, direct)
                prev = rec
                if rec.seq > want:  # a hole no record covers
                    yield MessagesLost(session, want, rec.seq - 1, "not in the stream")
                    want = rec.seq
                if rec.kind == "end":  # behind want only when nothing was read
                    yield SessionEnded(session, rec.seq)
                    return
                if rec.next_seq > want:
                    skip = max(0, want - rec.seq)
                    if rec.kind == "data":
                        messages = rec.messages[skip:] if skip else rec.messages
                        yield MessagesDelivered(session, rec.seq + skip, messages)
                    else:
                        yield MessagesLost(session, rec.seq + skip, rec.next_seq - 1, rec.reason)
                    want = rec.next_seq
            after = records[-1].stream_seq + 1
            patience.restart()
            while not (records := await _next_records(js, stream, subject, after, ahead, direct)):
                if not await patience.wait():
                    return


async def _still_stored(
    js: JetStreamContext, stream: str, subject: str, rec: Record, direct: bool
) -> bool:
    """Whether ``rec`` is still in the stream (not removed by retention or a purge)."""
    msg = await _message_at_or_after(js, stream, subject, rec.stream_seq, direct)
    return msg is not None and msg.seq == rec.stream_seq


async def _check_tiling(
    js: JetStreamContext,
    stream: str,
    subject: str,
    prev: Record,
    rec: Record,
    follows: Record | None,
    direct: bool,
) -> None:
    """JetStreamError naming ``rec`` when it contradicts ``prev``, the record before it (a
    bridge starts each record where the one before it ends): it starts behind ``prev``'s
    end while ``prev`` is still stored, or it leaves a hole that the record after it fills
    (a bridge refused it and appended after ``prev``). A hole nothing fills is loss; a
    record behind one that retention removed meanwhile is skipped."""
    if rec.kind == "end":
        return  # _check_end names it
    if rec.seq < prev.next_seq:
        if not await _still_stored(js, stream, subject, prev, direct):
            return  # prev gone: the stream changed under the reader
        why = (
            f"behind message {prev.next_seq - 1} stored before it (stream message "
            f"{prev.stream_seq})"
        )
    else:
        if follows is None:
            try:
                msg = await _message_at_or_after(js, stream, subject, rec.stream_seq + 1, direct)
                follows = None if msg is None else _decode(msg)
            except (JetStreamError, _nats().errors.Error):
                follows = None  # no evidence now: read on (the next record is checked too)
        if follows is None or follows.seq != prev.next_seq:
            return  # a hole: reported lost
        why = (
            f"leaving a hole after message {prev.next_seq - 1} (stream message "
            f"{prev.stream_seq}) that stream message {follows.stream_seq} fills"
        )
    raise JetStreamError(
        f"stream {stream}: stream message {rec.stream_seq} on {subject} says {_said(rec)}, "
        f"{why}: a record no bridge writes (delete it from the stream to read on)"
    )


def _said(record: Record) -> str:
    """What ``record`` claims, in words."""
    if record.kind == "end":
        return f"end of session at {record.seq}"
    last = record.next_seq - 1
    return f"{record.kind} {record.seq}" + (f"..{last}" if last > record.seq else "")


async def _check_end(
    js: JetStreamContext,
    stream: str,
    subject: str,
    end: Record,
    follows: Record | None,
    want: int,
    start_seq: int,
    direct: bool,
) -> None:
    """JetStreamError naming ``end`` when it contradicts the stream: it ends the session
    behind what was read, or a record of the session follows it (a bridge appends none
    after its end; one that refuses a foreign end appends after it)."""
    if end.seq < want and want > start_seq:
        why = f"behind message {want - 1} read before it"
    else:
        later = follows.stream_seq if follows is not None else None
        while later is None:
            try:
                msg = await _message_at_or_after(js, stream, subject, end.stream_seq + 1, direct)
            except _transient() as exc:  # away for now: ask again
                _log.info("reading %s: %r; trying again", stream, exc)
                await asyncio.sleep(0.1)
                continue
            if msg is None:
                return  # the session's last record: the end it says
            later = msg.seq
        why = f"but stream message {later} of the session follows it"
    raise JetStreamError(
        f"stream {stream}: stream message {end.stream_seq} on {subject} ends the session at "
        f"{end.seq}, {why}: a record no bridge writes (delete it from the stream to read on)"
    )


async def read_session(
    js: JetStreamContext,
    stream: str,
    session: str,
    start_seq: int = 1,
    *,
    poll: float = 0.02,
    idle_timeout: float | None = None,
) -> AsyncIterator[Message | MessagesLost | SessionEnded]:
    """As :func:`read_batches`, one ``Message`` at a time."""
    batches = read_batches(js, stream, session, start_seq, poll=poll, idle_timeout=idle_timeout)
    async for ev in batches:
        if isinstance(ev, MessagesDelivered):
            seq = ev.seq_num
            for i, data in enumerate(ev.messages):
                yield Message(session, seq + i, data)
        else:
            yield ev


def iter_session(
    servers: str | list[str],
    stream: str,
    session: str | None = None,
    start_seq: int = 1,
    *,
    idle_timeout: float | None = None,
    batches: bool = False,
) -> Iterator[Message | MessagesDelivered | MessagesLost | SessionEnded]:
    """The blocking API: :func:`read_session` (or :func:`read_batches` with ``batches``)
    from a plain ``for`` loop, with its own connection to ``servers`` and a private event
    loop in the calling thread (so not from inside a coroutine). ``session`` None: the
    stream's newest. Breaking out of the loop (or ``close()``) closes the connection;
    nats-py's errors arrive as :class:`JetStreamError`."""
    loop = asyncio.new_event_loop()
    nc: NATS | None = None
    items: AsyncIterator[Any] | None = None
    try:
        with jetstream_errors(f"stream {stream}"):
            nc = loop.run_until_complete(connect(servers))
            js = nc.jetstream()
            if session is None:
                session = loop.run_until_complete(latest_session(js, stream))
                if session is None:
                    raise JetStreamError(f"stream {stream} holds no session yet")
            read = read_batches if batches else read_session
            items = read(js, stream, session, start_seq, idle_timeout=idle_timeout)
            while True:
                try:
                    item = loop.run_until_complete(anext(items))
                except StopAsyncIteration:
                    return
                yield item
    finally:
        if items is not None:
            with contextlib.suppress(Exception):  # closing anyway
                loop.run_until_complete(items.aclose())  # type: ignore[attr-defined]
        if nc is not None:
            with contextlib.suppress(Exception):
                loop.run_until_complete(nc.close())
        with contextlib.suppress(Exception):
            loop.run_until_complete(_cancel_the_rest())
        loop.close()
