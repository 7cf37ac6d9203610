"""attack9: a stranger's attack on the receiver's promise with honest hardships only (issue 18).

No forged datagram anywhere: every datagram below is one a real publisher sent or a real
server answered. What a real network and real servers do to them, combined: loss and bursts
of loss on either line, outages of seconds, a late join, a lost first burst, a lost tail, the
end of session's copies mostly lost (one arrives), reordering, duplicates, slow (up to
``max_request_timeout``), lossy, lagging (zero-count answers) or dead servers, servers that
die midway, sessions back to back (close together or with gaps), tiny sessions, a clock that
jumps. The promise for honest streams is strict: every message delivered exactly once in
order, or reported lost only when it never arrived on a line and no working server holds it;
nothing dropped unnamed; every session with a real end ends in bounded time (``BOUND``
below); requests bounded. Runs on attack3's simulated clock (``drive``).
"""

from __future__ import annotations

import math
import random
from collections.abc import Callable

import pytest

from attack.test_data_wins_attack3 import (
    HONEST,
    OTHER,
    A,
    B,
    Dead,
    Dies,
    Lagging,
    Outcome,
    Publisher,
    Server,
    after_end,
    check_tiles,
    delivered,
    drive,
    ended,
    lost,
    real,
)
from moldudp64.events import Source
from moldudp64.receiver import ReceiverConfig, ReceiverCore

C = "CCCCCCCCCC"
#: How long after a session's last real datagram (data or end copy) it must have ended.
#: The end's quiet (``end_confirm``, 2.5 s) plus a gap's full run of attempts (0.05 s
#: doubling to ``max_request_timeout`` 1 s, 8 attempts: 4.55 s) plus the one more attempt
#: with the longest timeout the README grants once the feed passed a gap (1 s), plus one
#: ``max_request_timeout`` for a server as slow as the timeouts allow: 9.05 s. Rounded up
#: to 12 s for scheduling slack; a session still open after that waits on nothing the
#: README names.
BOUND = 12.0

LineItem = tuple[float, bytes, Source, "tuple[str, int] | None"]


def lines(
    pubs: list[Publisher],
    seed: int = 0,
    loss_a: float = 0.0,
    loss_b: float | None = None,
    out_a: list[tuple[float, float]] = (),  # type: ignore[assignment]
    out_b: list[tuple[float, float]] = (),  # type: ignore[assignment]
    ends_kept: int | None = None,
    reorder: float = 0.0,
    dups: float = 0.0,
    join: float = 0.0,
) -> list[LineItem]:
    """Every publisher's datagrams on line A and a copy 2 ms later on line B, minus random
    loss (``loss_a``/``loss_b``, per datagram and line) and outages (``out_*``: (from, to)
    times a line carries nothing); ``ends_kept``: of each session's end copies only the
    first that many reach either line (the others lost on both); ``reorder``: that share of
    datagrams comes 3-30 ms late; ``dups``: that share comes twice on its line; nothing
    before ``join`` (the receiver starts late)."""
    rnd = random.Random(seed)
    loss_b = loss_a if loss_b is None else loss_b
    out: list[LineItem] = []
    for p in pubs:
        sched = p.schedule()
        n_ends = sum(1 for _, d in sched if int.from_bytes(d[18:20], "big") == 0xFFFF)
        end_i = 0
        for t, data in sched:
            if int.from_bytes(data[18:20], "big") == 0xFFFF:
                end_i += 1
                if ends_kept is not None and end_i > ends_kept:
                    continue
            for line, loss, outs, lag in (
                (Source.LINE_A, loss_a, out_a, 0.0),
                (Source.LINE_B, loss_b, out_b, 0.002),
            ):
                at = t + lag
                if at < join or any(x <= at < y for x, y in outs) or rnd.random() < loss:
                    continue
                if rnd.random() < reorder:
                    at += rnd.uniform(0.003, 0.03)
                out.append((at, data, line, None))
                if rnd.random() < dups:
                    out.append((at + rnd.uniform(0.0, 0.01), data, line, None))
        del n_ends
    return out


