"""Simulated-clock scaffolding shared by the session-switch and follow attacks.

Not a test module (pytest collects ``test_*.py`` only): tests/attack/test_session_switch_attack.py
and tests/attack/test_follow_attack.py import it as ``attack.switch_sim`` (``tests`` is on
``pythonpath`` in pyproject.toml). It holds real publishers (:class:`Publisher`), an honest
re-request server (:class:`Server`), a driver of one :class:`ReceiverCore` on a simulated
clock (:func:`simulate`, :func:`run`) and the checks both attacks make of what came out.
Every message's content names it (:func:`msg`), so a wrong byte delivered is caught.
The step loop itself, :func:`drive`, also drives tests/attack/test_pieces_attack.py's own
feeds and servers.
"""

from __future__ import annotations

import heapq
import itertools
from collections.abc import Callable
from dataclasses import dataclass, field

from moldudp64.events import (
    FeedResumed,
    FeedStale,
    MessagesAfterEnd,
    MessagesDelivered,
    MessagesLost,
    SessionChanged,
    SessionEnded,
    Source,
)
from moldudp64.receiver import ReceiverConfig, ReceiverCore
from moldudp64.wire import (
    RetransmissionPacket,
    build_end_of_session,
    build_heartbeat,
    build_packet,
)

SERVER = ("127.0.0.1", 9001)
SERVER2 = ("127.0.0.1", 9002)
STALE = 3.0  # ReceiverConfig.stale_after's default


def msg(session: str, seq: int) -> bytes:
    """The real message ``seq`` of ``session`` (its content names it)."""
    return f"{session}:{seq}".encode()


# --------------------------------------------------------------------------- the feed


@dataclass
class Publisher:
    """One real session: ``count`` messages, ``per_packet`` a datagram, one every ``dt``;
    its end of session repeated ``end_repeats`` times, 0.5 s apart."""

    session: str
    count: int
    start: float
    dt: float = 0.05
    per_packet: int = 3
    end: bool = True  # send end of session (repeated) after the last packet
    end_repeats: int = 4
    heartbeats_after: int = 0  # heartbeats (1 s apart) when it does not end
    lost: set[int] = field(default_factory=set)  # packet indices lost on the line
    shift: dict[int, float] = field(default_factory=dict)  # packet index -> delay
    end_lost: bool = False

    def packets(self) -> list[tuple[float, int, int]]:
        """(time, first seq, count) of every data packet."""
        out = []
        t = self.start
        for first in range(1, self.count + 1, self.per_packet):
            out.append((t, first, min(self.per_packet, self.count - first + 1)))
            t += self.dt
        return out

    def all_lost(self) -> Publisher:
        """Every data packet lost on the line: only the ends arrive."""
        self.lost = set(range(len(self.packets())))
        return self

    def published_by(self, now: float) -> int:
        """The highest sequence number sent by ``now`` (what a server holds)."""
        return max((f + n - 1 for t, f, n in self.packets() if t <= now), default=0)

    def last_sent(self) -> float:
        """When the publisher's last datagram (data or end) was sent."""
        return max(t for t, _ in self.schedule())

    def schedule(self) -> list[tuple[float, bytes]]:
        """(time, datagram) of what reaches line A: data not ``lost`` (``shift`` delays
        some), then the ends (unless ``end_lost``) or ``heartbeats_after`` heartbeats."""
        out = []
        pk = self.packets()
        for i, (t, first, n) in enumerate(pk):
            if i not in self.lost:
                msgs = [msg(self.session, s) for s in range(first, first + n)]
                out.append((t + self.shift.get(i, 0.0), build_packet(self.session, first, msgs)))
        t_last = pk[-1][0] if pk else self.start
        nxt = self.count + 1
        if self.end:
            if not self.end_lost:
                for k in range(self.end_repeats):
                    out.append((t_last + 0.2 + 0.5 * k, build_end_of_session(self.session, nxt)))
        else:
            for k in range(self.heartbeats_after):
                out.append((t_last + 1.0 + k, build_heartbeat(self.session, nxt)))
        return out


