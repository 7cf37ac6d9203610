"""`serve --soup-port` and `listen soup://` end to end, over 127.0.0.1."""

from __future__ import annotations

import re
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from cli_helpers import assert_one_line_error, jsonl, run, start
from moldudp64.binaryfile import write_binaryfile
from moldudp64.wire import join_blocks

MESSAGES = [b"msg %06d " % i + b"." * (i % 20) for i in range(1, 30_001)]


@pytest.fixture
def day(tmp_path: Path) -> Path:
    path = tmp_path / "day.bin"
    write_binaryfile(path, MESSAGES)
    return path


def start_serve(*args: str) -> tuple[subprocess.Popen[bytes], int]:
    """`serve ... --soup-port 0`; the process and the port it announced."""
    proc = start("serve", *args, "--soup-port", "0", "--soup-addr", "127.0.0.1")
    assert proc.stderr is not None
    line = proc.stderr.readline().decode()
    found = re.search(r"over SoupBinTCP on 127\.0\.0\.1:(\d+)", line)
    assert found, line + proc.stderr.read().decode()
    return proc, int(found.group(1))


@pytest.fixture
def served(day: Path) -> Iterator[int]:
    proc, port = start_serve(
        "--input", str(day), "--session", "TEST000001", "--user", "bob", "--password", "pw"
    )
    yield port
    proc.terminate()
    _, err = proc.communicate(timeout=10)
    assert proc.returncode == 130, err
    assert "moldudp64 serve: SoupBinTCP:" in err.decode()


def test_listen_records_the_whole_day_and_exits_0_at_end_of_session(
    served: int, tmp_path: Path, day: Path
) -> None:
    out = tmp_path / "copy.bin"
    proc = run("listen", f"soup://bob:pw@127.0.0.1:{served}/TEST000001", "-o", str(out))
    assert proc.returncode == 0, proc.stderr.decode()
    assert out.read_bytes() == day.read_bytes()
    assert "session ended: 30000 messages written" in proc.stderr.decode()


