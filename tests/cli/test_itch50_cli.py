"""`--decode itch50` end to end: inspect (captures, BinaryFILEs, ordered and --raw) and
listen into JSON lines, Parquet and CSV; checked against an independent dissector's
decoding of real captures and against the library's own tables."""

from __future__ import annotations

import io
import json
import subprocess
import sys
from decimal import Decimal
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.csv as pacsv
import pyarrow.parquet as pq
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from capture_helpers import SHARED_CAPTURES
from cli_helpers import (
    GROUP,
    QUICK_END,
    SESSION,
    assert_one_line_error,
    finish,
    free_port,
    jsonl,
    run,
    start_listen,
)
from moldudp64 import itch50
from moldudp64._output import WholeWrites
from moldudp64.binaryfile import write_binaryfile
from moldudp64.capture import CaptureReader
from moldudp64.cli import generate_itch, main
from moldudp64.itch50.sinks import ItchJsonlSink, ItchTableSink, open_decoded_sink
from moldudp64.wire import Packet

needs_shared = pytest.mark.skipif(
    not SHARED_CAPTURES.is_dir(), reason=f"shared captures not found at {SHARED_CAPTURES}"
)


def truth() -> list[dict[str, Any]]:
    with open(SHARED_CAPTURES / "itch50-expected.jsonl") as lines:
        return [json.loads(line) for line in lines]


def same(mine: Any, theirs: str) -> bool:
    """A field equals the dissector's string: numbers as numbers, text without padding."""
    if isinstance(mine, int | float | Decimal):
        return Decimal(str(mine)) == Decimal(theirs)
    return bool(str(mine).strip() == theirs.strip())


def parquet_dir(directory: Path) -> dict[str, pa.Table]:
    return {p.stem: pq.read_table(p) for p in sorted(directory.glob("*.parquet"))}


def assert_fields_match(rows: list[dict[str, Any]], expected: list[dict[str, Any]]) -> None:
    assert [(r["seq"], r["message_type"]) for r in rows] == [
        (e["seq"], e["fields"]["messagetype"]) for e in expected
    ]
    checked = 0
    for row, want in zip(rows, expected, strict=True):
        mine = {k.replace("_", ""): v for k, v in row.items()}
        for key, value in want["fields"].items():
            assert key in mine, (row, key)
            assert same(mine[key], value), (row, key, value)
            checked += 1
    assert checked > 400


@needs_shared
@pytest.mark.parametrize("raw", [False, True], ids=["ordered", "raw"])
def test_inspect_jsonl_matches_the_independent_dissector(raw: bool) -> None:
    expected = truth()
    rows: list[dict[str, Any]] = []
    for name in sorted({e["file"] for e in expected}):
        proc = run(
            "inspect", str(SHARED_CAPTURES / name), "--decode", "itch50", "--format", "jsonl",
            *(["--raw"] if raw else []),
        )  # fmt: skip
        # Multiple.Packets.pcap: two packets far apart, so a gap remains (exit 3)
        assert proc.returncode == (3 if "Multiple" in name else 0), proc.stderr
        for row in jsonl(proc.stdout):
            assert row["session"] == "000010059B" if "Nasdaq" in name else row["session"]
            assert ("ts" in row) == raw
            rows.append(row)
    assert len(rows) == len(expected) == 49
    assert_fields_match(rows, expected)


@needs_shared
def test_inspect_parquet_of_a_capture_equals_the_decoders_tables(tmp_path: Path) -> None:
    name = "Nasdaq.Equities.TotalView.Itch.v5.0/Multiple.Packets.pcap"
    out = tmp_path / "day"
    proc = run("inspect", str(SHARED_CAPTURES / name), "--decode", "itch50", "-o", str(out))
    assert proc.returncode == 3, proc.stderr  # the gap between the two packets
    assert b"39 messages decoded to" in proc.stderr
    records = []
    with CaptureReader(SHARED_CAPTURES / name) as reader:
        for datagram in reader:
            packet = Packet(datagram.payload)
            session = packet.session_ident
            records += [(session, packet.seq_num + i, bytes(m)) for i, m in enumerate(packet)]
    assert parquet_dir(out) == itch50.records_to_arrow(records)
    assert sorted(parquet_dir(out)) == ["add_order", "add_order_mpid", "order_delete"]


@pytest.fixture
def itch_file(tmp_path: Path) -> tuple[Path, list[bytes]]:
    """A BinaryFILE of 5,000 ITCH-shaped messages and three that are not ITCH."""
    messages = list(generate_itch(5_000, seed=3))
    messages[10:10] = [b"Z" * 9, b"A" * 20, b""]  # unknown type, wrong length, empty
    path = tmp_path / "feed.bin"
    write_binaryfile(path, messages)
    return path, messages