def arrived(o: Outcome, s: str) -> set[int]:
    return {n for (name, n) in o.on_line if name == s}


def last_sent(line: list[LineItem], s: str) -> float:
    return max(t for t, d, _, _ in line if d[:10].decode().strip() == s)


def whole(o: Outcome, p: Publisher, by: float) -> None:
    """``p``'s session delivered whole, once, in order, nothing lost, ended at its real end
    by ``by``."""
    s = p.session
    check_tiles(o, after_once=True)
    got = [n for n, _, _ in delivered(o, s)]
    assert real(o, s) == got == list(range(1, p.count + 1)), (
        f"{s}: delivered {len(got)} of {p.count}; lost {lost(o, s)[:4]} "
        f"after_end {after_end(o, s)[:4]}"
    )
    assert not lost(o, s) and not after_end(o, s), (lost(o, s)[:4], after_end(o, s)[:4])
    e = ended(o, s)
    assert [n for _, n in e] == [p.count + 1], f"{s}: ended {e}, real end {p.count + 1}"
    assert e[0][0] <= by, f"{s}: ended at {e[0][0]:.2f} s, allowed until {by:.2f} s"


def honest(o: Outcome, p: Publisher, held: Callable[[int], bool], by: float) -> None:
    """``p``'s session: what arrived on a line or ``held(n)`` by a working server is
    delivered once in order, the rest reported lost (with its range), nothing else; it
    ends at its real end by ``by``."""
    s = p.session
    check_tiles(o, after_once=True)
    got = [n for n, _, _ in delivered(o, s)]
    assert real(o, s) == got, f"{s}: wrong bytes delivered"
    lost_n = sorted({n for a, b, _ in lost(o, s) for n in range(a, min(b, p.count) + 1)})
    on = arrived(o, s)
    bad = [n for n in lost_n if n in on or held(n)]
    assert not bad, f"{s}: reported lost though it arrived/was held: {bad[:8]} ({len(bad)})"
    assert sorted(got + lost_n) == list(range(1, p.count + 1)), (
        f"{s}: {p.count - len(got) - len(lost_n)} numbers neither delivered nor lost; "
        f"lost {lost(o, s)[:4]} after_end {after_end(o, s)[:4]}"
    )
    assert not after_end(o, s), after_end(o, s)[:4]
    e = ended(o, s)
    assert [n for _, n in e] == [p.count + 1], f"{s}: ended {e}, real end {p.count + 1}"
    assert e[0][0] <= by, f"{s}: ended at {e[0][0]:.2f} s, allowed until {by:.2f} s"


def bounded(o: Outcome, most: int) -> None:
    assert len(o.requests) <= most, f"{len(o.requests)} requests (bound {most})"


# ----------------------------------------------------------- a session seen through its ends


def _ends_only(count: int, server: str) -> tuple[Outcome, Publisher]:
    """C (``count`` messages, one a datagram every 1 ms from 0.5 s) whose every data
    datagram is lost on both lines (an outage), its real end repeated 4 times (0.5 s
    apart) arriving on both lines; ``server``: none, a dead one, or an honest one."""
    c = Publisher(C, count, 0.5, dt=0.001, per_packet=1).all_lost()
    servers = {
        "none": [],
        "dead": [Dead(HONEST, {C: c})],
        "honest": [Server(HONEST, {C: c}, cap=40)],
    }
    return drive(lines([c]), servers[server], 80.0), c


@pytest.mark.parametrize("count", [1, 3, 2048])
@pytest.mark.parametrize("server", ["none", "dead", "honest"])
def test_a_session_seen_through_its_ends_alone_is_named_and_ends(count: int, server: str) -> None:
    """Holds: every number the end announces is recovered or reported lost, and it ends."""
    o, c = _ends_only(count, server)
    if server == "honest":
        whole(o, c, last_sent(lines([c]), C) + BOUND)
    else:
        honest(o, c, lambda n: False, last_sent(lines([c]), C) + BOUND)


