"""SoupBinTCP on the command line: ``serve --soup-port``, ``listen soup://`` and
``gateway`` (a MoldUDP64 feed served over SoupBinTCP)."""

from __future__ import annotations

import argparse
import logging
import time
from dataclasses import dataclass
from typing import Any
from urllib.parse import unquote, urlsplit

from .common import (
    EXIT_IDLE,
    EXIT_INTERRUPTED,
    EXIT_LOST,
    EXIT_OK,
    UsageError,
    _say,
    _Status,
    _stderr_is_terminal,
)

logger = logging.getLogger("moldudp64.cli")


@dataclass(frozen=True)
class SoupSource:
    """``soup://[USER:PASS@]HOST:PORT[/SESSION]`` as ``listen`` takes it."""

    host: str
    port: int
    username: str = ""
    password: str = ""
    session: str = ""

    def __str__(self) -> str:
        who = f"{self.username}@" if self.username else ""
        return f"soup://{who}{self.host}:{self.port}" + (f"/{self.session}" if self.session else "")


def parse_soup_source(text: str) -> SoupSource:
    """``soup://[USER:PASS@]HOST:PORT[/SESSION]`` -> SoupSource; ValueError names what is
    wrong (user up to 6 characters, password up to 10, session up to 10)."""
    parts = urlsplit(text)
    if parts.scheme != "soup" or not parts.hostname:
        raise ValueError(f"{text!r} is not soup://[USER:PASS@]HOST:PORT[/SESSION]")
    if parts.query or parts.fragment:
        raise ValueError(f"{text!r}: nothing may follow SESSION ('?' or '#')")
    try:
        port = parts.port
    except ValueError:
        raise ValueError(f"{text!r}: bad port") from None
    if not port:
        raise ValueError(f"{text!r}: give a port (soup://HOST:PORT)")
    session = unquote(parts.path.strip("/"))
    username = unquote(parts.username or "")
    password = unquote(parts.password or "")
    fields = ((username, 6, "user"), (password, 10, "password"), (session, 10, "session"))
    for value, width, what in fields:
        if len(value) > width or not value.isascii() or "/" in value:
            raise ValueError(f"{text!r}: the {what} must be at most {width} ASCII characters")
    return SoupSource(parts.hostname, port, username, password, session)


# --------------------------------------------------------------------------- listen soup://


def cmd_listen_soup(args: argparse.Namespace) -> int:
    """moldudp64 listen soup://...: log in, write every message, resume after a drop."""
    from ..metrics import FieldsCollector, start_metrics
    from ..soupbintcp import LoginRejectedError
    from ..sync.soupbintcp import CannotResume, SoupBinTCP
    from .listen import _lost_text, _receive
    from .options import _session_label
    from .sinks import open_sink

    source: SoupSource = args.group
    for option, value in (
        ("--line-b", args.line_b),
        ("--request-server", args.request_server),
        ("--capture", args.capture),
    ):
        if value:
            raise UsageError(f"{option} is for a MoldUDP64 feed, not a soup:// session")
    if args.session and source.session and args.session != source.session:
        raise UsageError(f"--session {args.session} and the URL's {source.session} differ")
    session = source.session or args.session or ""
    start = args.start_seq if args.start_seq is not None else 1
    sink = open_sink(args.output, args.format, args.decode)
    client = SoupBinTCP(
        (source.host, source.port),
        username=source.username,
        password=source.password,
        session=session,
        seq_num=start,
        max_retries=args.max_retries,
    )
    status = _Status(_stderr_is_terminal())
    t0 = time.monotonic()
    metrics = None
    failure: str | None = None
    try:
        metrics = start_metrics(
            args.metrics_port,
            args.metrics_addr,
            FieldsCollector(
                lambda: client.stats,
                "moldudp64_soup_client",
                counters={
                    "packets_received": "SoupBinTCP packets received.",
                    "bytes_received": "Bytes received.",
                    "messages_received": "Sequenced messages received.",
                    "heartbeats_received": "Server heartbeats received.",
                    "heartbeats_sent": "Client heartbeats sent.",
                    "connections": "Connections made (1 + reconnects).",
                },
            ),
            announce=lambda url: _say(f"moldudp64 listen: metrics on {url}"),
        )
        _say(f"moldudp64 listen: {source} from {start}")
        try:
            result = _receive(
                client,
                sink,
                count=args.count,
                idle_timeout=args.idle_timeout,
                status=status,
                label="listen",
            )
        except LoginRejectedError as exc:
            raise UsageError(f"{source}: {exc}") from None
        except CannotResume as exc:
            from .listen import _ListenResult

            failure = str(exc)
            result = _ListenResult(written=sink.count)
        finally:
            client.close()
    finally:
        if metrics is not None:
            metrics.close()
        sink.close()
    elapsed = time.monotonic() - t0
    parts = [f"{result.written} messages written"]
    if result.session is not None:
        parts.append(
            f"session {_session_label(result.session)} seq {result.first_seq}..{result.last_seq}"
        )
    if client.connections > 1:
        parts.append(f"{client.connections - 1} reconnects")
    parts.append(f"{result.lost_messages} lost")
    parts.append(f"{elapsed:.1f} s")
    end = (
        "interrupted"
        if result.interrupted
        else "session ended"
        if result.ended
        else f"cannot resume at {client.next_seq_num}"
        if failure
        else f"idle for {args.idle_timeout} s"
        if result.idle
        else f"--count {args.count} reached"
        if args.count is not None and result.written >= args.count
        else "stopped"
    )
    _say(f"moldudp64 listen: {end}: " + ", ".join(parts))
    if failure:
        _say(f"moldudp64 listen: {failure}")
    if result.lost:
        _say(f"moldudp64 listen: messages lost for good: {_lost_text(result)}")
    if result.interrupted:
        return EXIT_INTERRUPTED
    if failure or result.lost_messages:
        return EXIT_LOST
    if result.idle:
        return EXIT_IDLE
    return EXIT_OK


