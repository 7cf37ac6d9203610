"""`moldudp64 listen` against forged and odd datagrams (issue 18 items 1, 2, 4, 5), live in
the private network namespace: a forged end of session, forged data far ahead, a stray
session of heartbeats on line B, a server that answers with nothing."""

from __future__ import annotations

import re
import socket
import struct
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from cli_helpers import GROUP, SESSION, finish, free_port, run, start, start_listen
from moldudp64.binaryfile import write_binaryfile
from moldudp64.cli import generate_itch
from moldudp64.wire import build_end_of_session, build_heartbeat, build_packet

LINE_B = "239.7.7.9"


@pytest.fixture
def feed(tmp_path: Path) -> tuple[Path, list[bytes]]:
    messages = list(generate_itch(3000, seed=18))
    path = tmp_path / "input.bin"
    write_binaryfile(path, messages)
    return path, messages


def sender() -> socket.socket:
    tx = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    tx.setsockopt(socket.IPPROTO_IP, socket.IP_MULTICAST_TTL, 1)
    tx.setsockopt(socket.IPPROTO_IP, socket.IP_MULTICAST_IF, socket.inet_aton("127.0.0.1"))
    return tx


@contextmanager
def sniffer(port: int) -> Iterator[socket.socket]:
    """A socket that sees the feed on the group (to forge at the right number)."""
    rx = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    rx.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    rx.bind((GROUP, port))
    mreq = socket.inet_aton(GROUP) + socket.inet_aton("127.0.0.1")
    rx.setsockopt(socket.IPPROTO_IP, socket.IP_ADD_MEMBERSHIP, mreq)
    rx.settimeout(10)
    try:
        yield rx
    finally:
        rx.close()


def forge_when_seen(port: int, after: int, forge: list[bytes] | None = None) -> threading.Thread:
    """Once the feed has carried ``after`` messages, send ``forge`` to the group, or (None)
    an end of session at the next number it will send."""

    def watch() -> None:
        with sniffer(port) as rx, sender() as tx:
            while True:
                data = rx.recv(65536)
                _, seq, count = struct.unpack_from(">10sQH", data)
                if 0 < count < 0xFFFF and seq + count > after:
                    for datagram in forge or [build_end_of_session(SESSION, seq + count)]:
                        tx.sendto(datagram, (GROUP, port))
                    return

    thread = threading.Thread(target=watch, daemon=True)
    thread.start()
    return thread


def publish(path: Path, port: int, *extra: str) -> list[str]:
    return [
        "publish", f"{GROUP}:{port}", "--interface", "127.0.0.1", "--session", SESSION,
        "--input", str(path), "--request-port", str(port + 1), "--rate", "3000",
        "--end-of-session-duration", "0.5", *extra,
    ]  # fmt: skip


def test_a_forged_end_at_the_next_number_does_not_cut_the_output(
    multicast: None, feed: tuple[Path, list[bytes]], tmp_path: Path
) -> None:
    """Item 1: one forged end of session naming the next number, a tenth of the way in."""
    path, _ = feed
    port = free_port()
    out = tmp_path / "o.bin"
    listener = start_listen(
        f"{GROUP}:{port}", "--interface", "127.0.0.1", "--request-server",
        f"127.0.0.1:{port + 1}", "-o", str(out), "--idle-timeout", "15",
    )  # fmt: skip
    watcher = forge_when_seen(port, 300)
    pub = run(*publish(path, port))
    code, err = finish(listener)
    watcher.join(1)
    assert pub.returncode == 0, pub.stderr
    assert code == 0, err
    assert out.read_bytes() == path.read_bytes()
    assert "session ended: 3000 messages written" in err and "0 lost" in err


def test_forged_data_far_ahead_loses_nothing_and_the_real_end_ends_it(
    multicast: None, feed: tuple[Path, list[bytes]], tmp_path: Path
) -> None:
    """Item 2: two forged datagrams 100,000 ahead that vouch for each other. Every real
    message is written, none is reported lost, the real end ends the session, and the
    forged data (beyond that end) is named: listen exits 3 and says where."""
    path, _ = feed
    port = free_port()
    out = tmp_path / "o.bin"
    listener = start_listen(
        f"{GROUP}:{port}", "--interface", "127.0.0.1", "--request-server",
        f"127.0.0.1:{port + 1}", "-o", str(out), "--idle-timeout", "15",
    )  # fmt: skip
    forged = [build_packet(SESSION, 100_000 + n, [b"forged"]) for n in (0, 1)]
    watcher = forge_when_seen(port, 300, forged)
    pub = run(*publish(path, port))
    code, err = finish(listener)
    watcher.join(1)
    assert pub.returncode == 0, pub.stderr
    assert out.read_bytes() == path.read_bytes()
    assert "session ended: 3000 messages written" in err and "0 lost" in err
    assert code == 3, err
    assert "2 messages arrived after the end of session" in err
    assert "100000-100001" in err  # where


