"""``moldudp64 bench`` end to end as a subprocess, on a tiny size."""

from __future__ import annotations

import subprocess
import sys


def run(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "moldudp64", "bench", *args],
        capture_output=True,
        text=True,
        timeout=120,
    )


def test_bench_prints_the_table() -> None:
    done = run("--scale", "0.002")
    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    assert lines[0] == "# moldudp64 bench"
    assert "cores" in lines[1]
    for name in ("core, in order", "core, 5% loss", "client API, blocking for loop",
                 "client API, asyncio async for", "inspect, generated pcap"):
        assert any(line.startswith(name) for line in lines), name


def test_bench_rejects_a_bad_scale_in_one_line() -> None:
    done = run("--scale", "0")
    assert done.returncode == 2
    assert done.stderr.count("\n") == 1 and "--scale" in done.stderr
    assert "Traceback" not in done.stderr
