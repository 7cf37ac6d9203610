"""Messages per second through the receiver core, in order and over a faulty line.

    python benchmarks/bench_receiver.py [--quick] [--messages N]

Two runs over the same ITCH-sized messages packed into 1452-byte packets:

- in order: every packet once, on line A (the fast path); then on lines A and B, every
  packet on both (B one packet behind: each B copy is a duplicate to drop);
- faulty: 5% of live packets dropped, 1% duplicated, 3% reordered (the seeded
  :class:`~moldudp64.faults.FaultInjector`), gaps recovered from a real
  :class:`~moldudp64.rerequest.RerequestServerCore` whose answers arrive 1 ms (100 packets)
  later on the simulated clock.

- open gaps: the cost per datagram with 10,000 gaps open (every other packet of 20,000
  lost, no answer yet), for live packets beyond the gaps and for the answers that fill
  them, next to the in-order cost per datagram of the same one-message packets; and for
  the 1,000 live packets that follow two forged ends of session 1,000 beyond everything
  held (claimed all along), beside the same packets without them, in the same run.

The faulty run is recorded first (arrival trace: every datagram the core sees, with its
time), then replayed into a fresh core under the timer: the core is deterministic, so
the replay sends the same requests, and the figure is the core's own work (receive,
timers, requests, events), not the server's or the fault injector's.
"""

from __future__ import annotations

import argparse
import platform
import random
import time
from dataclasses import dataclass

from moldudp64.events import Address, MessagesDelivered, MessagesLost, Source
from moldudp64.faults import FaultInjector
from moldudp64.receiver import ReceiverConfig, ReceiverCore
from moldudp64.rerequest import RerequestServerCore
from moldudp64.store import MemoryStore
from moldudp64.wire import build_end_of_session, build_packet, pack_messages

SESSION = "000010059B"
SERVER: Address = ("127.0.0.1", 9001)
#: ITCH 5.0 message lengths, weighted roughly as a TotalView day (adds, deletes, executions).
ITCH_SIZES = [36] * 40 + [19] * 25 + [23] * 8 + [31] * 8 + [35] * 10 + [44] * 5 + [40] * 4
PACKET_INTERVAL = 1e-5  # 100,000 packets/s on the simulated clock
ANSWER_DELAY = 1e-3


def make_packets(count: int, seed: int = 1) -> tuple[list[bytes], list[bytes]]:
    """``count`` ITCH-sized messages and the 1452-byte packets that carry them."""
    rng = random.Random(seed)
    pool = [bytes([65 + i % 26]) * size for i, size in enumerate(ITCH_SIZES)]
    messages = [pool[rng.randrange(len(pool))] for _ in range(count)]
    return messages, pack_messages(SESSION, 1, messages)


def drain(core: ReceiverCore) -> int:
    """Take the events out; return how many messages they delivered."""
    return sum(len(e.messages) for e in core.events_received() if isinstance(e, MessagesDelivered))


def in_order(packets: list[bytes], total: int) -> float:
    """Messages per second through the fast path."""
    core = ReceiverCore(ReceiverConfig(stale_after=None))
    receive = core.receive_datagram
    line_a = Source.LINE_A
    delivered = 0
    start = time.perf_counter()
    for i, packet in enumerate(packets):
        receive(packet, line_a, i * PACKET_INTERVAL)
        if i % 256 == 255:
            delivered += drain(core)
    delivered += drain(core)
    elapsed = time.perf_counter() - start
    assert delivered == total, (delivered, total)
    return total / elapsed


def in_order_batches(packets: list[bytes], total: int, size: int = 64) -> float:
    """Messages per second through :meth:`ReceiverCore.receive_datagrams`, ``size``
    datagrams a call (as a ``recvmmsg`` loop or a capture reader hands them over)."""
    core = ReceiverCore(ReceiverConfig(stale_after=None))
    receive = core.receive_datagrams
    line_a = Source.LINE_A
    delivered = 0
    batches = [packets[i : i + size] for i in range(0, len(packets), size)]
    start = time.perf_counter()
    for i, batch in enumerate(batches):
        receive(batch, line_a, i * size * PACKET_INTERVAL)
        if i % 4 == 3:
            delivered += drain(core)
    delivered += drain(core)
    elapsed = time.perf_counter() - start
    assert delivered == total, (delivered, total)
    return total / elapsed


