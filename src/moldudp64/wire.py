"""MoldUDP64 records on the wire: downstream packets, message blocks and request packets.

Pure functions and small value classes; no I/O and no state. Every multi-byte number is
an unsigned big-endian integer. Parsing is zero-copy (``memoryview``) where it can be;
building checks every value and raises :class:`~moldudp64.exceptions.EncodeError`.
"""

from __future__ import annotations

import enum
import os
import struct
from collections.abc import Callable, Iterable, Iterator

from .exceptions import EncodeError, MalformedPacket, MessageTooLarge

__all__ = [
    "DEFAULT_MAX_PAYLOAD",
    "END_OF_SESSION",
    "HEADER",
    "HEADER_SIZE",
    "MAX_DATAGRAM",
    "MAX_MESSAGE_COUNT",
    "MAX_MESSAGE_LENGTH",
    "MAX_SEQ_NUM",
    "SESSION_SIZE",
    "Buffer",
    "Packer",
    "Packet",
    "PacketKind",
    "RequestPacket",
    "RetransmissionPacket",
    "RetransmissionRequest",
    "build_end_of_session",
    "build_heartbeat",
    "build_packet",
    "check_message",
    "decode_session",
    "encode_session",
    "join_blocks",
    "pack_messages",
    "parse_blocks",
    "split_blocks",
]

#: What a packet view accepts.
Buffer = bytes | bytearray | memoryview

SESSION_SIZE = 10
HEADER_SIZE = 20
#: Header of a downstream packet and of a request packet: session, sequence number, count.
HEADER = struct.Struct(">10sQH")
_U16 = struct.Struct(">H")
#: Bytes of message blocks after the header that NASDAQ TotalView-ITCH puts in one packet.
DEFAULT_MAX_PAYLOAD = 1452
#: The largest UDP payload over IPv4.
MAX_DATAGRAM = 65507
#: The most messages one data packet can carry (0xFFFF means end of session).
MAX_MESSAGE_COUNT = 0xFFFE
END_OF_SESSION = 0xFFFF
MAX_MESSAGE_LENGTH = 0xFFFF
MAX_SEQ_NUM = 2**64 - 1


class PacketKind(enum.Enum):
    """What a downstream packet is, from its message count."""

    STANDARD = "standard"
    HEARTBEAT = "heartbeat"
    END_OF_SESSION = "end_of_session"


def encode_session(session: str | bytes) -> bytes:
    """Return the 10 wire bytes of a session name, right-padded with spaces.

    A ``str`` must be ASCII; either form must be at most 10 bytes.
    """
    if isinstance(session, str):
        try:
            raw = session.encode("ascii")
        except UnicodeEncodeError:
            raise EncodeError(f"session {session!r} is not ASCII") from None
    elif isinstance(session, bytes | bytearray | memoryview):
        raw = bytes(session)
    else:
        raise EncodeError(f"session must be str or bytes, not {type(session).__name__}")
    if len(raw) > SESSION_SIZE:
        raise EncodeError(f"session {session!r} is longer than {SESSION_SIZE} bytes")
    return raw.ljust(SESSION_SIZE, b" ")


def decode_session(raw: bytes) -> str:
    """Return a session name as text; every byte maps to one character (latin-1)."""
    return raw.decode("latin-1")


def _as_bytes(data: object, what: str = "a packet") -> bytes:
    """``data`` as ``bytes``; :class:`MalformedPacket` naming the type when it is no buffer."""
    if type(data) is bytes:
        return data
    try:
        return bytes(memoryview(data))  # type: ignore[arg-type]
    except TypeError:
        raise MalformedPacket(
            f"{what} must be bytes, bytearray or memoryview, not {type(data).__name__}",
            reason="not_bytes",
        ) from None


def _message_bytes(message: object) -> bytes:
    """A message as ``bytes``; :class:`EncodeError` naming the value when it is no buffer
    (a ``str`` has no wire form until it is encoded; an ``int`` is not a message)."""
    if type(message) is bytes:
        return message
    try:
        return bytes(memoryview(message))  # type: ignore[arg-type]
    except TypeError:
        raise EncodeError(
            f"a message must be bytes, bytearray or memoryview, not "
            f"{type(message).__name__} ({message!r:.40})"
        ) from None


