"""Message stores a re-request server answers from.

Any object with ``first_seq_num``, ``next_seq_num``, ``append``, ``get`` and ``close``
is a store (:class:`MessageStore`); an ``extend(list[bytes])`` method is used for bulk
appends when present.

A store holds consecutive messages of one session, numbered from ``first_seq_num`` up to
``next_seq_num - 1``. :class:`MemoryStore` keeps a bounded window in memory (oldest out
first); :class:`BinaryFileStore` serves a NASDAQ BinaryFILE from disk through a sparse
offset index, so a whole recorded day is served in a few megabytes of memory, and can
append to it (a recorder).

``get(seq_num, max_count, max_bytes)`` returns whole messages from ``seq_num`` on: at most
``max_count`` of them whose blocks (2-byte length + data each) add up to at most
``max_bytes``; an empty list when ``seq_num`` is not held or its message alone is larger
than ``max_bytes``.
"""

from __future__ import annotations

import os
import struct
from array import array
from typing import Protocol, runtime_checkable

from ._closing import Closing
from .exceptions import BinaryFileError, ConfigError, TruncatedFile
from .validation import check_seq_num
from .wire import MAX_MESSAGE_LENGTH, Buffer, check_message, join_blocks

__all__ = [
    "DEFAULT_INDEX_INTERVAL",
    "DEFAULT_MEMORY_MAX_BYTES",
    "BinaryFileStore",
    "MemoryStore",
    "MessageStore",
    "ReplayStore",
    "extend_store",
]

#: Default byte bound of a :class:`MemoryStore` (blocks: 2 + message length each).
DEFAULT_MEMORY_MAX_BYTES = 128 * 1024 * 1024
#: A :class:`BinaryFileStore` remembers the file offset of one message in this many.
DEFAULT_INDEX_INTERVAL = 64

_U16 = struct.Struct(">H")
_READ_CHUNK = 16 * 1024
_WRITE_CHUNK = 256 * 1024


@runtime_checkable
class MessageStore(Protocol):
    """What a publisher appends to and a re-request server reads from.

    A store whose reads may wait on the network (:class:`moldudp64.jetstream.JetStreamStore`)
    says so with a true ``blocking_io`` attribute: the asyncio re-request server then calls
    it from a worker thread, never from the event loop.
    """

    @property
    def first_seq_num(self) -> int:
        """Sequence number of the oldest message held."""
        ...

    @property
    def next_seq_num(self) -> int:
        """Sequence number the next appended message gets (one past the newest held)."""
        ...

    def append(self, message: Buffer) -> int:
        """Add a message; return its sequence number."""
        ...

    def get(self, seq_num: int, max_count: int, max_bytes: int) -> list[bytes]:
        """Whole messages from ``seq_num`` on, within ``max_count`` and ``max_bytes``."""
        ...

    def close(self) -> None:
        """Release files; a memory store forgets nothing."""
        ...


def extend_store(store: MessageStore, messages: list[bytes]) -> None:
    """Append ``messages`` to ``store``: in bulk when it has an ``extend`` method
    (:class:`MemoryStore`, :class:`BinaryFileStore`), else one by one."""
    extend = getattr(store, "extend", None)
    if extend is not None:
        extend(messages)
    else:
        append = store.append
        for message in messages:
            append(message)


