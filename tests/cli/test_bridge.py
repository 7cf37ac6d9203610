"""``moldudp64 bridge``, ``listen nats://...`` and ``serve --nats`` end to end.

A real publisher (with loss) on multicast in the test run's private namespace, a real
nats-server (the ``nats_url`` fixture of tests/test_jetstream.py), the command as a
subprocess.
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import re
import select
import signal
import socket
import subprocess
import time
import urllib.request
from pathlib import Path

import pytest

from cli_helpers import QUICK_END, assert_one_line_error, finish, jsonl, run, start
from client_support import free_udp_port
from metrics_helpers import assert_gone, lossy_publisher, metric, start_with_metrics, wait_for
from moldudp64.binaryfile import BinaryFileReader
from moldudp64.cli.bridge import _FeedThread, _Tally, _watch
from moldudp64.cli.common import _StopFlag
from moldudp64.cli.itchgen import generate_itch
from moldudp64.exceptions import MoldUDP64Error
from moldudp64.net import open_unicast_socket
from moldudp64.sync.client import MoldUDP64
from moldudp64.wire import Packet, RetransmissionRequest, build_heartbeat

pytest.importorskip("nats", reason="nats-py is not installed (pip install '.[test]')")

import test_jetstream
from moldudp64.jetstream import Bridge, connect, ensure_stream
from nats_support import free_tcp_port, server_command, start_server, wait_listening

nats_url = test_jetstream.nats_url  # the fixture: a fresh single-node JetStream server

GROUP = "239.7.7.9"
SESSION = "TEST000009"


def read_binaryfile(path: Path) -> list[bytes]:
    with BinaryFileReader(path) as reader:
        return list(reader)


def test_bridge_then_replay_and_serve_from_the_stream(
    multicast: None,
    nats_url: str,
    tmp_path: Path,
) -> None:
    port = free_udp_port()
    want = list(generate_itch(5000, 3))
    bridge = start(
        "bridge", *QUICK_END, f"{GROUP}:{port}", "--nats", nats_url, "--stream", "FEED",
        "--request-server", f"127.0.0.1:{port + 1}", "--idle-timeout", "20",
    )  # fmt: skip
    try:
        time.sleep(1.0)  # joined
        pub = run(
            "publish", f"{GROUP}:{port}", "--session", SESSION, "--generate", "5000",
            "--seed", "3", "--drop", "0.05", "--request-port", str(port + 1),
            "--end-of-session-duration", "1",
        )  # fmt: skip
        assert pub.returncode == 0, pub.stderr.decode()
        _, err = bridge.communicate(timeout=30)
        assert bridge.returncode == 0, err.decode()
        assert b"session ended: 5000 messages received, 0 lost" in err
    finally:
        bridge.kill()
        bridge.wait()

    out = tmp_path / "replay.bin"
    got = run("listen", f"{nats_url}/FEED", "-o", str(out))
    assert got.returncode == 0, got.stderr.decode()
    assert read_binaryfile(out) == want

    tail = run(
        "listen", f"{nats_url}/FEED", "--session", SESSION, "--start-seq", "2500",
        "--count", "3", "-o", "-", "--format", "jsonl",
    )  # fmt: skip
    assert tail.returncode == 0, tail.stderr.decode()
    assert [(r["seq"], bytes.fromhex(str(r["data"]))) for r in jsonl(tail.stdout)] == [
        (2500 + i, want[2499 + i]) for i in range(3)
    ]

    serve_port = free_udp_port()
    server = start(
        "serve", "--nats", nats_url, "--stream", "FEED", "--session", SESSION,
        "--port", str(serve_port), "--bind", "127.0.0.1", "--duration", "10",
        "--metrics-port", "0",
    )  # fmt: skip
    try:
        assert server.stderr is not None
        announced = server.stderr.readline().decode()  # its metrics come up first
        assert "metrics on http://" in announced, announced
        url = announced.split("metrics on ")[1].strip()
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
            s.settimeout(0.5)
            answer = b""
            for _ in range(20):  # until the server is up
                s.sendto(bytes(RetransmissionRequest(SESSION, 4000, 5)), ("127.0.0.1", serve_port))
                try:
                    answer = s.recv(2048)
                    break
                except TimeoutError:
                    continue
        packet = Packet(answer)
        assert (packet.seq_num, packet.messages()) == (4000, want[3999:4004])
        with urllib.request.urlopen(url, timeout=5) as page:  # the answer is counted
            scraped = page.read().decode()
        assert "moldudp64_rerequest_answers_total 1.0" in scraped, scraped[-2000:]
    finally:
        server.terminate()
        server.wait(10)


def test_a_live_reader_stops_idle_with_exit_4_and_a_missing_stream_is_exit_2(
    nats_url: str,
) -> None:
    idle = run("listen", f"{nats_url}/NOSUCH", "--idle-timeout", "0.5", "-o", "-")
    assert_one_line_error(idle, 2)
    assert "no stream NOSUCH" in idle.stderr.decode()


@pytest.mark.parametrize(
    "args",
    [
        ("listen", "nats://127.0.0.1"),  # no stream
        ("listen", "nats://127.0.0.1:99999/FEED"),
        ("serve", "--session", "S", "--port", "30002"),
        ("serve", "--nats", "nats://127.0.0.1:4222", "--session", "S", "--port", "30002"),
        ("bridge", "239.1.1.1:30001", "--stream", "FEED"),
    ],
)
def test_bad_nats_usage_is_one_line_and_exit_2(args: tuple[str, ...]) -> None:
    assert_one_line_error(run(*args), 2)


def test_no_nats_server_is_one_line_and_exit_2() -> None:
    proc = run("listen", f"nats://127.0.0.1:{free_tcp_port()}/FEED", "-o", "-")
    assert "cannot connect to NATS" in assert_one_line_error(proc, 2)


def test_bridge_exits_4_when_idle_and_130_when_terminated(
    multicast: None, nats_url: str, tmp_path: Path
) -> None:
    port = free_udp_port()
    feed = f"{GROUP}:{port}"
    idle = run("bridge", feed, "--nats", nats_url, "--stream", "FEED", "--idle-timeout", "0.5")
    assert idle.returncode == 4, idle.stderr.decode()
    assert b"idle for 0.5 s" in idle.stderr

    bridge = start("bridge", feed, "--nats", nats_url, "--stream", "FEED")
    try:
        assert bridge.stderr is not None
        # running (not a sleep: a loaded machine's start-up took longer than 1 s, and a
        # SIGTERM before the command's handler is Python's default death, -15)
        joined = bridge.stderr.readline()
        assert b"joined" in joined, joined
        bridge.terminate()
        _, err = bridge.communicate(timeout=10)
        assert bridge.returncode == 130, err.decode()
        assert b"interrupted" in err and b"Traceback" not in err
    finally:
        bridge.kill()
        bridge.wait()


def test_bridge_and_nats_listen_serve_metrics_while_they_run(
    multicast: None, nats_url: str, tmp_path: Path
) -> None:
    """`bridge --metrics-port 0` shows the feed (client metrics) and what reached the stream
    (bridge metrics, lag back to 0); a `listen nats://... --metrics-port 0` following the
    stream shows what it wrote, then ends with the session."""
    port = free_udp_port()
    bridge, bridge_url = start_with_metrics(
        "bridge", *QUICK_END, f"{GROUP}:{port}", "--nats", nats_url, "--stream", "FEED",
        "--request-server", f"127.0.0.1:{port + 1}", "--idle-timeout", "20", ready="joined",
    )  # fmt: skip
    out = tmp_path / "replay.bin"
    reader = None
    try:
        publisher = lossy_publisher(SESSION, GROUP, port, seed=5)
        with publisher:
            for i in range(40):
                publisher.publish_many(b"msg-%05d" % (i * 100 + j) for j in range(100))
                publisher.flush()
                time.sleep(0.002)
            fed = wait_for(
                bridge_url,
                lambda s: metric(s, "moldudp64_bridge_messages_stored_total") == 4000
                and metric(s, "moldudp64_bridge_lag_messages") == 0,
            )
            assert metric(fed, "moldudp64_messages_delivered_total") == 4000
            assert metric(fed, "moldudp64_gaps_detected_total") > 0  # 10% dropped...
            assert metric(fed, "moldudp64_messages_recovered_total") > 0  # ...and recovered
            assert metric(fed, "moldudp64_bridge_stored_next_seq") == 4001
            assert metric(fed, "moldudp64_bridge_lag_seconds") == 0
            assert metric(fed, "moldudp64_bridge_records_appended_total") >= 2  # 2048 a record
            assert metric(fed, "moldudp64_bridge_publish_errors_total") == 0

            reader, reader_url = start_with_metrics(
                "listen", f"{nats_url}/FEED", "-o", str(out), "--idle-timeout", "20",
                ready="metrics on",
            )  # fmt: skip
            following = wait_for(
                reader_url, lambda s: metric(s, "moldudp64_replay_messages_total") == 4000
            )
            assert metric(following, "moldudp64_replay_next_seq") == 4001
            assert metric(following, "moldudp64_replay_lost_messages_total") == 0
            assert metric(following, "moldudp64_replay_ended") == 0
            publisher.end_session()
        code, err = finish(bridge)
        assert code == 0, err
        assert "4000 messages received, 0 lost" in err
        code, err = finish(reader)
        assert code == 0, err
        assert "4000 messages written" in err
        assert_gone(reader_url)
        assert_gone(bridge_url)
        assert [bytes(m) for m in read_binaryfile(out)] == [b"msg-%05d" % i for i in range(4000)]
    finally:
        for proc in (bridge, reader):
            if proc is not None:
                proc.kill()
                proc.wait()


@pytest.mark.parametrize("command", ["bridge", "listen"])
def test_a_metrics_port_in_use_is_one_line_and_exit_2(
    command: str, multicast: None, nats_url: str, tmp_path: Path
) -> None:
    args = {
        "bridge": ["bridge", f"{GROUP}:{free_udp_port()}", "--nats", nats_url, "--stream", "FEED",
                   "--idle-timeout", "5"],
        "listen": ["listen", f"{nats_url}/FEED", "-o", str(tmp_path / "out.bin"),
                   "--idle-timeout", "5"],
    }[command]  # fmt: skip
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        proc = run(*args, "--metrics-port", str(port))
    assert f"cannot serve metrics on 127.0.0.1:{port}" in assert_one_line_error(proc, 2)


def records(url: str) -> list[tuple[str, int, int]]:
    """The stored session's records as (kind, first number, count), in stream order."""
    return test_jetstream.run(test_jetstream._cuts(url, SESSION))


