"""SoupBinTCP 3.00: I/O-free client and server cores (bytes and ``now`` in; bytes, events
and a timer out).

A packet is a 2-byte big-endian length (the type byte and the payload), a type byte, the
payload. The server sends ``A`` Login Accepted (session 10, next sequence number 20),
``J`` Login Rejected (``A`` not authorised, ``S`` session not available), ``S`` Sequenced
Data (no number: both ends count from the accepted one), ``U`` Unsequenced Data, ``H``
Server Heartbeat and ``Z`` End of Session; the client ``L`` Login Request (username 6,
password 10, session 10, sequence number 20; ``0``: from the most recent message), ``U``,
``R`` Client Heartbeat and ``O`` Logout Request; ``+`` Debug goes both ways and is ignored.

Liberal in what is read: text fields are trimmed of spaces (and NULs) on both sides, so a
left- or right-justified session compares the same; numbers may be padded with spaces or
zeros; a 4.x Login Request (a 5-digit heartbeat timeout after the number) is accepted.
Strict in what is written: alphanumerics left-justified, numbers right-justified, padded
with spaces, always digits.

Each side queues a heartbeat after ``heartbeat_interval`` (1 s) without queueing anything,
and gives up on a peer silent for ``timeout`` (15 s). A malformed packet is counted under a
reason (:attr:`SoupStats.malformed`); one that breaks the framing or the session closes
the connection with a reason (the core's ``close_reason``), never an exception from
``receive()``. Memory is bounded: a connection holds at most one partial packet
(65,537 bytes) of input, and a server connection's output is bounded by ``max_output``
(the driver only adds messages while :meth:`SoupServerCore.room` is positive).

GLIMPSE-style snapshots end with an End of Snapshot message (``G`` and a 20-character
sequence number) inside Sequenced Data; :func:`end_of_snapshot_seq` reads it. This
package takes that number as the **next** message to take from the feed (GLIMPSE 5.0's
wording, "the sequence number ... to be used when joining the real-time feed", and what
NASDAQ's own snapshot clients do); :func:`build_end_of_snapshot` writes it so.
"""

from __future__ import annotations

import os
import struct
from collections.abc import Callable
from dataclasses import dataclass, field
from itertools import chain
from typing import Any, Final

from .events import Event, MessagesDelivered, MessagesLost, SessionEnded
from .exceptions import EncodeError, MoldUDP64Error
from .wire import Buffer, join_blocks

__all__ = [
    "DEFAULT_HEARTBEAT_INTERVAL",
    "DEFAULT_LOGIN_TIMEOUT",
    "DEFAULT_MAX_OUTPUT",
    "DEFAULT_TIMEOUT",
    "MAX_PACKET_LENGTH",
    "REJECT_LINGER",
    "REJECT_NOT_AUTHORIZED",
    "REJECT_SESSION_UNAVAILABLE",
    "CannotResume",
    "ConnectionClosed",
    "LoginAccepted",
    "LoginRejected",
    "LoginRejectedError",
    "LoginRequest",
    "LogoutRequested",
    "MalformedFrame",
    "MessageRun",
    "SoupBinTCPError",
    "SoupClientCore",
    "SoupServerCore",
    "SoupServerStats",
    "SoupStats",
    "StoreSession",
    "UnsequencedData",
    "blocks_to_soup",
    "build_end_of_snapshot",
    "build_login_accepted",
    "build_login_rejected",
    "build_login_request",
    "build_packet",
    "end_of_snapshot_seq",
    "parse_number",
    "parse_text",
    "soup_split",
    "soup_to_blocks",
    "split_binaryfile",
]

#: Seconds without sending after which a side sends a heartbeat.
DEFAULT_HEARTBEAT_INTERVAL: Final = 1.0
#: Seconds without receiving after which a side gives up on its peer.
DEFAULT_TIMEOUT: Final = 15.0
#: Seconds a server gives a new connection to send its Login Request (a connection that
#: has not logged in costs an attacker nothing, so it holds its slot only briefly).
DEFAULT_LOGIN_TIMEOUT: Final = 5.0
#: Bytes a server connection queues before it stops taking messages from its store.
DEFAULT_MAX_OUTPUT: Final = 1 << 20
#: Seconds a server waits for a rejected client to close (a login flood holds no slot
#: longer); after End of Session it waits ``timeout``, the client may still be reading.
REJECT_LINGER: Final = 2.0
#: The largest value of the length field (type byte + payload).
MAX_PACKET_LENGTH: Final = 0xFFFF
#: Login Rejected reasons.
REJECT_NOT_AUTHORIZED: Final = "A"
REJECT_SESSION_UNAVAILABLE: Final = "S"
_REJECT_TEXT = {"A": "not authorised", "S": "session not available"}

_U16 = struct.Struct(">H")
_HEARTBEAT_SERVER = b"\x00\x01H"
_HEARTBEAT_CLIENT = b"\x00\x01R"
_END_OF_SESSION = b"\x00\x01Z"
_LOGOUT = b"\x00\x01O"
_LOGIN_PAYLOAD = 46  # 6 + 10 + 10 + 20
_LOGIN_PAYLOAD_4X = 51  # + 5-digit heartbeat timeout (SoupBinTCP 4.x)
_ACCEPT_PAYLOAD = 30  # 10 + 20
_MAX_SEQ = (1 << 64) - 1


class SoupBinTCPError(MoldUDP64Error):
    """Root of the SoupBinTCP errors."""


class MalformedFrame(SoupBinTCPError, ValueError):
    """A packet (or a field of one) that is not valid SoupBinTCP; ``reason`` tags it."""

    def __init__(self, message: str, *, reason: str) -> None:
        super().__init__(message)
        self.reason = reason


