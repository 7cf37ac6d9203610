"""RerequestServerCore on a simulated clock: answers, refusals by reason, rate limit, allow-list."""

from __future__ import annotations

import ipaddress
import struct
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from moldudp64.binaryfile import write_binaryfile
from moldudp64.exceptions import BinaryFileError, ConfigError
from moldudp64.rerequest import REFUSAL_REASONS, PeerTable, RateLimit, RerequestServerCore
from moldudp64.store import BinaryFileStore, MemoryStore
from moldudp64.wire import Packet, RetransmissionPacket, split_blocks

SESSION = "SRV0000001"
CLIENT = ("127.0.0.1", 40000)
MESSAGES = [bytes([i % 256]) * (i % 97) for i in range(1000)]


def request(seq: int, count: int, session: str = SESSION) -> bytes:
    return struct.pack(">10sQH", session.encode(), seq, count)


def make_server(**kwargs: object) -> RerequestServerCore:
    store = MemoryStore(max_bytes=None)
    for m in MESSAGES:
        store.append(m)
    return RerequestServerCore(SESSION, store, **kwargs)  # type: ignore[arg-type]


def refused(server: RerequestServerCore) -> dict[str, int]:
    return {k: v for k, v in server.stats.refused.items() if v}


def test_answer_echoes_session_and_seq_and_holds_what_fits() -> None:
    server = make_server()
    answer = server.handle_request(RetransmissionPacket(SESSION, 5, 3).build(), CLIENT, 0.0)
    assert answer is not None
    packet = Packet.parse(answer)
    assert packet.session_ident == SESSION and packet.seq_num == 5 and packet.msg_count == 3
    assert split_blocks(answer) == MESSAGES[4:7]
    stats = server.stats
    assert (stats.requests, stats.answers, stats.messages, stats.bytes) == (1, 1, 3, len(answer))
    assert stats.refused_total == 0


def test_partial_answer_at_the_payload_cap() -> None:
    server = make_server()
    answer = server.handle_request(request(1, 1000), CLIENT, 0.0)
    assert answer is not None
    got = split_blocks(answer)
    used = sum(2 + len(m) for m in got)
    assert got == MESSAGES[: len(got)]
    assert used <= 1452 < used + 2 + len(MESSAGES[len(got)])  # exactly as many as fit
    assert len(answer) - 20 == used


def test_answer_is_cut_at_what_the_store_holds() -> None:
    server = make_server()
    answer = server.handle_request(request(999, 50), CLIENT, 0.0)
    assert answer is not None
    assert split_blocks(answer) == MESSAGES[998:]


@pytest.mark.parametrize(
    ("data", "reason"),
    [
        (request(1, 1)[:19], "bad_length"),
        (request(1, 1) + b"\x00", "bad_length"),
        (b"", "bad_length"),
        (request(1, 1, "OTHERSESS1"), "wrong_session"),
        (request(1, 1, "SRV0000001"[:9]), "wrong_session"),
        (request(0, 5), "seq_zero"),
        (request(3, 0), "count_zero"),
        (request(1001, 1), "not_held"),
        (request(2**64 - 1, 0xFFFF), "not_held"),
    ],
)
def test_bad_requests_get_no_answer_and_are_counted(data: bytes, reason: str) -> None:
    server = make_server()
    assert server.handle_request(data, CLIENT, 0.0) is None
    assert refused(server) == {reason: 1}
    assert server.stats.answers == 0


def test_evicted_messages_are_not_held() -> None:
    store = MemoryStore(max_messages=10)
    for m in MESSAGES:
        store.append(m)
    server = RerequestServerCore(SESSION, store)
    assert server.handle_request(request(990, 1), CLIENT, 0.0) is None
    assert refused(server) == {"not_held": 1}
    assert server.handle_request(request(991, 1), CLIENT, 0.0) is not None


def test_a_message_larger_than_max_payload_is_sent_alone() -> None:
    store = MemoryStore()
    store.append(b"small")
    store.append(b"B" * 3000)
    server = RerequestServerCore(SESSION, store, max_payload=1452)
    answer = server.handle_request(request(2, 5), CLIENT, 0.0)
    assert answer is not None and split_blocks(answer) == [b"B" * 3000]
    answer = server.handle_request(request(1, 5), CLIENT, 0.0)
    assert answer is not None and split_blocks(answer) == [b"small"]


