"""SoupBinTCP rows of benchmarks/run.py (part "soupbintcp", issue 20), over 127.0.0.1.

- ``listen soup://`` recording N small messages to a BinaryFILE from ``serve --soup-port``,
  beside a plain socket reading the same bytes from the same server in the same run (the
  limit: it logs in and reads to the end, parsing nothing); targets: >= 2,000,000
  messages/s and within 2x of the plain read's CPU.
- a plain socket that also writes what it reads to a file as is: the share of the file
  write in what a recorder costs (no target; context for the CPU ratio).
- the server's rate to 1 and to 10 plain readers at once (messages/s over all of them).

Each reader times itself from before it connects to the end of the session (wall and CPU
seconds of its own process, ``time.process_time``): interpreter start-up and imports are
left out for both, so the rows compare the session, not the start-up (a 1,000,000-message
transfer now takes tens of milliseconds, less than the start-up's noise on a loaded
machine). Plain and listen alternate ``REPEATS`` times; the rows give medians. Each
process's whole CPU (start-up included, from ``wait4``) is in the notes as well.
"""

from __future__ import annotations

import re
import statistics
import subprocess
import sys
from pathlib import Path

import measure  # beside this file
from moldudp64.bench import Result
from moldudp64.binaryfile import write_binaryfile

#: Runs of each reader (medians are reported).
REPEATS = 5

#: A plain socket: log in from 1, read to the end (End of Session, then the server's
#: close), count the bytes (heartbeats too), say whether End of Session came last, and
#: send a heartbeat each second (a reader slowed by nine others would otherwise be
#: silent past the server's 15 s). What any reader must at least do. It prints the bytes,
#: ended/cut, and its start and end (time.time()) and CPU seconds, from before connect.
#: With a second argument it also writes what it reads to that file, as is (what any
#: recorder must at least do: the file write's share of listen's CPU).
PLAIN_READ = """
import socket, sys, time
t0, c0 = time.time(), time.process_time()
out = open(sys.argv[2], "wb", buffering=0) if len(sys.argv) > 2 else None
sock = socket.create_connection(("127.0.0.1", int(sys.argv[1])))
sock.sendall(b"\\x00\\x2fL" + b" " * 26 + b"1".rjust(20))
buf = bytearray(1 << 20)
total = 0
tail = b""
beat = time.monotonic() + 1.0
view = memoryview(buf)
while n := sock.recv_into(buf):
    total += n
    if out is not None:
        out.write(view[:n])
    tail = (tail + bytes(buf[max(0, n - 3) : n]))[-3:]
    if time.monotonic() >= beat:
        sock.sendall(b"\\x00\\x01R")
        beat += 1.0
sock.close()
if out is not None:
    out.close()
t1, c1 = time.time(), time.process_time()
print(total, "ended" if tail == b"\\x00\\x01Z" else "cut", t0, t1, c1 - c0)
"""

#: ``moldudp64 listen ...`` in-process, timed like the plain read: from before its
#: command runs (the modules it uses imported first) to its exit.
LISTEN_TIMED = """
import sys, time
from moldudp64.cli.main import main
import moldudp64.cli.listen, moldudp64.metrics, moldudp64.sync.soupbintcp
t0, c0 = time.time(), time.process_time()
code = main(sys.argv[1:])
t1, c1 = time.time(), time.process_time()
print(code, "-", t0, t1, c1 - c0)
sys.exit(code)
"""


def _timed(out: str) -> tuple[str, float, float, float]:
    """(the reader's word, start, end, CPU seconds) from its last line."""
    words = out.split()
    return words[-4], float(words[-3]), float(words[-2]), float(words[-1])