def test_binaryfile_to_parquet_csv_and_jsonl(
    itch_file: tuple[Path, list[bytes]], tmp_path: Path
) -> None:
    path, messages = itch_file
    tables = itch50.binaryfile_to_arrow(path, session="S1", first_seq=7)
    for fmt in ("parquet", "csv"):
        out = tmp_path / fmt
        proc = run(
            "inspect", str(path), "--decode", "itch50", "--format", fmt, "-o", str(out),
            "--session", "S1", "--start-seq", "7",
        )  # fmt: skip
        assert proc.returncode == 0, proc.stderr
        assert b"3 not ITCH 5.0" in proc.stderr
        assert sorted(p.stem for p in out.iterdir()) == sorted(tables)
    assert parquet_dir(tmp_path / "parquet") == tables
    # CSV: the same bytes as the library's write_csv
    itch50.write_csv(tables, tmp_path / "lib")
    for table in tables:
        assert (tmp_path / "csv" / f"{table}.csv").read_bytes() == (
            tmp_path / "lib" / f"{table}.csv"
        ).read_bytes()
    invalid = pacsv.read_csv(tmp_path / "csv" / "invalid.csv").to_pylist()
    assert [(r["seq"], r["reason"], r["data"]) for r in invalid] == [
        (17, "unknown_type", "5a" * 9), (18, "bad_length", "41" * 20), (19, "empty", "")
    ]  # fmt: skip
    # JSON lines: one object per message, in order
    proc = run("inspect", str(path), "--decode", "itch50", "-o", "-", "--format", "jsonl")
    rows = jsonl(proc.stdout)
    assert proc.returncode == 0 and len(rows) == len(messages)
    assert [r["seq"] for r in rows] == list(range(1, len(messages) + 1))
    assert rows[0] == {"session": None, "seq": 1} | itch50.to_dict(itch50.decode(messages[0]))
    assert rows[11] == {
        "session": None, "seq": 12, "message_type": "A", "reason": "bad_length", "length": 20,
        "data": "41" * 20,
    }  # fmt: skip


#: Values a float cannot hold: the largest MWCB level (20 significant digits), zero and the
#: smallest step of an 8-place and of a 4-place price.
EXACT = [
    itch50.MWCBDeclineLevel(0, 0, 1, 2**64 - 1, 0, 1),
    itch50.AddOrder(7, 0, 2, 11, "B", 100, "ZVZZT", 0),
    itch50.AddOrder(7, 0, 3, 12, "S", 100, "ZVZZT", 2**32 - 1),
]


def test_decoded_outputs_write_prices_as_exact_decimals(tmp_path: Path) -> None:
    path = tmp_path / "exact.bin"
    write_binaryfile(path, [itch50.encode(r) for r in EXACT])
    proc = run("inspect", str(path), "--decode", "itch50", "-o", "-", "--format", "jsonl")
    assert proc.returncode == 0, proc.stderr
    lines = proc.stdout.decode().splitlines()
    assert '"level_1": 184467440737.09551615, "level_2": 0.00000000, "level_3": 0.00000001' in (
        lines[0]
    )
    assert '"price": 0.0000}' in lines[1] and '"price": 429496.7295}' in lines[2]
    rows = [json.loads(line, parse_float=Decimal) for line in lines]
    assert rows[0]["level_1"] == Decimal("184467440737.09551615")
    assert [r["price"] for r in rows[1:]] == [Decimal(0), Decimal("429496.7295")]
    # the same values as the other outputs hold them
    tables = itch50.binaryfile_to_arrow(path)
    assert tables["mwcb_decline_level"].column("level_1")[0].as_py() == rows[0]["level_1"]
    assert rows[0] == {"session": None, "seq": 1} | itch50.to_dict(EXACT[0], exact=True)

    proc = run("inspect", str(path), "--decode", "itch50", "-o", "-", "--format", "text")
    assert "level_1=184467440737.09551615 level_2=0.00000000 level_3=0.00000001" in (
        proc.stdout.decode()
    )
    assert "price=0.0000" in proc.stdout.decode()

    proc = run("inspect", str(path), "--decode", "itch50", "-o", str(tmp_path / "csv"),
               "--format", "csv")  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    mwcb = (tmp_path / "csv" / "mwcb_decline_level.csv").read_text().splitlines()
    assert mwcb[1].endswith(",184467440737.09551615,0.00000000,0.00000001")
    add = (tmp_path / "csv" / "add_order.csv").read_text().splitlines()
    assert add[1].endswith(',"ZVZZT",0.0000') and add[2].endswith(',"ZVZZT",429496.7295')
    back = pacsv.read_csv(
        tmp_path / "csv" / "mwcb_decline_level.csv",
        convert_options=pacsv.ConvertOptions(column_types={"level_1": pa.decimal128(20, 8)}),
    )
    assert back.column("level_1")[0].as_py() == Decimal("184467440737.09551615")


