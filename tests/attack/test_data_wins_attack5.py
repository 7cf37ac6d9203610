"""attack5: hostile tests of issue 18's promise ("data wins") against the rules added last hour.

Written by a tester who wrote none of the receiver, from README.md ("What the receiver
believes") and docs/DESIGN.md: real data of the followed session that arrives on a line, or
that an honest re-request server holds, is delivered exactly once in order, never dropped
without an event naming its range, never reported lost; every message not delivered is
reported with its range; sessions end in bounded time after their real end.

Attacked here: the session left that "showed nothing real" (``_far_phantom``), the switch
held while servers bring data (``_end_fetched``, the ends-only hold), and the C fast path
(``take_next``/``take_run``) against its pure-Python twins. Every scenario runs on the
simulated clock of attack3's driver (``drive``) with its real ``Publisher`` and honest
``Server``.

The real stream of the findings: a receiver that joins session A late (started, or
restarted, near A's end: only A's last datagrams and its repeated end reach it; an honest
server holds all of A) while the publisher moves on to the next session B within seconds,
as a publisher failing over to a new session name does.
"""

from __future__ import annotations

import random
import struct
from dataclasses import dataclass

import pytest

from attack.switch_sim import STALE, msg
from attack.test_data_wins_attack3 import (
    HONEST,
    OTHER,
    A,
    B,
    Dead,
    Outcome,
    Publisher,
    Server,
    after_end,
    assert_whole,
    check_tiles,
    drive,
    ended,
    line_of,
    lost,
    named,
    real,
)
from moldudp64 import receiver
from moldudp64.events import MessagesDelivered, SessionChanged, Source
from moldudp64.receiver import ReceiverConfig, ReceiverCore
from moldudp64.wire import (
    RetransmissionPacket,
    build_end_of_session,
    build_heartbeat,
    build_packet,
)


def late_join(n: int, seen: int, next_after: float | None) -> list[Publisher]:
    """Session A of ``n`` messages (one a datagram) of which only the last ``seen``
    datagrams and the four ends reach the receiver (a late join), and, unless None, the
    real next session B of 60 messages from ``next_after`` s after A's last end."""
    a = Publisher(A, n, 0.5, dt=0.0005, per_packet=1, lost=set(range(n - seen)))
    pubs = [a]
    if next_after is not None:
        pubs.append(Publisher(B, 60, a.last_sent() + next_after, dt=0.02, per_packet=2))
    return pubs


# ----------------------------------------------------------------- a late join beyond the window


@pytest.mark.parametrize("first_lost", [0, 100], ids=["late-join", "long-outage"])
def test_a_late_join_beyond_the_window_then_the_next_session_reports_served_data_lost(
    first_lost: int,
) -> None:
    """README: a switch first recovers the gaps the feed went past; the promise: real data
    an honest server holds is delivered, never reported lost. A's repeated real end names
    3001: 1..2998 exist, and the server is bringing them when B comes."""
    pubs = late_join(3000, 2, next_after=1.0)
    pubs[0].lost -= set(range(first_lost))
    o = drive(
        line_of(pubs), [Server(HONEST, {p.session: p for p in pubs}, cap=40, delay=0.2)], 60.0
    )
    check_tiles(o)
    assert real(o, B) == list(range(1, 61))
    assert [x for x in lost(o, A)] == [], f"A: real data the server holds lost {lost(o, A)}"
    assert real(o, A) == list(range(1, 3001)), f"A: {len(real(o, A))} of 3000 delivered"
    assert [x for _, x in ended(o, A)] == [3001]


def test_a_late_join_beyond_the_window_alone_is_whole() -> None:
    """The same late join with no next session: the server's data is all delivered and A
    ends at its real end (the guard of the finding above: the server can serve it)."""
    pubs = late_join(3000, 2, next_after=None)
    o = drive(line_of(pubs), [Server(HONEST, {A: pubs[0]}, cap=40, delay=0.2)], 60.0)
    check_tiles(o)
    assert real(o, A) == list(range(1, 3001))
    assert lost(o, A) == []
    assert [x for _, x in ended(o, A)] == [3001]


