"""Prometheus metrics of the clients, publishers and re-request servers (``[metrics]`` extra).

Collectors read the components' existing stats snapshots when Prometheus scrapes: nothing
is counted per message, the hot path is untouched. Each process builds its own registry
(never the global default one)::

    with MetricsServer(9100) as metrics:            # http://127.0.0.1:9100/metrics
        metrics.add(ClientCollector(lambda: client.stats))
        metrics.add(RerequestCollector(lambda: server.stats))
        ...

The metric names, types and meanings are listed in the README ("Metrics").
"""

from __future__ import annotations

import contextlib
import http.server
import logging
import socket
import socketserver
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Mapping
from types import MappingProxyType
from typing import TYPE_CHECKING, Any, Protocol

from .events import Source
from .exceptions import MoldUDP64Error

if TYPE_CHECKING:
    from prometheus_client.core import Metric

__all__ = [
    "ClientCollector",
    "Collects",
    "FieldsCollector",
    "MetricsError",
    "MetricsServer",
    "PublisherCollector",
    "RerequestCollector",
    "start_metrics",
]

logger = logging.getLogger(__name__)

#: How often a snapshot taken while another thread changes the counters is retried.
_SNAPSHOT_TRIES = 3
#: Connections (each one thread) served at once; see :class:`MetricsServer`.
MAX_CONNECTIONS = 16
#: Seconds a connection may take from accept to its answer (each read, and in all).
READ_TIMEOUT = 5.0
#: Seconds a new connection is safe from being closed for a newer one (a scrape takes ms).
GRACE = 0.25


class MetricsError(MoldUDP64Error):
    """Metrics cannot be served: the library is missing, or the address cannot be bound."""


def _require() -> None:
    """Import prometheus_client (only when metrics are asked for: it takes ~40 ms)."""
    try:
        import prometheus_client  # noqa: F401
    except ImportError:
        raise MetricsError(
            "metrics need prometheus-client: pip install 'moldudp64[metrics]'"
        ) from None


def _snapshot(read: Callable[[], Any]) -> Any:
    """``read()``, retried if a counter dict changed size under it (another thread)."""
    for _ in range(_SNAPSHOT_TRIES - 1):
        try:
            return read()
        except RuntimeError:
            continue
    return read()


def _counter(name: str, doc: str, value: float) -> Metric:
    from prometheus_client.core import CounterMetricFamily

    return CounterMetricFamily(name, doc, value=value)


def _gauge(name: str, doc: str, value: float) -> Metric:
    from prometheus_client.core import GaugeMetricFamily

    return GaugeMetricFamily(name, doc, value=value)


def _labelled_counter(name: str, doc: str, label: str, values: dict[Any, int]) -> Metric:
    from prometheus_client.core import CounterMetricFamily

    family = CounterMetricFamily(name, doc, labels=[label])
    for key, value in sorted((_label(k), v) for k, v in values.items()):
        family.add_metric([key], value)
    return family


def _label(key: Any) -> str:
    """A label value: ``host:port`` for an address, the lower-case name of a Source."""
    if isinstance(key, tuple):
        return f"{key[0]}:{key[1]}"
    if isinstance(key, Source):
        return key.name.lower()
    return str(key)


class Collects(Protocol):
    """What a registry takes: these collectors, or any prometheus_client collector."""

    def collect(self) -> Iterable[Metric]:
        """The metrics now."""
        ...


class _SnapshotCollector:
    """Metrics read from a stats snapshot at scrape time: ``stats`` returns the snapshot,
    every metric name starts with ``prefix``."""

    default_prefix = "moldudp64"

    def __init__(self, stats: Callable[[], Any], prefix: str | None = None) -> None:
        self.stats = stats
        self.prefix = self.default_prefix if prefix is None else prefix

    def describe(self) -> list[Metric]:
        """Nothing up front: the registry then never calls collect() at registration."""
        return []