class CannotResume(SoupBinTCPError):
    """A client lost its connection and ``max_retries`` reconnects in a row failed."""


class LoginRejectedError(SoupBinTCPError):
    """The server refused the login; ``reason`` is its code (``A`` or ``S``)."""

    def __init__(self, reason: str) -> None:
        super().__init__(f"login rejected: {reject_text(reason)}")
        self.reason = reason


def reject_text(reason: str) -> str:
    """A Login Rejected code in words (``'A'`` -> ``'not authorised (A)'``)."""
    return f"{_REJECT_TEXT.get(reason, 'unknown reason')} ({reason!r})"


# --------------------------------------------------------------------------- fields


def parse_text(raw: bytes) -> str:
    """An alphanumeric field, left- or right-justified: trimmed of spaces and NULs."""
    return raw.strip(b" \x00").decode("ascii", "replace")


def parse_number(raw: bytes, *, blank: int | None = None) -> int:
    """A numeric field padded with spaces or zeros on either side.

    An all-blank field is ``blank`` when given, else :class:`MalformedFrame`.
    """
    text = raw.strip(b" \x00")
    if not text:
        if blank is not None:
            return blank
        raise MalformedFrame("blank number", reason="bad_number")
    if not text.isdigit():
        raise MalformedFrame(f"number {raw!r} is not digits", reason="bad_number")
    value = int(text)
    if value > _MAX_SEQ:
        raise MalformedFrame(f"number {value} is past 2**64-1", reason="bad_number")
    return value


def _alpha(value: str, width: int, what: str) -> bytes:
    raw = value.encode("ascii", "strict") if value.isascii() else b""
    if len(raw) > width or (value and not raw):
        raise EncodeError(f"{what} {value!r} must be at most {width} ASCII characters")
    return raw.ljust(width, b" ")


def _numeric(value: int, width: int, what: str) -> bytes:
    if not isinstance(value, int) or value < 0 or len(str(value)) > width:
        raise EncodeError(f"{what} {value!r} must be a number of at most {width} digits")
    return str(value).encode().rjust(width, b" ")


def build_packet(kind: bytes, payload: bytes = b"") -> bytes:
    """One packet: length, ``kind`` (one byte), ``payload``."""
    if len(payload) + 1 > MAX_PACKET_LENGTH:
        raise EncodeError(f"a payload of {len(payload)} bytes does not fit in a packet")
    return _U16.pack(len(payload) + 1) + kind + payload


def build_login_request(username: str, password: str, session: str, seq_num: int) -> bytes:
    """``L``: username (6), password (10), session (10, blank: the current one), number."""
    return build_packet(
        b"L",
        _alpha(username, 6, "username")
        + _alpha(password, 10, "password")
        + _alpha(session, 10, "session")
        + _numeric(seq_num, 20, "sequence number"),
    )


def build_login_accepted(session: str, seq_num: int) -> bytes:
    """``A``: the session and the number of the next sequenced message."""
    return build_packet(
        b"A", _alpha(session, 10, "session") + _numeric(seq_num, 20, "sequence number")
    )


def build_login_rejected(reason: str) -> bytes:
    """``J`` with ``A`` (not authorised) or ``S`` (session not available)."""
    if reason not in _REJECT_TEXT:
        raise EncodeError(f"reject reason {reason!r} must be 'A' or 'S'")
    return build_packet(b"J", reason.encode())


def build_end_of_snapshot(next_seq_num: int) -> bytes:
    """A GLIMPSE-style End of Snapshot message: ``G`` and the number of the next feed
    message (20 characters, right-justified, space padded)."""
    return b"G" + _numeric(next_seq_num, 20, "sequence number")


def end_of_snapshot_seq(message: bytes) -> int | None:
    """The number of an End of Snapshot message (space or zero padded), or None when
    ``message`` is not one (another message of the snapshot)."""
    if len(message) != 21 or message[0] != 0x47:
        return None
    try:
        return parse_number(message[1:])
    except MalformedFrame:
        return None


# --------------------------------------------------------------------------- runs
#
# A Sequenced Data packet (length L, 'S', L-1 bytes) and a BinaryFILE block (length,
# bytes) differ by the type byte and a length off by one: a run of one converts to the
# other in one pass. The C accelerator does it without a Python object per message; the
# twins below give identical results (MOLDUDP64_PURE_PYTHON=1 forces them).


def _soup_to_blocks_py(buf: bytes, pos: int) -> tuple[int, bytes, int]:
    """The run of Sequenced Data packets from ``pos`` as BinaryFILE blocks: (count,
    blocks, the position after the run). It stops at a packet that is incomplete, not
    ``S``, or of length 0."""
    parts: list[bytes] = []
    append = parts.append
    end = len(buf)
    # Hot loop: one step per message (the buffer's end raises IndexError).
    try:
        while buf[pos + 2] == 0x53:
            length = (buf[pos] << 8) | buf[pos + 1]
            stop = pos + 2 + length
            if not pos + 2 < stop <= end:
                break
            append(_U16.pack(length - 1))
            append(buf[pos + 3 : stop])
            pos = stop
    except IndexError:
        pass
    return len(parts) // 2, b"".join(parts), pos


def _soup_split_py(buf: bytes, pos: int) -> tuple[list[bytes], int]:
    """The messages of the run of Sequenced Data packets from ``pos`` and the position
    after it (the same run as :func:`soup_to_blocks`)."""
    out: list[bytes] = []
    append = out.append
    end = len(buf)
    try:
        while buf[pos + 2] == 0x53:
            stop = pos + 2 + ((buf[pos] << 8) | buf[pos + 1])
            if not pos + 2 < stop <= end:
                break
            append(buf[pos + 3 : stop])
            pos = stop
    except IndexError:
        pass
    return out, pos


