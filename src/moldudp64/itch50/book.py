"""The order book that TotalView-ITCH 5.0 messages build: per stock, full depth, no I/O.

:class:`BookCore` applies messages (BinaryFILE-framed blocks: a 2-byte big-endian length,
then the message) and keeps, per stock locate, every resting order at its price level in
time priority. It is driven by A and F (add), E and C (executed), X (cancel), D (delete),
U (replace: the new order goes to the back of its level), and records P, Q and B as trades;
R names the stocks, H, Y, h, J, K (per stock) and S, V, W (market wide) are kept as state.

While it applies messages it appends rows to three tables (bytes of packed int64 records,
made columnar by :mod:`moldudp64.itch50.book_tables`):

* ``bbo``: after a message that changed a stock's best bid or offer (price, shares, orders);
* ``trades``: one per E, C, P, Q and B;
* ``depth``: after a message that changed one of the stock's top ``depth`` levels per side,
  or, with ``interval_ns``, every stock's levels at each multiple of the interval.

Nothing is guessed and nothing crashes: a reference to an order the book does not hold (a
feed joined mid-day) is counted in :attr:`BookCore.unknown_orders`, an execution or cancel
for more shares than the order has is applied up to what it has and counted in
:attr:`BookCore.overfills`, and a message of unknown type or wrong length is counted in
:attr:`BookCore.invalid`. Memory follows the resting orders and the stocks seen.

``moldudp64._book`` (C, optional) is a twin of :class:`PyBookCore` producing the same rows
byte for byte; :func:`new_core` picks it when it is built (``MOLDUDP64_PURE_PYTHON=1``: not).
"""

from __future__ import annotations

import operator
import os
import struct
from bisect import bisect_left
from typing import Any, Final, NamedTuple, Protocol

__all__ = [
    "BBO_WIDTH",
    "STATE_FIELDS",
    "TRADES_WIDTH",
    "BBOChange",
    "Book",
    "BookCore",
    "Level",
    "PyBookCore",
    "depth_width",
    "new_core",
    "snapshot_messages",
]

#: int64 values per bbo row: seq, timestamp, stock_locate, stock code, bid price, bid
#: shares, bid orders, ask price, ask shares, ask orders (price -1: the side is empty).
BBO_WIDTH: Final = 10
#: int64 values per trades row: seq, timestamp, stock_locate, stock code, kind, price (-1:
#: unknown), shares, side (0: unknown), order reference, match number, printable (0: none).
TRADES_WIDTH: Final = 11

#: The state fields a stock carries (index in :attr:`PyBookCore.state`'s rows).
STATE_FIELDS: Final = (
    "trading_state",  # H: 'H' halted, 'P' paused, 'Q' quotation only, 'T' trading
    "trading_reason",  # H reason (4 characters)
    "reg_sho_action",  # Y: '0' no test, '1' in effect, '2' remains
    "market_code",  # h: 'Q', 'B', 'X'
    "operational_halt_action",  # h: 'H' halted, 'T' resumed
    "luld_reference_price",  # J: auction collar reference price
    "luld_upper_price",
    "luld_lower_price",
    "luld_extension",
    "ipo_release_time",  # K
    "ipo_release_qualifier",
    "ipo_price",
    "market_category",  # R
    "round_lot_size",  # R
)


def depth_width(levels: int) -> int:
    """int64 values per depth row: seq, timestamp, stock_locate, stock code, then per level
    i: bid price, bid shares, bid orders, ask price, ask shares, ask orders."""
    return 4 + 6 * levels


class Level(NamedTuple):
    """One price level: price (integer, 4 implied decimals), total shares, orders."""

    price: int
    shares: int
    orders: int


