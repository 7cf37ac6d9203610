"""``moldudp64 inspect``: a per-session report of a capture or a BinaryFILE."""

from __future__ import annotations

import argparse
import logging
import os
import sys
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any, TextIO

from ..binaryfile import BinaryFileReader, looks_like_binaryfile
from ..capture import CaptureReader, FileKind, detect_file_kind, group_datagrams
from ..events import (
    Event,
    MessagesDelivered,
    MessagesLost,
    SessionEnded,
)
from ..exceptions import CaptureError, MalformedPacket
from ..receiver import ReceiverCore
from ..replay import MAX_SESSIONS, CaptureReplay, SessionReplay
from ..wire import (
    Packet,
)
from .common import (
    _CAPTURE_SUFFIXES,
    EXIT_LOST,
    EXIT_NO_MATCH,
    EXIT_OK,
    EXIT_USAGE,
    MAX_LISTED_RANGES,
    UsageError,
    _format_ranges,
    _progress,
    _say,
    refuse_overlapping_files,
)
from .sinks import BinaryFileSink, MessageSink, _TextualSink, _write_stamped, open_sink

logger = logging.getLogger("moldudp64.cli")

# --------------------------------------------------------------------------- inspect


@dataclass
class _SessionReport:
    """What inspect learned about one session of a capture (its core and what was seen
    of it in ``seen``; the tallies of its events here)."""

    seen: SessionReplay
    first_seq: int | None = None
    last_seq: int | None = None
    delivered: int = 0
    written: int = 0
    lost: list[tuple[int, int]] = field(default_factory=list)
    lost_messages: int = 0
    lost_ranges: int = 0
    ended: bool = False
    raw_packets: int = 0  # --raw: data packets written as they came

    @property
    def name(self) -> str:
        return self.seen.name

    @property
    def core(self) -> ReceiverCore:
        return self.seen.core


class _Inspector:
    """Replays a capture (:class:`~moldudp64.replay.CaptureReplay`: one receiver core per
    session, the capture's clock) and tallies and writes what each session delivers.

    ``port`` and ``only_session`` are the replay's filters. ``raw`` writes every message
    of every packet as it comes (:meth:`_write_raw`) instead of the ordered,
    de-duplicated stream; the cores still make the report.
    """

    def __init__(
        self,
        only_session: str | None,
        sink: MessageSink | None,
        *,
        port: int | None = None,
        raw: bool = False,
    ) -> None:
        self.replay = CaptureReplay(
            self._on_events,
            session=only_session,
            port=port,
            tap=self._write_raw if raw else None,
        )
        self.sink = sink
        self.port = port
        self.raw = raw
        self.sessions: dict[str, _SessionReport] = {}
        self.binary_session: str | None = None
        self.unwritten: dict[str, int] = {}

    def feed(self, datagrams: Iterable[Any], progress: Callable[[], None] | None) -> None:
        """Feed every datagram (timestamp, src, dst, payload) of a capture, in file order."""
        self.feed_batches(group_datagrams(iter(datagrams)), progress)

    def feed_batches(self, batches: Iterable[Any], progress: Callable[[], None] | None) -> None:
        """Feed a capture's ``(timestamps, src, dst, payloads)`` runs, then finish."""
        self.replay.feed_batches(batches, progress)
        self.replay.finish()

    def reports(self) -> list[_SessionReport]:
        """A report for every session the replay kept, in the order they came."""
        return [self._report(seen) for seen in self.replay.sessions.values()]

    def _report(self, seen: SessionReplay) -> _SessionReport:
        report = self.sessions.get(seen.name)
        if report is None:
            report = self.sessions[seen.name] = _SessionReport(seen)
        return report

    def _on_events(self, seen: SessionReplay, events: list[Event]) -> None:
        report = self._report(seen)
        write = self._write if self.sink is not None and not self.raw else None
        delivered = 0
        last_seq = report.last_seq
        for event in events:
            if type(event) is MessagesDelivered:  # the hot case: one per data packet
                count = len(event.messages)
                delivered += count
                if report.first_seq is None:
                    report.first_seq = event.seq_num
                last_seq = event.seq_num + count - 1
                if write is not None:
                    write(report, event.seq_num, event.messages)
            elif isinstance(event, MessagesLost):
                if report.first_seq is None:
                    report.first_seq = event.first_seq
                if last_seq is None or event.last_seq > last_seq:
                    last_seq = event.last_seq
                report.lost_messages += event.count
                report.lost_ranges += 1
                if len(report.lost) < MAX_LISTED_RANGES:
                    report.lost.append((event.first_seq, event.last_seq))
            elif isinstance(event, SessionEnded):
                report.ended = True
        report.delivered += delivered
        report.last_seq = last_seq

    def _write_raw(self, seen: SessionReplay, ts: float, payload: bytes) -> None:
        """--raw: the messages of one datagram as they are (a malformed one: nothing)."""
        if self.sink is None:
            return
        try:
            packet = Packet.parse(payload)
        except MalformedPacket:
            return
        messages = [bytes(m) for m in packet]
        if messages:
            report = self._report(seen)
            report.raw_packets += 1
            self._write(report, packet.seq_num, messages, ts)

    def _write(
        self, report: _SessionReport, seq_num: int, messages: list[bytes], ts: float | None = None
    ) -> None:
        sink = self.sink
        if sink is None:
            return
        if isinstance(sink, BinaryFileSink):
            # A BinaryFILE holds one session: the first one delivered, or --session.
            if self.binary_session is None:
                self.binary_session = report.name
            elif report.name != self.binary_session:
                self.unwritten[report.name] = self.unwritten.get(report.name, 0) + len(messages)
                return
        if ts is not None and isinstance(sink, _TextualSink):
            _write_stamped(sink, ts, report.name, seq_num, messages)
        elif ts is not None and hasattr(sink, "write_stamped"):  # --decode
            sink.write_stamped(ts, report.name, seq_num, messages)
        else:
            sink.write(report.name, seq_num, messages)
        report.written += len(messages)


