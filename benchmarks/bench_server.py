"""Server-side throughput: publishing, re-request answers, and a BinaryFILE store's footprint.

    python benchmarks/bench_server.py [--quick] [--messages N] [--store-messages N]
                                      [--fairness-seconds S] [--flood-sources N]

Parts, all over ITCH-sized messages (19 to 44 bytes) in 1452-byte packets:

- publish, core: ``PublisherCore.publish_many`` + ``datagrams_to_send`` (no I/O);
- publish, loopback: the blocking :class:`~moldudp64.sync.server.Publisher` (and the
  asyncio :class:`~moldudp64.asyncio.server.AsyncPublisher`) running a list as fast as it
  can to a UDP socket on 127.0.0.1 (every packet through the kernel);
- answers, core: ``RerequestServerCore.handle_request`` from a MemoryStore (no I/O);
- answers, loopback: a :class:`~moldudp64.sync.server.RerequestServer` (and an
  :class:`~moldudp64.asyncio.server.AsyncRerequestServer`) in a child process
  answering a client that keeps 32 requests in flight over 127.0.0.1 (rate limit off: the
  default limit holds one source to 2,000 requests a second);
- BinaryFILE store: index build time and peak RSS of a child process that opens an
  N-message file and answers requests spread over it;
- fairness: a client asking 100 requests/s from 127.0.0.10 while 8 hosts (127.0.0.2..9,
  one process sending as fast as it can) flood a server with the default rate limit:
  the share of the client's requests answered (issue 11: >= 90%);
- many-source flood (issue 18): 3,000 hosts (127.1.x.y) plus 1,000 ports of 127.2.0.1
  flood the sync server, the asyncio one, and the asyncio one with a store that blocks
  (0.5 ms a read, a worker thread: ``serve --nats``); a client answered 20 times before
  (127.0.0.10), quiet for 5 s, then asks 30 times 20 ms apart, a new client (127.0.0.11)
  alongside it: the share each gets answered within 0.5 s, and the p99 (target: >= 90%,
  p99 < 50 ms).
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import math
import multiprocessing
import multiprocessing.connection
import os
import platform
import random
import resource
import select
import socket
import struct
import tempfile
import time

from moldudp64.asyncio.server import AsyncPublisher, AsyncRerequestServer
from moldudp64.bench import Result
from moldudp64.binaryfile import BinaryFileWriter
from moldudp64.publisher import PublisherCore
from moldudp64.rerequest import DEFAULT_RATE_LIMIT, RateLimit, RerequestServerCore
from moldudp64.store import BinaryFileStore, MemoryStore
from moldudp64.sync.server import Publisher, RerequestServer

SESSION = "BENCH00001"
ITCH_SIZES = [36] * 40 + [19] * 25 + [23] * 8 + [31] * 8 + [35] * 10 + [44] * 5 + [40] * 4
WINDOW = 32


def make_messages(count: int, seed: int = 1) -> list[bytes]:
    rng = random.Random(seed)
    pool = [bytes([65 + i % 26]) * size for i, size in enumerate(ITCH_SIZES)]
    return [pool[rng.randrange(len(pool))] for _ in range(count)]


def publish_core(messages: list[bytes]) -> tuple[float, float]:
    """(messages/s, packets/s) through the core alone."""
    core = PublisherCore(SESSION, flush_delay=None, heartbeat_interval=None)
    packets = 0
    start = time.perf_counter()
    for i in range(0, len(messages), 1024):
        core.publish_many(messages[i : i + 1024], 0.0)
        packets += len(core.datagrams_to_send(0.0))
    core.flush(0.0)
    packets += len(core.datagrams_to_send(0.0))
    elapsed = time.perf_counter() - start
    return len(messages) / elapsed, packets / elapsed


def publish_loopback(messages: list[bytes]) -> tuple[float, float]:
    """(messages/s, packets/s) through the blocking Publisher to a socket on 127.0.0.1."""
    sink = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sink.bind(("127.0.0.1", 0))
    with Publisher(SESSION, sink.getsockname(), unicast=True, heartbeat_interval=None) as pub:
        result = pub.run(messages, end_session=False)
    sink.close()
    return result.messages / result.seconds, result.stats.packets / result.seconds


def publish_asyncio(messages: list[bytes]) -> tuple[float, float]:
    """(messages/s, packets/s) through AsyncPublisher to a socket on 127.0.0.1."""

    async def go() -> tuple[float, float]:
        sink = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        sink.bind(("127.0.0.1", 0))
        async with AsyncPublisher(
            SESSION, sink.getsockname(), unicast=True, heartbeat_interval=None
        ) as pub:
            result = await pub.run(messages, end_session=False)
        sink.close()
        return result.messages / result.seconds, result.stats.packets / result.seconds

    return asyncio.run(go())


def requests_for(total: int, count: int, seed: int = 2) -> list[bytes]:
    rng = random.Random(seed)
    raw = SESSION.encode()
    return [struct.pack(">10sQH", raw, rng.randrange(1, total - 100), 100) for _ in range(count)]


def answers_core(messages: list[bytes], requests: list[bytes]) -> float:
    """Answers per second from the core alone."""
    store = MemoryStore(max_bytes=None)
    for m in messages:
        store.append(m)
    server = RerequestServerCore(SESSION, store, rate_limit=None)
    handle = server.handle_request
    addr = ("127.0.0.1", 40000)
    start = time.perf_counter()
    for i, request in enumerate(requests):
        handle(request, addr, i * 1e-6)
    elapsed = time.perf_counter() - start
    assert server.stats.answers == len(requests)
    return len(requests) / elapsed


def _serve_main(messages_count: int, conn: multiprocessing.connection.Connection) -> None:
    store = MemoryStore(max_bytes=None)
    for m in make_messages(messages_count):
        store.append(m)
    server = RerequestServer(SESSION, store, ("127.0.0.1", 0), rate_limit=None).start()
    conn.send(server.address[1])
    conn.recv()
    conn.send(server.stats.answers)
    server.close()


def _serve_asyncio_main(messages_count: int, conn: multiprocessing.connection.Connection) -> None:
    store = MemoryStore(max_bytes=None)
    for m in make_messages(messages_count):
        store.append(m)

    async def go() -> None:
        server = await AsyncRerequestServer.create(SESSION, store, rate_limit=None)
        conn.send(server.address[1])
        await asyncio.get_running_loop().run_in_executor(None, conn.recv)
        conn.send(server.stats.answers)
        server.close()

    asyncio.run(go())


def answers_loopback(total: int, requests: list[bytes], use_asyncio: bool = False) -> float:
    """Answers per second from a re-request server in a child process, 32 requests in flight."""
    ctx = multiprocessing.get_context("fork")
    parent, child = ctx.Pipe()
    target = _serve_asyncio_main if use_asyncio else _serve_main
    proc = ctx.Process(target=target, args=(total, child), daemon=True)
    proc.start()
    port = parent.recv()
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4 * 1024 * 1024)
    sock.bind(("127.0.0.1", 0))
    sock.settimeout(1.0)
    server = ("127.0.0.1", port)
    sent = received = 0
    lost = 0
    start = time.perf_counter()
    while sent < min(WINDOW, len(requests)):
        sock.sendto(requests[sent], server)
        sent += 1
    while received + lost < len(requests):
        try:
            sock.recv(2048)
            received += 1
        except TimeoutError:
            lost += sent - received - lost  # count what is outstanding as lost, go on
        if sent < len(requests):
            sock.sendto(requests[sent], server)
            sent += 1
    elapsed = time.perf_counter() - start
    parent.send("stop")
    answered = parent.recv()
    proc.join(5)
    sock.close()
    assert answered >= received
    return received / elapsed


def _flood_main(port: int, conn: multiprocessing.connection.Connection) -> None:
    """Send requests from 127.0.0.2..9 as fast as one process can until told to stop."""
    socks = []
    for i in range(2, 10):
        s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        s.bind((f"127.0.0.{i}", 0))
        s.setblocking(False)
        socks.append(s)
    raw = SESSION.encode()
    reqs = [struct.pack(">10sQH", raw, 1 + i * 100, 1000) for i in range(64)]
    server = ("127.0.0.1", port)
    sent = 0
    conn.send("ready")
    conn.recv()
    while not conn.poll():
        for i in range(256):
            try:
                socks[i & 7].sendto(reqs[i & 63], server)
                sent += 1
            except (BlockingIOError, OSError):
                pass
    conn.recv()
    conn.send(sent)
    for s in socks:
        s.close()


def _fair_server_main(
    total: int,
    use_asyncio: bool,
    rate: float | None,
    conn: multiprocessing.connection.Connection,
) -> None:
    logging.getLogger("moldudp64.rerequest").setLevel(logging.ERROR)  # one line per flooder
    store = MemoryStore(max_bytes=None)
    store.extend(make_messages(total))
    limit = DEFAULT_RATE_LIMIT if rate is None else RateLimit.per_source(rate)
    if use_asyncio:

        async def go() -> None:
            server = await AsyncRerequestServer.create(SESSION, store, rate_limit=limit)
            conn.send(server.address[1])
            loop = asyncio.get_running_loop()
            while await loop.run_in_executor(None, conn.recv) != "stop":
                conn.send(server.stats)
            conn.send(server.stats)
            server.close()

        asyncio.run(go())
        return
    server = RerequestServer(SESSION, store, ("127.0.0.1", 0), rate_limit=limit).start()
    conn.send(server.address[1])
    while conn.recv() != "stop":  # "stats": how far it is
        conn.send(server.stats)
    conn.send(server.stats)
    server.close()


def fairness(
    seconds: float = 3.0,
    client_rate: float = 100.0,
    use_asyncio: bool = False,
    refused_per_ask: float | None = None,
    max_seconds: float = 30.0,
    rate: float | None = None,
) -> dict[str, float]:
    """A client at ``client_rate`` requests/s from 127.0.0.10 while 8 hosts (127.0.0.2..9,
    one process) flood a default-configured server in a child process: the share of the
    client's requests answered, and the flood's rate.

    The flood and the client go on for ``seconds``, then (paced by what the server did,
    not by the clock: on a loaded machine the server may read little of the flood in a
    given time) until the server refused more than ``refused_per_ask`` requests for rate
    per request the client asked, at most
    ``max_seconds`` in all; ``seconds`` in the result is how long it was. ``rate``: the
    server's ``RateLimit.per_source(rate)`` instead of the default limit."""
    ctx = multiprocessing.get_context("fork")
    srv_parent, srv_child = ctx.Pipe()
    server_proc = ctx.Process(
        target=_fair_server_main, args=(100_000, use_asyncio, rate, srv_child), daemon=True
    )
    server_proc.start()
    port = srv_parent.recv()
    flood_parent, flood_child = ctx.Pipe()
    flood_proc = ctx.Process(target=_flood_main, args=(port, flood_child), daemon=True)
    flood_proc.start()
    assert flood_parent.recv() == "ready"
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.bind(("127.0.0.10", 0))
    sock.setblocking(False)
    raw = SESSION.encode()
    flood_parent.send("go")
    start = time.perf_counter()
    asked = answered = 0
    check_at = start + seconds

    def more() -> bool:
        nonlocal check_at
        now = time.perf_counter()
        if now < check_at:
            return True
        if refused_per_ask is None or now - start >= max_seconds:
            return False
        srv_parent.send("stats")
        if srv_parent.recv().refused["rate_limited"] > refused_per_ask * asked:
            return False
        check_at = now + 0.1
        return True

    while more():
        sock.sendto(struct.pack(">10sQH", raw, 5 + asked, 10), ("127.0.0.1", port))
        asked += 1
        due = start + asked / client_rate
        while (left := due - time.perf_counter()) > 0:
            ready = select.select([sock], [], [], left)[0]
            if ready:
                try:
                    sock.recv(65535)
                    answered += 1
                except BlockingIOError:
                    pass
    flood_parent.send("stop")
    seconds = time.perf_counter() - start
    end = time.perf_counter() + 1.0  # the stragglers (waiting for budget: up to 0.5 s)
    while (left := end - time.perf_counter()) > 0 and answered < asked:
        if select.select([sock], [], [], left)[0]:
            sock.recv(65535)
            answered += 1
    flood_sent = flood_parent.recv()
    srv_parent.send("stop")
    stats = srv_parent.recv()
    flood_proc.join(5)
    server_proc.join(5)
    sock.close()
    return {
        "share": answered / asked,
        "asked": asked,
        "answered": answered,
        "flood_per_s": flood_sent / seconds,
        "server_requests_per_s": stats.requests / seconds,
        "refused_rate_limited": stats.refused["rate_limited"],
        "server_read": stats.requests,
        "server_answers": stats.answers,
        "seconds": seconds,
    }


