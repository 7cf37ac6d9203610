"""The switch away from a session whose missing numbers the servers are bringing (issue 18).

README ("Sessions"): a switch on the followed session's silence waits while answers of its
configured servers keep bringing its missing numbers (an honest server's answer is real
data: a forger cannot fake that progress), the next session's datagrams waiting, bounded.
These are the real streams that rule could hurt, beside the findings it fixed
(tests/attack/test_data_wins_attack5.py, the late join beyond the window): a busy next
session, one that falls silent without its end, a server too slow to count as bringing
data, and a forged session whose server answers with nothing. Simulated clock (attack3's
``drive``), real ``Publisher`` and honest ``Server``.
"""

from __future__ import annotations

from attack.test_data_wins_attack3 import (
    HONEST,
    A,
    B,
    Dead,
    Publisher,
    Server,
    assert_whole,
    check_tiles,
    delivered,
    drive,
    ended,
    line_of,
    lost,
    named,
    real,
)
from attack.test_data_wins_attack5 import _ZeroCount, late_join
from moldudp64.events import Source
from moldudp64.wire import build_end_of_session, build_packet

F = "FFFFFFFFFF"


def test_a_late_join_fetched_holds_a_busy_next_session_without_loss() -> None:
    """A late join of A (3,000 msgs, its last two and its four ends on the line; a server
    of 40 msgs an answer 0.2 s away: about 15 s), B of 3,000 msgs (one a datagram, 2 ms
    apart) from 1 s after A's last end, 5,000 packets of room (B fits while A is
    fetched): both whole, nothing lost, both end. (With 500, the wait gives way once what
    waits fills three quarters of the room: tests/attack/test_review19.py.)"""
    a = late_join(3000, 2, next_after=None)[0]
    b = Publisher(B, 3000, a.last_sent() + 1.0, dt=0.002, per_packet=1)
    pm = {A: a, B: b}
    server = Server(HONEST, pm, cap=40, delay=0.2)
    o = drive(line_of([a, b]), [server], 120.0, max_held_packets=5000)
    check_tiles(o)
    assert_whole(o, A, 3000)
    assert_whole(o, B, 3000)


def test_a_next_session_without_an_end_waits_while_a_late_join_is_fetched() -> None:
    """B (60 msgs) sends no end and falls silent while the server still brings A (the
    late join above): B is kept (not forgotten for its silence), both whole."""
    a = late_join(3000, 2, next_after=None)[0]
    b = Publisher(B, 60, a.last_sent() + 1.0, dt=0.02, per_packet=2, end=False)
    o = drive(line_of([a, b]), [Server(HONEST, {A: a, B: b}, cap=40, delay=0.2)], 60.0)
    check_tiles(o)
    assert real(o, A) == list(range(1, 3001))
    assert [x for _, x in ended(o, A)] == [3001]
    assert real(o, B) == list(range(1, 61))


def test_a_server_slower_than_the_longest_timeout_does_not_hold_the_next_session() -> None:
    """The wait is bounded by what counts as bringing data: an answer with new data within
    ``max_request_timeout`` (1 s). A server 1.5 s away (40 msgs an answer) does not hold
    B: A is left 3 s after its last datagram, what came is delivered, the rest named lost
    ('session changed'), B whole. (The cost of the bound: real data that server holds
    is reported lost, as before the rule.)"""
    pubs = late_join(3000, 2, next_after=1.0)
    srv = Server(HONEST, {p.session: p for p in pubs}, cap=40, delay=1.5)
    o = drive(line_of(pubs), [srv], 60.0)
    check_tiles(o)
    assert real(o, B) == list(range(1, 61))
    got = real(o, A)
    assert got[-2:] == [2999, 3000] and got[:-2] == list(range(1, len(got) - 1))
    assert lost(o, A) == [(len(got) - 1, 2998, "session changed")]
    assert min(t for _, _, t in delivered(o, B)) < pubs[0].last_sent() + 3.0 + 1.5