@pytest.mark.parametrize("seen", [1, 2, 6])
def test_a_late_join_within_the_window_then_the_next_session_is_whole(seen: int) -> None:
    """A late join whose front gap lies within one request window (400 msgs, a slow server
    of 5 msgs an answer 0.2 s away, B 1 s after A's last end): A whole, ends at 401."""
    pubs = late_join(400, seen, next_after=1.0)
    o = drive(line_of(pubs), [Server(HONEST, {p.session: p for p in pubs}, cap=5, delay=0.2)], 60.0)
    check_tiles(o)
    assert real(o, A) == list(range(1, 401))
    assert lost(o, A) == []
    assert [x for _, x in ended(o, A)] == [401]
    assert real(o, B) == list(range(1, 61))


@pytest.mark.parametrize("seen", [1, 6])
def test_a_late_join_beyond_the_window_with_one_or_six_datagrams_is_whole(seen: int) -> None:
    """One datagram (followed on its ends) or six (the gap passed by the feed) of the same
    late join as the finding: A whole, then B (the boundary of the finding: 2..5 fail)."""
    pubs = late_join(3000, seen, next_after=1.0)
    o = drive(
        line_of(pubs), [Server(HONEST, {p.session: p for p in pubs}, cap=40, delay=0.2)], 60.0
    )
    check_tiles(o)
    assert real(o, A) == list(range(1, 3001))
    assert lost(o, A) == []
    assert real(o, B) == list(range(1, 61))


# ----------------------------------------------------------------- a real session "showed nothing"


@pytest.mark.parametrize("server", ["dead", "slow"])
def test_a_real_late_join_is_taken_for_a_session_that_showed_nothing_real(server: str) -> None:
    """The promise: every message not delivered is reported with its range; real data on
    a line or held by an honest server is delivered. A's end, repeated as a publisher
    repeats it, says 1..3000 exist. The slow server answers 5 s late, 1,000 msgs an
    answer: timeouts sized for it (max_request_timeout 6 s) let its answers be heard
    (the switch to B waits for a request in flight; was: A left for B at 6.7 s with
    1..2998 'session changed' while the server was bringing them)."""
    pubs = late_join(3000, 2, next_after=0.5)
    pm = {p.session: p for p in pubs}
    if server == "dead":
        o = drive(line_of(pubs), [Dead(HONEST, pm)], 60.0)
    else:
        srv = Server(HONEST, pm, cap=1000, delay=5.0)
        o = drive(line_of(pubs), [srv], 60.0, max_request_timeout=6.0)
    check_tiles(o)
    assert real(o, B) == list(range(1, 61))
    unnamed = sorted(set(range(1, 3001)) - named(o, A, 3000))
    assert not unnamed, (
        f"A: {len(unnamed)} numbers ({unnamed[0]}..{unnamed[-1]}) neither delivered nor "
        f"reported lost; after end {after_end(o, A)}"
    )
    assert real(o, A)[-2:] == [2999, 3000], "A: real data of the line not delivered"
    if server == "slow":
        assert real(o, A) == list(range(1, 3001))
        assert lost(o, A) == []
        assert [x for _, x in ended(o, A)] == [3001]


def _switched(o: Outcome) -> float:
    """When the receiver left A for B."""
    (at,) = [t for t, e in o.events if isinstance(e, SessionChanged)]
    return at


def _last_of_a(o: Outcome) -> float:
    """When A's last datagram (real or forged) came on a line."""
    return max(t for t, d in o.line if d[:10] == A.encode())


