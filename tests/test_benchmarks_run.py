"""benchmarks/run.py, the whole suite's runner, works end to end on a tiny size."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

RUN = Path(__file__).resolve().parents[1] / "benchmarks" / "run.py"


def test_runner_prints_the_table(multicast: None) -> None:
    if shutil.which("cc") is None and shutil.which("gcc") is None:
        pytest.skip("no C compiler for the live part")
    done = subprocess.run(
        # itch50, book and soupbintcp run in the test below (each part runs once)
        [sys.executable, str(RUN), "--quick", "--skip",
         "inspect,memory,latency,itch50,book,soupbintcp"],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    lines = done.stdout.splitlines()
    assert lines[0] == "# moldudp64 benchmarks"
    for name in ("core, in order", "client API, blocking for loop", "live: C recvmmsg loop"):
        assert any(line.startswith(name) for line in lines), name
    listen = next(i for i, line in enumerate(lines) if line.startswith("live: moldudp64 listen"))
    # Every message the C sender sent reached listen's BinaryFILE (a tiny, unhurried run).
    assert "ratio_to_C=1.0," in lines[listen + 1]
    # The ITCH day at full blast: listen -o wrote the file itself, the live book built the
    # tables book builds from the file.
    try:
        import pyarrow  # noqa: F401
    except ImportError:
        assert "# skipped live ITCH: the book needs the arrow extra" in lines
        return
    itch = next(i for i, line in enumerate(lines) if line.startswith("live: moldudp64 listen -o"))
    assert "same_file=True, lost=0, ratio=1.0," in lines[itch + 1], lines[itch + 1]
    book = next(i for i, line in enumerate(lines) if line.startswith("live: moldudp64 book"))
    assert lines[book].endswith("MET"), lines[book]
    assert "same_tables=True, lost=0, ratio=1.0," in lines[book + 1], lines[book + 1]


def test_help_says_what_each_part_measures_without_issue_numbers() -> None:
    done = subprocess.run(
        [sys.executable, str(RUN), "--help"], capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 0
    assert "issue" not in done.stdout.lower()
    for part in ("core", "api", "inspect", "memory", "live", "fairness", "itch50", "jetstream",
                 "latency"):  # fmt: skip
        assert f"\n  {part} " in done.stdout, part


def test_itch50_rows_are_printed_once_in_the_table() -> None:
    """The ITCH part's own progress lines (its rows, before the header) are not printed."""
    pytest.importorskip("pyarrow")
    done = subprocess.run(
        [sys.executable, str(RUN), "--quick", "--skip",
         "core,api,inspect,memory,live,fairness,jetstream,latency"],
        capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-2000:]
    lines = done.stdout.splitlines()
    assert lines[0] == "# moldudp64 benchmarks", lines[:5]
    assert sum(line.startswith("columnar BinaryFILE -> Arrow") for line in lines) == 1
