"""PublisherCore on a simulated clock: packing limits, flush delay, heartbeats, end of session."""

from __future__ import annotations

import dataclasses
import inspect
import re
import struct

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from moldudp64.exceptions import ConfigError, MessageTooLarge
from moldudp64.publisher import (
    Pacer,
    PublisherCore,
    PublisherFront,
    PublisherOptions,
    SessionAlreadyEnded,
)
from moldudp64.store import MemoryStore
from moldudp64.wire import Packet, PacketKind, split_blocks

SESSION = "TEST000001"
RAW = SESSION.encode()


def header(datagram: bytes) -> tuple[bytes, int, int]:
    session, seq, count = struct.unpack(">10sQH", datagram[:20])
    return session, seq, count


def test_a_full_1452_byte_payload_holds_exactly_what_fits() -> None:
    pub = PublisherCore(SESSION, flush_delay=None)
    msg = b"x" * 361  # 4 blocks of 2 + 361 = 1452 bytes exactly
    for _ in range(4):
        pub.publish(msg, 0.0)
    assert pub.datagrams_to_send(0.0) == []  # not full until a fifth arrives
    assert pub.publish(msg, 0.0) == 5
    (packet,) = pub.datagrams_to_send(0.0)
    assert len(packet) == 20 + 1452
    assert packet[:20] == RAW + struct.pack(">QH", 1, 4)
    assert split_blocks(packet) == [msg] * 4
    assert pub.pending == 1
    pub.flush(0.0)
    (rest,) = pub.datagrams_to_send(0.0)
    assert rest == RAW + struct.pack(">QHH", 5, 1, 361) + msg


def test_one_byte_more_starts_a_new_packet() -> None:
    pub = PublisherCore(SESSION, flush_delay=None)
    pub.publish(b"a" * 725, 0.0)
    pub.publish(b"b" * 724, 0.0)  # 727 + 726 = 1453 > 1452
    pub.flush(0.0)
    first, second = pub.datagrams_to_send(0.0)
    assert header(first) == (RAW, 1, 1) and len(first) == 20 + 727
    assert header(second) == (RAW, 2, 1)


def test_largest_message_fits_alone_and_one_more_byte_is_too_large() -> None:
    pub = PublisherCore(SESSION)
    assert pub.publish(b"m" * 1450, 0.0) == 1
    (packet,) = pub.datagrams_to_send(0.0)
    assert len(packet) == 1472  # the Ethernet-MTU UDP payload
    with pytest.raises(MessageTooLarge) as info:
        pub.publish(b"m" * 1451, 0.0)
    assert info.value.length == 1451
    assert pub.next_seq_num == 2  # nothing was queued
    assert pub.datagrams_to_send(0.0) == []


def test_too_large_message_is_not_stored() -> None:
    store = MemoryStore()
    pub = PublisherCore(SESSION, max_payload=100, store=store)
    with pytest.raises(MessageTooLarge):
        pub.publish(b"z" * 99, 0.0)
    assert store.next_seq_num == 1


def test_flush_delay_holds_a_partial_packet_then_sends_it() -> None:
    pub = PublisherCore(SESSION, flush_delay=0.010, heartbeat_interval=1.0)
    pub.start(0.0)
    pub.publish(b"one", 0.0)
    assert pub.get_timer() == pytest.approx(0.010)
    pub.publish(b"two", 0.004)
    assert pub.datagrams_to_send(0.009) == []
    (packet,) = pub.datagrams_to_send(0.010)
    assert header(packet) == (RAW, 1, 2)
    assert split_blocks(packet) == [b"one", b"two"]
    # the next heartbeat is due one interval after this packet
    assert pub.get_timer() == pytest.approx(1.010)


def test_zero_flush_delay_sends_at_once_but_packs_a_batch() -> None:
    pub = PublisherCore(SESSION)
    assert pub.publish_many([b"a", b"b", b"c"], 1.0) == range(1, 4)
    (packet,) = pub.datagrams_to_send(1.0)
    assert header(packet) == (RAW, 1, 3)


