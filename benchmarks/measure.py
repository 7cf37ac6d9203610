"""Process measurement for the benchmarks: a command's exit code, wall and CPU seconds
and its own peak RSS (a small launcher forks it and reads ``wait4``), and the benchmarks
that need it (``inspect`` against tshark, peak memory of ``inspect`` and ``serve``).

Kept out of the runtime package: ``moldudp64 bench`` runs ``inspect`` as a plain child.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from moldudp64.bench import BENCH_PORT, SESSION, Result, generate_messages, write_bench_pcap
from moldudp64.binaryfile import write_binaryfile
from moldudp64.wire import RetransmissionPacket


@dataclass(slots=True)
class Measured:
    """What a child process took: exit code, wall and CPU seconds, peak RSS, its output."""

    code: int
    wall: float
    cpu: float
    rss_mb: float
    stdout: str


#: Runs a command and writes its exit code, CPU seconds and peak RSS (KiB) to a file. A
#: fresh, small process forks the command: a child forked from a large parent would report
#: the parent's peak RSS (Linux carries the high-water mark across fork and exec).
_LAUNCHER = """
import json, os, signal, sys
out, cmd = sys.argv[1], sys.argv[2:]
pid = os.fork()
if pid == 0:
    try:
        os.execvp(cmd[0], cmd)
    finally:
        os._exit(127)
for sig in (signal.SIGINT, signal.SIGTERM):
    signal.signal(sig, lambda signum, frame: os.kill(pid, signum))
while True:
    try:
        _, status, ru = os.wait4(pid, 0)
        break
    except InterruptedError:
        pass
with open(out, "w") as f:
    json.dump([os.waitstatus_to_exitcode(status), ru.ru_utime + ru.ru_stime, ru.ru_maxrss], f)
