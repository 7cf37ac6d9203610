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
    result = module.main(["--quick", "--messages", "5000", "--open-gaps", "200"])
    assert result["in_order_msgs_per_s"] > 0 and result["faulty_msgs_per_s"] > 0
    # the open-gaps row ran with its 200 gaps open and delivered everything (it asserts so)
    assert result["open_gaps"] == 200
    assert result["in_order_us_per_datagram"] > 0
    assert result["open_gaps_beyond_us_per_datagram"] > 0
    assert result["open_gaps_answer_us_per_datagram"] > 0
    assert result["messages_lost"] == 0
    assert result["peak_held_packets"] >= 1
    assert result["requests_per_lost_packet"] >= 1.0
    out = capsys.readouterr().out
    assert "per lost packet" in out and "200 open gaps:" in out


def _load(name: str) -> object:
    path = BENCH.parent / f"{name}.py"
    sys.path.insert(0, str(BENCH.parent))
    try:
        spec = importlib.util.spec_from_file_location(name, path)
        assert spec is not None and spec.loader is not None
        module = importlib.util.module_from_spec(spec)
        sys.modules[name] = module
        spec.loader.exec_module(module)
    finally:
        sys.path.remove(str(BENCH.parent))
    return module


def test_make_pcap_writes_the_session_in_order(tmp_path: Path) -> None:
    """The inspect benchmark's capture: N in-order packets of K messages (a loss fraction
    leaves gaps), readable by the capture reader and the receiver core."""
    from moldudp64.capture import CaptureReader
    from moldudp64.wire import Packet

    make_pcap = _load("make_pcap").make_pcap  # type: ignore[attr-defined]
    path = tmp_path / "small.pcap"
    assert make_pcap(str(path), 500, per_packet=3) == 1500
    with CaptureReader(path) as reader:
        runs = list(reader.batches())
    assert len(runs) == 1
    times, src, dst, payloads = runs[0]
    assert (src, dst[1]) == (("10.0.0.1", 40000), 26477)
    assert [Packet(p).seq_num for p in payloads] == list(range(1, 1501, 3))
    assert times == sorted(times)
    messages = [m for p in payloads for m in Packet(p).messages()]
    assert len(set(messages)) == 1500 and {len(m) for m in messages} == {36}

    lossy = tmp_path / "lossy.pcap"
    make_pcap(str(lossy), 500, loss=0.1)
    with CaptureReader(lossy) as reader:
        kept = [Packet(p).seq_num for _, _, _, ps in reader.batches() for p in ps]
    assert 350 < len(kept) < 500 and kept == sorted(kept)


def test_bench_inspect_small(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """The inspect benchmark runs end to end on small files (figures only, no targets)."""
    bench = _load("bench_inspect")
    code = bench.main(  # type: ignore[attr-defined]
        ["--packets", "2000", "--messages", "5000", "--no-tshark", "--dir", str(tmp_path)]
    )
    out = capsys.readouterr().out
    assert code == 0
    assert "inspect pcap" in out and "packets/s" in out and "exit 0" in out
    assert "inspect pcap, 1% loss" in out and "exit 3" in out
    assert "inspect BinaryFILE" in out and "5,000 messages" in out
    assert "targets not judged" in out
