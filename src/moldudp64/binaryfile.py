"""NASDAQ BinaryFILE: the message blocks of one session back to back, no packet headers.

Each message is a 2-byte big-endian length followed by that many bytes; message n of
the file is sequence number n. The reader streams files of any size in bounded memory.
"""

from __future__ import annotations

import io
import os
from collections.abc import Iterable, Iterator
from typing import BinaryIO

from ._closing import Closing
from .exceptions import BinaryFileError, MessageTooLarge, TruncatedFile
from .wire import MAX_MESSAGE_LENGTH, Buffer, join_blocks

__all__ = ["BinaryFileReader", "BinaryFileWriter", "iter_binaryfile", "write_binaryfile"]

_CHUNK = 1 << 20
#: Blocks of at least this many bytes skip the buffer (written after what it holds).
_DIRECT = 1 << 16


class BinaryFileReader(Closing):
    """Iterate the messages of a BinaryFILE from a path or a binary file object.

    Reads in 1 MiB chunks, so memory stays bounded whatever the file size. A file that
    ends inside a message raises :class:`TruncatedFile` naming the byte offset of that
    message, after every complete message before it was yielded. ``offset`` is the byte
    offset of the next message and ``count`` the messages read so far.
    """

    def __init__(self, source: str | os.PathLike[str] | BinaryIO, *, chunk_size: int = _CHUNK):
        if isinstance(source, str | os.PathLike):
            self.name = os.fspath(source)
            try:
                self._file: BinaryIO = open(source, "rb")  # noqa: SIM115
            except OSError as exc:
                raise BinaryFileError(
                    f"cannot open BinaryFILE {self.name}: {exc.strerror or exc}"
                ) from exc
            self._owned = True
        else:
            self.name = getattr(source, "name", "<stream>")
            self._file = source
            self._owned = False
        self._chunk_size = chunk_size
        self.offset = 0
        self.count = 0

    def __iter__(self) -> Iterator[bytes]:
        buf = b""
        pos = 0
        base = self.offset  # file offset of buf[0]
        read = self._file.read
        while True:
            try:
                chunk = read(self._chunk_size)
            except OSError as exc:
                raise BinaryFileError(f"cannot read {self.name}: {exc}") from exc
            if not chunk:
                break
            if pos < len(buf):
                buf = buf[pos:] + chunk
                base += pos
            else:
                base += len(buf)
                buf = chunk
            pos = 0
            end = len(buf)
            while pos + 2 <= end:
                stop = pos + 2 + ((buf[pos] << 8) | buf[pos + 1])
                if stop > end:
                    break
                message = buf[pos + 2 : stop]
                pos = stop
                self.offset = base + pos
                self.count += 1
                yield message
        if pos < len(buf):
            start = base + pos
            have = len(buf) - pos
            if have < 2:
                detail = "inside its 2-byte length field"
            else:
                want = (buf[pos] << 8) | buf[pos + 1]
                detail = f"after {have - 2} of its {want} bytes"
            raise TruncatedFile(
                f"{self.name}: truncated message at byte offset {start} "
                f"(message {self.count + 1}): file ends {detail}",
                offset=start,
            )

    def close(self) -> None:
        """Close the file if this reader opened it."""
        if self._owned:
            self._file.close()



def iter_binaryfile(source: str | os.PathLike[str] | BinaryIO) -> Iterator[bytes]:
    """Yield every message of a BinaryFILE; see :class:`BinaryFileReader`."""
    with BinaryFileReader(source) as reader:
        yield from reader


class BinaryFileWriter(Closing):
    """Write messages as a BinaryFILE, to a path or a binary file object (buffered)."""

    def __init__(self, target: str | os.PathLike[str] | BinaryIO) -> None:
        if isinstance(target, str | os.PathLike):
            self.name = os.fspath(target)
            try:
                raw: BinaryIO = open(target, "wb")  # noqa: SIM115
            except OSError as exc:
                raise BinaryFileError(
                    f"cannot create BinaryFILE {self.name}: {exc.strerror or exc}"
                ) from exc
            self._file: BinaryIO = raw
            self._owned = True
        else:
            self.name = getattr(target, "name", "<stream>")
            self._file = target
            self._owned = False
        self._buffer = io.BytesIO()
        self.count = 0

    def write(self, message: Buffer) -> None:
        """Append one message."""
        length = len(message)
        if length > MAX_MESSAGE_LENGTH:
            raise MessageTooLarge(
                f"message of {length} bytes exceeds the {MAX_MESSAGE_LENGTH}-byte limit",
                length=length,
                limit=MAX_MESSAGE_LENGTH,
            )
        buf = self._buffer
        buf.write(length.to_bytes(2, "big"))
        buf.write(message)
        self.count += 1
        if buf.tell() >= _CHUNK:
            self.flush()

    def write_many(self, messages: Iterable[Buffer]) -> None:
        """Append every message of ``messages`` (a ``list`` of ``bytes`` takes the fast path)."""
        if type(messages) is list:
            try:
                block = join_blocks(messages)
            except (TypeError, ValueError):
                pass  # not all bytes, or one too long: write() below handles each
            else:
                self._buffer.write(block)
                self.count += len(messages)
                if self._buffer.tell() >= _CHUNK:
                    self.flush()
                return
        for message in messages:
            self.write(message)

    def write_blocks(self, blocks: Buffer, count: int) -> None:
        """Append ``count`` messages given as whole BinaryFILE blocks (written as they
        are: the caller vouches for the framing)."""
        if len(blocks) >= _DIRECT:  # a large run goes straight to the file (no copy)
            if self._buffer.tell():
                self._file.write(self._buffer.getvalue())  # what came before it first
                self._buffer = io.BytesIO()
            self._file.write(blocks)
        else:
            self._buffer.write(blocks)
            if self._buffer.tell() >= _CHUNK:
                self.flush()
        self.count += count

    def flush(self) -> None:
        """Push buffered messages to the file."""
        data = self._buffer.getvalue()
        if data:
            self._file.write(data)
            self._buffer = io.BytesIO()
        self._file.flush()

    def close(self) -> None:
        """Flush, and close the file if this writer opened it."""
        self.flush()
        if self._owned:
            self._file.close()



def write_binaryfile(target: str | os.PathLike[str] | BinaryIO, messages: Iterable[Buffer]) -> int:
    """Write ``messages`` as a BinaryFILE; return how many were written."""
    with BinaryFileWriter(target) as writer:
        writer.write_many(messages)
        return writer.count
