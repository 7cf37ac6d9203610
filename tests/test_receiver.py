"""ReceiverCore unit tests: literal datagrams in, events and requests out, simulated clock."""

from __future__ import annotations

import itertools
import os
from typing import Any, TypeVar

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from moldudp64.events import (
    Address,
    DatagramDropped,
    DatagramReceived,
    Event,
    FeedResumed,
    FeedStale,
    GapDetected,
    GapFilled,
    MessagesAfterEnd,
    MessagesDelivered,
    MessagesLost,
    ServerDisabled,
    ServerEnabled,
    SessionChanged,
    SessionEnded,
    SessionStarted,
    Source,
)
from moldudp64.exceptions import ConfigError
from moldudp64.receiver import (
    LOST_ALL_SERVERS_OUT,
    LOST_ATTEMPTS_EXHAUSTED,
    LOST_END_OF_INPUT,
    LOST_HELD_LIMIT,
    LOST_NO_SERVERS,
    LOST_SESSION_CHANGED,
    ReceiverConfig,
    ReceiverCore,
)
from moldudp64.wire import (
    RetransmissionPacket,
    RetransmissionRequest,
    build_end_of_session,
    build_heartbeat,
    build_packet,
)

S = "SESSION001"
A, B, R = Source.LINE_A, Source.LINE_B, Source.RETRANSMISSION
SRV1: Address = ("127.0.0.1", 9001)
SRV2: Address = ("127.0.0.1", 9002)
SRV3: Address = ("127.0.0.1", 9003)

E = TypeVar("E", bound=Event)


def msg(seq: int, session: str = S) -> bytes:
    return f"{session[-1]}:{seq}".encode()


def pkt(seq: int, count: int, session: str = S) -> bytes:
    return build_packet(session, seq, [msg(s, session) for s in range(seq, seq + count)])


def core(**options: Any) -> ReceiverCore:
    return ReceiverCore(ReceiverConfig(**options))


def of(events: list[Event], kind: type[E]) -> list[E]:
    return [e for e in events if isinstance(e, kind)]


def delivered(events: list[Event]) -> list[tuple[int, bytes]]:
    out: list[tuple[int, bytes]] = []
    for e in of(events, MessagesDelivered):
        out.extend(enumerate(e.messages, start=e.seq_num))
    return out


def expect(first: int, last: int, session: str = S) -> list[tuple[int, bytes]]:
    return [(s, msg(s, session)) for s in range(first, last + 1)]


def reqs(out: list[tuple[bytes, Address]]) -> list[tuple[int, int, Address]]:
    result = []
    for data, addr in out:
        packet = RetransmissionPacket.parse(data)
        assert packet.session == S.encode()
        result.append((packet.seq_num, packet.msg_count, addr))
    return result


def answer(c: ReceiverCore, seq: int, count: int, now: float, server: Address = SRV1) -> None:
    c.receive_datagram(pkt(seq, count), R, now, server)


def passed(c: ReceiverCore, next_seq: int, now: float) -> None:
    """Five live data packets from ``next_seq`` on (one message each): the feed has passed
    every gap below it (only then may a gap be reported lost, or a server's silence count
    against it). Heartbeats are no witnesses: a forger gives them for nothing."""
    for seq in range(next_seq, next_seq + 5):
        c.receive_datagram(pkt(seq, 1), A, now)


def both(c: ReceiverCore, data: bytes, now: float) -> None:
    """A datagram on both lines: line B's copy confirms a sequence number beyond the held
    stream, which a single datagram never does (it could be a stray)."""
    c.receive_datagram(data, A, now)
    c.receive_datagram(data, B, now)


# -- delivery --------------------------------------------------------------------------


def test_literal_bytes_in_order_one_event_per_packet() -> None:
    c = core()
    first = b"SESSION001" + (1).to_bytes(8, "big") + b"\x00\x02" + b"\x00\x03abc" + b"\x00\x00"
    second = b"SESSION001" + (3).to_bytes(8, "big") + b"\x00\x01" + b"\x00\x02hi"
    c.receive_datagram(first, A, 0.0)
    c.receive_datagram(second, A, 0.0)
    events = c.events_received()
    assert events[0] == SessionStarted(S, 1)
    batches = of(events, MessagesDelivered)
    assert [(b.seq_num, b.messages) for b in batches] == [(1, [b"abc", b""]), (3, [b"hi"])]
    assert c.next_seq_num == 4 and c.session == S and not c.ended
    assert c.events_received() == []
    assert c.datagrams_to_send(0.0) == []
    stats = c.stats
    assert stats.messages_delivered == 3 and stats.packets[A] == 2 and stats.messages[A] == 3


def test_bytearray_and_memoryview_input() -> None:
    c = core()
    c.receive_datagram(bytearray(pkt(1, 2)), A, 0.0)
    c.receive_datagram(memoryview(pkt(3, 2)), A, 0.0)
    events = c.events_received()
    assert delivered(events) == expect(1, 4)
    assert all(type(m) is bytes for e in of(events, MessagesDelivered) for m in e.messages)


def test_duplicates_live_and_retransmitted_are_delivered_once() -> None:
    c = core(rerequest_server_addrs=[SRV1])
    c.receive_datagram(pkt(1, 3), A, 0.0)
    c.receive_datagram(pkt(1, 3), A, 0.0)
    c.receive_datagram(pkt(4, 2), A, 0.0)
    answer(c, 1, 5, 0.0)
    assert delivered(c.events_received()) == expect(1, 5)
    stats = c.stats
    assert stats.duplicate_packets == 2 and stats.duplicate_messages == 8
    assert c.datagrams_to_send(0.0) == []


def test_ab_lines_first_copy_wins() -> None:
    c = core()
    c.receive_datagram(pkt(1, 2), A, 0.0)
    c.receive_datagram(pkt(1, 2), B, 0.0)
    c.receive_datagram(pkt(3, 2), B, 0.0)  # B ahead this time
    c.receive_datagram(pkt(3, 2), A, 0.0)
    c.receive_datagram(pkt(5, 1), A, 0.0)
    assert delivered(c.events_received()) == expect(1, 5)
    stats = c.stats
    assert stats.packets[A] == 3 and stats.packets[B] == 2 and stats.duplicate_packets == 2


def test_reordering_is_delivered_in_order() -> None:
    c = core()
    for seq in (6, 4, 1, 5, 2, 3):
        c.receive_datagram(pkt(seq, 1), A, 0.0)
    events = c.events_received()
    assert delivered(events) == expect(1, 6)
    # the held run 4..6 came out with 3 as ONE batch once 3 arrived
    assert [(e.seq_num, len(e.messages)) for e in of(events, MessagesDelivered)] == [
        (1, 1),
        (2, 1),
        (3, 4),
    ]


def test_java_regression_reordering_1_3_2_does_not_rerequest_3() -> None:
    c = core(rerequest_server_addrs=[SRV1], expected_session_ident=S)
    c.receive_datagram(pkt(1, 1), A, 0.0)
    both(c, pkt(3, 1), 0.0)
    assert reqs(c.datagrams_to_send(0.0)) == [(2, 1, SRV1)]  # only 2, never 3
    c.receive_datagram(pkt(2, 1), A, 0.001)
    assert delivered(c.events_received()) == expect(1, 3)
    c.handle_timer(10.0)  # the request for 2 times out: nothing is missing, nothing re-sent
    assert c.datagrams_to_send(10.0) == []
    assert c.stats.peak_held_packets == 1


