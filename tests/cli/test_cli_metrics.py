"""--metrics-port on listen, serve and publish: Prometheus metrics scraped over HTTP while
the command runs (values move, and end where the summary does); bad ports, ports in use, a
missing library: one line, exit 2."""

from __future__ import annotations

import os
import re
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

pytest.importorskip("prometheus_client")

from cli_helpers import (
    GROUP,
    QUICK_END,
    SESSION,
    assert_one_line_error,
    finish,
    free_port,
    run,
)
from metrics_helpers import (
    assert_gone,
    delivered,
    lossy_publisher,
    metric,
    scrape,
    start_with_metrics,
    wait_for,
)
from moldudp64.binaryfile import write_binaryfile
from moldudp64.wire import RetransmissionPacket


def test_listen_metrics_move_with_the_feed_and_end_at_the_summary(
    multicast: None, tmp_path: Path
) -> None:
    """A lossy publisher (10% of packets dropped) and its re-request server feed
    `listen --metrics-port 0`; scraped between two halves of the feed, the counters move,
    and the last scrape equals the summary's messages, gaps and recovered."""
    port = free_port()
    out = tmp_path / "out.bin"
    listener, url = start_with_metrics(
        "listen", *QUICK_END, f"{GROUP}:{port}", "--request-server", f"127.0.0.1:{port + 1}",
        "--output", str(out), "--idle-timeout", "20", ready="joined",
    )  # fmt: skip
    server = f"127.0.0.1:{port + 1}"
    publisher = lossy_publisher(SESSION, GROUP, port, seed=3)
    with publisher:
        before = scrape(url)
        assert metric(before, "moldudp64_messages_delivered_total") == 0
        halves = []
        for half in range(2):
            for i in range(50):
                publisher.publish_many(b"m%05d-%d" % (i, half) for _ in range(50))
                publisher.flush()
                time.sleep(0.002)
            halves.append(wait_for(url, delivered(2500 * (half + 1))))
        first, last = halves
        publisher.end_session()
    code, err = finish(listener)
    assert code == 0, err
    assert metric(first, "moldudp64_messages_delivered_total") == 2500
    assert metric(last, "moldudp64_messages_delivered_total") == 5000
    for name, labels in [
        ("moldudp64_packets_total", {"source": "line_a"}),
        ("moldudp64_packets_total", {"source": "retransmission"}),
        ("moldudp64_gaps_detected_total", {}),
        ("moldudp64_messages_recovered_total", {}),
        ("moldudp64_requests_sent_total", {"server": server}),
        ("moldudp64_request_answers_total", {"server": server}),
        ("moldudp64_datagrams_received_total", {}),
    ]:
        assert 0 < metric(first, name, **labels) < metric(last, name, **labels), name
    assert metric(last, "moldudp64_servers_in_rotation") == 1
    assert metric(last, "moldudp64_messages_lost_total") == 0
    assert metric(last, "moldudp64_held_packets") == 0
    assert metric(last, "moldudp64_consumer_backlog") == 0
    assert metric(last, "moldudp64_kernel_drops_total") >= 0

    summary = re.search(r"(\d+) messages written.*?(\d+) gaps, (\d+) recovered", err)
    assert summary is not None, err
    assert [int(g) for g in summary.groups()] == [
        metric(last, "moldudp64_messages_delivered_total"),
        metric(last, "moldudp64_gaps_detected_total"),
        metric(last, "moldudp64_messages_recovered_total"),
    ]
    assert_gone(url)


def test_serve_metrics_count_requests_answers_and_refusals(tmp_path: Path) -> None:
    """serve --metrics-port 0: two good re-requests, one of another session and one cut
    short; the scrape counts them by outcome and matches the summary at Ctrl-C."""
    path = tmp_path / "feed.bin"
    write_binaryfile(path, [b"message %d" % i for i in range(1, 101)])
    port = free_port()
    proc, url = start_with_metrics(
        "serve", "--input", str(path), "--session", SESSION, "--port", str(port),
        "--bind", "127.0.0.1", ready="messages of session",
    )  # fmt: skip
    assert metric(scrape(url), "moldudp64_rerequest_requests_total") == 0
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.settimeout(5)
        for request in (
            RetransmissionPacket(SESSION, 1, 5).build(),
            RetransmissionPacket(SESSION, 50, 2).build(),
        ):
            sock.sendto(request, ("127.0.0.1", port))
            sock.recvfrom(2000)
        sock.sendto(RetransmissionPacket("OTHER00001", 1, 1).build(), ("127.0.0.1", port))
        sock.sendto(b"\x01\x02\x03", ("127.0.0.1", port))
        samples = wait_for(url, lambda s: metric(s, "moldudp64_rerequest_requests_total") == 4)
    proc.send_signal(signal.SIGINT)
    code, err = finish(proc)
    assert code == 130, err
    assert metric(samples, "moldudp64_rerequest_requests_total") == 4
    assert metric(samples, "moldudp64_rerequest_answers_total") == 2
    assert metric(samples, "moldudp64_rerequest_messages_total") == 7
    assert metric(samples, "moldudp64_rerequest_refused_total", reason="wrong_session") == 1
    assert metric(samples, "moldudp64_rerequest_refused_total", reason="bad_length") == 1
    assert "4 requests, 2 answers (7 messages re-sent)" in err
    assert "refused: 1 bad_length, 1 wrong_session" in err
    assert_gone(url)


