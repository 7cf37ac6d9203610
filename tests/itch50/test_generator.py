"""The synthetic ITCH 5.0 day: checked message by message by an independent referee (plain
dicts, decoding with ``itch50.decode``), for validity, realism, determinism and bounds."""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field

import pytest

from moldudp64 import itch50
from moldudp64.itch50 import generator
from moldudp64.itch50.generator import generate_day, stock_symbols


@dataclass
class Referee:
    """Replays a day and fails on the first message a real feed could not have sent."""

    orders: dict[int, list] = field(default_factory=dict)  # ref -> [locate, side, price, shares]
    seen_refs: set[int] = field(default_factory=set)
    # locate -> side -> price -> [refs in time priority]
    levels: dict[int, dict[str, dict[int, list[int]]]] = field(default_factory=dict)
    names: dict[int, str] = field(default_factory=dict)
    matches: set[int] = field(default_factory=set)
    paused: set[int] = field(default_factory=set)
    pauses: int = 0
    events: list[str] = field(default_factory=list)
    kinds: Counter = field(default_factory=Counter)
    partial_executions: int = 0
    most_resting: int = 0
    last_time: int = -1

    def best(self, locate: int, side: str) -> int | None:
        prices = self.levels[locate][side]
        if not prices:
            return None
        return max(prices) if side == "B" else min(prices)

    def rest(self, locate: int, ref: int, side: str, price: int, shares: int) -> None:
        assert ref not in self.seen_refs, f"order reference {ref} reused"
        assert shares > 0 and price > 0 and price % 100 == 0, (shares, price)
        self.seen_refs.add(ref)
        self.orders[ref] = [locate, side, price, shares]
        self.levels[locate][side].setdefault(price, []).append(ref)
        self.most_resting = max(self.most_resting, len(self.orders))

    def take(self, ref: int, shares: int) -> list:
        assert ref in self.orders, f"unknown order {ref}"
        order = self.orders[ref]
        assert 0 < shares <= order[3], f"order {ref} has {order[3]} shares, not {shares}"
        order[3] -= shares
        if order[3] == 0:
            self.drop(ref)
        return order

    def drop(self, ref: int) -> list:
        locate, side, price, _ = order = self.orders.pop(ref)
        level = self.levels[locate][side][price]
        level.remove(ref)
        if not level:
            del self.levels[locate][side][price]
        return order

    def apply(self, message: bytes) -> None:
        r = itch50.decode(message)
        kind = r.message_type
        self.kinds[kind] += 1
        assert r.timestamp >= self.last_time, "time went backwards"
        self.last_time = r.timestamp
        if kind == "S":
            self.events.append(r.event_code)
        elif kind == "R":
            assert r.stock_locate not in self.names and r.stock not in self.names.values()
            assert r.stock.isalpha() and r.stock.isupper() and 1 <= len(r.stock) <= 8
            self.names[r.stock_locate] = r.stock
            self.levels[r.stock_locate] = {"B": {}, "S": {}}
        elif kind in "AF":
            assert self.names[r.stock_locate] == r.stock
            self.rest(r.stock_locate, r.order_reference_number, r.buy_sell_indicator, r.price,
                      r.shares)  # fmt: skip
        elif kind == "H":
            assert r.trading_state in "TP" and self.names[r.stock_locate] == r.stock
            if r.trading_state == "P":  # an LULD pause: nothing trades until T
                assert r.reason == "LUDP" and r.stock_locate not in self.paused
                self.paused.add(r.stock_locate)
                self.pauses += 1
            else:
                self.paused.discard(r.stock_locate)
        elif kind in "EC":
            assert r.stock_locate not in self.paused
            locate, side, price, shares = self.orders[r.order_reference_number]
            assert locate == r.stock_locate
            # the oldest order at its side's best price
            assert price == self.best(locate, side)
            assert self.levels[locate][side][price][0] == r.order_reference_number
            self.partial_executions += r.executed_shares < shares
            self.take(r.order_reference_number, r.executed_shares)
            assert r.match_number not in self.matches
            self.matches.add(r.match_number)
        elif kind == "X":
            assert self.orders[r.order_reference_number][0] == r.stock_locate
            assert r.cancelled_shares < self.orders[r.order_reference_number][3]  # in part
            self.take(r.order_reference_number, r.cancelled_shares)
        elif kind == "D":
            assert self.drop(r.order_reference_number)[0] == r.stock_locate
        elif kind == "U":
            locate, side, _, _ = self.drop(r.original_order_reference_number)
            assert locate == r.stock_locate
            self.rest(locate, r.new_order_reference_number, side, r.price, r.shares)
        elif kind in "PQ":
            assert self.names[r.stock_locate] == r.stock
            price = r.price if kind == "P" else r.cross_price
            bid, ask = self.best(r.stock_locate, "B"), self.best(r.stock_locate, "S")
            # a halt cross reopens a paused stock; nothing else trades in a pause
            assert (r.stock_locate in self.paused) == (kind == "Q" and r.cross_type == "H")
            if kind == "P":
                assert r.order_reference_number == 0
                assert bid is None or ask is None or bid <= price <= ask
            assert r.match_number not in self.matches
            self.matches.add(r.match_number)
        elif kind == "B":
            assert r.match_number in self.matches, "a broken trade of an unknown match"
        if kind in "AFECXDU":
            bid, ask = self.best(r.stock_locate, "B"), self.best(r.stock_locate, "S")
            assert bid is None or ask is None or bid < ask, f"crossed book: {r}"


