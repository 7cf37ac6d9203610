"""Benchmarks a user can run on their own machine: no root and no compiler needed.

``moldudp64 bench`` prints the table these functions fill; ``benchmarks/run.py`` adds the
parts that need root (live multicast in a private namespace) or a C compiler.
"""

from __future__ import annotations

import asyncio
import os
import platform
import resource
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from itertools import islice
from pathlib import Path

from .capture import CaptureWriter
from .events import Address, MessagesDelivered, Source
from .faults import FaultInjector
from .net import open_unicast_socket, set_receive_buffer
from .receiver import ReceiverConfig, ReceiverCore
from .rerequest import RerequestServerCore
from .wire import Buffer, build_end_of_session, pack_messages

__all__ = [
    "Result",
    "bench_api",
    "bench_core",
    "bench_inspect",
    "generate_messages",
    "machine_summary",
    "peak_rss_mb",
    "print_table",
    "run_quick_suite",
    "write_bench_pcap",
]

SESSION = "BENCH00001"
SERVER: Address = ("127.0.0.1", 1)


@dataclass(slots=True)
class Result:
    """One row of the benchmark table."""

    name: str
    value: float
    unit: str
    target: str = ""
    met: bool | None = None
    notes: dict[str, object] = field(default_factory=dict)


def machine_summary() -> str:
    """One line naming the machine, the Python and whether the C accelerator is in use."""
    from . import wire

    cpu = "unknown cpu"
    try:
        with open("/proc/cpuinfo") as handle:
            for line in handle:
                if line.startswith("model name"):
                    cpu = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    accel = "C accelerator" if wire.c_parse_blocks is not None else "pure Python"
    return (
        f"{platform.node()}: {cpu}, {os.cpu_count()} cores; "
        f"{platform.python_implementation()} {platform.python_version()}; {accel}"
    )


