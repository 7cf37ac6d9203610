"""Message stores: MemoryStore bounds, BinaryFileStore's sparse index, reads and appends."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from moldudp64.binaryfile import iter_binaryfile, write_binaryfile
from moldudp64.exceptions import BinaryFileError, ConfigError, MessageTooLarge, TruncatedFile
from moldudp64.publisher import PublisherCore
from moldudp64.store import BinaryFileStore, MemoryStore, MessageStore, ReplayStore
from moldudp64.wire import split_blocks


def expected(messages: list[bytes], seq: int, max_count: int, max_bytes: int) -> list[bytes]:
    """The reference answer of get(): whole messages from seq within both limits."""
    out: list[bytes] = []
    used = 0
    for message in messages[seq - 1 : seq - 1 + max(max_count, 0)] if seq >= 1 else []:
        used += 2 + len(message)
        if used > max_bytes:
            break
        out.append(message)
    return out


def test_both_stores_satisfy_the_protocol(tmp_path: Path) -> None:
    assert isinstance(MemoryStore(), MessageStore)
    with BinaryFileStore(tmp_path / "f.bin", writable=True) as store:
        assert isinstance(store, MessageStore)


# -- MemoryStore -------------------------------------------------------------------------


def test_memory_store_numbers_and_gets() -> None:
    store = MemoryStore(first_seq_num=10)
    assert store.first_seq_num == store.next_seq_num == 10
    assert store.get(10, 5, 1000) == []
    assert [store.append(m) for m in (b"a", b"bb", bytearray(b"ccc"))] == [10, 11, 12]
    assert store.get(10, 5, 1000) == [b"a", b"bb", b"ccc"]
    assert store.get(11, 1, 1000) == [b"bb"]
    assert store.get(10, 5, 3 + 4) == [b"a", b"bb"]  # 3 + 4 bytes of blocks
    assert store.get(10, 5, 6) == [b"a"]
    assert store.get(10, 5, 2) == []  # first block alone is 3 bytes
    assert store.get(9, 5, 1000) == [] and store.get(13, 5, 1000) == []
    assert 12 in store and 13 not in store and len(store) == 3


def test_memory_store_evicts_oldest_by_count() -> None:
    store = MemoryStore(max_messages=3)
    for i in range(10):
        store.append(bytes([i]))
    assert (store.first_seq_num, store.next_seq_num, len(store)) == (8, 11, 3)
    assert store.get(7, 5, 100) == []
    assert store.get(8, 5, 100) == [b"\x07", b"\x08", b"\x09"]


def test_memory_store_evicts_oldest_by_bytes() -> None:
    store = MemoryStore(max_bytes=100)
    for _ in range(100):
        store.append(b"x" * 8)  # 10 bytes of block each
    assert store.held_bytes <= 100
    assert len(store) == 10 and store.first_seq_num == 91
    store.append(b"y" * 500)  # larger than the bound alone: the newest is still held
    assert len(store) == 1 and store.get(101, 1, 1000) == [b"y" * 500]


def test_memory_store_stays_bounded_over_a_long_run() -> None:
    store = MemoryStore(max_messages=1000)
    for i in range(50_000):
        store.append(i.to_bytes(4, "big"))
    assert len(store._messages) <= 2 * 1000 + 1024 + 1  # compaction keeps the list bounded
    assert store.get(49_001, 2, 100) == [(49_000).to_bytes(4, "big"), (49_001).to_bytes(4, "big")]


def test_extend_is_append_in_bulk(tmp_path: Path) -> None:
    memory = MemoryStore(max_messages=5)
    memory.extend([b"a", b"b"])
    memory.extend([bytes([i]) for i in range(10)])
    assert (memory.first_seq_num, memory.next_seq_num) == (8, 13)
    assert memory.get(8, 10, 100) == [bytes([i]) for i in range(5, 10)]
    with BinaryFileStore(tmp_path / "x.bin", writable=True) as store:
        store.extend([b"a", b"bc"])
        store.append(b"d")
        store.extend([])
        assert store.get(1, 10, 100) == [b"a", b"bc", b"d"]
        with pytest.raises(MessageTooLarge):
            store.extend([b"e", b"f" * 70000])
        assert store.next_seq_num == 4
    assert list(iter_binaryfile(tmp_path / "x.bin")) == [b"a", b"bc", b"d"]


def test_memory_store_rejects_bad_options_and_messages() -> None:
    with pytest.raises(ConfigError):
        MemoryStore(max_messages=0)
    with pytest.raises(ConfigError):
        MemoryStore(max_bytes=1)
    with pytest.raises(ConfigError):
        MemoryStore(first_seq_num=0)
    with pytest.raises(MessageTooLarge):
        MemoryStore().append(b"x" * 65536)


@settings(max_examples=40, deadline=None)
@given(
    sizes=st.lists(st.integers(0, 40), min_size=1, max_size=80),
    queries=st.lists(
        st.tuples(st.integers(0, 90), st.integers(0, 30), st.integers(0, 300)), max_size=20
    ),
)
def test_memory_store_matches_reference(
    sizes: list[int], queries: list[tuple[int, int, int]]
) -> None:
    messages = [bytes([i % 256]) * s for i, s in enumerate(sizes)]
    store = MemoryStore(max_bytes=None)
    for m in messages:
        store.append(m)
    for seq, count, max_bytes in queries:
        assert store.get(seq, count, max_bytes) == expected(messages, seq, count, max_bytes)


# -- BinaryFileStore ---------------------------------------------------------------------


def make_file(path: Path, messages: list[bytes]) -> Path:
    write_binaryfile(path, messages)
    return path


@settings(max_examples=30, deadline=None)
@given(
    sizes=st.lists(st.integers(0, 300), min_size=1, max_size=150),
    interval=st.integers(1, 70),
    queries=st.lists(
        st.tuples(st.integers(0, 160), st.integers(0, 50), st.integers(0, 3000)), max_size=25
    ),
)
def test_binaryfile_store_matches_reference(
    tmp_path_factory: pytest.TempPathFactory,
    sizes: list[int],
    interval: int,
    queries: list[tuple[int, int, int]],
) -> None:
    messages = [bytes([(i * 7) % 256]) * s for i, s in enumerate(sizes)]
    path = make_file(tmp_path_factory.mktemp("bf") / "day.bin", messages)
    with BinaryFileStore(path, index_interval=interval) as store:
        assert store.first_seq_num == 1 and store.next_seq_num == len(messages) + 1
        assert store.index_entries == -(-len(messages) // interval)
        for seq, count, max_bytes in queries:
            assert store.get(seq, count, max_bytes) == expected(messages, seq, count, max_bytes)


def test_binaryfile_store_serves_large_messages_across_read_chunks(tmp_path: Path) -> None:
    messages = [bytes([i]) * (65535 if i % 3 == 0 else 100 + i) for i in range(40)]
    path = make_file(tmp_path / "big.bin", messages)
    with BinaryFileStore(path, index_interval=16) as store:
        for seq in range(1, 41):
            assert store.get(seq, 1, 70000) == [messages[seq - 1]]
            assert store.get(seq, 3, 200_000) == messages[seq - 1 : seq + 2]
        assert store.get(17, 10, 1452) == expected(messages, 17, 10, 1452)


def test_binaryfile_store_empty_file(tmp_path: Path) -> None:
    path = tmp_path / "empty.bin"
    path.write_bytes(b"")
    with BinaryFileStore(path) as store:
        assert store.next_seq_num == 1 and len(store) == 0
        assert store.get(1, 10, 1000) == []


def test_binaryfile_store_truncated_file_is_a_typed_error(tmp_path: Path) -> None:
    path = make_file(tmp_path / "t.bin", [b"abc", b"defgh"])
    with open(path, "ab") as f:
        f.write(b"\x00\x09abc")  # says 9 bytes, has 3
    with pytest.raises(TruncatedFile) as info:
        BinaryFileStore(path)
    assert info.value.offset == 5 + 7
    with pytest.raises(ConfigError):
        BinaryFileStore(path, truncate_partial=True)
    with BinaryFileStore(path, writable=True, truncate_partial=True) as store:
        assert store.next_seq_num == 3
        store.append(b"new")
    assert list(iter_binaryfile(path)) == [b"abc", b"defgh", b"new"]


def test_binaryfile_store_missing_or_closed_file(tmp_path: Path) -> None:
    with pytest.raises(BinaryFileError, match="cannot open"):
        BinaryFileStore(tmp_path / "nope.bin")
    store = BinaryFileStore(make_file(tmp_path / "x.bin", [b"1"]))
    store.close()
    store.close()
    with pytest.raises(BinaryFileError, match="closed"):
        store.get(1, 1, 100)


def test_binaryfile_store_read_only_refuses_appends(tmp_path: Path) -> None:
    with (
        BinaryFileStore(make_file(tmp_path / "ro.bin", [b"1"])) as store,
        pytest.raises(BinaryFileError, match="read-only"),
    ):
        store.append(b"2")


def test_binaryfile_store_appends_are_served_at_once_and_persist(tmp_path: Path) -> None:
    path = tmp_path / "rec.bin"
    messages = [i.to_bytes(2, "big") * (i % 50) for i in range(3000)]
    with BinaryFileStore(path, writable=True, index_interval=64) as store:
        for i, m in enumerate(messages[:1500]):
            assert store.append(m) == i + 1
        assert store.get(1499, 5, 10_000) == messages[1498:1500]  # buffered, still served
        for m in messages[1500:]:
            store.append(m)
        assert store.next_seq_num == 3001
    assert list(iter_binaryfile(path)) == messages
    with BinaryFileStore(path, writable=True) as again:
        assert again.next_seq_num == 3001
        assert again.index_entries == -(-3000 // 64)
        again.append(b"tail")
        assert again.get(2999, 10, 10_000) == [*messages[2998:], b"tail"]
        assert again.get(1, 1, 100) == [b""]


def test_binaryfile_store_index_is_sparse(tmp_path: Path) -> None:
    path = make_file(tmp_path / "many.bin", [b"m" * (i % 20) for i in range(100_000)])
    with BinaryFileStore(path) as store:
        assert store.next_seq_num == 100_001
        assert store.index_entries == 1563  # one offset per 64 messages, 8 bytes each
        assert store._index.itemsize == 8
        assert store.get(99_999, 5, 1000) == [b"m" * 18, b"m" * 19]
    assert os.path.getsize(path) == store.file_size


def test_replay_store_serves_only_what_was_published(tmp_path: Path) -> None:
    messages = [bytes([i]) * i for i in range(1, 30)]
    path = make_file(tmp_path / "day.bin", messages)
    with BinaryFileStore(path) as base:
        store = ReplayStore(base)
        assert isinstance(store, MessageStore)
        assert (store.next_seq_num, store.remaining) == (1, 29)
        pub = PublisherCore("REPLAY", store=store)
        assert store.get(1, 5, 1000) == []
        pub.publish(messages[0], 0.0)
        pub.publish_many(messages[1:10], 0.0)
        assert store.next_seq_num == 11
        assert store.get(8, 100, 10_000) == messages[7:10]
        pub.publish_many(messages[10:], 0.0)
        assert store.remaining == 0
        with pytest.raises(ConfigError):
            pub.publish(b"one too many", 0.0)
        assert pub.next_seq_num == 30 == store.next_seq_num  # nothing queued
        pub.flush(0.0)
        sent = [m for p in pub.datagrams_to_send(0.0) for m in split_blocks(p)]
        assert sent == messages
    with BinaryFileStore(path) as base:
        assert ReplayStore(base, first_seq_num=11).next_seq_num == 11
        with pytest.raises(ConfigError):
            ReplayStore(base, first_seq_num=31)


def test_binaryfile_store_get_run_returns_what_get_does(tmp_path: Path) -> None:
    from moldudp64.binaryfile import write_binaryfile

    messages = [bytes([i % 251]) * (i % 300) for i in range(5000)]
    path = tmp_path / "run.bin"
    write_binaryfile(path, messages)
    with BinaryFileStore(path, index_interval=64) as store:
        cases = [(1, 5000, 1 << 30), (65, 10, 1 << 20), (100, 5000, 4000), (4999, 9, 1 << 20)]
        for seq, count, budget in [*cases, (130, 1, 1), (5000, 1, 1 << 20)]:
            assert store.get_run(seq, count, budget) == store.get(seq, count, budget)
        assert store.get_run(5001, 1, 1 << 20) == []