class ClientCollector(_SnapshotCollector):
    """A client's metrics (``listen``, ``bridge``): ``stats`` returns its ClientStats."""

    def collect(self) -> Iterator[Metric]:
        """The metrics of one snapshot of the client's and its core's counters."""
        p = self.prefix
        client = _snapshot(self.stats)
        yield _counter(
            f"{p}_datagrams_received", "Datagrams read from the sockets.", client.datagrams_received
        )
        yield _counter(
            f"{p}_kernel_drops",
            "Datagrams the kernel dropped (receive buffer full: reported as ConsumerOverrun).",
            client.kernel_drops,
        )
        yield _counter(
            f"{p}_backlog_pauses",
            "Times the reader paused for a slow consumer.",
            client.backlog_pauses,
        )
        yield _gauge(
            f"{p}_consumer_backlog",
            "Messages handed out, not yet taken by the consumer.",
            client.backlog,
        )
        yield _counter(f"{p}_recv_errors", "Socket receive errors.", client.recv_errors)
        yield _counter(
            f"{p}_send_errors", "Re-requests the socket refused to send.", client.send_errors
        )
        core = client.receiver
        if core is None:  # not opened yet
            return
        yield _counter(
            f"{p}_messages_delivered", "Messages delivered in order.", core.messages_delivered
        )
        yield _labelled_counter(
            f"{p}_packets", "Datagrams handed to the core, by source.", "source", core.packets
        )
        yield _counter(f"{p}_gaps_detected", "Gaps found in the sequence.", core.gaps_detected)
        yield _counter(
            f"{p}_messages_recovered",
            "Messages filled in by re-request answers or the other line.",
            core.messages_recovered,
        )
        yield _counter(f"{p}_messages_lost", "Messages lost for good.", core.messages_lost)
        yield _counter(
            f"{p}_duplicate_messages", "Messages received more than once.", core.duplicate_messages
        )
        yield _labelled_counter(
            f"{p}_requests_sent", "Re-requests sent, by server.", "server", core.requests_sent
        )
        yield _labelled_counter(
            f"{p}_request_answers", "Re-request answers, by server.", "server", core.answers
        )
        yield _labelled_counter(
            f"{p}_request_timeouts",
            "Re-requests unanswered in time, by server.",
            "server",
            core.timeouts,
        )
        yield _gauge(
            f"{p}_servers_in_rotation",
            "Re-request servers currently used.",
            core.servers_in_rotation,
        )
        yield _gauge(f"{p}_open_gaps", "Gaps not yet filled.", core.open_gaps)
        yield _gauge(f"{p}_missing_messages", "Messages in the open gaps.", core.missing_messages)
        yield _gauge(
            f"{p}_held_packets", "Packets held until the gap before them fills.", core.held_packets
        )
        yield _gauge(f"{p}_held_bytes", "Memory of the held packets.", core.held_bytes)
        yield _labelled_counter(
            f"{p}_datagrams_dropped", "Datagrams not taken, by reason.", "reason", core.dropped
        )
        yield _labelled_counter(
            f"{p}_datagrams_malformed", "Malformed datagrams, by reason.", "reason", core.malformed
        )
        yield _gauge(f"{p}_session_ended", "1 once the session ended.", int(core.ended))


class RerequestCollector(_SnapshotCollector):
    """A re-request server's metrics (``serve``, ``publish``): ``stats`` returns its
    RerequestStats, or None (no server)."""

    default_prefix = "moldudp64_rerequest"

    def collect(self) -> Iterator[Metric]:
        """The metrics of one snapshot of the server's counters."""
        p = self.prefix
        s = _snapshot(self.stats)
        if s is None:
            return
        yield _counter(f"{p}_requests", "Re-requests received.", s.requests)
        yield _counter(f"{p}_answers", "Answer packets sent.", s.answers)
        yield _counter(f"{p}_messages", "Messages re-sent in answers.", s.messages)
        yield _counter(f"{p}_bytes", "Bytes of the answers.", s.bytes)
        yield _labelled_counter(
            f"{p}_refused", "Re-requests refused, by reason.", "reason", s.refused
        )
        yield _counter(f"{p}_waited", "Answers that waited for rate budget.", s.waited)
        yield _gauge(f"{p}_waiting", "Requests waiting for rate budget now.", s.waiting)
        yield _gauge(f"{p}_sources", "Requesting hosts the rate limiter tracks now.", s.sources)


