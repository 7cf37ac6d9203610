"""A synthetic TotalView-ITCH 5.0 trading day: realistic, self-consistent, seeded, streamed.

:func:`generate_day` yields the wire bytes of exactly ``messages`` ITCH 5.0 messages (the
blocks MoldUDP64 carries, as in a BinaryFILE), the same bytes for the same arguments:

* the day's frame: System Event ``O`` (start of messages, 03:00), a Stock Directory ``R`` per
  stock (ticker-like symbols, locate codes in alphabetical order), a Stock Trading Action
  ``H`` (trading) per stock, Reg SHO ``Y`` for a few, the MWCB levels ``V``, ``S`` (start of
  system hours, 04:00), ``Q`` (start of market hours, 09:30) then an opening cross ``Q``
  (cross type ``O``) per stock, at 16:00 a closing cross (``C``) per stock and ``M`` (end of
  market hours), ``E`` (end of system hours, 20:00), ``C`` (end of messages); in a day of
  100 messages a stock or more, LULD pauses of one stock in a hundred (Trading Action ``P``,
  reason ``LUDP``, 5 minutes without executions, then a halt cross ``Q`` and ``T``);
* between them order flow (5% before the open, 90% in market hours, 5% after the close):
  adds ``A`` and ``F`` (with an MPID), deletes ``D``, partial cancels ``X``, replaces
  ``U``, executions ``E`` (of the oldest order at a side's best price, often partial) and
  ``C`` (with a price), hidden trades ``P`` (order reference 0, inside the spread), and a
  rare broken trade ``B`` of an earlier match number;
* timestamps that never go back, through the day (bursty order flow), tracking number 0;
* prices with 4 decimal places on a one-cent tick, each stock around its own level (log
  uniform between $2 and $500) that wanders a few cents at a time.

Every reference is valid: an ``E``, ``C``, ``X``, ``D`` or ``U`` names an order that rests
on the book, an execution or cancel never exceeds its shares (a cancel is partial, a delete
removes the rest), order reference numbers are never reused, and no add or replace crosses
the other side's best price, so the book is never crossed. Memory is bounded: at most
``max_resting`` orders rest at once (at the cap an add becomes a delete), whatever
``messages`` is. A day too short for its frame (fewer than about 20 messages) is the start
of one, cut at ``messages``.

Pure Python (no NumPy), about 400,000 messages a second of one core.
"""

from __future__ import annotations

import random
import struct
import sys
from array import array
from collections.abc import Callable, Iterator
from itertools import chain, islice
from math import log as _log
from typing import Final

from .codec import encode
from .messages import (
    CrossTrade,
    MWCBDeclineLevel,
    RegSHORestriction,
    StockDirectory,
    StockTradingAction,
    SystemEvent,
)

__all__ = ["DEFAULT_STOCKS", "MAX_RESTING", "generate_day", "stock_symbols"]

#: Stocks in a day long enough to hold them all (shorter days list fewer).
DEFAULT_STOCKS: Final = 500
#: At most this many orders rest on the book at once (the generator's memory bound).
MAX_RESTING: Final = 100_000

_NS: Final = 1_000_000_000
_HOUR: Final = 3600 * _NS
_TICK: Final = 100  # one cent, in the price units (4 implied decimal places)
_MPIDS: Final = (b"GSCO", b"MSCO", b"JPMS", b"UBSS", b"CDRG", b"VIRT", b"NITE", b"SUSQ")

# The order flow's mix (cumulative thresholds on one random draw, checked in this order).
# Adds outnumber deletes and full executions a little, so the book deepens through the day
# up to the cap on resting orders, where an add becomes a delete.
_MIX: Final = (
    ("A", 0.420),
    ("D", 0.330),
    ("U", 0.080),
    ("E", 0.075),
    ("X", 0.040),
    ("P", 0.035),
    ("F", 0.015),
    ("C", 0.00495),
    ("B", 0.00005),
)

