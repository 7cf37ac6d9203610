"""Capture replay (moldudp64.replay): recorded datagrams in, per-session events out, with the
capture's timestamps as the receiver core's clock."""

from __future__ import annotations

from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from moldudp64.capture import CaptureWriter
from moldudp64.events import Event, MessagesDelivered, MessagesLost, SessionEnded
from moldudp64.exceptions import CaptureError
from moldudp64.replay import (
    MAX_SESSIONS,
    CaptureReplay,
    SessionReplay,
    replay_capture,
    replay_datagrams,
)
from moldudp64.wire import (
    RetransmissionPacket,
    build_end_of_session,
    build_heartbeat,
    build_packet,
)

A, B = "SESSIONA01", "SESSIONB02"
FEED = ("10.0.0.1", 40000), ("239.1.1.1", 5000)
SERVER = ("10.0.0.2", 5001)


def msg(seq: int) -> bytes:
    return b"M" + seq.to_bytes(8, "big")


def data(session: str, seq: int, count: int = 1) -> bytes:
    return build_packet(session, seq, [msg(s) for s in range(seq, seq + count)])


def at(ts: float, payload: bytes, src: object = FEED[0], dst: object = FEED[1]) -> tuple:
    return (ts, src, dst, payload)


def delivered(events: list[tuple[str, Event]], session: str = A) -> list[bytes]:
    return [
        m for name, e in events if name == session and isinstance(e, MessagesDelivered)
        for m in e.messages
    ]


def lost(events: list[tuple[str, Event]]) -> list[tuple[int, int]]:
    return [(e.first_seq, e.last_seq) for _, e in events if isinstance(e, MessagesLost)]


def test_two_interleaved_sessions_come_out_each_in_order() -> None:
    feed = []
    for seq in range(1, 21, 2):
        feed.append(at(seq, data(A, seq, 2)))
        feed.append(at(seq + 0.5, data(B, 100 + seq, 2)))
    feed += [at(30, build_end_of_session(A, 21)), at(30, build_heartbeat(B, 121))]
    events = list(replay_datagrams(feed))
    assert delivered(events, A) == [msg(s) for s in range(1, 21)]
    assert delivered(events, B) == [msg(s) for s in range(101, 121)]
    assert [name for name, e in events if isinstance(e, SessionEnded)] == [A]
    assert lost(events) == []


def feed_missing_5(late: float) -> list[tuple]:
    """Packets 1-10 a hundredth of a second apart, 5 missing, then 5 at ``late`` (as a
    re-request answer, from the server) and a heartbeat."""
    feed = [at(s / 100, data(A, s)) for s in range(1, 11) if s != 5]
    return [*feed, at(late, data(A, 5), src=SERVER, dst=FEED[0]),
            at(late + 1, build_heartbeat(A, 11))]


def test_a_gap_filled_within_the_grace_period_of_capture_time_is_not_lost() -> None:
    """Packet 5 comes 5 s (capture time) after its neighbours: within the 10 s grace."""
    events = list(replay_datagrams(feed_missing_5(5.0)))
    assert delivered(events) == [msg(s) for s in range(1, 11)]
    assert lost(events) == []


def test_a_gap_filled_after_the_grace_period_is_lost_and_the_late_copy_ignored() -> None:
    events = list(replay_datagrams(feed_missing_5(30.0)))
    assert lost(events) == [(5, 5)]
    assert delivered(events) == [msg(s) for s in range(1, 11) if s != 5]
    assert delivered(list(replay_datagrams(feed_missing_5(30.0), loss_grace=60.0))) == [
        msg(s) for s in range(1, 11)
    ]


def test_a_gap_still_open_at_the_end_of_the_capture_is_lost() -> None:
    feed = [at(0, data(A, 1)), at(0.1, data(A, 5)), at(0.2, build_heartbeat(A, 6))]
    events = list(replay_datagrams(feed, loss_grace=100.0))
    assert lost(events) == [(2, 4)]


def test_re_requests_are_counted_not_fed() -> None:
    got: dict[str, SessionReplay] = {}

    def keep(seen: SessionReplay, events: list[Event]) -> None:
        got[seen.name] = seen

    replay = CaptureReplay(keep)
    request = RetransmissionPacket(A, 2, 1).build()
    replay.feed([at(0, data(A, 1)), at(0.1, request, src=FEED[0], dst=SERVER),
                 at(0.2, data(A, 2)), at(0.3, build_heartbeat(A, 3))])
    replay.finish()
    (seen,) = replay.sessions.values()
    assert seen.requests == 1
    assert seen.core.stats.packets  # the data and heartbeat went to the core
    assert seen.endpoints == {FEED[1]}  # the request's destination is not an endpoint
    assert (seen.first_ts, seen.last_ts) == (0, 0.3)


def test_session_and_port_filters() -> None:
    feed = [at(0, data(A, 1)), at(0.1, data(B, 1)), at(0.2, build_heartbeat(A, 2)),
            at(0.3, build_heartbeat(B, 2)), at(0.4, data(A, 2), src=SERVER, dst=FEED[0])]
    events = list(replay_datagrams(feed, session=B))
    assert {name for name, _ in events} == {B}
    replay = CaptureReplay(lambda seen, events: None, port=5000)
    replay.feed(feed)
    replay.finish()
    assert replay.other_port == 1 and replay.answers_elsewhere == 1


def test_session_table_is_bounded() -> None:
    replay = CaptureReplay(lambda seen, events: None)
    replay.feed([at(0, data(f"X{i:09d}", 1)) for i in range(MAX_SESSIONS + 10)])
    assert len(replay.sessions) == MAX_SESSIONS
    assert replay.too_many_sessions == 10


def test_replay_capture_reads_a_pcap(tmp_path: Path) -> None:
    path = tmp_path / "feed.pcap"
    with CaptureWriter(path) as writer:
        for seq in range(1, 101, 10):
            writer.write(data(A, seq, 10), FEED[0], FEED[1], 1000.0 + seq)
        writer.write(build_end_of_session(A, 101), FEED[0], FEED[1], 1200.0)
    events = list(replay_capture(path))
    assert delivered(events) == [msg(s) for s in range(1, 101)]
    assert isinstance(events[-1][1], SessionEnded)


def test_a_damaged_capture_gives_what_came_before_then_raises(tmp_path: Path) -> None:
    path = tmp_path / "cut.pcap"
    with CaptureWriter(path) as writer:
        for seq in range(1, 51):
            writer.write(data(A, seq), FEED[0], FEED[1], 1000.0 + seq)
    path.write_bytes(path.read_bytes()[:-7])  # cut inside the last record
    seen: list[tuple[str, Event]] = []
    with pytest.raises(CaptureError):
        for item in replay_capture(path):
            seen.append(item)
    assert delivered(seen)[:48] == [msg(s) for s in range(1, 49)]


@settings(max_examples=200, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(st.tuples(st.floats(-1e9, 1e9), st.binary(max_size=80)), max_size=40))
def test_any_bytes_at_any_time_never_raise(items: list[tuple[float, bytes]]) -> None:
    """Hostile input: arbitrary payloads (some with a MoldUDP64 header's shape) and
    timestamps going backwards: the replay counts or drops, never raises."""
    feed = [at(ts, A.encode() + payload) if i % 2 else at(ts, payload)
            for i, (ts, payload) in enumerate(items)]
    for _ in replay_datagrams(feed):
        pass