def peak_rss_mb() -> float:
    """Peak resident memory of this process so far, in MB."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def _message(seq: int, length: int, body: bytes) -> bytes:
    return b"A" + seq.to_bytes(8, "big")[: min(8, length - 1)] + body


def generate_messages(count: int, length: int = 30, first: int = 1) -> Iterator[bytes]:
    """``count`` ITCH-shaped messages of ``length`` bytes, each unique by its sequence."""
    body = b"A" * max(0, length - 9)
    for seq in range(first, first + count):
        yield _message(seq, length, body)


class _SyntheticStore:
    """The messages of :func:`generate_messages`, made on demand: a store that costs no memory."""

    def __init__(self, total: int, length: int) -> None:
        self._total = total
        self._length = length
        self._body = b"A" * max(0, length - 9)

    @property
    def first_seq_num(self) -> int:
        return 1

    @property
    def next_seq_num(self) -> int:
        return self._total + 1

    def append(self, message: Buffer) -> int:
        raise NotImplementedError("a synthetic store is read-only")

    def get(self, seq_num: int, max_count: int, max_bytes: int) -> list[bytes]:
        fit = max_bytes // (2 + self._length)
        last = min(self._total, seq_num + min(max_count, fit) - 1)
        return [_message(s, self._length, self._body) for s in range(seq_num, last + 1)]

    def close(self) -> None:
        pass


def _arrivals(
    n_packets: int, per_packet: int, length: int, faults: FaultInjector | None
) -> Iterator[bytes]:
    """The packets of the benchmark stream, made 1,000 at a time (bounded memory), through
    ``faults`` when given."""
    payload = per_packet * (2 + length)
    chunk = 1000
    for start in range(0, n_packets, chunk):
        count = min(chunk, n_packets - start)
        first = start * per_packet + 1
        messages = generate_messages(count * per_packet, length, first)
        for packet in pack_messages(SESSION, first, messages, max_payload=payload):
            if faults is None:
                yield packet
            else:
                yield from faults.process(packet)
    if faults is not None:
        yield from faults.flush()


def bench_core(
    n_packets: int = 200_000,
    *,
    per_packet: int = 10,
    length: int = 30,
    drop: float = 0.0,
    duplicate: float = 0.0,
    reorder: float = 0.0,
    seed: int = 7,
) -> Result:
    """Messages per second through :class:`ReceiverCore`, counting time inside the core.

    With loss, requests are answered at once by a :class:`RerequestServerCore` (outside the
    timed part), so the figure includes gap detection, holding early packets, requests and
    filling. The stream is made as it goes, so memory is the core's, not the input's.
    """
    total = n_packets * per_packet
    lossy = drop or duplicate or reorder
    if lossy:
        faults = FaultInjector(drop=drop, duplicate=duplicate, reorder=reorder, seed=seed)
        server: RerequestServerCore | None = RerequestServerCore(
            SESSION, _SyntheticStore(total, length), rate_limit=None
        )
        config = ReceiverConfig(rerequest_server_addrs=[SERVER], stale_after=None)
    else:
        faults = None
        server = None
        config = ReceiverConfig(stale_after=None)
    arrivals = _arrivals(n_packets, per_packet, length, faults)
    core = ReceiverCore(config)
    receive = core.receive_datagram
    line_a = Source.LINE_A
    delivered = 0
    core_time = 0.0
    now = 0.0
    step = 1 / 200_000
    batch = 64
    perf = time.perf_counter
    while chunk := list(islice(arrivals, batch)):
        t0 = perf()
        for data in chunk:
            receive(data, line_a, now)
        events = core.events_received()
        requests = core.datagrams_to_send(now)
        core_time += perf() - t0
        now += step * len(chunk)
        for event in events:
            if type(event) is MessagesDelivered:
                delivered += len(event.messages)
        if server is not None and requests:
            answers = [server.handle_request(req, ("127.0.0.1", 9), now) for req, _ in requests]
            t0 = perf()
            for answer in answers:
                if answer is not None:
                    receive(answer, Source.RETRANSMISSION, now, SERVER)
            core_time += perf() - t0
    # Let the last answers in (a server answers at most one datagram per request).
    for _ in range(10_000):
        t0 = perf()
        core.handle_timer(now)
        events = core.events_received()
        requests = core.datagrams_to_send(now)
        core_time += perf() - t0
        for event in events:
            if type(event) is MessagesDelivered:
                delivered += len(event.messages)
        if not requests or server is None:
            break
        for req, _ in requests:
            answer = server.handle_request(req, ("127.0.0.1", 9), now)
            if answer is not None:
                t0 = perf()
                receive(answer, Source.RETRANSMISSION, now, SERVER)
                core_time += perf() - t0
    stats = core.stats
    name = "core, in order" if not lossy else (
        f"core, {drop:.0%} loss / {duplicate:.0%} dup / {reorder:.0%} reorder"
    )
    lost_packets = round(n_packets * drop)
    notes: dict[str, object] = {
        "messages": total,
        "delivered": delivered,
        "lost": stats.messages_lost,
        "peak_held_packets": stats.peak_held_packets,
    }
    if lossy:
        sent = sum(stats.requests_sent.values())
        notes["requests_sent"] = sent
        notes["requests_per_lost_packet"] = round(sent / max(1, lost_packets), 2)
    return Result(name, delivered / core_time, "messages/s", notes=notes)


#: Kernel memory one 1472-byte datagram takes in a loopback receive queue (measured, rounded up).
_TRUESIZE = 2560
#: Receive buffer asked for when preloading a socket (root gets it; others get rmem_max).
_PRELOAD_RCVBUF = 512 * 1024 * 1024


def _preloaded(first_seq: int, n_messages: int) -> tuple[socket.socket, socket.socket]:
    """A line socket whose receive queue already holds a session's packets, plus a request
    socket for the client (unused: nothing is lost)."""
    line = open_unicast_socket(("127.0.0.1", 0))
    set_receive_buffer(line, _PRELOAD_RCVBUF, "bench line")
    rereq = open_unicast_socket(("127.0.0.1", 0))
    session = f"B{first_seq:09d}"[:10]
    chunk = 38 * 1000  # whole 1452-byte packets of 36-byte messages, made as they are sent
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as tx:
        dest = line.getsockname()
        for first in range(1, n_messages + 1, chunk):
            count = min(chunk, n_messages + 1 - first)
            for packet in pack_messages(session, first, generate_messages(count, 36, first)):
                tx.sendto(packet, dest)
        tx.sendto(build_end_of_session(session, n_messages + 1), dest)
    return line, rereq


def bench_api(n_messages: int = 2_000_000, *, use_asyncio: bool = False) -> Result:
    """Messages per second a Python ``for`` loop gets from the high-level client.

    The line socket's kernel queue is filled first (loopback unicast, 36-byte ITCH-sized
    messages in 1472-byte packets), then the client is opened on it and timed from open to
    its last message: receive, core, hand-over and iteration with no sender in the way
    (the loop itself ends once the end of session is believed, ``end_confirm`` of quiet
    later: latency, not throughput).
    Where the kernel grants a smaller buffer than the run needs (not root), the run is
    split into rounds of what fits, each a session of its own.
    """
    from .sync.client import MoldUDP64

    probe = open_unicast_socket(("127.0.0.1", 0))
    granted = set_receive_buffer(probe, _PRELOAD_RCVBUF, "bench probe")
    probe.close()
    per_round = max(1000, min(n_messages, granted // _TRUESIZE * 38 * 9 // 10))
    group = ("239.255.0.1", 9)
    count = 0
    elapsed = 0.0
    rounds = 0
    while count < n_messages:
        size = min(per_round, n_messages - count)
        line, rereq = _preloaded(rounds + 1, size)
        got = 0
        if use_asyncio:
            from .asyncio.client import AsyncMoldUDP64

            async def consume(
                line: socket.socket = line, rereq: socket.socket = rereq, size: int = size
            ) -> tuple[int, float]:
                n, last_at = 0, 0.0
                client = AsyncMoldUDP64(group, stale_after=None)
                async with await client.open_with_sockets(line, rereq):
                    async for _msg in client.messages(timeout=30):
                        n += 1
                        if n == size:
                            last_at = time.perf_counter()
                return n, last_at

            t0 = time.perf_counter()
            got, last_at = asyncio.run(consume())
            elapsed += last_at - t0
        else:
            t0 = time.perf_counter()
            last_at = 0.0
            client = MoldUDP64(group, stale_after=None)
            with client.open_with_sockets(line, rereq):
                for _msg in client.messages(timeout=30):
                    got += 1
                    if got == size:
                        last_at = time.perf_counter()
            elapsed += last_at - t0
        if got != size:
            raise RuntimeError(f"benchmark lost messages: {got} of {size} arrived")
        count += got
        rounds += 1
    kind = "asyncio async for" if use_asyncio else "blocking for loop"
    rate = count / elapsed
    return Result(
        f"client API, {kind}",
        rate,
        "messages/s",
        target="" if use_asyncio else ">= 1,500,000",
        met=None if use_asyncio else rate >= 1_500_000,
        notes={"messages": count, "rounds": rounds},
    )


#: UDP port the generated captures use.
BENCH_PORT = 26477


def write_bench_pcap(path: str | os.PathLike[str], n_packets: int, per_packet: int = 10) -> int:
    """Write a pcap of ``n_packets`` MoldUDP64 packets of ``per_packet`` 30-byte messages.

    One session, consecutive sequence numbers, Ethernet/IPv4/UDP frames to port 26477.
    Returns the number of messages.
    """
    payload = per_packet * 32
    src, dst = ("10.1.1.1", 40000), ("233.54.12.111", BENCH_PORT)
    seq = 1
    with CaptureWriter(path) as writer:
        done = 0
        while done < n_packets:
            chunk = min(10_000, n_packets - done)
            messages = generate_messages(chunk * per_packet, 30)
            for i, packet in enumerate(pack_messages(SESSION, seq, messages, payload)):
                writer.write(packet, src, dst, 1_700_000_000.0 + (done + i) * 1e-5)
            seq += chunk * per_packet
            done += chunk
    return n_packets * per_packet


def bench_inspect(n_packets: int, workdir: str | os.PathLike[str]) -> list[Result]:
    """``moldudp64 inspect`` on a generated pcap: packets a second, wall and CPU seconds.

    The command runs as a plain child process; its CPU comes from this process's
    children's resource usage. (``benchmarks/measure.py`` measures it with its own peak
    RSS and against tshark.)
    """
    path = Path(workdir) / "bench.pcap"
    messages = write_bench_pcap(path, n_packets)
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    t0 = time.perf_counter()
    done = subprocess.run(
        [sys.executable, "-m", "moldudp64", "inspect", str(path), "--port", str(BENCH_PORT)],
        capture_output=True,
        check=False,
    )
    wall = time.perf_counter() - t0
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    path.unlink()
    if done.returncode != 0:
        tail = done.stdout.decode(errors="replace")[-500:]
        raise RuntimeError(f"inspect exited {done.returncode}: {tail}")
    cpu = (after.ru_utime + after.ru_stime) - (before.ru_utime + before.ru_stime)
    return [
        Result(
            "inspect, generated pcap",
            n_packets / wall,
            "packets/s",
            target=">= 500,000",
            met=n_packets / wall >= 500_000,
            notes={"packets": n_packets, "messages": messages,
                   "wall_s": round(wall, 2), "cpu_s": round(cpu, 2)},
        )
    ]


def print_table(results: Sequence[Result], *, title: str, write: Callable[[str], object]) -> None:
    """Print results as an aligned table under a title line and the machine summary."""
    write(f"# {title}")
    write(f"# {machine_summary()}")
    width = max(len(r.name) for r in results) if results else 10
    for r in results:
        verdict = "" if r.met is None else ("  MET" if r.met else "  NOT MET")
        target = f"  (target {r.target})" if r.target else ""
        extra = ", ".join(f"{k}={v}" for k, v in r.notes.items())
        value = f"{r.value:>14,.0f}" if abs(r.value) >= 100 else f"{r.value:>14,.2f}"
        write(f"{r.name:<{width}}  {value} {r.unit}{target}{verdict}")
        if extra:
            write(f"{'':<{width}}    {extra}")


def run_quick_suite(scale: float = 1.0) -> list[Result]:
    """The core benchmarks, sized by ``scale`` (1.0: 200,000 packets of 10 messages)."""
    n = max(100, int(200_000 * scale))
    n_api = max(2000, int(2_000_000 * scale))
    runs: list[Callable[[], Result]] = [
        lambda: bench_core(n),
        lambda: bench_core(n, drop=0.05, duplicate=0.01, reorder=0.03),
        lambda: bench_api(n_api),
        lambda: bench_api(n_api, use_asyncio=True),
    ]
    results = []
    for run in runs:
        result = run()
        # Everything is made as it goes, so this process's peak is the library's own.
        result.notes["peak_rss_mb_so_far"] = round(peak_rss_mb(), 1)
        results.append(result)
    results[0].target, results[0].met = ">= 3,000,000", results[0].value >= 3_000_000
    results[1].target, results[1].met = ">= 1,500,000", results[1].value >= 1_500_000
    return results