def test_overlapping_retransmission_delivers_only_new_messages() -> None:
    c = core(rerequest_server_addrs=[SRV1])
    c.receive_datagram(pkt(1, 2), A, 0.0)
    both(c, pkt(6, 3), 0.0)  # held 6..8, missing 3..5
    assert reqs(c.datagrams_to_send(0.0)) == [(3, 3, SRV1)]
    answer(c, 2, 6, 0.01)  # a server that answers a wider range: 2..7
    events = c.events_received()
    assert delivered(events) == expect(1, 8)
    assert of(events, GapFilled) == [GapFilled(S, 3, 5)]
    stats = c.stats
    # 6..8 came twice (line B's copy) and 2, 6, 7 once more in the answer
    assert stats.messages_recovered == 3 and stats.duplicate_messages == 6


def test_packet_straddling_expected_delivers_only_the_new_part() -> None:
    c = core()
    c.receive_datagram(pkt(1, 4), A, 0.0)
    c.receive_datagram(pkt(3, 4), B, 0.0)  # 3..6: 3, 4 already delivered
    events = c.events_received()
    assert delivered(events) == expect(1, 6)
    assert [(e.seq_num, len(e.messages)) for e in of(events, MessagesDelivered)] == [
        (1, 4),
        (5, 2),
    ]


def test_late_and_duplicate_packets_never_move_expected_backwards() -> None:
    c = core()
    c.receive_datagram(pkt(1, 10), A, 0.0)
    c.receive_datagram(pkt(3, 2), A, 0.0)
    c.receive_datagram(build_heartbeat(S, 4), A, 0.0)
    c.receive_datagram(build_end_of_session(S, 5), A, 0.0)  # an EOS from the past
    assert c.next_seq_num == 11 and not c.ended
    c.receive_datagram(pkt(11, 1), A, 0.0)
    assert delivered(c.events_received()) == expect(1, 11)


# -- gaps and requests -----------------------------------------------------------------


def test_requests_only_the_missing_ranges() -> None:
    c = core(rerequest_server_addrs=[SRV1])
    c.receive_datagram(pkt(1, 1), A, 0.0)
    c.receive_datagram(pkt(5, 2), A, 0.0)  # a near gap: 2..4 missing at once
    c.receive_datagram(pkt(10, 1), A, 0.0)  # 7..9 missing
    c.receive_datagram(pkt(8, 1), A, 0.0)  # fills 8: 7 and 9 only
    events = c.events_received()
    assert delivered(events) == expect(1, 1)
    assert of(events, GapDetected) == [GapDetected(S, 2, 4), GapDetected(S, 7, 9)]
    assert c.stats.unconfirmed_packets == 0
    assert reqs(c.datagrams_to_send(0.0)) == [(2, 3, SRV1), (7, 1, SRV1), (9, 1, SRV1)]
    # nothing answers: the retries ask only for what is still missing
    c.handle_timer(0.05)
    assert reqs(c.datagrams_to_send(0.05)) == [(2, 3, SRV1), (7, 1, SRV1), (9, 1, SRV1)]
    answer(c, 2, 3, 0.06)
    answer(c, 7, 1, 0.06)
    answer(c, 9, 1, 0.06)
    assert delivered(c.events_received()) == expect(2, 10)
    assert c.stats.requests_sent == {SRV1: 6} and c.stats.answers == {SRV1: 3}


def test_gap_from_heartbeat() -> None:
    c = core(rerequest_server_addrs=[SRV1])
    c.receive_datagram(pkt(1, 2), A, 0.0)
    c.receive_datagram(build_heartbeat(S, 3), A, 0.5)  # nothing missing
    assert c.datagrams_to_send(0.5) == []
    c.receive_datagram(build_heartbeat(S, 6), A, 1.0)  # near: asked for at once
    assert of(c.events_received(), GapDetected) == [GapDetected(S, 3, 5)]
    assert reqs(c.datagrams_to_send(1.0)) == [(3, 3, SRV1)]
    answer(c, 3, 3, 1.01)
    assert delivered(c.events_received()) == expect(3, 5)
    assert c.stats.heartbeats == 2


def test_gap_from_end_of_session_then_session_ended_once() -> None:
    c = core(rerequest_server_addrs=[SRV1], end_confirm=1.5)
    c.receive_datagram(pkt(1, 2), A, 0.0)
    c.receive_datagram(build_end_of_session(S, 5), A, 0.1)
    assert reqs(c.datagrams_to_send(0.1)) == [(3, 2, SRV1)]  # the missing tail, at once
    c.receive_datagram(build_end_of_session(S, 5), A, 0.101)  # a network duplicate
    c.receive_datagram(build_end_of_session(S, 5), A, 0.2)  # repeats keep the quiet
    answer(c, 3, 2, 0.23)
    events = c.events_received()
    assert delivered(events) == expect(1, 4)
    assert of(events, SessionEnded) == [] and not c.ended  # believed only after a quiet
    c.receive_datagram(build_end_of_session(S, 5), A, 0.3)
    assert c.get_timer() == pytest.approx(0.1 + 1.5)  # end_confirm after the first
    c.handle_timer(1.6)
    events = c.events_received()
    assert events == [SessionEnded(S, 5)]
    assert c.ended and c.next_seq_num == 5
    c.receive_datagram(build_end_of_session(S, 5), A, 1.7)
    assert c.events_received() == []  # nothing is reported after the end
    assert c.stats.end_of_session_packets == 5


def test_end_of_session_never_advances_by_65535() -> None:
    c = core(end_confirm=1.5)
    c.receive_datagram(pkt(1, 3), A, 0.0)
    c.receive_datagram(build_end_of_session(S, 4), A, 0.0)
    c.handle_timer(1.5)
    events = c.events_received()
    assert of(events, SessionEnded) == [SessionEnded(S, 4)]
    assert of(events, GapDetected) == [] and of(events, MessagesLost) == []
    assert c.next_seq_num == 4 and c.ended
    c.receive_datagram(pkt(4, 2), A, 1.6)  # data after the end: named with its range
    c.receive_datagram(pkt(4, 2), B, 1.6)  # (each number once)
    assert c.events_received() == [MessagesAfterEnd(S, 4, 5, 4)]
    assert c.stats.dropped == {"after_end_of_session": 2}


def test_large_gap_requested_in_bounded_pieces_none_lost() -> None:
    c = core(rerequest_server_addrs=[SRV1], max_messages_per_request=0xFFFE)
    c.receive_datagram(pkt(1, 1), A, 0.0)
    both(c, build_heartbeat(S, 200_002), 0.0)  # 2..200001 missing
    assert [n for _, n, _ in reqs(c.datagrams_to_send(0.0))] == [0xFFFE]  # its front only
    passed(c, 200_002, 0.0)  # the feed goes on from there
    c.handle_timer(0.05)
    sent = reqs(c.datagrams_to_send(0.0))
    # the front again (its first attempt timed out); the rest waits until delivery
    # nears it: 65,534 more could come back as that many packets, past what the held
    # bound (50,000 packets) keeps
    assert [(s, n) for s, n, _ in sent] == [(2, 0xFFFE)]
    for seq in range(2, 2 + 0xFFFE, 1000):  # delivered: the next window is near now
        answer(c, seq, min(1000, 2 + 0xFFFE - seq), 0.06)
    c.handle_timer(0.06)
    assert [(s, n) for s, n, _ in reqs(c.datagrams_to_send(0.06))] == [(2 + 0xFFFE, 0xFFFE)]


