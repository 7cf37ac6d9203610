"""`moldudp64 listen` does not leave a session that fell silent for the next one while a
slow re-request server still brings its missing numbers (issue 18: data wins over a
switch), live in the private network namespace."""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from cli_helpers import GROUP, finish, free_port, start_listen
from moldudp64.binaryfile import iter_binaryfile
from moldudp64.wire import RetransmissionPacket, build_end_of_session, build_packet

A = "SWITCHA001"
B = "SWITCHB001"
N_A = 600
LOST = range(201, 501)  # lost on the line: only the server has them
PER_PACKET = 10
PER_ANSWER = 3  # a server whose answers carry 3 messages ...
ANSWER_DELAY = 0.5  # ... each 0.5 s after its request: 100 answers, about 5 s


def message(session: str, seq: int) -> bytes:
    return f"{session}:{seq:06d}".encode()


@contextmanager
def slow_server(port: int) -> Iterator[list[float]]:
    """A re-request server for A on 127.0.0.1:``port``, slow and with small answers: each
    request is answered ``ANSWER_DELAY`` after it came (a long round trip, not a queue).
    Yields the times it answered."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.bind(("127.0.0.1", port))
    sock.settimeout(0.1)
    answered: list[float] = []
    stop = threading.Event()

    def answer(request: RetransmissionPacket, addr: tuple[str, int]) -> None:
        last = min(N_A, request.seq_num + min(request.msg_count, PER_ANSWER) - 1)
        msgs = [message(A, s) for s in range(request.seq_num, last + 1)]
        if not stop.is_set():
            sock.sendto(build_packet(A, request.seq_num, msgs), addr)
            answered.append(time.monotonic())

    def serve() -> None:
        while not stop.is_set():
            try:
                data, addr = sock.recvfrom(65536)
            except TimeoutError:
                continue
            request = RetransmissionPacket.parse(data)
            if request.session_ident == A and 1 <= request.seq_num <= N_A:
                timer = threading.Timer(ANSWER_DELAY, answer, (request, addr))
                timer.daemon = True
                timer.start()

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    try:
        yield answered
    finally:
        stop.set()
        thread.join(2)
        sock.close()


def send_feed(port: int) -> None:
    """A's packets without 201..500 and without an end (it falls silent), then straight
    away B, live for 12 s, and B's end."""
    tx = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    tx.setsockopt(socket.IPPROTO_IP, socket.IP_MULTICAST_TTL, 1)
    tx.setsockopt(socket.IPPROTO_IP, socket.IP_MULTICAST_IF, socket.inet_aton("127.0.0.1"))
    with tx:
        for first in range(1, N_A + 1, PER_PACKET):
            if first not in LOST:
                msgs = [message(A, s) for s in range(first, first + PER_PACKET)]
                tx.sendto(build_packet(A, first, msgs), (GROUP, port))
            time.sleep(0.002)
        time.sleep(0.2)
        for first in range(1, 401, PER_PACKET):
            msgs = [message(B, s) for s in range(first, first + PER_PACKET)]
            tx.sendto(build_packet(B, first, msgs), (GROUP, port))
            time.sleep(0.3)
        for _ in range(3):
            tx.sendto(build_end_of_session(B, 401), (GROUP, port))
            time.sleep(0.3)


def test_listen_waits_for_a_slow_server_before_following_the_next_session(
    multicast: None, tmp_path: Path
) -> None:
    """A falls silent with 300 numbers missing while B is live from the next moment; the
    server brings A's numbers for about 5 s, longer than ``stale_after`` (3 s). listen
    writes all of A, in order, nothing lost, then stops because the feed moved on to B."""
    port = free_port()
    out = tmp_path / "a.bin"
    with slow_server(port + 1) as answered:
        listener = start_listen(
            f"{GROUP}:{port}", "--interface", "127.0.0.1", "--request-server",
            f"127.0.0.1:{port + 1}", "-o", str(out), "--idle-timeout", "30",
        )  # fmt: skip
        feeder = threading.Thread(target=send_feed, args=(port,), daemon=True)
        feeder.start()
        code, err = finish(listener)
        feeder.join(20)
    written = list(iter_binaryfile(out)) if out.exists() else []
    assert written == [message(A, s) for s in range(1, N_A + 1)], err
    assert "0 lost" in err and "moved on to session 'SWITCHB001'" in err, err
    assert len(answered) >= len(LOST) // PER_ANSWER  # the server's answers brought them
    assert code == 0, err
