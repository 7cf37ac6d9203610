"""A client that behaves like Nassau's Java MoldUDP64 client, against `publish` and `serve`.

Nassau's client keeps one request outstanding at a time: on a gap it asks for up to
65,534 messages from the first missing one, drops every packet that arrives ahead of
the gap, and sends its next request as soon as the answer arrives (it chains about
10,000 requests a second). It asks again only when a live packet arrives more than 1 s
after its last request. With the old default rate limit it stalled for good after about
29,000 of 100,000 messages; the defaults must never refuse such a client.
"""

from __future__ import annotations

import re
import select
import socket
import struct
import subprocess
import time
from pathlib import Path

import pytest

from cli_helpers import start
from moldudp64.binaryfile import write_binaryfile
from moldudp64.cli import generate_itch
from moldudp64.wire import split_blocks

SESSION = "NASSAU0001"
GROUP = "239.7.7.9"
HEADER = struct.Struct(">10sQH")
COUNT = 100_000


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.bind(("0.0.0.0", 0))
        return int(s.getsockname()[1])


class NassauLikeClient:
    """One request at a time, the next when the answer arrives; packets ahead of a gap
    dropped; a new request on a live packet only when the last is over 1 s old."""

    def __init__(self, group: tuple[str, int], server: tuple[str, int]) -> None:
        self.feed = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.feed.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.feed.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 16 * 1024 * 1024)
        self.feed.bind((group[0], group[1]))
        mreq = socket.inet_aton(group[0]) + socket.inet_aton("127.0.0.1")
        self.feed.setsockopt(socket.IPPROTO_IP, socket.IP_ADD_MEMBERSHIP, mreq)
        self.requests = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.requests.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 16 * 1024 * 1024)
        self.requests.bind(("127.0.0.1", 0))
        self.server = server
        self.next_seq = 1
        self.messages: list[bytes] = []
        self.end_seq: int | None = None
        self.last_request: float | None = None
        self.pending = False
        self.sent = 0
        self.known_high = 1  # one past the highest sequence number seen

    def request(self) -> None:
        self.requests.sendto(HEADER.pack(SESSION.encode(), self.next_seq, 65534), self.server)
        self.pending = True
        self.last_request = time.monotonic()
        self.sent += 1

    def packet(self, data: bytes, live: bool) -> None:
        session, seq, count = HEADER.unpack_from(data)
        assert session == SESSION.encode()
        if count == 0xFFFF:  # end of session: seq is one past the last message
            self.end_seq = seq
            count = 0
        self.known_high = max(self.known_high, seq + count)
        if seq <= self.next_seq < seq + count:  # deliver what is new; ahead of a gap: dropped
            self.messages.extend(split_blocks(data)[self.next_seq - seq :])
            self.next_seq = seq + count
        if not live:  # the answer came: chain the next request at once
            self.pending = False
            if self.known_high > self.next_seq:
                self.request()
        elif self.known_high > self.next_seq:
            stale = self.last_request is not None and time.monotonic() - self.last_request > 1
            if not self.pending or stale:
                self.request()

    def run(self, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.end_seq is not None and self.next_seq >= self.end_seq:
                return
            ready, _, _ = select.select([self.feed, self.requests], [], [], 0.5)
            for sock in ready:
                while True:
                    try:
                        data = sock.recv(65535, socket.MSG_DONTWAIT)
                    except BlockingIOError:
                        break
                    self.packet(data, live=sock is self.feed)

    def close(self) -> None:
        self.feed.close()
        self.requests.close()


@pytest.fixture
def feed(tmp_path: Path) -> tuple[Path, list[bytes]]:
    messages = list(generate_itch(COUNT, seed=7))
    path = tmp_path / "feed.bin"
    write_binaryfile(path, messages)
    return path, messages


def finish(proc: subprocess.Popen[bytes], timeout: float = 60) -> tuple[int, str]:
    _, err = proc.communicate(timeout=timeout)
    return proc.returncode, err.decode()


@pytest.mark.parametrize(
    "extra",
    [
        [],
        # ~10 messages an answer: ~10,000 chained requests, well over the default 2,000
        # a second: they wait for budget, none is refused (end of session lasts long
        # enough for the client to finish at that pace)
        ["--max-payload", "400", "--end-of-session-duration", "8"],
    ],
)
def test_against_publish_request_port(
    multicast: None, feed: tuple[Path, list[bytes]], extra: list[str]
) -> None:
    path, messages = feed
    port, request_port = free_port(), free_port()
    client = NassauLikeClient((GROUP, port), ("127.0.0.1", request_port))
    try:
        publisher = start(
            "publish", f"{GROUP}:{port}", "--session", SESSION, "--input", str(path),
            "--request-port", str(request_port), "--drop", "0.05", "--seed", "7", *extra,
        )  # fmt: skip
        client.run(timeout=60)
        code, err = finish(publisher)
    finally:
        client.close()
    assert code == 0, err
    assert client.next_seq == COUNT + 1, (client.next_seq, client.sent, err)
    assert client.messages == messages
    assert client.sent > 100  # it did chain requests
    summary = err.splitlines()[-1]
    assert "refused" not in summary, summary  # not one request refused, rate or otherwise
    assert re.search(rf"{client.sent} re-requests, {client.sent} answers", summary), summary


def test_publish_lingers_until_a_slow_client_is_done(
    multicast: None, feed: tuple[Path, list[bytes]]
) -> None:
    """~10,000 chained requests at the default 2,000 a second take ~5 s, far past the 2 s
    end of session (issue 18, item 12): publish goes on answering until the client has
    been quiet for --linger seconds (default 3), and says so."""
    path, messages = feed
    port, request_port = free_port(), free_port()
    client = NassauLikeClient((GROUP, port), ("127.0.0.1", request_port))
    try:
        publisher = start(
            "publish", f"{GROUP}:{port}", "--session", SESSION, "--input", str(path),
            "--request-port", str(request_port), "--drop", "0.05", "--seed", "7",
            "--max-payload", "400",
        )  # fmt: skip
        client.run(timeout=30)
        code, err = finish(publisher)
    finally:
        client.close()
    assert code == 0, err
    assert client.next_seq == COUNT + 1, (client.next_seq, client.sent, err)
    assert client.messages == messages
    assert "still answering re-requests until none has come for 3 s (--linger)" in err, err
    summary = err.splitlines()[-1]
    assert re.search(rf"{client.sent} re-requests, {client.sent} answers", summary), summary
    assert re.search(r"answered re-requests \d+\.\d s after the end of session", summary)


def test_against_serve(multicast: None, feed: tuple[Path, list[bytes]]) -> None:
    path, messages = feed
    port, serve_port = free_port(), free_port()
    server = start(
        "serve", "--input", str(path), "--session", SESSION, "--port", str(serve_port),
        "--bind", "127.0.0.1",
    )  # fmt: skip
    client = NassauLikeClient((GROUP, port), ("127.0.0.1", serve_port))
    try:
        assert server.stderr is not None
        assert "messages of session" in server.stderr.readline().decode()
        publisher = start(
            "publish", f"{GROUP}:{port}", "--session", SESSION, "--input", str(path),
            "--drop", "0.05", "--seed", "7",
        )  # fmt: skip
        client.run(timeout=60)
        pub_code, pub_err = finish(publisher)
    finally:
        client.close()
        server.send_signal(2)
        code, err = finish(server)
    assert pub_code == 0, pub_err
    assert client.next_seq == COUNT + 1, (client.next_seq, client.sent, err)
    assert client.messages == messages
    assert client.sent > 100
    assert code == 130 and "refused" not in err.splitlines()[-1], err
    assert f"{client.sent} requests, {client.sent} answers" in err, err
