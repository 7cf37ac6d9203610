"""SoupBinTCP on the command line: ``serve --soup-port``, ``listen soup://`` and
``gateway`` (a MoldUDP64 feed served over SoupBinTCP)."""

from __future__ import annotations

import argparse
import logging
import time
from dataclasses import dataclass, field
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
    from .listen import _receive, _say_summary
    from .sinks import open_sink

    source: SoupSource = args.group
    for option, value in (
        ("--line-b", args.line_b),
        ("--request-server", args.request_server),
        ("--capture", args.capture),
    ):
        if value:
            raise UsageError(f"{option} is for a MoldUDP64 feed, not a soup:// session")
    if getattr(args, "snapshot", None) is not None:
        raise UsageError("--snapshot is for joining a MoldUDP64 feed, not a soup:// session")
    if args.session:
        raise UsageError(
            "--session is for a MoldUDP64 feed: a soup:// session goes in the URL "
            "(soup://HOST:PORT/SESSION)"
        )
    session = source.session
    start = args.start_seq if args.start_seq is not None else 1
    sink = open_sink(args.output, args.format, args.decode)
    client = SoupBinTCP(
        (source.host, source.port),
        username=source.username,
        password=source.password,
        session=session,
        seq_num=start,
        max_retries=args.max_retries,
        runs=True,  # MessageRun events: a BinaryFILE output writes their blocks as is
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
    result.failure = failure
    reconnects = [f"{client.connections - 1} reconnects"] if client.connections > 1 else []
    _say_summary(
        result,
        None,
        args,
        elapsed,
        notes=reconnects,
        failure_end=f"cannot resume at {client.next_seq_num}",
    )
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
    metrics = None
    with server:
        host, port = server.address
        _say(f"moldudp64 serve: {what} over SoupBinTCP on {host}:{port}")
        try:
            if args.port is not None:  # re-requests too (with their metrics), same stop
                code = bridge.cmd_serve(args)
            else:
                metrics = _server_metrics(args, server, "serve")
                code = _wait(args.duration)
        finally:
            stats = server.stats
            if metrics is not None:
                metrics.close()
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


def _server_metrics(args: argparse.Namespace, server: Any, command: str) -> Any:
    """--metrics-port for a SoupBinTCP server: its counters, scraped from its stats."""
    from ..metrics import FieldsCollector, start_metrics

    return start_metrics(
        args.metrics_port,
        args.metrics_addr,
        FieldsCollector(
            lambda: server.stats,
            "moldudp64_soup_server",
            counters={
                "connections": "Connections accepted.",
                "logins_accepted": "Logins accepted.",
                "messages_sent": "Sequenced messages sent.",
                "bytes_sent": "Bytes sent.",
                "refused_full": "Connections refused: max_clients reached.",
            },
            gauges={"clients": "Clients connected."},
        ),
        announce=lambda url: _say(f"moldudp64 {command}: metrics on {url}"),
    )


def _plural(n: int, noun: str) -> str:
    """``1 connection``, ``2 connections``."""
    return f"{n} {noun}" if n == 1 else f"{n} {noun}s"


def _server_summary(stats: Any) -> str:
    text = (
        f"{_plural(stats.connections, 'connection')}, "
        f"{_plural(stats.logins_accepted, 'login')} accepted, "
        f"{_plural(stats.messages_sent, 'message')} sent"
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


# --------------------------------------------------------------------------- gateway


class _Numbered:
    """A store whose first message is sequence number ``first`` (a BinaryFILE's first
    message is number 1; a gateway that joined later stores from where it started)."""

    def __init__(self, base: Any, first: int) -> None:
        self.base = base
        self.shift = first - 1

    @property
    def first_seq_num(self) -> int:
        return int(self.base.first_seq_num) + self.shift

    @property
    def next_seq_num(self) -> int:
        return int(self.base.next_seq_num) + self.shift

    def append(self, message: bytes) -> int:
        return int(self.base.append(message)) + self.shift

    def get(self, seq_num: int, max_count: int, max_bytes: int) -> list[bytes]:
        if seq_num <= self.shift:
            return []
        got: list[bytes] = self.base.get_run(seq_num - self.shift, max_count, max_bytes)
        return got

    def get_blocks(self, seq_num: int, max_count: int, max_bytes: int) -> tuple[int, bytes]:
        if seq_num <= self.shift:
            return 0, b""
        got: tuple[int, bytes] = self.base.get_blocks(seq_num - self.shift, max_count, max_bytes)
        return got

    def close(self) -> None:
        self.base.close()


def cmd_gateway(args: argparse.Namespace) -> int:
    """moldudp64 gateway GROUP:PORT --soup-port PORT: the feed, stored, over SoupBinTCP."""
    import os
    import tempfile
    import threading

    from ..events import MessagesDelivered, MessagesLost, SessionChanged, SessionEnded
    from ..metrics import ClientCollector, FieldsCollector, start_metrics
    from ..store import BinaryFileStore
    from ..sync.soupbintcp import SoupServer
    from .common import _StopFlag
    from .options import _session_label

    if args.soup_port is None:
        raise UsageError("gateway needs --soup-port PORT")
    username, password = _soup_credentials(args)
    book = None
    if args.snapshot_port is not None:
        if args.start_seq not in (None, 1):
            raise UsageError(
                "--snapshot-port builds the book from the whole session: leave out --start-seq"
            )
        from .snapshots import FeedBook

        book = FeedBook()
    temporary = args.output is None
    if temporary:
        fd, path = tempfile.mkstemp(prefix="moldudp64-gateway-", suffix=".bin")
        os.close(fd)
    else:
        path = args.output
        if os.path.exists(path) and os.path.getsize(path):
            raise UsageError(f"{path} exists and is not empty: give a new file")
    if args.start_seq is None:
        args.start_seq = 1  # the whole session: clients may ask for any number
    from .feed import feed_client

    base = BinaryFileStore(path, writable=True)
    store = _Numbered(base, args.start_seq)
    lock = threading.Lock()
    client = feed_client(args)
    server: SoupServer | None = None
    snapshots = None
    metrics = None
    session: str | None = args.session
    written = 0
    lost: MessagesLost | None = None
    ended = interrupted = idle = False
    changed: str | None = None
    last_received = -1
    last_activity = time.monotonic()

    try:
        # Listen at once (a --soup-port 0 port is said now); until the feed's session is
        # known (without --session), logins are rejected (J S).
        server = SoupServer(
            store,
            session or "",
            (args.soup_addr, args.soup_port),
            username=username,
            password=password,
            finished=False,
            lock=lock,
        ).start()
        host, soup_port = server.address
        name = _session_label(session) if session is not None else "(the feed's)"
        _say(f"moldudp64 gateway: session {name} over SoupBinTCP on {host}:{soup_port}")
        if book is not None:
            from .snapshots import snapshot_server

            snapshots = snapshot_server(args, book, "gateway")
        metrics = start_metrics(
            args.metrics_port,
            args.metrics_addr,
            ClientCollector(lambda: client.stats),
            FieldsCollector(
                lambda: server.stats if server is not None else None,
                "moldudp64_soup_server",
                counters={
                    "logins_accepted": "Logins accepted.",
                    "messages_sent": "Sequenced messages sent.",
                },
                gauges={"clients": "Clients connected."},
            ),
            announce=lambda url: _say(f"moldudp64 gateway: metrics on {url}"),
        )
        client.open()
        _say(f"moldudp64 gateway: joined {args.group[0]}:{args.group[1]} on {args.interface}")
        with _StopFlag() as stop:
            done = False
            while not done and not stop.set:
                try:
                    batches = list(_take(client))
                except TimeoutError:
                    batches = []
                for batch in batches:
                    for ev in batch:
                        if type(ev) is MessagesDelivered:
                            if session is None:
                                session = ev.session
                                with lock:
                                    server.session.session = ev.session
                                _say(
                                    f"moldudp64 gateway: serving session "
                                    f"{_session_label(ev.session)}"
                                )
                            with lock:
                                base.extend(ev.messages)
                            if book is not None:
                                book.write(ev.seq_num, ev.messages)
                            written += len(ev.messages)
                        elif isinstance(ev, MessagesLost):
                            lost = ev
                        elif isinstance(ev, SessionEnded):
                            ended = True
                        elif isinstance(ev, SessionChanged):
                            changed = ev.new_session
                        if lost or ended or changed:
                            done = True
                            break
                    if done:
                        break
                with lock:
                    base.flush()
                server.notify()
                now = time.monotonic()
                received = client.stats.datagrams_received
                if received != last_received:
                    last_received, last_activity = received, now
                elif args.idle_timeout is not None and now - last_activity >= args.idle_timeout:
                    idle = done = True
                if args.count is not None and written >= args.count:
                    done = True
            client.close()
            if session is not None:
                # The served session ends at the last message stored: after the feed's end
                # of session, and also before a lost range (never served across a hole;
                # a login past the hole is rejected, never told the day simply ended).
                if lost is not None:
                    with lock:
                        server.session.cut_at = lost.first_seq
                server.finish()
                if lost is not None:
                    _say(
                        f"moldudp64 gateway: messages {lost.first_seq}..{lost.last_seq} lost "
                        f"on the feed ({lost.reason}): the served session ends at "
                        f"{lost.first_seq - 1} (clients are disconnected there, with no End of "
                        f"Session, and a login from {lost.first_seq} on is rejected); nothing from "
                        f"{lost.first_seq} on is stored or served"
                    )
                _say(f"moldudp64 gateway: {written} messages stored; serving them until stopped")
                while not stop.set:
                    time.sleep(0.2)
            interrupted = stop.set
    finally:
        client.close()
        if metrics is not None:
            metrics.close()
        stats = server.stats if server is not None else None
        if server is not None:
            server.close()
        snapshot_stats = snapshots.stats if snapshots is not None else None
        if snapshots is not None:
            snapshots.close()
        store.close()
        if temporary:
            os.unlink(path)
    parts = [f"{written} messages stored"]
    if session is not None:
        parts.append(f"session {_session_label(session)}")
    if stats is not None:
        parts.append(_server_summary(stats))
    if snapshot_stats is not None:
        parts.append(f"snapshots: {_server_summary(snapshot_stats)}")
    end = (
        "feed session ended" if ended
        else f"lost {lost.first_seq}..{lost.last_seq} on the feed" if lost is not None
        else f"the feed moved on to session {_session_label(changed)}" if changed
        else f"idle for {args.idle_timeout} s" if idle
        else "stopped"
    )  # fmt: skip
    _say(f"moldudp64 gateway: {end}: " + "; ".join(parts))
    if lost is not None:
        return EXIT_LOST
    if idle:
        return EXIT_IDLE
    if interrupted and not ended:
        return EXIT_INTERRUPTED
    return EXIT_OK


def _take(client: Any) -> Any:
    """One batch of the feed client's events (waiting at most 0.25 s)."""
    for batch in client.batches(timeout=0.25):
        yield batch
        return


# --------------------------------------------------------------------------- listen --snapshot


@dataclass
class _Snapshot:
    """What a snapshot load gave: messages written, the feed number to go on from, the
    snapshot numbers the server no longer had, and messages after End of Snapshot."""

    messages: int
    next_seq: int
    session: str
    #: Snapshot numbers the snapshot server did not have (it accepted past 1).
    lost: list[tuple[int, int]] = field(default_factory=list)
    #: Snapshot numbers that came after End of Snapshot (a second one included): not
    #: written (the feed goes on from the number the first gave).
    after_end: tuple[int, int] | None = None


#: Seconds the snapshot session is read on after End of Snapshot, for what its server
#: sends behind it (said, never dropped silently), unless End of Session comes first.
SNAPSHOT_TAIL = 0.3


def load_snapshot(
    source: SoupSource, sink: Any, *, number: str = "next", max_retries: int = 5
) -> _Snapshot:
    """Read a GLIMPSE-style snapshot session into ``sink`` up to its End of Snapshot
    message (not written); the feed number to continue from. ``number``: what the End of
    Snapshot number means, ``next`` (the first feed message to take: the default) or
    ``last`` (the last one the snapshot includes). Snapshot numbers the server no longer
    had, and messages it sent after End of Snapshot, are returned to be said."""
    from ..events import MessagesDelivered, MessagesLost, SessionEnded
    from ..soupbintcp import LoginRejectedError, SoupBinTCPError, end_of_snapshot_seq
    from ..sync.soupbintcp import SoupBinTCP

    written = 0
    lost: list[tuple[int, int]] = []
    result: _Snapshot | None = None
    after: list[int] = []  # first and last number after End of Snapshot
    with SoupBinTCP(
        (source.host, source.port),
        username=source.username,
        password=source.password,
        session=source.session,
        seq_num=1,
        max_retries=max_retries,
    ) as snap:
        try:
            batches = snap.batches()
            tail_until = 0.0
            ended = False
            while not ended:
                if result is not None:
                    # Read on briefly (End of Session ends it) for what follows the G.
                    left = tail_until - time.monotonic()
                    if left <= 0:
                        break
                    batches = snap.batches(timeout=left)
                try:
                    batch = next(batches)
                except StopIteration:
                    break
                except (TimeoutError, SoupBinTCPError):
                    if result is None:
                        raise
                    break  # after End of Snapshot: what the tail gave is enough
                for ev in batch:
                    if type(ev) is MessagesDelivered:
                        messages = ev.messages
                        if result is not None:  # past End of Snapshot: said, not written
                            last = ev.seq_num + len(messages) - 1
                            after[:] = [after[0] if after else ev.seq_num, last]
                            continue
                        for i, message in enumerate(messages):
                            seq = end_of_snapshot_seq(message)
                            if seq is not None:
                                if messages[:i]:
                                    sink.write(ev.session, ev.seq_num, messages[:i])
                                written += i
                                follow = seq + 1 if number == "last" else seq
                                result = _Snapshot(written, max(follow, 1), ev.session, lost)
                                tail_until = time.monotonic() + SNAPSHOT_TAIL
                                if i + 1 < len(messages):
                                    after[:] = [ev.seq_num + i + 1, ev.seq_num + len(messages) - 1]
                                break
                        else:
                            sink.write(ev.session, ev.seq_num, messages)
                            written += len(messages)
                    elif isinstance(ev, MessagesLost):
                        lost.append((ev.first_seq, ev.last_seq))
                    elif isinstance(ev, SessionEnded):
                        ended = True
        except LoginRejectedError as exc:
            raise UsageError(f"snapshot {source}: {exc}") from None
    if result is None:
        raise UsageError(
            f"snapshot {source} ended after {written} messages without an End of Snapshot "
            "message (G): nothing to continue the feed from"
        )
    if after:
        result.after_end = (after[0], after[-1])
    return result


def cmd_listen_snapshot(args: argparse.Namespace) -> int:
    """moldudp64 listen GROUP:PORT --snapshot soup://...: the snapshot, then the feed from
    the number its End of Snapshot gives; the feed is joined first and held meanwhile."""
    from ..net import open_client_sockets
    from .feed import feed_client
    from .listen import _receive, _say_summary
    from .sinks import open_sink

    if args.start_seq is not None:
        raise UsageError("--snapshot gives the first feed number: leave out --start-seq")
    if args.capture:
        raise UsageError("--capture is not taken with --snapshot")
    source: SoupSource = args.snapshot
    sink = open_sink(args.output, args.format, args.decode)
    status = _Status(_stderr_is_terminal())
    t0 = time.monotonic()
    client = None
    try:
        # Join first: the kernel holds the live feed (bounded by the receive buffer; what
        # it drops is a gap recovered like any other) while the snapshot loads.
        args.start_seq = 1
        probe = feed_client(args)
        lines, rereq = open_client_sockets(probe.options)
        _say(f"moldudp64 listen: joined {args.group[0]}:{args.group[1]}; snapshot {source}")
        try:
            snap = load_snapshot(
                source, sink, number=args.snapshot_number, max_retries=args.max_retries
            )
        except BaseException:
            for sock, _ in lines:
                sock.close()
            rereq.close()
            raise
        _say(f"moldudp64 listen: snapshot: {snap.messages} messages; the feed from {snap.next_seq}")
        if snap.lost:
            _say(f"moldudp64 listen: snapshot incomplete: {_snapshot_lost_text(snap)}")
        if snap.after_end is not None:
            first, last = snap.after_end
            _say(
                f"moldudp64 listen: snapshot messages {first}..{last} came after its End of "
                "Snapshot (G): not written (the feed goes on from the number that G gave)"
            )
        args.start_seq = snap.next_seq
        client = feed_client(args)
        client.open_with_sockets([sock for sock, _ in lines], rereq)
        feed = client

        def beyond_the_end() -> str | None:
            """The feed ended its session below the snapshot's number: never reached."""
            core = feed.stats.receiver
            if core is not None and core.dropped.get("end_of_session_below_data"):
                return (
                    f"the feed's session ended before {snap.next_seq}, the number the "
                    "snapshot continues from: the snapshot does not belong to this feed"
                )
            return None

        try:
            result = _receive(
                client,
                sink,
                count=args.count,
                idle_timeout=args.idle_timeout,
                status=status,
                label="listen",
                give_up=beyond_the_end,
            )
        finally:
            client.close()
    finally:
        sink.close()
    elapsed = time.monotonic() - t0
    missing = sum(b - a + 1 for a, b in snap.lost)
    _say_summary(
        result,
        client.stats.receiver,
        args,
        elapsed,
        written=f"{snap.messages} snapshot and {result.written} feed messages written",
        first_seq=snap.next_seq,
        before_start="feed messages in the snapshot skipped",
        after=[f"{missing} snapshot messages missing"] if snap.lost else [],
    )
    if snap.lost:
        _say(f"moldudp64 listen: snapshot incomplete: {_snapshot_lost_text(snap)}")
    if result.interrupted:
        return EXIT_INTERRUPTED
    if result.lost_messages or result.after_end_messages or result.failure or snap.lost:
        return EXIT_LOST
    if result.idle:
        return EXIT_IDLE
    return EXIT_OK


def _snapshot_lost_text(snap: _Snapshot) -> str:
    ranges = ", ".join(f"{a}..{b}" for a, b in snap.lost[:10])
    more = f" and {len(snap.lost) - 10} more ranges" if len(snap.lost) > 10 else ""
    return (
        f"snapshot messages {ranges}{more} were not available on the snapshot server "
        "(the state built from it lacks them)"
    )
