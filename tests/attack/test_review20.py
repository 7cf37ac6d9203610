"""review20: regressions of fixE/fixF (merged into main) against 9883e5a, issue 18.

Each test is a plain stream found by running the same random streams through 9883e5a and
main (the simulated clock of test_data_wins_attack3) and diffing the outcomes."""

from __future__ import annotations

import pytest

from attack.test_data_wins_attack3 import (
    HONEST,
    OTHER,
    A,
    B,
    Dead,
    Dies,
    Outcome,
    Publisher,
    Server,
    after_end,
    check_tiles,
    drive,
    ended,
    line_of,
    lost,
    real,
)
from moldudp64.events import Source
from moldudp64.wire import build_end_of_session, build_heartbeat, build_packet


def test_no_server_forged_far_data_and_ends_keep_the_next_session_out_forever() -> None:
    """Holds since fixE's rules (_rival_beats' far-end branch, _rival_waits) were
    reverted (review20). no re-request server configured; A 600 msgs (3 a datagram, 0.02
    s apart from 0.5 s, both lines, real end 601 x4 at 4.68..6.18 s), B 60 msgs from
    9.18 s; forged data of A at 5277 x5 (2.33..4.33 s, line A), forged ends of A at 6303
    x5 (3.45..4.65 s) and 5279 x1 (6.58 s, line B). 9883e5a: A 1..600 delivered,
    601..10277 'session changed', B 1..60 delivered and ended at 61 (t=12.46). main
    before the revert: B never followed, its 60 messages neither delivered nor named
    (also 600 s later): _rival_waits holds the switch while the gap at 601 has parks ==
    0, and with no server it is never asked, so never parked (an unbounded wait)"""
    a = Publisher(A, 600, 0.5, dt=0.02, per_packet=3)
    b = Publisher(B, 60, a.last_sent() + 3.0, dt=0.02, per_packet=2)
    line = line_of([a, b], line_b=True)
    line += [
        (2.3324 + 0.5 * k, build_packet(A, 5277, [b"FORGED%d" % k]), Source.LINE_A, None)
        for k in range(5)
    ]
    line += [
        (3.4452 + 0.3 * k, build_end_of_session(A, 6303), Source.LINE_B, None) for k in range(5)
    ]
    line += [(6.5814, build_end_of_session(A, 5279), Source.LINE_B, None)]
    o = drive(line, [], a.last_sent() + 60.0)
    check_tiles(o)
    assert real(o, A) == list(range(1, 601))
    assert [x for x in lost(o, A) if x[0] <= 600] == []
    assert real(o, B) == list(range(1, 61)), f"B delivered {len(real(o, B))} of 60"
    assert [n for _, n in ended(o, B)] == [61]


def _forged_end_below_the_data_then_far_data_and_a_far_end(servers: str) -> Outcome:
    """A (300 msgs, one a datagram, 0.02 s apart from 0.5 s; 269..300 lost on both lines;
    real end 301 x4 at 6.68..8.18 s), B (60 msgs) 3 s after A's last end; forged end of A
    at 254 x5 every 0.3 s from 4.76 s (A live, its data reaching 268 at 5.84 s), forged
    data of A at 1,000,282 x5 every 0.5 s from 6.11 s, forged end at 1,000,301 x3 from
    9.19 s (every 50 ms)."""
    a = Publisher(A, 300, 0.5, dt=0.02, per_packet=1)
    a.lost = set(range(268, 300))
    b = Publisher(B, 60, a.last_sent() + 3.0, dt=0.02, per_packet=2)
    pm = {A: a, B: b}
    line = line_of([a, b])
    line += [
        (4.7557 + 0.3 * k, build_end_of_session(A, 254), Source.LINE_B, None) for k in range(5)
    ]
    line += [
        (6.1125 + 0.5 * k, build_packet(A, 1_000_282, [b"FORGED%d" % k]), Source.LINE_B, None)
        for k in range(5)
    ]
    line += [
        (9.1888 + 0.05 * k, build_end_of_session(A, 1_000_301), Source.LINE_A, None)
        for k in range(3)
    ]
    server = {"dead": [Dead(OTHER, pm)], "none": []}[servers]
    o = drive(line, server, a.last_sent() + 60.0)
    check_tiles(o)
    return o


