"""``moldudp64 bridge``, ``listen nats://...`` and ``serve --nats``: the feed in JetStream."""

from __future__ import annotations

import argparse
import asyncio
import concurrent.futures
import contextlib
import logging
import threading
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

from ..events import Event, MessagesDelivered, MessagesLost, SessionChanged, SessionEnded
from ..metrics import ClientCollector, FieldsCollector, start_metrics
from ..wire import decode_session, encode_session
from .common import (
    EXIT_IDLE,
    EXIT_INTERRUPTED,
    EXIT_LOST,
    EXIT_OK,
    EXIT_PAST_END,
    EXIT_USAGE,
    MAX_LOST_RANGES_KEPT,
    UsageError,
    _format_ranges,
    _say,
    _StopFlag,
)
from .feed import NatsSource, feed_client
from .options import _session_label

#: How often the commands look at the stop flag and the idle clock (seconds).
_TICK = 0.25
#: After a stop signal, how long a bridge may take to store what it took from the feed.
_STOP_GRACE = 5.0

#: ``bridge --metrics-port``: BridgeStats fields served as ``moldudp64_bridge_*``.
BRIDGE_COUNTERS = {
    "records_appended": "Stream messages (records) this bridge appended.",
    "records_skipped": "Records not appended: another bridge had stored them first.",
    "records_refused": "Records no bridge writes that contradict the stream or the feed.",
    "conflicts": "Appends refused because another bridge appended first (then re-read).",
    "messages_stored": "MoldUDP64 messages this bridge stored.",
    "publish_errors": "Appends that failed: the stream away or refusing (retried, or fatal).",
}
BRIDGE_GAUGES = {
    "lag_messages": "Messages taken from the feed and not yet stored in the stream.",
    "lag_seconds": "How long the oldest message not yet stored has waited.",
    "stored_next_seq": "One past the last sequence number stored in the stream.",
}
#: ``listen nats://... --metrics-port``: the replay's counts, served as ``moldudp64_replay_*``.
REPLAY_COUNTERS = {
    "messages": "Messages written from the stream.",
    "lost_messages": "Messages the stream records as lost (or no record covers).",
}
REPLAY_GAUGES = {
    "next_seq": "One past the last sequence number written or reported lost.",
    "ended": "1 once the stored end of session was read.",
}


@dataclass
class _Tally:
    """What a bridge or a nats:// listen has done so far (its summary, and its metrics)."""

    messages: int = 0
    lost_messages: int = 0
    lost: list[tuple[int, int]] | None = None
    ended: bool = False
    idle: bool = False
    interrupted: bool = False
    session: str | None = None
    next_seq: int = 0  # one past the last number written or lost (nats:// listen)
    unstored: int = 0  # received, not stored: the stream did not take them after a signal
    refused: int = 0  # records no bridge writes the bridge refused (and appended after)
    past_end: int | None = None  # nats:// listen: the stored end, at or before --start-seq
    refused_said: list[str] | None = None  # the first of them, described

    def lose(self, ev: MessagesLost) -> None:
        """Count a lost range (the first ranges are kept for the summary)."""
        self.next_seq = ev.last_seq + 1
        if self.lost is None:
            self.lost = []
        if len(self.lost) < MAX_LOST_RANGES_KEPT:
            self.lost.append((ev.first_seq, ev.last_seq))
        self.lost_messages += ev.count

    def exit_code(self) -> int:
        if self.interrupted:
            return EXIT_INTERRUPTED
        if self.refused:
            return EXIT_USAGE  # the stream holds a record readers stop at
        if self.lost_messages:
            return EXIT_LOST
        if self.past_end is not None:
            return EXIT_PAST_END
        if self.idle:
            return EXIT_IDLE
        return EXIT_OK

    def end_text(self, idle_timeout: float | None, count: int | None) -> str:
        if self.interrupted:
            return "interrupted"
        if self.ended:
            return "session ended"
        if self.idle:
            return f"idle for {idle_timeout} s"
        if count is not None and self.messages >= count:
            return f"--count {count} reached"
        return "stopped"


async def _close_quietly(nc: Any) -> None:
    """Close a NATS connection, waiting at most ``_STOP_GRACE`` seconds (a server that
    stopped reading never takes the last bytes); an error doing so (the server gone, the
    socket reset) is logged, never raised: it would hide the error that ended the command,
    and everything the command needed from the connection was acknowledged before."""
    try:
        await asyncio.wait_for(nc.close(), _STOP_GRACE)
    except Exception as exc:
        logging.getLogger(__name__).debug("closing the NATS connection: %r", exc)