def _count(n: int, noun: str) -> str:
    """``1 frame``, ``2 frames``."""
    return f"{n} {noun}" if n == 1 else f"{n} {noun}s"


def _summarise_capture(
    out: TextIO, path: str, reader: CaptureReader, inspector: _Inspector
) -> bool:
    """Print the per-session report; True when gaps remain (nothing found: no session)."""

    stats = reader.stats
    link = reader.link_name
    replay = inspector.replay
    port = inspector.port
    kept = replay.datagrams - replay.other_port
    out.write(
        f"{path}: {reader.format}, {link}, {_count(stats.frames, 'frame')}, "
        f"{_count(replay.datagrams, 'UDP datagram')}"
        + (f", {kept} to/from port {port}" if port is not None else "")
        + "\n"
    )
    notes = []
    if replay.not_moldudp64:
        notes.append(f"{replay.not_moldudp64} UDP datagrams that are not MoldUDP64")
    if replay.other_port:
        notes.append(f"{replay.other_port} on other ports")
    for name, value in (
        ("not_udp", "IP packets that are not UDP"),
        ("not_ip", "frames without IP"),
        ("other_link", "frames of an unsupported link type"),
        ("truncated", "frames cut short by the snap length"),
        ("malformed", "malformed IP/UDP headers"),
        ("reassembled", "datagrams reassembled from fragments"),
        ("incomplete", "fragmented datagrams never completed"),
    ):
        count = getattr(stats, name)
        if count:
            notes.append(f"{count} {value}")
    others = sum(replay.other_sessions.values()) + replay.other_sessions_unnamed
    if others:
        named = len(replay.other_sessions)
        more = "+" if replay.other_sessions_unnamed else ""
        listed = ", ".join(repr(s.decode("latin-1")) for s in list(replay.other_sessions)[:5])
        notes.append(
            f"{others} packets of {named}{more} other session{'s' if named != 1 else ''} "
            f"skipped: {listed}{', ...' if named > 5 or more else ''}"
        )
    if replay.too_many_sessions:
        notes.append(
            f"{replay.too_many_sessions} packets beyond {MAX_SESSIONS} sessions skipped"
        )
    if notes:
        out.write("  (" + "; ".join(notes) + ")\n")
    if not inspector.sessions:
        if replay.only is not None and others:
            asked = replay.only.decode("latin-1").rstrip(" ")  # as given, not padded
            out.write(f"no packets of session {asked!r}\n")
        else:
            hint = " (try --port)" if port is None else ""
            out.write(f"no MoldUDP64 packets found{hint}\n")
    gaps = False
    for report in inspector.reports():
        core_stats = report.core.stats
        dups = f"{core_stats.duplicate_messages} messages in {core_stats.duplicate_packets} packets"
        dropped = sum(core_stats.malformed.values()) + sum(core_stats.dropped.values())
        packets = sum(core_stats.packets.values())
        heartbeats = core_stats.heartbeats
        eos = core_stats.end_of_session_packets
        data_packets = packets - heartbeats - eos - dropped
        where = ", ".join(f"{h}:{p}" for h, p in sorted(report.seen.endpoints))
        out.write(f"session {report.name!r}  ({where})\n")
        rows: list[tuple[str, str]] = [
            (
                "packets",
                f"{packets} ({data_packets} data, {heartbeats} heartbeats, {eos} end of session)",
            ),
            ("messages", f"{report.delivered} delivered in order"),
            ("first sequence", str(report.first_seq) if report.first_seq is not None else "-"),
            ("last sequence", str(report.last_seq) if report.last_seq is not None else "-"),
            ("duplicates", dups),
            ("heartbeats", str(heartbeats)),
            ("end of session", "yes" if eos else "no"),
        ]
        if inspector.raw:
            raw_rows = f"{report.written} messages of {report.raw_packets} packets"
            rows.append(("raw output", raw_rows))
        if report.seen.requests:
            rows.append(("re-requests", str(report.seen.requests)))
        if dropped:
            rows.append(("malformed", f"{dropped} datagrams dropped"))
        if report.seen.first_ts is not None and report.seen.last_ts is not None:
            rows.append(("time span", f"{report.seen.last_ts - report.seen.first_ts:.6f} s"))
        if report.lost_messages:
            gaps = True
            rows.append(
                (
                    "gaps left",
                    f"{report.lost_ranges} range{'s' if report.lost_ranges != 1 else ''}, "
                    f"{report.lost_messages} messages: "
                    f"{_format_ranges(report.lost, total=report.lost_ranges)}",
                )
            )
        else:
            rows.append(("gaps left", "none"))
        for label, value in rows:
            out.write(f"  {label:<15} {value}\n")
    for name, count in inspector.unwritten.items():
        _say(
            f"moldudp64 inspect: {count} messages of session {name!r} not written: a BinaryFILE "
            f"holds one session (choose with --session, or use --format jsonl)"
        )
    if replay.answers_elsewhere:
        _say(
            f"moldudp64 inspect: warning: --port {port} left out {replay.answers_elsewhere} "
            f"MoldUDP64 packets of these sessions on other ports (re-request answers, as "
            f"listen --capture records them); inspect without --port to include them"
        )
    return gaps


