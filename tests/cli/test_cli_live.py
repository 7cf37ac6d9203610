"""The live commands end to end as subprocesses: publish into listen (with loss, in the
private network namespace), listen's exit codes and --capture, serve, demo, bad input."""

from __future__ import annotations

import shutil
import signal
import socket
import subprocess
import time
from pathlib import Path

import pytest

from cli_helpers import (
    GROUP,
    QUICK_END,
    SESSION,
    assert_one_line_error,
    finish,
    free_port,
    run,
    start,
    start_listen,
)
from moldudp64.binaryfile import iter_binaryfile, write_binaryfile
from moldudp64.capture import CaptureReader
from moldudp64.cli import generate_itch
from moldudp64.wire import Packet, RetransmissionPacket, build_end_of_session, build_packet


@pytest.fixture
def feed(tmp_path: Path) -> tuple[Path, list[bytes]]:
    """A BinaryFILE of 20,000 ITCH-shaped messages."""
    messages = list(generate_itch(20_000, seed=11))
    path = tmp_path / "input.bin"
    write_binaryfile(path, messages)
    return path, messages


def test_publish_into_listen_with_loss_is_byte_exact(
    multicast: None, feed: tuple[Path, list[bytes]], tmp_path: Path
) -> None:
    """publish --drop 0.05 --duplicate 0.01 --reorder 0.02 into listen: the listener's
    BinaryFILE equals the input byte for byte; its --capture decodes the same in inspect
    and in tshark."""
    path, _messages = feed
    port = free_port()
    out = tmp_path / "out.bin"
    cap = tmp_path / "cap.pcap"
    listener = start_listen(
        *QUICK_END,
        f"{GROUP}:{port}",
        "--request-server", f"127.0.0.1:{port + 1}",
        "--output", str(out),
        "--capture", str(cap),
        "--idle-timeout", "20",
    )  # fmt: skip
    pub = run(
        "publish", f"{GROUP}:{port}", "--session", SESSION, "--input", str(path),
        "--request-port", str(port + 1), "--drop", "0.05", "--duplicate", "0.01",
        "--reorder", "0.02", "--seed", "5", "--end-of-session-duration", "1",
    )  # fmt: skip
    code, err = finish(listener)
    assert pub.returncode == 0, pub.stderr.decode()
    assert code == 0, err
    assert out.read_bytes() == path.read_bytes()
    assert "session ended: 20000 messages written" in err
    assert "0 lost" in err
    pub_err = pub.stderr.decode()
    assert "20000 messages (seq 1..20000)" in pub_err
    dropped = int(pub_err.split("faults: ")[1].split(" dropped")[0])
    assert dropped > 0  # the feed really was lossy

    # The capture holds what the listener saw: inspect recovers every message from it.
    proc = run("inspect", str(cap), "--output", str(tmp_path / "from-capture.bin"))
    assert proc.returncode == 0, proc.stdout.decode() + proc.stderr.decode()
    assert (tmp_path / "from-capture.bin").read_bytes() == path.read_bytes()
    assert "end of session  yes" in proc.stdout.decode()
    if shutil.which("tshark") is not None:
        check_tshark_agrees(cap, port)


def check_tshark_agrees(cap: Path, port: int) -> None:
    """tshark opens the pcap and decodes every MoldUDP64 datagram as we do."""
    with CaptureReader(cap) as reader:
        ours = []
        answer_ports = set()
        for d in reader:
            # The feed, the answers, and the client's 20-byte requests (tshark decodes
            # those too, as packets without blocks).
            if port in (d.dst[1], d.src[1]) or port + 1 in (d.dst[1], d.src[1]):
                p = Packet(d.payload)
                lengths = ",".join(str(len(m)) for m in p)
                ours.append(f"{p.session_ident}\t{p.seq_num}\t{p.msg_count}\t{lengths}")
                if d.src[1] == port + 1:
                    answer_ports.add(d.dst[1])
    assert answer_ports, "no re-request answers were captured"
    decode = ["-d", f"udp.port=={port},moldudp64"]
    for p in answer_ports:
        decode += ["-d", f"udp.port=={p},moldudp64"]
    done = subprocess.run(
        ["tshark", "-r", str(cap), *decode, "-Y", "moldudp64", "-T", "fields",
         "-e", "moldudp64.session", "-e", "moldudp64.sequence", "-e", "moldudp64.count",
         "-e", "moldudp64.msglen"],
        capture_output=True, text=True, timeout=120, check=True,
    )  # fmt: skip
    theirs = done.stdout.splitlines()
    assert len(theirs) == len(ours)
    assert theirs == ours