_A = struct.Struct(">cHHHIQcI8sI").pack
_F = struct.Struct(">cHHHIQcI8sI4s").pack
_E = struct.Struct(">cHHHIQIQ").pack
_C = struct.Struct(">cHHHIQIQcI").pack
_X = struct.Struct(">cHHHIQI").pack
_D = struct.Struct(">cHHHIQ").pack
_U = struct.Struct(">cHHHIQQII").pack
_P = struct.Struct(">cHHHIQcI8sIQ").pack
_B = struct.Struct(">cHHHIQ").pack


def stock_symbols(count: int, seed: int = 0) -> list[str]:
    """``count`` distinct ticker-like symbols (1 to 5 capital letters, most 3 or 4, sorted)."""
    rng = random.Random(f"symbols {seed}")
    consonants, vowels = "BCDFGHJKLMNPQRSTVWXZ", "AEIOUY"
    symbols: set[str] = set()
    while len(symbols) < count:
        length = rng.choices((1, 2, 3, 4, 5), (1, 4, 30, 60, 5))[0]
        letters = [
            rng.choice(vowels if i % 2 == 1 and rng.random() < 0.7 else consonants)
            for i in range(length)
        ]
        if rng.random() < 0.3:
            rng.shuffle(letters)
        symbols.add("".join(letters))
    return sorted(symbols)


