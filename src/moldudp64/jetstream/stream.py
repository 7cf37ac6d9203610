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
