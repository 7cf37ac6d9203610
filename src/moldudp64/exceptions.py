"""The errors moldudp64 raises.

Every error derives from :class:`MoldUDP64Error`; most also derive from the built-in
exception that fits, so ``except ValueError`` or ``except OSError`` keeps working::

    MoldUDP64Error
    ├── MalformedPacket (ValueError)       a datagram that is not a valid MoldUDP64 record
    ├── EncodeError (ValueError)           a value that cannot be put on the wire
    │   └── MessageTooLarge                a message that cannot fit in any packet
    ├── ConfigError (ValueError)           a bad option, caught before any socket opens
    ├── BinaryFileError (ValueError)       a BinaryFILE that cannot be read
    │   └── TruncatedFile                  the file ends inside a message
    ├── CaptureError (ValueError)          a capture file that cannot be read
    ├── ItchDecodeError (ValueError)       an ITCH 5.0 message of unknown type or wrong length
    ├── MissingDependency (ImportError)    an optional extra (e.g. ``arrow``) is not installed
    ├── SocketError (OSError)              a socket could not be opened, bound or joined
    ├── SessionAlreadyEnded (RuntimeError) a message published after the end of session
    ├── MessagesLostError                  strict clients: messages were lost for good
    └── ClientClosed                       the client was closed while in use
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from .events import MessagesLost

__all__ = [
    "BinaryFileError",
    "CaptureError",
    "ClientClosed",
    "ConfigError",
    "EncodeError",
    "ItchDecodeError",
    "MalformedPacket",
    "MessageTooLarge",
    "MessagesLostError",
    "MissingDependency",
    "MoldUDP64Error",
    "SessionAlreadyEnded",
    "SocketError",
    "TruncatedFile",
]


class MoldUDP64Error(Exception):
    """Root of every error this package raises."""


class MalformedPacket(MoldUDP64Error, ValueError):
    """A datagram that is not a valid MoldUDP64 record.

    ``reason`` is a short machine-friendly tag (``"short"``, ``"truncated_block"``,
    ``"missing_blocks"``, ``"trailing_bytes"``, ``"blocks_in_control"``, ``"seq_overflow"``
    (messages numbered past 2**64-1), ``"not_bytes"`` (not a buffer at all); requests:
    ``"bad_length"``, ``"seq_zero"``, ``"bad_count"``), ``offset`` the byte offset where the
    problem was found.
    """

    def __init__(self, message: str, *, reason: str, offset: int = 0) -> None:
        super().__init__(message)
        self.reason = reason
        self.offset = offset


class EncodeError(MoldUDP64Error, ValueError):
    """A value that cannot be encoded: out of range, too long, not ASCII."""


class MessageTooLarge(EncodeError):
    """A message too large to fit alone in a packet of the configured payload size."""

    def __init__(self, message: str, *, length: int, limit: int) -> None:
        super().__init__(message)
        self.length = length
        self.limit = limit


class ConfigError(MoldUDP64Error, ValueError):
    """An option value that is wrong; raised before any socket or file is opened."""


class BinaryFileError(MoldUDP64Error, ValueError):
    """A BinaryFILE that cannot be read."""


class TruncatedFile(BinaryFileError):
    """A BinaryFILE that ends inside a message; ``offset`` is where that message starts."""

    def __init__(self, message: str, *, offset: int) -> None:
        super().__init__(message)
        self.offset = offset


class CaptureError(MoldUDP64Error, ValueError):
    """A pcap or pcapng file that cannot be read."""


class ItchDecodeError(MoldUDP64Error, ValueError):
    """An ITCH 5.0 message that cannot be decoded.

    ``reason`` is ``"empty"``, ``"unknown_type"`` or ``"bad_length"``; ``message_type`` the
    first byte as a character (``""`` when empty); ``length`` the message's length.
    """

    def __init__(self, message: str, *, reason: str, message_type: str, length: int) -> None:
        super().__init__(message)
        self.reason = reason
        self.message_type = message_type
        self.length = length


class MissingDependency(MoldUDP64Error, ImportError):
    """An optional dependency is missing; ``extra`` names the pip extra that installs it."""

    def __init__(self, message: str, *, extra: str) -> None:
        super().__init__(message)
        self.extra = extra


class SocketError(MoldUDP64Error, OSError):
    """A socket that could not be opened, bound, configured or joined.

    ``address`` names what was being opened, ``cause`` the underlying ``OSError``.
    """

    def __init__(self, message: str, *, address: object = None, cause: OSError | None = None):
        super().__init__(cause.errno if cause is not None else None, message)
        self.address = address
        self.cause = cause

    def __str__(self) -> str:
        return str(self.strerror)


class ClientClosed(MoldUDP64Error):
    """The client was closed while a call was waiting on it."""


class SessionAlreadyEnded(MoldUDP64Error, RuntimeError):
    """A message was published after the publisher's ``end_session()``."""


class MessagesLostError(MoldUDP64Error):
    """Raised by a strict client's ``messages()`` when messages are lost for good.

    ``event`` is the :class:`~moldudp64.events.MessagesLost` that says which and why.
    Iteration may be resumed by calling ``messages()`` again.
    """

    def __init__(self, event: MessagesLost) -> None:
        super().__init__(
            f"messages {event.first_seq}..{event.last_seq} of session {event.session!r} "
            f"lost: {event.reason}"
        )
        self.event = event
