"""`moldudp64 listen` against a feed that lies, live in the private network namespace:
dead servers beside a live one, a stray packet of another session, a stray datagram far
ahead of the feed. The output must be the published stream, one session, nothing lost."""

from __future__ import annotations

import socket
from pathlib import Path

import pytest

from cli_helpers import GROUP, SESSION, finish, free_port, run, start_listen
from moldudp64.binaryfile import iter_binaryfile, write_binaryfile
from moldudp64.cli import generate_itch
from moldudp64.wire import build_heartbeat, build_packet


def send_to_group(port: int, *datagrams: bytes) -> None:
    """Send datagrams to the group on loopback (inside the test's own namespace)."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as tx:
        tx.setsockopt(socket.IPPROTO_IP, socket.IP_MULTICAST_TTL, 1)
        tx.setsockopt(socket.IPPROTO_IP, socket.IP_MULTICAST_IF, socket.inet_aton("127.0.0.1"))
        for data in datagrams:
            tx.sendto(data, (GROUP, port))


@pytest.fixture
def feed(tmp_path: Path) -> tuple[Path, list[bytes]]:
    messages = list(generate_itch(5000, seed=5))
    path = tmp_path / "input.bin"
    write_binaryfile(path, messages)
    return path, messages


@pytest.mark.parametrize("dead_first", [True, False])
def test_a_dead_request_server_beside_the_live_one_loses_nothing(
    multicast: None, feed: tuple[Path, list[bytes]], tmp_path: Path, dead_first: bool
) -> None:
    """The issue's reproduction: two --request-server, one with nothing listening."""
    path, messages = feed
    port = free_port()
    live, dead = f"127.0.0.1:{port + 1}", f"127.0.0.1:{port + 2}"
    servers = [dead, live] if dead_first else [live, dead]
    out = tmp_path / "x.bin"
    listener = start_listen(
        f"{GROUP}:{port}", "--interface", "127.0.0.1",
        "--request-server", servers[0], "--request-server", servers[1],
        "-o", str(out), "--idle-timeout", "8",
    )  # fmt: skip
    pub = run(
        "publish", f"{GROUP}:{port}", "--interface", "127.0.0.1", "--session", SESSION,
        "--input", str(path), "--rate", "20000", "--request-port", str(port + 1),
        "--drop", "0.05", "--seed", "1",
    )  # fmt: skip
    code, err = finish(listener)
    assert pub.returncode == 0, pub.stderr
    assert code == 0, err
    assert list(iter_binaryfile(out)) == messages


def test_a_stray_packet_of_another_session_first_is_not_written(
    multicast: None, feed: tuple[Path, list[bytes]], tmp_path: Path
) -> None:
    path, messages = feed
    port = free_port()
    out = tmp_path / "s1.bin"
    listener = start_listen(f"{GROUP}:{port}", "-o", str(out), "--idle-timeout", "10")
    send_to_group(port, build_packet("OTHER00001", 1, [b"stray"]))
    pub = run(
        "publish", f"{GROUP}:{port}", "--session", SESSION, "--input", str(path),
        "--request-port", str(port + 1), "--end-of-session-duration", "0.5",
    )  # fmt: skip
    code, err = finish(listener)
    assert pub.returncode == 0 and code == 0, err
    assert list(iter_binaryfile(out)) == messages  # message n is sequence n
    assert "1 datagrams of other sessions not written" in err


def test_a_stray_datagram_far_ahead_of_a_live_feed_costs_nothing(
    multicast: None, feed: tuple[Path, list[bytes]], tmp_path: Path
) -> None:
    path, messages = feed
    port = free_port()
    out = tmp_path / "o.bin"
    listener = start_listen(
        f"{GROUP}:{port}", "--request-server", f"127.0.0.1:{port + 1}",
        "-o", str(out), "--idle-timeout", "10",
    )  # fmt: skip
    # a stray heartbeat of the real session, a million ahead, before the feed starts
    send_to_group(port, build_heartbeat(SESSION, 1_000_000))
    pub = run(
        "publish", f"{GROUP}:{port}", "--session", SESSION, "--input", str(path),
        "--request-port", str(port + 1), "--drop", "0.02", "--seed", "4",
        "--end-of-session-duration", "0.5",
    )  # fmt: skip
    code, err = finish(listener)
    assert pub.returncode == 0 and code == 0, err
    assert list(iter_binaryfile(out)) == messages