def test_rate_limit_holds_one_source_while_another_is_served() -> None:
    limit = RateLimit(requests_per_second=10, bytes_per_second=1e9, burst_seconds=1.0)
    server = make_server(rate_limit=limit)
    flooder = ("10.0.0.1", 5000)
    answered = sum(
        server.handle_request(request(1, 1), (flooder[0], 5000 + i), 0.0) is not None
        for i in range(1000)
    )
    assert answered == 10  # the burst, whatever the source port
    # 5 more wait for budget (0.5 s at 10 a second), the rest are refused
    assert refused(server) == {"rate_limited": 985}
    assert server.stats.waiting == 5
    assert server.handle_request(request(1, 1), ("10.0.0.2", 5000), 0.0) is not None
    # the waiting ones are answered as the bucket refills, to the port each came from
    assert server.get_timer() == pytest.approx(0.1)
    assert server.answers_due(0.05) == []
    due = server.answers_due(0.1)
    assert [addr for _, addr in due] == [(flooder[0], 5010)]
    assert len(server.answers_due(0.5)) == 4
    assert server.stats.waited == 5 and server.stats.waiting == 0
    assert server.get_timer() is None


def test_byte_budget_limits_amplification() -> None:
    limit = RateLimit(requests_per_second=1e6, bytes_per_second=10_000, burst_seconds=1.0)
    server = make_server(rate_limit=limit)
    sent = 0
    for _ in range(100):
        answer = server.handle_request(request(1, 1000), CLIENT, 0.0)
        if answer is not None:
            sent += len(answer)
    assert 10_000 <= sent < 10_000 + 1472  # the last answer may overdraw once
    assert server.stats.refused["rate_limited"] > 60
    # what waits is answered at the byte rate, not faster
    sent += sum(len(a) for a, _ in server.answers_due(0.5))
    assert sent < 10_000 * 1.5 + 1472


def test_source_table_is_bounded_under_spoofed_flood() -> None:
    server = make_server(rate_limit=RateLimit(max_sources=100))
    for i in range(20_000):
        host = str(ipaddress.IPv4Address(0x0A000000 + i))
        server.handle_request(request(1, 1), (host, 1), i * 1e-6)
    assert server.stats.sources == 100
    assert len(server._sources) == 100


def test_global_byte_cap_bounds_total_traffic() -> None:
    limit = RateLimit(global_bytes_per_second=20_000, burst_seconds=1.0)
    server = make_server(rate_limit=limit)
    total = 0
    for i in range(1000):
        host = str(ipaddress.IPv4Address(0x0A000000 + i))
        answer = server.handle_request(request(1, 1000), (host, 1), 0.0)
        total += len(answer) if answer else 0
    assert total < 20_000 + 1472


def test_a_store_that_fails_is_counted_not_raised(tmp_path: Path) -> None:
    path = tmp_path / "f.bin"
    write_binaryfile(path, MESSAGES[:10])
    store = BinaryFileStore(path)
    server = RerequestServerCore(SESSION, store)
    assert server.handle_request(request(1, 1), CLIENT, 0.0) is not None
    store.close()
    assert server.handle_request(request(1, 1), CLIENT, 0.0) is None
    assert refused(server) == {"store_error": 1}
    assert isinstance(server.last_store_error, BinaryFileError)


def test_rate_limit_off() -> None:
    server = make_server(rate_limit=None)
    assert all(
        server.handle_request(request(1, 1000), CLIENT, 0.0) is not None for _ in range(5000)
    )


def test_allow_list() -> None:
    server = make_server(allow=["127.0.0.0/8", ipaddress.ip_network("192.168.1.0/24")])
    assert server.handle_request(request(1, 1), ("127.0.0.5", 1), 0.0) is not None
    assert server.handle_request(request(1, 1), ("192.168.1.9", 1), 0.0) is not None
    assert server.handle_request(request(1, 1), ("10.1.1.1", 1), 0.0) is None
    assert server.handle_request(request(1, 1), ("not-an-ip", 1), 0.0) is None
    assert refused(server) == {"not_allowed": 2}