def a_and_b(packets: list[bytes], total: int) -> float:
    """Messages per second when lines A and B both carry every packet (B one behind)."""
    core = ReceiverCore(ReceiverConfig(stale_after=None))
    receive = core.receive_datagram
    line_a, line_b = Source.LINE_A, Source.LINE_B
    delivered = 0
    previous = None
    start = time.perf_counter()
    for i, packet in enumerate(packets):
        now = i * PACKET_INTERVAL
        receive(packet, line_a, now)
        if previous is not None:
            receive(previous, line_b, now)
        previous = packet
        if i % 256 == 255:
            delivered += drain(core)
    delivered += drain(core)
    elapsed = time.perf_counter() - start
    assert delivered == total, (delivered, total)
    return total / elapsed


@dataclass
class OpenGaps:
    """What the open-gaps run measured: microseconds per datagram."""

    gaps: int
    in_order_us: float
    beyond_us: float
    answers_us: float
    #: The first 1,000 live packets beyond the gaps, with two forged ends of session
    #: claimed 1,000 beyond everything held (every packet timed is below them), and the
    #: same packets on a core in the same state without them.
    forged_end_us: float = 0.0
    unforged_us: float = 0.0


def open_gaps(n_gaps: int = 10_000, beyond: int = 10_000) -> OpenGaps:
    """The core's cost per datagram with ``n_gaps`` gaps open, and without any.

    One message a packet. ``2 * n_gaps`` packets arrive with every other one lost, so
    ``n_gaps`` one-packet gaps are open (a server is configured; its request timeouts
    are far off on the simulated clock, so nothing is retried). Timed: ``beyond`` live
    packets after the last gap (each is held), then the answers from the server for
    every gap, from the newest to the oldest (``n_gaps`` still open for most of them;
    the last one delivers everything held). The baseline is the same number of packets
    in order on a fresh core. Every ``256`` datagrams the events are taken and the
    requests collected, as a client does.
    """
    config = ReceiverConfig(
        rerequest_server_addrs=[SERVER],
        stale_after=None,
        request_timeout=1e3,
        max_request_timeout=1e3,
        max_held_packets=max(50_000, 2 * (n_gaps + beyond)),
    )
    total = 2 * n_gaps + beyond
    packets = [build_packet(SESSION, seq, [b"A" * 36]) for seq in range(1, total + 1)]
    line_a, retx = Source.LINE_A, Source.RETRANSMISSION

    def timed(
        core: ReceiverCore, datagrams: list[bytes], source: Source, t0: float
    ) -> tuple[float, int]:
        """Microseconds per datagram through ``core``, and the messages it delivered."""
        receive = core.receive_datagram
        addr = SERVER if source is retx else None
        delivered = 0
        start = time.perf_counter()
        for i, data in enumerate(datagrams):
            now = t0 + i * 1e-6
            receive(data, source, now, addr)
            if i % 256 == 255:
                core.datagrams_to_send(now)
                delivered += drain(core)
        core.datagrams_to_send(t0 + len(datagrams) * 1e-6)
        delivered += drain(core)
        return (time.perf_counter() - start) / len(datagrams) * 1e6, delivered

    baseline = ReceiverCore(ReceiverConfig(stale_after=None))
    in_order_us, _ = timed(baseline, packets[:beyond], line_a, 0.0)
    core = ReceiverCore(config)
    # every other packet lost; the last two past them confirm the last gap
    opening = [*packets[0 : 2 * n_gaps : 2], *packets[2 * n_gaps : 2 * n_gaps + 2]]
    _, first = timed(core, opening, line_a, 0.0)
    assert core.stats.open_gaps == n_gaps, core.stats.open_gaps
    beyond_us, held = timed(core, packets[2 * n_gaps + 2 :], line_a, 1.0)
    answers = [packets[i] for i in range(2 * n_gaps - 1, 0, -2)]  # the lost ones, newest first
    answers_us, rest = timed(core, answers, retx, 2.0)
    assert first + held + rest == total, (first, held, rest, total)
    # two forged ends of session (lines A and B) 1,000 beyond everything held: the live
    # packets that follow, all below them, beside the same packets without them
    far = min(1_000, beyond)
    live = packets[2 * n_gaps + 2 : 2 * n_gaps + 2 + far]
    plain = ReceiverCore(config)
    timed(plain, opening, line_a, 0.0)
    unforged_us, _ = timed(plain, live, line_a, 1.0)
    forged = ReceiverCore(config)
    timed(forged, opening, line_a, 0.0)
    end = build_end_of_session(SESSION, 2 * n_gaps + 3 + far)
    forged.receive_datagram(end, line_a, 0.9)
    forged.receive_datagram(end, Source.LINE_B, 0.9)
    forged_end_us, _ = timed(forged, live, line_a, 1.0)
    assert forged.stats.end_of_session_pending, "the forged end was not claimed all along"
    return OpenGaps(n_gaps, in_order_us, beyond_us, answers_us, forged_end_us, unforged_us)


