"""Where commands write messages: BinaryFILE, JSON lines or text."""

from __future__ import annotations

import json
import logging
import sys
from itertools import chain
from typing import cast

from .._output import TextOutput, WholeWrites
from ..binaryfile import BinaryFileWriter
from ..events import (
    MessagesDelivered,
)
from .common import UsageError, _named

logger = logging.getLogger("moldudp64.cli")


#: The whole-write stream every sink writes to (also ``_output.WholeWrites``).
_WholeWrites = WholeWrites


class MessageSink:
    """Where delivered messages go: a BinaryFILE, JSON lines, or readable text.

    A write error names the output (``/dev/full: No space left on device``)."""

    count = 0
    name = "output"

    def write(self, session: str, seq_num: int, messages: list[bytes]) -> None:
        """Write consecutive messages; ``messages[i]`` has sequence ``seq_num + i``."""
        raise NotImplementedError

    def write_events(self, events: list[MessagesDelivered]) -> int:
        """Write several batches of consecutive messages; how many messages that was."""
        n = 0
        for ev in events:
            self.write(ev.session, ev.seq_num, ev.messages)
            n += len(ev.messages)
        return n

    def flush(self) -> None:
        """Push what is buffered to the file."""

    def close(self) -> None:
        """Flush and close (the file, unless it is stdout)."""


class BinaryFileSink(MessageSink):
    """NASDAQ BinaryFILE: 2-byte big-endian length, then the message."""

    def __init__(self, stream: _WholeWrites, name: str = "output") -> None:
        self._writer = BinaryFileWriter(stream)  # type: ignore[arg-type]
        self._stream = stream
        self.name = name

    def write(self, session: str, seq_num: int, messages: list[bytes]) -> None:
        try:
            self._writer.write_many(messages)
        except OSError as exc:
            raise _named(exc, self.name) from None
        self.count += len(messages)

    def write_events(self, events: list[MessagesDelivered]) -> int:
        # one join_blocks() over the whole read batch, not one call per packet
        messages = list(chain.from_iterable([ev.messages for ev in events]))
        try:
            self._writer.write_many(messages)
        except OSError as exc:
            raise _named(exc, self.name) from None
        self.count += len(messages)
        return len(messages)

    def flush(self) -> None:
        try:
            self._writer.flush()
        except OSError as exc:
            raise _named(exc, self.name) from None

    def close(self) -> None:
        try:
            self._writer.flush()
            self._stream.close()
        except OSError as exc:
            raise _named(exc, self.name) from None


class _TextualSink(TextOutput, MessageSink):
    """Lines of ASCII text (JSON escapes and hex keep them ASCII), written as bytes."""


class JsonlSink(_TextualSink):
    """One JSON object per message: session, seq, length and the data in hex."""

    def write(self, session: str, seq_num: int, messages: list[bytes]) -> None:
        dumps = json.dumps
        lines = [
            dumps({"session": session, "seq": seq_num + i, "length": len(m), "data": m.hex()})
            for i, m in enumerate(messages)
        ]
        lines.append("")
        self._put("\n".join(lines))
        self.count += len(messages)


def _printable(session: str) -> str:
    """A session name as safe text: non-printable characters as \\xNN escapes."""
    return "".join(c if " " <= c < "\x7f" else f"\\x{ord(c):02x}" for c in session)


class TextSink(_TextualSink):
    """Readable lines: session, sequence, length, ITCH type letter, the first bytes in hex."""

    def write(self, session: str, seq_num: int, messages: list[bytes]) -> None:
        session = _printable(session)
        out = []
        for i, m in enumerate(messages):
            kind = chr(m[0]) if m and 0x21 <= m[0] < 0x7F else "."
            data = m[:32].hex(" ") + (" ..." if len(m) > 32 else "")
            out.append(f"{session} {seq_num + i:>12} {len(m):>5}  {kind}  {data}\n")
        self._put("".join(out))
        self.count += len(messages)


def open_sink(path: str, fmt: str | None, decode: str | None = None) -> MessageSink:
    """Open the output: ``-`` is stdout; the format defaults to text on a terminal, to
    jsonl for ``*.jsonl``/``*.json``, text for ``*.txt``, and BinaryFILE otherwise.
    With ``decode`` (``itch50``), the decoded output of :mod:`moldudp64.itch50.sinks`."""
    if decode is not None:
        from ..itch50.sinks import open_decoded_sink  # pyarrow only when asked for

        return cast(MessageSink, open_decoded_sink(path, fmt, decode))
    if fmt in ("parquet", "csv"):
        raise UsageError(f"--format {fmt} holds decoded messages: add --decode itch50")
    if fmt is None:
        if path == "-":
            fmt = "text" if sys.stdout.isatty() else "binaryfile"
        elif path.endswith((".jsonl", ".json")):
            fmt = "jsonl"
        elif path.endswith(".txt"):
            fmt = "text"
        else:
            fmt = "binaryfile"
    if path == "-":
        name = "stdout"
        sys.stdout.flush()
        stream = _WholeWrites(sys.stdout.buffer, owned=False)
    else:
        name = path
        try:
            stream = _WholeWrites(open(path, "wb"), owned=True)  # noqa: SIM115
        except OSError as exc:
            raise UsageError(f"cannot write {path}: {exc.strerror or exc}") from None
    if fmt == "binaryfile":
        return BinaryFileSink(stream, name)
    return JsonlSink(stream, name) if fmt == "jsonl" else TextSink(stream, name)


def _write_stamped(
    sink: _TextualSink, ts: float, session: str, seq_num: int, messages: list[bytes]
) -> None:
    """inspect --raw in jsonl or text: each message with its frame's timestamp."""
    if isinstance(sink, JsonlSink):
        dumps = json.dumps
        lines = [
            dumps(
                {"ts": ts, "session": session, "seq": seq_num + i, "length": len(m)}
                | {"data": m.hex()}
            )
            + "\n"
            for i, m in enumerate(messages)
        ]
    else:
        name = _printable(session)
        lines = []
        for i, m in enumerate(messages):
            kind = chr(m[0]) if m and 0x21 <= m[0] < 0x7F else "."
            data = m[:32].hex(" ") + (" ..." if len(m) > 32 else "")
            lines.append(f"{ts:.6f} {name} {seq_num + i:>12} {len(m):>5}  {kind}  {data}\n")
    sink._put("".join(lines))
    sink.count += len(messages)


