"""``moldudp64 book``: build the order book from a file, a live feed or a JetStream session,
and write its bbo, trades and depth tables as Parquet."""

from __future__ import annotations

import argparse
import asyncio
import os
import time
from typing import Any

from ..capture import CaptureReader, FileKind, detect_file_kind
from ..exceptions import CaptureError, MissingDependency
from ..itch50.book_tables import BookWriter
from .common import (
    EXIT_IDLE,
    EXIT_INTERRUPTED,
    EXIT_LOST,
    EXIT_OK,
    EXIT_USAGE,
    UsageError,
    _format_ranges,
    _say,
    _Status,
    _stderr_is_terminal,
    _StopFlag,
    refuse_overlapping_files,
)
from .inspect import refuse_non_binaryfile
from .options import _session_label
from .snapshots import snapshot_server

#: Bytes of a BinaryFILE read (and applied) at a time.
READ_BYTES = 1 << 20
#: The kernel receive buffer per live line socket when root: the book spends several times
#: listen's CPU per message, so a full-blast burst waits in the kernel while it catches up.
#: 128 MiB (the kernel doubles it for its own accounting) holds about 116,000 packets of
#: 1,472 bytes: 5M ITCH messages.
BOOK_RCVBUF = 128 * 1024 * 1024


def _writer(args: argparse.Namespace) -> BookWriter:
    try:
        return BookWriter(
            args.output,
            depth=args.depth,
            symbols=args.symbols,
            interval=args.interval or 0.0,
            tables=args.tables,
        )
    except MissingDependency as exc:
        raise UsageError(str(exc)) from None
    except OSError as exc:
        raise UsageError(f"cannot write to {args.output}: {exc.strerror or exc}") from None


def _book_binaryfile(args: argparse.Namespace, writer: BookWriter) -> int:
    """The fast path: BinaryFILE bytes straight into the book, a bounded chunk at a time."""
    path = args.source
    seq = args.start_seq or 1
    block = bytearray(READ_BYTES + 65537)
    view = memoryview(block)
    filled = 0
    offset = 0
    with open(path, "rb") as f, _StopFlag() as stop:
        while True:
            got = f.readinto(view[filled : filled + READ_BYTES])
            if not got:
                break
            filled += got
            before = writer.count
            used = writer.write_binaryfile(view[:filled], seq)
            seq += writer.count - before
            offset += used
            block[: filled - used] = block[used:filled]
            filled -= used
            if stop.set:
                _say(f"moldudp64 book: interrupted after {writer.count} messages")
                return EXIT_INTERRUPTED
    if filled:
        _say(
            f"moldudp64 book: warning: {path} ends inside a message at byte offset {offset} "
            f"({filled} bytes left out); everything before it is in the tables"
        )
        return EXIT_USAGE
    return EXIT_OK


def _book_capture(args: argparse.Namespace, writer: BookWriter) -> int:
    """A pcap/pcapng: the messages in order through the receiver core, as inspect does."""
    from .inspect import _Inspector

    inspector = _Inspector(args.session, writer, port=args.port)  # type: ignore[arg-type]
    damage: list[CaptureError] = []

    def until_damage(batches: Any) -> Any:
        try:
            yield from batches
        except CaptureError as exc:
            damage.append(exc)

    with CaptureReader(args.source) as reader:
        inspector.feed_batches(until_damage(reader.batches()), None)
    for report in inspector.reports():
        if report.name != writer.session:
            continue
        for first, last in report.lost:
            if writer.next_seq is None or first >= writer.next_seq:
                writer.lose(report.name, first, last)
    if damage:
        _say(f"moldudp64 book: warning: {damage[0]}; everything before it is in the tables")
        return EXIT_USAGE
    return EXIT_LOST if writer.lost_messages else EXIT_OK


def _book_live(args: argparse.Namespace, writer: BookWriter) -> int:
    """A live GROUP:PORT, with listen's recovery (A/B lines, re-request servers)."""
    from .feed import feed_client
    from .listen import _receive

    client = feed_client(args, rcvbuf=BOOK_RCVBUF)
    status = _Status(_stderr_is_terminal())
    client.open()
    _say(f"moldudp64 book: joined {args.source[0]}:{args.source[1]}")
    try:
        result = _receive(
            client,
            writer,  # type: ignore[arg-type]
            count=args.count,
            idle_timeout=args.idle_timeout,
            status=status,
            label="book",
        )
    finally:
        client.close()
    for ev in result.lost:
        if writer.next_seq is None or ev.first_seq >= writer.next_seq:
            writer.lose(ev.session, ev.first_seq, ev.last_seq)
    return _live_end(args, writer, result)


def _live_end(args: argparse.Namespace, writer: BookWriter, result: Any) -> int:
    """The exit code of a live run, as listen's: 130 interrupted, 3 lost, 4 idle (the end
    of the session was never seen: messages after the last one may be missing)."""
    if result.interrupted:
        return EXIT_INTERRUPTED
    if writer.lost_messages:
        return EXIT_LOST
    if result.idle:
        last = "none" if writer.next_seq is None else str(writer.next_seq - 1)
        _say(
            f"moldudp64 book: idle for {args.idle_timeout} s without the session's end "
            f"(last message {last}): the books may miss what came after"
        )
        return EXIT_IDLE
    return EXIT_OK


