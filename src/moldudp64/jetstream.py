"""The feed in NATS JetStream: a bridge that appends it, a reader that replays it, a store.

Needs the ``nats`` extra (``pip install 'moldudp64[nats]'``); nats-py is imported on first
use, so the base install works without it.

Stream layout
    One stream (``NAME``, created when absent) with subjects ``NAME.>``; session ``S`` is
    subject ``NAME.s.<hex of the 10 session bytes>`` (sessions may hold spaces and dots,
    which subjects may not). Defaults: file storage, limits retention (nothing is removed
    until you set ``max_age``/``max_bytes``), a 2-minute duplicate window, direct get allowed.
    Each stream message is one *record*, its headers say what it holds:

    ``Mold-Kind: data``
        ``Mold-Seq: F``, ``Mold-Count: C``: the payload is the messages F..F+C-1 as
        MoldUDP64 blocks (2-byte big-endian length + data)
    ``Mold-Kind: lost``
        messages F..F+C-1 were lost (``Mold-Reason``); empty payload
    ``Mold-Kind: end``
        end of session; ``Mold-Seq`` is the next sequence number

    The records of a session tile it in order from its first stored number: no overlap,
    no hole (a hole a bridge cannot fill is stored as a ``lost`` record).

Redundancy rule (any number of bridges on one feed and stream)
    Every append carries ``Nats-Expected-Last-Subject-Sequence``: the stream sequence of the
    session's last record as this bridge knows it. If another bridge appended since, the
    server refuses; the bridge then reads the session's last record, drops what is already
    stored (a record that overlaps is cut to start at the stored end) and tries again. So
    records are appended one after another like a compare-and-swap, each message exactly
    once, in order, whichever bridge dies when. Batches are cut at aligned windows of
    sequence numbers (batch k holds k*N+1..(k+1)*N, cut earlier only by ``max_bytes`` or
    when the feed idles for ``linger`` seconds) so two live bridges build identical records
    and the loser's is simply skipped; ``Nats-Msg-Id`` = session:first seq lets the server
    drop a retried append too. A bridge holds a lost range for ``lost_grace`` seconds
    before storing it, so another bridge that has those messages stores them first; past
    that, the first bridge to reach a position decides it (a stored lost range stays).
"""

from __future__ import annotations

import asyncio
import bisect
import contextlib
import logging
import struct
import threading
from collections import OrderedDict, deque
from collections.abc import AsyncIterable, AsyncIterator, Callable, Iterable, Iterator
from dataclasses import dataclass
from time import monotonic as _monotonic
from typing import TYPE_CHECKING, Any

from .events import Event, Message, MessagesDelivered, MessagesLost, SessionEnded
from .exceptions import ConfigError, MissingDependency, MoldUDP64Error
from .wire import Buffer, c_parse_blocks, encode_session, join_blocks

if TYPE_CHECKING:
    from nats.aio.client import Client as NATS
    from nats.js import JetStreamContext
    from nats.js.api import RawStreamMsg, StreamInfo

__all__ = [
    "DEFAULT_DUPLICATE_WINDOW",
    "DEFAULT_LINGER",
    "DEFAULT_LOST_GRACE",
    "DEFAULT_MAX_BYTES",
    "DEFAULT_OUTAGE",
    "DEFAULT_WINDOW",
    "Bridge",
    "BridgeStats",
    "JetStreamError",
    "JetStreamStore",
    "Record",
    "check_stream_name",
    "connect",
    "ensure_stream",
    "find_record",
    "iter_session",
    "jetstream_errors",
    "latest_session",
    "read_batches",
    "read_session",
    "session_subject",
]