def test_max_messages_per_request_and_in_flight_bound() -> None:
    c = core(rerequest_server_addrs=[SRV1], max_messages_per_request=10, max_requests_in_flight=2)
    both(c, pkt(36, 1), 0.0)  # 1..35 missing
    passed(c, 37, 0.0)
    assert [(s, n) for s, n, _ in reqs(c.datagrams_to_send(0.0))] == [(1, 10), (11, 10)]
    assert c.stats.requests_in_flight == 2
    answer(c, 1, 10, 0.01)  # a slot frees: the next piece goes at once
    assert [(s, n) for s, n, _ in reqs(c.datagrams_to_send(0.01))] == [(21, 10)]
    answer(c, 11, 10, 0.02)
    assert [(s, n) for s, n, _ in reqs(c.datagrams_to_send(0.02))] == [(31, 5)]
    answer(c, 21, 10, 0.03)
    answer(c, 31, 5, 0.03)
    assert delivered(c.events_received()) == expect(1, 41)  # and the five that passed it
    assert c.get_timer() is not None  # only the stale-feed timer remains
    assert c.stats.open_gaps == 0 and c.stats.requests_in_flight == 0


def test_partial_answer_rest_requested_at_once() -> None:
    c = core(rerequest_server_addrs=[SRV1, SRV2])
    c.receive_datagram(pkt(1, 1), A, 0.0)
    both(c, pkt(101, 1), 0.0)
    assert reqs(c.datagrams_to_send(0.0)) == [(2, 99, SRV1)]
    answer(c, 2, 40, 0.01)  # only 40 fit in the answer
    # the rest goes at once, to the server that just answered
    assert reqs(c.datagrams_to_send(0.01)) == [(42, 59, SRV1)]
    answer(c, 42, 30, 0.02)
    assert reqs(c.datagrams_to_send(0.02)) == [(72, 29, SRV1)]
    answer(c, 72, 29, 0.03)
    assert delivered(c.events_received()) == expect(1, 101)
    assert c.stats.timeouts == {SRV1: 0, SRV2: 0}


def test_retries_back_off_and_go_to_every_other_server_while_none_answers() -> None:
    c = core(
        rerequest_server_addrs=[SRV1, SRV2, SRV3],
        request_timeout=0.05,
        request_backoff=2.0,
        max_request_timeout=0.3,
        max_request_attempts=6,
    )
    both(c, pkt(3, 1), 0.0)  # 1..2 missing
    passed(c, 4, 0.0)
    now = 0.0
    sent = [reqs(c.datagrams_to_send(now))]
    deadlines = []
    for _ in range(5):
        timer = c.get_timer()
        assert timer is not None
        deadlines.append(round(timer - now, 6))
        now = timer
        c.handle_timer(now)
        sent.append(reqs(c.datagrams_to_send(now)))
    assert deadlines == [0.05, 0.1, 0.2, 0.3, 0.3]
    # a retry never goes back to the server that just failed; while no server is known
    # to answer, it goes to all the others at once
    assert [[a for _, _, a in s] for s in sent] == [[SRV1], [SRV2, SRV3]] * 3
    assert all({(q, n) for q, n, _ in s} == {(1, 2)} for s in sent)
    # the sixth attempt times out too: the range is reported lost, delivery goes on
    timer = c.get_timer()
    assert timer is not None
    c.handle_timer(timer)
    events = c.events_received()
    assert of(events, MessagesLost) == [MessagesLost(S, 1, 2, LOST_ATTEMPTS_EXHAUSTED)]
    assert delivered(events) == expect(3, 8)
    assert c.stats.messages_lost == 2
    assert c.stats.timeouts == {SRV1: 3, SRV2: 3, SRV3: 3}


def test_a_ranges_final_attempt_goes_back_to_a_server_that_answered_nothing_yet() -> None:
    """SRV1's store lags (zero-count answers), SRV2 is dead: the retries take turns, and
    the final attempt (the one whose failure reports the range lost) goes to both, SRV1
    too although its attempt just went unanswered: by then it may hold the numbers."""
    c = core(rerequest_server_addrs=[SRV1, SRV2], max_request_attempts=4)
    both(c, pkt(3, 1), 0.0)  # 1..2 missing
    passed(c, 4, 0.0)
    now = 0.0
    sent = [reqs(c.datagrams_to_send(now))]
    for _ in range(3):
        for _, _, addr in sent[-1]:
            if addr == SRV1:  # nothing yet
                c.receive_datagram(build_heartbeat(S, 1), R, now + 0.001, SRV1)
        timer = c.get_timer()
        assert timer is not None
        now = timer
        c.handle_timer(now)
        sent.append(reqs(c.datagrams_to_send(now)))
    assert [sorted(a for _, _, a in s) for s in sent] == [[SRV1], [SRV2], [SRV1], [SRV1, SRV2]]
    answer(c, 1, 2, now + 0.001, SRV1)  # its store holds them now
    assert delivered(c.events_received()) == expect(1, 8)
    assert c.stats.messages_lost == 0


def test_requests_spread_over_servers() -> None:
    c = core(rerequest_server_addrs=[SRV1, SRV2])
    for seq in (3, 6, 9, 12):
        both(c, pkt(seq, 1), 0.0)
    assert [a for _, _, a in reqs(c.datagrams_to_send(0.0))] == [SRV1, SRV2, SRV1, SRV2]


def test_a_server_whose_answers_bring_nothing_goes_down_the_rotation_until_they_do() -> None:
    c = core(rerequest_server_addrs=[SRV1, SRV2])
    c.receive_datagram(pkt(1, 1), A, 0.0)
    c.receive_datagram(pkt(3, 1), A, 0.0)  # 2 missing
    assert reqs(c.datagrams_to_send(0.0)) == [(2, 1, SRV1)]
    # SRV1's store lags: a zero-count answer is no progress, the request times out
    c.receive_datagram(build_heartbeat(S, 2), R, 0.001, SRV1)
    assert c.datagrams_to_send(0.001) == [] and c.get_timer() == pytest.approx(0.05)
    c.handle_timer(0.05)
    assert reqs(c.datagrams_to_send(0.05)) == [(2, 1, SRV2)]
    answer(c, 2, 1, 0.051, SRV2)
    # the next gaps go to SRV2 first: SRV1 costs no timeout per gap
    for seq in (5, 7):
        c.receive_datagram(pkt(seq, 1), A, 0.1)
        assert reqs(c.datagrams_to_send(0.1)) == [(seq - 1, 1, SRV2)]
        answer(c, seq - 1, 1, 0.101, SRV2)
    # SRV2 misses one: the retry goes to SRV1, whose answer brings data: back in turn
    c.receive_datagram(pkt(9, 1), A, 0.2)
    assert reqs(c.datagrams_to_send(0.2)) == [(8, 1, SRV2)]
    c.handle_timer(0.25)
    assert reqs(c.datagrams_to_send(0.25)) == [(8, 1, SRV1)]
    answer(c, 8, 1, 0.251, SRV1)
    c.receive_datagram(pkt(11, 1), A, 0.3)
    c.receive_datagram(pkt(13, 1), A, 0.3)
    assert sorted(a for _, _, a in reqs(c.datagrams_to_send(0.3))) == [SRV1, SRV2]
    answer(c, 10, 1, 0.301, SRV1)
    answer(c, 12, 1, 0.301, SRV2)
    assert delivered(c.events_received()) == expect(1, 13)


def test_a_retry_still_goes_to_a_server_that_once_answered_nothing() -> None:
    """SRV1 once answered zero-count (its store lagged); then SRV2 and SRV3 fall silent
    about a gap the feed has not passed (their silence does not count against them): the
    retries still reach SRV1, which holds it, rather than turn between the silent two."""
    c = core(rerequest_server_addrs=[SRV1, SRV2, SRV3])
    c.receive_datagram(pkt(1, 1), A, 0.0)
    c.receive_datagram(pkt(3, 1), A, 0.0)  # 2 missing
    assert reqs(c.datagrams_to_send(0.0)) == [(2, 1, SRV1)]
    c.receive_datagram(build_heartbeat(S, 2), R, 0.001, SRV1)  # nothing yet
    c.handle_timer(0.05)
    assert reqs(c.datagrams_to_send(0.05)) == [(2, 1, SRV2), (2, 1, SRV3)]
    answer(c, 2, 1, 0.051, SRV2)
    answer(c, 2, 1, 0.051, SRV3)
    c.receive_datagram(pkt(5, 1), A, 0.1)  # 4 missing, not passed
    now, asked = 0.1, []
    while SRV1 not in asked and len(asked) < 8:
        asked += [addr for _, _, addr in reqs(c.datagrams_to_send(now))]
        timer = c.get_timer()
        assert timer is not None
        now = timer
        c.handle_timer(now)
    assert SRV1 in asked[:4], asked