@pytest.mark.parametrize(
    "kwargs",
    [
        {"max_payload": 2},
        {"max_payload": 70000},
        {"allow": ["nonsense"]},
        {"rate_limit": "fast"},
    ],
)
def test_bad_options_are_config_errors(kwargs: dict[str, object]) -> None:
    with pytest.raises(ConfigError):
        make_server(**kwargs)


@pytest.mark.parametrize(
    "kwargs",
    [
        {"requests_per_second": 0},
        {"bytes_per_second": -1},
        {"burst_seconds": 0},
        {"max_sources": 0},
        {"global_bytes_per_second": 0},
    ],
)
def test_bad_rate_limits_are_config_errors(kwargs: dict[str, float]) -> None:
    with pytest.raises(ConfigError):
        RateLimit(**kwargs)  # type: ignore[arg-type]


def test_every_reason_has_a_counter() -> None:
    assert set(make_server().stats.refused) == set(REFUSAL_REASONS)


@settings(max_examples=100, deadline=None)
@given(
    seq=st.integers(1, 1000),
    count=st.integers(1, 0xFFFF),
    max_payload=st.integers(100, 5000),
)
def test_any_valid_request_gets_the_longest_prefix_that_fits(
    seq: int, count: int, max_payload: int
) -> None:
    server = make_server(max_payload=max_payload, rate_limit=None)
    answer = server.handle_request(request(seq, count), CLIENT, 0.0)
    assert answer is not None
    got = split_blocks(answer)
    assert 1 <= len(got) <= count
    assert got == MESSAGES[seq - 1 : seq - 1 + len(got)]
    assert len(answer) - 20 <= max_payload
    following = seq - 1 + len(got)
    if len(got) < count and following < len(MESSAGES):
        assert len(answer) - 20 + 2 + len(MESSAGES[following]) > max_payload


# -- abuse: a chaining client, evicted buckets, floods (simulated clock) ------------------


def big_server(n: int = 100_000, **kwargs: object) -> RerequestServerCore:
    store = MemoryStore(max_bytes=None)
    store.extend([b"M" * 36] * n)
    return RerequestServerCore(SESSION, store, **kwargs)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("limit", "rtt"),
    [(RateLimit(), 50e-6), (RateLimit(), 0.0), (RateLimit.per_source(100), 1e-3)],
)
def test_a_client_that_waits_for_each_answer_is_never_refused(limit: RateLimit, rtt: float) -> None:
    """Nassau's way: one request at a time for up to 65,534 messages from the first missing
    one, the next sent when the answer arrives; 20,000 requests per second and more."""
    server = big_server(rate_limit=limit)
    now, seq, requests = 0.0, 1, 0
    while seq <= 100_000:
        answer = server.handle_request(request(seq, 65534), CLIENT, now)
        requests += 1
        while answer is None:  # waiting for budget: comes out at the server's timer
            timer = server.get_timer()
            assert timer is not None, server.stats
            now = max(now, timer)
            due = server.answers_due(now)
            if due:
                assert len(due) == 1 and due[0][1] == CLIENT
                answer = due[0][0]
        seq += Packet(answer).msg_count
        now += rtt
    assert server.stats.refused_total == 0
    assert server.stats.answers == requests > 2500  # every message, ~38 an answer
    if limit.requests_per_second == 100:  # slowed to its budget, not refused
        assert now == pytest.approx((requests - 100) / 100, rel=0.05)


def test_an_evicted_source_gets_no_more_than_its_budget() -> None:
    """One host asks flat out while 4,200 others each ask every 0.5 s: pushing its bucket
    out of the 4,096-source table must not give it a fresh burst."""
    limit = RateLimit(bytes_per_second=1_000_000, global_bytes_per_second=50_000_000)
    server = big_server(rate_limit=limit)
    victim = ("192.0.2.1", 1)
    others = [(str(ipaddress.IPv4Address(0x0A000000 + i)), 1) for i in range(4200)]
    got = total = 0
    step, seconds = 0.5 / 4200, 10.0
    for tick in range(int(seconds / step)):
        now = tick * step
        for answer, addr in server.handle_requests(
            [(request(1, 1000), others[tick % 4200]), (request(1, 1000), victim)], now
        ):
            total += len(answer)
            if addr == victim:
                got += len(answer)
    # its budget over 10 s: 10 s of rate + one burst, + one answer of overdraw
    assert got <= limit.bytes_per_second * (seconds + limit.burst_seconds) + 1472
    assert got >= limit.bytes_per_second * seconds * 0.9  # and it does get its budget
    assert total <= 50_000_000 * (seconds + 1) + 1472
    assert server.stats.sources <= 4096