def test_a_file_that_is_not_itch_lands_in_the_invalid_table(tmp_path: Path) -> None:
    path = tmp_path / "other.bin"
    write_binaryfile(path, [b"\x00\x01binary", b"#not itch"] * 50)
    out = tmp_path / "out"
    proc = run("inspect", str(path), "--decode", "itch50", "-o", str(out))
    assert proc.returncode == 0, proc.stderr
    assert b"100 not ITCH 5.0" in proc.stderr
    tables = parquet_dir(out)
    assert list(tables) == ["invalid"]
    assert tables["invalid"].column("reason").to_pylist() == ["unknown_type"] * 100


@needs_shared
def test_raw_parquet_has_the_frame_time(tmp_path: Path) -> None:
    name = SHARED_CAPTURES / "Nasdaq.Equities.TotalView.Itch.v5.0/Multiple.Packets.pcap"
    out = tmp_path / "raw"
    proc = run("inspect", str(name), "--decode", "itch50", "--raw", "-o", str(out))
    assert proc.returncode == 3, proc.stderr
    add = parquet_dir(out)["add_order"]
    assert add.schema.names[:3] == ["ts", "session", "seq"]
    assert add.num_rows == 36 and {round(t, 6) for t in add.column("ts").to_pylist()} == {
        1692711038.952562
    }
    assert add.drop_columns(["ts"]).schema == itch50.arrow_schema("A")


def test_listen_live_into_parquet(multicast: None, tmp_path: Path) -> None:
    port = free_port()
    out = tmp_path / "live"
    listener = start_listen(
        *QUICK_END,
        f"{GROUP}:{port}", "--decode", "itch50", "--format", "parquet", "-o", str(out),
        "--idle-timeout", "20",
    )  # fmt: skip
    pub = run(
        "publish", f"{GROUP}:{port}", "--session", SESSION, "--generate", "3000",
        "--request-port", str(port + 1), "--end-of-session-duration", "0.3",
    )  # fmt: skip
    code, err = finish(listener)
    assert pub.returncode == 0, pub.stderr
    assert code == 0, err
    assert "3000 messages decoded to" in err
    expected = itch50.messages_to_arrow(generate_itch(3000), session=SESSION)
    assert parquet_dir(out) == expected
    # a real-looking day: every message decodes, adds name listed tickers
    assert "invalid" not in expected
    names = set(expected["stock_directory"].column("stock").to_pylist())
    assert all(name.isalpha() and name.isupper() for name in names)
    assert set(expected["add_order"].column("stock").to_pylist()) <= names


@pytest.mark.parametrize(
    ("extra", "needle"),
    [
        (["--format", "parquet", "-o", "-"], "not -o -"),
        (["--format", "csv"], "not -o -"),
        (["--format", "parquet", "-o", "taken"], "is a file"),
        (["--format", "binaryfile", "-o", "x.bin"], "not binaryfile"),
    ],
)
def test_bad_outputs_are_one_line_exit_2(
    itch_file: tuple[Path, list[bytes]], extra: list[str], needle: str
) -> None:
    path, _ = itch_file
    (path.parent / "taken").write_text("a file\n")
    proc = run("inspect", str(path), "--decode", "itch50", *extra, cwd=path.parent)
    assert needle in assert_one_line_error(proc)


def test_parquet_without_decode_and_a_used_directory_are_refused(
    itch_file: tuple[Path, list[bytes]], tmp_path: Path
) -> None:
    path, _ = itch_file
    proc = run("inspect", str(path), "--format", "parquet", "-o", str(tmp_path / "d"))
    assert "add --decode itch50" in assert_one_line_error(proc)
    assert (
        run("inspect", str(path), "--decode", "itch50", "-o", str(tmp_path / "d")).returncode == 0
    )
    again = run("inspect", str(path), "--decode", "itch50", "-o", str(tmp_path / "d"))
    assert "already holds add_order.parquet" in assert_one_line_error(again)