#: Sequence numbers per aligned batch (one JetStream message holds at most this many).
DEFAULT_WINDOW = 2048
#: A batch is cut early when its blocks reach this many bytes.
DEFAULT_MAX_BYTES = 256 * 1024
#: A partial batch is appended after the feed was quiet this long (seconds).
DEFAULT_LINGER = 0.05
#: A bridge waits this long (seconds) for an unreachable stream, then fails.
DEFAULT_OUTAGE = 30.0
#: A bridge holds a lost range this long (seconds) before storing it, so that another
#: bridge that has those messages stores them first.
DEFAULT_LOST_GRACE = 0.25
#: The stream's duplicate window (seconds) when this module creates it.
DEFAULT_DUPLICATE_WINDOW = 120.0

_log = logging.getLogger(__name__)
_WRONG_LAST_SEQUENCE = 10071
_IN_PROCESS = 10158
_STREAM_FULL = 10077  # maximum messages/bytes exceeded (discard new): no outage, a limit
_STREAM_NOT_FOUND = 10059
#: Bytes of a stream message kept for a record's headers when cutting at the server's
#: ``max_payload`` (which counts headers and payload together).
_HEADER_ROOM = 1024


class JetStreamError(MoldUDP64Error):
    """JetStream could not be reached or refused, or a stored record is damaged."""


def _nats() -> Any:
    try:
        import nats
        import nats.js.api
        import nats.js.errors
    except ImportError as exc:  # pragma: no cover - the test extra installs nats-py
        raise MissingDependency(
            "moldudp64.jetstream needs nats-py: pip install 'moldudp64[nats]'", extra="nats"
        ) from exc
    return nats


def _transient() -> tuple[type[Exception], ...]:
    """nats errors worth waiting out: no answer, no stream leader yet, reconnecting."""
    errors = _nats().errors
    return (
        errors.TimeoutError,
        errors.NoRespondersError,
        errors.OutboundBufferLimitError,
        errors.StaleConnectionError,
        errors.ConnectionReconnectingError,
        _nats().js.errors.ServiceUnavailableError,
        _nats().js.errors.NoStreamResponseError,
    )


@contextlib.contextmanager
def jetstream_errors(what: str) -> Iterator[None]:
    """Turn nats-py's errors inside the block into :class:`JetStreamError` naming ``what``."""
    nats = _nats()
    try:
        yield
    except nats.errors.Error as exc:
        raise JetStreamError(f"{what}: {exc!r}") from exc


def session_subject(stream: str, session: str) -> str:
    """The subject of ``session``'s records in ``stream`` (the session's wire bytes in hex:
    a received session is text with one character per byte, latin-1)."""
    try:
        raw = session.encode("latin-1")
    except UnicodeEncodeError:
        raise ConfigError(f"session {session!r} has characters no wire byte stands for") from None
    return f"{stream}.s.{encode_session(raw).hex()}"


def _session_of(subject: str) -> str:
    try:
        return bytes.fromhex(subject.rsplit(".", 1)[-1]).decode("latin-1")
    except ValueError:
        raise JetStreamError(f"subject {subject!r} names no session") from None


async def _log_error(exc: Exception) -> None:
    _log.debug("NATS: %s", exc)


async def connect(servers: str | list[str], **options: Any) -> NATS:
    """Connect to NATS (``nats://HOST:PORT``, one or several); errors become JetStreamError.

    ``options`` go to ``nats.connect``; connection errors are logged, not printed.
    """
    nats = _nats()
    options.setdefault("error_cb", _log_error)
    options.setdefault("connect_timeout", 2.0)
    # The first connection tries each server a few times; reconnects later keep trying
    # for reconnect_attempts x reconnect_time_wait (default 60 x 2 s).
    reconnect_attempts = options.pop("max_reconnect_attempts", 60)
    options.setdefault("reconnect_time_wait", 2.0)
    try:
        nc = await nats.connect(
            servers, max_reconnect_attempts=min(reconnect_attempts, 2), **options
        )
    except Exception as exc:
        raise JetStreamError(f"cannot connect to NATS {servers}: {exc}") from exc
    nc.options["max_reconnect_attempts"] = reconnect_attempts
    return nc  # type: ignore[no-any-return]


_BAD_NAME_CHARS = frozenset(" .*>/\\")


