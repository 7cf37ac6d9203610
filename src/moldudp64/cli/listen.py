"""``moldudp64 listen``: receive a feed, write the messages in order."""

from __future__ import annotations

import argparse
import logging
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from ..events import (
    Address,
    MessagesAfterEnd,
    MessagesDelivered,
    MessagesLost,
    SessionChanged,
    SessionEnded,
    Source,
)
from ..exceptions import MoldUDP64Error
from ..soupbintcp import MessageRun
from .common import (
    EXIT_IDLE,
    EXIT_INTERRUPTED,
    EXIT_LOST,
    EXIT_OK,
    MAX_LOST_RANGES_KEPT,
    UsageError,
    _format_ranges,
    _named,
    _rate_text,
    _say,
    _Status,
    _stderr_is_terminal,
    _StopFlag,
    refuse_overlapping_files,
)
from .feed import NatsSource, feed_client
from .options import _session_label
from .sinks import MessageSink, open_sink
from .soup import SoupSource, cmd_listen_snapshot, cmd_listen_soup

#: The events that carry messages (a SoupBinTCP client's runs too).
_DELIVERED = (MessagesDelivered, MessageRun)

logger = logging.getLogger("moldudp64.cli")

# --------------------------------------------------------------------------- listen


class _PcapTap:
    """Records datagrams (wall-clock timestamps) into a pcap, or a pcapng for a ``.pcapng``
    path; thread-safe; counts failures."""

    def __init__(self, path: str) -> None:
        from ..capture import CaptureWriter  # dpkt: only with --capture (~0.1 s to import)

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
    #: Data of the session that arrived beyond its believed end (not written).
    after_end: list[MessagesAfterEnd] = field(default_factory=list)
    after_end_messages: int = 0
    after_end_ranges: int = 0
    #: Why the run gave up (the ``give_up`` check of :func:`_receive` said so).
    failure: str | None = None

    def progress(self) -> tuple[int, int, int]:
        """What counts as progress for --idle-timeout: messages written or reported."""
        return self.written, self.lost_messages, self.after_end_messages


#: listen pushes what it wrote to the output file at least this often (seconds).
FLUSH_INTERVAL = 0.5


def _receive(
    client: Any,
    sink: MessageSink,
    *,
    count: int | None,
    idle_timeout: float | None,
    status: _Status,
    label: str,
    give_up: Callable[[], str | None] | None = None,
) -> _ListenResult:
    """Write every message the client delivers to ``sink`` until the session ends, ``count``
    messages, ``idle_timeout`` seconds without progress (no message of the session written,
    recovered, reported lost or arriving live: empty answers and other sessions' datagrams
    are no progress), Ctrl-C / SIGTERM, or ``give_up`` (asked every :data:`FLUSH_INTERVAL`)
    gives a reason (``result.failure``)."""
    result = _ListenResult()
    monotonic = time.monotonic
    t0 = monotonic()
    last_progress: tuple[float, ...] = ()
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
                        if count is None and all(
                            type(ev) in _DELIVERED and ev.last_seq >= ev.seq_num for ev in batch
                        ):
                            # The usual case: nothing but messages; written in one go.
                            result.written += sink.write_events(batch)
                            result.session = last.session
                            if result.first_seq is None:
                                result.first_seq = first.seq_num
                            result.last_seq = last.last_seq
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
                    if give_up is not None and not done:
                        result.failure = give_up()
                        done = result.failure is not None
                    if status.enabled:
                        status.show(_live_text(client, result, now - t0, label))
                progress = (*result.progress(), *_core_progress(client))
                if progress != last_progress:
                    last_progress = progress
                    last_activity = now
                elif idle_timeout is not None and now - last_activity >= idle_timeout:
                    result.idle = True
                    done = True
        finally:
            status.clear()
    return result


def _core_progress(client: Any) -> tuple[float, ...]:
    """The core's own progress: messages of the followed session recovered or arriving
    live (held behind a gap, not yet written); while an end of session waits for the
    quiet that confirms it, the clock (that wait is no idleness)."""
    core = client.stats.receiver
    if core is None:
        return ()
    waiting = time.monotonic() if core.end_of_session_pending else 0.0
    return (
        core.messages_recovered,
        core.messages[Source.LINE_A],
        core.messages[Source.LINE_B],
        waiting,
    )


def _receive_slow(
    batch: list[Any], sink: MessageSink, result: _ListenResult, count: int | None
) -> bool:
    """Write a batch event by event (other events, or ``count`` to stop at); True when done.
    After the end of session the rest of the batch is only looked at for data that came
    beyond the end (named in the summary, never written)."""
    for event in batch:
        kind = type(event)
        if kind is MessagesAfterEnd:
            assert isinstance(event, MessagesAfterEnd)
            if len(result.after_end) < MAX_LOST_RANGES_KEPT:
                result.after_end.append(event)
            result.after_end_ranges += 1
            result.after_end_messages += event.count
            continue
        if result.ended:
            continue
        if kind in _DELIVERED:
            n = event.last_seq - event.seq_num + 1
            done = False
            if count is not None and result.written + n >= count:
                n = count - result.written
                done = True
            if n > 0:
                if kind is MessageRun and not done:
                    sink.write_events([event])  # a run's blocks go as they are
                else:
                    messages = event.messages
                    sink.write(event.session, event.seq_num, messages[:n] if done else messages)
                result.written += n
                result.session = event.session
                if result.first_seq is None:
                    result.first_seq = event.seq_num
                result.last_seq = event.seq_num + n - 1
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
        elif kind is SessionChanged:
            # One output holds one session: stop rather than mix another one in.
            assert isinstance(event, SessionChanged)
            result.changed_to = event.new_session
            return True
    return result.ended


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