#: Options of listen's feed that apply only to a live GROUP:PORT source.
_LIVE_ONLY = ("request_server", "line_b", "request_delay", "end_confirm")


def _book_nats(args: argparse.Namespace, writer: BookWriter) -> int:
    """A session stored in JetStream (nats://HOST:PORT/STREAM)."""
    from .bridge import _replay, _Tally

    tally = _Tally()
    with _StopFlag() as stop:
        asyncio.run(_replay(args, args.source, writer, stop, tally))
    for first, last in tally.lost or []:
        if writer.next_seq is None or first >= writer.next_seq:
            writer.lose(tally.session or "", first, last)
    if tally.interrupted:
        return EXIT_INTERRUPTED
    return EXIT_LOST if writer.lost_messages else EXIT_OK


def _book_soup(args: argparse.Namespace, writer: BookWriter) -> int:
    """A SoupBinTCP session (soup://[USER:PASS@]HOST:PORT[/SESSION]), resumed after a drop."""
    from ..soupbintcp import LoginRejectedError
    from ..sync.soupbintcp import CannotResume, SoupBinTCP
    from .listen import _receive

    source = args.source
    client = SoupBinTCP(
        (source.host, source.port),
        username=source.username,
        password=source.password,
        session=source.session or args.session or "",
        seq_num=args.start_seq or 1,
        max_retries=args.max_retries,
    )
    _say(f"moldudp64 book: reading {source}")
    try:
        result = _receive(
            client,
            writer,  # type: ignore[arg-type]
            count=args.count,
            idle_timeout=args.idle_timeout,
            status=_Status(_stderr_is_terminal()),
            label="book",
        )
    except LoginRejectedError as exc:
        raise UsageError(f"{source}: {exc}") from None
    except CannotResume as exc:
        _say(f"moldudp64 book: {exc}")
        return EXIT_LOST
    finally:
        client.close()
    return _live_end(args, writer, result)


def _source_kind(text: str) -> tuple[str, Any]:
    """'file' (a path that exists), 'nats', 'soup' or 'live' (a GROUP:PORT), with the parsed
    value."""
    if os.path.exists(text):
        if os.path.isdir(text):
            raise UsageError(f"{text} is a directory")
        return "file", text
    from .parser import _feed_or_nats

    try:
        parsed = _feed_or_nats(text)
    except argparse.ArgumentTypeError as exc:
        raise UsageError(f"{text}: no such file, and not a feed: {exc}") from None
    if isinstance(parsed, tuple):
        return "live", parsed
    return ("soup" if text.startswith("soup://") else "nats"), parsed


def cmd_book(args: argparse.Namespace) -> int:
    """moldudp64 book SOURCE -o DIR: the order book's bbo, trades and depth tables."""
    kind, source = _source_kind(args.source)
    args.source = source
    args.group = source
    if kind != "live":  # before any table exists
        for option in _LIVE_ONLY:
            if getattr(args, option, None) is not None:
                flag = f"--{option.replace('_', '-')}"
                if kind == "file":
                    raise UsageError(f"{flag} applies to a live GROUP:PORT")
                raise UsageError(f"{flag} does not apply to a {kind}:// source")
    file_kind = None
    if kind == "file":
        refuse_overlapping_files([("SOURCE", source, False), ("--output", args.output, True)])
        try:
            file_kind = detect_file_kind(source)
        except OSError as exc:
            raise UsageError(f"cannot read {source}: {exc.strerror or exc}") from None
        if file_kind == FileKind.BINARYFILE:  # before any table exists: inspect's answer
            refuse_non_binaryfile(source)
    t0 = time.monotonic()
    cpu0 = time.process_time()
    writer = _writer(args)
    code = EXIT_OK
    server = None
    try:
        server = snapshot_server(args, writer, "book")
        if kind == "file":
            if file_kind in (FileKind.PCAP, FileKind.PCAPNG):
                code = _book_capture(args, writer)
            else:
                code = _book_binaryfile(args, writer)
        elif kind == "live":
            code = _book_live(args, writer)
        elif kind == "soup":
            code = _book_soup(args, writer)
        else:
            code = _book_nats(args, writer)
    finally:
        if server is not None:
            server.close()
        writer.close()
    elapsed = time.monotonic() - t0
    cpu = time.process_time() - cpu0
    session = ""
    if writer.session:
        session = f"session {_session_label(writer.session)}, "
    _say(
        f"moldudp64 book: {session}{writer.summary()}; {elapsed:.1f} s "
        f"({cpu:.1f} s CPU) -> {args.output}"
    )
    if writer.unseen:
        first, last = writer.unseen[0]
        _say(
            f"moldudp64 book: warning: the source starts at message {last + 1}: messages "
            f"{first}-{last} were never seen (orders added then are missing), every book "
            "unreliable (book_state.parquet)"
        )
    if writer.lost:
        ranges = [(first, last) for _, first, last in writer.lost]
        _say(
            "moldudp64 book: messages lost, every book unreliable from "
            f"{_format_ranges(ranges)} on (book_state.parquet)"
        )
        if code == EXIT_OK:
            code = EXIT_LOST
    return code
