"""What the blocking and the asyncio client share, without blocking I/O.

Settings (:mod:`.options`), the consumer's side (:mod:`.consumer`: datagrams, stats, the
event policy, the batch cursor, the records), back-pressure (:mod:`.backlog`) and the
constructor and checks both clients share (:mod:`.base`). The
I/O layers ``sync`` and ``asyncio`` import this package, the cores and ``net``, never
each other.
"""

from __future__ import annotations

from .backlog import Backlog
from .base import ClientBase, LineSockets
from .consumer import (
    MAX_LOST_RANGES,
    BatchCursor,
    ClientRecords,
    ClientStats,
    Datagram,
    EventHandler,
    EventPolicy,
    batch_size,
    message_iter,
)
from .options import (
    AB_REQUEST_DELAY,
    DEFAULT_MAX_BACKLOG,
    DROP_POLL_INTERVAL,
    HOT_STREAK,
    READ_BATCH,
    ClientOptions,
    as_address,
    make_options,
)

__all__ = [
    "AB_REQUEST_DELAY",
    "DEFAULT_MAX_BACKLOG",
    "DROP_POLL_INTERVAL",
    "HOT_STREAK",
    "MAX_LOST_RANGES",
    "READ_BATCH",
    "Backlog",
    "BatchCursor",
    "ClientBase",
    "ClientOptions",
    "ClientRecords",
    "ClientStats",
    "Datagram",
    "EventHandler",
    "EventPolicy",
    "LineSockets",
    "as_address",
    "batch_size",
    "make_options",
    "message_iter",
]
