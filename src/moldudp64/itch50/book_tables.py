"""The book's tables as Apache Arrow and Parquet: ``bbo``, ``trades``, ``depth``, and
``book_state`` when messages were lost.

:class:`BookTables` turns the rows a :class:`~moldudp64.itch50.book.BookCore` appended into
Arrow record batches (a few NumPy operations per column and batch, no loop per row);
:class:`BookWriter` streams them to ``DIR/bbo.parquet``, ``DIR/trades.parquet`` and
``DIR/depth/part-NNNNNN.parquet`` (consecutive parts of the depth table, encoded on two
threads; :func:`table_files`) a bounded batch at a time, with the command's sink interface
(``write(session, seq_num, messages)``), so any source ``listen`` or ``inspect`` reads can
drive it. Needs the ``arrow`` extra.
"""

from __future__ import annotations

import os
import queue
import threading
import time
from collections.abc import Callable, Iterable, Sequence
from typing import Any, Final, TypeAlias

from ..exceptions import MissingDependency
from .book import (
    BBO_WIDTH,
    TRADES_WIDTH,
    BookCore,
    depth_width,
    new_core,
    snapshot_messages,
)

__all__ = [
    "ALL_TABLES",
    "DEPTH_THREADS",
    "FLUSH_MIN_ROWS",
    "FLUSH_ROWS",
    "FLUSH_SECONDS",
    "ROW_GROUP_ROWS",
    "BookTables",
    "BookWriter",
    "bbo_schema",
    "book_state_schema",
    "depth_schema",
    "parquet_fast",
    "table_files",
    "trades_schema",
]

#: The tables ``moldudp64 book`` writes.
ALL_TABLES: Final = ("bbo", "trades", "depth")
#: A writer appends a batch to the files once this many rows are held.
FLUSH_ROWS: Final = 1 << 15
#: :meth:`BookWriter.flush` appends when this many rows are held ...
FLUSH_MIN_ROWS: Final = 1 << 14
#: ... or this many seconds passed since it last did.
FLUSH_SECONDS: Final = 5.0
#: Rows of a Parquet row group: batches are held on a table's thread until this many (or a
#: flush or the close), as fewer, larger row groups cost less to encode. A depth part file
#: holds this many rows (one row group; more, smaller ones when flushed before it was full).
ROW_GROUP_ROWS: Final = 1 << 17
#: Threads encoding the depth parts (part k on thread k % DEPTH_THREADS).
DEPTH_THREADS: Final = 2


def _part_name(part: int) -> str:
    return f"part-{part:06d}.parquet"


def _part_files(directory: str) -> list[str]:
    """The depth part files in ``directory``, in row order."""
    try:
        names = os.listdir(directory)
    except FileNotFoundError:
        return []
    return [
        os.path.join(directory, n)
        for n in sorted(names)
        if n.startswith("part-") and n.endswith(".parquet") and n[5:-8].isdigit()
    ]


def table_files(directory: str | os.PathLike[str], name: str) -> list[str]:
    """The Parquet files holding table ``name`` of ``moldudp64 book``'s ``directory``, in row
    order: ``DIR/NAME.parquet``, except ``depth``: the part files of ``DIR/depth/``
    (``part-000000.parquet``, ``part-000001.parquet``, ...; each holds the rows that follow
    the previous one's, so the directory read as one dataset, files in name order, is the
    table in order)."""
    directory = os.fspath(directory)
    if name == "depth":
        return _part_files(os.path.join(directory, "depth"))
    return [os.path.join(directory, f"{name}.parquet")]


def _arrow() -> tuple[Any, Any, Any]:
    try:
        import numpy as np
        import pyarrow as pa
        import pyarrow.compute as pc
    except ImportError as exc:
        raise MissingDependency(
            "the book's tables need pyarrow and numpy: pip install 'moldudp64[arrow]'",
            extra="arrow",
        ) from exc
    return np, pa, pc


def _head(pa: Any) -> list[Any]:
    # columns never null are declared so (Parquet REQUIRED: no definition levels to encode,
    # about a seventh of the depth table's encoding CPU)
    return [
        pa.field("seq", pa.uint64(), nullable=False),
        pa.field("timestamp", pa.int64(), nullable=False),
        pa.field("stock_locate", pa.uint16(), nullable=False),
        pa.field("stock", pa.string()),
    ]