class BookCore(Protocol):
    """What both cores (:class:`PyBookCore` and the C twin) offer."""

    unknown_orders: int
    overfills: int
    duplicate_orders: int
    zero_share_adds: int
    invalid: int
    messages: int
    names_reused: int

    @property
    def orders_resting(self) -> int:
        """Orders in the book now."""
        ...

    def feed(self, blocks: Any, seq: int) -> int:
        """Apply the BinaryFILE-framed messages of ``blocks`` (the first is ``seq``); return
        the bytes used (complete messages only)."""
        ...

    def take(self) -> tuple[bytes, bytes, bytes]:
        """The bbo, trades and depth rows appended since the last take."""
        ...

    def pending(self) -> int:
        """Rows held (all three tables)."""
        ...

    def names(self, start: int) -> list[str]:
        """Stock names by code from ``start``. A code no stock uses any more is given to a
        new name once no row held names it (then :attr:`names_reused` grows: read them all
        again); rows taken together always name stocks by the names of that moment."""
        ...

    def bbo(self, locate: int) -> tuple[int, int, int, int, int, int]:
        """bid price, shares, orders, ask price, shares, orders (-1, 0, 0: empty side)."""
        ...

    def levels(self, locate: int, side: int, count: int) -> list[tuple[int, int, int]]:
        """The best ``count`` levels of a side (0 bid, 1 ask): (price, shares, orders)."""
        ...

    def orders(self, locate: int, side: int, price: int) -> list[tuple[int, int]]:
        """The orders (reference, shares) of a level in time priority."""
        ...

    def order(self, ref: int) -> tuple[int, int, int, int] | None:
        """A resting order: (locate, side, price, shares), or None."""
        ...

    def state(self, locate: int) -> tuple[Any, ...]:
        """The stock's :data:`STATE_FIELDS`, then the market's event code, MWCB levels and
        breached level."""
        ...

    def locates(self) -> list[int]:
        """The locates of every stock seen (named or holding an order), ascending."""
        ...

    def name_code(self, locate: int) -> int:
        """The stock's current name code (-1: no name known)."""
        ...


_U16: Final = struct.Struct(">H")
_TS: Final = struct.Struct(">HHHI")  # locate, tracking, timestamp high 16, low 32
_ADD: Final = struct.Struct(">HH6sQcI8sI")
_ADD_F: Final = struct.Struct(">HH6sQcI8sI4s")
_EXEC: Final = struct.Struct(">HH6sQIQ")
_EXEC_C: Final = struct.Struct(">HH6sQIQcI")
_CANCEL: Final = struct.Struct(">HH6sQI")
_DELETE: Final = struct.Struct(">HH6sQ")
_REPLACE: Final = struct.Struct(">HH6sQQII")
_TRADE: Final = struct.Struct(">HH6sQcI8sIQ")
_CROSS: Final = struct.Struct(">HH6sQ8sIQc")
_BROKEN: Final = struct.Struct(">HH6sQ")
_DIRECTORY: Final = struct.Struct(">HH6s8sccIcc2sccccIc")
_ACTION: Final = struct.Struct(">HH6s8scx4s")
_REGSHO: Final = struct.Struct(">HH6s8sc")
_HALT: Final = struct.Struct(">HH6s8scc")
_COLLAR: Final = struct.Struct(">HH6s8sIIII")
_IPO: Final = struct.Struct(">HH6s8sIcI")
_EVENT: Final = struct.Struct(">HH6sc")
_MWCB: Final = struct.Struct(">HH6sQQQ")

#: Message lengths by type byte, for the types the book reads.
LENGTHS: Final = {
    ord("A"): 36, ord("F"): 40, ord("E"): 31, ord("C"): 36, ord("X"): 23, ord("D"): 19,
    ord("U"): 35, ord("P"): 44, ord("Q"): 40, ord("B"): 19, ord("R"): 39, ord("H"): 25,
    ord("Y"): 20, ord("h"): 21, ord("J"): 35, ord("K"): 28, ord("S"): 12, ord("V"): 35,
    ord("W"): 12, ord("L"): 26, ord("I"): 50, ord("N"): 20, ord("O"): 48,
}  # fmt: skip

#: Row layouts (little-endian, 8 bytes a value; unsigned where ITCH is: no overflow).
_BBO_ROW: Final = struct.Struct("<Qqqq" + "q" * 6)
_TRADE_ROW: Final = struct.Struct("<QqqqqqQqQQq")
_MASK64: Final = (1 << 64) - 1

_BID: Final = 0
_ASK: Final = 1
_NO_LEVEL: Final = (-1, 0, 0)


def _ts(raw: bytes) -> int:
    return int.from_bytes(raw, "big")


def _name(raw: bytes) -> str:
    return raw.decode("latin-1").rstrip(" ")


class _Side:
    """One side of a book: levels by key (price for bids, -price for asks: the best level
    is always the last key), each a dict of its orders (reference -> order) in time order."""

    __slots__ = ("keys", "levels")

    def __init__(self) -> None:
        self.keys: list[int] = []
        self.levels: dict[int, list[Any]] = {}  # key -> [shares, {ref: order}]

    def rank(self, key: int) -> int:
        """Levels better than ``key`` (which is held)."""
        return len(self.keys) - 1 - bisect_left(self.keys, key)