def _blocks_to_soup_py(blocks: bytes, max_count: int) -> tuple[int, bytes, int]:
    """Up to ``max_count`` whole BinaryFILE blocks from the start of ``blocks`` as
    Sequenced Data packets: (count, packets, bytes of ``blocks`` taken). It stops before
    an incomplete block and before a message of 65,535 bytes (too long for a packet)."""
    parts: list[bytes] = []
    append = parts.append
    end = len(blocks)
    pos = count = 0
    while count < max_count and pos + 2 <= end:
        length = (blocks[pos] << 8) | blocks[pos + 1]
        stop = pos + 2 + length
        if length == 0xFFFF or stop > end:
            break
        append(_U16.pack(length + 1) + b"S")
        append(blocks[pos + 2 : stop])
        pos = stop
        count += 1
    return count, b"".join(parts), pos


def _split_binaryfile_py(blocks: bytes) -> list[bytes]:
    """The messages of whole BinaryFILE blocks (it stops at an incomplete one)."""
    out: list[bytes] = []
    append = out.append
    end = len(blocks)
    pos = 0
    while pos + 2 <= end:
        stop = pos + 2 + ((blocks[pos] << 8) | blocks[pos + 1])
        if stop > end:
            break
        append(blocks[pos + 2 : stop])
        pos = stop
    return out


def _load_runs() -> tuple[
    Callable[[Any, int], tuple[int, bytes, int]],
    Callable[[Any, int], tuple[list[bytes], int]],
    Callable[[bytes, int], tuple[int, bytes, int]],
    Callable[[bytes], list[bytes]],
]:
    pure = (_soup_to_blocks_py, _soup_split_py, _blocks_to_soup_py, _split_binaryfile_py)
    if os.environ.get("MOLDUDP64_PURE_PYTHON"):
        return pure
    try:
        from . import _speedups
    except ImportError:
        return pure
    try:
        return (
            _speedups.soup_to_blocks,
            _speedups.soup_split,
            _speedups.blocks_to_soup,
            _speedups.split_binaryfile,
        )
    except AttributeError:  # an accelerator built before these existed
        return pure


#: ``soup_to_blocks(buf, pos)``: a run of Sequenced Data packets as BinaryFILE blocks,
#: ``(count, blocks, end)``; ``soup_split(buf, pos)``: its messages, ``(messages, end)``;
#: ``blocks_to_soup(blocks, max_count)``: BinaryFILE blocks as Sequenced Data packets,
#: ``(count, packets, used)``; ``split_binaryfile(blocks)``: the messages of whole blocks.
#: C when built, else the pure-Python twins (identical results).
soup_to_blocks, soup_split, blocks_to_soup, split_binaryfile = _load_runs()


# --------------------------------------------------------------------------- events


@dataclass(frozen=True, slots=True)
class LoginAccepted(Event):
    """The server accepted the login: ``seq_num`` is the next message it will send."""

    session: str
    seq_num: int


@dataclass(frozen=True, slots=True)
class MessageRun(Event):
    """Consecutive Sequenced Data messages as BinaryFILE blocks, ``count`` of them from
    ``seq_num``: what a client core built with ``runs=True`` gives instead of
    ``MessagesDelivered``. A BinaryFILE recorder writes ``blocks`` as is; :attr:`messages`
    splits them (once, on demand) for a consumer that wants them one by one."""

    session: str
    seq_num: int
    count: int
    blocks: bytes = field(repr=False)
    _messages: list[bytes] | None = field(default=None, repr=False, compare=False)

    @property
    def messages(self) -> list[bytes]:
        """The messages, ``messages[i]`` numbered ``seq_num + i`` (split on first use)."""
        messages = self._messages
        if messages is None:
            messages = split_binaryfile(self.blocks)
            object.__setattr__(self, "_messages", messages)
        return messages

    @property
    def last_seq(self) -> int:
        """Sequence number of the last message of the run."""
        return self.seq_num + self.count - 1


@dataclass(frozen=True, slots=True)
class LoginRejected(Event):
    """The server refused the login: ``reason`` ``A`` (not authorised) or ``S`` (session
    not available)."""

    reason: str

    @property
    def text(self) -> str:
        """The reason in words."""
        return reject_text(self.reason)


@dataclass(frozen=True, slots=True)
class UnsequencedData(Event):
    """A ``U`` packet's payload."""

    data: bytes = field(repr=False)


@dataclass(frozen=True, slots=True)
class LoginRequest(Event):
    """A client asks to log in (server side): fields trimmed; ``seq_num`` 0 = most recent."""

    username: str
    password: str = field(repr=False)
    session: str
    seq_num: int


@dataclass(frozen=True, slots=True)
class LogoutRequested(Event):
    """The client sent ``O`` (server side); the connection should be closed."""


@dataclass(frozen=True, slots=True)
class ConnectionClosed(Event):
    """The core gave up on the connection: ``reason`` says why (the driver closes it)."""

    reason: str


# --------------------------------------------------------------------------- stats


@dataclass
class SoupStats:
    """Counters of one core (over all its connections)."""

    packets_received: int = 0
    bytes_received: int = 0
    messages_received: int = 0
    heartbeats_received: int = 0
    heartbeats_sent: int = 0
    debug_received: int = 0
    messages_sent: int = 0
    connections: int = 0
    #: Malformed or unexpected packets by reason.
    malformed: dict[str, int] = field(default_factory=dict)

    def snapshot(self) -> SoupStats:
        """A copy (for another thread)."""
        copy = SoupStats(**{k: v for k, v in vars(self).items() if k != "malformed"})
        copy.malformed = dict(self.malformed)
        return copy

    @property
    def datagrams_received(self) -> int:
        """Packets received (the name listen's idle check reads)."""
        return self.packets_received

    @property
    def receiver(self) -> None:
        """No MoldUDP64 receiver core (listen's status line asks)."""
        return None