@dataclass
class Faulty:
    """What the faulty run measured."""

    rate: float
    packets_dropped: int
    requests: int
    peak_held: int
    lost: int
    recovered: int


Trace = list[tuple[float, bytes, Source, Address | None]]


def record(
    messages: list[bytes], packets: list[bytes], seed: int, config: ReceiverConfig
) -> tuple[Trace, int]:
    """Run the faulty line with a real re-request server; return the arrival trace."""
    store = MemoryStore(max_bytes=None)
    for message in messages:
        store.append(message)
    server = RerequestServerCore(SESSION, store, rate_limit=None)
    injector = FaultInjector(drop=0.05, duplicate=0.01, reorder=0.03, seed=seed)
    core = ReceiverCore(config)
    trace: Trace = []
    pending: list[tuple[float, bytes]] = []  # answers on their way, in time order

    def arrive(at: float, data: bytes, source: Source, addr: Address | None) -> None:
        trace.append((at, data, source, addr))
        core.receive_datagram(data, source, at, addr)

    def pump(now: float) -> None:
        while pending and pending[0][0] <= now:
            at, answer = pending.pop(0)
            arrive(at, answer, Source.RETRANSMISSION, SERVER)
        timer = core.get_timer()
        if timer is not None and timer <= now:
            trace.append((now, b"", Source.LINE_A, None))  # a timer tick
            core.handle_timer(now)
        for request, _ in core.datagrams_to_send(now):
            answer = server.handle_request(request, ("127.0.0.1", 40000), now)
            if answer is not None:
                pending.append((now + ANSWER_DELAY, answer))
        core.events_received()

    now = 0.0
    end = build_end_of_session(SESSION, len(messages) + 1)
    for packet in [*packets, end]:
        now += PACKET_INTERVAL
        for data in injector.process(packet):
            arrive(now, data, Source.LINE_A, None)
        pump(now)
    for data in injector.flush():
        arrive(now, data, Source.LINE_A, None)
    while not core.ended and now < 1e4:
        now += ANSWER_DELAY
        arrive(now, end, Source.LINE_A, None)
        pump(now)
    assert core.ended, "the faulty run did not finish"
    return trace, injector.stats.dropped


def replay(trace: Trace, total: int, dropped: int, config: ReceiverConfig) -> Faulty:
    """Replay the trace into a fresh core; time it."""
    core = ReceiverCore(config)
    receive = core.receive_datagram
    delivered = lost = requests = 0
    start = time.perf_counter()
    for i, (at, data, source, addr) in enumerate(trace):
        if data:
            receive(data, source, at, addr)
        else:
            core.handle_timer(at)
        if i % 16 == 15:
            requests += len(core.datagrams_to_send(at))
            for event in core.events_received():
                if isinstance(event, MessagesDelivered):
                    delivered += len(event.messages)
                elif isinstance(event, MessagesLost):
                    lost += event.count
    requests += len(core.datagrams_to_send(trace[-1][0]))
    for event in core.events_received():
        if isinstance(event, MessagesDelivered):
            delivered += len(event.messages)
        elif isinstance(event, MessagesLost):
            lost += event.count
    elapsed = time.perf_counter() - start
    assert delivered + lost == total, (delivered, lost, total)
    stats = core.stats
    return Faulty(
        rate=total / elapsed,
        packets_dropped=dropped,
        requests=sum(stats.requests_sent.values()),
        peak_held=stats.peak_held_packets,
        lost=lost,
        recovered=stats.messages_recovered,
    )


