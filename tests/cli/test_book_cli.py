"""``moldudp64 book`` end to end as a subprocess: a generated day from a BinaryFILE, a capture
and a live lossy feed gives the reference book's tables row for row with exactly the
issue's columns; real captures go through; losses are named in book_state (exit 3);
bad input is one line."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import pyarrow.parquet as pq
import pytest

from capture_helpers import SHARED_CAPTURES
from cli_helpers import (
    GROUP,
    QUICK_END,
    SESSION,
    assert_one_line_error,
    finish,
    free_port,
    run,
    start,
)
from itch50_bookref import reference_tables
from moldudp64.binaryfile import write_binaryfile
from moldudp64.cli import main
from moldudp64.cli.itchgen import generate_itch

COLUMNS = {
    "bbo": ["seq", "timestamp", "stock_locate", "stock", "bid_price", "ask_price",
            "bid_shares", "ask_shares", "bid_orders", "ask_orders"],
    "trades": ["seq", "timestamp", "stock_locate", "stock", "kind", "price", "shares",
               "side", "order_reference_number", "match_number", "printable"],
}  # fmt: skip


def depth_columns(levels: int) -> list[str]:
    names = ["seq", "timestamp", "stock_locate", "stock"]
    for i in range(levels):
        names += [f"{p}_{i}" for p in ("bid_price", "bid_shares", "bid_orders", "ask_price",
                                       "ask_shares", "ask_orders")]  # fmt: skip
    return names


def tables(directory: Path) -> dict[str, list[dict[str, Any]]]:
    """The three tables as rows (depth: its directory of part files, one dataset)."""
    paths = {"bbo": directory / "bbo.parquet", "trades": directory / "trades.parquet",
             "depth": directory / "depth"}  # fmt: skip
    return {name: pq.read_table(path).to_pylist() for name, path in paths.items()}


def test_a_generated_day_from_a_binaryfile_equals_the_reference(tmp_path: Path) -> None:
    messages = list(generate_itch(20_000, seed=3))
    day = tmp_path / "day.bin"
    write_binaryfile(day, messages)
    out = tmp_path / "book"
    proc = run("book", str(day), "-o", str(out), "--depth", "4", "--start-seq", "11")
    assert proc.returncode == 0, proc.stderr.decode()
    assert "20000 messages" in proc.stderr.decode()
    schema = {name: pq.read_schema(out / f"{name}.parquet") for name in ("bbo", "trades")}
    schema["depth"] = pq.read_schema(out / "depth" / "part-000000.parquet")
    assert schema["bbo"].names == COLUMNS["bbo"]
    assert schema["trades"].names == COLUMNS["trades"]
    assert schema["depth"].names == depth_columns(4)
    assert str(schema["bbo"].field("bid_price").type) == "decimal128(10, 4)"
    assert str(schema["bbo"].field("seq").type) == "uint64"
    assert str(schema["bbo"].field("bid_orders").type) == "uint32"
    assert tables(out) == reference_tables(messages, depth=4, first_seq=11)
    # depth: min/max for the columns a reader filters on, none for the level columns
    chunks = pq.ParquetFile(out / "depth" / "part-000000.parquet").metadata.row_group(0)
    stats = {chunks.column(i).path_in_schema: chunks.column(i).is_stats_set
             for i in range(chunks.num_columns)}  # fmt: skip
    assert stats["seq"] and stats["timestamp"] and stats["stock"]
    assert not stats["bid_price_0"] and not stats["ask_orders_3"]


def test_symbols_interval_and_tables_options(tmp_path: Path) -> None:
    messages = list(generate_itch(20_000, seed=4))
    day = tmp_path / "day.bin"
    write_binaryfile(day, messages)
    stocks = {row["stock"] for row in reference_tables(messages, depth=0)["bbo"]}
    some = sorted(stocks)[:2]
    out = tmp_path / "book"
    proc = run("book", str(day), "-o", str(out), "--symbols", ",".join(some),
               "--interval", "0.01", "--depth", "20", "--tables", "depth,bbo")  # fmt: skip
    assert proc.returncode == 0, proc.stderr.decode()
    assert sorted(p.name for p in out.iterdir()) == ["bbo.parquet", "depth"]
    depth = pq.read_table(out / "depth")
    assert depth.schema.names == depth_columns(20)
    assert set(depth.column("stock").to_pylist()) == set(some)
    stamps = depth.column("timestamp").to_pylist()
    assert stamps and all(t % 10_000_000 == 0 for t in stamps)
    bbo = pq.read_table(out / "bbo.parquet").to_pylist()
    assert bbo == reference_tables(messages, depth=0, symbols=set(some))["bbo"]


needs_shared = pytest.mark.skipif(
    not SHARED_CAPTURES.is_dir(), reason=f"shared captures not found at {SHARED_CAPTURES}"
)


@needs_shared
def test_real_captures_go_through(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    for i, capture in enumerate(sorted(SHARED_CAPTURES.glob("*/*.pcap"))):
        out = tmp_path / f"out{i}"
        code = main(["book", str(capture), "-o", str(out)])  # in-process: 15 of them
        err = capsys.readouterr().err
        assert "moldudp64 book: session" in err
        if capture.name == "Multiple.Packets.pcap":  # two packets far apart: a real gap
            assert code == 3, err
            state = pq.read_table(out / "book_state.parquet").to_pylist()
            # the capture starts mid-session (never saw 1..14764495), then a real loss
            assert [(r["first_seq"], r["last_seq"]) for r in state] == [
                (1, 14764495),
                (14764497, 19009116),
            ]
            assert "before the source's first message" in state[0]["state"]
            assert "messages 1-14764495 were never seen" in err
            assert len(pq.read_table(out / "depth")) > 0
        else:
            assert code == 0, err
        assert {"bbo.parquet", "trades.parquet", "depth"} <= {p.name for p in out.iterdir()}
    executed = tmp_path / "out"
    proc = run("book", str(SHARED_CAPTURES / "Nasdaq.Equities.TotalView.Itch.v5.0/"
                    "OrderExecutedMessage.pcap"), "-o", str(executed))  # fmt: skip
    assert proc.returncode == 0, proc.stderr.decode()
    trades = pq.read_table(executed / "trades.parquet").to_pylist()
    assert len(trades) == 1 and trades[0]["kind"] == "E"
    assert trades[0]["price"] is None  # the order was added before the capture began


def start_book(*args: str) -> Any:
    proc = start("book", *QUICK_END, *args)
    assert proc.stderr is not None
    line = proc.stderr.readline().decode()
    assert "joined" in line, line + proc.stderr.read().decode()
    return proc


def test_a_live_lossy_feed_with_recovery_equals_the_reference(
    multicast: None, tmp_path: Path
) -> None:
    port = free_port()
    out = tmp_path / "book"
    book = start_book(
        f"{GROUP}:{port}", "-o", str(out), "--depth", "3",
        "--request-server", f"127.0.0.1:{port + 1}", "--idle-timeout", "20",
    )  # fmt: skip
    pub = run(
        "publish", f"{GROUP}:{port}", "--session", SESSION, "--generate", "8000",
        "--seed", "5", "--drop", "0.05", "--request-port", str(port + 1),
        "--end-of-session-duration", "1",
    )  # fmt: skip
    code, err = finish(book)
    assert pub.returncode == 0, pub.stderr.decode()
    assert code == 0, err
    assert "8000 messages" in err
    assert tables(out) == reference_tables(list(generate_itch(8000, seed=5)), depth=3)
    assert not (out / "book_state.parquet").exists()


def test_a_loss_not_recovered_is_named_in_book_state(multicast: None, tmp_path: Path) -> None:
    port = free_port()
    out = tmp_path / "book"
    book = start_book(f"{GROUP}:{port}", "-o", str(out), "--idle-timeout", "3")
    time.sleep(0.2)
    pub = run(
        "publish", f"{GROUP}:{port}", "--session", SESSION, "--generate", "5000",
        "--seed", "6", "--drop", "0.02", "--end-of-session-duration", "1",
    )  # fmt: skip
    code, err = finish(book)
    assert pub.returncode == 0, pub.stderr.decode()
    assert code == 3, err
    assert "every book unreliable from" in err
    state = pq.read_table(out / "book_state.parquet").to_pylist()
    assert state and all(r["session"].strip() == SESSION for r in state)
    lost = sum(r["messages"] for r in state)
    assert lost == sum(r["last_seq"] - r["first_seq"] + 1 for r in state) > 0


@pytest.mark.parametrize(
    ("args", "needle"),
    [
        (("nowhere.bin", "-o", "x"), "no such file"),
        (("{day}", "-o", "{out}", "--depth", "0"), "depth"),
        (("{day}", "-o", "{out}", "--tables", "quotes"), "tables are"),
        (("{day}", "-o", "{out}", "--symbols", ","), "symbols"),
        (("{day}", "-o", "{out}", "--request-server", "127.0.0.1:9"), "live GROUP:PORT"),
        (("{day}", "-o", "{out}", "--end-confirm", "0.3"), "live GROUP:PORT"),
        (("nats://127.0.0.1:1/FEED", "-o", "{out}", "--end-confirm", "0.3"), "nats://"),
        (("udp://127.0.0.1:1", "-o", "{out}"), "not supported"),
    ],
)
def test_bad_input_is_one_line(tmp_path: Path, args: tuple[str, ...], needle: str) -> None:
    day = tmp_path / "day.bin"
    write_binaryfile(day, list(generate_itch(10)))
    filled = [a.format(day=day, out=tmp_path / "out") for a in args]
    line = assert_one_line_error(run("book", *filled))
    assert needle in line, line
    assert not (tmp_path / "out").exists()  # refused before any table was written


def test_a_file_cut_inside_a_message_keeps_what_came_before(tmp_path: Path) -> None:
    messages = list(generate_itch(3000, seed=8))
    day = tmp_path / "day.bin"
    write_binaryfile(day, messages)
    day.write_bytes(day.read_bytes()[:-7])
    out = tmp_path / "book"
    proc = run("book", str(day), "-o", str(out), "--depth", "2")
    err = proc.stderr.decode()
    assert proc.returncode == 2 and "ends inside a message" in err and "Traceback" not in err
    assert tables(out) == reference_tables(messages[:-1], depth=2)


def test_a_session_stored_in_jetstream(multicast: None, tmp_path: Path) -> None:
    """bridge a lossy feed into JetStream, then book nats://...: the reference's tables."""
    pytest.importorskip("nats", reason="nats-py is not installed (pip install '.[test]')")
    from nats_support import nats_server

    with nats_server(tmp_path / "js") as url:
        port = free_port()
        bridge = start(
            "bridge", *QUICK_END, f"{GROUP}:{port}", "--nats", url, "--stream", "FEED",
            "--request-server", f"127.0.0.1:{port + 1}", "--idle-timeout", "20",
        )  # fmt: skip
        try:
            time.sleep(1.0)  # joined
            pub = run(
                "publish", f"{GROUP}:{port}", "--session", SESSION, "--generate", "4000",
                "--seed", "7", "--drop", "0.05", "--request-port", str(port + 1),
                "--end-of-session-duration", "1",
            )  # fmt: skip
            assert pub.returncode == 0, pub.stderr.decode()
            code, err = finish(bridge, timeout=30)
            assert code == 0, err
        finally:
            bridge.kill()
            bridge.wait()
        out = tmp_path / "book"
        proc = run("book", f"{url}/FEED", "-o", str(out), "--depth", "2")
        assert proc.returncode == 0, proc.stderr.decode()
    assert tables(out) == reference_tables(list(generate_itch(4000, seed=7)), depth=2)


