"""Re-request servers under a flood, over real sockets on 127.0.0.x (issue 11, item 3).

A client within its budget keeps its answers while 8 hosts flood: the server reads in
batches and sheds a flooder's excess before any work, and a client that has been answered
gets its own connected socket on the server's port, so a flood that overflows the
server's socket does not drop its requests in the kernel.
"""

from __future__ import annotations

import asyncio
import importlib
import os
import socket
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType

import pytest

from moldudp64.asyncio.server import AsyncRerequestServer
from moldudp64.rerequest import PeerTable
from moldudp64.store import MemoryStore
from moldudp64.sync.server import RerequestServer
from moldudp64.wire import Packet, RetransmissionPacket

SESSION = "BENCH00001"  # the benchmark's


@pytest.fixture(scope="module")
def bench_server() -> Iterator[ModuleType]:
    bench_dir = str(Path(__file__).resolve().parents[1] / "benchmarks")
    sys.path.insert(0, bench_dir)
    try:
        yield importlib.import_module("bench_server")
    finally:
        sys.path.remove(bench_dir)


@pytest.mark.parametrize("use_asyncio", [False, True], ids=["blocking", "asyncio"])
def test_a_client_keeps_its_answers_while_eight_hosts_flood(
    bench_server: ModuleType, use_asyncio: bool
) -> None:
    """127.0.0.2..9 send as fast as one process can (far over their budget) while
    127.0.0.10 asks 100 times a second: it gets >= 90% of its answers.

    The budget is 200 requests a second per source (``--rate-limit 200``), so that even on
    a loaded machine the server reads far more of the flood than its budget (with the
    default 2,000, 8 hosts may have 16,000 answers a second: more than a loaded machine
    reads of a flood); the flood goes on until the server has refused more than ten
    times what the client asked (at least 1.5 s, at most 30 s): how much of a flood a
    server reads in a given time depends on the machine's load, what it refuses of what
    it read does not."""
    got = bench_server.fairness(
        1.5, client_rate=100.0, use_asyncio=use_asyncio, refused_per_ask=10, rate=200
    )
    assert got["asked"] >= 140
    assert got["share"] >= 0.9, got
    assert got["refused_rate_limited"] > 10 * got["asked"], got  # the flood was shed
    # ... and all it got is within the 8 hosts' budgets (200 answers a second each, a
    # second's burst; or, as new sources, their first 32 and the class's half-second debt)
    # over the flood and the 1 s the server still reads its tail
    budget = 8 * 200 * (got["seconds"] + 2) + 8 * 32 + 100
    assert got["server_answers"] - got["asked"] <= budget, got


def store() -> MemoryStore:
    s = MemoryStore()
    s.extend([b"m%05d" % i for i in range(1000)])
    return s


def ask(sock: socket.socket, server: tuple[str, int], seq: int) -> Packet:
    sock.sendto(RetransmissionPacket(SESSION, seq, 1).build(), server)
    return Packet.parse(sock.recv(65535))


def open_fds() -> int:
    return len(os.listdir("/proc/self/fd"))


def test_a_known_client_is_not_dropped_when_the_servers_socket_overflows() -> None:
    """Hold the server (its lock) while a flood overflows its small socket buffer: the
    request of a client it answered before still arrives, on that client's own socket."""
    fds = open_fds()
    lock = threading.Lock()
    with RerequestServer(SESSION, store(), rcvbuf=64 * 1024, lock=lock) as srv:
        client = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        client.bind(("127.0.0.10", 0))
        client.settimeout(5)
        assert ask(client, srv.address, 1).seq_num == 1
        assert ask(client, srv.address, 2).seq_num == 2  # the second answer adopts it
        flooder = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        flooder.bind(("127.0.0.2", 0))
        with lock:  # the server stops reading
            for _ in range(20_000):
                flooder.sendto(RetransmissionPacket(SESSION, 1, 1).build(), srv.address)
            client.sendto(RetransmissionPacket(SESSION, 7, 1).build(), srv.address)
        answer = Packet.parse(client.recv(65535))
        assert answer.seq_num == 7 and [bytes(m) for m in answer] == [b"m00006"]
        assert srv.stats.requests < 20_000  # the flood did overflow the server's socket
        client.close()
        flooder.close()
    assert open_fds() == fds  # the client's own socket is closed with the server


