"""Hostile tests of which session the receiver core follows, and when (issue 18, "data wins").

Attacks the documented behaviour only (README.md, "What the receiver believes": the bullets
"End of session", "Sessions", "Answers", the paragraph "What it cannot know without
authentication" and the ``FeedStale`` paragraph), not receiver.py nor its tests:

- a real session whose data were all lost on the line (only its repeated ends arrive), at
  the start, between two sessions, two or three in a row: followed, its 1..N-1 asked from
  the honest server, delivered whole;
- forged sessions of ends alone (repeated, N up to 2**64-1, forever, with heartbeats,
  with a changing N) after a real session ended, before a real ends-only one, while the
  real one idles: a real session B with data that comes meanwhile is delivered whole,
  after a bounded delay, and requests for numbers beyond any real feed stay bounded;
- forged ends of the followed session racing its real end ("of two ends ...");
- ``FeedStale`` / ``FeedResumed``: raised when, and only when, the whole feed is silent;
- memory bounds (``max_held_packets`` / ``max_held_bytes`` small) during all of that;
- a derandomized hypothesis property mixing them.

The promise checked: every real message that arrives on a line or that the honest server
holds is delivered exactly once and in order, or reported lost with its range; lost
ranges only name numbers no real data reached; every missing number is named.

The scaffolding (Publisher, Server, a simulated-clock driver, the checks) is shared with
tests/attack/test_session_switch_attack.py in tests/attack/switch_sim.py.
"""

from __future__ import annotations

import itertools
import time

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from attack.switch_sim import (
    SERVER,
    Publisher,
    Server,
    assert_tiled,
    assert_whole,
    check_stale,
    delivered,
    drop_first,
    ends,
    heartbeats,
    lost,
    msg,
    order,
    run,
    simulate,
)
from client_support import (
    SESSION,
    Repeater,
    Responder,
    end_of_session,
    free_udp_port,
    make_messages,
    sender,
)
from linksim import Faults, LinkSim, messages
from moldudp64.events import (
    DatagramDropped,
    FeedResumed,
    FeedStale,
    Message,
    MessagesAfterEnd,
    SessionChanged,
    SessionEnded,
    Source,
)
from moldudp64.receiver import ReceiverConfig
from moldudp64.sync.client import MoldUDP64
from moldudp64.wire import (
    build_end_of_session,
    build_packet,
)

A = "AAAAAAAAAA"
B = "BBBBBBBBBB"
C = "CCCCCCCCCC"
F = "FFFFFFFFFF"  # the forger's session: ends (and heartbeats) only, never data
#: How long a session of ends alone may hold up a real one: its requests' attempts and
#: timeouts (0.05 s doubling to 1 s, 8 attempts: 4.55 s) plus the wait for its evidence.
FOLLOW_DELAY = 10.0


# --------------------------------------------------------------------------- ends alone, real


def test_ends_only_session_at_start_recovered_whole() -> None:
    """A's data all lost on the line, only its four ends arrive (at the start): A is
    followed and its 30 messages asked for; the honest server has them all."""
    a = Publisher(A, 30, 0.0).all_lost()
    r = run([a])
    assert_whole(r, A, 30)
    assert [e.next_seq_num for _, e in r.of(SessionEnded)] == [31]  # type: ignore[attr-defined]


def test_ends_only_session_between_two_data_sessions() -> None:
    """A with data ends; B's data all lost (its ends arrive after A ended); C with data
    starts 2 s after B's last end: A, B (from the server), C, each whole, in order."""
    a = Publisher(A, 30, 0.0)
    b = Publisher(B, 30, a.last_sent() + 1.0).all_lost()
    c = Publisher(C, 30, b.last_sent() + 2.0)
    r = run([a, b, c])
    for p in (a, b, c):
        assert_whole(r, p.session, 30)
    assert order(r) == [A, B, C]


def test_three_ends_only_sessions_in_a_row() -> None:
    """Three sessions in a row whose data were all lost: each one's ends alone; each is
    followed in turn and recovered whole from the server."""
    a = Publisher(A, 30, 0.0).all_lost()
    b = Publisher(B, 30, 3.0).all_lost()
    c = Publisher(C, 30, 6.0).all_lost()
    r = run([a, b, c])
    for p in (a, b, c):
        assert_whole(r, p.session, 30)
    assert order(r) == [A, B, C]