def test_heartbeat_when_idle_carries_next_seq_num() -> None:
    pub = PublisherCore(SESSION, heartbeat_interval=1.0, first_seq_num=42)
    assert pub.get_timer() is None  # clock not started
    pub.start(10.0)
    assert pub.get_timer() == 11.0
    assert pub.datagrams_to_send(10.999) == []
    (beat,) = pub.datagrams_to_send(11.0)
    assert beat == RAW + struct.pack(">QH", 42, 0)
    assert Packet.parse(beat).packet_kind is PacketKind.HEARTBEAT
    assert pub.get_timer() == 12.0
    pub.publish(b"data", 11.5)
    (data,) = pub.datagrams_to_send(11.5)
    assert header(data) == (RAW, 42, 1)
    assert pub.get_timer() == 12.5  # sending data resets the idle clock
    pub.handle_timer(12.5)
    (beat2,) = pub.datagrams_to_send(12.5)
    assert beat2 == RAW + struct.pack(">QH", 43, 0)
    assert pub.stats.heartbeats == 2


def test_heartbeat_time_flushes_pending_instead_of_beating() -> None:
    pub = PublisherCore(SESSION, flush_delay=5.0, heartbeat_interval=1.0)
    pub.start(0.0)
    pub.publish(b"late", 0.5)
    assert pub.get_timer() == 1.0
    (packet,) = pub.datagrams_to_send(1.0)
    assert header(packet) == (RAW, 1, 1)


def test_heartbeats_can_be_turned_off() -> None:
    pub = PublisherCore(SESSION, heartbeat_interval=None)
    pub.start(0.0)
    assert pub.get_timer() is None
    assert pub.datagrams_to_send(1000.0) == []


def test_end_of_session_carries_next_seq_num_and_no_blocks() -> None:
    pub = PublisherCore(
        SESSION, flush_delay=1.0, end_of_session_duration=2.0, end_of_session_interval=0.5
    )
    pub.publish_many([b"a", b"b", b"c"], 0.0)
    pub.end_session(0.2)
    data, eos = pub.datagrams_to_send(0.2)
    assert header(data) == (RAW, 1, 3)  # pending messages go first
    assert eos == RAW + struct.pack(">QH", 4, 0xFFFF)
    assert len(eos) == 20
    assert Packet.parse(eos).packet_kind is PacketKind.END_OF_SESSION
    assert pub.ending and not pub.ended
    sent = [eos]
    now = 0.2
    while (timer := pub.get_timer()) is not None:
        assert timer > now
        now = timer
        sent += pub.datagrams_to_send(now)
    assert pub.ended
    assert now == pytest.approx(2.2)
    # at 0.2, 0.7, 1.2, 1.7: every one an end-of-session packet, never a heartbeat
    assert sent == [eos] * 4
    assert pub.datagrams_to_send(100.0) == []
    with pytest.raises(SessionAlreadyEnded):
        pub.publish(b"d", 100.0)


def test_end_of_session_with_no_duration_sends_one_packet() -> None:
    pub = PublisherCore(SESSION, end_of_session_duration=0.0)
    pub.end_session(0.0)
    assert pub.ended
    assert pub.datagrams_to_send(0.0) == [RAW + struct.pack(">QH", 1, 0xFFFF)]
    assert pub.get_timer() is None


def test_published_messages_reach_the_store() -> None:
    store = MemoryStore(first_seq_num=7)
    pub = PublisherCore(SESSION, first_seq_num=7, store=store)
    pub.publish_many([b"x", b"yy", b"zzz"], 0.0)
    assert store.get(7, 10, 1000) == [b"x", b"yy", b"zzz"]
    assert store.next_seq_num == pub.next_seq_num == 10


@pytest.mark.parametrize(
    "kwargs",
    [
        {"session": "ELEVEN_CHAR"},
        {"session": "é"},
        {"first_seq_num": 0},
        {"max_payload": 2},
        {"max_payload": 65488},
        {"flush_delay": -1},
        {"heartbeat_interval": 0},
        {"end_of_session_duration": -0.5},
        {"end_of_session_interval": 0},
        {"store": MemoryStore(first_seq_num=5)},
    ],
)
def test_bad_options_are_config_errors(kwargs: dict[str, object]) -> None:
    args: dict[str, object] = {"session": SESSION, **kwargs}
    with pytest.raises(ConfigError):
        PublisherCore(**args)  # type: ignore[arg-type]


