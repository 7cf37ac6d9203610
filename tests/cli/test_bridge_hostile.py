"""``bridge``, ``listen nats://`` and ``serve --nats`` used wrongly, or against a stream and
a server that misbehave: one line on stderr and exit 2, or the loss in the summary; never
a traceback or a hang, and what was written is whole.

Real nats-server processes (the ``nats_url`` fixture of tests/test_jetstream.py) and the
command as a subprocess where it runs against them; usage errors run in-process.
"""

from __future__ import annotations

import asyncio
import signal
import socket
import subprocess
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from cli_helpers import assert_one_line_error, free_port, jsonl, run, start
from moldudp64 import cli
from moldudp64.cli import EXIT_PAST_END
from moldudp64.cli.feed import parse_nats_source
from moldudp64.events import MessagesDelivered, SessionEnded

pytest.importorskip("nats", reason="nats-py is not installed (pip install '.[test]')")

import test_jetstream
from moldudp64.jetstream import Bridge, connect, ensure_stream, session_subject

nats_url = test_jetstream.nats_url  # the fixture: a fresh single-node JetStream server
from nats_support import free_tcp_port, server_command, start_server, wait_listening  # noqa: E402

SESSION = "HOSTILE001"


def store(url: str, count: int, *, end: bool = True, session: str = SESSION) -> None:
    """``count`` messages b"m1".. of ``session`` in stream FEED, as a bridge stores them."""
    messages = [b"m%d" % s for s in range(1, count + 1)]

    async def main() -> None:
        nc = await connect(url)
        try:
            js = nc.jetstream()
            await ensure_stream(js, "FEED")
            events: list[Any] = [MessagesDelivered(session, 1, messages)]
            if end:
                events.append(SessionEnded(session, count + 1))
            await Bridge(js, "FEED").run(events)
        finally:
            await nc.close()

    asyncio.run(main())


def in_process(*args: str) -> int:
    """The command in this process; an argument error's exit code like any other."""
    try:
        return cli.main(list(args))
    except SystemExit as exc:
        return int(exc.code or 0)