def test_after_a_wait_for_the_feed_the_retry_still_avoids_the_servers_that_just_failed() -> None:
    """A gap the feed never passes runs out of attempts and waits (5 s, then 10 s, ...)
    before it is asked again: that attempt too goes to another server than the ones
    whose attempt just went unanswered."""
    c = core(rerequest_server_addrs=[SRV1, SRV2, SRV3])
    c.receive_datagram(pkt(1, 1), A, 0.0)
    c.receive_datagram(pkt(3, 1), A, 0.0)  # 2 missing: SRV1 answers it
    assert reqs(c.datagrams_to_send(0.0)) == [(2, 1, SRV1)]
    answer(c, 2, 1, 0.001)
    c.receive_datagram(pkt(5, 1), A, 0.1)  # 4 missing, never passed, nobody answers
    now, sent = 0.1, []
    while now < 30.0:
        to = {addr for _, _, addr in reqs(c.datagrams_to_send(now))}
        if to:
            sent.append((now, to))
        timer = c.get_timer()
        assert timer is not None
        now = timer
        c.handle_timer(now)
    assert len(sent) == 10 and sent[-2][0] > 5.0  # 8 attempts, then one after each wait
    for (_, before), (_, after) in itertools.pairwise(sent):
        assert before.isdisjoint(after), sent


def test_server_disabled_after_consecutive_failures_and_enabled_when_it_answers() -> None:
    c = core(
        rerequest_server_addrs=[SRV1, SRV2],
        max_rerequest_retries=2,
        max_request_attempts=10,
        server_retry_interval=1.0,
        loss_grace=5.0,
    )
    both(c, pkt(2, 1), 0.0)  # 1 missing
    passed(c, 3, 0.0)
    now = 0.0
    targets = [a for _, _, a in reqs(c.datagrams_to_send(now))]
    while len(targets) < 5:
        timer = c.get_timer()
        assert timer is not None
        now = timer
        c.handle_timer(now)
        targets += [a for _, _, a in reqs(c.datagrams_to_send(now))]
    events = c.events_received()
    assert of(events, ServerDisabled) == [ServerDisabled(SRV1, 2), ServerDisabled(SRV2, 2)]
    assert targets[:4] == [SRV1, SRV2, SRV1, SRV2]
    # both out: the next try goes to the first server due for another chance
    assert targets[4] == SRV1 and now == pytest.approx(0.35 + 1.0)
    assert c.stats.servers_in_rotation == 0
    answer(c, 1, 1, now + 0.01, SRV1)
    events = c.events_received()
    assert of(events, ServerEnabled) == [ServerEnabled(SRV1)]
    assert delivered(events) == expect(1, 7)
    assert c.stats.servers_in_rotation == 1


def test_all_servers_out_reports_loss() -> None:
    c = core(
        rerequest_server_addrs=[SRV1],
        max_rerequest_retries=1,
        max_request_attempts=10,
        server_retry_interval=100.0,
        loss_grace=0.0,
    )
    both(c, pkt(2, 1), 0.0)
    passed(c, 3, 0.0)
    c.datagrams_to_send(0.0)
    c.handle_timer(0.05)  # SRV1 fails once: out of rotation, nobody left to ask
    events = c.events_received()
    assert of(events, ServerDisabled) == [ServerDisabled(SRV1, 1)]
    assert of(events, MessagesLost) == [MessagesLost(S, 1, 1, LOST_ALL_SERVERS_OUT)]
    assert delivered(events) == expect(2, 7)
    assert c.datagrams_to_send(0.05) == []


def test_no_servers_gap_lost_after_grace_unless_reordering_fills_it() -> None:
    c = core(loss_grace=0.1)
    c.receive_datagram(pkt(1, 1), A, 0.0)
    c.receive_datagram(pkt(3, 1), A, 0.0)
    c.receive_datagram(pkt(2, 1), A, 0.05)  # just reordered: filled within the grace
    for seq in range(5, 11):  # 4 missing, and the feed passes it
        c.receive_datagram(pkt(seq, 1), A, 0.06)
    assert c.get_timer() == pytest.approx(0.06)  # due now: no server, so it waits
    c.handle_timer(0.06)
    assert c.get_timer() == pytest.approx(0.16)
    c.handle_timer(0.1)
    assert of(c.events_received(), MessagesLost) == []
    c.handle_timer(0.16)
    events = c.events_received()
    assert of(events, MessagesLost) == [MessagesLost(S, 4, 4, LOST_NO_SERVERS)]
    assert delivered(events) == expect(5, 10)
    assert c.datagrams_to_send(0.2) == []


def test_held_packet_bound_gives_up_oldest_gap() -> None:
    c = core(rerequest_server_addrs=[SRV1], max_held_packets=3)
    c.receive_datagram(pkt(1, 1), A, 0.0)
    c.receive_datagram(pkt(3, 1), A, 0.0)  # gap 2
    c.receive_datagram(pkt(5, 1), A, 0.0)  # gap 4
    c.receive_datagram(pkt(6, 1), A, 0.0)
    assert c.stats.held_packets == 3
    c.receive_datagram(pkt(7, 1), A, 0.0)  # a fourth: the oldest gap (2) goes
    events = c.events_received()
    assert of(events, MessagesLost) == [MessagesLost(S, 2, 2, LOST_HELD_LIMIT)]
    assert delivered(events) == [*expect(1, 1), *expect(3, 3)]
    assert c.stats.held_packets == 3 and c.stats.peak_held_packets == 3
    answer(c, 4, 1, 0.01)
    assert delivered(c.events_received()) == expect(4, 7)


def test_held_byte_bound_counts_real_memory() -> None:
    # a held message costs its bytes plus its object's overhead (64), a held packet 400 more
    piece = 60 + 64 + 400
    c = core(max_held_bytes=2 * piece + 50, loss_grace=10.0)
    both(c, build_packet(S, 2, [b"x" * 60]), 0.0)
    both(c, build_packet(S, 4, [b"y" * 60]), 0.0)
    assert c.stats.held_bytes == 2 * piece
    both(c, build_packet(S, 6, [b"z" * 60]), 0.0)
    events = c.events_received()
    assert of(events, MessagesLost) == [MessagesLost(S, 1, 1, LOST_HELD_LIMIT)]
    assert delivered(events) == [(2, b"x" * 60)]
    assert c.stats.held_bytes == 2 * piece and c.stats.peak_held_bytes == 2 * piece


def test_finish_reports_open_gaps_lost_and_delivers_held() -> None:
    c = core(rerequest_server_addrs=[SRV1])
    c.receive_datagram(pkt(1, 1), A, 0.0)
    c.receive_datagram(pkt(3, 1), A, 0.0)
    c.receive_datagram(build_heartbeat(S, 6), A, 0.0)  # 4..5 missing too
    assert reqs(c.datagrams_to_send(0.0)) == [(2, 1, SRV1), (4, 2, SRV1)]
    assert c.stats.requests_in_flight == 2
    c.finish(0.01)  # end of input: every open gap is lost
    assert c.datagrams_to_send(0.01) == []
    events = c.events_received()
    assert of(events, MessagesLost) == [
        MessagesLost(S, 2, 2, LOST_END_OF_INPUT),
        MessagesLost(S, 4, 5, LOST_END_OF_INPUT),
    ]
    assert delivered(events) == [*expect(1, 1), *expect(3, 3)]
    assert c.next_seq_num == 6 and c.get_timer() is not None  # stale timer only
    assert c.stats.requests_in_flight == 0