@pytest.mark.parametrize("pure", ["", "1"])
def test_listen_count_cuts_a_run_where_it_says(
    served: int, tmp_path: Path, pure: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """listen soup:// -o FILE.bin writes whole runs as BinaryFILE blocks; --count cuts
    one inside it (the C accelerator and the pure-Python twins alike)."""
    monkeypatch.setenv("MOLDUDP64_PURE_PYTHON", pure)
    out = tmp_path / "first.bin"
    url = f"soup://bob:pw@127.0.0.1:{served}"
    proc = run("listen", url, "--start-seq", "7", "--count", "12345", "-o", str(out))
    assert proc.returncode == 0, proc.stderr.decode()
    assert out.read_bytes() == join_blocks(MESSAGES[6 : 6 + 12345])


def test_listen_from_a_number_as_json_lines(served: int) -> None:
    proc = run(
        "listen", f"soup://bob:pw@127.0.0.1:{served}", "--start-seq", "29999", "--format", "jsonl"
    )
    assert proc.returncode == 0, proc.stderr.decode()
    rows = jsonl(proc.stdout)
    assert [(r["seq"], bytes.fromhex(str(r["data"]))) for r in rows] == [
        (29_999, MESSAGES[-2]),
        (30_000, MESSAGES[-1]),
    ]


@pytest.mark.parametrize(
    ("url", "words"),
    [
        ("soup://bob:wrong@127.0.0.1:{port}", "not authorised ('A')"),
        ("soup://bob:pw@127.0.0.1:{port}/OTHER", "session not available ('S')"),
    ],
)
def test_listen_exits_2_with_the_reason_in_one_line_when_rejected(
    served: int, url: str, words: str
) -> None:
    proc = run("listen", url.format(port=served), "-o", "/dev/null")
    err = proc.stderr.decode()
    assert proc.returncode == 2, err
    assert "Traceback" not in err
    rejected = [line for line in err.splitlines() if "rejected" in line]
    assert len(rejected) == 1 and words in rejected[0], err


def test_listen_exits_3_when_it_cannot_resume(tmp_path: Path, day: Path) -> None:
    proc, port = start_serve("--input", str(day), "--session", "TEST000001")
    proc.terminate()
    proc.communicate(timeout=10)
    got = run("listen", f"soup://127.0.0.1:{port}", "--max-retries", "1", "-o", "/dev/null")
    err = got.stderr.decode()
    assert got.returncode == 3, err
    assert "cannot resume" in err and "Traceback" not in err


@pytest.mark.parametrize(
    ("args", "words"),
    [
        (["listen", "soup://127.0.0.1"], "give a port"),
        (["listen", "soup://toolonguser:x@127.0.0.1:1"], "user must be at most 6"),
        (["listen", "soup://127.0.0.1:1", "--line-b", "239.1.1.1:1"], "--line-b is for"),
        (["listen", "soup://127.0.0.1:1", "--end-confirm", "0.3"], "--end-confirm is for"),
        (["serve", "--input", "x.bin", "--session", "S"], "needs --port PORT"),
        (["serve", "--input", "x.bin", "--session", "S", "--soup-port", "x"],
         "'x' is not a port number"),
        (["serve", "--input", "x.bin", "--session", "S", "--soup-port", "1", "--user", "u"],
         "--user and --password together"),
    ],
)  # fmt: skip
def test_usage_errors_are_one_line(args: list[str], words: str) -> None:
    line = assert_one_line_error(run(*args), 2)
    assert words in line, line


def test_itch_decoding_works_over_soup(tmp_path: Path) -> None:
    path = tmp_path / "itch.bin"
    # A System Event message ('S'): type, locate, tracking, timestamp (6), event code.
    system_event = b"S" + b"\x00\x01" + b"\x00\x02" + (5).to_bytes(6, "big") + b"O"
    write_binaryfile(path, [system_event] * 3)
    proc, port = start_serve("--input", str(path), "--session", "ITCH")
    try:
        got = run("listen", f"soup://127.0.0.1:{port}", "--decode", "itch50", "-o", "-")
    finally:
        proc.terminate()
        proc.communicate(timeout=10)
    assert got.returncode == 0, got.stderr.decode()
    rows = jsonl(got.stdout)
    assert len(rows) == 3 and rows[0]["message_type"] == "S"


def test_serve_soup_metrics_count_what_was_sent(day: Path, tmp_path: Path) -> None:
    import urllib.request

    proc, port = start_serve("--input", str(day), "--session", "TEST000001",
                             "--metrics-port", "0")  # fmt: skip
    try:
        assert proc.stderr is not None
        line = proc.stderr.readline().decode()
        url = re.search(r"metrics on (\S+)", line)
        assert url, line
        got = run("listen", f"soup://127.0.0.1:{port}", "-o", str(tmp_path / "m.bin"))
        assert got.returncode == 0, got.stderr.decode()
        with urllib.request.urlopen(url.group(1), timeout=10) as page:
            text = page.read().decode()
    finally:
        proc.terminate()
        proc.communicate(timeout=10)
    assert "moldudp64_soup_server_messages_sent_total 30000.0" in text, text
    assert "moldudp64_soup_server_logins_accepted_total 1.0" in text


def test_serve_nats_over_soupbintcp(tmp_path: Path) -> None:
    """A session a bridge stored in JetStream, served over SoupBinTCP from any number."""
    pytest.importorskip("nats")
    from nats_support import nats_server
    from test_jetstream import STREAM, bridge, feed_events
    from test_jetstream import run as run_async

    messages = [b"js %05d" % i for i in range(3000)]
    with nats_server(tmp_path / "js") as url:
        run_async(bridge(url, feed_events(messages, [250], session="JSSESSION")))
        proc, port = start_serve("--nats", url, "--stream", STREAM, "--session", "JSSESSION")
        try:
            got = run("listen", f"soup://127.0.0.1:{port}/JSSESSION", "--start-seq", "2001",
                      "--count", "1000", "--format", "jsonl")  # fmt: skip
        finally:
            proc.terminate()
            proc.communicate(timeout=10)
    assert got.returncode == 0, got.stderr.decode()
    rows = jsonl(got.stdout)
    assert [bytes.fromhex(str(r["data"])) for r in rows] == messages[2000:]
    assert rows[0]["seq"] == 2001


def test_listen_resumes_after_the_server_drops_and_comes_back(tmp_path: Path) -> None:
    import time

    from moldudp64.store import MemoryStore
    from moldudp64.sync.soupbintcp import SoupServer

    first = MemoryStore()
    first.extend(MESSAGES[:1000])
    server = SoupServer(first, "TEST000001", finished=False).start()  # the rest never comes
    address = server.address
    out = tmp_path / "resumed.bin"
    listen = start("listen", f"soup://127.0.0.1:{address[1]}", "-o", str(out))
    try:
        deadline = time.monotonic() + 20
        while server.stats.messages_sent < 1000:
            assert time.monotonic() < deadline
            time.sleep(0.05)
        server.close()  # the connection drops mid-session
        whole = MemoryStore()
        whole.extend(MESSAGES)
        with SoupServer(whole, "TEST000001", address) as again:
            _, err = listen.communicate(timeout=30)
            assert again.stats.logins_accepted == 1
    finally:
        listen.kill()
    assert listen.returncode == 0, err.decode()
    assert "1 reconnects" in err.decode()
    assert out.read_bytes() == b"".join(len(m).to_bytes(2, "big") + m for m in MESSAGES)


def test_server_summary_counts_in_words_that_agree_with_their_number() -> None:
    """`1 connection, 1 login accepted`, never `1 connections, 1 logins`."""
    from types import SimpleNamespace

    from moldudp64.cli.soup import _server_summary

    one = SimpleNamespace(connections=1, logins_accepted=1, messages_sent=1,
                          logins_rejected={}, closed={}, refused_full=0)  # fmt: skip
    assert _server_summary(one).startswith("1 connection, 1 login accepted, 1 message sent")
    two = SimpleNamespace(connections=2, logins_accepted=0, messages_sent=5,
                          logins_rejected={}, closed={}, refused_full=0)  # fmt: skip
    assert _server_summary(two).startswith("2 connections, 0 logins accepted, 5 messages sent")