@pytest.mark.skipif(shutil.which("tshark") is None, reason="tshark is not installed")
def test_listen_capture_opens_in_tshark(multicast: None, tmp_path: Path) -> None:
    """A small capture from listen: tshark reads it without complaint and finds the feed."""
    port = free_port()
    cap = tmp_path / "small.pcap"
    listener = start_listen(
        *QUICK_END,
        f"{GROUP}:{port}", "--request-server", f"127.0.0.1:{port + 1}",
        "-o", str(tmp_path / "o.bin"), "--capture", str(cap), "--idle-timeout", "20",
    )  # fmt: skip
    pub = run(
        "publish", f"{GROUP}:{port}", "--session", SESSION, "--generate", "300",
        "--request-port", str(port + 1), "--drop", "0.2", "--seed", "3",
        "--end-of-session-duration", "0.5",
    )  # fmt: skip
    code, err = finish(listener)
    assert pub.returncode == 0 and code == 0, err
    check_tshark_agrees(cap, port)


def test_listen_without_recovery_exits_3_naming_lost_ranges(
    multicast: None, feed: tuple[Path, list[bytes]], tmp_path: Path
) -> None:
    """No re-request server: dropped packets are lost for good; the rest is written, exit 3."""
    path, messages = feed
    port = free_port()
    out = tmp_path / "out.jsonl"
    listener = start_listen(*QUICK_END, f"{GROUP}:{port}", "-o", str(out), "--idle-timeout", "20")
    pub = run(
        "publish", f"{GROUP}:{port}", "--session", SESSION, "--input", str(path),
        "--request-port", str(port + 1), "--drop", "0.05", "--seed", "9",
        "--end-of-session-duration", "0.5",
    )  # fmt: skip
    code, err = finish(listener)
    assert pub.returncode == 0
    assert code == 3, err
    lost_line = next(line for line in err.splitlines() if "lost for good" in line)
    lost: set[int] = set()
    for part in lost_line.split("lost for good: ")[1].split(", "):
        a, _, b = part.partition("-")
        lost.update(range(int(a), int(b or a) + 1))
    assert lost
    import json

    got = [json.loads(line) for line in out.read_text().splitlines()]
    want = [(seq, m.hex()) for seq, m in enumerate(messages, 1) if seq not in lost]
    assert [(g["seq"], g["data"]) for g in got] == want
    assert {g["session"] for g in got} == {SESSION}


def test_listen_count_and_text(multicast: None, tmp_path: Path) -> None:
    port = free_port()
    out = tmp_path / "out.txt"
    listener = start_listen(f"{GROUP}:{port}", "-o", str(out), "--count", "25")
    pub = run(
        "publish", f"{GROUP}:{port}", "--session", SESSION, "--generate", "100",
        "--request-port", str(port + 1), "--end-of-session-duration", "0.2",
    )  # fmt: skip
    code, err = finish(listener)
    assert pub.returncode == 0
    assert code == 0, err
    lines = out.read_text().splitlines()
    assert len(lines) == 25
    assert lines[0].split()[:4] == [SESSION, "1", "12", "S"]
    assert "--count 25 reached" in err