def test_a_soupbintcp_session(tmp_path: Path) -> None:
    """serve --soup-port a recorded day, book soup://...: the reference's tables."""
    import re

    messages = list(generate_itch(6000, seed=9))
    day = tmp_path / "day.bin"
    write_binaryfile(day, messages)
    server = start("serve", "--input", str(day), "--session", "SOUP01", "--soup-port", "0",
                   "--soup-addr", "127.0.0.1")  # fmt: skip
    try:
        assert server.stderr is not None
        line = server.stderr.readline().decode()
        found = re.search(r"over SoupBinTCP on 127\.0\.0\.1:(\d+)", line)
        assert found, line
        out = tmp_path / "book"
        proc = run("book", f"soup://127.0.0.1:{found.group(1)}", "-o", str(out), "--depth", "2")
        assert proc.returncode == 0, proc.stderr.decode()
    finally:
        server.terminate()
        server.communicate(timeout=10)
    assert tables(out) == reference_tables(messages, depth=2)


def book_state(path: Path) -> tuple[Any, ...]:
    """Every stock's name, levels and orders in priority after applying a BinaryFILE."""
    from moldudp64.itch50.book import new_core

    core = new_core(0)
    core.feed(path.read_bytes(), 1)
    names = core.names(0)
    out = []
    for locate in core.locates():
        code = core.name_code(locate)
        levels = [core.levels(locate, side, 1 << 20) for side in (0, 1)]
        if code < 0 and not any(levels):
            continue
        orders = [[core.orders(locate, side, p) for p, _, _ in levels[side]] for side in (0, 1)]
        out.append((locate, names[code] if code >= 0 else None, levels, orders))
    return tuple(out)