def flood_rows(hosts: int = 3000, ports: int = 1000, quiet: float = 5.0) -> list[Result]:
    """Benchmark-table rows (issue 18, items 9 and 10): the share answered and the p99 of
    a client answered before and of a new one while ``hosts`` hosts and ``ports`` ports
    flood, per server."""
    rows = []
    for kind in ("sync", "asyncio", "blocking_io"):
        got = flood_fairness(hosts=hosts, ports=ports, quiet=quiet, kind=kind)
        for who in ("old", "new"):
            share, p99 = got[f"{who}_share"], got[f"{who}_p99_ms"]
            rows.append(
                Result(
                    f"re-request flood of {hosts + ports:,} sources, {kind} server, "
                    f"{'client answered before' if who == 'old' else 'new client'}",
                    round(100 * share, 1),
                    "% answered",
                    target=">= 90% answered, p99 < 50 ms",
                    met=share >= 0.9 and p99 < 50,
                    notes={
                        "p99_ms": round(p99, 1) if math.isfinite(p99) else None,
                        "flood_per_s": round(got["flood_per_s"]),
                        "server_read_per_s": round(got["server_requests_per_s"]),
                        "answers": got["answers"],
                        "established": got["established"],
                        "peak_rss_mib": round(got["peak_rss_mib"], 1),
                    },
                )
            )
    return rows


