"""The ``moldudp64`` command: listen, publish, serve, inspect, demo.

Exit codes: 0 done; 2 bad usage or input (one line on stderr, never a traceback); 3
messages lost for good (everything else was written; stderr names the lost ranges); 4
idle timeout; 130 interrupted (after flushing what was received).
"""

from __future__ import annotations

import argparse
import json
import logging
import math
import os
import random
import signal
import sys
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import IO, Any, NoReturn, TextIO

from . import __version__
from .binaryfile import BinaryFileReader, BinaryFileWriter
from .capture import CaptureReader, FileKind, detect_file_kind, is_moldudp64
from .events import Address, MessagesDelivered, MessagesLost, SessionEnded, Source
from .exceptions import EncodeError, MoldUDP64Error
from .net import parse_address
from .wire import (
    END_OF_SESSION,
    HEADER_SIZE,
    MAX_DATAGRAM,
    encode_session,
)

__all__ = [
    "EXIT_IDLE",
    "EXIT_INTERRUPTED",
    "EXIT_LOST",
    "EXIT_OK",
    "EXIT_USAGE",
    "build_parser",
    "generate_itch",
    "main",
]

logger = logging.getLogger("moldudp64.cli")

EXIT_OK = 0
EXIT_USAGE = 2
EXIT_LOST = 3
EXIT_IDLE = 4
EXIT_INTERRUPTED = 130

FORMATS = ("binaryfile", "jsonl", "text")
#: Captures larger than this get a progress bar (on a terminal).
PROGRESS_MIN_BYTES = 8 * 1024 * 1024
#: At most this many lost ranges are listed one by one.
MAX_LISTED_RANGES = 20


class UsageError(MoldUDP64Error):
    """A bad option combination found after parsing (exit 2)."""


# --------------------------------------------------------------------------- option types


def _type(name: str, convert: Callable[[str], Any]) -> Callable[[str], Any]:
    """Wrap ``convert`` so its errors become argparse's one-line usage errors."""

    def parse(text: str) -> Any:
        try:
            return convert(text)
        except (ValueError, MoldUDP64Error) as exc:
            raise argparse.ArgumentTypeError(str(exc)) from None

    parse.__name__ = name
    return parse


def _int_at_least(low: int, what: str) -> Callable[[str], int]:
    def convert(text: str) -> int:
        try:
            value = int(text, 0)
        except ValueError:
            raise ValueError(f"{text!r} is not an integer") from None
        if value < low:
            raise ValueError(f"{text!r}: {what} must be >= {low}")
        return value

    return _type(what, convert)