def referee(messages: int, **options: int) -> Referee:
    ref = Referee()
    count = 0
    for message in generate_day(messages, **options):
        ref.apply(message)
        count += 1
    assert count == messages
    return ref


@pytest.mark.parametrize("seed", [1, 2])
def test_a_day_is_valid_and_realistic(seed: int) -> None:
    day = referee(60_000, seed=seed)
    assert day.events == ["O", "S", "Q", "M", "E", "C"]
    assert len(day.names) == 500
    assert set(day.kinds) >= set("SRHYVAFEXDUPQC")
    # an opening and a closing cross per stock, a halt cross for each of 5 LULD pauses
    assert day.pauses == 5 and not day.paused
    assert day.kinds["Q"] == 2 * 500 + 5 and day.kinds["H"] == 500 + 2 * 5
    assert day.kinds["A"] > day.kinds["D"] > day.kinds["U"] > day.kinds["X"] > day.kinds["C"]
    assert day.partial_executions > 100 and day.kinds["C"] > 100
    assert day.kinds["P"] > 1000
    assert 9 * 3600 * 10**9 < day.last_time <= 21 * 3600 * 10**9


def test_prices_are_plausible_per_stock() -> None:
    day = referee(30_000, seed=3)
    prices: dict[int, list[int]] = {}
    for order in day.orders.values():
        prices.setdefault(order[0], []).append(order[2])
    spans = [max(p) / min(p) for p in prices.values() if len(p) > 5]
    assert spans and max(spans) < 2  # each stock within its own band
    everything = [p for ps in prices.values() for p in ps]
    assert min(everything) >= 10_000 and max(everything) <= 10_000_000  # $1 to $1,000


def test_a_big_day_lists_several_hundred_stocks_and_a_short_one_fewer() -> None:
    stocks = Counter(chr(m[0]) for m in generate_day(2_000, seed=1))["R"]
    assert 50 < stocks < 500


def test_a_short_day_is_the_start_of_one() -> None:
    for n in (0, 1, 5, 19, 40, 100):
        got = list(generate_day(n, seed=4))
        assert len(got) == n
        for message in got:
            itch50.decode(message)
    assert itch50.decode(next(generate_day(1))).event_code == "O"
    assert referee(100, seed=4).events == ["O", "S", "Q", "M", "E", "C"]
    assert referee(40, seed=4).events == ["O", "S", "Q", "M", "E", "C"]


def test_the_same_seed_gives_the_same_bytes() -> None:
    first = list(generate_day(20_000, seed=7))
    assert first == list(generate_day(20_000, seed=7))
    assert first != list(generate_day(20_000, seed=8))


def test_resting_orders_stay_under_the_cap() -> None:
    day = referee(40_000, seed=5, stocks=20, max_resting=300)
    assert day.most_resting == 300
    assert day.kinds["A"] + day.kinds["F"] > 10_000


def test_the_mix_adds_up() -> None:
    assert sum(weight for _, weight in generator._MIX) == pytest.approx(1)


def test_symbols_are_distinct_tickers() -> None:
    names = stock_symbols(800, seed=1)
    assert len(set(names)) == 800 and names == sorted(names)
    assert all(n.isalpha() and n.isupper() and 1 <= len(n) <= 5 for n in names)


def test_bad_arguments_are_refused() -> None:
    with pytest.raises(ValueError):
        generate_day(-1)
    with pytest.raises(ValueError):
        generate_day(10, stocks=0)


def test_broken_trades_are_rare_and_break_earlier_matches() -> None:
    where = {"E": 23, "C": 23, "P": 36, "Q": 31}  # the match number's offset per type
    matches: set[int] = set()
    broken = 0
    for message in generate_day(300_000, seed=6):
        kind = chr(message[0])
        if kind in where:
            matches.add(int.from_bytes(message[where[kind] : where[kind] + 8], "big"))
        elif kind == "B":
            assert int.from_bytes(message[11:19], "big") in matches
            broken += 1
    assert 0 < broken < 100