def fairness_rows(seconds: float) -> list[Result]:
    """Benchmark-table rows: the client's share of answers under the flood, per server
    (and, for a full run of 1 s or more, :func:`flood_rows`)."""
    rows = []
    for use_asyncio in (False, True):
        got = fairness(seconds, use_asyncio=use_asyncio)
        rows.append(
            Result(
                f"re-request fairness, {'asyncio' if use_asyncio else 'blocking'} server",
                round(100 * got["share"], 1),
                "% answered",
                target=">= 90% for a client at 100 requests/s while 8 hosts flood",
                met=got["share"] >= 0.9,
                notes={
                    "answered": f"{got['answered']:.0f}/{got['asked']:.0f}",
                    "flood_per_s": round(got["flood_per_s"]),
                    "server_read_per_s": round(got["server_requests_per_s"]),
                },
            )
        )
    if seconds >= 1.0:
        rows.extend(flood_rows())
    return rows


class SlowStore(MemoryStore):
    """A MemoryStore that says ``blocking_io`` and takes ``delay`` s a read (JetStream-like:
    the asyncio server then answers from one worker thread, as ``serve --nats`` does)."""

    blocking_io = True

    def __init__(self, delay: float = 0.0005) -> None:
        super().__init__(max_bytes=None)
        self.delay = delay

    def get(self, seq_num: int, max_count: int, max_bytes: int | None = None) -> list[bytes]:
        time.sleep(self.delay)
        return super().get(seq_num, max_count, max_bytes)


