"""Prometheus metrics: the collectors read real stats snapshots; the server serves them over
HTTP on loopback from its own registry, and frees its port when closed."""

from __future__ import annotations

import select
import socket
import struct
import threading
import time
import urllib.request
from pathlib import Path
from typing import Any

import pytest

pytest.importorskip("prometheus_client")

from prometheus_client import CollectorRegistry
from prometheus_client.parser import text_string_to_metric_families

from moldudp64._client.consumer import ClientStats
from moldudp64.events import Source
from moldudp64.metrics import (
    GRACE,
    MAX_CONNECTIONS,
    READ_TIMEOUT,
    ClientCollector,
    FieldsCollector,
    MetricsError,
    MetricsServer,
    PublisherCollector,
    RerequestCollector,
    start_metrics,
)
from moldudp64.publisher import PublisherCore
from moldudp64.receiver import ReceiverConfig, ReceiverCore
from moldudp64.rerequest import RerequestServerCore
from moldudp64.store import MemoryStore
from moldudp64.wire import RetransmissionPacket, build_packet

SESSION = "METRICS001"
SERVER = ("127.0.0.1", 30002)


def client_stats(core: ReceiverCore | None, **counts: int) -> ClientStats:
    values = dict(
        datagrams_received=0, recv_errors=0, requests_sent=0, send_errors=0,
        kernel_drops=0, backlog_pauses=0, internal_errors=0,
    )  # fmt: skip
    values.update(counts)
    return ClientStats(receiver=None if core is None else core.stats, **values)


def registry_of(*collectors: Any) -> CollectorRegistry:
    registry = CollectorRegistry(auto_describe=False)
    for collector in collectors:
        registry.register(collector)
    return registry


