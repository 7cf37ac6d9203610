"""Gap-fill latency: how long a lost packet takes to reach the consumer, detection to fill.

    python benchmarks/bench_latency.py [--quick] [--seconds S] [--rate PPS] [--drop P]

A publisher process (sync :class:`~moldudp64.sync.server.Publisher`, one 36-byte message
a packet, paced at ``--rate`` packets a second, default 50,000, a 0.2 ms tick's worth per
``publish_many()``) drops ``--drop`` (default 5%) of its
live packets through a seeded :class:`~moldudp64.faults.FaultInjector` and serves
re-requests from its :class:`~moldudp64.sync.server.RerequestServer` on 127.0.0.1. The
blocking client (:class:`~moldudp64.sync.client.MoldUDP64`, default settings) consumes
with ``for msg in client.messages()``; its ``on_event`` callback timestamps every
:class:`~moldudp64.events.GapDetected` and :class:`~moldudp64.events.GapFilled` as the
consumer sees them. Latency of a fill = its time minus the time its gap was detected.
Reported: count, p50, p99 and max, for the client with its receiver thread and in pull
mode (``receiver_thread=False``). Target (issue 7): p99 under 5 ms.

The feed goes to a 239.x multicast group inside a private network namespace when this
runs as root (``enter_private_netns()``, before any thread or process starts), else to
127.0.0.1 unicast. The publisher is a separate process, as it is in production: it does
not compete with the client for the GIL. ``--quick`` is a tiny run for tests.
"""

from __future__ import annotations

import argparse
import bisect
import multiprocessing
import multiprocessing.connection
import sys
import threading
import time
from collections.abc import Sequence
from typing import Any

from moldudp64.bench import Result, print_table
from moldudp64.events import Address, Event, GapDetected, GapFilled, Source
from moldudp64.faults import FaultInjector
from moldudp64.net import open_unicast_socket
from moldudp64.netns import enter_private_netns
from moldudp64.store import MemoryStore
from moldudp64.sync.client import MoldUDP64
from moldudp64.sync.server import Publisher, RerequestServer
from moldudp64.wire import HEADER_SIZE

SESSION = "LATENCY001"
GROUP = "239.9.9.11"
TARGET_P99_MS = 5.0
MESSAGE = b"A" + bytes(35)  # an ITCH-sized message


def publisher_main(
    conn: multiprocessing.connection.Connection,
    feed: Address,
    rate: float,
    seconds: float,
    drop: float,
    seed: int,
) -> None:
    """The publisher process: serve re-requests, then publish paced, lossy, and end."""
    # The re-request server thread shares this process with the publishing loop: a short
    # switch interval lets it answer between two publishes rather than 5 ms later.
    sys.setswitchinterval(0.0002)
    store = MemoryStore()
    lock = threading.RLock()  # held around every append (here) and every answer (server)
    with (
        Publisher(
            SESSION,
            feed,
            interface_addr="127.0.0.1" if feed[0].startswith("239.") else None,
            unicast=not feed[0].startswith("239."),
            flush_delay=0.0,
            # one message a live packet, published a tick's worth at a time: packing and
            # sending stay cheap enough (about 7 us a packet) to leave the client a core
            max_payload=HEADER_SIZE + 2 + len(MESSAGE),
            heartbeat_interval=0.2,
            end_of_session_duration=1.0,
            store=store,
            faults=FaultInjector(drop=drop, seed=seed),
        ) as pub,
        # answers are full-size packets (a gap of several messages takes one round trip)
        RerequestServer(SESSION, store, ("127.0.0.1", 0), rate_limit=None, lock=lock) as server,
    ):
        conn.send(server.address)
        conn.recv()  # the client is listening
        publish_many = pub.publish_many
        t0 = time.monotonic()
        sent = 0
        total = int(rate * seconds)
        while sent < total:
            due = min(total, int((time.monotonic() - t0) * rate) + 1)
            if due > sent:
                with lock:
                    publish_many([MESSAGE] * (due - sent))
                sent = due
            time.sleep(0.0002)
        elapsed = time.monotonic() - t0
        pub.end_session(wait=True, timeout=10)
        conn.send((sent, elapsed))


def percentile(sorted_values: Sequence[float], q: float) -> float:
    """The ``q`` quantile (0..1) of already sorted values, nearest rank."""
    if not sorted_values:
        return float("nan")
    index = min(len(sorted_values) - 1, max(0, round(q * len(sorted_values) + 0.5) - 1))
    return sorted_values[index]


class GapClock:
    """Timestamps gap events as the consumer sees them and pairs each fill with its gap."""

    def __init__(self) -> None:
        self.starts: list[int] = []  # first_seq of each detected gap, ascending
        self.ranges: list[tuple[int, int, float]] = []
        self.latencies: list[float] = []
        self.unmatched = 0

    def __call__(self, event: Event) -> None:
        now = time.perf_counter()
        kind = type(event)
        if kind is GapDetected:
            assert isinstance(event, GapDetected)
            i = bisect.bisect(self.starts, event.first_seq)
            self.starts.insert(i, event.first_seq)
            self.ranges.insert(i, (event.first_seq, event.last_seq, now))
        elif kind is GapFilled:
            assert isinstance(event, GapFilled)
            i = bisect.bisect(self.starts, event.first_seq) - 1
            if i >= 0 and self.ranges[i][0] <= event.first_seq <= self.ranges[i][1]:
                self.latencies.append(now - self.ranges[i][2])
            else:
                self.unmatched += 1