def test_three_ends_only_sessions_overlapping() -> None:
    """Three ends-only sessions whose ends interleave (each starts 0.5 s after the last):
    all three whole, in line order; memory bound small."""
    a = Publisher(A, 30, 0.0).all_lost()
    b = Publisher(B, 30, 0.5).all_lost()
    c = Publisher(C, 30, 1.0).all_lost()
    r = run([a, b, c], max_held_packets=8)
    for p in (a, b, c):
        assert_whole(r, p.session, 30)
    assert order(r) == [A, B, C]


def test_ends_only_session_followed_late_recovers_whole_while_next_is_live() -> None:
    """An unlucky real feed, no forger: A's last 24 messages lost on the line, the honest
    server slow (it drops the first four answers to each number asked), so A ends only at
    6.99 s. M, starting 1 s after A's last end, lost all its data: its four ends (4.3..5.8 s)
    say 1..30 exist. B with data starts at 7.8 s. M is followed at 6.99 s and its numbers
    come back five at a time; M's requests are never out of attempts. A, M and B whole,
    in that order: M's 11..30, which the server holds, are not "session changed"."""
    a = Publisher(A, 60, 0.0, lost=set(range(12, 20)))
    m = Publisher(C, 30, a.last_sent() + 1.0).all_lost()
    b = Publisher(B, 12, m.last_sent() + 2.0)
    r = run([a, m, b], drop=drop_first(4), server_delay=0.01)
    assert_whole(r, A, 60)
    assert_whole(r, C, 30)
    assert_whole(r, B, 12)
    assert order(r) == [A, C, B]


def test_ends_only_session_followed_after_forged_one_recovers_whole() -> None:
    """The same through a forger: F's end at 2 (two copies at 0 s, one at 2 s) is followed
    after A (12 messages) ends and holds the receiver until 7.4 s; M's ends (5.0..6.5 s)
    arrive meanwhile; B with data starts at 7.5 s. M, followed at 7.4 s, answered by the
    slow honest server (first three answers to each number dropped), is delivered whole."""
    a = Publisher(A, 12, 0.0)
    m = Publisher(C, 30, a.last_sent() + 2.5).all_lost()
    b = Publisher(B, 12, m.last_sent() + 1.0)
    forged = ends(F, 2, 0.0, 1, 0.5) * 2 + ends(F, 2, 2.0, 1, 0.5)
    r = run([a, m, b], forged, drop=drop_first(3), server_delay=0.01)
    assert_whole(r, A, 12)
    assert_whole(r, C, 30)
    assert_whole(r, B, 12)


def test_ends_only_session_at_start_ends_before_next_session() -> None:
    """A's data all lost; its four ends (0.65..2.15 s) arrive, then nothing of A; B with
    data starts at 5.0 s, 2.85 s after A's last end (more than ``end_confirm``). A is
    recovered whole and, its end repeated and then the feed quiet for ``end_confirm``,
    ended: SessionEnded(A, 31) comes before the SessionChanged to B."""
    a = Publisher(A, 30, 0.0).all_lost()
    b = Publisher(B, 30, 5.0)
    r = run([a, b])
    assert_whole(r, A, 30)
    assert_whole(r, B, 30)
    kinds = [
        (type(e).__name__, getattr(e, "session", getattr(e, "new_session", None)))
        for _, e in r.timed
        if isinstance(e, SessionEnded | SessionChanged)
    ]
    assert kinds[:2] == [("SessionEnded", A), ("SessionChanged", B)], kinds


def test_linksim_session_whose_data_all_lost_between_two() -> None:
    """LinkSim: A on a lossy line; B published while line A drops everything (its end
    sent reliably); C on a lossy line. Each delivered exactly, in order, none lost."""
    sim = LinkSim(
        ReceiverConfig(rerequest_server_addrs=[SERVER]),
        session=A,
        seed=7,
        line_a=Faults(drop=0.1, reorder=0.1),
        heartbeat_interval=None,
    )
    sim.publish(messages(200))
    sim.end_session(reliable=True)
    sim.settle(30.0)
    sim.new_session(B)
    sim.line_a = Faults(drop=1.0)
    sim.publish(messages(120))
    sim.end_session()
    sim.line_a = Faults(drop=0.1, reorder=0.1)
    sim.end_session(reliable=True)
    sim.run(1.0)
    sim.inject(build_end_of_session(B, 121), Source.LINE_A, delay=0.5)
    sim.settle(30.0)
    sim.new_session(C)
    sim.publish(messages(200))
    sim.end_session(reliable=True)
    sim.settle(60.0)
    for name in (A, B, C):
        assert sim.check_exact(name) == [], name