def stored_count(url: str) -> int:
    return int(test_jetstream.run(test_jetstream._count_records(url)))


def joined(proc: subprocess.Popen[bytes]) -> subprocess.Popen[bytes]:
    assert proc.stderr is not None
    line = proc.stderr.readline().decode()
    assert "joined" in line, line
    return proc


def test_a_quiet_feed_with_heartbeats_is_not_idle_and_its_end_is_exit_0(
    multicast: None, nats_url: str
) -> None:
    """Three messages 1.4 s apart, heartbeats every 0.1 s between them: a bridge with
    --idle-timeout 1 keeps going (the feed is alive), stores all three and the end."""
    port = free_udp_port()
    bridge = joined(
        start(
            "bridge", *QUICK_END, f"{GROUP}:{port}", "--nats", nats_url, "--stream", "FEED",
            "--request-server", f"127.0.0.1:{port + 1}", "--idle-timeout", "1",
        )
    )  # fmt: skip
    try:
        publisher = start(
            "publish", f"{GROUP}:{port}", "--session", SESSION, "--generate", "3",
            "--rate", "0.7", "--heartbeat-interval", "0.1", "--end-of-session-duration", "0.3",
        )  # fmt: skip
        # Until publish says it starts sending, this test's heartbeats stand in for it: on a
        # loaded machine its start-up took longer than the idle timeout, which is not what
        # this test is about (from its first line on, the feed alone keeps the bridge going).
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as tx:
            tx.setsockopt(socket.IPPROTO_IP, socket.IP_MULTICAST_IF, socket.inet_aton("127.0.0.1"))
            assert publisher.stderr is not None
            while not select.select([publisher.stderr], [], [], 0.1)[0]:
                tx.sendto(build_heartbeat(SESSION, 1), (GROUP, port))
        announced = publisher.stderr.readline()
        assert b"moldudp64 publish: session" in announced, announced
        pub_code, pub_err = finish(publisher)
        assert pub_code == 0, pub_err
        code, err = finish(bridge)
        assert code == 0, err
        assert "session ended: 3 messages received, 0 lost" in err
    finally:
        bridge.kill()
        bridge.wait()
    assert [kind for kind, _, _ in records(nats_url)][-1] == "end"
    assert sum(n for kind, _, n in records(nats_url) if kind == "data") == 3