def _many_flood_main(
    port: int,
    hosts: int,
    ports: int,
    conn: multiprocessing.connection.Connection,
    rate: float | None = None,
) -> None:
    """Flood from ``hosts`` addresses (127.1.x.y) plus ``ports`` ports of 127.2.0.1, round
    robin, as fast as one process can (or at ``rate`` datagrams a second), until told to
    stop."""
    socks = []
    for i in range(hosts):
        s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        s.bind((f"127.1.{i // 250}.{1 + i % 250}", 0))
        s.setblocking(False)
        socks.append(s)
    for _ in range(ports):
        s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        s.bind(("127.2.0.1", 0))
        s.setblocking(False)
        socks.append(s)
    raw = SESSION.encode()
    rng = random.Random(5)
    reqs = [struct.pack(">10sQH", raw, rng.randrange(1, 190_000), 1000) for _ in range(997)]
    server = ("127.0.0.1", port)
    sent = 0
    conn.send("ready")
    conn.recv()
    n = len(socks)
    i = 0
    began = time.perf_counter()
    while not conn.poll():
        if rate is not None and (ahead := sent / rate - (time.perf_counter() - began)) > 0:
            time.sleep(ahead)
        for _ in range(512):
            try:
                socks[i % n].sendto(reqs[i % 997], server)
                sent += 1
            except OSError:
                pass
            i += 1
    conn.recv()
    conn.send(sent)
    for s in socks:
        s.close()