# --------------------------------------------------------------------------- forged ends alone


@pytest.mark.parametrize("n", [10**9, 2**63, 2**64 - 1])
def test_forged_ends_after_real_end_then_b_delivered_whole(n: int) -> None:
    """A ends; a forger repeats an end of F at ``n`` six times (it is followed, as the
    README accepts); real B with data starts 8 s in: B whole, its first message delivered
    within a bounded delay; F's requests are bounded and never beyond one window."""
    a = Publisher(A, 30, 0.0)
    b = Publisher(B, 60, 8.0)
    r = run([a, b], ends(F, n, 3.3, 6, 0.3))
    assert_whole(r, A, 30)
    assert_whole(r, B, 60)
    first = r.first_delivery(B)
    assert first is not None and first <= 8.0 + FOLLOW_DELAY, first
    f_reqs = [x for x in r.requests if x[1] == F]
    assert len(f_reqs) <= 2 * r.cfg.max_request_attempts, len(f_reqs)
    assert all(first + count - 1 <= 1024 for _, _, first, count in f_reqs), f_reqs
    assert not delivered(r, F)


def test_forged_ends_forever_while_b_live() -> None:
    """The forger repeats F's end every 0.5 s for 10 minutes; B with data starts 8 s in and
    runs 10 s: B whole, delayed by a bounded amount; F's requests bounded."""
    a = Publisher(A, 30, 0.0)
    b = Publisher(B, 600, 8.0, dt=0.05)
    r = run([a, b], ends(F, 10**9, 3.3, 1200, 0.5), until=600.0)
    assert_whole(r, A, 30)
    assert_whole(r, B, 600)
    first = r.first_delivery(B)
    assert first is not None and first <= 8.0 + FOLLOW_DELAY, first
    assert sum(x[1] == F for x in r.requests) <= 2 * r.cfg.max_request_attempts


def test_forged_ends_changing_n_while_b_live() -> None:
    """Every forged end names another number (10**9 + k): still bounded, B whole."""
    a = Publisher(A, 30, 0.0)
    b = Publisher(B, 300, 8.0)
    forged = [(3.3 + 0.5 * k, build_end_of_session(F, 10**9 + k)) for k in range(200)]
    r = run([a, b], forged, until=120.0)
    assert_whole(r, A, 30)
    assert_whole(r, B, 300)
    first = r.first_delivery(B)
    assert first is not None and first <= 8.0 + FOLLOW_DELAY, first
    assert sum(x[1] == F for x in r.requests) <= 4 * r.cfg.max_request_attempts


def test_forged_ends_then_heartbeats_forever_while_b_live() -> None:
    """F's ends, then its heartbeats every 0.5 s for 100 s (keeping it "live"): B whole
    and not held up beyond the bound."""
    a = Publisher(A, 30, 0.0)
    b = Publisher(B, 300, 8.0)
    forged = ends(F, 500, 3.3, 4, 0.3) + heartbeats(F, 500, 5.0, 200, 0.5)
    r = run([a, b], forged, until=120.0)
    assert_whole(r, A, 30)
    assert_whole(r, B, 300)
    first = r.first_delivery(B)
    assert first is not None and first <= 8.0 + FOLLOW_DELAY, first


def test_short_sessions_with_data_end_while_forged_one_followed() -> None:
    """F (forged ends at 10**9) is followed after A ends; meanwhile B (9 messages, one
    packet lost on the line) starts and ends, then C starts: once F yields, B and then C
    are delivered whole, in line order."""
    a = Publisher(A, 30, 0.0)
    b = Publisher(B, 9, 4.0, lost={1})
    c = Publisher(C, 300, b.last_sent() + 0.3)
    r = run([a, b, c], ends(F, 10**9, 3.3, 6, 0.3))
    for p in (a, b, c):
        assert_whole(r, p.session, p.count)
    assert [s for s in order(r) if s != F] == [A, B, C]
    first = r.first_delivery(B)
    assert first is not None and first <= 4.0 + FOLLOW_DELAY, first


def test_forged_ends_before_real_ends_only_session() -> None:
    """After A ends, F's forged ends come first, then real B whose data were all lost
    (only its ends): once F yields, B is followed and recovered whole."""
    a = Publisher(A, 30, 0.0)
    b = Publisher(B, 30, 3.5).all_lost()
    r = run([a, b], ends(F, 10**9, 3.3, 6, 0.3))
    assert_whole(r, A, 30)
    assert_whole(r, B, 30)


