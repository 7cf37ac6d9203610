"""`publish` and `serve` given bad input, and their --rate-limit, end to end."""

from __future__ import annotations

import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from cli_helpers import assert_one_line_error, run, start
from moldudp64.binaryfile import write_binaryfile
from moldudp64.wire import RetransmissionPacket

SESSION = "CLI0000001"
GROUP = "239.7.7.11"


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.bind(("0.0.0.0", 0))
        return int(s.getsockname()[1])


def test_publish_refuses_a_message_over_max_payload_before_the_first_packet(
    multicast: None, tmp_path: Path
) -> None:
    path = tmp_path / "feed.bin"
    write_binaryfile(path, [b"m" * 30] * 5000 + [b"B" * 2000] + [b"m"] * 10)
    port = free_port()
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as feed:
        feed.bind((GROUP, port))
        mreq = socket.inet_aton(GROUP) + socket.inet_aton("127.0.0.1")
        feed.setsockopt(socket.IPPROTO_IP, socket.IP_ADD_MEMBERSHIP, mreq)
        feed.settimeout(0.5)
        proc = run("publish", f"{GROUP}:{port}", "--session", SESSION, "--input", str(path))
        line = assert_one_line_error(proc, 2)
        assert "message 5001 is 2000 bytes" in line and "--max-payload 2002" in line, line
        with pytest.raises(TimeoutError):
            feed.recv(65535)  # not one packet went out
    # with the payload it asks for, the same file goes through
    ok = run(
        "publish", f"{GROUP}:{port}", "--session", SESSION, "--input", str(path),
        "--max-payload", "2002", "--end-of-session-duration", "0",
    )  # fmt: skip
    assert ok.returncode == 0, ok.stderr.decode()
    assert "5011 messages" in ok.stderr.decode()


PCAP_HEADER = bytes.fromhex("d4c3b2a1020004000000000000000000ffff000001000000")
PCAPNG_HEADER = bytes.fromhex("0a0d0d0a1c0000004d3c2b1a01000000ffffffffffffffff1c000000")


@pytest.mark.parametrize(("name", "head", "padding", "kind"), [
    ("feed.pcap", PCAP_HEADER, 0, "pcap"),
    ("feed.pcapng", PCAPNG_HEADER, 0, "pcapng"),
    ("capture.bin", PCAP_HEADER, 903_795, "pcap"),  # by content, not by name
], ids=["pcap", "pcapng", "by-content"])  # fmt: skip
@pytest.mark.parametrize("command", ["publish", "serve"])
def test_a_capture_given_as_input_is_named_as_such(
    tmp_path: Path, name: str, head: bytes, padding: int, kind: str, command: str
) -> None:
    path = tmp_path / name
    path.write_bytes(head + bytes(padding))
    args = (
        ["publish", "239.7.7.12:30001", "--session", SESSION, "--input", str(path)]
        if command == "publish"
        else ["serve", "--input", str(path), "--session", SESSION, "--port", "30002"]
    )
    line = assert_one_line_error(run(*args), 2)
    assert f"is a {kind} capture, not a BinaryFILE" in line, line
    assert "inspect" in line and "truncated" not in line


@pytest.mark.parametrize("value", ["x", "0", "-5", "nan", "inf"])
@pytest.mark.parametrize("command", ["publish", "serve"])
def test_bad_rate_limit_is_a_usage_error(command: str, value: str) -> None:
    args = (
        ["publish", "239.7.7.12:30001", "--session", SESSION, "--generate", "5"]
        if command == "publish"
        else ["serve", "--input", "x.bin", "--session", SESSION, "--port", "30002"]
    )
    line = assert_one_line_error(run(*args, "--rate-limit", value), 2)
    assert "--rate-limit" in line and "'none'" in line, line


def serve_and_flood(
    path: Path, rate_limit: str, requests: int, window: int | None = None, duration: float = 1.5
) -> tuple[int, str, int]:
    """Run serve for ``duration`` s with ``--rate-limit``; send ``requests`` at once from one
    socket (``window``: at most that many unanswered at a time, so a server slowed by a
    loaded machine loses none in the kernel); its exit code, stderr and answers received."""
    port = free_port()
    proc = start(
        "serve", "--input", str(path), "--session", SESSION, "--port", str(port),
        "--bind", "127.0.0.1", "--duration", str(duration), "--rate-limit", rate_limit,
    )  # fmt: skip
    assert proc.stderr is not None
    assert "messages of session" in proc.stderr.readline().decode()
    answers = 0
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4 * 1024 * 1024)
        s.bind(("127.0.0.1", 0))
        s.settimeout(0.8)
        for i in range(requests):
            s.sendto(RetransmissionPacket(SESSION, 1 + i % 50, 3).build(), ("127.0.0.1", port))
            if i % 50 == 49:
                time.sleep(0.002)  # no loss in the kernel: every refusal is the server's
            while window is not None and i + 1 - answers >= window:
                s.recv(65535)  # TimeoutError: unanswered for 0.8 s
                answers += 1
        try:
            while True:
                s.recv(65535)
                answers += 1
        except TimeoutError:
            pass
    _, err = proc.communicate(timeout=30)
    return proc.returncode, err.decode(), answers


def test_serve_rate_limit_refusals_are_counted_and_logged(tmp_path: Path) -> None:
    path = tmp_path / "feed.bin"
    write_binaryfile(path, [b"m" * 30] * 100)
    code, err, answers = serve_and_flood(path, "20", 500)
    assert code == 0, err
    summary = err.splitlines()[-1]
    assert "500 requests" in summary and f"{answers} answers" in summary, summary
    refused = 500 - answers
    assert refused > 400 and f"refused: {refused} rate_limited" in summary, summary
    warnings = [line for line in err.splitlines() if "over the rate limit" in line]
    assert len(warnings) == 1 and "127.0.0.1" in warnings[0], err  # once per interval


def test_serve_rate_limit_none(tmp_path: Path) -> None:
    path = tmp_path / "feed.bin"
    write_binaryfile(path, [b"m" * 30] * 100)
    code, err, answers = serve_and_flood(path, "none", 3000, window=200, duration=2.5)
    assert code == 0, err
    assert answers == 3000 and "refused" not in err, err


def test_publish_summary_counts_rerequests(multicast: None) -> None:
    port, request_port = free_port(), free_port()
    proc = subprocess.Popen(
        [
            sys.executable, "-m", "moldudp64", "publish", f"{GROUP}:{port}", "--session", SESSION,
            "--generate", "100", "--request-port", str(request_port),
            "--end-of-session-duration", "1", "--rate-limit", "none",
        ],
        stderr=subprocess.PIPE,
    )  # fmt: skip
    assert proc.stderr is not None
    assert "re-requests on" in proc.stderr.readline().decode()
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.settimeout(0.1)
        asked = 0
        while True:  # until the messages are published (asked before: not_held)
            s.sendto(RetransmissionPacket(SESSION, 1, 5).build(), ("127.0.0.1", request_port))
            asked += 1
            try:
                s.recv(65535)
                break
            except TimeoutError:
                assert asked < 50
        s.sendto(RetransmissionPacket("OTHER", 1, 5).build(), ("127.0.0.1", request_port))
    err = proc.communicate(timeout=30)[1].decode()
    assert proc.returncode == 0
    summary = err.splitlines()[-1]
    assert f"{asked + 1} re-requests, 1 answers (5 messages re-sent), refused: " in summary, err
    assert "1 wrong_session" in summary, summary
    if asked > 1:  # the first asks came before the messages were published
        assert f"{asked - 1} not_held" in summary, summary