def check_stream_name(stream: str) -> str:
    """``stream`` if NATS takes it as a stream name, else ConfigError saying why."""
    if (
        not isinstance(stream, str)
        or not stream
        or len(stream) > 255
        or not stream.isprintable()
        or any(c in _BAD_NAME_CHARS for c in stream)
    ):
        raise ConfigError(
            f"stream name {stream!r}: 1 to 255 printable characters, no spaces, dots, "
            "slashes, '*' or '>'"
        )
    return stream


def _subject_matches(pattern: str, subject: str) -> bool:
    """Whether NATS subject ``pattern`` (``*`` one token, ``>`` the rest) covers ``subject``."""
    want, have = pattern.split("."), subject.split(".")
    for i, token in enumerate(want):
        if token == ">":
            return len(have) > i
        if i >= len(have) or (token != "*" and token != have[i]):
            return False
    return len(want) == len(have)


def _refuse_foreign_config(stream: str, config: Any) -> None:
    """JetStreamError when an existing stream would not keep a bridge's records."""
    probe = session_subject(stream, "")
    subjects = list(config.subjects or [])
    if not any(_subject_matches(s, probe) for s in subjects):
        raise JetStreamError(
            f"stream {stream} exists with subjects {subjects}, which do not take {stream}.s.*"
            f" (a bridge appends there): use another stream name or delete this stream"
        )
    if config.no_ack:
        raise JetStreamError(f"stream {stream} exists with no_ack: appends would go unconfirmed")
    retention = str(getattr(config.retention, "value", config.retention) or "limits")
    if retention != "limits":
        raise JetStreamError(
            f"stream {stream} exists with {retention} retention, which removes records "
            "nobody consumes: a bridge needs limits retention"
        )
    if config.sealed:
        raise JetStreamError(f"stream {stream} is sealed: it takes no appends")


async def ensure_stream(
    js: JetStreamContext,
    stream: str,
    *,
    replicas: int = 1,
    storage: str = "file",
    duplicate_window: float = DEFAULT_DUPLICATE_WINDOW,
) -> None:
    """Create ``stream`` (subjects ``stream.>``) unless it exists; an existing one must
    take a bridge's appends (its subjects cover ``stream.s.*``, limits retention, acks on,
    not sealed), else JetStreamError says what is wrong, at once."""
    nats = _nats()
    api = nats.js.api
    check_stream_name(stream)
    try:
        info = await js.stream_info(stream)
    except nats.js.errors.NotFoundError:
        pass
    else:
        _refuse_foreign_config(stream, info.config)
        return
    config = api.StreamConfig(
        name=stream,
        subjects=[f"{stream}.>"],
        storage=api.StorageType(storage),
        retention=api.RetentionPolicy.LIMITS,
        duplicate_window=duplicate_window,
        num_replicas=replicas,
        allow_direct=True,
    )
    try:
        await js.add_stream(config)
    except nats.js.errors.APIError as exc:
        raise JetStreamError(f"cannot create stream {stream}: {exc}") from exc


@dataclass(frozen=True, slots=True)
class Record:
    """One stored record: ``kind`` is ``data``, ``lost`` or ``end``; covers seq..seq+count-1."""

    stream_seq: int
    kind: str
    seq: int
    count: int
    messages: list[bytes]
    reason: str = ""

    @property
    def next_seq(self) -> int:
        """One past the last sequence number the record covers."""
        return self.seq + self.count


_PACKET_HEADER = struct.Struct(">10sQH")  # session, first number, count