# --------------------------------------------------------------------------- common


class _Connection:
    """Framing, output, heartbeat and silence: what both cores do on one connection."""

    _heartbeat: bytes = _HEARTBEAT_CLIENT

    def __init__(self, heartbeat_interval: float, timeout: float) -> None:
        if heartbeat_interval <= 0 or timeout <= 0:
            raise ValueError("heartbeat_interval and timeout must be positive")
        self.heartbeat_interval = heartbeat_interval
        self.timeout = timeout
        self.stats = SoupStats()
        self._in = bytearray()  # a partial packet (at most 65,537 bytes)
        self._out = bytearray()
        self._events: list[Event] = []
        self._last_sent = 0.0
        self._last_received = 0.0
        self._open = False
        self._heartbeats = False  # sending heartbeats (after login)
        self.close_reason: str | None = None

    # -- connection life
    def _start(self, now: float) -> None:
        self._in = bytearray()
        self._out.clear()
        self._open = True
        self._heartbeats = False
        self._last_sent = self._last_received = now
        self.close_reason = None
        self.stats.connections += 1

    @property
    def is_open(self) -> bool:
        """True from ``connect()`` / ``connected()`` until the core or the driver closes."""
        return self._open

    def close(self, reason: str) -> None:
        """End the connection (the driver's side: it was lost); queued output is dropped."""
        if self._open:
            self._open = False
            self.close_reason = reason
            self._out.clear()
            self._in = bytearray()

    def _fail(self, reason: str) -> None:
        """The core gives up: a ConnectionClosed event; output already queued may still go."""
        if self._open:
            self._open = False
            self.close_reason = reason
            self._in = bytearray()
            self._events.append(ConnectionClosed(reason))

    def _count(self, reason: str) -> None:
        malformed = self.stats.malformed
        malformed[reason] = malformed.get(reason, 0) + 1

    # -- output
    def outgoing(self, max_bytes: int = 1 << 18) -> bytes:
        """Bytes waiting to be written (not taken: call :meth:`consumed` with what was)."""
        return bytes(self._out[:max_bytes])

    def consumed(self, count: int) -> None:
        """``count`` bytes of :meth:`outgoing` were written to the connection."""
        del self._out[:count]

    @property
    def output_bytes(self) -> int:
        """Bytes queued and not yet written."""
        return len(self._out)

    def _send(self, data: bytes, now: float) -> None:
        self._out += data
        self._last_sent = now

    # -- timer
    def get_timer(self) -> float | None:
        """When :meth:`handle_timer` is next due (None while closed)."""
        if not self._open:
            return None
        due = self._last_received + self.timeout
        if self._heartbeats:
            due = min(due, self._last_sent + self.heartbeat_interval)
        return due

    def handle_timer(self, now: float) -> None:
        """Heartbeat after ``heartbeat_interval`` of not sending; give up after ``timeout``
        of not receiving."""
        if not self._open:
            return
        if now - self._last_received >= self.timeout:
            self._fail(f"peer silent for {now - self._last_received:.1f} s")
            return
        if self._heartbeats and now - self._last_sent >= self.heartbeat_interval:
            if not self._out:  # queued output still to go: no heartbeat needed
                self._send(self._heartbeat, now)
                self.stats.heartbeats_sent += 1
            else:
                self._last_sent = now

    def events_received(self) -> list[Event]:
        """The events since the last call."""
        events = self._events
        self._events = []
        return events

    # -- input
    def receive(self, data: Buffer, now: float) -> None:
        """Bytes read from the connection (any bytes-like object: nothing keeps a view of
        it, so a driver may read into one buffer again and again); never raises on bad
        data."""
        if not self._open or not data:
            return
        self._last_received = now
        self.stats.bytes_received += len(data)
        if type(data) is not bytes and soup_split is _soup_split_py:
            data = bytes(data)  # the pure-Python twins slice bytes
        pos = 0
        pending = self._in
        if pending:
            # A partial packet waits: complete it alone from the head of ``data`` (gathered
            # in one growing buffer, so a peer trickling a large packet a byte at a time
            # costs no copy of it per byte; the rest of ``data`` is not copied at all).
            if len(pending) < 2:
                pos = 2 - len(pending)
                pending += data[:pos]
                if len(pending) < 2:
                    return
            need = 2 + ((pending[0] << 8) | pending[1]) - len(pending)
            if need > 0:
                pending += data[pos : pos + need]
                pos += need
                if pos > len(data):
                    return
            self._in = bytearray()
            self._frames(bytes(pending), 0, now)  # one whole packet (or a length of 0)
            if not self._open or pos >= len(data):
                return
        self._frames(data, pos, now)

    def _frames(self, buf: Buffer, pos: int, now: float) -> None:
        """The packets of ``buf`` from ``pos``; a partial one at the end waits in ``_in``."""
        end = len(buf)
        while pos + 2 <= end and self._open:
            length = (buf[pos] << 8) | buf[pos + 1]
            if length == 0:
                self._count("zero_length")
                self._fail("malformed packet: length 0 (the framing is lost)")
                return
            stop = pos + 2 + length
            if stop > end:
                break
            kind = buf[pos + 2]
            if kind == 0x53 and self._sequenced_run(buf, pos):  # 'S'
                pos = self._run_end
                continue
            self.stats.packets_received += 1
            self._packet(kind, bytes(buf[pos + 3 : stop]), now)
            pos = stop
        if self._open and pos < end:
            self._in = bytearray(buf[pos:])

    _run_end = 0

    def _sequenced_run(self, buf: Buffer, pos: int) -> bool:
        """A run of whole Sequenced Data packets from ``pos`` (client side, logged in):
        taken in one pass, ``_run_end`` set after it; False if not taken."""
        return False

    def _packet(self, kind: int, payload: bytes, now: float) -> None:
        raise NotImplementedError