@pytest.mark.parametrize(
    "server,timeout",
    [("dead", 1.0), ("dead", 6.0), ("slow", 1.0)],
    ids=["dead-default", "dead-sized", "slow-beyond-timeouts"],
)
def test_a_late_join_whose_server_is_not_heard_within_the_timeouts_waits_one_at_most(
    server: str, timeout: float
) -> None:
    """Guards of the wait for a request in flight (README: a switch on silence waits for
    a request in flight for the followed session's missing numbers, up to one
    max_request_timeout after they were first asked for): the late join above with a dead
    server, or the slow one (5 s) with the default timeouts (1 s at most; it is taken for
    dead): A's 1..2998 reported lost ('session changed'), 2999..3000 delivered, B whole.
    With the default timeouts the switch comes at A's silence (as before); with 6 s, no
    later than 6 s past it."""
    pubs = late_join(3000, 2, next_after=0.5)
    pm = {p.session: p for p in pubs}
    srv = Dead(HONEST, pm) if server == "dead" else Server(HONEST, pm, cap=1000, delay=5.0)
    o = drive(line_of(pubs), [srv], 60.0, max_request_timeout=timeout)
    check_tiles(o)
    assert real(o, A) == [2999, 3000]
    assert lost(o, A) == [(1, 2998, "session changed")]
    assert real(o, B) == list(range(1, 61))
    silent = _last_of_a(o) + STALE
    if timeout == 1.0:
        assert _switched(o) == pytest.approx(silent)
    else:
        assert silent <= _switched(o) <= silent + timeout + 1e-6


@pytest.mark.parametrize("timeout", [1.0, 6.0])
@pytest.mark.parametrize(
    "times",
    [(2.6, 2.7), tuple(3.0 + 2.9 * k for k in range(6))],
    ids=["a-pair", "every-2.9s"],
)
@pytest.mark.parametrize("step", [50, 1000], ids=["near", "far"])
def test_forged_far_data_keeping_gaps_asked_holds_the_switch_one_request_timeout_at_most(
    timeout: float, times: tuple[float, ...], step: int
) -> None:
    """The bound of the wait for a request in flight: A (200 msgs, its end lost) with a
    forger's far data of A on line B (each datagram a new number far ahead: new gaps that
    keep requests for numbers no server holds in flight; a pair once, or one every 2.9 s,
    each within stale_after of the last), B from 1 s after A's last real datagram. The
    switch to B comes no later than one max_request_timeout past A's silence (its last
    datagram, forged or not, plus stale_after); A's real data whole, nothing real lost,
    B whole."""
    a = Publisher(A, 200, 0.5, dt=0.01, per_packet=2, end_lost=True)
    b = Publisher(B, 60, a.last_sent() + 1.0, dt=0.02, per_packet=2)
    pm = {A: a, B: b}
    forged = [
        (t, build_packet(A, 400 + k * step, [b"F%d" % k, b"G"]), Source.LINE_B, None)
        for k, t in enumerate(times)
    ]
    o = drive(
        line_of([a, b]) + forged,
        [Server(HONEST, pm, cap=5)],
        80.0,
        forged_bytes={d for _, d, _, _ in forged},
        max_request_timeout=timeout,
    )
    check_tiles(o)
    assert real(o, A) == list(range(1, 201))
    assert [x for x in lost(o, A) if x[0] <= 200] == []
    assert real(o, B) == list(range(1, 61))
    silent = _last_of_a(o) + STALE
    assert silent <= _switched(o) <= silent + timeout + 1e-6


# ----------------------------------------------------------------- the C fast path and its twins

_S = b"AAAAAAAAAA"
_O = b"OOOOOOOOOO"
_TOP = (1 << 64) - 1


def _packet(session: bytes, seq: int, msgs: list[bytes], count: int | None = None) -> bytes:
    """A downstream packet, its count possibly lying."""
    body = b"".join(struct.pack(">H", len(m)) + m for m in msgs)
    n = len(msgs) if count is None else count
    return session + struct.pack(">QH", seq & _TOP, n) + body


def _odd_datagram(rnd: random.Random, expected: int) -> bytes | bytearray:
    """A datagram near the fast path's edge: the next number or one off, near 2**64, an
    end or heartbeat (with a stray block), a lying count, cut or padded, another session,
    a bytearray."""
    seq = rnd.choice([expected, expected, expected, expected + 1, expected - 1, _TOP, _TOP - 1, 0])
    kind = rnd.random()
    if kind < 0.1:
        data = _packet(_S, seq, [], count=rnd.choice([0, 0xFFFF]))
        return data + (b"x" if rnd.random() < 0.3 else b"")
    msgs = [bytes(rnd.randrange(4)) for _ in range(rnd.choice([1, 2, 3, 5]))]
    count = None
    if kind < 0.2:
        count = len(msgs) + 1
    elif kind < 0.3:
        count = len(msgs) - 1
    elif kind < 0.33:
        count = 0xFFFE
    data = _packet(_S if rnd.random() < 0.9 else _O, seq, msgs, count)
    if rnd.random() < 0.1:
        data = data[:-1]
    if rnd.random() < 0.05:
        data += b"\0"
    return bytearray(data) if rnd.random() < 0.05 else data


