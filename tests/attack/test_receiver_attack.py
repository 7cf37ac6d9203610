"""Hostile-network tests of the receiver core's promise ("data wins"), on a simulated clock.

Written from the outside (README, docstrings, issue 18), not from receiver.py. Each test is
one attack a forger on the network can make for the price of a few datagrams, with a real
publisher, an honest re-request server holding every message (tests/linksim.py) and the
real end of session. The promise every test checks: every real message is delivered
exactly once and in order; nothing is reported lost that the honest server holds or that
nothing real reached; a forged datagram never ends the session, never captures the
receiver into another session, never takes a server out of rotation; the real end of
session ends the session. The one forgery the README admits it cannot beat (data carrying
a number before the real message with that number arrives) is sent only by the
last-message test and the property, which excuse what it replaces. Each test's docstring
says what was promised and what happens instead (measured on branch ``receiver``).
"""

from __future__ import annotations

import pytest
from hypothesis import Phase, example, given, settings
from hypothesis import strategies as st

from linksim import Faults, LinkSim, messages
from moldudp64.events import (
    Address,
    Event,
    MessagesDelivered,
    MessagesLost,
    ServerDisabled,
    SessionChanged,
    SessionEnded,
    SessionStarted,
    Source,
)
from moldudp64.receiver import ReceiverConfig, ReceiverCore
from moldudp64.wire import build_end_of_session, build_heartbeat, build_packet

SESSION = "SESSION001"
STRAY = "OTHER00001"
SERVER: Address = ("127.0.0.1", 30002)
A, B = Source.LINE_A, Source.LINE_B


def link(*, line_b: bool = False, seed: int = 0) -> LinkSim:
    """A reliable feed (lines, requests and answers lose nothing) with one honest server."""
    config = ReceiverConfig(rerequest_server_addrs=[SERVER])
    return LinkSim(config, session=SESSION, seed=seed, line_b=Faults() if line_b else None)


def feed(
    sim: LinkSim,
    count: int,
    forgeries: dict[int, list[tuple[bytes, Source]]],
    rate: float = 100.0,
) -> None:
    """Publish ``count`` messages one per packet at ``rate``; before publishing the i-th
    (0-based; ``count`` means after the last) put ``forgeries[i]`` on the wire; then the
    publisher's real end of session, and run until everything settles."""
    for i in range(count + 1):
        for data, source in forgeries.get(i, []):
            sim.inject(data, source)
        if i < count:
            sim.publish(messages(1, start=i + 1))
            sim.run(1 / rate)
    sim.end_session(reliable=True)
    sim.settle(limit=60.0)


def delivered(events: list[Event], session: str = SESSION) -> list[tuple[int, bytes]]:
    """``(seq, message)`` of every message delivered for ``session``, in delivery order."""
    return [
        (seq, msg)
        for e in events
        if isinstance(e, MessagesDelivered) and e.session == session
        for seq, msg in enumerate(e.messages, start=e.seq_num)
    ]


def lost(events: list[Event]) -> list[tuple[str, int, int, str]]:
    """Every ``MessagesLost`` as ``(session, first, last, reason)``."""
    return [
        (e.session, e.first_seq, e.last_seq, e.reason)
        for e in events
        if isinstance(e, MessagesLost)
    ]


def ends(events: list[Event]) -> list[tuple[str, int]]:
    """Every ``SessionEnded`` as ``(session, next_seq_num)``."""
    return [(e.session, e.next_seq_num) for e in events if isinstance(e, SessionEnded)]


def assert_real_stream_intact(sim: LinkSim, count: int) -> None:
    """The promise: all ``count`` real messages delivered once in order, nothing lost,
    the session ended once, by the real end (``count + 1``)."""
    assert lost(sim.events) == []
    assert delivered(sim.events) == list(enumerate(sim.published, start=1))
    assert ends(sim.events) == [(SESSION, count + 1)]