def _check_seq(seq_num: int, what: str = "sequence number") -> None:
    if not isinstance(seq_num, int) or isinstance(seq_num, bool):
        raise EncodeError(f"{what} must be an int, not {type(seq_num).__name__}")
    if not 0 <= seq_num <= MAX_SEQ_NUM:
        raise EncodeError(f"{what} {seq_num} is outside 0..2**64-1")


class Packet:
    """A zero-copy view of one downstream packet.

    Construction only checks that the 20-byte header is there; iteration yields each
    complete message as a ``memoryview`` and stops quietly at a truncated block, so
    ``len(packet) != packet.msg_count`` reveals truncation. :meth:`validate` (or
    :meth:`parse`) checks the whole packet and raises :class:`MalformedPacket`.

    Sequence numbers: a data packet's messages must all be numbered within 2**64-1
    (``seq_num + msg_count - 1 <= 2**64-1``, else ``reason="seq_overflow"``). A heartbeat
    or end of session may carry any 64-bit value (it names the next number, numbers no
    message). Sequence number 0 is not refused here: it is on the wire in real captures;
    the receiver decides what it means.
    """

    __slots__ = ("_count", "_len", "_seq", "_session", "_view")

    def __init__(self, data: Buffer) -> None:
        if isinstance(data, bytes):
            view = memoryview(data)
        else:
            try:
                view = memoryview(data).cast("B")
            except TypeError:
                raise MalformedPacket(
                    f"a packet must be bytes, bytearray or memoryview, not {type(data).__name__}",
                    reason="not_bytes",
                ) from None
        if len(view) < HEADER_SIZE:
            raise MalformedPacket(
                f"datagram of {len(view)} bytes is shorter than the {HEADER_SIZE}-byte header",
                reason="short",
                offset=len(view),
            )
        self._view = view
        self._session, self._seq, self._count = HEADER.unpack_from(view)
        self._len: int | None = None

    @classmethod
    def parse(cls, data: Buffer) -> Packet:
        """Return a validated packet; raise :class:`MalformedPacket` naming the fault."""
        packet = cls(data)
        packet.validate()
        return packet

    @property
    def data(self) -> memoryview:
        """The whole datagram."""
        return self._view

    @property
    def session_ident_raw(self) -> bytes:
        """The 10 session bytes as they are on the wire."""
        return self._session  # type: ignore[no-any-return]

    @property
    def session_ident(self) -> str:
        """The session name as text (trailing spaces kept, as on the wire)."""
        return decode_session(self._session)

    @property
    def seq_num(self) -> int:
        """Sequence number of the first message (for control packets: the next one)."""
        return self._seq  # type: ignore[no-any-return]

    @property
    def msg_count(self) -> int:
        """The message count field as sent (0xFFFF for end of session)."""
        return self._count  # type: ignore[no-any-return]

    @property
    def packet_kind(self) -> PacketKind:
        """Data, heartbeat or end of session."""
        if self._count == 0:
            return PacketKind.HEARTBEAT
        if self._count == END_OF_SESSION:
            return PacketKind.END_OF_SESSION
        return PacketKind.STANDARD

    @property
    def next_seq_num(self) -> int:
        """The sequence number after the last complete message (control packets: seq_num)."""
        return self._seq + len(self)  # type: ignore[no-any-return]

    def __len__(self) -> int:
        if self._len is None:
            n = 0
            for _ in self:
                n += 1
            self._len = n
        return self._len

    def __iter__(self) -> Iterator[memoryview]:
        count = self._count
        if count == 0 or count == END_OF_SESSION:
            return
        view = self._view
        end = len(view)
        pos = HEADER_SIZE
        unpack = _U16.unpack_from
        for _ in range(count):
            if pos + 2 > end:
                return
            (length,) = unpack(view, pos)
            pos += 2
            if pos + length > end:
                return
            yield view[pos : pos + length]
            pos += length

    def messages(self) -> list[bytes]:
        """The complete messages as ``bytes`` copies."""
        return [bytes(m) for m in self]

    def validate(self) -> Packet:
        """Check the whole packet; raise :class:`MalformedPacket` naming what and where."""
        view = self._view
        end = len(view)
        count = self._count
        if count == 0 or count == END_OF_SESSION:
            if end != HEADER_SIZE:
                kind = "heartbeat" if count == 0 else "end-of-session"
                raise MalformedPacket(
                    f"{kind} packet carries {end - HEADER_SIZE} bytes after the header",
                    reason="blocks_in_control",
                    offset=HEADER_SIZE,
                )
            return self
        if self._seq > MAX_SEQ_NUM - count + 1:
            raise MalformedPacket(
                f"{count} messages from sequence number {self._seq} run past 2**64-1",
                reason="seq_overflow",
                offset=10,
            )
        pos = HEADER_SIZE
        unpack = _U16.unpack_from
        for index in range(count):
            if pos + 2 > end:
                if pos == end:
                    raise MalformedPacket(
                        f"count says {count} messages but only {index} are present",
                        reason="missing_blocks",
                        offset=pos,
                    )
                raise MalformedPacket(
                    f"message {index} length field at offset {pos} runs past the end ({end})",
                    reason="truncated_block",
                    offset=pos,
                )
            (length,) = unpack(view, pos)
            if pos + 2 + length > end:
                raise MalformedPacket(
                    f"message {index} at offset {pos} claims {length} bytes, "
                    f"only {end - pos - 2} remain",
                    reason="truncated_block",
                    offset=pos,
                )
            pos += 2 + length
        if pos != end:
            raise MalformedPacket(
                f"{end - pos} bytes left over after the last of {count} messages",
                reason="trailing_bytes",
                offset=pos,
            )
        self._len = count
        return self

    def __repr__(self) -> str:
        return (
            f"Packet(session={self.session_ident!r}, seq_num={self._seq}, "
            f"msg_count={self._count}, kind={self.packet_kind.value})"
        )


