"""``moldudp64 publish`` and ``moldudp64 serve``."""

from __future__ import annotations

import argparse
import logging
import time
from collections.abc import Iterable
from typing import Any

from ..binaryfile import BinaryFileReader
from ..capture import FileKind, detect_file_kind
from ..events import (
    Address,
)
from ..faults import FaultInjector
from ..metrics import PublisherCollector, RerequestCollector, start_metrics
from ..rerequest import DEFAULT_RATE_LIMIT, RateLimit
from ..store import BinaryFileStore, MemoryStore, ReplayStore
from ..sync.server import Publisher, RerequestServer
from .common import (
    EXIT_INTERRUPTED,
    EXIT_OK,
    UsageError,
    _rate_text,
    _say,
    _Status,
    _stderr_is_terminal,
)
from .itchgen import generate_itch

logger = logging.getLogger("moldudp64.cli")

# --------------------------------------------------------------------------- publish / serve


def _faults(args: argparse.Namespace) -> Any:

    if not (args.drop or args.duplicate or args.reorder):
        return None
    return FaultInjector(args.drop, args.duplicate, args.reorder, seed=args.seed)


def _check_binaryfile_input(path: str, command: str) -> None:
    """Refuse a capture given where a BinaryFILE is wanted, naming what it is."""
    kind = detect_file_kind(path)
    if kind in (FileKind.PCAP, FileKind.PCAPNG):
        raise UsageError(
            f"{path} is a {kind} capture, not a BinaryFILE: {command} --input takes a "
            f"BinaryFILE (make one from the capture with: moldudp64 inspect {path} -o FILE.bin)"
        )


def _rate_limit_option(args: argparse.Namespace) -> Any:
    """The RateLimit of --rate-limit: the default, None for 'none', or N requests/s."""

    if args.rate_limit is None:
        return DEFAULT_RATE_LIMIT
    if args.rate_limit == 0:
        return None
    return RateLimit.per_source(args.rate_limit, args.max_payload)


def _rerequest_summary(stats: Any, noun: str = "re-requests") -> str:
    """'N re-requests, A answers (M messages re-sent), W waited for budget[, refused: ...]'."""
    text = f"{stats.requests} {noun}, {stats.answers} answers ({stats.messages} messages re-sent)"
    if stats.waited:
        text += f", {stats.waited} waited for budget"
    refused = ", ".join(f"{n} {why}" for why, n in sorted(stats.refused.items()) if n)
    if refused:
        text += f", refused: {refused}"
    return text


def _linger(server: RerequestServer | None, linger: float, started: float) -> float:
    """``publish --linger``: after the end of session, keep ``server`` answering until no
    request has come for ``linger`` seconds (since ``started`` when none came); say so on
    stderr. The seconds it lingered (a stop signal ends it early)."""
    if server is None or linger <= 0:
        return 0.0
    begun = time.monotonic()
    announced = False
    try:
        while True:
            last = server.last_request_at
            quiet_until = (started if last is None else max(last, started)) + linger
            left = quiet_until - time.monotonic()
            if left <= 0:
                break
            if not announced:
                _say(
                    "moldudp64 publish: session ended; still answering re-requests until "
                    f"none has come for {linger:g} s (--linger)"
                )
                announced = True
            time.sleep(min(left, 0.2))
    except KeyboardInterrupt:
        _say("moldudp64 publish: interrupted while answering re-requests after the end")
    return time.monotonic() - begun if announced else 0.0


