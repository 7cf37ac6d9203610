"""An independent, deliberately simple order book for the tests: a dict of orders and a dict
of levels (price -> shares, orders) per stock and side, every best price and every top-N
recomputed by sorting after each message, rows as Python dicts.

It shares no code with ``moldudp64.itch50.book`` (messages are read by
``moldudp64.itch50.decode``, which the book does not use), so the two agreeing row for
row on generated days is evidence, not a tautology."""

from __future__ import annotations

from decimal import Decimal
from typing import Any

from moldudp64 import itch50


def _price(p: int | None) -> Decimal | None:
    return None if p is None else Decimal(p).scaleb(-4)


class ReferenceBook:
    """The reference: ``apply(message, seq)``, then ``bbo``, ``trades``, ``depth`` rows."""

    def __init__(self, depth: int = 10, symbols: set[str] | None = None) -> None:
        self.depth = depth
        self.symbols = symbols
        self.orders: dict[int, dict[str, Any]] = {}
        self.by_price: dict[tuple[int, str], dict[int, list[int]]] = {}
        self.names: dict[int, str] = {}
        self.last_bbo: dict[int, tuple[Any, ...]] = {}
        self.last_depth: dict[int, list[Any]] = {}
        self.bbo: list[dict[str, Any]] = []
        self.trades: list[dict[str, Any]] = []
        self.depth_rows: list[dict[str, Any]] = []
        self.unknown = 0

    def wanted(self, locate: int) -> bool:
        if self.symbols is None:
            return True
        return self.names.get(locate) in self.symbols

    def levels(self, locate: int, side: str) -> list[tuple[int, int, int]]:
        """(price, shares, orders) of every level of a side, best first."""
        by_price = self.by_price.get((locate, side), {})
        prices = sorted(by_price, reverse=(side == "B"))
        return [(p, by_price[p][0], by_price[p][1]) for p in prices]

    def rest(self, ref: int, order: dict[str, Any]) -> None:
        self.orders[ref] = order
        level = self.by_price.setdefault((order["locate"], order["side"]), {})
        level.setdefault(order["price"], [0, 0])
        level[order["price"]][0] += order["shares"]
        level[order["price"]][1] += 1

    def take_off(self, ref: int, shares: int) -> None:
        """Take shares off an order (all of them: it leaves the book)."""
        o = self.orders[ref]
        level = self.by_price[(o["locate"], o["side"])]
        shares = min(shares, o["shares"])
        o["shares"] -= shares
        level[o["price"]][0] -= shares
        if o["shares"] == 0:
            del self.orders[ref]
            level[o["price"]][1] -= 1
            if level[o["price"]][1] == 0:
                del level[o["price"]]

    def row_head(self, seq: int, ts: int, locate: int) -> dict[str, Any]:
        return {"seq": seq, "timestamp": ts, "stock_locate": locate,
                "stock": self.names.get(locate)}  # fmt: skip

    def after_change(self, seq: int, ts: int, locate: int) -> None:
        if not self.wanted(locate):
            return
        bids = self.levels(locate, "B")
        asks = self.levels(locate, "S")
        b = bids[0] if bids else (None, 0, 0)
        a = asks[0] if asks else (None, 0, 0)
        bbo = (b, a)
        if bbo != self.last_bbo.get(locate, ((None, 0, 0), (None, 0, 0))):
            self.last_bbo[locate] = bbo
            self.bbo.append(
                self.row_head(seq, ts, locate)
                | {"bid_price": _price(b[0]), "ask_price": _price(a[0]),
                   "bid_shares": b[1], "ask_shares": a[1],
                   "bid_orders": b[2], "ask_orders": a[2]}
            )  # fmt: skip
        if self.depth:
            top = [
                (bids[i] if i < len(bids) else (None, 0, 0),
                 asks[i] if i < len(asks) else (None, 0, 0))
                for i in range(self.depth)
            ]  # fmt: skip
            empty = [((None, 0, 0), (None, 0, 0))] * self.depth
            if top != self.last_depth.get(locate, empty):
                self.last_depth[locate] = top
                row = self.row_head(seq, ts, locate)
                for i, (bl, al) in enumerate(top):
                    row |= {f"bid_price_{i}": _price(bl[0]), f"bid_shares_{i}": bl[1],
                            f"bid_orders_{i}": bl[2], f"ask_price_{i}": _price(al[0]),
                            f"ask_shares_{i}": al[1], f"ask_orders_{i}": al[2]}  # fmt: skip
                self.depth_rows.append(row)

    def trade(self, seq: int, r: Any, locate: int, **fields: Any) -> None:
        if self.wanted(locate):
            self.trades.append(self.row_head(seq, r.timestamp, locate) | fields)

    def apply(self, message: bytes, seq: int) -> None:
        r = itch50.decode_or_raw(message)
        t = r.message_type
        if isinstance(r, itch50.RawMessage):
            return
        if t in "AF":
            self.names.setdefault(r.stock_locate, r.stock)
            if r.order_reference_number in self.orders:
                return
            self.rest(r.order_reference_number, {
                "locate": r.stock_locate, "side": "S" if r.buy_sell_indicator == "S" else "B",
                "price": r.price, "shares": r.shares})  # fmt: skip
            self.after_change(seq, r.timestamp, r.stock_locate)
        elif t in "EC":
            o = self.orders.get(r.order_reference_number)
            if o is None:
                self.unknown += 1
                locate, side, own = r.stock_locate, None, None
            else:
                locate, side, own = o["locate"], o["side"], o["price"]
            price = own if t == "E" else r.execution_price
            self.trade(seq, r, locate, kind=t, price=_price(price), shares=r.executed_shares,
                       side=side, order_reference_number=r.order_reference_number,
                       match_number=r.match_number,
                       printable="Y" if t == "E" else r.printable)  # fmt: skip
            if o is not None and (r.executed_shares or o["shares"] == 0):
                self.take_off(r.order_reference_number, r.executed_shares)
                self.after_change(seq, r.timestamp, locate)
        elif t == "X":
            o = self.orders.get(r.order_reference_number)
            if o is None:
                self.unknown += 1
            elif r.cancelled_shares or o["shares"] == 0:
                self.take_off(r.order_reference_number, r.cancelled_shares)
                self.after_change(seq, r.timestamp, o["locate"])
        elif t == "D":
            o = self.orders.get(r.order_reference_number)
            if o is None:
                self.unknown += 1
            else:
                self.take_off(r.order_reference_number, o["shares"])
                self.after_change(seq, r.timestamp, o["locate"])
        elif t == "U":
            o = self.orders.get(r.original_order_reference_number)
            if o is None:
                self.unknown += 1
                return
            self.take_off(r.original_order_reference_number, o["shares"])
            if r.new_order_reference_number not in self.orders:
                self.rest(r.new_order_reference_number, {
                    "locate": o["locate"], "side": o["side"], "price": r.price,
                    "shares": r.shares})  # fmt: skip
            self.after_change(seq, r.timestamp, o["locate"])
        elif t == "P":
            self.names.setdefault(r.stock_locate, r.stock)
            self.trade(seq, r, r.stock_locate, kind="P", price=_price(r.price), shares=r.shares,
                       side=r.buy_sell_indicator,
                       order_reference_number=r.order_reference_number,
                       match_number=r.match_number, printable="Y")  # fmt: skip
        elif t == "Q":
            self.names.setdefault(r.stock_locate, r.stock)
            self.trade(seq, r, r.stock_locate, kind="Q", price=_price(r.cross_price),
                       shares=r.shares, side=None, order_reference_number=None,
                       match_number=r.match_number, printable="Y")  # fmt: skip
        elif t == "B":
            self.trade(seq, r, r.stock_locate, kind="B", price=None, shares=None, side=None,
                       order_reference_number=None, match_number=r.match_number,
                       printable=None)  # fmt: skip
        elif t == "R":
            self.names[r.stock_locate] = r.stock

    def tables(self) -> dict[str, list[dict[str, Any]]]:
        return {"bbo": self.bbo, "trades": self.trades, "depth": self.depth_rows}


def reference_tables(
    messages: list[bytes], depth: int = 10, first_seq: int = 1, symbols: set[str] | None = None
) -> dict[str, list[dict[str, Any]]]:
    """The reference's rows for consecutive messages (the first is ``first_seq``)."""
    book = ReferenceBook(depth, symbols)
    for i, m in enumerate(messages):
        book.apply(m, first_seq + i)
    return book.tables()