def split_blocks(data: Buffer, count: int | None = None) -> list[bytes]:
    """Return the messages of a standard packet as ``bytes``, stopping at a truncated block.

    The hot path of every receiver: give it a packet that :meth:`Packet.validate` accepted
    to get exactly ``msg_count`` messages. ``count`` overrides the header's count.
    """
    if count is None:
        count = _U16.unpack_from(data, 18)[0]
    out: list[bytes] = []
    append = out.append
    end = len(data)
    pos = HEADER_SIZE
    raw = data if isinstance(data, bytes) else bytes(data)
    for _ in range(count):
        if pos + 2 > end:
            break
        stop = pos + 2 + ((raw[pos] << 8) | raw[pos + 1])
        if stop > end:
            break
        append(raw[pos + 2 : stop])
        pos = stop
    return out


def _parse_blocks_py(data: bytes) -> list[bytes]:
    """Validate a whole packet and return its messages as ``bytes``, in one pass.

    The receiver's hot path: equivalent to ``Packet.parse(data)`` followed by
    :func:`split_blocks`, and raises the same :class:`MalformedPacket`. Control packets
    (heartbeat, end of session) return an empty list.
    """
    if type(data) is not bytes:
        data = _as_bytes(data)
    end = len(data)
    if end < HEADER_SIZE:
        return Packet.parse(data).messages()  # raises "short"
    count = (data[18] << 8) | data[19]
    if count == 0 or count == END_OF_SESSION:
        if end != HEADER_SIZE:
            Packet.parse(data)  # raises "blocks_in_control"
        return []
    if data[10] == 0xFF and int.from_bytes(data[10:18], "big") > MAX_SEQ_NUM - count + 1:
        Packet.parse(data)  # raises "seq_overflow"
    out: list[bytes] = []
    append = out.append
    pos = HEADER_SIZE
    for _ in range(count):
        if pos + 2 > end:
            break
        stop = pos + 2 + ((data[pos] << 8) | data[pos + 1])
        if stop > end:
            break
        append(data[pos + 2 : stop])
        pos = stop
    if len(out) != count or pos != end:
        Packet.parse(data)  # raises, naming the fault
    return out


def _load_speedup() -> Callable[[bytes], list[bytes] | None] | None:
    if os.environ.get("MOLDUDP64_PURE_PYTHON"):
        return None
    try:
        from ._speedups import parse_blocks as c_parse_blocks
    except ImportError:
        return None
    return c_parse_blocks


#: The C twin of :func:`parse_blocks` (None without the accelerator): returns None
#: instead of raising for a malformed packet.
c_parse_blocks = _load_speedup()