def _inspect_binaryfile(args: argparse.Namespace, out: TextIO, sink: MessageSink | None) -> int:
    """Say what is in a BinaryFILE (and copy it to --output; --raw changes nothing here:
    a BinaryFILE has no packets, the messages are already as they came).

    A BinaryFILE holds no session and no sequence numbers: its messages are numbered
    1..N of the file, unless ``--first-seq`` and ``--session`` label them (in the report
    and the output); an unlabelled session is written as unknown (jsonl ``null``)."""
    path = args.capture
    size = os.path.getsize(path)
    count = 0
    total = 0
    shortest: int | None = None
    longest = 0
    types: dict[int, int] = {}
    session = args.session or ""  # as the user gave it; "": not known
    first = args.first_seq if args.first_seq is not None else 1
    seq = first
    batch: list[bytes] = []
    bar = _progress(size, "reading")
    try:
        with BinaryFileReader(path) as reader:
            for message in reader:
                n = len(message)
                count += 1
                total += n
                if shortest is None or n < shortest:
                    shortest = n
                if n > longest:
                    longest = n
                if n:
                    types[message[0]] = types.get(message[0], 0) + 1
                if sink is not None:
                    batch.append(message)
                    if len(batch) >= 4096:
                        sink.write(session, seq, batch)
                        seq += len(batch)
                        batch = []
                if bar is not None and not count & 0xFFFF:
                    bar.update(reader.offset - bar.n)
    finally:
        if sink is not None and batch:
            sink.write(session, seq, batch)
        if bar is not None:
            bar.close()
    out.write(f"{path}: BinaryFILE, {size} bytes, {_count(count, 'message')}\n")
    if args.session:
        out.write(f"  session         {args.session!r} (--session)\n")
    if count:
        if args.first_seq is not None:
            out.write(f"  sequence        {first}..{first + count - 1} (--first-seq)\n")
        else:
            out.write(
                f"  messages        1..{count} of the file (no sequence numbers: "
                f"--first-seq N labels them)\n"
            )
        out.write(
            f"  message bytes   {total} (shortest {shortest}, longest {longest}, "
            f"mean {total / count:.1f})\n"
        )
        if all(0x20 < t < 0x7F for t in types) and len(types) <= 40:
            ranked = sorted(types.items(), key=lambda kv: (-kv[1], kv[0]))
            out.write("  message types   " + ", ".join(f"{chr(t)} {n}" for t, n in ranked) + "\n")
    return EXIT_OK


#: Well-known file signatures: (magic, what it is, a hint). A BinaryFILE starting with one
#: would open with a message thousands of bytes long, which no feed sends.
KNOWN_MAGIC: tuple[tuple[bytes, str, str], ...] = (
    (b"\x1f\x8b", "a gzip file", "; gunzip it first (zcat FILE > FILE.pcap)"),
    (b"\x28\xb5\x2f\xfd", "a zstd file", "; unzstd it first"),
    (b"\xfd7zXZ\x00", "an xz file", "; unxz it first"),
    (b"BZh", "a bzip2 file", "; bunzip2 it first"),
    (b"PK\x03\x04", "a zip archive", "; unzip it first"),
    (b"7z\xbc\xaf\x27\x1c", "a 7-Zip archive", "; extract it first"),
    (b"\x7fELF", "an ELF executable", ""),
    (b"%PDF", "a PDF document", ""),
    (b"SQLite format 3\x00", "an SQLite database", ""),
    (b"PAR1", "a Parquet file", ""),
)