@pytest.mark.skipif(
    receiver._take_next is receiver._take_next_py, reason="the _speedups accelerator is not built"
)
def test_c_takers_and_their_pure_python_twins_agree_on_odd_input() -> None:
    """take_next/take_run (C) against _take_next_py/_take_run_py on 20,000 random batches:
    expected numbers at 0, 2**64-1, 2**64, beyond, negative; no or a wrong session; a
    ``start`` before, at and beyond the batch; packets of every odd shape (same results,
    same messages appended to a list already holding one)."""
    rnd = random.Random(5)
    for _ in range(20_000):
        expected = rnd.choice([1, 5, _TOP, _TOP - 2, 0, 1 << 64, -1, 1 << 70])
        session = rnd.choice([_S, _S, _S, None, _O, b"short"])
        batch: list[bytes | bytearray] = []
        nxt = expected
        for _ in range(rnd.randrange(5)):
            d = _odd_datagram(rnd, max(nxt, 0))
            batch.append(d)
            if rnd.random() < 0.8 and len(d) >= 20:
                nxt = int.from_bytes(d[10:18], "big") + int.from_bytes(d[18:20], "big")
        for d in batch:
            assert receiver._take_next(d, expected, session) == receiver._take_next_py(
                d, expected, session
            ), (d, expected, session)
        start = rnd.choice([0, 0, 1, 2, len(batch), len(batch) + 3, -1])
        out_c: list[bytes] = [b"pre"]
        out_py: list[bytes] = [b"pre"]
        i_c = receiver._take_run(batch, start, expected, session, out_c)
        i_py = receiver._take_run_py(batch, start, expected, session, out_py)
        assert (i_c, out_c) == (i_py, out_py), (batch, start, expected, session)


def _take_nothing(data: object, expected: int, session: object) -> None:
    """A taker that takes nothing: every datagram goes the slow way."""
    return None


def _run_nothing(datagrams: object, start: int, expected: int, session: object, out: object) -> int:
    """A batch taker that takes nothing."""
    return start


def _events_of(
    stream: list[list[bytes | bytearray]], path: str, mp: pytest.MonkeyPatch
) -> list[str]:
    """The events of one core fed ``stream`` (batches on line A, 1 ms apart), with the
    fast path as built ("c"), its pure-Python twins ("py") or no fast path ("slow")."""
    with mp.context() as m:
        if path == "py":
            m.setattr(receiver, "_take_next", receiver._take_next_py)
            m.setattr(receiver, "_take_run", receiver._take_run_py)
        elif path == "slow":
            m.setattr(receiver, "_take_next", _take_nothing)
            m.setattr(receiver, "_take_run", _run_nothing)
        core = ReceiverCore(ReceiverConfig(rerequest_server_addrs=[HONEST]))
        now = 0.0
        out: list[str] = []
        for k, batch in enumerate(stream):
            now += 0.001
            if k % 2:
                core.receive_datagrams(batch, Source.LINE_A, now)
            else:
                for d in batch:
                    core.receive_datagram(d, Source.LINE_A, now)
            for e in core.events_received():
                if isinstance(e, MessagesDelivered):  # message by message, bytes too
                    out += [
                        f"D {e.session} {e.seq_num + j} {m!r}" for j, m in enumerate(e.messages)
                    ]
                else:
                    out.append(repr(e))
            out += [repr(r) for r in core.datagrams_to_send(now)]
        return out