async def _connect_unless_stopped(servers: list[str], stop: _StopFlag) -> Any | None:
    """A NATS connection, or None when a stop signal comes first (connecting to servers
    that do not answer takes seconds: the signal should not wait for it)."""
    from ..jetstream import connect

    task = asyncio.ensure_future(connect(servers))
    while not task.done():
        await asyncio.wait({task}, timeout=_TICK)
        if stop.set and not task.done():
            task.cancel()
            with contextlib.suppress(BaseException):
                await task
            return None
    return task.result()


def _nats_servers(args: argparse.Namespace) -> list[str]:
    servers: list[str] = list(args.nats or [])
    if not servers:
        raise UsageError("--nats URL is required")
    return servers


# --------------------------------------------------------------------------- bridge


def cmd_bridge(args: argparse.Namespace) -> int:
    """moldudp64 bridge GROUP:PORT --nats URL --stream NAME: the feed into JetStream."""
    from ..jetstream import check_stream_name

    check_stream_name(args.stream)
    servers = _nats_servers(args)
    with _StopFlag() as stop:
        tally, appended = asyncio.run(_bridge(args, servers, stop))
    parts = [f"{tally.messages} messages received", f"{tally.lost_messages} lost"]
    parts.append(f"{appended} records appended to stream {args.stream}")
    _say(f"moldudp64 bridge: {tally.end_text(args.idle_timeout, args.count)}: " + ", ".join(parts))
    if tally.lost:
        _say(f"moldudp64 bridge: messages lost for good: {_format_ranges(tally.lost)}")
    if tally.refused:
        said = "; ".join(tally.refused_said or [])
        more = len(tally.refused_said or []) < tally.refused
        _say(
            f"moldudp64 bridge: error: refused {tally.refused} record(s) no bridge writes, "
            f"which readers stop at (delete them from the stream): {said}"
            + (" ..." if more else "")
        )
    if tally.unstored:
        _say(
            f"moldudp64 bridge: {tally.unstored} messages received were not stored: the "
            f"stream did not take them within {_STOP_GRACE:g} s of the signal"
        )
    return tally.exit_code()


async def _bridge(
    args: argparse.Namespace, servers: list[str], stop: _StopFlag
) -> tuple[_Tally, int]:
    from ..jetstream import Bridge, ensure_stream, jetstream_errors

    nc = await _connect_unless_stopped(servers, stop)
    if nc is None:
        return _Tally(interrupted=True), 0
    metrics = None
    try:
        with jetstream_errors(f"bridge to stream {args.stream}"):
            js = nc.jetstream()
            await ensure_stream(js, args.stream)
            bridge = Bridge(js, args.stream)
            # listen's client reads the feed (recvmmsg) on its own thread; the loop appends.
            client = feed_client(args)
            metrics = start_metrics(
                args.metrics_port,
                args.metrics_addr,
                ClientCollector(lambda: client.stats),
                FieldsCollector(
                    lambda: bridge.stats, "moldudp64_bridge", BRIDGE_COUNTERS, BRIDGE_GAUGES
                ),
                announce=lambda url: _say(f"moldudp64 bridge: metrics on {url}"),
            )
            tally = _Tally()
            with client:  # opens: joins the group(s)
                _say(
                    f"moldudp64 bridge: joined {args.group[0]}:{args.group[1]} on "
                    f"{args.interface}; appending to stream {args.stream} at {', '.join(servers)}"
                )
                feed = _FeedThread(client, asyncio.get_running_loop())
                try:
                    await _run_until_stopped(bridge, _watch(feed, args, tally, stop), stop, tally)
                finally:
                    feed.halt()
                    tally.refused, tally.refused_said = bridge.records_refused, bridge.refused
            return tally, bridge.appended
    finally:
        if metrics is not None:
            metrics.close()
        await _close_quietly(nc)