def test_new_sources_share_one_budget_while_the_table_is_full_of_busy_ones() -> None:
    limit = RateLimit(requests_per_second=10, max_sources=4)
    server = big_server(rate_limit=limit)
    for i in range(4):  # four busy sources fill the table
        for _ in range(20):
            server.handle_request(request(1, 1), (f"10.0.0.{i}", 1), 0.0)
    answered = sum(
        server.handle_request(request(1, 1), (f"10.1.{i // 250}.{i % 250}", 1), 0.0) is not None
        for i in range(1000)
    )
    # New sources share one source's budget as a class (and the overflow bucket while
    # the table is full): the three busy new ones spent it, the 1,000 newcomers get none.
    assert answered == 0
    assert server.stats.answers <= 10 + 10 + 5  # the established one's, the class's, overdraw
    assert server.stats.sources == 4
    # once a busy bucket has refilled, a newcomer takes its place
    assert server.handle_request(request(1, 1), ("10.2.0.1", 1), 5.0) is not None
    assert server.stats.sources == 4


def test_a_client_within_its_budget_keeps_its_answers_while_eight_flood() -> None:
    """8 hosts at 836,000 requests/s together, a client at 100/s, batches of 256, and a
    global cap the flood alone would exhaust: the client keeps >= 90% of its answers."""
    limit = RateLimit(global_bytes_per_second=10_000_000)
    server = big_server(rate_limit=limit)
    flooders = [(f"127.0.0.{i}", 4000 + i) for i in range(2, 10)]
    client = ("127.0.0.20", 5000)
    flood_per_batch = 256
    batch_seconds = flood_per_batch / 836_000
    asked = got = 0
    next_ask = 0.0
    flood = [(request(1 + i, 1000), flooders[i % 8]) for i in range(flood_per_batch)]
    for b in range(int(2.0 / batch_seconds)):
        now = b * batch_seconds
        batch = list(flood)
        if now >= next_ask:
            batch.insert(b % flood_per_batch, (request(5, 1000), client))
            asked += 1
            next_ask += 0.01
        for _, addr in server.handle_requests(batch, now):
            got += addr == client
    got += sum(addr == client for _, addr in server.answers_due(3.0))
    assert asked == 200
    assert got >= 0.9 * asked
    assert server.stats.bytes <= 10_000_000 * 3 + 1472  # within the global cap


def test_a_flood_waits_in_bounded_memory_and_refusals_are_logged_once_per_interval(
    caplog: pytest.LogCaptureFixture,
) -> None:
    limit = RateLimit(requests_per_second=100, max_waiting=8, log_interval=10.0)
    server = big_server(rate_limit=limit)
    with caplog.at_level("WARNING", logger="moldudp64.rerequest"):
        for i in range(10_000):
            server.handle_request(request(1, 1), ("10.9.9.9", 1), i * 1e-4)  # 1 s of flood
    assert server.stats.waiting <= 8
    assert server.stats.refused["rate_limited"] > 9000
    warnings = [r for r in caplog.records if "10.9.9.9" in r.getMessage()]
    assert len(warnings) == 1 and "rate limit" in warnings[0].getMessage()
    caplog.clear()
    with caplog.at_level("WARNING", logger="moldudp64.rerequest"):
        for i in range(100):
            server.handle_request(request(1, 1), ("10.9.9.9", 1), 11.0 + i * 1e-4)
    assert len(caplog.records) == 1
    assert "refused since the last report" in caplog.records[0].getMessage()


def test_per_source_limit_from_one_figure() -> None:
    limit = RateLimit.per_source(500, max_payload=1452)
    assert limit.requests_per_second == 500
    assert limit.bytes_per_second == 500 * 1472
    assert limit.global_bytes_per_second == 50_000_000
    assert RateLimit.per_source(100_000).global_bytes_per_second == 100_000 * 1472
    with pytest.raises(ConfigError):
        RateLimit.per_source(0)