# --------------------------------------------------------------------------- client


class SoupClientCore(_Connection):
    """The client's side of a SoupBinTCP session, over any number of connections.

    ``connect(now)`` starts a connection (queues the Login Request: the session and the
    number to resume from, once one was accepted); then :meth:`receive`,
    :meth:`handle_timer`, :meth:`outgoing` / :meth:`consumed`, :meth:`events_received`.
    Events: :class:`~moldudp64.soupbintcp.LoginAccepted`,
    :class:`~moldudp64.soupbintcp.LoginRejected`, ``MessagesDelivered`` (consecutive
    messages, numbered from the accepted number),
    :class:`~moldudp64.soupbintcp.UnsequencedData`, ``MessagesLost`` (numbers the server
    said it no longer has: it accepted a later one than asked), ``SessionEnded`` (``Z``),
    :class:`~moldudp64.soupbintcp.ConnectionClosed`. After a rejection or ``SessionEnded``
    the session is over (``finished``). With ``runs=True`` the messages come as
    :class:`~moldudp64.soupbintcp.MessageRun` events instead of ``MessagesDelivered``
    (same numbers, same places among the other events; one per run of consecutive
    Sequenced Data packets in a read, where ``MessagesDelivered`` has one per read): each
    run converted to BinaryFILE blocks in one pass, no object per message.
    """

    _heartbeat = _HEARTBEAT_CLIENT

    def __init__(
        self,
        username: str = "",
        password: str = "",
        session: str = "",
        seq_num: int = 1,
        *,
        heartbeat_interval: float = DEFAULT_HEARTBEAT_INTERVAL,
        timeout: float = DEFAULT_TIMEOUT,
        runs: bool = False,
        login_timeout: float | None = None,
    ) -> None:
        super().__init__(heartbeat_interval, timeout)
        if login_timeout is not None and login_timeout <= 0:
            raise ValueError("login_timeout must be positive")
        #: Seconds a connection waits for Login Accepted or Rejected (default ``timeout``):
        #: a server that answers the login with heartbeats only is given up on.
        self.login_timeout = timeout if login_timeout is None else login_timeout
        # Checked once here: a bad value is an EncodeError before any connection.
        build_login_request(username, password, session, seq_num)
        self.username = username
        self.password = password
        #: The session asked for, then the one the server accepted.
        self.session = session
        #: The number of the next sequenced message expected.
        self.next_seq_num = seq_num
        self.logged_in = False
        self.accepted_once = False
        self.rejected: str | None = None
        self.ended = False
        #: Messages as :class:`MessageRun` events (BinaryFILE blocks, split on demand),
        #: not ``MessagesDelivered``.
        self.runs = runs
        # What the runs since the last flush gave: lists of messages, or (count, blocks).
        self._parts: list[Any] = []
        self._parts_count = 0
        #: Why the session cannot go on (a broken numbering): set, the session is over.
        self.broken: str | None = None
        self._login_due = 0.0

    @property
    def finished(self) -> bool:
        """The session is over for this client: rejected or ended."""
        return self.ended or self.rejected is not None or self.broken is not None

    def connect(self, now: float) -> None:
        """A new connection is up: queue the Login Request (resuming where it stopped)."""
        self._start(now)
        self.logged_in = False
        self._login_due = now + self.login_timeout
        self._send(
            build_login_request(self.username, self.password, self.session, self.next_seq_num),
            now,
        )

    def send_unsequenced(self, data: bytes, now: float) -> None:
        """Queue a ``U`` packet (after login)."""
        if self.logged_in and self._open:
            self._send(build_packet(b"U", data), now)

    def logout(self, now: float) -> None:
        """Queue a Logout Request; the driver closes once it is written."""
        if self._open:
            self._send(_LOGOUT, now)
            self._heartbeats = False

    def _flush_batch(self) -> None:
        """One event for the messages taken since the last flush (none numbered past
        2**64-1: those end the session)."""
        parts = self._parts
        if not parts:
            return
        count = self._parts_count
        first = self.next_seq_num - count
        self._parts = []
        self._parts_count = 0
        past = self.next_seq_num - 1 - _MAX_SEQ
        if past > 0:  # numbered past 2**64-1: those are never delivered
            messages = [
                m
                for part in parts
                for m in (part if isinstance(part, list) else split_binaryfile(part[1]))
            ]
            del messages[len(messages) - past :]
            self.next_seq_num = _MAX_SEQ + 1
            self._count("past_max_seq")
            self.broken = (
                f"the server sent {past} message(s) past number 2**64-1 (the end of the "
                "number space)"
            )
            if messages:
                self._events.append(MessagesDelivered(self.session, first, messages))
            self._fail(self.broken)
            return
        if self.runs:
            # One event per run, as the packets came (joining them would copy them all).
            for run_count, blocks in parts:
                self._events.append(MessageRun(self.session, first, run_count, blocks))
                first += run_count
        else:
            messages = parts[0] if len(parts) == 1 else list(chain.from_iterable(parts))
            self._events.append(MessagesDelivered(self.session, first, messages))

    def get_timer(self) -> float | None:
        """When :meth:`handle_timer` is next due (the login deadline included)."""
        due = super().get_timer()
        if due is not None and not self.logged_in:
            due = min(due, self._login_due)
        return due

    def handle_timer(self, now: float) -> None:
        """Heartbeats, silence, and a login not answered within ``login_timeout``."""
        if self._open and not self.logged_in and now >= self._login_due:
            self._count("no_login_answer")
            self._fail(f"no answer to the login within {self.login_timeout:g} s")
            return
        super().handle_timer(now)

    def receive(self, data: Buffer, now: float) -> None:
        """Bytes read from the connection (bytes-like, not kept); never raises on bad data."""
        super().receive(data, now)
        self._flush_batch()

    def _fail(self, reason: str) -> None:
        self._flush_batch()  # the messages before what ended the connection come first
        super()._fail(reason)

    def _sequenced_run(self, buf: Buffer, pos: int) -> bool:
        if not self.logged_in:
            return False
        part: Any
        if self.runs:
            count, blocks, self._run_end = soup_to_blocks(buf, pos)
            part = (count, blocks)
        else:
            part, self._run_end = soup_split(buf, pos)
            count = len(part)
        self._parts.append(part)
        self._parts_count += count
        self.next_seq_num += count
        self.stats.messages_received += count
        self.stats.packets_received += count
        return True

    def _packet(self, kind: int, payload: bytes, now: float) -> None:
        if kind == 0x48:  # H
            self.stats.heartbeats_received += 1
            if payload:
                self._count("heartbeat_payload")
            return
        if kind == 0x2B:  # + debug
            self.stats.debug_received += 1
            return
        if kind == 0x53:  # S before login (the fast path takes it after)
            self._count("data_before_login")
            self._fail("the server sent Sequenced Data before Login Accepted")
            return
        if kind == 0x55:  # U
            if not self.logged_in:
                self._count("data_before_login")
                self._fail("the server sent Unsequenced Data before Login Accepted")
                return
            self._flush_batch()
            self._events.append(UnsequencedData(payload))
            return
        if kind == 0x41:  # A
            self._accepted(payload, now)
            return
        if kind == 0x4A:  # J
            if self.logged_in:
                self._count("unexpected_reject")
                self._fail("the server sent Login Rejected after Login Accepted")
                return
            reason = payload[:1].decode("ascii", "replace") or "?"
            if len(payload) != 1:
                self._count("bad_length")
            self.rejected = reason
            self._events.append(LoginRejected(reason))
            self._fail(f"login rejected: {reject_text(reason)}")
            return
        if kind == 0x5A:  # Z
            if not self.logged_in:
                self._count("data_before_login")
                self._fail("the server sent End of Session before Login Accepted")
                return
            if payload:
                self._count("end_of_session_payload")
            self._flush_batch()
            if not self._open:  # the messages before it broke the session
                return
            self.ended = True
            self._events.append(SessionEnded(self.session, self.next_seq_num))
            self._fail("end of session")
            return
        self._count("unknown_type")  # the framing holds: skipped, counted

    def _accepted(self, payload: bytes, now: float) -> None:
        if self.logged_in:
            self._count("unexpected_accept")
            self._fail("the server sent Login Accepted twice")
            return
        if len(payload) != _ACCEPT_PAYLOAD:
            self._count("bad_length")
            self._fail(f"malformed Login Accepted: {len(payload)} bytes, not 30")
            return
        session = parse_text(payload[:10])
        try:
            seq = parse_number(payload[10:])
        except MalformedFrame as exc:
            self._count(exc.reason)
            self._fail(f"malformed Login Accepted: {exc}")
            return
        # The session named (or, on a resume, the one accepted before) is the only one
        # taken: another session's messages are never passed off as its own.
        if self.session.strip() and session != self.session.strip():
            self._count("session_changed")
            self._fail(f"the server accepted session {session!r}, not {self.session!r}")
            return
        asked = self.next_seq_num
        if seq == 0:
            self._count("bad_number")
            self._fail("Login Accepted at sequence number 0")
            return
        # Below the number asked for (first login or resume): refused, never delivered
        # (a user resuming with --start-seq would get messages twice).
        if asked and seq < asked:
            self._count("accepted_behind")
            self._fail(f"the server accepted at {seq}, behind the {asked} asked for")
            return
        self.session = session
        self.logged_in = True
        self.accepted_once = True
        self._heartbeats = True
        self._events.append(LoginAccepted(session, seq))
        if asked and seq > asked:
            self._events.append(
                MessagesLost(session, asked, seq - 1, "not available on the server")
            )
        self.next_seq_num = seq


