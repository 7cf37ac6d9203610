"""The feed in NATS JetStream: a bridge that appends it, a reader that replays it, a store.

Needs the ``nats`` extra (``pip install 'moldudp64[nats]'``); nats-py is imported on first
use, so the base install works without it.

Stream layout
    One stream (``NAME``, created when absent) with subjects ``NAME.>``; session ``S`` is
    subject ``NAME.s.<hex of the 10 session bytes>`` (sessions may hold spaces and dots,
    which subjects may not). Defaults: file storage, limits retention (nothing is removed
    until you set ``max_age``/``max_bytes``), a 2-minute duplicate window, direct get allowed.
    Each stream message is one *record*, its headers say what it holds:

    ``Mold-Kind: data``
        ``Mold-Seq: F``, ``Mold-Count: C``: the payload is the messages F..F+C-1 as
        MoldUDP64 blocks (2-byte big-endian length + data)
    ``Mold-Kind: lost``
        messages F..F+C-1 were lost (``Mold-Reason``); empty payload
    ``Mold-Kind: end``
        end of session; ``Mold-Seq`` is the next sequence number

    The records of a session tile it in order from its first stored number: no overlap,
    no hole (a hole a bridge cannot fill is stored as a ``lost`` record).

Redundancy rule (any number of bridges on one feed and stream)
    Every append carries ``Nats-Expected-Last-Subject-Sequence``: the stream sequence of the
    session's last record as this bridge knows it. If another bridge appended since, the
    server refuses; the bridge then reads the session's last record, drops what is already
    stored (a record that overlaps is cut to start at the stored end) and tries again. So
    records are appended one after another like a compare-and-swap, each message exactly
    once, in order, whichever bridge dies when. Batches are cut at aligned windows of
    sequence numbers (batch k holds k*N+1..(k+1)*N, cut earlier only by ``max_bytes`` or
    when the feed idles for ``linger`` seconds) so two live bridges build identical records
    and the loser's is simply skipped; ``Nats-Msg-Id`` = session:first seq:a random part per
    bridge run lets the server drop this run's retried append too (and nothing else's). A
    bridge holds a lost range for ``lost_grace`` seconds before storing it, so another
    bridge that has those messages stores them first; past that, the first bridge to reach
    a position decides it (a stored lost range stays).

Modules (each imports only those above it)
    ``connection``  nats-py on first use, its errors as :class:`JetStreamError`, ``connect``
    ``stream``      stream names, session subjects, ``ensure_stream``, ``latest_session``
    ``records``     :class:`Record` and its decoding from a stream message
    ``search``      ``find_record``: a sequence number's record in O(log n) lookups
    ``bridge``      :class:`Bridge`: events in, conditional appends out
    ``reader``      ``read_batches``, ``read_session``, ``iter_session``
    ``store``       :class:`JetStreamStore`, the read-only re-request store
"""

from __future__ import annotations

from .bridge import (
    DEFAULT_LINGER,
    DEFAULT_LOST_GRACE,
    DEFAULT_OUTAGE,
    DEFAULT_WINDOW,
    Bridge,
    BridgeStats,
)
from .connection import JetStreamError, connect, jetstream_errors
from .reader import iter_session, read_batches, read_session
from .records import Record
from .search import find_record
from .store import JetStreamStore
from .stream import (
    DEFAULT_DUPLICATE_WINDOW,
    DEFAULT_MAX_BYTES,
    check_stream_name,
    ensure_stream,
    latest_session,
    session_subject,
    stored_sessions,
)

__all__ = [
    "DEFAULT_DUPLICATE_WINDOW",
    "DEFAULT_LINGER",
    "DEFAULT_LOST_GRACE",
    "DEFAULT_MAX_BYTES",
    "DEFAULT_OUTAGE",
    "DEFAULT_WINDOW",
    "Bridge",
    "BridgeStats",
    "JetStreamError",
    "JetStreamStore",
    "Record",
    "check_stream_name",
    "connect",
    "ensure_stream",
    "find_record",
    "iter_session",
    "jetstream_errors",
    "latest_session",
    "read_batches",
    "read_session",
    "session_subject",
    "stored_sessions",
]