class PublisherCollector(_SnapshotCollector):
    """A publisher's metrics (``publish``): ``stats`` returns its PublisherStats."""

    default_prefix = "moldudp64_published"

    def collect(self) -> Iterator[Metric]:
        """The metrics of one snapshot of the publisher's counters."""
        p = self.prefix
        s = _snapshot(self.stats)
        yield _counter(f"{p}_messages", "Messages published.", s.messages)
        yield _counter(
            f"{p}_packets", "Packets sent (data, heartbeats, end of session).", s.packets
        )
        yield _counter(f"{p}_heartbeats", "Heartbeats sent.", s.heartbeats)
        yield _counter(f"{p}_end_of_session", "End-of-session packets sent.", s.end_of_session)
        yield _counter(f"{p}_bytes", "Bytes sent.", s.bytes)
        yield _gauge(f"{p}_next_seq_num", "Sequence number of the next message.", s.next_seq_num)


class FieldsCollector:
    """Metrics from named attributes of any stats snapshot (for another command's own
    stats, e.g. a bridge's lag and publish errors): ``counters`` and ``gauges`` map an
    attribute to its help text; the metric is ``{prefix}_{attribute}`` (counters get
    ``_total``). ``stats`` may return None: nothing then."""

    def __init__(
        self,
        stats: Callable[[], Any],
        prefix: str,
        counters: Mapping[str, str] = MappingProxyType({}),
        gauges: Mapping[str, str] = MappingProxyType({}),
    ) -> None:
        self.stats = stats
        self.prefix = prefix
        self.counters = dict(counters)
        self.gauges = dict(gauges)

    def describe(self) -> list[Metric]:
        """Nothing up front (see :meth:`ClientCollector.describe`)."""
        return []

    def collect(self) -> Iterator[Metric]:
        """One counter or gauge per attribute of one snapshot."""
        s = _snapshot(self.stats)
        if s is None:
            return
        for attr, doc in self.counters.items():
            yield _counter(f"{self.prefix}_{attr}", doc, float(getattr(s, attr)))
        for attr, doc in self.gauges.items():
            yield _gauge(f"{self.prefix}_{attr}", doc, float(getattr(s, attr)))


class _Handler(http.server.BaseHTTPRequestHandler):
    """Answers every GET with the registry's metrics (one request per connection)."""

    server: _HTTPServer

    def setup(self) -> None:
        super().setup()
        self.connection.settimeout(self.server.read_timeout)  # each read (and cut at it)

    def do_GET(self) -> None:
        from prometheus_client.exposition import choose_encoder

        encoder, content_type = choose_encoder(self.headers.get("Accept", ""))
        body = encoder(self.server.registry)
        self.send_response(200)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: Any) -> None:
        logger.debug("metrics %s: " + format, self.address_string(), *args)


