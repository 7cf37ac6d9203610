"""SoupBinTCP rows of benchmarks/run.py (part "soupbintcp", issue 20), over 127.0.0.1.

- ``listen soup://`` recording N small messages to a BinaryFILE from ``serve --soup-port``,
  beside a plain socket reading the same bytes from the same server in the same run (the
  limit: it logs in and reads to the end, parsing nothing); targets: >= 2,000,000
  messages/s and within 2x of the plain read's CPU.
- the server's rate to 1 and to 10 plain readers at once (messages/s over all of them).

Rates are N over the reader's wall time less its fixed cost (start-up, imports, connect,
login: the median of three runs of the same command against a one-message session), so
the table compares the transfer, not the interpreter's start-up.
"""

from __future__ import annotations

import re
import subprocess
import sys
import time
from pathlib import Path

import measure  # beside this file
from moldudp64.bench import Result
from moldudp64.binaryfile import write_binaryfile

#: A plain socket: log in from 1, read to the end (End of Session, then the server's
#: close), count the bytes (heartbeats too), say whether End of Session came last, and
#: send a heartbeat each second (a reader slowed by nine others
#: would otherwise be silent past the server's 15 s). What any reader must at least do.
PLAIN_READ = """
import socket, sys, time
sock = socket.create_connection(("127.0.0.1", int(sys.argv[1])))
sock.sendall(b"\\x00\\x2fL" + b" " * 26 + b"1".rjust(20))
buf = bytearray(1 << 20)
total = 0
tail = b""
beat = time.monotonic() + 1.0
while n := sock.recv_into(buf):
    total += n
    tail = (tail + bytes(buf[max(0, n - 3) : n]))[-3:]
    if time.monotonic() >= beat:
        sock.sendall(b"\\x00\\x01R")
        beat += 1.0
print(total, "ended" if tail == b"\\x00\\x01Z" else "cut")
"""


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


def _fixed_cost(cmd: list[str]) -> tuple[float, float]:
    """Median wall and CPU seconds of ``cmd`` reading a one-message session."""
    runs = [measure.run_measured(cmd, 60) for _ in range(3)]
    return sorted(r.wall for r in runs)[1], sorted(r.cpu for r in runs)[1]


def run_rows(quick: bool, tmp: Path) -> list[Result]:
    """The SoupBinTCP rows."""
    n = 20_000 if quick else 1_000_000
    path = tmp / "soup.bin"
    write_binaryfile(path, (b"A%019d" % i for i in range(n)))  # 20-byte messages
    out = tmp / "soup-out.bin"
    one = tmp / "soup-one.bin"
    write_binaryfile(one, [b"A" * 20])
    listen = [*measure.moldudp64_command(), "listen"]
    plain = [sys.executable, "-c", PLAIN_READ]
    small, small_port = _serve(one)
    try:
        listen_start, listen_cpu = _fixed_cost(
            [*listen, f"soup://127.0.0.1:{small_port}", "-o", str(out)]
        )
        plain_start, plain_cpu = _fixed_cost([*plain, str(small_port)])
    finally:
        small.terminate()
        small.communicate(timeout=30)
    server, port = _serve(path)
    rows: list[Result] = []
    try:
        read = measure.run_measured([*plain, str(port)], 600)
        got = measure.run_measured(
            [*listen, f"soup://127.0.0.1:{port}/BENCH", "-o", str(out), "--format", "binaryfile"],
            600,
        )
        ok = got.code == 0 and out.read_bytes() == path.read_bytes()
        plain_rate = n / max(0.01, read.wall - plain_start)
        rate = n / max(0.01, got.wall - listen_start) if ok else 0.0
        cpu_ratio = got.cpu / max(0.01, read.cpu)
        # Messages per CPU second past the fixed cost: the rate an unloaded core would allow.
        cpu_rate = n / max(0.01, got.cpu - listen_cpu)
        rows.append(
            Result(
                "soupbintcp: plain socket read (the limit)",
                round(plain_rate),
                "messages/s",
                notes={
                    "cpu_s": round(read.cpu, 2),
                    "bytes": read.stdout.strip(),
                    "wall_s": round(read.wall, 2),
                    "fixed_cost_s": round(plain_start, 2),
                    "fixed_cpu_s": round(plain_cpu, 2),
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
                    "cpu_s": round(got.cpu, 2),
                    "cpu_ratio_to_plain": round(cpu_ratio, 2),
                    "messages_per_cpu_s": round(cpu_rate),
                    "peak_rss_mb": round(got.rss_mb, 1),
                    "byte_exact": ok,
                    "fixed_cost_s": round(listen_start, 2),
                    "fixed_cpu_s": round(listen_cpu, 2),
                    "wall_s": round(got.wall, 2),
                    "exit": got.code,
                },
            )
        )
        for clients in (1, 10):
            t0 = time.perf_counter()
            procs = [measure.spawn_measured([*plain, str(port)]) for _ in range(clients)]
            done = [measure.finish_measured(p, r, 600, t0) for p, r in procs]
            wall = max(0.01, max(d.wall for d in done) - plain_start)
            complete = sum(1 for d in done if d.code == 0 and d.stdout.split()[-1:] == ["ended"])
            rows.append(
                Result(
                    f"soupbintcp: serve --soup-port to {clients} client{'s' * (clients > 1)}",
                    round(clients * n / wall),
                    "messages/s",
                    notes={"complete": f"{complete}/{clients}", "per_client": n},
                )
            )
    finally:
        server.terminate()
        server.communicate(timeout=30)
    return rows
