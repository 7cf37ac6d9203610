"""`listen GROUP:PORT --snapshot soup://...`: late join from a GLIMPSE-style snapshot the
test serves, then the live feed (in the private network namespace)."""

from __future__ import annotations

import socket
import threading
import time
from pathlib import Path

import pytest

from cli_helpers import GROUP, QUICK_END, SESSION, finish, free_port, run, start
from moldudp64.binaryfile import iter_binaryfile, write_binaryfile
from moldudp64.cli import generate_itch
from moldudp64.soupbintcp import build_end_of_snapshot
from moldudp64.store import MemoryStore
from moldudp64.sync.soupbintcp import SoupServer
from moldudp64.wire import Packet

MESSAGES = list(generate_itch(6_000, seed=8))


def snapshot_server(
    upto: int, *, zero_padded: bool, delay: float
) -> tuple[SoupServer, threading.Thread]:
    """A snapshot of the feed's first ``upto - 1`` messages, its End of Snapshot (``upto``,
    the next feed number) added only after ``delay`` seconds: the feed runs on meanwhile."""
    store = MemoryStore()
    store.extend(MESSAGES[: upto - 1])
    lock = threading.Lock()
    server = SoupServer(store, "SNAP", finished=False, lock=lock).start()
    end = b"G" + b"%020d" % upto if zero_padded else build_end_of_snapshot(upto)

    def finish_later() -> None:
        time.sleep(delay)
        with lock:
            store.append(end)
        server.finish()

    thread = threading.Thread(target=finish_later, daemon=True)
    thread.start()
    return server, thread


