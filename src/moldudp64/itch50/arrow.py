"""Columnar: ITCH 5.0 messages to one Apache Arrow table per message type, Parquet, CSV.

:func:`messages_to_arrow`, :func:`records_to_arrow` and :func:`binaryfile_to_arrow` build one
table per message type (with ``session`` and ``seq`` columns) with NumPy, a few array
operations per message type and chunk, never a Python loop per field; the ``iter_*_batches``
functions stream the same a chunk at a time; :func:`write_parquet` and :func:`write_csv`
write one file per type. Needs the ``arrow`` extra (numpy and pyarrow, imported on first
use). BinaryFILE chunks are split by the optional C helper ``moldudp64._itch50`` (its
twins here give identical results).
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from itertools import islice
from typing import TYPE_CHECKING, Any, BinaryIO, Final, NamedTuple, TypeAlias

from ..exceptions import BinaryFileError, MissingDependency, TruncatedFile
from .codec import _invalid
from .messages import _LAYOUT_OF_NAME, INVALID, LAYOUTS, Layout

if TYPE_CHECKING:
    import numpy as np
    import numpy.typing as npt

__all__ = [
    "Buffer",
    "arrow_schema",
    "binaryfile_to_arrow",
    "c_gather",
    "c_scan",
    "iter_binaryfile_batches",
    "iter_message_batches",
    "iter_record_batches",
    "messages_to_arrow",
    "records_to_arrow",
    "write_csv",
    "write_parquet",
]

_CHUNK_MESSAGES: Final = 1 << 20
_MAX_CHUNK_MESSAGES: Final = 1 << 24  # keeps every 32-bit string offset of a chunk in range
_CHUNK_BYTES: Final = 8 << 20  # fits the caches better than larger chunks


def _arrow() -> tuple[Any, Any, Any]:
    """numpy, pyarrow and pyarrow.compute, or a clear error naming the extra."""
    try:
        import numpy
        import pyarrow
        import pyarrow.compute
    except ImportError as exc:
        raise MissingDependency(
            f"the columnar ITCH 5.0 API needs pyarrow and numpy ({exc}): "
            "pip install 'moldudp64[arrow]'",
            extra="arrow",
        ) from exc
    return numpy, pyarrow, pyarrow.compute


_ARROW_INTS: Final = {"u2": "uint16", "u4": "uint32", "u8": "uint64"}


def arrow_schema(message_type: str) -> Any:
    """The ``pyarrow.Schema`` of a message type's table (code ``"A"`` or name ``"add_order"``).

    Columns: ``session`` (string), ``seq`` (uint64), then the fields in order: integers as
    unsigned integers of their width, ``timestamp`` as int64 nanoseconds since midnight, alpha
    fields as strings, prices as ``decimal128(10, 4)`` (``decimal128(20, 8)`` for MWCB levels),
    exact. ``"invalid"`` gives the schema of the table of messages that could not be decoded.
    """
    _, pa, _ = _arrow()
    columns = [("session", pa.string()), ("seq", pa.uint64())]
    if message_type == INVALID:
        return pa.schema(
            [
                *columns,
                ("message_type", pa.string()),
                ("length", pa.uint32()),
                ("reason", pa.string()),
                ("data", pa.binary()),
            ]
        )
    layout = LAYOUTS.get(message_type) or _LAYOUT_OF_NAME.get(message_type)
    if layout is None:
        raise KeyError(f"not an ITCH 5.0 message type: {message_type!r}")
    for f in layout.fields:
        if f.kind == "x":
            continue
        if f.kind == "ts":
            typ = pa.int64()
        elif f.kind == "p4":
            typ = pa.decimal128(10, 4)
        elif f.kind == "p8":
            typ = pa.decimal128(20, 8)
        elif f.kind in _ARROW_INTS:
            typ = getattr(pa, _ARROW_INTS[f.kind])()
        else:
            typ = pa.string()
        columns.append((f.name, typ))
    return pa.schema(columns)


class _Plan(NamedTuple):
    dtype: Any  # numpy structured dtype over one message
    schema: Any


_PLANS: dict[str, _Plan] = {}


def _plan(layout: Layout) -> _Plan:
    plan = _PLANS.get(layout.message_type)
    if plan is None:
        np, _, _ = _arrow()
        names: list[str] = []
        formats: list[str] = []
        offsets: list[int] = []

        def add(name: str, fmt: str, offset: int) -> None:
            names.append(name)
            formats.append(fmt)
            offsets.append(offset)

        for f in layout.fields:
            if f.kind == "ts":
                add("timestamp_hi", ">u2", f.offset)
                add("timestamp_lo", ">u4", f.offset + 2)
            elif f.kind in ("u2", "u4", "u8", "p4", "p8"):
                add(f.name, f">u{f.size}", f.offset)
            elif f.kind != "x":
                add(f.name, f"S{f.size}", f.offset)
        dtype = np.dtype(
            {"names": names, "formats": formats, "offsets": offsets, "itemsize": layout.size}
        )
        plan = _PLANS[layout.message_type] = _Plan(dtype, arrow_schema(layout.message_type))
    return plan


def _strings(column: Any, width: int, strip: bool) -> Any:
    """A pyarrow string array from a NumPy ``S<width>`` column, padding stripped if asked."""
    np, pa, pc = _arrow()
    count = len(column)
    data = np.ascontiguousarray(column).view(np.uint8)
    if data.size and int(data.max()) >= 0x80:  # not ASCII: decode as Latin-1 (rare, hostile)
        rows = data.reshape(count, width)
        return pa.array(
            [(r.tobytes().rstrip(b" ") if strip else r.tobytes()).decode("latin-1") for r in rows],
            pa.string(),
        )
    offsets = np.arange(0, (count + 1) * width, width, dtype=np.int32)
    array = pa.StringArray.from_buffers(count, pa.py_buffer(offsets), pa.py_buffer(data))
    return pc.ascii_rtrim(array, characters=" ") if strip and width > 1 else array


def _decimals(column: Any, precision: int, scale: int) -> Any:
    np, pa, _ = _arrow()
    count = len(column)
    words = np.zeros((count, 2), dtype=np.uint64)  # 128-bit little-endian, high word 0
    words[:, 0] = column
    typ = pa.decimal128(precision, scale)
    return pa.Array.from_buffers(typ, count, [None, pa.py_buffer(words)])


def _gather(buf: Any, starts: Any, size: int, windows: dict[int, Any]) -> Any:
    """The records ``buf[s:s + size]`` for each of ``starts``, as one uint8 array (one copy)."""
    np, _, _ = _arrow()
    if c_gather is not None:
        return np.frombuffer(c_gather(buf, starts, size), dtype=np.uint8)
    if size not in windows:  # a view: row o is buf[o:o + size], no copy
        windows[size] = np.lib.stride_tricks.sliding_window_view(buf, size)
    return windows[size][starts].reshape(-1)


def _session_column(sessions: list[str], codes: Any, idx: Any) -> Any:
    """The ``session`` column of rows ``idx`` (``codes`` index ``sessions``; None: the first).

    A session of ``""`` (not known, as a BinaryFILE's without a label) is null."""
    np, pa, pc = _arrow()
    if codes is None:
        raw = sessions[0].encode()
        if not raw:
            return pa.nulls(len(idx), pa.string())
        offsets = np.arange(0, (len(idx) + 1) * len(raw), len(raw), dtype=np.int32)
        data = pa.py_buffer(raw * len(idx))
        return pa.StringArray.from_buffers(len(idx), pa.py_buffer(offsets), data)
    names = pa.array([name or None for name in sessions], pa.string())
    return pc.take(names, pa.array(codes[idx]))


_SIZES_TABLE: list[Any] = []


def _size_of_code() -> Any:
    """Message length by type code (0 for unknown codes), as a NumPy lookup table."""
    if not _SIZES_TABLE:
        np, _, _ = _arrow()
        table = np.zeros(256, dtype=np.int64)
        for code, layout in LAYOUTS.items():
            table[ord(code)] = layout.size
        table[0] = -1  # code 0 is never a type; an empty message (length 0) must not match
        _SIZES_TABLE.append(table)
    return _SIZES_TABLE[0]


def _decode_chunk(
    buf: npt.NDArray[np.uint8],
    starts: npt.NDArray[np.int64],
    lengths: npt.NDArray[np.int64],
    seqs: npt.NDArray[np.uint64],
    codes: npt.NDArray[np.int32] | None,
    sessions: list[str],
) -> dict[str, Any]:
    """Decode the messages ``buf[starts[i]:starts[i] + lengths[i]]`` into record batches."""
    np, pa, _ = _arrow()
    count = len(starts)
    types = np.zeros(count, dtype=np.uint8)
    nonempty = lengths > 0
    types[nonempty] = buf[starts[nonempty]]
    # A message decodes when its length is its type's; the others get key 0. One stable
    # sort groups each type's messages, in their order.
    keys = np.where(_size_of_code()[types] == lengths, types, 0).astype(np.uint8)
    order = np.argsort(keys, kind="stable")
    bounds = np.concatenate(([0], np.cumsum(np.bincount(keys, minlength=256))))
    windows: dict[int, Any] = {}
    out: dict[str, Any] = {}
    for code in np.flatnonzero(bounds[2:] > bounds[1:-1]) + 1:
        layout = LAYOUTS[chr(code)]
        idx = order[bounds[code] : bounds[code + 1]]
        plan = _plan(layout)
        recs = _gather(buf, starts[idx], layout.size, windows).view(plan.dtype)
        columns = [_session_column(sessions, codes, idx), pa.array(seqs[idx])]
        for f in layout.fields:
            if f.kind == "ts":
                hi = recs["timestamp_hi"].astype(np.int64)
                columns.append(pa.array((hi << 32) | recs["timestamp_lo"].astype(np.int64)))
            elif f.kind in _ARROW_INTS:
                columns.append(pa.array(recs[f.name].astype(f"=u{f.size}")))
            elif f.kind == "p4":
                columns.append(_decimals(recs[f.name], 10, 4))
            elif f.kind == "p8":
                columns.append(_decimals(recs[f.name], 20, 8))
            elif f.kind != "x":
                columns.append(_strings(recs[f.name], f.size, f.kind != "c"))
        out[layout.name] = pa.RecordBatch.from_arrays(columns, schema=plan.schema)
    bad = order[: bounds[1]]
    if bad.size:
        out[INVALID] = _invalid_batch(buf, starts, lengths, seqs, codes, sessions, bad)
    return dict(sorted(out.items(), key=lambda item: _ORDER.get(item[0], len(_ORDER))))


_ORDER: Final = {lay.name: i for i, lay in enumerate(LAYOUTS.values())}


def _invalid_batch(
    buf: Any, starts: Any, lengths: Any, seqs: Any, codes: Any, sessions: list[str], bad: Any
) -> Any:
    """The messages that could not be decoded, one row each (a loop: these should be rare)."""
    _, pa, _ = _arrow()
    data = [buf[s : s + n].tobytes() for s, n in zip(starts[bad], lengths[bad], strict=True)]
    errors = [_invalid(message) for message in data]
    return pa.RecordBatch.from_arrays(
        [
            _session_column(sessions, codes, bad),
            pa.array(seqs[bad]),
            pa.array([e.message_type for e in errors], pa.string()),
            pa.array(lengths[bad].astype("uint32")),
            pa.array([e.reason for e in errors], pa.string()),
            pa.array(data, pa.binary()),
        ],
        schema=arrow_schema(INVALID),
    )


Buffer: TypeAlias = bytes | bytearray | memoryview


def _batches_of_list(
    messages: Sequence[Buffer], sessions: list[str], seqs: Any, codes: Any
) -> dict[str, Any]:
    np, _, _ = _arrow()
    buf = np.frombuffer(b"".join(messages), dtype=np.uint8)
    lengths = np.fromiter(map(len, messages), dtype=np.int64, count=len(messages))
    starts = np.cumsum(lengths) - lengths
    return _decode_chunk(buf, starts, lengths, seqs, codes, sessions)


def _chunks(items: Iterable[Any], size: int) -> Iterator[list[Any]]:
    if not 1 <= size <= _MAX_CHUNK_MESSAGES:
        raise ValueError(f"chunk_size must be in [1, {_MAX_CHUNK_MESSAGES}], got {size}")
    iterator = iter(items)
    while True:
        chunk = list(islice(iterator, size))
        if not chunk:
            return
        yield chunk


def iter_message_batches(
    messages: Iterable[Buffer],
    *,
    session: str = "",
    first_seq: int = 1,
    chunk_size: int = _CHUNK_MESSAGES,
) -> Iterator[dict[str, Any]]:
    """Decode consecutive messages of one session (``first_seq`` onwards) a chunk at a time.

    Yields, per chunk of ``chunk_size`` messages, ``{table name: pyarrow.RecordBatch}`` (names
    from :data:`MESSAGE_NAMES`, plus ``"invalid"``); memory stays bounded by the chunk.
    """
    np, _, _ = _arrow()
    seq = first_seq
    for chunk in _chunks(messages, chunk_size):
        seqs = np.arange(seq, seq + len(chunk), dtype=np.uint64)
        seq += len(chunk)
        yield _batches_of_list(chunk, [session], seqs, None)


def iter_record_batches(
    records: Iterable[tuple[str, int, Buffer]], *, chunk_size: int = _CHUNK_MESSAGES
) -> Iterator[dict[str, Any]]:
    """Like :func:`iter_message_batches`, from ``(session, seq, data)`` tuples (a capture's
    messages, in any order; each row keeps its own session and sequence number)."""
    np, _, _ = _arrow()
    for chunk in _chunks(records, chunk_size):
        session_of, seq_of, data = zip(*chunk, strict=True)
        distinct = list(dict.fromkeys(session_of))
        codes = None
        if len(distinct) > 1:
            index = {s: i for i, s in enumerate(distinct)}
            codes = np.fromiter(map(index.__getitem__, session_of), np.int32, len(chunk))
        seqs = np.fromiter(seq_of, dtype=np.uint64, count=len(chunk))
        yield _batches_of_list(data, distinct, seqs, codes)


def iter_binaryfile_batches(
    source: str | os.PathLike[str] | BinaryIO,
    *,
    session: str = "",
    first_seq: int = 1,
    chunk_bytes: int = _CHUNK_BYTES,
) -> Iterator[dict[str, Any]]:
    """Like :func:`iter_message_batches`, reading a BinaryFILE ``chunk_bytes`` at a time.

    A file that ends inside a message raises :class:`~moldudp64.exceptions.TruncatedFile`
    after every complete message was yielded (as :class:`~moldudp64.BinaryFileReader` does).
    """
    np, _, _ = _arrow()
    from ..binaryfile import BinaryFileReader

    if not 1 <= chunk_bytes <= 1 << 30:
        raise ValueError(f"chunk_bytes must be in [1, 2**30], got {chunk_bytes}")
    reader = BinaryFileReader(source)
    readinto = reader._file.readinto  # type: ignore[attr-defined]
    # at least one whole message; reused: the batches copy what they keep
    block = bytearray(max(chunk_bytes, 1 << 17))
    view = memoryview(block)
    seq = first_seq
    base = 0  # file offset of block[0]
    filled = 0  # bytes of block holding data (a partial message carried over first)
    try:
        while True:
            try:
                got = readinto(view[filled:])
            except OSError as exc:
                raise BinaryFileError(f"cannot read {reader.name}: {exc}") from exc
            if not got:
                if filled:
                    tail = bytes(view[:filled])
                    raise _truncated(reader.name, tail, base, seq - first_seq)
                return
            filled += got
            heads, end = _scan(view[:filled])
            if heads.size:
                buf = np.frombuffer(view[:filled], dtype=np.uint8)
                lengths = (buf[heads].astype(np.int64) << 8) | buf[heads + 1]
                count = heads.size
                seqs = np.arange(seq, seq + count, dtype=np.uint64)
                seq += count
                yield _decode_chunk(buf, heads + 2, lengths, seqs, None, [session])
                del buf
            block[: filled - end] = block[end:filled]
            filled -= end
            base += end
    finally:
        view.release()
        reader.close()


def _scan_py(data: bytes | memoryview) -> tuple[list[int], int]:
    """Offsets of the complete length-prefixed messages at the start of ``data``, and the end."""
    heads: list[int] = []
    append = heads.append
    pos = 0
    size = len(data)
    while pos + 2 <= size:
        stop = pos + 2 + (data[pos] << 8 | data[pos + 1])
        if stop > size:
            break
        append(pos)
        pos = stop
    return heads, pos


def _load_helpers() -> tuple[Any, Any]:
    if os.environ.get("MOLDUDP64_PURE_PYTHON"):
        return None, None
    try:
        from .._itch50 import gather, scan
    except ImportError:
        return None, None
    return scan, gather


#: The C twins (None without them) of :func:`_scan_py` (offsets as native int64 bytes) and
#: of the NumPy gather in :func:`_gather`.
c_scan, c_gather = _load_helpers()


def _scan(data: bytes | memoryview) -> tuple[npt.NDArray[np.int64], int]:
    np, _, _ = _arrow()
    if c_scan is not None:
        heads, end = c_scan(data)
        return np.frombuffer(heads, dtype=np.int64), end
    offsets, end = _scan_py(data)
    return np.array(offsets, dtype=np.int64), end


def _truncated(name: str, tail: bytes, offset: int, count: int) -> TruncatedFile:
    if len(tail) < 2:
        detail = "inside its 2-byte length field"
    else:
        detail = f"after {len(tail) - 2} of its {tail[0] << 8 | tail[1]} bytes"
    return TruncatedFile(
        f"{name}: truncated message at byte offset {offset} (message {count + 1}): "
        f"file ends {detail}",
        offset=offset,
    )


def _collect(batches: Iterable[Mapping[str, Any]]) -> dict[str, Any]:
    _, pa, _ = _arrow()
    parts: dict[str, list[Any]] = {}
    for chunk in batches:
        for name, batch in chunk.items():
            parts.setdefault(name, []).append(batch)
    ordered = sorted(parts, key=lambda name: _ORDER.get(name, len(_ORDER)))
    return {name: pa.Table.from_batches(parts[name]) for name in ordered}


def messages_to_arrow(
    messages: Iterable[Buffer], *, session: str = "", first_seq: int = 1
) -> dict[str, Any]:
    """Consecutive messages of one session -> ``{table name: pyarrow.Table}``.

    ``session=""`` (the default: not known) gives a null ``session`` column.

    One table per message type present (``"add_order"``, ``"trade"``, ...; see
    :func:`arrow_schema`), plus ``"invalid"`` when some message could not be decoded.
    """
    return _collect(iter_message_batches(messages, session=session, first_seq=first_seq))


def records_to_arrow(records: Iterable[tuple[str, int, Buffer]]) -> dict[str, Any]:
    """``(session, seq, data)`` tuples -> ``{table name: pyarrow.Table}``."""
    return _collect(iter_record_batches(records))


def binaryfile_to_arrow(
    source: str | os.PathLike[str] | BinaryIO, *, session: str = "", first_seq: int = 1
) -> dict[str, Any]:
    """A BinaryFILE -> ``{table name: pyarrow.Table}`` (message n is sequence number n).

    A BinaryFILE holds no session: unless ``session`` labels it, the column is null."""
    return _collect(iter_binaryfile_batches(source, session=session, first_seq=first_seq))


def _file_writer(
    kind: str,
    source: Mapping[str, Any] | Iterable[Mapping[str, Any]],
    directory: str | os.PathLike[str],
    open_writer: Callable[[str, Any], Any],
) -> dict[str, int]:
    if isinstance(source, Mapping):
        source = [source]
    os.makedirs(directory, exist_ok=True)
    writers: dict[str, Any] = {}
    rows: dict[str, int] = {}
    try:
        for chunk in source:
            for name, batch in chunk.items():
                if name not in _ORDER and name != INVALID:
                    raise KeyError(f"not an ITCH 5.0 table name: {name!r}")
                writer = writers.get(name)
                if writer is None:
                    path = os.path.join(directory, f"{name}.{kind}")
                    writer = writers[name] = open_writer(path, batch.schema)
                writer.write(batch)
                rows[name] = rows.get(name, 0) + batch.num_rows
    finally:
        for writer in writers.values():
            writer.close()
    return rows


def write_parquet(
    source: Mapping[str, Any] | Iterable[Mapping[str, Any]],
    directory: str | os.PathLike[str],
    *,
    compression: str = "zstd",
) -> dict[str, int]:
    """Write one Parquet file per table (``DIR/add_order.parquet``, ...); return rows per table.

    ``source`` is a dict of tables (from :func:`binaryfile_to_arrow`, ...) or an iterable of
    them (from the ``iter_*_batches`` functions: streamed, so memory stays bounded by a chunk).
    """
    _arrow()
    import pyarrow.parquet as pq

    def open_writer(path: str, schema: Any) -> Any:
        return pq.ParquetWriter(path, schema, compression=compression)

    return _file_writer("parquet", source, directory, open_writer)


def write_csv(
    source: Mapping[str, Any] | Iterable[Mapping[str, Any]], directory: str | os.PathLike[str]
) -> dict[str, int]:
    """Write one CSV file per table (``DIR/add_order.csv``, ...), as :func:`write_parquet`.

    Prices are written as exact decimals in their places (``24.2700``, ``0.00000000``); the
    ``invalid`` table's ``data`` as hex.
    """
    _arrow()
    return _file_writer("csv", source, directory, _CsvWriter)


class _CsvWriter:
    """pyarrow's CSV writer, with binary columns as hex and every decimal in plain notation.

    pyarrow writes a decimal of more than 6 places below 10**-6 in exponent notation (an
    MWCB level of 0 as ``0E-8``); a table with such a column (only ``mwcb_decline_level``,
    one row a day) is written here in pyarrow's format (header and strings quoted, numbers
    bare, nulls empty) with those columns as plain decimals. ``by_hand`` forces that path
    (for the test that it writes what pyarrow writes).
    """

    def __init__(self, path: str, schema: Any, *, by_hand: bool = False) -> None:
        _, pa, _ = _arrow()
        import pyarrow.csv as pacsv

        self._pa = pa
        self._hex = [i for i, f in enumerate(schema) if f.type == pa.binary()]
        for i in self._hex:
            schema = schema.set(i, pa.field(schema.field(i).name, pa.string()))
        self._plain = [
            i for i, f in enumerate(schema) if pa.types.is_decimal(f.type) and f.type.scale > 6
        ]
        self._writer: Any = None
        self._file: Any = None
        if self._plain or by_hand:
            self._file = open(path, "w", encoding="utf-8", newline="")  # noqa: SIM115
            self._file.write(",".join(_csv_quote(name) for name in schema.names) + "\n")
        else:
            self._writer = pacsv.CSVWriter(path, schema)

    def write(self, batch: Any) -> None:
        pa = self._pa
        for i in self._hex:
            text = [None if b is None else b.hex() for b in batch.column(i).to_pylist()]
            batch = batch.set_column(i, batch.schema.field(i).name, pa.array(text, pa.string()))
        if self._writer is not None:
            self._writer.write(batch)
        elif batch.num_rows:
            self._write_by_hand(batch)

    def _write_by_hand(self, batch: Any) -> None:
        _, pa, pc = _arrow()
        cells = []
        for i, column in enumerate(batch.columns):
            if i in self._plain:
                text = pa.array([None if d is None else f"{d:f}" for d in column.to_pylist()])
            elif pa.types.is_string(column.type):
                quoted = pc.replace_substring(column, '"', '""')
                text = pc.binary_join_element_wise('"', quoted, '"', "")
            else:
                text = pc.cast(column, pa.string())
            cells.append(pc.fill_null(text, ""))
        rows = pc.binary_join_element_wise(*cells, ",")
        self._file.write("\n".join(rows.to_pylist()) + "\n")

    def close(self) -> None:
        if self._writer is not None:
            self._writer.close()
        else:
            self._file.close()


def _csv_quote(text: str) -> str:
    return '"' + text.replace('"', '""') + '"'
