"""Decoded outputs of the command line: ITCH 5.0 messages as JSON lines, text, Parquet or CSV.

The sinks here have the interface of the command line's message sinks (``write(session,
seq_num, messages)``, ``write_events(events)``, ``flush()``, ``close()``, ``count``), plus
``write_stamped(ts, session, seq_num, messages)`` for ``inspect --raw`` (each message with
its frame's timestamp). :func:`open_decoded_sink` opens one.

* ``jsonl``: one JSON object per message: ``session``, ``seq``, ``message_type``, then every
  field by its snake_case name (:func:`moldudp64.itch50.to_json`: prices as exact decimal
  numbers, ``24.2700``).
  Pure Python: no pyarrow needed.
* ``text``: one readable line per message.
* ``parquet`` / ``csv``: a directory holding one file per message type
  (``add_order.parquet``, ...; schemas of :func:`moldudp64.itch50.arrow_schema`), appended a
  chunk at a time (at most :data:`CHUNK_MESSAGES` messages or :data:`CHUNK_BYTES` bytes held),
  so memory stays bounded whatever the run's length. Needs the ``arrow`` extra.

A message that is not ITCH 5.0 (unknown type, wrong length for its type, empty) is never a
crash: it becomes a row of the ``invalid`` table (in jsonl: an object with ``reason``,
``length`` and ``data`` in hex) and is counted in :attr:`DecodedSink.invalid`. In ``--raw``
mode the tables get a first column ``ts``: the frame's time, seconds since the epoch.
"""

from __future__ import annotations

import json
import os
import sys
from array import array
from collections.abc import Callable
from decimal import Decimal
from typing import IO, Any, Final

from .._output import TextOutput, WholeWrites, named_error
from ..events import MessagesDelivered
from ..exceptions import ConfigError
from . import arrow
from .codec import decode_or_raw, json_fields, to_dict
from .messages import INVALID, MESSAGE_NAMES, RawMessage

__all__ = [
    "CHUNK_BYTES",
    "CHUNK_MESSAGES",
    "DECODED_FORMATS",
    "DECODERS",
    "DecodedSink",
    "ItchJsonlSink",
    "ItchTableSink",
    "ItchTextSink",
    "open_decoded_sink",
]

#: The decoders ``--decode`` accepts.
DECODERS: Final = ("itch50",)
#: The formats a decoded output can take (parquet and csv are directories).
DECODED_FORMATS: Final = ("jsonl", "text", "parquet", "csv")
#: A table sink decodes and appends once it holds this many messages ...
CHUNK_MESSAGES: Final = 1 << 18
#: ... or this many bytes of them.
CHUNK_BYTES: Final = 16 << 20

_TABLE_NAMES: Final = (*MESSAGE_NAMES.values(), INVALID)


_named = named_error


class DecodedSink:
    """Base of the decoded sinks: counts what was written and what was not ITCH 5.0."""

    name = "output"
    #: Called with :meth:`summary` once closed, when there is something to say (see
    #: :func:`open_decoded_sink`); None: silent.
    report: Callable[[str], None] | None = None

    def __init__(self) -> None:
        self.count = 0  #: Messages written.
        self.invalid = 0  #: Of them, not ITCH 5.0 (unknown type, wrong length, empty).

    def _report(self, always: bool) -> None:
        if self.report is not None and (always or self.invalid):
            self.report(self.summary())

    def write(self, session: str, seq_num: int, messages: list[bytes]) -> None:
        """Write consecutive messages; ``messages[i]`` has sequence ``seq_num + i``."""
        self._write(None, session, seq_num, messages)

    def write_stamped(self, ts: float, session: str, seq_num: int, messages: list[bytes]) -> None:
        """Write one packet's messages as they came, with the frame's timestamp ``ts``."""
        self._write(ts, session, seq_num, messages)

    def write_events(self, events: list[MessagesDelivered]) -> int:
        """Write several batches of consecutive messages; how many messages that was."""
        n = 0
        for ev in events:
            self._write(None, ev.session, ev.seq_num, ev.messages)
            n += len(ev.messages)
        return n

    def _write(self, ts: float | None, session: str, seq_num: int, messages: list[bytes]) -> None:
        raise NotImplementedError

    def flush(self) -> None:
        """Push what is buffered to the output."""

    def close(self) -> None:
        """Flush and close."""

    def summary(self) -> str:
        """One line: what was written, and how many messages were not ITCH 5.0."""
        text = f"{self.count} messages decoded to {self.name}"
        if self.invalid:
            text += f"; {self.invalid} not ITCH 5.0 (unknown type or wrong length), kept as invalid"
        return text


