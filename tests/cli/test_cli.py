"""The moldudp64 command, end to end as a subprocess: inspect, help, and bad input.

The live commands (listen, publish, serve, demo) are in test_cli_live.py.
"""

from __future__ import annotations

import io
from pathlib import Path

import dpkt
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from capture_helpers import (
    SHARED_CAPTURES,
    ethernet,
    expected_rows,
    ipv4_udp,
    pcap_bytes,
    pcapng_bytes,
)
from cli_helpers import assert_one_line_error, jsonl, run
from moldudp64 import cli
from moldudp64.binaryfile import iter_binaryfile, write_binaryfile
from moldudp64.capture import CaptureReader
from moldudp64.cli import common, itchgen, sinks
from moldudp64.cli.inspect import _Inspector
from moldudp64.replay import MAX_SESSIONS
from moldudp64.wire import Packet, build_end_of_session, build_heartbeat, build_packet

ROWS = expected_rows()
FILES = sorted({row.file for row in ROWS})
SESSION = "TESTSESS01"


def msgs(first: int, n: int) -> list[bytes]:
    """Distinct messages for sequence numbers first..first+n-1."""
    return [b"A" + seq.to_bytes(8, "big") + bytes(seq % 7) for seq in range(first, first + n)]


def lossy_session_frames(vlans: tuple[int, ...] = ()) -> tuple[list[bytes], list[bytes]]:
    """Frames of a session with a gap (7..9), a duplicate packet, a heartbeat and an end of
    session; and the messages a receiver can deliver (1..6, 10..12)."""
    packets = [
        build_packet(SESSION, 1, msgs(1, 3)),
        build_packet(SESSION, 4, msgs(4, 3)),
        build_packet(SESSION, 10, msgs(10, 3)),
        build_packet(SESSION, 4, msgs(4, 3)),
        build_heartbeat(SESSION, 13),
        build_end_of_session(SESSION, 13),
    ]
    frames = [
        ethernet(ipv4_udp(p, dst=("239.5.5.5", 31000), ident=i), vlans)
        for i, p in enumerate(packets)
    ]
    return frames, msgs(1, 6) + msgs(10, 3)


# -- inspect on the shared captures ---------------------------------------------------------


@pytest.mark.parametrize("name", FILES)
def test_inspect_shared_capture_gives_wiresharks_messages(name: str) -> None:
    """The messages inspect writes are the ones Wireshark decodes (expected.tsv), in order."""
    rows = [r for r in ROWS if r.file == name]
    proc = run("inspect", str(SHARED_CAPTURES / name), "--output", "-", "--format", "jsonl")
    got = jsonl(proc.stdout)
    want = [(r.session, r.sequence + i, length) for r in rows for i, length in enumerate(r.lengths)]
    assert [(m["session"], m["seq"], m["length"]) for m in got] == want
    # The data is the capture's own bytes.
    frames = dpkt.pcap.Reader(io.BytesIO((SHARED_CAPTURES / name).read_bytes()))
    blocks = [
        bytes(m).hex()
        for _, frame in frames
        for m in Packet(bytes(dpkt.ethernet.Ethernet(frame).data.data.data))
    ]
    assert [m["data"] for m in got] == blocks
    gaps = len(rows) > 1 and rows[0].sequence + rows[0].count != rows[1].sequence
    assert proc.returncode == (3 if gaps else 0), proc.stderr
    assert b"Traceback" not in proc.stderr


def test_inspect_summary_of_multiple_packets() -> None:
    path = SHARED_CAPTURES / "Nasdaq.Equities.TotalView.Itch.v5.0/Multiple.Packets.pcap"
    proc = run("inspect", str(path), "--port", "26477")
    out = proc.stdout.decode()
    assert proc.returncode == 3
    assert "session '000010059B'  (233.54.12.111:26477)" in out
    assert "packets         2 (2 data, 0 heartbeats, 0 end of session)" in out
    assert "messages        39 delivered in order" in out
    assert "first sequence  14764496" in out
    assert "last sequence   19009154" in out
    assert "gaps left       1 range, 4244620 messages: 14764497-19009116" in out
    assert "14764497-19009116" in proc.stderr.decode()


def test_inspect_port_filter_finds_nothing_elsewhere() -> None:
    path = SHARED_CAPTURES / "Uqdf.Output.Utp.v1.5/QuoteShortFormMessage.pcap"
    proc = run("inspect", str(path), "--port", "1234")
    assert proc.returncode == 0
    assert "no MoldUDP64 packets found" in proc.stdout.decode()