@settings(max_examples=60, deadline=None)
@given(
    sizes=st.lists(st.integers(0, 5000), min_size=1, max_size=40),
    seq=st.integers(1, 40),
    count=st.integers(1, 0xFFFF),
    max_payload=st.integers(3, 3000),
)
def test_every_answer_is_within_max_payload_or_one_message_alone(
    sizes: list[int], seq: int, count: int, max_payload: int
) -> None:
    store = MemoryStore(max_bytes=None)
    for i, size in enumerate(sizes):
        store.append(bytes([i % 256]) * size)
    server = RerequestServerCore(SESSION, store, max_payload=max_payload, rate_limit=None)
    answer = server.handle_request(request(seq, count), CLIENT, 0.0)
    if seq > len(sizes):
        assert answer is None
        return
    assert answer is not None
    blocks = split_blocks(answer)
    if len(answer) - 20 > max_payload:  # the documented exception: one message, alone
        assert len(blocks) == 1 and 2 + sizes[seq - 1] > max_payload
    assert blocks[0] == bytes([(seq - 1) % 256]) * sizes[seq - 1]


@settings(max_examples=150, deadline=None)
@given(
    events=st.lists(
        st.tuples(
            st.integers(0, 5),  # host
            st.floats(0, 0.05),  # time step
            st.integers(1, 2000),  # first sequence number asked
            st.booleans(),  # a batch (the servers' path) or one at a time
        ),
        max_size=300,
    ),
    rps=st.sampled_from([5.0, 50.0, 2000.0]),
    bps=st.sampled_from([2_000.0, 50_000.0, 4e6]),
)
def test_every_request_is_answered_refused_or_waiting_and_no_host_beats_its_budget(
    events: list[tuple[int, float, int, bool]], rps: float, bps: float
) -> None:
    limit = RateLimit(requests_per_second=rps, bytes_per_second=bps, max_sources=3, max_waiting=4)
    server = make_server(rate_limit=limit)
    now = 0.0
    sent: dict[str, int] = {}
    answers: list[tuple[bytes, tuple[str, int]]] = []
    for host, step, seq, batched in events:
        now += step
        addr = (f"10.0.0.{host}", 1)
        if batched:
            answers += server.handle_requests([(request(seq, 500), addr)] * 3, now)
        else:
            answer = server.handle_request(request(seq, 500), addr, now)
            answers += [(answer, addr)] if answer is not None else []
            answers += server.answers_due(now)
        stats = server.stats
        assert stats.requests == stats.answers + stats.refused_total + stats.waiting
        assert stats.waiting <= 6 * 4 and stats.sources <= 3
    answers += server.answers_due(now + 1.0)  # what waited comes out, or is refused
    stats = server.stats
    assert stats.waiting == 0 and server.get_timer() is None
    assert (
        stats.requests
        == stats.answers + stats.refused_total
        == stats.answers + sum(stats.refused.values())
    )
    for answer, (host, _) in answers:
        sent[host] = sent.get(host, 0) + len(answer)
    seconds = now + 1.0
    for host, nbytes in sent.items():  # a shared overflow bucket only lowers this
        assert nbytes <= bps * (seconds + limit.burst_seconds) + 1472, host


def test_leaving_the_overflow_bucket_for_a_fresh_one_gains_nothing() -> None:
    """A host served from the shared overflow bucket (table full of busy sources), then
    given its own bucket when one frees up, gets no second burst."""
    limit = RateLimit(requests_per_second=10, bytes_per_second=1e9, max_sources=2)
    server = big_server(rate_limit=limit)
    answered = 0
    own_from = None
    for t in range(600):  # B asks until 2 s, C throughout, A from 2 s: 100 a second each
        now = t * 0.01
        batch = [(request(1, 1), ("10.0.0.3", 1))]
        if now < 2.0:
            batch.append((request(1, 1), ("10.0.0.2", 1)))
        else:
            batch.append((request(1, 1), ("10.0.0.1", 1)))
        answers = server.handle_requests(batch, now)
        answered += sum(addr[0] == "10.0.0.1" for _, addr in answers)
        if own_from is None and "10.0.0.1" in server._sources:
            own_from = now
    answered += sum(addr[0] == "10.0.0.1" for _, addr in server.answers_due(7.0))
    # B's bucket was full again at once (the class budget, shared with C, held it below
    # its own): A has its own bucket from its first requests, and still no second burst
    assert own_from is not None and own_from >= 2.0
    assert answered <= 10 * (4.0 + 1.0) + 1  # one burst and the rate, not two bursts