def _parse_blocks_c(data: bytes) -> list[bytes]:
    """:func:`parse_blocks` through the C accelerator; same results, same errors."""
    assert c_parse_blocks is not None
    if type(data) is not bytes:
        data = _as_bytes(data)
    out = c_parse_blocks(data)
    if out is None:
        Packet.parse(data)  # raises, naming the fault
        raise AssertionError("C and Python disagree on a packet")  # pragma: no cover
    return out


#: Validate a whole packet and return its messages as ``bytes`` in one pass (C when built).
parse_blocks = _parse_blocks_py if c_parse_blocks is None else _parse_blocks_c
parse_blocks.__doc__ = _parse_blocks_py.__doc__


def _join_blocks_py(messages: list[bytes]) -> bytes:
    """The message blocks of ``messages`` back to back: a packet body, or BinaryFILE bytes."""
    parts = []
    for message in messages:
        length = len(message)
        if length > MAX_MESSAGE_LENGTH:
            raise ValueError(f"message of {length} bytes exceeds 65535")
        parts.append(_U16.pack(length))
        parts.append(message)
    return b"".join(parts)


def _load_join() -> Callable[[list[bytes]], bytes]:
    if os.environ.get("MOLDUDP64_PURE_PYTHON"):
        return _join_blocks_py
    try:
        from ._speedups import join_blocks as c_join_blocks
    except ImportError:
        return _join_blocks_py
    return c_join_blocks


#: The message blocks of a list of ``bytes`` back to back (C when built); ValueError for a
#: message over 65,535 bytes.
join_blocks = _load_join()


def check_message(message: Buffer) -> int:
    """``len(message)``, or :class:`MessageTooLarge` past the 65,535-byte block limit."""
    length = len(message)
    if length > MAX_MESSAGE_LENGTH:
        raise MessageTooLarge(
            f"message of {length} bytes exceeds the {MAX_MESSAGE_LENGTH}-byte block limit",
            length=length,
            limit=MAX_MESSAGE_LENGTH,
        )
    return length


def build_packet(session: str | bytes, seq_num: int, messages: Iterable[Buffer]) -> bytes:
    """Build one downstream data packet carrying ``messages`` from ``seq_num`` on.

    No payload limit applies here beyond the protocol's (1 to 0xFFFE messages, each at
    most 65,535 bytes, at most 65,507 bytes in all); use :class:`Packer` to respect an MTU.
    """
    raw_session = encode_session(session)
    _check_seq(seq_num)
    parts: list[bytes] = []
    size = HEADER_SIZE
    for message in messages:
        data = _message_bytes(message)
        length = check_message(data)
        parts.append(_U16.pack(length))
        parts.append(data)
        size += 2 + length
    count = len(parts) // 2
    if count == 0:
        raise EncodeError("a data packet needs at least one message (use build_heartbeat)")
    if count > MAX_MESSAGE_COUNT:
        raise EncodeError(f"{count} messages exceed the {MAX_MESSAGE_COUNT} a packet can carry")
    if seq_num + count - 1 > MAX_SEQ_NUM:
        raise EncodeError(f"sequence numbers from {seq_num} overflow 2**64")
    if size > MAX_DATAGRAM:
        raise MessageTooLarge(
            f"packet of {size} bytes exceeds the {MAX_DATAGRAM}-byte UDP limit",
            length=size,
            limit=MAX_DATAGRAM,
        )
    return HEADER.pack(raw_session, seq_num, count) + b"".join(parts)


def build_heartbeat(session: str | bytes, next_seq_num: int) -> bytes:
    """Build a heartbeat: no messages, carrying the next sequence number to be sent."""
    _check_seq(next_seq_num, "next sequence number")
    return HEADER.pack(encode_session(session), next_seq_num, 0)


def build_end_of_session(session: str | bytes, next_seq_num: int) -> bytes:
    """Build an end-of-session packet: count 0xFFFF, one past the session's last message."""
    _check_seq(next_seq_num, "next sequence number")
    return HEADER.pack(encode_session(session), next_seq_num, END_OF_SESSION)