def test_count_stores_exactly_that_many_and_exits_0(multicast: None, nats_url: str) -> None:
    port = free_udp_port()
    bridge = joined(
        start(
            "bridge", *QUICK_END, f"{GROUP}:{port}", "--nats", nats_url, "--stream", "FEED",
            "--request-server", f"127.0.0.1:{port + 1}", "--count", "1234",
            "--idle-timeout", "20",
        )
    )  # fmt: skip
    try:
        pub = run(
            "publish", f"{GROUP}:{port}", "--session", SESSION, "--generate", "5000",
            "--end-of-session-duration", "0.2",
        )  # fmt: skip
        assert pub.returncode == 0, pub.stderr.decode()
        code, err = finish(bridge)
        assert code == 0, err
        assert "--count 1234 reached: 1234 messages received" in err
    finally:
        bridge.kill()
        bridge.wait()
    cuts = records(nats_url)
    assert [kind for kind, _, _ in cuts] == ["data"] * len(cuts)  # no end: it stopped short
    assert (cuts[0][1], cuts[-1][1] + cuts[-1][2]) == (1, 1235)
    assert sum(n for _, _, n in cuts) == 1234


@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGHUP])
def test_a_signal_mid_feed_is_exit_130_with_every_message_received_stored(
    multicast: None, nats_url: str, signum: int
) -> None:
    """A stop signal while the feed runs at 400,000 messages/s: the bridge stores what it
    took (the stream tiles 1..N, N the messages it says it received) and exits 130."""
    port = free_udp_port()
    bridge = joined(
        start(
            "bridge", *QUICK_END, f"{GROUP}:{port}", "--nats", nats_url, "--stream", "FEED",
            "--request-server", f"127.0.0.1:{port + 1}",
        )
    )  # fmt: skip
    pub = start(
        "publish", f"{GROUP}:{port}", "--session", SESSION, "--generate", "3000000",
        "--rate", "400000",
    )  # fmt: skip
    try:
        wait_until = time.monotonic() + 30
        while stored_count(nats_url) < 3:  # mid-feed: appending
            assert time.monotonic() < wait_until and pub.poll() is None
            time.sleep(0.05)
        bridge.send_signal(signum)
        code, err = finish(bridge, timeout=30)
    finally:
        for proc in (bridge, pub):
            proc.kill()
            proc.wait()
    assert code == 130, err
    assert "Traceback" not in err and "not stored" not in err
    said = re.search(r"interrupted: (\d+) messages received, 0 lost", err)
    assert said is not None, err
    cuts = records(nats_url)
    assert all(a + n == b for (_, a, n), (_, b, _) in itertools.pairwise(cuts))
    assert (cuts[0][1], cuts[-1][1] + cuts[-1][2] - 1) == (1, int(said[1]))