def test_dead_server_forged_end_below_delivered_data_ends_a_live_session_early() -> None:
    """Holds since fixE's rules (_rival_beats' far-end branch, _rival_waits) were
    reverted (review20). see _forged_end_below_the_data_then_far_data_and_a_far_end, one
    dead server. 9883e5a: A 1..268 delivered, no SessionEnded(A), 269..1,000,281 and
    1,000,283..1,000,300 'session changed' (269..300 reported lost: nobody holds them),
    B whole. main before the revert: SessionEnded(A, 254) at 11.69 s, 254..268 (real,
    delivered) named by MessagesAfterEnd as possibly forged, 269..300 never reported:
    fixE's _rival_beats claims a repeated end 'at or below the next number to deliver'
    again once the next number (269) is out of attempts, however far below (254 < 268
    delivered); without the far end 1,000,301, 9883e5a ends at 254 as well"""
    o = _forged_end_below_the_data_then_far_data_and_a_far_end("dead")
    assert real(o, A) == list(range(1, 269))
    assert [n for _, n in ended(o, A)] in ([], [301]), ended(o, A)
    assert not after_end(o, A), after_end(o, A)
    gone = {n for x, y, _ in lost(o, A) for n in range(x, min(y, 300) + 1)}
    assert gone == set(range(269, 301)), "269..300 (nobody holds them) not reported lost"


def test_no_server_forged_end_below_then_far_data_and_end_keep_the_next_session_out() -> None:
    """Holds since fixE's rules (_rival_beats' far-end branch, _rival_waits) were
    reverted (review20). the same stream with no re-request server configured. 9883e5a:
    B whole (1..60, ended at 61), A's 269..1,000,281 'session changed'. main before the
    revert: B never followed, its 60 messages neither delivered nor named (_rival_waits:
    the gap at 269 is never asked, so never parked)"""
    o = _forged_end_below_the_data_then_far_data_and_a_far_end("none")
    assert real(o, B) == list(range(1, 61)), f"B delivered {len(real(o, B))} of 60"


def _forged_end_at_the_next_number_in_a_live_session(
    heartbeats: bool, far_end_late: bool, end_lost: bool = True
) -> Outcome:
    """A (300 msgs, one a datagram, 0.03 s apart from 0.5 s, both lines; 261..300 lost on
    both lines, its end lost too), an honest server 5 ms away (40 msgs an answer); forged
    end of A at 1,095 x1 at 2.57 s (line A), forged heartbeats at 1,000,076 x3 every 0.3 s
    from 2.73 s (line A), a forged end at 138 (the next number then) x3 at 4.61, 5.11,
    5.61 s (line B: A's live data goes on to 260 at 8.27 s, 123 datagrams beyond it), a
    forged end at 1,000,274 x3 every 0.5 s from 8.67 s (line A)."""
    a = Publisher(A, 300, 0.5, dt=0.03, per_packet=1, lost=set(range(260, 300)))
    a.end_lost = end_lost
    line = line_of([a], line_b=True)
    line += [(2.5653, build_end_of_session(A, 1095), Source.LINE_A, None)]
    if heartbeats:
        line += [
            (2.7275 + 0.3 * k, build_heartbeat(A, 1_000_076), Source.LINE_A, None) for k in range(3)
        ]
    line += [
        (4.6074 + 0.5 * k, build_end_of_session(A, 138), Source.LINE_B, None) for k in range(3)
    ]
    if far_end_late:
        line += [
            (8.6736 + 0.5 * k, build_end_of_session(A, 1_000_274), Source.LINE_A, None)
            for k in range(3)
        ]
    o = drive(line, [Server(HONEST, {A: a}, cap=40, delay=0.005)], a.last_sent() + 60.0)
    check_tiles(o)
    return o