def test_without_pyarrow_tables_say_so_and_jsonl_still_works(
    itch_file: tuple[Path, list[bytes]],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    path, messages = itch_file
    for module in ("pyarrow", "pyarrow.parquet", "pyarrow.compute", "pyarrow.csv"):
        monkeypatch.setitem(sys.modules, module, None)
    code = main(["inspect", str(path), "--decode", "itch50", "-o", str(tmp_path / "t")])
    assert code == 2
    assert "pip install 'moldudp64[arrow]'" in capsys.readouterr().err
    assert not (tmp_path / "t").exists()
    out = tmp_path / "m.jsonl"
    assert main(["inspect", str(path), "--decode", "itch50", "-o", str(out)]) == 0
    assert len(out.read_text().splitlines()) == len(messages)


def test_text_format_reads_as_fields(itch_file: tuple[Path, list[bytes]]) -> None:
    path, _ = itch_file
    proc = run("inspect", str(path), "--decode", "itch50", "--format", "text", "-o", "-")
    lines = proc.stdout.decode().splitlines()
    assert proc.returncode == 0 and len(lines) == 5003
    locate = "stock_locate=" + lines[0].split("=")[1].split()[0]
    assert lines[0].split()[:4] == ["-", "1", "S", locate]  # "-": a BinaryFILE's unknown session
    assert "reason=unknown_type" in lines[10]


# --- the sinks in-process: chunking, bounded memory, hostile bytes -------------------------


def test_table_sink_chunks_stay_bounded_and_equal_one_pass(tmp_path: Path) -> None:
    messages = list(generate_itch(10_000, seed=5))
    sink = ItchTableSink(str(tmp_path / "chunked"), chunk_messages=999)
    for start in range(0, len(messages), 250):
        sink.write("S", 1 + start, messages[start : start + 250])
        assert len(sink._lengths) < 999 + 250  # never more than a chunk held
    sink.close()
    assert sink.count == 10_000 and sink.invalid == 0
    assert sum(sink.rows.values()) == 10_000
    assert parquet_dir(tmp_path / "chunked") == {
        name: table.combine_chunks()
        for name, table in itch50.messages_to_arrow(messages, session="S").items()
    }


def test_table_sink_of_several_sessions_keeps_each_rows_session(tmp_path: Path) -> None:
    sink = ItchTableSink(str(tmp_path / "t"), chunk_messages=3)
    add = itch50.encode(itch50.AddOrder(1, 2, 3, 4, "B", 100, "AAPL", 1893300))
    sink.write("ONE", 5, [add, add])
    sink.write("TWO", 9, [add])
    sink.write("ONE", 7, [add])
    sink.close()
    rows = pq.read_table(tmp_path / "t" / "add_order.parquet").to_pylist()
    assert [(r["session"], r["seq"]) for r in rows] == [
        ("ONE", 5),
        ("ONE", 6),
        ("TWO", 9),
        ("ONE", 7),
    ]
    assert rows[0]["price"] == Decimal("189.3300")


@given(
    st.lists(
        st.one_of(st.binary(max_size=60), st.sampled_from(list(generate_itch(40)))), max_size=60
    )
)
@settings(
    max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
def test_hostile_bytes_never_crash_and_are_all_counted(messages: list[bytes]) -> None:
    bad = sum(type(itch50.decode_or_raw(m)) is itch50.RawMessage for m in messages)
    text = io.BytesIO()
    lines = ItchJsonlSink(WholeWrites(text, owned=False), "mem")
    lines.write("S", 1, messages)
    lines.close()
    assert lines.invalid == bad and len(text.getvalue().splitlines()) == len(messages)
    import tempfile

    with tempfile.TemporaryDirectory() as directory:
        sink = open_decoded_sink(directory + "/t", "parquet", "itch50", report=None)
        sink.write("S", 1, messages)
        sink.close()
        assert isinstance(sink, ItchTableSink)
        assert sink.invalid == bad and sum(sink.rows.values()) == len(messages)


def test_broken_stdout_pipe_is_quiet(itch_file: tuple[Path, list[bytes]]) -> None:
    path, _ = itch_file
    cmd = [sys.executable, "-m", "moldudp64", "inspect", str(path), "--decode", "itch50",
           "--format", "jsonl"]  # fmt: skip
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    assert proc.stdout is not None
    proc.stdout.readline()
    proc.stdout.close()
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 141 and b"Traceback" not in err


@needs_shared
def test_readme_worked_example(tmp_path: Path) -> None:
    """Capture -> Parquet directory -> the README's DuckDB line and the example script."""
    name = SHARED_CAPTURES / "Nasdaq.Equities.TotalView.Itch.v5.0/Multiple.Packets.pcap"
    day = tmp_path / "day"
    assert run("inspect", str(name), "--decode", "itch50", "-o", str(day)).returncode == 3
    script = Path(__file__).resolve().parents[2] / "examples" / "itch50_message_rate.py"
    shown = subprocess.run(
        [sys.executable, str(script), str(day)], capture_output=True, check=True, text=True
    ).stdout
    assert "add_order" in shown and "36" in shown
    duckdb = pytest.importorskip("duckdb")
    query = f"SELECT stock, count(*) AS adds FROM '{day}/add_order.parquet' GROUP BY stock"
    assert duckdb.sql(query).fetchall() == [("META", 36)]