# --------------------------------------------------------------------------- server


class SoupServerCore(_Connection):
    """The server's side of one connection.

    ``connected(now)``; :meth:`receive` gives :class:`~moldudp64.soupbintcp.LoginRequest`
    (answer it with :meth:`accept` or :meth:`reject`),
    :class:`~moldudp64.soupbintcp.UnsequencedData`,
    :class:`~moldudp64.soupbintcp.LogoutRequested` and
    :class:`~moldudp64.soupbintcp.ConnectionClosed`. After :meth:`accept`, add messages with
    :meth:`send_messages` while :meth:`room` is positive (the output stays within
    ``max_output`` bytes, give or take one message) and :meth:`end_session` after the
    last. A connection not logged in within ``login_timeout``, a second Login Request, a
    framing error or a client whose output did not move for ``timeout`` seconds is closed
    (:class:`~moldudp64.soupbintcp.ConnectionClosed` with the reason).
    """

    _heartbeat = _HEARTBEAT_SERVER

    def __init__(
        self,
        *,
        heartbeat_interval: float = DEFAULT_HEARTBEAT_INTERVAL,
        timeout: float = DEFAULT_TIMEOUT,
        max_output: int = DEFAULT_MAX_OUTPUT,
        login_timeout: float | None = None,
    ) -> None:
        super().__init__(heartbeat_interval, timeout)
        if login_timeout is not None and login_timeout <= 0:
            raise ValueError("login_timeout must be positive")
        #: Seconds a new connection has to send its Login Request (default the shorter of
        #: ``timeout`` and :data:`DEFAULT_LOGIN_TIMEOUT`).
        self.login_timeout = (
            min(timeout, DEFAULT_LOGIN_TIMEOUT) if login_timeout is None else login_timeout
        )
        self.max_output = max_output
        self.logged_in = False
        self.login_seen = False
        self.ended = False
        self.session = ""
        #: The number of the next message to send (after :meth:`accept`).
        self.next_seq_num = 0
        self._stalled_since: float | None = None
        self._login_due = 0.0

    def connected(self, now: float) -> None:
        """A client connected."""
        self._start(now)
        self.logged_in = self.login_seen = self.ended = False
        self._stalled_since = None
        self._login_due = now + self.login_timeout

    def accept(self, session: str, seq_num: int, now: float) -> None:
        """Answer the login: Login Accepted at ``seq_num``; heartbeats start."""
        self._send(build_login_accepted(session, seq_num), now)
        self.session = session
        self.next_seq_num = seq_num
        self.logged_in = True
        self._heartbeats = True

    def reject(self, reason: str, now: float) -> None:
        """Answer the login: Login Rejected; the driver closes once it is written."""
        self._send(build_login_rejected(reason), now)
        self._fail(f"login rejected: {reject_text(reason)}")

    def room(self) -> int:
        """Bytes the output may still take (0: wait until the client reads)."""
        if not (self._open and self.logged_in) or self.ended:
            return 0
        return max(0, self.max_output - len(self._out))

    def send_messages(self, messages: list[bytes], now: float) -> None:
        """Queue the next sequenced messages."""
        if not messages:
            return
        # A Sequenced Data packet is a BinaryFILE block of b"S" + message.
        self._out += join_blocks([b"S" + message for message in messages])
        self.next_seq_num += len(messages)
        self.stats.messages_sent += len(messages)
        self._last_sent = now

    def send_blocks(self, blocks: bytes, now: float, max_count: int = 1 << 62) -> int:
        """Queue the next sequenced messages given as BinaryFILE blocks (converted in one
        pass), at most ``max_count``; how many were queued. It stops before an
        incomplete block and before a message of 65,535 bytes (too long for a packet:
        :meth:`send_messages` says so)."""
        count, packets, _ = blocks_to_soup(blocks, max_count)
        if count:
            self._out += packets
            self.next_seq_num += count
            self.stats.messages_sent += count
            self._last_sent = now
        return count

    def send_unsequenced(self, data: bytes, now: float) -> None:
        """Queue a ``U`` packet."""
        self._send(build_packet(b"U", data), now)

    def cut_off(self, reason: str) -> None:
        """End the connection once what is queued is written, without End of Session (which
        would tell the client the session simply ended)."""
        self._fail(reason)

    def end_session(self, now: float) -> None:
        """Queue End of Session (after the last message); heartbeats stop."""
        if not self.ended and self._open:
            self._send(_END_OF_SESSION, now)
            self.ended = True
            self._heartbeats = False

    def consumed(self, count: int) -> None:
        """``count`` bytes were written to the client."""
        if count:
            self._stalled_since = None
        super().consumed(count)

    def get_timer(self) -> float | None:
        """When :meth:`handle_timer` is next due."""
        due = super().get_timer()
        if due is not None and self._stalled_since is not None:
            due = min(due, self._stalled_since + self.timeout)
        if due is not None and not self.login_seen:
            due = min(due, self._login_due)
        return due

    def handle_timer(self, now: float) -> None:
        """Heartbeats, silence, and a client that stopped reading."""
        if not self._open:
            return
        if not self.login_seen and now >= self._login_due:
            self._count("no_login")
            self._fail(f"no Login Request within {self.login_timeout:g} s")
            return
        if self._out:
            if self._stalled_since is None:
                self._stalled_since = now
            elif now - self._stalled_since >= self.timeout:
                self._count("not_reading")
                self._fail(
                    f"client not reading: {len(self._out)} bytes unread for "
                    f"{now - self._stalled_since:.1f} s"
                )
                return
        super().handle_timer(now)

    def _packet(self, kind: int, payload: bytes, now: float) -> None:
        if kind == 0x52:  # R
            self.stats.heartbeats_received += 1
            return
        if kind == 0x2B:  # + debug
            self.stats.debug_received += 1
            return
        if kind == 0x4C:  # L
            self._login(payload)
            return
        if not self.login_seen:
            self._count("before_login")
            self._fail(f"packet {chr(kind)!r} before Login Request")
            return
        if kind == 0x55:  # U
            self._events.append(UnsequencedData(payload))
        elif kind == 0x4F:  # O
            self._events.append(LogoutRequested())
            self._fail("logout requested")
        else:
            self._count("unknown_type")

    def _login(self, payload: bytes) -> None:
        if self.login_seen:
            self._count("login_again")
            self._fail("a second Login Request on one connection")
            return
        if len(payload) not in (_LOGIN_PAYLOAD, _LOGIN_PAYLOAD_4X):
            self._count("bad_length")
            self._fail(f"malformed Login Request: {len(payload)} bytes, not 46")
            return
        try:
            seq = parse_number(payload[26:46], blank=0)
        except MalformedFrame as exc:
            self._count(exc.reason)
            self._fail(f"malformed Login Request: {exc}")
            return
        self.login_seen = True
        self._events.append(
            LoginRequest(
                parse_text(payload[:6]), parse_text(payload[6:16]), parse_text(payload[16:26]), seq
            )
        )