@pytest.mark.xfail(
    strict=True,
    reason="attack9 defect 1: C = 2049 (or 3000, 6000) messages, one a datagram every 1 ms "
    "from 0.5 s, every data datagram lost on both lines; its 4 real ends (2050, at 2.75, "
    "3.25, 3.75, 4.25 s, on A and on B 2 ms later) all arrive; no server or a dead one: "
    "after SessionStarted and GapDetected 1..1024 nothing more, ever (80 s): no "
    "MessagesLost for 1..2049, no SessionEnded (2048 messages: lost 1..2048 and ended "
    "at 7.75 s). README: 'a real end behind a large gap still ends the session, also its "
    "last datagram after a long outage with no server'.",
)
@pytest.mark.parametrize("count", [2049, 6000])
@pytest.mark.parametrize("server", ["none", "dead"])
def test_a_large_session_seen_through_its_ends_alone_with_no_working_server(
    count: int, server: str
) -> None:
    o, c = _ends_only(count, server)
    honest(o, c, lambda n: False, last_sent(lines([c]), C) + BOUND)


# ----------------------------------------------------------- a server that dies midway


def _gappy(dies_at: float) -> tuple[Outcome, Publisher, float]:
    """C (6,000 messages, one a datagram every 1 ms from 0.5 s, on line A only) losing
    every tenth datagram (indices 5, 15, 25, ...: 600 one-message gaps), its 4 ends (6001,
    at 6.70..8.20 s) arriving; one honest server (40 an answer) that stops answering at
    ``dies_at``."""
    lost_i = {i for i in range(6000) if i % 10 == 5}
    c = Publisher(C, 6000, 0.5, dt=0.001, per_packet=1, lost=lost_i)
    line: list[LineItem] = [(t, d, Source.LINE_A, None) for t, d in c.schedule()]
    o = drive(line, [Dies(HONEST, {C: c}, cap=40, dies_at=dies_at)], 200.0)
    return o, c, c.last_sent()


def test_a_server_dead_from_the_start_costs_bounded_time_and_requests() -> None:
    """Holds: the gaps it never answered are reported lost, C ends by its last end + BOUND,
    a few hundred requests (187)."""
    o, c, last = _gappy(0.0)
    honest(o, c, lambda n: False, last + BOUND)
    bounded(o, 1000)


@pytest.mark.xfail(
    strict=True,
    reason="attack9 defect 2: C = 6,000 messages, one a datagram every 1 ms from 0.5 s on "
    "line A only, every tenth datagram lost (indices 5, 15, ...: 600 one-message gaps), 4 "
    "real ends 6001 at 6.70..8.20 s; one honest server (40 an answer) that stops "
    "answering at 1.0 s (3.0 s, 5.0 s alike): ServerDisabled at 2.59 s, yet every gap "
    "still gets its 8 attempts at the dead server, 32 at a time: 4,450 requests, C ends "
    "at 82.96 s (74.8 s after its last end; dies at 3.0 s: 3,050 requests, ends at "
    "53.3 s). The same server dead from the start: 187 requests, ends at 10.63 s.",
)
@pytest.mark.parametrize("dies_at", [1.0, 3.0])
def test_a_server_that_dies_midway_costs_bounded_time_and_requests(dies_at: float) -> None:
    o, c, last = _gappy(dies_at)
    honest(o, c, lambda n: False, last + BOUND)
    bounded(o, 1000)


# ----------------------------------------------------------- a clock that jumps