def merged(
    *pubs: Publisher, extra: list[tuple[float, bytes]] | None = None
) -> list[tuple[float, bytes]]:
    """The line: every publisher's schedule and ``extra`` datagrams, in time order."""
    line = [x for p in pubs for x in p.schedule()] + (extra or [])
    return sorted(line, key=lambda x: x[0])


def ends(
    session: str, seq: int, start: float, times: int, every: float
) -> list[tuple[float, bytes]]:
    """``times`` ends of session ``session`` at ``seq``, from ``start``, ``every`` apart."""
    return [(start + every * k, build_end_of_session(session, seq)) for k in range(times)]


def heartbeats(
    session: str, seq: int, start: float, times: int, every: float
) -> list[tuple[float, bytes]]:
    """``times`` heartbeats of ``session`` at ``seq``, from ``start``, ``every`` apart."""
    return [(start + every * k, build_heartbeat(session, seq)) for k in range(times)]


# --------------------------------------------------------------------------- the server


@dataclass
class Server:
    """An honest re-request server: answers from what the publishers sent so far, at most
    ``cap`` messages an answer; ``drop(session, seq, k)`` drops the k-th answer to seq."""

    addr: tuple[str, int]
    publishers: dict[str, Publisher]
    holds: set[str] | None = None  # sessions it holds (None: all)
    cap: int = 5  # messages per answer at most (answers may be partial)
    delay: float = 0.001
    delay_for: dict[str, float] = field(default_factory=dict)  # per session, else delay
    drop: Callable[[str, int, int], bool] = lambda s, q, k: False  # (session, seq, k-th ask)
    asked: dict[tuple[str, int], int] = field(default_factory=dict)
    requests: int = 0

    def answer(self, req: bytes, now: float) -> bytes | None:
        """The answer to request ``req`` at ``now``, or None (not held, or dropped)."""
        p = RetransmissionPacket.parse(req)
        self.requests += 1
        session = p.session_ident.strip()
        key = (session, p.seq_num)
        k = self.asked.get(key, 0)
        self.asked[key] = k + 1
        if self.holds is not None and session not in self.holds:
            return None
        pub = self.publishers.get(session)
        if pub is None:
            return None
        top = pub.published_by(now)
        if p.seq_num > top or self.drop(session, p.seq_num, k):
            return None
        last = min(top, p.seq_num + min(p.msg_count, self.cap) - 1)
        return build_packet(
            session, p.seq_num, [msg(session, s) for s in range(p.seq_num, last + 1)]
        )


def drop_first(k: int) -> Callable[[str, int, int], bool]:
    """Drop the first ``k`` answers to each (session, seq) asked."""
    return lambda s, q, n: n < k


# --------------------------------------------------------------------------- the driver


@dataclass
class Run:
    """What one simulated run produced: the events (also with their times), the line, the
    requests sent, and the peak of held plus unconfirmed packets."""

    events: list[object]
    timed: list[tuple[float, object]]
    line: list[tuple[float, bytes]]
    requests: list[tuple[float, str, int, int]]  # time, session, first seq, count
    core: ReceiverCore
    cfg: ReceiverConfig
    servers: list[Server]
    peak_held: int

    def of(self, kind: type) -> list[tuple[float, object]]:
        """(time, event) of the events of ``kind``."""
        return [(t, e) for t, e in self.timed if isinstance(e, kind)]

    def first_delivery(self, session: str) -> float | None:
        """When the first message of ``session`` was delivered."""
        return next(
            (t for t, e in self.of(MessagesDelivered) if e.session == session),  # type: ignore[attr-defined]
            None,
        )

    def last_delivery(self, session: str) -> float | None:
        """When the last message of ``session`` was delivered."""
        times = [t for t, e in self.of(MessagesDelivered) if e.session == session]  # type: ignore[attr-defined]
        return times[-1] if times else None


Address = tuple[str, int]


