"""The order book (moldudp64.itch50.book): its tables equal an independent reference book row
for row on generated days, the C and Python cores agree byte for byte, the invariants hold at
the close, and nothing the feed sends makes it crash."""

from __future__ import annotations

import os
import random
import struct
from typing import Any

import pytest

from itch50_bookref import ReferenceBook, reference_tables
from itch50_daygen import binaryfile_bytes, generate_day
from moldudp64.itch50 import book as book_module
from moldudp64.itch50.book import Book, BookCore, Level, PyBookCore, new_core

pa = pytest.importorskip("pyarrow")
from moldudp64.itch50.book_tables import BookTables  # noqa: E402

#: The interval of the sampling tests: a generated day moves ~10 ms per 1,000 messages.
STEP = 5_000_000
CORES = ["python"] + (["c"] if book_module.CBookCore is not None else [])


def core_of(kind: str, **kwargs: Any) -> BookCore:
    return new_core(pure_python=(kind == "python"), **kwargs)


def tables_of(core: BookCore, data: bytes, depth: int, first_seq: int = 1) -> dict[str, Any]:
    """Feed BinaryFILE bytes in a few uneven pieces; the tables as lists of row dicts."""
    tables = BookTables(core, depth)
    rows: dict[str, list[dict[str, Any]]] = {"bbo": [], "trades": [], "depth": []}
    pos = 0
    seq = first_seq
    cut = random.Random(1)
    while pos < len(data):
        end = min(len(data), pos + cut.randrange(1, 40_000))
        before = core.messages
        pos += core.feed(data[pos:end] if end < len(data) else data[pos:], seq)
        seq += core.messages - before
        for name, batch in tables.take().items():
            rows[name] += batch.to_pylist()
    return rows


@pytest.mark.parametrize("kind", CORES)
@pytest.mark.parametrize("seed", [1, 2, 3])
def test_tables_equal_the_reference_book_row_for_row(kind: str, seed: int) -> None:
    messages = list(generate_day(6_000, seed=seed))
    expected = reference_tables(messages, depth=5, first_seq=7)
    got = tables_of(core_of(kind, depth=5), binaryfile_bytes(messages), 5, first_seq=7)
    for name in ("bbo", "trades", "depth"):
        assert len(got[name]) == len(expected[name]) > 100, name
        assert got[name] == expected[name], name


@pytest.mark.parametrize("kind", CORES)
def test_a_feed_joined_mid_day_counts_unknown_references_and_agrees(kind: str) -> None:
    messages = list(generate_day(8_000, seed=4))[3_000:]  # no directory, orders unknown
    reference = ReferenceBook(depth=3)
    for i, m in enumerate(messages):
        reference.apply(m, 3_001 + i)
    core = core_of(kind, depth=3)
    got = tables_of(core, binaryfile_bytes(messages), 3, first_seq=3_001)
    assert core.unknown_orders == reference.unknown > 0
    assert got == reference.tables()
    assert any(row["stock"] is None for row in got["trades"])  # no name known yet: null


@pytest.mark.parametrize("kind", CORES)
def test_symbols_keep_only_their_rows(kind: str) -> None:
    messages = list(generate_day(5_000, seed=5))
    wanted = {"S001B", "S004E"}
    expected = reference_tables(messages, depth=2, symbols=wanted)
    core = core_of(kind, depth=2, symbols=frozenset(wanted))
    got = tables_of(core, binaryfile_bytes(messages), 2)
    assert got == expected
    assert {row["stock"] for row in got["bbo"]} == wanted