async def _run_until_stopped(
    bridge: Any, events: AsyncIterator[Event], stop: _StopFlag, tally: _Tally
) -> None:
    """``bridge.run(events)``; after a stop signal it has ``_STOP_GRACE`` seconds to store
    what it took (it normally needs far less), then it is cancelled and what it could not
    store is counted in ``tally.unstored`` (the stream away: it would wait its outage bound)."""
    run = asyncio.ensure_future(bridge.run(events))
    try:
        stopped_at: float | None = None
        while not run.done():
            await asyncio.wait({run}, timeout=_TICK)
            if stop.set and not run.done():
                now = time.monotonic()
                if stopped_at is None:
                    stopped_at = now
                elif now - stopped_at >= _STOP_GRACE:
                    tally.interrupted = True
                    tally.unstored = bridge.stats.lag_messages
                    run.cancel()
                    await asyncio.wait({run}, timeout=_STOP_GRACE)
                    return
        run.result()  # its error, if any
    finally:
        if not run.done():
            run.cancel()


#: What the feed thread hands over besides batches: (_QUIET, datagrams received so far)
#: when no event came for a tick; _ENDED when the feed ended.
_QUIET, _ENDED = "quiet", "ended"
#: Batches of events waiting for the event loop; beyond, the feed thread waits (and the
#: kernel's receive buffer fills: a stream that stays slow becomes gaps, recovered).
_HANDOFF = 64


class _FeedThread:
    """Reads ``client`` (pull mode) on its own thread, handing each batch of events to the
    event loop through a queue of at most ``_HANDOFF`` batches; :meth:`halt` stops it."""

    def __init__(self, client: Any, loop: asyncio.AbstractEventLoop) -> None:
        self.client = client
        self.loop = loop
        self.queue: asyncio.Queue[Any] = asyncio.Queue(_HANDOFF)
        self._halt = threading.Event()
        self._thread = threading.Thread(target=self._run, name="moldudp64-feed", daemon=True)
        self._thread.start()

    def _hand(self, item: Any) -> bool:
        """Put ``item`` on the loop's queue, waiting for room; False once halted."""
        future = asyncio.run_coroutine_threadsafe(self.queue.put(item), self.loop)
        while True:
            try:
                future.result(_TICK)
                return True
            except concurrent.futures.TimeoutError:
                if self._halt.is_set():
                    future.cancel()
                    return False
            except (concurrent.futures.CancelledError, RuntimeError):  # the loop is gone
                return False

    def _run(self) -> None:
        try:
            while not self._halt.is_set():
                try:
                    for batch in self.client.batches(timeout=_TICK):
                        if not self._hand(batch) or self._halt.is_set():
                            return
                    self._hand(_ENDED)  # the session ended, or the client closed
                    return
                except TimeoutError:  # read here, by the client's own thread
                    stats = self.client.stats
                    # an end of session waiting for the quiet that confirms it is no idleness
                    pending = stats.receiver is not None and stats.receiver.end_of_session_pending
                    received = (stats.datagrams_received, time.monotonic() if pending else 0.0)
                    if not self._hand((_QUIET, received)):
                        return
        except Exception as exc:  # the loop raises it
            self._hand(exc)

    def halt(self) -> None:
        """Stop reading and wait for the thread."""
        self._halt.set()
        self._thread.join()


async def _watch(
    feed: _FeedThread, args: argparse.Namespace, tally: _Tally, stop: _StopFlag
) -> AsyncIterator[Event]:
    """The feed's events, counted, until the end of session, --count, idle or a signal."""
    last_received = -1
    last_activity = time.monotonic()
    while True:
        item = await feed.queue.get()
        if isinstance(item, Exception):
            raise item
        if item == _ENDED:
            return
        now = time.monotonic()
        if stop.set:
            tally.interrupted = True
            return
        if isinstance(item, tuple):  # no event for a tick: were there datagrams?
            if item[1] != last_received:
                last_received, last_activity = item[1], now
            elif args.idle_timeout is not None and now - last_activity >= args.idle_timeout:
                tally.idle = True
                return
            continue
        last_activity = now
        for ev in item:
            if isinstance(ev, MessagesDelivered):
                if args.count is not None and tally.messages + len(ev.messages) >= args.count:
                    ev = MessagesDelivered(
                        ev.session, ev.seq_num, ev.messages[: args.count - tally.messages]
                    )
                    tally.messages += len(ev.messages)
                    yield ev
                    return
                tally.messages += len(ev.messages)
            elif isinstance(ev, MessagesLost):
                tally.lose(ev)
            elif isinstance(ev, SessionChanged):
                return  # one stream subject holds one session: stop, as listen does
            yield ev
            if isinstance(ev, SessionEnded):
                tally.ended = True
                return


