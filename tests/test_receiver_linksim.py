"""The receiver core against the real publisher and re-request server over a faulty link.

Property tests (hypothesis) over random loss, duplication, reordering and delay on every
hop: the receiver's output is exactly the published stream whenever recovery is possible,
and otherwise the published stream minus exactly the ranges it reported lost.
"""

from __future__ import annotations

import os
import random

from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from linksim import Faults, LinkSim, messages
from moldudp64.events import (
    Address,
    DatagramDropped,
    DatagramReceived,
    GapFilled,
    MessagesDelivered,
    MessagesLost,
    ServerDisabled,
    SessionChanged,
    SessionEnded,
    SessionStarted,
    Source,
)
from moldudp64.receiver import LOST_HELD_LIMIT, ReceiverConfig

SERVERS: list[Address] = [("127.0.0.1", 9001), ("127.0.0.1", 9002), ("127.0.0.1", 9003)]

#: MOLDUDP64_HUNT=<examples> runs a long randomised search instead of the quick fixed one.
_HUNT = int(os.environ.get("MOLDUDP64_HUNT", "0"))
SETTINGS = settings(
    max_examples=_HUNT or 30,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
    derandomize=not _HUNT,
)

probability = st.floats(0.0, 0.3)
batches = st.lists(st.integers(1, 250), min_size=1, max_size=8)


def random_messages(rng: random.Random, count: int, start: int) -> list[bytes]:
    """Messages of varied length (some empty), each naming its sequence number."""
    out = []
    for seq in range(start, start + count):
        body = b"%d:" % seq
        out.append(body + bytes(rng.randrange(256) for _ in range(rng.choice((0, 5, 30, 200)))))
    return out


def feed(sim: LinkSim, sizes: list[int], rng: random.Random) -> None:
    """Publish ``sizes`` batches with pauses, end the session, and let everything settle."""
    for size in sizes:
        sim.publish(random_messages(rng, size, len(sim.published) + 1))
        sim.run(rng.choice((0.0, 0.001, 0.02, 0.7)))
    sim.end_session(reliable=True)
    sim.settle()


@SETTINGS
@given(
    seed=st.integers(0, 2**32 - 1),
    drop=probability,
    duplicate=st.floats(0.0, 0.1),
    reorder=probability,
    request_drop=probability,
    answer_drop=probability,
    servers=st.integers(1, 3),
    sizes=batches,
    b_line=st.booleans(),
    request_delay=st.sampled_from([0.0, 0.0005, 0.01]),
)
def test_output_is_the_published_stream_when_recovery_is_possible(
    seed: int,
    drop: float,
    duplicate: float,
    reorder: float,
    request_drop: float,
    answer_drop: float,
    servers: int,
    sizes: list[int],
    b_line: bool,
    request_delay: float,
) -> None:
    config = ReceiverConfig(
        rerequest_server_addrs=SERVERS[:servers],
        request_delay=request_delay,
        max_request_attempts=60,
        max_rerequest_retries=10_000,
    )
    live = Faults(drop=drop, duplicate=duplicate, reorder=reorder)
    sim = LinkSim(
        config,
        seed=seed,
        line_a=live,
        line_b=Faults(drop=drop, duplicate=duplicate, reorder=reorder, delay=0.002)
        if b_line
        else None,
        requests=Faults(drop=request_drop),
        answers=Faults(drop=answer_drop, duplicate=duplicate, reorder=reorder),
    )
    feed(sim, sizes, random.Random(seed))
    assert sim.check_exact() == []
    assert sim.session_ended() == 1 and sim.core.ended
    stats = sim.core.stats
    assert stats.messages_delivered == len(sim.published)
    assert stats.messages_recovered == stats.gap_messages
    assert stats.held_packets == 0 and stats.open_gaps == 0


@SETTINGS
# all the session's data lost on the line, only its ends (and heartbeats) arrive while one
# datagram of it may wait: followed on its ends, it must still end, its loss reported
@example(seed=1, drop=0.5, reorder=0.0, answer_drop=0.0, dead=0, servers=0, attempts=1, held=1,
         sizes=[1], per_request=100, answer_payload=1452)
