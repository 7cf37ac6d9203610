# ruff: noqa: E501  (the subprocess scripts below are kept compact)
"""A stranger's attack on the order book (issue 21), written from the issue, the README, the
command's --help and the public docstrings only (never the implementation or its tests).

An independent reference book (plain dicts, below) is compared row for row with the
``bbo``, ``trades`` and ``depth`` Parquet tables ``moldudp64 book`` writes from hand-built
TotalView-ITCH 5.0 sequences; the C core and the pure-Python core must agree; hostile bytes
must give a clear error or a counted drop, never a traceback or a crash; lost data must be
said; the live and snapshot paths must build the same book as the file.
"""

from __future__ import annotations

import itertools
import json
import os
import random
import socket
import struct
import subprocess
import sys
import textwrap
import time
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest

pa = pytest.importorskip("pyarrow")
pq = pytest.importorskip("pyarrow.parquet")

from cli_helpers import free_port  # noqa: E402
from moldudp64 import itch50  # noqa: E402
from moldudp64.itch50.book import Book, snapshot_messages  # noqa: E402
from nats_support import free_tcp_port  # noqa: E402

# ---------------------------------------------------------------------------------------
# ITCH 5.0 messages, packed here from the public specification's layouts
# ---------------------------------------------------------------------------------------


def _hdr(kind: str, locate: int, ts: int, track: int = 0) -> bytes:
    return kind.encode() + struct.pack(">HH", locate, track) + ts.to_bytes(6, "big")


def _stock(name: str) -> bytes:
    return name.ljust(8).encode()


def msg_s(ts: int, code: str = "O") -> bytes:
    return _hdr("S", 0, ts) + code.encode()


def msg_r(locate: int, name: str, ts: int = 1) -> bytes:
    return (
        _hdr("R", locate, ts)
        + _stock(name)
        + b"Q"  # market category
        + b"N"  # financial status
        + struct.pack(">I", 100)  # round lot size
        + b"N"  # round lots only
        + b"C"  # issue classification
        + b"Z "  # issue subtype
        + b"P"  # authenticity
        + b"N"  # short sale threshold
        + b"N"  # IPO flag
        + b"1"  # LULD reference price tier
        + b"N"  # ETP flag
        + struct.pack(">I", 0)  # ETP leverage factor
        + b"N"  # inverse indicator
    )


def msg_h(locate: int, name: str, ts: int, state: str = "T") -> bytes:
    return _hdr("H", locate, ts) + _stock(name) + state.encode() + b" " + b"    "


def msg_a(locate: int, ts: int, ref: int, side: str, shares: int, name: str, price: int) -> bytes:
    return (
        _hdr("A", locate, ts)
        + struct.pack(">Q", ref)
        + side.encode()
        + struct.pack(">I", shares)
        + _stock(name)
        + struct.pack(">I", price)
    )


def msg_f(locate: int, ts: int, ref: int, side: str, shares: int, name: str, price: int) -> bytes:
    return b"F" + msg_a(locate, ts, ref, side, shares, name, price)[1:] + b"MPID"


def msg_e(locate: int, ts: int, ref: int, shares: int, match: int) -> bytes:
    return _hdr("E", locate, ts) + struct.pack(">QIQ", ref, shares, match)


def msg_c(
    locate: int, ts: int, ref: int, shares: int, match: int, printable: str, price: int
) -> bytes:
    return (
        _hdr("C", locate, ts)
        + struct.pack(">QIQ", ref, shares, match)
        + printable.encode()
        + struct.pack(">I", price)
    )


def msg_x(locate: int, ts: int, ref: int, shares: int) -> bytes:
    return _hdr("X", locate, ts) + struct.pack(">QI", ref, shares)


def msg_d(locate: int, ts: int, ref: int) -> bytes:
    return _hdr("D", locate, ts) + struct.pack(">Q", ref)


def msg_u(locate: int, ts: int, old: int, new: int, shares: int, price: int) -> bytes:
    return _hdr("U", locate, ts) + struct.pack(">QQII", old, new, shares, price)


def msg_p(
    locate: int, ts: int, ref: int, side: str, shares: int, name: str, price: int, match: int
) -> bytes:
    return (
        _hdr("P", locate, ts)
        + struct.pack(">Q", ref)
        + side.encode()
        + struct.pack(">I", shares)
        + _stock(name)
        + struct.pack(">IQ", price, match)
    )


def msg_q(
    locate: int, ts: int, shares: int, name: str, price: int, match: int, cross: str = "O"
) -> bytes:
    return (
        _hdr("Q", locate, ts)
        + struct.pack(">Q", shares)
        + _stock(name)
        + struct.pack(">IQ", price, match)
        + cross.encode()
    )


def msg_b(locate: int, ts: int, match: int) -> bytes:
    return _hdr("B", locate, ts) + struct.pack(">Q", match)


def binaryfile(messages: list[bytes]) -> bytes:
    return b"".join(struct.pack(">H", len(m)) + m for m in messages)


def moldudp64_packet(session: str, seq: int, messages: list[bytes]) -> bytes:
    body = b"".join(struct.pack(">H", len(m)) + m for m in messages)
    return session.ljust(10).encode() + struct.pack(">QH", seq, len(messages)) + body


# ---------------------------------------------------------------------------------------
# The reference book: dicts, nothing shared with the package
# ---------------------------------------------------------------------------------------

EMPTY = (None, 0, 0)


class RefBook:
    """Full depth per stock from A F E C X D U; trades from E C P Q B; rows as issue 21 says."""

    def __init__(self, depth: int = 10, symbols: set[str] | None = None) -> None:
        self.depth = depth
        self.symbols = symbols
        self.orders: dict[int, list[Any]] = {}  # ref -> [locate, side, price, shares]
        self.queue: dict[tuple[int, str, int], list[int]] = {}  # (locate, side, price) -> refs
        self.prices: dict[tuple[int, str], set[int]] = {}  # (locate, side) -> prices held
        self.names: dict[int, str] = {}
        self.last_bbo: dict[int, tuple[Any, ...]] = {}
        self.last_depth: dict[int, tuple[Any, ...]] = {}
        self.bbo_rows: list[tuple[Any, ...]] = []
        self.trade_rows: list[tuple[Any, ...]] = []
        self.depth_rows: list[tuple[Any, ...]] = []

    # book
    def _add(self, ref: int, locate: int, side: str, price: int, shares: int) -> None:
        self.orders[ref] = [locate, side, price, shares]
        self.queue.setdefault((locate, side, price), []).append(ref)
        self.prices.setdefault((locate, side), set()).add(price)

    def _remove(self, ref: int) -> None:
        locate, side, price, _ = self.orders.pop(ref)
        q = self.queue[(locate, side, price)]
        q.remove(ref)
        if not q:
            del self.queue[(locate, side, price)]
            self.prices[(locate, side)].discard(price)

    def _reduce(self, ref: int, shares: int) -> None:
        order = self.orders[ref]
        order[3] -= shares
        if order[3] <= 0:
            self._remove(ref)

    def levels(self, locate: int, side: str) -> list[tuple[int, int, int]]:
        prices = sorted(
            self.prices.get((locate, side), ()),
            reverse=(side == "B"),
        )
        out = []
        for p in prices:
            refs = self.queue[(locate, side, p)]
            out.append((p, sum(self.orders[r][3] for r in refs), len(refs)))
        return out

    def _top(self, locate: int, side: str, n: int) -> list[tuple[Any, int, int]]:
        lv: list[tuple[Any, int, int]] = list(self.levels(locate, side)[:n])
        return lv + [EMPTY] * (n - len(lv))

    def _wanted(self, locate: int) -> bool:
        return self.symbols is None or self.names.get(locate) in self.symbols

    def _rows(self, seq: int, ts: int, locate: int) -> None:
        bid = self._top(locate, "B", 1)[0]
        ask = self._top(locate, "S", 1)[0]
        bbo = (bid[0], ask[0], bid[1], ask[1], bid[2], ask[2])
        if bbo != self.last_bbo.get(locate, (None, None, 0, 0, 0, 0)):
            self.last_bbo[locate] = bbo
            if self._wanted(locate):
                self.bbo_rows.append((seq, ts, locate, self.names.get(locate), *bbo))
        bids = self._top(locate, "B", self.depth)
        asks = self._top(locate, "S", self.depth)
        flat: tuple[Any, ...] = ()
        for b, a in zip(bids, asks, strict=True):
            flat += (b[0], b[1], b[2], a[0], a[1], a[2])
        if flat != self.last_depth.get(locate, (None, 0, 0, None, 0, 0) * self.depth):
            self.last_depth[locate] = flat
            if self._wanted(locate):
                self.depth_rows.append((seq, ts, locate, self.names.get(locate), *flat))

    def _trade(self, seq: int, ts: int, locate: int, *rest: Any) -> None:
        if self._wanted(locate):
            self.trade_rows.append((seq, ts, locate, self.names.get(locate), *rest))

    def apply(self, seq: int, m: bytes) -> None:
        kind = chr(m[0])
        locate = struct.unpack_from(">H", m, 1)[0]
        ts = int.from_bytes(m[5:11], "big")
        if kind == "R":
            self.names[locate] = m[11:19].decode().strip()
        elif kind in "AF":
            ref, side, shares, name, price = struct.unpack_from(">QcI8sI", m, 11)
            self.names.setdefault(locate, name.decode().strip())
            assert ref not in self.orders, "the reference scenario never re-adds a live ref"
            self._add(ref, locate, side.decode(), price, shares)
            self._rows(seq, ts, locate)
        elif kind == "E":
            ref, shares, match = struct.unpack_from(">QIQ", m, 11)
            loc, side, price, _ = self.orders[ref]
            self._trade(seq, ts, loc, "E", price, shares, side, ref, match, "Y")
            self._reduce(ref, shares)
            self._rows(seq, ts, loc)
        elif kind == "C":
            ref, shares, match = struct.unpack_from(">QIQ", m, 11)
            printable = chr(m[31])
            (price,) = struct.unpack_from(">I", m, 32)
            loc, side, _, _ = self.orders[ref]
            self._trade(seq, ts, loc, "C", price, shares, side, ref, match, printable)
            self._reduce(ref, shares)
            self._rows(seq, ts, loc)
        elif kind == "X":
            ref, shares = struct.unpack_from(">QI", m, 11)
            loc = self.orders[ref][0]
            self._reduce(ref, shares)
            self._rows(seq, ts, loc)
        elif kind == "D":
            (ref,) = struct.unpack_from(">Q", m, 11)
            loc = self.orders[ref][0]
            self._remove(ref)
            self._rows(seq, ts, loc)
        elif kind == "U":
            old, new, shares, price = struct.unpack_from(">QQII", m, 11)
            loc, side, _, _ = self.orders[old]
            self._remove(old)
            self._add(new, loc, side, price, shares)
            self._rows(seq, ts, loc)
        elif kind == "P":
            ref, side, shares, _, price, match = struct.unpack_from(">QcI8sIQ", m, 11)
            self._trade(seq, ts, locate, "P", price, shares, side.decode(), ref, match, "Y")
        elif kind == "Q":
            shares, _, price, match = struct.unpack_from(">Q8sIQ", m, 11)
            self._trade(seq, ts, locate, "Q", price, shares, None, None, match, "Y")
        elif kind == "B":
            (match,) = struct.unpack_from(">Q", m, 11)
            self._trade(seq, ts, locate, "B", None, None, None, None, match, "Y")

    def run(self, messages: list[bytes]) -> RefBook:
        for i, m in enumerate(messages, 1):
            self.apply(i, m)
        return self