# -- inspect on captures the tests make -----------------------------------------------------


@pytest.mark.parametrize(("fmt", "vlans"), [("pcapng", ()), ("pcap", (100,)), ("pcapng", (10, 20))])
def test_inspect_made_capture_with_gap(fmt: str, vlans: tuple[int, ...], tmp_path: Path) -> None:
    """A pcapng / VLAN-tagged / QinQ capture: messages in order, duplicates, heartbeat, end of
    session, and the gap reported; exit 3."""
    frames, delivered = lossy_session_frames(vlans)
    path = tmp_path / f"made.{fmt}"
    path.write_bytes((pcapng_bytes if fmt == "pcapng" else pcap_bytes)(frames))
    out_file = tmp_path / "out.bin"
    proc = run("inspect", str(path), "--output", str(out_file))
    text = proc.stdout.decode()
    assert proc.returncode == 3, proc.stderr
    assert list(iter_binaryfile(out_file)) == delivered
    assert f"session '{SESSION}'  (239.5.5.5:31000)" in text
    assert "packets         6 (4 data, 1 heartbeats, 1 end of session)" in text
    assert "messages        9 delivered in order" in text
    assert "first sequence  1\n" in text
    assert "last sequence   12\n" in text
    assert "duplicates      3 messages in 1 packets" in text
    assert "end of session  yes" in text
    assert "gaps left       1 range, 3 messages: 7-9" in text
    assert "7-9" in proc.stderr.decode()


def test_inspect_complete_session_exits_0(tmp_path: Path) -> None:
    packets = [build_packet(SESSION, 1 + 5 * i, msgs(1 + 5 * i, 5)) for i in range(20)]
    packets.append(build_end_of_session(SESSION, 101))
    path = tmp_path / "ok.pcap"
    path.write_bytes(pcap_bytes([ethernet(ipv4_udp(p)) for p in packets]))
    proc = run("inspect", str(path), "--output", "-", "--format", "text")
    assert proc.returncode == 0, proc.stderr
    lines = proc.stdout.decode().splitlines()
    assert len(lines) == 100
    assert lines[0].split()[:4] == [SESSION, "1", "10", "A"]
    assert "gaps left       none" in proc.stderr.decode()  # summary moves to stderr


def test_inspect_two_sessions(tmp_path: Path) -> None:
    """Sessions are reported apart; --session picks one; a BinaryFILE holds only one."""
    other = "OTHERSESS2"
    packets = []
    for i in range(4):
        packets.append(build_packet(SESSION, 1 + 2 * i, msgs(1 + 2 * i, 2)))
        packets.append(build_packet(other, 100 + i, [b"x%d" % i]))
    path = tmp_path / "two.pcap"
    path.write_bytes(pcap_bytes([ethernet(ipv4_udp(p)) for p in packets]))
    proc = run("inspect", str(path), "--output", "-", "--format", "jsonl")
    assert proc.returncode == 0
    got = jsonl(proc.stdout)
    assert [(m["session"], m["seq"]) for m in got if m["session"] == other] == [
        (other, 100 + i) for i in range(4)
    ]
    assert [m["seq"] for m in got if m["session"] == SESSION] == list(range(1, 9))
    err = proc.stderr.decode()
    assert f"session '{SESSION}'" in err
    assert f"session '{other}'" in err

    proc = run("inspect", str(path), "--session", other, "--output", "-", "--format", "jsonl")
    assert [m["session"] for m in jsonl(proc.stdout)] == [other] * 4
    assert f"4 packets of 1 other session skipped: '{SESSION}'" in proc.stderr.decode()

    out = tmp_path / "one.bin"
    proc = run("inspect", str(path), "--output", str(out))
    assert list(iter_binaryfile(out)) == msgs(1, 8)
    assert f"4 messages of session '{other}' not written" in proc.stderr.decode()


def test_inspect_other_sessions_table_is_bounded(tmp_path: Path) -> None:
    """A capture of thousands of sessions filtered by --session keeps a bounded table."""
    packets = [build_packet(SESSION, 1, msgs(1, 1))]
    packets += [build_packet(f"X{i:09d}", 1, [b"x"]) for i in range(MAX_SESSIONS + 50)]
    path = tmp_path / "many.pcap"
    path.write_bytes(pcap_bytes([ethernet(ipv4_udp(p)) for p in packets]))
    proc = run("inspect", str(path), "--session", SESSION)
    assert proc.returncode == 0
    note = f"{MAX_SESSIONS + 50} packets of {MAX_SESSIONS}+ other sessions skipped: "
    assert note in proc.stdout.decode()