def _price(pa: Any) -> Any:
    return pa.decimal128(10, 4)


def bbo_schema() -> Any:
    """Columns of the ``bbo`` table (prices null when the side is empty; shares and orders
    then 0, never null)."""
    _, pa, _ = _arrow()
    return pa.schema(
        [
            *_head(pa),
            pa.field("bid_price", _price(pa)),
            pa.field("ask_price", _price(pa)),
            pa.field("bid_shares", pa.uint64(), nullable=False),
            pa.field("ask_shares", pa.uint64(), nullable=False),
            pa.field("bid_orders", pa.uint32(), nullable=False),
            pa.field("ask_orders", pa.uint32(), nullable=False),
        ]
    )


def trades_schema() -> Any:
    """Columns of the ``trades`` table (one row per E, C, P, Q, B)."""
    _, pa, _ = _arrow()
    return pa.schema(
        [
            *_head(pa),
            pa.field("kind", pa.string()),
            pa.field("price", _price(pa)),
            pa.field("shares", pa.uint64()),
            pa.field("side", pa.string()),
            pa.field("order_reference_number", pa.uint64()),
            pa.field("match_number", pa.uint64()),
            pa.field("printable", pa.string()),
        ]
    )


def depth_schema(levels: int) -> Any:
    """Columns of the ``depth`` table for ``levels`` levels per side (a price null where the
    side has fewer levels; its shares and orders then 0, never null)."""
    _, pa, _ = _arrow()
    fields = _head(pa)
    for i in range(levels):
        fields += [
            pa.field(f"bid_price_{i}", _price(pa)),
            pa.field(f"bid_shares_{i}", pa.uint64(), nullable=False),
            pa.field(f"bid_orders_{i}", pa.uint32(), nullable=False),
            pa.field(f"ask_price_{i}", _price(pa)),
            pa.field(f"ask_shares_{i}", pa.uint64(), nullable=False),
            pa.field(f"ask_orders_{i}", pa.uint32(), nullable=False),
        ]
    return pa.schema(fields)


def book_state_schema() -> Any:
    """Columns of ``book_state``: a row per range of messages lost and not recovered, or
    never seen (before the source's first message), from which every book is unreliable
    (any stock's messages may have been in it); ``state`` says which."""
    _, pa, _ = _arrow()
    return pa.schema(
        [
            pa.field("session", pa.string()),
            pa.field("first_seq", pa.uint64()),
            pa.field("last_seq", pa.uint64()),
            pa.field("messages", pa.uint64()),
            pa.field("state", pa.string()),
        ]
    )


def _nulls(values: Any) -> tuple[Any, int]:
    """The validity buffer (None: no null) and null count of int64 prices (-1: null)."""
    np, pa, _ = _arrow()
    null = values < 0
    nulls = int(np.count_nonzero(null))
    if not nulls:
        return None, 0
    return pa.py_buffer(np.packbits(~null, bitorder="little")), nulls


def _decimals(values: Any, narrow: bool = False) -> Any:
    """int64 prices (-1: null) -> decimal128(10, 4), or decimal64(10, 4) when ``narrow``
    (the int64 values copied as they are: no second word)."""
    np, pa, _ = _arrow()
    count = len(values)
    if narrow:
        validity, nulls = _nulls(values)
        words = pa.py_buffer(np.array(values, dtype=np.int64, copy=True))
        return pa.Array.from_buffers(pa.decimal64(10, 4), count, [validity, words], nulls)
    # low word the value, high word 0 (prices are >= 0; a null's words are not read): one
    # write of each word, no zero-fill first
    words = np.empty(2 * count, dtype=np.int64)
    words[0::2] = values
    words[1::2] = 0
    validity, nulls = _nulls(values)
    return pa.Array.from_buffers(_price(pa), count, [validity, pa.py_buffer(words)], nulls)


_CHARS: list[Any] = []


def _ranges(ranges: list[tuple[int, int]]) -> str:
    return ", ".join(f"{a}" if a == b else f"{a}..{b}" for a, b in ranges)