def test_forged_ends_before_the_feed_starts() -> None:
    """Before anything real, F's ends are repeated for 3 s (followed, as accepted); A
    with data starts at 4 s and runs 6 s: A whole, within the bound."""
    a = Publisher(A, 360, 4.0, per_packet=3, dt=0.05)
    r = run([a], ends(F, 2**63, 0.1, 10, 0.3))
    assert_whole(r, A, 360)
    first = r.first_delivery(A)
    assert first is not None and first <= 4.0 + FOLLOW_DELAY, first


def test_forged_ends_while_a_idles_with_heartbeats() -> None:
    """A pauses 10 s between two bursts, beating every second; F's ends (twice six, at
    two numbers) come during the pause. A is never left: all 60 delivered, ended at 61."""
    line = [
        (0.05 * i, build_packet(A, f, [msg(A, s) for s in range(f, f + 3)]))
        for i, f in enumerate(range(1, 31, 3))
    ]
    line += heartbeats(A, 31, 1.0, 10, 1.0)
    line += ends(F, 10**9, 2.0, 6, 0.3) + ends(F, 40, 2.1, 6, 0.3)
    line += [
        (11.0 + 0.05 * i, build_packet(A, f, [msg(A, s) for s in range(f, f + 3)]))
        for i, f in enumerate(range(31, 61, 3))
    ]
    line += ends(A, 61, 12.0, 4, 0.5)
    pub = Publisher(A, 60, 0.0)
    r = simulate(line, [Server(SERVER, {A: pub})], 60.0)
    assert_whole(r, A, 60)
    assert [e.next_seq_num for _, e in r.of(SessionEnded)] == [61]  # type: ignore[attr-defined]
    assert not r.of(SessionChanged)


def test_forged_ends_during_short_silent_pause() -> None:
    """A falls silent for 2 s (less than ``stale_after``, no heartbeats); F's ends come in
    the pause: A is not left, all 60 delivered."""
    line = [
        (0.05 * i, build_packet(A, f, [msg(A, s) for s in range(f, f + 3)]))
        for i, f in enumerate(range(1, 31, 3))
    ]
    line += ends(F, 10**9, 0.6, 6, 0.3)
    line += [
        (2.5 + 0.05 * i, build_packet(A, f, [msg(A, s) for s in range(f, f + 3)]))
        for i, f in enumerate(range(31, 61, 3))
    ]
    line += ends(A, 61, 3.5, 4, 0.5)
    r = simulate(line, [Server(SERVER, {A: Publisher(A, 60, 0.0)})], 60.0)
    assert_whole(r, A, 60)
    assert not r.of(SessionChanged)


def test_one_forged_end_and_heartbeats_do_not_make_a_session_followed() -> None:
    """One forged end of F (at 50) while A is live, then F's heartbeats after A fell
    quiet: not "two of its ends sent after the followed session ended or fell quiet", and
    heartbeats alone never make a session followed: F is never followed nor asked for."""
    a = Publisher(A, 12, 0.0)
    r = run([a], ends(F, 50, 0.0, 1, 0.5) + heartbeats(F, 50, 2.0, 3, 0.5), until=30.0)
    assert_whole(r, A, 12)
    assert [e.new_session for _, e in r.of(SessionChanged)] == []  # type: ignore[attr-defined]
    assert [x for x in r.requests if x[1] == F] == []


def test_forged_ends_during_long_silence_then_a_resumes() -> None:
    """A (30 messages, no heartbeats) falls silent for 4 s (more than ``stale_after``);
    F's two forged ends come 1 s into the silence, so F is followed at 3.45 s (accepted by
    the README). A then resumes with 31..60 and its end. Those are real data that arrived
    on the line: delivered, or at least named by an event with their range (MessagesLost or
    MessagesAfterEnd), never only counted (``old_session``)."""
    line = [
        (0.05 * i, build_packet(A, f, [msg(A, s) for s in range(f, f + 3)]))
        for i, f in enumerate(range(1, 31, 3))
    ]
    line += ends(F, 10**9, 1.45, 2, 0.5)
    line += [
        (4.45 + 0.05 * i, build_packet(A, f, [msg(A, s) for s in range(f, f + 3)]))
        for i, f in enumerate(range(31, 61, 3))
    ]
    line += ends(A, 61, 5.45, 4, 0.5)
    r = simulate(line, [Server(SERVER, {A: Publisher(A, 60, 0.0)})], 60.0)
    named = set(delivered(r, A))
    named |= {s for a, b, _ in lost(r, A) for s in range(a, b + 1)}
    named |= {
        s
        for _, e in r.of(MessagesAfterEnd)
        if e.session == A  # type: ignore[attr-defined]
        for s in range(e.first_seq, e.last_seq + 1)  # type: ignore[attr-defined]
    }
    assert sorted(named) == list(range(1, 61)), (
        f"A: never named {sorted(set(range(1, 61)) - named)[:5]}.."
    )


