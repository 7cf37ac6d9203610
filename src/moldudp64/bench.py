"""Benchmarks a user can run on their own machine: no root and no compiler needed.

``moldudp64 bench`` prints the table these functions fill; ``benchmarks/run.py`` adds the
parts that need root (live multicast in a private namespace) or a C compiler.
"""

from __future__ import annotations

import os
import platform
import resource
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field

from .events import Address, MessagesDelivered, Source
from .faults import FaultInjector
from .receiver import ReceiverConfig, ReceiverCore
from .rerequest import RerequestServerCore
from .store import MemoryStore
from .wire import pack_messages

__all__ = [
    "Result",
    "bench_core",
    "generate_messages",
    "machine_summary",
    "peak_rss_mb",
    "print_table",
    "run_quick_suite",
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


def generate_messages(count: int, length: int = 30) -> Iterator[bytes]:
    """``count`` ITCH-shaped messages of ``length`` bytes, each unique by its sequence."""
    body = b"A" * max(0, length - 9)
    for seq in range(1, count + 1):
        yield b"A" + seq.to_bytes(8, "big")[: min(8, length - 1)] + body


def _packets(n_packets: int, per_packet: int, length: int) -> list[bytes]:
    payload = per_packet * (2 + length)
    return pack_messages(
        SESSION, 1, generate_messages(n_packets * per_packet, length), max_payload=payload
    )


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

    With loss, requests are answered at once by a :class:`RerequestServerCore` over a
    :class:`MemoryStore` holding the whole stream (outside the timed part), so the figure
    includes gap detection, holding early packets, requests and filling.
    """
    packets = _packets(n_packets, per_packet, length)
    total = n_packets * per_packet
    lossy = drop or duplicate or reorder
    if lossy:
        faults = FaultInjector(drop=drop, duplicate=duplicate, reorder=reorder, seed=seed)
        arrivals: list[bytes] = []
        for packet in packets:
            arrivals.extend(faults.process(packet))
        arrivals.extend(faults.flush())
        store = MemoryStore()
        for message in generate_messages(total, length):
            store.append(message)
        server: RerequestServerCore | None = RerequestServerCore(
            SESSION, store, rate_limit=None
        )
        config = ReceiverConfig(rerequest_server_addrs=[SERVER], stale_after=None)
    else:
        arrivals = packets
        server = None
        config = ReceiverConfig(stale_after=None)
    del packets
    core = ReceiverCore(config)
    receive = core.receive_datagram
    line_a = Source.LINE_A
    delivered = 0
    core_time = 0.0
    now = 0.0
    step = 1 / 200_000
    batch = 64
    perf = time.perf_counter
    for start in range(0, len(arrivals), batch):
        chunk = arrivals[start : start + batch]
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


def print_table(results: Sequence[Result], *, title: str, write: Callable[[str], object]) -> None:
    """Print results as an aligned table under a title line and the machine summary."""
    write(f"# {title}")
    write(f"# {machine_summary()}")
    width = max(len(r.name) for r in results) if results else 10
    for r in results:
        verdict = "" if r.met is None else ("  MET" if r.met else "  NOT MET")
        target = f"  (target {r.target})" if r.target else ""
        extra = ", ".join(f"{k}={v}" for k, v in r.notes.items())
        write(f"{r.name:<{width}}  {r.value:>14,.0f} {r.unit}{target}{verdict}")
        if extra:
            write(f"{'':<{width}}    {extra}")


def run_quick_suite(scale: float = 1.0) -> list[Result]:
    """The core benchmarks, sized by ``scale`` (1.0: 200,000 packets of 10 messages)."""
    n = max(100, int(200_000 * scale))
    results = [
        bench_core(n),
        bench_core(n, drop=0.05, duplicate=0.01, reorder=0.03),
    ]
    results[0].target, results[0].met = ">= 3,000,000", results[0].value >= 3_000_000
    results[1].target, results[1].met = ">= 1,500,000", results[1].value >= 1_500_000
    return results