"""


def spawn_measured(
    cmd: Sequence[str], *, stdout: int | None = subprocess.PIPE, stderr: int | None = None
) -> tuple[subprocess.Popen[bytes], Path]:
    """Start ``cmd`` under the measuring launcher; finish with :func:`finish_measured`."""
    fd, name = tempfile.mkstemp(prefix="moldudp64-measure-")
    os.close(fd)
    proc = subprocess.Popen(
        [sys.executable, "-c", _LAUNCHER, name, *cmd],
        stdout=stdout,
        stderr=subprocess.DEVNULL if stderr is None else stderr,
    )
    return proc, Path(name)


def finish_measured(
    proc: subprocess.Popen[bytes], report: Path, timeout: float = 600.0, t0: float | None = None
) -> Measured:
    """Wait for a command started by :func:`spawn_measured`; what it took."""
    start = time.perf_counter() if t0 is None else t0
    out = b""
    try:
        if proc.stdout is not None:
            out = proc.stdout.read()
        proc.wait(timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()
    wall = time.perf_counter() - start
    try:
        code, cpu, rss_kib = json.loads(report.read_text() or "null") or (proc.returncode, 0, 0)
    finally:
        report.unlink(missing_ok=True)
    return Measured(int(code), wall, float(cpu), rss_kib / 1024, out.decode(errors="replace"))


def run_measured(cmd: Sequence[str], timeout: float = 600.0) -> Measured:
    """Run ``cmd`` to completion: exit code, wall and CPU seconds, its own peak RSS, output."""
    t0 = time.perf_counter()
    proc, report = spawn_measured(cmd)
    return finish_measured(proc, report, timeout, t0)


def moldudp64_command() -> list[str]:
    """The moldudp64 command run by this interpreter."""
    return [sys.executable, "-m", "moldudp64"]


def bench_inspect(n_packets: int, workdir: str | os.PathLike[str]) -> list[Result]:
    """``moldudp64 inspect`` on a generated pcap, and tshark on the same file when present."""
    path = Path(workdir) / "bench.pcap"
    messages = write_bench_pcap(path, n_packets)
    ours = run_measured([*moldudp64_command(), "inspect", str(path), "--port", str(BENCH_PORT)])
    if ours.code != 0:
        raise RuntimeError(f"inspect exited {ours.code}: {ours.stdout[-500:]}")
    result = Result(
        "inspect, generated pcap",
        n_packets / ours.wall,
        "packets/s",
        target=">= 500,000",
        met=n_packets / ours.wall >= 500_000,
        notes={
            "packets": n_packets,
            "messages": messages,
            "wall_s": round(ours.wall, 2),
            "cpu_s": round(ours.cpu, 2),
            "peak_rss_mb": round(ours.rss_mb, 1),
        },
    )
    results = [result]
    tshark = shutil.which("tshark")
    if tshark is not None:
        theirs = run_measured(
            [tshark, "-r", str(path), "-d", f"udp.port=={BENCH_PORT},moldudp64",
             "-T", "fields", "-e", "moldudp64.sequence"]
        )
        rows = theirs.stdout.count("\n")
        ratio = theirs.wall / ours.wall
        results.append(
            Result(
                "tshark, same pcap",
                n_packets / theirs.wall,
                "packets/s",
                notes={"rows": rows, "wall_s": round(theirs.wall, 2),
                       "peak_rss_mb": round(theirs.rss_mb, 1)},
            )
        )
        result.notes["x_tshark"] = round(ratio, 1)
        result.target = ">= 500,000 and >= 20x tshark"
        result.met = bool(result.met) and ratio >= 20
    path.unlink()
    return results


def bench_binaryfile_memory(n_messages: int, workdir: str | os.PathLike[str]) -> list[Result]:
    """Peak memory of ``inspect`` and ``serve`` on a BinaryFILE of ``n_messages`` messages.

    ``serve`` is asked for 2,000 random ranges across the whole file over loopback; the
    answers are counted. Both must stay under 100 MB whatever the file size.
    """
    path = Path(workdir) / "day.bin"
    write_binaryfile(path, generate_messages(n_messages, 30))
    results = []
    ours = run_measured([*moldudp64_command(), "inspect", str(path)])
    results.append(
        Result(
            "inspect, BinaryFILE: peak RSS",
            ours.rss_mb,
            "MB",
            target="< 100",
            met=ours.code == 0 and ours.rss_mb < 100,
            notes={"messages": n_messages, "wall_s": round(ours.wall, 2), "exit": ours.code},
        )
    )
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    proc, report = spawn_measured(
        [*moldudp64_command(), "serve", "--input", str(path), "--session", SESSION,
         "--port", str(port), "--bind", "127.0.0.1", "--duration", "60"],
        stdout=subprocess.DEVNULL,
    )
    answers = 0
    requests = 2000
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.settimeout(0.2)
        ready = False
        deadline = time.monotonic() + 60
        while not ready and time.monotonic() < deadline and proc.poll() is None:
            sock.sendto(RetransmissionPacket(SESSION, 1, 1).build(), ("127.0.0.1", port))
            with contextlib.suppress(TimeoutError, ConnectionRefusedError):
                ready = bool(sock.recv(65536))
        step = max(1, n_messages // requests)
        t0 = time.perf_counter()
        for i in range(requests):
            seq = 1 + (i * step * 7919) % max(1, n_messages - 100)
            sock.sendto(RetransmissionPacket(SESSION, seq, 100).build(), ("127.0.0.1", port))
            try:
                if sock.recv(65536):
                    answers += 1
            except (TimeoutError, ConnectionRefusedError):
                pass
        answer_seconds = time.perf_counter() - t0
    proc.send_signal(signal.SIGINT)  # passed on to serve, which exits cleanly
    served = finish_measured(proc, report, 30)
    results.append(
        Result(
            "serve, BinaryFILE: peak RSS",
            served.rss_mb,
            "MB",
            target="< 100",
            met=served.rss_mb < 100 and answers == requests,
            notes={"messages": n_messages, "answers": f"{answers}/{requests}",
                   "answers_per_s": round(answers / answer_seconds)},
        )
    )
    path.unlink()
    return results