def test_a_signal_while_the_stream_does_not_answer_is_exit_130_within_the_grace(
    multicast: None, tmp_path: Path
) -> None:
    """nats-server frozen (SIGSTOP) mid-feed, then SIGTERM: the bridge cannot store what it
    holds; it stops 5 s after the signal (not after its 30 s outage bound), exit 130,
    saying how many messages it received were not stored."""
    nats_port = free_tcp_port()
    url = f"nats://127.0.0.1:{nats_port}"
    server = start_server(server_command(nats_port, tmp_path / "js"))
    port = free_udp_port()
    bridge = pub = None
    try:
        wait_listening(nats_port, server)
        bridge = joined(
            start(
                "bridge", *QUICK_END, f"{GROUP}:{port}", "--nats", url, "--stream", "FEED",
                "--request-server", f"127.0.0.1:{port + 1}",
            )
        )  # fmt: skip
        pub = start(
            "publish", f"{GROUP}:{port}", "--session", SESSION, "--generate", "3000000",
            "--rate", "200000",
        )  # fmt: skip
        wait_until = time.monotonic() + 30
        while stored_count(url) < 2:
            assert time.monotonic() < wait_until and pub.poll() is None
            time.sleep(0.05)
        server.send_signal(signal.SIGSTOP)
        time.sleep(0.5)  # appends pile up unanswered
        bridge.terminate()
        signalled = time.monotonic()
        code, err = finish(bridge, timeout=60)
        took = time.monotonic() - signalled
    finally:
        server.send_signal(signal.SIGCONT)
        for proc in (bridge, pub, server):
            if proc is not None:
                proc.kill()
                proc.wait()
    assert code == 130, err
    assert "Traceback" not in err and "interrupted" in err
    assert re.search(r"\d+ messages received were not stored: the stream did not take them", err)
    assert took < 25, took  # the grace (5 s) and the close (5 s) at most, not the 30 s bound


