"""Message rate per second by ITCH 5.0 message type, from a Parquet directory.

    python examples/itch50_message_rate.py DIR [--plot rate.png]

DIR is what ``itch50.write_parquet`` wrote (one file per message type). Prints, per type,
the messages, the busiest second and its rate; with ``--plot`` and matplotlib installed,
draws the rate per second through the day, one line per type.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow.parquet as pq

NS = 1_000_000_000
#: A series with fewer points than this is drawn with a marker at each (a single busy
#: second, or a few, would otherwise be a line of zero length: empty axes).
MARKED = 100


def rates(directory: Path) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """Per table: (seconds since midnight, messages in that second), busy seconds only."""
    out = {}
    for path in sorted(directory.glob("*.parquet")):
        if path.stem == "invalid":
            continue
        seconds = pq.read_table(path, columns=["timestamp"])["timestamp"].to_numpy() // NS
        second, count = np.unique(seconds, return_counts=True)
        out[path.stem] = (second, count)
    return out


def clock(second: int) -> str:
    return f"{second // 3600:02d}:{second // 60 % 60:02d}:{second % 60:02d}"


def plot(table: dict[str, tuple[np.ndarray, np.ndarray]], path: Path) -> Any:
    """Draw the rate per second of every type (one line each) to ``path``; the Figure.

    Needs matplotlib (ImportError without it)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(12, 5))
    for name, (second, count) in table.items():
        marker = "o" if len(second) < MARKED else None
        ax.plot(second / 3600, count, label=name, linewidth=0.8, marker=marker, markersize=3)
    ax.set_xlabel("hour of day")
    ax.set_ylabel("messages per second")
    ax.set_yscale("log")
    ax.legend(fontsize="small", ncol=2)
    fig.savefig(path, dpi=120, bbox_inches="tight")
    return fig


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawTextHelpFormatter
    )
    parser.add_argument("directory", type=Path)
    parser.add_argument("--plot", type=Path, help="write a PNG of the rates (needs matplotlib)")
    args = parser.parse_args(argv)
    table = rates(args.directory)
    if not table:
        print(f"no Parquet files in {args.directory}", file=sys.stderr)
        return 2
    try:
        print(f"{'type':28s} {'messages':>12s} {'busiest second':>15s} {'msgs/s':>10s}")
        for name, (second, count) in table.items():
            peak = int(np.argmax(count))
            busiest = clock(int(second[peak]))
            print(f"{name:28s} {int(count.sum()):>12,d} {busiest:>15s} {int(count[peak]):>10,d}")
        sys.stdout.flush()
    except BrokenPipeError:
        # the reader went away (| head): quiet, as SIGPIPE would end the command
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 141
    if args.plot:
        try:
            plot(table, args.plot)
        except ImportError:
            print("matplotlib is not installed: no plot", file=sys.stderr)
            return 0
        print(f"plot: {args.plot}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
