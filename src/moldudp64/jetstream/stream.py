"""The stream and its subjects: names, one subject per session, creating and checking the
stream, the newest session."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from ..exceptions import ConfigError, MoldUDP64Error
from ..wire import encode_session
from .connection import _STREAM_NOT_FOUND, JetStreamError, _nats

if TYPE_CHECKING:
    from nats.js import JetStreamContext
    from nats.js.api import StreamInfo

#: The stream's duplicate window (seconds) when this module creates it.
DEFAULT_DUPLICATE_WINDOW = 120.0
#: A bridge's records are cut when their blocks reach this many bytes.
DEFAULT_MAX_BYTES = 256 * 1024
#: Bytes of a stream message kept for a record's headers when cutting at the server's
#: ``max_payload`` (which counts headers and payload together).
_HEADER_ROOM = 1024
#: A full record: the most a stream must take in one message, and keep.
_FULL_RECORD = DEFAULT_MAX_BYTES + _HEADER_ROOM
#: The limits of a stream that remove or refuse records (``limits_text`` names them).
_LIMITS = ("max_msgs", "max_bytes", "max_age", "max_msgs_per_subject", "max_msg_size")


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
    _refuse_discarding_limits(stream, config)


def limits_text(config: Any) -> str:
    """The limits ``config`` sets that remove or refuse records (``max_bytes=65536, ...``),
    or ``no limits``."""
    parts = []
    for name in _LIMITS:
        value = getattr(config, name, None)
        if isinstance(value, (int, float)) and value > 0:
            parts.append(f"{name}={value:g}" if name == "max_age" else f"{name}={value}")
    return ", ".join(parts) or "no limits"


def _refuse_discarding_limits(stream: str, config: Any) -> None:
    """JetStreamError when the stream's limits would remove (or refuse) a bridge's record
    as soon as it is appended: a session could never be read back."""
    one_record = f"one record (up to {_FULL_RECORD} bytes)"
    why = None
    if 0 < (config.max_bytes or 0) < _FULL_RECORD:
        why = f"max_bytes={config.max_bytes} is smaller than {one_record}"
    elif 0 < (config.max_msg_size or 0) < _FULL_RECORD:
        why = f"max_msg_size={config.max_msg_size} is smaller than {one_record}"
    elif (config.max_msgs_per_subject or 0) == 1:
        why = "max_msgs_per_subject=1 keeps one record per session: each append removes the last"
    elif (config.max_msgs or 0) == 1:
        why = "max_msgs=1 keeps one record: each append removes the last"
    if why is not None:
        raise JetStreamError(
            f"stream {stream} exists with limits that discard a bridge's appends: {why}; "
            "raise or remove the limit, or use another stream"
        )


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


async def stored_sessions(js: JetStreamContext, stream: str) -> dict[str, int]:
    """The sessions ``stream`` holds, each with its number of records (subjects
    ``stream.s.<20 hex digits>``; other subjects are not looked at); JetStreamError if
    there is no such stream."""
    nats = _nats()
    check_stream_name(stream)
    try:
        info = await js.stream_info(stream, subjects_filter=f"{stream}.s.*")
    except nats.js.errors.NotFoundError:
        raise JetStreamError(f"no stream {stream} (a bridge creates it)") from None
    sessions: dict[str, int] = {}
    for subject, records in (info.state.subjects or {}).items():
        try:
            session = _session_of(subject)
            if session_subject(stream, session) == subject:
                sessions[session] = records
        except MoldUDP64Error:
            continue
    return sessions


async def latest_session(js: JetStreamContext, stream: str) -> str | None:
    """The session of the stream's newest record, or None when it holds none; a session
    whose only record is no data record (a stray ``end`` on another session's subject,
    say) is passed over for the newest session holding more (see ``_pick_session``).

    Only subjects ``stream.s.<20 hex digits>`` name a session: messages on other subjects
    of the stream are not looked at; a session subject that names no session a bridge can
    write is a JetStreamError naming it.
    """
    return (await _pick_session(js, stream))[0]


async def _pick_session(js: JetStreamContext, stream: str) -> tuple[str | None, str]:
    """:func:`latest_session` and, when it passed over the session of the newest record,
    a sentence saying so (else "")."""
    nats = _nats()
    check_stream_name(stream)
    try:
        msg = await js.get_last_msg(stream, f"{stream}.s.*")
    except nats.js.errors.NotFoundError as exc:
        if exc.err_code == _STREAM_NOT_FOUND:
            raise JetStreamError(f"no stream {stream} (a bridge creates it)") from None
        return None, ""
    subject = msg.subject or ""
    session = _session_of(subject)
    try:
        valid = session_subject(stream, session) == subject
    except MoldUDP64Error:
        valid = False
    if not valid:
        raise JetStreamError(f"subject {subject!r} of stream {stream} names no session")
    if str((msg.headers or {}).get("Mold-Kind", "")) == "data":
        return session, ""
    sessions = await stored_sessions(js, stream)
    if sessions.get(session, 0) != 1:
        return session, ""
    # The newest record is its session's only one, and no data: a stray record, most
    # likely. The newest of the other sessions holding data (or more than one record).
    best: tuple[int, str] | None = None
    for other, records in sessions.items():
        if other == session:
            continue
        try:
            last = await js.get_last_msg(stream, session_subject(stream, other))
        except nats.js.errors.NotFoundError:
            continue
        kind = str((last.headers or {}).get("Mold-Kind", ""))
        if (records > 1 or kind == "data") and (best is None or (last.seq or 0) > best[0]):
            best = (last.seq or 0, other)
    if best is None:
        return session, ""
    lone = str((msg.headers or {}).get("Mold-Kind", "")) or "unmarked"
    note = (
        f"the newest record (stream message {msg.seq}, a lone {lone} record) is session "
        f"{session.rstrip()!r}'s only one; reading session {best[1].rstrip()!r}, the newest "
        "holding data (give --session to choose)"
    )
    return best[1], note


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