@settings(max_examples=60, deadline=None)
@given(
    sizes=st.lists(st.integers(0, 300), min_size=1, max_size=120),
    max_payload=st.integers(302, 1500),
    first=st.integers(1, 2**40),
)
def test_packing_is_greedy_ordered_and_within_limits(
    sizes: list[int], max_payload: int, first: int
) -> None:
    pub = PublisherCore(SESSION, first_seq_num=first, max_payload=max_payload, flush_delay=None)
    messages = [bytes([i % 251]) * size for i, size in enumerate(sizes)]
    pub.publish_many(messages, 0.0)
    pub.flush(0.0)
    packets = pub.datagrams_to_send(0.0)
    got: list[bytes] = []
    seq = first
    for i, packet in enumerate(packets):
        parsed = Packet.parse(packet)
        assert parsed.seq_num == seq
        assert len(packet) - 20 <= max_payload
        blocks = split_blocks(packet)
        got += blocks
        seq += len(blocks)
        if i + 1 < len(packets):  # greedy: the next message would not have fitted
            following = messages[len(got)]
            assert len(packet) - 20 + 2 + len(following) > max_payload
    assert got == messages
    assert pub.next_seq_num == first + len(messages)
    stats = pub.stats
    assert stats.messages == len(messages) and stats.packets == len(packets)


@settings(max_examples=80, deadline=None)
@given(
    batches=st.lists(
        st.lists(st.integers(0, 200), max_size=60).map(lambda sizes: [b"q" * n for n in sizes]),
        min_size=1,
        max_size=6,
    ),
    max_payload=st.integers(202, 700),
)
def test_publish_many_equals_publishing_one_by_one(
    batches: list[list[bytes]], max_payload: int
) -> None:
    fast_store, slow_store = MemoryStore(), MemoryStore()
    fast = PublisherCore(SESSION, max_payload=max_payload, flush_delay=None, store=fast_store)
    slow = PublisherCore(SESSION, max_payload=max_payload, flush_delay=None, store=slow_store)
    fast_out: list[bytes] = []
    slow_out: list[bytes] = []
    for batch in batches:
        seqs = fast.publish_many(batch, 0.0)
        assert list(seqs) == [slow.publish(m, 0.0) for m in batch]
        fast_out += fast.datagrams_to_send(0.0)
        slow_out += slow.datagrams_to_send(0.0)
        assert fast_out == slow_out
        assert fast.pending == slow.pending
    fast.flush(0.0)
    slow.flush(0.0)
    assert fast.datagrams_to_send(0.0) == slow.datagrams_to_send(0.0)
    assert fast.stats == slow.stats
    assert fast_store.get(1, 10**6, 10**9) == slow_store.get(1, 10**6, 10**9)


def test_publish_many_is_all_or_nothing_on_a_too_large_message() -> None:
    store = MemoryStore()
    pub = PublisherCore(SESSION, max_payload=100, store=store)
    with pytest.raises(MessageTooLarge):
        pub.publish_many([b"ok", b"x" * 99, b"ok"], 0.0)
    assert pub.next_seq_num == 1 and store.next_seq_num == 1
    assert pub.publish_many([memoryview(b"ab"), bytearray(b"cd")], 0.0) == range(1, 3)
    assert store.get(1, 2, 100) == [b"ab", b"cd"]


class AppendOnlyStore:
    """A minimal store with no ``extend``: publish_many falls back to ``append``."""

    def __init__(self) -> None:
        self.messages: list[bytes] = []

    @property
    def first_seq_num(self) -> int:
        return 1

    @property
    def next_seq_num(self) -> int:
        return len(self.messages) + 1

    def append(self, message: bytes) -> int:
        self.messages.append(bytes(message))
        return len(self.messages)

    def get(self, seq_num: int, max_count: int, max_bytes: int) -> list[bytes]:
        return self.messages[seq_num - 1 : seq_num - 1 + max_count]

    def close(self) -> None:
        pass


def test_publish_many_with_a_store_that_only_appends() -> None:
    store = AppendOnlyStore()
    pub = PublisherCore(SESSION, store=store)  # type: ignore[arg-type]
    pub.publish_many([b"a", b"b"], 0.0)
    pub.publish(b"c", 0.0)
    assert store.messages == [b"a", b"b", b"c"]


# --- the pieces both publishers (blocking and asyncio) share ---------------------------


def run_pacer(pacer: Pacer, arrivals: list[float]) -> list[tuple[float, int, float]]:
    """Feed one message per arrival time; return (time, batch size, wait) per batch sent."""
    sent: list[tuple[float, int, float]] = []
    pacer.start(arrivals[0] if arrivals else 0.0)
    for now in arrivals:
        wait = pacer.add(b"m", lambda now=now: now)
        if wait is not None:
            sent.append((now, len(pacer.batch), wait))
            pacer.done()
    return sent


def test_unpaced_runs_go_out_in_full_batches() -> None:
    pacer = Pacer(None, batch_size=3)
    assert run_pacer(pacer, [0.0] * 7) == [(0.0, 3, 0.0), (0.0, 3, 0.0)]
    assert pacer.batch == [b"m"] and pacer.count == 6