def _flood_server_main(
    total: int, kind: str, conn: multiprocessing.connection.Connection
) -> None:
    logging.getLogger("moldudp64.rerequest").setLevel(logging.ERROR)
    store: MemoryStore = SlowStore() if kind == "blocking_io" else MemoryStore(max_bytes=None)
    store.extend(make_messages(total))
    if kind != "sync":

        async def go() -> None:
            server = await AsyncRerequestServer.create(SESSION, store)
            conn.send(server.address[1])
            await asyncio.get_running_loop().run_in_executor(None, conn.recv)
            conn.send((server.stats, peak_rss_kib(), _established(server.core)))
            server.close()

        asyncio.run(go())
        return
    server = RerequestServer(SESSION, store, ("127.0.0.1", 0)).start()
    conn.send(server.address[1])
    conn.recv()
    conn.send((server.stats, peak_rss_kib(), _established(server.core)))
    server.close()


def _established(core: RerequestServerCore) -> int:
    return len(getattr(core, "_established", ()))


def _ask_rounds(
    socks: list[socket.socket], server: tuple[str, int], rounds: int, gap: float, wait: float = 0.5
) -> list[list[float]]:
    """Each socket asks once a round (``gap`` s apart) and waits up to ``wait`` s: the
    latency of each answer in seconds, per socket (inf: none came)."""
    raw = SESSION.encode()
    out: list[list[float]] = [[] for _ in socks]
    for r in range(rounds):
        sent_at = {}
        for k, sock in enumerate(socks):
            while select.select([sock], [], [], 0)[0]:  # a late answer of a previous round
                sock.recv(65535)
            sock.sendto(struct.pack(">10sQH", raw, 1 + 97 * r + k, 10), server)
            sent_at[k] = time.perf_counter()
        pending = set(range(len(socks)))
        deadline = time.perf_counter() + wait
        while pending and (left := deadline - time.perf_counter()) > 0:
            for sock in select.select([socks[k] for k in pending], [], [], left)[0]:
                sock.recv(65535)
                k = socks.index(sock)
                out[k].append(time.perf_counter() - sent_at[k])
                pending.discard(k)
        for k in pending:
            out[k].append(math.inf)
        time.sleep(gap)
    return out


def flood_fairness(
    hosts: int = 3000,
    ports: int = 1000,
    quiet: float = 5.0,
    rounds: int = 30,
    kind: str = "sync",
    warmup: int = 20,
    flood_rate: float | None = None,
    wait: float = 0.5,
) -> dict[str, float]:
    """A client answered ``warmup`` times (127.0.0.10), then quiet for ``quiet`` s while
    ``hosts`` hosts and ``ports`` ports flood, then asking ``rounds`` times (20 ms apart)
    alongside a new client (127.0.0.11): the share answered and the p99 latency of each.
    ``kind``: the ``sync`` server, the ``asyncio`` one, or the asyncio one with a store
    that blocks (``blocking_io``: its worker thread, as ``serve --nats``). ``flood_rate``:
    the flood's datagrams a second (None: as fast as one process can). ``wait``: how long
    each ask waits for its answer before it counts as unanswered."""
    ctx = multiprocessing.get_context("fork")
    srv_parent, srv_child = ctx.Pipe()
    server_proc = ctx.Process(
        target=_flood_server_main, args=(200_000, kind, srv_child), daemon=True
    )
    server_proc.start()
    port = srv_parent.recv()
    server = ("127.0.0.1", port)
    old = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    old.bind(("127.0.0.10", 0))
    new = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    new.bind(("127.0.0.11", 0))
    warm = _ask_rounds([old], server, warmup, 0.0)[0]
    assert all(math.isfinite(x) for x in warm), warm
    flood_parent, flood_child = ctx.Pipe()
    flood_proc = ctx.Process(
        target=_many_flood_main,
        args=(port, hosts, ports, flood_child, flood_rate),
        daemon=True,
    )
    flood_proc.start()
    assert flood_parent.recv() == "ready"
    flood_parent.send("go")
    started = time.perf_counter()
    time.sleep(quiet)
    got_old, got_new = _ask_rounds([old, new], server, rounds, 0.02, wait)
    flood_parent.send("stop")
    flood_sent = flood_parent.recv()
    flood_seconds = time.perf_counter() - started
    srv_parent.send("stop")
    stats, rss_kib, established = srv_parent.recv()
    flood_proc.join(5)
    server_proc.join(5)
    old.close()
    new.close()

    def p99(xs: list[float]) -> float:
        done = sorted(x for x in xs if math.isfinite(x))
        return done[min(len(done) - 1, int(0.99 * len(done)))] if done else math.inf

    return {
        "old_share": sum(map(math.isfinite, got_old)) / rounds,
        "new_share": sum(map(math.isfinite, got_new)) / rounds,
        "old_p99_ms": 1000 * p99(got_old),
        "new_p99_ms": 1000 * p99(got_new),
        "flood_per_s": flood_sent / flood_seconds,
        "server_requests_per_s": stats.requests / flood_seconds,
        "answers": stats.answers,
        "waited": stats.waited,
        "refused": sum(stats.refused.values()),
        "established": established,
        "sources": stats.sources,
        "peak_rss_mib": rss_kib / 1024,
    }