@pytest.mark.skipif(book_module.CBookCore is None, reason="the C core is not built")
@pytest.mark.parametrize(
    "options",
    [
        {"depth": 10},
        {"depth": 20, "interval_ns": 250_000_000},
        {"depth": 1, "tables": frozenset({"trades"})},
        {"depth": 4, "symbols": frozenset({"S002C", "nope"})},
    ],
)
def test_the_c_and_python_cores_give_the_same_bytes(options: dict[str, Any]) -> None:
    data = binaryfile_bytes(generate_day(15_000, seed=6, stocks=20))
    c = new_core(**options)
    py = new_core(pure_python=True, **options)
    columnar = new_core(**options)
    assert c.feed(data, 100) == py.feed(data, 100) == columnar.feed(data, 100) == len(data)
    rows = py.take()
    assert c.take() == rows
    # take_columns (C only): the same values, column after column
    np = pytest.importorskip("numpy")
    widths = (book_module.BBO_WIDTH, book_module.TRADES_WIDTH,
              book_module.depth_width(py.depth))  # fmt: skip
    for raw, cols, width in zip(rows, columnar.take_columns(), widths, strict=True):
        table = np.frombuffer(raw, dtype=np.int64).reshape(-1, width)
        assert np.frombuffer(cols, dtype=np.int64).tobytes() == table.T.tobytes()
    assert c.names(0) == py.names(0)
    for attr in ("unknown_orders", "overfills", "duplicate_orders", "invalid", "messages"):
        assert getattr(c, attr) == getattr(py, attr), attr
    assert c.orders_resting == py.orders_resting
    assert c.locates() == py.locates()
    for locate in c.locates():
        assert c.bbo(locate) == py.bbo(locate)
        for side in (0, 1):
            levels = c.levels(locate, side, 1000)
            assert levels == py.levels(locate, side, 1000)
            for price, _, _ in levels[:3]:
                assert c.orders(locate, side, price) == py.orders(locate, side, price)