class _Jumping:
    """A ReceiverCore whose driver's clock jumps by ``by`` seconds at true time ``at``
    (an NTP step of a wall clock): every ``now`` it is given is the true time plus the
    jump once past ``at``; its timers are read back on the true clock."""

    def __init__(self, cfg: ReceiverConfig, at: float, by: float) -> None:
        self.core = ReceiverCore(cfg)
        self.at, self.by = at, by
        self.off = 0.0

    def _c(self, now: float) -> float:
        self.off = self.by if now >= self.at else 0.0
        return now + self.off

    def receive_datagram(
        self, data: bytes, source: Source, now: float, addr: object = None
    ) -> None:
        self.core.receive_datagram(data, source, self._c(now), addr=addr)  # type: ignore[arg-type]

    def handle_timer(self, now: float) -> None:
        self.core.handle_timer(self._c(now))

    def datagrams_to_send(self, now: float) -> object:
        return self.core.datagrams_to_send(self._c(now))

    def get_timer(self) -> float | None:
        t = self.core.get_timer()
        if t is None:
            return None
        true = t - self.off
        if self.off == 0.0 and true >= self.at:
            true = max(self.at, t - self.by)
        while (
            true + (self.by if true >= self.at else 0.0) < t
        ):  # float rounding: never wake the core before its timer
            true = math.nextafter(true, math.inf)
        return true

    def events_received(self) -> object:
        return self.core.events_received()

    @property
    def stats(self) -> object:
        return self.core.stats


def _jumped(
    monkeypatch: pytest.MonkeyPatch,
    pubs: list[Publisher],
    at: float,
    by: float,
    servers: list[Server],
    until: float,
    **kw: object,
) -> Outcome:
    import attack.test_data_wins_attack3 as a3

    monkeypatch.setattr(a3, "ReceiverCore", lambda cfg: _Jumping(cfg, at, by))
    return drive(lines(pubs, **kw), servers, until)  # type: ignore[arg-type]


@pytest.mark.parametrize("by", [-50.0, -1.0, 60.0])
@pytest.mark.parametrize("at", [1.0, 2.2])
def test_a_clock_that_jumps_mid_feed_costs_no_data_and_no_time(
    monkeypatch: pytest.MonkeyPatch, at: float, by: float
) -> None:
    """Holds: A (3,000 messages, 3 a datagram every 1 ms from 0.5 s) then B (300, from
    0.3 s after A's last end), 10 % loss on each line; a server that drops the first two
    answers to each number; the driver's clock steps by ``by`` at ``at`` (mid-feed, or
    among A's ends): both delivered whole and ended within BOUND of their last datagram."""
    from attack.switch_sim import drop_first

    a = Publisher(A, 3000, 0.5, dt=0.001, per_packet=3)
    b = Publisher(B, 300, a.last_sent() + 0.3, dt=0.01, per_packet=3)
    pm = {A: a, B: b}
    kw = {"seed": 1, "loss_a": 0.1, "loss_b": 0.1}
    o = _jumped(
        monkeypatch, [a, b], at, by, [Server(HONEST, pm, cap=40, drop=drop_first(2))], 200.0, **kw
    )
    line = lines([a, b], **kw)  # type: ignore[arg-type]
    whole(o, a, last_sent(line, A) + BOUND)
    whole(o, b, last_sent(line, B) + BOUND)


# ----------------------------------------------------------- everything at once


@pytest.mark.parametrize("gap", [0.05, 3.0])
@pytest.mark.parametrize("second", ["honest", "lagging", "slow"])
def test_tiny_and_large_sessions_back_to_back_through_loss_outage_and_a_dying_server(
    gap: float, second: str
) -> None:
    """Holds: A (2 messages), B (1,500, 3 a datagram every 10 ms), C (1) back to back
    ``gap`` apart; 5 % loss on each line, both lines out for 3 s in B's middle, of each
    session's ends only the first arrives, 10 % of datagrams 3-30 ms late, 10 % twice;
    one server dies in B's middle, a second one is honest, lagging 1 s (zero-count
    answers), or slow (0.99 s): all three delivered whole, each ended within BOUND of
    its last datagram (B: plus the outage's fetch at 40 an answer)."""
    a = Publisher(A, 2, 0.5, dt=0.05, per_packet=1)
    b = Publisher(B, 1500, a.last_sent() + gap, dt=0.01, per_packet=3)
    c = Publisher(C, 1, b.last_sent() + gap, dt=0.01, per_packet=1)
    pm = {A: a, B: b, C: c}
    mid = b.start + 2.0
    kw: dict[str, object] = dict(
        seed=7,
        loss_a=0.05,
        out_a=[(mid, mid + 3)],
        out_b=[(mid, mid + 3)],
        ends_kept=1,
        reorder=0.1,
        dups=0.1,
    )
    sec = {
        "honest": Server(OTHER, pm, cap=40),
        "lagging": Lagging(OTHER, pm, cap=40, lag=1.0),
        "slow": Server(OTHER, pm, cap=40, delay=0.99),
    }[second]
    line = lines([a, b, c], **kw)  # type: ignore[arg-type]
    o = drive(line, [Dies(HONEST, pm, cap=40, dies_at=mid + 1), sec], 120.0)
    for p in (a, b, c):
        whole(o, p, last_sent(line, p.session) + BOUND)
    bounded(o, 2000)


