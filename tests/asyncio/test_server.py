"""asyncio AsyncRerequestServer and AsyncPublisher over real sockets."""

from __future__ import annotations

import asyncio
import random
import socket
import struct
import threading
from collections.abc import AsyncIterator

import pytest

from moldudp64.asyncio.server import AsyncPublisher, AsyncRerequestServer
from moldudp64.exceptions import ConfigError, MessageTooLarge
from moldudp64.faults import FaultInjector
from moldudp64.net import open_multicast_receiver
from moldudp64.rerequest import RateLimit
from moldudp64.store import MemoryStore
from moldudp64.wire import Packet, PacketKind, split_blocks

SESSION = "ASYNCSRV01"
RNG = random.Random(77)
MESSAGES = [RNG.randbytes(RNG.randrange(0, 150)) for _ in range(2000)]


def request(seq: int, count: int, session: str = SESSION) -> bytes:
    return struct.pack(">10sQH", session.encode(), seq, count)


def longest_prefix(seq: int, count: int, max_payload: int = 1452) -> list[bytes]:
    out: list[bytes] = []
    used = 0
    for m in MESSAGES[seq - 1 : seq - 1 + count]:
        used += 2 + len(m)
        if used > max_payload:
            break
        out.append(m)
    return out


def full_store() -> MemoryStore:
    store = MemoryStore()
    for m in MESSAGES:
        store.append(m)
    return store


class Client(asyncio.DatagramProtocol):
    """A test client endpoint collecting what it receives."""

    def __init__(self) -> None:
        self.queue: asyncio.Queue[bytes] = asyncio.Queue()

    def datagram_received(self, data: bytes, addr: object) -> None:
        self.queue.put_nowait(data)

    async def recv(self, timeout: float = 5.0) -> bytes:
        return await asyncio.wait_for(self.queue.get(), timeout)


async def open_client(host: str = "127.0.0.1") -> tuple[asyncio.DatagramTransport, Client]:
    loop = asyncio.get_running_loop()
    transport, protocol = await loop.create_datagram_endpoint(Client, local_addr=(host, 0))
    return transport, protocol


def test_async_server_answers_random_ranges_exactly() -> None:
    async def main() -> None:
        async with await AsyncRerequestServer.create(SESSION, full_store()) as srv:
            transport, client = await open_client()
            rng = random.Random(5)
            for _ in range(150):
                seq = rng.randrange(1, len(MESSAGES) + 1)
                count = rng.choice([1, rng.randrange(1, 30), 0xFFFF])
                transport.sendto(request(seq, count), srv.address)
                answer = await client.recv()
                assert Packet.parse(answer).seq_num == seq
                assert split_blocks(answer) == longest_prefix(seq, count)
            assert srv.stats.answers == 150
            transport.close()

    asyncio.run(main())


def test_async_server_is_silent_on_bad_requests_and_counts_them() -> None:
    bad = [
        (request(1, 1)[:10], "bad_length"),
        (request(1, 1, "NOTMINE001"), "wrong_session"),
        (request(0, 1), "seq_zero"),
        (request(1, 0), "count_zero"),
        (request(5000, 1), "not_held"),
    ]

    async def main() -> None:
        async with await AsyncRerequestServer.create(SESSION, full_store()) as srv:
            transport, client = await open_client()
            for data, _ in bad:
                transport.sendto(data, srv.address)
            transport.sendto(request(9, 1), srv.address)  # answered after all the bad ones
            answer = await client.recv()
            assert split_blocks(answer) == [MESSAGES[8]]
            assert client.queue.empty()
            refused = {k: v for k, v in srv.stats.refused.items() if v}
            assert refused == {reason: 1 for _, reason in bad}
            transport.close()

    asyncio.run(main())


