"""moldudp64: NASDAQ MoldUDP64 for Python.

An I/O-free receiver core that delivers every message exactly once and in order,
recovering gaps from re-request servers; blocking and asyncio clients over it; a
publisher and re-request server; and capture tools.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

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
    MessagesAfterEnd,
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
    ItchDecodeError,
    MalformedPacket,
    MessagesLostError,
    MessageTooLarge,
    MissingDependency,
    MoldUDP64Error,
    SessionAlreadyEnded,
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

if TYPE_CHECKING:
    from .asyncio import AsyncMoldUDP64, AsyncPublisher, AsyncRerequestServer
    from .asyncio.soupbintcp import AsyncSoupBinTCP, AsyncSoupServer
    from .capture import CaptureReader, CaptureStats, CaptureWriter, read_datagrams
    from .faults import FaultInjector
    from .publisher import PublisherCore, PublisherStats
    from .receiver import ReceiverConfig, ReceiverCore, ReceiverStats
    from .rerequest import RateLimit, RerequestServerCore, RerequestStats
    from .soupbintcp import CannotResume, LoginRejectedError, SoupClientCore, SoupServerCore
    from .store import BinaryFileStore, MemoryStore, MessageStore, ReplayStore
    from .sync import MoldUDP64, Publisher, RerequestServer
    from .sync.soupbintcp import SoupBinTCP, SoupServer

__version__ = "0.1.0"

# Names imported on first use, so that a command starts without loading every layer
# (sockets, threads, asyncio, dpkt): name -> submodule.
_LAZY = {
    **dict.fromkeys(("AsyncMoldUDP64", "AsyncPublisher", "AsyncRerequestServer"), "asyncio"),
    **dict.fromkeys(
        ("CaptureReader", "CaptureStats", "CaptureWriter", "read_datagrams"), "capture"
    ),
    "FaultInjector": "faults",
    **dict.fromkeys(("PublisherCore", "PublisherStats"), "publisher"),
    **dict.fromkeys(("ReceiverConfig", "ReceiverCore", "ReceiverStats"), "receiver"),
    **dict.fromkeys(("RateLimit", "RerequestServerCore", "RerequestStats"), "rerequest"),
    **dict.fromkeys(("BinaryFileStore", "MemoryStore", "MessageStore", "ReplayStore"), "store"),
    **dict.fromkeys(("MoldUDP64", "Publisher", "RerequestServer"), "sync"),
    # SoupBinTCP: the cores, and the blocking and asyncio client and server.
    **dict.fromkeys(
        ("CannotResume", "LoginRejectedError", "SoupClientCore", "SoupServerCore"), "soupbintcp"
    ),
    **dict.fromkeys(("SoupBinTCP", "SoupServer"), "sync.soupbintcp"),
    **dict.fromkeys(("AsyncSoupBinTCP", "AsyncSoupServer"), "asyncio.soupbintcp"),
}


def __getattr__(name: str) -> Any:
    """Import a layer the first time one of its names is asked for."""
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'moldudp64' has no attribute {name!r}")
    import importlib

    value = getattr(importlib.import_module(f".{module}", __name__), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_LAZY))

__all__ = [
    "DEFAULT_MAX_PAYLOAD",
    "Address",
    "AsyncMoldUDP64",
    "AsyncPublisher",
    "AsyncRerequestServer",
    "AsyncSoupBinTCP",
    "AsyncSoupServer",
    "BinaryFileError",
    "BinaryFileReader",
    "BinaryFileStore",
    "BinaryFileWriter",
    "CannotResume",
    "CaptureError",
    "CaptureReader",
    "CaptureStats",
    "CaptureWriter",
    "ClientClosed",
    "ConfigError",
    "ConsumerOverrun",
    "DatagramDropped",
    "DatagramReceived",
    "EncodeError",
    "Event",
    "FaultInjector",
    "FeedResumed",
    "FeedStale",
    "GapDetected",
    "GapFilled",
    "ItchDecodeError",
    "LoginRejectedError",
    "MalformedPacket",
    "MemoryStore",
    "Message",
    "MessageStore",
    "MessageTooLarge",
    "MessagesAfterEnd",
    "MessagesDelivered",
    "MessagesLost",
    "MessagesLostError",
    "MissingDependency",
    "MoldUDP64",
    "MoldUDP64Error",
    "Packer",
    "Packet",
    "PacketKind",
    "Publisher",
    "PublisherCore",
    "PublisherStats",
    "RateLimit",
    "ReceiverConfig",
    "ReceiverCore",
    "ReceiverStats",
    "ReplayStore",
    "RequestPacket",
    "RerequestServer",
    "RerequestServerCore",
    "RerequestStats",
    "RetransmissionPacket",
    "RetransmissionRequest",
    "ServerDisabled",
    "ServerEnabled",
    "SessionAlreadyEnded",
    "SessionChanged",
    "SessionEnded",
    "SessionStarted",
    "SocketError",
    "SoupBinTCP",
    "SoupClientCore",
    "SoupServer",
    "SoupServerCore",
    "Source",
    "TruncatedFile",
    "__version__",
    "build_end_of_session",
    "build_heartbeat",
    "build_packet",
    "iter_binaryfile",
    "pack_messages",
    "read_datagrams",
    "write_binaryfile",
]