#: What serves snapshots of a live feed: ``book`` (its tables too), ``gateway`` (the feed
#: over SoupBinTCP too); each joins the feed with re-requests and announces its snapshots.
SNAPSHOT_SERVERS = {
    "book": ("book", "{feed}", "-o", "{dir}/book"),
    "gateway": ("gateway", "{feed}", "--soup-port", "0", "--soup-addr", "127.0.0.1"),
}


@pytest.mark.parametrize("server", sorted(SNAPSHOT_SERVERS))
def test_a_late_joiner_from_a_snapshot_builds_the_same_book(
    multicast: None, tmp_path: Path, server: str
) -> None:
    """book (or gateway) --snapshot-port on the live feed; listen --snapshot joins mid-day:
    its snapshot then the feed build the same book as the whole day does."""
    import re
    import socket

    from moldudp64.wire import Packet

    total = 30_000
    port = free_port()
    args = [a.format(feed=f"{GROUP}:{port}", dir=tmp_path) for a in SNAPSHOT_SERVERS[server]]
    serving = start(
        args[0], *QUICK_END, *args[1:], "--snapshot-port", "0",
        "--request-server", f"127.0.0.1:{port + 1}", "--idle-timeout", "20",
    )  # fmt: skip
    assert serving.stderr is not None
    said = ""
    while "joined" not in said:
        line = serving.stderr.readline().decode()
        assert line, said + serving.stderr.read().decode()
        said += line
    found = re.search(r"snapshots on (soup://127\.0\.0\.1:\d+)", said)
    assert found, said
    watch = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    watch.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    watch.bind((GROUP, port))
    watch.setsockopt(socket.IPPROTO_IP, socket.IP_ADD_MEMBERSHIP,
                     socket.inet_aton(GROUP) + socket.inet_aton("0.0.0.0"))  # fmt: skip
    watch.settimeout(20)
    publisher = start(
        "publish", f"{GROUP}:{port}", "--session", SESSION, "--generate", str(total),
        "--seed", "12", "--rate", "10000", "--request-port", str(port + 1),
        "--end-of-session-duration", "1",
    )  # fmt: skip
    try:
        while Packet(watch.recv(65536)).seq_num <= 8_000:  # the feed is well under way
            pass
        late = run("listen", f"{GROUP}:{port}", "--snapshot", found.group(1),
                   "--request-server", f"127.0.0.1:{port + 1}", "--idle-timeout", "20",
                   "-o", str(tmp_path / "late.bin"))  # fmt: skip
        assert late.returncode == 0, late.stderr.decode()
        assert "snapshot:" in late.stderr.decode()
        if server == "gateway":  # serves until stopped, once it has the whole session
            while "serving them until stopped" not in said:
                line = serving.stderr.readline().decode()
                assert line, said
                said += line
            serving.terminate()
        code, err = finish(serving)
        assert code == 0, err
        if server == "gateway":
            assert "feed session ended" in err and "snapshots: 1 connection, 1 login" in err
    finally:
        watch.close()
        publisher.kill()
        publisher.wait()
        serving.kill()
        serving.wait()
    whole = tmp_path / "whole.bin"
    write_binaryfile(whole, generate_itch(total, seed=12))
    late_file = tmp_path / "late.bin"
    assert late_file.stat().st_size < whole.stat().st_size  # it did join late
    assert book_state(late_file) == book_state(whole)


def test_a_feed_that_goes_quiet_before_its_end_exits_4(multicast: None, tmp_path: Path) -> None:
    """No end of session seen (here: no feed at all): never reported as complete."""
    port = free_port()
    book = start_book(f"{GROUP}:{port}", "-o", str(tmp_path / "book"), "--idle-timeout", "0.5")
    code, err = finish(book)
    assert code == 4, err
    assert "idle for 0.5 s without the session's end" in err
