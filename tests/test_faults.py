"""FaultInjector: seeded drop, duplicate and reorder of datagrams."""

from __future__ import annotations

from collections import Counter

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from moldudp64.exceptions import ConfigError
from moldudp64.faults import FaultInjector

PACKETS = [i.to_bytes(4, "big") for i in range(2000)]


def run(injector: FaultInjector, packets: list[bytes]) -> list[bytes]:
    out: list[bytes] = []
    for p in packets:
        out += injector.process(p)
    return out + injector.flush()


def test_no_faults_passes_everything_in_order() -> None:
    injector = FaultInjector()
    assert not injector.active
    assert run(injector, PACKETS) == PACKETS
    assert injector.stats.seen == injector.stats.sent == len(PACKETS)


def test_same_seed_same_faults_other_seed_other_faults() -> None:
    def faults(seed: int) -> list[bytes]:
        return run(FaultInjector(drop=0.1, duplicate=0.1, reorder=0.1, seed=seed), PACKETS)

    assert faults(7) == faults(7)
    assert faults(7) != faults(8)


def test_drop_everything_and_duplicate_everything() -> None:
    assert run(FaultInjector(drop=1.0, seed=1), PACKETS) == []
    doubled = run(FaultInjector(duplicate=1.0, seed=1), PACKETS[:5])
    assert doubled == [p for p in PACKETS[:5] for _ in range(2)]


def test_reorder_holds_one_back_until_after_the_next() -> None:
    injector = FaultInjector(reorder=1.0, seed=3)
    assert injector.process(b"1") == []
    assert injector.holding
    assert injector.process(b"2") == [b"2", b"1"]
    assert injector.process(b"3") == []
    assert injector.flush() == [b"3"]
    assert injector.flush() == []
    assert injector.stats.reordered == 2


def test_a_held_packet_is_released_even_when_the_next_is_dropped() -> None:
    injector = FaultInjector(reorder=1.0, seed=3)
    injector.process(b"1")
    injector.drop = 1.0
    assert injector.process(b"2") == [b"1"]


def test_rates_are_close_to_the_probabilities() -> None:
    injector = FaultInjector(drop=0.2, duplicate=0.1, reorder=0.05, seed=11)
    out = run(injector, PACKETS)
    stats = injector.stats
    assert 300 < stats.dropped < 500  # 400 expected
    assert 100 < stats.duplicated < 220  # about 160 expected
    assert stats.reordered > 20
    assert stats.sent == len(out)
    assert out != sorted(out)  # something really moved


def test_addressed_datagrams_keep_their_address() -> None:
    injector = FaultInjector(reorder=1.0, duplicate=0.5, seed=5)
    out: list[tuple[bytes, tuple[str, int]]] = []
    for i in range(50):
        addr = ("127.0.0.1", 1000 + i)
        out += injector.process_to(i.to_bytes(2, "big"), addr)
    out += injector.flush_to()
    assert {(int.from_bytes(d, "big"), a[1] - 1000) for d, a in out} == {(i, i) for i in range(50)}


@pytest.mark.parametrize("kwargs", [{"drop": -0.1}, {"duplicate": 1.5}, {"reorder": "x"}])
def test_bad_probabilities_are_config_errors(kwargs: dict[str, object]) -> None:
    with pytest.raises(ConfigError):
        FaultInjector(**kwargs)  # type: ignore[arg-type]


@settings(max_examples=50, deadline=None)
@given(
    drop=st.floats(0, 1),
    duplicate=st.floats(0, 1),
    reorder=st.floats(0, 1),
    seed=st.integers(0, 2**32),
    n=st.integers(0, 200),
)
def test_nothing_is_invented_and_survivors_appear_once_or_twice(
    drop: float, duplicate: float, reorder: float, seed: int, n: int
) -> None:
    packets = PACKETS[:n]
    injector = FaultInjector(drop=drop, duplicate=duplicate, reorder=reorder, seed=seed)
    out = run(injector, packets)
    counts = Counter(out)
    assert set(counts) <= set(packets)
    assert all(c in (1, 2) for c in counts.values())
    stats = injector.stats
    assert len(counts) == n - stats.dropped
    assert len(out) == n - stats.dropped + stats.duplicated
    # a packet is only ever swapped with the one right after it
    positions = {p: i for i, p in enumerate(packets)}
    firsts = [positions[p] for p in dict.fromkeys(out)]
    for i, earlier in enumerate(firsts):
        for later in firsts[i + 1 :]:
            assert later > earlier or earlier - later == 1
