"""The ``moldudp64`` command: listen, publish, serve, inspect, demo.

Exit codes: 0 done; 2 bad usage or input (one line on stderr, never a traceback; also a
closed stdout or an output that cannot be written, the file named); 3 messages lost for
good (everything else was written; stderr names the lost ranges); 4 idle timeout; 130
interrupted by SIGINT, SIGTERM or SIGHUP (after flushing what was received and printing
the summary); 141 the reader of the output went away (broken pipe, e.g. ``| head``: quiet,
as a command ended by SIGPIPE).
"""

from __future__ import annotations

import argparse
import errno
import io
import json
import logging
import math
import os
import random
import signal
import socket
import sys
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from itertools import chain
from typing import IO, Any, NoReturn, TextIO, cast

from . import __version__
from .binaryfile import BinaryFileReader, BinaryFileWriter
from .capture import CaptureReader, FileKind, detect_file_kind, is_moldudp64
from .events import (
    Address,
    MessagesDelivered,
    MessagesLost,
    SessionChanged,
    SessionEnded,
    Source,
)
from .exceptions import CaptureError, ConfigError, EncodeError, MalformedPacket, MoldUDP64Error
from .net import DEFAULT_RCVBUF, parse_address
from .wire import (
    END_OF_SESSION,
    HEADER_SIZE,
    MAX_DATAGRAM,
    MAX_SEQ_NUM,
    Packet,
    encode_session,
)