# --------------------------------------------------------------------------- serving a store


@dataclass
class SoupServerStats:
    """Counters of a SoupBinTCP server (over all its connections)."""

    connections: int = 0
    clients: int = 0
    logins_accepted: int = 0
    #: Login Rejected sent, by reason (``A``, ``S``).
    logins_rejected: dict[str, int] = field(default_factory=dict)
    #: Connections turned away because the server had ``max_clients``: closed at once, or
    #: (an older one) evicted before it logged in to make room.
    refused_full: int = 0
    messages_sent: int = 0
    bytes_sent: int = 0
    #: Connections closed, by reason (the text before any ':').
    closed: dict[str, int] = field(default_factory=dict)
    #: Malformed packets from clients, by reason.
    malformed: dict[str, int] = field(default_factory=dict)

    def snapshot(self) -> SoupServerStats:
        """A copy (for another thread)."""
        return SoupServerStats(
            self.connections,
            self.clients,
            self.logins_accepted,
            dict(self.logins_rejected),
            self.refused_full,
            self.messages_sent,
            self.bytes_sent,
            dict(self.closed),
            dict(self.malformed),
        )

    def count_closed(self, reason: str, core: SoupServerCore) -> None:
        """Count a connection closed for ``reason``, and its core's malformed packets."""
        key = reason.split(":", 1)[0]
        self.closed[key] = self.closed.get(key, 0) + 1
        for why, n in core.stats.malformed.items():
            self.malformed[why] = self.malformed.get(why, 0) + n
        self.messages_sent += core.stats.messages_sent


