"""The blocking SoupBinTCP client and server, over real sockets on 127.0.0.1."""

from __future__ import annotations

import logging
import socket
import threading
import time
from pathlib import Path

import pytest

from moldudp64.binaryfile import write_binaryfile
from moldudp64.events import Message, MessagesLost, SessionEnded
from moldudp64.soupbintcp import (
    LoginAccepted,
    LoginRejectedError,
    build_login_accepted,
    build_login_request,
)
from moldudp64.store import BinaryFileStore, MemoryStore
from moldudp64.sync.soupbintcp import CannotResume, SoupBinTCP, SoupServer

MESSAGES = [b"m%05d" % i + b"x" * (i % 40) for i in range(1, 20_001)]


@pytest.fixture
def day(tmp_path: Path) -> Path:
    path = tmp_path / "day.bin"
    write_binaryfile(path, MESSAGES)
    return path


def test_a_client_reads_a_recorded_day_from_any_number_and_ends(day: Path) -> None:
    with (
        BinaryFileStore(day) as store,
        SoupServer(store, "TEST000001") as server,
        SoupBinTCP(server.address, session="TEST000001", seq_num=15_001) as client,
    ):
        got = list(client.messages(timeout=10))
    assert got == [Message("TEST000001", 15_001 + i, m) for i, m in enumerate(MESSAGES[15_000:])]
    assert client.core.ended
    stats = server.stats
    assert stats.logins_accepted == 1 and stats.messages_sent == 5_000


