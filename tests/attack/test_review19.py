"""review19: real streams (no forger) where main does worse than at ef1458f.

Found by running the same random and hand-made real streams through receiver.py at
ef1458f and at main (298aa80) on attack3's simulated clock. Each test states the input
and what the receiver did before and does now; each is a strict xfail until fixed.
"""

from __future__ import annotations

from attack.test_data_wins_attack3 import (
    HONEST,
    OTHER,
    A,
    B,
    Dead,
    Lagging,
    Publisher,
    Server,
    check_tiles,
    drive,
    ended,
    line_of,
    lost,
    named,
    real,
)
from attack.test_data_wins_attack5 import late_join


def test_a_busy_next_session_the_server_does_not_hold_is_named_while_a_is_fetched() -> None:
    """Every number of B, whose datagrams all arrived on line A, is delivered or named,
    and B ends at its real end: A's recovery may delay B, never drop its live data.

    (review19: late join of A, 3,000 msgs, 2999..3000 and its 4 ends on the line, a
    server 0.2 s away of 40 msgs an answer that holds A only, B of 3,000 msgs one a
    datagram 2 ms apart from 1 s after A's last end, max_held_packets 500. The switch
    waited for A's recovery while B's datagrams beyond the waiting room were only
    counted: B followed at 17 s, 499..3000 never named, no end. Now the wait ends once
    the waiting room is three quarters full: A's numbers the server still holds are
    reported lost, "session changed", a cost of the held bounds, and B is whole.)"""
    a = late_join(3000, 2, next_after=None)[0]
    b = Publisher(B, 3000, a.last_sent() + 1.0, dt=0.002, per_packet=1)
    srv = Server(HONEST, {A: a, B: b}, cap=40, delay=0.2, holds={A})
    o = drive(line_of([a, b]), [srv], 120.0, max_held_packets=500)
    check_tiles(o)
    assert real(o, A)[-2:] == [2999, 3000], "A: what arrived on the line not delivered"
    assert {reason for _, _, reason in lost(o, A)} <= {"session changed"}
    got = named(o, B, 3000)
    assert got == set(range(1, 3001)), f"B: {len(real(o, B))} delivered, lost {lost(o, B)}"
    assert [x for _, x in ended(o, B)] == [3001]


def test_a_slow_honest_server_fetching_a_late_join_does_not_hold_the_next_session_for_minutes() -> (
    None
):
    """B, live from 4.7 s, is delivered within 60 s (attack3's honest-slow guard's bound).

    (review19: late join of A, 3,000 msgs, an honest server 0.9 s away of 5 msgs an
    answer, B of 60 msgs: the switch waited while each answer brought A's data, with no
    time bound: B delivered at 379 s. Now the wait ends 10 stale_after past A's silence;
    A's numbers the server still holds are then reported lost, "session changed".)"""
    pubs = late_join(3000, 2, next_after=1.0)
    srv = Server(HONEST, {p.session: p for p in pubs}, cap=5, delay=0.9)
    o = drive(line_of(pubs), [srv], 70.0)
    check_tiles(o)
    assert real(o, B) == list(range(1, 61)), f"B: {len(real(o, B))} of 60 by 70 s"


def test_a_parked_gaps_final_attempt_does_not_fall_to_the_dead_server() -> None:
    """A gap parked before the feed passed it gets its final attempt from the lagging
    store that holds it by then, not from the dead server alone. (review19: A, 30 msgs one
    a datagram 1.2 s apart, 16..18 and 26 lost on the line, a store lagging 8 s configured
    first, a dead one second: the park kept avoiding the lagging store, which had answered
    zero-count, and 26's final attempt went to the dead one: reported lost.)"""
    a = Publisher(A, 30, 0.0, dt=1.2, per_packet=1, lost={15, 16, 17, 25})
    servers = [Lagging(HONEST, {A: a}, cap=100, delay=0.001, lag=8.0), Dead(OTHER, {A: a})]
    o = drive(line_of([a]), servers, a.last_sent() + 60.0)
    check_tiles(o)
    assert lost(o, A) == []
    assert real(o, A) == list(range(1, 31))
    assert [x for _, x in ended(o, A)] == [31]
