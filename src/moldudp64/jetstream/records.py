"""A stored record (``data``, ``lost`` or ``end``) and its decoding from a stream message."""

from __future__ import annotations

import struct
from dataclasses import dataclass
from typing import TYPE_CHECKING

from ..wire import c_parse_blocks
from .connection import JetStreamError

if TYPE_CHECKING:
    from nats.js.api import RawStreamMsg


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
    try:
        messages = _split(data, count) if kind == "data" else []
    except JetStreamError as exc:
        raise JetStreamError(f"stream message {msg.seq} on {msg.subject}: {exc}") from None
    reason = str(headers.get("Mold-Reason", ""))
    return Record(msg.seq or 0, kind, seq, count, messages, reason)