def drive(
    core: ReceiverCore,
    line: list[tuple[float, bytes]],
    until: float,
    answer: Callable[[float, bytes, Address], list[tuple[float, bytes]]],
    collect: Callable[[float], None],
    check: Callable[[float], None],
    *,
    drain: bool = False,
    max_steps: int = 200_000,
) -> int:
    """Drive ``core`` on a simulated clock until ``until``; return the steps taken.

    ``line`` is (time, datagram) arriving on line A, equal times in the order given. A
    step moves the clock to the next datagram or timer due, receives the datagram due
    (with ``drain``, every datagram due, and reads the timer again after them), handles
    the timer if due, calls ``collect(now)`` (with ``drain`` also before the requests are
    taken: the core merges deliveries still pending, so when events are taken is seen),
    and hands each request to ``answer(now, request, server)``, which returns the
    (arrival time, answer) datagrams to receive from that server; then ``check(now)``.
    After the last step the timer is handled at ``until`` and ``collect(until)`` called."""
    order = itertools.count()
    queue: list[tuple[float, int, bytes, Address | None]] = []
    for t, data in line:
        heapq.heappush(queue, (t, next(order), data, None))
    now = 0.0
    steps = 0
    while True:
        steps += 1
        assert steps <= max_steps, "simulation does not settle"
        timer = core.get_timer()
        due = [x for x in (timer, queue[0][0] if queue else None) if x is not None]
        if not due or min(due) > until:
            break
        now = max(now, min(due))
        while queue and queue[0][0] <= now:
            _, _, data, addr = heapq.heappop(queue)
            source = Source.LINE_A if addr is None else Source.RETRANSMISSION
            core.receive_datagram(data, source, now, addr=addr)
            if not drain:
                break
        if drain:
            timer = core.get_timer()
        if timer is not None and timer <= now:
            core.handle_timer(now)
        if drain:
            collect(now)
        out = core.datagrams_to_send(now)
        collect(now)
        for req, addr in out:
            for t, ans in answer(now, req, addr):
                heapq.heappush(queue, (t, next(order), ans, addr))
        check(now)
    core.handle_timer(until)
    collect(until)
    return steps


def simulate(
    line: list[tuple[float, bytes]],
    servers: list[Server],
    until: float,
    held_slack: int | None = 0,
    **config: object,
) -> Run:
    """:func:`drive` one core, datagrams one a step, requests answered by ``servers``.
    Checks the in-flight bound at every step, and the memory bounds (``max_held_packets``
    plus ``held_slack``, ``max_held_bytes``) unless ``held_slack`` is None."""
    cfg = ReceiverConfig(rerequest_server_addrs=[s.addr for s in servers], **config)  # type: ignore[arg-type]
    core = ReceiverCore(cfg)
    by_addr = {s.addr: s for s in servers}
    line = sorted(line, key=lambda x: x[0])
    timed: list[tuple[float, object]] = []
    requests: list[tuple[float, str, int, int]] = []
    peak = 0

    def answer(now: float, req: bytes, addr: Address) -> list[tuple[float, bytes]]:
        p = RetransmissionPacket.parse(req)
        requests.append((now, p.session_ident.strip(), p.seq_num, p.msg_count))
        srv = by_addr[addr]
        ans = srv.answer(req, now)
        if ans is None:
            return []
        return [(now + srv.delay_for.get(bytes(ans[:10]).decode().strip(), srv.delay), ans)]

    def collect(now: float) -> None:
        timed.extend((now, e) for e in core.events_received())

    def check(now: float) -> None:
        nonlocal peak
        stats = core.stats
        peak = max(peak, stats.held_packets + stats.unconfirmed_packets)
        if held_slack is not None:
            assert stats.held_packets <= cfg.max_held_packets + held_slack, stats.held_packets
            assert stats.held_bytes <= cfg.max_held_bytes, stats.held_bytes
        assert stats.requests_in_flight <= cfg.max_requests_in_flight, stats.requests_in_flight

    drive(core, line, until, answer, collect, check)
    return Run([e for _, e in timed], timed, line, requests, core, cfg, servers, peak)