def test_asyncio_server_gives_known_clients_their_own_socket() -> None:
    async def main() -> None:
        fds = open_fds()
        srv = await AsyncRerequestServer.create(SESSION, store(), rcvbuf=64 * 1024)
        loop = asyncio.get_running_loop()
        client = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        client.bind(("127.0.0.10", 0))
        client.setblocking(False)

        async def ask_async(seq: int) -> Packet:
            await loop.sock_sendto(
                client, RetransmissionPacket(SESSION, seq, 1).build(), srv.address
            )
            return Packet.parse(await asyncio.wait_for(loop.sock_recv(client, 65535), 5))

        assert (await ask_async(1)).seq_num == 1
        assert (await ask_async(2)).seq_num == 2
        flooder = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        flooder.bind(("127.0.0.2", 0))
        # the loop does not run while this floods: the server's socket overflows
        for _ in range(20_000):
            flooder.sendto(RetransmissionPacket(SESSION, 1, 1).build(), srv.address)
        client.sendto(RetransmissionPacket(SESSION, 7, 1).build(), srv.address)
        answers = []
        while not answers or answers[-1].seq_num != 7:
            answers.append(Packet.parse(await asyncio.wait_for(loop.sock_recv(client, 65535), 5)))
        assert srv.stats.requests < 20_000
        srv.close()
        client.close()
        flooder.close()
        await asyncio.sleep(0)  # the transport closes its socket on the next loop turn
        assert open_fds() == fds

    asyncio.run(main())


def test_many_sources_asking_twice_make_few_sockets() -> None:
    """Sources answered twice get their own socket at most 64 a second (after a burst of
    64): a crowd of sources cannot make the server churn sockets. Each client asks right
    after its answer, racing the server's bind() and connect() of the previous client's
    socket: a request that lands there meanwhile is still answered to its sender."""
    with RerequestServer(SESSION, store()) as srv:
        fds = open_fds()
        clients = []
        for i in range(200):
            sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
            sock.bind((f"127.0.{1 + i // 200}.{20 + i % 200}", 0))
            sock.settimeout(5)
            clients.append(sock)
        started = time.monotonic()
        for sock in clients:
            for seq in (1, 2):
                assert ask(sock, srv.address, seq).seq_num == seq
        elapsed = time.monotonic() - started
        assert srv.stats.answers == 400
        made = open_fds() - fds - len(clients)
        assert 64 <= made <= 64 + 64 * elapsed + 1  # a burst of 64, then 64 a second
        for sock in clients:
            sock.close()


def adopt(sock: socket.socket, server: tuple[str, int]) -> None:
    """Two answers: the server gives ``sock``'s address its own socket."""
    for seq in (1, 2):
        assert ask(sock, server, seq).seq_num == seq


@pytest.mark.parametrize("use_asyncio", [False, True], ids=["blocking", "asyncio"])
def test_a_full_table_of_active_clients_does_not_push_one_out(use_asyncio: bool) -> None:
    """Issue 18, item 9: sources answered twice while the table of adopted clients is full
    of active ones are not adopted; before, each pushed out the least recently active, so
    a flood emptied the table of a real client within seconds."""

    async def main() -> None:
        srv: RerequestServer | AsyncRerequestServer
        if use_asyncio:
            srv = await AsyncRerequestServer.create(SESSION, store())
        else:
            srv = RerequestServer(SESSION, store()).start()
        srv._peers = PeerTable(max_peers=3)
        loop = asyncio.get_running_loop()
        socks = []
        try:
            for i in range(8):
                sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
                sock.bind((f"127.0.0.{30 + i}", 0))
                sock.settimeout(5)
                socks.append(sock)
                await loop.run_in_executor(None, adopt, sock, srv.address)
            first = [s.getsockname() for s in socks[:3]]
            assert sorted(srv._peers.addresses()) == sorted(first)
        finally:
            for sock in socks:
                sock.close()
            srv.close()

    asyncio.run(main())


@pytest.mark.parametrize("kind", ["sync", "asyncio"])
def test_old_and_new_clients_are_answered_during_a_flood_from_many_sources(
    bench_server: ModuleType, kind: str
) -> None:
    """A bounded version of the benchmark's row (issue 18, item 9): 400 hosts plus 100
    ports flood; a client answered 20 times before and a new one each ask 10 times.

    Each ask waits 2 s for its answer (the benchmark's 0.5 s is a latency target): a
    new client's request queues in the server's socket behind the flood, and on a loaded
    machine the server reads that queue slowly (60% answered within 0.5 s, p99 470 ms,
    beside 3 busy loops). A refused or dropped request is never answered: still a miss."""
    got = bench_server.flood_fairness(
        hosts=400, ports=100, quiet=2.5, rounds=10, kind=kind, wait=2.0
    )
    assert got["old_share"] >= 0.9, got
    assert got["new_share"] >= 0.9, got
