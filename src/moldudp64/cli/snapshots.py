"""GLIMPSE-style snapshot servers (``--snapshot-port`` of ``book`` and ``gateway``): a
SoupBinTCP server whose every login gets the order book as it is then, as ITCH 5.0
messages ending with End of Snapshot, for ``listen --snapshot``."""

from __future__ import annotations

import argparse
import threading
from typing import Any, Protocol

from .common import _say


class _Unbounded:
    """What the snapshot server's ``session.store`` says: always more to send, until the
    connection's own snapshot is all sent (then End of Session)."""

    first_seq_num = 1
    next_seq_num = 1 << 62


class _Snapshots(Protocol):
    """What a snapshot server serves from: the book now as ITCH messages ending with End
    of Snapshot (a :class:`~moldudp64.itch50.book_tables.BookWriter`, or :class:`FeedBook`)."""

    def snapshot(self) -> list[bytes]: ...


class FeedBook:
    """The book alone, no tables: what ``gateway --snapshot-port`` serves, built from the
    messages the gateway stores (``write``, from the feed's thread; :meth:`snapshot` from
    the snapshot server's, between two writes)."""

    def __init__(self) -> None:
        from ..itch50.book import new_core

        self.core = new_core(0, None, 0, frozenset())
        self.next_seq: int | None = None
        self.lock = threading.Lock()

    def write(self, seq_num: int, messages: list[bytes]) -> None:
        """Apply consecutive messages; ``messages[0]`` has sequence number ``seq_num``."""
        from ..wire import join_blocks

        blocks = join_blocks(messages)
        with self.lock:
            self.core.feed(blocks, seq_num)
            self.next_seq = seq_num + len(messages)

    def snapshot(self) -> list[bytes]:
        """The book now, ending with End of Snapshot naming the next feed number."""
        from ..itch50.book import snapshot_messages

        with self.lock:
            return snapshot_messages(self.core, self.next_seq or 1)


class _SnapshotSession:
    """``--snapshot-port``: each client that logs in gets the book as it is then (taken
    between two batches), GLIMPSE style, as a session of its own ending with End of Snapshot
    and End of Session (the :class:`~moldudp64.soupbintcp.StoreSession` interface, one
    store per connection)."""

    def __init__(self, book: _Snapshots, session: str) -> None:
        import weakref

        from ..soupbintcp import StoreSession

        self.book = book
        self.store = _Unbounded()
        self.finished = True
        self._base = StoreSession(session, self.store)
        self._stores: weakref.WeakKeyDictionary[Any, Any] = weakref.WeakKeyDictionary()

    def login(self, core: Any, request: Any, now: float) -> str | None:
        from ..store import MemoryStore

        store = MemoryStore()
        store.extend(self.book.snapshot())
        self._base.store = store
        refused = self._base.login(core, request, now)
        if refused is None:
            self._stores[core] = store
        return refused

    def fill(self, core: Any, now: float) -> int:
        store = self._stores.get(core)
        if store is None:
            return 0
        self._base.store = store
        return self._base.fill(core, now)


def snapshot_server(args: argparse.Namespace, book: _Snapshots, command: str) -> Any:
    """The GLIMPSE-style snapshot server of ``--snapshot-port`` (``book``, ``gateway``)
    serving ``book``'s snapshots (started, its address said), or None without the option."""
    if args.snapshot_port is None:
        return None
    from ..sync.soupbintcp import SoupServer

    server = SoupServer(_Unbounded(), "SNAPSHOT", (args.snapshot_addr, args.snapshot_port))
    server.session = _SnapshotSession(book, "SNAPSHOT")  # type: ignore[assignment]
    server.start()
    host, port = server.address
    _say(f"moldudp64 {command}: snapshots on soup://{host}:{port}")
    return server