def _serve(path: Path) -> tuple[subprocess.Popen[bytes], int]:
    proc = subprocess.Popen(
        [*measure.moldudp64_command(), "serve", "--input", str(path), "--session", "BENCH",
         "--soup-port", "0", "--soup-addr", "127.0.0.1"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )  # fmt: skip
    assert proc.stderr is not None
    line = proc.stderr.readline().decode()
    found = re.search(r"on 127\.0\.0\.1:(\d+)", line)
    if not found:
        proc.kill()
        raise RuntimeError(f"serve did not start: {line}")
    return proc, int(found.group(1))


def run_rows(quick: bool, tmp: Path) -> list[Result]:
    """The SoupBinTCP rows."""
    n = 20_000 if quick else 1_000_000
    repeats = 2 if quick else REPEATS
    path = tmp / "soup.bin"
    write_binaryfile(path, (b"A%019d" % i for i in range(n)))  # 20-byte messages
    out = tmp / "soup-out.bin"
    plain = [sys.executable, "-c", PLAIN_READ]
    server, port = _serve(path)
    listen = [
        sys.executable, "-c", LISTEN_TIMED, "listen", f"soup://127.0.0.1:{port}/BENCH",
        "-o", str(out), "--format", "binaryfile",
    ]  # fmt: skip
    rows: list[Result] = []
    try:
        reads, gots, copies = [], [], []
        exact = True
        raw = tmp / "soup-raw.bin"
        for _ in range(repeats):
            reads.append(measure.run_measured([*plain, str(port)], 600))
            raw.unlink(missing_ok=True)
            copies.append(measure.run_measured([*plain, str(port), str(raw)], 600))
            out.unlink(missing_ok=True)
            got = measure.run_measured(listen, 600)
            exact = exact and got.code == 0 and out.read_bytes() == path.read_bytes()
            gots.append(got)
        plain_t = [_timed(r.stdout) for r in reads]
        listen_t = [_timed(g.stdout) for g in gots]
        plain_rate = statistics.median(n / max(1e-6, t1 - t0) for _, t0, t1, _ in plain_t)
        plain_cpu = statistics.median(c for *_, c in plain_t)
        rate = statistics.median(n / max(1e-6, t1 - t0) for _, t0, t1, _ in listen_t)
        cpu = statistics.median(c for *_, c in listen_t)
        rate = rate if exact else 0.0
        cpu_ratio = cpu / max(1e-6, plain_cpu)
        rows.append(
            Result(
                "soupbintcp: plain socket read (the limit)",
                round(plain_rate),
                "messages/s",
                notes={
                    "cpu_s": round(plain_cpu, 4),
                    "bytes": " ".join(reads[-1].stdout.split()[:2]),
                    "wall_s": round(statistics.median(t1 - t0 for _, t0, t1, _ in plain_t), 4),
                    "process_cpu_s": round(statistics.median(r.cpu for r in reads), 3),
                    "runs": repeats,
                },
            )
        )
        copy_t = [_timed(c.stdout) for c in copies]
        copy_cpu = statistics.median(c for *_, c in copy_t)
        rows.append(
            Result(
                "soupbintcp: plain socket read, written to a file as is",
                round(statistics.median(n / max(1e-6, t1 - t0) for _, t0, t1, _ in copy_t)),
                "messages/s",
                notes={
                    "cpu_s": round(copy_cpu, 4),
                    "cpu_ratio_to_plain": round(copy_cpu / max(1e-6, plain_cpu), 2),
                    "runs": repeats,
                },
            )
        )
        rows.append(
            Result(
                "soupbintcp: listen soup:// -o FILE.bin",
                round(rate),
                "messages/s",
                target=">= 2,000,000/s and <= 2x the plain read's CPU",
                met=rate >= 2_000_000 and cpu_ratio <= 2.0,
                notes={
                    "cpu_s": round(cpu, 4),
                    "cpu_ratio_to_plain": round(cpu_ratio, 2),
                    "cpu_ratio_to_plain_written": round(cpu / max(1e-6, copy_cpu), 2),
                    "messages_per_cpu_s": round(n / max(1e-6, cpu)),
                    "wall_s": round(statistics.median(t1 - t0 for _, t0, t1, _ in listen_t), 4),
                    "process_cpu_s": round(statistics.median(g.cpu for g in gots), 3),
                    "process_cpu_ratio": round(
                        statistics.median(g.cpu for g in gots)
                        / max(1e-6, statistics.median(r.cpu for r in reads)),
                        2,
                    ),
                    "peak_rss_mb": round(max(g.rss_mb for g in gots), 1),
                    "byte_exact": exact,
                    "exit": max(g.code for g in gots),
                    "runs": repeats,
                },
            )
        )
        for clients in (1, 10):
            rates, complete = [], 0
            for _ in range(max(1, repeats // 2 + 1)):
                procs = [measure.spawn_measured([*plain, str(port)]) for _ in range(clients)]
                done = [measure.finish_measured(p, r, 600) for p, r in procs]
                times = [_timed(d.stdout) for d in done if d.code == 0]
                complete = sum(1 for t in times if t[0] == "ended")
                if times:
                    span = max(t[2] for t in times) - min(t[1] for t in times)
                    rates.append(complete * n / max(1e-6, span))
            rows.append(
                Result(
                    f"soupbintcp: serve --soup-port to {clients} client{'s' * (clients > 1)}",
                    round(statistics.median(rates)) if rates else 0,
                    "messages/s",
                    notes={
                        "complete": f"{complete}/{clients}",
                        "per_client": n,
                        "runs": len(rates),
                    },
                )
            )
    finally:
        server.terminate()
        server.communicate(timeout=30)
    return rows