def test_an_error_in_the_feed_thread_reaches_the_bridge_as_itself(nats_url: str) -> None:
    """The feed thread hands its error to the event loop, which raises it from the bridge
    (typed, so the command prints one line, exit 2); the thread is then stopped at once.
    Here the client refuses to be read (started in the low-level mode)."""
    client = MoldUDP64(("239.7.7.9", 1), receiver_thread=False)
    client.start_with_sockets(
        open_unicast_socket(("127.0.0.1", 0)), open_unicast_socket(("127.0.0.1", 0))
    )
    args = argparse.Namespace(idle_timeout=None, count=None)

    async def main() -> None:
        nc = await connect(nats_url)
        try:
            js = nc.jetstream()
            await ensure_stream(js, "FEED")
            feed = _FeedThread(client, asyncio.get_running_loop())
            try:
                with pytest.raises(MoldUDP64Error, match="started with start"):
                    await Bridge(js, "FEED").run(_watch(feed, args, _Tally(), _StopFlag()))
            finally:
                feed.halt()
        finally:
            await nc.close()

    with client:
        test_jetstream.run(main(), timeout=20)


def test_a_foreign_end_of_session_mid_feed_is_refused_and_listen_stops_at_it_loudly(
    multicast: None, nats_url: str, tmp_path: Path
) -> None:
    """Someone publishes ``Mold-Kind: end, Mold-Seq: 1`` on the session's subject while the
    bridge stores a feed: the bridge keeps storing after it, says so and exits 2 (not
    "0 lost" with the rest missing); ``listen nats://`` writes what came before it and
    exits 2 naming it; with it deleted, the whole session reads back."""
    port = free_udp_port()
    bridge = joined(
        start(
            "bridge", *QUICK_END, f"{GROUP}:{port}", "--nats", nats_url, "--stream", "FEED",
            "--request-server", f"127.0.0.1:{port + 1}", "--idle-timeout", "20",
        )
    )  # fmt: skip

    async def forge() -> int:
        nc = await connect(nats_url)
        try:
            headers = {"Mold-Kind": "end", "Mold-Seq": "1"}
            subject = f"FEED.s.{SESSION.encode().hex()}"
            return int((await nc.jetstream().publish(subject, b"", headers=headers)).seq)
        finally:
            await nc.close()

    try:
        pub = start(
            "publish", f"{GROUP}:{port}", "--session", SESSION, "--generate", "3000",
            "--rate", "3000", "--end-of-session-duration", "0.3",
        )  # fmt: skip
        deadline = time.monotonic() + 10
        while stored_count(nats_url) < 1 and time.monotonic() < deadline:  # a first record
            time.sleep(0.02)
        forged = test_jetstream.run(forge())
        assert pub.wait(30) == 0
        code, err = finish(bridge)
    finally:
        bridge.kill()
        bridge.wait()
    assert code == 2, err
    assert "session ended: 3000 messages received, 0 lost" in err
    assert "refused 1 record(s) no bridge writes" in err
    assert f"stream message {forged} on FEED.s." in err and "end of session at 1" in err

    out = tmp_path / "out.bin"
    listen = run("listen", f"{nats_url}/FEED", "-o", str(out))
    line = assert_one_line_error(listen, 2)
    assert f"stream message {forged} on FEED.s." in line and "ends the session at 1" in line
    written = read_binaryfile(out)
    assert written == list(generate_itch(3000, 0))[: len(written)] and written

    async def delete() -> None:
        nc = await connect(nats_url)
        try:
            await nc.jetstream().delete_msg("FEED", forged)
        finally:
            await nc.close()

    test_jetstream.run(delete())
    whole = run("listen", f"{nats_url}/FEED", "-o", str(out))
    assert whole.returncode == 0, whole.stderr.decode()
    assert read_binaryfile(out) == list(generate_itch(3000, 0))