def test_a_stray_heartbeat_session_on_line_b_neither_captures_nor_holds_listen(
    multicast: None, feed: tuple[Path, list[bytes]], tmp_path: Path
) -> None:
    """Item 4: heartbeats of another session on line B from before the real feed on A
    (and on after it): listen follows the real session, writes it all, and ends."""
    path, _ = feed
    port, port_b = free_port(), free_port()
    out = tmp_path / "o.bin"
    listener = start_listen(
        f"{GROUP}:{port}", "--interface", "127.0.0.1", "--line-b", f"{LINE_B}:{port_b}",
        "--request-server", f"127.0.0.1:{port + 1}", "-o", str(out), "--idle-timeout", "30",
    )  # fmt: skip
    stop = threading.Event()

    def stray() -> None:
        with sender() as tx:
            while not stop.is_set():
                tx.sendto(build_heartbeat("STRAY00001", 7), (LINE_B, port_b))
                stop.wait(0.1)

    thread = threading.Thread(target=stray, daemon=True)
    thread.start()
    try:
        time.sleep(0.3)  # the stray starts first
        t0 = time.monotonic()
        pub = run(*publish(path, port))
        code, err = finish(listener)
        elapsed = time.monotonic() - t0
    finally:
        stop.set()
        thread.join(1)
    assert pub.returncode == 0, pub.stderr
    assert code == 0, err
    assert out.read_bytes() == path.read_bytes()
    assert "session ended: 3000 messages written" in err
    assert elapsed < 15  # it ended with the session, not at --idle-timeout


@contextmanager
def empty_server(port: int) -> Iterator[list[float]]:
    """A re-request server whose store lags: it answers every request with a heartbeat."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.bind(("127.0.0.1", port))
    sock.settimeout(0.1)
    seen: list[float] = []
    stop = threading.Event()

    def serve() -> None:
        while not stop.is_set():
            try:
                request, peer = sock.recvfrom(64)
            except TimeoutError:
                continue
            seen.append(time.monotonic())
            _, seq, _ = struct.unpack_from(">10sQH", request)
            sock.sendto(build_heartbeat(SESSION, seq), peer)

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    try:
        yield seen
    finally:
        stop.set()
        thread.join(1)
        sock.close()


def test_a_server_that_answers_empty_is_no_storm_and_the_gaps_end_lost(
    multicast: None, feed: tuple[Path, list[bytes]], tmp_path: Path
) -> None:
    """Item 5: the only configured server answers with zero-count packets. Retries back
    off, the gaps end reported lost, and the session ends."""
    path, _ = feed
    port = free_port()
    fake = free_port()
    out = tmp_path / "o.bin"
    with empty_server(fake) as requests:
        listener = start_listen(
            f"{GROUP}:{port}", "--interface", "127.0.0.1", "--request-server",
            f"127.0.0.1:{fake}", "-o", str(out), "--idle-timeout", "30",
        )  # fmt: skip
        t0 = time.monotonic()
        pub = run(*publish(path, port, "--drop", "0.02", "--seed", "3"))
        code, err = finish(listener)
        elapsed = time.monotonic() - t0
    assert pub.returncode == 0, pub.stderr
    assert code == 3, err
    assert "session ended" in err and "messages lost for good" in err
    assert elapsed < 25
    # at most max_request_attempts (8) per gap, not thousands per second
    gaps = int(re.search(r"(\d+) gaps", err).group(1))  # type: ignore[union-attr]
    assert gaps > 0 and len(requests) <= 8 * gaps


def test_idle_timeout_counts_progress_not_traffic(multicast: None, tmp_path: Path) -> None:
    """Item 5: datagrams that bring nothing (another session's heartbeats, forever) do not
    keep listen from going idle."""
    port = free_port()
    listener = start("listen", f"{GROUP}:{port}", "--interface", "127.0.0.1",
                     "--idle-timeout", "1.5", "-o", str(tmp_path / "o.bin"))  # fmt: skip
    stop = threading.Event()

    def stray() -> None:
        with sender() as tx:
            while not stop.is_set():
                tx.sendto(build_heartbeat("STRAY00001", 7), (GROUP, port))
                stop.wait(0.05)

    thread = threading.Thread(target=stray, daemon=True)
    thread.start()
    t0 = time.monotonic()
    try:
        code, err = finish(listener, timeout=20)
    finally:
        stop.set()
        thread.join(1)
    assert code == 4, err
    assert "idle for 1.5 s" in err
    assert time.monotonic() - t0 < 6