class MemoryStore:
    """The most recent messages of a session, in memory, bounded by count and bytes.

    ``max_bytes`` counts blocks (2 + message length each; Python adds about 40 bytes a
    message on top, so the default 128 MiB holds about 4 million ITCH messages in about
    300 MB); when either bound is exceeded the oldest messages are dropped and
    ``first_seq_num`` moves on. Pass ``None`` for both
    bounds to keep everything (unbounded: only for inputs you control).
    """

    __slots__ = ("_bytes", "_first", "_head", "_messages", "max_bytes", "max_messages")

    def __init__(
        self,
        max_messages: int | None = None,
        max_bytes: int | None = DEFAULT_MEMORY_MAX_BYTES,
        *,
        first_seq_num: int = 1,
    ) -> None:
        if max_messages is not None and (not isinstance(max_messages, int) or max_messages < 1):
            raise ConfigError(f"max_messages {max_messages!r} must be a positive int or None")
        if max_bytes is not None and (not isinstance(max_bytes, int) or max_bytes < 2):
            raise ConfigError(f"max_bytes {max_bytes!r} must be an int >= 2 or None")
        check_seq_num(first_seq_num)
        self.max_messages = max_messages
        self.max_bytes = max_bytes
        self._messages: list[bytes] = []
        self._head = 0  # index in _messages of first_seq_num (amortised O(1) pop-left)
        self._first = first_seq_num
        self._bytes = 0

    @property
    def first_seq_num(self) -> int:
        """Sequence number of the oldest message held (== next_seq_num when empty)."""
        return self._first

    @property
    def next_seq_num(self) -> int:
        """Sequence number the next appended message gets."""
        return self._first + len(self._messages) - self._head

    @property
    def held_bytes(self) -> int:
        """Bytes of blocks held (2 + length per message)."""
        return self._bytes

    def __len__(self) -> int:
        return len(self._messages) - self._head

    def __contains__(self, seq_num: object) -> bool:
        return isinstance(seq_num, int) and self._first <= seq_num < self.next_seq_num

    def append(self, message: Buffer) -> int:
        """Add a message (copied to ``bytes``); evict the oldest past a bound; return its number."""
        length = check_message(message)
        seq = self.next_seq_num
        self._messages.append(message if isinstance(message, bytes) else bytes(message))
        self._bytes += 2 + length
        max_messages = self.max_messages
        max_bytes = self.max_bytes
        if (max_messages is not None and len(self._messages) - self._head > max_messages) or (
            max_bytes is not None and self._bytes > max_bytes
        ):
            self._evict()
        return seq

    def extend(self, messages: list[bytes]) -> None:
        """Append several messages (``bytes``); evict once at the end."""
        total = 0
        for message in messages:
            length = len(message)
            if length > MAX_MESSAGE_LENGTH:
                check_message(message)
            total += length + 2
        self._messages.extend(messages)
        self._bytes += total
        max_messages = self.max_messages
        max_bytes = self.max_bytes
        if (max_messages is not None and len(self._messages) - self._head > max_messages) or (
            max_bytes is not None and self._bytes > max_bytes
        ):
            self._evict()

    def _evict(self) -> None:
        messages = self._messages
        head = self._head
        max_messages = self.max_messages
        max_bytes = self.max_bytes
        while len(messages) - head > 1 and (
            (max_messages is not None and len(messages) - head > max_messages)
            or (max_bytes is not None and self._bytes > max_bytes)
        ):
            self._bytes -= 2 + len(messages[head])
            head += 1
        # A single message larger than max_bytes is kept: the newest message is always held.
        self._first += head - self._head
        if head > 1024 and head * 2 > len(messages):
            del messages[:head]
            head = 0
        self._head = head

    def get(self, seq_num: int, max_count: int, max_bytes: int) -> list[bytes]:
        """Messages from ``seq_num`` on: at most ``max_count``, blocks within ``max_bytes``."""
        if seq_num < self._first or max_count <= 0:
            return []
        start = self._head + (seq_num - self._first)
        messages = self._messages
        stop = min(len(messages), start + max_count)
        out: list[bytes] = []
        budget = max_bytes
        for i in range(start, stop):
            message = messages[i]
            budget -= 2 + len(message)
            if budget < 0:
                break
            out.append(message)
        return out

    def close(self) -> None:
        """Nothing to release."""

    def __repr__(self) -> str:
        return (
            f"MemoryStore(first_seq_num={self._first}, next_seq_num={self.next_seq_num}, "
            f"held_bytes={self._bytes})"
        )