def run(
    pubs: list[Publisher],
    extra: list[tuple[float, bytes]] | None = None,
    until: float = 60.0,
    drop: Callable[[str, int, int], bool] | None = None,
    server_delay: float = 0.001,
    held_slack: int = 0,
    **config: object,
) -> Run:
    """:func:`simulate` the line of ``pubs`` plus ``extra`` against one honest server."""
    line = [x for p in pubs for x in p.schedule()] + (extra or [])
    server = Server(SERVER, {p.session: p for p in pubs}, delay=server_delay)
    if drop is not None:
        server.drop = drop
    return simulate(line, [server], until, held_slack, **config)


# --------------------------------------------------------------------------- the checks


@dataclass
class Outcome:
    """Per session: what was delivered (in order), lost (ranges, reasons), after end."""

    delivered: dict[str, list[int]]
    lost: dict[str, list[tuple[int, int, str]]]
    after_end: dict[str, list[tuple[int, int]]]
    order: list[str]  # sessions in the order their first delivery/loss event came
    changes: list[tuple[str, str, int]]
    ended: list[str]


def outcome(events: list[object], forged: dict[tuple[str, int], bytes] | None = None) -> Outcome:
    """Sort ``events`` by session, checking every delivered message's bytes (the real
    one, or ``forged``'s) and that no session's deliveries or losses come back after
    another's."""
    forged = forged or {}
    out = Outcome({}, {}, {}, [], [], [])
    for e in events:
        if isinstance(e, MessagesDelivered):
            for i, m in enumerate(e.messages):
                s = e.seq_num + i
                want = forged.get((e.session, s), msg(e.session, s))
                assert bytes(m) == want, f"{e.session}:{s} delivered wrong bytes {bytes(m)!r}"
                out.delivered.setdefault(e.session, []).append(s)
        elif isinstance(e, MessagesLost):
            out.lost.setdefault(e.session, []).append((e.first_seq, e.last_seq, e.reason))
        elif isinstance(e, MessagesAfterEnd):
            out.after_end.setdefault(e.session, []).append((e.first_seq, e.last_seq))
        elif isinstance(e, SessionChanged):
            out.changes.append((e.old_session, e.new_session, e.seq_num))
        elif isinstance(e, SessionEnded):
            out.ended.append(e.session)
        if isinstance(e, (MessagesDelivered, MessagesLost)) and (
            not out.order or out.order[-1] != e.session
        ):
            assert e.session not in out.order, (
                f"session {e.session} spliced: {out.order} then {e.session}"
            )
            out.order.append(e.session)
    return out


def check_tiling(o: Outcome, session: str, count: int, after_end: bool = False) -> None:
    """Delivered and lost ranges of ``session`` tile 1..count in order, each number once
    (with ``after_end``, ranges named by MessagesAfterEnd count as named too)."""
    covered: list[int] = []
    seen = set()
    for s in o.delivered.get(session, []):
        assert s not in seen, f"{session}:{s} delivered twice"
        seen.add(s)
    lost = o.lost.get(session, [])
    nums = sorted(list(seen) + [s for a, b, _ in lost for s in range(a, b + 1)])
    if after_end:
        nums = sorted(nums + [s for a, b in o.after_end.get(session, []) for s in range(a, b + 1)])
    covered = nums
    assert covered == list(range(1, count + 1)), (
        f"{session}: delivered+lost do not tile 1..{count}: missing "
        f"{sorted(set(range(1, count + 1)) - set(covered))[:20]} lost={lost}"
    )
    assert o.delivered.get(session, []) == sorted(o.delivered.get(session, []))


def assert_all_delivered(o: Outcome, session: str, count: int) -> None:
    """Every message 1..count of ``session`` delivered once, in order, none lost."""
    assert o.lost.get(session, []) == [], f"{session}: reported lost {o.lost[session]}"
    assert o.delivered.get(session, []) == list(range(1, count + 1)), (
        f"{session}: delivered {len(o.delivered.get(session, []))} of {count}; missing "
        f"{sorted(set(range(1, count + 1)) - set(o.delivered.get(session, [])))[:20]}"
    )