def test_async_rate_limit_under_flood_with_second_source_served() -> None:
    async def main() -> None:
        limit = RateLimit(requests_per_second=10, bytes_per_second=1e9)
        async with await AsyncRerequestServer.create(
            SESSION, full_store(), rate_limit=limit
        ) as srv:
            transport, flooder = await open_client("127.0.0.1")
            loop = asyncio.get_running_loop()
            started = loop.time()
            for i in range(500):
                transport.sendto(request(1 + i, 3), srv.address)
                if i % 50 == 0:
                    await asyncio.sleep(0)
            while srv.stats.requests < 500:
                await asyncio.sleep(0.005)
            elapsed = loop.time() - started
            await asyncio.sleep(0.05)
            answered = flooder.queue.qsize()
            assert 10 <= answered <= 10 + 10 * (elapsed + 0.05) + 1
            # the few that wait for budget come out of the server's timer within 0.5 s
            await asyncio.sleep(0.6)
            assert srv.stats.waited >= 1 and srv.stats.waiting == 0
            assert flooder.queue.qsize() == srv.stats.answers
            other_t, other = await open_client("127.0.0.2")
            other_t.sendto(request(3, 2), srv.address)
            assert split_blocks(await other.recv()) == MESSAGES[2:4]
            transport.close()
            other_t.close()

    asyncio.run(main())


def test_async_server_answer_faults_duplicate() -> None:
    async def main() -> None:
        faults = FaultInjector(duplicate=1.0, seed=3)
        async with await AsyncRerequestServer.create(SESSION, full_store(), faults=faults) as srv:
            transport, client = await open_client()
            transport.sendto(request(1, 1), srv.address)
            assert await client.recv() == await client.recv()
            transport.close()

    asyncio.run(main())


async def collect_until_eos(rx: socket.socket, timeout: float = 5.0) -> list[bytes]:
    loop = asyncio.get_running_loop()
    out: list[bytes] = []
    while True:
        data = await asyncio.wait_for(loop.sock_recv(rx, 65535), timeout)
        out.append(data)
        if Packet(data).packet_kind is PacketKind.END_OF_SESSION:
            return out


def test_async_publisher_to_multicast_with_rerequests(multicast: None) -> None:
    group = ("239.6.6.6", 31006)

    async def main() -> None:
        rx = open_multicast_receiver(*group, interface_addr="127.0.0.1")
        async with AsyncPublisher(
            SESSION,
            group,
            interface_addr="127.0.0.1",
            rerequest_bind=("127.0.0.1", 0),
            end_of_session_duration=0.05,
            end_of_session_interval=0.01,
        ) as pub:
            receiving = asyncio.create_task(collect_until_eos(rx))

            async def feed() -> AsyncIterator[bytes]:
                for m in MESSAGES:
                    yield m

            result = await pub.run(feed(), rate=200_000)
            assert result.messages == len(MESSAGES) and pub.ended
            packets = await receiving
            transport, client = await open_client()
            assert pub.rerequest_address is not None
            transport.sendto(request(1999, 5), pub.rerequest_address)
            assert split_blocks(await client.recv()) == MESSAGES[1998:]
            transport.close()
        rx.close()
        got: list[bytes] = []
        for p in packets:
            packet = Packet.parse(p)
            if packet.packet_kind is PacketKind.STANDARD:
                assert packet.seq_num == len(got) + 1
                got += split_blocks(p)
        assert got == MESSAGES
        assert Packet(packets[-1]).seq_num == len(MESSAGES) + 1
        assert result.stats.end_of_session >= 1

    asyncio.run(main())


def test_async_publisher_heartbeats_from_call_at() -> None:
    async def main() -> None:
        transport, client = await open_client()
        dest = transport.get_extra_info("sockname")
        async with AsyncPublisher(
            SESSION,
            (dest[0], dest[1]),
            unicast=True,
            heartbeat_interval=0.02,
            end_of_session_duration=0.0,
        ) as pub:
            assert pub.publish(b"one") == 1
            assert split_blocks(await client.recv()) == [b"one"]
            beat = Packet.parse(await client.recv())
            assert (beat.packet_kind, beat.seq_num) == (PacketKind.HEARTBEAT, 2)
            assert pub.publish_many([b"two", b"three"]) == range(2, 4)
            assert split_blocks(await client.recv()) == [b"two", b"three"]
            assert await pub.end_session()
            eos = Packet.parse(await client.recv())
            assert (eos.packet_kind, eos.seq_num) == (PacketKind.END_OF_SESSION, 4)
        transport.close()

    asyncio.run(main())