def test_one_forged_end_of_session_beyond_the_real_end_is_not_believed() -> None:
    """Promise: a forged end of session never ends a session on its own and numbers
    nothing real reached are never reported lost; the real end ends the session.

    Attack: ONE forged end of session naming 251, sent once at message 50 of a live
    200-message feed (any time during the session works, any number up to about 1,024
    beyond the real end; 302 sent just before the real end works too).
    What happens: the real end of session (201, repeated by the publisher) is dropped as
    ``end_of_session_contradicted``, the forged one is believed once the feed falls
    quiet: ``MessagesLost(201..250, 'request attempts exhausted')`` for numbers that never
    existed, then ``SessionEnded(next_seq_num=251)``. Live with the real ``Publisher`` on
    loopback multicast (300 messages, forged end 351): ``MoldUDP64`` reports
    ``MessagesLost(301..350)`` and ``SessionEnded(351)``; ``listen`` exits 3 with "50 lost
    ... messages lost for good: 301-350" and counts the 250 live messages as "recovered".
    """
    sim = link()
    feed(sim, 200, {50: [(build_end_of_session(SESSION, 251), A)]})
    assert_real_stream_intact(sim, 200)


def test_two_ends_of_a_stray_session_before_the_feed_do_not_capture_the_receiver() -> None:
    """Promise: a forged datagram of any session, any time (including before the real
    feed), never captures the receiver into another session; a session that carries no
    data never wins ("a session of heartbeats alone never wins"); nothing real is
    reported lost.

    Attack: two end-of-session datagrams of another session (``OTHER00001``, number 10),
    one on each line 10 ms apart, just before the real feed starts.
    What happens: ``SessionStarted(OTHER00001)``, requests for OTHER00001 1..9 go to the
    real server, every real packet is held for ``stale_after`` (3 s), then
    ``MessagesLost(OTHER00001, 1..9)`` and ``SessionEnded(OTHER00001)`` come before the
    real session. The high-level client ends iteration at that first ``SessionEnded``:
    live on loopback multicast, ``MoldUDP64.messages()`` yields 0 of 400 real messages,
    and ``moldudp64 listen`` (real ``Publisher``, 300 messages, the two stray ends 60 ms
    apart on line A) writes 0 messages and exits 3: "9 lost ... messages lost for good:
    1-9".
    """
    sim = link(line_b=True)
    sim.inject(build_end_of_session(STRAY, 10), B)
    sim.inject(build_end_of_session(STRAY, 10), A, delay=0.01)
    sim.run(0.02)
    feed(sim, 200, {})
    starts = [e.session for e in sim.events if isinstance(e, SessionStarted)]
    assert starts == [SESSION]
    assert not any(isinstance(e, SessionChanged) for e in sim.events)
    assert all(request[:10] == SESSION.encode() for request, _ in sim.requests_seen)
    assert_real_stream_intact(sim, 200)


def test_a_stray_session_of_ends_alone_is_not_followed_after_the_real_end() -> None:
    """Promise: a session that never carried data is never followed ("first or next"),
    and numbers nothing real reached are not reported lost.

    Attack: a heartbeat and an end of session of another session (number 10), at
    messages 50 and 60 of the real feed.
    What happens: after the real ``SessionEnded(SESSION001, 201)`` the receiver switches
    to the stray (``SessionChanged``), asks the server for its numbers and reports
    ``MessagesLost(OTHER00001, 1..9)`` and ``SessionEnded(OTHER00001, 10)``: a consumer of
    every session (``events()``, capture replay) sees a phantom session with 9 lost
    messages.
    """
    sim = link(line_b=True)
    feed(
        sim,
        200,
        {
            50: [(build_heartbeat(STRAY, 10), B)],
            60: [(build_end_of_session(STRAY, 10), A)],
        },
    )
    assert not any(isinstance(e, SessionChanged) for e in sim.events)
    assert_real_stream_intact(sim, 200)


def test_one_forged_heartbeat_repeated_five_times_does_not_make_real_data_lost() -> None:
    """Promise: real data that arrives on a line is delivered, never reported lost; a
    forged datagram never makes real data lost; the real end ends the session.

    Attack: the same forged heartbeat (next number 1000) five times on line A, 100 ms
    apart, on a live 100 msg/s feed of 600 messages (four copies do nothing).
    What happens: the five copies count as the five witnesses that "the feed passed" the
    gap 21..999, which is given up after its attempts: ``MessagesLost(476..999)``,
    although 476..600 then arrive on line A (dropped as duplicates) and the server holds
    them; the real end of session (601) is dropped as ``end_of_session_below_data`` and
    the session never ends. Same live (real ``Publisher``, ``MoldUDP64``, loopback
    multicast): 517 of 600 delivered, ``MessagesLost(518..999)``, no ``SessionEnded``.
    Each copy alone, or four of them, does nothing.
    """
    sim = link()
    forged = build_heartbeat(SESSION, 1000)
    feed(sim, 600, {20 + 10 * k: [(forged, A)] for k in range(5)})
    assert_real_stream_intact(sim, 600)