def _chars(codes: Any) -> Any:
    """uint8 character codes (0: null) -> one-character strings."""
    np, pa, pc = _arrow()
    if not _CHARS:
        _CHARS.append(pa.array([chr(i) for i in range(256)], pa.string()))
    index = pa.array(codes.astype(np.uint8), mask=codes == 0)
    return pc.take(_CHARS[0], index)


#: What :meth:`BookTables.grab` takes: whether column after column, the raw rows of bbo,
#: trades and depth (bytes row after row; column after column, the C core's blocks as
#: ``(buffer, rows, stride)`` or None), the stock names from the code given, changed since
#: the last grab.
Grabbed: TypeAlias = tuple[bool, tuple[Any, Any, Any], list[str], int]


def _narrowed(schema: Any) -> Any:
    """``schema`` with decimal64(10, 4) prices where it has decimal128(10, 4)."""
    _, pa, _ = _arrow()
    price = _price(pa)
    return pa.schema([f.with_type(pa.decimal64(10, 4)) if f.type == price else f for f in schema])


_PARQUET_FAST: list[bool] = []


def parquet_fast() -> bool:
    """Whether this pyarrow writes what :class:`BookWriter` asks for the fast way: decimal64
    arrays as Parquet INT64 decimals that read back as decimal128 (recent pyarrow), and
    BYTE_STREAM_SPLIT for integer columns. Probed once by writing and reading a row."""
    if not _PARQUET_FAST:
        _, pa, _ = _arrow()
        try:
            import pyarrow.parquet as pq

            price = pa.array([12345], pa.int64())
            row = pa.table(
                {
                    "p": pa.Array.from_buffers(pa.decimal64(10, 4), 1, [None, price.buffers()[1]]),
                    "n": pa.array([7], pa.uint64()),
                }
            )
            sink = pa.BufferOutputStream()
            pq.write_table(
                row,
                sink,
                store_decimal_as_integer=True,
                store_schema=False,
                use_dictionary=["p"],
                column_encoding={"n": "BYTE_STREAM_SPLIT"},
            )
            back = pq.read_table(pa.BufferReader(sink.getvalue()))
            _PARQUET_FAST.append(
                back.schema.field("p").type == _price(pa)
                and back.column("p").to_pylist() == row.column("p").to_pylist()
                and back.column("n").to_pylist() == [7]
            )
        except Exception:  # an older pyarrow: decimal128 and dictionaries, as before
            _PARQUET_FAST.append(False)
    return _PARQUET_FAST[0]


def _column_plan(
    table: str, names: Sequence[str], codec: str
) -> tuple[dict[str, str], dict[str, str]]:
    """(The fast path's) encoding of each column not dictionary-encoded, and each column's
    compression, chosen for what the columns hold (measured per column kind; README):

    - ``seq``, ``timestamp`` (rising, every value new): DELTA_BINARY_PACKED, left
      uncompressed (a byte or two a value already; smaller and cheaper than PLAIN + zstd);
    - shares and order counts (bbo, depth; many distinct values): BYTE_STREAM_SPLIT then
      ``codec`` (a dictionary costs a hash per value);
    - trades' ``order_reference_number`` and ``match_number`` (near-unique, mostly
      rising): DELTA_BINARY_PACKED then ``codec``;
    - depth's prices: their dictionary, left uncompressed (zstd took a sixth of their
      encoding CPU to save 2% of their size);
    - everything else (stock, stock_locate, kind, side, printable, bbo's and trades'
      prices, trades' shares): dictionary then ``codec``."""
    compression = dict.fromkeys(names, codec)
    encoding = dict.fromkeys(("seq", "timestamp"), "DELTA_BINARY_PACKED")
    compression.update(dict.fromkeys(encoding, "none"))
    if table in ("bbo", "depth"):
        counts = [n for n in names[4:] if "_shares" in n or "_orders" in n]
        encoding.update(dict.fromkeys(counts, "BYTE_STREAM_SPLIT"))
    if table == "trades":
        encoding.update(
            dict.fromkeys(("order_reference_number", "match_number"), "DELTA_BINARY_PACKED")
        )
    if table == "depth":
        compression.update({n: "none" for n in names if "_price_" in n})
    return encoding, compression