class Packer:
    """Packs messages into downstream packets of at most ``max_payload`` bytes of blocks.

    Messages are numbered from ``seq_num`` on and never split. :meth:`add` returns a
    finished packet when a message does not fit in the current one (the message then
    starts the next packet); :meth:`flush` returns the partial packet.
    """

    __slots__ = ("_parts", "_pending_bytes", "_seq", "_session", "max_payload")

    def __init__(
        self,
        session: str | bytes,
        seq_num: int = 1,
        max_payload: int = DEFAULT_MAX_PAYLOAD,
    ) -> None:
        self._session = encode_session(session)
        _check_seq(seq_num)
        if not isinstance(max_payload, int) or isinstance(max_payload, bool):
            raise EncodeError(f"max_payload must be an int, not {type(max_payload).__name__}")
        if not 3 <= max_payload <= MAX_DATAGRAM - HEADER_SIZE:
            raise EncodeError(
                f"max_payload {max_payload} is outside 3..{MAX_DATAGRAM - HEADER_SIZE}"
            )
        self.max_payload = max_payload
        self._seq = seq_num
        self._parts: list[bytes] = []
        self._pending_bytes = 0

    @property
    def session_ident_raw(self) -> bytes:
        """The 10 session bytes packets carry."""
        return self._session

    @property
    def next_seq_num(self) -> int:
        """The sequence number the next added message will get."""
        return self._seq + len(self._parts)

    @property
    def pending(self) -> int:
        """Messages waiting in the partial packet."""
        return len(self._parts)

    @property
    def pending_bytes(self) -> int:
        """Bytes of blocks in the partial packet."""
        return self._pending_bytes

    def fits(self, length: int) -> bool:
        """Whether a message of ``length`` bytes still fits in the partial packet."""
        return (
            self._pending_bytes + 2 + length <= self.max_payload
            and len(self._parts) < MAX_MESSAGE_COUNT
        )

    def add(self, message: Buffer) -> bytes | None:
        """Add one message; return the finished packet if it had to be closed first."""
        if type(message) is not bytes:
            message = _message_bytes(message)
        length = len(message)
        if length + 2 > self.max_payload or length > MAX_MESSAGE_LENGTH:
            raise MessageTooLarge(
                f"message of {length} bytes cannot fit in a packet of "
                f"{self.max_payload} payload bytes",
                length=length,
                limit=min(self.max_payload - 2, MAX_MESSAGE_LENGTH),
            )
        if self._seq + len(self._parts) > MAX_SEQ_NUM:
            raise EncodeError("sequence numbers overflow 2**64")
        done = None
        if not self.fits(length):
            done = self.flush()
        self._parts.append(_U16.pack(length) + message)
        self._pending_bytes += 2 + length
        return done

    def flush(self) -> bytes | None:
        """Return the partial packet (None when empty) and start a new one."""
        parts = self._parts
        if not parts:
            return None
        packet = HEADER.pack(self._session, self._seq, len(parts)) + b"".join(parts)
        self._seq += len(parts)
        self._parts = []
        self._pending_bytes = 0
        return packet


def pack_messages(
    session: str | bytes,
    seq_num: int,
    messages: Iterable[Buffer],
    max_payload: int = DEFAULT_MAX_PAYLOAD,
) -> list[bytes]:
    """Pack ``messages`` (numbered from ``seq_num``) into as few packets as fit."""
    packer = Packer(session, seq_num, max_payload)
    out: list[bytes] = []
    for message in messages:
        done = packer.add(message)
        if done is not None:
            out.append(done)
    last = packer.flush()
    if last is not None:
        out.append(last)
    return out


def _check_request(seq_num: int, msg_count: int) -> None:
    _check_seq(seq_num)
    if seq_num == 0:
        raise EncodeError("sequence number 0 cannot be requested (numbers start at 1)")
    if not isinstance(msg_count, int) or isinstance(msg_count, bool):
        raise EncodeError(f"message count must be an int, not {type(msg_count).__name__}")
    if not 1 <= msg_count <= MAX_MESSAGE_COUNT:
        raise EncodeError(f"message count {msg_count} is outside 1..{MAX_MESSAGE_COUNT}")
    if seq_num > MAX_SEQ_NUM - msg_count + 1:
        raise EncodeError(f"{msg_count} messages from sequence number {seq_num} run past 2**64-1")


