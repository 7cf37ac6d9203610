"""Hostile SoupBinTCP peers: against the cores (seeded random input) and against the
blocking server and client on real sockets. Clear errors, bounded memory, no hang."""

from __future__ import annotations

import random
import socket
import threading
import time
from collections.abc import Callable

import pytest

from moldudp64.events import MessagesDelivered, SessionEnded
from moldudp64.soupbintcp import (
    CannotResume,
    SoupClientCore,
    SoupServerCore,
    build_login_accepted,
    build_login_request,
)
from moldudp64.store import MemoryStore
from moldudp64.sync.soupbintcp import SoupBinTCP, SoupServer

MESSAGES = [b"msg%d" % i for i in range(1, 1001)]


# --------------------------------------------------------------------------- cores


@pytest.mark.parametrize("seed", range(20))
def test_random_bytes_never_raise_and_hold_at_most_one_packet(seed: int) -> None:
    rng = random.Random(seed)
    client = SoupClientCore()
    server = SoupServerCore()
    client.connect(0.0)
    server.connected(0.0)
    client.receive(build_login_accepted("S", 1), 0.0)
    for step in range(300):
        size = rng.choice([1, 2, 3, 50, 4000, 70_000])
        kinds = b"SHZAJU+?L\x00\xff"
        chunk = bytes(rng.choice(kinds) if rng.random() < 0.3 else rng.randrange(256)
                      for _ in range(min(size, 200))) * (size // 200 + 1)  # fmt: skip
        for core in (client, server):
            core.receive(chunk[:size], step * 0.01)
            core.handle_timer(step * 0.01)
            core.events_received()
            assert len(core._in) <= 65_537
            if not core.is_open:  # a real driver reconnects; here: a fresh connection
                if core is client:
                    client.connect(step * 0.01)
                else:
                    server.connected(step * 0.01)


# --------------------------------------------------------------------------- our server


def served(**kwargs: object) -> SoupServer:
    store = MemoryStore()
    store.extend(MESSAGES)
    return SoupServer(store, "S1", timeout=0.5, **kwargs)  # type: ignore[arg-type]


def wait_until(check: Callable[[], bool], timeout: float = 5.0) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.02)


def closed_by_server(sock: socket.socket, timeout: float = 5.0) -> bytes:
    """What the server sent before it closed the connection."""
    sock.settimeout(timeout)
    got = b""
    try:
        while chunk := sock.recv(65536):
            got += chunk
    except ConnectionResetError:
        pass
    return got


def a_good_client_still_gets_everything(server: SoupServer) -> None:
    with SoupBinTCP(server.address, heartbeat_interval=0.1) as client:
        assert [m.data for m in client.messages(timeout=5)] == MESSAGES


def test_a_65535_length_then_silence_is_dropped_and_others_are_served() -> None:
    with served() as server:
        sock = socket.create_connection(server.address)
        sock.sendall(b"\xff\xffL" + b"x" * 100)  # and nothing more
        a_good_client_still_gets_everything(server)
        assert closed_by_server(sock) == b""
        wait_until(lambda: server.stats.closed.get("no Login Request within 0.5 s") == 1)


@pytest.mark.parametrize(
    ("stream", "reason"),
    [
        (b"\x00\x01X", "packet 'X' before Login Request"),
        (b"\x00\x00", "malformed packet"),
        (build_login_request("", "", "", 1) * 2, "a second Login Request on one connection"),
    ],
)
def test_garbage_closes_the_connection_with_a_reason(stream: bytes, reason: str) -> None:
    with served() as server:
        sock = socket.create_connection(server.address)
        sock.sendall(stream)
        closed_by_server(sock)
        wait_until(lambda: reason in server.stats.closed)
        a_good_client_still_gets_everything(server)


def test_garbage_types_after_login_are_counted_not_fatal() -> None:
    with served() as server:
        sock = socket.create_connection(server.address)
        sock.sendall(build_login_request("", "", "", 1) + b"\x00\x02?x" * 10_000)
        got = closed_by_server(sock)
        assert got.endswith(b"\x00\x01Z")  # served to the end all the same
        wait_until(lambda: server.stats.malformed.get("unknown_type") == 10_000)


def test_a_login_flood_is_refused_past_max_clients_and_rejected_logins_cost_nothing() -> None:
    with served(max_clients=20, username="u", password="p") as server:
        socks = []
        for _ in range(60):
            sock = socket.create_connection(server.address)
            sock.sendall(build_login_request("u", "bad", "", 1))
            socks.append(sock)
        for sock in socks:
            closed_by_server(sock)
            sock.close()
        stats = server.stats
        assert stats.logins_rejected.get("A", 0) + stats.refused_full == 60
        assert stats.logins_accepted == 0
        with SoupBinTCP(server.address, username="u", password="p") as client:
            assert len(list(client.messages(timeout=5))) == len(MESSAGES)


# --------------------------------------------------------------------------- our client


def hostile_server(script: bytes, *, connections: int = 10) -> tuple[str, int]:
    """A server that answers every connection with ``script`` and then stays silent."""
    listener = socket.create_server(("127.0.0.1", 0))
    address = listener.getsockname()

    def run() -> None:
        held = []
        for _ in range(connections):
            try:
                conn, _ = listener.accept()
            except OSError:
                return
            conn.recv(49)
            conn.sendall(script)
            held.append(conn)
        listener.close()
        time.sleep(3)
        for conn in held:
            conn.close()

    threading.Thread(target=run, daemon=True).start()
    return address


def test_a_server_sending_data_before_login_accepted_is_refused() -> None:
    address = hostile_server(b"\x00\x02Sx" + build_login_accepted("S", 1))
    with SoupBinTCP(address, max_retries=1) as client, pytest.raises(CannotResume) as caught:
        list(client.messages(timeout=5))
    assert "Sequenced Data before Login Accepted" in str(caught.value)
    assert client.stats.malformed == {"data_before_login": 2}


def test_end_of_session_mid_stream_ends_it_there() -> None:
    accepted = build_login_accepted("S", 1)
    address = hostile_server(accepted + b"\x00\x02Sa\x00\x02Sb\x00\x01Z\x00\x02Sc", connections=1)
    with SoupBinTCP(address) as client:
        events = list(client.events(timeout=5))
    delivered = [m for ev in events if isinstance(ev, MessagesDelivered) for m in ev.messages]
    assert delivered == [b"a", b"b"]
    assert events[-1] == SessionEnded("S", 3)


def test_a_server_that_sends_a_65535_length_and_stops_times_out() -> None:
    address = hostile_server(build_login_accepted("S", 1) + b"\xff\xffS" + b"x" * 10)
    t0 = time.monotonic()
    with (
        SoupBinTCP(address, max_retries=1, timeout=0.3, heartbeat_interval=0.1) as client,
        pytest.raises(CannotResume) as caught,
    ):
        list(client.messages(timeout=5))
    assert "peer silent" in str(caught.value)
    assert time.monotonic() - t0 < 3


def test_rejected_clients_that_never_close_free_their_slots() -> None:
    with served(max_clients=5, username="u", password="p") as server:
        held = []
        for _ in range(5):  # every slot: a rejected login that keeps its connection open
            sock = socket.create_connection(server.address)
            sock.sendall(build_login_request("u", "bad", "", 1))
            held.append(sock)
        wait_until(lambda: server.stats.logins_rejected.get("A") == 5)
        wait_until(lambda: server.stats.clients == 0, timeout=3)  # after the linger
        with SoupBinTCP(server.address, username="u", password="p") as client:
            assert len(list(client.messages(timeout=5))) == len(MESSAGES)
        for sock in held:
            sock.close()