__all__ = [
    "EXIT_BROKEN_PIPE",
    "EXIT_FAILURE",
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
EXIT_FAILURE = 1  # an internal error (a bug), never bad input
EXIT_USAGE = 2
EXIT_LOST = 3
EXIT_IDLE = 4
EXIT_INTERRUPTED = 130
EXIT_BROKEN_PIPE = 141  # 128 + SIGPIPE: what a shell shows for a command ended by SIGPIPE

FORMATS = ("binaryfile", "jsonl", "text", "parquet", "csv")  # the last two: --decode
#: Captures larger than this get a progress bar (on a terminal).
PROGRESS_MIN_BYTES = 8 * 1024 * 1024
#: At most this many lost ranges are listed one by one (inspect's report).
MAX_LISTED_RANGES = 20
#: listen names every lost range on stderr, up to this many.
MAX_LOST_RANGES_KEPT = 10_000


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


def _int_at_least(
    low: int, what: str, high: int | None = None, high_text: str | None = None
) -> Callable[[str], int]:
    def convert(text: str) -> int:
        try:
            value = int(text, 0)
        except ValueError:
            raise ValueError(f"{text!r} is not an integer") from None
        if high is not None and not low <= value <= high:
            raise ValueError(f"{text!r}: {what} must be {low}..{high_text or high}")
        if value < low:
            raise ValueError(f"{text!r}: {what} must be >= {low}")
        return value

    return _type(what, convert)


def _float(text: str, what: str) -> float:
    try:
        return float(text)
    except ValueError:
        raise ValueError(f"{text!r} is not a number of {what}") from None


def _seconds(text: str) -> float:
    value = _float(text, "seconds")
    if not math.isfinite(value) or value < 0:
        raise ValueError(f"{text!r}: seconds must be a finite number >= 0")
    return value


def _positive_seconds(text: str) -> float:
    value = _float(text, "seconds")
    if not math.isfinite(value) or value <= 0:
        raise ValueError(f"{text!r}: seconds must be a finite number > 0")
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


def _captured_port(text: str) -> int:
    """inspect --port: 0..65535 (port 0 is legal on the wire; anonymised captures use it)."""
    try:
        value = int(text)
    except ValueError:
        raise ValueError(f"{text!r} is not a port number") from None
    if not 0 <= value <= 65535:
        raise ValueError(f"{text!r}: port must be 0..65535")
    return value


def _session(text: str) -> str:
    """A session name as given, without the trailing spaces the wire pads it with."""
    raw = encode_session(text)  # EncodeError: not ASCII, longer than 10
    if not all(0x20 <= b < 0x7F for b in raw):
        raise EncodeError(f"session {text!r} must be printable ASCII")
    name = text.rstrip(" ")
    if not name:
        raise EncodeError(f"session {text!r} is empty: give 1 to 10 printable ASCII characters")
    return name


def _session_label(name: str) -> str:
    """How a summary shows a session: as typed (no wire padding), non-printables escaped."""
    return repr(_printable(name.rstrip(" ")))


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


def _interface(text: str) -> str:
    from .net import check_interface_addr

    return check_interface_addr(text)


SESSION = _type("session", _session)
HOST_PORT = _type("HOST:PORT", _host_port)
GROUP_PORT = _type("GROUP:PORT", _group_port)
IPV4 = _type("address", _ipv4)
INTERFACE = _type("interface", _interface)
PORT = _type("port", _port)
CAPTURED_PORT = _type("port", _captured_port)
SECONDS = _type("seconds", _seconds)
POSITIVE_SECONDS = _type("seconds", _positive_seconds)
PROBABILITY = _type("probability", _probability)
RATE = _type("rate", _rate)
COUNT = _int_at_least(1, "count")
MESSAGES_PER_SECOND = _int_at_least(1, "rate in messages per second")
SEQ = _int_at_least(1, "sequence number", MAX_SEQ_NUM, "2**64-1")
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


def _named(exc: OSError, name: str) -> OSError:
    """``exc`` with the output's name (a path, or stdout) when it names no file itself;
    the errno keeps its class (a broken pipe stays a BrokenPipeError)."""
    if exc.filename is not None:
        return exc
    return OSError(exc.errno, exc.strerror or str(exc), name)


class _WholeWrites:
    """A binary output whose ``write`` writes every byte or raises. A BufferedWriter may
    return a short count when a pipe's reader goes away, the rest dropped without a word;
    here the next attempt meets EPIPE (BrokenPipeError) instead."""

    def __init__(self, stream: IO[bytes], owned: bool) -> None:
        self._stream = stream
        self._owned = owned

    def write(self, data: bytes) -> int:
        view = memoryview(data)
        total = len(view)
        while view:
            n = self._stream.write(view)
            if not n:
                raise OSError(errno.EIO, "the output accepts no more bytes")
            view = view[n:]
        return total

    def flush(self) -> None:
        self._stream.flush()

    def close(self) -> None:
        """Flush; close the file unless it is stdout."""
        if self._owned:
            self._stream.close()
        else:
            self._stream.flush()


class MessageSink:
    """Where delivered messages go: a BinaryFILE, JSON lines, or readable text.

    A write error names the output (``/dev/full: No space left on device``)."""

    count = 0
    name = "output"

    def write(self, session: str, seq_num: int, messages: list[bytes]) -> None:
        """Write consecutive messages; ``messages[i]`` has sequence ``seq_num + i``."""
        raise NotImplementedError

    def write_events(self, events: list[MessagesDelivered]) -> int:
        """Write several batches of consecutive messages; how many messages that was."""
        n = 0
        for ev in events:
            self.write(ev.session, ev.seq_num, ev.messages)
            n += len(ev.messages)
        return n

    def flush(self) -> None:
        """Push what is buffered to the file."""

    def close(self) -> None:
        """Flush and close (the file, unless it is stdout)."""


class BinaryFileSink(MessageSink):
    """NASDAQ BinaryFILE: 2-byte big-endian length, then the message."""

    def __init__(self, stream: _WholeWrites, name: str = "output") -> None:
        self._writer = BinaryFileWriter(stream)  # type: ignore[arg-type]
        self._stream = stream
        self.name = name

    def write(self, session: str, seq_num: int, messages: list[bytes]) -> None:
        try:
            self._writer.write_many(messages)
        except OSError as exc:
            raise _named(exc, self.name) from None
        self.count += len(messages)

    def write_events(self, events: list[MessagesDelivered]) -> int:
        # one join_blocks() over the whole read batch, not one call per packet
        messages = list(chain.from_iterable([ev.messages for ev in events]))
        try:
            self._writer.write_many(messages)
        except OSError as exc:
            raise _named(exc, self.name) from None
        self.count += len(messages)
        return len(messages)

    def flush(self) -> None:
        try:
            self._writer.flush()
        except OSError as exc:
            raise _named(exc, self.name) from None

    def close(self) -> None:
        try:
            self._writer.flush()
            self._stream.close()
        except OSError as exc:
            raise _named(exc, self.name) from None


class _TextualSink(MessageSink):
    """Lines of ASCII text (JSON escapes and hex keep them ASCII), written as bytes."""

    def __init__(self, stream: _WholeWrites, name: str = "output") -> None:
        self._stream = stream
        self.name = name

    def _put(self, text: str) -> None:
        try:
            self._stream.write(text.encode("ascii"))
        except OSError as exc:
            raise _named(exc, self.name) from None

    def flush(self) -> None:
        try:
            self._stream.flush()
        except OSError as exc:
            raise _named(exc, self.name) from None

    def close(self) -> None:
        try:
            self._stream.close()
        except OSError as exc:
            raise _named(exc, self.name) from None


class JsonlSink(_TextualSink):
    """One JSON object per message: session, seq, length and the data in hex."""

    def write(self, session: str, seq_num: int, messages: list[bytes]) -> None:
        dumps = json.dumps
        lines = [
            dumps({"session": session, "seq": seq_num + i, "length": len(m), "data": m.hex()})
            for i, m in enumerate(messages)
        ]
        lines.append("")
        self._put("\n".join(lines))
        self.count += len(messages)


def _printable(session: str) -> str:
    """A session name as safe text: non-printable characters as \\xNN escapes."""
    return "".join(c if " " <= c < "\x7f" else f"\\x{ord(c):02x}" for c in session)


class TextSink(_TextualSink):
    """Readable lines: session, sequence, length, ITCH type letter, the first bytes in hex."""

    def write(self, session: str, seq_num: int, messages: list[bytes]) -> None:
        session = _printable(session)
        out = []
        for i, m in enumerate(messages):
            kind = chr(m[0]) if m and 0x21 <= m[0] < 0x7F else "."
            data = m[:32].hex(" ") + (" ..." if len(m) > 32 else "")
            out.append(f"{session} {seq_num + i:>12} {len(m):>5}  {kind}  {data}\n")
        self._put("".join(out))
        self.count += len(messages)


def open_sink(path: str, fmt: str | None, decode: str | None = None) -> MessageSink:
    """Open the output: ``-`` is stdout; the format defaults to text on a terminal, to
    jsonl for ``*.jsonl``/``*.json``, text for ``*.txt``, and BinaryFILE otherwise.
    With ``decode`` (``itch50``), the decoded output of :mod:`moldudp64.itch50_sinks`."""
    if decode is not None:
        from .itch50_sinks import open_decoded_sink

        return cast(MessageSink, open_decoded_sink(path, fmt, decode))
    if fmt in ("parquet", "csv"):
        raise UsageError(f"--format {fmt} holds decoded messages: add --decode itch50")
    if fmt is None:
        if path == "-":
            fmt = "text" if sys.stdout.isatty() else "binaryfile"
        elif path.endswith((".jsonl", ".json")):
            fmt = "jsonl"
        elif path.endswith(".txt"):
            fmt = "text"
        else:
            fmt = "binaryfile"
    if path == "-":
        name = "stdout"
        sys.stdout.flush()
        stream = _WholeWrites(sys.stdout.buffer, owned=False)
    else:
        name = path
        try:
            stream = _WholeWrites(open(path, "wb"), owned=True)  # noqa: SIM115
        except OSError as exc:
            raise UsageError(f"cannot write {path}: {exc.strerror or exc}") from None
    if fmt == "binaryfile":
        return BinaryFileSink(stream, name)
    return JsonlSink(stream, name) if fmt == "jsonl" else TextSink(stream, name)


# --------------------------------------------------------------------------- helpers


def _format_ranges(
    ranges: Sequence[tuple[int, int]], limit: int = MAX_LISTED_RANGES, total: int | None = None
) -> str:
    """The first ``limit`` ranges, then how many more of ``total`` (default: all given)."""
    parts = [f"{a}" if a == b else f"{a}-{b}" for a, b in ranges[:limit]]
    shown = len(parts)
    total = len(ranges) if total is None else total
    if total > shown:
        parts.append(f"... ({total - shown} more range{'s' if total - shown != 1 else ''})")
    return ", ".join(parts)


def _stderr_is_terminal() -> bool:
    return sys.stderr.isatty()


def _say(text: str) -> None:
    """A line on stderr (status, summaries, warnings); a closed or broken stderr (a hung-up
    terminal, a reader gone) loses the line, never the command: the exit code still tells."""
    try:
        print(text, file=sys.stderr, flush=True)
    except (OSError, ValueError):
        _silence(2)


def _silence(fd: int) -> None:
    """Point a standard fd that failed at /dev/null, so nothing written later (or flushed
    at exit) fails again."""
    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        if devnull != fd:
            os.dup2(devnull, fd)
            os.close(devnull)
    except OSError:
        pass


# --------------------------------------------------------------------------- inspect


@dataclass
class _SessionReport:
    """What inspect learned about one session of a capture."""

    name: str
    core: Any
    endpoints: set[Address] = field(default_factory=set)
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
    raw_packets: int = 0  # --raw: data packets written as they came


#: Bound on distinct sessions one inspect run tracks (each holds a receiver core).
MAX_SESSIONS = 256
#: How long (capture time, seconds) inspect's cores wait for a gap to be filled by a late
#: or re-requested packet before calling it lost: longer than a client's whole retry
#: budget (about 4.5 s), so a ``listen --capture`` file gives what ``listen -o`` wrote.
INSPECT_LOSS_GRACE = 10.0


class _Inspector:
    """Runs a capture's MoldUDP64 datagrams through one receiver core per session.

    ``port`` keeps the datagrams from or to that UDP port (any session name goes there);
    MoldUDP64 packets of a reported session on other ports (re-request answers, as
    ``listen --capture`` records them) are counted in ``answers_elsewhere``. ``raw``
    writes every message of every packet as it comes (:meth:`_write_raw`) instead of the
    ordered, de-duplicated stream; the cores still make the report.
    """

    def __init__(
        self,
        only_session: str | None,
        sink: MessageSink | None,
        *,
        port: int | None = None,
        raw: bool = False,
    ) -> None:
        from .receiver import ReceiverConfig, ReceiverCore

        self._config = ReceiverConfig
        self._core = ReceiverCore
        self.only = None if only_session is None else encode_session(only_session)
        self.sink = sink
        self.port = port
        self.raw = raw
        # With --port the datagrams are known to be MoldUDP64: any session name goes.
        self.printable_only = port is None
        self.sessions: dict[bytes, _SessionReport] = {}
        self.other_sessions: dict[bytes, int] = {}
        self.not_moldudp64 = 0
        self.too_many_sessions = 0
        self.other_sessions_unnamed = 0  # packets of other sessions past the table's bound
        self.datagrams = 0  # UDP datagrams seen (before the port filter)
        self.other_port = 0  # left out by the port filter
        self.answers_elsewhere = 0  # of those: MoldUDP64 packets of a reported session
        self.binary_session: str | None = None
        self.unwritten: dict[str, int] = {}
        self.now = 0.0

    def _report(self, raw: bytes, ts: float) -> _SessionReport | None:
        if self.only is not None and raw != self.only:
            others = self.other_sessions
            if raw in others or len(others) < MAX_SESSIONS:
                others[raw] = others.get(raw, 0) + 1
            else:  # bounded: a hostile capture cannot grow this table
                self.other_sessions_unnamed += 1
            return None
        if len(self.sessions) >= MAX_SESSIONS:
            self.too_many_sessions += 1
            return None
        name = raw.decode("latin-1")
        core = self._core(
            self._config(
                expected_session_ident=raw,
                start_from_first_seen=True,
                rerequest_server_addrs=[],
                follow_session_changes=False,
                stale_after=None,
                loss_grace=INSPECT_LOSS_GRACE,
            )
        )
        report = self.sessions[raw] = _SessionReport(name, core, first_ts=ts, last_ts=ts)
        return report

    def feed(self, datagrams: Iterable[Any], progress: Callable[[], None] | None) -> None:
        """Feed every datagram (timestamp, src, dst, payload) of a capture, in file order."""
        self.feed_batches(CaptureReader._group(iter(datagrams)), progress)

    def _elsewhere(self, payloads: list[bytes]) -> None:
        """Datagrams the port filter leaves out: count the MoldUDP64 packets among them of
        a session being reported (re-request answers come from the server's port)."""
        self.other_port += len(payloads)
        sessions = self.sessions
        for payload in payloads:
            raw = payload[:10]
            if (raw in sessions or raw == self.only) and is_moldudp64(
                payload, printable_session=False
            ):
                self.answers_elsewhere += 1

    def feed_batches(self, batches: Iterable[Any], progress: Callable[[], None] | None) -> None:
        """Feed a capture's datagrams in file order, as ``(timestamps, src, dst, payloads)``
        runs between the same endpoints (:meth:`CaptureReader.batches`).

        The capture's timestamps are the cores' clock (never going backwards), so loss
        grace periods run as they would have live; each core's timer is served before
        the next datagram is handed in, as the live client's loop does. The hot path: while
        a core has no timer set, the in-order data packets of its session that follow are
        taken in one call (:meth:`ReceiverCore.receive_in_order`), which gives the same
        events as one call each (the arrival time they would set is used only by
        staleness, which inspect's cores do not watch).
        """
        sessions = self.sessions
        now = self.now
        n = 0
        line_a = Source.LINE_A
        port = self.port
        raw_mode = self.raw
        current: _SessionReport | None = None
        raw = b""
        receive: Any = None
        take: Any = None
        get_timer: Any = None
        last_dst: Any = None
        since_progress = 0
        for times, src, dst, payloads in batches:
            count = len(payloads)
            n += count
            self.datagrams += count
            if port is not None and port != src[1] and port != dst[1]:
                self._elsewhere(payloads)
                count = 0
            i = 0
            while i < count:
                payload = payloads[i]
                ts = times[i]
                if current is None or not payload.startswith(raw):
                    found = sessions.get(payload[:10])
                    if found is None:
                        if not is_moldudp64(payload, printable_session=self.printable_only):
                            self.not_moldudp64 += 1
                            i += 1
                            continue
                        found = self._report(payload[:10], ts)
                        if found is None:
                            i += 1
                            continue
                    current = found
                    raw = payload[:10]
                    receive = found.core.receive_datagram
                    take = found.core.receive_in_order
                    get_timer = found.core.get_timer
                    last_dst = None
                if ts > now:
                    now = ts
                if len(payload) == HEADER_SIZE and 0 < ((payload[18] << 8) | payload[19]) < 0xFFFF:
                    current.requests += 1  # a client's 20-byte re-request, not a downstream packet
                    i += 1
                    continue
                if dst != last_dst:
                    last_dst = dst
                    if len(current.endpoints) < 8:
                        current.endpoints.add(dst)
                timer = get_timer()
                if timer is None and not raw_mode:
                    j = take(payloads, i, line_a, now)
                    if j > i:  # a run of in-order data packets of this session
                        top = max(times[i:j])
                        if top > now:
                            now = top
                        current.last_ts = times[j - 1]
                        i = j
                        continue
                elif timer is not None and timer <= now:
                    current.core.handle_timer(now)
                current.last_ts = ts
                if raw_mode:
                    self._write_raw(current, ts, payload)
                receive(payload, line_a, now, src)
                i += 1
            if n >= 0x200:  # hand the events on (and let their messages go) as we go
                for each in sessions.values():
                    self._drain(each)
                if progress is not None and (since_progress := since_progress + n) >= 0x1000:
                    since_progress = 0
                    progress()
                n = 0
        self.now = now
        for report in sessions.values():
            report.core.finish(now)
            self._drain(report)

    def _drain(self, report: _SessionReport) -> None:
        events = report.core.events_received()
        if not events:
            return
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

    def _write_raw(self, report: _SessionReport, ts: float, payload: bytes) -> None:
        """--raw: the messages of one datagram as they are (a malformed one: nothing)."""
        if self.sink is None:
            return
        try:
            packet = Packet.parse(payload)
        except MalformedPacket:
            return
        messages = [bytes(m) for m in packet]
        if messages:
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


def _write_stamped(
    sink: _TextualSink, ts: float, session: str, seq_num: int, messages: list[bytes]
) -> None:
    """inspect --raw in jsonl or text: each message with its frame's timestamp."""
    if isinstance(sink, JsonlSink):
        dumps = json.dumps
        lines = [
            dumps(
                {"ts": ts, "session": session, "seq": seq_num + i, "length": len(m)}
                | {"data": m.hex()}
            )
            + "\n"
            for i, m in enumerate(messages)
        ]
    else:
        name = _printable(session)
        lines = []
        for i, m in enumerate(messages):
            kind = chr(m[0]) if m and 0x21 <= m[0] < 0x7F else "."
            data = m[:32].hex(" ") + (" ..." if len(m) > 32 else "")
            lines.append(f"{ts:.6f} {name} {seq_num + i:>12} {len(m):>5}  {kind}  {data}\n")
    sink._put("".join(lines))
    sink.count += len(messages)


def _summarise_capture(
    out: TextIO, path: str, reader: CaptureReader, inspector: _Inspector
) -> bool:
    """Print the per-session report; True when gaps remain."""
    from .capture import _SUPPORTED_LINKTYPES

    stats = reader.stats
    link = _SUPPORTED_LINKTYPES.get(reader.linktype, str(reader.linktype))
    port = inspector.port
    kept = inspector.datagrams - inspector.other_port
    out.write(
        f"{path}: {reader.format}, {link}, {stats.frames} frames, "
        f"{inspector.datagrams} UDP datagrams"
        + (f", {kept} to/from port {port}" if port is not None else "")
        + "\n"
    )
    notes = []
    if inspector.not_moldudp64:
        notes.append(f"{inspector.not_moldudp64} UDP datagrams that are not MoldUDP64")
    if inspector.other_port:
        notes.append(f"{inspector.other_port} on other ports")
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
    others = sum(inspector.other_sessions.values()) + inspector.other_sessions_unnamed
    if others:
        named = len(inspector.other_sessions)
        more = "+" if inspector.other_sessions_unnamed else ""
        listed = ", ".join(repr(s.decode("latin-1")) for s in list(inspector.other_sessions)[:5])
        notes.append(
            f"{others} packets of {named}{more} other session{'s' if named != 1 else ''} "
            f"skipped: {listed}{', ...' if named > 5 or more else ''}"
        )
    if inspector.too_many_sessions:
        notes.append(
            f"{inspector.too_many_sessions} packets beyond {MAX_SESSIONS} sessions skipped"
        )
    if notes:
        out.write("  (" + "; ".join(notes) + ")\n")
    if not inspector.sessions:
        if inspector.only is not None and others:
            out.write(f"no packets of session {inspector.only.decode('latin-1')!r}\n")
        else:
            hint = " (try --port)" if port is None else ""
            out.write(f"no MoldUDP64 packets found{hint}\n")
    gaps = False
    for report in inspector.sessions.values():
        core_stats = report.core.stats
        dups = f"{core_stats.duplicate_messages} messages in {core_stats.duplicate_packets} packets"
        dropped = sum(core_stats.malformed.values()) + sum(core_stats.dropped.values())
        packets = sum(core_stats.packets.values())
        heartbeats = core_stats.heartbeats
        eos = core_stats.end_of_session_packets
        data_packets = packets - heartbeats - eos - dropped
        where = ", ".join(f"{h}:{p}" for h, p in sorted(report.endpoints))
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
    if inspector.answers_elsewhere:
        _say(
            f"moldudp64 inspect: warning: --port {port} left out {inspector.answers_elsewhere} "
            f"MoldUDP64 packets of these sessions on other ports (re-request answers, as "
            f"listen --capture records them); inspect without --port to include them"
        )
    return gaps


def _inspect_binaryfile(args: argparse.Namespace, out: TextIO, sink: MessageSink | None) -> int:
    """Say what is in a BinaryFILE (and copy it to --output; --raw changes nothing here:
    a BinaryFILE has no packets, the messages are already as they came)."""
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


def _same_file(a: str, b: str) -> bool:
    """Whether two paths name one file: the same path once symlinks are resolved (even if
    it does not exist yet), or the same inode (hard links)."""
    if os.path.realpath(a) == os.path.realpath(b):
        return True
    try:
        sa, sb = os.stat(a), os.stat(b)
    except OSError:
        return False
    return (sa.st_dev, sa.st_ino) == (sb.st_dev, sb.st_ino)


def _stdout_is(path: str) -> bool:
    """Whether stdout is the regular file ``path`` (``> path`` or ``>> path``)."""
    try:
        out = os.fstat(sys.stdout.fileno())
        st = os.stat(path)
    except (OSError, AttributeError, ValueError):
        return False
    import stat

    return stat.S_ISREG(out.st_mode) and (out.st_dev, out.st_ino) == (st.st_dev, st.st_ino)


def refuse_overlapping_files(files: Sequence[tuple[str, str | None, bool]]) -> None:
    """Refuse (UsageError) before any file is opened for writing when an output is an input
    or another output. ``files``: (option, path or None, is an output); ``-`` is stdout."""
    named = [(opt, path, out) for opt, path, out in files if path is not None]
    for i, (opt_a, a, out_a) in enumerate(named):
        for opt_b, b, out_b in named[i + 1 :]:
            if not (out_a or out_b):
                continue
            if a == "-" or b == "-":
                other = b if a == "-" else a
                if other != "-" and _stdout_is(other):
                    raise UsageError(f"{opt_a} and {opt_b} are the same file ({other}, on stdout)")
                if other == "-" and out_a and out_b:
                    raise UsageError(f"{opt_a} and {opt_b} are both stdout")
                continue
            if _same_file(a, b):
                raise UsageError(f"{opt_a} {a} and {opt_b} {b} are the same file")


def cmd_inspect(args: argparse.Namespace) -> int:
    """moldudp64 inspect CAPTURE: per-session report of a pcap/pcapng, or of a BinaryFILE.

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
    if kind == FileKind.BINARYFILE and args.port is not None:
        raise UsageError(f"{path} is not a pcap or pcapng capture (--port applies to those)")
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
                tell = reader._file.tell

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
                for r in inspector.sessions.values()
                if r.lost_messages
            ]
            _say("moldudp64 inspect: gaps remain: " + "; ".join(lost))
            return EXIT_LOST
        return EXIT_OK
    finally:
        if sink is not None:
            sink.close()


_CAPTURE_SUFFIXES = (".pcap", ".pcapng", ".cap", ".dmp", ".ntar")


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


# --------------------------------------------------------------------------- live status


class _Status:
    """A one-line live status on stderr, redrawn at most 4 times a second (terminals only)."""

    def __init__(self, enabled: bool) -> None:
        self.enabled = enabled
        self._next = 0.0
        self._width = 0

    def show(self, text: str, *, force: bool = False) -> None:
        if not self.enabled:
            return
        now = time.monotonic()
        if not force and now < self._next:
            return
        self._next = now + 0.25
        pad = max(0, self._width - len(text))
        self._width = len(text)
        self._put("\r" + text + " " * pad)

    def clear(self) -> None:
        if self.enabled and self._width:
            self._put("\r" + " " * self._width + "\r")
            self._width = 0

    def _put(self, text: str) -> None:
        try:
            sys.stderr.write(text)
            sys.stderr.flush()
        except (OSError, ValueError):  # the terminal hung up (SIGHUP's usual cause)
            self.enabled = False
            _silence(2)


def _rate_text(count: int, seconds: float) -> str:
    rate = count / seconds if seconds > 0 else 0.0
    if rate >= 1e6:
        return f"{rate / 1e6:.2f}M msg/s"
    if rate >= 1e3:
        return f"{rate / 1e3:.1f}k msg/s"
    return f"{rate:.0f} msg/s"


# --------------------------------------------------------------------------- listen


class _PcapTap:
    """Records datagrams (wall-clock timestamps) into a pcap, or a pcapng for a ``.pcapng``
    path; thread-safe; counts failures."""

    def __init__(self, path: str) -> None:
        import threading

        from .capture import CaptureWriter

        self.writer = CaptureWriter(path)
        self.path = path
        self.failed = 0
        self._lock = threading.Lock()

    def __call__(self, data: bytes, src: Address, dst: Address) -> None:
        with self._lock:
            try:
                self.writer.write(data, src, dst, time.time())
            except (MoldUDP64Error, OSError):
                self.failed += 1

    def close(self) -> None:
        with self._lock:
            try:
                self.writer.close()
            except OSError as exc:
                raise _named(exc, self.path) from None


class _CaptureHook:
    """listen --capture: the client's ``on_datagram`` hook, recording into a pcap every
    datagram the client receives (feed lines and re-request answers) and every request it
    sends, in the order it does so."""

    def __init__(
        self, tap: _PcapTap, group: Address, line_b: Address | None, interface: str
    ) -> None:
        self.tap = tap
        self.dst = {Source.LINE_A: group, Source.LINE_B: line_b or group}
        self.interface = interface
        self.local: Address = ("127.0.0.1", 0)

    def opened(self, local: Address | None) -> None:
        """Learn the request socket's address (it is bound to 0.0.0.0: name an interface)."""
        if local is not None:
            host = local[0] if local[0] != "0.0.0.0" else self.interface
            self.local = (host if host != "0.0.0.0" else "127.0.0.1", local[1])
            self.dst[Source.RETRANSMISSION] = self.local

    def __call__(self, data: bytes, source: Source, addr: Address | None, sent: bool) -> None:
        peer = addr if addr is not None else ("0.0.0.0", 0)
        if sent:
            self.tap(data, self.local, peer)
        else:
            self.tap(data, peer, self.dst.get(source, self.local))


@dataclass
class _ListenResult:
    """What a listen run ended with."""

    written: int = 0
    lost: list[MessagesLost] = field(default_factory=list)
    lost_messages: int = 0
    lost_ranges: int = 0
    session: str | None = None
    first_seq: int | None = None
    last_seq: int | None = None
    ended: bool = False
    idle: bool = False
    interrupted: bool = False
    #: The session the feed moved on to (without an end of this one): not written.
    changed_to: str | None = None


#: The signals that end a command as Ctrl-C does: flush, summary, exit 130. One that is
#: ignored when the command starts (``nohup``, a background job) stays ignored.
STOP_SIGNALS = tuple(
    getattr(signal, name) for name in ("SIGINT", "SIGTERM", "SIGHUP") if hasattr(signal, name)
)


def _catch_signals(handler: Any) -> list[tuple[int, Any]]:
    """Install ``handler`` for every stop signal not ignored; the handlers it replaced
    (none outside the main thread, where Python cannot set handlers)."""
    import threading

    if threading.current_thread() is not threading.main_thread():
        return []
    previous = []
    for signum in STOP_SIGNALS:
        if signal.getsignal(signum) is not signal.SIG_IGN:
            previous.append((signum, signal.signal(signum, handler)))
    return previous


class _StopFlag:
    """SIGINT (Ctrl-C), SIGTERM and SIGHUP set a flag instead of raising, so a command stops
    between two messages, never in the middle of writing one (main thread only)."""

    def __init__(self) -> None:
        self.set = False
        self.signum: int | None = None
        self._previous: list[tuple[int, Any]] = []

    def _handler(self, signum: int, frame: object) -> None:
        self.set = True
        if self.signum is None:
            self.signum = signum

    def __enter__(self) -> _StopFlag:
        self._previous = _catch_signals(self._handler)
        return self

    def __exit__(self, *exc: object) -> None:
        for signum, handler in self._previous:
            signal.signal(signum, handler)
        self._previous.clear()


#: listen pushes what it wrote to the output file at least this often (seconds).
FLUSH_INTERVAL = 0.5
#: listen's kernel receive buffer per line socket when root (SO_RCVBUFFORCE): 64 MiB
#: holds about 50,000 full-blast packets while the reader is busy.
LISTEN_RCVBUF = 64 * 1024 * 1024
#: listen lets datagrams gather this long (seconds) once the feed socket is readable:
#: reads of a few hundred datagrams instead of a few dozen, about half the CPU.
LISTEN_COALESCE = 0.001


def _is_root() -> bool:
    return hasattr(os, "geteuid") and os.geteuid() == 0


def _receive(
    client: Any,
    sink: MessageSink,
    *,
    count: int | None,
    idle_timeout: float | None,
    status: _Status,
    label: str,
) -> _ListenResult:
    """Write every message the client delivers to ``sink`` until the session ends, ``count``
    messages, ``idle_timeout`` seconds without a datagram, or Ctrl-C / SIGTERM."""
    result = _ListenResult()
    monotonic = time.monotonic
    t0 = monotonic()
    last_received = -1
    last_activity = t0
    next_check = t0
    done = False
    with _StopFlag() as stop:
        try:
            while not done:
                try:
                    for batch in client.batches(timeout=0.25):
                        first = batch[0]
                        last = batch[-1]
                        if (
                            count is None
                            and type(first) is MessagesDelivered
                            and type(last) is MessagesDelivered
                            and first.messages
                            and last.messages
                            and all(type(ev) is MessagesDelivered for ev in batch)
                        ):
                            # The usual case: nothing but messages; written in one go.
                            result.written += sink.write_events(batch)
                            result.session = last.session
                            if result.first_seq is None:
                                result.first_seq = first.seq_num
                            result.last_seq = last.seq_num + len(last.messages) - 1
                        else:
                            done = _receive_slow(batch, sink, result, count)
                        if done or stop.set:
                            break
                        if monotonic() >= next_check:
                            break  # flush, status and idle check, then carry on
                    else:
                        done = True  # the iteration ended: session over, or the client closed
                except TimeoutError:
                    pass
                now = monotonic()
                if stop.set:
                    result.interrupted = True
                    done = True
                if now >= next_check:
                    next_check = now + FLUSH_INTERVAL
                    sink.flush()
                    if status.enabled:
                        status.show(_live_text(client, result, now - t0, label))
                received = client.stats.datagrams_received
                if received != last_received:
                    last_received = received
                    last_activity = now
                elif idle_timeout is not None and now - last_activity >= idle_timeout:
                    result.idle = True
                    done = True
        finally:
            status.clear()
    return result


def _receive_slow(
    batch: list[Any], sink: MessageSink, result: _ListenResult, count: int | None
) -> bool:
    """Write a batch event by event (other events, or ``count`` to stop at); True when done."""
    for event in batch:
        kind = type(event)
        if kind is MessagesDelivered:
            assert isinstance(event, MessagesDelivered)
            messages = event.messages
            done = False
            if count is not None and result.written + len(messages) >= count:
                messages = messages[: count - result.written]
                done = True
            if messages:
                sink.write(event.session, event.seq_num, messages)
                result.written += len(messages)
                result.session = event.session
                if result.first_seq is None:
                    result.first_seq = event.seq_num
                result.last_seq = event.seq_num + len(messages) - 1
            if done:
                return True
        elif kind is MessagesLost:
            assert isinstance(event, MessagesLost)
            if len(result.lost) < MAX_LOST_RANGES_KEPT:
                result.lost.append(event)
            result.lost_ranges += 1
            result.lost_messages += event.count
        elif kind is SessionEnded:
            result.ended = True
            return True
        elif kind is SessionChanged:
            # One output holds one session: stop rather than mix another one in.
            assert isinstance(event, SessionChanged)
            result.changed_to = event.new_session
            return True
    return False


def _live_text(client: Any, result: _ListenResult, elapsed: float, label: str) -> str:
    core = client.stats.receiver
    gaps = core.gaps_detected if core is not None else 0
    recovered = core.messages_recovered if core is not None else 0
    return (
        f"{label}: {result.written} messages, {_rate_text(result.written, elapsed)}, "
        f"{gaps} gaps, {recovered} recovered, {result.lost_messages} lost"
    )


def _lost_text(result: _ListenResult) -> str:
    ranges = [(e.first_seq, e.last_seq) for e in result.lost]
    text = _format_ranges(ranges, limit=MAX_LOST_RANGES_KEPT)
    if result.lost_ranges > len(ranges):
        text += f" ... ({result.lost_ranges - len(ranges)} more ranges)"
    return text


def cmd_listen(args: argparse.Namespace) -> int:
    """moldudp64 listen GROUP:PORT: join, recover, write every message in order once."""
    from .sync.client import MoldUDP64

    group: Address = args.group
    refuse_overlapping_files([("--output", args.output, True), ("--capture", args.capture, True)])
    sink = open_sink(args.output, args.format, args.decode)
    tap = _PcapTap(args.capture) if args.capture else None
    hook = None
    if tap is not None:
        hook = _CaptureHook(tap, group, args.line_b, args.interface)
    # Pull mode: this thread reads, runs the core and writes (no thread hand-offs); a
    # large kernel buffer (root may force it past net.core.rmem_max) takes the bursts.
    client = MoldUDP64(
        group,
        args.interface,
        list(args.request_server or []),
        args.session,
        args.start_seq,
        line_b_addr=args.line_b,
        request_delay=args.request_delay,
        rcvbuf=LISTEN_RCVBUF if _is_root() else DEFAULT_RCVBUF,
        receiver_thread=False,
        on_datagram=hook,
        coalesce=LISTEN_COALESCE,
    )
    status = _Status(_stderr_is_terminal())
    t0 = time.monotonic()
    try:
        client.open()
        if hook is not None:
            hook.opened(client.local_request_address)
        servers = ", ".join(f"{h}:{p}" for h, p in (args.request_server or [])) or "none"
        _say(
            f"moldudp64 listen: joined {group[0]}:{group[1]}"
            + (f" and {args.line_b[0]}:{args.line_b[1]}" if args.line_b else "")
            + f" on {args.interface}; re-request servers: {servers}"
        )
        try:
            result = _receive(
                client,
                sink,
                count=args.count,
                idle_timeout=args.idle_timeout,
                status=status,
                label="listen",
            )
        finally:
            client.close()
    finally:
        try:
            sink.close()
        finally:
            if tap is not None:
                tap.close()
    elapsed = time.monotonic() - t0
    core = client.stats.receiver
    parts = [f"{result.written} messages written"]
    if result.session is not None:
        parts.append(
            f"session {_session_label(result.session)} seq {result.first_seq}..{result.last_seq}"
        )
    if core is not None:
        parts.append(
            f"{core.gaps_detected} gaps, {core.messages_recovered} recovered, "
            f"{core.duplicate_messages} duplicates"
        )
    parts.append(f"{result.lost_messages} lost")
    if core is not None:
        if core.other_session_packets:
            parts.append(f"{core.other_session_packets} datagrams of other sessions not written")
        if core.messages_before_start:
            parts.append(f"{core.messages_before_start} messages before --start-seq skipped")
    parts.append(f"{elapsed:.1f} s")
    if tap is not None:
        parts.append(f"{tap.writer.count} datagrams captured to {args.capture}")
    end = (
        "interrupted"
        if result.interrupted
        else "session ended"
        if result.ended
        else f"the feed moved on to session {_session_label(result.changed_to)} without an "
        "end of this one (not written: one output holds one session)"
        if result.changed_to is not None
        else f"idle for {args.idle_timeout} s"
        if result.idle
        else f"--count {args.count} reached"
        if args.count is not None and result.written >= args.count
        else "stopped"
    )
    _say(f"moldudp64 listen: {end}: " + ", ".join(parts))
    if result.lost:
        _say(f"moldudp64 listen: messages lost for good: {_lost_text(result)}")
    if result.interrupted:
        return EXIT_INTERRUPTED
    if result.lost_messages:
        return EXIT_LOST
    if result.idle:
        return EXIT_IDLE
    return EXIT_OK


# --------------------------------------------------------------------------- publish / serve


class _PublishedFileStore:
    """The re-request store of ``publish --input``: the BinaryFILE itself (message n is
    number n), served from disk up to what has been published so far."""

    def __init__(self, path: str) -> None:
        from .store import BinaryFileStore

        self._file = BinaryFileStore(path)
        self._next = 1

    @property
    def first_seq_num(self) -> int:
        return 1

    @property
    def next_seq_num(self) -> int:
        return self._next

    @property
    def messages(self) -> int:
        return len(self._file)

    @property
    def longest_message(self) -> tuple[int, int]:
        return self._file.longest_message

    def append(self, message: Any) -> int:
        seq = self._next
        self._next += 1
        return seq

    def get(self, seq_num: int, max_count: int, max_bytes: int) -> list[bytes]:
        if seq_num >= self._next:
            return []
        return self._file.get(seq_num, min(max_count, self._next - seq_num), max_bytes)

    def close(self) -> None:
        self._file.close()


def _faults(args: argparse.Namespace) -> Any:
    from .faults import FaultInjector

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
    from .rerequest import DEFAULT_RATE_LIMIT, RateLimit

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


def cmd_publish(args: argparse.Namespace) -> int:
    """moldudp64 publish GROUP:PORT --session NAME (--input FILE | --generate N)."""
    from .store import MemoryStore
    from .sync.server import Publisher

    group: Address = args.group
    request_port = args.request_port if args.request_port is not None else group[1] + 1
    if request_port > 65535:
        raise UsageError(f"--request-port {request_port} is not a port number; give one")
    store: Any
    messages: Iterable[bytes]
    if args.input is not None:
        _check_binaryfile_input(args.input, "publish")
        store = _PublishedFileStore(args.input)  # reads the whole file once: checks it
        length, seq = store.longest_message
        if length + 2 > args.max_payload:
            store.close()
            raise UsageError(
                f"{args.input}: message {seq} is {length} bytes, too large for "
                f"--max-payload {args.max_payload} (a message takes its length + 2 bytes); "
                f"give --max-payload {length + 2} or more"
            )
        total: int | None = store.messages
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
            stats = result.stats
            rstats = publisher.rerequest_stats
    finally:
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
    _say("moldudp64 publish: done: " + "; ".join(parts))
    return EXIT_OK


def cmd_serve(args: argparse.Namespace) -> int:
    """moldudp64 serve --input FILE --session NAME --port PORT: a re-request server."""
    from .store import BinaryFileStore
    from .sync.server import RerequestServer

    _check_binaryfile_input(args.input, "serve")
    store = BinaryFileStore(args.input)
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
            server.start()
            host, port = server.address
            interrupted = False
            try:  # a signal right after the announcement still gets the summary
                _say(
                    f"moldudp64 serve: {len(store)} messages of session {args.session!r} "
                    f"from {args.input} on {host}:{port}"
                )
                deadline = None if args.duration is None else time.monotonic() + args.duration
                while deadline is None or time.monotonic() < deadline:
                    left = 1.0 if deadline is None else min(1.0, deadline - time.monotonic())
                    time.sleep(max(0.0, left))
            except KeyboardInterrupt:
                interrupted = True
            stats = server.stats
    finally:
        store.close()
    _say(
        f"moldudp64 serve: {'interrupted' if interrupted else 'done'}: "
        + _rerequest_summary(stats, "requests")
    )
    return EXIT_INTERRUPTED if interrupted else EXIT_OK


# --------------------------------------------------------------------------- demo


class _ListSink(MessageSink):
    """Keeps the delivered messages in memory (demo)."""

    def __init__(self) -> None:
        self.messages: list[bytes] = []
        self.sequences_ok = True
        self._next: int | None = None

    def write(self, session: str, seq_num: int, messages: list[bytes]) -> None:
        if self._next is not None and seq_num != self._next:
            self.sequences_ok = False
        self._next = seq_num + len(messages)
        self.messages.extend(messages)
        self.count += len(messages)


def _wire_tally(faults: Any, size: int) -> Any:
    """Wrap a FaultInjector so it records which sequence numbers went out on the wire."""
    from .faults import FaultInjector

    class WireTally(FaultInjector):
        """A FaultInjector that marks, per sequence number, whether any copy was sent."""

        def __init__(self) -> None:
            super().__init__(faults.drop, faults.duplicate, faults.reorder, seed=faults.seed)
            self.sent_seqs = bytearray(size + 1)

        def _mark(self, out: list[bytes]) -> list[bytes]:
            for data in out:
                count = (data[18] << 8) | data[19]
                if 0 < count < END_OF_SESSION:
                    seq = int.from_bytes(data[10:18], "big")
                    end = min(seq + count, size + 1)
                    if seq < end:
                        self.sent_seqs[seq:end] = b"\x01" * (end - seq)
            return out

        def process(self, datagram: bytes) -> list[bytes]:
            return self._mark(super().process(datagram))

        def flush(self) -> list[bytes]:
            return self._mark(super().flush())

    return WireTally()


def cmd_demo(args: argparse.Namespace) -> int:
    """moldudp64 demo: publisher with loss + re-request server + client, output == input."""
    import threading

    from .net import open_unicast_socket
    from .netns import enter_private_netns
    from .sync.client import MoldUDP64, open_line_sockets, open_request_socket
    from .sync.server import Publisher

    # Before any thread starts: a private network namespace for real multicast, if root.
    why_not = None if args.loopback else enter_private_netns()
    multicast = why_not is None and not args.loopback
    session = "DEMO000001"
    port = args.port or (30001 if multicast else 0)
    messages = list(generate_itch(args.messages, args.seed))
    faults = _faults(args)
    if faults is not None:
        faults = _wire_tally(faults, len(messages))
    lines: list[socket.socket] = []
    if not multicast:  # the client's socket first: its port is where the publisher sends
        lines = [open_unicast_socket(("127.0.0.1", port), rcvbuf=8 * 1024 * 1024)]
        port = lines[0].getsockname()[1]
    group: Address = ("239.255.64.1", port)  # unicast: only names the feed for the client
    target: Address = group if multicast else ("127.0.0.1", port)
    transport = (
        f"multicast {group[0]}:{port} in a private network namespace"
        if multicast
        else f"unicast 127.0.0.1:{port} over loopback" + (f" ({why_not})" if why_not else "")
    )
    _say(
        f"moldudp64 demo: {len(messages)} ITCH-shaped messages over {transport}; faults: "
        f"drop {args.drop:g}, duplicate {args.duplicate:g}, reorder {args.reorder:g} "
        f"(seed {args.seed})"
    )
    publisher = Publisher(
        session,
        target,
        unicast=not multicast,
        heartbeat_interval=0.25,
        end_of_session_duration=args.end_of_session_duration,
        rerequest_bind=("127.0.0.1", 0),
        faults=faults,
    )
    sink = _ListSink()
    status = _Status(_stderr_is_terminal())
    t0 = time.monotonic()
    try:
        assert publisher.rerequest_address is not None
        client = MoldUDP64(group, "0.0.0.0", [publisher.rerequest_address], session)
        if multicast:
            lines = [sock for sock, _ in open_line_sockets(client.options)]
        client.open_with_sockets(lines, open_request_socket(client.options))
        with publisher:
            run_error: list[BaseException] = []

            def publish() -> None:
                try:
                    publisher.run(messages, rate=args.rate, end_session=False)
                    publisher.end_session(wait=False)
                except BaseException as exc:  # reported by the main thread
                    run_error.append(exc)

            thread = threading.Thread(target=publish, name="moldudp64-demo-publisher", daemon=True)
            thread.start()
            try:
                result = _receive(
                    client,
                    sink,
                    count=None,
                    idle_timeout=args.timeout,
                    status=status,
                    label="demo",
                )
            finally:
                client.close()
                publisher.stop()
                thread.join()
            if run_error:
                raise run_error[0]
            pstats = publisher.stats
            rstats = publisher.rerequest_stats
    finally:
        status.clear()
    elapsed = time.monotonic() - t0
    core = client.stats.receiver
    fstats = faults.stats if faults is not None else None
    equal = sink.messages == messages and sink.sequences_ok
    # Exact: the sequence numbers no copy of which left the publisher, and of those the
    # ones the client delivered (every one of them came from a re-request).
    lost_seqs = (
        [seq for seq in range(1, len(messages) + 1) if not faults.sent_seqs[seq]]
        if faults is not None
        else []
    )
    first = result.first_seq or 1
    wire_lost = len(lost_seqs)
    recovered = sum(1 for seq in lost_seqs if first <= seq < first + len(sink.messages))
    _say(
        f"moldudp64 demo: {pstats.packets} packets sent"
        + (
            f"; on the wire {fstats.dropped} dropped, {fstats.duplicated} duplicated, "
            f"{fstats.reordered} reordered"
            if fstats is not None
            else ""
        )
        + (f"; {rstats.requests} re-requests answered" if rstats is not None else "")
        + (f"; {core.gaps_detected} gaps seen by the client" if core is not None else "")
        + f"; {elapsed:.1f} s"
    )
    print(
        f"demo: published {len(messages)} messages, lost on the wire {wire_lost}, "
        f"recovered {recovered}, delivered {len(sink.messages)}, "
        + ("output equals input" if equal else "OUTPUT DIFFERS FROM INPUT")
        + ("" if not result.lost_messages else f" (lost for good: {_lost_text(result)})"),
        flush=True,
    )
    if result.interrupted:
        return EXIT_INTERRUPTED
    if not equal:
        return EXIT_LOST
    return EXIT_OK


# --------------------------------------------------------------------------- parser


class _Parser(argparse.ArgumentParser):
    """argparse, with usage errors as one line on stderr (exit 2)."""

    def error(self, message: str) -> NoReturn:
        self.exit(EXIT_USAGE, f"{self.prog}: error: {message} (see '{self.prog} --help')\n")


class _Formatter(argparse.HelpFormatter):
    """Wraps descriptions; keeps the examples epilog exactly as written."""

    def _fill_text(self, text: str, width: int, indent: str) -> str:
        if text.startswith("examples:"):
            return "".join(indent + line for line in text.splitlines(keepends=True))
        return super()._fill_text(text, width, indent)


_RAW = _Formatter

EPILOG_MAIN = """\
examples:
  moldudp64 demo                                        # see it all work, in a few seconds
  moldudp64 inspect feed.pcap                           # sessions, sequences, gaps in a capture
  moldudp64 listen 239.1.1.1:30001 --request-server 10.0.0.5:30002 --output feed.bin
  moldudp64 publish 239.1.1.1:30001 --session TEST000001 --input feed.bin --request-port 30002
  moldudp64 serve --input feed.bin --session TEST000001 --port 30003   # or serve a file alone

exit codes: 0 done, 2 bad usage or input, 3 messages lost for good,
            4 idle timeout, 130 interrupted (SIGINT, SIGTERM, SIGHUP; after flushing),
            141 the output's reader went away (broken pipe)
"""

EPILOG_INSPECT = """\
examples:
  moldudp64 inspect capture.pcap
  moldudp64 inspect capture.pcapng --port 26477 --session 000010059B
  moldudp64 inspect capture.pcap --output messages.bin            # BinaryFILE of the session
  moldudp64 inspect capture.pcap --output - --format jsonl | head
  moldudp64 inspect capture.pcap --raw -o - --format jsonl        # every message as it came
  moldudp64 inspect 20190730.NASDAQ_ITCH50                         # what a BinaryFILE holds

exits 3 when gaps remain in any session; 2 when the capture is cut short or corrupt part way
(everything before the damage is reported and written first).
"""

EPILOG_LISTEN = """\
examples:
  moldudp64 listen 239.1.1.1:30001 --request-server 10.0.0.5:30002 -o feed.bin
  moldudp64 listen 239.1.1.1:30001 --line-b 239.1.1.2:30001 --interface 10.0.0.7 \\
      --request-server 10.0.0.5:30002 --request-server 10.0.0.6:30002 -o feed.bin
  moldudp64 listen 239.1.1.1:30001 --count 10                    # a glance, as text
  moldudp64 listen 239.1.1.1:30001 -o - --format jsonl --idle-timeout 5 | jq .seq
  moldudp64 listen 239.1.1.1:30001 -o feed.bin --capture feed.pcap

exit codes: 0 session ended (or --count reached) with every message written,
            3 messages lost for good (the rest written; stderr names the ranges),
            4 --idle-timeout seconds without a packet, 130 Ctrl-C, SIGTERM or SIGHUP
            (after flushing and the summary), 141 the reader of -o - went away.
"""

EPILOG_PUBLISH = """\
examples:
  moldudp64 publish 239.1.1.1:30001 --session TEST000001 --input feed.bin
  moldudp64 publish 239.1.1.1:30001 --session TEST000001 --generate 100000 --rate 50000
  moldudp64 publish 239.1.1.1:30001 --session TEST000001 --generate 10000 \\
      --request-port 30002 --drop 0.05 --duplicate 0.01 --reorder 0.02 --seed 7

Sends the messages, answers re-requests on --request-port throughout (default: the
feed port + 1), then sends end of session for --end-of-session-duration seconds. The
whole --input is checked first: a capture, or a message longer than --max-payload allows,
is refused (exit 2) before any packet goes out. Re-requests over --rate-limit wait for
budget (up to 0.5 s), then are refused; the summary counts them by reason.
"""

EPILOG_SERVE = """\
examples:
  moldudp64 serve --input feed.bin --session TEST000001 --port 30002
  moldudp64 serve --input 20190730.NASDAQ_ITCH50 --session 000010059B --port 30002 \\
      --bind 10.0.0.5 --duration 3600

Answers MoldUDP64 re-requests from a recorded BinaryFILE (message n is sequence n)
until Ctrl-C or --duration. Requests over --rate-limit (per source host) wait for budget
(up to 0.5 s), then are refused: counted in the summary, logged once per source per 10 s.
"""

EPILOG_DEMO = """\
examples:
  moldudp64 demo
  moldudp64 demo --messages 100000 --drop 0.2 --seed 3
  moldudp64 demo --loopback                      # skip the private network namespace

Runs a publisher that loses, duplicates and reorders packets, its re-request server
and a client together; as root in a private network namespace with real multicast,
otherwise over loopback. Exits 0 only if the client's output equals the input.
"""


def _add_verbose(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "-v",
        "--verbose",
        action="count",
        default=argparse.SUPPRESS,
        help="debug logging on stderr",
    )


def _network(text: str) -> Any:
    import ipaddress

    try:
        return ipaddress.ip_network(text, strict=False)
    except ValueError:
        raise ValueError(f"{text!r} is not a network (e.g. 10.0.0.0/8 or 10.1.2.3)") from None


def _add_allow(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--allow",
        metavar="NETWORK",
        type=_type("network", _network),
        action="append",
        help="answer re-requests only from this network (repeatable; default: anyone)",
    )


def _rate_limit(text: str) -> float:
    if text.strip().lower() == "none":
        return 0.0
    try:
        value = float(text)
    except ValueError:
        raise ValueError(f"{text!r} is not a number of requests per second or 'none'") from None
    if not math.isfinite(value) or value <= 0:
        raise ValueError(f"{text!r}: the rate limit must be a number > 0, or 'none'")
    return value


def _add_rate_limit(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--rate-limit",
        metavar="N|none",
        type=_type("rate limit", _rate_limit),
        help="re-requests a second per source host, and N full answers' bytes (default: "
        "2000 requests and 4 MB a second); a request over it waits up to 0.5 s for budget, "
        "then is refused (counted, logged); 'none' turns the limit off",
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
        help="binaryfile (2-byte length + message), jsonl ({session, seq, length, data hex}) "
        "or text; "
        "default text on a terminal, by extension for files (.jsonl, .txt), else binaryfile; "
        "with --decode: jsonl, text, or parquet/csv (-o DIR: one file per message type)",
    )
    p.add_argument(
        "--decode",
        choices=("itch50",),
        help="decode the messages as TotalView-ITCH 5.0: jsonl {session, seq, message_type, "
        "fields...}; format by default text on a terminal, jsonl on stdout and for .jsonl, "
        "csv for DIR.csv, else parquet (-o DIR)",
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
    p.add_argument(
        "--port",
        type=CAPTURED_PORT,
        help="only UDP datagrams from or to this port (0 too: anonymised captures use it); "
        "a listen --capture file holds re-request answers on other ports: leave it out there",
    )
    p.add_argument("--session", type=SESSION, help="only this session")
    p.add_argument(
        "--raw",
        action="store_true",
        help="write every message of every MoldUDP64 packet as it comes in the capture "
        "(no ordering, no de-duplication), with its packet's session and sequence number "
        "and, in jsonl (ts) and text, the frame's timestamp; the report stays the ordered one",
    )
    p.add_argument(
        "--start-seq",
        type=SEQ,
        default=1,
        help="BinaryFILE only: sequence number of its first message (default 1)",
    )
    _add_output(p, None)
    p.set_defaults(func=cmd_inspect)

    p = sub.add_parser(
        "listen",
        help="join a feed, recover gaps, write every message in order",
        description="Join a MoldUDP64 feed, recover gaps from the re-request servers and "
        "write every message in sequence order exactly once.",
        epilog=EPILOG_LISTEN,
        formatter_class=_RAW,
    )
    _add_verbose(p)
    p.add_argument("group", metavar="GROUP:PORT", type=GROUP_PORT, help="the feed (line A)")
    p.add_argument(
        "--interface",
        metavar="ADDR|NAME",
        type=INTERFACE,
        default="0.0.0.0",
        help="address or name (eth0) of the interface to join on (default: the kernel's choice)",
    )
    p.add_argument(
        "--request-server",
        metavar="HOST:PORT",
        type=HOST_PORT,
        action="append",
        help="a re-request server (repeat for several; requests are spread over them)",
    )
    p.add_argument("--session", type=SESSION, help="only this session (default: the first seen)")
    p.add_argument("--start-seq", metavar="N", type=SEQ, help="first sequence number wanted")
    p.add_argument("--line-b", metavar="GROUP:PORT", type=GROUP_PORT, help="the B line")
    p.add_argument(
        "--request-delay",
        metavar="SECONDS",
        type=SECONDS,
        help="how long a new gap waits for the other line (or a late packet) before it is "
        "requested (default 0.005 with --line-b, else 0)",
    )
    _add_output(p, "-")
    p.add_argument("--count", metavar="N", type=COUNT, help="stop after N messages")
    p.add_argument(
        "--idle-timeout",
        metavar="SECONDS",
        type=POSITIVE_SECONDS,
        help="stop (exit 4) after this long without any packet",
    )
    p.add_argument(
        "--capture",
        metavar="PATH.pcap|PATH.pcapng",
        help="also record the raw datagrams (pcapng for a .pcapng path, else classic pcap)",
    )
    p.set_defaults(func=cmd_listen)

    p = sub.add_parser(
        "publish",
        help="publish a BinaryFILE (or generated messages) as a session",
        description="Publish a BinaryFILE, or N generated ITCH-5.0-shaped messages, as a "
        "MoldUDP64 session, serving re-requests throughout, then end the session.",
        epilog=EPILOG_PUBLISH,
        formatter_class=_RAW,
    )
    _add_verbose(p)
    p.add_argument("group", metavar="GROUP:PORT", type=GROUP_PORT, help="where to send")
    p.add_argument("--session", type=SESSION, required=True, help="session name (10 chars max)")
    source = p.add_mutually_exclusive_group(required=True)
    source.add_argument("--input", metavar="FILE", help="BinaryFILE to publish")
    source.add_argument("--generate", metavar="N", type=COUNT, help="publish N generated messages")
    p.add_argument(
        "--interface", metavar="ADDR|NAME", type=INTERFACE, help="outgoing interface (or its name)"
    )
    p.add_argument("--ttl", metavar="N", type=TTL, default=1, help="multicast TTL (default 1)")
    p.add_argument(
        "--rate",
        metavar="MESSAGES_PER_SECOND",
        type=RATE,
        default=0.0,
        help="pace the messages (default 0: as fast as possible)",
    )
    p.add_argument(
        "--request-port", metavar="PORT", type=PORT, help="re-request port (default: port + 1)"
    )
    p.add_argument(
        "--max-payload",
        metavar="BYTES",
        type=_max_payload,
        default=1452,
        help="bytes of message blocks per packet after the header (default 1452)",
    )
    p.add_argument(
        "--heartbeat-interval",
        metavar="SECONDS",
        type=POSITIVE_SECONDS,
        default=1.0,
        help="heartbeat when idle this long (default 1)",
    )
    p.add_argument(
        "--end-of-session-duration",
        metavar="SECONDS",
        type=SECONDS,
        default=2.0,
        help="how long to send end of session (default 2)",
    )
    p.add_argument("--drop", metavar="P", type=PROBABILITY, default=0.0, help="drop packets")
    p.add_argument(
        "--duplicate", metavar="P", type=PROBABILITY, default=0.0, help="duplicate packets"
    )
    p.add_argument("--reorder", metavar="P", type=PROBABILITY, default=0.0, help="reorder packets")
    p.add_argument("--seed", metavar="N", type=SEED, help="seed of the faults and the generator")
    _add_allow(p)
    _add_rate_limit(p)
    p.set_defaults(func=cmd_publish)

    p = sub.add_parser(
        "serve",
        help="a stand-alone re-request server for a recorded BinaryFILE",
        description="Answer MoldUDP64 re-requests from a recorded BinaryFILE.",
        epilog=EPILOG_SERVE,
        formatter_class=_RAW,
    )
    _add_verbose(p)
    p.add_argument("--input", metavar="FILE", required=True, help="the BinaryFILE")
    p.add_argument("--session", type=SESSION, required=True, help="its session name")
    p.add_argument("--port", type=PORT, required=True, help="UDP port to serve on")
    p.add_argument(
        "--bind", metavar="ADDR", type=IPV4, default="0.0.0.0", help="address to serve on"
    )
    p.add_argument(
        "--max-payload",
        metavar="BYTES",
        type=_max_payload,
        default=1452,
        help="bytes of message blocks per answer (default 1452)",
    )
    p.add_argument(
        "--duration", metavar="SECONDS", type=SECONDS, help="stop after this long (default: never)"
    )
    _add_allow(p)
    _add_rate_limit(p)
    p.set_defaults(func=cmd_serve)

    p = sub.add_parser(
        "demo",
        help="see it all work: lossy publisher, re-request server and client together",
        description="Run a publisher with loss, a re-request server and a client together "
        "and check that the client's output equals the input.",
        epilog=EPILOG_DEMO,
        formatter_class=_RAW,
    )
    _add_verbose(p)
    p.add_argument("--messages", metavar="N", type=COUNT, default=20_000, help="default 20000")
    p.add_argument("--drop", metavar="P", type=PROBABILITY, default=0.05, help="default 0.05")
    p.add_argument("--duplicate", metavar="P", type=PROBABILITY, default=0.01, help="default 0.01")
    p.add_argument("--reorder", metavar="P", type=PROBABILITY, default=0.02, help="default 0.02")
    p.add_argument("--seed", metavar="N", type=SEED, default=1, help="default 1")
    p.add_argument(
        "--rate",
        metavar="MESSAGES_PER_SECOND",
        type=MESSAGES_PER_SECOND,
        default=50_000,
        help="default 50000",
    )
    p.add_argument("--port", type=PORT, help="feed port (default 30001, or a free one on loopback)")
    p.add_argument(
        "--end-of-session-duration", metavar="SECONDS", type=SECONDS, default=1.0, help="default 1"
    )
    p.add_argument(
        "--timeout",
        metavar="SECONDS",
        type=POSITIVE_SECONDS,
        default=10.0,
        help="give up after this long without a packet (default 10)",
    )
    p.add_argument(
        "--loopback", action="store_true", help="unicast over loopback, no network namespace"
    )
    p.set_defaults(func=cmd_demo)

    p = sub.add_parser(
        "bench",
        help="measure how fast this machine runs the receiver, the client and inspect",
        description="Run the benchmarks that need neither root nor a C compiler and print "
        "them as a table with this machine's details: messages per second through the "
        "receiver core (in order, and with 5% loss, 1% duplicates, 3% reordering), into a "
        "Python for loop through the blocking and asyncio clients, and packets per second "
        "of inspect on a generated pcap (against tshark when it is installed). "
        "benchmarks/run.py in the source tree adds live multicast against a C loop.",
        epilog=EPILOG_BENCH,
        formatter_class=_RAW,
    )
    _add_verbose(p)
    p.add_argument(
        "--scale",
        metavar="X",
        type=_type("scale", float),
        default=0.25,
        help="size of the runs, 1.0 being the full suite's (default 0.25: about 20 s)",
    )
    p.add_argument("--skip-inspect", action="store_true", help="leave out the inspect part")
    p.set_defaults(func=cmd_bench)
    return parser


# --------------------------------------------------------------------------- bench

EPILOG_BENCH = """examples:
  moldudp64 bench                  # about 20 s
  moldudp64 bench --scale 1        # the full sizes of benchmarks/run.py
  moldudp64 bench --scale 0.01 --skip-inspect
"""


def cmd_bench(args: argparse.Namespace) -> int:
    """``moldudp64 bench``: the no-root, no-compiler benchmarks as one table."""
    import tempfile

    from . import bench

    if not 0 < args.scale <= 10:
        raise ConfigError(f"--scale {args.scale} must be in (0, 10]")
    results = bench.run_quick_suite(args.scale)
    if not args.skip_inspect:
        with tempfile.TemporaryDirectory(prefix="moldudp64-bench-") as tmp:
            results.extend(bench.bench_inspect(max(1000, int(1_000_000 * args.scale)), tmp))
    bench.print_table(results, title="moldudp64 bench", write=print)
    return EXIT_OK


# --------------------------------------------------------------------------- main


def _setup_logging(verbosity: int) -> None:
    logging.basicConfig(
        level=logging.DEBUG if verbosity else logging.WARNING,
        format="moldudp64: %(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )
    logging.raiseExceptions = False  # a closed or broken stderr never stops a command
    if not verbosity:
        # The commands report loss themselves (summary, lost ranges); the client's
        # per-range warnings would say it twice.
        logging.getLogger("moldudp64.sync.client").setLevel(logging.ERROR)


class _Interrupted(KeyboardInterrupt):
    """A stop signal, raised in the main thread like Ctrl-C's KeyboardInterrupt."""

    def __init__(self, signum: int) -> None:
        super().__init__(signal.Signals(signum).name)
        self.signum = signum


def _interrupt(signum: int, frame: object) -> None:
    raise _Interrupted(signum)


def _sigterm_as_interrupt() -> list[tuple[int, Any]]:
    """Let SIGTERM and SIGHUP end a command the way Ctrl-C does (flush, summary, exit 130)
    unless they are ignored (``nohup``); return the handlers replaced."""
    return _catch_signals(_interrupt)


class _ClosedStdout(io.TextIOBase):
    """sys.stdout when the command starts with fd 1 closed (``>&-``): any write fails at
    once with a clear error (exit 2) instead of an AttributeError on None."""

    class _Raw(io.RawIOBase):
        def writable(self) -> bool:
            return True

        def write(self, data: Any) -> int:
            raise _ClosedStdout.error()

    def __init__(self) -> None:
        super().__init__()
        self.buffer = self._Raw()

    @staticmethod
    def error() -> OSError:
        return OSError(errno.EBADF, "closed, nothing can be written to it", "stdout")

    def writable(self) -> bool:
        return True

    def write(self, text: str) -> int:
        raise self.error()


def _fill_closed_std_fds() -> None:
    """A closed fd 0, 1 or 2 gets /dev/null, so no file opened later takes its number (and
    gets a stray print); a closed stdout then refuses writes, a closed stderr drops them."""
    for fd in (0, 1, 2):
        try:
            os.fstat(fd)
        except OSError:
            try:
                placeholder = os.open(os.devnull, os.O_WRONLY if fd == 2 else os.O_RDONLY)
            except OSError:
                continue
            if placeholder != fd:
                os.dup2(placeholder, fd)
                os.close(placeholder)
            if fd == 1:
                sys.stdout = _ClosedStdout()
            elif fd == 2:
                sys.stderr = open(2, "w", closefd=False)  # noqa: SIM115
    if sys.stdout is None:
        sys.stdout = _ClosedStdout()
    if sys.stderr is None:
        sys.stderr = open(os.devnull, "w")  # noqa: SIM115


def _flush_stdout_quietly() -> None:
    """At the very end: whatever stdout still holds, without an "Exception ignored" later."""
    try:
        sys.stdout.flush()
    except (OSError, ValueError):
        _silence(1)


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command; return its exit code."""
    _fill_closed_std_fds()
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit:  # --help, --version, a usage error
        _flush_stdout_quietly()
        raise
    _setup_logging(getattr(args, "verbose", 0))
    prog = f"moldudp64 {args.command}"
    previous = _sigterm_as_interrupt()
    try:
        code = int(args.func(args))
        sys.stdout.flush()  # a write error of the last output is the command's error too
        return code
    except KeyboardInterrupt as exc:
        how = f" by {exc.args[0]}" if isinstance(exc, _Interrupted) else ""
        _say(f"{prog}: interrupted{how}")
        return EXIT_INTERRUPTED
    except BrokenPipeError:
        # The reader of the output went away (| head): stop quietly, as SIGPIPE would.
        _silence(1)
        return EXIT_BROKEN_PIPE
    except (MoldUDP64Error, OSError, UnicodeError) as exc:
        if getattr(args, "verbose", 0):
            logger.debug("error details", exc_info=True)
        text = str(exc) or type(exc).__name__
        if isinstance(exc, OSError) and not isinstance(exc, MoldUDP64Error):
            text = f"{exc.filename + ': ' if exc.filename else ''}{exc.strerror or exc}"
        _say(f"{prog}: error: {text}")
        return EXIT_USAGE
    except Exception as exc:  # a bug: still one line, the traceback with -v
        logger.debug("internal error", exc_info=True)
        _say(f"{prog}: internal error: {type(exc).__name__}: {exc} (-v shows the traceback)")
        return EXIT_FAILURE
    finally:
        for signum, handler in previous:
            signal.signal(signum, handler)
        _flush_stdout_quietly()


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