class BinaryFileStore(Closing):
    """A BinaryFILE on disk served by sequence number (message n of the file is number n).

    Opening reads the file once, streaming, to build a sparse index: the byte offset of
    one message in ``index_interval`` (an ``array('Q')``, 8 bytes per entry), so a
    10-million-message day needs about 1.2 MB of index. Reads use ``os.pread`` and never
    load more than the answer. With ``writable=True`` the file is created if missing and
    :meth:`append` adds messages at its end (buffered; :meth:`flush` or :meth:`close`
    writes them, and :meth:`get` sees them at once). A file that ends inside a message
    raises :class:`TruncatedFile`, unless ``truncate_partial=True`` (writable only), which
    cuts the partial message off so a recorder can resume after a crash.
    """

    def __init__(
        self,
        path: str | os.PathLike[str],
        *,
        writable: bool = False,
        index_interval: int = DEFAULT_INDEX_INTERVAL,
        truncate_partial: bool = False,
    ) -> None:
        if not isinstance(index_interval, int) or index_interval < 1:
            raise ConfigError(f"index_interval {index_interval!r} must be a positive int")
        if truncate_partial and not writable:
            raise ConfigError("truncate_partial needs writable=True")
        self.path = os.fspath(path)
        self.index_interval = index_interval
        self.writable = writable
        flags = (os.O_RDWR | os.O_CREAT) if writable else os.O_RDONLY
        try:
            self._fd: int | None = os.open(self.path, flags | getattr(os, "O_CLOEXEC", 0), 0o644)
        except OSError as exc:
            raise BinaryFileError(
                f"cannot open BinaryFILE {self.path}: {exc.strerror or exc}"
            ) from exc
        self._index = array("Q")
        self._count = 0
        self._size = 0  # bytes of complete messages on disk
        self._pending = bytearray()
        self._pending_count = 0
        self._longest = (0, 0)
        try:
            self._build_index(truncate_partial)
        except BaseException:
            os.close(self._fd)
            self._fd = None
            raise

    def _build_index(self, truncate_partial: bool) -> None:
        fd = self._require_fd()
        interval = self.index_interval
        index = self._index
        count = 0
        base = 0  # file offset of buf[0]
        buf = b""
        pos = 0
        chunk_size = 1 << 20
        longest = longest_seq = 0
        while True:
            try:
                chunk = os.pread(fd, chunk_size, base + len(buf))
            except OSError as exc:
                raise BinaryFileError(f"cannot read {self.path}: {exc.strerror or exc}") from exc
            if not chunk:
                break
            if pos:
                base += pos
                buf = buf[pos:] + chunk
            else:
                buf += chunk
            pos = 0
            end = len(buf)
            # Hot loop: one step per message.
            while pos + 2 <= end:
                length = (buf[pos] << 8) | buf[pos + 1]
                stop = pos + 2 + length
                if stop > end:
                    break
                if count % interval == 0:
                    index.append(base + pos)
                count += 1
                pos = stop
                if length > longest:
                    longest, longest_seq = length, count
        self._count = count
        self._longest = (longest, longest_seq)
        self._size = base + pos
        if pos < len(buf):
            if truncate_partial:
                try:
                    os.ftruncate(fd, self._size)
                except OSError as exc:
                    raise BinaryFileError(
                        f"cannot truncate {self.path}: {exc.strerror or exc}"
                    ) from exc
            else:
                raise TruncatedFile(
                    f"{self.path}: truncated message at byte offset {self._size} "
                    f"(message {count + 1}): file ends {len(buf) - pos} bytes into it",
                    offset=self._size,
                )

    @property
    def longest_message(self) -> tuple[int, int]:
        """(length, sequence number) of the longest message found when the file was
        opened ((0, 0) for an empty file; appends since are not counted)."""
        return self._longest

    def _require_fd(self) -> int:
        if self._fd is None:
            raise BinaryFileError(f"BinaryFILE store {self.path} is closed")
        return self._fd

    @property
    def first_seq_num(self) -> int:
        """Always 1: message n of a BinaryFILE is sequence number n."""
        return 1

    @property
    def next_seq_num(self) -> int:
        """One past the last message (on disk or waiting to be written)."""
        return self._count + self._pending_count + 1

    @property
    def index_entries(self) -> int:
        """Entries in the sparse offset index."""
        return len(self._index)

    @property
    def file_size(self) -> int:
        """Bytes of complete messages on disk (excluding buffered appends)."""
        return self._size

    def __len__(self) -> int:
        return self._count + self._pending_count

    def __contains__(self, seq_num: object) -> bool:
        return isinstance(seq_num, int) and 1 <= seq_num < self.next_seq_num

    def append(self, message: Buffer) -> int:
        """Append a message at the end of the file (buffered); return its sequence number."""
        if not self.writable:
            raise BinaryFileError(f"BinaryFILE store {self.path} was opened read-only")
        self._require_fd()
        length = check_message(message)
        self._pending += _U16.pack(length)
        self._pending += message
        self._pending_count += 1
        if len(self._pending) >= _WRITE_CHUNK:
            self.flush()
        return self._count + self._pending_count

    def extend(self, messages: list[bytes]) -> None:
        """Append several messages (buffered)."""
        if not self.writable:
            raise BinaryFileError(f"BinaryFILE store {self.path} was opened read-only")
        self._require_fd()
        for message in messages:
            check_message(message)
        self._pending += join_blocks(messages)
        self._pending_count += len(messages)
        if len(self._pending) >= _WRITE_CHUNK:
            self.flush()

    def flush(self) -> None:
        """Write buffered appends to the file and index them."""
        if not self._pending:
            return
        fd = self._require_fd()
        data = bytes(self._pending)
        written = 0
        try:
            while written < len(data):
                written += os.pwrite(fd, data[written:], self._size + written)
        except OSError as exc:
            raise BinaryFileError(f"cannot write {self.path}: {exc.strerror or exc}") from exc
        interval = self.index_interval
        pos = 0
        count = self._count
        index = self._index
        while pos < len(data):
            if count % interval == 0:
                index.append(self._size + pos)
            count += 1
            pos += 2 + ((data[pos] << 8) | data[pos + 1])
        self._count = count
        self._size += len(data)
        self._pending.clear()
        self._pending_count = 0

    def get(self, seq_num: int, max_count: int, max_bytes: int) -> list[bytes]:
        """Messages from ``seq_num`` on: at most ``max_count``, blocks within ``max_bytes``."""
        if seq_num < 1 or max_count <= 0 or seq_num >= self.next_seq_num:
            return []
        if self._pending and seq_num + max_count > self._count + 1:
            self.flush()
        fd = self._require_fd()
        max_count = min(max_count, self._count + 1 - seq_num)
        index_pos, skip = divmod(seq_num - 1, self.index_interval)
        offset = self._index[index_pos]  # file offset of buf[0]
        pread = os.pread
        try:
            buf = pread(fd, _READ_CHUNK, offset)
            end = len(buf)
            pos = 0
            # Walk from the indexed message to the wanted one.
            while skip:
                if pos + 2 > end:
                    offset += pos
                    buf = pread(fd, _READ_CHUNK, offset)
                    end = len(buf)
                    pos = 0
                    if end < 2:
                        raise BinaryFileError(f"{self.path} shrank while being served")
                pos += 2 + ((buf[pos] << 8) | buf[pos + 1])
                skip -= 1
            out: list[bytes] = []
            budget = max_bytes
            while len(out) < max_count:
                if pos + 2 > end:
                    offset += pos
                    buf = pread(fd, _READ_CHUNK, offset)
                    end = len(buf)
                    pos = 0
                    if end < 2:
                        raise BinaryFileError(f"{self.path} shrank while being served")
                stop = pos + 2 + ((buf[pos] << 8) | buf[pos + 1])
                budget -= stop - pos
                if budget < 0:
                    break
                if stop > end:
                    offset += pos
                    stop -= pos
                    buf = pread(fd, max(_READ_CHUNK, stop), offset)
                    end = len(buf)
                    pos = 0
                    if end < stop:
                        raise BinaryFileError(f"{self.path} shrank while being served")
                out.append(buf[pos + 2 : stop])
                pos = stop
        except OSError as exc:
            raise BinaryFileError(f"cannot read {self.path}: {exc.strerror or exc}") from exc
        return out

    def get_run(self, seq_num: int, max_count: int, max_bytes: int) -> list[bytes]:
        """What :meth:`get` returns, in one read of ``max_bytes`` and one tight loop: for
        long runs of small messages (a SoupBinTCP client catching up)."""
        if seq_num < 1 or max_count <= 0 or seq_num >= self.next_seq_num:
            return []
        if self._pending and seq_num + max_count > self._count + 1:
            self.flush()
        max_count = min(max_count, self._count + 1 - seq_num)
        index_pos, skip = divmod(seq_num - 1, self.index_interval)
        offset = self._index[index_pos]
        if skip:  # the indexed message is before the wanted one: walk to it
            head = self.get(seq_num - skip, skip, 1 << 62)
            offset += sum(len(m) for m in head) + 2 * len(head)
        try:
            buf = os.pread(self._require_fd(), min(max_bytes, self._size - offset), offset)
        except OSError as exc:
            raise BinaryFileError(f"cannot read {self.path}: {exc.strerror or exc}") from exc
        out: list[bytes] = []
        append = out.append
        pos = 0
        end = len(buf)
        # Hot loop: one step per message.
        for _ in range(max_count):
            if pos + 2 > end:
                break
            stop = pos + 2 + ((buf[pos] << 8) | buf[pos + 1])
            if stop > end:
                break
            append(buf[pos + 2 : stop])
            pos = stop
        return out

    def close(self) -> None:
        """Write buffered appends and close the file (idempotent)."""
        if self._fd is None:
            return
        try:
            if self.writable:
                self.flush()
        finally:
            os.close(self._fd)
            self._fd = None


    def __repr__(self) -> str:
        return f"BinaryFileStore({self.path!r}, messages={len(self)})"