def test_async_publisher_stop_and_errors() -> None:
    async def main() -> None:
        transport, _client = await open_client()
        dest = transport.get_extra_info("sockname")
        pub = AsyncPublisher(SESSION, (dest[0], dest[1]), unicast=True, heartbeat_interval=None)
        with pytest.raises(ConfigError):
            pub.publish(b"too early")
        await pub.start()

        async def endless() -> AsyncIterator[bytes]:
            while True:
                yield b"x"

        asyncio.get_running_loop().call_later(0.05, pub.stop)
        result = await pub.run(endless(), rate=2000)
        assert result.stopped and result.messages > 0
        with pytest.raises(ConfigError):
            await pub.run([], rate=-1)
        pub.close()
        with pytest.raises(ConfigError):
            pub.publish(b"closed")
        transport.close()

    asyncio.run(main())
    with pytest.raises(ConfigError):
        AsyncPublisher(SESSION, ("127.0.0.1", 0), unicast=True)
    with pytest.raises(ConfigError, match=r"'127\.0\.0\.1' is not a multicast group"):
        AsyncPublisher(SESSION, ("127.0.0.1", 30001))


def test_async_run_that_fails_still_ends_the_session() -> None:
    async def main() -> None:
        transport, rx = await open_client()
        dest = transport.get_extra_info("sockname")
        async with AsyncPublisher(
            SESSION, (dest[0], dest[1]), unicast=True, heartbeat_interval=None,
            end_of_session_duration=0.05, end_of_session_interval=0.05,
        ) as pub:  # fmt: skip
            with pytest.raises(MessageTooLarge):
                await pub.run([b"a" * 10] * 3 + [b"B" * 3000], batch_size=1)
            assert pub.ended
        got: list[bytes] = []
        while (packet := Packet.parse(await rx.recv())).packet_kind is PacketKind.STANDARD:
            got.extend(bytes(m) for m in packet)
        assert got == [b"a" * 10] * 3
        assert (packet.packet_kind, packet.seq_num) == (PacketKind.END_OF_SESSION, 4)
        transport.close()

    asyncio.run(main())


class GatedStore(MemoryStore):
    """A store that says its reads may block (as JetStreamStore does); each get() waits for
    the test to open the gate, so the test sees what the loop does meanwhile."""

    blocking_io = True

    def __init__(self) -> None:
        super().__init__()
        self.gate = threading.Event()
        self.entered = threading.Event()
        self.calls_in_loop_thread = 0

    def get(self, seq_num: int, max_count: int, max_bytes: int) -> list[bytes]:
        if threading.current_thread() is threading.main_thread():
            self.calls_in_loop_thread += 1
        self.entered.set()
        self.gate.wait(10)
        return super().get(seq_num, max_count, max_bytes)


def test_a_blocking_store_is_read_off_the_loop_which_keeps_running() -> None:
    async def main() -> None:
        store = GatedStore()
        for m in MESSAGES:
            store.append(m)
        async with await AsyncRerequestServer.create(SESSION, store) as srv:
            transport, client = await open_client()
            transport.sendto(request(7, 2), srv.address)
            while not store.entered.is_set():  # this coroutine runs: the loop is free...
                await asyncio.sleep(0.005)
            assert not store.gate.is_set()  # ...while get() is still waiting
            assert client.queue.empty()
            store.gate.set()
            answer = await client.recv()
            assert (Packet.parse(answer).seq_num, split_blocks(answer)) == (7, MESSAGES[6:8])
            assert store.calls_in_loop_thread == 0
            transport.close()

    asyncio.run(main())