# --------------------------------------------------------------------------- serve --soup-port


def _soup_credentials(args: argparse.Namespace) -> tuple[str | None, str | None]:
    if (args.user is None) != (args.password is None):
        raise UsageError("give --user and --password together")
    for value, width, what in ((args.user, 6, "--user"), (args.password, 10, "--password")):
        if value is not None and (len(value) > width or not value.isascii()):
            raise UsageError(f"{what} must be at most {width} ASCII characters")
    return args.user, args.password


def cmd_serve(args: argparse.Namespace) -> int:
    """moldudp64 serve: re-requests (--port, bridge.cmd_serve), SoupBinTCP (--soup-port),
    or both."""
    from . import bridge

    if args.soup_port is None:
        if args.port is None:
            raise UsageError("serve needs --port PORT (re-requests) or --soup-port PORT")
        if args.user is not None or args.password is not None:
            raise UsageError("--user and --password go with --soup-port")
        return bridge.cmd_serve(args)
    username, password = _soup_credentials(args)
    store, what, finished = _open_store(args)
    try:
        from ..sync.soupbintcp import SoupServer

        server = SoupServer(
            store,
            args.session,
            (args.soup_addr, args.soup_port),
            username=username,
            password=password,
            finished=finished,
        )
    except BaseException:
        store.close()
        raise
    with server:
        host, port = server.address
        _say(f"moldudp64 serve: {what} over SoupBinTCP on {host}:{port}")
        try:
            # With --port, re-requests too, until the same stop.
            code = bridge.cmd_serve(args) if args.port is not None else _wait(args.duration)
        finally:
            stats = server.stats
    store.close()
    _say(f"moldudp64 serve: SoupBinTCP: {_server_summary(stats)}")
    return code


def _open_store(args: argparse.Namespace) -> tuple[Any, str, bool]:
    """The store --input or --nats names, what it is, and whether the session is over."""
    if args.nats is None:
        if args.input is None:
            raise UsageError("serve needs --input FILE, or --nats URL with --stream NAME")
        from ..store import BinaryFileStore
        from .publish import _check_binaryfile_input

        _check_binaryfile_input(args.input, "serve")
        store = BinaryFileStore(args.input)
        return store, f"{len(store)} messages of session {args.session!r} from {args.input}", True
    if args.input is not None:
        raise UsageError("serve takes --input or --nats, not both")
    if args.stream is None:
        raise UsageError("serve --nats needs --stream NAME")
    from ..jetstream import JetStreamStore, check_stream_name
    from .bridge import _nats_servers

    check_stream_name(args.stream)
    jstore = JetStreamStore(_nats_servers(args), args.stream, args.session)
    # A stored session may still be growing: clients wait at its end, never get Z.
    return jstore, f"session {args.session!r} from stream {args.stream}", False


def _wait(duration: float | None) -> int:
    """Sleep until ``duration`` or a stop signal (exit 130)."""
    deadline = None if duration is None else time.monotonic() + duration
    try:
        while deadline is None or time.monotonic() < deadline:
            left = 1.0 if deadline is None else min(1.0, deadline - time.monotonic())
            time.sleep(max(0.0, left))
    except KeyboardInterrupt:
        return EXIT_INTERRUPTED
    return EXIT_OK


def _server_summary(stats: Any) -> str:
    text = (
        f"{stats.connections} connections, {stats.logins_accepted} logins accepted, "
        f"{stats.messages_sent} messages sent"
    )
    rejected = ", ".join(f"{n} {why}" for why, n in sorted(stats.logins_rejected.items()))
    if rejected:
        text += f", rejected: {rejected}"
    closed = ", ".join(f"{n} {why}" for why, n in sorted(stats.closed.items()))
    if closed:
        text += f"; closed: {closed}"
    if stats.refused_full:
        text += f"; {stats.refused_full} refused (server full)"
    return text
