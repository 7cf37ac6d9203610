"""The receiver benchmark runs (tiny) and its faulty run recovers every message."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import pytest

BENCH = Path(__file__).resolve().parent.parent / "benchmarks" / "bench_receiver.py"


def test_bench_receiver_quick(capsys: pytest.CaptureFixture[str]) -> None:
    spec = importlib.util.spec_from_file_location("bench_receiver", BENCH)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules["bench_receiver"] = module
    spec.loader.exec_module(module)
    result = module.main(["--quick", "--messages", "5000"])
    assert result["in_order_msgs_per_s"] > 0 and result["faulty_msgs_per_s"] > 0
    assert result["messages_lost"] == 0
    assert result["peak_held_packets"] >= 1
    assert result["requests_per_lost_packet"] >= 1.0
    assert "per lost packet" in capsys.readouterr().out
