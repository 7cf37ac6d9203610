"""The whole benchmark suite, printed as one table with the machine's details.

    python benchmarks/run.py [--quick] [--skip live,inspect,...]

Parts (each can be left out with --skip NAME):

  core       the receiver core alone, messages/s: in order, with 10,000 gaps open (and
             a forged far end of session claimed), and with loss, duplicates and
             reordering; then the api rows
  api        messages/s a Python for loop gets from the blocking and the asyncio client
             (loopback; run with core, or alone when core is skipped)
  inspect    moldudp64 inspect of a generated 1,000,000-packet pcap, beside tshark
  memory     peak memory: a 10,000,000-message BinaryFILE through serve and inspect
  live       a C sender at full blast to moldudp64 listen, beside a C recvmmsg() loop;
             then a generated 3,000,000-message ITCH 5.0 day at full blast to the C loop,
             listen -o and moldudp64 book (its tables checked against book on the file)
             (root for a private network namespace, and a C compiler; the book: arrow extra)
  fairness   a client's share of re-request answers while 8 hosts flood the server
  itch50     TotalView-ITCH 5.0 decoding (columnar, Parquet, per message) and
             inspect --decode itch50 --format parquet beside plain inspect (arrow extra)
  jetstream  the feed through moldudp64 bridge into a local JetStream beside listen -o,
             the stored session read back by listen nats://, and re-request answers from
             the stream beside those from a BinaryFILE (nats-py and nats-server)
  latency    gap-fill latency (p50, p99, max from gap detected to filled) at 50,000
             packets/s with 5% dropped, with the receiver thread and in pull mode
  soupbintcp listen soup:// recording from serve --soup-port beside a plain socket reading
             the same bytes, and the server's rate to 1 and 10 clients (127.0.0.1)
  book       moldudp64 book on a generated 10,000,000-message day beside itch-book's
             itch2parquet convert --tables bbo,trades,depth (when installed), and the book
             engine alone (arrow extra)

Parts whose needs are missing are skipped with the reason.
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import socket
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import measure  # beside this file
from moldudp64 import bench
from moldudp64.bench import Result
from moldudp64.itch50.book_tables import table_files
from moldudp64.netns import enter_private_netns

HERE = Path(__file__).resolve().parent
BUILD = HERE / "build"
GROUP, PORT = "239.9.9.9", 40000


def build_c() -> tuple[Path, Path] | str:
    """Compile the C sender and the recvmmsg() baseline; the reason when that fails."""
    cc = shutil.which("cc") or shutil.which("gcc")
    if cc is None:
        return "no C compiler"
    BUILD.mkdir(exist_ok=True)
    out = []
    for name in ("blast", "mmsg_recv"):
        target = BUILD / name
        done = subprocess.run(
            [cc, "-O2", "-o", str(target), str(HERE / "c" / f"{name}.c")],
            capture_output=True,
            text=True,
            check=False,
        )
        if done.returncode != 0:
            return f"cannot build {name}: {done.stderr.strip()[:200]}"
        out.append(target)
    return out[0], out[1]


def bench_live(
    packets: int, blast: Path, mmsg_recv: Path, tmp: Path, end_confirm: float | None = None
) -> list[Result]:
    """Full-blast multicast: C recvmmsg() loop and ``moldudp64 listen``, each against blast;
    ``end_confirm``: listen's ``--end-confirm`` (None: its default)."""
    results = []
    port = PORT
    for label in ("C recvmmsg loop", "moldudp64 listen"):
        port += 1
        out_file = tmp / "live.bin"
        if label.startswith("C"):
            receiver, report = measure.spawn_measured([str(mmsg_recv), GROUP, str(port), "5"])
            assert receiver.stdout is not None
            receiver.stdout.readline()  # "ready"
        else:
            tuning = [] if end_confirm is None else ["--end-confirm", str(end_confirm)]
            receiver, report = measure.spawn_measured(
                [*measure.moldudp64_command(), "listen", f"{GROUP}:{port}",
                 "--interface", "127.0.0.1", "--output", str(out_file),
                 "--format", "binaryfile", "--idle-timeout", "10", *tuning],
                stderr=subprocess.PIPE,
            )
            assert receiver.stderr is not None
            # sent once listen has joined (its first line), however slow its start-up
            joined = receiver.stderr.readline().decode()
            assert "joined" in joined, joined
        sender = subprocess.run(
            [str(blast), GROUP, str(port), str(packets), "10", "30"],
            capture_output=True,
            text=True,
            check=True,
        )
        done = measure.finish_measured(receiver, report, 120)
        if receiver.stderr is not None:
            receiver.stderr.close()
        code, cpu, rss = done.code, done.cpu, done.rss_mb
        if label.startswith("C"):
            words = done.stdout.split()
            delivered = int(words[words.index("messages") + 1])
        else:
            delivered = out_file.stat().st_size // 32 if out_file.exists() else 0
        results.append(
            Result(
                f"live: {label}",
                delivered,
                "messages",
                notes={
                    "of": packets * 10,
                    "cpu_s": round(cpu, 2),
                    "peak_rss_mb": round(rss, 1),
                    "exit": code,
                    "sender": sender.stdout.strip(),
                },
            )
        )
    c, py = results
    ratio = py.value / c.value if c.value else 0.0
    cpu_ratio = float(str(py.notes["cpu_s"])) / max(0.01, float(str(c.notes["cpu_s"])))
    py.notes["ratio_to_C"] = round(ratio, 4)
    py.notes["cpu_ratio_to_C"] = round(cpu_ratio, 2)
    py.target = "ratio 1.000 and <= 2x C CPU"
    py.met = ratio >= 1.0 and cpu_ratio <= 2.0
    return results