class RetransmissionPacket:
    """A request packet: ask a re-request server for ``msg_count`` messages from ``seq_num``.

    Exactly 20 bytes on the wire (:meth:`build`, or ``bytes(packet)``). Also reachable as
    :data:`RequestPacket`. A request asks for 1 to 0xFFFE messages from sequence number 1
    or later, all numbered within 2**64-1; anything else raises :class:`EncodeError`
    (:meth:`parse`: :class:`MalformedPacket` with ``reason`` ``"seq_zero"``,
    ``"bad_count"`` or ``"seq_overflow"``).
    """

    __slots__ = ("msg_count", "seq_num", "session")

    SIZE = HEADER_SIZE

    def __init__(self, session: str | bytes, seq_num: int, msg_count: int) -> None:
        self.session = encode_session(session)
        _check_request(seq_num, msg_count)
        self.seq_num = seq_num
        self.msg_count = msg_count

    @property
    def session_ident(self) -> str:
        """The session name as text."""
        return decode_session(self.session)

    def build(self) -> bytes:
        """The 20 wire bytes."""
        return HEADER.pack(self.session, self.seq_num, self.msg_count)

    def __bytes__(self) -> bytes:
        return self.build()

    @classmethod
    def parse(cls, data: Buffer) -> RetransmissionPacket:
        """Parse a request; anything but a valid 20-byte request is :class:`MalformedPacket`."""
        raw = _as_bytes(data, "a request")
        if len(raw) != HEADER_SIZE:
            raise MalformedPacket(
                f"request of {len(raw)} bytes; a request is exactly {HEADER_SIZE} bytes",
                reason="bad_length",
                offset=min(len(raw), HEADER_SIZE),
            )
        session, seq, count = HEADER.unpack_from(raw)
        if seq == 0:
            raise MalformedPacket("request for sequence number 0", reason="seq_zero", offset=10)
        if not 1 <= count <= MAX_MESSAGE_COUNT:
            raise MalformedPacket(
                f"request for {count} messages (1..{MAX_MESSAGE_COUNT} allowed)",
                reason="bad_count",
                offset=18,
            )
        if seq > MAX_SEQ_NUM - count + 1:
            raise MalformedPacket(
                f"request for {count} messages from {seq} runs past 2**64-1",
                reason="seq_overflow",
                offset=10,
            )
        return cls(session, seq, count)

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, RetransmissionPacket):
            return NotImplemented
        return (self.session, self.seq_num, self.msg_count) == (
            other.session,
            other.seq_num,
            other.msg_count,
        )

    def __hash__(self) -> int:
        return hash((self.session, self.seq_num, self.msg_count))

    def __repr__(self) -> str:
        return (
            f"{type(self).__name__}(session={self.session_ident!r}, "
            f"seq_num={self.seq_num}, msg_count={self.msg_count})"
        )


RequestPacket = RetransmissionPacket


class RetransmissionRequest(RetransmissionPacket):
    """A request packet with the number of times it was sent, for the low-level client.

    Built from the three fields, or, as the Rust crate's ``RetransmissionRequest::new``,
    from a :class:`RetransmissionPacket`: ``RetransmissionRequest(packet)``.
    """

    __slots__ = ("attempts",)

    def __init__(
        self,
        session: str | bytes | RetransmissionPacket,
        seq_num: int | None = None,
        msg_count: int | None = None,
        attempts: int = 0,
    ) -> None:
        if isinstance(session, RetransmissionPacket):
            if seq_num is not None or msg_count is not None:
                raise EncodeError(
                    "give a RetransmissionPacket alone, or session, seq_num and msg_count"
                )
            packet = session
            session, seq_num, msg_count = packet.session, packet.seq_num, packet.msg_count
        elif seq_num is None or msg_count is None:
            raise EncodeError(
                "a request needs seq_num and msg_count (or a RetransmissionPacket alone)"
            )
        if not isinstance(attempts, int) or isinstance(attempts, bool) or attempts < 0:
            raise EncodeError(f"attempts {attempts!r} must be an int >= 0")
        super().__init__(session, seq_num, msg_count)
        self.attempts = attempts

    @classmethod
    def of(cls, packet: RetransmissionPacket) -> RetransmissionRequest:
        """Wrap a request packet with an attempts counter of 0."""
        return cls(packet)