# ---------------------------------------------------------------------------------------
# Running the command and reading its tables
# ---------------------------------------------------------------------------------------


#: A process that has imported the command (and pyarrow) once and forks a child per command:
#: each child is `python -m moldudp64 ARGS` without an interpreter start and imports (about
#: 0.5 s each under load, ~25 commands here), still a process of its own (a crash kills the
#: child, never pytest), its own stdout and stderr, and the exit code or killing signal.
_ZYGOTE_SCRIPT = textwrap.dedent(
    r"""
    import json, os, sys, traceback
    import moldudp64.itch50.book as book_module
    import moldudp64.itch50.book_tables, pyarrow.parquet
    from moldudp64.cli import main
    requests, answers = sys.stdin, sys.stdout
    for line in requests:
        req = json.loads(line)
        pid = os.fork()
        if pid == 0:
            code = 70
            try:
                null = os.open(os.devnull, os.O_RDONLY)
                os.dup2(null, 0)
                os.dup2(os.open(req["out"], os.O_WRONLY), 1)
                os.dup2(os.open(req["err"], os.O_WRONLY), 2)
                sys.stdin = open(0, closefd=False)
                sys.stdout = open(1, "w", closefd=False)
                sys.stderr = open(2, "w", closefd=False)
                if req["pure"]:
                    os.environ["MOLDUDP64_PURE_PYTHON"] = "1"
                    book_module.CBookCore = None
                try:
                    code = main(req["args"])
                except SystemExit as exc:
                    code = exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 1)
                    if isinstance(exc.code, str):
                        print(exc.code, file=sys.stderr)
                except BaseException:
                    traceback.print_exc()
                    code = 1
                sys.stdout.flush()
                sys.stderr.flush()
            finally:
                os._exit(code if isinstance(code, int) else 0)
        answers.write(json.dumps({"pid": pid}) + "\n")
        answers.flush()
        _, status = os.waitpid(pid, 0)
        answers.write(json.dumps({"code": os.waitstatus_to_exitcode(status)}) + "\n")
        answers.flush()
    """
)
_ZYGOTE: list[subprocess.Popen[str]] = []


@pytest.fixture(scope="module", autouse=True)
def _zygote_stops() -> Any:
    yield
    for proc in _ZYGOTE:
        proc.stdin.close()  # type: ignore[union-attr]
        proc.wait(timeout=10)
    _ZYGOTE.clear()


def run_cli(
    *args: str, pure: bool = False, timeout: float = 60
) -> subprocess.CompletedProcess[str]:
    """`python -m moldudp64 ARGS` (MOLDUDP64_PURE_PYTHON=1 when ``pure``), forked from the
    zygote: returncode (negative: killed by that signal), stdout and stderr."""
    import select
    import tempfile

    if not _ZYGOTE or _ZYGOTE[0].poll() is not None:
        env = dict(os.environ)
        env.pop("MOLDUDP64_PURE_PYTHON", None)
        _ZYGOTE[:] = [
            subprocess.Popen(
                [sys.executable, "-c", _ZYGOTE_SCRIPT],
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                text=True,
                env=env,
            )
        ]
    zygote = _ZYGOTE[0]
    assert zygote.stdin is not None and zygote.stdout is not None
    with tempfile.TemporaryDirectory() as tmp:
        out, err = os.path.join(tmp, "out"), os.path.join(tmp, "err")
        for path in (out, err):
            open(path, "w").close()
        request = {"args": list(args), "pure": pure, "out": out, "err": err}
        zygote.stdin.write(json.dumps(request) + "\n")
        zygote.stdin.flush()
        pid = json.loads(zygote.stdout.readline())["pid"]
        if not select.select([zygote.stdout], [], [], timeout)[0]:
            os.kill(pid, 9)
            zygote.stdout.readline()
            raise subprocess.TimeoutExpired(["moldudp64", *args], timeout)
        code = json.loads(zygote.stdout.readline())["code"]
        with open(out) as f_out, open(err) as f_err:
            return subprocess.CompletedProcess(
                ["moldudp64", *args], code, f_out.read(), f_err.read()
            )


def _num(v: Any) -> Any:
    if isinstance(v, Decimal):
        scaled = v * 10000
        assert scaled == scaled.to_integral_value(), v
        return int(scaled)
    return v


def table_path(out: Path, t: str) -> Path:
    """Where ``book -o OUT`` puts table ``t``: ``OUT/t.parquet``, or the directory of
    ``depth``'s part files (read as one dataset, in order)."""
    return out / "depth" if t == "depth" else out / f"{t}.parquet"


def read_rows(path: Path) -> list[tuple[Any, ...]]:
    table = pq.read_table(path)
    return [tuple(_num(v) for v in row.values()) for row in table.to_pylist()]


def norm_empty(rows: list[tuple[Any, ...]], start: int) -> list[tuple[Any, ...]]:
    """Shares and orders of an empty level as 0 (null or 0 both mean 'nothing there')."""
    out = []
    for row in rows:
        head, body = list(row[:start]), list(row[start:])
        out.append(tuple(head + [0 if v is None and i % 3 else v for i, v in enumerate(body)]))
    return out


def norm_bbo(rows: list[tuple[Any, ...]]) -> list[tuple[Any, ...]]:
    return [r[:6] + tuple(0 if v is None else v for v in r[6:]) for r in rows]


def norm_trades(rows: list[tuple[Any, ...]]) -> list[tuple[Any, ...]]:
    """printable of E, P, Q, B: not a field of those messages, so 'Y' or null are both fine."""
    out = []
    for r in rows:
        r = list(r)
        if r[4] in ("E", "P", "Q", "B") and r[10] is None:
            r[10] = "Y"
        out.append(tuple(r))
    return out


def book_tables(
    tmp: Path, messages: list[bytes], *extra: str, pure: bool = False, name: str = "out"
) -> tuple[dict[str, list[tuple[Any, ...]]], subprocess.CompletedProcess[str]]:
    src = tmp / f"{name}.bin"
    src.write_bytes(binaryfile(messages))
    out = tmp / name
    proc = run_cli("book", str(src), "-o", str(out), *extra, pure=pure)
    assert "Traceback" not in proc.stderr, proc.stderr
    tables = {}
    for t in ("bbo", "trades", "depth"):
        if table_path(out, t).exists():
            tables[t] = read_rows(table_path(out, t))
    return tables, proc


def assert_same_as_reference(
    tmp: Path,
    messages: list[bytes],
    depth: int = 10,
    symbols: set[str] | None = None,
    pure: bool = False,
    extra: tuple[str, ...] = (),
) -> dict[str, list[tuple[Any, ...]]]:
    args = ["--depth", str(depth), *extra]
    if symbols is not None:
        args += ["--symbols", ",".join(sorted(symbols))]
    tables, proc = book_tables(
        tmp, messages, *args, pure=pure, name=f"d{depth}{'p' if pure else 'c'}"
    )
    assert proc.returncode == 0, proc.stderr
    ref = RefBook(depth, symbols).run(messages)
    assert norm_bbo(tables["bbo"]) == ref.bbo_rows
    assert norm_trades(tables["trades"]) == ref.trade_rows
    assert norm_empty(tables["depth"], 4) == ref.depth_rows
    return tables


# ---------------------------------------------------------------------------------------
# A hand-built day: replaces of replaces, partial executions to zero, many levels, crosses
# ---------------------------------------------------------------------------------------

MAX_PRICE = 0xFFFFFFFF  # 429496.7295, the largest a Price(4) field holds


def scenario() -> list[bytes]:
    t = 34_200_000_000_000  # 09:30
    m: list[bytes] = [msg_s(1, "O"), msg_r(1, "AAA"), msg_r(2, "BBB"), msg_r(3, "CCC")]
    m.append(msg_h(1, "AAA", 2))
    # AAA: a replace chain 1 -> 2 -> 3 -> 4, then partial executions down to zero
    m.append(msg_a(1, t + 1, 1, "B", 300, "AAA", 100_0000))
    m.append(msg_a(1, t + 2, 10, "B", 50, "AAA", 100_0000))  # same level, behind 1
    m.append(msg_u(1, t + 3, 1, 2, 300, 100_0000))  # same price and shares: to the back
    m.append(msg_u(1, t + 4, 2, 3, 250, 100_0100))  # better price
    m.append(msg_u(1, t + 5, 3, 4, 250, 99_9900))  # worse price
    m.append(msg_e(1, t + 6, 4, 100, 5001))
    m.append(msg_c(1, t + 7, 4, 100, 5002, "N", 99_9800))
    m.append(msg_e(1, t + 8, 4, 50, 5003))  # down to zero: the order is gone
    m.append(msg_f(1, t + 9, 5, "S", 400, "AAA", 100_0200))
    m.append(msg_x(1, t + 10, 5, 150))
    m.append(msg_c(1, t + 11, 5, 250, 5004, "Y", 100_0200))  # executed with price down to zero
    # BBB: many levels on each side (more than 20), then deletes from the middle
    for i in range(30):
        m.append(msg_a(2, t + 100 + i, 1000 + i, "B", 100 + i, "BBB", 50_0000 - i * 100))
        m.append(msg_a(2, t + 200 + i, 2000 + i, "S", 200 + i, "BBB", 50_0100 + i * 100))
    for i in (0, 5, 29, 7):
        m.append(msg_d(2, t + 300 + i, 1000 + i))
        m.append(msg_d(2, t + 310 + i, 2000 + i))
    m.append(msg_x(2, t + 400, 1001, 101))  # cancel the whole order
    m.append(msg_p(2, t + 401, 0, "B", 77, "BBB", 50_0050, 6001))  # hidden trade
    m.append(msg_q(2, t + 402, 2**40 + 3, "BBB", 50_0050, 6002, "O"))  # 8-byte cross shares
    m.append(msg_b(2, t + 403, 6001))
    # CCC: a crossed book (nothing matches it: the feed says what rests) and extreme prices
    m.append(msg_a(3, t + 500, 3000, "B", 10, "CCC", 20_0000))
    m.append(msg_a(3, t + 501, 3001, "S", 10, "CCC", 19_0000))
    m.append(msg_a(3, t + 502, 3002, "S", 7, "CCC", MAX_PRICE))
    m.append(msg_a(3, t + 503, 3003, "B", 9, "CCC", 1))
    m.append(msg_a(3, t + 504, 3004, "B", 4_294_967_295, "CCC", MAX_PRICE - 1))
    m.append(msg_e(3, t + 505, 3004, 4_294_967_294, 7001))
    m.append(msg_u(3, t + 506, 3002, 3005, 8, MAX_PRICE))
    m.append(msg_d(3, t + 507, 3001))
    m.append(msg_q(3, t + 508, 0, "CCC", MAX_PRICE, 7002, "C"))
    m.append(msg_p(3, t + 509, 123, "S", 1, "CCC", MAX_PRICE, 7003))
    m.append(msg_s(t + 600, "C"))
    return m


def test_builders_are_valid_itch50() -> None:
    """My message builders decode with the package's own decoder (sanity of the attack)."""
    for m in scenario():
        itch50.decode(m)