@example(seed=1, drop=0.5, reorder=0.0, answer_drop=0.0, dead=0, servers=1, attempts=1, held=1,
         sizes=[1], per_request=100, answer_payload=1452)
# a hunt example: only the reliable end of session came through (one datagram)
@example(seed=1592, drop=0.59375, reorder=0.0, answer_drop=0.0, dead=0, servers=0, attempts=1,
         held=1, sizes=[1], per_request=1, answer_payload=40)
@given(
    seed=st.integers(0, 2**32 - 1),
    drop=st.floats(0.0, 0.6),
    reorder=probability,
    answer_drop=st.floats(0.0, 1.0),
    dead=st.integers(0, 3),
    servers=st.integers(0, 3),
    attempts=st.integers(1, 4),
    held=st.integers(1, 20),
    sizes=batches,
    per_request=st.integers(1, 100),
    answer_payload=st.sampled_from([40, 300, 1452]),
)
def test_output_is_the_stream_minus_exactly_the_ranges_reported_lost(
    seed: int,
    drop: float,
    reorder: float,
    answer_drop: float,
    dead: int,
    servers: int,
    attempts: int,
    held: int,
    sizes: list[int],
    per_request: int,
    answer_payload: int,
) -> None:
    addrs = SERVERS[:servers]
    config = ReceiverConfig(
        rerequest_server_addrs=addrs,
        max_request_attempts=attempts,
        max_rerequest_retries=3,
        max_held_packets=held,
        max_messages_per_request=per_request,
        max_requests_in_flight=4,
        server_retry_interval=0.5,
    )
    sim = LinkSim(
        config,
        seed=seed,
        line_a=Faults(drop=drop, duplicate=0.05, reorder=reorder),
        answers=Faults(drop=answer_drop, reorder=reorder),
        dead_servers=addrs[:dead],
        answer_payload=answer_payload,
    )
    feed(sim, sizes, random.Random(seed))
    stats = sim.core.stats
    if sum(stats.packets.values()) == 1:
        # one datagram of the session came through (all else lost on the line, no server
        # answered): one datagram is what a stray sends, never followed (README: what it
        # cannot know); its messages are neither delivered nor reported
        assert stats.session is None and sim.events == [
            DatagramDropped("wrong_session", Source.LINE_A, None)
        ]
        return
    lost = sim.check_exact()
    lost_count = sum(last - first + 1 for first, last, _ in lost)
    assert stats.messages_lost == lost_count
    assert stats.messages_delivered + lost_count == len(sim.published)
    assert stats.peak_held_packets <= held
    assert sim.session_ended() == 1
    stream_events = [
        e for e in sim.events if isinstance(e, MessagesDelivered | MessagesLost | SessionEnded)
    ]
    assert isinstance(stream_events[-1], SessionEnded)
    if not addrs:
        assert stats.messages_recovered + lost_count >= stats.gap_messages
    if dead == servers and servers and lost_count == 0:
        # every server dead: only reordering or the held bound can have closed the gaps
        assert stats.messages_recovered == stats.gap_messages


def test_a_dead_server_costs_one_timeout_then_the_live_one_recovers_everything() -> None:
    config = ReceiverConfig(
        rerequest_server_addrs=SERVERS[:2],
        max_rerequest_retries=3,
        max_request_attempts=20,
    )
    sim = LinkSim(config, seed=7, line_a=Faults(drop=0.1), dead_servers=[SERVERS[0]])
    feed(sim, [200] * 20, random.Random(7))
    assert sim.check_exact() == []
    stats = sim.core.stats
    assert stats.answers[SERVERS[0]] == 0 and stats.answers[SERVERS[1]] > 0
    # once the live server has answered, the dead one is asked only when it fails too
    assert stats.requests_sent[SERVERS[0]] == stats.timeouts[SERVERS[0]] == 1
    assert not [e for e in sim.events if isinstance(e, ServerDisabled)]


