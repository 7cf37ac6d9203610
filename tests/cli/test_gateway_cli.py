"""`gateway`: a MoldUDP64 feed (with loss, recovered) served over SoupBinTCP, end to end in
the private network namespace."""

from __future__ import annotations

import re
import signal
import subprocess
import time
from pathlib import Path

from cli_helpers import GROUP, QUICK_END, SESSION, finish, free_port, run, start
from moldudp64.binaryfile import iter_binaryfile, write_binaryfile
from moldudp64.cli import generate_itch


def start_gateway(*args: str) -> tuple[subprocess.Popen[bytes], int]:
    proc = start("gateway", *QUICK_END, *args, "--session", SESSION, "--soup-port", "0",
                 "--soup-addr", "127.0.0.1")  # fmt: skip
    assert proc.stderr is not None
    line = proc.stderr.readline().decode()
    found = re.search(r"over SoupBinTCP on 127\.0\.0\.1:(\d+)", line)
    assert found, line + proc.stderr.read().decode()
    joined = proc.stderr.readline().decode()
    assert "joined" in joined, joined
    return proc, int(found.group(1))


def wait_for(text: str, proc: subprocess.Popen[bytes], timeout: float = 30) -> str:
    """Read the gateway's stderr until a line holding ``text``."""
    assert proc.stderr is not None
    seen = ""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        line = proc.stderr.readline().decode()
        seen += line
        if text in line or not line:
            return seen
    return seen


def test_gateway_recovers_the_feed_and_serves_it_from_any_number(
    multicast: None, tmp_path: Path
) -> None:
    messages = list(generate_itch(5_000, seed=3))
    source = tmp_path / "input.bin"
    write_binaryfile(source, messages)
    port = free_port()
    stored = tmp_path / "gateway.bin"
    gateway, soup_port = start_gateway(
        f"{GROUP}:{port}", "--request-server", f"127.0.0.1:{port + 1}", "-o", str(stored)
    )
    try:
        pub = run(
            "publish", f"{GROUP}:{port}", "--session", SESSION, "--input", str(source),
            "--request-port", str(port + 1), "--drop", "0.05", "--seed", "2",
            "--end-of-session-duration", "1",
        )  # fmt: skip
        assert pub.returncode == 0, pub.stderr.decode()
        said = wait_for("serving them until stopped", gateway)
        assert "5000 messages stored" in said, said
        whole = run("listen", f"soup://127.0.0.1:{soup_port}/{SESSION}", "-o", str(tmp_path / "a"))
        assert whole.returncode == 0, whole.stderr.decode()
        assert list(iter_binaryfile(tmp_path / "a")) == messages
        tail = run("listen", f"soup://127.0.0.1:{soup_port}", "--start-seq", "4001",
                   "-o", str(tmp_path / "b"))  # fmt: skip
        assert tail.returncode == 0, tail.stderr.decode()
        assert list(iter_binaryfile(tmp_path / "b")) == messages[4000:]
    finally:
        gateway.send_signal(signal.SIGTERM)
        code, err = finish(gateway)
    assert code == 0, err
    assert list(iter_binaryfile(stored)) == messages


def test_a_loss_on_the_feed_ends_the_served_session_before_it(
    multicast: None, tmp_path: Path
) -> None:
    messages = list(generate_itch(3_000, seed=4))
    source = tmp_path / "input.bin"
    write_binaryfile(source, messages)
    port = free_port()
    gateway, soup_port = start_gateway(f"{GROUP}:{port}", "--start-seq", "1")  # no server
    try:
        pub = run(
            "publish", f"{GROUP}:{port}", "--session", SESSION, "--input", str(source),
            "--drop", "0.05", "--seed", "2", "--end-of-session-duration", "1",
        )  # fmt: skip
        assert pub.returncode == 0, pub.stderr.decode()
        said = wait_for("serving them until stopped", gateway)
        found = re.search(r"messages (\d+)\.\.(\d+) lost on the feed", said)
        assert found, said
        first_lost = int(found.group(1))
        got = run("listen", f"soup://127.0.0.1:{soup_port}", "-o", str(tmp_path / "a"))
        # no End of Session where it stops (the day did not end there): the client is cut
        # off after the last message before the loss and its resume is refused, loudly
        assert got.returncode == 2, got.stderr.decode()
        assert "session not available" in got.stderr.decode()
        assert list(iter_binaryfile(tmp_path / "a")) == messages[: first_lost - 1]
    finally:
        gateway.send_signal(signal.SIGTERM)
        code, err = finish(gateway)
    assert code == 3, err


def test_a_gateway_that_started_later_serves_its_numbers_and_says_what_it_lacks(
    tmp_path: Path,
) -> None:
    """gateway --start-seq 1001 stores message 1001 as the file's first: served as 1001."""
    from moldudp64.cli.soup import _Numbered
    from moldudp64.events import MessagesLost
    from moldudp64.store import BinaryFileStore
    from moldudp64.sync.soupbintcp import SoupBinTCP, SoupServer

    base = BinaryFileStore(tmp_path / "late.bin", writable=True)
    store = _Numbered(base, 1001)
    base.extend([b"m%d" % i for i in range(1001, 1101)])
    with SoupServer(store, SESSION) as server:
        with SoupBinTCP(server.address, seq_num=1050) as client:
            got = [(m.seq_num, m.data) for m in client.messages(timeout=5)]
        assert got == [(i, b"m%d" % i) for i in range(1050, 1101)]
        with SoupBinTCP(server.address, seq_num=1) as client:
            events = list(client.events(timeout=5))
        assert events[1] == MessagesLost(SESSION, 1, 1000, "not available on the server")
    store.close()


def test_the_gateway_listens_at_once_and_rejects_logins_until_it_knows_the_session(
    multicast: None,
) -> None:
    port = free_port()
    gateway = start(
        "gateway", *QUICK_END, f"{GROUP}:{port}", "--soup-port", "0", "--soup-addr", "127.0.0.1"
    )
    assert gateway.stderr is not None
    try:
        line = gateway.stderr.readline().decode()  # before any feed packet
        found = re.search(r"session \(the feed's\) over SoupBinTCP on 127\.0\.0\.1:(\d+)", line)
        assert found, line
        early = run("listen", f"soup://127.0.0.1:{found.group(1)}", "--max-retries", "0",
                    "-o", "/dev/null")  # fmt: skip
        assert early.returncode == 2, early.stderr.decode()
        assert "session not available" in early.stderr.decode()
    finally:
        gateway.send_signal(signal.SIGTERM)
        finish(gateway)


def test_snapshots_need_the_whole_session() -> None:
    """--snapshot-port builds the book from message 1: a later --start-seq is refused."""
    from cli_helpers import assert_one_line_error

    feed = f"{GROUP}:{free_port()}"
    args = ("--soup-port", "0", "--snapshot-port", "0", "--start-seq", "100")
    line = assert_one_line_error(run("gateway", feed, *args))
    assert "leave out --start-seq" in line, line
