"""Helpers for tests of ``--metrics-port``: scrape a command's Prometheus metrics."""

from __future__ import annotations

import re
import socket
import subprocess
import time
import urllib.request
from collections.abc import Callable

import pytest
from prometheus_client.parser import text_string_to_metric_families

from cli_helpers import start
from moldudp64.faults import FaultInjector
from moldudp64.store import MemoryStore
from moldudp64.sync.server import Publisher

Samples = dict[tuple[str, tuple[tuple[str, str], ...]], float]


def scrape(url: str) -> Samples:
    """Every sample at ``url``, by (name, sorted labels)."""
    with urllib.request.urlopen(url, timeout=5) as response:
        assert response.headers["Content-Type"].startswith("text/plain")
        text = response.read().decode()
    return {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }


def metric(samples: Samples, name: str, **labels: str) -> float:
    return samples.get((name, tuple(sorted(labels.items()))), -1.0)


def start_with_metrics(*args: str, ready: str) -> tuple[subprocess.Popen[bytes], str]:
    """Start the command with ``--metrics-port 0``; its metrics URL once it says ``ready``."""
    proc = start(*args, "--metrics-port", "0")
    assert proc.stderr is not None
    url = None
    seen = ""
    while ready not in seen:
        line = proc.stderr.readline().decode()
        assert line, seen + proc.stderr.read().decode()
        seen += line
        found = re.search(r"metrics on (http://127\.0\.0\.1:\d+/metrics)", line)
        if found:
            url = found.group(1)
    assert url is not None, seen
    return proc, url


def wait_for(url: str, check: Callable[[Samples], bool], timeout: float = 20) -> Samples:
    """Scrape until ``check`` holds (the last scrape)."""
    deadline = time.monotonic() + timeout
    while True:
        samples = scrape(url)
        if check(samples) or time.monotonic() > deadline:
            return samples
        time.sleep(0.05)


def delivered(count: int) -> Callable[[Samples], bool]:
    """Whether a scrape shows ``count`` messages delivered."""
    return lambda s: metric(s, "moldudp64_messages_delivered_total") == count


def assert_gone(url: str) -> None:
    """Nothing answers at ``url`` any more: the metrics server stopped with the command."""
    port = int(url.rsplit(":", 1)[1].split("/")[0])
    with pytest.raises(OSError):
        socket.create_connection(("127.0.0.1", port), timeout=2).close()


def lossy_publisher(session: str, group: str, port: int, seed: int) -> Publisher:
    """A publisher of ``session`` to ``group``:``port`` dropping 10% of its packets
    (seeded), its re-request server on 127.0.0.1:``port + 1``, a short end-of-session
    period."""
    return Publisher(
        session,
        (group, port),
        store=MemoryStore(),
        rerequest_bind=("127.0.0.1", port + 1),
        faults=FaultInjector(0.1, 0.0, 0.0, seed=seed),
        end_of_session_duration=0.3,
    )