class _StreamSink(TextOutput, DecodedSink):
    """Lines of ASCII text to a file or stdout."""

    def __init__(self, stream: WholeWrites, name: str) -> None:
        DecodedSink.__init__(self)
        TextOutput.__init__(self, stream, name)

    def close(self) -> None:
        TextOutput.close(self)
        self._report(always=False)


class ItchJsonlSink(_StreamSink):
    """One JSON object per message: ``session``, ``seq``, ``message_type``, the fields."""

    def _write(self, ts: float | None, session: str, seq_num: int, messages: list[bytes]) -> None:
        decode, fields, raw = decode_or_raw, json_fields, RawMessage
        head = "{" if ts is None else f'{{"ts": {json.dumps(ts)}, '
        head += f'"session": {json.dumps(session or None)}, "seq": '  # "": unknown
        lines = []
        for i, message in enumerate(messages):
            record = decode(message)
            if type(record) is raw:
                self.invalid += 1
            lines.append(f"{head}{seq_num + i}, {fields(record)}}}")
        lines.append("")
        self._put("\n".join(lines))
        self.count += len(messages)


def _printable(text: str) -> str:
    return "".join(c if " " <= c < "\x7f" else f"\\x{ord(c):02x}" for c in text)


def _text(value: Any) -> str:
    """A field as the text output shows it: strings escaped, prices as plain exact decimals."""
    if isinstance(value, str):
        return _printable(value)
    if isinstance(value, Decimal):
        return f"{value:f}"  # 0.00000000, never 0E-8
    return str(value)


class ItchTextSink(_StreamSink):
    """One readable line per message: session, sequence, type, then ``field=value``."""

    def _write(self, ts: float | None, session: str, seq_num: int, messages: list[bytes]) -> None:
        name = _printable(session) or "-"  # "": unknown (a BinaryFILE's)
        stamp = "" if ts is None else f"{ts:.6f} "
        lines = []
        for i, message in enumerate(messages):
            fields = to_dict(decode_or_raw(message), exact=True)
            if "reason" in fields and "data" in fields:
                self.invalid += 1
            kind = _printable(fields.pop("message_type")) or "-"
            body = " ".join(f"{k}={_text(v)}" for k, v in fields.items())
            lines.append(f"{stamp}{name} {seq_num + i:>12}  {kind}  {body}\n")
        self._put("".join(lines))
        self.count += len(messages)