class _HTTPServer(socketserver.ThreadingMixIn, http.server.HTTPServer):
    """A thread per connection, at most ``max_connections`` of them: a new connection
    beyond closes the oldest one open for over ``GRACE`` seconds, or is itself closed when
    there is none; one older than ``read_timeout`` is closed when the next arrives (its
    thread also times out on its own). Errors of a connection (a reset, garbage) are
    logged at debug level, never printed."""

    daemon_threads = True
    block_on_close = False
    allow_reuse_address = True
    request_queue_size = 128

    def __init__(
        self, address: tuple[str, int], registry: Any, max_connections: int, read_timeout: float
    ) -> None:
        self.registry = registry
        self.max_connections = max_connections
        self.read_timeout = read_timeout
        self._open: dict[socket.socket, float] = {}  # connection -> accepted at
        self._open_lock = threading.RLock()
        family = socket.AF_INET6 if ":" in address[0] else socket.AF_INET
        self.address_family = family
        super().__init__(address, _Handler)

    @property
    def connections(self) -> int:
        """Connections open now (each with its thread)."""
        return len(self._open)

    def process_request(self, request: Any, client_address: Any) -> None:
        now = time.monotonic()
        with self._open_lock:
            for conn, accepted in list(self._open.items()):  # oldest first
                age = now - accepted
                full = len(self._open) >= self.max_connections
                if age >= self.read_timeout or (full and age > GRACE):
                    self._cut(conn)
            if len(self._open) >= self.max_connections:  # all busy and young: refuse this one
                logger.debug("metrics connection from %s refused: busy", client_address)
                self.shutdown_request(request)
                return
            self._open[request] = now
        super().process_request(request, client_address)

    def _cut(self, conn: socket.socket) -> None:
        """Make ``conn``'s thread give up (its reads see the end); lock held."""
        del self._open[conn]
        with contextlib.suppress(OSError):
            conn.shutdown(socket.SHUT_RDWR)

    def shutdown_request(self, request: Any) -> None:
        with self._open_lock:
            self._open.pop(request, None)
        super().shutdown_request(request)

    def cut_all(self) -> None:
        """Close every open connection (their threads end)."""
        with self._open_lock:
            for conn in list(self._open):
                self._cut(conn)

    def handle_error(self, request: Any, client_address: Any) -> None:
        logger.debug("metrics connection from %s failed", client_address, exc_info=True)


class MetricsServer:
    """Serves its own registry over HTTP on ``addr:port`` (port 0: any free one) from a
    daemon thread, until :meth:`close`; a context manager.

    Any GET path answers with the metrics. At most ``max_connections`` connections (one
    thread each) are served at once and none for longer than ``read_timeout`` seconds:
    half-sent requests cannot pile up threads; a new connection when all are taken closes
    the oldest one past ``GRACE`` seconds (a real scrape is done by then).
    """

    def __init__(
        self,
        port: int,
        addr: str = "127.0.0.1",
        *,
        max_connections: int = MAX_CONNECTIONS,
        read_timeout: float = READ_TIMEOUT,
    ) -> None:
        _require()
        from prometheus_client import CollectorRegistry

        self.registry = CollectorRegistry(auto_describe=False)
        try:
            self._httpd = _HTTPServer((addr, port), self.registry, max_connections, read_timeout)
        except (OSError, OverflowError) as exc:
            reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else exc
            raise MetricsError(f"cannot serve metrics on {addr}:{port}: {reason}") from None
        self._thread = threading.Thread(
            target=self._httpd.serve_forever, name="moldudp64-metrics", daemon=True
        )
        self._thread.start()
        host, bound = self._httpd.server_address[:2]
        self.address: tuple[str, int] = (str(host), int(bound))
        self.url = f"http://{self.address[0]}:{self.address[1]}/metrics"

    @property
    def connections(self) -> int:
        """HTTP connections open now (each holds one thread)."""
        return self._httpd.connections

    def add(self, collector: Collects) -> None:
        """Serve ``collector``'s metrics too (anything with ``collect()``)."""
        self.registry.register(collector)

    def close(self) -> None:
        """Stop serving and free the port (idempotent)."""
        if self._thread.is_alive():
            self._httpd.shutdown()
            self._thread.join()
        self._httpd.cut_all()
        self._httpd.server_close()

    def __enter__(self) -> MetricsServer:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def start_metrics(
    port: int | None,
    addr: str,
    *collectors: Collects,
    announce: Callable[[str], object] | None = None,
) -> MetricsServer | None:
    """A command's ``--metrics-port``/``--metrics-addr``: the started server serving
    ``collectors`` (``announce`` gets its URL), or None when ``port`` is None.
    Raises :class:`MetricsError` (the library missing, the address not bindable)."""
    if port is None:
        return None
    server = MetricsServer(port, addr)
    try:
        for collector in collectors:
            server.add(collector)
    except BaseException:
        server.close()
        raise
    logger.debug("metrics on %s", server.url)
    if announce is not None:
        announce(server.url)
    return server