def test_listen_idle_timeout_exits_4(multicast: None, tmp_path: Path) -> None:
    port = free_port()
    t0 = time.monotonic()
    proc = run("listen", f"{GROUP}:{port}", "-o", str(tmp_path / "x.bin"), "--idle-timeout", "0.5")
    assert proc.returncode == 4, proc.stderr.decode()
    assert time.monotonic() - t0 < 30
    assert "idle for 0.5 s" in proc.stderr.decode()
    assert (tmp_path / "x.bin").read_bytes() == b""


def test_listen_ctrl_c_flushes_and_exits_130(
    multicast: None, feed: tuple[Path, list[bytes]], tmp_path: Path
) -> None:
    path, messages = feed
    port = free_port()
    out = tmp_path / "part.bin"
    listener = start_listen(
        f"{GROUP}:{port}", "--request-server", f"127.0.0.1:{port + 1}", "-o", str(out)
    )
    publisher = start(
        "publish", f"{GROUP}:{port}", "--session", SESSION, "--input", str(path),
        "--request-port", str(port + 1), "--rate", "4000",
    )  # fmt: skip
    try:
        deadline = time.monotonic() + 30
        while (not out.exists() or out.stat().st_size == 0) and time.monotonic() < deadline:
            time.sleep(0.05)  # listen flushes its output every 0.5 s
        listener.send_signal(signal.SIGINT)
        code, err = finish(listener)
    finally:
        publisher.send_signal(signal.SIGINT)
        pub_code, _ = finish(publisher)
    assert code == 130, err
    assert pub_code == 130
    got = list(iter_binaryfile(out))
    assert 0 < len(got) < len(messages)
    assert got == messages[: len(got)]  # whole messages, in order, flushed
    assert "interrupted" in err


def test_serve_answers_requests_and_recovers_a_listener(
    multicast: None, feed: tuple[Path, list[bytes]], tmp_path: Path
) -> None:
    """serve answers 20-byte requests from a BinaryFILE; a listener recovers through it."""
    path, messages = feed
    port = free_port()
    serve_port = free_port()
    server = start(
        "serve", "--input", str(path), "--session", SESSION, "--port", str(serve_port),
        "--bind", "127.0.0.1",
    )  # fmt: skip
    try:
        assert server.stderr is not None
        line = server.stderr.readline().decode()
        assert f"20000 messages of session '{SESSION}'" in line, line
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
            s.settimeout(5)
            s.sendto(RetransmissionPacket(SESSION, 100, 5).build(), ("127.0.0.1", serve_port))
            answer = Packet.parse(s.recv(65535))
        assert (answer.session_ident, answer.seq_num) == (SESSION, 100)
        assert [bytes(m) for m in answer] == messages[99:104]

        out = tmp_path / "out.bin"
        listener = start_listen(
            *QUICK_END,
            f"{GROUP}:{port}", "--request-server", f"127.0.0.1:{serve_port}", "-o", str(out),
            "--idle-timeout", "20",
        )  # fmt: skip
        pub = run(
            "publish", f"{GROUP}:{port}", "--session", SESSION, "--input", str(path),
            "--request-port", str(port + 1), "--drop", "0.1", "--seed", "2",
            "--end-of-session-duration", "1",
        )  # fmt: skip
        code, err = finish(listener)
        assert pub.returncode == 0 and code == 0, err
        assert out.read_bytes() == path.read_bytes()
    finally:
        server.send_signal(signal.SIGINT)
        code, err = finish(server)
    assert code == 130, err
    assert "requests" in err and "answers" in err


def test_serve_duration_and_allow_list(feed: tuple[Path, list[bytes]]) -> None:
    """--duration ends serve with exit 0; --allow refuses requests from elsewhere."""
    path, _ = feed
    port = free_port()
    server = start(
        "serve", "--input", str(path), "--session", SESSION, "--port", str(port),
        "--bind", "127.0.0.1", "--duration", "0.8", "--allow", "10.0.0.0/8",
    )  # fmt: skip
    assert server.stderr is not None
    assert b"messages of session" in server.stderr.readline()
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.settimeout(0.3)
        s.sendto(RetransmissionPacket(SESSION, 1, 5).build(), ("127.0.0.1", port))
        with pytest.raises(TimeoutError):
            s.recv(65535)
    code, err = finish(server)
    assert code == 0, err
    assert "done: 1 requests, 0 answers" in err
    assert "not_allowed" in err