# -- sessions --------------------------------------------------------------------------


def test_java_regression_new_session_first_messages_are_not_duplicates() -> None:
    c = core(end_confirm=1.5)
    c.receive_datagram(pkt(1, 5), A, 0.0)
    c.receive_datagram(build_end_of_session(S, 6), A, 0.1)
    c.receive_datagram(pkt(1, 3, "SESSION002"), A, 2.0)  # (the end believed before it)
    events = c.events_received()
    assert of(events, SessionChanged) == [SessionChanged(S, "SESSION002", 1)]
    assert delivered(events)[-3:] == expect(1, 3, "SESSION002")
    batches = of(events, MessagesDelivered)
    assert batches[-1].session == "SESSION002"
    assert c.session == "SESSION002" and c.next_seq_num == 4 and not c.ended
    # a late packet of the old session never switches back or splices in
    c.receive_datagram(pkt(2, 2), A, 2.1)
    events = c.events_received()
    assert delivered(events) == [] and c.session == "SESSION002"
    assert of(events, DatagramDropped) == [DatagramDropped("old_session", A, None)]


def test_new_session_waits_while_the_old_one_recovers_its_gaps() -> None:
    c = core(rerequest_server_addrs=[SRV1], end_confirm=1.5)
    c.receive_datagram(pkt(1, 1), A, 0.0)
    c.receive_datagram(pkt(3, 1), A, 0.0)
    c.receive_datagram(build_end_of_session(S, 4), A, 0.0)
    assert reqs(c.datagrams_to_send(0.0)) == [(2, 1, SRV1)]
    c.receive_datagram(pkt(1, 2, "SESSION002"), A, 0.01)
    c.receive_datagram(pkt(3, 1, "SESSION002"), B, 0.01)
    events = c.events_received()
    assert of(events, SessionChanged) == [] and c.session == S
    assert c.stats.held_packets == 3
    answer(c, 2, 1, 0.02)  # the old session's last gap is filled
    assert delivered(c.events_received()) == expect(2, 3)
    c.handle_timer(1.5)  # the end of session is believed
    events = c.events_received()
    assert delivered(events) == expect(1, 3, "SESSION002")
    ended = events.index(SessionEnded(S, 4))
    changed = events.index(SessionChanged(S, "SESSION002", 1))
    assert ended < changed
    assert c.session == "SESSION002" and c.next_seq_num == 4
    assert c.stats.held_packets == 0 and c.stats.packets == {A: 4, B: 1, R: 1}


def test_an_ended_session_finishes_its_gaps_though_the_new_one_is_live_past_stale_after() -> None:
    for answered in (True, False):
        c = core(rerequest_server_addrs=[SRV1], end_confirm=1.5, stale_after=3.0)
        c.receive_datagram(pkt(1, 1), A, 0.0)
        c.receive_datagram(pkt(3, 1), A, 0.0)
        c.receive_datagram(build_end_of_session(S, 4), A, 0.0)  # S's last datagram
        sent = reqs(c.datagrams_to_send(0.0))
        c.receive_datagram(pkt(1, 1, "SESSION002"), A, 0.01)
        for now in (1.0, 2.0, 3.0, 3.5, 4.0, 5.0, 6.0):  # SESSION002 is live all along
            while (due := c.get_timer()) is not None and due <= now:
                c.handle_timer(due)
                sent += reqs(c.datagrams_to_send(due))
            c.receive_datagram(build_heartbeat("SESSION002", 2), A, now)
            if now == 3.5:
                # S has been silent for stale_after, its end believed: not stale, its gap
                # still has attempts (8, 1 s apart by now), so no switch gives it up
                assert c.session == S and of(c.events_received(), MessagesLost) == []
                if answered:
                    answer(c, 2, 1, 3.5)
        events = c.events_received()
        assert c.session == "SESSION002"
        changed = events.index(SessionChanged(S, "SESSION002", 1))
        if answered:  # the switch followed at once
            assert delivered(events)[0] == (2, msg(2)) and len(sent) == 7
        else:  # all eight attempts, then the honest reason
            lost = events.index(MessagesLost(S, 2, 2, LOST_ATTEMPTS_EXHAUSTED))
            assert lost < changed and sent == [(2, 1, SRV1)] * 8
        assert events.index(SessionEnded(S, 4)) < changed


def test_a_session_of_ends_alone_whose_ends_found_no_room_still_ends_and_reports_its_loss() -> None:
    """All its data lost on the line; one datagram may wait (max_held_packets=1), so every
    end of session is dropped for room: its highest end is kept aside all the same, so the
    session followed on its ends knows where it ends, and its missing numbers are lost."""
    c = core(max_held_packets=1)
    c.receive_datagram(build_heartbeat(S, 4), A, 0.0)  # the one that waits
    for n in range(3):
        c.receive_datagram(build_end_of_session(S, 3 + n % 2), A, 0.1 + 0.1 * n)  # 3, 4, 3
    assert c.stats.dropped == {"next_session_backlog_full": 3}
    for now in (2.5, 5.0, 5.1):  # followed at end_confirm; its end believed end_confirm on
        c.handle_timer(now)
    events = c.events_received()
    assert events[0] == SessionStarted(S, 1)
    assert of(events, MessagesLost) == [MessagesLost(S, 1, 3, LOST_NO_SERVERS)]
    assert events[-1] == SessionEnded(S, 4) and c.ended


def test_an_end_kept_for_a_waiting_session_never_truncates_its_data() -> None:
    """A (forged) end of session dropped for room below data that waited: data wins."""
    c = core(max_held_packets=1)
    c.receive_datagram(pkt(1, 5, "SESSION002"), A, 0.0)  # waits
    # no room for it: its number kept aside; the second datagram: followed at once
    c.receive_datagram(build_end_of_session("SESSION002", 3), A, 0.1)
    c.receive_datagram(pkt(6, 2, "SESSION002"), A, 0.2)
    for now in (1.0, 2.0, 3.0, 4.0, 5.0):
        c.handle_timer(now)
    events = c.events_received()
    assert delivered(events) == expect(1, 7, "SESSION002")
    assert not c.ended and of(events, MessagesAfterEnd) == []
    assert c.stats.dropped["end_of_session_contradicted"] == 1


def test_without_an_end_the_old_session_must_fall_silent_before_a_switch() -> None:
    c = core(rerequest_server_addrs=[SRV1], max_request_attempts=1, stale_after=3.0)
    c.receive_datagram(pkt(1, 1), A, 0.0)
    both(c, pkt(3, 1), 0.0)
    passed(c, 4, 0.0)
    c.datagrams_to_send(0.0)
    c.receive_datagram(pkt(1, 1, "SESSION002"), A, 0.01)
    c.handle_timer(0.05)  # the only attempt times out
    c.receive_datagram(pkt(2, 1, "SESSION002"), A, 2.0)
    events = c.events_received()
    assert of(events, SessionChanged) == [] and c.session == S  # S may still be live
    assert c.get_timer() == pytest.approx(3.0)
    c.handle_timer(3.0)  # S silent for stale_after while SESSION002 is live: switch
    events += c.events_received()
    lost = events.index(MessagesLost(S, 2, 2, LOST_ATTEMPTS_EXHAUSTED))
    changed = events.index(SessionChanged(S, "SESSION002", 1))
    assert lost < changed
    assert delivered(events)[-2:] == expect(1, 2, "SESSION002")