def _split(payload: bytes, count: int) -> list[bytes]:
    """The ``count`` blocks of a data record's payload; JetStreamError if it holds other."""
    if c_parse_blocks is not None and 0 < count < 0xFFFF:
        # The C packet parser does the work: the blocks behind a made-up packet header
        # (number 1, ``count`` messages); None unless they are exactly ``count`` blocks.
        out_c = c_parse_blocks(_PACKET_HEADER.pack(b"", 1, count) + payload)
        if out_c is not None:
            return out_c
    out: list[bytes] = []
    pos, end = 0, len(payload)
    while pos < end:
        if pos + 2 > end or len(out) > count:  # a torn block, or more blocks than said
            break
        stop = pos + 2 + ((payload[pos] << 8) | payload[pos + 1])
        if stop > end:
            break
        out.append(payload[pos + 2 : stop])
        pos = stop
    if pos != end or len(out) != count:
        raise JetStreamError(
            f"damaged data record: {len(out)} whole blocks of {count} in {end} bytes"
        )
    return out


def _header_int(value: object) -> int:
    """A header's decimal number: ASCII digits only (no sign, space, ``_`` or other digits)."""
    text = str(value)  # nats-py hands non-ASCII header values over as email Header objects
    if not (text.isascii() and text.isdigit()) or len(text) > 20:
        raise ValueError(text)
    return int(text)


def _decode(msg: RawStreamMsg) -> Record:
    """The record ``msg`` holds; JetStreamError for anything a bridge does not write."""
    headers = msg.headers or {}
    try:
        kind = str(headers["Mold-Kind"])
        seq = _header_int(headers["Mold-Seq"])
        count = _header_int(headers.get("Mold-Count", "0"))
    except (KeyError, ValueError) as exc:
        raise JetStreamError(f"stream message {msg.seq} is not a moldudp64 record") from exc
    if kind not in ("data", "lost", "end") or seq < 1 or seq + count > 1 << 64:
        raise JetStreamError(f"stream message {msg.seq}: bad record {kind} {seq} {count}")
    if kind == "end":
        count = 0
    data = msg.data or b""
    messages = _split(data, count) if kind == "data" else []
    reason = str(headers.get("Mold-Reason", ""))
    return Record(msg.seq or 0, kind, seq, count, messages, reason)


@dataclass(frozen=True, slots=True)
class BridgeStats:
    """A snapshot of a :class:`Bridge`'s counters (``bridge --metrics-port`` serves them).

    ``lag_messages`` are messages of the newest session the bridge has taken from the feed
    and not yet seen stored (by it or another bridge); ``lag_seconds`` is how long the
    oldest of them has waited (0 when all are stored).
    """

    records_appended: int
    records_skipped: int
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
        # Records must fit the server's max_payload (1 MiB unless configured lower).
        limit = getattr(getattr(js, "_nc", None), "max_payload", None)
        self._max_payload = limit if isinstance(limit, int) and limit > _HEADER_ROOM else None
        if self._max_payload is not None:
            max_bytes = max(2, min(max_bytes, self._max_payload - _HEADER_ROOM))
        self.max_bytes = max_bytes
        self.linger = linger
        self.timeout = timeout
        self.outage = outage
        self.lost_grace = lost_grace
        self._trouble_since: float | None = None
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
        nats = _nats()
        try:
            msg = await self.js.get_last_msg(self.stream, state.subject)
        except nats.js.errors.NotFoundError:
            state.last_stream_seq, state.next_seq, state.ended = 0, None, False
            return
        record = _decode(msg)
        state.last_stream_seq = record.stream_seq
        state.next_seq = record.next_seq
        state.ended = record.kind == "end"
        self._note_stored(state)

    async def _append(
        self, session: str, kind: str, seq: int, count: int, messages: list[bytes], reason: str = ""
    ) -> None:
        state = self._session(session)
        if state.last_stream_seq == 0 and state.next_seq is None:
            await self._sync_quietly(state)
        while True:
            if state.ended:
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
            "Nats-Msg-Id": f"{state.subject}:{seq}",
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
        else:
            raise JetStreamError(f"append to {self.stream}: duplicate still in process")
        self._trouble_since = None
        if ack.duplicate:
            self.conflicts += 1
            await self._sync_quietly(state)
            if not state.ended and (state.next_seq is None or state.next_seq <= seq):
                # The record the server remembers by this id is gone: retrying would be
                # refused the same way until the duplicate window passes.
                raise JetStreamError(
                    f"append to {self.stream} refused as a duplicate (Nats-Msg-Id "
                    f"{headers['Nats-Msg-Id']}) of a record no longer in the stream (deleted "
                    "or purged within the stream's duplicate window): wait for the window "
                    "to pass, or use another stream"
                )
            return False
        self.appended += 1
        state.last_stream_seq = ack.seq
        state.next_seq = seq + count
        state.ended = kind == "end"
        self._note_stored(state)
        return True

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