def test_demo_exit_0_and_summary(tmp_path: Path) -> None:
    proc = run("demo", "--dir", str(tmp_path), timeout=60)
    out = proc.stdout.decode()
    assert proc.returncode == 0, out + proc.stderr.decode()
    assert out.startswith("moldudp64 demo: published 20000 messages, lost on the wire ")
    # every line says who speaks the same way
    err = proc.stderr.decode()
    assert all(line.startswith("moldudp64 demo: ") for line in err.splitlines() if line), err
    lost = int(out.split("lost on the wire ")[1].split(",")[0])
    assert lost > 0
    assert f"recovered {lost}, delivered 20000, output equals input" in out


def test_demo_over_loopback(tmp_path: Path) -> None:
    proc = run("demo", "--loopback", "--messages", "3000", "--drop", "0.2", "--seed", "4",
               "--dir", str(tmp_path))  # fmt: skip
    out = proc.stdout.decode()
    assert proc.returncode == 0, out + proc.stderr.decode()
    assert "unicast 127.0.0.1" in proc.stderr.decode()
    assert " over loopback" not in proc.stderr.decode()  # "over unicast ... on loopback"
    assert "delivered 3000, output equals input" in out


def test_listen_end_confirm_is_the_quiet_before_an_end_is_believed(
    multicast: None, tmp_path: Path
) -> None:
    """--end-confirm 0.3: one end of session, then silence, ends listen (every message
    written, exit 0) well before the default 2.5 s of quiet could have; the client it runs
    has the setting, and without the option the default."""
    from moldudp64.cli.feed import feed_client
    from moldudp64.cli.parser import build_parser

    for extra, believed_after in (([], 2.5), (["--end-confirm", "0.3"], 0.3)):
        args = build_parser().parse_args(["listen", "239.1.1.1:5000", *extra])
        config = feed_client(args).options.receiver_config(raw=False)
        assert config.end_confirm == believed_after

    port = free_port()
    out = tmp_path / "out.bin"
    listener = start_listen(
        f"{GROUP}:{port}", "--interface", "127.0.0.1", "-o", str(out),
        "--idle-timeout", "20", "--end-confirm", "0.3",
    )  # fmt: skip
    msgs = [b"first", b"second", b"third"]
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as tx:
        tx.setsockopt(socket.IPPROTO_IP, socket.IP_MULTICAST_IF, socket.inet_aton("127.0.0.1"))
        tx.sendto(build_packet(SESSION, 1, msgs[:2]), (GROUP, port))
        tx.sendto(build_packet(SESSION, 3, msgs[2:]), (GROUP, port))
        time.sleep(0.2)  # the data first, on its own (listen's reads gather for 1 ms)
        sent = time.monotonic()
        tx.sendto(build_end_of_session(SESSION, 4), (GROUP, port))
        code, err = finish(listener, timeout=20)
        quiet = time.monotonic() - sent
    assert code == 0, err
    assert "session ended: 3 messages written" in err
    assert list(iter_binaryfile(out)) == msgs
    assert quiet < 2.5, quiet  # the default would have waited 2.5 s of quiet at least


# -- bad input, live commands ---------------------------------------------------------------

END_CONFIRM = ["listen", "239.1.1.1:5000", "--end-confirm"]