def test_requests_beyond_any_real_feed_bounded_over_ten_minutes() -> None:
    """Nothing real after A; F's end at 2**64-1 repeated every 0.5 s for 10 minutes: the
    requests for F's numbers stay few and within one window."""
    a = Publisher(A, 30, 0.0)
    r = run([a], ends(F, 2**64 - 1, 3.3, 1200, 0.5), until=600.0)
    assert_whole(r, A, 30)
    f_reqs = [x for x in r.requests if x[1] == F]
    assert len(f_reqs) <= 3 * r.cfg.max_request_attempts, len(f_reqs)
    assert all(first + count - 1 <= 1024 for _, _, first, count in f_reqs)


def test_dropped_line_datagram_not_labelled_retransmission() -> None:
    """F's ends far ahead (10**9), all sent on line A, are eventually dropped as
    unconfirmed: each DatagramDropped names where the datagram came from (line A); a
    re-request answer always has a server address."""
    a = Publisher(A, 30, 0.0)
    r = run([a], ends(F, 10**9, 3.3, 6, 0.3), until=30.0)
    drops = [e for _, e in r.of(DatagramDropped)]
    assert drops
    for e in drops:
        assert e.source is Source.LINE_A or e.addr is not None, e  # type: ignore[attr-defined]


# --------------------------------------------------------------------------- racing ends


@pytest.mark.parametrize(
    ("forged_n", "times", "start"),
    [(58, 8, 1.1), (58, 8, 0.5), (65, 8, 1.1), (10**6, 8, 1.1), (40, 12, 1.0), (2, 12, 0.3)],
)
def test_forged_end_of_a_racing_its_real_end(forged_n: int, times: int, start: float) -> None:
    """All 60 of A arrive; a forger repeats an end of A (below, above or far above the
    real one) around A's last packets and real ends: the real end is right after all the
    data held and wins; nothing lost, nothing beyond the end."""
    a = Publisher(A, 60, 0.0)
    r = run([a], ends(A, forged_n, start, times, 0.2))
    assert_whole(r, A, 60)
    assert [e.next_seq_num for _, e in r.of(SessionEnded)] == [61]  # type: ignore[attr-defined]
    assert not r.of(MessagesAfterEnd)


@pytest.mark.parametrize(("forged_n", "drops"), [(65, 5), (65, 7), (1000, 5)])
def test_forged_higher_end_repeated_more_while_tail_recovering(forged_n: int, drops: int) -> None:
    """A's last six messages are lost on the line and the server answers them slowly; the
    forged end above the real one is repeated more: the forged end may win (README), but
    55..60 (the server holds them) are delivered; only numbers above 60 named lost."""
    a = Publisher(A, 60, 0.0, lost={18, 19})
    r = run([a], ends(A, forged_n, 1.1, 12, 0.2), drop=drop_first(drops), server_delay=0.02)
    assert_tiled(r, A, 60, lost_from=61)
    assert delivered(r, A) == list(range(1, 61))


def test_forged_lower_end_repeated_more_while_tail_recovering() -> None:
    """A's last six messages (55..60) lost on the line; the honest server drops its first
    five answers to each. A forged end of A at 58, sent 12 times from 1.10 s (just before
    the real end's first copy at 1.15 s), races the real end at 61 (4 copies). By 2.72 s
    55..60 are recovered: the real end is then the one right after all data held and wins
    ("of two ends, the one right after all data held wins"); 58..60 are real data, not data
    beyond the end."""
    a = Publisher(A, 60, 0.0, lost={18, 19})
    r = run([a], ends(A, 58, 1.1, 12, 0.2), drop=drop_first(5), server_delay=0.02)
    assert_whole(r, A, 60)
    assert [e.next_seq_num for _, e in r.of(SessionEnded)] == [61]  # type: ignore[attr-defined]
    assert not r.of(MessagesAfterEnd)