def test_late_data_of_a_session_left_on_staleness_is_named() -> None:
    """S falls silent and SESSION002 is followed; S then resumes: its data beyond where it
    was left is named (MessagesAfterEnd, end_seq the number it stopped at; a copy from the
    other line once), never only counted; what it delivered before is not named again."""
    c = core(stale_after=3.0)
    c.receive_datagram(pkt(1, 2), A, 0.0)
    c.receive_datagram(pkt(3, 1), A, 0.1)
    c.receive_datagram(pkt(1, 1, "SESSION002"), A, 2.0)
    c.receive_datagram(pkt(2, 1, "SESSION002"), A, 2.5)
    c.handle_timer(3.1)
    assert c.session == "SESSION002"
    for line in (A, B):
        c.receive_datagram(pkt(3, 3), line, 3.2)  # 3 was delivered: 4..5 named
    events = c.events_received()
    assert of(events, MessagesAfterEnd) == [MessagesAfterEnd(S, 4, 5, 4)]
    assert delivered(events) == expect(1, 3) + expect(1, 2, "SESSION002")


def test_a_silent_session_finishes_the_gaps_the_feed_passed_before_a_switch() -> None:
    c = core(rerequest_server_addrs=[SRV1], stale_after=3.0)
    c.receive_datagram(pkt(1, 1), A, 0.0)
    passed(c, 3, 0.0)  # 2 is missing, and the feed went past it (S then falls silent)
    sent = reqs(c.datagrams_to_send(0.0))
    for now, seq in ((0.01, 1), (2.0, 2), (3.5, 0)):
        while (due := c.get_timer()) is not None and due <= now:
            c.handle_timer(due)
            sent += reqs(c.datagrams_to_send(due))
        if seq:
            c.receive_datagram(pkt(seq, 1, "SESSION002"), A, now)
    # S silent for stale_after while SESSION002 is live: a switch now would report 2 lost
    # with its seventh attempt in flight and an eighth left, so it waits
    assert c.session == S and len(sent) == 7
    answer(c, 2, 1, 3.5)
    events = c.events_received()
    assert delivered(events) == [*expect(1, 7), *expect(1, 2, "SESSION002")]
    assert of(events, SessionChanged) == [SessionChanged(S, "SESSION002", 1)]
    # S fell silent, but SESSION002 sent meanwhile: the feed was never stale (FeedStale
    # means no session sent anything; the switch on S's silence is the core's own matter)
    assert of(events, FeedStale) == [] and of(events, FeedResumed) == []
    assert not c.stats.stale


def test_a_switch_away_from_a_silent_session_reports_its_open_gap_lost() -> None:
    server: dict[str, Any] = {"rerequest_server_addrs": [SRV1]}
    for options in ({}, {**server, "max_held_packets": 3}, server):
        c = core(loss_grace=10.0, request_timeout=0.9, max_request_timeout=10, **options)
        c.receive_datagram(pkt(1, 1), A, 0.0)
        both(c, pkt(3, 1), 0.0)
        c.receive_datagram(pkt(1, 1, "SESSION002"), A, 2.9)
        c.datagrams_to_send(2.9)
        c.receive_datagram(pkt(2, 1, "SESSION002"), A, 3.0)
        events = c.events_received()
        if options is server:
            # S silent since 0.0 while SESSION002 is live, but the request for 2 (sent at
            # 2.9) is in flight: the switch waits for the server (which never answers)
            # until max_request_timeout past that first request at most (with 3 packets
            # of room, full with what waits, it does not: the next session's data goes
            # first)
            assert c.session == S
            while c.session == S and (due := c.get_timer()) is not None:
                c.handle_timer(due)
                c.datagrams_to_send(due)
            assert due <= 2.9 + 10
            events += c.events_received()
        lost = events.index(MessagesLost(S, 2, 2, LOST_SESSION_CHANGED))
        changed = events.index(SessionChanged(S, "SESSION002", 1))
        assert lost < changed
        assert delivered(events) == [*expect(1, 1), *expect(3, 3), *expect(1, 2, "SESSION002")]
        assert c.stats.requests_in_flight == 0


def test_finish_while_a_new_session_waits() -> None:
    c = core(rerequest_server_addrs=[SRV1])
    c.receive_datagram(pkt(1, 1), A, 0.0)
    c.receive_datagram(pkt(3, 1), A, 0.0)
    c.receive_datagram(pkt(2, 1, "SESSION002"), A, 0.01)  # its 1 is missing too
    c.finish(0.02)
    events = c.events_received()
    assert of(events, MessagesLost) == [
        MessagesLost(S, 2, 2, LOST_END_OF_INPUT),
        MessagesLost("SESSION002", 1, 1, LOST_END_OF_INPUT),
    ]
    assert delivered(events)[-1] == (2, msg(2, "SESSION002"))
    assert c.datagrams_to_send(0.02) == [] and c.stats.requests_in_flight == 0


def test_pinned_session_drops_other_sessions() -> None:
    c = core(expected_session_ident="SESSION002")
    c.receive_datagram(pkt(1, 2), A, 0.0)
    c.receive_datagram(pkt(1, 2, "SESSION002"), A, 0.0)
    c.receive_datagram(pkt(3, 2), A, 0.0)
    events = c.events_received()
    assert delivered(events) == expect(1, 2, "SESSION002")
    # what is ignored is said once (and counted every time)
    assert of(events, DatagramDropped) == [DatagramDropped("wrong_session", A, None)]
    assert c.stats.dropped == {"wrong_session": 2}
    assert of(events, SessionChanged) == []


def test_not_following_session_changes_keeps_the_first() -> None:
    c = core(follow_session_changes=False)
    c.receive_datagram(pkt(1, 2), A, 0.0)
    c.receive_datagram(pkt(1, 2, "SESSION002"), A, 0.0)
    c.receive_datagram(pkt(3, 1), A, 0.0)
    events = c.events_received()
    assert delivered(events) == expect(1, 3)
    assert c.session == S and c.stats.dropped == {"wrong_session": 1}


def test_expected_seq_num_gaps_before_it_never_requested() -> None:
    c = core(expected_seq_num=100, rerequest_server_addrs=[SRV1])
    assert c.next_seq_num == 100
    c.receive_datagram(pkt(50, 60), A, 0.0)  # 50..109: only 100.. is wanted
    c.receive_datagram(pkt(1, 5), A, 0.0)
    events = c.events_received()
    assert events[0] == SessionStarted(S, 100)
    assert delivered(events) == expect(100, 109)
    assert c.datagrams_to_send(0.0) == []


def test_start_from_first_seen() -> None:
    c = core(start_from_first_seen=True, rerequest_server_addrs=[SRV1])
    assert c.next_seq_num is None
    c.receive_datagram(pkt(1000, 2), A, 0.0)
    both(c, pkt(1003, 1), 0.0)
    events = c.events_received()
    assert events[0] == SessionStarted(S, 1000)
    assert reqs(c.datagrams_to_send(0.0)) == [(1002, 1, SRV1)]


# -- bad input -------------------------------------------------------------------------


HEADER_1 = b"SESSION001" + (1).to_bytes(8, "big")


