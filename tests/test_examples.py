"""The scripts in examples/ run as the README shows them, end to end."""

from __future__ import annotations

import importlib.util
import os
import subprocess
import sys
from pathlib import Path
from types import ModuleType

import pytest

from moldudp64 import itch50

EXAMPLES = Path(__file__).resolve().parents[1] / "examples"
SRC = str(Path(itch50.__file__).resolve().parents[1])
T = 9 * 3600 * 10**9 + 30 * 60 * 10**9  # 09:30:00 in ns since midnight


def load(name: str) -> ModuleType:
    spec = importlib.util.spec_from_file_location(name, EXAMPLES / f"{name}.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def parquet_day(directory: Path, seconds: int) -> Path:
    """A Parquet directory of add orders spread over ``seconds`` and one delete."""
    messages = [
        itch50.encode(itch50.AddOrder(1, 0, T + i * (seconds * 10**9 // 50), i, "B", 1, "A", 1))
        for i in range(50)
    ]
    messages.append(itch50.encode(itch50.OrderDelete(1, 0, T + 10**6, 1)))
    itch50.write_parquet(itch50.messages_to_arrow(messages), directory)
    return directory


def test_message_rate_output_into_a_closed_pipe_is_quiet(tmp_path: Path) -> None:
    """`... | head` that has gone: no BrokenPipeError traceback, exit 141 as SIGPIPE would."""
    day = parquet_day(tmp_path / "pq", seconds=5)
    proc = subprocess.Popen(
        [sys.executable, str(EXAMPLES / "itch50_message_rate.py"), str(day)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        env={**os.environ, "PYTHONPATH": SRC},
    )
    assert proc.stdout is not None
    proc.stdout.close()  # the reader is gone before the script writes a line
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 141, err
    assert b"Traceback" not in err and b"BrokenPipeError" not in err


@pytest.mark.parametrize("seconds", [1, 600])
def test_message_rate_plot_shows_data_within_one_second(tmp_path: Path, seconds: int) -> None:
    """Every series is visible: one of a single busy second is drawn as a marker, not as a
    line of zero length on empty axes."""
    pytest.importorskip("matplotlib")  # in the [test] extra; never skipped in CI
    import matplotlib.pyplot as plt

    script = load("itch50_message_rate")
    day = parquet_day(tmp_path / "pq", seconds)
    plt.close("all")
    assert script.main([str(day), "--plot", str(tmp_path / "rate.png")]) == 0
    assert (tmp_path / "rate.png").stat().st_size > 0
    fig = plt.gcf()  # the figure main() drew
    lines = fig.axes[0].get_lines()
    assert {line.get_label() for line in lines} == {"add_order", "order_delete"}
    for line in lines:
        points = len(line.get_xdata())
        assert points >= 2 or line.get_marker() not in (None, "None", "", " "), line.get_label()
    plt.close("all")