# --------------------------------------------------------------------------- listen


def cmd_listen_nats(args: argparse.Namespace) -> int:
    """moldudp64 listen nats://HOST:PORT/STREAM: a stored session, from --start-seq on."""
    from .sinks import open_sink

    source: NatsSource = args.group
    for option in ("request_server", "line_b", "capture", "request_delay", "end_confirm"):
        if getattr(args, option, None) is not None:
            raise UsageError(f"--{option.replace('_', '-')} does not apply to a nats:// source")
    if getattr(args, "interface", "0.0.0.0") != "0.0.0.0":
        raise UsageError("--interface does not apply to a nats:// source")
    tally = _Tally()
    metrics = start_metrics(
        args.metrics_port,
        args.metrics_addr,
        FieldsCollector(lambda: tally, "moldudp64_replay", REPLAY_COUNTERS, REPLAY_GAUGES),
        announce=lambda url: _say(f"moldudp64 listen: metrics on {url}"),
    )
    try:
        sink = open_sink(args.output, args.format, args.decode)
        try:
            with _StopFlag() as stop:
                asyncio.run(_replay(args, source, sink, stop, tally))
        finally:
            sink.close()
    finally:
        if metrics is not None:
            metrics.close()
    label = _session_label(tally.session) if tally.session is not None else "none"
    _say(
        f"moldudp64 listen: {tally.end_text(args.idle_timeout, args.count)}: "
        f"{tally.messages} messages written, session {label} from stream {source.stream}, "
        f"{tally.lost_messages} lost"
    )
    if tally.lost:
        _say(f"moldudp64 listen: messages lost for good: {_format_ranges(tally.lost)}")
    if tally.past_end is not None:
        last = tally.past_end - 1
        _say(
            f"moldudp64 listen: --start-seq {args.start_seq} is past the stored session: it "
            + (f"ended after message {last}" if last else "ended with no message")
        )
    return tally.exit_code()


async def _replay(
    args: argparse.Namespace, source: NatsSource, sink: Any, stop: _StopFlag, tally: _Tally
) -> _Tally:
    from ..jetstream import jetstream_errors

    nc = await _connect_unless_stopped([source.url], stop)
    if nc is None:
        tally.interrupted = True
        return tally
    try:
        with jetstream_errors(f"stream {source.stream}"):
            return await _replay_from(nc, args, source, sink, stop, tally)
    finally:
        await _close_quietly(nc)


async def _replay_from(
    nc: Any, args: argparse.Namespace, source: NatsSource, sink: Any, stop: _StopFlag, tally: _Tally
) -> _Tally:
    from ..jetstream.stream import _pick_session

    js = nc.jetstream()
    # As the wire has it (padded to 10), so the output says what live listen says.
    session = None if args.session is None else decode_session(encode_session(args.session))
    started = time.monotonic()
    waiting = _waiting_text(args)
    if session is not None:
        await _say_if_absent(js, source.stream, session, waiting)
    while session is None:
        session, note = await _pick_session(js, source.stream)
        if note:
            _say(f"moldudp64 listen: {note}")
        if session is None:
            if waiting:
                _say(f"moldudp64 listen: stream {source.stream} holds no session yet; {waiting}")
                waiting = ""
            if stop.set:
                tally.interrupted = True
                return tally
            if args.idle_timeout is not None and time.monotonic() - started > args.idle_timeout:
                tally.idle = True
                return tally
            await asyncio.sleep(_TICK)
    tally.session = session
    if args.start_seq is not None and args.start_seq > 1:
        await _say_if_past_tail(js, source.stream, session, args.start_seq, _waiting_text(args))
    task = asyncio.ensure_future(_consume(js, source.stream, session, args, sink, tally))
    try:
        while not task.done():
            await asyncio.wait({task}, timeout=_TICK)
            sink.flush()
            if stop.set:
                tally.interrupted = True
                task.cancel()
    finally:
        if not task.done():
            task.cancel()
    if not task.cancelled():
        task.result()  # its error, if any
    counted = args.count is not None and tally.messages >= args.count
    if not (tally.ended or tally.interrupted or counted):
        tally.idle = True
    return tally


def _waiting_text(args: argparse.Namespace) -> str:
    """What a nats:// listen says while it waits for a session to be stored."""
    if args.idle_timeout is not None:
        return f"waiting for it (--idle-timeout {args.idle_timeout:g} s)"
    return "waiting for it (Ctrl-C to stop, or give --idle-timeout)"