def peak_rss_kib() -> int:
    """This process's peak RSS (VmHWM: unlike ru_maxrss, not inherited across fork+exec)."""
    try:
        with open("/proc/self/status") as status:
            for line in status:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1])
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss


def _store_child(path: str, conn: multiprocessing.connection.Connection) -> None:
    start = time.perf_counter()
    store = BinaryFileStore(path)
    built = time.perf_counter() - start
    server = RerequestServerCore(SESSION, store, rate_limit=None)
    rng = random.Random(3)
    raw = SESSION.encode()
    n = store.next_seq_num - 1
    start = time.perf_counter()
    answers = 0
    for _ in range(20_000):
        req = struct.pack(">10sQH", raw, rng.randrange(1, n), 100)
        answers += server.handle_request(req, ("127.0.0.1", 1), 0.0) is not None
    served = 20_000 / (time.perf_counter() - start)
    rss_kib = peak_rss_kib()
    conn.send((built, served, rss_kib, store.index_entries, answers))
    store.close()


def binaryfile_store(count: int, directory: str) -> tuple[float, float, float, int, int]:
    """(index build s, answers/s, peak RSS MiB, index entries, file MiB) for a ``count`` file."""
    path = os.path.join(directory, "day.bin")
    pool = make_messages(4096)
    with BinaryFileWriter(path) as writer:
        for i in range(count):
            writer.write(pool[i & 4095])
    size = os.path.getsize(path)
    ctx = multiprocessing.get_context("spawn")  # a fresh interpreter: RSS is the store's own
    parent, child = ctx.Pipe()
    proc = ctx.Process(target=_store_child, args=(path, child))
    proc.start()
    built, served, rss_kib, entries, answers = parent.recv()
    proc.join()
    assert answers == 20_000
    return built, served, rss_kib / 1024, entries, size // (1024 * 1024)