def test_a_forged_session_whose_server_answers_nothing_holds_the_next_one_no_longer() -> None:
    """Two forged data datagrams of F (5,000 and 5,001, vouching for each other) before the
    real B, the only server answering every request with a zero-count packet: no answer
    brings data, so nothing holds the switch beyond F's silence; B is followed 3 s after
    F's last datagram and delivered whole, F's 1..4999 named lost."""
    b = Publisher(B, 60, 1.0, dt=0.02, per_packet=2)
    line = [
        *line_of([b]),
        (0.0, build_packet(F, 5000, [b"x"]), Source.LINE_A, None),
        (0.01, build_packet(F, 5001, [b"y"]), Source.LINE_A, None),
    ]
    o = drive(line, [_ZeroCount(HONEST, {B: b})], 60.0)
    check_tiles(o)
    assert real(o, B) == list(range(1, 61))
    assert min(t for _, _, t in delivered(o, B)) <= 0.01 + 3.0 + 0.01
    assert named(o, F, 4999) == set(range(1, 5000))


# ----------------------------------------------------------------- the repeated end reached


def test_a_dead_server_under_a_forged_far_end_costs_no_longer_wait() -> None:
    """attack4's forged far end (1200 x8 from 0.8 s) over A's real end 101 (x4), A's 100
    lost on the line, B 3 s after A's last end, a dead server: nothing reaches A's real
    end, so nothing holds the switch beyond A's silence (B from 3 s after A's last
    datagram), and every number up to the far end is named (99 delivered, 100..1199 lost
    'session changed')."""
    a = Publisher(A, 100, 0.5, dt=0.01, per_packet=1, lost={99})
    b = Publisher(B, 60, a.last_sent() + 3.0, dt=0.02, per_packet=2)
    line = line_of([a, b]) + [
        (0.8 + 0.5 * k, build_end_of_session(A, 1200), Source.LINE_A, None) for k in range(8)
    ]
    o = drive(line, [Dead(HONEST, {A: a, B: b})], 60.0)
    check_tiles(o)
    assert real(o, A) == list(range(1, 100))
    assert lost(o, A) == [(100, 1199, "session changed")]
    assert real(o, B) == list(range(1, 61))
    assert min(t for _, _, t in delivered(o, B)) <= 4.3 + 3.0 + 0.01


def test_a_forged_repeated_end_right_after_a_hole_loses_no_real_tail() -> None:
    """The rule's other side: the repeated end the data reaches is a forger's (101 x2, on
    line B after A's real end), A's real end 1301 (x4) far beyond a tail lost on the line
    (101..1300), 100 lost too and answered at the fifth ask; the honest server holds the
    tail: asked at 101, it answers, which disproves the forged end. A whole, ends at
    1301, B whole."""
    a = Publisher(A, 1300, 0.5, dt=0.001, per_packet=1, lost={99} | set(range(100, 1300)))
    b = Publisher(B, 60, a.last_sent() + 3.0, dt=0.02, per_packet=2)
    line = line_of([a, b]) + [
        (2.0 + 0.3 * k, build_end_of_session(A, 101), Source.LINE_B, None) for k in range(2)
    ]
    drop = lambda s, q, k: q == 100 and k < 4  # noqa: E731
    o = drive(line, [Server(HONEST, {A: a, B: b}, cap=40, delay=0.2, drop=drop)], 60.0)
    check_tiles(o)
    assert real(o, A) == list(range(1, 1301))
    assert lost(o, A) == []
    assert [x for _, x in ended(o, A)] == [1301]
    assert real(o, B) == list(range(1, 61))


# ----------------------------------------------------------------- an end's numbers are named


def test_a_forged_far_end_in_the_quiet_names_only_numbers_beyond_the_real_data() -> None:
    """A (100 msgs, its end lost on the line) falls quiet; a forged end 1,000,000 (x3, line
    B) in its quiet is dropped far beyond what was held; B comes 4 s after A's last data.
    What A's repeated end named is reported lost when A is left, never forgotten: for a
    forged end that is phantoms beyond A's real data (101..999999 'session changed');
    A's real 1..100 delivered, nothing real lost, B whole."""
    a = Publisher(A, 100, 0.5, dt=0.01, per_packet=1, end_lost=True)
    b = Publisher(B, 60, a.last_sent() + 4.0, dt=0.02, per_packet=2)
    line = line_of([a, b]) + [
        (a.last_sent() + 0.3 + 0.3 * k, build_end_of_session(A, 1_000_000), Source.LINE_B, None)
        for k in range(3)
    ]
    o = drive(line, [Server(HONEST, {A: a, B: b}, cap=5, delay=0.2)], 60.0)
    check_tiles(o)
    assert real(o, A) == list(range(1, 101))
    assert lost(o, A) == [(101, 999_999, "session changed")]
    assert real(o, B) == list(range(1, 61))
