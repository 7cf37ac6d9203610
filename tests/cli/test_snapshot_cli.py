"""`listen GROUP:PORT --snapshot soup://...`: late join from a GLIMPSE-style snapshot the
test serves, then the live feed (in the private network namespace)."""

from __future__ import annotations

import threading
import time
from pathlib import Path

import pytest

from cli_helpers import GROUP, SESSION, finish, free_port, run, start
from moldudp64.binaryfile import iter_binaryfile, write_binaryfile
from moldudp64.cli import generate_itch
from moldudp64.soupbintcp import build_end_of_snapshot
from moldudp64.store import MemoryStore
from moldudp64.sync.soupbintcp import SoupServer

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


@pytest.mark.parametrize(
    ("upto", "zero_padded"),
    [
        (500, False),  # the feed is past it when the snapshot ends: only 500.. requested
        (5_500, True),  # the feed has not reached it: what is held below it is skipped
    ],
)
def test_snapshot_then_the_feed_is_every_message_once(
    multicast: None, tmp_path: Path, upto: int, zero_padded: bool
) -> None:
    source = tmp_path / "input.bin"
    write_binaryfile(source, MESSAGES)
    port = free_port()
    out = tmp_path / "out.bin"
    server, finisher = snapshot_server(upto, zero_padded=zero_padded, delay=1.5)
    host, soup_port = server.address
    try:
        pub = start(
            "publish", f"{GROUP}:{port}", "--session", SESSION, "--input", str(source),
            "--request-port", str(port + 1), "--rate", "2000", "--end-of-session-duration", "1",
        )  # fmt: skip
        time.sleep(0.8)  # the feed is under way when listen joins
        listen = run(
            "listen", f"{GROUP}:{port}", "--snapshot", f"soup://{host}:{soup_port}",
            "--request-server", f"127.0.0.1:{port + 1}", "-o", str(out), "--idle-timeout", "20",
        )  # fmt: skip
        code, err = finish(pub)
        assert code == 0, err
    finally:
        finisher.join(5)
        server.close()
    err = listen.stderr.decode()
    assert listen.returncode == 0, err
    assert f"the feed from {upto}" in err, err
    if upto == 500:  # joined after 500 went out: the numbers between came from the server
        assert " 0 recovered" not in err, err
    else:  # joined before 5,500: what the kernel held below it was skipped
        assert "feed messages in the snapshot skipped" in err, err
    assert list(iter_binaryfile(out)) == MESSAGES  # snapshot + feed: nothing missed or doubled


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