@pytest.mark.parametrize("pure", [False, True], ids=["c", "python"])
def test_scenario_equals_reference_depth10(tmp_path: Path, pure: bool) -> None:
    """bbo, trades and depth (10 levels) equal an independent reference book row for row."""
    assert_same_as_reference(tmp_path, scenario(), depth=10, pure=pure)


@pytest.mark.parametrize("depth", [1, 20])
def test_scenario_equals_reference_depth_1_and_20(tmp_path: Path, depth: int) -> None:
    """--depth 1 and --depth 20 (BBB has 30 levels a side) give the reference's rows."""
    assert_same_as_reference(tmp_path, scenario(), depth=depth)


def test_symbols_filter_equals_reference(tmp_path: Path) -> None:
    """--symbols BBB,CCC: rows only for those, identical to the whole run's rows for them."""
    assert_same_as_reference(tmp_path, scenario(), depth=5, symbols={"BBB", "CCC"})


def test_crossed_book_is_shown_not_matched(tmp_path: Path) -> None:
    """A crossed book (bid 20.00 over ask 19.00) is what the feed says rests: the book shows
    it as is and invents no trade."""
    m = scenario()
    book = Book()
    book.apply_many(
        m[: m.index(msg_a(3, 34_200_000_000_000 + 501, 3001, "S", 10, "CCC", 19_0000)) + 1], 1
    )
    bid, ask = book.bbo("CCC")
    assert bid is not None and ask is not None
    assert (bid.price, ask.price) == (20_0000, 19_0000)


def test_replace_goes_to_back_of_level(tmp_path: Path) -> None:
    """U with the same price and shares loses time priority: orders() shows it last."""
    book = Book()
    book.apply_many(
        [
            msg_r(1, "AAA"),
            msg_a(1, 5, 1, "B", 300, "AAA", 100_0000),
            msg_a(1, 6, 10, "B", 50, "AAA", 100_0000),
            msg_u(1, 7, 1, 2, 300, 100_0000),
        ],
        1,
    )
    assert book.orders("AAA", "B", 100_0000) == [(10, 50), (2, 300)]
    assert book.order(1) is None
    assert book.order(2) == (1, "B", 100_0000, 300)


# ---------------------------------------------------------------------------------------
# What the feed gets wrong: unknown references, overfills, duplicates, zero shares
# ---------------------------------------------------------------------------------------


def _level_consistent(book: Book, stock: str) -> None:
    for side in ("B", "S"):
        for lv in book.levels(stock, side, 1000):
            orders = book.orders(stock, side, lv.price)
            assert lv.orders == len(orders), (side, lv, orders)
            assert lv.shares == sum(s for _, s in orders), (side, lv, orders)
            assert lv.shares > 0, f"a level with no shares is shown: {lv}"


def test_file_starting_mid_day_counts_unknown_references(tmp_path: Path) -> None:
    """A file that starts mid-day: E, C, X, D, U for orders never added are counted and
    reported (stats and the summary), change no book, and the run exits 0."""
    m = [
        msg_r(1, "AAA"),
        msg_e(1, 10, 77, 5, 1),
        msg_c(1, 11, 78, 5, 2, "Y", 1000),
        msg_x(1, 12, 79, 5),
        msg_d(1, 13, 80),
        msg_u(1, 14, 81, 82, 100, 5000),
        msg_a(1, 15, 1, "B", 100, "AAA", 10_0000),
        msg_e(1, 16, 82, 10, 3),  # the replace's new ref is unknown too
    ]
    book = Book()
    book.apply_many(m, 1)
    assert book.stats()["unknown_orders"] == 6
    assert book.stats()["orders_resting"] == 1
    assert book.bbo("AAA") == ((10_0000, 100, 1), None)
    tables, proc = book_tables(tmp_path, m)
    assert proc.returncode == 0, proc.stderr
    assert "6 references to orders not in the book" in proc.stderr or "6 unknown" in proc.stderr, (
        proc.stderr
    )
    assert [r[:4] for r in tables["bbo"]] == [(7, 15, 1, "AAA")]


def test_overfill_executions_and_cancels_are_capped_and_counted(tmp_path: Path) -> None:
    """E, C and X for more than the order has: the order is gone (not negative), counted in
    overfills; the trades table keeps what the exchange reported (the message's shares)."""
    m = [
        msg_r(1, "AAA"),
        msg_a(1, 5, 1, "B", 100, "AAA", 10_0000),
        msg_a(1, 6, 2, "B", 100, "AAA", 10_0000),
        msg_a(1, 7, 3, "S", 100, "AAA", 11_0000),
        msg_e(1, 8, 1, 150, 9001),
        msg_x(1, 9, 2, 1000),
        msg_c(1, 10, 3, 101, 9002, "Y", 11_0000),
        msg_a(1, 11, 4, "B", 5, "AAA", 10_0000),
    ]
    book = Book()
    book.apply_many(m, 1)
    assert book.stats()["overfills"] == 3
    assert book.order(1) is None and book.order(2) is None and book.order(3) is None
    bid, ask = book.bbo("AAA")
    assert bid == (10_0000, 5, 1) and ask is None
    _level_consistent(book, "AAA")
    tables, proc = book_tables(tmp_path, m)
    assert proc.returncode == 0, proc.stderr
    assert [(r[4], r[6]) for r in tables["trades"]] == [("E", 150), ("C", 101)]
    assert tables["bbo"][-1][4:] == (10_0000, None, 5, 0, 1, 0)


def test_order_added_twice_leaves_no_ghost_shares() -> None:
    """An Add with a reference already resting: counted (duplicate_orders); whatever the
    book keeps, its levels must agree with its orders, and once the reference is deleted
    no shares of it remain anywhere (no ghost level a spread would be computed from)."""
    m = [
        msg_r(1, "AAA"),
        msg_a(1, 5, 1, "B", 100, "AAA", 10_0000),
        msg_a(1, 6, 1, "B", 200, "AAA", 10_5000),
        msg_a(1, 7, 1, "S", 300, "AAA", 11_0000),
    ]
    for pure in (False, True):
        book = Book(pure_python=pure)
        book.apply_many(m, 1)
        assert book.stats()["duplicate_orders"] == 2
        _level_consistent(book, "AAA")
        book.apply(msg_d(1, 8, 1), 5)
        assert book.bbo("AAA") == (None, None), pure
        assert book.stats()["orders_resting"] == 0, pure


def test_replace_onto_an_existing_reference_leaves_no_ghost() -> None:
    """U whose new reference is already resting: the book must stay self-consistent and,
    once both references are deleted, empty."""
    m = [
        msg_r(1, "AAA"),
        msg_a(1, 5, 1, "B", 100, "AAA", 10_0000),
        msg_a(1, 6, 2, "B", 200, "AAA", 10_5000),
        msg_u(1, 7, 1, 2, 50, 10_2000),
    ]
    for pure in (False, True):
        book = Book(pure_python=pure)
        book.apply_many(m, 1)
        _level_consistent(book, "AAA")
        book.apply_many([msg_d(1, 8, 1), msg_d(1, 9, 2)], 5)
        assert book.bbo("AAA") == (None, None), pure
        assert book.stats()["orders_resting"] == 0, pure


def test_zero_share_add_shows_no_empty_level() -> None:
    """An Add of 0 shares: no level with 0 shares may become the best bid (a spread from a
    price where nothing is bid would be wrong)."""
    m = [
        msg_r(1, "AAA"),
        msg_a(1, 5, 1, "B", 100, "AAA", 10_0000),
        msg_a(1, 6, 2, "B", 0, "AAA", 10_5000),
    ]
    for pure in (False, True):
        book = Book(pure_python=pure)
        book.apply_many(m, 1)
        bid, _ = book.bbo("AAA")
        assert bid == (10_0000, 100, 1), (pure, bid)


def test_locate_without_directory_gets_rows(tmp_path: Path) -> None:
    """Orders for a locate no R ever named: the rows are there with stock_locate and the
    name the Add carries (never another stock's name), and --symbols AAA leaves them out."""
    m = [
        msg_r(1, "AAA"),
        msg_a(9, 5, 1, "B", 100, "ZZZ", 10_0000),
        msg_a(1, 6, 2, "S", 100, "AAA", 11_0000),
        msg_e(9, 7, 1, 10, 1),
    ]
    assert_same_as_reference(tmp_path, m, depth=2)
    assert_same_as_reference(tmp_path, m, depth=2, symbols={"AAA"})


def test_reused_locate_renamed_by_directory(tmp_path: Path) -> None:
    """A second R for a locate (a renamed stock): later rows carry the new name."""
    m = [
        msg_r(1, "OLD"),
        msg_a(1, 5, 1, "B", 100, "OLD", 10_0000),
        msg_r(1, "NEW", 6),
        msg_a(1, 7, 2, "B", 100, "NEW", 10_1000),
    ]
    tables, proc = book_tables(tmp_path, m)
    assert proc.returncode == 0
    assert [r[3] for r in tables["bbo"]] == ["OLD", "NEW"]


# ---------------------------------------------------------------------------------------
# --interval sampling
# ---------------------------------------------------------------------------------------


