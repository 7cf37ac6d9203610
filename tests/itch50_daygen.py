"""A seeded, self-consistent ITCH 5.0 day for the book tests: every E, C, X, D and U names a
resting order, executions hit the best level first, no add crosses the book, and the day
holds replaces, partial executions, hidden trades (P), crosses (Q), broken trades (B) and
trading actions (H, Y), as a real feed does."""

from __future__ import annotations

import random
import struct
from collections.abc import Iterator

_HDR = ">cHH6s"


def _ts(ns: int) -> bytes:
    return ns.to_bytes(6, "big")


def _name(stock: str) -> bytes:
    return stock.encode().ljust(8)


class _Book:
    __slots__ = ("asks", "bids", "mid", "name", "refs")

    def __init__(self, name: str, mid: int) -> None:
        self.name = name
        self.mid = mid
        self.refs: list[int] = []  # resting orders (any order), for random picks
        self.bids: dict[int, list[int]] = {}  # price -> refs in time order
        self.asks: dict[int, list[int]] = {}


def generate_day(count: int, seed: int = 0, stocks: int = 8) -> Iterator[bytes]:
    """``count`` messages (at least the opening ones) of a seeded day over ``stocks`` stocks."""
    rng = random.Random(seed)
    clock = 4 * 3600 * 10**9
    tick = 100  # $0.01
    books = [_Book(f"S{i:03d}" + "ABCDEFGH"[i % 8], rng.randrange(500, 20000) * tick)
             for i in range(stocks)]  # fmt: skip
    orders: dict[int, tuple[int, int, int, int]] = {}  # ref -> (locate, side, price, shares)
    next_ref = 1
    match = 1
    n = 0

    def header(kind: bytes, locate: int) -> bytes:
        nonlocal clock
        clock += rng.randrange(1, 20_000)
        return struct.pack(_HDR, kind, locate, rng.randrange(0, 65536), _ts(clock))

    def index_remove(book: _Book, ref: int) -> None:
        _, side, price, _ = orders.pop(ref)
        level = (book.bids if side == 0 else book.asks)[price]
        level.remove(ref)
        if not level:
            del (book.bids if side == 0 else book.asks)[price]
        book.refs.remove(ref)

    yield header(b"S", 0) + b"O"
    n += 1
    for i, book in enumerate(books, start=1):
        yield (
            header(b"R", i) + _name(book.name) + b"QN" + struct.pack(">I", 100) + b"NC  PNN1N"
            + struct.pack(">I", 0) + b"N"
        )  # fmt: skip
        n += 1
    for i, book in enumerate(books, start=1):
        yield header(b"H", i) + _name(book.name) + b"T" + b" " + b"    "
        n += 1
    while n < count:
        n += 1
        locate = rng.randrange(1, stocks + 1)
        book = books[locate - 1]
        roll = rng.random()
        if roll < 0.42 or len(book.refs) < 4:
            side = rng.randrange(2)
            best_bid = max(book.bids, default=None)
            best_ask = min(book.asks, default=None)
            if side == 0:
                price = book.mid - tick * int(rng.expovariate(0.3))
                if best_ask is not None:
                    price = min(price, best_ask - tick)
            else:
                price = book.mid + tick * int(rng.expovariate(0.3))
                if best_bid is not None:
                    price = max(price, best_bid + tick)
            price = max(price, tick)
            shares = rng.choice((100, 100, 100, 200, 300, 500, 1000, rng.randrange(1, 5000)))
            ref = next_ref
            next_ref += rng.choice((1, 1, 1, 2, 7))
            orders[ref] = (locate, side, price, shares)
            (book.bids if side == 0 else book.asks).setdefault(price, []).append(ref)
            book.refs.append(ref)
            side_code = b"B" if side == 0 else b"S"
            if rng.random() < 0.1:
                yield header(b"F", locate) + struct.pack(
                    ">QcI8sI4s", ref, side_code, shares, _name(book.name), price,
                    b"MPID",
                )
            else:
                yield header(b"A", locate) + struct.pack(
                    ">QcI8sI", ref, side_code, shares, _name(book.name), price
                )
        elif roll < 0.67:
            ref = rng.choice(book.refs)
            index_remove(book, ref)
            yield header(b"D", locate) + struct.pack(">Q", ref)
        elif roll < 0.74:
            ref = rng.choice(book.refs)
            loc, side, price, shares = orders[ref]
            cut = rng.randrange(1, shares + 1)
            if cut == shares:
                index_remove(book, ref)
            else:
                orders[ref] = (loc, side, price, shares - cut)
            yield header(b"X", locate) + struct.pack(">QI", ref, cut)
        elif roll < 0.86:
            # an execution at the best level of a side, oldest order first (sometimes any)
            side = rng.randrange(2)
            level_map = book.bids if side == 0 else book.asks
            if not level_map:
                continue_ref = rng.choice(book.refs)
            else:
                best = max(level_map) if side == 0 else min(level_map)
                continue_ref = level_map[best][0] if rng.random() < 0.9 else rng.choice(book.refs)
            ref = continue_ref
            loc, side, price, shares = orders[ref]
            done = rng.randrange(1, shares + 1) if rng.random() < 0.5 else shares
            if done == shares:
                index_remove(book, ref)
            else:
                orders[ref] = (loc, side, price, shares - done)
            match += 1
            if rng.random() < 0.15:
                yield header(b"C", locate) + struct.pack(
                    ">QIQcI", ref, done, match, rng.choice((b"Y", b"N")),
                    price + rng.choice((0, tick)),
                )
            else:
                yield header(b"E", locate) + struct.pack(">QIQ", ref, done, match)
            book.mid = price
        elif roll < 0.95:
            ref = rng.choice(book.refs)
            loc, side, price, shares = orders[ref]
            index_remove(book, ref)
            best_bid = max(book.bids, default=None)
            best_ask = min(book.asks, default=None)
            new_price = price + tick * rng.choice((-2, -1, 0, 0, 1, 2))
            if side == 0 and best_ask is not None:
                new_price = min(new_price, best_ask - tick)
            if side == 1 and best_bid is not None:
                new_price = max(new_price, best_bid + tick)
            new_price = max(new_price, tick)
            new_shares = rng.choice((shares, max(1, shares // 2), shares + 100))
            new = next_ref
            next_ref += 1
            orders[new] = (locate, side, new_price, new_shares)
            (book.bids if side == 0 else book.asks).setdefault(new_price, []).append(new)
            book.refs.append(new)
            yield header(b"U", locate) + struct.pack(">QQII", ref, new, new_shares, new_price)
        elif roll < 0.985:
            match += 1
            yield header(b"P", locate) + struct.pack(
                ">QcI8sIQ", 0, b"B", rng.randrange(1, 1000), _name(book.name), book.mid, match
            )
        elif roll < 0.99:
            match += 1
            yield header(b"Q", locate) + struct.pack(
                ">Q8sIQc", rng.randrange(0, 100000), _name(book.name), book.mid, match, b"O"
            )
        elif roll < 0.993:
            yield header(b"B", locate) + struct.pack(">Q", rng.randrange(1, match + 1))
        elif roll < 0.996:
            yield header(b"H", locate) + _name(book.name) + rng.choice((b"T", b"H")) + b" " * 5
        else:
            yield header(b"Y", locate) + _name(book.name) + rng.choice((b"0", b"1"))


def binaryfile_bytes(messages: Iterator[bytes] | list[bytes]) -> bytes:
    """The messages framed as a BinaryFILE."""
    return b"".join(len(m).to_bytes(2, "big") + m for m in messages)
