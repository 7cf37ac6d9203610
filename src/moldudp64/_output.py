"""What every output of the command shares: whole writes, and errors that name the output.

Both the plain sinks (``cli/sinks.py``) and the decoded ones (``itch50/sinks.py``) write
text through :class:`TextOutput` over a :class:`WholeWrites` stream.
"""

from __future__ import annotations

import errno
from typing import IO

__all__ = ["TextOutput", "WholeWrites", "named_error"]


def named_error(exc: OSError, name: str) -> OSError:
    """``exc`` with the output's name (a path, or stdout) when it names no file itself;
    the errno keeps its class (a broken pipe stays a BrokenPipeError)."""
    if exc.filename is not None:
        return exc
    return OSError(exc.errno, exc.strerror or str(exc), name)


class WholeWrites:
    """A binary output whose ``write`` writes every byte or raises. A BufferedWriter may
    return a short count when a pipe's reader goes away, the rest dropped without a word;
    here the next attempt meets EPIPE (BrokenPipeError) instead."""

    def __init__(self, stream: IO[bytes], owned: bool) -> None:
        self._stream = stream
        self._owned = owned

    def write(self, data: bytes) -> int:
        view = memoryview(data)
        total = len(view)
        while view:
            n = self._stream.write(view)
            if not n:
                raise OSError(errno.EIO, "the output accepts no more bytes")
            view = view[n:]
        return total

    def flush(self) -> None:
        self._stream.flush()

    def close(self) -> None:
        """Flush; close the file unless it is stdout."""
        if self._owned:
            self._stream.close()
        else:
            self._stream.flush()


class TextOutput:
    """Lines of ASCII text (JSON escapes and hex keep them ASCII) to a :class:`WholeWrites`;
    every error names the output."""

    name = "output"

    def __init__(self, stream: WholeWrites, name: str = "output") -> None:
        self._stream = stream
        self.name = name

    def _put(self, text: str) -> None:
        try:
            self._stream.write(text.encode("ascii"))
        except OSError as exc:
            raise named_error(exc, self.name) from None

    def flush(self) -> None:
        try:
            self._stream.flush()
        except OSError as exc:
            raise named_error(exc, self.name) from None

    def close(self) -> None:
        try:
            self._stream.close()
        except OSError as exc:
            raise named_error(exc, self.name) from None
