"""Real streams the fixes of attack4's findings could hurt (tests/attack/test_data_wins_attack4.py).

Each fix bounds what a forger or a dead server can cost; each test here is the real feed
next to that bound: it must still be delivered whole, or what is not named with its range.
Reuses attack3's simulated driver, publishers and servers.
"""

from __future__ import annotations

import pytest

from attack.switch_sim import msg
from attack.test_data_wins_attack3 import (
    HONEST,
    A,
    Dead,
    Lagging,
    Publisher,
    Server,
    check_tiles,
    delivered,
    drive,
    ended,
    line_of,
    lost,
)
from moldudp64.events import GapDetected, Source
from moldudp64.wire import build_heartbeat


def real(o: object, session: str) -> list[int]:
    """Numbers of ``session`` delivered with their real bytes, in event order."""
    return [n for n, m, _ in delivered(o, session) if m == msg(session, n)]  # type: ignore[arg-type]


# ----------------------------------------------------------------- 1: heartbeats extend a gap


def _slow_feed_with_heartbeats() -> tuple[Publisher, list[tuple[float, bytes, Source, None]]]:
    """A slow real feed (one message a second) whose packets 11..20 are lost on the line,
    each followed by the heartbeat an idle publisher sends (the next number): every
    heartbeat reaches one beyond a missing range that ends at everything held."""
    a = Publisher(A, 40, 0.5, dt=1.0, per_packet=1, lost=set(range(10, 20)))
    line = line_of([a])
    for t, first, _ in a.packets()[10:20]:
        line.append((t + 0.5, build_heartbeat(A, first + 1), Source.LINE_A, None))
    return a, line


@pytest.mark.parametrize("server", ["honest", "lagging"])
def test_real_heartbeats_after_lost_packets_extend_one_gap_recovered_whole(server: str) -> None:
    """The ten heartbeats extend one missing range instead of opening ten (``open_gaps``
    stays 1): it is still named as it grows (a ``GapDetected`` each), asked for, and
    recovered whole (also from a server whose store lags 5 s: parked unanswered meanwhile)."""
    a, line = _slow_feed_with_heartbeats()
    pm = {A: a}
    srv = Server(HONEST, pm, cap=5) if server == "honest" else Lagging(HONEST, pm, cap=5, lag=5.0)
    most: list[int] = [0]
    o = drive(line, [srv], 80.0, observe=lambda c, _: most.append(c.stats.open_gaps))
    assert max(most) == 1  # one range, made longer by each heartbeat
    check_tiles(o)
    assert lost(o, A) == []
    assert real(o, A) == list(range(1, 41))
    assert [x for _, x in ended(o, A)] == [41]
    gaps = [(e.first_seq, e.last_seq) for _, e in o.of(GapDetected)]  # type: ignore[attr-defined]
    assert {n for x, y in gaps for n in range(x, y + 1)} >= set(range(11, 21))


def test_real_heartbeats_after_lost_packets_with_a_dead_server_name_every_number() -> None:
    """With no server answering, the extended range is reported lost whole once the feed
    passed it (11..20, nothing unnamed, nothing more)."""
    a, line = _slow_feed_with_heartbeats()
    o = drive(line, [Dead(HONEST, {A: a})], 80.0)
    check_tiles(o)
    assert {n for x, y, _ in lost(o, A) for n in range(x, y + 1)} == set(range(11, 21))
    assert real(o, A) == [*range(1, 11), *range(21, 41)]
    assert [x for _, x in ended(o, A)] == [41]