def delivered(r: Run, session: str) -> list[int]:
    """Sequence numbers of ``session`` delivered, in event order; checks the bytes."""
    out: list[int] = []
    for _, e in r.of(MessagesDelivered):
        if e.session == session:  # type: ignore[attr-defined]
            for i, m in enumerate(e.messages):  # type: ignore[attr-defined]
                seq = e.seq_num + i  # type: ignore[attr-defined]
                assert bytes(m) == msg(session, seq), f"{session}:{seq} wrong bytes {bytes(m)!r}"
                out.append(seq)
    return out


def lost(r: Run, session: str) -> list[tuple[int, int, str]]:
    """(first, last, reason) of every range of ``session`` reported lost."""
    return [
        (e.first_seq, e.last_seq, e.reason)  # type: ignore[attr-defined]
        for _, e in r.of(MessagesLost)
        if e.session == session  # type: ignore[attr-defined]
    ]


def order(r: Run) -> list[str]:
    """Sessions in the order their deliveries/losses came; a session never comes back."""
    out: list[str] = []
    for e in r.events:
        if isinstance(e, MessagesDelivered | MessagesLost) and (not out or out[-1] != e.session):
            assert e.session not in out, f"session {e.session} spliced: {out}"
            out.append(e.session)
    return out


def assert_whole(r: Run, session: str, count: int) -> None:
    """Every message 1..count of ``session`` delivered once, in order, none lost."""
    assert lost(r, session) == [], f"{session}: reported lost {lost(r, session)}"
    got = delivered(r, session)
    assert got == list(range(1, count + 1)), (
        f"{session}: delivered {len(got)} of {count}; missing "
        f"{sorted(set(range(1, count + 1)) - set(got))[:20]}"
    )


def assert_tiled(r: Run, session: str, count: int, lost_from: int) -> None:
    """``session`` delivered in order, each number once; what is not delivered is named
    lost; only numbers >= ``lost_from`` (no real data reached them) are named lost."""
    got = delivered(r, session)
    ranges = lost(r, session)
    nums = sorted(got + [s for a, b, _ in ranges for s in range(a, b + 1)])
    assert got == sorted(set(got)), f"{session}: delivered out of order or twice"
    assert nums[:count] == list(range(1, count + 1)), (
        f"{session}: delivered+lost do not cover 1..{count}: lost={ranges}"
    )
    assert all(a >= lost_from for a, _, _ in ranges), f"{session}: real data lost {ranges}"


def check_stale(
    r: Run,
    sessions: set[str],
    stale_after: float = STALE,
    late: float = 0.25,
    require: bool = True,
) -> None:
    """``FeedStale`` and ``FeedResumed`` alternate; a ``FeedStale`` comes only after
    ``stale_after`` without a datagram of ``sessions`` (those followed or waiting); a
    ``FeedResumed`` only when one arrives; with ``require``, every silence longer than
    ``stale_after`` raises one at most ``late`` after ``stale_after``."""
    times = sorted(t for t, d in r.line if d[:10].decode().strip() in sessions)
    marks = [(t, e) for t, e in r.timed if isinstance(e, FeedStale | FeedResumed)]
    for (_, e1), (_, e2) in itertools.pairwise(marks):
        assert type(e1) is not type(e2), f"two {type(e1).__name__} in a row: {marks}"
    if marks:
        assert isinstance(marks[0][1], FeedStale), marks
    for t, e in marks:
        before = [x for x in times if x <= t + 1e-9]
        if isinstance(e, FeedStale):
            assert before, f"FeedStale at {t} before any datagram"
            assert t - before[-1] >= stale_after - 1e-6, (
                f"FeedStale at {t:.3f}, a datagram arrived at {before[-1]:.3f}"
            )
        else:
            assert before and abs(before[-1] - t) < 1e-6, (
                f"FeedResumed at {t:.3f} without a datagram"
            )
    if not require:
        return
    # Every silence of stale_after is reported, in time.
    stale_at = [t for t, e in marks if isinstance(e, FeedStale)]
    for x, y in itertools.pairwise([*times, r.timed[-1][0]]):
        if y - x > stale_after + late:
            assert any(x + stale_after - 1e-6 <= t <= x + stale_after + late for t in stale_at), (
                f"silent from {x:.3f} to {y:.3f}: FeedStale at {stale_at}, wanted at "
                f"{x + stale_after:.3f}"
            )
