"""asyncio I/O over the protocol cores: the client, the publisher and the re-request server."""

from __future__ import annotations

from .client import AsyncDatagramStream, AsyncMoldUDP64, AsyncRequestSender
from .server import AsyncPublisher, AsyncRerequestServer

__all__ = [
    "AsyncDatagramStream",
    "AsyncMoldUDP64",
    "AsyncPublisher",
    "AsyncRequestSender",
    "AsyncRerequestServer",
]
