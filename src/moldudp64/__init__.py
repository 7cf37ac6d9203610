"""moldudp64: NASDAQ MoldUDP64 for Python.

An I/O-free receiver core that delivers every message exactly once and in order,
recovering gaps from re-request servers; blocking and asyncio clients over it; a
publisher and re-request server; and capture tools.
"""

from __future__ import annotations

from .binaryfile import BinaryFileReader, BinaryFileWriter, iter_binaryfile, write_binaryfile
from .events import (
    Address,
    ConsumerOverrun,
    DatagramDropped,
    DatagramReceived,
    Event,
    FeedResumed,
    FeedStale,
    GapDetected,
    GapFilled,
    Message,
    MessagesDelivered,
    MessagesLost,
    ServerDisabled,
    ServerEnabled,
    SessionChanged,
    SessionEnded,
    SessionStarted,
    Source,
)
from .exceptions import (
    BinaryFileError,
    CaptureError,
    ClientClosed,
    ConfigError,
    EncodeError,
    MalformedPacket,
    MessageTooLarge,
    MoldUDP64Error,
    SocketError,
    TruncatedFile,
)
from .wire import (
    DEFAULT_MAX_PAYLOAD,
    Packer,
    Packet,
    PacketKind,
    RequestPacket,
    RetransmissionPacket,
    RetransmissionRequest,
    build_end_of_session,
    build_heartbeat,
    build_packet,
    pack_messages,
)

__version__ = "0.1.0"

__all__ = [
    "DEFAULT_MAX_PAYLOAD",
    "Address",
    "BinaryFileError",
    "BinaryFileReader",
    "BinaryFileWriter",
    "CaptureError",
    "ClientClosed",
    "ConfigError",
    "ConsumerOverrun",
    "DatagramDropped",
    "DatagramReceived",
    "EncodeError",
    "Event",
    "FeedResumed",
    "FeedStale",
    "GapDetected",
    "GapFilled",
    "MalformedPacket",
    "Message",
    "MessageTooLarge",
    "MessagesDelivered",
    "MessagesLost",
    "MoldUDP64Error",
    "Packer",
    "Packet",
    "PacketKind",
    "RequestPacket",
    "RetransmissionPacket",
    "RetransmissionRequest",
    "ServerDisabled",
    "ServerEnabled",
    "SessionChanged",
    "SessionEnded",
    "SessionStarted",
    "SocketError",
    "Source",
    "TruncatedFile",
    "__version__",
    "build_end_of_session",
    "build_heartbeat",
    "build_packet",
    "iter_binaryfile",
    "pack_messages",
    "write_binaryfile",
]