def test_inspect_ignores_other_udp_and_requests(tmp_path: Path) -> None:
    from moldudp64.wire import RetransmissionPacket

    frames = [
        ethernet(ipv4_udp(b"\x12\x34" + b"\x00" * 30, dst=("10.0.0.9", 53))),  # not MoldUDP64
        ethernet(ipv4_udp(build_packet(SESSION, 1, msgs(1, 2)))),
        ethernet(ipv4_udp(RetransmissionPacket(SESSION, 1, 2).build(), dst=("10.0.0.2", 9))),
        ethernet(ipv4_udp(build_packet(SESSION, 3, msgs(3, 2)))),
    ]
    path = tmp_path / "mix.pcap"
    path.write_bytes(pcap_bytes(frames))
    proc = run("inspect", str(path))
    out = proc.stdout.decode()
    assert proc.returncode == 0, proc.stderr
    assert "1 UDP datagrams that are not MoldUDP64" in out
    assert "re-requests     1" in out
    assert "messages        4 delivered in order" in out


def test_inspect_fragmented_datagrams(tmp_path: Path) -> None:
    from capture_helpers import fragment

    big = build_packet(SESSION, 1, msgs(1, 300))  # about 4.5 kB: 4 fragments
    frames = [ethernet(f) for f in fragment(ipv4_udp(big), 1480)]
    lost = fragment(ipv4_udp(build_packet(SESSION, 301, msgs(301, 200)), ident=2), 1480)
    frames += [ethernet(f) for f in lost[:-1]]  # never completed
    frames.append(ethernet(ipv4_udp(build_packet(SESSION, 501, msgs(501, 1)), ident=3)))
    path = tmp_path / "frag.pcap"
    path.write_bytes(pcap_bytes(frames))
    proc = run("inspect", str(path))
    out = proc.stdout.decode()
    assert proc.returncode == 3
    assert "1 datagrams reassembled from fragments" in out
    assert "1 fragmented datagrams never completed" in out
    assert "gaps left       1 range, 200 messages: 301-500" in out


# -- inspect on a BinaryFILE ----------------------------------------------------------------


def test_inspect_binaryfile(tmp_path: Path) -> None:
    path = tmp_path / "feed.NASDAQ_ITCH50"
    messages = list(cli.generate_itch(500, seed=3))
    write_binaryfile(path, messages)
    proc = run("inspect", str(path))
    out = proc.stdout.decode()
    assert proc.returncode == 0, proc.stderr
    assert f"BinaryFILE, {path.stat().st_size} bytes, 500 messages" in out
    assert "sequence        1..500" in out
    assert "message types   A " in out
    proc = run(
        "inspect",
        str(path),
        "--session",
        SESSION,
        "--start-seq",
        "1000",
        "-o",
        "-",
        "--format",
        "jsonl",
    )
    got = jsonl(proc.stdout)
    assert [bytes.fromhex(str(m["data"])) for m in got] == messages
    assert got[0]["seq"] == 1000 and got[-1]["seq"] == 1499
    assert {m["session"] for m in got} == {SESSION}


def test_inspect_truncated_binaryfile_is_an_error(tmp_path: Path) -> None:
    path = tmp_path / "cut.bin"
    path.write_bytes(b"\x00\x03abc\x00\x05ab")
    line = assert_one_line_error(run("inspect", str(path)))
    assert "truncated message at byte offset 5" in line


def test_generate_itch_shapes() -> None:
    got = list(cli.generate_itch(2000, seed=1))
    # a day: system events "start of messages" first, "end of messages" last
    assert got[0][:1] + got[0][-1:] == b"SO" and got[-1][:1] + got[-1][-1:] == b"SC"
    assert all(len(m) == itchgen.ITCH_LENGTHS[m[:1]] for m in got)
    assert got == list(cli.generate_itch(2000, seed=1))
    assert got != list(cli.generate_itch(2000, seed=2))


# -- bad input: one line, exit 2 -------------------------------------------------------------


@pytest.mark.parametrize(
    ("args", "needle"),
    [
        (["inspect", "/nonexistent/file.pcap"], "No such file"),
        (["inspect", "/"], "directory"),
        (["inspect", "x.pcap", "--port", "70000"], "port must be 0..65535"),
        (["inspect", "x.pcap", "--port", "abc"], "not a port number"),
        (["inspect", "x.pcap", "--session", "WAYTOOLONGSESSION"], "longer than 10"),
        (["inspect", "x.pcap", "--format", "xml"], "invalid choice"),
        (["inspect"], "required"),
        (["frobnicate"], "invalid choice"),
        ([], "required"),
    ],
)
def test_bad_usage_one_line_exit_2(args: list[str], needle: str) -> None:
    line = assert_one_line_error(run(*args))
    assert needle in line