def test_no_servers_loss_is_reported_not_silent() -> None:
    sim = LinkSim(ReceiverConfig(), seed=3, line_a=Faults(drop=0.2, reorder=0.2))
    feed(sim, [100] * 10, random.Random(3))
    lost = sim.check_exact()
    assert lost and all(reason == "no re-request servers" for _, _, reason in lost)
    assert sim.session_ended() == 1


def test_held_bound_keeps_memory_bounded_under_heavy_loss() -> None:
    config = ReceiverConfig(
        rerequest_server_addrs=SERVERS[:1], max_held_packets=5, max_request_attempts=50
    )
    sim = LinkSim(config, seed=11, line_a=Faults(drop=0.3), dead_servers=SERVERS[:1])
    feed(sim, [300] * 10, random.Random(11))
    lost = sim.check_exact()
    assert any(reason == LOST_HELD_LIMIT for _, _, reason in lost)
    assert sim.core.stats.peak_held_packets <= 5


def test_raw_mode_over_the_link_surfaces_every_datagram_and_recovers() -> None:
    config = ReceiverConfig(rerequest_server_addrs=SERVERS[:1], raw=True)
    sim = LinkSim(config, seed=5, line_a=Faults(drop=0.1, duplicate=0.05, reorder=0.1))
    rng = random.Random(5)
    feed(sim, [150] * 8, rng)
    received = [e for e in sim.events if isinstance(e, DatagramReceived)]
    seen: dict[int, bytes] = {}
    for event in received:
        data = event.data
        count = int.from_bytes(data[18:20], "big")
        if 0 < count < 0xFFFF:
            seq = int.from_bytes(data[10:18], "big")
            pos = 20
            for k in range(count):
                length = int.from_bytes(data[pos : pos + 2], "big")
                seen.setdefault(seq + k, data[pos + 2 : pos + 2 + length])
                pos += 2 + length
    assert [seen[s] for s in sorted(seen)] == sim.published
    assert any(e.source is Source.RETRANSMISSION for e in received)
    assert not [e for e in sim.events if isinstance(e, MessagesLost)]
    assert sim.core.ended


def test_messages_helper_is_distinct() -> None:
    msgs = messages(5, start=10)
    assert len(set(msgs)) == 5 and msgs[0].startswith(b"M0000010")


def session_change(
    seed: int,
    drop: float,
    reorder: float,
    answer_drop: float,
    first: list[int],
    second: list[int],
    pause: float,
) -> LinkSim:
    """Publish ``first``, end the session, wait ``pause``, publish ``second`` as a new
    session over a faulty link with two servers; check both sessions arrived whole."""
    config = ReceiverConfig(
        rerequest_server_addrs=SERVERS[:2],
        max_request_attempts=60,
        max_rerequest_retries=10_000,
    )
    sim = LinkSim(
        config,
        seed=seed,
        line_a=Faults(drop=drop, duplicate=0.02, reorder=reorder),
        answers=Faults(drop=answer_drop, reorder=reorder),
    )
    rng = random.Random(seed)
    for size in first:
        sim.publish(random_messages(rng, size, len(sim.published) + 1))
        sim.run(rng.choice((0.0, 0.001, 0.02)))
    sim.end_session(reliable=True)
    sim.run(pause)
    sim.new_session("SESSION002")
    feed(sim, second, rng)
    followed = [e.session for e in sim.events if isinstance(e, SessionStarted)]
    followed += [e.new_session for e in sim.events if isinstance(e, SessionChanged)]
    assert set(sim.live_data_arrived) <= set(followed)
    for name in followed:
        assert sim.check_exact(name) == []
    if followed != ["SESSION001", "SESSION002"]:
        # a session whose data were all lost on the line showed only its ends: it never
        # wins over one with data (README, "Sessions": a stray's ends must not capture the
        # receiver), so the receiver never knew it
        unknown = [e for e in sim.events if getattr(e, "session", followed[0]) not in followed]
        assert len(followed) == 1 and not unknown
        assert sim.core.session == followed[0] and sim.core.ended
        return sim
    changed = [e for e in sim.events if isinstance(e, SessionChanged)]
    assert changed == [SessionChanged("SESSION001", "SESSION002", 1)]
    ended = [e for e in sim.events if isinstance(e, SessionEnded)]
    assert [e.session for e in ended] == ["SESSION001", "SESSION002"]
    assert sim.events.index(ended[0]) < sim.events.index(changed[0])
    assert sim.core.session == "SESSION002" and sim.core.ended
    return sim