def test_forged_heartbeats_counting_up_on_line_b_do_not_make_real_data_lost() -> None:
    """Promise: real data that arrives on a line (here on both) is never reported lost;
    a forged datagram never takes a server out of rotation; the real end ends the session.

    Attack: a forged clock on line B: a heartbeat every 100 ms, each 1,000 beyond the last
    (the mirror of issue 18 item 3, which counted down), over a 1,000-message feed at
    100 msg/s.
    What happens: each forged heartbeat is a witness that "the feed passed" the gaps the
    previous ones opened: ``MessagesLost(466..1000)`` and on, 535 real messages that
    arrived on lines A and B reported lost, 97,495 numbers lost in all, the only server
    taken out of rotation (``ServerDisabled``), and the real end (1001) dropped as
    ``end_of_session_below_data``: the session never ends.
    """
    sim = link(line_b=True)
    forgeries = {
        i: [(build_heartbeat(SESSION, i + 1 + 1000 * (i // 10)), B)] for i in range(10, 1000, 10)
    }
    feed(sim, 1000, forgeries)
    assert not any(isinstance(e, ServerDisabled) for e in sim.events)
    assert_real_stream_intact(sim, 1000)


def test_forged_far_heartbeat_pairs_do_not_take_the_server_out_of_rotation() -> None:
    """Promise: a server is never taken out of rotation for not answering numbers
    nothing real reached, and requests for numbers beyond the real feed stay bounded.

    Attack: three pairs of forged heartbeats far ahead (10^6 and 10^6+1, 2*10^6 and
    2*10^6+1, 3*10^6 and 3*10^6+1; one of each pair per line), at messages 20, 40, 60 of
    a 600-message feed: six datagrams.
    What happens: the receiver sweeps the phantom gap 21..999,999 in 1,024-message
    requests (about 2,300 requests to the one server in 6 s) and takes the only, honest
    server out of rotation (``ServerDisabled(failures=100)``).
    """
    sim = link(line_b=True)
    million = 10**6
    forgeries = {
        20 * k: [
            (build_heartbeat(SESSION, k * million), A),
            (build_heartbeat(SESSION, k * million + 1), B),
        ]
        for k in (1, 2, 3)
    }
    feed(sim, 600, forgeries)
    assert not any(isinstance(e, ServerDisabled) for e in sim.events)
    assert len(sim.requests_seen) <= 100
    assert_real_stream_intact(sim, 600)


def test_forged_heartbeat_and_end_of_session_ahead_do_not_stop_the_real_end() -> None:
    """Promise: every real end of session ends the session (no hang); a forged datagram
    may delay work, never keep the session from ending; nothing real is lost.

    Attack: two datagrams. A forged heartbeat naming 701 (600 ahead) at message 100 of a
    200-message feed, and a forged end of session naming 1601 half a second into the real
    end-of-session period (the publisher repeats its end for 2 s, the ``Publisher``
    default). Same live, on loopback multicast with the real ``Publisher`` and
    ``MoldUDP64``: 200 delivered, then nothing, no ``SessionEnded``.
    What happens: the forged end is never believed (too many unpassed numbers before it),
    but every real end of session (201) is dropped as ``end_of_session_contradicted``:
    no ``SessionEnded`` ever, the gaps of 1,400 phantom numbers stay open, the receiver goes
    stale; ``listen`` would run until ``--idle-timeout``.
    """
    config = ReceiverConfig(rerequest_server_addrs=[SERVER])
    sim = LinkSim(config, session=SESSION, end_of_session_duration=2.0, heartbeat_interval=1.0)
    for i in range(200):
        if i == 100:
            sim.inject(build_heartbeat(SESSION, 701), A)
        sim.publish(messages(1, start=i + 1))
        sim.run(0.01)
    sim.end_session(reliable=True)
    sim.inject(build_end_of_session(SESSION, 1601), A, delay=0.5)
    sim.settle(limit=60.0)
    assert_real_stream_intact(sim, 200)


def test_a_stray_session_backlog_does_not_make_a_real_gap_lost() -> None:
    """Promise: real data an honest server holds is recovered, never reported lost;
    datagrams of another session never make real data lost (memory stays bounded by
    dropping *them*, not real gaps).

    Attack: 50,000 one-message datagrams of another session on line B (1.5 MB of
    traffic; the default ``max_held_packets``), at message 100 of the real feed; then one
    real packet (101) is lost on line A, as happens on any feed.
    What happens: the stray backlog waits in the held bound for a session switch that
    never comes, so the real gap is given up at once without a single request:
    ``MessagesLost(101..101, 'held-packet limit exceeded')`` although the server holds it.
    """
    sim = link()
    for i in range(100):
        sim.publish(messages(1, start=i + 1))
        sim.run(0.01)
    for n in range(1, 50_001):
        sim.core.receive_datagram(build_packet(STRAY, n, [b"z"]), B, sim.now)
    sim.line_a.drop = 1.0  # the line loses real packet 101
    sim.publish(messages(1, start=101))
    sim.line_a.drop = 0.0
    sim.run(0.01)
    for i in range(101, 200):
        sim.publish(messages(1, start=i + 1))
        sim.run(0.01)
    sim.end_session(reliable=True)
    sim.settle(limit=60.0)
    assert_real_stream_intact(sim, 200)


def test_real_end_still_ends_the_session_after_forged_data_past_the_last_message() -> None:
    """Promise: every real end of session ends the session (no hang). The admitted
    exception lets forged data at exactly the next number be delivered, but not stop the
    session from ever ending.

    Attack: one forged data packet at 201, right after the last real message (200) was
    delivered and before the real end of session (201).
    What happens: the forged message is delivered (admitted), then every real end of
    session is dropped as ``end_of_session_below_data``: no ``SessionEnded`` ever, the
    receiver waits forever (``listen`` until ``--idle-timeout``, exit 4). Expected: the
    session ends (with an event naming what was delivered beyond the real end).
    """
    sim = link()
    for i in range(200):
        sim.publish(messages(1, start=i + 1))
        sim.run(0.01)
    sim.inject(build_packet(SESSION, 201, [b"FORGED"]), A)
    sim.run(0.01)
    sim.end_session(reliable=True)
    sim.settle(limit=60.0)
    assert delivered(sim.events)[:200] == list(enumerate(sim.published, start=1))
    assert [name for name, _ in ends(sim.events)] == [SESSION]


@pytest.mark.parametrize("kind", ["heartbeat", "end_of_session"])
def test_start_from_first_seen_is_not_set_by_a_forged_heartbeat_or_end(kind: str) -> None:
    """Promise: a forged datagram before the real feed never ends the session, and real
    data of the followed session is delivered or named, never only counted. With
    ``start_from_first_seen`` a heartbeat or an end of session carries no data, so it
    should not fix where the stream starts ("heartbeats alone never win").

    Attack: ``start_from_first_seen=True`` (join wherever the feed is); one forged
    heartbeat, or one forged end of session, naming 1,000,000 before the real feed, which
    runs 5000..5200 and then ends (5201, repeated for 3 s).
    What happens: ``SessionStarted(seq_num=1000000)``; all 201 real messages are only
    counted (``stats.messages_before_start``), no event names them; the real end is
    dropped as ``end_of_session_below_data``. With the forged end, the session ends at
    once on that single datagram (``SessionEnded(1000000)``), 0 messages delivered;
    with the heartbeat it never ends.
    """
    core = ReceiverCore(ReceiverConfig(rerequest_server_addrs=[SERVER], start_from_first_seen=True))
    build = build_heartbeat if kind == "heartbeat" else build_end_of_session
    now = 0.0
    core.receive_datagram(build(SESSION, 1_000_000), B, now)
    published = messages(201, start=5000)
    for seq, message in enumerate(published, start=5000):
        now += 0.01
        core.receive_datagram(build_packet(SESSION, seq, [message]), A, now)
    for _ in range(30):
        now += 0.1
        core.receive_datagram(build_end_of_session(SESSION, 5201), A, now)
        timer = core.get_timer()
        if timer is not None and timer <= now:
            core.handle_timer(now)
    for _ in range(100):  # let every timer run out
        timer = core.get_timer()
        if timer is None:
            break
        now = max(now, timer)
        core.handle_timer(now)
    events = core.events_received()
    starts = [e.seq_num for e in events if isinstance(e, SessionStarted)]
    assert starts == [5000]
    assert lost(events) == []
    assert delivered(events) == list(enumerate(published, start=5000))
    assert ends(events) == [(SESSION, 5201)]


class _LossyToOneNumber(LinkSim):
    """A link whose request path loses the first ``lose`` requests that start at 101."""

    lose = 3

    def _serve(self, request: bytes, server: Address) -> None:
        if int.from_bytes(request[10:18], "big") == 101 and self.lose > 0:
            self.lose -= 1
            return
        super()._serve(request, server)


def test_a_forged_heartbeat_does_not_use_up_a_real_gaps_request_attempts() -> None:
    """Promise: real data an honest server holds is never reported lost because of a
    forged datagram; a real gap gets its ``max_request_attempts`` (8) whatever a forger
    sent (the forged datagram may delay or bound work, not make real data lost).

    Attack: one forged heartbeat naming 523 (500 ahead) at message 22; later real
    message 101 is lost on the line and the first 3 requests for it are lost too (a
    lossy request path; without the forgery it is recovered by the 4th request).
    What happens: the five requests for the front of the phantom range (23..522,
    28..522, ...; their answers could never reach 101: it was not yet published) are
    charged to the gap that 101 falls into, so 101 gets only 3 requests of its own:
    ``MessagesLost(101..101, 'request attempts exhausted')``. With 20% loss on the lines
    and on the request path, the same single forged heartbeat makes real messages lost
    in 24 of 100 seeded runs, against 0 of 100 without it.
    """
    sim = _LossyToOneNumber(ReceiverConfig(rerequest_server_addrs=[SERVER]), session=SESSION)
    for i in range(200):
        if i == 22:
            sim.inject(build_heartbeat(SESSION, 523), A)
        sim.line_a.drop = 1.0 if i == 100 else 0.0  # the line loses real message 101
        sim.publish(messages(1, start=i + 1))
        sim.run(0.01)
    sim.line_a.drop = 0.0
    sim.end_session(reliable=True)
    sim.settle(limit=60.0)
    assert_real_stream_intact(sim, 200)


# -- a property: any few forged datagrams against a lossy real feed -----------------------

_OFFSETS = (-150, -1, 0, 1, 2, 5, 50, 500, 1023, 1024, 1025, 2000, 10**6, 10**15)
_forgery = st.tuples(
    st.integers(0, 120),  # before the i-th real message (0: before the feed; 120: after it)
    st.sampled_from(["data", "heartbeat", "end"]),
    st.sampled_from([SESSION, SESSION, SESSION, STRAY]),
    st.sampled_from(_OFFSETS),  # the number it names, relative to the next real number
    st.sampled_from([A, B, Source.RETRANSMISSION]),  # RETRANSMISSION: from a non-server
    st.sampled_from([0.0, 0.003, 0.06, 0.5]),  # extra delay on the way
)


#: No shrinking (a failing property would spend minutes minimising); no example database.
@settings(
    max_examples=300,
    deadline=None,
    derandomize=True,
    database=None,
    phases=(Phase.explicit, Phase.generate),
)
# a hunt finding (1,000 random examples): forged data of the followed session 500 ahead
# and a forged end at +1023, both before the feed; the real end (121) was refused as
# below the forged data held, each repeat again, while the forged end, seen once, kept
# the claim: it was believed and 121..500, 503..1023 (never published) reported lost.
# Now the real end, repeated more often than the kept one, takes its place.
@example(
    forgeries=[(0, "data", SESSION, 500, A, 0.0), (0, "end", SESSION, 1023, A, 0.0)],
    drop=0.0,
    seed=0,
)
@given(
    forgeries=st.lists(_forgery, min_size=1, max_size=3),
    drop=st.sampled_from([0.0, 0.05, 0.2]),
    seed=st.integers(0, 2**16),
)
def test_a_few_forged_datagrams_never_break_the_promise(
    forgeries: list[tuple[int, str, str, int, Source, float]], drop: float, seed: int
) -> None:
    """Promise, as a property: with one honest server, a real 120-message feed with loss
    on both lines, its real end, and up to three forged datagrams of any kind, session,
    number, line and time: every real message is delivered once in order, nothing is
    reported lost, no server goes out of rotation, no other session is started, and the
    session ends once, at the real end. Excused only: forged data of the followed session
    at a number not yet delivered when it arrives (the README's admitted limit, wider
    than "exactly the next number"), whose real message may be replaced, and data beyond
    the end (named by ``MessagesAfterEnd``). Another session's forgeries are heartbeats
    and ends only (two of its data datagrams before the feed are the README's other
    admitted limit).

    What happens: derandomized hypothesis finds counterexamples at once (e.g. a single
    forged end of session of the followed session a few numbers beyond the real end,
    above; or two ends of another session).
    """
    count = 120
    sim = LinkSim(
        ReceiverConfig(rerequest_server_addrs=[SERVER]),
        session=SESSION,
        seed=seed,
        line_a=Faults(drop=drop),
        line_b=Faults(drop=drop),
    )
    excused: set[int] = set()
    plan: dict[int, list[tuple[str, str, int, Source, float]]] = {}
    for at, kind, session, offset, source, delay in forgeries:
        plan.setdefault(at, []).append((kind, session, offset, source, delay))
    for i in range(count + 1):
        for kind, session, offset, source, delay in plan.get(i, []):
            if session == STRAY and kind == "data":
                kind = "heartbeat"  # stray data before the feed is an admitted limit
            seq = max(0, i + 1 + offset)
            if kind == "data":
                seq = min(max(seq, 1), 2**64 - 3)
                data = build_packet(session, seq, [b"FORGED", b"FORGED"])
                if session == SESSION and source is not Source.RETRANSMISSION:
                    start = sim.core.next_seq_num or 1
                    excused.update(n for n in (seq, seq + 1) if n >= start)
            elif kind == "heartbeat":
                data = build_heartbeat(session, seq)
            else:
                data = build_end_of_session(session, seq)
            stranger = ("10.6.6.6", 9) if source is Source.RETRANSMISSION else None
            sim.inject(data, source, delay=delay, addr=stranger)
        if i < count:
            sim.publish(messages(1, start=i + 1))
            sim.run(0.01)
    sim.end_session(reliable=True)
    sim.settle(limit=60.0)

    assert lost(sim.events) == []
    assert not any(isinstance(e, ServerDisabled) for e in sim.events)
    assert [e.session for e in sim.events if isinstance(e, SessionStarted)] == [SESSION]
    got = dict(delivered(sim.events))
    for seq, message in enumerate(sim.published, start=1):
        if seq not in excused:
            assert got.get(seq) == message, seq
    session_ends = [end for name, end in ends(sim.events) if name == SESSION]
    if count + 1 in excused:
        assert len(session_ends) == 1
    else:
        assert session_ends == [count + 1]


def test_a_forged_end_is_not_believed_because_one_real_heartbeat_was_lost() -> None:
    """Promise: a forged end of session never ends the session on its own; the README
    admits only a forged end sent while the feed is *silent* (no data, no heartbeats)
    for ``end_confirm``.

    Attack: a quiet period of a live feed whose publisher heartbeats every second (the
    ``Publisher`` default and the spec's "typically once a second"): one forged end of
    session at exactly the next number. One real heartbeat is then lost on the line, as
    any UDP datagram may be; the next ones arrive on time.
    What happens: ``end_confirm`` (1.5 s) tolerates not one lost heartbeat (1 s
    interval), so the forged end is believed: ``SessionEnded(51)``, and the 50 real
    messages that follow are not delivered (50 ``MessagesAfterEnd`` events, one per
    message; ``listen`` would exit 3). With the heartbeat not lost, all 100 arrive.
    """
    sim = LinkSim(
        ReceiverConfig(rerequest_server_addrs=[SERVER]),
        session=SESSION,
        heartbeat_interval=1.0,
        end_of_session_duration=2.0,
    )
    for i in range(50):
        sim.publish(messages(1, start=i + 1))
        sim.run(0.01)
    sim.inject(build_end_of_session(SESSION, 51), A, delay=0.2)
    sim.run(0.5)
    sim.line_a.drop = 1.0  # the heartbeat due 1 s after the last packet is lost
    sim.run(1.0)
    sim.line_a.drop = 0.0
    sim.run(3.0)  # later heartbeats arrive
    for i in range(50, 100):
        sim.publish(messages(1, start=i + 1))
        sim.run(0.01)
    sim.end_session(reliable=True)
    sim.settle(limit=60.0)
    assert_real_stream_intact(sim, 100)