@pytest.mark.parametrize(
    ("forged_n", "times", "start"), [(10, 8, 3.2), (20, 12, 0.5), (40, 12, 3.2), (2, 12, 3.2)]
)
def test_forged_ends_of_an_ends_only_session(forged_n: int, times: int, start: float) -> None:
    """M's data all lost (its four ends at 31 alone); a forger repeats ends of M at another
    number, more often than the real ones: M's 30 messages (the server holds them) are
    delivered whole and M ends at 31; A before and B after whole."""
    a = Publisher(A, 30, 0.0)
    m = Publisher(C, 30, a.last_sent() + 1.0).all_lost()
    b = Publisher(B, 30, m.last_sent() + 8.0)
    r = run([a, m, b], ends(C, forged_n, m.start + start, times, 0.2))
    for p in (a, m, b):
        assert_whole(r, p.session, 30)
    assert order(r) == [A, C, B]


@pytest.mark.parametrize("n", [50, 10**9, 2**64 - 1])
def test_real_and_forged_ends_only_sessions_at_start(n: int) -> None:
    """At the start, the forger's F (ends at n, from 0 s) and real A whose data were all
    lost (its ends from 0.65 s): A is delivered whole, however F is treated."""
    a = Publisher(A, 30, 0.0).all_lost()
    r = run([a], ends(F, n, 0.0, 6, 0.3))
    assert_whole(r, A, 30)
    assert not delivered(r, F)


# --------------------------------------------------------------------------- FeedStale


def test_no_feed_stale_while_next_session_live() -> None:
    """A falls silent (no end), B live throughout: the switch is the receiver's own
    decision and the feed never was silent: no FeedStale."""
    a = Publisher(A, 30, 0.0, end=False)
    b = Publisher(B, 300, 0.6)
    r = run([a, b])
    assert_whole(r, A, 30)
    assert_whole(r, B, 300)
    assert not r.of(FeedStale)


def test_feed_stale_while_ends_only_session_followed_small_n() -> None:
    """F followed on its ends alone (N=50), then the whole feed silent 3.2 s, then B: one
    FeedStale in time, one FeedResumed when B arrives."""
    a = Publisher(A, 30, 0.0)
    b = Publisher(B, 60, 8.0)
    r = run([a, b], ends(F, 50, 3.3, 6, 0.3))
    assert_whole(r, B, 60)
    check_stale(r, {A, B, F})
    assert len(r.of(FeedStale)) == 1


@pytest.mark.parametrize("n", [10**9, 2**63])
def test_feed_stale_while_forged_far_end_followed(n: int) -> None:
    """Same, F's end far ahead (n): the feed is silent from 4.8 s (F's last end) to 9.0 s
    (B's first packet), more than ``stale_after``: FeedStale at 7.8 s, FeedResumed at 9.0."""
    a = Publisher(A, 30, 0.0)
    b = Publisher(B, 60, 9.0)
    r = run([a, b], ends(F, n, 3.3, 6, 0.3))
    assert_whole(r, B, 60)
    check_stale(r, {A, B, F})


def test_feed_stale_at_start_forged_far_end() -> None:
    """Only F's six ends at 10**9 (0.1..1.6 s), then nothing at all: FeedStale at 4.6 s."""
    r = run([], ends(F, 10**9, 0.1, 6, 0.3), until=20.0)
    check_stale(r, {F})
    assert r.of(FeedStale)


def test_feed_stale_between_sessions_consistent() -> None:
    """A ends; 6 s of silence; B's ends alone (data lost); 5 s of silence; C with data:
    FeedStale/FeedResumed alternate and never contradict the line (whether the silence
    after a session's end is "stale" the README does not say: not required)."""
    a = Publisher(A, 30, 0.0)
    b = Publisher(B, 30, a.last_sent() + 6.0).all_lost()
    c = Publisher(C, 30, b.last_sent() + 5.0)
    r = run([a, b, c])
    for p in (a, b, c):
        assert_whole(r, p.session, 30)
    check_stale(r, {A, B, C}, require=False)


# --------------------------------------------------------------------------- memory bounds


def test_small_packet_bound_while_forged_session_followed() -> None:
    """max_held_packets 8 while F is followed and B's 600 messages (some lost on the
    line) wait: the bound holds (checked at every step) and B is delivered whole."""
    a = Publisher(A, 30, 0.0)
    b = Publisher(B, 600, 4.0, dt=0.02, lost={1, 5, 50, 51, 52})
    r = run([a, b], ends(F, 10**9, 3.3, 6, 0.3), max_held_packets=8)
    assert_whole(r, B, 600)
    assert r.core.stats.peak_held_packets <= 8