@SETTINGS
# hunt examples: the first session's one data packet was lost on the line, the second's
@example(seed=1, drop=0.25, reorder=0.0, answer_drop=0.0, first=[1], second=[1], pause=0.006)
@example(seed=238, drop=0.25, reorder=0.0, answer_drop=0.0, first=[1], second=[1], pause=0.006)
@example(seed=20974, drop=0.25, reorder=0.0, answer_drop=0.0, first=[1], second=[1], pause=0.006)
@given(
    seed=st.integers(0, 2**32 - 1),
    drop=probability,
    reorder=probability,
    answer_drop=probability,
    first=batches,
    second=batches,
    # the old session's end must be seen before the new one starts (its tail is unknowable
    # otherwise), but gaps may still be open: the core finishes them first
    pause=st.sampled_from([0.006, 0.01, 0.05, 2.0]),
)
def test_session_change_recovers_the_old_session_then_follows_the_new_one(
    seed: int,
    drop: float,
    reorder: float,
    answer_drop: float,
    first: list[int],
    second: list[int],
    pause: float,
) -> None:
    session_change(seed, drop, reorder, answer_drop, first, second, pause)


def test_a_first_session_seen_only_through_its_ends_is_never_followed_after_the_next() -> None:
    """From a hunt: the first session's only data packet is lost, its ends are seen 6 ms
    before the second session's data. At the start the session with data is followed (a
    session seen only through its ends never wins over one with data: two forged ends
    before the feed must not capture the receiver), and once it ended, the first one,
    seen before it, is older than it and never followed after it (no session comes back,
    sessions stay in line order): the receiver never knew it (it recovered it after the
    second, out of line order)."""
    sim = session_change(
        seed=1, drop=0.25, reorder=0.28125, answer_drop=0.0, first=[1], second=[1], pause=0.006
    )
    assert [e.session for e in sim.events if isinstance(e, SessionStarted)] == ["SESSION002"]
    assert not [e for e in sim.events if isinstance(e, SessionChanged)]


def test_an_ended_session_finishes_its_gaps_though_the_next_one_is_live_past_stale_after() -> None:
    # from a hunt example (seed 803): eight answers in a row for 102..178 of the old
    # session were lost, so its recovery went on past stale_after (3 s) after the old
    # session's last packet while the new session was live; the switch gave 102..178 up as
    # "session changed" with 52 of its 60 attempts left, though both servers held them.
    # (Since large gaps are asked for in pieces, seed 803 recovers in one round; seed 1652
    # loses eight answers in a row for 423..437 instead.)
    sim = session_change(1652, 0.16, 0.0, 0.29, [219, 185, 222], [74, 54], 0.05)
    filled = [e for e in sim.events if isinstance(e, GapFilled) and e.session == "SESSION001"]
    changed = next(e for e in sim.events if isinstance(e, SessionChanged))
    assert (filled[-1].first_seq, filled[-1].last_seq) == (423, 437)
    assert sim.events.index(filled[-1]) < sim.events.index(changed)
    # asked nine times (1 s apart at the end): eight answers lost, the ninth came through
    asked = [
        r
        for r, _ in sim.requests_seen
        if r[:10] == b"SESSION001" and r[10:18] == (423).to_bytes(8, "big")
    ]
    assert len(asked) == 9