class _Stock:
    __slots__ = ("code", "emit", "last_bbo", "last_depth", "locate", "sides", "state")

    def __init__(self, locate: int, depth: int, emit: bool) -> None:
        self.locate = locate
        self.code = -1
        self.emit = emit  # rows wanted (no --symbols: also before a name is known)
        self.sides = (_Side(), _Side())
        self.last_bbo: tuple[int, ...] = (-1, 0, 0, -1, 0, 0)
        self.last_depth: list[int] = [-1, 0, 0, -1, 0, 0] * depth
        self.state: list[Any] = [None] * len(STATE_FIELDS)


class PyBookCore:
    """The book in Python: the reference for the C twin and its fallback.

    ``depth``: levels per side in the depth rows (0: no depth rows); ``symbols``: emit rows
    only for these stocks (every book is kept all the same); ``interval_ns``: depth rows
    sampled per stock at each multiple of it instead of after every change; ``tables``: which
    of bbo, trades, depth to produce.
    """

    def __init__(
        self,
        depth: int = 10,
        symbols: frozenset[str] | None = None,
        interval_ns: int = 0,
        tables: frozenset[str] = frozenset({"bbo", "trades", "depth"}),
    ) -> None:
        self.depth = depth if "depth" in tables else 0
        self.want_bbo = "bbo" in tables
        self.want_trades = "trades" in tables
        self.symbols = symbols
        self.interval_ns = interval_ns
        self.next_sample = -1
        self.last_seq = 0
        self._stocks: dict[int, _Stock] = {}
        self._orders: dict[int, list[Any]] = {}  # ref -> [stock, side, key, shares]
        self._names: list[str] = []
        self._codes: dict[str, int] = {}  # the names in use -> code
        self._users: list[int] = []  # per code: the stocks it names (0: free or retired)
        self._free: list[int] = []  # codes no row or stock refers to: reused first
        self._retired: list[int] = []  # codes held rows may still name: free at take()
        #: Times a code was given a new name (a reader of :meth:`names` reads them all again).
        self.names_reused = 0
        self.zero_share_adds = 0
        self._depth_row = struct.Struct("<Qqqq" + "q" * 6 * self.depth)
        self._bbo = bytearray()
        self._trades = bytearray()
        self._depth = bytearray()
        self.unknown_orders = 0
        self.overfills = 0
        self.duplicate_orders = 0
        self.invalid = 0
        self.messages = 0
        self.market: list[Any] = [None, None, None, None, None]  # S, V levels 1-3, W

    # ------------------------------------------------------------------ queries

    @property
    def orders_resting(self) -> int:
        return len(self._orders)

    def take(self) -> tuple[bytes, bytes, bytes]:
        out = (bytes(self._bbo), bytes(self._trades), bytes(self._depth))
        self._bbo = bytearray()
        self._trades = bytearray()
        self._depth = bytearray()
        self._free += self._retired  # no row left here names them
        self._retired = []
        return out

    def pending(self) -> int:
        return (
            len(self._bbo) // (8 * BBO_WIDTH)
            + len(self._trades) // (8 * TRADES_WIDTH)
            + (len(self._depth) // (8 * depth_width(self.depth)) if self.depth else 0)
        )

    def names(self, start: int) -> list[str]:
        return self._names[start:]

    def name_code(self, locate: int) -> int:
        stock = self._stocks.get(locate)
        return -1 if stock is None else stock.code

    def locates(self) -> list[int]:
        return sorted(self._stocks)

    def bbo(self, locate: int) -> tuple[int, int, int, int, int, int]:
        stock = self._stocks.get(locate)
        if stock is None:
            return (-1, 0, 0, -1, 0, 0)
        bid = self._top(stock.sides[_BID], 1, 1)
        ask = self._top(stock.sides[_ASK], 1, -1)
        b = bid[0] if bid else _NO_LEVEL
        a = ask[0] if ask else _NO_LEVEL
        return (b[0], b[1], b[2], a[0], a[1], a[2])

    def levels(self, locate: int, side: int, count: int) -> list[tuple[int, int, int]]:
        if side not in (_BID, _ASK):
            raise ValueError("side 0 (bid) or 1 (ask)")
        stock = self._stocks.get(locate)
        if stock is None or count <= 0:
            return []
        return self._top(stock.sides[side], count, 1 if side == _BID else -1)

    def orders(self, locate: int, side: int, price: int) -> list[tuple[int, int]]:
        if side not in (_BID, _ASK):
            raise ValueError("side 0 (bid) or 1 (ask)")
        stock = self._stocks.get(locate)
        if stock is None:
            return []
        level = stock.sides[side].levels.get(price if side == _BID else -price)
        if level is None:
            return []
        return [(ref, o[3]) for ref, o in level[1].items()]

    def order(self, ref: int) -> tuple[int, int, int, int] | None:
        o = self._orders.get(ref)
        if o is None:
            return None
        return (o[0].locate, o[1], o[2] if o[1] == _BID else -o[2], o[3])

    def state(self, locate: int) -> tuple[Any, ...]:
        stock = self._stocks.get(locate)
        own = stock.state if stock is not None else [None] * len(STATE_FIELDS)
        return (*own, *self.market)

    @staticmethod
    def _top(side: _Side, count: int, sign: int) -> list[tuple[int, int, int]]:
        keys = side.keys
        levels = side.levels
        out = []
        for key in reversed(keys[-count:] if count < len(keys) else keys):
            level = levels[key]
            out.append((key * sign, level[0], len(level[1])))
        return out

    # ------------------------------------------------------------------ applying

    def _stock(self, locate: int) -> _Stock:
        stock = self._stocks.get(locate)
        if stock is None:
            stock = self._stocks[locate] = _Stock(locate, self.depth, self.symbols is None)
        return stock

    def _set_name(self, stock: _Stock, raw: bytes) -> None:
        """Name (or rename) a stock. A code no stock uses any more is given to the next new
        name once no row held names it (memory follows the stocks, not the R messages)."""
        name = _name(raw)
        old = stock.code
        if old >= 0:
            self._users[old] -= 1
            if not self._users[old]:
                del self._codes[self._names[old]]
                if self._bbo or self._trades or self._depth:
                    self._retired.append(old)
                else:
                    self._free.append(old)
        code = self._codes.get(name)
        if code is None:
            if self._free:
                code = self._free.pop()
                self._names[code] = name
                self.names_reused += 1
            else:
                code = len(self._names)
                self._names.append(name)
                self._users.append(0)
            self._codes[name] = code
        self._users[code] += 1
        stock.code = code
        stock.emit = self.symbols is None or name in self.symbols

    def feed(self, blocks: Any, seq: int) -> int:
        data = bytes(blocks)
        size = len(data)
        pos = 0
        apply = self._apply
        while pos + 2 <= size:
            length = data[pos] << 8 | data[pos + 1]
            end = pos + 2 + length
            if end > size:
                break
            apply(data[pos + 2 : end], seq)
            seq = (seq + 1) & _MASK64
            pos = end
        return pos

    def _apply(self, msg: bytes, seq: int) -> None:
        self.messages += 1
        if not msg or LENGTHS.get(msg[0]) != len(msg):
            self.invalid += 1
            self.last_seq = seq
            return
        kind = msg[0]
        if self.interval_ns:
            ts = _ts(msg[5:11])
            if ts >= self.next_sample:
                self._sample(ts)
        if kind == 0x41 or kind == 0x46:  # A, F
            _, _, ts_raw, ref, side_raw, shares, stock_raw, price = _ADD.unpack_from(msg, 1)
            stock = self._stock(_U16.unpack_from(msg, 1)[0])
            if stock.code < 0:
                self._set_name(stock, stock_raw)
            if ref in self._orders:
                self.duplicate_orders += 1
            elif not shares:
                self.zero_share_adds += 1
            else:
                side = _ASK if side_raw == b"S" else _BID
                touched = self._add(stock, ref, side, price, shares)
                self._changed(stock, seq, _ts(ts_raw), touched)
        elif kind == 0x45 or kind == 0x43:  # E, C
            if kind == 0x45:
                locate, _, ts_raw, ref, shares, match = _EXEC.unpack_from(msg, 1)
                printable = 0x59  # Y
                price = None
            else:
                locate, _, ts_raw, ref, shares, match, pr, price = _EXEC_C.unpack_from(msg, 1)
                printable = pr[0]
            ts = _ts(ts_raw)
            o = self._orders.get(ref)
            if o is None:
                self.unknown_orders += 1
                stock = self._stock(locate)
                if self.want_trades and stock.emit:
                    self._trades += _TRADE_ROW.pack(
                        seq, ts, locate, stock.code, kind, -1 if price is None else price,
                         shares, 0, ref, match, printable
                    )  # fmt: skip
            else:
                stock = o[0]
                side = o[1]
                own = o[2] if side == _BID else -o[2]
                if self.want_trades and stock.emit:
                    self._trades += _TRADE_ROW.pack(
                        seq, ts, stock.locate, stock.code, kind, own if price is None else price,
                         shares, 0x53 if side else 0x42, ref, match, printable
                    )  # fmt: skip
                touched = self._reduce(o, ref, shares)
                self._changed(stock, seq, ts, touched)
        elif kind == 0x58:  # X
            _, _, ts_raw, ref, shares = _CANCEL.unpack_from(msg, 1)
            o = self._orders.get(ref)
            if o is None:
                self.unknown_orders += 1
            else:
                touched = self._reduce(o, ref, shares)
                self._changed(o[0], seq, _ts(ts_raw), touched)
        elif kind == 0x44:  # D
            _, _, ts_raw, ref = _DELETE.unpack_from(msg, 1)
            o = self._orders.get(ref)
            if o is None:
                self.unknown_orders += 1
            else:
                touched = self._reduce(o, ref, o[3])
                self._changed(o[0], seq, _ts(ts_raw), touched)
        elif kind == 0x55:  # U
            _, _, ts_raw, old, new, shares, price = _REPLACE.unpack_from(msg, 1)
            o = self._orders.get(old)
            if o is None:
                self.unknown_orders += 1
            elif new in self._orders and new != old:
                self.duplicate_orders += 1
                touched = self._reduce(o, old, o[3])
                self._changed(o[0], seq, _ts(ts_raw), touched)
            elif not shares:
                self.zero_share_adds += 1
                touched = self._reduce(o, old, o[3])
                self._changed(o[0], seq, _ts(ts_raw), touched)
            else:
                stock = o[0]
                side = o[1]
                first = self._reduce(o, old, o[3])
                second = self._add(stock, new, side, price, shares)
                self._changed(stock, seq, _ts(ts_raw), min(first, second))
        elif kind == 0x50:  # P
            locate, _, ts_raw, ref, side_raw, shares, stock_raw, price, match = (
                _TRADE.unpack_from(msg, 1)
            )
            stock = self._stock(locate)
            if stock.code < 0:
                self._set_name(stock, stock_raw)
            if self.want_trades and stock.emit:
                self._trades += _TRADE_ROW.pack(
                    seq, _ts(ts_raw), locate, stock.code, kind, price, shares, side_raw[0],
                     ref, match, 0x59
                )  # fmt: skip
        elif kind == 0x51:  # Q
            locate, _, ts_raw, shares, stock_raw, price, match, _cross = _CROSS.unpack_from(
                msg, 1
            )
            stock = self._stock(locate)
            if stock.code < 0:
                self._set_name(stock, stock_raw)
            if self.want_trades and stock.emit:
                self._trades += _TRADE_ROW.pack(
                    seq, _ts(ts_raw), locate, stock.code, kind, price, shares, 0, 0, match, 0x59
                )
        elif kind == 0x42:  # B
            locate, _, ts_raw, match = _BROKEN.unpack_from(msg, 1)
            stock = self._stock(locate)
            if self.want_trades and stock.emit:
                self._trades += _TRADE_ROW.pack(
                    seq, _ts(ts_raw), locate, stock.code, kind, -1, 0, 0, 0, match, 0
                )
        else:
            self._other(kind, msg)
        self.last_seq = seq

    def _other(self, kind: int, msg: bytes) -> None:
        """The state messages (and those the book does not read: L, I, N, O)."""
        if kind == 0x52:  # R
            f = _DIRECTORY.unpack_from(msg, 1)
            stock = self._stock(f[0])
            if stock.code < 0 or self._names[stock.code] != _name(f[3]):
                self._set_name(stock, f[3])
            stock.state[12] = chr(f[4][0])
            stock.state[13] = f[6]
        elif kind == 0x48:  # H
            f = _ACTION.unpack_from(msg, 1)
            stock = self._stock(f[0])
            stock.state[0] = chr(f[4][0])
            stock.state[1] = _name(f[5])
        elif kind == 0x59:  # Y
            f = _REGSHO.unpack_from(msg, 1)
            self._stock(f[0]).state[2] = chr(f[4][0])
        elif kind == 0x68:  # h
            f = _HALT.unpack_from(msg, 1)
            state = self._stock(f[0]).state
            state[3] = chr(f[4][0])
            state[4] = chr(f[5][0])
        elif kind == 0x4A:  # J
            f = _COLLAR.unpack_from(msg, 1)
            self._stock(f[0]).state[5:9] = f[4:8]
        elif kind == 0x4B:  # K
            f = _IPO.unpack_from(msg, 1)
            state = self._stock(f[0]).state
            state[9] = f[4]
            state[10] = chr(f[5][0])
            state[11] = f[6]
        elif kind == 0x53:  # S
            self.market[0] = chr(_EVENT.unpack_from(msg, 1)[3][0])
        elif kind == 0x56:  # V
            self.market[1:4] = _MWCB.unpack_from(msg, 1)[3:6]
        elif kind == 0x57:  # W
            self.market[4] = chr(_EVENT.unpack_from(msg, 1)[3][0])

    def _add(self, stock: _Stock, ref: int, side: int, price: int, shares: int) -> int:
        """Rest a new order at the back of its level; the level's rank."""
        s = stock.sides[side]
        key = price if side == _BID else -price
        level = s.levels.get(key)
        o = [stock, side, key, shares]
        if level is None:
            keys = s.keys
            at = bisect_left(keys, key)
            keys.insert(at, key)
            s.levels[key] = [shares, {ref: o}]
            rank = len(keys) - 1 - at
        else:
            level[0] += shares
            level[1][ref] = o
            rank = s.rank(key)
        self._orders[ref] = o
        return rank

    def _reduce(self, o: list[Any], ref: int, shares: int) -> int:
        """Take ``shares`` off a resting order (all: it leaves the book); the level's rank
        before (a large number when nothing changed)."""
        if shares > o[3]:
            self.overfills += 1
            shares = o[3]
        if shares == 0 and o[3] != 0:
            return 1 << 30
        s: _Side = o[0].sides[o[1]]
        key: int = o[2]
        level = s.levels[key]
        rank = s.rank(key)
        level[0] -= shares
        o[3] -= shares
        if o[3] == 0:
            del level[1][ref]
            del self._orders[ref]
            if not level[1]:
                del s.levels[key]
                del s.keys[len(s.keys) - 1 - rank]
        return rank

    def _changed(self, stock: _Stock, seq: int, ts: int, rank: int) -> None:
        """After a book message: a bbo and a depth row if their levels changed."""
        if not stock.emit:
            return
        if rank == 0 and self.want_bbo:
            bbo = self.bbo(stock.locate)
            if bbo != stock.last_bbo:
                stock.last_bbo = bbo
                self._bbo += _BBO_ROW.pack(seq, ts, stock.locate, stock.code, *bbo)
        if rank < self.depth and not self.interval_ns:
            row = self._depth_values(stock)
            if row != stock.last_depth:
                stock.last_depth = row
                self._depth += self._depth_row.pack(seq, ts, stock.locate, stock.code, *row)

    def _depth_values(self, stock: _Stock) -> list[int]:
        n = self.depth
        bids = self._top(stock.sides[_BID], n, 1)
        asks = self._top(stock.sides[_ASK], n, -1)
        row: list[int] = []
        for i in range(n):
            row.extend(bids[i] if i < len(bids) else _NO_LEVEL)
            row.extend(asks[i] if i < len(asks) else _NO_LEVEL)
        return row

    def _sample(self, ts: int) -> None:
        """Depth rows of every emitted stock at the interval boundary ``ts`` reached or
        passed. Boundaries in a stretch without any message are not repeated (the books did
        not change): the rows stay bounded by the messages whatever the timestamps say."""
        step = self.interval_ns
        if self.next_sample >= 0 and self.depth:
            for locate in sorted(self._stocks):
                stock = self._stocks[locate]
                if stock.emit:
                    self._depth += self._depth_row.pack(
                        self.last_seq, self.next_sample, locate, stock.code,
                        *self._depth_values(stock),
                    )  # fmt: skip
        self.next_sample = (ts // step + 1) * step


def _load_c() -> Any:
    if os.environ.get("MOLDUDP64_PURE_PYTHON"):
        return None
    try:
        from .._book import BookCore as CBookCore  # type: ignore[import-not-found]
    except ImportError:
        return None
    return CBookCore


#: The C twin of :class:`PyBookCore` (None when it is not built).
CBookCore: Any = _load_c()


def new_core(
    depth: int = 10,
    symbols: frozenset[str] | None = None,
    interval_ns: int = 0,
    tables: frozenset[str] = frozenset({"bbo", "trades", "depth"}),
    *,
    pure_python: bool = False,
) -> BookCore:
    """A book core: the C one when built (and not ``pure_python``), else :class:`PyBookCore`."""
    if CBookCore is not None and not pure_python:
        core: BookCore = CBookCore(depth, symbols, interval_ns, tables)
        return core
    return PyBookCore(depth, symbols, interval_ns, tables)


class BBOChange(NamedTuple):
    """A stock's best bid and offer after the message ``seq`` changed it (prices are
    integers with 4 implied decimals; None: that side is empty)."""

    seq: int
    timestamp: int
    stock_locate: int
    stock: str | None
    bid_price: int | None
    bid_shares: int
    bid_orders: int
    ask_price: int | None
    ask_shares: int
    ask_orders: int


_SIDES: Final = {"B": _BID, "S": _ASK, "bid": _BID, "ask": _ASK, _BID: _BID, _ASK: _ASK}
#: The most levels a query returns (more than any side holds).
_MAX_LEVELS: Final = 1 << 30


def _int_in(value: Any, low: int, high: int, what: str) -> int:
    """``value`` as an int in ``low..high``: TypeError (not an integer) or ValueError. The
    :class:`Book` checks its arguments once, so both cores answer a bad call alike."""
    number = operator.index(value)
    if not low <= number <= high:
        raise ValueError(f"{what} is {low}..{high}, not {number}")
    return number


def _side(side: Any) -> int:
    try:
        return _SIDES[side]
    except (KeyError, TypeError):
        raise ValueError(f'a side is "B" (bid) or "S" (ask), not {side!r}') from None


class Book:
    """The live book: apply ITCH 5.0 messages as they arrive, ask it anything.

    ``apply(message, seq)`` and ``apply_many(messages, first_seq)`` return the top-of-book
    changes they caused (:class:`BBOChange`) and pass each to ``on_bbo`` when given; queries
    take a stock by name or by locate. Sides are ``"B"`` (bid) and ``"S"`` (ask).
    """

    def __init__(
        self,
        *,
        on_bbo: Any = None,
        symbols: frozenset[str] | set[str] | None = None,
        pure_python: bool = False,
    ) -> None:
        self.core = new_core(
            0,
            frozenset(symbols) if symbols is not None else None,
            0,
            frozenset({"bbo"}),
            pure_python=pure_python,
        )
        self.on_bbo = on_bbo
        self.next_seq = 1
        self._names: list[str] = []
        self._reused = 0
        self._locates: dict[str, int] = {}

    def _name(self, code: int) -> str | None:
        if code < 0:
            return None
        if self._reused != self.core.names_reused:  # a code was given another name
            self._reused = self.core.names_reused
            self._names = self.core.names(0)
        elif code >= len(self._names):
            self._names.extend(self.core.names(len(self._names)))
        return self._names[code]

    def _events(self) -> list[BBOChange]:
        raw = self.core.take()[0]
        if not raw:
            return []
        out = []
        for row in _BBO_ROW.iter_unpack(raw):
            bid = row[4] if row[4] >= 0 else None
            ask = row[7] if row[7] >= 0 else None
            event = BBOChange(
                row[0], row[1], row[2], self._name(row[3]), bid, row[5], row[6], ask,
                row[8], row[9],
            )  # fmt: skip
            out.append(event)
            if self.on_bbo is not None:
                self.on_bbo(event)
        return out

    def apply(self, message: bytes, seq: int | None = None) -> list[BBOChange]:
        """Apply one message (``seq``: its sequence number; default: the one after the last)."""
        return self.apply_many([message], seq)

    def apply_many(self, messages: list[bytes], first_seq: int | None = None) -> list[BBOChange]:
        """Apply consecutive messages (the first is ``first_seq``)."""
        seq = self.next_seq if first_seq is None else first_seq
        if any(len(m) > 65535 for m in messages):
            raise ValueError("a message is at most 65,535 bytes (MoldUDP64's length field)")
        blocks = b"".join(len(m).to_bytes(2, "big") + m for m in messages)
        self.core.feed(blocks, seq)
        self.next_seq = (seq + len(messages)) & _MASK64
        return self._events()

    def locate(self, stock: str | int) -> int:
        """The locate of a stock named ``stock`` (an int is a locate already: ValueError
        unless 0..65535); KeyError when no stock has that name."""
        if not isinstance(stock, str):
            return _int_in(stock, 0, 65535, "a stock locate")
        locate = self._locates.get(stock)
        if locate is None or self._name(self.core.name_code(locate)) != stock:
            self._locates = {}
            for loc in self.core.locates():
                name = self._name(self.core.name_code(loc))
                if name is not None:
                    self._locates[name] = loc
            locate = self._locates.get(stock)
            if locate is None:
                raise KeyError(f"no stock {stock!r} in the book")
        return locate

    def bbo(self, stock: str | int) -> tuple[Level | None, Level | None]:
        """The best bid and best offer levels (None: empty side)."""
        v = self.core.bbo(self.locate(stock))
        bid = Level(v[0], v[1], v[2]) if v[0] >= 0 else None
        ask = Level(v[3], v[4], v[5]) if v[3] >= 0 else None
        return bid, ask

    def levels(self, stock: str | int, side: str, count: int = 10) -> list[Level]:
        """The best ``count`` levels of a side, best first."""
        count = min(_int_in(count, 0, 1 << 64, "a count of levels"), _MAX_LEVELS)
        return [Level(*v) for v in self.core.levels(self.locate(stock), _side(side), count)]

    def orders(self, stock: str | int, side: str, price: int) -> list[tuple[int, int]]:
        """The orders (reference, shares) resting at ``price``, in time priority."""
        price = _int_in(price, 0, 0xFFFFFFFF, "a price (4 implied decimals)")
        return self.core.orders(self.locate(stock), _side(side), price)

    def order(self, ref: int) -> tuple[int, str, int, int] | None:
        """A resting order: (locate, side "B"/"S", price, shares), or None."""
        o = self.core.order(_int_in(ref, 0, _MASK64, "an order reference"))
        return None if o is None else (o[0], "S" if o[1] else "B", o[2], o[3])

    def state(self, stock: str | int) -> dict[str, Any]:
        """The stock's trading state, Reg SHO, LULD collar, IPO and directory fields, and the
        market's system event, MWCB levels and breached level (None: not seen)."""
        names = (*STATE_FIELDS, "system_event", "mwcb_level_1", "mwcb_level_2",
                 "mwcb_level_3", "mwcb_breached")  # fmt: skip
        return dict(zip(names, self.core.state(self.locate(stock)), strict=True))

    def stats(self) -> dict[str, int]:
        """Messages applied, orders resting, and what the book could not match."""
        c = self.core
        return {
            "messages": c.messages,
            "orders_resting": c.orders_resting,
            "unknown_orders": c.unknown_orders,
            "overfills": c.overfills,
            "duplicate_orders": c.duplicate_orders,
            "zero_share_adds": c.zero_share_adds,
            "invalid": c.invalid,
        }


def _alpha(text: str | None, width: int) -> bytes:
    return (text or "").encode("latin-1", "replace")[:width].ljust(width)


def _code(value: Any) -> bytes:
    return value.encode("latin-1", "replace")[:1] if isinstance(value, str) and value else b" "


def snapshot_messages(core: BookCore, next_seq: int) -> list[bytes]:
    """The book as ITCH 5.0 messages, GLIMPSE style: the system event, then per stock its
    directory (R: name, market category, round lot; the fields the book does not keep are
    blank), trading action (H) and Reg SHO state (Y) when known, an Add Order (A) for every
    resting order in priority order (best level first, each level's orders oldest first;
    timestamps 0), and last the End of Snapshot (G) naming ``next_seq``, the first feed
    message the snapshot does not include; the MWCB levels (V) and breach (W) when known.
    Applying them builds the same book."""
    from ..soupbintcp import build_end_of_snapshot

    head = struct.Struct(">cHHHI")
    out: list[bytes] = []
    names = core.names(0)
    market = core.state(0)[len(STATE_FIELDS) :]
    if market[0] is not None:
        out.append(head.pack(b"S", 0, 0, 0, 0) + _code(market[0]))
    if market[1] is not None:
        out.append(head.pack(b"V", 0, 0, 0, 0) + struct.pack(">QQQ", *market[1:4]))
    if market[4] is not None:
        out.append(head.pack(b"W", 0, 0, 0, 0) + _code(market[4]))
    for locate in core.locates():
        code = core.name_code(locate)
        name = names[code] if code >= 0 else ""
        stock = _alpha(name, 8)
        state = core.state(locate)
        fields = dict(zip(STATE_FIELDS, state, strict=False))
        if code >= 0:
            out.append(
                head.pack(b"R", locate, 0, 0, 0) + stock + _code(fields["market_category"])
                + b" " + struct.pack(">I", fields["round_lot_size"] or 0) + b"  " + b"  "
                + b"     " + struct.pack(">I", 0) + b" "
            )  # fmt: skip
        if fields["trading_state"] is not None:
            out.append(
                head.pack(b"H", locate, 0, 0, 0) + stock + _code(fields["trading_state"])
                + b" " + _alpha(fields["trading_reason"], 4)
            )  # fmt: skip
        if fields["reg_sho_action"] is not None:
            out.append(head.pack(b"Y", locate, 0, 0, 0) + stock + _code(fields["reg_sho_action"]))
        for side, side_code in ((_BID, b"B"), (_ASK, b"S")):
            for price, _, _ in core.levels(locate, side, 1 << 30):
                for ref, shares in core.orders(locate, side, price):
                    out.append(
                        head.pack(b"A", locate, 0, 0, 0)
                        + struct.pack(">QcI8sI", ref, side_code, shares, stock, price)
                    )
    out.append(build_end_of_snapshot(next_seq))
    return out