class WireClock:
    """``on_datagram`` hook: when each request went out and its answer came in (the
    server's share of the latency, seen from the client's socket)."""

    def __init__(self) -> None:
        self.sent: dict[int, float] = {}
        self.rtts: list[float] = []

    def __call__(self, data: bytes, source: Source, addr: Address | None, sent: bool) -> None:
        now = time.perf_counter()
        if len(data) < 20:
            return
        seq = int.from_bytes(data[10:18], "big")
        if sent:
            self.sent.setdefault(seq, now)
        elif source is Source.RETRANSMISSION:
            start = self.sent.pop(seq, None)
            if start is not None:
                self.rtts.append(now - start)


def run_once(
    feed: Address,
    rate: float,
    seconds: float,
    drop: float,
    seed: int,
    receiver_thread: bool,
    breakdown: bool = False,
    receiver_options: dict[str, Any] | None = None,
) -> Result:
    """One publisher process against one client; the latency row."""
    ctx = multiprocessing.get_context("fork")
    parent, child = ctx.Pipe()
    proc = ctx.Process(target=publisher_main, args=(child, feed, rate, seconds, drop, seed))
    proc.start()
    try:
        server = parent.recv()
        clock = GapClock()
        wire = WireClock()
        client = MoldUDP64(
            feed,
            "127.0.0.1" if feed[0].startswith("239.") else "0.0.0.0",
            [server],
            SESSION,
            on_event=clock,
            receiver_thread=receiver_thread,
            on_datagram=wire if breakdown else None,
            receiver_options=receiver_options,
        )
        if feed[0].startswith("239."):
            client.open()
        else:
            line = open_unicast_socket(feed, rcvbuf=8 << 20)
            client.open_with_sockets(line, open_unicast_socket(("127.0.0.1", 0)))
        received = 0
        with client:
            parent.send("go")
            for _ in client.messages(timeout=15):
                received += 1
        sent, elapsed = parent.recv()
    finally:
        proc.join(15)
        if proc.is_alive():
            proc.kill()
    lat = sorted(clock.latencies)
    rtts = sorted(wire.rtts)
    mode = "receiver thread" if receiver_thread else "pull mode"
    p99 = percentile(lat, 0.99) * 1000
    return Result(
        f"gap-fill latency p99, {mode}",
        round(p99, 3),
        "ms",
        target=f"< {TARGET_P99_MS:g} ms",
        met=bool(lat) and p99 < TARGET_P99_MS and client.messages_lost == 0,
        notes={
            "fills": len(lat),
            "gaps": len(clock.ranges),
            "p50_ms": round(percentile(lat, 0.5) * 1000, 3),
            "p99_ms": round(p99, 3),
            "max_ms": round(lat[-1] * 1000, 3) if lat else None,
            "unmatched": clock.unmatched,
            **(
                {
                    "request_rtt_p50_ms": round(percentile(rtts, 0.5) * 1000, 3),
                    "request_rtt_p99_ms": round(percentile(rtts, 0.99) * 1000, 3),
                }
                if breakdown
                else {}
            ),
            "messages": received,
            "of": sent,
            "lost": client.messages_lost,
            "packets_per_s": round(sent / elapsed) if elapsed else 0,
            "drop": drop,
            "feed": "multicast" if feed[0].startswith("239.") else "unicast",
        },
    )


def free_feed(multicast: bool) -> Address:
    """A feed address: the multicast group on a free port, or a free loopback port."""
    probe = open_unicast_socket(("127.0.0.1", 0))
    port = int(probe.getsockname()[1])
    probe.close()
    return (GROUP, port) if multicast else ("127.0.0.1", port)


def run(
    *,
    seconds: float,
    rate: float,
    drop: float,
    seed: int,
    modes: Sequence[bool] = (True, False),
    breakdown: bool = False,
    receiver_options: dict[str, Any] | None = None,
) -> tuple[list[Result], str | None]:
    """Every latency row, and why the feed is unicast (None when multicast)."""
    why = enter_private_netns()
    results = []
    for receiver_thread in modes:
        feed = free_feed(why is None)
        results.append(
            run_once(feed, rate, seconds, drop, seed, receiver_thread, breakdown, receiver_options)
        )
    return results, why


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="a tiny run (for tests)")
    parser.add_argument("--seconds", type=float, default=5.0, help="publishing time per run")
    parser.add_argument("--rate", type=float, default=50_000, help="packets a second")
    parser.add_argument("--drop", type=float, default=0.05, help="live packets dropped")
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument(
        "--breakdown",
        action="store_true",
        help="also time each request to its answer at the client's socket (on_datagram)",
    )
    args = parser.parse_args(argv)
    seconds = 0.3 if args.quick else args.seconds
    results, why = run(
        seconds=seconds,
        rate=args.rate,
        drop=args.drop,
        seed=args.seed,
        breakdown=args.breakdown,
        # quick: the end of session believed after 0.3 s of quiet (not the gaps' latency)
        receiver_options={"end_confirm": 0.3} if args.quick else None,
    )
    print_table(results, title="moldudp64 gap-fill latency", write=print)
    if why is not None:
        print(f"# unicast on 127.0.0.1: {why}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
