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
        [sys.executable, str(RUN), "--quick", "--skip", "inspect,memory,latency,itch50"],
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