def test_publish_metrics_move_while_publishing_and_end_at_the_summary(multicast: None) -> None:
    """publish --generate 20000 --rate 20000 --metrics-port 0: the published messages grow
    across scrapes; a re-request is counted; the end matches the summary."""
    port = free_port()
    proc, url = start_with_metrics(
        "publish", f"{GROUP}:{port}", "--session", SESSION, "--generate", "20000",
        "--rate", "20000", "--end-of-session-duration", "1.5", ready="publish: session",
    )  # fmt: skip
    seen = []
    samples = scrape(url)
    while metric(samples, "moldudp64_published_messages_total") < 20000:
        seen.append(metric(samples, "moldudp64_published_messages_total"))
        time.sleep(0.1)
        samples = scrape(url)
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.settimeout(5)
        sock.sendto(RetransmissionPacket(SESSION, 10, 3).build(), ("127.0.0.1", port + 1))
        sock.recvfrom(2000)
    final = wait_for(url, lambda s: metric(s, "moldudp64_rerequest_answers_total") == 1)
    code, err = finish(proc)
    assert code == 0, err
    assert len({v for v in seen if 0 < v < 20000}) >= 2, seen  # it moved while running
    assert seen == sorted(seen)
    assert metric(final, "moldudp64_published_messages_total") == 20000
    assert metric(final, "moldudp64_published_next_seq_num") == 20001
    assert metric(final, "moldudp64_rerequest_requests_total") == 1
    assert metric(final, "moldudp64_rerequest_messages_total") == 3
    summary = re.search(r"20000 messages \(seq 1\.\.20000\) in (\d+) packets", err)
    assert summary is not None, err
    assert 0 < metric(final, "moldudp64_published_packets_total") <= int(summary.group(1))
    assert "1 re-requests, 1 answers (3 messages re-sent)" in err
    assert_gone(url)


@pytest.mark.parametrize("value", ["70000", "-1", "http", ""])
def test_a_bad_metrics_port_is_a_usage_error(value: str, tmp_path: Path) -> None:
    proc = run("serve", "--input", "x.bin", "--session", SESSION, "--port", "30002",
               "--metrics-port", value)  # fmt: skip
    assert "--metrics-port" in assert_one_line_error(proc)


def test_a_bad_metrics_addr_is_a_usage_error() -> None:
    proc = run("listen", f"{GROUP}:30001", "--metrics-port", "0", "--metrics-addr", "nowhere")
    assert "--metrics-addr" in assert_one_line_error(proc)


def test_an_address_not_of_this_host_is_a_one_line_error(tmp_path: Path) -> None:
    path = tmp_path / "feed.bin"
    write_binaryfile(path, [b"x"])
    proc = run("serve", "--input", str(path), "--session", SESSION, "--port", str(free_port()),
               "--metrics-port", "0", "--metrics-addr", "192.0.2.1", "--duration", "5")  # fmt: skip
    assert "cannot serve metrics on 192.0.2.1:0" in assert_one_line_error(proc)


@pytest.mark.parametrize("command", ["listen", "serve"])
def test_a_metrics_port_in_use_is_a_one_line_error(command: str, tmp_path: Path) -> None:
    path = tmp_path / "feed.bin"
    write_binaryfile(path, [b"x"])
    args = {
        "listen": ["listen", f"{GROUP}:{free_port()}", "-o", str(tmp_path / "out.bin"),
                   "--idle-timeout", "5"],
        "serve": ["serve", "--input", str(path), "--session", SESSION, "--port",
                  str(free_port()), "--duration", "5"],
    }[command]  # fmt: skip
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        proc = run(*args, "--metrics-port", str(port))
    line = assert_one_line_error(proc)
    assert f"cannot serve metrics on 127.0.0.1:{port}" in line, line


def test_without_prometheus_client_metrics_are_a_one_line_error(tmp_path: Path) -> None:
    """The base install lacks the library: --metrics-port says how to get it (exit 2);
    without --metrics-port the command does not need it."""
    blocker = tmp_path / "blocker" / "prometheus_client"
    blocker.mkdir(parents=True)
    (blocker / "__init__.py").write_text("raise ImportError('hidden by the test')\n")
    path = tmp_path / "feed.bin"
    write_binaryfile(path, [b"x"])
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(
        [str(blocker.parent), *filter(None, [env.get("PYTHONPATH")])]
    )
    serve = [sys.executable, "-m", "moldudp64", "serve", "--input", str(path), "--session",
             SESSION, "--port", str(free_port()), "--duration", "0"]  # fmt: skip
    proc = subprocess.run([*serve, "--metrics-port", "0"], capture_output=True, env=env,
                          timeout=60, check=False)  # fmt: skip
    line = assert_one_line_error(proc)
    assert "pip install 'moldudp64[metrics]'" in line, line
    plain = subprocess.run(serve, capture_output=True, env=env, timeout=60, check=False)
    assert plain.returncode == 0, plain.stderr.decode()


def test_publish_with_its_metrics_port_in_use_is_a_one_line_error(
    multicast: None,
) -> None:
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        proc = run("publish", f"{GROUP}:{free_port()}", "--session", SESSION, "--generate",
                   "10", "--metrics-port", str(port))  # fmt: skip
    line = assert_one_line_error(proc)
    assert f"moldudp64 publish: error: cannot serve metrics on 127.0.0.1:{port}" in line
