"""The command when the world is unkind: stop signals (SIGHUP, SIGTERM) in every command,
closed and broken stdout/stderr, unwritable outputs, and option values at their limits.

Each runs ``python -m moldudp64`` as a subprocess; the live ones publish a feed in the
private network namespace (tests/conftest.py)."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from cli_helpers import (
    GROUP,
    QUICK_END,
    ROOT,
    SESSION,
    assert_one_line_error,
    finish,
    free_port,
    jsonl,
    run,
    start,
    start_listen,
)
from moldudp64.binaryfile import iter_binaryfile, write_binaryfile
from moldudp64.capture import CaptureReader
from moldudp64.cli import EXIT_BROKEN_PIPE, EXIT_INTERRUPTED, generate_itch

MESSAGES = list(generate_itch(20_000, seed=5))


@pytest.fixture
def feed(tmp_path: Path) -> Path:
    """A BinaryFILE of 20,000 ITCH-shaped messages."""
    path = tmp_path / "feed.bin"
    write_binaryfile(path, MESSAGES)
    return path


def shell(command: str, timeout: float = 60) -> subprocess.CompletedProcess[bytes]:
    """Run ``command`` under sh, with ``M`` standing for ``python -m moldudp64``."""
    env = dict(os.environ, M=f"{sys.executable} -m moldudp64")
    return subprocess.run(
        ["sh", "-c", command], capture_output=True, timeout=timeout, env=env, check=False
    )


def wait_for_data(path: Path, timeout: float = 30) -> None:
    """Until ``path`` holds something (listen flushes every 0.5 s)."""
    deadline = time.monotonic() + timeout
    while (not path.exists() or path.stat().st_size == 0) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert path.exists() and path.stat().st_size > 0


# -- stop signals ------------------------------------------------------------------------


@pytest.mark.parametrize("signum", [signal.SIGHUP, signal.SIGTERM, signal.SIGINT])
def test_listen_stopped_by_a_signal_flushes_output_and_capture_then_exits_130(
    multicast: None, feed: Path, tmp_path: Path, signum: int
) -> None:
    """SIGHUP (a closed terminal), SIGTERM (a service stop) and Ctrl-C end listen alike:
    every message so far written whole and in order, the capture complete and readable,
    the summary printed, exit 130."""
    port = free_port()
    out, cap = tmp_path / "l.bin", tmp_path / "l.pcap"
    listener = start_listen(
        f"{GROUP}:{port}", "--request-server", f"127.0.0.1:{port + 1}",
        "-o", str(out), "--capture", str(cap),
    )  # fmt: skip
    publisher = start(
        "publish", f"{GROUP}:{port}", "--session", SESSION, "--input", str(feed),
        "--request-port", str(port + 1), "--rate", "4000",
    )  # fmt: skip
    try:
        wait_for_data(out)
        listener.send_signal(signum)
        code, err = finish(listener)
    finally:
        publisher.send_signal(signal.SIGTERM)
        pub_code, pub_err = finish(publisher)
    assert code == EXIT_INTERRUPTED, err
    assert "Traceback" not in err
    summary = re.search(r"interrupted: (\d+) messages written.* (\d+) datagrams captured", err)
    assert summary is not None, err
    written, captured = int(summary[1]), int(summary[2])
    got = list(iter_binaryfile(out))
    assert len(got) == written and 0 < written < len(MESSAGES)
    assert got == MESSAGES[:written]  # whole messages, in order, flushed
    with CaptureReader(cap) as reader:
        assert sum(1 for _ in reader) == captured > 0
    # the publisher, stopped by SIGTERM, says so too
    assert pub_code == EXIT_INTERRUPTED and "interrupted" in pub_err, pub_err


def test_publish_stopped_by_sighup_exits_130_with_its_summary(multicast: None, feed: Path) -> None:
    port = free_port()
    publisher = start(
        "publish", f"{GROUP}:{port}", "--session", SESSION, "--input", str(feed),
        "--rate", "2000",
    )  # fmt: skip
    assert publisher.stderr is not None
    assert b"moldudp64 publish: session" in publisher.stderr.readline()
    publisher.send_signal(signal.SIGHUP)  # at once: the summary must still come
    code, err = finish(publisher)
    assert code == EXIT_INTERRUPTED, err
    assert re.search(r"publish: interrupted after \d+ messages", err), err
    assert "Traceback" not in err


def test_serve_stopped_by_sighup_exits_130_with_its_summary(feed: Path) -> None:
    port = free_port()
    server = start(
        "serve", "--input", str(feed), "--session", SESSION, "--port", str(port),
        "--bind", "127.0.0.1",
    )  # fmt: skip
    assert server.stderr is not None
    assert b"messages of session" in server.stderr.readline()
    server.send_signal(signal.SIGHUP)  # at once: the summary must still come
    code, err = finish(server)
    assert code == EXIT_INTERRUPTED, err
    assert "serve: interrupted: 0 requests" in err, err


def test_demo_stopped_by_sighup_exits_130(tmp_path: Path) -> None:
    demo = start("demo", "--loopback", "--messages", "200000", "--rate", "20000",
                 "--dir", str(tmp_path))  # fmt: skip
    assert demo.stderr is not None
    assert b"moldudp64 demo:" in demo.stderr.readline()
    time.sleep(1.0)
    demo.send_signal(signal.SIGHUP)
    code, err = finish(demo)
    assert code == EXIT_INTERRUPTED, err
    assert "Traceback" not in err


def test_inspect_stopped_by_sighup_while_reading_exits_130(tmp_path: Path) -> None:
    """inspect blocked on a slow input (a FIFO) ends at once, naming the signal."""
    fifo = tmp_path / "slow.pcap"
    os.mkfifo(fifo)
    proc = start("inspect", str(fifo))
    with open(fifo, "wb") as writer:  # opens once inspect has opened it
        writer.write(b"\xd4\xc3")  # two bytes of a pcap magic, then nothing
        writer.flush()
        time.sleep(0.5)
        proc.send_signal(signal.SIGHUP)
        code, err = finish(proc)
    assert code == EXIT_INTERRUPTED, err
    assert err.strip() == "moldudp64 inspect: interrupted by SIGHUP"


def test_a_sighup_ignored_at_start_stays_ignored_as_under_nohup(tmp_path: Path) -> None:
    """nohup moldudp64 listen ...: closing the terminal must not stop the recording."""
    port = free_port()
    proc = subprocess.Popen(
        [sys.executable, "-m", "moldudp64", "listen", f"{GROUP}:{port}", "--interface",
         "127.0.0.1", "-o", str(tmp_path / "x.bin")],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        preexec_fn=lambda: signal.signal(signal.SIGHUP, signal.SIG_IGN),
    )  # fmt: skip
    assert proc.stderr is not None
    assert b"joined" in proc.stderr.readline()
    proc.send_signal(signal.SIGHUP)
    time.sleep(0.5)
    assert proc.poll() is None  # still recording
    proc.send_signal(signal.SIGTERM)
    code, err = finish(proc)
    assert code == EXIT_INTERRUPTED and "listen: interrupted" in err, err


# -- closed and broken stdout / stderr ----------------------------------------------------


def test_inspect_with_stdout_closed_says_so_in_one_line(feed: Path) -> None:
    proc = shell(f"exec $M inspect {feed} >&-")
    line = assert_one_line_error(proc)
    assert line == "moldudp64 inspect: error: stdout: closed, nothing can be written to it"


def test_with_stdout_closed_no_output_file_takes_its_place(feed: Path, tmp_path: Path) -> None:
    """fd 1 closed: the output file must not be opened as fd 1 and get the report mixed in."""
    out = tmp_path / "copy.bin"
    proc = shell(f"exec $M inspect {feed} -o {out} <&- >&-")
    assert proc.returncode == 2  # the report had nowhere to go
    assert out.read_bytes() == feed.read_bytes()


def test_with_stderr_closed_nothing_lands_on_stdout(feed: Path) -> None:
    """-o - with stderr closed: stdout holds exactly the BinaryFILE, no report, no error."""
    proc = shell(f"exec $M inspect {feed} -o - --format binaryfile 2>&-")
    assert proc.returncode == 0
    assert proc.stdout == feed.read_bytes()
    bad = shell("exec $M inspect /nonexistent.pcap 2>&-")
    assert bad.returncode == 2 and bad.stdout == b""


def test_everything_closed_still_writes_the_output_file(feed: Path, tmp_path: Path) -> None:
    out = tmp_path / "copy.jsonl"
    proc = shell(f"exec $M inspect {feed} -o {out} <&- >&- 2>&-")
    assert proc.returncode == 2 and proc.stdout == proc.stderr == b""
    assert len(jsonl(out.read_bytes())) == len(MESSAGES)


@pytest.mark.parametrize("fmt", ["jsonl", "text", "binaryfile"])
def test_a_reader_that_goes_away_ends_the_command_quietly_with_141(feed: Path, fmt: str) -> None:
    """inspect ... -o - | head -1: exit 141 (as SIGPIPE would), no error, no traceback."""
    proc = subprocess.Popen(
        [sys.executable, "-m", "moldudp64", "inspect", str(feed), "-o", "-", "--format", fmt],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    assert proc.stdout is not None and proc.stderr is not None
    assert proc.stdout.read(10)
    proc.stdout.close()
    err = proc.stderr.read()
    assert proc.wait(timeout=60) == EXIT_BROKEN_PIPE, err
    for noise in (b"Traceback", b"Exception ignored", b"error"):
        assert noise not in err


def test_listen_into_a_closed_pipe_stops_with_141_and_keeps_its_capture(
    multicast: None, feed: Path, tmp_path: Path
) -> None:
    port = free_port()
    cap = tmp_path / "l.pcap"
    listener = start_listen(
        f"{GROUP}:{port}", "-o", "-", "--format", "jsonl", "--capture", str(cap)
    )
    publisher = start(
        "publish", f"{GROUP}:{port}", "--session", SESSION, "--input", str(feed),
        "--rate", "20000",
    )  # fmt: skip
    try:
        assert listener.stdout is not None
        assert listener.stdout.readline().startswith(b'{"session"')
        listener.stdout.close()
        code, err = finish(listener)
    finally:
        publisher.send_signal(signal.SIGTERM)
        finish(publisher)
    assert code == EXIT_BROKEN_PIPE, err
    assert "Traceback" not in err and "Exception ignored" not in err
    with CaptureReader(cap) as reader:
        assert sum(1 for _ in reader) > 0  # closed properly: every record readable


@pytest.mark.parametrize(
    ("where", "named"), [("-o /dev/full", "/dev/full"), ("-o - >/dev/full", "stdout")]
)
@pytest.mark.parametrize("fmt", ["binaryfile", "jsonl", "text"])
def test_a_full_disk_is_an_error_naming_the_output(
    feed: Path, where: str, named: str, fmt: str
) -> None:
    proc = shell(f"exec $M inspect {feed} --format {fmt} {where}")
    err = proc.stderr.decode()
    assert proc.returncode == 2 and "Traceback" not in err, err
    assert err.splitlines()[-1] == f"moldudp64 inspect: error: {named}: No space left on device"


# -- option values at their limits ---------------------------------------------------------


def test_idle_timeout_zero_and_negative_get_the_same_message() -> None:
    values = ("0", "-1", "nan", "inf")
    lines = [
        assert_one_line_error(run("listen", f"{GROUP}:30001", "--idle-timeout", value))
        for value in values
    ]
    assert {line.replace(repr(v), "V") for line, v in zip(lines, values, strict=True)} == {
        "moldudp64 listen: error: argument --idle-timeout: V: seconds must be a finite "
        "number > 0 (see 'moldudp64 listen --help')"
    }


@pytest.mark.parametrize(
    ("args", "needle"),
    [
        (["demo", "--rate", "0"], "'0': rate in messages per second must be >= 1"),
        (["listen", f"{GROUP}:1", "--start-seq", str(2**64)], "sequence number must be 1..2**64-1"),
        (["inspect", "x.bin", "--start-seq", "0"], "sequence number must be 1..2**64-1"),
        (["listen", f"{GROUP}:1", "--session", ""], "session '' is empty"),
        (["inspect", "x.pcap", "--session", "   "], "session '   ' is empty"),
        (["publish", f"{GROUP}:1", "--session", "", "--generate", "1"], "is empty"),
        (["serve", "--input", "x", "--session", "", "--port", "1"], "is empty"),
    ],
)
def test_values_out_of_range_are_named_in_the_options_terms(args: list[str], needle: str) -> None:
    line = assert_one_line_error(run(*args))
    assert needle in line
    assert "expected_seq_num" not in line and "count must" not in line


def test_the_largest_start_seq_is_accepted(tmp_path: Path) -> None:
    path = tmp_path / "one.bin"
    write_binaryfile(path, [b"x"])
    proc = run("inspect", str(path), "--start-seq", str(2**64 - 1))
    assert proc.returncode == 0, proc.stderr


def test_bench_help_shows_plain_percent_signs() -> None:
    text = run("bench", "--help").stdout.decode()
    assert "5% loss" in text and "%%" not in text


def test_jsonl_fields_are_the_ones_documented(feed: Path) -> None:
    """README, --help and the output agree: session, seq, length, data."""
    proc = run("inspect", str(feed), "-o", "-", "--format", "jsonl")
    first = jsonl(proc.stdout)[0]
    assert list(first) == ["session", "seq", "length", "data"]
    assert first["length"] == len(MESSAGES[0]) == len(bytes.fromhex(str(first["data"])))
    readme = (ROOT / "README.md").read_text()
    assert '`{"session", "seq", "length", "data"}`' in readme
    listen_help = " ".join(run("listen", "--help").stdout.decode().split())
    assert "session, seq, length, data hex" in listen_help


def test_readme_serve_example_does_not_take_publishs_request_port() -> None:
    readme = (ROOT / "README.md").read_text()
    publish = re.search(r"moldudp64 publish .*--request-port (\d+)", readme)
    serve = re.search(r"moldudp64 serve .*--port (\d+)", readme)
    assert publish and serve and publish[1] != serve[1]
    main_help = run("--help").stdout.decode()
    ports = re.findall(r"moldudp64 (?:publish .*--request-port|serve .*--port) (\d+)", main_help)
    assert len(ports) == 2 and len(set(ports)) == 2


def test_publish_and_listen_show_the_session_alike(multicast: None, tmp_path: Path) -> None:
    """A short session name: 'TEST1' in both summaries, not the wire's padded form."""
    port = free_port()
    listener = start_listen(
        *QUICK_END, f"{GROUP}:{port}", "-o", str(tmp_path / "x.bin"), "--idle-timeout", "20"
    )
    pub = run(
        "publish", f"{GROUP}:{port}", "--session", "TEST1   ", "--generate", "500",
        "--end-of-session-duration", "0.5",
    )  # fmt: skip
    code, err = finish(listener)
    assert pub.returncode == 0 and code == 0, err
    assert "session 'TEST1' to" in pub.stderr.decode()
    assert "session 'TEST1' seq 1..500" in err, err


