"""``moldudp64 inspect`` on a big capture, against tshark, and its peak memory.

    python benchmarks/bench_inspect.py [--quick] [--packets N] [--messages N] [--dir DIR]

1. Writes a pcap of ``--packets`` (1,000,000; 100,000 with --quick) in-order packets of
   three 36-byte messages, one session (``benchmarks/make_pcap.py``).
2. Times ``python -m moldudp64 inspect FILE`` as a child process: packets per second over
   the wall time (interpreter start included), CPU seconds, and peak RSS (``os.wait4``).
3. Times ``tshark -r FILE -d udp.port==PORT,moldudp64 -T fields -e moldudp64.sequence``
   on the same file when tshark is installed, and prints how many times faster inspect is.
4. The same with 1% of the packets left out (gaps: every packet waits in the core until the
   loss grace passes), for the slow path's figure; inspect exits 3 (gaps remain).
5. Writes a BinaryFILE of ``--messages`` (10,000,000; 1,000,000 with --quick) messages and
   reports inspect's time and peak RSS on it.

Targets (issue 7): at least 500,000 packets/s, at least 20x tshark, peak RSS under 100 MB.
"""

from __future__ import annotations

import argparse
import shutil
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from make_pcap import PORT, make_pcap
from measure import run_measured  # beside this file
from moldudp64.bench import machine_summary
from moldudp64.binaryfile import BinaryFileWriter


@dataclass(frozen=True)
class Run:
    """One child process: its command, wall and CPU seconds, peak RSS and exit status."""

    command: list[str]
    wall: float
    cpu: float
    peak_rss_mb: float
    status: int


def run_child(command: list[str]) -> Run:
    """Run ``command`` and measure it (its own peak RSS, whatever this process holds)."""
    done = run_measured(command)
    return Run(command, done.wall, done.cpu, done.rss_mb, done.code)


def inspect_command(path: Path) -> list[str]:
    """The command line timed: the package as installed for this interpreter."""
    return [sys.executable, "-m", "moldudp64", "inspect", str(path)]


def tshark_command(path: Path, tshark: str) -> list[str]:
    """tshark decoding every packet's MoldUDP64 sequence number, the nearest equivalent."""
    return [
        tshark, "-r", str(path), "-d", f"udp.port=={PORT},moldudp64",
        "-T", "fields", "-e", "moldudp64.sequence",
    ]  # fmt: skip


def write_binaryfile(path: Path, messages: int) -> None:
    """``messages`` ITCH-shaped 36-byte messages, written in batches."""
    block = [b"A" + i.to_bytes(8, "big") + bytes(27) for i in range(10_000)]
    with BinaryFileWriter(path) as writer:
        left = messages
        while left > 0:
            writer.write_many(block[: min(left, len(block))])
            left -= len(block)


def show(label: str, run: Run, extra: str = "") -> None:
    """One result line, and the exact command."""
    print(
        f"{label:<28} {run.wall:7.2f} s wall  {run.cpu:6.2f} s CPU  "
        f"peak RSS {run.peak_rss_mb:6.1f} MB  exit {run.status}  {extra}"
    )
    print(f"{'':<28} $ {' '.join(run.command)}")


def main(argv: list[str] | None = None) -> int:
    """Run the benchmark and print the figures; exit 1 when a target is missed."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--quick", action="store_true", help="small sizes (a smoke test)")
    parser.add_argument("--packets", type=int, default=None)
    parser.add_argument("--messages", type=int, default=None, help="BinaryFILE messages")
    parser.add_argument("--dir", default=None, help="where to write the files (kept)")
    parser.add_argument("--no-tshark", action="store_true")
    args = parser.parse_args(argv)
    packets = args.packets or (100_000 if args.quick else 1_000_000)
    messages = args.messages or (1_000_000 if args.quick else 10_000_000)

    print(machine_summary())
    with tempfile.TemporaryDirectory(prefix="bench_inspect_") as tmp:
        where = Path(args.dir) if args.dir else Path(tmp)
        where.mkdir(parents=True, exist_ok=True)
        pcap = where / f"inspect-{packets}.pcap"
        started = time.perf_counter()
        make_pcap(str(pcap), packets)
        print(
            f"wrote {pcap} ({packets} packets, {pcap.stat().st_size / 1e6:.0f} MB) "
            f"in {time.perf_counter() - started:.1f} s"
        )
        ok = True
        ours = run_child(inspect_command(pcap))
        rate = packets / ours.wall
        show("inspect pcap", ours, f"{rate:,.0f} packets/s")
        ok &= ours.status == 0 and rate >= 500_000 and ours.peak_rss_mb < 100
        tshark = None if args.no_tshark else shutil.which("tshark")
        if tshark is not None:
            theirs = run_child(tshark_command(pcap, tshark))
            ratio = theirs.wall / ours.wall
            show("tshark", theirs, f"{packets / theirs.wall:,.0f} packets/s")
            print(f"inspect is {ratio:.1f}x tshark (target 20x)")
            ok &= ratio >= 20
        else:
            print("tshark: not installed, no comparison")

        lossy = where / f"inspect-{packets}-loss.pcap"
        make_pcap(str(lossy), packets, loss=0.01)
        gaps = run_child(inspect_command(lossy))
        show("inspect pcap, 1% loss", gaps, f"{packets / gaps.wall:,.0f} packets/s (no target)")
        ok &= gaps.status == 3 and gaps.peak_rss_mb < 100  # exit 3: gaps remain
        if args.dir is None:
            lossy.unlink()

        binary = where / f"inspect-{messages}.bin"
        write_binaryfile(binary, messages)
        big = run_child(inspect_command(binary))
        show(
            "inspect BinaryFILE",
            big,
            f"{messages:,} messages, {messages / big.wall:,.0f} messages/s",
        )
        ok &= big.status == 0 and big.peak_rss_mb < 100
        if args.dir is None:
            pcap.unlink()
            binary.unlink()
    if args.quick or packets < 1_000_000:
        print("(sizes below the issue's: figures for a smoke test, targets not judged)")
        return 0
    print("targets met" if ok else "targets NOT met")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