def test_paced_messages_wait_until_due() -> None:
    """At 10 a second the n-th message is due at n/10 s: an early one goes out with a wait."""
    pacer = Pacer(10.0, batch_size=512)
    assert run_pacer(pacer, [0.0, 0.0]) == [(0.0, 1, 0.1), (0.0, 1, 0.2)]
    assert pacer.count == 2


def test_a_paced_run_that_fell_behind_catches_up_in_batches() -> None:
    """Messages already overdue are collected, up to batch_size, and sent without a wait."""
    pacer = Pacer(1000.0, batch_size=4)
    sent = run_pacer(pacer, [0.0] + [1.0] * 9)
    assert sent[0] == (0.0, 1, 0.001)
    assert [(n, w) for _, n, w in sent[1:]] == [(4, 0.0), (4, 0.0)]


def test_the_pacer_reads_no_clock_when_unpaced() -> None:
    def clock() -> float:
        raise AssertionError("unpaced runs read no clock")

    pacer = Pacer(None, batch_size=2)
    assert pacer.add(b"a", clock) is None and pacer.add(b"b", clock) == 0.0


def test_a_dropped_batch_is_not_counted_and_progress_comes_at_intervals() -> None:
    pacer = Pacer(None, batch_size=1, progress_interval=0.5)
    pacer.start(10.0, first_seq_num=7)
    assert not pacer.progress_due(11.0)  # nothing published yet
    pacer.add(b"x", float)
    pacer.done(published=False)
    assert pacer.count == 0 and pacer.batch == []
    pacer.add(b"y", float)
    pacer.done()
    assert pacer.progress_due(10.5) and not pacer.progress_due(10.9) and pacer.progress_due(11.0)
    core = PublisherCore(SESSION, first_seq_num=7)
    core.publish(b"y", 0.0)
    result = pacer.result(12.5, False, core.stats)
    assert (result.messages, result.first_seq_num, result.next_seq_num) == (1, 7, 8)
    assert result.seconds == 2.5 and not result.stopped


@pytest.mark.parametrize(
    ("rate", "batch_size", "message"),
    [
        (0, 1, "rate 0 must be a number of messages per second > 0"),
        (True, 1, "rate True must be a number of messages per second > 0"),
        (float("nan"), 1, "rate nan must be a number of messages per second > 0"),
        (None, 0, "batch_size 0 must be an int >= 1"),
        (None, 2.0, "batch_size 2.0 must be an int >= 1"),
    ],
)
def test_bad_run_arguments_are_config_errors(
    rate: object, batch_size: object, message: str
) -> None:
    with pytest.raises(ConfigError, match=re.escape(message)):
        Pacer(rate, batch_size)  # type: ignore[arg-type]


def test_publisher_options_check_the_group_and_make_core_and_store() -> None:
    options = PublisherOptions(session=SESSION, group=("239.1.1.1", 30001), first_seq_num=5)
    core, store = options.new_core()
    assert store is None and core.next_seq_num == 5 and options.group == ("239.1.1.1", 30001)
    serving = PublisherOptions(
        session=SESSION, group=("239.1.1.1", 1), rerequest_bind=("127.0.0.1", 0)
    )
    core, store = serving.new_core()
    assert isinstance(store, MemoryStore) and core.store is store
    with pytest.raises(ConfigError, match="pass unicast=True"):
        PublisherOptions(session=SESSION, group=("127.0.0.1", 30001))
    with pytest.raises(ConfigError, match=re.escape("multicast TTL 300 is outside 0..255")):
        PublisherOptions(session=SESSION, group=("239.1.1.1", 1), ttl=300)
    with pytest.raises(ConfigError, match="flush_delay -1 must be a number of seconds >= 0"):
        PublisherOptions(session=SESSION, group=("239.1.1.1", 1), flush_delay=-1).new_core()


def test_both_publishers_take_the_same_arguments() -> None:
    from moldudp64.asyncio.server import AsyncPublisher
    from moldudp64.sync.server import Publisher

    blocking = inspect.signature(Publisher)
    assert blocking == inspect.signature(AsyncPublisher) == inspect.signature(PublisherFront)
    fields = [f.name for f in dataclasses.fields(PublisherOptions)]
    assert list(blocking.parameters) == fields
    assert inspect.signature(Publisher.run).parameters.keys() == (
        inspect.signature(AsyncPublisher.run).parameters.keys()
    )