@pytest.mark.parametrize(
    ("data", "reason"),
    [
        (b"", "short"),
        (b"SESSION001\x00\x00", "short"),
        (HEADER_1 + b"\x00\x02" + b"\x00\x01a", "missing_blocks"),
        (HEADER_1 + b"\x00\x01" + b"\x00\x05ab", "truncated_block"),
        (HEADER_1 + b"\x00\x01" + b"\x00", "truncated_block"),
        (HEADER_1 + b"\x00\x01" + b"\x00\x01ab", "trailing_bytes"),
        (HEADER_1 + b"\x00\x00" + b"xx", "blocks_in_control"),
        (HEADER_1 + b"\xff\xff" + b"xx", "blocks_in_control"),
    ],
)
def test_malformed_datagrams_dropped_and_counted(data: bytes, reason: str) -> None:
    c = core(rerequest_server_addrs=[SRV1], expected_session_ident=S)
    for source in (A, R):
        c.receive_datagram(data, source, 0.0, SRV1 if source is R else None)
    c.receive_datagram(pkt(1, 1), A, 0.0)
    events = c.events_received()
    assert of(events, DatagramDropped) == [
        DatagramDropped(reason, A, None),
        DatagramDropped(reason, R, SRV1),
    ]
    assert delivered(events) == expect(1, 1)
    assert c.stats.malformed == {reason: 2}
    assert c.datagrams_to_send(0.0) == []


def test_malformed_packet_at_expected_seq_is_not_delivered() -> None:
    c = core()
    c.receive_datagram(pkt(1, 1), A, 0.0)
    bad = b"SESSION001" + (2).to_bytes(8, "big") + b"\x00\x01\x00\x01ab"
    c.receive_datagram(bad, A, 0.0)
    c.receive_datagram(pkt(2, 1), A, 0.0)
    assert delivered(c.events_received()) == expect(1, 2)


# -- timers, low-level mode, stats -----------------------------------------------------


def test_stale_feed_and_resumed() -> None:
    c = core(stale_after=2.0, expected_session_ident=S)
    assert c.get_timer() is None
    c.receive_datagram(pkt(1, 1), A, 10.0)
    assert c.get_timer() == 12.0
    c.handle_timer(11.0)
    assert of(c.events_received(), FeedStale) == []
    c.handle_timer(12.5)
    assert c.events_received() == [FeedStale(2.5)]
    assert c.get_timer() is None and c.stats.stale
    c.receive_datagram(build_heartbeat(S, 2), A, 15.0)
    assert c.events_received() == [FeedResumed(5.0)]
    c.receive_datagram(pkt(2, 1), A, 15.1)  # the fast path is back
    assert delivered(c.events_received()) == expect(2, 2)
    assert not c.stats.stale


def test_raw_mode_surfaces_every_datagram_in_arrival_order_and_still_requests() -> None:
    c = core(raw=True, rerequest_server_addrs=[SRV1])
    datagrams = [(pkt(1, 1), A), (pkt(3, 1), A), (pkt(3, 1), B), (b"junk", A)]
    for data, source in datagrams:
        c.receive_datagram(data, source, 0.0)
    assert reqs(c.datagrams_to_send(0.0)) == [(2, 1, SRV1)]
    c.receive_datagram(pkt(2, 1), R, 0.01, SRV1)
    events = c.events_received()
    assert of(events, DatagramReceived) == [
        DatagramReceived(pkt(1, 1), A, None),
        DatagramReceived(pkt(3, 1), A, None),
        DatagramReceived(pkt(3, 1), B, None),
        DatagramReceived(pkt(2, 1), R, SRV1),
    ]
    assert of(events, MessagesDelivered) == []
    assert c.next_seq_num == 4 and c.stats.messages_delivered == 3
    # the user's own request
    c.request(RetransmissionRequest(S, 1, 3), 0.02)
    c.request(RetransmissionPacket(S, 2, 1), 0.02, server=SRV2)
    assert reqs(c.datagrams_to_send(0.02)) == [(1, 3, SRV1), (2, 1, SRV2)]
    assert c.stats.user_requests == 2


def test_user_request_without_servers_is_a_config_error() -> None:
    c = core()
    with pytest.raises(ConfigError):
        c.request(RetransmissionPacket(S, 1, 1), 0.0)


def test_stats_readable_any_time() -> None:
    c = core(rerequest_server_addrs=[SRV1])
    stats = c.stats
    assert stats.session is None and stats.next_seq_num == 1 and stats.packets[A] == 0
    c.receive_datagram(pkt(1, 2), A, 0.0)
    c.receive_datagram(pkt(5, 2), B, 0.0)
    c.receive_datagram(pkt(5, 2), A, 0.0)
    c.receive_datagram(b"short", A, 0.0)
    c.datagrams_to_send(0.0)
    stats = c.stats
    assert stats.packets == {A: 3, B: 1, R: 0}
    assert stats.messages == {A: 4, B: 2, R: 0}
    assert stats.gaps_detected == 1 and stats.gap_messages == 2
    assert stats.held_packets == 1 and stats.held_bytes == 2 * (3 + 64) + 400
    assert stats.open_gaps == 1 and stats.missing_messages == 2
    assert stats.requests_in_flight == 1 and stats.requests_sent == {SRV1: 1}
    assert stats.malformed == {"short": 1}
    assert stats.session == S and stats.next_seq_num == 3 and not stats.ended


@pytest.mark.parametrize(
    "options",
    [
        {"expected_session_ident": "TOO-LONG-SESSION"},
        {"expected_session_ident": "séssion"},
        {"expected_seq_num": 0},
        {"expected_seq_num": 2**64},
        {"expected_seq_num": 5, "start_from_first_seen": True},
        {"rerequest_server_addrs": "127.0.0.1:9000"},
        {"rerequest_server_addrs": [("127.0.0.1", 0)]},
        {"rerequest_server_addrs": [("127.0.0.1",)]},
        {"rerequest_server_addrs": [SRV1, SRV1]},
        {"rerequest_server_addrs": 5},
        {"max_rerequest_retries": 0},
        {"max_messages_per_request": 0xFFFF},
        {"max_messages_per_request": 0},
        {"max_requests_in_flight": 0},
        {"max_request_attempts": 1.5},
        {"max_held_packets": 0},
        {"max_held_bytes": -1},
        {"request_timeout": 0},
        {"request_timeout": float("nan")},
        {"max_request_timeout": 0.01},
        {"request_backoff": 0.5},
        {"loss_grace": -1},
        {"request_delay": float("inf")},
        {"stale_after": 0},
        {"server_retry_interval": "1"},
    ],
)
def test_bad_config_is_a_config_error(options: dict[str, Any]) -> None:
    with pytest.raises(ConfigError):
        ReceiverConfig(**options)


def test_config_normalises_server_list() -> None:
    cfg = ReceiverConfig(rerequest_server_addrs=[SRV1, SRV2])
    assert cfg.rerequest_server_addrs == (SRV1, SRV2)
    with pytest.raises(AttributeError):
        cfg.raw = True  # type: ignore[misc]


def test_request_delay_lets_the_b_line_fill_a_gap_without_a_request() -> None:
    c = core(rerequest_server_addrs=[SRV1], request_delay=0.002)
    c.receive_datagram(pkt(1, 1), A, 0.0)
    c.receive_datagram(pkt(3, 1), A, 0.0)  # 2 lost on A
    c.receive_datagram(pkt(4, 1), A, 0.0)  # (confirms 3)
    assert c.datagrams_to_send(0.0) == [] and c.get_timer() == pytest.approx(0.002)
    c.receive_datagram(pkt(2, 1), B, 0.001)  # B brings it in time
    c.receive_datagram(pkt(3, 1), B, 0.001)
    both(c, pkt(6, 1), 0.001)  # 5 lost on both lines
    assert delivered(c.events_received()) == expect(1, 4)
    timer = c.get_timer()
    assert timer == pytest.approx(0.003)
    assert reqs(c.datagrams_to_send(timer)) == [(5, 1, SRV1)]  # runs the due timer itself
    assert c.stats.requests_sent == {SRV1: 1}


def test_no_stale_feed_after_the_session_ended() -> None:
    c = core(stale_after=1.0, end_confirm=1.5)
    c.receive_datagram(pkt(1, 1), A, 0.0)
    c.receive_datagram(build_end_of_session(S, 2), A, 0.1)
    c.handle_timer(1.6)
    assert c.ended and c.get_timer() is None
    c.handle_timer(100.0)
    assert of(c.events_received(), FeedStale) == []


