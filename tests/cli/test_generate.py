"""``moldudp64 generate itch50`` and the data ``moldudp64 demo`` leaves: the README's walk
from the demo to a Parquet table, run command by command."""

from __future__ import annotations

import importlib.util
import re
import shlex
import subprocess
import sys
from pathlib import Path

import pyarrow.parquet as pq

from cli_helpers import assert_one_line_error, run
from moldudp64 import itch50
from moldudp64.binaryfile import iter_binaryfile, write_binaryfile
from moldudp64.cli import generate_itch
from moldudp64.itch50.generator import generate_day

README = Path(__file__).resolve().parents[2] / "README.md"


def test_generate_writes_the_seeded_day_as_a_binaryfile(tmp_path: Path) -> None:
    path = tmp_path / "day.bin"
    proc = run("generate", "itch50", "-o", str(path), "--messages", "5000", "--seed", "3")
    assert proc.returncode == 0, proc.stderr
    assert list(iter_binaryfile(path)) == list(generate_day(5000, seed=3))
    assert b"5000 messages of a TotalView-ITCH 5.0 day (seed 3) written to" in proc.stderr
    again = tmp_path / "again.bin"
    write_binaryfile(again, generate_day(5000, seed=3))
    assert path.read_bytes() == again.read_bytes()
    stdout = run("generate", "itch50", "-o", "-", "--messages", "5000", "--seed", "3")
    assert stdout.returncode == 0 and stdout.stdout == path.read_bytes()
    few = run("generate", "itch50", "-o", str(path), "--messages", "300", "--stocks", "7")
    assert few.returncode == 0, few.stderr
    kinds = [chr(m[0]) for m in iter_binaryfile(path)]
    assert len(kinds) == 300 and kinds.count("R") == 7


def test_publish_and_demo_send_the_generated_day() -> None:
    assert list(generate_itch(2000, seed=5)) == list(generate_day(2000, seed=5))


def test_generate_refuses_bad_arguments(tmp_path: Path) -> None:
    line = assert_one_line_error(run("generate", "itch50", "-o", str(tmp_path / "no" / "x.bin")))
    assert "no/x.bin" in line
    assert_one_line_error(run("generate", "itch50", "-o", "x.bin", "--messages", "0"))
    assert_one_line_error(run("generate", "csv", "-o", "x.bin"))
    assert_one_line_error(run("generate", "itch50"))


def test_demo_refuses_a_directory_that_is_a_file(tmp_path: Path) -> None:
    (tmp_path / "taken").write_text("x")
    line = assert_one_line_error(run("demo", "--loopback", "--dir", str(tmp_path / "taken")))
    assert "--dir" in line and "taken is a file" in line


def readme_walk() -> list[str]:
    """The commands of the README's block with ``moldudp64 demo --dir`` (after its pip line)."""
    blocks = re.findall(r"```sh\n(.*?)```", README.read_text(), flags=re.S)
    (block,) = [b for b in blocks if "\nmoldudp64 demo --dir" in b]
    commands = []
    for line in block.splitlines():
        line = re.sub(r"\s+#.*$", "", line) if not line.startswith("python") else line
        commands += [part.strip() for part in line.split("&&")]
    return commands


def test_readme_walk_from_the_demo_to_parquet(tmp_path: Path) -> None:
    """demo -> inspect -> Parquet -> pyarrow (and DuckDB when it is installed)."""
    cwd = tmp_path
    ran = []
    for command in readme_walk():
        words = shlex.split(command)
        if words[0] == "pip":  # run from the clone: the extras the block needs
            assert words == ["pip", "install", ".[duckdb]"], command
        elif words[0] == "cd":
            cwd = cwd / words[1]
        elif words[0] == "moldudp64":
            proc = run(*words[1:], cwd=cwd, timeout=120)
            assert proc.returncode == 0, (command, proc.stderr.decode())
            ran.append(words[1])
        elif words[:2] == ["python", "-c"] and importlib.util.find_spec("duckdb"):
            shown = subprocess.run([sys.executable, "-c", words[2]], cwd=cwd, check=True,
                                   capture_output=True, text=True).stdout  # fmt: skip
            assert "shares" in shown
    assert ran == ["demo", "inspect", "inspect"]
    # the Parquet tables hold the day the demo delivered, all of it, every message decoded
    day = itch50.binaryfile_to_arrow(cwd / "day.NASDAQ_ITCH50")
    tables = {p.stem: pq.read_table(p) for p in (cwd / "day").glob("*.parquet")}
    assert tables.keys() == day.keys() and "invalid" not in tables
    for name, table in tables.items():
        assert table.equals(day[name]), name
    assert tables["stock_directory"].num_rows == 500
    trades = tables["trade"].group_by("stock").aggregate([("shares", "sum")])
    assert trades.num_rows > 100
    # the capture holds the same session, its gaps recovered from the re-request answers
    whole = run("inspect", "capture.pcap", "--decode", "itch50", "-o", "fromcap", cwd=cwd)
    assert whole.returncode == 0, whole.stderr
    add = pq.read_table(cwd / "fromcap" / "add_order.parquet").drop_columns(["session"])
    assert add.equals(tables["add_order"].drop_columns(["session"]))