@pytest.mark.parametrize(
    ("args", "needle"),
    [
        (["listen", "10.0.0.1:5000"], "not a multicast group"),
        (["listen", "239.1.1.1"], "not HOST:PORT"),
        (["listen", "239.1.1.1:99999"], "port"),
        (["listen", "239.1.1.1:5000", "--request-server", "nohost.invalid:1"], "resolve"),
        (["listen", "239.1.1.1:5000", "--count", "0"], "count must be >= 1"),
        (["listen", "239.1.1.1:5000", "--idle-timeout", "-1"], "seconds"),
        ([*END_CONFIRM, "0"], "'0': seconds must be a finite number > 0"),
        ([*END_CONFIRM, "-1"], "'-1': seconds must be a finite number > 0"),
        ([*END_CONFIRM, "inf"], "'inf': seconds must be a finite number > 0"),
        ([*END_CONFIRM, "nan"], "'nan': seconds must be a finite number > 0"),
        ([*END_CONFIRM, "soon"], "'soon' is not a number of seconds"),
        (
            [
                "bridge",
                "239.1.1.1:5000",
                "--nats",
                "nats://127.0.0.1:1",
                "--stream",
                "S",
                "--end-confirm",
                "0",
            ],
            "--end-confirm",
        ),
        (["listen", "239.1.1.1:5000", "--format", "xml"], "invalid choice"),
        (["listen", "239.1.1.1:5000", "--interface", "10.9.9.9", "--count", "1"], "interface"),
        (["publish", "239.1.1.1:5000", "--generate", "5"], "--session"),
        (
            ["publish", "239.1.1.1:5000", "--session", "S", "--input", "a", "--generate", "5"],
            "not allowed with",
        ),
        (
            ["publish", "239.1.1.1:5000", "--session", "S", "--generate", "5", "--drop", "2"],
            "probability",
        ),
        (
            ["publish", "239.1.1.1:5000", "--session", "S", "--input", "/nonexistent.bin"],
            "/nonexistent.bin",
        ),
        (
            [
                "publish",
                "239.1.1.1:5000",
                "--session",
                "S",
                "--generate",
                "5",
                "--max-payload",
                "5",
            ],
            "payload",
        ),
        (
            ["serve", "--input", "/nonexistent.bin", "--session", "S", "--port", "5000"],
            "/nonexistent.bin",
        ),
        (["serve", "--session", "S", "--port", "5000"], "--input"),
        (["demo", "--drop", "x"], "not a probability"),
        (
            ["serve", "--input", "f", "--session", "S", "--port", "1", "--allow", "10.0.0/33"],
            "not a network",
        ),
    ],
)
def test_live_bad_usage_one_line_exit_2(args: list[str], needle: str) -> None:
    line = assert_one_line_error(run(*args))
    assert needle in line


def test_truncated_input_and_busy_port(tmp_path: Path) -> None:
    bad = tmp_path / "cut.bin"
    bad.write_bytes(b"\x00\x05abc")
    line = assert_one_line_error(
        run("publish", "239.1.1.1:5000", "--session", "S", "--input", str(bad))
    )
    assert "truncated" in line
    good = tmp_path / "ok.bin"
    write_binaryfile(good, [b"x"])
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as busy:
        busy.bind(("127.0.0.1", 0))
        port = busy.getsockname()[1]
        line = assert_one_line_error(
            run(
                "serve",
                "--input",
                str(good),
                "--session",
                "S",
                "--port",
                str(port),
                "--bind",
                "127.0.0.1",
                "--duration",
                "1",
            )
        )
    assert f"127.0.0.1:{port}" in line


def test_listen_capture_unwritable(multicast: None, tmp_path: Path) -> None:
    line = assert_one_line_error(
        run("listen", f"{GROUP}:{free_port()}", "--capture", str(tmp_path / "no" / "c.pcap"))
    )
    assert "cannot create" in line