def test_ten_clients_at_once_each_get_every_message(day: Path) -> None:
    results: dict[int, list[bytes]] = {}

    def read(i: int, address: tuple[str, int]) -> None:
        with SoupBinTCP(address) as client:
            results[i] = [m.data for m in client.messages(timeout=10)]

    with BinaryFileStore(day) as store, SoupServer(store, "TEST000001") as server:
        threads = [threading.Thread(target=read, args=(i, server.address)) for i in range(10)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(30)
    assert all(results[i] == MESSAGES for i in range(10))


@pytest.mark.parametrize(
    ("kwargs", "reason"),
    [({"username": "bob", "password": "wrong"}, "A"), ({"session": "OTHER"}, "S")],
)
def test_wrong_credentials_or_session_are_rejected(
    day: Path, kwargs: dict[str, str], reason: str
) -> None:
    with (
        BinaryFileStore(day) as store,
        SoupServer(store, "TEST000001", username="bob", password="secret") as server,
    ):
        creds = {"username": "bob", "password": "secret", **kwargs}
        with (
            SoupBinTCP(server.address, **creds) as client,
            pytest.raises(LoginRejectedError) as caught,
        ):
            list(client.events(timeout=5))
        assert caught.value.reason == reason
        assert server.stats.logins_rejected == {reason: 1}


def test_a_live_store_is_served_as_it_grows_then_ends() -> None:
    store = MemoryStore()
    lock = threading.Lock()
    with (
        SoupServer(store, "LIVE", finished=False, lock=lock) as server,
        SoupBinTCP(server.address, seq_num=0) as client,  # 0: from the most recent
    ):
        events = client.events(timeout=5)
        assert next(events) == LoginAccepted("LIVE", 1)
        for i in range(100):
            with lock:
                store.append(b"live%d" % i)
        server.notify()
        server.finish()
        rest = list(events)
    delivered = [m for ev in rest for m in getattr(ev, "messages", [])]
    assert delivered == [b"live%d" % i for i in range(100)]
    assert rest[-1] == SessionEnded("LIVE", 101)


class _DroppingServer:
    """A hand-written server that drops the connection after a few messages, then serves
    the rest to the client's resume (or refuses to listen again)."""

    def __init__(self, drops: int) -> None:
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.address = self.listener.getsockname()
        self.logins: list[bytes] = []
        self.drops = drops
        self.thread = threading.Thread(target=self.run, daemon=True)
        self.thread.start()

    def run(self) -> None:
        for n in range(self.drops + 1):
            conn, _ = self.listener.accept()
            login = conn.recv(49)
            self.logins.append(login)
            asked = int(login[-20:])
            conn.sendall(build_login_accepted("DROPPY", asked))
            conn.sendall(b"".join(b"\x00\x03S" + b"%02d" % s for s in range(asked, asked + 5)))
            if n == self.drops:
                conn.sendall(b"\x00\x01Z")
            conn.close()
        self.listener.close()


def test_the_client_resumes_after_a_dropped_connection() -> None:
    server = _DroppingServer(drops=2)
    with SoupBinTCP(server.address, seq_num=1) as client:
        got = [m.data for m in client.messages(timeout=10)]
    assert got == [b"%02d" % s for s in range(1, 16)]
    assert [int(x[-20:]) for x in server.logins] == [1, 6, 11]
    assert server.logins[1][19:29] == b"DROPPY    "  # the session it was given
    assert client.connections == 3


def test_the_client_gives_up_after_bounded_retries() -> None:
    listener = socket.create_server(("127.0.0.1", 0))
    address = listener.getsockname()
    listener.close()  # nothing listens there any more
    t0 = time.monotonic()
    with SoupBinTCP(address, max_retries=2) as client, pytest.raises(CannotResume):
        list(client.messages(timeout=10))
    assert time.monotonic() - t0 < 2


def test_a_client_that_never_reads_is_disconnected_and_others_go_on(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO, "moldudp64.sync.soupbintcp")
    store = MemoryStore()
    big = [bytes([i % 256]) * 2000 for i in range(10_000)]  # 20 MB: more than the kernel holds
    store.extend(big)
    # timeout 1.5 s: the server's timer must run within it to see the stall before the
    # silence (0.5 s: a loaded machine starved its thread 1.3 s, and the stuck client, who
    # sends every 50 ms, was cut off as "peer silent")
    with SoupServer(store, "TEST000001", max_output=4096, timeout=1.5) as server:
        stuck = socket.create_connection(server.address)
        stuck.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        stuck.sendall(build_login_request("", "", "", 1))
        got: list[int] = []

        def read() -> None:
            with SoupBinTCP(server.address, heartbeat_interval=0.1) as client:
                got.append(len(list(client.messages(timeout=10))))
                got.append(client.connections)

        reader = threading.Thread(target=read)
        reader.start()
        deadline = time.monotonic() + 10
        with pytest.raises(OSError):  # it keeps sending heartbeats until it is cut off
            while time.monotonic() < deadline:
                stuck.send(b"\x00\x01R")
                time.sleep(0.05)
        reader.join(10)
        stuck.close()
        assert got == [len(big), 1]
        assert server.stats.closed.get("client not reading") == 1, server.stats
    assert "disconnected: client not reading" in caplog.text


def test_lost_numbers_are_said_when_the_store_no_longer_holds_them() -> None:
    store = MemoryStore(max_messages=10)
    for i in range(30):
        store.append(b"%d" % i)
    with SoupServer(store, "WINDOW") as server, SoupBinTCP(server.address, seq_num=5) as client:
        events = list(client.events(timeout=5))
    assert events[1] == MessagesLost("WINDOW", 5, 20, "not available on the server")
    assert client.lost_ranges == [events[1]]


def test_a_session_cut_by_a_lost_range_rejects_logins_past_the_cut() -> None:
    """A gateway whose feed lost 11.. for good: served to 10, then cut off with no End of
    Session; a client waiting past the cut is disconnected and its login at or past it
    rejected, never told the day simply ended."""
    store = MemoryStore()
    store.extend([b"m%d" % i for i in range(1, 11)])
    lock = threading.Lock()
    with SoupServer(store, "CUT", finished=False, lock=lock) as server:
        waiting = SoupBinTCP(server.address, seq_num=15, max_retries=1)
        events = waiting.events(timeout=5)
        assert next(events) == LoginAccepted("CUT", 15)  # live: 15 may still come
        with lock:
            server.session.cut_at = 11
        server.finish()
        with pytest.raises(LoginRejectedError):  # its resume at 15 is rejected
            list(events)
        waiting.close()
        with (
            SoupBinTCP(server.address, seq_num=15, max_retries=0) as late,
            pytest.raises(LoginRejectedError),
        ):
            list(late.messages(timeout=5))
        got: list[bytes] = []
        with SoupBinTCP(server.address, seq_num=1) as whole, pytest.raises(LoginRejectedError):
            got.extend(m.data for m in whole.messages(timeout=5))  # to 10, then cut off
        assert got == list(store.get(1, 10, 1 << 20))
        assert whole.next_seq_num == 11  # its resume at 11 was what was rejected


def test_a_full_server_evicts_the_oldest_connection_not_logged_in() -> None:
    store = MemoryStore()
    store.extend([b"a", b"b"])
    with SoupServer(store, "FULL", max_clients=2) as server:
        idle = [socket.create_connection(server.address) for _ in range(2)]
        time.sleep(0.1)
        with SoupBinTCP(server.address, max_retries=0) as client:
            assert [m.data for m in client.messages(timeout=5)] == [b"a", b"b"]
        assert idle[0].recv(10) == b""  # the oldest gave its slot
        for sock in idle:
            sock.close()
        stats = server.stats
        assert stats.closed.get("evicted") == 1 and stats.refused_full == 1