def test_answers_do_not_count_as_live_traffic() -> None:
    c = core(rerequest_server_addrs=[SRV1], stale_after=1.0)
    c.receive_datagram(pkt(1, 1), A, 0.0)
    c.receive_datagram(build_heartbeat(S, 3), A, 0.5)
    c.datagrams_to_send(0.5)
    answer(c, 2, 1, 0.9)
    c.handle_timer(1.5)  # live traffic stopped at 0.5
    assert of(c.events_received(), FeedStale) == [FeedStale(1.0)]


# -- arbitrary arrival orders ------------------------------------------------------------

ranges = st.lists(
    st.tuples(st.integers(1, 60), st.integers(1, 12), st.sampled_from([A, B, R])),
    min_size=1,
    max_size=40,
)


@settings(
    max_examples=int(os.environ.get("MOLDUDP64_HUNT", "0")) or 150,
    deadline=None,
    derandomize=not os.environ.get("MOLDUDP64_HUNT"),
)
@given(pieces=ranges, start=st.integers(1, 5))
def test_any_overlapping_arrivals_deliver_each_message_exactly_once_in_order(
    pieces: list[tuple[int, int, Source]], start: int
) -> None:
    c = core(
        expected_seq_num=start,
        rerequest_server_addrs=[SRV1],
        loss_grace=1e9,
        max_held_packets=10**6,
    )
    now = 0.0
    for seq, count, source in pieces:
        now += 0.001
        c.receive_datagram(pkt(seq, count), source, now, SRV1 if source is R else None)
        stats = c.stats  # held pieces never hold a message twice
        unconfirmed = stats.unconfirmed_packets * (20 + 400 + 12 * (2 + 3))
        held = sum(len(msg(s)) + 64 + 400 for s in range(stats.next_seq_num or 1, 80))
        assert stats.held_bytes <= held + unconfirmed
    c.finish(now)
    events = c.events_received()
    covered: set[int] = set()
    for seq, count, _ in pieces:
        covered.update(s for s in range(seq, seq + count) if s >= start)
    top = max(covered, default=start - 1)
    cursor = start
    for event in events:
        if isinstance(event, MessagesDelivered):
            assert event.seq_num == cursor
            assert event.messages == [msg(s) for s in range(cursor, event.last_seq + 1)]
            assert set(range(cursor, event.last_seq + 1)) <= covered
            cursor = event.last_seq + 1
        elif isinstance(event, MessagesLost):
            assert event.first_seq == cursor and event.reason == LOST_END_OF_INPUT
            assert not set(range(event.first_seq, event.last_seq + 1)) & covered
            cursor = event.last_seq + 1
    assert cursor == max(top + 1, start) == c.next_seq_num
    stats = c.stats
    assert stats.held_packets == 0 and stats.held_bytes == 0 and stats.open_gaps == 0
    assert stats.messages_delivered == len(covered)


datagram = st.one_of(
    st.tuples(st.integers(1, 300), st.integers(1, 20)).map(lambda t: pkt(*t)),
    st.tuples(st.integers(1, 300), st.integers(1, 20)).map(lambda t: pkt(*t, "SESSION002")),
    st.integers(0, 400).map(lambda n: build_heartbeat(S, n)),
    st.integers(0, 400).map(lambda n: build_end_of_session(S, n)),
    st.sampled_from([build_heartbeat(S, 2**64 - 1), pkt(2**64 - 3, 2)]),
    st.binary(max_size=40),
    st.binary(max_size=30).map(lambda b: S.encode() + b),
)


@settings(
    max_examples=int(os.environ.get("MOLDUDP64_HUNT", "0")) or 150,
    deadline=None,
    derandomize=not os.environ.get("MOLDUDP64_HUNT"),
)
@given(
    steps=st.lists(
        st.tuples(datagram, st.sampled_from([A, B, R]), st.floats(0.0, 0.3)),
        max_size=60,
    ),
    follow=st.booleans(),
    servers=st.integers(0, 2),
)
def test_any_input_never_raises_and_keeps_its_bounds(
    steps: list[tuple[bytes, Source, float]], follow: bool, servers: int
) -> None:
    c = core(
        rerequest_server_addrs=[SRV1, SRV2][:servers],
        follow_session_changes=follow,
        max_held_packets=5,
        max_held_bytes=400,
        max_requests_in_flight=3,
        max_messages_per_request=50,
        max_request_attempts=2,
    )
    now = 0.0
    events: list[Event] = []
    for data, source, advance in steps:
        now += advance
        c.receive_datagram(data, source, now, SRV1 if source is R else None)
        timer = c.get_timer()
        if timer is not None and timer <= now:
            c.handle_timer(now)
        for request, _ in c.datagrams_to_send(now):
            assert len(request) == 20 and 0 < int.from_bytes(request[18:], "big") <= 50
        stats = c.stats
        assert stats.held_packets <= 10 and stats.requests_in_flight <= 3
        events += c.events_received()
    c.finish(now)
    events += c.events_received()
    # every session's events tile its sequence space in order, without mixing sessions
    cursors: dict[str, int] = {}
    order: list[str] = []
    for event in events:
        if isinstance(event, MessagesDelivered | MessagesLost):
            if event.session not in order:
                order.append(event.session)
            assert event.session == order[-1], "a session came back"
            first = event.seq_num if isinstance(event, MessagesDelivered) else event.first_seq
            assert first == cursors.get(event.session, 1)
            last = event.last_seq
            cursors[event.session] = last + 1
            if isinstance(event, MessagesDelivered):
                assert event.messages == [msg(s, event.session) for s in range(first, last + 1)]
    assert len(of(events, SessionEnded)) <= len(order) + 1


def test_an_end_right_after_the_data_held_still_lets_a_farther_real_tail_be_asked_for() -> None:
    """A (forged) end right after the data held arrives first and is kept against a farther
    one; the numbers up to the farther (real) end are still asked for, and the tail the
    server holds is delivered: its data disproves the kept end, and the real end wins."""
    c = core(rerequest_server_addrs=[SRV1], end_confirm=1.5)
    c.receive_datagram(pkt(1, 5), A, 0.0)
    c.receive_datagram(build_end_of_session(S, 6), A, 0.1)  # forged, right after the data
    c.receive_datagram(build_end_of_session(S, 9), A, 0.2)  # real: 6..8 lost on the line
    assert reqs(c.datagrams_to_send(0.3)) == [(6, 3, SRV1)]
    answer(c, 6, 3, 0.31)
    c.receive_datagram(build_end_of_session(S, 9), A, 0.7)  # its repeat
    c.handle_timer(2.5)
    events = c.events_received()
    assert delivered(events) == expect(1, 8)
    assert of(events, SessionEnded) == [SessionEnded(S, 9)]
    assert of(events, MessagesLost) == [] and of(events, MessagesAfterEnd) == []


def test_a_gap_never_passed_is_asked_for_as_long_as_it_lasts_without_a_crash() -> None:
    """1, then 3 on both lines, then silence, one server that never answers: the gap the
    feed never passed is asked for on and on (its backoff capped at max_request_timeout);
    was: the 1,025th request's timeout overflowed (OverflowError after about 90 hours)."""
    c = core(rerequest_server_addrs=[SRV1])
    c.receive_datagram(pkt(1, 1), A, 0.0)
    both(c, pkt(3, 1), 0.0)
    sent = 0
    while sent < 1100 and (due := c.get_timer()) is not None:
        c.handle_timer(due)
        sent += len(reqs(c.datagrams_to_send(due)))
    assert sent >= 1100
    assert delivered(c.events_received()) == [*expect(1, 1)]