def _same_parquet(a: list[str], b: list[str]) -> bool:
    """Whether two tables, each one or more Parquet files read in order (depth: its parts),
    hold the same rows, compared 65,536 rows at a time (wherever the files or row groups
    were cut)."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    fa, fb = [pq.ParquetFile(p) for p in a], [pq.ParquetFile(p) for p in b]
    if not fa or not fb or any(f.schema_arrow != fa[0].schema_arrow for f in fa + fb):
        return False
    if sum(f.metadata.num_rows for f in fa) != sum(f.metadata.num_rows for f in fb):
        return False

    def slices(files: list[Any]) -> Iterator[Any]:
        held: list[Any] = []
        for f in files:
            for batch in f.iter_batches(65536):
                held.append(batch)
                rows = pa.Table.from_batches(held, schema=files[0].schema_arrow)
                while rows.num_rows >= 65536:
                    yield rows.slice(0, 65536)
                    rows = rows.slice(65536)
                held = rows.to_batches()
        yield pa.Table.from_batches(held, schema=files[0].schema_arrow)

    return all(x.equals(y) for x, y in zip(slices(fa), slices(fb), strict=True))


def _wait_for(path: Path, text: str, proc: subprocess.Popen[bytes], timeout: float = 60) -> None:
    """Until ``text`` is in the file ``path`` (a child's stderr), the child exits, or
    ``timeout`` seconds pass (then RuntimeError)."""
    import time

    deadline = time.monotonic() + timeout
    while text not in path.read_text(errors="replace"):
        if proc.poll() is not None or time.monotonic() > deadline:
            raise RuntimeError(f"no {text!r} from the receiver: {path.read_text()!r}")
        time.sleep(0.02)


def bench_live_itch(
    messages: int, blast: Path, mmsg_recv: Path, tmp: Path, end_confirm: float | None = None
) -> list[Result]:
    """A generated ITCH 5.0 day (``messages``) at full blast (blast -f: MTU-sized packets),
    to the C recvmmsg() loop, ``listen -o`` and ``moldudp64 book``, one after the other
    with the same sender; the live book's tables against ``book`` on the same file.
    ``lost``: messages sent and not delivered (``said_lost``: those the command reported
    lost; a tail lost with the end of session is not known to it: exit 4, idle);
    ``exit_after_sender_s``: how long the receiver took to finish after the sender did
    (which sends end of session for 1 s after its last packet)."""
    from moldudp64.binaryfile import write_binaryfile
    from moldudp64.itch50.generator import generate_day

    day = tmp / "itch-day.bin"
    write_binaryfile(day, generate_day(messages, seed=1))
    offline = tmp / "book-offline"
    done = measure.run_measured([*measure.moldudp64_command(), "book", str(day), "-o",
                                 str(offline)])  # fmt: skip
    if done.code != 0:
        raise RuntimeError(f"book {day} exited {done.code}")
    offline_cpu = done.cpu
    results = []
    port = PORT + 10
    for label in ("C recvmmsg loop", "moldudp64 listen -o", "moldudp64 book"):
        port += 1
        feed = f"{GROUP}:{port}"
        err_path = tmp / "live-itch.err"
        out = tmp / ("live-itch.bin" if label.endswith("-o") else "book-live")
        with open(err_path, "wb") as err:
            if label.startswith("C"):
                receiver, report = measure.spawn_measured([str(mmsg_recv), GROUP, str(port), "5"])
                assert receiver.stdout is not None
                receiver.stdout.readline()  # "ready"
            else:
                command = "book" if label.endswith("book") else "listen"
                extra = [] if command == "book" else ["--format", "binaryfile"]
                receiver, report = measure.spawn_measured(
                    [*measure.moldudp64_command(), command, feed, "--interface", "127.0.0.1",
                     "--output", str(out), *extra, "--idle-timeout", "10",
                     *([] if end_confirm is None else ["--end-confirm", str(end_confirm)])],
                    stderr=err.fileno(),
                )  # fmt: skip
                # sent once it has joined (its first lines), however slow its start-up
                _wait_for(err_path, "joined", receiver)
            sender = subprocess.run(
                [str(blast), GROUP, str(port), "-f", str(day)],
                capture_output=True, text=True, check=True,
            )  # fmt: skip
            done = measure.finish_measured(receiver, report, 600)
        text = err_path.read_text(errors="replace")
        notes: dict[str, object] = {"of": messages}
        if label.startswith("C"):
            words = done.stdout.split()
            delivered = int(words[words.index("messages") + 1])
        elif command == "listen":
            found = re.search(r"(\d+) messages written", text)
            delivered = int(found.group(1)) if found else 0
            lost = re.search(r"(\d+) lost", text)
            notes["said_lost"] = int(lost.group(1)) if lost else "?"
            notes["same_file"] = out.exists() and out.read_bytes() == day.read_bytes()
        else:
            found = re.search(r"(\d+) messages, rows", text)
            delivered = int(found.group(1)) if found else 0
            lost = re.search(r"(\d+) messages lost", text)
            notes["said_lost"] = int(lost.group(1)) if lost else 0
            names = ("bbo", "trades", "depth")
            notes["same_tables"] = all(
                all(os.path.exists(f) for f in table_files(out, n))
                and _same_parquet(table_files(out, n), table_files(offline, n))
                for n in names
            )
        notes.update(
            lost=messages - delivered,
            ratio=round(delivered / messages, 4),
            cpu_s=round(done.cpu, 2),
            peak_rss_mb=round(done.rss_mb, 1),
            exit_after_sender_s=round(done.wall, 1),
            exit=done.code,
            sender=sender.stdout.strip(),
        )
        results.append(Result(f"live: {label}, ITCH day", delivered, "messages", notes=notes))
    _, listen, book = results
    book.notes["cpu_x_listen"] = round(
        float(str(book.notes["cpu_s"])) / max(0.01, float(str(listen.notes["cpu_s"]))), 2
    )
    book.notes["offline_book_cpu_s"] = round(offline_cpu, 2)
    book.target = "ratio 1.0, 0 lost, the tables of book on the file"
    book.met = (
        book.value == messages and book.notes["lost"] == 0 and bool(book.notes["same_tables"])
    )
    return results


def bench_open_gaps(n_gaps: int) -> list[Result]:
    """The core's cost per datagram with ``n_gaps`` gaps open, then with a forged far end
    of session claimed as well (bench_receiver.open_gaps; one run, baselines beside)."""
    import bench_receiver  # beside this file

    gaps = bench_receiver.open_gaps(n_gaps, n_gaps)
    return [
        Result(
            f"core, {n_gaps:,} open gaps: a packet beyond them",
            gaps.beyond_us,
            "us/datagram",
            notes={
                "answer_filling_one_us": round(gaps.answers_us, 2),
                "in_order_us": round(gaps.in_order_us, 2),
                "x_in_order": round(gaps.beyond_us / gaps.in_order_us, 1),
            },
        ),
        Result(
            f"core, {n_gaps:,} open gaps and a forged far end claimed: a packet below it",
            gaps.forged_end_us,
            "us/datagram",
            notes={
                "same_packets_unforged_us": round(gaps.unforged_us, 2),
                "x_unforged": round(gaps.forged_end_us / gaps.unforged_us, 1),
            },
        ),
    ]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawTextHelpFormatter
    )
    parser.add_argument("--quick", action="store_true", help="tiny sizes (for tests)")
    parser.add_argument("--skip", default="", help="comma-separated parts to skip")
    args = parser.parse_args(argv)
    skip = set(filter(None, args.skip.split(",")))
    scale = 0.005 if args.quick else 1.0
    results: list[Result] = []
    skipped: list[str] = []

    # Live multicast first: it must enter the namespace before any thread starts.
    wants_netns = not {"live", "jetstream"} <= skip
    netns_error = enter_private_netns() if wants_netns else "skipped"
    if "core" not in skip:
        results.extend(bench.run_quick_suite(scale))  # core, and the client API ("api")
        results[1:1] = bench_open_gaps(max(200, int(10_000 * scale)))  # beside "in order"
    with tempfile.TemporaryDirectory(prefix="moldudp64-bench-") as tmpdir:
        tmp = Path(tmpdir)
        if "api" not in skip and "core" in skip:
            results.append(bench.bench_api(max(2000, int(2_000_000 * scale))))
            results.append(bench.bench_api(max(2000, int(2_000_000 * scale)), use_asyncio=True))
        if "inspect" not in skip:
            results.extend(measure.bench_inspect(max(1000, int(1_000_000 * scale)), tmp))
        if "memory" not in skip:
            n_memory = max(10_000, int(10_000_000 * scale))
            results.extend(measure.bench_binaryfile_memory(n_memory, tmp))
        if "live" not in skip:
            built = build_c()
            if netns_error is not None:
                skipped.append(f"live: {netns_error}")
            elif isinstance(built, str):
                skipped.append(f"live: {built}")
            else:
                n_live = max(1000, int(300_000 * scale))
                # quick: an end of session believed after 0.3 s of quiet (a test's wait)
                results.extend(bench_live(n_live, *built, tmp, 0.3 if args.quick else None))
                try:
                    import pyarrow  # noqa: F401  (the book's tables)
                except ImportError:
                    skipped.append("live ITCH: the book needs the arrow extra")
                else:
                    n_itch = max(10_000, int(3_000_000 * scale))
                    results.extend(
                        bench_live_itch(n_itch, *built, tmp, 0.3 if args.quick else None)
                    )
        if "fairness" not in skip:
            import bench_server  # beside this file

            results.extend(bench_server.fairness_rows(0.5 if args.quick else 3.0))
        if "itch50" not in skip:
            try:
                import bench_itch50  # beside this file (needs the arrow extra)
            except ImportError as exc:
                skipped.append(f"itch50 decode ({exc})")
            else:
                results.extend(bench_itch50.run_rows(args.quick))
        if "book" not in skip:
            try:
                import bench_book  # beside this file (needs the arrow extra)
            except ImportError as exc:
                skipped.append(f"book ({exc})")
            else:
                results.extend(bench_book.run_rows(args.quick))
                if shutil.which("itch2parquet") is None:
                    skipped.append("itch-book beside book: pip install itch-book")
        if "jetstream" not in skip:
            import bench_jetstream  # beside this file

            rows, notes = bench_jetstream.run_rows(args.quick, netns_error=netns_error)
            results.extend(rows)
            skipped.extend(notes)
        if "soupbintcp" not in skip:
            import bench_soupbintcp  # beside this file

            results.extend(bench_soupbintcp.run_rows(args.quick, tmp))
        if "latency" not in skip:
            import bench_latency  # beside this file

            rows, why = bench_latency.run(
                seconds=0.3 if args.quick else 5.0, rate=50_000, drop=0.05, seed=7
            )
            results.extend(rows)
            if why is not None:
                skipped.append(f"multicast for latency (unicast used): {why}")
    bench.print_table(results, title="moldudp64 benchmarks", write=print)
    for line in skipped:
        print(f"# skipped {line}")
    return 0


if __name__ == "__main__":
    socket.setdefaulttimeout(None)
    sys.exit(main())