def test_a_message_too_large_for_any_datagram_is_refused() -> None:
    store = MemoryStore()
    store.append(b"x" * 65_485)  # 20 + 2 + 65,485 = 65,507: the UDP limit, sent alone
    store.append(b"y" * 65_486)  # one byte more: no datagram can hold it
    server = RerequestServerCore(SESSION, store, rate_limit=None)
    answer = server.handle_request(request(1, 2), CLIENT, 0.0)
    assert answer is not None and len(answer) == 65_507
    assert server.handle_request(request(2, 1), CLIENT, 0.0) is None
    assert refused(server) == {"too_large": 1}


# --- PeerTable: which clients get their own socket (shared by both servers) -----------

A = ("10.0.0.1", 5000)
B = ("10.0.0.2", 5000)


def test_a_client_is_adopted_at_its_second_answer_never_at_a_one_off() -> None:
    table: PeerTable[str] = PeerTable()
    assert not table.answered(A)  # first answer: maybe a spoofed one-off
    assert not table.answered(B)
    assert table.answered(A)  # second: a real client
    table.add(A, "socket-a", 0.0)
    assert not table.answered(A)  # adopted: nothing more to decide
    assert A in table and table.get(A) == "socket-a" and len(table) == 1


def test_adoptions_are_rate_limited_after_a_burst() -> None:
    table: PeerTable[str] = PeerTable(adopt_rate=4.0)
    assert [table.may_adopt(0.0) for _ in range(5)] == [True] * 4 + [False]
    assert not table.may_adopt(0.1)  # 0.4 of a token back
    assert table.may_adopt(0.3)  # 1.2 tokens: one adoption
    assert table.may_adopt(100.0) and table.may_adopt(100.0)  # refilled, capped at the burst


def test_the_table_is_bounded_least_recently_active_first_and_idle_ones_expire() -> None:
    table: PeerTable[int] = PeerTable(max_peers=2, idle_after=30.0)
    table.add(A, 1, 0.0)
    table.add(B, 2, 10.0)
    assert table.full and table.oldest() == A
    table.touch(A, 20.0)  # A sent requests: B is now the least recently active
    assert table.oldest() == B and table.addresses() == [B, A]
    assert table.idle(39.0) == [] and table.idle(40.0) == [B] and table.idle(50.0) == [B, A]
    assert table.pop(B) == 2 and table.pop(B) is None and not table.full
    table.touch(B, 60.0)  # not adopted: nothing to refresh
    assert B not in table


def test_one_off_sources_are_remembered_within_a_bound() -> None:
    """A flood of spoofed sources costs bounded memory: the oldest are forgotten."""
    table: PeerTable[int] = PeerTable(max_peers=1)
    for port in range(1, 40):
        assert not table.answered(("10.9.9.9", port))
    assert not table.answered(("10.9.9.9", 1))  # forgotten: its first answer again
    assert table.answered(("10.9.9.9", 39))  # still remembered: adopted


# --- many sources (issue 18, items 9 and 11) ----------------------------------------------

FLOOD_HOSTS = [str(ipaddress.IPv4Address(0x0A010000 + i)) for i in range(3000)]


def flood_batches(seconds: float, start: float, rate: float = 25_000.0):  # type: ignore[no-untyped-def]
    """A flood from 3,000 hosts plus 1,000 ports of one more, round robin at ``rate``
    requests a second, in batches of 256: (now, batch) pairs."""
    per_batch = 256
    k = int(start * rate)
    while k < (start + seconds) * rate:
        batch = []
        for _ in range(per_batch):
            host = FLOOD_HOSTS[k % 4000] if k % 4000 < 3000 else "10.2.0.1"
            batch.append((request(1 + k % 900, 100), (host, 1 + k % 4000)))
            k += 1
        yield k / rate, batch