@pytest.mark.parametrize(
    ("label", "data"),
    [
        ("pcapng garbage", b"\x0a\x0d\x0d\x0a" + b"\xff" * 40),
        ("unsupported link", pcap_bytes([b"x"], linktype=105)),
    ],
)
def test_unreadable_captures_one_line_exit_2(label: str, data: bytes, tmp_path: Path) -> None:
    path = tmp_path / "bad.pcap"
    path.write_bytes(data)
    line = assert_one_line_error(run("inspect", str(path)))
    assert "bad.pcap" in line, label


def test_unwritable_output_one_line_exit_2(tmp_path: Path) -> None:
    path = SHARED_CAPTURES / FILES[0]
    line = assert_one_line_error(run("inspect", str(path), "-o", str(tmp_path / "no" / "x.bin")))
    assert "cannot write" in line


def test_help_has_examples() -> None:
    proc = run("--help")
    assert proc.returncode == 0
    text = proc.stdout.decode()
    assert "examples:" in text and "moldudp64 demo" in text
    for command in ("inspect", "listen", "publish", "serve", "demo"):
        assert command in text
        sub = run(command, "--help")
        assert sub.returncode == 0, command
        assert "examples:" in sub.stdout.decode(), command


def test_verbose_logs_debug() -> None:
    path = SHARED_CAPTURES / FILES[0]
    proc = run("inspect", "-v", str(path))
    assert proc.returncode == 0
    assert "DEBUG" in proc.stderr.decode()


def test_python_dash_m_and_version() -> None:
    proc = run("--version")
    assert proc.returncode == 0 and proc.stdout.startswith(b"moldudp64 ")


