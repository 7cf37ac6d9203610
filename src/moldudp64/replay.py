"""Capture replay: recorded MoldUDP64 datagrams in, per-session events out.

Each session of a capture (or of any list of ``(timestamp, src, dst, payload)``
datagrams) runs through its own :class:`~moldudp64.receiver.ReceiverCore`, the core the
live client drives, with the capture's timestamps as its clock: loss grace periods run
as they did live, and a gap a late or re-requested packet filled (``listen --capture``
records the answers) is not reported. The 20-byte re-requests a client sent are counted,
not fed. ``moldudp64 inspect`` is built on this.

>>> for session, event in replay_capture("feed.pcap"):  # doctest: +SKIP
...     print(session, event)
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field

from .capture import CaptureReader, group_datagrams, is_moldudp64
from .events import Address, Event, Source
from .exceptions import CaptureError
from .receiver import ReceiverConfig, ReceiverCore
from .wire import HEADER_SIZE, encode_session

log = logging.getLogger(__name__)

__all__ = [
    "DEFAULT_LOSS_GRACE",
    "MAX_SESSIONS",
    "CaptureReplay",
    "SessionReplay",
    "replay_capture",
    "replay_datagrams",
]

#: Bound on the distinct sessions one replay tracks (each holds a receiver core).
MAX_SESSIONS = 256
#: How long (capture time, seconds) a core waits for a gap to be filled by a late or
#: re-requested packet before calling it lost: longer than a client's whole retry budget
#: (about 4.5 s), so a ``listen --capture`` file gives what ``listen -o`` wrote.
DEFAULT_LOSS_GRACE = 10.0

Batch = tuple[list[float], Address, Address, list[bytes]]


@dataclass
class SessionReplay:
    """One session of a replay: its core and what was seen of it."""

    name: str
    core: ReceiverCore
    endpoints: set[Address] = field(default_factory=set)  # destinations (at most 8)
    requests: int = 0  # a client's re-requests seen in the capture
    first_ts: float | None = None
    last_ts: float | None = None


class CaptureReplay:
    """Feeds recorded datagrams to one :class:`ReceiverCore` per session.

    ``session`` keeps one session (the others are counted in :attr:`other_sessions`);
    ``port`` keeps the datagrams from or to that UDP port (any session name goes there;
    without it only printable session names count as MoldUDP64), and counts the
    MoldUDP64 packets of a kept session on other ports in :attr:`answers_elsewhere`.
    Events go to ``on_events(session, events)`` as they come (every 512 datagrams and
    at the end of each feed), so memory stays bounded. ``tap(session, ts, payload)``
    sees each downstream datagram of a session before its core does. Call
    :meth:`finish` after the last datagram.
    """

    def __init__(
        self,
        on_events: Callable[[SessionReplay, list[Event]], None],
        *,
        session: str | None = None,
        port: int | None = None,
        loss_grace: float = DEFAULT_LOSS_GRACE,
        tap: Callable[[SessionReplay, float, bytes], None] | None = None,
    ) -> None:
        self.on_events = on_events
        self.only = None if session is None else encode_session(session)
        self.port = port
        self.loss_grace = loss_grace
        self.tap = tap
        self.printable_only = port is None
        self.sessions: dict[bytes, SessionReplay] = {}
        self.other_sessions: dict[bytes, int] = {}  #: packets per other session (bounded)
        self.other_sessions_unnamed = 0  #: packets of other sessions past the table's bound
        self.not_moldudp64 = 0
        self.too_many_sessions = 0  #: packets of sessions past MAX_SESSIONS
        self.datagrams = 0  #: UDP datagrams seen (before the port filter)
        self.other_port = 0  #: left out by the port filter
        self.answers_elsewhere = 0  #: of those: MoldUDP64 packets of a kept session
        self.now = 0.0  #: the clock: the latest timestamp seen

    def _new_session(self, raw: bytes, ts: float) -> SessionReplay | None:
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
        core = ReceiverCore(
            ReceiverConfig(
                expected_session_ident=raw,
                start_from_first_seen=True,
                rerequest_server_addrs=[],
                follow_session_changes=False,
                stale_after=None,
                loss_grace=self.loss_grace,
            )
        )
        found = SessionReplay(raw.decode("latin-1"), core, first_ts=ts, last_ts=ts)
        self.sessions[raw] = found
        return found

    def feed(self, datagrams: Iterable[tuple[float, Address, Address, bytes]]) -> None:
        """Feed ``(timestamp, src, dst, payload)`` datagrams in capture order."""
        self.feed_batches(group_datagrams(iter(datagrams)))

    def _elsewhere(self, payloads: list[bytes]) -> None:
        self.other_port += len(payloads)
        sessions = self.sessions
        for payload in payloads:
            raw = payload[:10]
            if (raw in sessions or raw == self.only) and is_moldudp64(
                payload, printable_session=False
            ):
                self.answers_elsewhere += 1

    def feed_batches(
        self, batches: Iterable[Batch], progress: Callable[[], None] | None = None
    ) -> None:
        """Feed ``(timestamps, src, dst, payloads)`` runs (:meth:`CaptureReader.batches`).

        The timestamps are the cores' clock (never going backwards); each core's timer is
        served before the next datagram is handed in, as the live client's loop does. The
        hot path: while a core has no timer set (and no tap), the in-order data packets of
        its session that follow are taken in one call
        (:meth:`ReceiverCore.receive_in_order`), which gives the same events as one call
        each (the arrival time they set matters only to staleness, not watched here).
        """
        sessions = self.sessions
        now = self.now
        n = 0
        line_a = Source.LINE_A
        port = self.port
        tap = self.tap
        current: SessionReplay | None = None
        raw = b""
        receive: Callable[..., object] | None = None
        take: Callable[..., int] | None = None
        get_timer: Callable[[], float | None] | None = None
        last_dst: Address | None = None
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
                        found = self._new_session(payload[:10], ts)
                        if found is None:
                            i += 1
                            continue
                    current = found
                    raw = payload[:10]
                    receive = found.core.receive_datagram
                    take = found.core.receive_in_order
                    get_timer = found.core.get_timer
                    last_dst = None
                assert receive is not None and take is not None and get_timer is not None
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
                if timer is None and tap is None:
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
                if tap is not None:
                    tap(current, ts, payload)
                receive(payload, line_a, now, src)
                i += 1
            if n >= 0x200:  # hand the events on (and let their messages go) as we go
                self._drain_all()
                if progress is not None and (since_progress := since_progress + n) >= 0x1000:
                    since_progress = 0
                    progress()
                n = 0
        self.now = now
        self._drain_all()

    def _drain_all(self) -> None:
        on_events = self.on_events
        for each in self.sessions.values():
            events = each.core.events_received()
            if events:
                on_events(each, events)

    def finish(self) -> None:
        """The capture is over: gaps still open are lost (their events are handed on)."""
        for each in self.sessions.values():
            each.core.finish(self.now)
        self._drain_all()


def replay_datagrams(
    datagrams: Iterable[tuple[float, Address, Address, bytes]],
    *,
    session: str | None = None,
    port: int | None = None,
    loss_grace: float = DEFAULT_LOSS_GRACE,
) -> Iterator[tuple[str, Event]]:
    """``(session name, event)`` for recorded ``(timestamp, src, dst, payload)``
    datagrams, as they come (see :class:`CaptureReplay` for the options).

    With ``port``, MoldUDP64 packets of a replayed session on other ports (re-request
    answers, as ``listen --capture`` records them) are left out, so the gaps they filled
    are reported lost: a warning is logged with their count before those events.
    """
    pending: list[tuple[str, Event]] = []

    def collect(each: SessionReplay, events: list[Event]) -> None:
        name = each.name
        pending.extend((name, event) for event in events)

    replay = CaptureReplay(collect, session=session, port=port, loss_grace=loss_grace)
    try:
        for batch in group_datagrams(iter(datagrams)):
            replay.feed_batches((batch,))
            yield from pending
            pending.clear()
    except CaptureError:  # damage: what came before it is replayed to the end, then raised
        replay.finish()
        _warn_left_out(replay)
        yield from pending
        raise
    replay.finish()
    _warn_left_out(replay)
    yield from pending


def _warn_left_out(replay: CaptureReplay) -> None:
    """Say what ``port`` left out that may be the data of gaps reported lost."""
    if replay.answers_elsewhere:
        log.warning(
            "port=%s left out %d MoldUDP64 packets of these sessions on other ports "
            "(re-request answers, as listen --capture records them): gaps they filled are "
            "reported lost; replay without port= to include them",
            replay.port,
            replay.answers_elsewhere,
        )


def replay_capture(
    path: str | os.PathLike[str],
    *,
    session: str | None = None,
    port: int | None = None,
    loss_grace: float = DEFAULT_LOSS_GRACE,
) -> Iterator[tuple[str, Event]]:
    """``(session name, event)`` for every session of a pcap or pcapng file, as they come.

    A damaged capture raises :class:`~moldudp64.exceptions.CaptureError` after the events
    of what came before the damage.
    """
    with CaptureReader(path) as reader:
        yield from replay_datagrams(
            reader.tuples(), session=session, port=port, loss_grace=loss_grace
        )