class BookTables:
    """Rows of a core -> Arrow record batches ``{"bbo": ..., "trades": ..., "depth": ...}``.

    Prices are decimal128(10, 4); ``narrow``: decimal64(10, 4) (what :class:`BookWriter`
    hands to Parquet when :func:`parquet_fast`: the int64 values as they are, which Parquet
    stores as INT64 decimals either way and reads back as decimal128)."""

    def __init__(self, core: BookCore, depth: int, *, narrow: bool = False) -> None:
        _, pa, _ = _arrow()
        self.core = core
        self.depth = depth
        self.narrow = narrow
        self._names: list[str] = []
        self._grabbed = 0  # names handed out by grab()
        self._reused = 0  # the core's names_reused at the last grab
        self._name_array = pa.array([], pa.string())
        self.schemas = {
            "bbo": bbo_schema(),
            "trades": trades_schema(),
            "depth": depth_schema(depth),
        }
        #: The schemas of the batches made (decimal64 prices when ``narrow``).
        self.batch_schemas = (
            {k: _narrowed(v) for k, v in self.schemas.items()} if narrow else self.schemas
        )

    @staticmethod
    def _head(cols: Any, names: Any) -> list[Any]:
        np, pa, pc = _arrow()
        codes = cols[3]
        return [
            pa.array(cols[0].astype(np.uint64)),
            pa.array(cols[1].copy()),
            pa.array(cols[2].astype(np.uint16)),
            pc.take(names, pa.array(codes.astype(np.int32), mask=codes < 0)),
        ]

    def take(self) -> dict[str, Any]:
        """The rows appended since the last call, as record batches (empty ones left out)."""
        return self.convert(self.grab())

    def grab(self) -> Grabbed:
        """The rows appended since the last call as the core holds them, and the stock
        names added since (cheap: the caller's thread); :meth:`convert` makes them Arrow."""
        take_buffers = getattr(self.core, "take_buffers", None)  # the C core: no copy
        raws = take_buffers() if take_buffers is not None else self.core.take()
        start = self._grabbed
        if self._reused != self.core.names_reused:  # a code was given another name
            self._reused = self.core.names_reused
            start = 0
        new = self.core.names(start)
        self._grabbed = start + len(new)
        return take_buffers is not None, raws, new, start

    def convert(self, grabbed: Grabbed) -> dict[str, Any]:
        """Record batches of what :meth:`grab` took (calls in the order of the grabs)."""
        columnar, raws, new, start = grabbed
        names = self.name_array(new, start)
        out: dict[str, Any] = {}
        for table, raw in zip(ALL_TABLES, raws, strict=True):
            if raw:
                out[table] = self.convert_table(table, columnar, raw, names)
        return out

    def name_array(self, new: list[str], start: int) -> Any:
        """The stock names by code as an Arrow array, with the ``new`` names of a grab from
        code ``start`` (calls in the order of the grabs; cheap when there are none)."""
        _, pa, _ = _arrow()
        if new:
            self._names[start:] = new
            self._name_array = pa.array(self._names, pa.string())
        return self._name_array

    def convert_table(self, table: str, columnar: bool, raw: Any, names: Any) -> Any:
        """The record batch of one table's rows as :meth:`grab` took them (``names``: the
        :meth:`name_array` of that grab); any thread."""
        np, pa, _ = _arrow()
        # one contiguous array per column: every later step is a sequential pass over
        # memory, not a gather across 8 * width-byte strides (the C core holds them so,
        # and hands its block over as it is: no copy). Every column is copied out of it
        # (astype, copy), so a batch held for its row group does not keep the whole block.
        if columnar:

            def columns(raw: Any, width: int) -> Any:
                block, rows, stride = raw
                return np.frombuffer(block, dtype=np.int64).reshape(width, stride)[:, :rows]

        else:

            def columns(raw: Any, width: int) -> Any:
                rows = np.frombuffer(raw, dtype=np.int64).reshape(-1, width)
                return np.ascontiguousarray(rows.T)

        if table == "bbo":
            c = columns(raw, BBO_WIDTH)
            return pa.RecordBatch.from_arrays(
                [
                    *self._head(c, names),
                    _decimals(c[4], self.narrow),
                    _decimals(c[7], self.narrow),
                    pa.array(c[5].astype(np.uint64)),
                    pa.array(c[8].astype(np.uint64)),
                    pa.array(c[6].astype(np.uint32)),
                    pa.array(c[9].astype(np.uint32)),
                ],
                schema=self.batch_schemas["bbo"],
            )
        if table == "trades":
            c = columns(raw, TRADES_WIDTH)
            kind = c[4]
            broken = kind == ord("B")
            no_ref = broken | (kind == ord("Q"))
            return pa.RecordBatch.from_arrays(
                [
                    *self._head(c, names),
                    _chars(kind),
                    _decimals(c[5], self.narrow),
                    pa.array(c[6].astype(np.uint64), mask=broken),
                    _chars(c[7]),
                    pa.array(c[8].astype(np.uint64), mask=no_ref),
                    pa.array(c[9].astype(np.uint64)),
                    _chars(c[10]),
                ],
                schema=self.batch_schemas["trades"],
            )
        c = columns(raw, depth_width(self.depth))
        arrays = self._head(c, names)
        for i in range(self.depth):
            b = 4 + 6 * i
            arrays += [
                _decimals(c[b], self.narrow),
                pa.array(c[b + 1].astype(np.uint64)),
                pa.array(c[b + 2].astype(np.uint32)),
                _decimals(c[b + 3], self.narrow),
                pa.array(c[b + 4].astype(np.uint64)),
                pa.array(c[b + 5].astype(np.uint32)),
            ]
        return pa.RecordBatch.from_arrays(arrays, schema=self.batch_schemas["depth"])


