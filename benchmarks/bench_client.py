"""Client throughput: messages a Python consumer receives per second, blocking and asyncio.

    python benchmarks/bench_client.py [--quick] [--seconds S] [--trials N] [--rates R1,R2,...]

Parts:

1. **preloaded**: the line socket's kernel buffer is filled with packets first (sender in
   this process, before the client starts), then the client is opened on it and timed
   from open to the last message of ``for msg in client.messages()`` (and, for
   comparison, ``client.events()`` batches, and the asyncio client's ``async for``).
   Receive, core, queue and iteration, with no sender in the way. Loopback unicast.
2. **live multicast, sustained without loss**: inside a private network namespace
   (``enter_private_netns()``, root only; skipped with the reason otherwise), a sender
   process paces ITCH-sized messages (36 bytes, 37 a packet) to a 239.x group on
   loopback at each rate in turn (``--trials`` runs of ``--seconds``); the blocking
   client consumes with ``for msg in client.messages()`` and no re-request server, so
   any datagram lost shows as a gap. Reported: the highest rate with no gap and no
   kernel drop in any run. The sender shares the machine (on 2 cores it takes one).

``--quick`` is a tiny run for tests.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import socket
import subprocess
import sys
import time
from collections.abc import Sequence
from typing import Any

from moldudp64.asyncio.client import AsyncMoldUDP64
from moldudp64.bench import Result, machine_summary, print_table
from moldudp64.events import Event, GapDetected, MessagesDelivered, MessagesLost
from moldudp64.net import open_unicast_socket, set_receive_buffer
from moldudp64.netns import enter_private_netns
from moldudp64.sync.client import MoldUDP64
from moldudp64.wire import build_end_of_session, pack_messages

SESSION = "BENCHCLNT1"
GROUP = "239.9.9.10"
MSG_LEN = 36  # an ITCH 5.0 add order
PRELOAD_RCVBUF = 512 << 20
TARGET = 1_500_000  # issue 7: messages/s into a user's for loop


def make_packets(n_messages: int, first_seq: int = 1) -> list[bytes]:
    """Full-size packets (1452 bytes of blocks) of distinct 36-byte messages."""
    msgs = [
        b"A" + (i & 0xFFFFFFFF).to_bytes(4, "big") * 8 + b"xyz"
        for i in range(first_seq, first_seq + n_messages)
    ]
    return pack_messages(SESSION, first_seq, msgs)


# --------------------------------------------------------------------------- preloaded


def preload(n_messages: int) -> tuple[socket.socket, socket.socket, int]:
    """A line socket whose kernel buffer holds the whole feed, and a request socket."""
    line = open_unicast_socket(("127.0.0.1", 0))
    set_receive_buffer(line, PRELOAD_RCVBUF, "bench line")
    rereq = open_unicast_socket(("127.0.0.1", 0))
    packets = make_packets(n_messages)
    packets.append(build_end_of_session(SESSION, n_messages + 1))
    tx = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    dest = line.getsockname()
    for p in packets:
        tx.sendto(p, dest)
    tx.close()
    return line, rereq, len(packets)


def client_for_bench(**kw: Any) -> MoldUDP64:
    return MoldUDP64((GROUP, 1), rerequest_server_addrs=[], stale_after=None, **kw)


def bench_blocking(n_messages: int, *, batches: bool = False, pull: bool = False) -> Result:
    """``for msg in client.messages()`` (or ``events()``) over a preloaded buffer; with
    ``pull``, in pull mode (``receiver_thread=False``: the consumer's thread reads)."""
    line, rereq, n_packets = preload(n_messages)
    c = client_for_bench(receiver_thread=not pull)
    count = 0
    last = None
    t_last = 0.0
    t0 = time.perf_counter()
    with c.open_with_sockets(line, rereq):
        if batches:
            for ev in c.events(timeout=30):
                if type(ev) is MessagesDelivered:
                    count += len(ev.messages)
                    if count == n_messages:
                        t_last = time.perf_counter()
        else:
            for msg in c.messages(timeout=30):
                count += 1
                last = msg
                if count == n_messages:
                    t_last = time.perf_counter()
        t_end = time.perf_counter()
        drops = c.stats.kernel_drops
    assert count == n_messages, (count, n_messages, drops)
    assert batches or (last is not None and last.seq_num == n_messages)
    # Timed to the last message: the loop itself ends only once the end of session is
    # believed (``end_confirm`` of quiet after it), which is latency, not throughput.
    elapsed = t_last - t0
    rate = count / elapsed
    name = "blocking events() batches" if batches else "blocking messages() for loop"
    if pull:
        name += ", pull mode"
    return Result(
        f"preloaded: {name}",
        round(rate),
        "messages/s",
        target="" if batches else f">= {TARGET:,}",
        met=None if batches else rate >= TARGET,
        notes={
            "messages": count,
            "packets": n_packets,
            "seconds": round(elapsed, 3),
            "loop_ended_after": round(t_end - t0, 3),
        },
    )


def bench_asyncio(n_messages: int) -> Result:
    """``async for msg in client.messages()`` over a preloaded buffer."""
    line, rereq, n_packets = preload(n_messages)

    async def main() -> tuple[int, float]:
        c = AsyncMoldUDP64((GROUP, 1), rerequest_server_addrs=[], stale_after=None)
        count = 0
        t_last = 0.0
        t0 = time.perf_counter()
        async with await c.open_with_sockets(line, rereq):
            async for _msg in c.messages(timeout=30):
                count += 1
                if count == n_messages:
                    t_last = time.perf_counter()
        return count, t_last - t0  # to the last message (see bench_blocking)

    count, elapsed = asyncio.run(main())
    assert count == n_messages, (count, n_messages)
    return Result(
        "preloaded: asyncio async for",
        round(count / elapsed),
        "messages/s",
        notes={"messages": count, "packets": n_packets, "seconds": round(elapsed, 3)},
    )


# --------------------------------------------------------------------------- live multicast


def sender_main(group: str, port: int, rate: float, seconds: float) -> int:
    """The paced sender (child process): ``rate`` messages/s for ``seconds``, then EOS."""
    n_messages = max(37, int(rate * seconds))
    packets = make_packets(n_messages)
    per_packet = n_messages / len(packets)
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.setsockopt(socket.IPPROTO_IP, socket.IP_MULTICAST_TTL, 1)
    sock.setsockopt(socket.IPPROTO_IP, socket.IP_MULTICAST_LOOP, 1)
    sock.setsockopt(socket.IPPROTO_IP, socket.IP_MULTICAST_IF, socket.inet_aton("127.0.0.1"))
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 8 << 20)
    dest = (group, port)
    send = sock.sendto
    pps = rate / per_packet
    sys.stdout.write("ready\n")
    sys.stdout.flush()
    sys.stdin.readline()  # the client is listening
    t0 = time.perf_counter()
    sent = 0
    total = len(packets)
    while sent < total:
        due = min(total, int((time.perf_counter() - t0) * pps) + 1)
        while sent < due:
            send(packets[sent], dest)
            sent += 1
        if sent < total:
            wait = t0 + sent / pps - time.perf_counter()
            if wait > 0:
                time.sleep(wait)
    elapsed = time.perf_counter() - t0
    eos = build_end_of_session(SESSION, n_messages + 1)
    for _ in range(50):
        send(eos, dest)
        time.sleep(0.01)
    sys.stdout.write(f"{n_messages} {elapsed:.6f}\n")
    sys.stdout.flush()
    return 0


