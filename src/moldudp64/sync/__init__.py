"""Blocking I/O over the protocol cores: the client, the publisher and the re-request server."""

from __future__ import annotations

from .client import ClientStats, Datagram, DatagramStream, MoldUDP64, RequestSender
from .server import Publisher, RerequestServer, RunResult

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
