"""Blocking I/O over the protocol cores: the client, the publisher and the re-request server."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from .client import ClientStats, Datagram, DatagramStream, MoldUDP64, RequestSender

if TYPE_CHECKING:
    from .server import Publisher, RerequestServer, RunResult

#: The server side (publisher, stores, re-request cores) is imported on first use: a
#: client (``moldudp64 listen``) starts without it.
_SERVER_NAMES = frozenset({"Publisher", "RerequestServer", "RunResult"})


def __getattr__(name: str) -> Any:
    """Import the server module the first time one of its names is asked for."""
    if name not in _SERVER_NAMES:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    from . import server

    value = getattr(server, name)
    globals()[name] = value
    return value


__all__ = [
    "ClientStats",
    "Datagram",
    "DatagramStream",
    "MoldUDP64",
    "Publisher",
    "RequestSender",
    "RerequestServer",
    "RunResult",
]