# -- reading -------------------------------------------------------------------------------
async def _message_at_or_after(
    js: JetStreamContext, stream: str, subject: str, stream_seq: int, direct: bool = False
) -> RawStreamMsg | None:
    """The subject's first message at or after ``stream_seq``; ``direct``: a direct get
    (the payload raw, no JSON or base64; any replica may answer)."""
    nats = _nats()
    try:
        msg: RawStreamMsg = await js.get_msg(
            stream, seq=max(stream_seq, 1), subject=subject, next=True, direct=direct
        )
    except nats.js.errors.NotFoundError:
        return None
    return msg


async def _record_at_or_after(
    js: JetStreamContext, stream: str, subject: str, stream_seq: int, direct: bool = False
) -> Record | None:
    msg = await _message_at_or_after(js, stream, subject, stream_seq, direct)
    return None if msg is None else _decode(msg)


def _reaches(rec: Record, seq: int) -> bool:
    """Whether a reader wanting ``seq`` takes ``rec``: it holds ``seq`` or more, or ends."""
    return rec.kind == "end" or rec.next_seq > seq


async def find_record(
    js: JetStreamContext,
    stream: str,
    session: str,
    seq: int,
    *,
    below: Record | None = None,
    above: Record | None = None,
    direct: bool = False,
    seen: Callable[[Record], object] | None = None,
) -> tuple[Record | None, int]:
    """The first stored record of ``session`` that holds ``seq`` or comes after it (else
    the last record, or None when there is none), and the number of lookups it took.

    The search runs over stream sequence between a record known not to reach ``seq`` and
    one known to reach it (``below`` and ``above`` when the caller knows such records, e.g.
    from earlier searches, else the session's first and last). Steps alternate between
    interpolation on sequence numbers (records are aligned windows, so it usually lands on
    the record at once) and bisection, so it takes O(log n) lookups at worst and two or
    three on a stream of one session. ``seen`` is called with each record decoded;
    ``direct`` uses direct gets (only safe on a stream of one replica: a lagging replica
    may answer "none" for records it has not yet).

    Records wholly before ``seq`` are what a reader skips, so a record a foreign writer
    appended behind the tail counts as before ``seq`` too; on such a stream the search
    may still land past a record holding ``seq`` (then read as lost, never skipped
    silently)."""
    nats = _nats()
    check_stream_name(stream)
    subject = session_subject(stream, session)
    lookups = 0

    async def at_or_after(stream_seq: int) -> Record | None:
        nonlocal lookups
        lookups += 1
        rec = await _record_at_or_after(js, stream, subject, stream_seq, direct)
        if rec is not None and seen is not None:
            seen(rec)
        return rec

    if below is None or above is None or below.stream_seq >= above.stream_seq:
        below = await at_or_after(1)
        if below is None or _reaches(below, seq):
            return below, lookups
        try:
            above = _decode(await js.get_last_msg(stream, subject))
        except nats.js.errors.NotFoundError:  # pragma: no cover - purged meanwhile
            return None, lookups + 1
        lookups += 1
        if seen is not None:
            seen(above)
        if not _reaches(above, seq):
            return above, lookups
    best, low = above, below  # invariants: best reaches seq; no record up to low does
    lo, hi = low.stream_seq + 1, best.stream_seq - 1
    step = 0
    while lo <= hi:
        if step % 2 == 0:  # interpolate: where seq falls between low and best
            span = best.seq - low.next_seq
            frac = (seq - low.next_seq) / span if span > 0 else 0.5
            mid = min(hi, max(lo, lo + int(frac * (hi - lo + 1))))
        else:
            mid = (lo + hi) // 2
        step += 1
        rec = await at_or_after(mid)
        if rec is None or rec.stream_seq >= best.stream_seq:
            hi = mid - 1  # no record from mid up to best
        elif _reaches(rec, seq):
            best, hi = rec, mid - 1
        else:
            low, lo = rec, rec.stream_seq + 1
    if best.kind == "data" and len(best.messages) != best.count:  # a caller's light record
        best = await at_or_after(best.stream_seq) or best
    return best, lookups