def scrape(url: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    """Every sample at ``url``, by (name, sorted labels)."""
    with urllib.request.urlopen(url, timeout=5) as response:
        text = response.read().decode()
    return {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }


def test_a_receiver_with_a_gap_and_its_recovery_is_counted() -> None:
    """Messages 1-2, then 5-6 and 7 (a gap of 3-4, confirmed, requested), then the answer:
    every counter the core keeps shows up under its metric name, by source and by server."""
    core = ReceiverCore(ReceiverConfig(rerequest_server_addrs=[SERVER]))
    core.receive_datagram(build_packet(SESSION, 1, [b"a", b"b"]), Source.LINE_A, 0.0)
    core.receive_datagram(build_packet(SESSION, 5, [b"e", b"f"]), Source.LINE_A, 0.0)
    core.receive_datagram(build_packet(SESSION, 7, [b"g"]), Source.LINE_A, 0.0)
    core.handle_timer(0.01)
    assert core.datagrams_to_send(0.01)  # the request for 3..4
    core.receive_datagram(build_packet(SESSION, 3, [b"c", b"d"]), Source.RETRANSMISSION, 0.02,
                          SERVER)  # fmt: skip
    core.receive_datagram(b"\x00" * 5, Source.LINE_A, 0.03)  # malformed
    stats = client_stats(core, datagrams_received=4, kernel_drops=7, backlog=12)
    registry = registry_of(ClientCollector(lambda: stats))
    value = registry.get_sample_value

    assert value("moldudp64_messages_delivered_total") == 7
    assert value("moldudp64_packets_total", {"source": "line_a"}) == 4
    assert value("moldudp64_packets_total", {"source": "retransmission"}) == 1
    assert value("moldudp64_gaps_detected_total") == 1
    assert value("moldudp64_messages_recovered_total") == 2
    assert value("moldudp64_messages_lost_total") == 0
    assert value("moldudp64_requests_sent_total", {"server": "127.0.0.1:30002"}) == 1
    assert value("moldudp64_request_answers_total", {"server": "127.0.0.1:30002"}) == 1
    assert value("moldudp64_request_timeouts_total", {"server": "127.0.0.1:30002"}) == 0
    assert value("moldudp64_servers_in_rotation") == 1
    assert value("moldudp64_kernel_drops_total") == 7
    assert value("moldudp64_consumer_backlog") == 12
    assert value("moldudp64_datagrams_received_total") == 4
    assert value("moldudp64_held_packets") == 0
    assert value("moldudp64_open_gaps") == 0
    assert sum(core.stats.malformed.values()) == 1
    (reason,) = core.stats.malformed
    assert value("moldudp64_datagrams_malformed_total", {"reason": reason}) == 1


def test_held_packets_and_drops_by_reason_are_gauges_and_labelled_counters() -> None:
    """A gap not yet filled holds the packets after it; a datagram of another session is
    dropped and counted by its reason."""
    core = ReceiverCore(ReceiverConfig(expected_session_ident=SESSION))
    core.receive_datagram(build_packet(SESSION, 1, [b"a"]), Source.LINE_A, 0.0)
    core.receive_datagram(build_packet(SESSION, 3, [b"c" * 100]), Source.LINE_A, 0.0)
    core.receive_datagram(build_packet(SESSION, 4, [b"d"]), Source.LINE_A, 0.0)
    core.receive_datagram(build_packet("OTHER00001", 1, [b"x"]), Source.LINE_A, 0.0)
    registry = registry_of(ClientCollector(lambda: client_stats(core)))
    value = registry.get_sample_value
    assert value("moldudp64_held_packets") == 2
    assert value("moldudp64_held_bytes") == core.stats.held_bytes > 100
    assert value("moldudp64_open_gaps") == 1
    assert value("moldudp64_missing_messages") == 1
    (reason,) = core.stats.dropped
    assert value("moldudp64_datagrams_dropped_total", {"reason": reason}) == 1


def test_a_client_not_yet_opened_has_only_its_own_counters() -> None:
    registry = registry_of(ClientCollector(lambda: client_stats(None, datagrams_received=3)))
    assert registry.get_sample_value("moldudp64_datagrams_received_total") == 3
    assert registry.get_sample_value("moldudp64_messages_delivered_total") is None


def test_a_rerequest_server_counts_answers_and_refusals_by_reason() -> None:
    store = MemoryStore()
    for i in range(10):
        store.append(b"m%d" % i)
    core = RerequestServerCore(SESSION, store, rate_limit=None)
    client = ("127.0.0.1", 40000)
    assert core.handle_request(RetransmissionPacket(SESSION, 2, 3).build(), client, 0.0)
    core.handle_request(RetransmissionPacket("WRONG00001", 1, 1).build(), client, 0.0)
    core.handle_request(b"short", client, 0.0)
    registry = registry_of(RerequestCollector(lambda: core.stats))
    value = registry.get_sample_value
    assert value("moldudp64_rerequest_requests_total") == 3
    assert value("moldudp64_rerequest_answers_total") == 1
    assert value("moldudp64_rerequest_messages_total") == 3
    assert value("moldudp64_rerequest_refused_total", {"reason": "wrong_session"}) == 1
    assert value("moldudp64_rerequest_refused_total", {"reason": "bad_length"}) == 1
    assert value("moldudp64_rerequest_refused_total", {"reason": "rate_limited"}) == 0


def test_no_rerequest_server_means_no_rerequest_metrics() -> None:
    registry = registry_of(RerequestCollector(lambda: None))
    assert list(registry.collect()) == []


def test_a_publisher_counts_messages_packets_and_end_of_session() -> None:
    core = PublisherCore(SESSION, max_payload=100, end_of_session_duration=0)
    core.start(0.0)
    core.publish_many([b"x" * 40] * 10, 0.0)
    core.end_session(0.0)
    registry = registry_of(PublisherCollector(lambda: core.stats))
    value = registry.get_sample_value
    assert value("moldudp64_published_messages_total") == 10
    assert value("moldudp64_published_packets_total") == core.stats.packets >= 5
    assert value("moldudp64_published_end_of_session_total") == 1
    assert value("moldudp64_published_next_seq_num") == 11


def test_a_snapshot_taken_while_another_thread_changes_a_dict_is_retried() -> None:
    """A counter dict that changed size under the snapshot (RuntimeError) is read again."""
    core = PublisherCore(SESSION)
    calls = 0

    def flaky() -> Any:
        nonlocal calls
        calls += 1
        if calls == 1:
            raise RuntimeError("dictionary changed size during iteration")
        return core.stats

    registry = registry_of(PublisherCollector(flaky))
    assert registry.get_sample_value("moldudp64_published_messages_total") == 0
    assert calls == 2


def test_the_server_serves_its_own_registry_on_loopback_and_frees_the_port() -> None:
    """Two servers in one process, each its own registry; values are read at scrape time;
    a garbage request does not stop the server; close() frees the port."""
    counts = {"messages": 0}

    class Stats:
        packets = heartbeats = end_of_session = bytes = 0
        next_seq_num = 1

        @property
        def messages(self) -> int:
            return counts["messages"]

    with MetricsServer(0) as one, MetricsServer(0) as two:
        one.add(PublisherCollector(Stats))
        assert one.address[0] == "127.0.0.1"
        assert one.url == f"http://127.0.0.1:{one.address[1]}/metrics"
        key = ("moldudp64_published_messages_total", ())
        assert scrape(one.url)[key] == 0
        counts["messages"] = 42
        assert scrape(one.url)[key] == 42
        assert key not in scrape(two.url)
        with socket.create_connection(one.address, timeout=5) as s:
            s.sendall(b"\x00\xffNOT HTTP AT ALL\r\n\r\n")
            s.recv(1000)
        assert scrape(one.url)[key] == 42
        port = one.address[1]
    with pytest.raises(OSError):
        socket.create_connection(("127.0.0.1", port), timeout=2).close()
    one.close()  # idempotent


def test_a_port_in_use_is_a_metrics_error_naming_the_address() -> None:
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        with pytest.raises(MetricsError, match=f"127.0.0.1:{port}"):
            MetricsServer(port)


def test_start_metrics_without_a_port_serves_nothing() -> None:
    assert start_metrics(None, "127.0.0.1", PublisherCollector(lambda: None)) is None
    urls: list[str] = []
    server = start_metrics(0, "127.0.0.1", announce=urls.append)
    assert server is not None
    try:
        assert urls == [server.url]
    finally:
        server.close()


def test_the_readme_names_every_metric() -> None:
    """Each metric the collectors emit is in the README's table, under its sample name."""
    readme = (Path(__file__).resolve().parents[1] / "README.md").read_text()
    core = ReceiverCore(ReceiverConfig(rerequest_server_addrs=[SERVER]))
    core.receive_datagram(build_packet(SESSION, 1, [b"a"]), Source.LINE_A, 0.0)
    server = RerequestServerCore(SESSION, MemoryStore())
    registry = registry_of(
        ClientCollector(lambda: client_stats(core)),
        RerequestCollector(lambda: server.stats),
        PublisherCollector(lambda: PublisherCore(SESSION).stats),
    )
    names = {f.name + ("_total" if f.type == "counter" else "") for f in registry.collect()}
    assert len(names) == 37
    missing = sorted(name for name in names if f"`{name}" not in readme)
    assert missing == []


def test_fields_collector_serves_another_commands_own_stats() -> None:
    """How a command with stats of its own (a bridge: lag, publish errors) adds them."""
    from dataclasses import dataclass

    @dataclass
    class BridgeStats:
        publish_errors: int
        lag_messages: int

    snapshot: list[BridgeStats | None] = [BridgeStats(3, 120)]
    registry = registry_of(
        FieldsCollector(
            lambda: snapshot[0],
            "moldudp64_bridge",
            counters={"publish_errors": "JetStream publishes that failed."},
            gauges={"lag_messages": "Messages received, not yet stored."},
        )
    )
    assert registry.get_sample_value("moldudp64_bridge_publish_errors_total") == 3
    assert registry.get_sample_value("moldudp64_bridge_lag_messages") == 120
    snapshot[0] = None
    assert list(registry.collect()) == []


def test_half_sent_requests_hold_a_bounded_number_of_threads() -> None:
    """100 connections that never finish their request (issue 18, item 16): the server
    keeps at most MAX_CONNECTIONS of them (one thread each), and a scrape is still
    answered at once."""
    with MetricsServer(0) as server:
        before = threading.active_count()
        held = []
        try:
            for _ in range(100):
                conn = socket.create_connection(server.address, timeout=5)
                conn.sendall(b"GET /metrics HTTP/1.1\r\nHost: x\r\n")  # never the end
                held.append(conn)
            deadline = time.monotonic() + 10
            closed: set[socket.socket] = set()  # by the server (refused, or cut)
            while len(closed) < len(held) - MAX_CONNECTIONS:
                assert time.monotonic() < deadline, len(closed)
                readable = select.select([c for c in held if c not in closed], [], [], 0.1)[0]
                closed.update(c for c in readable if c.recv(100) == b"")
            time.sleep(GRACE)  # the kept ones are past their grace: a scrape closes the oldest
            assert scrape(server.url) == {}
            while threading.active_count() - before > MAX_CONNECTIONS:
                assert time.monotonic() < deadline, threading.active_count() - before
                time.sleep(0.01)
            assert server.connections <= MAX_CONNECTIONS
        finally:
            for conn in held:
                conn.close()


def test_a_huge_request_line_then_a_reset_prints_nothing(
    capfd: pytest.CaptureFixture[str],
) -> None:
    """A 70 KB request line followed by a reset (issue 18, item 16): no traceback on
    stderr, and the server goes on serving."""
    with MetricsServer(0) as server:
        for _ in range(3):
            conn = socket.create_connection(server.address, timeout=5)
            conn.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            conn.sendall(b"GET /" + b"a" * 70_000)
            conn.close()  # linger 0: a reset
        assert scrape(server.url) == {}
    assert capfd.readouterr().err == ""


def test_a_connection_that_never_sends_is_closed_after_the_read_timeout() -> None:
    assert READ_TIMEOUT == 5.0  # the default
    with MetricsServer(0, read_timeout=0.5) as server:
        conn = socket.create_connection(server.address, timeout=10)
        started = time.monotonic()
        assert conn.recv(100) == b""  # closed by the server
        assert 0.4 <= time.monotonic() - started <= 5
        conn.close()