def test_a_blocking_store_answers_in_order_and_drops_a_flood_beyond_the_queue_counted() -> None:
    async def main() -> None:
        store = GatedStore()
        for m in MESSAGES:
            store.append(m)
        async with await AsyncRerequestServer.create(SESSION, store, rate_limit=None) as srv:
            transport, client = await open_client()
            transport.sendto(request(1, 1), srv.address)
            while not store.entered.is_set():
                await asyncio.sleep(0.005)
            # the worker is held in get(): 40 more requests, a batch each, queue behind it
            for seq in range(2, 42):
                transport.sendto(request(seq, 1), srv.address)
                await asyncio.sleep(0.01)  # one datagram per read: one batch each
            deadline = asyncio.get_running_loop().time() + 5
            while srv.stats.requests < 41 - 16:  # those beyond the queue counted at once
                assert asyncio.get_running_loop().time() < deadline, srv.stats
                await asyncio.sleep(0.005)
            store.gate.set()
            got = []
            while True:
                try:
                    got.append(Packet.parse(await client.recv(2.0)).seq_num)
                except TimeoutError:
                    break
            stats = srv.stats
            busy = stats.refused["busy"]
            assert stats.requests == 41
            assert busy > 0 and len(got) == 41 - busy
            assert got == sorted(got) and got[0] == 1  # answered in arrival order
            assert stats.answers == len(got)
            transport.close()

    asyncio.run(main())


def test_a_blocking_store_answers_requests_that_waited_for_budget_from_its_worker() -> None:
    """Over the rate limit, requests wait for budget; the timer's turn (answers_due) runs in
    the worker thread too, and every waiting request is answered, in order."""

    async def main() -> None:
        store = GatedStore()
        store.gate.set()  # no holding back: only where get() runs is watched
        for m in MESSAGES:
            store.append(m)
        limit = RateLimit(requests_per_second=20, bytes_per_second=1e9, burst_seconds=0.1)
        async with await AsyncRerequestServer.create(SESSION, store, rate_limit=limit) as srv:
            transport, client = await open_client()
            for seq in range(1, 7):
                transport.sendto(request(seq, 1), srv.address)
            got = [Packet.parse(await client.recv()).seq_num for _ in range(6)]
            stats = srv.stats
            assert got == [1, 2, 3, 4, 5, 6]
            assert stats.waited >= 4 and stats.answers == 6
            assert sum(stats.refused.values()) == 0
            assert store.calls_in_loop_thread == 0
            transport.close()

    asyncio.run(main())


class RecordingGatedStore(GatedStore):
    """A GatedStore that records the sequence number of each read, in order."""

    def __init__(self) -> None:
        super().__init__()
        self.reads: list[int] = []

    def get(self, seq_num: int, max_count: int, max_bytes: int) -> list[bytes]:
        self.reads.append(seq_num)
        return super().get(seq_num, max_count, max_bytes)


def test_a_blocking_store_reads_a_new_clients_request_ahead_of_a_many_source_flood() -> None:
    """``serve --nats`` (issue 18, item 10): while the worker is held in a read, 300 hosts
    send 40 requests each (more than a newcomer's allowance) and the core reads none of
    them; then a new client asks. Its request is read next, before any of the flood's: a
    source's first requests count as the server *received* them, so the flood's sources
    are not newcomers for ever, filling the lane a new client's first requests take."""
    from moldudp64.asyncio import server as server_module

    async def main() -> None:
        store = RecordingGatedStore()
        for m in MESSAGES:
            store.append(m)
        async with await AsyncRerequestServer.create(SESSION, store) as srv:
            srv._answer_batch([(request(1, 1), ("127.3.0.1", 9))])  # holds the worker
            while not store.entered.is_set():
                await asyncio.sleep(0.005)
            flood = [
                (request(2 + k % 1000, 1), (f"127.1.{host // 250}.{1 + host % 250}", 9))
                for k in range(40)
                for host in range(300)
            ]
            for i in range(0, len(flood), 256):  # as the loop reads them, a batch at a time
                srv._answer_batch(flood[i : i + 256])
            transport, client = await open_client("127.0.0.11")
            srv._answer_batch([(request(1500, 1), transport.get_extra_info("sockname"))])
            store.gate.set()
            answer = await client.recv()
            assert Packet.parse(answer).seq_num == 1500
            assert store.reads[0] == 1
            # read in the chunk after the held one, before any of the flood's
            assert 1500 in store.reads[1 : 1 + server_module._WORKER_CHUNK]
            assert store.reads.index(1500) == 1
            assert srv.stats.refused["busy"] > 0  # the flood, beyond the shared queue
            transport.close()

    asyncio.run(main())