def test_live_status_on_a_terminal(multicast: None, tmp_path: Path) -> None:
    """With stderr a terminal, listen draws a one-line status (messages, rate, gaps,
    recovered, lost) and publish its progress; both still end with their summary."""
    import os
    import pty
    import sys
    import threading

    def drain(master: int, into: list[bytes]) -> None:
        """Read a pty until its child has gone (EIO), so the child never blocks writing."""
        while True:
            try:
                chunk = os.read(master, 65536)
            except OSError:
                return
            if not chunk:
                return
            into.append(chunk)

    port = free_port()
    out_l: list[bytes] = []
    out_p: list[bytes] = []
    master_l, slave_l = pty.openpty()
    master_p, slave_p = pty.openpty()
    readers = [
        threading.Thread(target=drain, args=(master_l, out_l), daemon=True),
        threading.Thread(target=drain, args=(master_p, out_p), daemon=True),
    ]
    try:
        listener = subprocess.Popen(
            [sys.executable, "-m", "moldudp64", "listen", f"{GROUP}:{port}",
             "--request-server", f"127.0.0.1:{port + 1}", "-o", str(tmp_path / "o.bin"),
             "--idle-timeout", "20"],
            stderr=slave_l,
        )  # fmt: skip
        os.close(slave_l)  # the child holds it: reads end (EIO) once it exits
        readers[0].start()
        deadline = time.monotonic() + 30
        while b"joined" not in b"".join(out_l) and time.monotonic() < deadline:
            time.sleep(0.02)
        publisher = subprocess.Popen(
            [sys.executable, "-m", "moldudp64", "publish", f"{GROUP}:{port}", "--session",
             SESSION, "--generate", "3000", "--rate", "5000", "--request-port", str(port + 1),
             "--drop", "0.05", "--seed", "1", "--end-of-session-duration", "0.5"],
            stderr=slave_p,
        )  # fmt: skip
        os.close(slave_p)
        readers[1].start()
        assert publisher.wait(60) == 0
        assert listener.wait(60) == 0
        for reader in readers:
            reader.join(10)
    finally:
        for fd in (master_l, master_p):
            os.close(fd)
    listen_err = b"".join(out_l).decode(errors="replace")
    publish_err = b"".join(out_p).decode(errors="replace")
    assert "\rlisten: " in listen_err
    assert "recovered" in listen_err and "msg/s" in listen_err
    assert "session ended: 3000 messages written" in listen_err
    assert "\rpublish: " in publish_err and "/3000 messages" in publish_err


def test_listen_line_a_and_b(
    multicast: None, feed: tuple[Path, list[bytes]], tmp_path: Path
) -> None:
    """Two lossy publishers of one session on two groups: the listener arbitrates A and B
    (and re-requests what both lost); the output is the input; the capture has both lines."""
    path, _ = feed
    port = free_port()
    port_b = free_port()
    out = tmp_path / "ab.bin"
    cap = tmp_path / "ab.pcap"
    listener = start_listen(
        *QUICK_END,
        f"{GROUP}:{port}", "--line-b", f"239.7.7.8:{port_b}",
        "--request-server", f"127.0.0.1:{port + 1}", "--request-server", f"127.0.0.1:{port_b + 1}",
        "-o", str(out), "--capture", str(cap), "--idle-timeout", "20",
    )  # fmt: skip
    pubs = [
        start(
            "publish",
            f"{group}:{p}",
            "--session",
            SESSION,
            "--input",
            str(path),
            "--request-port",
            str(p + 1),
            "--drop",
            "0.1",
            "--seed",
            str(seed),
            "--end-of-session-duration",
            "1",
            "--rate",  # a second or so: both lines are on the wire whatever start-up takes
            "20000",
        )
        for group, p, seed in ((GROUP, port, 1), ("239.7.7.8", port_b, 2))
    ]
    code, err = finish(listener)
    for pub in pubs:
        assert finish(pub)[0] == 0
    assert code == 0, err
    assert out.read_bytes() == path.read_bytes()
    with CaptureReader(cap) as reader:
        lines = {d.dst for d in reader if d.dst[0].startswith("239.")}
    assert lines == {(GROUP, port), ("239.7.7.8", port_b)}