@pytest.mark.parametrize("symbols", [None, "AAA"])
def test_interval_rows_hold_the_book_at_each_multiple(tmp_path: Path, symbols: str | None) -> None:
    """--interval 1 (and with --symbols AAA, as the README's research example): a depth
    row per stock at each whole second the clock reaches, holding that stock's levels as
    they were at that instant (messages before it applied); none for stocks left out."""
    sec = 1_000_000_000
    m = [msg_r(1, "AAA"), msg_r(2, "BBB")]
    rng = random.Random(5)
    refs: list[tuple[int, int]] = []
    ts = 10 * sec + 1
    nxt = 1
    for _ in range(400):
        ts += rng.randrange(1, sec // 7)
        if ts % sec == 0:
            ts += 1
        loc = rng.choice((1, 2))
        if refs and rng.random() < 0.4:
            r, rl = refs.pop(rng.randrange(len(refs)))
            m.append(msg_d(rl, ts, r))
        else:
            side = rng.choice("BS")
            price = (
                (100_0000 - rng.randrange(1, 20) * 100)
                if side == "B"
                else (100_0000 + rng.randrange(1, 20) * 100)
            )
            m.append(
                msg_a(
                    loc, ts, nxt, side, rng.randrange(1, 500), "AAA" if loc == 1 else "BBB", price
                )
            )
            refs.append((nxt, loc))
            nxt += 1
    extra = ["--symbols", symbols] if symbols else []
    tables, proc = book_tables(
        tmp_path, m, "--interval", "1", "--depth", "3", "--tables", "depth", *extra
    )
    assert proc.returncode == 0, proc.stderr
    rows = norm_empty(tables["depth"], 4)
    assert rows, "no sampled rows"
    # reference: the book as it was just before the first message at or past each boundary
    ref = RefBook(3)
    expected: dict[tuple[int, int], tuple[Any, ...]] = {}
    boundary = None
    for i, msg in enumerate(m, 1):
        t = int.from_bytes(msg[5:11], "big")
        if boundary is None:
            boundary = (t // sec + 1) * sec
        while t >= boundary:
            for loc in (1, 2):
                flat: tuple[Any, ...] = ()
                for b, a in zip(ref._top(loc, "B", 3), ref._top(loc, "S", 3), strict=True):
                    flat += (b[0], b[1], b[2], a[0], a[1], a[2])
                expected[(boundary, loc)] = flat
            boundary += sec
        ref.apply(i, msg)
    for row in rows:
        ts_row, loc = row[1], row[2]
        assert ts_row % sec == 0, f"sample not at a multiple of the interval: {row[:4]}"
        assert (ts_row, loc) in expected, row[:4]
        assert row[4:] == expected[(ts_row, loc)], (row[:4], row[4:], expected[(ts_row, loc)])
    # every multiple that falls between two messages' clocks has its rows (one per stock)
    clocks = [int.from_bytes(x[5:11], "big") for x in m]
    stretches = [(a, b) for a, b in itertools.pairwise(clocks) if b // sec > a // sec]
    wanted_locs = (1,) if symbols else (1, 2)
    assert {r[2] for r in rows} <= set(wanted_locs)
    missing = [
        (a, b, loc)
        for a, b in stretches
        for loc in wanted_locs
        if not any(a < r[1] <= b and r[2] == loc for r in rows)
    ]
    assert not missing, f"no sample between these clocks: {missing[:5]}"


# ---------------------------------------------------------------------------------------
# The C core and the Python core: identical, and the C core never crashes
# ---------------------------------------------------------------------------------------

_DIFF_SCRIPT = textwrap.dedent(
    r"""
    import sys, random, struct, faulthandler, json
    faulthandler.enable()
    from moldudp64.itch50.book import new_core, snapshot_messages
    LENGTHS = dict(S=12, R=39, H=25, Y=20, L=26, V=35, W=12, K=28, J=35, h=21, A=36, F=40,
                   E=31, C=36, X=23, D=19, U=35, P=44, Q=40, B=19, I=50, N=20, O=48)
    def rand_msg(rng):
        r = rng.random()
        if r < 0.03:   # pure garbage of any length, including 0 and 1
            n = rng.choice([0, 1, 2, 3, 10, 11, 12, rng.randrange(0, 300)])
            return bytes(rng.randrange(256) for _ in range(n))
        kind = rng.choice("AAAAFEECXDDUUPQBRHSYLVWKJhIZ")
        n = LENGTHS.get(kind, rng.randrange(1, 60))
        if rng.random() < 0.05:
            n = max(0, n + rng.choice([-1, 1, -10, 5]))
        b = bytearray(rng.randrange(256) for _ in range(n))
        if n:
            b[0] = ord(kind)
        if n >= 3:
            b[1:3] = struct.pack(">H", rng.choice([0, 1, 2, 3, 65535, rng.randrange(65536)]))
        if kind in "AFEXDUC" and n >= 19:
            b[11:19] = struct.pack(">Q", rng.choice([1, 2, 3, 4, 5, 2**64 - 1, 0]))
        if kind == "U" and n >= 27:
            b[19:27] = struct.pack(">Q", rng.choice([1, 2, 3, 4, 5, 6, 7]))
        if kind in "AF" and n >= 20:
            b[19] = ord(rng.choice("BSX"))
        if kind in "AFU" and n >= 36 and rng.random() < 0.8:
            off = 32 if kind in "AF" else 31
            b[off:off + 4] = struct.pack(">I", rng.choice([1, 100, 101, 102, 0, 2**32 - 1]))
        if kind in "EXCAF" and n >= 23 and rng.random() < 0.7:
            off = 20 if kind in "AF" else 19
            b[off:off + 4] = struct.pack(">I", rng.choice([0, 1, 50, 100, 2**32 - 1]))
        return bytes(b)
    def blocks(msgs):
        return b"".join(struct.pack(">H", len(m)) + m for m in msgs)
    def run(pure, data, depth, interval):
        core = new_core(depth=depth, interval_ns=interval, pure_python=pure)
        used = 0
        seq = 1
        # feed in uneven chunks: a message split across calls must wait for its end
        rng = random.Random(len(data))
        while used < len(data):
            end = min(len(data), used + rng.randrange(1, 400))
            got = core.feed(memoryview(data)[used:end], seq)
            # count the messages used to advance seq
            k, n = used, 0
            while k < used + got:
                k += 2 + struct.unpack_from(">H", data, k)[0]
                n += 1
            seq += n
            used += got
            if got == 0 and end == len(data):
                break
        out = {"rows": core.take(), "books": [], "state": [], "counters": []}
        for loc in core.locates():
            out["books"].append((loc, core.bbo(loc), core.levels(loc, 0, 50), core.levels(loc, 1, 50),
                                 core.name_code(loc)))
            out["state"].append((loc, repr(core.state(loc))))
            for side in (0, 1):
                for p, _, _ in core.levels(loc, side, 50):
                    out["books"].append(core.orders(loc, side, p))
        out["books"].append(core.names(0))
        out["books"].append([core.order(r) for r in (0, 1, 2, 3, 4, 5, 6, 7, 2**64 - 1)])
        out["counters"].append((core.orders_resting, used))
        for attr in ("unknown_orders", "overfills", "duplicate_orders", "invalid", "messages"):
            out["counters"].append(getattr(core, attr, None))
        out["snapshot"] = snapshot_messages(core, seq)
        return out
    seed0, count = int(sys.argv[1]), int(sys.argv[2])
    bad = []
    for seed in range(seed0, seed0 + count):
        rng = random.Random(seed)
        msgs = [rand_msg(rng) for _ in range(rng.randrange(1, 300))]
        data = blocks(msgs)
        if rng.random() < 0.3:
            data = data[: rng.randrange(len(data) + 1)]   # cut anywhere
        depth = rng.choice([0, 1, 3, 20])
        interval = rng.choice([0, 0, 1000])
        c = run(False, data, depth, interval)
        p = run(True, data, depth, interval)
        for key in c:
            if c[key] != p[key]:
                bad.append((key, seed, depth, interval, repr(c[key])[:400], repr(p[key])[:400]))
    print(json.dumps(bad))
    """
)


_DIFF_CACHE: list[list[Any]] | None = None


def _differential(tmp: Path) -> list[list[Any]]:
    global _DIFF_CACHE
    if _DIFF_CACHE is not None:
        return _DIFF_CACHE
    script = tmp / "diff.py"
    script.write_text(_DIFF_SCRIPT)
    proc = subprocess.run(
        [sys.executable, str(script), "0", "150"],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert proc.returncode == 0, f"rc={proc.returncode}\n{proc.stderr[-3000:]}"
    _DIFF_CACHE = list(json.loads(proc.stdout))
    return _DIFF_CACHE


def test_c_and_python_cores_agree_on_random_hostile_streams(tmp_path: Path) -> None:
    """The C core and the Python core, on 150 random streams of valid, mis-sized, unknown
    and garbage messages cut anywhere and fed in uneven chunks, give the same rows, the same
    books (levels, orders, names) and the same counters; the C core never crashes (a
    subprocess: a segfault is a failed test, not a dead test run)."""
    bad = [b for b in _differential(tmp_path) if b[0] in ("rows", "books", "counters")]
    assert bad == [], bad[:3]


def test_c_and_python_cores_agree_on_state_and_snapshot(tmp_path: Path) -> None:
    """On the same random streams the two cores also report the same per-stock state
    (Book.state) and write the same GLIMPSE snapshot: the docstring calls the C core a twin
    of PyBookCore, and a snapshot server must not serve different bytes depending on
    whether a compiler was there at install time."""
    bad = [b for b in _differential(tmp_path) if b[0] in ("state", "snapshot")]
    assert bad == [], bad[:3]


def test_nul_state_codes_same_in_both_cores() -> None:
    """A System Event and a Trading Action whose code byte is NUL (a corrupt or future
    feed): both cores must report the same state and the same snapshot. Seen: the C core
    says None (and leaves S and H out of the snapshot), the Python core says '\\x00'."""
    m = [
        msg_s(1, "\x00"),
        msg_r(1, "AAA"),
        msg_h(1, "AAA", 2, "\x00"),
        msg_a(1, 3, 1, "B", 10, "AAA", 100),
    ]
    out = []
    for pure in (False, True):
        b = Book(pure_python=pure)
        b.apply_many(m, 1)
        out.append((b.state("AAA"), snapshot_messages(b.core, 5)))
    assert out[0] == out[1]


_CRASH_SCRIPT = textwrap.dedent(
    r"""
    import sys, faulthandler
    faulthandler.enable()
    from moldudp64.itch50.book import new_core, snapshot_messages
    data = sys.stdin.buffer.read()
    pos = 0
    while pos < len(data):
        n = int.from_bytes(data[pos:pos + 4], "big"); pos += 4
        blob = data[pos:pos + n]; pos += n
        for depth in (0, 2, 20):
            core = new_core(depth=depth, interval_ns=7 if depth == 2 else 0)
            core.feed(blob, 1)
            core.feed(blob[1:], 2)
            core.take()
            for loc in core.locates():
                core.levels(loc, 0, 5); core.levels(loc, 1, 5); core.state(loc); core.bbo(loc)
            snapshot_messages(core, 3)
    print("ok")
    """
)


def test_c_core_survives_hypothesis_random_bytes(tmp_path: Path) -> None:
    """Random bytes (hypothesis: raw, and framed as BinaryFILE blocks of ITCH-typed
    messages) never crash the C core: it runs in a subprocess that must print ok."""
    from hypothesis import HealthCheck, given, settings
    from hypothesis import strategies as st

    blobs: list[bytes] = []
    kinds = st.sampled_from(list(b"AFECXDUPQBRHSYLVWKJhZ\x00\xff"))

    @st.composite
    def framed(draw: Any) -> bytes:
        out = b""
        for _ in range(draw(st.integers(1, 30))):
            k = draw(kinds)
            body = draw(st.binary(min_size=0, max_size=60))
            msg = bytes([k]) + body
            length = draw(st.one_of(st.just(len(msg)), st.integers(0, 65535)))
            out += struct.pack(">H", length) + msg
        return out

    @settings(
        max_examples=100, deadline=None, suppress_health_check=list(HealthCheck), database=None
    )
    @given(st.one_of(st.binary(max_size=2000), framed()))
    def collect(blob: bytes) -> None:
        blobs.append(blob)

    collect()
    payload = b"".join(len(b).to_bytes(4, "big") + b for b in blobs)
    script = tmp_path / "crash.py"
    script.write_text(_CRASH_SCRIPT)
    proc = subprocess.run(
        [sys.executable, str(script)], input=payload, capture_output=True, timeout=120, check=False
    )
    assert proc.returncode == 0 and proc.stdout.strip() == b"ok", (
        proc.returncode,
        proc.stderr[-3000:],
    )


@pytest.mark.parametrize("variant", ["depth3", "interval"])
def test_c_and_python_cli_tables_identical(tmp_path: Path, variant: str) -> None:
    """`moldudp64 book` with the C core and with MOLDUDP64_PURE_PYTHON=1 writes the same
    tables from a generated day (the README: identical results), per change and sampled
    (--interval 1 --depth 20 --symbols of three stocks)."""
    day = tmp_path / "day.bin"
    g = run_cli("generate", "itch50", "-o", str(day), "--messages", "10000", "--seed", "3")
    assert g.returncode == 0, g.stderr
    args = ["--depth", "3"]
    if variant == "interval":
        names = [x[11:19].decode().strip() for x in _messages_of(day) if x[:1] == b"R"][:3]
        args = ["--interval", "1", "--depth", "20", "--symbols", ",".join(names)]
    outs = []
    for pure in (False, True):
        out = tmp_path / ("p" if pure else "c")
        proc = run_cli("book", str(day), "-o", str(out), *args, pure=pure)
        assert proc.returncode == 0, proc.stderr
        outs.append({t: pq.read_table(table_path(out, t)) for t in ("bbo", "trades", "depth")})
    assert outs[0]["depth"].num_rows > 0
    for t in ("bbo", "trades", "depth"):
        assert outs[0][t].equals(outs[1][t]), t


def test_generated_day_equals_reference(tmp_path: Path) -> None:
    """A generated day (replaces, partial executions, hidden trades, crosses): every table
    equals the reference's, row for row."""
    day = tmp_path / "day.bin"
    g = run_cli("generate", "itch50", "-o", str(day), "--messages", "10000", "--seed", "11")
    assert g.returncode == 0, g.stderr
    data = day.read_bytes()
    msgs, pos = [], 0
    while pos < len(data):
        (n,) = struct.unpack_from(">H", data, pos)
        msgs.append(data[pos + 2 : pos + 2 + n])
        pos += 2 + n
    assert_same_as_reference(tmp_path, msgs, depth=4)


# ---------------------------------------------------------------------------------------
# Hostile files on the command line: a clear error and a documented exit code
# ---------------------------------------------------------------------------------------

DOCUMENTED = {0, 2, 3}


def _no_crash(proc: subprocess.CompletedProcess[str]) -> None:
    assert proc.returncode >= 0, f"killed by signal {-proc.returncode}: {proc.stderr[-2000:]}"
    assert "Traceback" not in proc.stderr, proc.stderr
    assert proc.returncode in DOCUMENTED, (proc.returncode, proc.stderr)


def test_truncated_binaryfile_is_said(tmp_path: Path) -> None:
    """A BinaryFILE cut in the middle of its last message: the complete messages are built,
    stderr says the file is truncated, and the exit code is not 0 (as inspect: exit 2)."""
    m = scenario()
    src = tmp_path / "cut.bin"
    data = binaryfile(m)
    src.write_bytes(data[:-5])
    proc = run_cli("book", str(src), "-o", str(tmp_path / "o"))
    _no_crash(proc)
    assert "truncat" in proc.stderr.lower() or "corrupt" in proc.stderr.lower(), proc.stderr
    assert proc.returncode != 0, proc.stderr
    rows = read_rows(tmp_path / "o" / "bbo.parquet")
    ref = RefBook().run(m[:-1])
    assert norm_bbo(rows) == ref.bbo_rows


def test_unknown_types_and_wrong_lengths_are_counted_not_applied(tmp_path: Path) -> None:
    """Unknown message types and known types with a wrong length inside a BinaryFILE are
    counted as invalid (and said in the summary), the rest of the book is exact, exit 0."""
    good = [msg_r(1, "AAA"), msg_a(1, 5, 1, "B", 100, "AAA", 10_0000)]
    bad_add = msg_a(1, 6, 2, "B", 100, "AAA", 10_5000)
    m = [
        *good,
        b"z" + b"\x00" * 20,
        bad_add + b"\x00\x00\x00\x00",
        bad_add[:30],
        msg_e(1, 7, 1, 10, 1)[:-1],
        b"A",
        msg_a(1, 8, 3, "S", 10, "AAA", 110000),
    ]
    book = Book()
    book.apply_many(m, 1)
    assert book.stats()["invalid"] == 5
    bid, ask = book.bbo("AAA")
    assert bid == (10_0000, 100, 1) and ask == (11_0000, 10, 1)
    proc = run_cli(
        "book", str(_write(tmp_path / "x.bin", binaryfile(m))), "-o", str(tmp_path / "o")
    )
    _no_crash(proc)
    assert proc.returncode == 0, proc.stderr
    assert "invalid" in proc.stderr.lower() or "not itch" in proc.stderr.lower(), proc.stderr
    assert len(read_rows(tmp_path / "o" / "bbo.parquet")) == 2


def _write(path: Path, data: bytes) -> Path:
    path.write_bytes(data)
    return path


@pytest.mark.parametrize("kind", ["text", "random", "gzip", "zero_lengths"])
def test_garbage_files_give_a_clear_answer(tmp_path: Path, kind: str) -> None:
    """Garbage, empty and odd files: never a traceback or a crash, a documented exit code;
    when refused (exit 2), one line on stderr (README: "2 bad usage or input (one line on
    stderr ...)"). `inspect` refuses the text, gzip, random and huge-length files with
    "FILE is not a pcap, pcapng or BinaryFILE" (gzip: "gunzip it first"); `book` on the
    same files exits 2 with a warning that the file "ends inside a message at byte offset 0"
    plus a summary line, and leaves empty tables behind as if it were a day with no
    messages."""
    rng = random.Random(kind)
    data = {
        "empty": b"",
        "text": b"hello world, this is not a feed\n" * 50,
        "random": bytes(rng.randrange(256) for _ in range(5000)),
        "gzip": b"\x1f\x8b\x08\x00" + bytes(rng.randrange(256) for _ in range(500)),
        "zero_lengths": b"\x00\x00" * 1000,
        "huge_length": b"\xff\xff" + b"A" * 100,
    }[kind]
    proc = run_cli("book", str(_write(tmp_path / "in.bin", data)), "-o", str(tmp_path / "o"))
    _no_crash(proc)
    if proc.returncode == 2:
        lines = [x for x in proc.stderr.splitlines() if x.strip()]
        assert len(lines) == 1, proc.stderr


def test_empty_file_gives_empty_tables(tmp_path: Path) -> None:
    """An empty BinaryFILE (a day with no messages yet) gives the three tables, empty, with
    their columns, exit 0 (BookWriter.close: every asked table exists, maybe empty)."""
    proc = run_cli("book", str(_write(tmp_path / "e.bin", b"")), "-o", str(tmp_path / "o"))
    _no_crash(proc)
    assert proc.returncode == 0, proc.stderr
    for t in ("bbo", "trades", "depth"):
        assert pq.read_table(table_path(tmp_path / "o", t)).num_rows == 0


def test_unwritable_output_dir_is_exit_2_one_line(tmp_path: Path) -> None:
    """An output directory that cannot be written: exit 2, one line naming it, no
    traceback (README: an output that cannot be written, named)."""
    src = _write(tmp_path / "s.bin", binaryfile(scenario()))
    locked = tmp_path / "locked"
    locked.mkdir()
    locked.chmod(0o500)
    blocker = tmp_path / "afile"
    blocker.write_text("x")
    try:
        targets = [blocker / "sub", Path("/proc/book_out")]
        if os.geteuid() != 0:  # root writes anywhere
            targets.append(locked / "o")
        for target in targets:
            proc = run_cli("book", str(src), "-o", str(target))
            _no_crash(proc)
            assert proc.returncode == 2, (target, proc.returncode, proc.stderr)
            lines = [x for x in proc.stderr.splitlines() if x.strip()]
            assert len(lines) == 1, (target, proc.stderr)
    finally:
        locked.chmod(0o700)


def test_output_is_the_input_is_refused(tmp_path: Path) -> None:
    """-o pointing at the input file itself: refused (exit 2) and the input left intact."""
    src = _write(tmp_path / "s.bin", binaryfile(scenario()))
    before = src.read_bytes()
    proc = run_cli("book", str(src), "-o", str(src))
    _no_crash(proc)
    assert proc.returncode == 2
    assert src.read_bytes() == before


# ---------------------------------------------------------------------------------------
# Captures: wrong lengths inside MoldUDP64, and a gap never recovered
# ---------------------------------------------------------------------------------------


def _pcap(path: Path, datagrams: list[bytes], port: int = 30001) -> Path:
    from moldudp64.capture import CaptureWriter

    with CaptureWriter(str(path)) as w:
        for i, d in enumerate(datagrams):
            w.write(d, ("10.0.0.1", 40000), ("239.1.1.1", port), 1_700_000_000.0 + i * 0.001)
    return path


def _packets(
    messages: list[bytes], per: int = 3, session: str = "S1", skip: set[int] = frozenset()
) -> list[bytes]:  # type: ignore[assignment]
    out = []
    for i in range(0, len(messages), per):
        if i // per in skip:
            continue
        out.append(moldudp64_packet(session, i + 1, messages[i : i + per]))
    return out


def test_capture_equals_binaryfile(tmp_path: Path) -> None:
    """The same messages as a pcap of MoldUDP64 packets and as a BinaryFILE: the same
    tables (seq: the MoldUDP64 sequence number = the file position here)."""
    m = scenario()
    cap = _pcap(
        tmp_path / "c.pcap",
        [*_packets(m), moldudp64_packet("S1", len(m) + 1, [])[:18] + b"\xff\xff"],
    )
    proc = run_cli("book", str(cap), "-o", str(tmp_path / "o"))
    _no_crash(proc)
    assert proc.returncode == 0, proc.stderr
    ref = RefBook().run(m)
    assert norm_bbo(read_rows(tmp_path / "o" / "bbo.parquet")) == ref.bbo_rows
    assert norm_trades(read_rows(tmp_path / "o" / "trades.parquet")) == ref.trade_rows


def test_capture_with_wrong_lengths_inside_packets(tmp_path: Path) -> None:
    """MoldUDP64 packets whose message lengths overrun the datagram, or whose count lies:
    no traceback, no crash; their messages are lost, so book_state names them, exit 3."""
    m = scenario()
    pk = _packets(m)
    broken = bytearray(pk[3])
    broken[20:22] = b"\xff\xf0"  # first message length past the datagram
    lying = bytearray(pk[5])
    lying[18:20] = b"\x00\x09"  # count says 9, carries 3
    pk[3] = bytes(broken)
    pk[5] = bytes(lying)
    cap = _pcap(tmp_path / "c.pcap", pk)
    proc = run_cli("book", str(cap), "-o", str(tmp_path / "o"))
    _no_crash(proc)
    assert proc.returncode == 3, proc.stderr  # the two packets' messages are lost
    state = pq.read_table(tmp_path / "o" / "book_state.parquet").to_pylist()
    assert [(r["first_seq"], r["last_seq"]) for r in state] == [(10, 12), (16, 18)]


def test_capture_gap_never_recovered_marks_books_unreliable(tmp_path: Path) -> None:
    """A capture missing one packet that no answer fills: book_state.parquet names the
    range, stderr says so, exit 3 (README) -- never a silent build on a hole."""
    m = scenario()
    pk = _packets(m, per=2, skip={4})  # messages 9..10 lost
    cap = _pcap(
        tmp_path / "g.pcap", pk + [moldudp64_packet("S1", len(m) + 1, [])[:18] + b"\xff\xff"] * 3
    )
    proc = run_cli("book", str(cap), "-o", str(tmp_path / "o"))
    _no_crash(proc)
    assert proc.returncode == 3, proc.stderr
    state = pq.read_table(tmp_path / "o" / "book_state.parquet").to_pylist()
    assert len(state) == 1 and (state[0]["first_seq"], state[0]["last_seq"]) == (9, 10), state
    assert "9" in proc.stderr and "10" in proc.stderr, proc.stderr


def test_bookwriter_sequence_jump_is_a_loss(tmp_path: Path) -> None:
    """BookWriter fed messages 1..10 then 20..: a book_state row for 11..19 (its docstring:
    a jump in sequence numbers is a loss), and the summary says so."""
    from moldudp64.itch50.book_tables import BookWriter

    m = scenario()
    w = BookWriter(tmp_path / "o")
    w.write("S1", 1, m[:10])
    w.write("S1", 20, m[19:])
    summary = w.summary()
    w.close()
    state = pq.read_table(tmp_path / "o" / "book_state.parquet").to_pylist()
    assert [(r["first_seq"], r["last_seq"]) for r in state] == [(11, 19)], state
    assert "lost" in summary.lower() or "unreliable" in summary.lower(), summary


# ---------------------------------------------------------------------------------------
# Memory under a hostile stream
# ---------------------------------------------------------------------------------------

_MEM_SCRIPT = textwrap.dedent(
    r"""
    import sys, struct, resource
    from moldudp64.itch50.book import new_core
    pure = sys.argv[1] == "1"
    kind = sys.argv[2]
    def rss():
        with open("/proc/self/statm") as f:
            return int(f.read().split()[1]) * 4096
    core = new_core(depth=10, pure_python=pure, tables=frozenset({"bbo", "trades", "depth"}))
    def hdr(k, loc, ts): return k + struct.pack(">HH", loc, 0) + ts.to_bytes(6, "big")
    def stock(n): return n.ljust(8).encode()
    def R(loc, name):
        return hdr(b"R", loc, 1) + stock(name) + b"QN" + struct.pack(">I", 100) + b"NCZ PNN1N" + struct.pack(">I", 0) + b"N"
    def batch(i0, n):
        out = []
        for i in range(i0, i0 + n):
            if kind == "unknown":
                r = 10**9 + i
                m = [hdr(b"E", 1, i) + struct.pack(">QIQ", r, 5, i),
                     hdr(b"X", 1, i) + struct.pack(">QI", r, 5),
                     hdr(b"D", 1, i) + struct.pack(">Q", r),
                     hdr(b"U", 1, i) + struct.pack(">QQII", r, r + 1, 5, 100)][i % 4]
            elif kind == "dup":
                m = hdr(b"A", 1, i) + struct.pack(">QcI", 7, b"B", 10) + stock("AAA") + struct.pack(">I", 100 + i % 1000)
            elif kind == "rename_distinct":   # one locate renamed again and again
                m = R(1, "N%07d" % i)
            elif kind == "rename":
                m = R(1, "AAA" if i % 2 else "BBB")
            elif kind == "churn":   # add then delete at ever-new prices: levels must go away
                r = i // 2 + 1
                if i % 2 == 0:
                    m = hdr(b"A", 1 + i % 500, i) + struct.pack(">QcI", r, b"BS"[i % 4 // 2:i % 4 // 2 + 1], 10) + stock("AAA") + struct.pack(">I", 1 + (i * 7919) % 4_000_000_000)
                else:
                    m = hdr(b"D", 1 + (i - 1) % 500, i) + struct.pack(">Q", r)
            elif kind == "garbage":
                m = bytes([0x7A]) + struct.pack(">I", i) * 5
            out.append(struct.pack(">H", len(m)) + m)
        return b"".join(out)
    N = int(sys.argv[3])
    step = 20000
    base = None
    for i0 in range(0, N, step):
        core.feed(batch(i0, step), i0 + 1)
        core.take()
        if base is None and i0 + step >= N // 4:
            base = rss()   # after a quarter: whatever is sized once is sized by now
    print(rss() - base, core.orders_resting, len(core.names(0)))
    """
)


@pytest.mark.parametrize(
    "kind", ["unknown", "dup", "rename", "rename_distinct", "churn", "garbage"]
)
@pytest.mark.parametrize("pure", [False, True], ids=["c", "python"])
def test_memory_bounded_on_hostile_stream(tmp_path: Path, kind: str, pure: bool) -> None:
    """Endless references to unknown orders, the same reference added again and again, a
    directory renaming one locate back and forth (or to a new name each time: one stock,
    so memory must follow the stocks, not the R messages; seen: every name kept, 400,000
    R messages on one locate grew the C core 13.7 MB and the Python core 43 MB, linearly), add/delete churn over ever-new prices,
    and unknown message types: memory must not grow with the number of messages (the last
    three quarters of the stream may add at most 4 MB), as nothing legitimately rests."""
    script = tmp_path / "mem.py"
    script.write_text(_MEM_SCRIPT)
    n = 100_000 if not pure else 40_000
    proc = subprocess.run(
        [sys.executable, str(script), "1" if pure else "0", kind, str(n)],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    growth, resting, names = (int(x) for x in proc.stdout.split())
    assert resting <= 1
    assert names <= 4, f"{names} stock names kept for one locate"
    assert growth < 4 * 2**20, (
        f"RSS grew {growth / 2**20:.1f} MB over the last {n * 3 // 4} {kind} messages"
    )


# ---------------------------------------------------------------------------------------
# Arguments a user gets wrong
# ---------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "args",
    [
        ["--depth", "-1"],
        ["--interval", "0"],
        ["--tables", "bbo,nonsense"],
    ],
    ids=lambda a: " ".join(a),
)
def test_bad_arguments_are_one_line_errors(tmp_path: Path, args: list[str]) -> None:
    """Nonsense options: exit 2 with one line naming the problem, nothing written."""
    src = _write(tmp_path / "s.bin", binaryfile(scenario()))
    proc = run_cli("book", str(src), "-o", str(tmp_path / "o"), *args)
    _no_crash(proc)
    assert proc.returncode == 2, (proc.returncode, proc.stderr)
    lines = [x for x in proc.stderr.splitlines() if x.strip()]
    assert len(lines) <= 2 and "error" in proc.stderr, proc.stderr  # argparse: usage + error


def test_missing_source_is_one_line(tmp_path: Path) -> None:
    """A SOURCE that does not exist: exit 2, one line naming it."""
    proc = run_cli("book", str(tmp_path / "nope.bin"), "-o", str(tmp_path / "o"))
    _no_crash(proc)
    assert proc.returncode == 2
    lines = [x for x in proc.stderr.splitlines() if x.strip()]
    assert len(lines) == 1 and "nope.bin" in lines[0], proc.stderr


def test_interval_with_clock_jump_to_the_end_of_day_is_quick(tmp_path: Path) -> None:
    """--interval 0.000001 (1 us) and a clock that jumps from 0 to the largest 6-byte
    timestamp (3.2 days of microseconds): the README says a stretch without messages is
    not repeated, so this is a handful of rows in well under the timeout, not 2**48/1000
    loop turns."""
    m = [
        msg_r(1, "AAA"),
        msg_a(1, 1, 1, "B", 100, "AAA", 10_0000),
        msg_a(1, 2**48 - 1, 2, "S", 100, "AAA", 11_0000),
        msg_a(1, 5, 3, "S", 100, "AAA", 12_0000),  # and the clock going backwards
        msg_a(1, 2**48 - 1, 4, "S", 100, "AAA", 13_0000),
    ]
    t0 = time.monotonic()
    tables, proc = book_tables(tmp_path, m, "--interval", "0.000001", "--tables", "depth")
    assert time.monotonic() - t0 < 30
    _no_crash(proc)
    assert proc.returncode == 0, proc.stderr
    assert len(tables["depth"]) <= 10, len(tables["depth"])
    stamps = [r[1] for r in tables["depth"]]
    assert len(stamps) == len(set(stamps)), f"the same instant sampled twice: {stamps}"


def test_huge_depth_is_refused_or_bounded(tmp_path: Path) -> None:
    """--depth 100000 (600,000 columns a row): refused with one line, or it completes; no
    traceback, no memory blow-up."""
    src = _write(tmp_path / "s.bin", binaryfile(scenario()))
    proc = run_cli("book", str(src), "-o", str(tmp_path / "o"), "--depth", "100000", timeout=60)
    _no_crash(proc)


# ---------------------------------------------------------------------------------------
# Snapshots: the book as ITCH messages, and a late joiner
# ---------------------------------------------------------------------------------------


def _messages_of(path: Path) -> list[bytes]:
    data = path.read_bytes()
    out, pos = [], 0
    while pos + 2 <= len(data):
        (n,) = struct.unpack_from(">H", data, pos)
        out.append(data[pos + 2 : pos + 2 + n])
        pos += 2 + n
    return out


def _book_picture(book: Book) -> dict[int, Any]:
    pic = {}
    for loc in book.core.locates():
        sides = {}
        for side in ("B", "S"):
            sides[side] = [
                (lv.price, lv.shares, lv.orders, book.orders(loc, side, lv.price))
                for lv in book.levels(loc, side, 100_000)
            ]
        if sides["B"] or sides["S"]:
            pic[loc] = sides
    return pic


@pytest.fixture(scope="module")
def day(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("day") / "day.bin"
    g = run_cli("generate", "itch50", "-o", str(path), "--messages", "10000", "--seed", "5")
    assert g.returncode == 0, g.stderr
    return path


def test_snapshot_then_feed_builds_the_same_book(day: Path) -> None:
    """snapshot_messages at any point, then the rest of the feed, builds the same book
    (every level, every order in time priority) as the whole day: the docstring's promise
    and the issue's test for late joiners."""
    msgs = _messages_of(day)
    whole = Book()
    whole.apply_many(msgs, 1)
    want = _book_picture(whole)
    for cut in (1, 777, 5_000, 9_999):
        first = Book()
        first.apply_many(msgs[:cut], 1)
        snap = snapshot_messages(first.core, cut + 1)
        assert snap[-1][:1] == b"G" and int(snap[-1][1:].decode().strip()) == cut + 1
        late = Book()
        late.apply_many(snap[:-1], 1)
        late.apply_many(msgs[cut:], cut + 1)
        assert _book_picture(late) == want, cut
        assert late.stats()["unknown_orders"] == whole.stats()["unknown_orders"], cut


def _wait_line(proc: subprocess.Popen[str], needle: str, timeout: float = 20) -> list[str]:
    assert proc.stderr is not None
    seen = []
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        line = proc.stderr.readline()
        if not line:
            break
        seen.append(line)
        if needle in line:
            return seen
    raise AssertionError(f"no {needle!r} in {seen}")


def _start(*args: str) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-m", "moldudp64", *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def _tables(out: Path) -> dict[str, Any]:
    return {t: pq.read_table(table_path(out, t)) for t in ("bbo", "trades", "depth")}


@pytest.fixture(scope="module")
def day_tables(day: Path, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    out = tmp_path_factory.mktemp("dayout") / "o"
    proc = run_cli("book", str(day), "-o", str(out))
    assert proc.returncode == 0, proc.stderr
    return _tables(out)


def test_soup_source_equals_file(day: Path, day_tables: dict[str, Any], tmp_path: Path) -> None:
    """`book soup://...` from `serve --soup-port` of the day: exit 0 at End of Session and
    the same three tables as `book day.bin`."""
    port = free_tcp_port()
    server = _start(
        "serve", "--input", str(day), "--session", "TEST000001", "--soup-port", str(port)
    )
    try:
        deadline = time.monotonic() + 15
        while time.monotonic() < deadline:
            try:
                socket.create_connection(("127.0.0.1", port), timeout=1).close()
                break
            except OSError:
                time.sleep(0.05)
        out = tmp_path / "soup"
        proc = run_cli("book", f"soup://127.0.0.1:{port}/TEST000001", "-o", str(out), timeout=60)
        _no_crash(proc)
        assert proc.returncode == 0, proc.stderr
        got = _tables(out)
        for t in ("bbo", "trades", "depth"):
            assert got[t].equals(day_tables[t]), t
    finally:
        server.terminate()
        server.communicate(timeout=10)


GROUP = "239.7.7.9"


@pytest.mark.usefixtures("multicast")
def test_live_loss_never_recovered_is_said(day: Path, tmp_path: Path) -> None:
    """The same lossy feed with no re-request server: book_state.parquet names the lost
    ranges, stderr says so, exit 3; the rows before the first loss are the file's rows."""
    port = free_port()
    out = tmp_path / "lossy"
    book = _start(
        "book",
        f"{GROUP}:{port}",
        "--interface",
        "127.0.0.1",
        "-o",
        str(out),
        "--idle-timeout",
        "10",
        "--end-confirm",
        "0.3",  # a trusted local feed: the end of session believed after 0.3 s of quiet
    )
    try:
        _wait_line(book, "joined")
        pub = run_cli(
            "publish",
            f"{GROUP}:{port}",
            "--interface",
            "127.0.0.1",
            "--session",
            "TEST000001",
            "--input",
            str(day),
            "--drop",
            "0.05",
            "--seed",
            "3",
            "--linger",
            "0",
            "--end-of-session-duration",
            "0.5",
            timeout=60,
        )
        assert pub.returncode == 0, pub.stderr
        _, err = book.communicate(timeout=30)
    finally:
        if book.poll() is None:
            book.kill()
            book.communicate()
    assert book.returncode == 3, err
    state = pq.read_table(out / "book_state.parquet").to_pylist()
    assert state, "no book_state rows"
    assert all(r["first_seq"] <= r["last_seq"] for r in state)
    assert "lost" in err.lower(), err


@pytest.mark.usefixtures("multicast")
def test_live_book_loss_late_joiner_and_idle_snapshot_clients(
    day: Path, day_tables: dict[str, Any], tmp_path: Path
) -> None:
    """One live run (kept as one for the suite's time): `book GROUP:PORT --request-server
    --snapshot-port 0` on a feed that drops 5% of its packets (recovered from publish's
    re-request server), with sixty snapshot connections that never read (half logged in)
    and a late joiner, `listen --snapshot soup://...` started mid-feed. Expected: the book
    keeps pace and exits 0 with the same three tables as `book day.bin` (the snapshot server
    is beside the feed, not in its way), and the book built from what the late joiner wrote
    is the whole day's book (every level, every order in priority)."""
    port = free_port()
    out = tmp_path / "live"
    book = _start(
        "book", f"{GROUP}:{port}", "--interface", "127.0.0.1", "--request-server",
        f"127.0.0.1:{port + 1}", "-o", str(out), "--idle-timeout", "15", "--snapshot-port", "0",
        "--end-confirm", "0.3",
    )  # fmt: skip
    late_path = tmp_path / "late.bin"
    listen = pub = None
    socks: list[socket.socket] = []
    try:
        lines = _wait_line(book, "joined")
        snap = next(x for x in lines if "soup://" in x).split("soup://")[1].split()[0]
        host, sport = snap.split("/")[0].rsplit(":", 1)
        for i in range(60):
            sk = socket.create_connection((host, int(sport)), timeout=5)
            sk.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
            if i % 2 == 0:
                sk.sendall(_soup_login())
            socks.append(sk)
        pub = _start(
            "publish", f"{GROUP}:{port}", "--interface", "127.0.0.1", "--session", "TEST000001",
            "--input", str(day), "--rate", "10000", "--drop", "0.05", "--seed", "3",
            "--request-port", str(port + 1), "--linger", "1", "--end-of-session-duration", "0.5",
        )  # fmt: skip
        _wait_for_feed(port, min_seq=3000)  # a few thousand messages in, however loaded
        listen = _start(
            "listen", f"{GROUP}:{port}", "--interface", "127.0.0.1", "--snapshot", f"soup://{snap}",
            "--request-server", f"127.0.0.1:{port + 1}", "-o", str(late_path), "--idle-timeout", "10",
            "--end-confirm", "0.3",
        )  # fmt: skip
        _, lerr = listen.communicate(timeout=40)
        pub.communicate(timeout=40)
        _, berr = book.communicate(timeout=40)
    finally:
        for sk in socks:
            sk.close()
        for p in (book, listen, pub):
            if p is not None and p.poll() is None:
                p.kill()
                p.communicate()
    assert book.returncode == 0, berr
    assert (
        not (out / "book_state.parquet").exists()
        or not pq.read_table(out / "book_state.parquet").num_rows
    )
    got = _tables(out)
    for t in ("bbo", "trades", "depth"):
        assert got[t].equals(day_tables[t]), t
    assert listen.returncode == 0, lerr
    whole = Book()
    whole.apply_many(_messages_of(day), 1)
    late = Book()
    late_msgs = _messages_of(late_path)
    from_snapshot = [x for x in late_msgs if x[:1] == b"A" and x[5:11] == bytes(6)]
    assert from_snapshot, "the late joiner took no Add Order from the snapshot"
    late.apply_many(late_msgs, 1)
    assert _book_picture(late) == _book_picture(whole)


# ---------------------------------------------------------------------------------------
# The Python API poked with nonsense (C core in a subprocess: a crash must not kill pytest)
# ---------------------------------------------------------------------------------------

_API_SCRIPT = textwrap.dedent(
    r"""
    import sys, struct, faulthandler
    faulthandler.enable()
    from moldudp64.itch50.book import Book, new_core
    pure = sys.argv[1] == "1"
    def hdr(k, loc, ts): return k + struct.pack(">HH", loc, 0) + ts.to_bytes(6, "big")
    A = hdr(b"A", 1, 5) + struct.pack(">QcI", 1, b"B", 100) + b"AAA     " + struct.pack(">I", 1000)
    R = hdr(b"R", 1, 1) + b"AAA     " + b"QN" + struct.pack(">I", 100) + b"NCZ PNN1N" + struct.pack(">I", 0) + b"N"
    ok = (KeyError, ValueError, IndexError, OverflowError, TypeError, BufferError)
    calls = 0
    def boom(change):
        raise RuntimeError("user callback failed")
    b = Book(pure_python=pure, on_bbo=boom)
    try:
        b.apply_many([R, A], 1)
    except RuntimeError:
        pass
    b = Book(pure_python=pure)
    b.apply_many([R, A], 1)
    core = b.core
    probes = [
        lambda: b.levels("NOPE", "B"), lambda: b.levels("AAA", "X"), lambda: b.levels(70000, "B"),
        lambda: b.levels(-1, "B"), lambda: b.levels("AAA", "B", -5), lambda: b.levels("AAA", "B", 10**12),
        lambda: b.orders("AAA", "B", -1), lambda: b.orders("AAA", "B", 2**70), lambda: b.orders(65535, "S", 0),
        lambda: b.bbo(65536), lambda: b.bbo(-1), lambda: b.state(70000), lambda: b.state("NOPE"),
        lambda: b.order(-1), lambda: b.order(2**64), lambda: b.order(2**64 - 1),
        lambda: core.levels(1, 7, 3), lambda: core.levels(1, -1, 3), lambda: core.levels(2**40, 0, 3),
        lambda: core.orders(1, 9, 1000), lambda: core.names(-3), lambda: core.names(10**9),
        lambda: core.name_code(-1), lambda: core.name_code(10**6), lambda: core.state(-1),
        lambda: core.bbo(2**20), lambda: core.feed(None, 1), lambda: core.feed("text", 1),
        lambda: core.feed(b"\x00\x24" + A, -1), lambda: core.feed(b"\x00\x24" + A, 2**64),
        lambda: core.feed(memoryview(bytearray(b"\x00\x24" + A * 2))[::2], 1),
        lambda: b.apply(b""), lambda: b.apply(b"A"), lambda: b.apply(A, -7), lambda: b.apply_many([], 1),
        lambda: b.apply_many([A, None], 1), lambda: b.apply(bytearray(A), 3),
        lambda: new_core(depth=-1), lambda: new_core(depth=10**7), lambda: new_core(interval_ns=-1),
    ]
    for i, probe in enumerate(probes):
        try:
            probe()
        except ok:
            pass
        except Exception as e:
            print(f"probe {i}: {type(e).__name__}: {e}")
    # after all that the book still answers and is consistent
    bid, ask = b.bbo("AAA")
    print("bbo", bid, ask)
    """
)


@pytest.mark.parametrize("pure", [False, True], ids=["c", "python"])
def test_api_nonsense_arguments_raise_typed_errors(tmp_path: Path, pure: bool) -> None:
    """Queries for locates out of range, sides that are not B/S, negative or huge counts and
    prices, feeds of the wrong type or a strided buffer, a user callback that raises: a
    typed exception (KeyError, ValueError, IndexError, OverflowError, TypeError) or an
    empty answer, never a crash, and the book still answers afterwards."""
    script = tmp_path / "api.py"
    script.write_text(_API_SCRIPT)
    proc = subprocess.run(
        [sys.executable, str(script), "1" if pure else "0"],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert proc.returncode == 0, (proc.returncode, proc.stderr[-3000:])
    lines = proc.stdout.splitlines()
    assert [x for x in lines if x.startswith("probe")] == [], proc.stdout
    assert lines[-1].startswith("bbo Level(price=1000"), proc.stdout


# ---------------------------------------------------------------------------------------
# Running again, duplicates in a capture, --count, stopping a live book
# ---------------------------------------------------------------------------------------


def test_second_run_into_same_dir_does_not_mix(tmp_path: Path) -> None:
    """`book` twice into the same -o DIR: refused (exit 2, one line) or the tables are
    those of the second run alone, never the two runs' rows appended."""
    m = scenario()
    src = _write(tmp_path / "s.bin", binaryfile(m))
    out = tmp_path / "o"
    first = run_cli("book", str(src), "-o", str(out))
    assert first.returncode == 0, first.stderr
    before = read_rows(out / "bbo.parquet")
    again = run_cli("book", str(src), "-o", str(out))
    _no_crash(again)
    if again.returncode == 2:
        assert len([x for x in again.stderr.splitlines() if x.strip()]) == 1, again.stderr
    else:
        assert again.returncode == 0
    assert read_rows(out / "bbo.parquet") == before


def test_capture_with_every_packet_twice(tmp_path: Path) -> None:
    """A capture that holds every packet twice (A and B lines both recorded): each message
    builds the book once; the tables equal the reference's."""
    m = scenario()
    pk = _packets(m)
    doubled = [p for p in pk for _ in (0, 1)]
    cap = _pcap(
        tmp_path / "d.pcap", [*doubled, moldudp64_packet("S1", len(m) + 1, [])[:18] + b"\xff\xff"]
    )
    proc = run_cli("book", str(cap), "-o", str(tmp_path / "o"))
    _no_crash(proc)
    assert proc.returncode == 0, proc.stderr
    ref = RefBook().run(m)
    assert norm_bbo(read_rows(tmp_path / "o" / "bbo.parquet")) == ref.bbo_rows
    assert norm_trades(read_rows(tmp_path / "o" / "trades.parquet")) == ref.trade_rows


def _wait_for_feed(port: int, timeout: float = 30.0, min_seq: int = 1) -> None:
    """Return once a datagram with messages at or beyond ``min_seq`` reaches ``GROUP:port``
    (joined here, beside the book's own socket: each member gets its copy)."""
    import socket

    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((GROUP, port))
        mreq = socket.inet_aton(GROUP) + socket.inet_aton("127.0.0.1")
        sock.setsockopt(socket.IPPROTO_IP, socket.IP_ADD_MEMBERSHIP, mreq)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            sock.settimeout(max(0.01, deadline - time.monotonic()))
            data = sock.recv(65536)
            count = int.from_bytes(data[18:20], "big") if len(data) >= 20 else 0
            if 0 < count < 0xFFFF and int.from_bytes(data[10:18], "big") >= min_seq:
                return
        raise AssertionError(f"no data on {GROUP}:{port} in {timeout} s")
    finally:
        sock.close()


@pytest.mark.usefixtures("multicast")
def test_sigterm_leaves_readable_tables(day: Path, tmp_path: Path) -> None:
    """A live `book` stopped with SIGTERM while the feed runs: exit 130 (README), and the
    three Parquet files are complete and readable (a file without its footer is lost work)."""
    import signal

    port = free_port()
    out = tmp_path / "live"
    book = _start("book", f"{GROUP}:{port}", "--interface", "127.0.0.1", "-o", str(out))
    pub = None
    try:
        _wait_line(book, "joined")
        pub = _start(
            "publish",
            f"{GROUP}:{port}",
            "--interface",
            "127.0.0.1",
            "--session",
            "TEST000001",
            "--input",
            str(day),
            "--rate",
            "5000",
            "--linger",
            "0",
        )
        _wait_for_feed(port)  # the feed's data reach the group (not a fixed sleep: the
        time.sleep(1.0)  # publisher may take seconds to start on a loaded machine)
        book.send_signal(signal.SIGTERM)
        _, err = book.communicate(timeout=20)
    finally:
        for p in (book, pub):
            if p is not None and p.poll() is None:
                p.kill()
                p.communicate()
    assert book.returncode == 130, err
    assert "Traceback" not in err, err
    for t in ("bbo", "trades", "depth"):
        assert pq.read_table(table_path(out, t)).num_rows > 0, (t, err)


_TWIN_SCRIPT = textwrap.dedent(
    r"""
    import sys, struct, json
    from moldudp64.itch50.book import Book
    def hdr(k, loc, ts): return k + struct.pack(">HH", loc, 0) + ts.to_bytes(6, "big")
    A = hdr(b"A", 1, 5) + struct.pack(">QcI", 1, b"B", 100) + b"AAA     " + struct.pack(">I", 1000)
    R = hdr(b"R", 1, 1) + b"AAA     " + b"QN" + struct.pack(">I", 100) + b"NCZ PNN1N" + struct.pack(">I", 0) + b"N"
    out = {}
    for pure in (False, True):
        b = Book(pure_python=pure)
        b.apply_many([R, A], 1)
        probes = {
            "levels(70000)": lambda: b.levels(70000, "B"), "levels(-1)": lambda: b.levels(-1, "B"),
            "levels(count=10**12)": lambda: b.levels("AAA", "B", 10**12),
            "orders(price=2**70)": lambda: b.orders("AAA", "B", 2**70),
            "bbo(65536)": lambda: b.bbo(65536), "bbo(-1)": lambda: b.bbo(-1),
            "state(70000)": lambda: b.state(70000), "order(-1)": lambda: b.order(-1),
            "order(2**64)": lambda: b.order(2**64), "levels(side=X)": lambda: b.levels("AAA", "X"),
        }
        res = {}
        for name, probe in probes.items():
            try:
                res[name] = "returns " + repr(probe())[:60]
            except Exception as e:
                res[name] = "raises " + type(e).__name__
        out["python" if pure else "c"] = res
    print(json.dumps(out))
    """
)


def test_book_api_errors_same_with_either_core(tmp_path: Path) -> None:
    """Book(pure_python=True) and the default C-backed Book answer the same bad query the
    same way: code written and tested where no compiler was (pure Python) must not meet
    other exceptions in production (C). Seen: C raises ValueError/OverflowError where
    Python returns [] or None (locates out of 0..65535, negative or 2**64 references)."""
    script = tmp_path / "twin.py"
    script.write_text(_TWIN_SCRIPT)
    proc = subprocess.run(
        [sys.executable, str(script)], capture_output=True, text=True, timeout=60, check=False
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    res = json.loads(proc.stdout)
    differ = {
        k: (res["c"][k], res["python"][k]) for k in res["c"] if res["c"][k] != res["python"][k]
    }
    assert differ == {}, differ


# ---------------------------------------------------------------------------------------
# More of what a feed or a caller gets wrong
# ---------------------------------------------------------------------------------------


def test_extreme_field_values_equal_reference(tmp_path: Path) -> None:
    """Reference 2**64-1, match 2**64-1, a cross of 2**64-1 shares, price 0 and the largest
    Price(4), the last nanosecond a 6-byte timestamp holds, executions and cancels of 0
    shares: the tables carry every value exactly (uint64 columns, decimal prices)."""
    m = [
        msg_r(1, "AAA"),
        msg_a(1, 5, 2**64 - 1, "B", 7, "AAA", 0),
        msg_e(1, 6, 2**64 - 1, 3, 2**64 - 1),
        msg_q(1, 7, 2**64 - 1, "AAA", MAX_PRICE, 2**64 - 2, "O"),
        msg_a(1, 2**48 - 1, 5, "S", 1, "AAA", 0),
        msg_e(1, 2**48 - 1, 5, 0, 3),
        msg_x(1, 2**48 - 1, 5, 0),
        msg_b(1, 2**48 - 1, 2**64 - 1),
    ]
    assert_same_as_reference(tmp_path, m, depth=2)


def test_bookwriter_overlapping_batch_is_not_applied_twice(tmp_path: Path) -> None:
    """BookWriter.write(1, m[:10]) then write(5, m[4:]) (a source that repeats what it
    sent, as a resumed connection or a second line might): messages 5..10 must not build
    the book twice. A typed error or the repeat dropped are both fine; seen: applied again
    silently (executions twice, 2 "adds of a reference already resting"), no error, no
    book_state, 20 bbo rows where the feed has 17."""
    from moldudp64.itch50.book_tables import BookWriter

    m = scenario()
    w = BookWriter(tmp_path / "o")
    w.write("S1", 1, m[:10])
    try:
        w.write("S1", 5, m[4:])
    except (ValueError, RuntimeError):
        w.close()
        return
    w.close()
    ref = RefBook().run(m)
    assert norm_bbo(read_rows(tmp_path / "o" / "bbo.parquet")) == ref.bbo_rows
    assert norm_trades(read_rows(tmp_path / "o" / "trades.parquet")) == ref.trade_rows


def test_capture_starting_mid_session_says_what_it_did_not_see(tmp_path: Path) -> None:
    """A capture whose first packet is sequence 1000: the book never saw 1..999 (every
    order added then is missing), so it is unreliable from the start, which the issue says
    must be said (book_state, or at least a line on stderr naming 1..999), not exit 0 with
    only a summary. Seen: exit 0, no book_state, nothing said."""
    m = scenario()
    pk = [moldudp64_packet("S1", 1000 + i, m[i : i + 3]) for i in range(0, len(m), 3)]
    cap = _pcap(
        tmp_path / "c.pcap", [*pk, moldudp64_packet("S1", 1000 + len(m), [])[:18] + b"\xff\xff"]
    )
    proc = run_cli("book", str(cap), "-o", str(tmp_path / "o"))
    _no_crash(proc)
    rows = read_rows(tmp_path / "o" / "bbo.parquet")
    assert rows[0][0] >= 1000, "seq must be the MoldUDP64 sequence number"
    state_file = tmp_path / "o" / "book_state.parquet"
    said = state_file.exists() and any(
        r["first_seq"] <= 1 and r["last_seq"] >= 999 for r in pq.read_table(state_file).to_pylist()
    )
    said = said or "999" in proc.stderr or "starts at 1000" in proc.stderr
    assert said, proc.stderr


def _soup_login() -> bytes:
    payload = b"L" + b" " * 6 + b" " * 10 + b" " * 10 + b"1".rjust(20)
    return struct.pack(">H", len(payload)) + payload


def test_generated_day_invariants(day: Path) -> None:
    """The issue's invariants on a generated day, through the public Book: no reference the
    book does not hold, nothing executed or cancelled beyond what an order has, no crossed
    book at the close, and every level the sum of its orders."""
    book = Book()
    book.apply_many(_messages_of(day), 1)
    stats = book.stats()
    assert stats["unknown_orders"] == 0 and stats["overfills"] == 0, stats
    assert stats["duplicate_orders"] == 0 and stats["invalid"] == 0, stats
    for loc in book.core.locates():
        bid, ask = book.bbo(loc)
        if bid is not None and ask is not None:
            assert bid.price < ask.price, (loc, bid, ask)
        for side in ("B", "S"):
            for lv in book.levels(loc, side, 100_000):
                orders = book.orders(loc, side, lv.price)
                assert (lv.shares, lv.orders) == (sum(s for _, s in orders), len(orders))


@pytest.mark.parametrize("pure", [False, True], ids=["c", "python"])
def test_on_bbo_events_equal_the_reference_rows(pure: bool) -> None:
    """The live API's top-of-book events (on_bbo and apply's return) are the bbo table's
    rows: one per message that changed a best price, size or order count, same values."""
    m = scenario()
    seen: list[Any] = []
    book = Book(on_bbo=seen.append, pure_python=pure)
    returned = []
    for i, msg in enumerate(m, 1):
        returned.extend(book.apply(msg, i))
    assert returned == seen
    got = [
        (c.seq, c.timestamp, c.stock_locate, c.stock, c.bid_price, c.ask_price, c.bid_shares,
         c.ask_shares, c.bid_orders, c.ask_orders)
        for c in seen
    ]  # fmt: skip
    assert norm_bbo(got) == RefBook().run(m).bbo_rows


def test_on_bbo_with_symbols_only_for_those(tmp_path: Path) -> None:
    """Book(symbols={"CCC"}): events only for CCC, the same as the reference's for CCC."""
    m = scenario()
    seen: list[Any] = []
    book = Book(on_bbo=seen.append, symbols={"CCC"})
    book.apply_many(m, 1)
    got = [
        (c.seq, c.timestamp, c.stock_locate, c.stock, c.bid_price, c.ask_price, c.bid_shares,
         c.ask_shares, c.bid_orders, c.ask_orders)
        for c in seen
    ]  # fmt: skip
    assert norm_bbo(got) == RefBook(symbols={"CCC"}).run(m).bbo_rows
    assert book.bbo("AAA") is not None  # every book is kept all the same


def test_snapshot_carries_trading_state_and_directory(day: Path) -> None:
    """What a late joiner needs besides the orders: after snapshot + feed, each stock's
    trading state, Reg SHO action, market category and round lot, and the market's system
    event, are those of the whole day."""
    msgs = _messages_of(day)
    keys = ("trading_state", "reg_sho_action", "market_category", "round_lot_size", "system_event")
    cut = 3_000
    first = Book()
    first.apply_many(msgs[:cut], 1)
    snap = snapshot_messages(first.core, cut + 1)
    late = Book()
    late.apply_many(snap[:-1], 1)
    whole = Book()
    whole.apply_many(msgs[:cut], 1)
    for loc in whole.core.locates():
        w = whole.state(loc)
        lt = late.state(loc)
        assert {k: lt[k] for k in keys} == {k: w[k] for k in keys}, loc