class ItchTableSink(DecodedSink):
    """One Parquet (or CSV) file per message type in a directory, appended a chunk at a time.

    Messages are held as bytes in one buffer (with their lengths, sequence numbers and
    session codes in arrays) until :data:`CHUNK_MESSAGES` or :data:`CHUNK_BYTES`, then
    decoded column-wise by :mod:`moldudp64.itch50` and appended to the files, one row group
    (or block of CSV lines) per type and chunk. Files are opened on a type's first message.
    """

    def __init__(
        self,
        directory: str,
        kind: str = "parquet",
        *,
        chunk_messages: int = CHUNK_MESSAGES,
        chunk_bytes: int = CHUNK_BYTES,
        compression: str = "zstd",
    ) -> None:
        super().__init__()
        if kind not in ("parquet", "csv"):
            raise ValueError(f"kind must be 'parquet' or 'csv', got {kind!r}")
        self._np, self._pa, _ = arrow._arrow()
        self.name = directory
        self.kind = kind
        self.rows: dict[str, int] = {}  # rows written per table
        self._directory = directory
        self._compression = compression
        self._chunk_messages = max(1, chunk_messages)
        self._chunk_bytes = max(1, chunk_bytes)
        self._writers: dict[str, Any] = {}
        self._stamped: bool | None = None  # fixed by the first write: ts column or not
        self._closed = False
        self._reset()
        os.makedirs(directory, exist_ok=True)

    def _reset(self) -> None:
        self._data = bytearray()
        self._lengths = array("q")
        self._seqs = array("Q")
        self._codes = array("i")
        self._ts = array("d")
        self._sessions: dict[str, int] = {}

    def _write(self, ts: float | None, session: str, seq_num: int, messages: list[bytes]) -> None:
        if self._closed:
            raise ValueError(f"{self.name}: the output is closed")
        if not messages:
            return
        stamped = ts is not None
        if self._stamped is None:
            self._stamped = stamped
        elif stamped != self._stamped:
            raise ValueError("one table output holds timestamped (--raw) or ordered messages")
        n = len(messages)
        code = self._sessions.setdefault(session, len(self._sessions))
        self._data += b"".join(messages)
        self._lengths.extend(map(len, messages))
        self._seqs.extend(range(seq_num, seq_num + n))
        self._codes.extend([code] * n)
        if ts is not None:
            self._ts.extend([ts] * n)
        self.count += n
        if len(self._lengths) >= self._chunk_messages or len(self._data) >= self._chunk_bytes:
            self._drain()

    def _drain(self) -> None:
        """Decode what is held and append it to the files."""
        count = len(self._lengths)
        if not count:
            return
        np, pa = self._np, self._pa
        buf = np.frombuffer(self._data, dtype=np.uint8)
        lengths = np.frombuffer(self._lengths, dtype=np.int64)
        starts = np.cumsum(lengths) - lengths
        sessions = list(self._sessions)
        codes = None if len(sessions) == 1 else np.frombuffer(self._codes, dtype=np.int32)
        seqs = np.frombuffer(self._seqs, dtype=np.uint64)
        ts = np.frombuffer(self._ts, dtype=np.float64) if self._stamped else None
        # The row index stands in for seq, so each row finds its own seq and timestamp.
        rows = np.arange(count, dtype=np.uint64)
        batches = arrow._decode_chunk(buf, starts, lengths, rows, codes, sessions)
        del buf
        for table, batch in batches.items():
            idx = batch.column(1).to_numpy().astype(np.int64)
            batch = batch.set_column(1, "seq", pa.array(seqs[idx]))
            if ts is not None:
                batch = batch.add_column(0, pa.field("ts", pa.float64()), pa.array(ts[idx]))
            if table == INVALID:
                self.invalid += batch.num_rows
            self._append(table, batch)
        self._reset()

    def _append(self, table: str, batch: Any) -> None:
        writer = self._writers.get(table)
        path = os.path.join(self._directory, f"{table}.{self.kind}")
        try:
            if writer is None:
                writer = self._writers[table] = self._open(path, batch.schema)
            writer.write(batch)
        except OSError as exc:
            raise _named(exc, path) from None
        self.rows[table] = self.rows.get(table, 0) + batch.num_rows

    def _open(self, path: str, schema: Any) -> Any:
        if self.kind == "parquet":
            import pyarrow.parquet as pq

            return pq.ParquetWriter(path, schema, compression=self._compression)
        return arrow._CsvWriter(path, schema)

    def flush(self) -> None:
        """Parquet: nothing (a Parquet file is readable only once closed, and small row
        groups would cost); CSV: decode and write what is held."""
        if self.kind == "csv" and not self._closed:
            self._drain()

    def close(self) -> None:
        """Decode and write what is held, then close every file (each then complete)."""
        if self._closed:
            return
        self._closed = True
        try:
            self._drain()
        finally:
            errors: list[OSError] = []
            for table, writer in self._writers.items():
                try:
                    writer.close()
                except OSError as exc:
                    errors.append(_named(exc, os.path.join(self._directory, table)))
            self._writers.clear()
            if errors:
                raise errors[0]
        self._report(always=True)

    def summary(self) -> str:
        tables = ", ".join(f"{t} {n}" for t, n in self.rows.items())
        text = f"{self.count} messages decoded to {self.name}/ ({tables or 'no tables'})"
        if self.invalid:
            text += f"; {self.invalid} not ITCH 5.0 (unknown type or wrong length): invalid table"
        return text