class StoreSession:
    """One sequenced session served from a message store: what both servers decide.

    :meth:`login` answers a :class:`~moldudp64.soupbintcp.LoginRequest` on a
    :class:`~moldudp64.soupbintcp.SoupServerCore` (credentials
    first: ``J A``; then the session, blank meaning this one: ``J S``; else Login Accepted
    at the number asked for, at the store's next number for 0, at its first number when
    the store no longer holds the one asked for, so the client reports the numbers between
    lost). :meth:`fill` moves messages from the store to a connection while it has room
    (as BinaryFILE blocks when the store has ``get_blocks``, e.g.
    :class:`~moldudp64.store.BinaryFileStore`),
    and ends the session after the last message once ``finished`` (a recorded day:
    at once; a live store: when its feed ends).

    ``cut_at`` (set by a gateway whose feed lost a range for good) is the first number of
    that range: the served session stops before it, though the session went on past it. A
    client that reaches it is disconnected after the last message before it, with no End of
    Session (which would tell it the day simply ended), and a login at or past it is
    rejected (``J S``: those numbers cannot be served), so its resume fails loudly. A
    blank ``session`` (a gateway that has not seen the feed's yet) rejects every login
    with ``J S``.
    """

    #: Messages taken from the store per read.
    READ_COUNT = 65536

    def __init__(
        self,
        session: str,
        store: Any,
        *,
        username: str | None = None,
        password: str | None = None,
        finished: bool = True,
    ) -> None:
        build_login_accepted(session, 1)  # a session name that fits
        if (username is None) != (password is None):
            raise EncodeError("give both a username and a password, or neither")
        self.session = session
        self.store = store
        self.username = username
        self.password = password
        self.finished = finished
        self.cut_at: int | None = None

    def login(self, core: SoupServerCore, request: LoginRequest, now: float) -> str | None:
        """Accept or reject ``request`` on ``core``; the reject reason, or None if accepted."""
        if self.username is not None and (
            request.username != self.username or request.password != self.password
        ):
            core.reject(REJECT_NOT_AUTHORIZED, now)
            return REJECT_NOT_AUTHORIZED
        if not self.session.strip() or (
            request.session and request.session != self.session.strip()
        ):
            core.reject(REJECT_SESSION_UNAVAILABLE, now)
            return REJECT_SESSION_UNAVAILABLE
        first = self.store.first_seq_num
        seq = request.seq_num
        if seq == 0:
            seq = self.store.next_seq_num
        elif seq < first:
            seq = first
        if self.cut_at is not None and seq >= self.cut_at:
            core.reject(REJECT_SESSION_UNAVAILABLE, now)
            return REJECT_SESSION_UNAVAILABLE
        core.accept(self.session, seq, now)
        return None

    def fill(self, core: SoupServerCore, now: float) -> int:
        """Queue messages from the store while ``core`` has room; how many were queued."""
        total = 0
        store = self.store
        get = getattr(store, "get_run", store.get)
        cut = self.cut_at
        if cut is not None and self.finished and core.next_seq_num > cut and core.is_open:
            core.close(f"past the end of the served session ({cut - 1}): {cut} on was lost")
            return 0
        lost = f"messages from {cut} on were lost on the feed: no End of Session"
        # A store that has its messages as BinaryFILE blocks: no object per message.
        get_blocks = getattr(store, "get_blocks", None)
        while (room := core.room()) > 0:
            if get_blocks is not None:
                count, blocks = get_blocks(core.next_seq_num, self.READ_COUNT, room * 2 // 3)
                if count and (sent := core.send_blocks(blocks, now, count)):
                    total += sent
                    continue
            # A packet takes a message's block (2 + length) and its type byte.
            messages = get(core.next_seq_num, self.READ_COUNT, room * 2 // 3)
            if not messages:
                if self.finished and core.next_seq_num >= store.next_seq_num:
                    if cut is not None and core.next_seq_num >= cut:
                        core.cut_off(lost)
                    else:
                        core.end_session(now)
                elif core.output_bytes == 0 and core.next_seq_num < store.next_seq_num:
                    # One message larger than the room asked for: send it alone.
                    messages = store.get(core.next_seq_num, 1, MAX_PACKET_LENGTH + 2)
                    if messages:
                        core.send_messages(messages, now)
                        total += 1
                        continue
                break
            core.send_messages(messages, now)
            total += len(messages)
        return total