def main(argv: list[str] | None = None) -> dict[str, float]:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--quick", action="store_true", help="a tiny run, for tests")
    parser.add_argument("--messages", type=int, default=None, help="messages to publish")
    parser.add_argument("--requests", type=int, default=None, help="re-requests to answer")
    parser.add_argument(
        "--store-messages", type=int, default=None, help="messages in the BinaryFILE (0: skip)"
    )
    parser.add_argument(
        "--fairness-seconds", type=float, default=None, help="flood length (0: skip)"
    )
    parser.add_argument(
        "--flood-sources",
        type=int,
        default=None,
        help="hosts of the many-source flood (as many ports again / 3; 0: skip)",
    )
    parser.add_argument(
        "--flood-quiet",
        type=float,
        default=None,
        help="seconds the many-source flood runs before the clients ask (default 5; "
        "--quick 2.5)",
    )
    args = parser.parse_args(argv)
    count = args.messages or (20_000 if args.quick else 2_000_000)
    nreq = args.requests or (2_000 if args.quick else 200_000)
    store_count = (
        args.store_messages if args.store_messages is not None else
        (100_000 if args.quick else 10_000_000)
    )  # fmt: skip
    messages = make_messages(count)
    rounds = 1 if args.quick else 3
    core_msgs, core_pkts = max(publish_core(messages) for _ in range(rounds))
    loop_msgs, loop_pkts = max(publish_loopback(messages) for _ in range(rounds))
    aio_msgs, aio_pkts = max(publish_asyncio(messages) for _ in range(rounds))
    requests = requests_for(len(messages), nreq)
    ans_core = max(answers_core(messages, requests) for _ in range(rounds))
    ans_loop = max(answers_loopback(len(messages), requests) for _ in range(rounds))
    ans_aio = max(answers_loopback(len(messages), requests, True) for _ in range(rounds))
    print(f"python {platform.python_version()}, {count:,} ITCH-sized messages, {nreq:,} requests")
    print(f"publish, core:          {core_msgs:12,.0f} messages/s {core_pkts:10,.0f} packets/s")
    print(f"publish, loopback UDP:  {loop_msgs:12,.0f} messages/s {loop_pkts:10,.0f} packets/s")
    print(f"publish, asyncio UDP:   {aio_msgs:12,.0f} messages/s {aio_pkts:10,.0f} packets/s")
    print(f"answers, core:          {ans_core:12,.0f} answers/s (100 asked, ~40 fit)")
    print(f"answers, loopback UDP:  {ans_loop:12,.0f} answers/s ({WINDOW} in flight)")
    print(f"answers, asyncio UDP:   {ans_aio:12,.0f} answers/s ({WINDOW} in flight)")
    out = {
        "publish_core_msgs_per_s": core_msgs,
        "publish_core_packets_per_s": core_pkts,
        "publish_loopback_msgs_per_s": loop_msgs,
        "publish_loopback_packets_per_s": loop_pkts,
        "answers_core_per_s": ans_core,
        "answers_loopback_per_s": ans_loop,
        "publish_asyncio_msgs_per_s": aio_msgs,
        "publish_asyncio_packets_per_s": aio_pkts,
        "answers_asyncio_per_s": ans_aio,
    }
    flood_seconds = (
        args.fairness_seconds if args.fairness_seconds is not None else
        (0.5 if args.quick else 3.0)
    )  # fmt: skip
    if flood_seconds:
        for use_asyncio in (False, True):
            got = fairness(flood_seconds, use_asyncio=use_asyncio)
            kind = "asyncio" if use_asyncio else "blocking"
            print(
                f"fairness, {kind + ':':9}     {100 * got['share']:5.1f}% of a 100/s client's "
                f"requests answered while 8 hosts flood {got['flood_per_s']:,.0f} requests/s "
                f"(server read {got['server_requests_per_s']:,.0f}/s)"
            )
            out[f"fairness_{kind}_share"] = got["share"]
    hosts = args.flood_sources if args.flood_sources is not None else (400 if args.quick else 3000)
    if hosts:
        quiet = args.flood_quiet if args.flood_quiet is not None else (2.5 if args.quick else 5.0)
        ports = hosts // 3
        for kind in ("sync", "asyncio", "blocking_io"):
            got = flood_fairness(hosts=hosts, ports=ports, quiet=quiet, kind=kind)
            print(
                f"flood, {kind + ':':12} {hosts:,} hosts + {ports:,} ports at "
                f"{got['flood_per_s']:,.0f}/s (read {got['server_requests_per_s']:,.0f}/s): "
                f"client answered before {100 * got['old_share']:.0f}% "
                f"p99 {got['old_p99_ms']:.0f} ms, new client {100 * got['new_share']:.0f}% "
                f"p99 {got['new_p99_ms']:.0f} ms, peak RSS {got['peak_rss_mib']:.0f} MiB"
            )
            out[f"flood_{kind}_old_share"] = got["old_share"]
            out[f"flood_{kind}_new_share"] = got["new_share"]
    if store_count:
        with tempfile.TemporaryDirectory() as tmp:
            built, served, rss, entries, mib = binaryfile_store(store_count, tmp)
        print(
            f"BinaryFILE store:       {store_count:,} messages ({mib:,} MiB): index of "
            f"{entries:,} entries built in {built:.2f} s, {served:,.0f} answers/s, "
            f"peak RSS {rss:.1f} MiB"
        )
        out.update(store_index_build_s=built, store_answers_per_s=served, store_peak_rss_mib=rss)
    return out


if __name__ == "__main__":
    main()