class ReplayStore:
    """A store for replaying a recorded session: ``base`` already holds every message.

    Serves only what has been published so far: :meth:`append` (called by the publisher
    for each message it sends) just moves the end forward, so clients cannot fetch
    messages "from the future". Use with ``PublisherCore(..., store=ReplayStore(base))``
    while publishing the messages of ``base`` (e.g. a :class:`BinaryFileStore`) in order.
    Appending past the end of ``base`` raises :class:`~moldudp64.exceptions.ConfigError`.
    """

    __slots__ = ("_next", "base")

    def __init__(self, base: MessageStore, *, first_seq_num: int | None = None) -> None:
        self.base = base
        start = base.first_seq_num if first_seq_num is None else first_seq_num
        if not base.first_seq_num <= start <= base.next_seq_num:
            raise ConfigError(
                f"replay start {start} is outside the base store's "
                f"{base.first_seq_num}..{base.next_seq_num}"
            )
        self._next = start

    @property
    def first_seq_num(self) -> int:
        """The base store's first sequence number."""
        return self.base.first_seq_num

    @property
    def next_seq_num(self) -> int:
        """One past the last message published so far."""
        return self._next

    @property
    def remaining(self) -> int:
        """Messages of the base store not yet published."""
        return self.base.next_seq_num - self._next

    def append(self, message: Buffer) -> int:
        """Record that the next message of ``base`` was published; return its number."""
        seq = self._next
        if seq >= self.base.next_seq_num:
            raise ConfigError(f"replay went past the end of the base store ({seq - 1} messages)")
        self._next = seq + 1
        return seq

    def extend(self, messages: list[bytes]) -> None:
        """Record that ``len(messages)`` more messages were published."""
        if self._next + len(messages) > self.base.next_seq_num:
            raise ConfigError("replay went past the end of the base store")
        self._next += len(messages)

    def get(self, seq_num: int, max_count: int, max_bytes: int) -> list[bytes]:
        """Like the base store's, limited to what was published."""
        if seq_num >= self._next:
            return []
        return self.base.get(seq_num, min(max_count, self._next - seq_num), max_bytes)

    def close(self) -> None:
        """Close the base store."""
        self.base.close()