class _Stock:
    """One stock's book as the generator keeps it: price levels per side, in time priority."""

    __slots__ = (
        "ask", "ask_levels", "bid", "bid_levels", "halted", "hi", "lo", "locate", "mid", "name",
    )  # fmt: skip

    def __init__(self, locate: int, name: str, mid: int) -> None:
        self.locate = locate
        self.name = name.encode().ljust(8)
        self.mid = mid
        self.lo = max(20 * _TICK, mid * 8 // 10 // _TICK * _TICK)
        self.hi = mid * 12 // 10 // _TICK * _TICK
        self.bid = 0  # best bid price, 0: no bid
        self.ask = 0  # best ask price, 0: no ask
        self.halted = False  # paused: orders come and go, nothing executes
        # price -> {order reference: None}, oldest first
        self.bid_levels: dict[int, dict[int, None]] = {}
        self.ask_levels: dict[int, dict[int, None]] = {}


def _stock_count(messages: int, stocks: int) -> int:
    """How many stocks a day of ``messages`` lists: its frame (3 messages a stock and a few
    more) takes at most a quarter of it."""
    return max(1, min(stocks, (messages // 4 - 8) // 3))


def generate_day(
    messages: int,
    *,
    seed: int = 0,
    stocks: int = DEFAULT_STOCKS,
    max_resting: int = MAX_RESTING,
) -> Iterator[bytes]:
    """Yield exactly ``messages`` ITCH 5.0 messages (wire bytes) of one synthetic day.

    ``seed`` fixes everything (the same arguments give the same bytes); ``stocks`` is the
    most stocks listed (a short day lists fewer: its frame takes at most a quarter of it);
    ``max_resting`` bounds the orders resting at once. Streamed: memory stays bounded by
    ``max_resting`` and ``stocks``, whatever ``messages``.
    """
    if messages < 0:
        raise ValueError(f"messages must be >= 0, got {messages}")
    if stocks < 1 or max_resting < 1:
        raise ValueError("stocks and max_resting must be >= 1")
    return islice(chain.from_iterable(_day(messages, seed, stocks, max_resting)), messages)


def _day(total: int, seed: int, stocks: int, max_resting: int) -> Iterator[list[bytes]]:
    """The day, a list of messages at a time."""
    rng = random.Random(seed)
    n = _stock_count(total, stocks)
    names = stock_symbols(n, seed)
    book = [
        _Stock(i + 1, name, int(2 * 250 ** rng.random() * 100) * _TICK)
        for i, name in enumerate(names)
    ]
    sho = sorted(rng.sample(range(n), n // 20))
    # LULD pauses of a few stocks in market hours (a day long enough): (stock, fraction of
    # the session's flow when it starts); each takes 3 messages (pause, halt cross, resume)
    pauses = [(stock, rng.uniform(0.05, 0.9)) for stock in rng.sample(range(n), n // 100)]
    if total < 100 * n:
        pauses = []
    frame = 1 + 2 * n + len(sho) + 2 + 1 + n + n + 3 + 3 * len(pauses)
    flow = max(0, total - frame)
    pre, post = flow // 20, flow // 20
    regular = flow - pre - post
    t = 3 * _HOUR
    opening: list[bytes] = [encode(SystemEvent(0, 0, t, "O"))]
    for s in book:
        t += 1000
        etp = "Y" if s.locate % 17 == 0 else "N"
        opening.append(
            encode(
                StockDirectory(
                    s.locate, 0, t, s.name.decode().rstrip(), "QGS"[s.locate % 3], "N", 100, "N",
                    "Q" if etp == "Y" else "C", "ET" if etp == "Y" else "Z", "P", "N", "N",
                    "1" if s.mid > 50 * 10_000 else "2", etp, 0, "N",
                )
            )
        )  # fmt: skip
    for s in book:
        t += 1000
        opening.append(
            encode(StockTradingAction(s.locate, 0, t, s.name.decode().rstrip(), "T", ""))
        )
    for i in sho:
        t += 1000
        stock = book[i].name.decode().rstrip()
        opening.append(encode(RegSHORestriction(book[i].locate, 0, t, stock, "0")))
    t += 1000
    opening.append(encode(MWCBDeclineLevel(0, 0, t, 451_234 * 10**6, 417_250 * 10**6,
                                           384_512 * 10**6)))  # fmt: skip
    opening.append(encode(SystemEvent(0, 0, 4 * _HOUR, "S")))
    yield opening
    state = _Flow(rng, book, max_resting)
    yield from state.run(pre, 4 * _HOUR, 9 * _HOUR + 30 * 60 * _NS)
    t = 9 * _HOUR + 30 * 60 * _NS
    yield [encode(SystemEvent(0, 0, t, "Q")), *state.crosses(t, "O")]
    t += (n + 1) * 1000
    yield from state.session(regular, t, 16 * _HOUR - 1000 * (n + 2), pauses)
    t = 16 * _HOUR - 1000 * (n + 1)
    yield [*state.crosses(t, "C"), encode(SystemEvent(0, 0, 16 * _HOUR, "M"))]
    yield from state.run(post, 16 * _HOUR + 1000, 20 * _HOUR)
    yield [
        encode(SystemEvent(0, 0, 20 * _HOUR, "E")),
        encode(SystemEvent(0, 0, 20 * _HOUR + 5 * 60 * _NS, "C")),
    ]


class _Flow:
    """The order flow: the resting orders of every stock and the next numbers to use.

    Written for speed (the order-book benchmarks want 10,000,000-message days): random
    numbers come 32 bits at a time from one ``randbytes`` call per chunk, and distributions
    are lookup tables of 256 or 4096 entries indexed by their bits; adds, deletes and
    cancels, three quarters of the flow, are inlined in :meth:`_chunk`.
    """

    def __init__(self, rng: random.Random, book: list[_Stock], max_resting: int) -> None:
        self.rng = rng
        self.book = book
        self.max_resting = max_resting
        # order reference -> [stock, side (0 bid, 1 ask), price, shares, index in live]
        self.orders: dict[int, list[int]] = {}
        self.live: list[int] = []  # the resting orders' references, to pick one at random
        self.next_ref = 1000
        self.next_match = 1
        self.recent_matches: list[int] = []
        # popular stocks trade more: Zipf-like weights over a shuffled ranking
        weights = [1.0 / (rank + 1) ** 0.9 for rank in range(len(book))]
        ranking = list(range(len(book)))
        rng.shuffle(ranking)
        self.pick_table = rng.choices(ranking, weights, k=4096)
        # how far from the mid a new order goes: 1 tick and more, mostly a few
        self.away = [_TICK * (1 + min(40, int(-5.0 * _log(1.0 - (i + 0.5) / 256)))) for i in
                     range(256)]  # fmt: skip
        # order sizes: round lots (mostly 100 to 500) and a fifth odd lots
        self.share_sizes = [
            100 * (1 + min(50, int(-2.0 * _log(1.0 - rng.random())))) if rng.random() < 0.8
            else 1 + int(rng.random() * 99)
            for _ in range(256)
        ]  # fmt: skip
        self.cuts = [int(cut * (1 << 32)) for cut in _cuts()]

    def crosses(self, t: int, kind: str) -> list[bytes]:
        """A cross trade per stock (opening ``O`` or closing ``C``) at its mid price."""
        out = []
        for s in self.book:
            t += 1000
            shares = int(1000 * 50 ** self.rng.random()) // 100 * 100 + 100
            price = self._inside(s)
            stock = s.name.decode().rstrip()
            out.append(encode(CrossTrade(s.locate, 0, t, shares, stock, price, self._match(),
                                         kind)))  # fmt: skip
        return out

    def _match(self) -> int:
        match = self.next_match
        self.next_match += 1
        recent = self.recent_matches
        recent.append(match)
        if len(recent) > 64:
            del recent[:32]
        return match

    @staticmethod
    def _inside(s: _Stock) -> int:
        """A price inside the spread (the midpoint on the tick), or the mid."""
        if s.bid and s.ask:
            return (s.bid + s.ask) // 2 // _TICK * _TICK if s.ask - s.bid > _TICK else s.bid
        return s.mid

    def session(
        self, count: int, start: int, end: int, pauses: list[tuple[int, float]]
    ) -> Iterator[list[bytes]]:
        """Market hours: ``count`` order-flow messages in (start, end), and the LULD pauses
        of ``pauses`` (distinct stocks, each with its start as a fraction of the flow), 5
        minutes each: a Trading Action ``P`` (reason ``LUDP``), then a halt cross ``Q``
        (type ``H``) and ``T``."""
        per_ns = count / (end - start)
        events: list[tuple[int, int, int]] = []  # (flow index, 0 pause / 1 resume, stock)
        for stock, at in pauses:
            first = int(count * at)
            events.append((first, 0, stock))
            events.append((min(count, first + int(5 * 60 * _NS * per_ns)), 1, stock))
        events.sort()
        done, t = 0, start
        for index, kind, stock in events:
            t_event = max(t, start + (end - start) * index // max(count, 1))
            yield from self.run(index - done, t, t_event)
            done, t = index, t_event
            s = self.book[stock]
            name = s.name.decode().rstrip()
            if kind == 0:
                s.halted = True
                yield [encode(StockTradingAction(s.locate, 0, t, name, "P", "LUDP"))]
            else:
                s.halted = False
                shares = int(1000 * 10 ** self.rng.random()) // 100 * 100 + 100
                cross = CrossTrade(s.locate, 0, t, shares, name, self._inside(s), self._match(),
                                   "H")  # fmt: skip
                yield [encode(cross), encode(StockTradingAction(s.locate, 0, t, name, "T", ""))]
        yield from self.run(count - done, t, end)

    def run(self, count: int, start: int, end: int) -> Iterator[list[bytes]]:
        """``count`` order-flow messages, timestamps increasing in (start, end)."""
        step = (end - start) // (count + 1)
        # bursty: gaps of 0 to 3 mean steps, averaging 0.95 of one
        steps = [int(step * 0.95 * -_log(1.0 - (i + 0.5) / 256)) for i in range(256)]
        t = start
        done = 0
        while done < count:
            size = min(4096, count - done)
            chunk, t = self._chunk(size, t, steps, end)
            yield chunk
            done += size

    def _chunk(self, size: int, t: int, steps: list[int], end: int) -> tuple[list[bytes], int]:
        """``size`` messages from time ``t`` on (at most ``end - 1``), and the last time."""
        draws = array("I", self.rng.randbytes(_DRAWS * array("I").itemsize * size))
        if _BIG_ENDIAN:
            draws.byteswap()
        nx = iter(draws).__next__
        book = self.book
        orders = self.orders
        live = self.live
        pick = self.pick_table
        away = self.away
        share_sizes = self.share_sizes
        cap = self.max_resting
        a_cut, d_cut, u_cut, e_cut, x_cut, p_cut, f_cut, c_cut = self.cuts
        last = end - 1
        out: list[bytes] = []
        append = out.append
        for _ in range(size):
            v = nx()
            t += steps[v & 255]
            if t > last:
                t = last
            th, tl = t >> 32, t & 0xFFFFFFFF
            r = nx()
            if r < a_cut or p_cut <= r < f_cut or not live:
                if len(live) < cap:  # an add
                    v = nx()
                    si = pick[v & 4095]
                    s = book[si]
                    if (v >> 12) & 63 == 0:  # the stock's level wanders a tick
                        mid = s.mid + (_TICK if (v >> 18) & 1 else -_TICK)
                        if s.lo <= mid <= s.hi:
                            s.mid = mid
                    side = (v >> 19) & 1
                    if side:
                        price = s.mid + away[(v >> 20) & 255]
                        if price <= s.bid:
                            price = s.bid + _TICK
                    else:
                        price = s.mid - away[(v >> 20) & 255]
                        if s.ask and price >= s.ask:
                            price = s.ask - _TICK
                        if price < _TICK:
                            price = _TICK
                    w = nx()
                    shares = share_sizes[w & 255]
                    ref = self.next_ref = self.next_ref + 1 + ((w >> 8) & 3)
                    orders[ref] = [si, side, price, shares, len(live)]
                    live.append(ref)
                    levels = s.ask_levels if side else s.bid_levels
                    level = levels.get(price)
                    if level is None:
                        levels[price] = {ref: None}
                        if side:
                            if not s.ask or price < s.ask:
                                s.ask = price
                        elif price > s.bid:
                            s.bid = price
                    else:
                        level[ref] = None
                    if p_cut <= r < f_cut:
                        append(_F(b"F", s.locate, 0, th, tl, ref, b"S" if side else b"B", shares,
                                  s.name, price, _MPIDS[(w >> 10) & 7]))  # fmt: skip
                    else:
                        append(_A(b"A", s.locate, 0, th, tl, ref, b"S" if side else b"B", shares,
                                  s.name, price))  # fmt: skip
                    continue
                r = a_cut  # at the cap: a delete instead
            if r < d_cut or (r < x_cut and e_cut <= r):  # a delete, or a cancel
                w = nx()
                n = len(live)
                # most often a recent order: cancels follow adds closely
                index = n - 1 - (w >> 4) % min(n, 100) if w & 15 < 13 else (w >> 4) % n
                ref = live[index]
                o = orders[ref]
                if r >= d_cut and o[3] > 1:  # a cancel, in part
                    cancelled = 1 + (nx() % (o[3] - 1))
                    o[3] -= cancelled
                    append(_X(b"X", book[o[0]].locate, 0, th, tl, ref, cancelled))
                    continue
                del orders[ref]  # as _remove does
                moved = live.pop()
                if moved != ref:
                    live[index] = moved
                    orders[moved][4] = index
                s = book[o[0]]
                price = o[2]
                if o[1]:
                    levels = s.ask_levels
                    level = levels[price]
                    del level[ref]
                    if not level:
                        del levels[price]
                        if price == s.ask:
                            s.ask = min(levels) if levels else 0
                else:
                    levels = s.bid_levels
                    level = levels[price]
                    del level[ref]
                    if not level:
                        del levels[price]
                        if price == s.bid:
                            s.bid = max(levels) if levels else 0
                append(_D(b"D", s.locate, 0, th, tl, ref))
            elif r < u_cut:
                append(self._replace(th, tl, nx))
            elif r < e_cut or f_cut <= r < c_cut:
                message = self._execute(th, tl, r >= f_cut, nx)
                if message is None:  # that stock's book is empty: a hidden trade instead
                    message = self._hidden(th, tl, nx)
                append(message)
            elif r < p_cut:
                append(self._hidden(th, tl, nx))
            else:  # a broken trade: one of the recent matches
                recent = self.recent_matches
                if recent:
                    append(_B(b"B", 0, 0, th, tl, recent.pop(nx() % len(recent))))
                else:
                    append(self._hidden(th, tl, nx))
        return out, t

    def _hidden(self, th: int, tl: int, nx: Callable[[], int]) -> bytes:
        """A trade of a hidden order (reference 0), inside the spread."""
        v = nx()
        s = self.book[self.pick_table[v & 4095]]
        while s.halted:  # nothing trades in a pause: another stock (most never pause)
            v += 1
            s = self.book[self.pick_table[v & 4095]]
        side = b"B" if (v >> 12) & 1 else b"S"
        shares = self.share_sizes[(v >> 13) & 255]
        return _P(b"P", s.locate, 0, th, tl, 0, side, shares, s.name, self._inside(s),
                  self._match())  # fmt: skip

    def _remove(self, ref: int, o: list[int]) -> None:
        del self.orders[ref]
        live = self.live
        last = live.pop()
        if last != ref:
            live[o[4]] = last
            self.orders[last][4] = o[4]
        s = self.book[o[0]]
        price = o[2]
        if o[1] == 0:
            level = s.bid_levels[price]
            del level[ref]
            if not level:
                del s.bid_levels[price]
                if price == s.bid:
                    s.bid = max(s.bid_levels) if s.bid_levels else 0
        else:
            level = s.ask_levels[price]
            del level[ref]
            if not level:
                del s.ask_levels[price]
                if price == s.ask:
                    s.ask = min(s.ask_levels) if s.ask_levels else 0

    def _replace(self, th: int, tl: int, nx: Callable[[], int]) -> bytes:
        """Replace a resting order: a new reference, price and often size, same side."""
        live = self.live
        w = nx()
        n = len(live)
        ref = live[(w >> 4) % n] if w & 7 == 0 else live[-1 - (w >> 4) % min(n, 100)]
        o = self.orders[ref]
        s_index, side, shares = o[0], o[1], o[3]
        s = self.book[s_index]
        self._remove(ref, o)
        if side:
            price = s.mid + self.away[(w >> 24) & 255]
            if price <= s.bid:
                price = s.bid + _TICK
        else:
            price = max(s.mid - self.away[(w >> 24) & 255], _TICK)
            if s.ask and price >= s.ask:
                price = s.ask - _TICK
        if w & 2:
            shares = self.share_sizes[(w >> 16) & 255]
        new = self.next_ref = self.next_ref + 1 + ((w >> 2) & 3)
        self.orders[new] = [s_index, side, price, shares, len(live)]
        live.append(new)
        levels = s.ask_levels if side else s.bid_levels
        level = levels.get(price)
        if level is None:
            levels[price] = {new: None}
            if side:
                if not s.ask or price < s.ask:
                    s.ask = price
            elif price > s.bid:
                s.bid = price
        else:
            level[new] = None
        return _U(b"U", s.locate, 0, th, tl, ref, new, shares, price)

    def _execute(self, th: int, tl: int, with_price: bool, nx: Callable[[], int]) -> bytes | None:
        """Execute the oldest order at a side's best price, in full or in part (None: the
        chosen stock has no resting order)."""
        v = nx()
        s = self.book[self.pick_table[v & 4095]]
        if s.halted:  # nothing executes in a pause
            return None
        # buyers lift the asks when the stock's level is above the book's middle
        if s.bid and s.ask:
            middle = s.bid + s.ask
            side = 1 if 2 * s.mid > middle or (2 * s.mid == middle and (v >> 12) & 1) else 0
        elif s.bid:
            side = 0
        elif s.ask:
            side = 1
        else:
            return None
        price = s.ask if side else s.bid
        level = (s.ask_levels if side else s.bid_levels)[price]
        ref = next(iter(level))
        o = self.orders[ref]
        shares = o[3]
        if shares > 1 and (v >> 13) & 7 < 3:  # in part
            executed = 1 + (v >> 16) % (shares - 1)
            o[3] -= executed
        else:
            executed = shares
            self._remove(ref, o)
        match = self._match()
        if with_price:
            printable = b"N" if (v >> 28) == 0 else b"Y"
            # a better price than displayed for the order: lower for a bid, higher for an ask
            exec_price = price + _TICK if side else max(price - _TICK, _TICK)
            return _C(b"C", s.locate, 0, th, tl, ref, executed, match, printable, exec_price)
        return _E(b"E", s.locate, 0, th, tl, ref, executed, match)


#: Random 32-bit draws drawn per message (one takes at most 4: time, kind, then 2).
_DRAWS: Final = 6
_BIG_ENDIAN: Final = sys.byteorder == "big"


def _cuts() -> tuple[float, ...]:
    """The mix's cumulative thresholds, in the order of :data:`_MIX`."""
    cuts = []
    total = 0.0
    for _, weight in _MIX:
        total += weight
        cuts.append(total)
    return tuple(cuts[:8])
