"""How fast ITCH 5.0 decodes: columnar (BinaryFILE -> Arrow tables) and per message.

    python benchmarks/bench_itch50.py [--messages N] [--quick] [--file PATH]

Generates a TotalView-like BinaryFILE of N messages (default 10,000,000; a realistic mix,
mostly A, D, U, E, X, P, with a directory of stocks at the start and rising timestamps),
then measures, each in a fresh process so that its peak RSS is its own:

* columnar: ``itch50.binaryfile_to_arrow(path)``, every table held in memory at the end;
* streamed to Parquet: ``itch50.write_parquet(itch50.iter_binaryfile_batches(path), dir)``
  (zstd, one file per type; memory bounded by a chunk);
* per message: ``itch50.decode()`` over every message of the file (read with
  ``iter_binaryfile``), decode alone timed; the records are not kept.

:func:`run_rows` gives these as benchmark table rows, plus ``moldudp64 inspect --decode
itch50 --format parquet`` on a generated 1,000,000-packet pcap (3 Add Orders a packet)
beside plain ``inspect`` of the same pcap: wall time and peak RSS of each command.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from itertools import islice
from pathlib import Path

import numpy as np

from measure import moldudp64_command, run_measured  # beside this file
from moldudp64 import itch50
from moldudp64.bench import Result, machine_summary

#: Share of each message type in the generated stream (roughly a TotalView day's).
MIX: dict[str, float] = {
    "A": 0.40, "D": 0.37, "U": 0.08, "E": 0.04, "X": 0.02, "F": 0.015, "P": 0.012,
    "I": 0.03, "C": 0.002, "L": 0.001,
}  # fmt: skip
SYMBOLS = [f"S{i:03d}".encode() for i in range(500)] + [b"AAPL", b"MSFT", b"META", b"QQQ"]
MPIDS = [b"UBSS", b"MAXM", b"GSCO", b"NITE"]
START_NS, END_NS = 4 * 3600 * 10**9, 20 * 3600 * 10**9
CHUNK = 1 << 20


def _fill(layout: itch50.Layout, ts: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """``len(ts)`` framed messages (2-byte length + message) of one type, as a uint8 matrix."""
    count = len(ts)
    names, formats, offsets = ["length", "type"], [">u2", "S1"], [0, 2]
    for f in layout.fields:
        if f.kind == "ts":
            names += ["ts_hi", "ts_lo"]
            formats += [">u2", ">u4"]
            offsets += [f.offset + 2, f.offset + 4]
        elif f.kind != "x":
            names.append(f.name)
            formats.append(f">u{f.size}" if f.kind[0] in "up" else f"S{f.size}")
            offsets.append(f.offset + 2)
    dtype = np.dtype({"names": names, "formats": formats, "offsets": offsets,
                      "itemsize": layout.size + 2})  # fmt: skip
    recs = np.zeros(count, dtype=dtype)
    recs["length"] = layout.size
    recs["type"] = layout.message_type.encode()
    recs["ts_hi"] = ts >> 32
    recs["ts_lo"] = ts & 0xFFFFFFFF
    recs["stock_locate"] = rng.integers(1, len(SYMBOLS) + 1, size=count)
    for f in layout.fields[3:]:
        if f.kind == "x":
            continue
        if f.kind == "c":
            values = np.array([b"B", b"S"]) if "buy_sell" in f.name else np.array([b"Y", b"N"])
            recs[f.name] = rng.choice(values, count)
        elif f.kind.startswith("a"):
            pool = MPIDS if f.size == 4 else SYMBOLS
            padded = np.array([s.ljust(f.size) for s in pool])
            recs[f.name] = padded[rng.integers(len(pool), size=count)]
        elif f.kind == "p4":
            recs[f.name] = rng.integers(1, 500_000, size=count) * 100
        elif f.kind == "p8":
            recs[f.name] = rng.integers(1, 10**12, size=count, dtype=np.uint64)
        elif f.kind == "u2":
            recs[f.name] = rng.integers(1, len(SYMBOLS) + 1, size=count)
        elif f.kind == "u4":
            recs[f.name] = rng.integers(1, 2_000, size=count)
        else:
            recs[f.name] = rng.integers(1, 10**10, size=count, dtype=np.uint64)
    return recs.view(np.uint8).reshape(count, layout.size + 2)


def generate(path: str | os.PathLike[str], count: int, seed: int = 1) -> int:
    """Write a TotalView-like BinaryFILE of ``count`` messages; return its size in bytes."""
    rng = np.random.default_rng(seed)
    header = [itch50.encode(itch50.SystemEvent(0, 0, START_NS, "O"))]
    for locate, symbol in enumerate(SYMBOLS, 1):
        header.append(itch50.encode(itch50.StockDirectory(
            locate, 0, START_NS + locate, symbol.decode(), "Q", "N", 100, "N", "C", "Z",
            "P", "N", "N", "2", "N", 0, "N")))  # fmt: skip
    header = header[:count]
    codes = list(MIX)
    weights = np.array([MIX[c] for c in codes])
    sizes = np.array([itch50.LAYOUTS[c].size + 2 for c in codes])
    done = len(header)
    with open(path, "wb") as out:
        out.write(b"".join(len(m).to_bytes(2, "big") + m for m in header))
        while done < count:
            n = min(CHUNK, count - done)
            kinds = rng.choice(len(codes), size=n, p=weights / weights.sum())
            ts = START_NS + (np.arange(done, done + n, dtype=np.int64) * (END_NS - START_NS)
                             // max(count, 1))  # fmt: skip
            framed = sizes[kinds]
            starts = np.cumsum(framed) - framed
            buf = np.zeros(int(framed.sum()), dtype=np.uint8)
            for i, code in enumerate(codes):
                idx = np.flatnonzero(kinds == i)
                if idx.size:
                    rows = _fill(itch50.LAYOUTS[code], ts[idx], rng)
                    window = np.lib.stride_tricks.sliding_window_view(
                        buf, int(sizes[i]), writeable=True
                    )
                    window[starts[idx]] = rows
            out.write(buf.tobytes())
            done += n
    return os.path.getsize(path)


def measure_columnar(path: str) -> dict[str, float]:
    itch50.arrow_schema("A")  # import pyarrow before the clock starts
    start, cpu = time.perf_counter(), time.process_time()
    tables = itch50.binaryfile_to_arrow(path)
    wall, cpu = time.perf_counter() - start, time.process_time() - cpu
    rows = sum(t.num_rows for t in tables.values())
    invalid = tables["invalid"].num_rows if "invalid" in tables else 0
    return {"messages": rows, "seconds": wall, "rate": rows / wall, "cpu_rate": rows / cpu,
            "invalid": invalid}  # fmt: skip


def measure_parquet(path: str) -> dict[str, float]:
    itch50.arrow_schema("A")
    with tempfile.TemporaryDirectory() as out:
        start, cpu = time.perf_counter(), time.process_time()
        rows = sum(itch50.write_parquet(itch50.iter_binaryfile_batches(path), out).values())
        wall, cpu = time.perf_counter() - start, time.process_time() - cpu
    return {"messages": rows, "seconds": wall, "rate": rows / wall, "cpu_rate": rows / cpu}


def measure_per_message(path: str, limit: int) -> dict[str, float]:
    from moldudp64.binaryfile import iter_binaryfile

    decode = itch50.decode
    total = 0
    seconds = cpu = 0.0
    batch: list[bytes] = []
    messages = iter_binaryfile(path)
    while total < limit:
        batch[:] = islice(messages, min(200_000, limit - total))
        if not batch:
            break
        start, cpu_start = time.perf_counter(), time.process_time()
        for m in batch:
            decode(m)
        seconds += time.perf_counter() - start
        cpu += time.process_time() - cpu_start
        total += len(batch)
    return {"messages": total, "seconds": seconds, "rate": total / max(seconds, 1e-9),
            "cpu_rate": total / max(cpu, 1e-9)}  # fmt: skip


def main(argv: list[str] | None = None, *, show: bool = True) -> list[tuple[str, float, float]]:
    """Run the decode benchmarks; print their lines when ``show`` (run.py prints a table)."""
    say = print if show else (lambda *_: None)
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawTextHelpFormatter
    )
    parser.add_argument("--messages", type=int, default=10_000_000, help="messages to generate")
    parser.add_argument("--quick", action="store_true", help="20,000 messages, for tests")
    parser.add_argument("--per-message-limit", type=int, default=10_000_000,
                        help="decode at most this many messages one by one")  # fmt: skip
    parser.add_argument("--file", help="keep the generated BinaryFILE here")
    parser.add_argument(
        "--measure", choices=["columnar", "parquet", "per-message"], help=argparse.SUPPRESS
    )
    args = parser.parse_args(argv)
    if args.measure:  # the child process
        if args.measure == "columnar":
            result = measure_columnar(args.file)
        elif args.measure == "parquet":
            result = measure_parquet(args.file)
        else:
            result = measure_per_message(args.file, args.per_message_limit)
        print(json.dumps(result))
        return []
    count = 20_000 if args.quick else args.messages
    with tempfile.TemporaryDirectory() as tmp:
        path = args.file or str(Path(tmp) / "itch50.bin")
        start = time.perf_counter()
        size = generate(path, count)
        say(f"# {machine_summary()}; load average {os.getloadavg()[0]:.1f}")
        say(f"# generated {count:,} messages ({size / 1e6:,.0f} MB) in "
            f"{time.perf_counter() - start:.1f} s: {path}")  # fmt: skip
        rows = []
        script = os.path.abspath(__file__)
        for label, mode in (("columnar BinaryFILE -> Arrow", "columnar"),
                            ("BinaryFILE -> Parquet directory", "parquet"),
                            ("per-message decode()", "per-message")):  # fmt: skip
            cmd = [sys.executable, script, "--measure", mode, "--file", path,
                   "--per-message-limit", str(args.per_message_limit)]  # fmt: skip
            measured = run_measured(cmd)
            if measured.code != 0:
                raise SystemExit(f"{label} failed (exit {measured.code})")
            result = json.loads(measured.stdout)
            say(f"{label:30s} {result['rate']:>12,.0f} messages/s wall "
                f"({result['cpu_rate']:,.0f} per CPU second; {result['messages']:,} in "
                f"{result['seconds']:.2f} s; peak RSS {measured.rss_mb:,.0f} MB)")  # fmt: skip
            rows.append((label, result["rate"], measured.rss_mb))
        return rows


def inspect_rows(packets: int, tmp: Path) -> list[Result]:
    """``inspect`` and ``inspect --decode itch50 --format parquet`` of one generated pcap."""
    from make_pcap import make_pcap  # beside this file

    pcap = tmp / f"itch-{packets}.pcap"
    messages = make_pcap(str(pcap), packets)
    plain = [*moldudp64_command(), "inspect", str(pcap)]
    decoded = [*plain, "--decode", "itch50", "--format", "parquet", "-o", str(tmp / "pq")]
    rows = []
    for label, cmd in (
        (f"inspect, {packets:,}-packet pcap", plain),
        (f"inspect --decode itch50 -> Parquet, {packets:,} packets", decoded),
    ):
        done = run_measured(cmd)
        if done.code != 0:
            raise SystemExit(f"{label} failed (exit {done.code})")
        rows.append(
            Result(
                label,
                round(done.wall, 3),
                "s",
                notes={
                    "messages": messages,
                    "messages_per_s": round(messages / done.wall),
                    "cpu_s": round(done.cpu, 2),
                    "peak_rss_mb": round(done.rss_mb, 1),
                },
            )
        )
    return rows


def run_rows(quick: bool) -> list[Result]:
    """The rows for benchmarks/run.py: the three decode paths, then the two inspects."""
    rows = [
        Result(label, round(rate), "messages/s", notes={"peak_rss_mb": round(rss, 1)})
        for label, rate, rss in main(["--quick"] if quick else [], show=False)
    ]
    with tempfile.TemporaryDirectory(prefix="bench_itch50_") as tmp:
        rows += inspect_rows(2_000 if quick else 1_000_000, Path(tmp))
    return rows


if __name__ == "__main__":
    if "--inspect" in sys.argv:  # only the inspect rows: --inspect [PACKETS]
        at = sys.argv.index("--inspect")
        count = int(sys.argv[at + 1]) if len(sys.argv) > at + 1 else 1_000_000
        with tempfile.TemporaryDirectory(prefix="bench_itch50_") as tmp:
            for row in inspect_rows(count, Path(tmp)):
                print(row.name, row.value, row.unit, row.notes)
    else:
        main()
