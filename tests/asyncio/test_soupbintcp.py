"""The asyncio SoupBinTCP client and server, over real sockets on 127.0.0.1 (and against
the blocking ones)."""

from __future__ import annotations

import asyncio
import socket
import threading

import pytest

from moldudp64.asyncio.soupbintcp import AsyncSoupBinTCP, AsyncSoupServer
from moldudp64.events import Message, SessionEnded
from moldudp64.soupbintcp import (
    CannotResume,
    LoginAccepted,
    LoginRejectedError,
    build_login_accepted,
    build_login_request,
)
from moldudp64.store import MemoryStore
from moldudp64.sync.soupbintcp import SoupBinTCP, SoupServer

MESSAGES = [b"m%05d" % i + b"x" * (i % 40) for i in range(1, 20_001)]


def store_of(messages: list[bytes]) -> MemoryStore:
    store = MemoryStore()
    store.extend(messages)
    return store


def test_async_client_reads_the_async_server_from_any_number() -> None:
    async def main() -> list[Message]:
        async with (
            AsyncSoupServer(store_of(MESSAGES), "S1") as server,
            AsyncSoupBinTCP(server.address, seq_num=19_001) as client,
        ):
            return [m async for m in client.messages(timeout=10)]

    got = asyncio.run(main())
    assert got == [Message("S1", 19_001 + i, m) for i, m in enumerate(MESSAGES[19_000:])]


def test_each_async_driver_talks_to_the_other_kind() -> None:
    # asyncio client, blocking server
    with SoupServer(store_of(MESSAGES), "S1") as server:

        async def read() -> list[bytes]:
            async with AsyncSoupBinTCP(server.address) as client:
                return [m.data async for m in client.messages(timeout=10)]

        assert asyncio.run(read()) == MESSAGES

    # blocking client (in a thread), asyncio server
    async def serve() -> list[bytes]:
        async with AsyncSoupServer(store_of(MESSAGES), "S1") as server:
            got: list[bytes] = []

            def read() -> None:
                with SoupBinTCP(server.address) as client:
                    got.extend(m.data for m in client.messages(timeout=10))

            await asyncio.to_thread(read)
            assert server.stats.logins_accepted == 1
            return got

    assert asyncio.run(serve()) == MESSAGES


def test_ten_async_clients_each_at_its_own_pace() -> None:
    async def main() -> list[int]:
        async with AsyncSoupServer(store_of(MESSAGES), "S1") as server:

            async def one(slow: bool) -> int:
                n = 0
                async with AsyncSoupBinTCP(server.address) as client:
                    async for _ in client.messages(timeout=10):
                        n += 1
                        if slow and n % 2000 == 0:
                            await asyncio.sleep(0.01)
                return n

            return await asyncio.gather(*(one(i % 2 == 0) for i in range(10)))

    assert asyncio.run(main()) == [len(MESSAGES)] * 10


@pytest.mark.parametrize(("password", "code"), [("wrong", "A"), ("pw", "S")])
def test_async_rejections(password: str, code: str) -> None:
    async def main() -> None:
        async with AsyncSoupServer(store_of(MESSAGES), "S1", username="u", password="pw") as srv:
            session = "S1" if code == "A" else "OTHER"
            async with AsyncSoupBinTCP(
                srv.address, username="u", password=password, session=session
            ) as client:
                with pytest.raises(LoginRejectedError) as caught:
                    [m async for m in client.messages(timeout=5)]
                assert caught.value.reason == code

    asyncio.run(main())


def test_async_live_store_and_end_of_session() -> None:
    async def main() -> list[object]:
        store = MemoryStore()
        async with (
            AsyncSoupServer(store, "LIVE", finished=False) as server,
            AsyncSoupBinTCP(server.address, seq_num=0) as client,
        ):
            events = client.events(timeout=5)
            assert await anext(events) == LoginAccepted("LIVE", 1)
            store.extend([b"a", b"b"])
            server.notify()
            server.finish()
            return [ev async for ev in events]

    events = asyncio.run(main())
    assert events[-1] == SessionEnded("LIVE", 3)


