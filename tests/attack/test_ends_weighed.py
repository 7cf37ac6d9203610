"""Two ends of session weighed: the real streams the end rules must not hurt (fix4b).

Built beside attack4's findings (tests/attack/test_data_wins_attack4.py) with attack3's
driver, real ``Publisher`` and honest ``Server``, on a simulated clock.
"""

from __future__ import annotations

import pytest

from attack.test_data_wins_attack3 import (
    HONEST,
    A,
    B,
    Dead,
    Publisher,
    Server,
    check_tiles,
    drive,
    ended,
    line_of,
    lost,
    real,
)
from moldudp64.events import Source
from moldudp64.wire import build_end_of_session


@pytest.mark.parametrize("copies", [2, 6])
def test_a_forged_end_beyond_the_real_one_costs_no_real_data(copies: int) -> None:
    """A (100 msgs, all arrive, its real end 101 x4), a forged end of A at 121 sent
    ``copies`` times from the real end's first repeat: the real end, right after all data
    held and repeated, ends the session; nothing reported lost (no phantom 101..120)."""
    a = Publisher(A, 100, 0.5, dt=0.01, per_packet=1)
    line = line_of([a]) + [
        (1.6 + 0.4 * k, build_end_of_session(A, 121), Source.LINE_B, None)
        for k in range(copies)
    ]
    o = drive(line, [Server(HONEST, {A: a}, cap=5)], 60.0)
    check_tiles(o)
    assert real(o, A) == list(range(1, 101)) and lost(o, A) == []
    assert [x for _, x in ended(o, A)] == [101]


@pytest.mark.parametrize(("forged", "copies"), [(121, 2), (121, 3), (2101, 3), (10**6, 5)])
def test_a_real_end_right_after_the_data_seen_on_both_lines_then_repeated(
    forged: int, copies: int
) -> None:
    """The real end right after all data held arrives on both lines (two copies 2 ms
    apart: not yet a repeat), then repeats; a forged end beyond it (near, or far beyond
    the 1,024 window) sent ``copies`` times 10 ms apart between: the real end ends the
    session, nothing reported lost, nothing named beyond it."""
    a = Publisher(A, 100, 0.5, dt=0.01, per_packet=1, end=False)
    line = line_of([a])
    for k in range(4):
        line.append((1.6 + 0.5 * k, build_end_of_session(A, 101), Source.LINE_A, None))
        line.append((1.602 + 0.5 * k, build_end_of_session(A, 101), Source.LINE_B, None))
    line += [
        (1.61 + 0.01 * k, build_end_of_session(A, forged), Source.LINE_B, None)
        for k in range(copies)
    ]
    o = drive(line, [Dead(HONEST, {A: a})], 60.0)
    check_tiles(o)
    assert real(o, A) == list(range(1, 101)) and lost(o, A) == []
    assert [x for _, x in ended(o, A)] == [101]


def test_a_next_session_waits_while_a_far_real_end_is_fetched() -> None:
    """A (2,200 msgs, 101..2200 lost on the line, its real end 2201 x4), B (1,000 msgs)
    from 0.3 s after A's last end, one honest server 0.2 s away, 40 msgs an answer: A's
    tail is fetched window by window while B already sends; A is delivered whole and
    ends at 2201, then B whole (its datagrams wait, or its servers fill them)."""
    n = 2200
    a = Publisher(A, n, 0.5, dt=0.0001, per_packet=1, lost=set(range(100, n)))
    b = Publisher(B, 1000, a.last_sent() + 0.3, dt=0.005, per_packet=2)
    pm = {A: a, B: b}
    o = drive(line_of([a, b]), [Server(HONEST, pm, cap=40, delay=0.2)], 120.0)
    check_tiles(o)
    assert real(o, A) == list(range(1, n + 1)) and lost(o, A) == []
    assert [x for _, x in ended(o, A)] == [n + 1]
    assert real(o, B) == list(range(1, 1001)) and lost(o, B) == []


@pytest.mark.parametrize("drops", [0, 2, 4])
def test_a_forged_repeated_end_inside_a_far_real_tail_with_a_lossy_server(drops: int) -> None:
    """A (1,300 msgs, 101..1300 lost on the line, its real end 1301 x4: far beyond the
    data), a forged end of A at 141 sent three times 0.3 s apart, an honest server that
    drops its first ``drops`` answers to each number: once the data recovered reaches 141
    the forged end is right after all data held and repeated, but the server answers for
    142 on: A whole, ends at 1301."""
    n = 1300
    a = Publisher(A, n, 0.5, dt=0.0001, per_packet=1, lost=set(range(100, n)))
    line = line_of([a]) + [
        (0.7 + 0.3 * k, build_end_of_session(A, 141), Source.LINE_B, None) for k in range(3)
    ]
    srv = Server(HONEST, {A: a}, cap=40, delay=0.02, drop=lambda s, q, k: k < drops)
    o = drive(line, [srv], 90.0)
    check_tiles(o)
    assert real(o, A) == list(range(1, n + 1)) and lost(o, A) == []
    assert [x for _, x in ended(o, A)] == [n + 1]