def _seconds(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise ValueError(f"{text!r} is not a number of seconds") from None
    if not math.isfinite(value) or value < 0:
        raise ValueError(f"{text!r}: seconds must be a finite number >= 0")
    return value


def _positive_seconds(text: str) -> float:
    value = _seconds(text)
    if value <= 0:
        raise ValueError(f"{text!r}: seconds must be > 0")
    return value


def _rate(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise ValueError(f"{text!r} is not a number") from None
    if not math.isfinite(value) or value < 0:
        raise ValueError(f"{text!r}: rate must be a finite number >= 0 (0: unlimited)")
    return value


def _probability(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise ValueError(f"{text!r} is not a probability") from None
    if not 0.0 <= value <= 1.0:
        raise ValueError(f"{text!r}: a probability is between 0 and 1")
    return value


def _port(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise ValueError(f"{text!r} is not a port number") from None
    if not 1 <= value <= 65535:
        raise ValueError(f"{text!r}: port must be 1..65535")
    return value


def _session(text: str) -> str:
    raw = encode_session(text)  # EncodeError: not ASCII, longer than 10
    if not all(0x20 <= b < 0x7F for b in raw):
        raise EncodeError(f"session {text!r} must be printable ASCII")
    return text


def _host_port(text: str) -> Address:
    return parse_address(text, "address")


def _group_port(text: str) -> Address:
    addr = parse_address(text, "multicast address")
    first = int(addr[0].split(".")[0])
    if not 224 <= first <= 239:
        raise ValueError(f"{text!r}: {addr[0]} is not a multicast group (224.0.0.0/4)")
    return addr


def _ipv4(text: str) -> str:
    import ipaddress

    try:
        return str(ipaddress.IPv4Address(text))
    except ValueError:
        raise ValueError(f"{text!r} is not an IPv4 address") from None


SESSION = _type("session", _session)
HOST_PORT = _type("HOST:PORT", _host_port)
GROUP_PORT = _type("GROUP:PORT", _group_port)
IPV4 = _type("address", _ipv4)
PORT = _type("port", _port)
SECONDS = _type("seconds", _seconds)
POSITIVE_SECONDS = _type("seconds", _positive_seconds)
PROBABILITY = _type("probability", _probability)
RATE = _type("rate", _rate)
COUNT = _int_at_least(1, "count")
SEQ = _int_at_least(1, "sequence number")
SEED = _int_at_least(0, "seed")
TTL = _int_at_least(0, "TTL")


def _max_payload(text: str) -> int:
    value = _int_at_least(HEADER_SIZE, "payload")(text)
    if value > MAX_DATAGRAM - HEADER_SIZE:
        raise argparse.ArgumentTypeError(
            f"{text!r}: payload must be at most {MAX_DATAGRAM - HEADER_SIZE} bytes"
        )
    return value


# --------------------------------------------------------------------------- output sinks


class MessageSink:
    """Where delivered messages go: a BinaryFILE, JSON lines, or readable text."""

    count = 0

    def write(self, session: str, seq_num: int, messages: list[bytes]) -> None:
        """Write consecutive messages; ``messages[i]`` has sequence ``seq_num + i``."""
        raise NotImplementedError

    def flush(self) -> None:
        """Push what is buffered to the file."""

    def close(self) -> None:
        """Flush and close (the file, unless it is stdout)."""


class BinaryFileSink(MessageSink):
    """NASDAQ BinaryFILE: 2-byte big-endian length, then the message."""

    def __init__(self, stream: IO[bytes]) -> None:
        self._writer = BinaryFileWriter(stream)  # type: ignore[arg-type]
        self._stream = stream

    def write(self, session: str, seq_num: int, messages: list[bytes]) -> None:
        self._writer.write_many(messages)
        self.count += len(messages)

    def flush(self) -> None:
        self._writer.flush()

    def close(self) -> None:
        self._writer.flush()
        if self._stream is not sys.stdout.buffer:
            self._stream.close()


class _TextualSink(MessageSink):
    def __init__(self, stream: IO[str]) -> None:
        self._stream = stream

    def flush(self) -> None:
        self._stream.flush()

    def close(self) -> None:
        self._stream.flush()
        if self._stream is not sys.stdout:
            self._stream.close()


class JsonlSink(_TextualSink):
    """One JSON object per message: session, seq, length and the data in hex."""

    def write(self, session: str, seq_num: int, messages: list[bytes]) -> None:
        dumps = json.dumps
        lines = [
            dumps({"session": session, "seq": seq_num + i, "length": len(m), "data": m.hex()})
            for i, m in enumerate(messages)
        ]
        lines.append("")
        self._stream.write("\n".join(lines))
        self.count += len(messages)


class TextSink(_TextualSink):
    """Readable lines: session, sequence, length, ITCH type letter, the first bytes in hex."""

    def write(self, session: str, seq_num: int, messages: list[bytes]) -> None:
        out = []
        for i, m in enumerate(messages):
            kind = chr(m[0]) if m and 0x21 <= m[0] < 0x7F else "."
            data = m[:32].hex(" ") + (" ..." if len(m) > 32 else "")
            out.append(f"{session} {seq_num + i:>12} {len(m):>5}  {kind}  {data}\n")
        self._stream.write("".join(out))
        self.count += len(messages)


def open_sink(path: str, fmt: str | None) -> MessageSink:
    """Open the output: ``-`` is stdout; the format defaults to text on a terminal, to
    jsonl for ``*.jsonl``/``*.json``, text for ``*.txt``, and BinaryFILE otherwise."""
    if fmt is None:
        if path == "-":
            fmt = "text" if sys.stdout.isatty() else "binaryfile"
        elif path.endswith((".jsonl", ".json")):
            fmt = "jsonl"
        elif path.endswith(".txt"):
            fmt = "text"
        else:
            fmt = "binaryfile"
    try:
        if fmt == "binaryfile":
            bstream: IO[bytes] = sys.stdout.buffer if path == "-" else open(path, "wb")  # noqa: SIM115
            return BinaryFileSink(bstream)
        tstream: IO[str] = (
            sys.stdout if path == "-" else open(path, "w", encoding="ascii", newline="\n")  # noqa: SIM115
        )
    except OSError as exc:
        raise UsageError(f"cannot write {path}: {exc.strerror or exc}") from None
    return JsonlSink(tstream) if fmt == "jsonl" else TextSink(tstream)


# --------------------------------------------------------------------------- helpers


def _format_ranges(ranges: Sequence[tuple[int, int]], limit: int = MAX_LISTED_RANGES) -> str:
    parts = [f"{a}" if a == b else f"{a}-{b}" for a, b in ranges[:limit]]
    if len(ranges) > limit:
        parts.append(f"... ({len(ranges) - limit} more ranges)")
    return ", ".join(parts)


def _stderr_is_terminal() -> bool:
    return sys.stderr.isatty()


def _say(text: str) -> None:
    """A line on stderr (status, summaries, warnings)."""
    print(text, file=sys.stderr, flush=True)


# --------------------------------------------------------------------------- inspect


@dataclass
class _SessionReport:
    """What inspect learned about one session of a capture."""

    name: str
    core: Any
    endpoints: set[Address] = field(default_factory=set)
    packets: int = 0
    data_packets: int = 0
    heartbeats: int = 0
    end_of_session: int = 0
    requests: int = 0
    first_seq: int | None = None
    last_seq: int | None = None
    delivered: int = 0
    written: int = 0
    lost: list[tuple[int, int]] = field(default_factory=list)
    lost_messages: int = 0
    lost_ranges: int = 0
    ended: bool = False
    first_ts: float | None = None
    last_ts: float | None = None


#: Bound on distinct sessions one inspect run tracks (each holds a receiver core).
MAX_SESSIONS = 256
#: Feed this many datagrams to a core before collecting its events.
_EVENT_BATCH = 512


class _Inspector:
    """Runs a capture's MoldUDP64 datagrams through one receiver core per session."""

    def __init__(self, only_session: str | None, sink: MessageSink | None) -> None:
        from .receiver import ReceiverConfig, ReceiverCore

        self._config = ReceiverConfig
        self._core = ReceiverCore
        self.only = None if only_session is None else encode_session(only_session)
        self.sink = sink
        self.sessions: dict[bytes, _SessionReport] = {}
        self.other_sessions: dict[bytes, int] = {}
        self.not_moldudp64 = 0
        self.too_many_sessions = 0
        self.binary_session: bytes | None = None
        self.unwritten: dict[str, int] = {}
        self.now = 0.0

    def _report(self, raw: bytes) -> _SessionReport | None:
        if self.only is not None and raw != self.only:
            self.other_sessions[raw] = self.other_sessions.get(raw, 0) + 1
            return None
        if len(self.sessions) >= MAX_SESSIONS:
            self.too_many_sessions += 1
            return None
        name = raw.decode("latin-1")
        core = self._core(
            self._config(
                expected_session_ident=name,
                start_from_first_seen=True,
                rerequest_server_addrs=[],
                follow_session_changes=False,
                stale_after=None,
            )
        )
        report = self.sessions[raw] = _SessionReport(name, core)
        return report

    def feed(self, datagrams: Iterable[Any], progress: Callable[[], None] | None) -> None:
        """Feed every datagram (timestamp, src, dst, payload) of a capture, in file order.

        The capture's timestamps are the cores' clock (never going backwards), so loss
        grace periods run as they would have live; each core's timer is served before
        the next datagram is handed in, as the live client's loop does.
        """
        sessions = self.sessions
        pending: dict[bytes, int] = {}
        now = self.now
        n = 0
        for ts, src, dst, payload in datagrams:
            n += 1
            if progress is not None and not n & 0xFFF:
                progress()
            raw = payload[:10]
            report = sessions.get(raw)
            if report is None:
                if not is_moldudp64(payload):
                    self.not_moldudp64 += 1
                    continue
                report = self._report(raw)
                if report is None:
                    continue
            if ts > now:
                now = ts
            size = len(payload)
            count = (payload[18] << 8) | payload[19] if size >= HEADER_SIZE else -1
            if size == HEADER_SIZE and 0 < count < END_OF_SESSION:
                report.requests += 1  # a client's 20-byte re-request, not a downstream packet
                continue
            report.packets += 1
            if report.first_ts is None:
                report.first_ts = ts
            report.last_ts = ts
            if len(report.endpoints) < 8:
                report.endpoints.add(dst)
            if count == 0:
                report.heartbeats += 1
            elif count == END_OF_SESSION:
                report.end_of_session += 1
            elif count > 0:
                report.data_packets += 1
                seq = int.from_bytes(payload[10:18], "big")
                last = seq + count - 1
                if report.first_seq is None or seq < report.first_seq:
                    report.first_seq = seq
                if report.last_seq is None or last > report.last_seq:
                    report.last_seq = last
            core = report.core
            timer = core.get_timer()
            if timer is not None and timer <= now:
                core.handle_timer(now)
            core.receive_datagram(payload, Source.LINE_A, now, src)
            k = pending.get(raw, 0) + 1
            if k >= _EVENT_BATCH:
                self._drain(report)
                k = 0
            pending[raw] = k
        self.now = now
        for report in sessions.values():
            report.core.finish(now)
            self._drain(report)

    def _drain(self, report: _SessionReport) -> None:
        for event in report.core.events_received():
            kind = type(event)
            if kind is MessagesDelivered:
                assert isinstance(event, MessagesDelivered)
                report.delivered += len(event.messages)
                self._write(report, event)
            elif kind is MessagesLost:
                assert isinstance(event, MessagesLost)
                report.lost_messages += event.count
                report.lost_ranges += 1
                if len(report.lost) < MAX_LISTED_RANGES + 1:
                    report.lost.append((event.first_seq, event.last_seq))
            elif kind is SessionEnded:
                report.ended = True

    def _write(self, report: _SessionReport, event: MessagesDelivered) -> None:
        sink = self.sink
        if sink is None:
            return
        if isinstance(sink, BinaryFileSink):
            # A BinaryFILE holds one session: the first one delivered, or --session.
            raw = encode_session(report.name)
            if self.binary_session is None:
                self.binary_session = raw
            elif raw != self.binary_session:
                self.unwritten[report.name] = self.unwritten.get(report.name, 0) + len(
                    event.messages
                )
                return
        sink.write(report.name, event.seq_num, event.messages)
        report.written += len(event.messages)


def _summarise_capture(
    out: TextIO, path: str, reader: CaptureReader, inspector: _Inspector
) -> bool:
    """Print the per-session report; True when gaps remain."""
    from .capture import _SUPPORTED_LINKTYPES

    stats = reader.stats
    link = _SUPPORTED_LINKTYPES.get(reader.linktype, str(reader.linktype))
    out.write(
        f"{path}: {reader.format}, {link}, {stats.frames} frames, "
        f"{stats.datagrams} UDP datagrams"
        + (f" to/from port {reader.port}" if reader.port is not None else "")
        + "\n"
    )
    notes = []
    if inspector.not_moldudp64:
        notes.append(f"{inspector.not_moldudp64} UDP datagrams that are not MoldUDP64")
    for name, value in (
        ("other_port", "on other ports"),
        ("not_udp", "IP packets that are not UDP"),
        ("not_ip", "frames without IP"),
        ("truncated", "frames cut short by the snap length"),
        ("malformed", "malformed IP/UDP headers"),
        ("reassembled", "datagrams reassembled from fragments"),
        ("incomplete", "fragmented datagrams never completed"),
    ):
        count = getattr(stats, name)
        if count:
            notes.append(f"{count} {value}")
    if inspector.other_sessions:
        others = sum(inspector.other_sessions.values())
        notes.append(f"{others} packets of {len(inspector.other_sessions)} other sessions skipped")
    if inspector.too_many_sessions:
        notes.append(
            f"{inspector.too_many_sessions} packets beyond {MAX_SESSIONS} sessions skipped"
        )
    if notes:
        out.write("  (" + "; ".join(notes) + ")\n")
    if not inspector.sessions:
        out.write(
            "no MoldUDP64 packets found" + (" (try --port)" if reader.port is None else "") + "\n"
        )
    gaps = False
    for report in inspector.sessions.values():
        core_stats = report.core.stats
        dups = f"{core_stats.duplicate_messages} messages in {core_stats.duplicate_packets} packets"
        dropped = sum(core_stats.malformed.values()) + sum(core_stats.dropped.values())
        where = ", ".join(f"{h}:{p}" for h, p in sorted(report.endpoints))
        out.write(f"session {report.name!r}  ({where})\n")
        rows: list[tuple[str, str]] = [
            (
                "packets",
                f"{report.packets} ({report.data_packets} data, "
                f"{report.heartbeats} heartbeats, {report.end_of_session} end of session)",
            ),
            ("messages", f"{report.delivered} delivered in order"),
            ("first sequence", str(report.first_seq) if report.first_seq is not None else "-"),
            ("last sequence", str(report.last_seq) if report.last_seq is not None else "-"),
            ("duplicates", dups),
            ("heartbeats", str(report.heartbeats)),
            ("end of session", "yes" if report.end_of_session else "no"),
        ]
        if report.requests:
            rows.append(("re-requests", str(report.requests)))
        if dropped:
            rows.append(("malformed", f"{dropped} datagrams dropped"))
        if report.first_ts is not None and report.last_ts is not None:
            rows.append(("time span", f"{report.last_ts - report.first_ts:.6f} s"))
        if report.lost_messages:
            gaps = True
            rows.append(
                (
                    "gaps left",
                    f"{report.lost_ranges} range{'s' if report.lost_ranges != 1 else ''}, "
                    f"{report.lost_messages} messages: "
                    f"{_format_ranges(report.lost[:MAX_LISTED_RANGES])}"
                    + (" ..." if report.lost_ranges > MAX_LISTED_RANGES else ""),
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
    return gaps


def _inspect_binaryfile(args: argparse.Namespace, out: TextIO, sink: MessageSink | None) -> int:
    """Say what is in a BinaryFILE (and copy it to --output)."""
    path = args.capture
    size = os.path.getsize(path)
    count = 0
    total = 0
    shortest: int | None = None
    longest = 0
    types: dict[int, int] = {}
    session = args.session or ""
    seq = args.start_seq
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
    out.write(f"{path}: BinaryFILE, {size} bytes, {count} messages\n")
    if count:
        out.write(
            f"  sequence        {args.start_seq}..{args.start_seq + count - 1}\n"
            f"  message bytes   {total} (shortest {shortest}, longest {longest}, "
            f"mean {total / count:.1f})\n"
        )
        if all(0x20 < t < 0x7F for t in types) and len(types) <= 40:
            ranked = sorted(types.items(), key=lambda kv: (-kv[1], kv[0]))
            out.write("  message types   " + ", ".join(f"{chr(t)} {n}" for t, n in ranked) + "\n")
    return EXIT_OK


def _progress(total: int, desc: str) -> Any:
    """A tqdm bar on stderr for large inputs when stderr is a terminal, else None."""
    if total < PROGRESS_MIN_BYTES or not _stderr_is_terminal():
        return None
    import importlib

    tqdm = importlib.import_module("tqdm").tqdm  # imported lazily, untyped
    return tqdm(total=total, unit="B", unit_scale=True, desc=desc, leave=False, file=sys.stderr)


def cmd_inspect(args: argparse.Namespace) -> int:
    """moldudp64 inspect CAPTURE: per-session report of a pcap/pcapng, or of a BinaryFILE."""
    path = args.capture
    try:
        kind = detect_file_kind(path)
    except OSError as exc:
        raise UsageError(f"cannot read {path}: {exc.strerror or exc}") from None
    if os.path.isdir(path):
        raise UsageError(f"{path} is a directory")
    sink = None
    if args.output is not None or args.format is not None:
        sink = open_sink(args.output or "-", args.format)
    out: TextIO = sys.stderr if (sink is not None and (args.output or "-") == "-") else sys.stdout
    try:
        if kind == FileKind.EMPTY:
            out.write(f"{path}: empty file (a BinaryFILE with no messages)\n")
            return EXIT_OK
        if kind == FileKind.BINARYFILE:
            if args.port is not None:
                raise UsageError(
                    f"{path} is not a pcap or pcapng capture (--port applies to those)"
                )
            return _inspect_binaryfile(args, out, sink)
        inspector = _Inspector(args.session, sink)
        with CaptureReader(path, port=args.port) as reader:
            size = os.path.getsize(path)
            bar = _progress(size, "inspecting")
            update = None
            if bar is not None:
                tell = reader._file.tell

                def update() -> None:
                    bar.update(tell() - bar.n)

            try:
                inspector.feed(reader, update)
            finally:
                if bar is not None:
                    bar.close()
            gaps = _summarise_capture(out, path, reader, inspector)
        if gaps:
            lost = [
                f"{r.name!r} {_format_ranges(r.lost)}"
                for r in inspector.sessions.values()
                if r.lost_messages
            ]
            _say("moldudp64 inspect: gaps remain: " + "; ".join(lost))
            return EXIT_LOST
        return EXIT_OK
    finally:
        if sink is not None:
            sink.close()


# --------------------------------------------------------------------------- ITCH generator

# ITCH 5.0 message types and their lengths (the type byte included).
ITCH_LENGTHS: dict[bytes, int] = {
    b"S": 12, b"R": 39, b"H": 25, b"Y": 20, b"L": 26, b"V": 35, b"W": 12, b"K": 28,
    b"J": 35, b"h": 21, b"A": 36, b"F": 40, b"E": 31, b"C": 36, b"X": 23, b"D": 19,
    b"U": 35, b"P": 44, b"Q": 40, b"B": 19, b"I": 50, b"N": 20, b"O": 48,
}  # fmt: skip
# A plausible mix: mostly order flow, some trades and administrative messages.
_ITCH_MIX = [b"A"] * 40 + [b"D"] * 22 + [b"U"] * 10 + [b"E"] * 8 + [b"X"] * 6 + [b"F"] * 4
_ITCH_MIX += [b"P", b"P", b"C", b"I", b"R", b"H", b"L", b"Q", b"N", b"Y"]


def generate_itch(count: int, seed: int = 0) -> Iterable[bytes]:
    """``count`` ITCH-5.0-shaped messages (right type and length, common header filled):
    a system event first, then a seeded mix of order-book messages."""
    rng = random.Random(seed)
    clock = 34_200_000_000_000  # 09:30 in nanoseconds since midnight
    for i in range(count):
        kind = b"S" if i == 0 else rng.choice(_ITCH_MIX)
        clock += rng.randrange(1, 50_000)
        locate = rng.randrange(1, 9000)
        header = kind + locate.to_bytes(2, "big") + (i & 0xFFFF).to_bytes(2, "big")
        header += clock.to_bytes(6, "big")
        body = rng.randbytes(ITCH_LENGTHS[kind] - len(header))
        yield header + body


# --------------------------------------------------------------------------- parser


class _Parser(argparse.ArgumentParser):
    """argparse, with usage errors as one line on stderr (exit 2)."""

    def error(self, message: str) -> NoReturn:
        self.exit(EXIT_USAGE, f"{self.prog}: error: {message} (see '{self.prog} --help')\n")


_RAW = argparse.RawDescriptionHelpFormatter

EPILOG_MAIN = """\
examples:
  moldudp64 demo                                        # see it all work, in a few seconds
  moldudp64 inspect feed.pcap                           # sessions, sequences, gaps in a capture
  moldudp64 listen 239.1.1.1:30001 --request-server 10.0.0.5:30002 --output feed.bin
  moldudp64 publish 239.1.1.1:30001 --session TEST000001 --input feed.bin --request-port 30002
  moldudp64 serve --input feed.bin --session TEST000001 --port 30002

exit codes: 0 done, 2 bad usage or input, 3 messages lost for good,
            4 idle timeout, 130 interrupted (after flushing)
"""

EPILOG_INSPECT = """\
examples:
  moldudp64 inspect capture.pcap
  moldudp64 inspect capture.pcapng --port 26477 --session 000010059B
  moldudp64 inspect capture.pcap --output messages.bin            # BinaryFILE of the session
  moldudp64 inspect capture.pcap --output - --format jsonl | head
  moldudp64 inspect 20190730.NASDAQ_ITCH50                         # what a BinaryFILE holds

exits 3 when gaps remain in any session.
"""


def _add_verbose(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "-v",
        "--verbose",
        action="count",
        default=argparse.SUPPRESS,
        help="debug logging on stderr",
    )


def _add_output(p: argparse.ArgumentParser, default: str | None) -> None:
    p.add_argument(
        "--output",
        "-o",
        metavar="PATH|-",
        default=default,
        help="where messages go ('-' is stdout)" + (f"; default {default}" if default else ""),
    )
    p.add_argument(
        "--format",
        choices=FORMATS,
        default=None,
        help="binaryfile (2-byte length + message), jsonl ({session, seq, data hex}) or text; "
        "default text on a terminal, by extension for files (.jsonl, .txt), else binaryfile",
    )


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of the ``moldudp64`` command."""
    parser = _Parser(
        prog="moldudp64",
        description="NASDAQ MoldUDP64 toolkit: record, replay, serve, inspect and demo feeds.",
        epilog=EPILOG_MAIN,
        formatter_class=_RAW,
    )
    parser.add_argument("--version", action="version", version=f"moldudp64 {__version__}")
    _add_verbose(parser)
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)

    p = sub.add_parser(
        "inspect",
        help="report the sessions, sequences and gaps of a pcap/pcapng or a BinaryFILE",
        description="Read a pcap or pcapng capture (Ethernet, VLAN tags, Linux cooked "
        "captures; IPv4 fragments reassembled), find its MoldUDP64 packets (by --port, or "
        "by recognising them), run them through the receiver core and report per session. "
        "Given a BinaryFILE instead, say what is in it.",
        epilog=EPILOG_INSPECT,
        formatter_class=_RAW,
    )
    _add_verbose(p)
    p.add_argument("capture", metavar="CAPTURE", help="pcap, pcapng or BinaryFILE")
    p.add_argument("--port", type=PORT, help="only UDP datagrams from or to this port")
    p.add_argument("--session", type=SESSION, help="only this session")
    p.add_argument(
        "--start-seq",
        type=SEQ,
        default=1,
        help="BinaryFILE only: sequence number of its first message (default 1)",
    )
    _add_output(p, None)
    p.set_defaults(func=cmd_inspect)
    return parser


# --------------------------------------------------------------------------- main


def _setup_logging(verbosity: int) -> None:
    logging.basicConfig(
        level=logging.DEBUG if verbosity else logging.WARNING,
        format="moldudp64: %(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command; return its exit code."""
    parser = build_parser()
    args = parser.parse_args(argv)
    _setup_logging(getattr(args, "verbose", 0))
    prog = f"moldudp64 {args.command}"
    try:
        return int(args.func(args))
    except KeyboardInterrupt:
        _say(f"{prog}: interrupted")
        return EXIT_INTERRUPTED
    except BrokenPipeError:
        # The reader of our stdout went away (| head): stop quietly.
        try:
            devnull = os.open(os.devnull, os.O_WRONLY)
            os.dup2(devnull, sys.stdout.fileno())
        except OSError:
            pass
        return EXIT_OK
    except (MoldUDP64Error, OSError) as exc:
        if getattr(args, "verbose", 0):
            logger.debug("error details", exc_info=True)
        text = str(exc) or type(exc).__name__
        if isinstance(exc, OSError) and not isinstance(exc, MoldUDP64Error):
            text = f"{exc.filename + ': ' if exc.filename else ''}{exc.strerror or exc}"
        _say(f"{prog}: error: {text}")
        return EXIT_USAGE


if __name__ == "__main__":  # pragma: no cover
    signal.signal(signal.SIGPIPE, signal.SIG_DFL)
    sys.exit(main())