@pytest.mark.parametrize("kind", CORES)
def test_interval_samples_every_stock_at_each_multiple(kind: str) -> None:
    messages = list(generate_day(6_000, seed=7, stocks=5))
    core = core_of(kind, depth=3, interval_ns=STEP)
    rows = tables_of(core, binaryfile_bytes(messages), 3)["depth"]
    stamps = sorted({row["timestamp"] for row in rows})
    assert len(stamps) > 5
    assert all(t % STEP == 0 for t in stamps)
    per_stamp = {t: sum(1 for row in rows if row["timestamp"] == t) for t in stamps}
    assert set(per_stamp.values()) == {5}
    # a sample is the book as of the last message before it
    reference = ReferenceBook(depth=3)
    sampled = {(row["timestamp"], row["stock_locate"]): row for row in rows}
    boundary = None
    crossings = 0
    for seq, m in enumerate(messages, start=1):
        ts = int.from_bytes(m[5:11], "big")
        if boundary is None:
            boundary = (ts // STEP + 1) * STEP
        if ts >= boundary:
            crossings += 1
            for locate in range(1, 6):
                row = sampled[(boundary, locate)]
                assert row["seq"] == seq - 1
                bids = reference.levels(locate, "B")
                assert row["bid_shares_0"] == (bids[0][1] if bids else 0)
                assert row["bid_orders_2"] == (bids[2][2] if len(bids) > 2 else 0)
            boundary = (ts // STEP + 1) * STEP
        reference.apply(m, seq)
    assert len(rows) == 5 * crossings


@pytest.mark.parametrize("kind", CORES)
def test_invariants_hold_at_the_close_of_a_generated_day(kind: str) -> None:
    core = core_of(kind, depth=0)
    core.feed(binaryfile_bytes(generate_day(30_000, seed=8, stocks=12)), 1)
    assert (core.unknown_orders, core.overfills, core.duplicate_orders, core.invalid) == (
        0, 0, 0, 0,
    )  # fmt: skip
    total = 0
    for locate in core.locates():
        bid, _, _, ask, _, _ = core.bbo(locate)
        assert bid < 0 or ask < 0 or bid < ask, locate  # never crossed
        for side in (0, 1):
            for price, shares, count in core.levels(locate, side, 10**6):
                orders = core.orders(locate, side, price)
                assert len(orders) == count > 0
                assert sum(s for _, s in orders) == shares
                total += count
    assert total == core.orders_resting


def _msg(kind: bytes, locate: int, body: bytes, ts: int = 1) -> bytes:
    return kind + struct.pack(">HH", locate, 0) + ts.to_bytes(6, "big") + body


def _add(ref: int, side: bytes, shares: int, price: int, locate: int = 1) -> bytes:
    return _msg(b"A", locate, struct.pack(">QcI8sI", ref, side, shares, b"ZZZ     ", price))


@pytest.mark.parametrize("kind", CORES)
def test_the_live_api_keeps_time_priority_and_reports_top_of_book_changes(kind: str) -> None:
    seen: list[Any] = []
    book = Book(on_bbo=seen.append, pure_python=(kind == "python"))
    directory = _msg(b"R", 1, b"ZZZ     QN" + struct.pack(">I", 100) + b"NC  PNN1N\0\0\0\0N")
    events = book.apply_many([
        directory,
        _add(1, b"B", 100, 100_000),
        _add(2, b"B", 200, 100_000),
        _add(3, b"B", 300, 99_900),
        _add(4, b"S", 50, 100_100),
    ])  # fmt: skip
    assert events == seen and len(events) == 3  # the add at 9.99 did not change the top
    assert events[-1].stock == "ZZZ" and events[-1].ask_price == 100_100
    assert book.bbo("ZZZ") == (Level(100_000, 300, 2), Level(100_100, 50, 1))
    assert book.orders("ZZZ", "B", 100_000) == [(1, 100), (2, 200)]
    # a partial execution keeps the order's place; a replace sends it to the back
    book.apply(_msg(b"E", 1, struct.pack(">QIQ", 1, 40, 77)))
    assert book.orders("ZZZ", "B", 100_000) == [(1, 60), (2, 200)]
    book.apply(_msg(b"U", 1, struct.pack(">QQII", 1, 9, 60, 100_000)))
    assert book.orders("ZZZ", "B", 100_000) == [(2, 200), (9, 60)]
    assert book.levels("ZZZ", "B") == [Level(100_000, 260, 2), Level(99_900, 300, 1)]
    assert book.order(9) == (1, "B", 100_000, 60)
    # an unknown reference is counted, never a crash
    assert book.apply(_msg(b"D", 1, struct.pack(">Q", 12345))) == []
    book.apply(_msg(b"H", 1, b"ZZZ     " + b"H" + b" " + b"IPO1"))
    state = book.state("ZZZ")
    assert state["trading_state"] == "H" and state["trading_reason"] == "IPO1"
    assert state["round_lot_size"] == 100
    assert book.stats()["unknown_orders"] == 1
    with pytest.raises(ValueError, match="65,535"):
        book.apply(b"A" * 65536)
    with pytest.raises(KeyError):
        book.bbo("NOPE")


@pytest.mark.parametrize("kind", CORES)
def test_hostile_messages_are_counted_never_a_crash(kind: str) -> None:
    rng = random.Random(9)
    messages: list[bytes] = [b"", b"A", b"Z" * 30, _add(1, b"B", 10, 5)[:-1]]
    top = (1 << 64) - 1
    messages += [
        _add(top, b"S", 0xFFFFFFFF, 0xFFFFFFFF, locate=65535),
        _add(top, b"S", 1, 1),  # the same reference again
        _msg(b"Q", 2, struct.pack(">Q8sIQc", top, b"X       ", 1, top, b"O")),
        _add(5, b"B", 10, 5),
        _msg(b"X", 1, struct.pack(">QI", 5, 11)),  # more than it has
        _msg(b"U", 3, struct.pack(">QQII", 777, 778, 1, 1)),
    ]
    for _ in range(3_000):
        kind_byte = rng.choice(b"AFEXDUCPQBRHYhJKSVWLINOZ")
        length = book_module.LENGTHS.get(kind_byte, 20) + rng.choice((0, 0, 0, -1, 1))
        messages.append(bytes([kind_byte]) + rng.randbytes(max(0, length - 1)))
    data = binaryfile_bytes(messages) + b"\x00\x30abc"  # ends inside a message
    core = core_of(kind, depth=3, interval_ns=10**6)
    used = core.feed(data, top - 10)  # sequence numbers wrap past 2**64 - 1
    assert used == len(data) - 5
    assert core.invalid > 4 and core.overfills >= 1 and core.duplicate_orders >= 1
    tables_of(core, b"", 3)
    if book_module.CBookCore is not None and kind == "c":
        py = PyBookCore(depth=3, interval_ns=10**6)
        py.feed(data, top - 10)
        c = core_of("c", depth=3, interval_ns=10**6)
        c.feed(data, top - 10)
        assert c.take() == py.take()


def _directory(locate: int, name: bytes) -> bytes:
    return _msg(
        b"R", locate, name.ljust(8) + b"QN" + struct.pack(">I", 100) + b"NC  PNN1N\0\0\0\0N"
    )


@pytest.mark.parametrize("kind", CORES)
def test_renamed_stocks_keep_their_names_in_the_rows_and_codes_are_reused(kind: str) -> None:
    """A locate renamed again and again keeps one name code (memory follows the stocks):
    a code is given to a new name only once no row held names it, so every row, in the
    tables and in the live API's events, carries the name of its moment."""
    core = core_of(kind, depth=1)
    tables = BookTables(core, 1)
    stocks: dict[str, list[str]] = {"bbo": [], "depth": []}

    def feed(messages: list[bytes]) -> None:
        core.feed(binaryfile_bytes(messages), 1)

    feed([_directory(1, b"AAA"), _add(1, b"B", 10, 100), _directory(1, b"BBB")])
    feed([_add(2, b"B", 10, 200)])  # AAA's row still held: BBB has a code of its own
    assert core.names(0) == ["AAA", "BBB"]
    for name, batch in tables.take().items():
        stocks[name] += batch.column("stock").to_pylist()
    for i in range(50):  # no row held now: each new name takes the code given back
        feed([_directory(1, b"N%d" % i)])
    assert len(core.names(0)) == 2 and core.names_reused >= 49
    feed([_add(3, b"B", 10, 300)])
    for name, batch in tables.take().items():
        stocks[name] += batch.column("stock").to_pylist()
    assert stocks == {"bbo": ["AAA", "BBB", "N49"], "depth": ["AAA", "BBB", "N49"]}
    seen: list[Any] = []
    book = Book(on_bbo=seen.append, pure_python=(kind == "python"))
    book.apply_many([_directory(1, b"AAA"), _add(1, b"B", 10, 100)])
    for i in range(5):
        book.apply_many([_directory(1, b"N%d" % i), _add(10 + i, b"B", 10, 200 + i)])
    assert [e.stock for e in seen] == ["AAA", "N0", "N1", "N2", "N3", "N4"]
    assert book.bbo("N4")[0] == Level(204, 10, 1)


@pytest.mark.parametrize("kind", CORES)
def test_bad_queries_are_value_errors_with_either_core(kind: str) -> None:
    book = Book(pure_python=(kind == "python"))
    book.apply_many([_directory(1, b"ZZZ"), _add(1, b"B", 10, 100), _add(2, b"B", 0, 200)])
    assert book.bbo("ZZZ")[0] == Level(100, 10, 1)  # the add of 0 shares is not rested
    assert book.stats()["zero_share_adds"] == 1
    for call in (
        lambda: book.bbo(65536),
        lambda: book.levels(-1, "B"),
        lambda: book.levels("ZZZ", "X"),
        lambda: book.levels("ZZZ", "B", -1),
        lambda: book.orders("ZZZ", "B", -5),
        lambda: book.order(2**64),
        lambda: book.order(-1),
    ):
        with pytest.raises(ValueError):
            call()
    assert book.levels("ZZZ", "B", 10**12) == [Level(100, 10, 1)]


@pytest.mark.skipif(book_module.CBookCore is None, reason="the C core is not built")
@pytest.mark.parametrize("depth", [1, 5])
def test_stocks_renamed_in_and_out_of_the_symbols_agree_with_python(depth: int) -> None:
    # R messages rename stocks between a wanted and an unwanted name mid-day: the book went
    # on while a stock was not emitted, so its next rows must come from the whole book (the
    # C core reads only the changed side's levels otherwise)
    rng = random.Random(12)
    messages: list[bytes] = []
    for m in generate_day(20_000, seed=12, stocks=6):
        messages.append(m)
        if rng.random() < 0.002:
            locate = rng.randrange(1, 7)
            name = rng.choice((b"WANTED  ", b"OTHER   ", b"S001B   "))
            messages.append(_msg(b"R", locate, name + b"QN" + struct.pack(">I", 100)
                                 + b"NC  PNN1N\0\0\0\0N"))  # fmt: skip
    data = binaryfile_bytes(messages)
    options: dict[str, Any] = {"depth": depth, "symbols": frozenset({"WANTED", "S001B"})}
    c, py = new_core(**options), new_core(pure_python=True, **options)
    assert c.feed(data, 1) == py.feed(data, 1) == len(data)  # one piece: without the GIL
    rows = py.take()
    assert all(rows) and c.take() == rows


def test_bookwriter_names_what_it_never_saw_and_applies_repeats_once(tmp_path: Any) -> None:
    """The listen sink path (a live feed or a capture): a first message numbered 5 leaves a
    book_state row for 1..4 (not a loss); a batch repeating messages already written is
    applied from its first new message on (the repeats counted, as the receiver drops
    duplicates)."""
    import pyarrow.parquet as pq

    from moldudp64.itch50.book_tables import BookWriter

    writer = BookWriter(tmp_path / "o")
    directory = _directory(1, b"ZZZ")
    adds = [_add(i, b"B", 10, 100 + i) for i in range(1, 5)]
    writer.write("S1", 5, [directory, *adds[:2]])  # messages 5, 6, 7
    writer.write("S1", 6, adds)  # 6 and 7 again, then 8 and 9 new
    assert writer.repeated == 2 and writer.unseen == [(1, 4)] and not writer.lost
    assert writer.core.duplicate_orders == 0 and writer.core.orders_resting == 4
    summary = writer.summary()
    writer.close()
    assert "2 messages already applied" in summary and "1..4 never seen" in summary
    state = pq.read_table(tmp_path / "o" / "book_state.parquet").to_pylist()
    assert [(r["first_seq"], r["last_seq"]) for r in state] == [(1, 4)]
    assert "before the source's first message" in state[0]["state"]
    bbo = pq.read_table(tmp_path / "o" / "bbo.parquet").to_pylist()
    assert [r["seq"] for r in bbo] == [6, 7, 8, 9]


@pytest.mark.skipif(book_module.CBookCore is None, reason="the C core is not built")
def test_the_c_core_feeds_without_the_gil_and_refuses_other_calls_meanwhile() -> None:
    import threading

    data = binaryfile_bytes(generate_day(20_000, seed=3, stocks=10)) * 3  # 1.8 MB: >= 10 ms
    core = new_core(depth=10)
    used: list[int] = []
    feeder = threading.Thread(target=lambda: used.append(core.feed(data, 1)))
    refused = 0
    feeder.start()
    while feeder.is_alive():  # this thread runs while the feed does: the GIL is free
        try:
            core.bbo(1)
        except RuntimeError as exc:
            assert "another thread" in str(exc)
            refused += 1
    feeder.join()
    assert used == [len(data)] and refused > 0
    assert core.messages == 60_000 and core.pending() > 0  # usable again


def test_bookwriter_holds_batches_for_full_row_groups_and_a_flush_appends_them(
    tmp_path: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The tables' threads keep batches until a row group is full (fewer, larger row groups
    cost less to encode); flush (live, every few seconds) and close append what is held,
    and the rows are those of the tables taken directly, in order."""
    import threading

    import pyarrow.parquet as pq

    from moldudp64.itch50 import book_tables
    from moldudp64.itch50.book_tables import BookWriter

    monkeypatch.setattr(book_tables, "FLUSH_ROWS", 50)
    monkeypatch.setattr(book_tables, "ROW_GROUP_ROWS", 300)
    data = binaryfile_bytes(generate_day(6_000, seed=5))
    writer = BookWriter(tmp_path / "o", depth=5)

    def feed(end: int) -> None:  # small pieces, as many small batches
        while (pos := used[0]) < end:
            used[0] += writer.write_binaryfile(
                memoryview(data)[pos : pos + 2_000], 1 + writer.count
            )

    used = [0]
    feed(len(data) // 2)
    monkeypatch.setattr(book_tables, "FLUSH_SECONDS", 0.0)
    writer.flush()  # appends what the threads hold, row group or not
    # in order: wait for each to be idle
    for name in ("convert", "bbo", "trades", "depth-0", "depth-1"):
        idle = threading.Event()
        writer._encoders[name].put(idle.set)
        assert idle.wait(10)
    assert not any(writer._held.values()) and writer.rows["depth"] > 300
    feed(len(data))
    writer.close()
    expected = tables_of(core_of(CORES[-1], depth=5), data, 5)
    out = tmp_path / "o"
    for name in ("bbo", "trades"):
        meta = pq.ParquetFile(out / f"{name}.parquet").metadata
        sizes = [meta.row_group(i).num_rows for i in range(meta.num_row_groups)]
        assert sum(sizes) == len(expected[name]) > 600, name
        # full groups, but for the one the flush cut and the last
        assert len(sizes) >= 3 and sum(n < 300 for n in sizes) <= 2, (name, sizes)
        assert pq.read_table(out / f"{name}.parquet").to_pylist() == expected[name]
    # depth: part files of a full row group each, in turn on the two depth threads, but
    # for the part the flush cut in two and the last; the directory read as one dataset
    # is the table in order
    parts = book_tables.table_files(out, "depth")
    assert [os.path.basename(p) for p in parts] == [
        f"part-{i:06d}.parquet" for i in range(len(parts))
    ]
    metas = [pq.ParquetFile(p).metadata for p in parts]
    assert len(parts) >= 3 and all(m.num_rows >= 300 for m in metas[:-1])
    assert sum(m.num_row_groups for m in metas) == len(parts) + 1
    assert sum(m.num_rows for m in metas) == len(expected["depth"])
    assert pq.read_table(out / "depth").to_pylist() == expected["depth"]


def test_bookwriter_replaces_the_depth_parts_of_an_earlier_run(tmp_path: Any) -> None:
    """Writing again into a directory leaves no part of an earlier, longer run behind (they
    would be read as rows of this one); files that are not parts stay."""
    import pyarrow.parquet as pq

    from moldudp64.itch50.book_tables import BookWriter, table_files

    parts = tmp_path / "o" / "depth"
    parts.mkdir(parents=True)
    for i in range(3):
        (parts / f"part-{i:06d}.parquet").write_bytes(b"stale")
    (parts / "notes.txt").write_text("mine")
    data = binaryfile_bytes(generate_day(3_000, seed=2))
    writer = BookWriter(tmp_path / "o", depth=3)
    writer.write_binaryfile(data, 1)
    writer.close()
    assert [os.path.basename(p) for p in table_files(tmp_path / "o", "depth")] == [
        "part-000000.parquet"
    ]
    assert (parts / "notes.txt").read_text() == "mine"
    expected = tables_of(core_of(CORES[-1], depth=3), data, 3)["depth"]
    assert pq.read_table(parts / "part-000000.parquet").to_pylist() == expected


@pytest.mark.skipif(book_module.CBookCore is None, reason="the C core is not built")
def test_c_blocks_handed_over_without_a_copy_hold_the_rows_until_let_go() -> None:
    """take_buffers gives each table's block as the core held it (column c at
    [c * stride, c * stride + rows)); a block still read is never reused for later rows,
    one let go is (its pooled memory), and the values are those take() gives row by row."""
    np = pytest.importorskip("numpy")
    data = binaryfile_bytes(generate_day(30_000, seed=7, stocks=20))
    half = len(data) // 2
    options: dict[str, Any] = {"depth": 5}
    rowwise, blocks = new_core(**options), new_core(**options)
    widths = (book_module.BBO_WIDTH, book_module.TRADES_WIDTH, book_module.depth_width(5))

    def columns(taken: Any, width: int) -> Any:
        block, rows, stride = taken
        return np.frombuffer(block, dtype=np.int64).reshape(width, stride)[:, :rows]

    def expected(core: BookCore) -> list[Any]:
        return [
            np.frombuffer(raw, dtype=np.int64).reshape(-1, w).T.copy()
            for raw, w in zip(core.take(), widths, strict=True)
        ]

    used = rowwise.feed(data[:half], 1)
    assert blocks.feed(data[:half], 1) == used
    first = [columns(t, w) for t, w in zip(blocks.take_buffers(), widths, strict=True)]
    kept = [c.copy() for c in first]
    assert all(np.array_equal(a, b) for a, b in zip(first, expected(rowwise), strict=True))
    assert blocks.take_buffers() == (None, None, None)  # nothing new: no block
    seq = 1 + rowwise.messages
    rowwise.feed(data[used:], seq)
    blocks.feed(data[used:], seq)  # rows written while the first blocks are still read
    second = [columns(t, w) for t, w in zip(blocks.take_buffers(), widths, strict=True)]
    assert all(np.array_equal(a, b) for a, b in zip(first, kept, strict=True))
    assert all(np.array_equal(a, b) for a, b in zip(second, expected(rowwise), strict=True))
    del first, second  # their memory to the pool, then to the next rows
    for _ in range(3):
        rowwise.feed(data[:half], seq)
        blocks.feed(data[:half], seq)
        again = [columns(t, w) for t, w in zip(blocks.take_buffers(), widths, strict=True)]
        assert all(np.array_equal(a, b) for a, b in zip(again, expected(rowwise), strict=True))
        seq += 100_000


def test_bookwriter_fast_parquet_path_reads_back_as_the_plain_one(
    tmp_path: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Where pyarrow can (parquet_fast), prices go to Parquet as decimal64 and each column
    is encoded for what it holds (depth's share and order columns BYTE_STREAM_SPLIT, seq
    and match numbers DELTA_BINARY_PACKED, depth's price dictionaries uncompressed): the
    files read back as the same tables, with the same schema (decimal128 prices), as those
    written the older way."""
    import pyarrow.parquet as pq

    from moldudp64.itch50 import book_tables
    from moldudp64.itch50.book_tables import BookWriter, parquet_fast

    if not parquet_fast():
        pytest.skip("this pyarrow writes the older way only")
    data = binaryfile_bytes(generate_day(5_000, seed=4))
    read = {}
    for fast in (True, False):
        monkeypatch.setattr(book_tables, "_PARQUET_FAST", [fast])
        out = tmp_path / str(fast)
        writer = BookWriter(out, depth=4)
        assert writer.fast is fast
        writer.write_binaryfile(data, 1)
        writer.close()
        read[fast] = {t: pq.read_table(out / f"{t}.parquet") for t in ("bbo", "trades")}
        read[fast]["depth"] = pq.read_table(out / "depth")
        chunk = pq.ParquetFile(book_tables.table_files(out, "depth")[0]).metadata.row_group(0)
        column = read[fast]["depth"].schema.names.index
        assert ("BYTE_STREAM_SPLIT" in chunk.column(column("bid_shares_0")).encodings) is fast
        assert ("DELTA_BINARY_PACKED" in chunk.column(column("seq")).encodings) is fast
        price = chunk.column(column("ask_price_1"))
        assert "RLE_DICTIONARY" in price.encodings
        assert (price.compression == "UNCOMPRESSED") is fast
        trades = pq.ParquetFile(out / "trades.parquet").metadata.row_group(0)
        match = trades.column(read[fast]["trades"].schema.names.index("match_number"))
        assert ("DELTA_BINARY_PACKED" in match.encodings) is fast
    for t in ("bbo", "trades", "depth"):
        assert read[True][t].num_rows > 0
        assert read[True][t].schema == read[False][t].schema, t
        assert read[True][t].equals(read[False][t]), t
    assert str(read[True]["depth"].schema.field("ask_price_3").type) == "decimal128(10, 4)"


@pytest.mark.skipif(book_module.CBookCore is None, reason="the C core is not built")
def test_the_c_core_finds_orders_whatever_their_references_look_like() -> None:
    """The C core indexes dense references directly and the rest by hash: references that
    rise densely, thin out, come back to a page left behind, jump far ahead once or for
    good, fall below the first ones or are random 64-bit numbers, replaced, executed and
    deleted in any order, give what the Python core gives."""
    rng = random.Random(21)
    counter = 1_000_000_000
    live: list[int] = []
    used: list[int] = []
    messages = [_directory(locate, f"T{locate}".encode()) for locate in (1, 2, 3)]
    # (messages, how new references come) in turn
    phases = [(6_000, "dense"), (3_000, "thin"), (4_000, "dense"), (3_000, "behind"),
              (3_000, "odd"), (1, "moved"), (6_000, "dense"), (3_000, "thin")]  # fmt: skip
    phases += [(1, "ahead"), (1_500, "dense")] * 4

    def new_ref(phase: str) -> int:
        nonlocal counter
        if phase == "moved":  # the day goes on far ahead (no real feed does; a hostile one)
            counter += 1 << 30
        elif phase == "ahead":  # a long way ahead, but not too far to keep the pages between
            counter += 3 << 26
        elif phase == "thin":
            counter += rng.randrange(3_000, 9_000)  # a page each
        elif phase == "behind" and rng.random() < 0.5:
            return counter - rng.randrange(1, 200_000)  # a page left behind (or in use)
        elif phase == "odd" and rng.random() < 0.3:
            return rng.choice((rng.randrange(1, 1_000_000), rng.randrange(1 << 64),
                               counter + (1 << 29) + rng.randrange(1 << 20)))  # fmt: skip
        counter += rng.choice((1, 1, 2, 3))  # the day going on
        return counter

    for count, phase in phases:
        for _ in range(count):
            roll = rng.random()
            if roll < 0.45 or not live or count == 1:  # a phase of one: its add
                ref = new_ref(phase)
                price = 10_000 + rng.randrange(40) * 100
                side, shares, locate = (
                    rng.choice((b"B", b"S")),
                    rng.randrange(1, 500),
                    rng.randrange(1, 4),
                )
                messages.append(_add(ref, side, shares, price, locate))
                live.append(ref)
                used.append(ref)
                continue
            i = rng.randrange(len(live))
            ref = live[i] if rng.random() < 0.97 else new_ref(phase)  # now and then unknown
            if roll < 0.75:  # most orders are deleted, in any order
                messages.append(_msg(b"D", 1, struct.pack(">Q", ref)))
                live[i] = live[-1]
                live.pop()
            elif roll < 0.85:
                body = struct.pack(">QIQ", ref, rng.randrange(1, 300), rng.randrange(1 << 40))
                messages.append(_msg(b"E", 1, body))
            elif roll < 0.92:
                messages.append(_msg(b"X", 1, struct.pack(">QI", ref, rng.randrange(1, 300))))
            else:
                new = new_ref(phase)
                price = 10_000 + rng.randrange(40) * 100
                body = struct.pack(">QQII", ref, new, rng.randrange(0, 400), price)
                messages.append(_msg(b"U", 1, body))
                live[i] = new
                used.append(new)
    data = binaryfile_bytes(messages)
    c = new_core(depth=3)
    py = new_core(depth=3, pure_python=True)
    pos = 0
    while pos < len(data):  # pieces large enough to run without the GIL
        end = min(len(data), pos + rng.randrange(4_096, 60_000))
        used_c = c.feed(data[pos:end], 1 + c.messages)
        assert py.feed(data[pos:end], 1 + py.messages) == used_c
        pos += used_c
        assert c.take() == py.take()
    for attr in ("unknown_orders", "overfills", "duplicate_orders", "messages"):
        assert getattr(c, attr) == getattr(py, attr), attr
    assert c.orders_resting == py.orders_resting > 1_000
    assert c.unknown_orders > 100 and c.duplicate_orders > 5
    assert [c.order(ref) for ref in used] == [py.order(ref) for ref in used]
