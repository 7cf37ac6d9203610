"""ReceiverCore's batch entry points and the merged fast-path event: the same results as
one :meth:`~ReceiverCore.receive_datagram` call per datagram, with the C splitter and the
pure-Python one."""

from __future__ import annotations

import itertools
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from moldudp64 import receiver
from moldudp64.events import Address, Event, MessagesDelivered, Source
from moldudp64.receiver import ReceiverConfig, ReceiverCore
from moldudp64.wire import build_end_of_session, build_heartbeat, build_packet

S = "SESSION001"
A, B, R = Source.LINE_A, Source.LINE_B, Source.RETRANSMISSION
SRV: Address = ("127.0.0.1", 9001)


def pkt(seq: int, count: int, session: str = S) -> bytes:
    return build_packet(
        session, seq, [f"{session[-1]}:{s}".encode() for s in range(seq, seq + count)]
    )


@pytest.fixture(params=["c", "python"])
def splitter(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> str:
    """Run the fast path through the C splitter and through the pure-Python one."""
    if request.param == "c":
        if receiver.c_parse_blocks is None:
            pytest.skip("the _speedups accelerator is not built")
    else:
        monkeypatch.setattr(receiver, "_parse_or_none", receiver._parse_blocks_or_none)
        monkeypatch.setattr(receiver, "_take_next", receiver._take_next_py)
        monkeypatch.setattr(receiver, "_take_run", receiver._take_run_py)
    return str(request.param)


def test_in_order_packets_extend_one_pending_event(splitter: str) -> None:
    c = ReceiverCore(ReceiverConfig(expected_session_ident=S))
    for seq in range(1, 31, 3):
        c.receive_datagram(pkt(seq, 3), A, 0.0)
    events = c.events_received()
    runs = [e for e in events if isinstance(e, MessagesDelivered)]
    # the first packet starts the session (slow path); the rest extend one event
    assert [(e.seq_num, len(e.messages)) for e in runs] == [(1, 3), (4, 27)]
    assert [m for e in runs for m in e.messages] == [f"1:{s}".encode() for s in range(1, 31)]
    taken = runs[-1].messages[:]
    c.receive_datagram(pkt(31, 2), A, 0.0)
    assert runs[-1].messages == taken  # an event handed out is never changed afterwards
    (later,) = c.events_received()
    assert isinstance(later, MessagesDelivered) and later.seq_num == 31
    assert c.stats.messages_delivered == 32


def test_another_event_closes_the_run(splitter: str) -> None:
    c = ReceiverCore()
    c.receive_datagrams([pkt(1, 2), pkt(3, 2), pkt(9, 1), pkt(5, 4), pkt(10, 1)], A, 0.0)
    events = c.events_received()
    kinds = [type(e).__name__ for e in events]
    # 9 opens a near gap (5..8), which the next packet fills: the run closes at the gap
    assert kinds == [
        "SessionStarted",
        "MessagesDelivered",
        "MessagesDelivered",
        "GapDetected",
        "GapFilled",
        "MessagesDelivered",
        "MessagesDelivered",
    ]
    runs = [e for e in events if isinstance(e, MessagesDelivered)]
    assert [(e.seq_num, e.last_seq) for e in runs] == [(1, 2), (3, 4), (5, 9), (10, 10)]


def test_receive_in_order_stops_where_the_fast_path_ends(splitter: str) -> None:
    c = ReceiverCore(ReceiverConfig(expected_session_ident=S))
    batch = [pkt(1, 1), pkt(2, 2), pkt(4, 1), build_heartbeat(S, 5), pkt(5, 1)]
    assert c.receive_in_order(batch, 0, A, 0.0) == 0  # no session yet: the slow path
    c.receive_datagram(batch[0], A, 0.0)
    assert c.receive_in_order(batch, 1, A, 1.0) == 3
    assert c.receive_in_order(batch, 3, A, 1.0) == 3  # a heartbeat is not a data packet
    assert c.receive_in_order(batch, 5, A, 1.0) == 5  # nothing left
    assert c.receive_in_order([pkt(5, 1)], 0, R, 1.0) == 0  # answers take the slow path
    assert c.receive_in_order([bytearray(pkt(5, 1))], 0, A, 1.0) == 0  # bytes only
    assert c.receive_in_order([b"short"], 0, A, 1.0) == 0
    bad = bytearray(pkt(5, 2))
    bad[-1:] = b""
    assert c.receive_in_order([pkt(5, 1), bytes(bad)], 0, B, 1.0) == 1
    assert c.next_seq_num == 6
    stats = c.stats
    assert stats.packets == {A: 3, B: 1, R: 0}
    assert stats.messages == {A: 4, B: 1, R: 0}
    assert stats.messages_delivered == 5


# -- equivalence with one call per datagram ---------------------------------------------

OTHER = "SESSION002"


@st.composite
def traffic(draw: Any) -> list[tuple[bytes, Source]]:
    """A line's worth of datagrams: in order mostly, with loss, duplicates, reordering,
    heartbeats, garbage, another session, answers and an end of session."""
    seq = 1
    out: list[tuple[bytes, Source]] = []
    for _ in range(draw(st.integers(0, 40))):
        kind = draw(st.integers(0, 19))
        count = draw(st.integers(1, 4))
        if kind < 11:
            out.append((pkt(seq, count), A))
            seq += count
        elif kind == 11:
            seq += count  # lost
        elif kind == 12 and out:
            out.append(draw(st.sampled_from(out)))  # a duplicate
        elif kind == 13 and len(out) > 1:
            out[-1], out[-2] = out[-2], out[-1]
        elif kind == 14:
            out.append((build_heartbeat(S, seq), A))
        elif kind == 15:
            out.append((draw(st.binary(max_size=30)), A))
        elif kind == 16:
            out.append((pkt(1, count, OTHER), A))
        elif kind == 17 and seq > 1:
            first = draw(st.integers(1, seq - 1))
            out.append((pkt(first, min(count, seq - first)), R))
        elif kind == 18:
            out.append((pkt(seq, count), B))
        elif kind == 19 and draw(st.booleans()):
            out.append((build_end_of_session(S, seq), A))
    return out


def _run_each(config: ReceiverConfig, batches: list[list[tuple[bytes, Source]]]) -> Any:
    c = ReceiverCore(config)
    taken: list[list[Event]] = []
    for k, batch in enumerate(batches):
        now = k * 0.03
        if (timer := c.get_timer()) is not None and timer <= now:
            c.handle_timer(now)
        for data, source in batch:
            c.receive_datagram(data, source, now, SRV)
        taken.append(c.events_received())
        c.datagrams_to_send(now)
    c.finish(len(batches))
    taken.append(c.events_received())
    return taken, c.stats, c.next_seq_num


def _run_batched(config: ReceiverConfig, batches: list[list[tuple[bytes, Source]]]) -> Any:
    c = ReceiverCore(config)
    taken: list[list[Event]] = []
    for k, batch in enumerate(batches):
        now = k * 0.03
        if (timer := c.get_timer()) is not None and timer <= now:
            c.handle_timer(now)
        # runs of one source go in through receive_datagrams
        i = 0
        while i < len(batch):
            j = i
            while j < len(batch) and batch[j][1] == batch[i][1]:
                j += 1
            c.receive_datagrams([d for d, _ in batch[i:j]], batch[i][1], now, SRV)
            i = j
        taken.append(c.events_received())
        c.datagrams_to_send(now)
    c.finish(len(batches))
    taken.append(c.events_received())
    return taken, c.stats, c.next_seq_num


@settings(
    max_examples=120, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    datagrams=traffic(),
    cuts=st.lists(st.integers(0, 60), max_size=6),
    servers=st.booleans(),
    first_seen=st.booleans(),
)
def test_batches_equal_one_call_per_datagram(
    splitter: str,
    datagrams: list[tuple[bytes, Source]],
    cuts: list[int],
    servers: bool,
    first_seen: bool,
) -> None:
    config = ReceiverConfig(
        rerequest_server_addrs=[SRV] if servers else [],
        start_from_first_seen=first_seen,
        stale_after=None if first_seen else 0.05,
    )
    bounds = sorted({0, len(datagrams), *(c for c in cuts if c < len(datagrams))})
    batches = [datagrams[a:b] for a, b in itertools.pairwise(bounds)]
    assert _run_batched(config, batches) == _run_each(config, batches)


# -- the fast path's takers: C and pure Python give the same results ---------------------

TOP = (1 << 64) - 1


def _candidate(seq: int, count: int, session: str, mangle: int) -> bytes:
    """A datagram near the fast path's: a data packet, a heartbeat or an end of session,
    numbered anywhere up to 2**64-1, sometimes cut short, padded or given a false count."""
    if count == 0:
        data = build_heartbeat(session, seq)
    elif count == 0xFFFF:
        data = build_end_of_session(session, seq)
    else:
        data = pkt(seq, count, session) if seq + count - 1 <= TOP else pkt(1, count, session)
        if seq + count - 1 > TOP:  # numbers past 2**64-1: the header says so
            data = data[:10] + seq.to_bytes(8, "big") + data[18:]
    if mangle == 1:
        data = data[:-1]
    elif mangle == 2:
        data = data + b"\x00"
    elif mangle == 3:
        data = data[:18] + (count + 1 & 0xFFFF).to_bytes(2, "big") + data[20:]
    elif mangle == 4:
        data = data[:19]
    return data


candidates = st.builds(
    _candidate,
    seq=st.one_of(st.integers(0, 12), st.integers(TOP - 3, TOP)),
    count=st.one_of(st.integers(0, 3), st.just(0xFFFF)),
    session=st.sampled_from([S, "SESSION002"]),
    mangle=st.sampled_from([0, 0, 0, 1, 2, 3, 4]),
)


@pytest.mark.skipif(
    receiver._take_next is receiver._take_next_py, reason="the _speedups accelerator is not built"
)
@given(
    datagrams=st.lists(
        st.one_of(
            candidates,
            candidates.map(bytearray),
            candidates.map(memoryview),
        ),
        max_size=8,
    ),
    start=st.integers(-1, 9),
    expected=st.one_of(st.integers(-2, 12), st.integers(TOP - 3, TOP + 2)),
    session=st.one_of(st.none(), st.sampled_from([S.encode(), b"SESSION002", b"SHORT"])),
    as_tuple=st.booleans(),
)
def test_c_takers_equal_the_pure_python_ones(
    datagrams: list[Any], start: int, expected: int, session: bytes | None, as_tuple: bool
) -> None:
    """What the fast path takes (one datagram, or a batch's in-order run) is the same
    through the C accelerator and through its pure-Python twins, whatever the datagram:
    other sessions and numbers, heartbeats, ends, malformed packets, numbers at 2**64-1,
    buffers that are not bytes."""
    for data in datagrams:
        assert receiver._take_next(data, expected, session) == receiver._take_next_py(
            data, expected, session
        )
    batch: Any = tuple(datagrams) if as_tuple else datagrams
    out_c: list[bytes] = [b"before"]
    out_py: list[bytes] = [b"before"]
    taken_c = receiver._take_run(batch, start, expected, session, out_c)
    taken_py = receiver._take_run_py(batch, start, expected, session, out_py)
    assert (taken_c, out_c) == (taken_py, out_py)


def test_takers_stop_after_the_last_number() -> None:
    """A packet ending at 2**64-1 is taken; nothing after it can be (not even a packet
    numbered 0, where a 64-bit counter would wrap)."""
    last = build_packet(S, TOP - 1, [b"a", b"b"])
    wrapped = build_packet(S, 0, [b"c"])
    for take in {receiver._take_run, receiver._take_run_py}:
        out: list[bytes] = []
        assert take([last, wrapped], 0, TOP - 1, S.encode(), out) == 1
        assert out == [b"a", b"b"]


# -- the due heap: the timer without walking every gap -----------------------------------


def _brute_timer(c: ReceiverCore) -> float | None:
    """The protocol timer as the core computed it before the heap: every gap walked."""
    timer: float | None = None
    if c._requests:
        timer = min(req.deadline for req in c._requests.values())
    if c._segs:  # a range due with no request slot free waits in _ahead once pumped
        for seg in c._segs:
            if seg.due is not None and (timer is None or seg.due < timer):
                timer = seg.due
    return timer


def _drive_random_stream(
    c: ReceiverCore,
    rng: Any,
    n_messages: int,
    check: Any,
    *,
    loss: float,
    answer_max: int,
    answer_p: float,
    forge: bool = False,
    settle: int = 0,
) -> None:
    """A random stream of 1-4 message datagrams into ``c`` on line A (``loss`` of them
    lost), with partial answers to its requests (``answer_p`` of them answered, 3 ms later,
    with up to ``answer_max`` messages) and, with ``forge``, forged heartbeats and ends of
    session on line B; ``check()`` after every call, ``settle`` quiet 10 ms steps at the
    end, then ``finish``."""
    from moldudp64.wire import RetransmissionPacket

    msgs = [b"m%d" % i for i in range(1, n_messages)]
    answers: list[tuple[float, bytes, Address]] = []

    def step(now: float) -> None:
        timer = c.get_timer()
        if timer is not None and timer <= now:
            c.handle_timer(now)
            check()
        for data, addr in c.datagrams_to_send(now):
            request = RetransmissionPacket.parse(data)
            part = msgs[request.seq_num - 1 : request.seq_num - 1 + rng.randint(1, answer_max)]
            if part and rng.random() < answer_p:
                answers.append((now + 0.003, build_packet(S, request.seq_num, part), addr))
        check()

    seq, now = 1, 0.0
    while seq < len(msgs) - 4:
        count = rng.randint(1, 4)
        now += rng.choice([1e-4, 2e-3])
        answers.sort(key=lambda a: a[0])
        while answers and answers[0][0] <= now:
            at, data, addr = answers.pop(0)
            c.receive_datagram(data, R, at, addr)
            check()
        roll = rng.random()
        if forge and roll < 0.05:  # a forged heartbeat near or far ahead
            c.receive_datagram(build_heartbeat(S, seq + rng.choice([2, 30, 900, 5000])), B, now)
        elif forge and roll < 0.1:  # a forged end of session, near, inside or far, repeated
            end = max(1, seq + rng.choice([-20, 3, 40, 1000, 3000]))
            for _ in range(rng.choice([1, 2])):
                c.receive_datagram(build_end_of_session(S, end), B, now)
        if rng.random() > loss:
            c.receive_datagram(pkt(seq, count), A, now)
            check()
        step(now)
        seq += count
    for _ in range(settle):
        now += 0.01
        step(now)
    c.finish(now)
    check()


@pytest.mark.parametrize("seed", range(40))
def test_due_heap_keeps_the_timer_exact(seed: int) -> None:
    """Loss, reordering, partial and missing answers, retries, give-ups: after every call
    the timer equals the walk over every gap, and every gap waiting to be requested has its
    entry in the due heap."""
    import random

    rng = random.Random(seed)
    config = ReceiverConfig(
        rerequest_server_addrs=rng.choice([[], [SRV], [SRV, ("127.0.0.1", 9002)]]),
        request_delay=rng.choice([0.0, 0.002]),
        max_requests_in_flight=rng.choice([1, 4, 32]),
        max_messages_per_request=rng.choice([2, 1024]),
        max_held_packets=rng.choice([5, 50_000]),
        loss_grace=rng.choice([0.0, 0.01]),
        request_timeout=rng.choice([0.001, 0.05]),
        max_request_attempts=rng.choice([1, 3]),
    )
    c = ReceiverCore(config)

    def check() -> None:
        assert c._timer == _brute_timer(c)
        waiting = {(id(s), s.due) for s in c._segs if s.due is not None}
        assert waiting <= {(id(seg), due) for due, _, seg in c._due}

    _drive_random_stream(c, rng, 400, check, loss=0.1, answer_max=4, answer_p=0.6, settle=100)


# -- an end of session weighed without walking every gap ---------------------------------


class _CountingList(list):  # type: ignore[type-arg]
    """A segment list that counts the segments looked at (a walk, a bisect step)."""

    touched = 0

    def __getitem__(self, index: Any) -> Any:
        item = list.__getitem__(self, index)
        _CountingList.touched += len(item) if isinstance(index, slice) else 1
        return item

    def __iter__(self) -> Any:
        for item in list.__iter__(self):
            _CountingList.touched += 1
            yield item


def _segments_touched_per_datagram(n_gaps: int) -> float:
    """Segments looked at per live datagram while ``n_gaps`` gaps are open and two forged
    ends of session 1,000 beyond everything held are claimed (the claim holds on: every
    datagram timed is below it)."""
    config = ReceiverConfig(
        rerequest_server_addrs=[SRV],
        stale_after=None,
        request_timeout=1e3,
        max_request_timeout=1e3,
        max_held_packets=50_000,
    )
    c = ReceiverCore(config)
    for i, seq in enumerate([*range(1, 2 * n_gaps, 2), 2 * n_gaps + 1, 2 * n_gaps + 2]):
        c.receive_datagram(pkt(seq, 1), A, i * 1e-6)
    assert c.stats.open_gaps == n_gaps
    top = 2 * n_gaps + 3
    forged = build_end_of_session(S, top + 1000)
    c.receive_datagram(forged, A, 0.9)
    c.receive_datagram(forged, B, 0.9)
    c._segs = _CountingList(c._segs)
    _CountingList.touched = 0
    live = 500
    for i in range(live):
        c.receive_datagram(pkt(top + i, 1), A, 1.0 + i * 1e-6)
    touched = _CountingList.touched
    assert c.stats.end_of_session_pending  # the forged end was claimed all along
    return touched / live


def test_a_forged_end_claimed_with_many_gaps_open_costs_no_walk_over_them() -> None:
    """Two forged ends of session 1,000 ahead while 1,000 or 10,000 gaps are open: each
    live datagram that follows looks at a few segments (a bisect at most), the same
    number whatever the gaps (before, the end was weighed by a walk over every gap on
    each datagram: 1,000 or 10,000 segments, ~700 us a datagram at 10,000)."""
    few = _segments_touched_per_datagram(1_000)
    many = _segments_touched_per_datagram(10_000)
    assert few <= 32 and many <= 32, (few, many)
    assert many <= few + 8, (few, many)


def _walked_unpassed(c: ReceiverCore, below: int | None = None) -> int:
    """The missing numbers the feed has not passed (below ``below``), by a walk."""
    passed = c._wit - receiver._WITNESSES
    return sum(
        (seg.end if below is None else min(seg.end, below)) - seg.start
        for seg in c._segs
        if seg.wit0 > passed and (below is None or seg.start < below)
    )


def _walked_end_is_near(c: ReceiverCore, seq: int) -> bool:
    """:meth:`ReceiverCore._end_is_near` as it was computed before: a walk over the gaps."""
    window = max(c.config.max_messages_per_request, receiver._END_WINDOW)
    return seq <= c._horizon + window and _walked_unpassed(c, seq) <= window


@pytest.mark.parametrize("seed", range(15))
def test_unpassed_numbers_kept_as_gaps_change_equal_the_walk(seed: int) -> None:
    """Loss, forged heartbeats and ends (near and far, repeated), answers filling and
    splitting gaps, give-ups, ends believed: after every call the missing numbers kept as
    gaps change equal a walk over every gap, and whether an end of session is near (any
    number, below or beyond the horizon) is what the walk says."""
    import random

    rng = random.Random(seed)
    config = ReceiverConfig(
        rerequest_server_addrs=[SRV],
        max_messages_per_request=rng.choice([4, 1024]),
        max_held_packets=rng.choice([40, 50_000]),
        request_timeout=rng.choice([0.001, 0.05]),
        max_request_attempts=rng.choice([1, 3]),
        stale_after=None,
    )
    c = ReceiverCore(config)

    def check() -> None:
        assert c._missing == sum(seg.end - seg.start for seg in c._segs)
        assert c._unpassed() == _walked_unpassed(c)
        for seq in (c._expected, c._horizon - 3, c._horizon, c._horizon + 5, c._horizon + 900):
            assert c._end_is_near(seq) == _walked_end_is_near(c, seq), seq

    _drive_random_stream(c, rng, 3000, check, loss=0.15, answer_max=3, answer_p=0.5, forge=True)