def test_held_packets_bound_with_copies_of_a_forged_end() -> None:
    """max_held_packets 16. Four copies of a forged end of F (at 2) arrive at 0 s, before
    A; A's first packet is lost and the slow server (first four answers dropped) leaves
    the gap open while A's packets come every 50 ms: held_packets never exceeds 16, after
    any call (the waiting session's copies are dropped first)."""
    a = Publisher(A, 40, 0.0, lost={0})
    b = Publisher(B, 12, a.last_sent() + 1.0)
    r = run(
        [a, b],
        ends(F, 2, 0.0, 1, 0.5) * 4,
        drop=drop_first(4),
        server_delay=0.01,
        max_held_packets=16,
    )
    assert_whole(r, A, 40)
    assert_whole(r, B, 12)


@pytest.mark.parametrize("with_forger", [False, True])
def test_byte_bound_does_not_cost_the_waiting_sessions_gaps(with_forger: bool) -> None:
    """max_held_bytes 60,000 (room for about 128 packets) while B (600 messages, 5
    packets lost on the line, the server holds them) waits behind A's end (and F's
    forged ends): B's backlog beyond the bound is dropped and asked for once followed,
    as with max_held_packets; B's gaps are not given up."""
    a = Publisher(A, 30, 0.0)
    b = Publisher(B, 600, 4.0 if with_forger else 1.0, dt=0.02, lost={1, 5, 50, 51, 52})
    forged = ends(F, 10**9, 3.3, 6, 0.3) if with_forger else []
    r = run([a, b], forged, max_held_bytes=60_000)
    assert r.core.stats.peak_held_bytes <= 60_000
    assert_tiled(r, B, 600, lost_from=601)
    assert_whole(r, B, 600)


# --------------------------------------------------------------------------- live client

#: Quick timers so attempts run out in well under a second (8 attempts: about 0.6 s).
LIVE = {
    "request_timeout": 0.02,
    "max_request_timeout": 0.1,
    "loss_grace": 0.02,
    "end_confirm": 0.3,
    "stale_after": 1.0,
}


@pytest.mark.parametrize("forger", [False, True], ids=["alone", "after-forged-ends"])
def test_live_client_follows_a_session_seen_only_through_its_ends(
    multicast: None, forger: bool
) -> None:
    """The sync client on real multicast (private namespace): session's 400 messages all
    lost on the line, its end repeated every 50 ms for 1.5 s; the Responder holds them.
    With ``forger``, F's ends at 10**9 come first for 0.5 s. The client delivers the 400
    messages of the session once, in order, none of them reported lost."""
    msgs = make_messages(400)
    line = ("239.192.9.7", free_udp_port())
    tx = sender()
    try:
        with Responder({SESSION: msgs}) as server:
            client = MoldUDP64(line, "127.0.0.1", [server.address], receiver_options=LIVE)
            with client:
                if forger:
                    with Repeater(tx, line, build_end_of_session(F, 10**9), interval=0.05):
                        time.sleep(0.5)
                with Repeater(tx, line, end_of_session(msgs), interval=0.05):
                    got: list[Message] = []
                    deadline = time.monotonic() + 1.5
                    for m in client.messages(timeout=10):
                        if m.session == SESSION:
                            got.append(m)
                        if len(got) == len(msgs) and time.monotonic() > deadline:
                            break
                    assert [(m.seq_num, m.data) for m in got] == list(enumerate(msgs, 1))
                lost_here = [r for r in client.lost_ranges if SESSION in repr(r)]
                assert lost_here == []
    finally:
        tx.close()


# --------------------------------------------------------------------------- property


END_NS = st.sampled_from([2, 50, 1025, 10**9, 2**63, 2**64 - 1])


