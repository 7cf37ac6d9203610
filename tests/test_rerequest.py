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
from moldudp64.rerequest import REFUSAL_REASONS, RateLimit, RerequestServerCore
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
    assert refused(server) == {"rate_limited": 990}
    assert server.handle_request(request(1, 1), ("10.0.0.2", 5000), 0.0) is not None
    # the bucket refills at the configured rate
    assert server.handle_request(request(1, 1), flooder, 0.05) is None
    assert server.handle_request(request(1, 1), flooder, 0.1) is not None


def test_byte_budget_limits_amplification() -> None:
    limit = RateLimit(requests_per_second=1e6, bytes_per_second=10_000, burst_seconds=1.0)
    server = make_server(rate_limit=limit)
    sent = 0
    for _ in range(100):
        answer = server.handle_request(request(1, 1000), CLIENT, 0.0)
        if answer is not None:
            sent += len(answer)
    assert 10_000 <= sent < 10_000 + 1472  # the last answer may overdraw once
    assert server.stats.refused["rate_limited"] > 80


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