def _after_end_text(result: _ListenResult) -> str:
    ranges = [(e.first_seq, e.last_seq) for e in result.after_end]
    text = _format_ranges(ranges, limit=MAX_LOST_RANGES_KEPT)
    if result.after_end_ranges > len(ranges):
        text += f" ... ({result.after_end_ranges - len(ranges)} more ranges)"
    return text


def _say_summary(
    result: _ListenResult,
    core: Any,
    args: argparse.Namespace,
    elapsed: float,
    *,
    written: str | None = None,
    first_seq: int | None = None,
    before_start: str = "messages before --start-seq skipped",
    notes: Sequence[str] = (),
    after: Sequence[str] = (),
    failure_end: str = "error",
) -> None:
    """Say how a listen run ended (``listen GROUP:PORT``, ``--snapshot``, ``soup://``): one
    line with what was written, the session and range, the receiver core's counts
    (``core``, None without one), ``notes``, what was lost, the time and ``after``; then the
    ranges lost for good and data beyond the end of session. ``written`` and
    ``first_seq`` replace the first part and the range's start (a snapshot's),
    ``before_start`` names the core's messages before the first one wanted."""
    parts = [written or f"{result.written} messages written"]
    if result.session is not None:
        first = result.first_seq if first_seq is None else first_seq
        parts.append(f"session {_session_label(result.session)} seq {first}..{result.last_seq}")
    if core is not None:
        parts.append(
            f"{core.gaps_detected} gaps, {core.messages_recovered} recovered, "
            f"{core.duplicate_messages} duplicates"
        )
    parts.extend(notes)
    parts.append(f"{result.lost_messages} lost")
    if result.after_end_messages:
        parts.append(f"{result.after_end_messages} after the end of session not written")
    if core is not None:
        if core.other_session_packets:
            parts.append(f"{core.other_session_packets} datagrams of other sessions not written")
        if core.messages_before_start:
            parts.append(f"{core.messages_before_start} {before_start}")
    parts.append(f"{elapsed:.1f} s")
    parts.extend(after)
    end = (
        "interrupted" if result.interrupted
        else "session ended" if result.ended
        else failure_end if result.failure
        else f"the feed moved on to session {_session_label(result.changed_to)} without an "
        "end of this one (not written: one output holds one session)"
        if result.changed_to is not None
        else f"idle for {args.idle_timeout} s" if result.idle
        else f"--count {args.count} reached"
        if args.count is not None and result.written >= args.count
        else "stopped"
    )  # fmt: skip
    _say(f"moldudp64 listen: {end}: " + ", ".join(parts))
    if result.failure:
        _say(f"moldudp64 listen: error: {result.failure}")
    if result.lost:
        _say(f"moldudp64 listen: messages lost for good: {_lost_text(result)}")
    if result.after_end:
        _say(
            f"moldudp64 listen: {result.after_end_messages} messages arrived after the "
            f"end of session (a forged end, or a publisher that went on): {_after_end_text(result)}"
        )


def cmd_listen(args: argparse.Namespace) -> int:
    """moldudp64 listen GROUP:PORT: join, recover, write every message in order once."""
    if isinstance(args.group, NatsSource):  # a session stored in JetStream
        from .bridge import cmd_listen_nats

        return cmd_listen_nats(args)
    if isinstance(args.group, SoupSource):  # a SoupBinTCP session
        if args.end_confirm is not None:  # SoupBinTCP's End of Session is sequenced: no wait
            raise UsageError("--end-confirm is for a MoldUDP64 feed, not a soup:// session")
        return cmd_listen_soup(args)
    if getattr(args, "snapshot", None) is not None:  # late join from a snapshot
        return cmd_listen_snapshot(args)
    group: Address = args.group
    refuse_overlapping_files([("--output", args.output, True), ("--capture", args.capture, True)])
    sink = open_sink(args.output, args.format, args.decode)
    tap = _PcapTap(args.capture) if args.capture else None
    hook = None
    if tap is not None:
        hook = _CaptureHook(tap, group, args.line_b, args.interface)
    client = feed_client(args, on_datagram=hook)
    status = _Status(_stderr_is_terminal())
    t0 = time.monotonic()
    metrics = None
    try:
        if args.metrics_port is not None:  # (http.server: imported only when asked for)
            from ..metrics import ClientCollector, start_metrics

            metrics = start_metrics(
                args.metrics_port,
                args.metrics_addr,
                ClientCollector(lambda: client.stats),
                announce=lambda url: _say(f"moldudp64 listen: metrics on {url}"),
            )
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
        if metrics is not None:
            metrics.close()
        try:
            sink.close()
        finally:
            if tap is not None:
                tap.close()
    elapsed = time.monotonic() - t0
    after = [f"{tap.writer.count} datagrams captured to {args.capture}"] if tap else []
    _say_summary(result, client.stats.receiver, args, elapsed, after=after)
    if result.interrupted:
        return EXIT_INTERRUPTED
    if result.lost_messages or result.after_end_messages:
        return EXIT_LOST
    if result.idle:
        return EXIT_IDLE
    return EXIT_OK