def refuse_non_binaryfile(path: str) -> None:
    """UsageError unless the file, neither pcap nor pcapng, may be a BinaryFILE (inspect's
    and book's answer to a file that is none of them)."""
    try:
        with open(path, "rb") as f:
            head = f.read(1 << 20)
            whole = not f.read(1)
    except OSError as exc:
        raise UsageError(f"cannot read {path}: {exc.strerror or exc}") from None
    for magic, what, hint in KNOWN_MAGIC:
        if head.startswith(magic):
            raise UsageError(f"{path} is not a pcap, pcapng or BinaryFILE: it is {what}{hint}")
    if not looks_like_binaryfile(head, whole):
        raise UsageError(f"{path} is not a pcap, pcapng or BinaryFILE")


def cmd_inspect(args: argparse.Namespace) -> int:
    """moldudp64 inspect CAPTURE: per-session report of a pcap/pcapng, or of a BinaryFILE.

    A capture in which no MoldUDP64 packet passes the filters (``--port``, ``--session``;
    or none at all) exits 5 (EXIT_NO_MATCH), as grep does when nothing matches.
    A file that is neither a capture nor plausibly a BinaryFILE is a UsageError (exit 2).
    A capture damaged part way (cut short, as when tcpdump is killed, or a corrupt record)
    is reported and written up to the damage, then a warning names the byte: exit 2."""
    path = args.capture
    try:
        kind = detect_file_kind(path)
    except OSError as exc:
        raise UsageError(f"cannot read {path}: {exc.strerror or exc}") from None
    if os.path.isdir(path):
        raise UsageError(f"{path} is a directory")
    sink_path = None
    if args.output is not None or args.format is not None or args.raw or args.decode:
        sink_path = args.output or "-"
    refuse_overlapping_files([("CAPTURE", path, False), ("--output", sink_path, True)])
    logger.debug("inspect %s: %s file of %d bytes", path, kind, os.path.getsize(path))
    if kind == FileKind.EMPTY and path.lower().endswith(_CAPTURE_SUFFIXES):
        raise UsageError(f"{path}: empty file, not a capture (no pcap or pcapng header)")
    if kind == FileKind.BINARYFILE:
        refuse_non_binaryfile(path)
    if kind == FileKind.BINARYFILE and args.port is not None:
        raise UsageError(f"{path} is not a pcap or pcapng capture (--port applies to those)")
    if kind in (FileKind.PCAP, FileKind.PCAPNG) and args.first_seq is not None:
        raise UsageError(
            f"{path} is a capture: its packets carry their sequence numbers (--first-seq "
            f"labels a BinaryFILE's messages)"
        )
    sink = None
    if sink_path is not None:
        sink = open_sink(sink_path, args.format, args.decode)
    out: TextIO = sys.stderr if (sink is not None and sink_path == "-") else sys.stdout
    try:
        if kind == FileKind.EMPTY:
            out.write(f"{path}: empty file (a BinaryFILE with no messages)\n")
            return EXIT_OK
        if kind == FileKind.BINARYFILE:
            return _inspect_binaryfile(args, out, sink)
        inspector = _Inspector(args.session, sink, port=args.port, raw=args.raw)
        damage: list[CaptureError] = []

        def until_damage(batches: Iterable[Any]) -> Iterator[Any]:
            try:
                yield from batches
            except CaptureError as exc:  # what came before it was read: report that
                damage.append(exc)

        with CaptureReader(path) as reader:
            size = os.path.getsize(path)
            bar = _progress(size, "inspecting")
            update = None
            if bar is not None:
                tell = reader.tell

                def update() -> None:
                    bar.update(tell() - bar.n)

            try:
                inspector.feed_batches(until_damage(reader.batches()), update)
            finally:
                if bar is not None:
                    bar.close()
            gaps = _summarise_capture(out, path, reader, inspector)
        if damage:
            _say(f"moldudp64 inspect: warning: {damage[0]}; everything before it is reported")
            return EXIT_USAGE
        if gaps:
            lost = [
                f"{r.name!r} {_format_ranges(r.lost, total=r.lost_ranges)}"
                for r in inspector.reports()
                if r.lost_messages
            ]
            _say("moldudp64 inspect: gaps remain: " + "; ".join(lost))
            return EXIT_LOST
        if not inspector.sessions:
            return EXIT_NO_MATCH  # nothing the filters select (as grep's exit 1)
        return EXIT_OK
    finally:
        if sink is not None:
            sink.close()