@pytest.mark.parametrize("opened", ["before the loop ends", "after the loop ended"])
def test_closing_while_a_blocking_get_is_in_flight_sends_nothing_and_raises_nothing(
    opened: str, caplog: pytest.LogCaptureFixture
) -> None:
    """close() with the worker held in get(): the answer the worker computes after the
    close is never sent, and neither the loop nor the worker's thread report an error,
    whether get() returns while the loop still runs or after it has closed."""
    errors: list[dict[str, object]] = []
    store = GatedStore()
    for m in MESSAGES:
        store.append(m)

    async def main() -> None:
        asyncio.get_running_loop().set_exception_handler(lambda _, ctx: errors.append(ctx))
        srv = await AsyncRerequestServer.create(SESSION, store)
        transport, client = await open_client()
        transport.sendto(request(3, 2), srv.address)
        while not store.entered.is_set():
            await asyncio.sleep(0.005)
        srv.close()
        if opened == "before the loop ends":
            store.gate.set()
        with pytest.raises(TimeoutError):
            await client.recv(0.5)
        srv.close()  # again: nothing to do
        transport.close()

    asyncio.run(main())
    store.gate.set()
    for thread in threading.enumerate():
        if thread.name.startswith("moldudp64-store"):
            thread.join(10)
            assert not thread.is_alive()
    assert errors == []
    assert [r for r in caplog.records if r.levelname in ("ERROR", "CRITICAL")] == []


def test_a_blocking_store_serves_an_adopted_client_before_the_flood_queued_ahead() -> None:
    """Issue 18, item 10 (``serve --nats``): while the worker thread is held, a flood
    queues behind it; a client adopted before (its own socket) is answered next, not
    after the flood's batches."""

    async def main() -> None:
        store = GatedStore()
        store.gate.set()
        for m in MESSAGES:
            store.append(m)
        async with await AsyncRerequestServer.create(SESSION, store, rate_limit=None) as srv:
            transport, client = await open_client("127.0.0.40")
            for seq in (1, 2):  # two answers: it gets its own socket
                transport.sendto(request(seq, 1), srv.address)
                assert Packet.parse(await client.recv(5.0)).seq_num == seq
            assert len(srv._peers) == 1
            store.gate.clear()
            store.entered.clear()
            flood_transport, flood = await open_client("127.0.0.41")
            flood_transport.sendto(request(100, 1), srv.address)
            while not store.entered.is_set():  # the worker is held in get()
                await asyncio.sleep(0.005)
            for seq in range(101, 113):  # a batch each: they queue behind it
                flood_transport.sendto(request(seq, 1), srv.address)
                await asyncio.sleep(0.01)
            transport.sendto(request(7, 1), srv.address)
            await asyncio.sleep(0.05)
            arrived: list[tuple[int, str]] = []  # in the order the loop received them
            client.datagram_received = lambda data, addr: arrived.append(  # type: ignore[method-assign]
                (Packet.parse(data).seq_num, "client")
            )
            flood.datagram_received = lambda data, addr: arrived.append(  # type: ignore[method-assign]
                (Packet.parse(data).seq_num, "flood")
            )
            store.gate.set()
            deadline = asyncio.get_running_loop().time() + 5
            while len(arrived) < 14 and asyncio.get_running_loop().time() < deadline:
                await asyncio.sleep(0.01)
            # at most the one the worker held came first (in arrival order all 13 did)
            assert arrived.index((7, "client")) <= 1, arrived
            transport.close()
            flood_transport.close()

    asyncio.run(main())