@st.composite
def scenarios(draw: st.DrawFn, with_m: bool) -> dict[str, object]:
    count_a = draw(st.integers(12, 60))
    npk = (count_a + 2) // 3
    lost_a = draw(st.sets(st.integers(0, npk - 1), max_size=npk // 3))
    gap_ab = draw(st.floats(0.3, 7.0))
    gap_mb = draw(st.floats(0.5, 6.0))
    count_b = draw(st.integers(12, 90))
    forgeries = draw(
        st.lists(
            st.tuples(
                st.sampled_from(["F-ends", "F-beats", "A-end", "B-end", "G-ends"]),
                END_NS,
                st.floats(0.0, 16.0),  # start
                st.integers(1, 10),  # copies
                st.floats(0.1, 0.6),  # spacing
                st.integers(1, 20),  # A-end: how far above the real end
            ),
            max_size=4,
        )
    )
    bound = draw(st.sampled_from([16, 50_000]))
    slow = draw(st.integers(0, 3))
    with_m = with_m
    return {
        "count_a": count_a,
        "lost_a": lost_a,
        "gap_ab": gap_ab,
        "with_m": with_m,
        "gap_mb": gap_mb,
        "count_b": count_b,
        "forgeries": forgeries,
        "bound": bound,
        "slow": slow,
    }


@settings(
    max_examples=250,
    derandomize=True,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
@given(scenarios(with_m=False))
def test_property_real_sessions_whole_whatever_the_forger(sc: dict[str, object]) -> None:
    """Real A (some packets lost on the line), optionally a real M whose data were all
    lost (its ends alone), then real B with data; up to three forgeries: ends of F (any N,
    any time), heartbeats of F, ends of A above its real end. A and B are delivered
    whole in order (A's numbers above its end may be named lost, never below); M, if
    followed, whole; B not held up beyond the bound; memory and requests bounded. The
    honest server drops the first 0..3 answers to each number asked (a slow path)."""
    check_scenario(sc)


@settings(
    max_examples=120,
    derandomize=True,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
@given(scenarios(with_m=True))
def test_property_with_an_ends_only_session_between(sc: dict[str, object]) -> None:
    """The same with a real session M between A and B whose data were all lost on the
    line (its four ends alone): M, when followed, is delivered whole."""
    check_scenario(sc)


def check_scenario(sc: dict[str, object]) -> None:
    """Run one generated scenario and check the promise (see the property tests)."""
    count_a: int = sc["count_a"]  # type: ignore[assignment]
    count_b: int = sc["count_b"]  # type: ignore[assignment]
    a = Publisher(A, count_a, 0.0, lost=sc["lost_a"])  # type: ignore[arg-type]
    pubs = [a]
    t = a.last_sent() + sc["gap_ab"]  # type: ignore[operator]
    if sc["with_m"]:
        m = Publisher(C, 30, t).all_lost()
        pubs.append(m)
        t = m.last_sent() + sc["gap_mb"]  # type: ignore[operator]
    b = Publisher(B, count_b, t)
    pubs.append(b)
    forged: list[tuple[float, bytes]] = []
    for kind, n, start, copies, every, above in sc["forgeries"]:  # type: ignore[attr-defined]
        if kind == "F-ends":
            forged += ends(F, n, start, copies, every)
        elif kind == "F-beats":
            forged += heartbeats(F, n, start, copies * 3, every)
        elif kind == "G-ends":  # a second forged session of ends alone
            forged += ends("GGGGGGGGGG", n, start, copies, every)
        elif kind == "B-end":
            forged += ends(B, count_b + 1 + above, b.start + start, copies, every)
        else:
            forged += ends(A, count_a + 1 + above, start, copies, every)
    bound: int = sc["bound"]  # type: ignore[assignment]
    r = run(
        pubs,
        forged,
        until=b.last_sent() + 40.0,
        drop=drop_first(sc["slow"]),  # type: ignore[arg-type]
        server_delay=0.01,
        max_held_packets=bound,
        held_slack=4,  # see test_held_packets_bound_with_copies_of_a_forged_end
    )
    assert_tiled(r, A, count_a, lost_from=count_a + 1)
    assert delivered(r, A) == list(range(1, count_a + 1))
    assert_tiled(r, B, count_b, lost_from=count_b + 1)
    assert delivered(r, B) == list(range(1, count_b + 1))
    real = [s for s in order(r) if s in (A, B, C)]
    assert real in ([A, B], [A, C, B]), real
    if C in real:
        assert_whole(r, C, 30)
    first_b = r.first_delivery(B)
    assert first_b is not None and first_b <= b.start + FOLLOW_DELAY, (first_b, b.start)
    forged_reqs = sum(x[1] in (F, "GGGGGGGGGG") for x in r.requests)
    assert forged_reqs <= 12 * r.cfg.max_request_attempts, forged_reqs
    assert all(x[3] <= r.cfg.max_messages_per_request for x in r.requests)
    marks = [type(e) for _, e in r.timed if isinstance(e, FeedStale | FeedResumed)]
    assert all(x is not y for x, y in itertools.pairwise(marks)), marks