class _Encoder:
    """Arrow conversion, Parquet encoding and compression of a table on a thread of its own
    (NumPy, pyarrow and the C core's feed release the GIL), so the book and its tables use
    every core; a bounded queue of jobs keeps memory bounded. Jobs run in order. An error of
    the thread is raised by the next :meth:`put` or :meth:`close`."""

    def __init__(self, name: str, depth: int = 1) -> None:
        self._queue: queue.Queue[Callable[[], None] | None] = queue.Queue(maxsize=depth)
        self._error: BaseException | None = None
        self._thread = threading.Thread(target=self._run, name=f"book-{name}", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while True:
            job = self._queue.get()
            if job is None:
                return
            if self._error is None:
                try:
                    job()
                except BaseException as exc:  # handed to the caller
                    self._error = exc

    def _raise(self) -> None:
        if self._error is not None:
            error, self._error = self._error, None
            raise error

    def put(self, job: Callable[[], None]) -> None:
        self._raise()
        self._queue.put(job)

    def close(self) -> None:
        """Wait for every job to be done."""
        self._queue.put(None)
        self._thread.join()
        self._raise()


class BookWriter:
    """``moldudp64 book``'s output: the book built from the messages written to it, its
    tables streamed to Parquet files in ``directory``.

    The sink interface of the command (``write``, ``write_events``, ``flush``, ``close``,
    ``count``): messages of one session in order; a jump in sequence numbers is a loss
    (a ``book_state`` row; the books are unreliable from there). Messages numbered before
    the next one expected (a batch that repeats what was applied, as a resumed connection
    or a second line sends) are dropped and counted in :attr:`repeated`, as the receiver
    drops duplicates: the copy already applied wins and nothing is applied twice. A source
    whose first message is N > 1 never showed 1..N-1 (orders added then are missing): a
    ``book_state`` row for them and :attr:`unseen`, not a loss (the source lost nothing).
    :meth:`write_binaryfile` feeds BinaryFILE bytes directly (the fast path for files)."""

    name = "book"

    def __init__(
        self,
        directory: str | os.PathLike[str],
        *,
        depth: int = 10,
        symbols: Iterable[str] | None = None,
        interval: float = 0.0,
        tables: Sequence[str] = ALL_TABLES,
        pure_python: bool = False,
        compression: str = "zstd",
    ) -> None:
        _arrow()
        self.directory = os.fspath(directory)
        os.makedirs(self.directory, exist_ok=True)
        self.depth = depth
        self.tables = tuple(tables)
        self.core = new_core(
            depth,
            frozenset(symbols) if symbols is not None else None,
            round(interval * 1e9),
            frozenset(self.tables),
            pure_python=pure_python,
        )
        #: Whether pyarrow takes the fast Parquet path (:func:`parquet_fast`).
        self.fast = parquet_fast()
        self._tables = BookTables(self.core, depth, narrow=self.fast)
        self._writers: dict[str, Any] = {}
        self.rows: dict[str, int] = dict.fromkeys(self.tables, 0)
        self.compression = compression
        self.count = 0
        self.session: str | None = None
        self.next_seq: int | None = None
        self.lost: list[tuple[str, int, int]] = []
        self.lost_messages = 0
        self.other_sessions = 0
        #: Messages dropped because they were applied already (numbered before next_seq).
        self.repeated = 0
        #: (first, last) before the source's first message: never seen, books unreliable.
        self.unseen: list[tuple[int, int]] = []
        self._drained = time.monotonic()
        self._count_lock = threading.Lock()
        # a thread per table (book_state with bbo); depth, the largest, converted on one
        # and encoded on DEPTH_THREADS, a part file each in turn (a part per row group)
        self._encoders = {
            name: _Encoder(name)
            for name in ("convert", "bbo", "trades",
                         *(f"depth-{i}" for i in range(DEPTH_THREADS)))
        }  # fmt: skip
        #: (The conversion thread's) the depth part being filled and its rows so far.
        self._part = 0
        self._part_rows = 0
        if "depth" in self.tables:
            parts = os.path.join(self.directory, "depth")
            os.makedirs(parts, exist_ok=True)
            for old in _part_files(parts):  # a previous run's: not rows of this one
                os.remove(old)
        #: Batches a table's thread holds for its next row group.
        self._held: dict[str, list[Any]] = {}
        #: Held while the book changes: :meth:`snapshot` (another thread) sees whole batches.
        self.lock = threading.Lock()

    def _writer(self, name: str, schema: Any, part: int | None = None) -> Any:
        """The Parquet writer of table ``name`` (of its part ``part`` for depth), opened on
        first use (on the thread that writes it)."""
        key = name if part is None else f"{name}/{part}"
        writer = self._writers.get(key)
        if writer is None:
            import pyarrow.parquet as pq

            path = (
                os.path.join(self.directory, f"{name}.parquet")
                if part is None
                else os.path.join(self.directory, name, _part_name(part))
            )
            writer = self._writers[key] = pq.ParquetWriter(
                path, schema, **self._parquet_options(name, schema)
            )
        return writer

    def _parquet_options(self, name: str, schema: Any) -> dict[str, Any]:
        """How a table is encoded (measured per column kind; README's benchmarks and
        docs/DESIGN.md)."""
        names = list(schema.names)
        # no dictionary where every value differs
        dictionary = [n for n in names if n not in ("seq", "timestamp")]
        options: dict[str, Any] = {
            "compression": self.compression,
            # decimal(10, 4) as Parquet INT64 (exact; smaller and faster to write)
            "store_decimal_as_integer": True,
            # min/max where a reader filters (seq, time, stock); depth's 6 * N level
            # columns without (less encoding CPU)
            "write_statistics": names[:4] if name == "depth" else True,
        }
        if self.fast:
            # the batches' decimal64 prices are Parquet's INT64 decimal(10, 4), which reads
            # back as decimal128(10, 4) without the Arrow schema (with it: decimal64)
            options["store_schema"] = False
            encoding, compression = _column_plan(name, names, self.compression)
            dictionary = [n for n in dictionary if n not in encoding]
            options["column_encoding"] = encoding
            options["compression"] = compression
        options["use_dictionary"] = dictionary
        return options

    def _drain(self, hold: bool = False) -> None:
        """Hand the rows held by the core to the tables' threads (``hold``: they may keep
        them until a row group is full; otherwise everything held is appended)."""
        columnar, raws, new, start = self._tables.grab()
        names = self._tables.name_array(new, start)
        for table, raw in zip(ALL_TABLES, raws, strict=True):
            if raw or not hold:  # without rows: what the table's thread holds is appended
                # depth's conversion on a thread of its own, its encoding on two more
                self._encoders["convert" if table == "depth" else table].put(
                    lambda table=table, raw=raw: self._convert(  # type: ignore[misc]
                        table,
                        self._tables.convert_table(table, columnar, raw, names) if raw else None,
                        hold,
                    )
                )

    def _convert(self, name: str, batch: Any | None, hold: bool) -> None:
        """(On the conversion thread for depth, else the table's.) Queue the batch: a depth
        batch to the part being filled, on the thread of that part (parts in turn)."""
        if name != "depth":
            self._write(name, batch, hold)
            return
        part = self._part
        full = False
        if batch is not None:
            self._part_rows += batch.num_rows
            full = self._part_rows >= ROW_GROUP_ROWS
            if full:  # the next rows start the next part, on the next thread
                self._part += 1
                self._part_rows = 0
        self._encoders[f"depth-{part % DEPTH_THREADS}"].put(
            lambda: self._write_part(part, batch, hold, full)
        )

    def _count(self, name: str, rows: int) -> None:
        with self._count_lock:  # depth's threads count together
            self.rows[name] = self.rows.get(name, 0) + rows

    def _write(self, name: str, batch: Any | None, hold: bool) -> None:
        """(On the table's encoding thread.) Append held batches and ``batch`` to its file
        as one row group, or hold them when ``hold`` and fewer than :data:`ROW_GROUP_ROWS`."""
        _, pa, _ = _arrow()
        held = self._held.setdefault(name, [])
        if batch is not None:
            held.append(batch)
        rows = sum(b.num_rows for b in held)
        if not held or (hold and rows < ROW_GROUP_ROWS):
            return
        table = pa.Table.from_batches(held)
        held.clear()
        self._writer(name, table.schema).write_table(table, row_group_size=rows)
        self._count(name, rows)

    def _write_part(self, part: int, batch: Any | None, hold: bool, full: bool) -> None:
        """(On the part's depth thread.) Hold ``batch`` for the part's row group; append
        what is held as a row group when the part is ``full`` (then close the part) or not
        ``hold`` (a flush: the part stays open for the rows that follow)."""
        _, pa, _ = _arrow()
        key = f"depth/{part}"
        held = self._held.setdefault(key, [])
        if batch is not None:
            held.append(batch)
        if held and (full or not hold):
            table = pa.Table.from_batches(held)
            held.clear()
            rows = table.num_rows
            self._writer("depth", table.schema, part).write_table(table, row_group_size=rows)
            self._count("depth", rows)
        if full:
            del self._held[key]
            writer = self._writers.pop(key, None)
            if writer is not None:
                writer.close()

    def lose(self, session: str, first: int, last: int) -> None:
        """Record messages ``first..last`` lost for good: a ``book_state`` row."""
        self.lost.append((session, first, last))
        self.lost_messages += last - first + 1
        if self.next_seq is None or last + 1 > self.next_seq:
            self.next_seq = last + 1
        self._state_row(session, first, last, "unreliable: every book from first_seq on")

    def _state_row(self, session: str, first: int, last: int, reason: str) -> None:
        _, pa, _ = _arrow()
        self._drain(hold=True)  # rows before it go first
        batch = pa.RecordBatch.from_arrays(
            [
                pa.array([session]),
                pa.array([first], pa.uint64()),
                pa.array([last], pa.uint64()),
                pa.array([last - first + 1], pa.uint64()),
                pa.array([reason]),
            ],
            schema=book_state_schema(),
        )
        self._encoders["bbo"].put(lambda: self._write("book_state", batch, False))

    def _check_seq(self, session: str, seq_num: int, count: int) -> bool:
        if self.session is None:
            self.session = session
        elif session != self.session:
            self.other_sessions += count
            return False
        if self.next_seq is None and seq_num > 1:
            self.unseen.append((1, seq_num - 1))
            self._state_row(
                session, 1, seq_num - 1,
                "unreliable: before the source's first message (orders added then are "
                "missing); every book from first_seq on",
            )  # fmt: skip
        elif self.next_seq is not None and seq_num > self.next_seq:
            self.lose(session, self.next_seq, seq_num - 1)
        self.next_seq = seq_num + count
        return True

    def write(self, session: str, seq_num: int, messages: list[bytes]) -> None:
        """Apply consecutive messages; ``messages[i]`` has sequence ``seq_num + i``. Those
        numbered before the next one expected were applied already: dropped, counted in
        :attr:`repeated` (nothing is applied twice)."""
        if self.next_seq is not None and seq_num < self.next_seq and session == self.session:
            skip = min(self.next_seq - seq_num, len(messages))
            self.repeated += skip
            messages = messages[skip:]
            seq_num += skip
        if not messages or not self._check_seq(session, seq_num, len(messages)):
            return
        from ..wire import join_blocks

        blocks = join_blocks(messages)
        with self.lock:
            self.core.feed(blocks, seq_num)
        self.count += len(messages)
        if self.core.pending() >= FLUSH_ROWS:
            self._drain(hold=True)

    def write_events(self, events: list[Any]) -> int:
        """Apply several batches of consecutive messages; how many messages that was."""
        n = 0
        for ev in events:
            self.write(ev.session, ev.seq_num, ev.messages)
            n += len(ev.messages)
        return n

    def write_binaryfile(self, data: Any, seq_num: int, session: str = "") -> int:
        """Apply the complete messages at the start of BinaryFILE bytes ``data`` (the first
        is ``seq_num``); return the bytes used."""
        if not self._check_seq(session, seq_num, 0):
            return 0
        before = self.core.messages
        with self.lock:
            used = self.core.feed(data, seq_num)
        done = self.core.messages - before
        self.count += done
        self.next_seq = seq_num + done
        if self.core.pending() >= FLUSH_ROWS:
            self._drain(hold=True)
        return used

    def snapshot(self) -> list[bytes]:
        """The book now as ITCH 5.0 messages ending with End of Snapshot (the next feed
        number): :func:`~moldudp64.itch50.book.snapshot_messages`, taken between batches."""
        with self.lock:
            following = self.next_seq if self.next_seq is not None else 1
            return snapshot_messages(self.core, following)

    def flush(self) -> None:
        """Append the rows held to the files (when there are enough of them for a row group,
        or :data:`FLUSH_SECONDS` passed since the last append: live, the tables grow as the
        feed runs)."""
        now = time.monotonic()
        if self.core.pending() >= FLUSH_MIN_ROWS or now - self._drained >= FLUSH_SECONDS:
            self._drain()
            self._drained = now

    def close(self) -> None:
        """Write what is held and close the files (every asked table exists, maybe empty)."""
        try:
            try:
                self._drain()
            finally:
                errors = []
                for encoder in self._encoders.values():
                    try:
                        encoder.close()
                    except BaseException as exc:  # every thread ends; the first error told
                        errors.append(exc)
                if errors:
                    raise errors[0]
            for name in self.tables:  # every asked table exists, maybe empty
                schema = self._tables.batch_schemas[name]
                if name != "depth":
                    self._writer(name, schema)
                elif not self.rows.get("depth"):
                    self._writer(name, schema, 0)
        finally:
            for writer in self._writers.values():
                writer.close()
            self._writers.clear()

    def summary(self) -> str:
        """One line: messages, rows per table, what the book could not match."""
        core = self.core
        rows = ", ".join(f"{n} {name}" for name, n in self.rows.items())
        text = f"{self.count} messages, rows: {rows}; {core.orders_resting} orders resting"
        if core.unknown_orders:
            text += f"; {core.unknown_orders} references to orders not in the book"
        if core.overfills:
            text += f"; {core.overfills} executions/cancels beyond an order's shares"
        if core.duplicate_orders:
            text += f"; {core.duplicate_orders} adds of a reference already resting (ignored)"
        if core.zero_share_adds:
            text += f"; {core.zero_share_adds} adds of 0 shares (not rested)"
        if core.invalid:
            text += f"; {core.invalid} messages not ITCH 5.0"
        if self.lost_messages:
            text += f"; {self.lost_messages} messages lost (book_state)"
        if self.other_sessions:
            text += f"; {self.other_sessions} messages of other sessions ignored"
        if self.repeated:
            text += f"; {self.repeated} messages already applied (repeats, dropped)"
        if self.unseen:
            text += f"; messages {_ranges(self.unseen)} never seen (book_state)"
        return text