@pytest.mark.parametrize("where", [["-o", "/dev/full"], ["-o", "x.bin", "--capture", "/dev/full"]])
def test_listen_on_a_full_disk_names_the_file(
    multicast: None, tmp_path: Path, where: list[str]
) -> None:
    port = free_port()
    listener = subprocess.Popen(
        [sys.executable, "-m", "moldudp64", "listen", f"{GROUP}:{port}", *where,
         "--idle-timeout", "20"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, cwd=tmp_path,
    )  # fmt: skip
    assert listener.stderr is not None
    assert b"joined" in listener.stderr.readline()
    pub = run(
        "publish", f"{GROUP}:{port}", "--session", SESSION, "--generate", "20000",
        "--end-of-session-duration", "0.5",
    )  # fmt: skip
    code, err = finish(listener)
    assert pub.returncode == 0
    assert code == 2 and "Traceback" not in err, err
    assert err.splitlines()[-1] == "moldudp64 listen: error: /dev/full: No space left on device"


def test_listen_on_a_terminal_that_hangs_up_still_flushes_and_exits_130(
    multicast: None, feed: Path, tmp_path: Path
) -> None:
    """The real SIGHUP: the terminal goes away (writes to it fail with EIO), then the signal.
    The live status and the summary are lost with the terminal; the recording is not."""
    import pty
    import select

    port = free_port()
    out = tmp_path / "l.bin"
    master, slave = pty.openpty()
    listener = subprocess.Popen(
        [sys.executable, "-m", "moldudp64", "listen", f"{GROUP}:{port}", "-o", str(out)],
        stdout=subprocess.DEVNULL, stderr=slave,
    )  # fmt: skip
    os.close(slave)
    seen = b""
    while b"joined" not in seen:
        assert select.select([master], [], [], 30)[0], seen
        seen += os.read(master, 4096)
    publisher = start(
        "publish", f"{GROUP}:{port}", "--session", SESSION, "--input", str(feed),
        "--rate", "4000",
    )  # fmt: skip
    try:
        wait_for_data(out)
        os.close(master)  # the terminal hangs up
        listener.send_signal(signal.SIGHUP)
        code = listener.wait(timeout=60)
    finally:
        publisher.send_signal(signal.SIGTERM)
        finish(publisher)
    assert code == EXIT_INTERRUPTED
    got = list(iter_binaryfile(out))
    assert 0 < len(got) < len(MESSAGES) and got == MESSAGES[: len(got)]


def test_bench_help_gives_a_duration_it_keeps() -> None:
    """The default run takes about 7 s on an idle machine (5 s of CPU), not "about 20 s"."""
    text = run("bench", "--help").stdout.decode()
    assert "about 20 s" not in text and "about 7 s on an idle machine" in text