def wait_for_lines(path: Path, count: int, timeout: float = 20) -> None:
    """Until ``path`` holds ``count`` lines (listen flushes its output every 0.25 s)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if path.exists() and path.read_bytes().count(b"\n") >= count:
            return
        time.sleep(0.05)
    pytest.fail(f"{path} did not reach {count} lines")


def whole_and_in_order(path: Path) -> list[int]:
    """The sequence numbers of a JSON-lines output: every line whole, 1, 2, 3, ..."""
    text = path.read_text()
    assert text == "" or text.endswith("\n"), text[-200:]
    seqs = [int(str(r["seq"])) for r in jsonl(text.encode())]
    assert seqs == list(range(1, len(seqs) + 1))
    return seqs


# -- usage ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "url", "stream"),
    [
        ("nats://127.0.0.1:4222/FEED", "nats://127.0.0.1:4222", "FEED"),
        ("nats://127.0.0.1/FEED", "nats://127.0.0.1:4222", "FEED"),
        ("nats://Host.Example:5000/FEED/", "nats://host.example:5000", "FEED"),
        ("nats://[::1]:4222/FEED", "nats://[::1]:4222", "FEED"),
        ("nats://me:secret@127.0.0.1:4222/FEED", "nats://me:secret@127.0.0.1:4222", "FEED"),
    ],
)
def test_nats_sources_listen_takes(text: str, url: str, stream: str) -> None:
    source = parse_nats_source(text)
    assert (source.url, source.stream) == (url, stream)


@pytest.mark.parametrize(
    ("text", "says"),
    [
        ("nats://127.0.0.1", "is not nats://HOST:PORT/STREAM"),
        ("nats://:4222/FEED", "is not nats://HOST:PORT/STREAM"),
        ("nats://127.0.0.1:4222/A/B", "is not nats://HOST:PORT/STREAM"),
        ("nats://127.0.0.1:99999/FEED", "bad port"),
        ("nats://127.0.0.1:0/FEED", "bad port 0"),
        ("nats://127.0.0.1:port/FEED", "bad port"),
        ("nats://127.0.0.1:4222/FEED?replicas=3", "nothing may follow STREAM"),
        ("nats://127.0.0.1:4222/FEED#x", "nothing may follow STREAM"),
        ("nats://127.0.0.1:4222/BAD.NAME", "stream name"),
        ("nats://127.0.0.1:4222/BAD*", "stream name"),
        ("nats://127.0.0.1:4222/A\\B", "stream name"),
    ],
)
def test_a_bad_nats_source_is_one_line_and_exit_2(
    text: str, says: str, capsys: pytest.CaptureFixture[str]
) -> None:
    assert in_process("listen", text, "-o", "-") == 2
    err = capsys.readouterr().err
    assert says in err and "Traceback" not in err and len(err.strip().splitlines()) == 1, err


def test_a_tls_url_is_not_taken_for_a_feed_address(capsys: pytest.CaptureFixture[str]) -> None:
    assert in_process("listen", "tls://127.0.0.1:4222/FEED", "-o", "-") == 2
    err = capsys.readouterr().err
    assert "tls://127.0.0.1:4222/FEED" in err and len(err.strip().splitlines()) == 1, err
    assert "a tls:// source is not supported" in err, err  # not "port '4222/FEED'"


@pytest.mark.parametrize(
    "option",
    [
        ("--request-server", "127.0.0.1:30002"),
        ("--line-b", "239.1.1.2:30001"),
        ("--request-delay", "0"),
        ("--end-confirm", "0.3"),
        ("--interface", "127.0.0.1"),
        ("--capture", "x.pcap"),
    ],
)
def test_every_feed_option_is_refused_for_a_nats_source_rather_than_ignored(
    option: tuple[str, str], capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    port = free_tcp_port()  # nothing listens: the refusal comes before any connection
    args = ("listen", f"nats://127.0.0.1:{port}/FEED", "-o", str(tmp_path / "out"), *option)
    assert in_process(*args) == 2
    err = capsys.readouterr().err
    assert option[0] in err and "not" in err and len(err.strip().splitlines()) == 1, err


@pytest.mark.parametrize("count", ["0", "-1", "many"])
def test_a_count_that_is_no_count_is_refused(
    count: str, capsys: pytest.CaptureFixture[str]
) -> None:
    assert in_process("listen", "nats://127.0.0.1:4222/FEED", "--count", count) == 2
    assert "--count" in capsys.readouterr().err


def test_serve_and_bridge_refuse_a_bad_stream_name_before_connecting(
    capsys: pytest.CaptureFixture[str],
) -> None:
    url = f"nats://127.0.0.1:{free_tcp_port()}"  # nothing listens there
    serve = ("serve", "--nats", url, "--stream", "A.B", "--session", SESSION, "--port", "1")
    assert in_process(*serve) == 2
    assert "stream name 'A.B'" in capsys.readouterr().err
    assert in_process("bridge", "239.1.1.1:30001", "--nats", url, "--stream", "A/B") == 2
    assert "stream name 'A/B'" in capsys.readouterr().err


# -- against a real server -----------------------------------------------------------------


def test_a_bridge_refuses_at_once_a_stream_whose_subjects_it_cannot_append_to(
    nats_url: str,
) -> None:
    async def foreign() -> None:
        nc = await connect(nats_url)
        try:
            await nc.jetstream().add_stream(name="ORDERS", subjects=["orders.>"])
        finally:
            await nc.close()

    asyncio.run(foreign())
    bridge = run("bridge", "239.1.1.1:30001", "--nats", nats_url, "--stream", "ORDERS")
    line = assert_one_line_error(bridge, 2)  # not "appends to ORDERS failing for 30 s"
    assert "stream ORDERS exists with subjects ['orders.>']" in line


def test_a_bridge_refuses_at_once_a_stream_whose_limits_discard_its_appends(
    nats_url: str,
) -> None:
    async def bounded() -> None:
        nc = await connect(nats_url)
        try:
            await nc.jetstream().add_stream(
                name="FEED", subjects=["FEED.>"], max_msgs_per_subject=1
            )
        finally:
            await nc.close()

    asyncio.run(bounded())
    bridge = run("bridge", "239.1.1.1:30001", "--nats", nats_url, "--stream", "FEED")
    line = assert_one_line_error(bridge, 2)  # not "20000 received, 0 lost" and nothing stored
    assert "limits that discard a bridge's appends: max_msgs_per_subject=1" in line


def test_serve_without_the_stream_is_one_line_and_exit_2(nats_url: str) -> None:
    serve = run(
        "serve", "--nats", nats_url, "--stream", "NOSUCH", "--session", SESSION,
        "--port", str(free_port()), "--bind", "127.0.0.1", "--duration", "5",
    )  # fmt: skip
    assert "no stream NOSUCH" in assert_one_line_error(serve, 2)


def test_listen_stops_at_a_damaged_record_with_what_came_before_written(
    nats_url: str, tmp_path: Path
) -> None:
    store(nats_url, 1000, end=False)

    async def damage() -> None:
        nc = await connect(nats_url)
        try:
            headers = {"Mold-Kind": "data", "Mold-Seq": "1001", "Mold-Count": "9"}
            await nc.jetstream().publish(session_subject("FEED", SESSION), b"\x00", headers=headers)
        finally:
            await nc.close()

    asyncio.run(damage())
    out = tmp_path / "out.jsonl"
    listen = run("listen", f"{nats_url}/FEED", "-o", str(out), "--format", "jsonl")
    assert "damaged data record" in assert_one_line_error(listen, 2)
    assert whole_and_in_order(out) == list(range(1, 1001))


def test_listen_refuses_a_forged_session_subject(nats_url: str) -> None:
    store(nats_url, 10)

    async def forge() -> None:
        nc = await connect(nats_url)
        try:
            await nc.jetstream().publish("FEED.s.41424344", b"")  # 4 bytes, not 10
        finally:
            await nc.close()

    asyncio.run(forge())
    listen = run("listen", f"{nats_url}/FEED", "-o", "-")
    assert "'FEED.s.41424344' of stream FEED names no session" in assert_one_line_error(listen)
    named = run("listen", f"{nats_url}/FEED", "--session", SESSION, "-o", "-", "--format", "jsonl")
    assert named.returncode == 0, named.stderr.decode()
    assert [r["session"] for r in jsonl(named.stdout)] == [SESSION] * 10


def test_listen_from_beyond_the_end_or_for_more_than_stored_ends_cleanly(
    nats_url: str,
) -> None:
    store(nats_url, 100)
    for start_seq in (2**64 - 1, 101):  # nothing stored from there on: say so, exit 6
        beyond = run("listen", f"{nats_url}/FEED", "--start-seq", str(start_seq), "-o", "-")
        assert beyond.returncode == EXIT_PAST_END == 6, beyond.stderr.decode()
        assert beyond.stdout == b""
        assert b"session ended: 0 messages written" in beyond.stderr
        assert (
            f"--start-seq {start_seq} is past the stored session: it ended after message 100"
        ) in beyond.stderr.decode()
    last = run("listen", f"{nats_url}/FEED", "--start-seq", "100", "-o", "-")
    assert last.returncode == 0, last.stderr.decode()
    assert b"session ended: 1 messages written" in last.stderr
    more = run("listen", f"{nats_url}/FEED", "--count", str(2**40), "-o", "-", "--format", "jsonl")
    assert more.returncode == 0, more.stderr.decode()
    assert len(jsonl(more.stdout)) == 100
    assert b"session ended: 100 messages written" in more.stderr


def test_listen_for_a_session_the_stream_lacks_names_those_it_holds_and_waits(
    nats_url: str,
) -> None:
    store(nats_url, 10)
    store(nats_url, 5, session="OTHER00002")
    wrong = run("listen", f"{nats_url}/FEED", "--session", "WRONG", "--idle-timeout", "1")
    assert wrong.returncode == 4, wrong.stderr.decode()
    err = wrong.stderr.decode()
    assert (
        "stream FEED holds no session 'WRONG' (it holds 'HOSTILE001' (2 records), "
        "'OTHER00002' (2 records)); waiting for it (--idle-timeout 1 s)"
    ) in err, err
    assert "idle for 1.0 s: 0 messages written" in err


def test_listen_to_a_stream_without_a_session_says_it_waits(nats_url: str) -> None:
    async def empty() -> None:
        nc = await connect(nats_url)
        try:
            await ensure_stream(nc.jetstream(), "FEED")
        finally:
            await nc.close()

    asyncio.run(empty())
    waiting = run("listen", f"{nats_url}/FEED", "--idle-timeout", "0.5")
    assert waiting.returncode == 4, waiting.stderr.decode()
    assert "stream FEED holds no session yet; waiting for it" in waiting.stderr.decode()


def test_listen_of_a_stream_deleted_under_it_is_one_line_and_exit_2(
    nats_url: str, tmp_path: Path
) -> None:
    store(nats_url, 500, end=False)
    out = tmp_path / "out.jsonl"
    listen = start("listen", f"{nats_url}/FEED", "-o", str(out), "--format", "jsonl")
    try:
        wait_for_lines(out, 500)  # all written; listen waits for more

        async def delete() -> None:
            nc = await connect(nats_url)
            try:
                await nc.jetstream().delete_stream("FEED")
            finally:
                await nc.close()

        asyncio.run(delete())
        _, err = listen.communicate(timeout=20)
    finally:
        listen.kill()
        listen.wait()
    done = subprocess.CompletedProcess(listen.args, listen.returncode, b"", err)
    assert "stream FEED was deleted while being read" in assert_one_line_error(done, 2)
    assert whole_and_in_order(out) == list(range(1, 501))


def test_listen_waits_out_a_server_restart_and_finishes_the_session(tmp_path: Path) -> None:
    port = free_tcp_port()
    url = f"nats://127.0.0.1:{port}"
    cmd = server_command(port, tmp_path / "js")
    servers = [start_server(cmd)]
    out = tmp_path / "out.jsonl"
    try:
        wait_listening(port, servers[0])
        store(url, 1000, end=False)
        listen = start("listen", f"{url}/FEED", "-o", str(out), "--format", "jsonl")
        wait_for_lines(out, 1000)
        servers[0].kill()
        servers[0].wait()
        time.sleep(1.0)  # listen keeps asking meanwhile
        servers.append(start_server(cmd))
        wait_listening(port, servers[-1])

        async def finish() -> None:
            nc = await connect(url)
            try:
                js = nc.jetstream()
                messages = [b"m%d" % s for s in range(1001, 1501)]
                events = [MessagesDelivered(SESSION, 1001, messages), SessionEnded(SESSION, 1501)]
                await Bridge(js, "FEED").run(events)
            finally:
                await nc.close()

        asyncio.run(finish())
        _, err = listen.communicate(timeout=60)
        assert listen.returncode == 0, err.decode()
        assert b"session ended: 1500 messages written" in err
        assert whole_and_in_order(out) == list(range(1, 1501))
    finally:
        for p in servers:
            p.kill()
            p.wait()


def test_sigterm_mid_replay_is_exit_130_with_the_output_whole(
    nats_url: str, tmp_path: Path
) -> None:
    store(nats_url, 50_000, end=False)
    out = tmp_path / "out.jsonl"
    listen = start("listen", f"{nats_url}/FEED", "-o", str(out), "--format", "jsonl")
    try:
        deadline = time.monotonic() + 20
        while (not out.exists() or out.stat().st_size == 0) and time.monotonic() < deadline:
            time.sleep(0.01)
        listen.send_signal(signal.SIGTERM)
        _, err = listen.communicate(timeout=20)
    finally:
        listen.kill()
        listen.wait()
    assert listen.returncode == 130, err.decode()
    assert b"Traceback" not in err
    written = len(whole_and_in_order(out))
    assert f"interrupted: {written} messages written".encode() in err


@pytest.fixture
def http_port() -> Iterator[int]:
    """A loopback port where an HTTP server, not NATS, answers."""
    server = socket.create_server(("127.0.0.1", 0))

    def answer() -> None:
        while True:
            try:
                conn, _ = server.accept()
            except OSError:
                return
            with conn:
                conn.sendall(b"HTTP/1.1 400 Bad Request\r\nContent-Length: 0\r\n\r\n")

    threading.Thread(target=answer, daemon=True).start()
    try:
        yield server.getsockname()[1]
    finally:
        server.close()


def test_listen_to_a_port_that_is_not_nats_is_one_line_and_exit_2(http_port: int) -> None:
    listen = run("listen", f"nats://127.0.0.1:{http_port}/FEED", "-o", "-")
    assert "cannot connect to NATS" in assert_one_line_error(listen, 2)


def test_a_replay_names_a_short_session_padded_as_live_listen_does(nats_url: str) -> None:
    store(nats_url, 3, session="S1")
    for args in ((), ("--session", "S1")):
        got = run("listen", f"{nats_url}/FEED", *args, "-o", "-", "--format", "jsonl")
        assert got.returncode == 0, got.stderr.decode()
        assert [r["session"] for r in jsonl(got.stdout)] == ["S1        "] * 3
        assert b"session 'S1' from stream FEED" in got.stderr


@pytest.fixture
def silent_port() -> Iterator[int]:
    """A loopback port that accepts connections and never says a word (a NATS client waits
    for its greeting until its connect timeout)."""
    server = socket.create_server(("127.0.0.1", 0))
    try:
        yield server.getsockname()[1]
    finally:
        server.close()


@pytest.mark.parametrize("command", ["bridge", "listen"])
def test_a_signal_while_connecting_is_exit_130_at_once(
    command: str, silent_port: int, tmp_path: Path
) -> None:
    url = f"nats://127.0.0.1:{silent_port}"
    args = {
        "bridge": ["bridge", "239.7.7.10:30001", "--nats", url, "--stream", "FEED"],
        "listen": ["listen", f"{url}/FEED", "-o", str(tmp_path / "out.bin")],
    }[command]
    proc = start(*args)
    time.sleep(1.0)  # started, and waiting for the server's greeting
    proc.terminate()
    _, err = proc.communicate(timeout=10)
    assert proc.returncode == 130, err.decode()
    assert b"interrupted" in err and b"Traceback" not in err


def test_listen_from_past_a_live_session_says_where_it_is_and_waits(nats_url: str) -> None:
    store(nats_url, 10, end=False)
    waiting = run(
        "listen", f"{nats_url}/FEED", "--session", SESSION, "--start-seq", "1000000",
        "--idle-timeout", "0.5",
    )  # fmt: skip
    err = waiting.stderr.decode()
    assert waiting.returncode == 4, err
    assert (
        "--start-seq 1000000 is past what session 'HOSTILE001' holds so far (up to message "
        "10, stream message 1); waiting for it (--idle-timeout 0.5 s)"
    ) in err, err


def test_serve_for_a_session_the_stream_lacks_names_those_it_holds(nats_url: str) -> None:
    store(nats_url, 10)
    serve = run(
        "serve", "--nats", nats_url, "--stream", "FEED", "--session", "WRONG",
        "--port", str(free_port()), "--bind", "127.0.0.1", "--duration", "0.2",
    )  # fmt: skip
    err = serve.stderr.decode()
    assert serve.returncode == 0, err
    assert (
        "stream FEED holds no session 'WRONG' (it holds 'HOSTILE001' (2 records)); serving it "
        "as a bridge stores it"
    ) in err, err