def test_a_flood_from_thousands_of_sources_gets_a_class_budget_and_clients_keep_theirs(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """A client answered 20 times, quiet for 5 s while 3,000 hosts plus 1,000 ports
    flood at 25,000 requests a second, then asking 30 times; a new client asking 30 times
    too: both are answered at once, every time, while the flood as a whole gets about one
    source's budget, 256 established seats and the one many-port host's own budget."""
    server = big_server()
    old, new = ("192.0.2.1", 7000), ("192.0.2.2", 7000)
    for i in range(20):
        assert server.handle_request(request(1 + i, 10), old, i * 0.001) is not None
    answered_flood = 0
    got: dict[tuple[str, int], int] = {old: 0, new: 0}
    with caplog.at_level("WARNING", logger="moldudp64.rerequest"):
        for now, batch in flood_batches(5.0, 0.1):
            answered_flood += len(server.handle_requests(batch, now))
        for i, (now, batch) in enumerate(flood_batches(1.0, 5.1)):
            if i % 3 == 0 and i // 3 < 30:  # every ~30 ms, amid the flood
                batch[100:100] = [(request(7, 10), old), (request(8, 10), new)]
            for _, addr in server.handle_requests(batch, now):
                if addr in got:
                    got[addr] += 1
                else:
                    answered_flood += 1
    assert got == {old: 30, new: 30}  # at once: none waited
    # one source's budget for the new ones, the 1,000-port host's own, and 256 seats of
    # sources that were answered 4 times, at 6 requests a second each: far below the
    # 150,000 requests of the 6 s
    assert answered_flood < 6.1 * (2000 + 2000 + 256 * 7) + 32 * 4000
    assert server.stats.sources <= 4096
    # refusals are summarised: one line per 10 s, not one per source
    lines = [r.getMessage() for r in caplog.records]
    assert 1 <= len(lines) <= 2, lines
    assert "refused since the last report, from" in lines[0]


def test_refusals_of_thousands_of_sources_make_one_line_per_interval(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """4,096 sources refused within 10 s (issue 18, item 11): one warning line with the
    counts when the first comes, one with the rest after the interval."""
    limit = RateLimit(requests_per_second=1, max_waiting=0, log_interval=10.0)
    server = big_server(rate_limit=limit)
    hosts = [str(ipaddress.IPv4Address(0x0A030000 + i)) for i in range(4096)]
    with caplog.at_level("WARNING", logger="moldudp64.rerequest"):
        for rnd in range(3):
            for i, host in enumerate(hosts):
                server.handle_request(request(1, 1), (host, 1), rnd * 3.0 + i * 1e-4)
        assert len(caplog.records) == 1
        for _ in range(2):  # its budget back: one answered, one refused
            server.handle_request(request(1, 1), (hosts[0], 1), 10.5)
    assert len(caplog.records) == 2
    summary = caplog.records[1].getMessage()
    refused = server.stats.refused["rate_limited"]
    assert f"{refused - 1} refused since the last report, from 4096 source(s)" in summary


def test_an_established_source_keeps_its_seat_while_quiet_and_gives_it_up_after_long() -> None:
    limit = RateLimit(max_sources=8)  # two seats
    server = big_server(rate_limit=limit)
    for host in ("10.0.0.1", "10.0.0.2"):
        for i in range(4):
            server.handle_request(request(1, 1), (host, 1), i * 0.01)
    assert set(server._established) == {"10.0.0.1", "10.0.0.2"}
    for i in range(4):  # both seats held by sources quiet for less than 60 s: stays new
        server.handle_request(request(1, 1), ("10.0.0.3", 1), 30.0 + i * 0.01)
    assert "10.0.0.3" not in server._established
    server.handle_request(request(1, 1), ("10.0.0.2", 1), 50.0)  # still active
    server.handle_request(request(1, 1), ("10.0.0.3", 1), 70.0)  # 10.0.0.1 quiet for 70 s
    assert set(server._established) == {"10.0.0.2", "10.0.0.3"}


def test_active_adopted_clients_are_never_pushed_out() -> None:
    table: PeerTable[int] = PeerTable(max_peers=2, idle_after=30.0)
    table.add(A, 1, 0.0)
    table.add(B, 2, 1.0)
    assert table.since(A) == 0.0 and table.since(("10.9.9.9", 1)) == float("inf")
    assert table.full and table.idle(29.0) == []  # nothing the servers may drop