def live_run(rate: float, seconds: float, port: int) -> dict[str, float]:
    """One paced run at ``rate``: what the blocking client received, gaps and drops."""
    child = subprocess.Popen(
        [sys.executable, __file__, "--send", GROUP, str(port), str(rate), str(seconds)],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    assert child.stdin is not None and child.stdout is not None
    gaps = 0
    lost = 0

    def on_event(ev: Event) -> None:
        nonlocal gaps, lost
        if isinstance(ev, GapDetected):
            gaps += 1
        elif isinstance(ev, MessagesLost):
            lost += ev.count

    try:
        child.stdout.readline()  # ready (packets built)
        c = MoldUDP64((GROUP, port), "127.0.0.1", [], on_event=on_event, stale_after=None)
        count = 0
        with c:
            child.stdin.write("go\n")
            child.stdin.flush()
            t_first = None
            for _msg in c.messages(timeout=10):
                if t_first is None:
                    t_first = time.perf_counter()
                count += 1
            t_last = time.perf_counter()
            drops = c.stats.kernel_drops
        sent_line = child.stdout.readline().split()
        child.wait(30)
    finally:
        if child.poll() is None:
            child.kill()
            child.wait()
    sent = int(sent_line[0]) if sent_line else 0
    send_seconds = float(sent_line[1]) if sent_line else 0.0
    return {
        "rate": rate,
        "sent": sent,
        "received": count,
        "gaps": gaps,
        "lost": lost,
        "kernel_drops": drops,
        "send_seconds": send_seconds,
        "achieved": sent / send_seconds if send_seconds else 0.0,
        "consumer_seconds": (t_last - t_first) if t_first is not None else 0.0,
    }


def bench_live(rates: Sequence[float], seconds: float, trials: int) -> list[Result]:
    """Ascending paced rates, ``trials`` runs each; the best rate with no gap in any run."""
    results = []
    best = 0.0
    port = 41000
    for rate in rates:
        runs = []
        for _ in range(trials):
            port += 1
            runs.append(live_run(rate, seconds, port))
        clean_runs = sum(
            1
            for r in runs
            if r["gaps"] == 0
            and r["lost"] == 0
            and r["kernel_drops"] == 0
            and r["received"] == r["sent"]
        )
        clean = clean_runs == trials
        results.append(
            Result(
                f"live multicast at {rate:,.0f}/s",
                round(sum(r["received"] for r in runs)),
                "messages",
                met=clean,
                target="no gap",
                notes={
                    "clean_runs": f"{clean_runs}/{trials}",
                    "sent": int(sum(r["sent"] for r in runs)),
                    "sender_rate": round(min(r["achieved"] for r in runs)),
                    "gaps": int(sum(r["gaps"] for r in runs)),
                    "lost": int(sum(r["lost"] for r in runs)),
                    "kernel_drops": int(sum(r["kernel_drops"] for r in runs)),
                },
            )
        )
        if clean:
            best = max(best, min(r["achieved"] for r in runs))
        else:
            break
    results.append(
        Result(
            "live multicast: sustained without loss",
            round(best),
            "messages/s",
            target=f">= {TARGET:,}",
            met=best >= TARGET,
            notes={"seconds_each": seconds, "trials": trials, "message_bytes": MSG_LEN},
        )
    )
    return results


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--quick", action="store_true", help="a tiny run (for tests)")
    parser.add_argument("--messages", type=int, default=1_000_000, help="preloaded messages")
    parser.add_argument("--seconds", type=float, default=3.0, help="live: seconds per run")
    parser.add_argument("--trials", type=int, default=3, help="live: runs per rate")
    parser.add_argument(
        "--rates",
        default="500000,1000000,1250000,1500000,1750000,2000000,2500000",
        help="live: messages/s to try, ascending",
    )
    parser.add_argument("--skip", default="", help="comma-separated: preloaded,asyncio,live")
    parser.add_argument(
        "--send", nargs=4, metavar=("GROUP", "PORT", "RATE", "SECONDS"), help=argparse.SUPPRESS
    )
    args = parser.parse_args(argv)
    if args.send:
        group, port, rate, seconds = args.send
        return sender_main(group, int(port), float(rate), float(seconds))
    skip = set(filter(None, args.skip.split(",")))
    # First, before any thread starts: the private namespace for live multicast.
    netns_error = enter_private_netns() if "live" not in skip else "skipped"
    n = 20_000 if args.quick else args.messages
    seconds = 0.2 if args.quick else args.seconds
    rates = [float(x) for x in args.rates.split(",") if x]
    if args.quick:
        rates = rates[:2]
    results: list[Result] = []
    skipped: list[str] = []
    if "preloaded" not in skip:
        results.append(bench_blocking(n))
        results.append(bench_blocking(n, batches=True))
        results.append(bench_blocking(n, pull=True))
        results.append(bench_blocking(n, batches=True, pull=True))
    if "asyncio" not in skip:
        results.append(bench_asyncio(n))
    if "live" not in skip:
        if netns_error is not None:
            skipped.append(f"live: {netns_error}")
        else:
            results.extend(bench_live(rates, seconds, 1 if args.quick else args.trials))
    print(machine_summary())
    print_table(results, title="moldudp64 client benchmarks", write=print)
    for line in skipped:
        print(f"# skipped {line}")
    return 0


if __name__ == "__main__":
    os.environ.setdefault("PYTHONHASHSEED", "0")
    sys.exit(main())