async def latest_session(js: JetStreamContext, stream: str) -> str | None:
    """The session of the stream's newest record, or None when it holds none.

    Only subjects ``stream.s.<20 hex digits>`` name a session: messages on other subjects
    of the stream are not looked at; a session subject that names no session a bridge can
    write is a JetStreamError naming it.
    """
    nats = _nats()
    check_stream_name(stream)
    try:
        msg = await js.get_last_msg(stream, f"{stream}.s.*")
    except nats.js.errors.NotFoundError as exc:
        if exc.err_code == _STREAM_NOT_FOUND:
            raise JetStreamError(f"no stream {stream} (a bridge creates it)") from None
        return None
    subject = msg.subject or ""
    session = _session_of(subject)
    try:
        valid = session_subject(stream, session) == subject
    except MoldUDP64Error:
        valid = False
    if not valid:
        raise JetStreamError(f"subject {subject!r} of stream {stream} names no session")
    return session


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


async def _stream_info(js: JetStreamContext, stream: str) -> StreamInfo:
    """``stream``'s configuration and state; JetStreamError if there is none."""
    nats = _nats()
    try:
        info: StreamInfo = await js.stream_info(stream)
    except nats.js.errors.NotFoundError:
        raise JetStreamError(f"no stream {stream} (a bridge creates it)") from None
    return info


async def _stream_created(js: JetStreamContext, stream: str) -> object:
    """When ``stream`` was created (to tell it from a namesake); JetStreamError if none."""
    return (await _stream_info(js, stream)).created


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
    stored end of session), or after ``idle_timeout`` seconds without a new record.

    Records behind what was read (overlapping or out of order) are skipped; the stream
    away for a while is waited out (as long as the connection keeps reconnecting); the
    stream deleted while waiting, a damaged record or a closed connection are
    JetStreamError."""
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
                rec, _ = await find_record(js, stream, session, start_seq)
            except _transient() as exc:
                _log.info("reading %s: %r; trying again", stream, exc)
                rec = None
            if rec is not None:
                break
            if not await patience.wait():
                return
        want = start_seq
        records = [rec]
        while True:
            for rec in records:
                if rec.seq > want:  # a hole no record covers
                    yield MessagesLost(session, want, rec.seq - 1, "not in the stream")
                    want = rec.seq
                if rec.kind == "end":  # never before what was delivered
                    yield SessionEnded(session, max(rec.seq, want))
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


async def _cancel_the_rest() -> None:
    """Cancel and await the loop's other tasks (nats-py's readers left after close), so a
    private loop closes with nothing pending."""
    tasks = [t for t in asyncio.all_tasks() if t is not asyncio.current_task()]
    for task in tasks:
        task.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)


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


# -- the re-request store ------------------------------------------------------------------
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

    def append(self, message: Buffer) -> int:
        """Refused: the bridge writes the stream."""
        raise ConfigError("JetStreamStore is read-only: a bridge appends to the stream")

    def _find(self, seq: int, below: Record | None, above: Record | None) -> Record | None:
        """The record for ``seq`` (see :func:`find_record`), searched between known records."""
        found: tuple[Record | None, int] = self._call(
            find_record(
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
        self.lookups += found[1]
        return found[0]

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