def watch_feed(port: int) -> socket.socket:
    """A socket of our own on the feed (joined before the publisher starts)."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind((GROUP, port))
    mreq = socket.inet_aton(GROUP) + socket.inet_aton("0.0.0.0")
    sock.setsockopt(socket.IPPROTO_IP, socket.IP_ADD_MEMBERSHIP, mreq)
    sock.settimeout(20)
    return sock


def wait_past(sock: socket.socket, seq_num: int) -> None:
    """Read the feed until a packet past ``seq_num`` went out."""
    while Packet(sock.recv(65536)).seq_num <= seq_num:
        pass


@pytest.mark.parametrize(
    ("upto", "zero_padded", "listen_first"),
    [
        # listen joins when the feed is past 700: the kernel holds 700 and on, so only
        # 500..(the first held - 1) are requested
        (500, False, False),
        # listen joins before the feed starts: what it holds below 5,500 is skipped
        (5_500, True, True),
    ],
)
def test_snapshot_then_the_feed_is_every_message_once(
    multicast: None, tmp_path: Path, upto: int, zero_padded: bool, listen_first: bool
) -> None:
    source = tmp_path / "input.bin"
    write_binaryfile(source, MESSAGES)
    port = free_port()
    out = tmp_path / "out.bin"
    server, finisher = snapshot_server(upto, zero_padded=zero_padded, delay=1.5)
    host, soup_port = server.address
    listen_args = (
        "listen", *QUICK_END, f"{GROUP}:{port}", "--snapshot", f"soup://{host}:{soup_port}",
        "--request-server", f"127.0.0.1:{port + 1}", "-o", str(out), "--idle-timeout", "20",
    )  # fmt: skip
    publish_args = (
        "publish", f"{GROUP}:{port}", "--session", SESSION, "--input", str(source),
        "--request-port", str(port + 1), "--rate", "2000", "--end-of-session-duration", "1",
    )  # fmt: skip
    try:
        if listen_first:
            listen = start(*listen_args)
            assert listen.stderr is not None
            joined = listen.stderr.readline().decode()
            assert "joined" in joined, joined
            pub = start(*publish_args)
        else:
            with watch_feed(port) as feed:
                pub = start(*publish_args)
                wait_past(feed, 700)
            listen = start(*listen_args)
        code, err = finish(pub)
        assert code == 0, err
        code, said = finish(listen)
    finally:
        finisher.join(5)
        server.close()
    assert code == 0, said
    assert f"the feed from {upto}" in said, said
    if listen_first:  # what the kernel held below the snapshot's number was skipped
        assert "feed messages in the snapshot skipped" in said, said
    else:  # the numbers between the snapshot and the first held came from the server
        assert " 0 recovered" not in said, said
    assert list(iter_binaryfile(out)) == MESSAGES  # snapshot + feed: nothing missed or doubled


def test_data_beyond_the_feeds_end_is_named_as_listen_names_it(
    multicast: None, tmp_path: Path
) -> None:
    """Two forged datagrams 100,000 ahead (vouching for each other) arrive after listen
    joined: every real message is written, the real end ends the session, and the forged
    data is named in the summary (exit 3), as plain listen does."""
    from moldudp64.wire import build_packet

    source = tmp_path / "input.bin"
    write_binaryfile(source, MESSAGES)
    port = free_port()
    out = tmp_path / "out.bin"
    server, finisher = snapshot_server(500, zero_padded=False, delay=0.5)
    host, soup_port = server.address
    try:
        with watch_feed(port) as feed:
            pub = start(
                "publish", f"{GROUP}:{port}", "--session", SESSION, "--input", str(source),
                "--request-port", str(port + 1), "--rate", "3000",
                "--end-of-session-duration", "1",
            )  # fmt: skip
            wait_past(feed, 700)
            listen = start(
                "listen", f"{GROUP}:{port}", "--snapshot", f"soup://{host}:{soup_port}",
                "--request-server", f"127.0.0.1:{port + 1}", "-o", str(out),
                "--idle-timeout", "20",
            )  # fmt: skip
            assert listen.stderr is not None
            joined = listen.stderr.readline().decode()
            assert "joined" in joined, joined
            tx = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
            tx.setsockopt(socket.IPPROTO_IP, socket.IP_MULTICAST_TTL, 1)
            with tx:
                for n in (0, 1):
                    tx.sendto(build_packet(SESSION, 100_000 + n, [b"forged"]), (GROUP, port))
        code, err = finish(pub)
        assert code == 0, err
        code, said = finish(listen)
    finally:
        finisher.join(5)
        server.close()
    assert list(iter_binaryfile(out)) == MESSAGES, said
    assert "session ended:" in said and "0 lost" in said, said
    assert "2 messages arrived after the end of session" in said and "100000-100001" in said
    assert code == 3, said


def test_a_snapshot_without_end_of_snapshot_is_an_error(multicast: None, tmp_path: Path) -> None:
    store = MemoryStore()
    store.extend(MESSAGES[:10])
    with SoupServer(store, "SNAP") as server:  # ends (Z) with no G
        host, soup_port = server.address
        got = run("listen", f"{GROUP}:{free_port()}", "--snapshot", f"soup://{host}:{soup_port}",
                  "-o", str(tmp_path / "x.bin"))  # fmt: skip
    err = got.stderr.decode()
    assert got.returncode == 2, err
    assert "without an End of Snapshot message" in err and "Traceback" not in err


def test_snapshot_refuses_start_seq() -> None:
    got = run("listen", f"{GROUP}:30001", "--snapshot", "soup://127.0.0.1:1", "--start-seq", "5")
    assert got.returncode == 2 and "leave out --start-seq" in got.stderr.decode()


class _ListSink:
    """Collects what a snapshot load writes."""

    def __init__(self) -> None:
        self.written: list[tuple[int, bytes]] = []

    def write(self, session: str, seq_num: int, messages: list[bytes]) -> None:
        self.written += [(seq_num + i, m) for i, m in enumerate(messages)]


def test_load_snapshot_names_what_came_after_end_of_snapshot_and_what_was_missing() -> None:
    """The snapshot server accepts at 3 (1..2 missing) and sends two messages after its
    End of Snapshot, in a later packet: neither goes unsaid, neither is written."""
    from moldudp64.cli.soup import SoupSource, load_snapshot
    from moldudp64.soupbintcp import build_login_accepted, build_packet

    listener = socket.create_server(("127.0.0.1", 0))

    def serve() -> None:
        conn, _ = listener.accept()
        conn.recv(49)
        conn.sendall(build_login_accepted("SNAP", 3) + build_packet(b"S", b"state3"))
        conn.sendall(build_packet(b"S", build_end_of_snapshot(100)))
        time.sleep(0.05)
        conn.sendall(build_packet(b"S", b"after5") + build_packet(b"S", b"after6"))
        time.sleep(0.05)
        conn.sendall(b"\x00\x01Z")
        time.sleep(0.5)
        conn.close()

    threading.Thread(target=serve, daemon=True).start()
    sink = _ListSink()
    try:
        snap = load_snapshot(SoupSource("127.0.0.1", listener.getsockname()[1]), sink)
    finally:
        listener.close()
    assert sink.written == [(3, b"state3")]
    assert (snap.messages, snap.next_seq) == (1, 100)
    assert snap.lost == [(1, 2)]
    assert snap.after_end == (5, 6)