def main(argv: list[str] | None = None) -> dict[str, float]:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--quick", action="store_true", help="a tiny run, for tests")
    parser.add_argument("--messages", type=int, default=None, help="messages per run")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument(
        "--open-gaps", type=int, default=None, help="gaps open in the open-gaps run (10,000)"
    )
    parser.add_argument(
        "--request-delay",
        type=float,
        default=0.0,
        help="ReceiverConfig.request_delay for the faulty run (seconds; default 0)",
    )
    args = parser.parse_args(argv)
    count = args.messages or (20_000 if args.quick else 2_000_000)
    messages, packets = make_packets(count, args.seed)
    rounds = 1 if args.quick else 3
    fast = max(in_order(packets, count) for _ in range(rounds))
    batched = max(in_order_batches(packets, count) for _ in range(rounds))
    both = max(a_and_b(packets, count) for _ in range(rounds))
    config = ReceiverConfig(rerequest_server_addrs=[SERVER], request_delay=args.request_delay)
    trace, dropped = record(messages, packets, args.seed, config)
    faulty = max(
        (replay(trace, count, dropped, config) for _ in range(rounds)), key=lambda f: f.rate
    )
    gaps = open_gaps(args.open_gaps or (1_000 if args.quick else 10_000))
    per_lost = faulty.requests / max(faulty.packets_dropped, 1)
    print(f"python {platform.python_version()}, {count:,} messages in {len(packets):,} packets")
    print(f"in order:                         {fast:12,.0f} messages/s")
    print(f"in order, receive_datagrams x64:  {batched:12,.0f} messages/s")
    print(f"in order on lines A and B:        {both:12,.0f} messages/s")
    print(f"in order, 1 message a packet:     {gaps.in_order_us:12,.2f} us/datagram")
    label = f"{gaps.gaps:,} open gaps:"
    print(
        f"{label:<34}{gaps.beyond_us:12,.2f} us/datagram beyond,"
        f" {gaps.answers_us:,.2f} us/answer filling one"
    )
    print(
        f"{'  and a forged far end claimed:':<34}{gaps.forged_end_us:12,.2f} us/datagram"
        f" (the same packets without it: {gaps.unforged_us:,.2f})"
    )
    print(
        f"5% loss, 1% dup, 3% reorder:      {faulty.rate:12,.0f} messages/s"
        f"  (request_delay {args.request_delay:g} s)"
    )
    print(
        f"  live packets dropped {faulty.packets_dropped:,}, requests sent {faulty.requests:,}"
        f" ({per_lost:.2f} per lost packet), messages recovered {faulty.recovered:,},"
        f" lost {faulty.lost:,}, peak held packets {faulty.peak_held:,}"
    )
    return {
        "in_order_msgs_per_s": fast,
        "in_order_batches_msgs_per_s": batched,
        "a_and_b_msgs_per_s": both,
        "faulty_msgs_per_s": faulty.rate,
        "requests_per_lost_packet": per_lost,
        "peak_held_packets": float(faulty.peak_held),
        "messages_lost": float(faulty.lost),
        "open_gaps": float(gaps.gaps),
        "in_order_us_per_datagram": gaps.in_order_us,
        "open_gaps_beyond_us_per_datagram": gaps.beyond_us,
        "open_gaps_answer_us_per_datagram": gaps.answers_us,
        "open_gaps_forged_end_us_per_datagram": gaps.forged_end_us,
        "open_gaps_unforged_us_per_datagram": gaps.unforged_us,
    }


if __name__ == "__main__":
    main()