def test_forged_far_heartbeats_and_ends_let_an_overrun_forged_end_truncate_a_live_session() -> None:
    """Holds since fixE's rules (_rival_beats' far-end branch, _rival_waits) were
    reverted (review20). see _forged_end_at_the_next_number_in_a_live_session (with the
    heartbeats). 9883e5a: A 1..300 delivered, no SessionEnded (its real end was lost),
    nothing named. main before the revert: SessionEnded(A, 138) at 12.17 s and
    MessagesAfterEnd(138..300): a forged end that 123 live datagrams went beyond (README
    at 9883e5a: five or more make it an end below data, the session does not end there)
    truncates the live session; the same with a 4 s server (261..300 then named after
    the end, not delivered) or a dead one. Without the heartbeats 9883e5a ends at 138 as
    well (test_forged_end_at_the_next_number_overrun_by_live_data_ends_the_session)"""
    o = _forged_end_at_the_next_number_in_a_live_session(heartbeats=True, far_end_late=True)
    assert real(o, A) == list(range(1, 301))
    assert ended(o, A) == [] and after_end(o, A) == [], (ended(o, A), after_end(o, A))


def test_forged_end_at_the_next_number_overrun_by_live_data_ends_the_session() -> None:
    o = _forged_end_at_the_next_number_in_a_live_session(heartbeats=False, far_end_late=True)
    assert real(o, A) == list(range(1, 301))
    assert ended(o, A) == [] and after_end(o, A) == [], (ended(o, A), after_end(o, A))


def test_forged_end_at_the_next_number_overrun_by_live_data_drops_the_served_tail() -> None:
    o = _forged_end_at_the_next_number_in_a_live_session(heartbeats=True, far_end_late=False)
    assert real(o, A) == list(range(1, 301))
    assert ended(o, A) == [] and after_end(o, A) == [], (ended(o, A), after_end(o, A))


def test_outage_at_the_end_forged_far_ends_and_an_overrun_forged_end_drop_the_served_tail() -> None:
    """Holds since fixE's rules (_rival_beats' far-end branch, _rival_waits) were
    reverted (review20). A (300 msgs, one a datagram, 0.03 s apart from 0.5 s, both
    lines; an outage at its end: 261..300 and all four copies of its end lost on both
    lines), an honest server 5 ms away (40 msgs an answer); forged heartbeats of A at
    1,000,076 x3 every 0.3 s from 2.73 s, a forged end at 92 (the next number then) x2
    at 3.2 and 3.7 s (A's live data goes on to 260 at 8.27 s), a forged end at 1,000,274
    x3 every 0.5 s from 9.0 s. 9883e5a: A 1..300 delivered (261..300 from the server),
    no SessionEnded, nothing named. main before the revert: SessionEnded(A, 92) at 12.0
    s, 92..260 named after the end, and 261..300, which the honest server holds, neither
    delivered nor named: fixE's _rival_beats claims the end 92 (a rival far below the
    next number, 261, overrun by 169 live datagrams) once the phantom numbers from the
    next on are out of attempts"""
    a = Publisher(A, 300, 0.5, dt=0.03, per_packet=1, lost=set(range(260, 300)), end_lost=True)
    line = line_of([a], line_b=True)
    line += [
        (2.7275 + 0.3 * k, build_heartbeat(A, 1_000_076), Source.LINE_A, None) for k in range(3)
    ]
    line += [(3.2 + 0.5 * k, build_end_of_session(A, 92), Source.LINE_B, None) for k in range(2)]
    line += [
        (9.0 + 0.5 * k, build_end_of_session(A, 1_000_274), Source.LINE_A, None) for k in range(3)
    ]
    o = drive(line, [Server(HONEST, {A: a}, cap=40, delay=0.005)], a.last_sent() + 60.0)
    check_tiles(o)
    assert real(o, A) == list(range(1, 301)), f"A: {len(real(o, A))} of 300 delivered"
    assert ended(o, A) == [] and after_end(o, A) == [], (ended(o, A), after_end(o, A))