async def _say_if_absent(js: Any, stream: str, session: str, waiting: str) -> None:
    """Say which sessions ``stream`` holds when ``session`` is not one of them (a typo
    would otherwise wait in silence)."""
    from ..jetstream import stored_sessions

    sessions = await stored_sessions(js, stream)
    if session in sessions:
        return
    held = [f"{_session_label(s)} ({n} records)" for s, n in sorted(sessions.items())[:10]]
    if len(sessions) > len(held):
        held.append(f"... ({len(sessions) - len(held)} more)")
    _say(
        f"moldudp64 listen: stream {stream} holds no session {_session_label(session)} "
        f"(it holds {', '.join(held) or 'none'}); {waiting}"
    )


async def _say_if_past_tail(js: Any, stream: str, session: str, start: int, waiting: str) -> None:
    """Say where a live (not ended) stored session is when ``start`` is past what it holds
    so far (the reader waits for it, which would otherwise look like a hang)."""
    from ..jetstream import session_subject
    from ..jetstream.records import _decode

    try:
        last = _decode(await js.get_last_msg(stream, session_subject(stream, session)))
    except Exception:  # none yet, or damaged: the reader says so soon
        return
    if last.kind != "end" and last.next_seq < start:
        _say(
            f"moldudp64 listen: --start-seq {start} is past what session "
            f"{_session_label(session)} holds so far (up to message {last.next_seq - 1}, "
            f"stream message {last.stream_seq}); {waiting}"
        )


async def _consume(
    js: Any, stream: str, session: str, args: argparse.Namespace, sink: Any, tally: _Tally
) -> None:
    """Write the stored session until its end, --count or --idle-timeout."""
    from ..jetstream import read_batches

    batches = read_batches(js, stream, session, args.start_seq or 1, idle_timeout=args.idle_timeout)
    async for ev in batches:
        if isinstance(ev, MessagesDelivered):
            messages = ev.messages
            if args.count is not None and tally.messages + len(messages) >= args.count:
                messages = messages[: args.count - tally.messages]
                sink.write(session, ev.seq_num, messages)
                tally.messages += len(messages)
                tally.next_seq = ev.seq_num + len(messages)
                return
            sink.write(session, ev.seq_num, messages)
            tally.messages += len(messages)
            tally.next_seq = ev.seq_num + len(messages)
        elif isinstance(ev, MessagesLost):
            tally.lose(ev)
        elif isinstance(ev, SessionEnded):
            tally.ended = True
            start = args.start_seq
            nothing = not (tally.messages or tally.lost_messages)
            if start is not None and nothing and ev.next_seq_num <= start:
                tally.past_end = ev.next_seq_num
            return


# --------------------------------------------------------------------------- serve


def cmd_serve(args: argparse.Namespace) -> int:
    """moldudp64 serve: from --input FILE (publish.cmd_serve), or from --nats and --stream."""
    from . import publish

    if args.nats is None:
        if args.input is None:
            raise UsageError("serve needs --input FILE, or --nats URL with --stream NAME")
        if args.stream is not None:
            raise UsageError("--stream goes with --nats")
        return publish.cmd_serve(args)
    if args.input is not None:
        raise UsageError("serve takes --input or --nats, not both")
    if args.stream is None:
        raise UsageError("serve --nats needs --stream NAME")
    from ..jetstream import JetStreamStore, check_stream_name, session_subject

    check_stream_name(args.stream)
    servers = _nats_servers(args)
    store = JetStreamStore(servers, args.stream, args.session)
    try:
        sessions = store.stored_sessions()
        if not any(session_subject(args.stream, s) == store.subject for s in sessions):
            held = [f"{_session_label(s)} ({n} records)" for s, n in sorted(sessions.items())[:10]]
            if len(sessions) > len(held):
                held.append(f"... ({len(sessions) - len(held)} more)")
            _say(
                f"moldudp64 serve: stream {args.stream} holds no session "
                f"{_session_label(args.session)} (it holds {', '.join(held) or 'none'}); "
                "serving it as a bridge stores it"
            )
        what = (
            f"session {args.session!r} from stream {args.stream} "
            f"(messages {store.first_seq_num}..{store.next_seq_num - 1} so far)"
        )
    except BaseException:
        store.close()
        raise
    return publish.serve_store(args, store, what)