@pytest.mark.xfail(
    strict=True,
    reason="attack9 defect 1 through a late join: A = 3,000 messages, 10 a datagram every "
    "1 ms from 0.5 s (its data 0.5..0.799 s), 4 real ends 3001 at 1.0, 1.5, 2.0, 2.5 s "
    "(line B a copy 2 ms later); the receiver joins at 0.9 s (all 4 ends arrive) or 1.59 "
    "s (the last 2), no server: nothing after SessionStarted/GapDetected 1..1024, no "
    "MessagesLost, no SessionEnded in 80 s. 2,048 messages: lost 1..2048, ended at "
    "5.90 s / 6.90 s.",
)
@pytest.mark.parametrize("join", [0.9, 1.59])
def test_a_late_join_after_all_data_of_a_large_session_with_no_server(join: float) -> None:
    a = Publisher(A, 3000, 0.5, dt=0.001, per_packet=10)
    line = lines([a], join=join)
    o = drive(line, [], 80.0)
    honest(o, a, lambda n: False, last_sent(line, A) + BOUND)


@pytest.mark.parametrize("join", [0.9, 1.59])
def test_a_late_join_after_all_data_of_a_2048_message_session_with_no_server(
    join: float,
) -> None:
    """Holds (the baseline of the xfail above): 2,048 messages, the same join."""
    a = Publisher(A, 2048, 0.5, dt=0.001, per_packet=10)
    line = lines([a], join=join)
    o = drive(line, [], 80.0)
    honest(o, a, lambda n: False, last_sent(line, A) + BOUND)


@pytest.mark.parametrize("server", ["honest", "slow", "lagging", "none", "dead"])
def test_a_lost_tail_beyond_the_window_with_one_end_copy(server: str) -> None:
    """Holds: A (3,000 messages, one a datagram every 1 ms from 0.5 s) whose 1451..3000
    are lost on both lines, of its ends only the first arrives (3001 at 3.70 s): with a
    working server (honest, slow at exactly ``max_request_timeout``, lagging 1 s) A is
    whole; with none or a dead one 1451..3000 are reported lost; it ends within BOUND of
    that end (a slow server: plus 1 s an answer of 40)."""
    a = Publisher(A, 3000, 0.5, dt=0.001, per_packet=1, lost=set(range(1450, 3000)))
    pm = {A: a}
    servers = {
        "honest": [Server(HONEST, pm, cap=40)],
        "slow": [Server(HONEST, pm, cap=40, delay=1.0)],
        "lagging": [Lagging(HONEST, pm, cap=40, lag=1.0)],
        "none": [],
        "dead": [Dead(HONEST, pm)],
    }[server]
    line = lines([a], ends_kept=1)
    o = drive(line, servers, 120.0)
    by = last_sent(line, A) + BOUND
    if server in ("none", "dead"):
        honest(o, a, lambda n: False, by)
    else:
        whole(o, a, by + (1550 / 40 if server == "slow" else 0.0))
    bounded(o, 1000)