def test_forged_end_below_the_feed_ends_the_session_although_the_real_end_arrived() -> None:
    """Holds since fixE's rules (_rival_beats' far-end branch, _rival_waits) were
    reverted (review20). A (600 msgs, 3 a datagram, 0.02 s apart from 0.5 s, both lines,
    nothing lost, its real end 601 x2 at 4.68 and 5.18 s on both lines), an honest
    server 5 ms away (5 msgs an answer) that stops answering at 7.01 s; forged data of A
    at 1,000,259 x2 (2.22, 2.72 s), a forged end at 442 x3 (3.46..4.06 s, A live at
    about 444, its data going on to 600 at 4.48 s), a heartbeat at 1,586 (4.39 s), ends
    at 1,001,285 x3 from 4.73 s and 1,001,260 x2 from 5.95 s. 9883e5a: A 1..600
    delivered, no SessionEnded (the real end not believed: the known forged far data and
    end class), nothing named. main before the revert: SessionEnded(A, 442) at 13.27 s
    and 442..600 named after the end although the real end 601 arrived four times
    (fixE's _rival_beats: a rival end below the next number, 601, overrun by the feed)"""
    a = Publisher(A, 600, 0.5, dt=0.02, per_packet=3, end_repeats=2)
    line = line_of([a], line_b=True)
    line += [
        (2.2161 + 0.5 * k, build_packet(A, 1_000_259, [b"FORGED%d" % k]), Source.LINE_A, None)
        for k in range(2)
    ]
    line += [
        (3.4579 + 0.3 * k, build_end_of_session(A, 442), Source.LINE_A, None) for k in range(3)
    ]
    line += [(4.3948, build_heartbeat(A, 1586), Source.LINE_B, None)]
    line += [
        (4.7325 + 0.3 * k, build_end_of_session(A, 1_001_285), Source.LINE_B, None)
        for k in range(3)
    ]
    line += [
        (5.9496 + 0.3 * k, build_end_of_session(A, 1_001_260), Source.LINE_B, None)
        for k in range(2)
    ]
    server = Dies(HONEST, {A: a}, cap=5, delay=0.005, dies_at=7.007869490609256)
    o = drive(line, [server], a.last_sent() + 60.0)
    check_tiles(o)
    assert real(o, A) == list(range(1, 601))
    assert [n for _, n in ended(o, A)] in ([], [601]), ended(o, A)
    assert [x for x in after_end(o, A) if x[0] <= 600] == [], after_end(o, A)


@pytest.mark.parametrize("forged_data", [0, 2, 4])
def test_a_real_end_stands_against_a_few_forged_datagrams_inside_a_forged_far_gap(
    forged_data: int,
) -> None:
    """The honest twin of the two above: A (300 msgs, one a datagram, 0.03 s apart from
    0.5 s, both lines, end 301 x4), forged heartbeats of A at 1,000,076 x3 from 2.73 s
    (line A: the horizon far beyond), and ``forged_data`` distinct forged datagrams of A
    at 301, 302, ... between the real end's repeats (line B, inside that gap): fewer than
    five, so the real end still ends A at 301, the forged data named after it."""
    a = Publisher(A, 300, 0.5, dt=0.03, per_packet=1)
    line = line_of([a], line_b=True)
    line += [
        (2.7275 + 0.3 * k, build_heartbeat(A, 1_000_076), Source.LINE_A, None) for k in range(3)
    ]
    t0 = a.last_sent() - 1.3
    line += [
        (t0 + 0.3 * k, build_packet(A, 301 + k, [b"forged"]), Source.LINE_B, None)
        for k in range(forged_data)
    ]
    o = drive(line, [Server(HONEST, {A: a}, cap=40, delay=0.005)], a.last_sent() + 30.0)
    check_tiles(o)
    assert real(o, A) == list(range(1, 301))
    assert [n for _, n in ended(o, A)] == [301]
    assert {n for x, y, _ in after_end(o, A) for n in range(x, y + 1)} == set(
        range(301, 301 + forged_data)
    )