def test_progress_bar_on_a_terminal(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    """In process: with stderr a terminal and a large file, tqdm draws a bar on stderr."""
    frames = [ethernet(ipv4_udp(build_packet(SESSION, 1 + i, msgs(1 + i, 1)))) for i in range(5000)]
    path = tmp_path / "big.pcap"
    path.write_bytes(pcap_bytes(frames))
    monkeypatch.setattr(common, "_stderr_is_terminal", lambda: True)
    monkeypatch.setattr(common, "PROGRESS_MIN_BYTES", 1)
    assert cli.main(["inspect", str(path)]) == 0
    captured = capsys.readouterr()
    assert "inspecting" in captured.err
    assert "messages        5000 delivered in order" in captured.out


def test_inspect_binary_session_name_with_port(tmp_path: Path) -> None:
    """A session name that is not printable is recognised only when --port says where."""
    name = b"\x01\x02BINARY\xff\x00"
    frames = [
        ethernet(ipv4_udp(build_packet(name, 1 + 2 * i, msgs(1 + 2 * i, 2)))) for i in range(3)
    ]
    path = tmp_path / "binary.pcap"
    path.write_bytes(pcap_bytes(frames))
    proc = run("inspect", str(path))
    assert proc.returncode == 0
    assert "3 UDP datagrams that are not MoldUDP64" in proc.stdout.decode()
    out = tmp_path / "o.bin"
    proc = run("inspect", str(path), "--port", "5000", "-o", str(out))
    assert proc.returncode == 0, proc.stderr.decode()
    assert "messages        6 delivered in order" in proc.stdout.decode()
    assert list(iter_binaryfile(out)) == msgs(1, 6)


def test_text_output_escapes_binary_session(tmp_path: Path) -> None:
    name = b"\x01\x02BINARY\xff\x00"
    path = tmp_path / "binary.pcap"
    path.write_bytes(pcap_bytes([ethernet(ipv4_udp(build_packet(name, 1, msgs(1, 2))))]))
    proc = run("inspect", str(path), "--port", "5000", "-o", "-", "--format", "text")
    assert proc.returncode == 0, proc.stderr.decode()
    lines = proc.stdout.decode("ascii").splitlines()
    assert lines[0].startswith("\\x01\\x02BINARY\\xff\\x00            1    10  A")


@settings(max_examples=40, deadline=None)
@given(
    sizes=st.lists(st.integers(1, 5), min_size=1, max_size=40),
    data=st.data(),
)
def test_inspect_property_delivers_exactly_what_the_capture_holds(
    sizes: list[int], data: st.DataObject
) -> None:
    """Any capture of one session with packets dropped, duplicated and locally reordered:
    inspect writes every message present in the capture once, in order, and reports
    exactly the missing ones as gaps (the capture's start is its first packet)."""
    packets, seq = [], 1
    for n in sizes:
        packets.append((seq, build_packet(SESSION, seq, msgs(seq, n))))
        seq += n
    keep = [p for p in packets if data.draw(st.booleans(), label="keep") or p is packets[0]]
    dups = [p for p in keep if data.draw(st.integers(0, 9), label="dup") == 0]
    order = keep + dups
    swaps = data.draw(st.lists(st.integers(0, max(0, len(order) - 2)), max_size=5), label="swap")
    for i in swaps:
        if i + 1 < len(order) and order[i] is not packets[0] and order[i + 1] is not packets[0]:
            order[i], order[i + 1] = order[i + 1], order[i]
    frames = [ethernet(ipv4_udp(p)) for _, p in order]
    present = {s for s0, p in keep for s in range(s0, s0 + len(Packet(p)))}
    first, last = min(present), max(present)

    sink = sinks.TextSink(io.StringIO())
    written: list[tuple[int, bytes]] = []
    sink.write = lambda session, seq_num, ms: written.extend(  # type: ignore[method-assign]
        (seq_num + i, m) for i, m in enumerate(ms)
    )
    inspector = _Inspector(None, sink)
    reader = CaptureReader(io.BytesIO(pcap_bytes(frames)))
    inspector.feed(reader.tuples(), None)
    (report,) = inspector.sessions.values()
    assert written == [(s, msgs(s, 1)[0]) for s in sorted(present)]
    missing = [s for s in range(first, last + 1) if s not in present]
    lost = [s for a, b in report.lost for s in range(a, b + 1)]
    assert lost == missing
    assert (report.first_seq, report.last_seq) == (first, last)


@pytest.mark.parametrize("output", [False, True])
def test_inspect_same_report_every_way(
    output: bool,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """inspect's report (and messages) are the same through the C capture scanner and
    the pure-Python reader, with the receiver's batched fast path and without it (one
    receive_datagram call per datagram), over sessions interleaved, loss, duplicates,
    reordering, heartbeats, requests, other UDP, VLAN tags and a second group."""
    import random

    from moldudp64 import capture, receiver
    from moldudp64.receiver import ReceiverCore
    from moldudp64.wire import RetransmissionPacket

    rng = random.Random(5)
    frames = []
    seqs = {SESSION: 1, "OTHERSESS2": 1}
    for i in range(3000):
        name = SESSION if rng.random() < 0.8 else "OTHERSESS2"
        n = rng.randint(1, 4)
        packet = build_packet(name, seqs[name], msgs(seqs[name], n))
        seqs[name] += n
        roll = rng.random()
        if roll < 0.02:
            continue  # lost
        dst = ("239.5.5.5", 31000) if rng.random() < 0.9 else ("239.5.5.6", 31000)
        frame = ethernet(ipv4_udp(packet, dst=dst, ident=i), (7,) if roll > 0.995 else ())
        frames.append(frame)
        if roll < 0.03 and len(frames) > 2:
            frames[-1], frames[-3] = frames[-3], frames[-1]
        elif roll < 0.04:
            frames.append(frame)
        elif roll < 0.045:
            frames.append(ethernet(ipv4_udp(build_heartbeat(name, seqs[name]))))
        elif roll < 0.05:
            request = RetransmissionPacket(name, max(1, seqs[name] - 5), 2).build()
            frames.append(ethernet(ipv4_udp(request, dst=("10.0.0.2", 9))))
        elif roll < 0.055:
            frames.append(ethernet(ipv4_udp(b"\x12\x34" * 20, dst=("10.0.0.9", 53))))
    frames.append(ethernet(ipv4_udp(build_end_of_session(SESSION, seqs[SESSION]))))
    path = tmp_path / "mixed.pcap"
    path.write_bytes(pcap_bytes(frames))
    args = ["inspect", str(path)] + (["--output", "-", "--format", "jsonl"] if output else [])

    def report() -> tuple[int, str, str]:
        code = cli.main(args)
        got = capsys.readouterr()
        return code, got.out, got.err

    want = report()
    assert f"session '{SESSION}'" in (want[2] if output else want[1])
    with monkeypatch.context() as m:
        m.setattr(capture, "_scan", None)
        m.setattr(receiver, "_parse_or_none", receiver._parse_blocks_or_none)
        assert report() == want
    with monkeypatch.context() as m:
        m.setattr(ReceiverCore, "receive_in_order", lambda self, data, start, src, now: start)
        assert report() == want