def test_the_receiver_gives_the_same_events_with_the_c_or_the_python_fast_path(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The same stream of odd datagrams at and around the next number (lying counts, cut
    packets, other sessions, heartbeats, ends, numbers up to 2**64-1), in batches and one
    by one: the same events and requests with the C fast path, its pure-Python twins, or
    no fast path at all (the fast path takes nothing the slow path would refuse; deliveries
    compared message by message, as the slow path may cut them into other events)."""
    rnd = random.Random(18)
    for _ in range(300):
        stream: list[list[bytes | bytearray]] = []
        nxt = rnd.choice([1, 1, _TOP - 40])
        base = nxt
        if base != 1:  # a session whose numbers start near the top: start there
            stream.append([build_heartbeat("AAAAAAAAAA", base)])
        for _ in range(rnd.randrange(1, 8)):
            batch: list[bytes | bytearray] = []
            for _ in range(rnd.randrange(1, 6)):
                if rnd.random() < 0.6 and nxt + 3 <= _TOP:
                    batch.append(
                        build_packet("AAAAAAAAAA", nxt, [b"m%d" % (nxt + j) for j in range(3)])
                    )
                    nxt += 3
                else:
                    batch.append(_odd_datagram(rnd, nxt))
            stream.append(batch)
        if rnd.random() < 0.5:
            stream.append([build_end_of_session("AAAAAAAAAA", nxt)])
        fast = _events_of(stream, "c", monkeypatch)
        assert fast == _events_of(stream, "py", monkeypatch), stream
        assert fast == _events_of(stream, "slow", monkeypatch), stream


# ----------------------------------------------------------------- an end set aside, then a pause


def _paused_session(pause: float, beats: bool) -> list[tuple[float, bytes, Source, None]]:
    """Real session A: 1..300 from 0.5 s (10 ms apart), a pause of ``pause`` s (the line
    out: nothing reaches the receiver; or, with ``beats``, the publisher idle, sending its
    heartbeat at 301 each second), 301..400, then its end 401 four times 0.5 s apart; and
    a forger's end of A at 91 sent twice, 1 ms apart, at 1.401 s on line B (while A is
    live: 210 live datagrams go past it)."""
    line: list[tuple[float, bytes, Source, None]] = []
    t = 0.5
    for s in range(1, 401):
        if s == 301:
            if beats:
                line += [
                    (t + k, build_heartbeat(A, 301), Source.LINE_A, None) for k in range(int(pause))
                ]
            t += pause
        line.append((t, build_packet(A, s, [msg(A, s)]), Source.LINE_A, None))
        t += 0.01
    line += [
        (t + 0.2 + 0.5 * k, build_end_of_session(A, 401), Source.LINE_A, None) for k in range(4)
    ]
    line += [
        (1.401 + 0.001 * k, build_end_of_session(A, 91), Source.LINE_B, None) for k in range(2)
    ]
    return line


def test_an_end_set_aside_is_claimed_in_a_line_outage_and_the_data_after_it_is_not_delivered() -> (
    None
):
    """README: an end that five live datagrams went past is set aside; the promise: a rule a
    forger can satisfy may delay work, never destroy data; real data that arrives on a line
    is delivered. The forged end was contradicted by 210 live datagrams; an outage of the
    line (no datagram at all for 2.6 s) is no evidence for it."""
    a = Publisher(A, 400, 0.5, dt=0.01, per_packet=1)
    o = drive(_paused_session(2.6, beats=False), [Server(HONEST, {A: a}, cap=5)], 60.0)
    check_tiles(o)
    assert real(o, A)[:300] == list(range(1, 301))
    assert real(o, A) == list(range(1, 401)), f"A: after its end {after_end(o, A)}"
    assert [x for _, x in ended(o, A)] == [401], f"A ended {ended(o, A)}, real end 401 (x4)"


def test_an_end_set_aside_stays_aside_while_the_idle_feed_beats() -> None:
    """The same forged end and a 6 s pause in which the idle publisher sends its heartbeat
    each second (README: a feed that goes on beats restarts the quiet): A whole, ends at
    401, nothing named after its end."""
    a = Publisher(A, 400, 0.5, dt=0.01, per_packet=1)
    o = drive(_paused_session(6.0, beats=True), [Server(HONEST, {A: a}, cap=5)], 60.0)
    check_tiles(o)
    assert real(o, A) == list(range(1, 401))
    assert after_end(o, A) == []
    assert [x for _, x in ended(o, A)] == [401]


# ------------------------------------------------------ a heartbeat staircase on a quiet gap


@pytest.mark.parametrize("forged_at", [500, 5000, 10**9])
@pytest.mark.parametrize("server", ["dead", "drops-6"])
def test_a_forged_heartbeat_beyond_a_quiet_real_gap_costs_no_real_data(
    forged_at: int, server: str
) -> None:
    """README: a heartbeat beyond an unpassed gap ending at everything held lengthens it.
    A real gap opened by the idle feed's own heartbeat (101..105 lost, heartbeat 106 at 1.6
    and 2.6 s), a forger's heartbeat far beyond at 1.75 s, then A's 106..300 and end 301
    x4, B 2 s later: 101..105 delivered (a server that drops its first six answers to each
    number) or reported lost (dead server), never 'session changed'; A ends at 301."""
    line: list[tuple[float, bytes, Source, None]] = [
        (0.5 + 0.01 * (s - 1), build_packet(A, s, [msg(A, s)]), Source.LINE_A, None)
        for s in range(1, 101)
    ]
    line += [(1.6 + k, build_heartbeat(A, 106), Source.LINE_A, None) for k in range(2)]
    line += [
        (3.0 + 0.01 * (s - 106), build_packet(A, s, [msg(A, s)]), Source.LINE_A, None)
        for s in range(106, 301)
    ]
    line += [(5.15 + 0.5 * k, build_end_of_session(A, 301), Source.LINE_A, None) for k in range(4)]
    line.append((1.75, build_heartbeat(A, forged_at), Source.LINE_B, None))
    a = Publisher(A, 300, 0.5, dt=0.01, per_packet=1)
    b = Publisher(B, 60, 8.0, dt=0.02, per_packet=2)
    line += line_of([b])
    pm = {A: a, B: b}
    srv = (
        Dead(HONEST, pm)
        if server == "dead"
        else Server(HONEST, pm, cap=5, drop=lambda s, q, k: k < 6)
    )
    o = drive(line, [srv], 60.0)
    check_tiles(o)
    assert real(o, B) == list(range(1, 61))
    assert [x for _, x in ended(o, A)] == [301]
    if server == "dead":
        assert real(o, A) == [*range(1, 101), *range(106, 301)]
        assert lost(o, A) == [(101, 105, "request attempts exhausted")]
    else:
        assert real(o, A) == list(range(1, 301))
        assert lost(o, A) == []


# ----------------------------------------------------------------- zero-count answers


@dataclass
class _ZeroCount(Server):
    """A configured server that answers every request with a zero-count packet (its store
    empty, or another feed's): alive, holding nothing."""

    def answer(self, req: bytes, now: float) -> bytes | None:
        p = RetransmissionPacket.parse(req)
        self.requests += 1
        return build_heartbeat(p.session_ident.strip(), p.seq_num)


@pytest.mark.parametrize("lost_at", [0, 50, 150])
def test_a_server_answering_zero_counts_does_not_keep_the_retries_from_the_honest_one(
    lost_at: int,
) -> None:
    """README: a zero-count answer shows a server alive (retries go back to it). With one
    that holds nothing listed first and an honest server 1 s away, A's lost packets (10 at
    the front, 10 in the middle, 50 at the tail) are all delivered, A ends at 201, B
    follows whole."""
    n_lost = 50 if lost_at == 150 else 10
    a = Publisher(A, 200, 0.5, dt=0.01, per_packet=1, lost=set(range(lost_at, lost_at + n_lost)))
    b = Publisher(B, 60, a.last_sent() + 1.0, dt=0.02, per_packet=2)
    pm = {A: a, B: b}
    zero = _ZeroCount(OTHER, pm)
    o = drive(line_of([a, b]), [zero, Server(HONEST, pm, cap=5, delay=1.0)], 60.0)
    check_tiles(o)
    assert real(o, A) == list(range(1, 201))
    assert lost(o, A) == []
    assert [x for _, x in ended(o, A)] == [201]
    assert real(o, B) == list(range(1, 61))


# ----------------------------------------------------------------- one real end, sent once


@pytest.mark.parametrize("lost_at", [0, 90], ids=["front", "tail"])
@pytest.mark.parametrize("server", ["slow", "dead"])
def test_a_real_end_sent_once_still_ends_the_session(lost_at: int, server: str) -> None:
    """The spec does not ask a publisher to repeat its end; README: an end right after the
    data counts as repeated only with three copies or two 0.2 s apart (against another
    end). With no rival, A's end 101 sent once after 10 packets lost on the line (front or
    tail): those delivered (a server 2 s away) or reported lost (dead server), A ends at
    101, B (from 1 s after) whole."""
    a = Publisher(A, 100, 0.5, dt=0.01, per_packet=1, end_repeats=1)
    a.lost = set(range(lost_at, lost_at + 10))
    b = Publisher(B, 60, a.last_sent() + 1.0, dt=0.02, per_packet=2)
    pm = {A: a, B: b}
    srv = Dead(HONEST, pm) if server == "dead" else Server(HONEST, pm, cap=5, delay=2.0)
    o = drive(line_of([a, b]), [srv], 60.0)
    check_tiles(o)
    assert [x for _, x in ended(o, A)] == [101]
    assert real(o, B) == list(range(1, 61))
    if server == "dead":
        gap = (lost_at + 1, lost_at + 10, "request attempts exhausted")
        assert lost(o, A) == [gap]
        assert real(o, A) == [n for n in range(1, 101) if not gap[0] <= n <= gap[1]]
    else:
        assert real(o, A) == list(range(1, 101))
        assert lost(o, A) == []


# ----------------------------------------------------------------- an ends-only session holds B


def test_an_ends_only_session_fetched_slowly_holds_a_busy_next_session_without_loss() -> None:
    """README: a session followed on its ends alone holds the switch while a server brings
    its data, the next one's datagrams waiting, bounded. A of 5,000 msgs seen only through
    its ends (a server of 40 msgs an answer, 0.2 s away: about 25 s), B of 3,000 msgs
    (one a datagram, 2 ms apart) from 1 s after A's last end, at most 500 packets held:
    both whole, nothing lost, both end."""
    a = Publisher(A, 5000, 0.5, dt=0.0005, per_packet=1).all_lost()
    b = Publisher(B, 3000, a.last_sent() + 1.0, dt=0.002, per_packet=1)
    pm = {A: a, B: b}
    o = drive(line_of([a, b]), [Server(HONEST, pm, cap=40, delay=0.2)], 120.0, max_held_packets=500)
    check_tiles(o)
    assert_whole(o, A, 5000)
    assert_whole(o, B, 3000)


def test_a_slow_servers_late_join_holds_a_busy_next_session_without_loss() -> None:
    """The wait for a request in flight against a real next session still sending: the
    slow late join above (timeouts sized, 6 s) with B of 3,000 msgs (one a datagram, 2 ms
    apart) from 0.5 s after A's last end: B's datagrams wait (bounded) while A is
    fetched; both whole, nothing lost, both end."""
    a = Publisher(A, 3000, 0.5, dt=0.0005, per_packet=1, lost=set(range(2998)))
    b = Publisher(B, 3000, a.last_sent() + 0.5, dt=0.002, per_packet=1)
    pm = {A: a, B: b}
    srv = Server(HONEST, pm, cap=1000, delay=5.0)
    o = drive(line_of([a, b]), [srv], 60.0, max_request_timeout=6.0)
    check_tiles(o)
    assert_whole(o, A, 3000)
    assert_whole(o, B, 3000)


def test_an_outage_fetched_slower_than_end_confirm_names_every_number_before_the_end() -> None:
    """The promise: every message not delivered is reported; real data an honest server
    holds is delivered. B's repeated end says 1..3000 exist, the server holds them all."""
    b = Publisher(B, 3000, 0.5, dt=0.002, per_packet=1, lost=set(range(498, 3000)))
    o = drive(
        line_of([b]), [Server(HONEST, {B: b}, cap=1000, delay=5.0)], 60.0, max_request_timeout=6.0
    )
    check_tiles(o)
    assert real(o, B) == list(range(1, 3001))
    assert lost(o, B) == []
    assert [x for _, x in ended(o, B)] == [3001]