def test_async_client_resumes_and_gives_up_after_bounded_retries() -> None:
    listener = socket.create_server(("127.0.0.1", 0))
    address = listener.getsockname()
    logins: list[int] = []

    def drop_after_two() -> None:
        for _ in range(2):
            conn, _ = listener.accept()
            asked = int(conn.recv(49)[-20:])
            logins.append(asked)
            conn.sendall(build_login_accepted("DROPPY", asked) + b"\x00\x02Sa\x00\x02Sb")
            conn.close()
        listener.close()  # nothing to resume from any more

    threading.Thread(target=drop_after_two, daemon=True).start()

    async def main() -> list[Message]:
        got: list[Message] = []
        client = AsyncSoupBinTCP(address, max_retries=2)
        with pytest.raises(CannotResume):
            async for m in client.messages(timeout=10):
                got.append(m)
        await client.close()
        assert client.connections == 4  # two served, then two refused reconnects
        return got

    got = asyncio.run(main())
    assert [m.seq_num for m in got] == [1, 2, 3, 4]
    assert logins == [1, 3]


def test_async_server_cuts_off_a_client_that_never_reads() -> None:
    big = [bytes([i % 256]) * 2000 for i in range(10_000)]

    async def main() -> dict[str, int]:
        async with AsyncSoupServer(store_of(big), "S1", max_output=4096, timeout=0.5) as srv:
            _, writer = await asyncio.open_connection(*srv.address)
            sock = writer.get_extra_info("socket")
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
            writer.write(build_login_request("", "", "", 1))
            for _ in range(100):  # heartbeats, never a read
                writer.write(b"\x00\x01R")
                await asyncio.sleep(0.05)
                if srv.stats.closed:
                    break
            writer.close()
            return srv.stats.closed

    assert asyncio.run(main()) == {"client not reading": 1}


class _NetworkStore(MemoryStore):
    """A store whose reads wait (as JetStreamStore's may): says blocking_io, records the
    thread each read ran in."""

    blocking_io = True

    def __init__(self) -> None:
        super().__init__()
        self.threads: set[int] = set()

    def get(self, seq_num: int, max_count: int, max_bytes: int) -> list[bytes]:
        self.threads.add(threading.get_ident())
        return super().get(seq_num, max_count, max_bytes)


def test_a_blocking_store_is_read_off_the_loop() -> None:
    store = _NetworkStore()
    store.extend(MESSAGES)

    async def main() -> tuple[list[bytes], int]:
        async with (
            AsyncSoupServer(store, "S1") as server,
            AsyncSoupBinTCP(server.address) as client,
        ):
            got = [m.data async for m in client.messages(timeout=10)]
            return got, threading.get_ident()

    got, loop_thread = asyncio.run(main())
    assert got == MESSAGES
    assert store.threads and loop_thread not in store.threads


def test_async_server_evicts_the_oldest_connection_not_logged_in() -> None:
    async def main() -> tuple[list[bytes], bytes]:
        loop = asyncio.get_running_loop()
        async with AsyncSoupServer(store_of([b"a", b"b"]), "FULL", max_clients=2) as server:
            idle = [
                await loop.run_in_executor(None, socket.create_connection, server.address)
                for _ in range(2)
            ]
            await asyncio.sleep(0.1)
            async with AsyncSoupBinTCP(server.address, max_retries=0) as client:
                got = [m.data async for m in client.messages(timeout=5)]
            idle[0].settimeout(5)
            first = await loop.run_in_executor(None, idle[0].recv, 10)
            for sock in idle:
                sock.close()
            assert server.stats.closed.get("evicted") == 1
            return got, first

    got, first = asyncio.run(main())
    assert got == [b"a", b"b"]
    assert first == b""


def test_async_client_refuses_an_accept_below_the_number_asked_for() -> None:
    listener = socket.create_server(("127.0.0.1", 0))

    def serve() -> None:
        conn, _ = listener.accept()
        conn.recv(49)
        conn.sendall(build_login_accepted("S1", 3) + b"\x00\x02S3\x00\x02S4\x00\x01Z")
        conn.recv(10)
        conn.close()

    threading.Thread(target=serve, daemon=True).start()

    async def main() -> list[int]:
        seqs: list[int] = []
        async with AsyncSoupBinTCP(listener.getsockname(), seq_num=5, max_retries=0) as c:
            with pytest.raises(CannotResume, match="behind the 5 asked for"):
                async for message in c.messages(timeout=5):
                    seqs.append(message.seq_num)
        return seqs

    try:
        assert asyncio.run(main()) == []
    finally:
        listener.close()