def cmd_publish(args: argparse.Namespace) -> int:
    """moldudp64 publish GROUP:PORT --session NAME (--input FILE | --generate N)."""

    group: Address = args.group
    request_port = args.request_port if args.request_port is not None else group[1] + 1
    if request_port > 65535:
        raise UsageError(f"--request-port {request_port} is not a port number; give one")
    store: Any
    messages: Iterable[bytes]
    if args.input is not None:
        _check_binaryfile_input(args.input, "publish")
        # Re-requests are served from the file itself (message n is number n), up to
        # what has been published so far.
        whole = BinaryFileStore(args.input)  # reads the whole file once: checks it
        store = ReplayStore(whole)
        length, seq = whole.longest_message
        if length + 2 > args.max_payload:
            store.close()
            raise UsageError(
                f"{args.input}: message {seq} is {length} bytes, too large for "
                f"--max-payload {args.max_payload} (a message takes its length + 2 bytes); "
                f"give --max-payload {length + 2} or more"
            )
        total: int | None = len(whole)
        reader = BinaryFileReader(args.input)
        messages = reader
    else:
        store = MemoryStore()
        total = args.generate
        reader = None
        messages = generate_itch(args.generate, args.seed or 0)
    faults = _faults(args)
    bind = args.interface or "0.0.0.0"
    status = _Status(_stderr_is_terminal())
    t0 = time.monotonic()
    metrics = None
    try:
        publisher = Publisher(
            args.session,
            group,
            interface_addr=args.interface,
            ttl=args.ttl,
            max_payload=args.max_payload,
            heartbeat_interval=args.heartbeat_interval,
            end_of_session_duration=args.end_of_session_duration,
            store=store,
            rerequest_bind=(bind, request_port),
            rate_limit=_rate_limit_option(args),
            allow=args.allow,
            faults=faults,
        )
        with publisher:
            metrics = start_metrics(
                args.metrics_port,
                args.metrics_addr,
                PublisherCollector(lambda: publisher.stats),
                RerequestCollector(lambda: publisher.rerequest_stats),
                announce=lambda url: _say(f"moldudp64 publish: metrics on {url}"),
            )

            def progress(done: int) -> None:
                elapsed = time.monotonic() - t0
                of = f"/{total}" if total is not None else ""
                status.show(f"publish: {done}{of} messages, {_rate_text(done, elapsed)}")

            try:  # a signal right after the announcement still gets the summary
                _say(
                    f"moldudp64 publish: session {args.session!r} to {group[0]}:{group[1]} "
                    f"(TTL {args.ttl}), re-requests on {bind}:{request_port}"
                    + (f", {total} messages" if total is not None else "")
                )
                result = publisher.run(messages, rate=args.rate or None, progress=progress)
            except KeyboardInterrupt:
                publisher.stop()
                status.clear()
                _say(f"moldudp64 publish: interrupted after {publisher.stats.messages} messages")
                return EXIT_INTERRUPTED
            status.clear()
            lingered = _linger(publisher.rerequest_server, args.linger, t0)
            stats = result.stats
            rstats = publisher.rerequest_stats
    finally:
        if metrics is not None:
            metrics.close()
        if reader is not None:
            reader.close()
        store.close()
    parts = [
        f"{result.messages} messages (seq {result.first_seq_num}..{result.next_seq_num - 1}) "
        f"in {stats.packets} packets, {result.seconds:.1f} s",
        f"{stats.heartbeats} heartbeats, {stats.end_of_session} end-of-session packets",
    ]
    if faults is not None:
        f = faults.stats
        parts.append(
            f"faults: {f.dropped} dropped, {f.duplicated} duplicated, {f.reordered} reordered"
        )
    if rstats is not None:
        parts.append(_rerequest_summary(rstats))
    if lingered:
        parts.append(f"answered re-requests {lingered:.1f} s after the end of session")
    _say("moldudp64 publish: done: " + "; ".join(parts))
    return EXIT_OK


def cmd_serve(args: argparse.Namespace) -> int:
    """moldudp64 serve --input FILE --session NAME --port PORT: a re-request server."""

    _check_binaryfile_input(args.input, "serve")
    store = BinaryFileStore(args.input)
    return serve_store(
        args, store, f"{len(store)} messages of session {args.session!r} from {args.input}"
    )


def serve_store(args: argparse.Namespace, store: Any, what: str) -> int:
    """Answer re-requests for ``args.session`` from ``store`` (closed at the end) until
    ``--duration`` or a stop signal, with metrics when asked; then the summary."""
    metrics = None
    try:
        server = RerequestServer(
            args.session,
            store,
            (args.bind, args.port),
            max_payload=args.max_payload,
            rate_limit=_rate_limit_option(args),
            allow=args.allow,
        )
        with server:
            metrics = start_metrics(
                args.metrics_port,
                args.metrics_addr,
                RerequestCollector(lambda: server.stats),
                announce=lambda url: _say(f"moldudp64 serve: metrics on {url}"),
            )
            host, port = server.address
            interrupted = False
            try:  # a signal right after the announcement still gets the summary
                _say(f"moldudp64 serve: {what} on {host}:{port}")
                deadline = None if args.duration is None else time.monotonic() + args.duration
                while deadline is None or time.monotonic() < deadline:
                    left = 1.0 if deadline is None else min(1.0, deadline - time.monotonic())
                    time.sleep(max(0.0, left))
            except KeyboardInterrupt:
                interrupted = True
            stats = server.stats
    finally:
        if metrics is not None:
            metrics.close()
        store.close()
    _say(
        f"moldudp64 serve: {'interrupted' if interrupted else 'done'}: "
        + _rerequest_summary(stats, "requests")
    )
    return EXIT_INTERRUPTED if interrupted else EXIT_OK