def _table_directory(path: str, kind: str) -> str:
    """Check (and create) the output directory of a table format; refuse stdout, a file,
    and a directory that already holds a table file (no mixing runs)."""
    if path == "-":
        raise ConfigError(
            f"--format {kind} writes a directory (one file per message type): give -o DIR, "
            "not -o - (use --format jsonl for stdout)"
        )
    if os.path.exists(path) and not os.path.isdir(path):
        raise ConfigError(f"--format {kind} writes a directory, and {path} is a file")
    try:
        os.makedirs(path, exist_ok=True)
        present = set(os.listdir(path))
    except OSError as exc:
        raise ConfigError(f"cannot write {path}: {exc.strerror or exc}") from None
    taken = sorted(f"{t}.{kind}" for t in _TABLE_NAMES if f"{t}.{kind}" in present)
    if taken:
        raise ConfigError(
            f"{path} already holds {', '.join(taken[:3])}{', ...' if len(taken) > 3 else ''}: "
            "choose a new or empty directory"
        )
    return path


def default_decoded_format(path: str, isatty: Callable[[], bool] | None = None) -> str:
    """The format when none is given: text on a terminal, jsonl on stdout otherwise and for
    ``*.jsonl``/``*.json``, text for ``*.txt``, csv for ``*.csv``, else a Parquet directory."""
    if path == "-":
        return "text" if (isatty or sys.stdout.isatty)() else "jsonl"
    if path.endswith((".jsonl", ".json")):
        return "jsonl"
    if path.endswith(".txt"):
        return "text"
    if path.rstrip("/").endswith(".csv"):
        return "csv"
    return "parquet"


def _say(text: str) -> None:
    sys.stderr.write(f"moldudp64: {text}\n")
    sys.stderr.flush()


def open_decoded_sink(
    path: str, fmt: str | None, decode: str, report: Callable[[str], None] | None = _say
) -> DecodedSink:
    """Open the output of ``--decode DECODE`` at ``path`` (``-`` is stdout) in ``fmt``.

    Once closed, the sink gives ``report`` (default: a line on stderr) its summary: always
    for a directory of tables, when some message was not ITCH 5.0 for the others.

    Raises :class:`~moldudp64.exceptions.ConfigError` for a format that cannot hold decoded
    messages (binaryfile), a table format on stdout or on a file, and
    :class:`~moldudp64.exceptions.MissingDependency` when parquet/csv lack pyarrow.
    """
    if decode not in DECODERS:
        raise ConfigError(f"unknown decoder {decode!r} (choose from {', '.join(DECODERS)})")
    if fmt is None:
        fmt = default_decoded_format(path)
    if fmt not in DECODED_FORMATS:
        raise ConfigError(
            f"--decode {decode} writes {', '.join(DECODED_FORMATS)}, not {fmt} "
            "(a BinaryFILE holds the messages undecoded: leave out --decode)"
        )
    if fmt in ("parquet", "csv"):
        arrow._arrow()  # a missing pyarrow is said before anything is created
        sink: DecodedSink = ItchTableSink(_table_directory(path, fmt), fmt)
        sink.report = report
        return sink
    stream: IO[bytes]
    if path == "-":
        sys.stdout.flush()
        stream, name, owned = sys.stdout.buffer, "stdout", False
    else:
        try:
            stream, name, owned = open(path, "wb"), path, True  # noqa: SIM115
        except OSError as exc:
            raise ConfigError(f"cannot write {path}: {exc.strerror or exc}") from None
    cls = ItchJsonlSink if fmt == "jsonl" else ItchTextSink
    sink = cls(WholeWrites(stream, owned), name)
    sink.report = report
    return sink
