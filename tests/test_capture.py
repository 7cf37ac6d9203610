"""capture.py: reading pcap/pcapng (every link type, VLANs, fragments), recognising
MoldUDP64, writing pcaps that tshark decodes, and clean errors on bad files."""

from __future__ import annotations

import io
import shutil
import struct
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import dpkt
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from capture_helpers import (
    SHARED_CAPTURES,
    ethernet,
    expected_rows,
    fragment,
    ipv4_udp,
    ipv6_frame,
    mutated_capture,
    pcap_bytes,
    pcapng_bytes,
    sll,
    sll2,
    udp_bytes,
)
from moldudp64.capture import (
    CaptureDamaged,
    CaptureReader,
    CaptureWriter,
    FileKind,
    detect_file_kind,
    is_moldudp64,
    read_datagrams,
)
from moldudp64.exceptions import CaptureError, MoldUDP64Error
from moldudp64.wire import (
    Packet,
    RetransmissionPacket,
    build_end_of_session,
    build_heartbeat,
    build_packet,
)

ROWS = expected_rows()
FILES = sorted({row.file for row in ROWS})
MOLD = build_packet("SESSION001", 7, [b"A" * 36, b"D" * 19])


def write(tmp_path: Path, name: str, data: bytes) -> Path:
    path = tmp_path / name
    path.write_bytes(data)
    return path


@pytest.mark.parametrize("name", FILES)
def test_shared_capture_matches_wireshark(name: str) -> None:
    """Every MoldUDP64 packet of every shared capture decodes as Wireshark's expected.tsv."""
    rows = [r for r in ROWS if r.file == name]
    with CaptureReader(SHARED_CAPTURES / name, port=rows[0].port) as reader:
        got = []
        for dgram in reader:
            assert is_moldudp64(dgram.payload)
            packet = Packet.parse(dgram.payload)
            got.append(
                (
                    packet.session_ident,
                    packet.seq_num,
                    packet.msg_count,
                    tuple(len(m) for m in packet),
                )
            )
    assert got == [(r.session, r.sequence, r.count, r.lengths) for r in rows]
    assert reader.stats.datagrams == len(rows)


@pytest.mark.parametrize("name", FILES)
def test_shared_capture_recognised_without_port(name: str) -> None:
    """Without a port filter the MoldUDP64 datagrams are still found, by their shape."""
    rows = [r for r in ROWS if r.file == name]
    found = [d for d in read_datagrams(SHARED_CAPTURES / name) if is_moldudp64(d.payload)]
    assert [Packet(d.payload).seq_num for d in found] == [r.sequence for r in rows]
    assert all(d.dst[1] == rows[0].port for d in found)


def test_record_framing_agrees_with_dpkt(tmp_path: Path) -> None:
    """Both framing loops (chunked fast path, per-record generic path) yield exactly what
    dpkt.pcap.Reader and dpkt's Ethernet/IP/UDP decoders yield."""
    extra = write(
        tmp_path,
        "many.pcap",
        pcap_bytes([ethernet(ipv4_udp(MOLD + bytes(i % 50), ident=i)) for i in range(3000)]),
    )
    for path in [*(SHARED_CAPTURES / name for name in FILES), extra]:
        with open(path, "rb") as f:
            records = [(float(ts), bytes(buf)) for ts, buf in dpkt.pcap.Reader(f)]
        want = [
            (round(ts, 6), bytes(dpkt.ethernet.Ethernet(buf).data.data.data)) for ts, buf in records
        ]
        with CaptureReader(path) as reader:
            got = [(round(t, 6), p) for t, _, _, p in reader.tuples()]
        assert got == want
        reader = CaptureReader(path)
        frames = list(reader._frames())
        reader.close()
        assert [b for _, b, _ in frames] == [b for _, b in records]
        assert [round(t, 6) for t, _, _ in frames] == [round(t, 6) for t, _ in records]


@pytest.mark.parametrize("nano", [False, True])
@pytest.mark.parametrize("big_endian", [False, True])
def test_pcap_byte_orders_and_resolutions(nano: bool, big_endian: bool, tmp_path: Path) -> None:
    data = pcap_bytes([ethernet(ipv4_udp(MOLD))], nano=nano, t0=1234.5)
    if big_endian:  # rewrite the file as a big-endian host would have written it
        import struct

        magic, vmaj, vmin, tz, sig, snap, lt = struct.unpack("<IHHiIII", data[:24])
        sec, frac, cap, wire = struct.unpack("<IIII", data[24:40])
        data = (
            struct.pack(">IHHiIII", magic, vmaj, vmin, tz, sig, snap, lt)
            + struct.pack(">IIII", sec, frac, cap, wire)
            + data[40:]
        )
    (dgram,) = read_datagrams(write(tmp_path, "x.pcap", data))
    assert dgram.payload == MOLD
    assert dgram.timestamp == pytest.approx(1234.5)
    assert dgram.src == ("10.0.0.1", 4000)
    assert dgram.dst == ("239.1.1.1", 5000)


@pytest.mark.parametrize(
    ("label", "frame", "linktype"),
    [
        ("ethernet", ethernet(ipv4_udp(MOLD)), 1),
        ("802.1Q", ethernet(ipv4_udp(MOLD), vlans=(100,)), 1),
        ("QinQ", ethernet(ipv4_udp(MOLD), vlans=(10, 20)), 1),
        ("SLL", sll(ipv4_udp(MOLD)), 113),
        ("SLL2", sll2(ipv4_udp(MOLD)), 276),
        ("raw", ipv4_udp(MOLD), 101),
        ("raw ipv4", ipv4_udp(MOLD), 228),
        ("bsd loopback", b"\x02\x00\x00\x00" + ipv4_udp(MOLD), 0),
    ],
)
@pytest.mark.parametrize("fmt", ["pcap", "pcapng"])
def test_link_types(label: str, frame: bytes, linktype: int, fmt: str, tmp_path: Path) -> None:
    """Each supported link layer, in both file formats, yields the same datagram."""
    maker = pcap_bytes if fmt == "pcap" else pcapng_bytes
    path = write(tmp_path, f"x.{fmt}", maker([frame, frame], linktype))
    assert detect_file_kind(path) == fmt
    with CaptureReader(path) as reader:
        got = list(reader)
        assert reader.format == fmt
    assert [d.payload for d in got] == [MOLD, MOLD], label
    assert got[0].timestamp == pytest.approx(1000.0)
    assert got[1].timestamp == pytest.approx(1000.001)


def test_ipv6_udp(tmp_path: Path) -> None:
    """IPv6 goes through dpkt's decoder."""
    import socket

    udp = dpkt.udp.UDP(sport=1, dport=2, data=MOLD)
    udp.ulen = 8 + len(MOLD)
    ip6 = dpkt.ip6.IP6(
        src=socket.inet_pton(socket.AF_INET6, "fd00::1"),
        dst=socket.inet_pton(socket.AF_INET6, "ff15::1"),
        nxt=17,
        hlim=1,
        data=udp,
    )
    ip6.plen = len(bytes(udp))
    frame = ethernet(bytes(ip6), ethertype=0x86DD)
    (dgram,) = read_datagrams(write(tmp_path, "v6.pcap", pcap_bytes([frame])))
    assert dgram.payload == MOLD
    assert dgram.dst == ("ff15::1", 2)


def test_non_udp_and_port_filter_are_counted(tmp_path: Path) -> None:
    arp = b"\xff" * 6 + b"\x02" * 6 + b"\x08\x06" + b"\x00" * 28
    tcp_ip = bytearray(ipv4_udp(b"x"))
    tcp_ip[9] = 6  # protocol TCP
    frames = [
        ethernet(ipv4_udp(MOLD, dst=("239.1.1.1", 5000))),
        ethernet(ipv4_udp(MOLD, dst=("239.1.1.1", 6000))),
        arp,
        ethernet(bytes(tcp_ip)),
        b"\x00" * 5,  # runt frame
    ]
    with CaptureReader(write(tmp_path, "mix.pcap", pcap_bytes(frames)), port=5000) as reader:
        got = list(reader)
    assert [d.dst[1] for d in got] == [5000]
    s = reader.stats
    assert (s.frames, s.datagrams, s.other_port, s.not_ip, s.not_udp, s.malformed) == (
        5,
        1,
        1,
        1,
        1,
        1,
    )


def test_snaplen_truncated_frame_is_counted(tmp_path: Path) -> None:
    frame = ethernet(ipv4_udp(MOLD))
    with CaptureReader(write(tmp_path, "cut.pcap", pcap_bytes([frame[:60]]))) as reader:
        assert list(reader) == []
    assert reader.stats.truncated == 1


def test_fragments_reassembled_in_any_order(tmp_path: Path) -> None:
    """A 3,000-byte datagram in 3 fragments, delivered out of order and with a duplicate."""
    big = build_packet("FRAGMENTS1", 1, [bytes([i]) * 700 for i in range(4)])
    frags = fragment(ipv4_udp(big, ident=77), 1000)
    assert len(frags) == 3
    order = [frags[2], frags[0], frags[0], frags[1]]
    with CaptureReader(write(tmp_path, "frag.pcap", pcap_bytes([ethernet(f) for f in order]))) as r:
        got = list(r)
    assert [d.payload for d in got] == [big]
    assert (r.stats.fragments, r.stats.reassembled, r.stats.incomplete) == (4, 1, 0)


def test_incomplete_fragments_reported(tmp_path: Path) -> None:
    """A datagram missing a fragment is counted as incomplete, not silently lost."""
    big = build_packet("FRAGMENTS1", 1, [b"x" * 2000])
    frags = fragment(ipv4_udp(big, ident=5), 800)
    frames = [ethernet(f) for f in frags[:-1]] + [ethernet(ipv4_udp(MOLD))]
    with CaptureReader(write(tmp_path, "lost.pcap", pcap_bytes(frames))) as reader:
        got = list(reader)
    assert [d.payload for d in got] == [MOLD]
    assert reader.stats.incomplete == 1


def test_reassembly_table_is_bounded(tmp_path: Path) -> None:
    """First fragments of many datagrams, none completed: the table never exceeds its bound."""
    frames = [ethernet(fragment(ipv4_udp(b"y" * 100, ident=i), 16)[0]) for i in range(50)]
    path = write(tmp_path, "many.pcap", pcap_bytes(frames))
    with CaptureReader(path, max_pending_fragments=8) as reader:
        for _ in reader:
            pass
        assert len(reader._pending) == 0
    assert reader.stats.incomplete == 50
    reader = CaptureReader(path, max_pending_fragments=8)
    it = iter(reader)
    with pytest.raises(StopIteration):
        next(it)
    reader.close()


def test_fragment_timeout_uses_capture_time(tmp_path: Path) -> None:
    big = build_packet("FRAGMENTS1", 1, [b"z" * 1000])
    first, second = fragment(ipv4_udp(big, ident=9), 640)
    out = io.BytesIO()
    w = dpkt.pcap.Writer(out)
    w.writepkt(ethernet(first), ts=10.0)
    w.writepkt(ethernet(ipv4_udp(MOLD, ident=10)), ts=100.0)  # 90 s later: first given up
    w.writepkt(ethernet(second), ts=100.5)
    with CaptureReader(write(tmp_path, "slow.pcap", out.getvalue())) as reader:
        got = list(reader)
    assert [d.payload for d in got] == [MOLD]
    assert reader.stats.incomplete == 2  # the timed-out one, and the lone second at EOF


def test_is_moldudp64() -> None:
    assert is_moldudp64(MOLD)
    assert is_moldudp64(build_heartbeat("SESSION001", 5))
    assert is_moldudp64(build_end_of_session("SESSION001", 5))
    assert not is_moldudp64(RetransmissionPacket("SESSION001", 5, 10).build())  # a request
    assert not is_moldudp64(MOLD + b"x")  # trailing bytes
    assert not is_moldudp64(MOLD[:-1])  # truncated block
    assert not is_moldudp64(b"\x00\x01" + bytes(18))  # binary session name
    assert is_moldudp64(bytes(20))  # ten NUL bytes: anonymised captures use that session
    assert not is_moldudp64(build_end_of_session("SESSION001", 5) + b"\x00\x00")
    assert not is_moldudp64(b"short")


@given(st.binary(max_size=200))
def test_is_moldudp64_never_raises(data: bytes) -> None:
    assert is_moldudp64(data) in (True, False)


def test_writer_round_trip(tmp_path: Path) -> None:
    path = tmp_path / "w.pcap"
    big = build_packet("BIGPACKET1", 1, [b"q" * 4000])
    with CaptureWriter(path) as w:
        w.write(MOLD, ("10.1.2.3", 4000), ("239.9.9.9", 30001), 1700000000.123456789)
        w.write(big, ("10.1.2.3", 4000), ("127.0.0.1", 30002), 1700000001.0)
    got = read_datagrams(path)
    assert [d.payload for d in got] == [MOLD, big]
    assert got[0].dst == ("239.9.9.9", 30001)
    assert got[0].timestamp == pytest.approx(1700000000.123456789, abs=1e-6)
    # dpkt, independently, sees valid IPv4/UDP with correct checksums.
    with open(path, "rb") as f:
        for _, frame in dpkt.pcap.Reader(f):
            eth = dpkt.ethernet.Ethernet(frame)
            ip = eth.data
            assert dpkt.in_cksum(bytes(ip)[: ip.hl * 4]) == 0
    with pytest.raises(CaptureError):
        CaptureWriter(tmp_path / "missing-dir" / "x.pcap")
    with pytest.raises(CaptureError), CaptureWriter(io.BytesIO()) as w:
        w.write(MOLD, ("not-an-ip", 1), ("239.1.1.1", 2), 0.0)


@pytest.mark.skipif(shutil.which("tshark") is None, reason="tshark is not installed")
def test_written_pcap_decodes_in_tshark(tmp_path: Path) -> None:
    path = tmp_path / "t.pcap"
    packets = [
        build_packet("000010059B", 100, [b"A" * 36, b"E" * 31]),
        build_heartbeat("000010059B", 102),
        build_end_of_session("000010059B", 102),
    ]
    with CaptureWriter(path) as w:
        for i, p in enumerate(packets):
            w.write(p, ("10.0.0.1", 4000), ("239.1.2.3", 26477), 1000.0 + i)
    out = subprocess.run(
        [
            "tshark",
            "-r",
            str(path),
            "-d",
            "udp.port==26477,moldudp64",
            "-T",
            "fields",
            "-e",
            "moldudp64.session",
            "-e",
            "moldudp64.sequence",
            "-e",
            "moldudp64.count",
            "-e",
            "moldudp64.msglen",
        ],
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    ).stdout.splitlines()
    assert out == [
        "000010059B\t100\t2\t36,31",
        "000010059B\t102\t0\t",
        "000010059B\t102\t65535\t",
    ]


# -- bad files ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("label", "data"),
    [
        ("empty", b""),
        ("garbage", b"this is not a capture file at all"),
        ("short header", b"\xd4\xc3\xb2\xa1\x02\x00"),
        ("pcapng short", b"\x0a\x0d\x0d\x0a\x1c\x00"),
    ],
)
def test_unreadable_files_raise_capture_error(label: str, data: bytes, tmp_path: Path) -> None:
    with pytest.raises(CaptureError):
        read_datagrams(write(tmp_path, "bad", data))


def test_missing_file_and_unsupported_linktype(tmp_path: Path) -> None:
    with pytest.raises(CaptureError, match="cannot open"):
        CaptureReader(tmp_path / "nope.pcap")
    with pytest.raises(CaptureError, match="link type 105"):
        CaptureReader(write(tmp_path, "wifi.pcap", pcap_bytes([b"x"], linktype=105)))


@pytest.mark.parametrize("fmt", ["pcap", "pcapng"])
def test_truncated_file_yields_complete_records_then_raises(fmt: str, tmp_path: Path) -> None:
    frame = ethernet(ipv4_udp(MOLD))
    maker = pcap_bytes if fmt == "pcap" else pcapng_bytes
    data = maker([frame, frame, frame])
    for cut in (len(data) - 10, len(data) - len(frame) - 8):
        got = []
        path = write(tmp_path, f"cut.{fmt}", data[:cut])
        with pytest.raises(CaptureError, match=r"after 2 packets"), CaptureReader(path) as reader:
            got.extend(reader)
        assert len(got) == 2


def test_huge_record_length_is_corruption(tmp_path: Path) -> None:
    data = bytearray(pcap_bytes([ethernet(ipv4_udp(MOLD))]))
    data[24 + 8 : 24 + 12] = (0x7FFFFFFF).to_bytes(4, "little")
    with pytest.raises(CaptureError, match="corrupt record"):
        read_datagrams(write(tmp_path, "huge.pcap", bytes(data)))


@settings(max_examples=60, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(tail=st.binary(max_size=300), fmt=st.sampled_from(["pcap", "pcapng"]))
def test_garbage_after_header_never_crashes(tail: bytes, fmt: str, tmp_path: Path) -> None:
    """Random bytes after a valid header give datagrams, counted drops, or CaptureError."""
    maker = pcap_bytes if fmt == "pcap" else pcapng_bytes
    head = maker([ethernet(ipv4_udp(MOLD))])
    path = write(tmp_path, f"fuzz.{fmt}", head + tail)
    try:
        with CaptureReader(path) as reader:
            for _ in reader:
                pass
    except CaptureError:
        pass


@settings(max_examples=150)
@given(st.binary(min_size=0, max_size=120), st.sampled_from([1, 113, 276, 101, 0]))
def test_garbage_frames_never_crash(frame: bytes, linktype: int) -> None:
    reader = CaptureReader(io.BytesIO(pcap_bytes([frame], linktype)))
    got = list(reader)
    s = reader.stats
    assert s.frames == 1
    assert len(got) + s.not_ip + s.not_udp + s.truncated + s.malformed + s.incomplete >= 1


def test_capture_error_is_a_moldudp64_error() -> None:
    assert issubclass(CaptureError, MoldUDP64Error)
    assert FileKind.PCAP == "pcap"


def test_fast_ethernet_path_agrees_with_generic_decoder(tmp_path: Path) -> None:
    """The chunked, hand-sliced Ethernet/IPv4/UDP loop gives exactly what the generic
    per-frame decoder gives, datagram by datagram and counter by counter."""
    import struct

    small = build_packet("SESSION001", 1, [b"x"])  # short: the frame gets Ethernet padding
    with_options = bytearray(ipv4_udp(MOLD))
    with_options = bytearray(
        bytes([0x46]) + with_options[1:2] + struct.pack(">H", len(with_options) + 4)
        + with_options[4:10] + b"\x00\x00" + with_options[12:20] + b"\x01\x01\x01\x00"
        + with_options[20:]
    )  # fmt: skip
    bad_ulen = bytearray(ipv4_udp(MOLD))
    bad_ulen[24:26] = (4).to_bytes(2, "big")
    big = build_packet("FRAGMENTS1", 1, [b"f" * 3000])
    frames = [
        ethernet(ipv4_udp(MOLD)),
        ethernet(ipv4_udp(small)) + b"\x00" * 20,
        ethernet(ipv4_udp(MOLD), vlans=(7,)),
        ethernet(bytes(with_options)),
        ethernet(bytes(bad_ulen)),
        ethernet(ipv4_udp(MOLD))[:50],  # cut by the snap length
        *[ethernet(f) for f in fragment(ipv4_udp(big, ident=3), 1480)],
        b"\xff" * 12 + b"\x08\x06" + b"\x00" * 28,
        ethernet(ipv4_udp(MOLD, dst=("239.1.1.1", 6000))),
    ] * 3
    path = write(tmp_path, "mixed.pcap", pcap_bytes(frames))
    for port in (None, 5000):
        fast = CaptureReader(path, port=port)
        got = list(fast.tuples())
        fast.close()
        slow = CaptureReader(path, port=port)
        want = []
        for ts, buf, _link in slow._frames():
            slow.stats.frames += 1
            found = slow._decode(ts, buf)
            if found is None:
                continue
            if port is not None and port not in (found[1][1], found[2][1]):
                slow.stats.other_port += 1
                continue
            slow.stats.datagrams += 1
            want.append(found)
        slow._give_up_fragments()
        slow.close()
        assert got == want
        assert fast.stats == slow.stats
    assert [d[3] for d in got].count(MOLD) == 9  # plain, VLAN, IP options; three times


def test_fast_path_across_chunk_boundaries(tmp_path: Path) -> None:
    """Records straddling the 1 MiB read chunks, and one record bigger than a chunk."""
    payloads = [
        build_packet("SESSION001", i, [bytes([i % 251]) * (i % 300)]) for i in range(1, 8001)
    ]
    frames = [ethernet(ipv4_udp(p, ident=i)) for i, p in enumerate(payloads)]
    frames.insert(4000, b"\x00" * (3 << 20))  # a 3 MiB junk frame in the middle
    path = write(tmp_path, "chunks.pcap", pcap_bytes(frames))
    assert path.stat().st_size > 4 << 20
    with CaptureReader(path) as reader:
        got = [d.payload for d in reader]
    assert got == payloads
    assert reader.stats.frames == 8001
    assert reader.stats.not_ip == 1


@pytest.mark.skipif(shutil.which("editcap") is None, reason="editcap (Wireshark) is not installed")
@pytest.mark.parametrize("fmt", ["pcapng", "nsecpcap", "pcap"])
def test_files_written_by_wireshark_tools(fmt: str, tmp_path: Path) -> None:
    """The shared captures converted by Wireshark's editcap (pcapng, nanosecond pcap) read
    the same as the originals."""
    for name in FILES:
        src = SHARED_CAPTURES / name
        dst = tmp_path / f"converted.{fmt}"
        subprocess.run(["editcap", "-F", fmt, str(src), str(dst)], check=True, timeout=60)
        want = read_datagrams(src)
        got = read_datagrams(dst)
        assert [d[1:] for d in got] == [d[1:] for d in want], name
        for g, w in zip(got, want, strict=True):
            assert g.timestamp == pytest.approx(w.timestamp, abs=2e-6)  # microsecond files


# --------------------------------------------------------------------------- batches()

SCANNERS = ["c", "python"]


def _use_scanner(monkeypatch: pytest.MonkeyPatch, which: str) -> None:
    """Run batches() through the C scanner, or through the pure-Python fallback."""
    from moldudp64 import capture

    if which == "c":
        if capture._scan is None:
            pytest.skip("the _capture accelerator is not built")
    else:
        monkeypatch.setattr(capture, "_scan", None)


def _flatten(reader: CaptureReader) -> list[tuple[float, object, object, bytes]]:
    out: list[tuple[float, object, object, bytes]] = []
    for times, src, dst, payloads in reader.batches():
        assert len(times) == len(payloads) > 0
        out.extend((t, src, dst, p) for t, p in zip(times, payloads, strict=True))
    return out


def _mixed_frames() -> list[bytes]:
    """Plain IPv4/UDP to two groups interleaved, and every kind the scanner leaves."""
    import struct

    with_options = bytearray(ipv4_udp(MOLD))
    with_options = bytearray(
        bytes([0x46]) + with_options[1:2] + struct.pack(">H", len(with_options) + 4)
        + with_options[4:10] + b"\x00\x00" + with_options[12:20] + b"\x01\x01\x01\x00"
        + with_options[20:]
    )  # fmt: skip
    bad_ulen = bytearray(ipv4_udp(MOLD))
    bad_ulen[24:26] = (4).to_bytes(2, "big")
    big = build_packet("FRAGMENTS1", 1, [b"f" * 3000])
    other_group = ipv4_udp(MOLD, dst=("239.1.1.1", 6000))
    return [
        ethernet(ipv4_udp(MOLD)),
        ethernet(ipv4_udp(MOLD)),
        ethernet(other_group),
        ethernet(ipv4_udp(MOLD)),
        ethernet(ipv4_udp(build_packet("SESSION001", 1, [b"x"]))) + b"\x00" * 20,
        ethernet(ipv4_udp(MOLD), vlans=(7,)),
        ethernet(bytes(with_options)),
        ethernet(bytes(bad_ulen)),
        ethernet(ipv4_udp(MOLD))[:50],  # cut by the snap length
        *[ethernet(f) for f in fragment(ipv4_udp(big, ident=3), 1480)],
        b"\xff" * 12 + b"\x08\x06" + b"\x00" * 28,
        ethernet(other_group),
        ethernet(other_group),
        b"\x00" * 20,  # too short for the scanner
    ] * 3


@pytest.mark.parametrize("which", SCANNERS)
@pytest.mark.parametrize("chunk", [1 << 20, 100])
@pytest.mark.parametrize("port", [None, 5000, 6000])
def test_batches_are_the_tuples_in_runs(
    which: str, chunk: int, port: int | None, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """batches() flattened is exactly tuples(), with the same counters, through the C
    scanner and the pure-Python fallback, with reads much smaller than a record too."""
    from moldudp64 import capture

    _use_scanner(monkeypatch, which)
    monkeypatch.setattr(capture, "_SCAN_CHUNK", chunk)
    path = write(tmp_path, "mixed.pcap", pcap_bytes(_mixed_frames()))
    with CaptureReader(path, port=port) as want_reader:
        want = list(want_reader.tuples())
    with CaptureReader(path, port=port) as reader:
        got = _flatten(reader)
        runs = list(CaptureReader(path, port=port).batches())
    assert got == want
    assert reader.stats == want_reader.stats
    # consecutive runs differ in their endpoints (or the scanner stopped at a frame it leaves)
    assert len(runs) < len(got)


@pytest.mark.parametrize("which", SCANNERS)
def test_batches_timestamps_and_byte_orders(
    which: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Microsecond and nanosecond, little- and big-endian pcap: the same timestamps as
    tuples() (the scanner computes them the same way, bit for bit)."""
    _use_scanner(monkeypatch, which)
    frames = [ethernet(ipv4_udp(build_packet("SESSION001", i, [b"m" * i]))) for i in range(1, 40)]
    for nano in (False, True):
        for endian in ("<", ">"):
            buf = io.BytesIO()
            writer = dpkt.pcap.Writer(buf, nano=nano)
            for i, frame in enumerate(frames):
                writer.writepkt(frame, ts=1_700_000_000.123456 + i * 0.000_321)
            data = buf.getvalue()
            if endian == ">":  # rewrite as a big-endian file
                out = bytearray(struct_pack_be_header(data[:24]))
                pos = 24
                while pos < len(data):
                    fields = dpkt.struct.unpack("<IIII", data[pos : pos + 16])
                    out += dpkt.struct.pack(">IIII", *fields)
                    out += data[pos + 16 : pos + 16 + fields[2]]
                    pos += 16 + fields[2]
                data = bytes(out)
            path = write(tmp_path, f"ts-{nano}-{endian == '>'}.pcap", data)
            with CaptureReader(path) as a, CaptureReader(path) as b:
                assert _flatten(a) == list(b.tuples())
                assert a.stats == b.stats


def struct_pack_be_header(header: bytes) -> bytes:
    """A little-endian pcap file header rewritten big-endian."""
    import struct

    magic, major, minor, zone, sigfigs, snaplen, linktype = struct.unpack("<IHHiIII", header)
    return struct.pack(">IHHiIII", magic, major, minor, zone, sigfigs, snaplen, linktype)


@pytest.mark.parametrize("which", SCANNERS)
@pytest.mark.parametrize("cut", [3, 20, 60])
def test_batches_truncated_file(
    which: str, cut: int, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A file cut off in its last record: every complete datagram first, then the same
    CaptureError as the per-datagram reader."""
    _use_scanner(monkeypatch, which)
    frames = [ethernet(ipv4_udp(MOLD))] * 5
    data = pcap_bytes(frames)
    path = write(tmp_path, "cut.pcap", data[: len(data) - len(frames[0]) - 16 + cut])
    got: list[bytes] = []
    with CaptureReader(path) as reader, pytest.raises(CaptureError) as caught:
        for _times, _src, _dst, payloads in reader.batches():
            got.extend(payloads)
    with CaptureReader(path) as other, pytest.raises(CaptureError) as want:
        list(other.tuples())
    assert got == [MOLD] * 4
    assert str(caught.value) == str(want.value)
    assert reader.stats == other.stats


@settings(max_examples=60, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    picks=st.lists(st.integers(0, 9), max_size=40),
    junk=st.lists(st.binary(max_size=80), max_size=3),
)
def test_batches_property(picks: list[int], junk: list[bytes]) -> None:
    """Any mix of frames: the C scanner and the pure-Python fallback agree with tuples()."""
    from moldudp64 import capture

    pool = _mixed_frames()[:10]
    frames = [pool[i] for i in picks] + junk
    data = pcap_bytes(frames)
    with CaptureReader(io.BytesIO(data)) as reader:
        want = list(reader.tuples())
        want_stats = reader.stats
    saved = capture._scan
    for scan in {saved, None}:
        capture._scan = scan
        try:
            with CaptureReader(io.BytesIO(data)) as reader:
                assert _flatten(reader) == want
                assert reader.stats == want_stats
        finally:
            capture._scan = saved


# -- damaged files: everything before the damage, then CaptureDamaged naming the byte ------


@pytest.mark.parametrize("which", SCANNERS)
@pytest.mark.parametrize("fmt", ["pcap", "pcapng"])
def test_file_cut_by_5_bytes_names_the_byte(
    which: str, fmt: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A capture cut 5 bytes short (tcpdump killed): the 39 intact records come out, then
    CaptureDamaged says where the readable part ends (the start of the cut record)."""
    _use_scanner(monkeypatch, which)
    frames = [ethernet(ipv4_udp(build_packet("SESSION001", 1 + i, [b"A" * 30]))) for i in range(40)]
    data = (pcap_bytes if fmt == "pcap" else pcapng_bytes)(frames)
    path = write(tmp_path, f"cut.{fmt}", data[:-5])
    got: list[bytes] = []
    with CaptureReader(path) as reader, pytest.raises(CaptureDamaged) as caught:
        for _times, _src, _dst, payloads in reader.batches():
            got.extend(payloads)
    assert [Packet(p).seq_num for p in got] == list(range(1, 40))
    last_record = len((pcap_bytes if fmt == "pcap" else pcapng_bytes)(frames[:39]))
    assert caught.value.truncated
    assert caught.value.offset == last_record
    assert f"truncated at byte {last_record}" in str(caught.value)
    assert "after 39 packets" in str(caught.value)


def test_pcapng_huge_block_length_is_corruption_not_an_allocation(tmp_path: Path) -> None:
    """A pcapng block claiming about 4 GiB: CaptureDamaged (corrupt, at that block's byte)
    after the packets before it, checked under a 1 GiB address-space limit so a giant
    allocation would fail the test rather than the machine."""
    frame = ethernet(ipv4_udp(MOLD))
    data = bytearray(pcapng_bytes([frame] * 3))
    second = 28 + 20 + (32 + len(frame) + (-len(frame) % 4))  # SHB, IDB, first EPB
    data[second + 4 : second + 8] = (0xFFFFFFF0).to_bytes(4, "little")
    path = write(tmp_path, "huge.pcapng", bytes(data) + bytes(7000))
    script = f"""
import resource, sys
resource.setrlimit(resource.RLIMIT_AS, (1 << 30, 1 << 30))
from moldudp64.capture import CaptureReader, CaptureDamaged
got = []
try:
    with CaptureReader({str(path)!r}) as reader:
        got.extend(reader)
except CaptureDamaged as exc:
    print(len(got), exc.offset, exc.truncated, exc)
"""
    done = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=60, check=False
    )
    assert done.returncode == 0, done.stderr
    count, offset, truncated, text = done.stdout.split(" ", 3)
    assert (int(count), int(offset), truncated) == (1, second, "False")
    assert f"corrupt at byte {second} (pcapng block length 4294967280" in text
    assert "()" not in text


@pytest.mark.parametrize(
    ("label", "mutate", "needle"),
    [
        ("odd length", lambda d: d[:32] + (13).to_bytes(4, "little") + d[36:], "block length 13"),
        ("lengths differ", lambda d: d[:-4] + (4).to_bytes(4, "little"), "two lengths differ"),
        ("bad byte order", lambda d: d[:8] + b"\x01\x02\x03\x04" + d[12:], "byte-order magic"),
    ],
)
def test_pcapng_framing_errors_are_clear(
    label: str, mutate: Callable[[bytes], bytes], needle: str, tmp_path: Path
) -> None:
    data = mutate(pcapng_bytes([ethernet(ipv4_udp(MOLD))] * 2))
    with (
        pytest.raises(CaptureError) as caught,
        CaptureReader(write(tmp_path, "bad.pcapng", data)) as reader,
    ):
        list(reader)
    assert needle in str(caught.value), label
    assert not str(caught.value).endswith("()")


def _ng_block(btype: int, body: bytes, order: str = "<") -> bytes:
    pad = -len(body) % 4
    size = 12 + len(body) + pad
    return (
        struct.pack(order + "II", btype, size) + body + bytes(pad) + struct.pack(order + "I", size)
    )


def test_pcapng_sections_interfaces_and_block_kinds(tmp_path: Path) -> None:
    """Hand-built pcapng: a little-endian section (microsecond Ethernet interface, a packet
    naming an unknown interface, a custom block), then a big-endian section with two
    interfaces (nanosecond raw IPv4; an unsupported link type) and a simple packet block."""
    one = ethernet(ipv4_udp(MOLD))
    two = ipv4_udp(build_packet("SESSION002", 9, [b"B" * 5]))
    shb = lambda order: _ng_block(  # noqa: E731
        0x0A0D0D0A, struct.pack(order + "IHHq", 0x1A2B3C4D, 1, 0, -1), order
    )
    idb = lambda order, link, opts=b"": _ng_block(  # noqa: E731
        1, struct.pack(order + "HHI", link, 0, 65535) + opts, order
    )

    def epb(order: str, iface: int, ticks: int, frame: bytes) -> bytes:
        head = struct.pack(
            order + "IIIII", iface, ticks >> 32, ticks & 0xFFFFFFFF, len(frame), len(frame)
        )
        return _ng_block(6, head + frame + bytes(-len(frame) % 4), order)

    nano = struct.pack(">HHB3x", 9, 1, 9) + struct.pack(">HH", 0, 0)
    data = (
        shb("<")
        + idb("<", 1)
        + epb("<", 0, 1_500_000_000_250_000, one)
        + epb("<", 5, 1, one)  # no interface 5: malformed, counted
        + _ng_block(0x00000BAD, b"custom", "<")
        + shb(">")
        + idb(">", 228, nano)
        + idb(">", 105)
        + epb(">", 1, 7, b"\x00" * 30)  # 802.11 frames: counted, not decoded
        + epb(">", 0, 1_600_000_000_000_000_123, two)
        + _ng_block(3, struct.pack(">I", len(two)) + two, ">")  # simple packet: interface 0
    )
    with CaptureReader(write(tmp_path, "sections.pcapng", data)) as reader:
        got = list(reader)
    assert [d.payload for d in got] == [MOLD, two[28:], two[28:]]
    assert got[0].timestamp == pytest.approx(1_500_000_000.25)
    assert got[1].timestamp == pytest.approx(1_600_000_000.000000123)
    assert got[2].timestamp == got[1].timestamp  # a simple packet has none: the last one
    assert reader.stats.malformed == 1
    assert reader.stats.other_link == 1
    assert reader.stats.frames == 5


# -- IPv6 header chains ----------------------------------------------------------------------


def test_ipv6_esp_and_other_chains_are_skipped_and_counted(tmp_path: Path) -> None:
    """Whatever the IPv6 header chain, a frame is a datagram or a counted skip: ESP, no next
    header, TCP and ICMPv6 are not UDP; UDP behind hop-by-hop, destination options and AH is
    found; a chain running past the packet, or absurdly long, is malformed."""
    udp = udp_bytes(MOLD)
    hop = lambda nxt, body=b"": bytes([nxt, 0]) + body.ljust(6, b"\x00")  # noqa: E731
    frames = {
        "esp": ipv6_frame(50, b"\x00\x00\x01\x00" + b"\x00\x00\x00\x01" + bytes(40)),
        "dest opts then esp": ipv6_frame(60, hop(50) + bytes(48)),
        "no next header": ipv6_frame(59, b""),
        "tcp": ipv6_frame(6, bytes(20)),
        "icmpv6": ipv6_frame(58, bytes(8)),
        "hop-by-hop udp": ipv6_frame(0, hop(17) + udp),
        "dest opts, ah, udp": ipv6_frame(60, hop(51) + bytes([17, 1]) + bytes(10) + udp),
        "chain past the end": ipv6_frame(0, bytes([43, 200]) + bytes(6)),
        "endless chain": ipv6_frame(0, hop(0) * 40 + udp),
    }
    path = write(tmp_path, "v6.pcap", pcap_bytes(list(frames.values())))
    with CaptureReader(path) as reader:
        got = list(reader)
    assert [d.payload for d in got] == [MOLD, MOLD]
    assert got[0].src == ("fe80::1", 4000)
    s = reader.stats
    assert (s.not_udp, s.malformed, s.frames) == (5, 2, 9)


def test_ipv6_fragments_reassembled(tmp_path: Path) -> None:
    body = udp_bytes(MOLD * 30)
    frames = []
    for off in range(0, len(body), 400):
        part = body[off : off + 400]
        more = int(off + 400 < len(body))
        frames.append(ipv6_frame(44, struct.pack(">BBHI", 17, 0, off | more, 77) + part))
    path = write(tmp_path, "v6frag.pcap", pcap_bytes(frames[::-1]))
    with CaptureReader(path) as reader:
        assert [d.payload for d in reader] == [MOLD * 30]
    assert (reader.stats.fragments, reader.stats.reassembled) == (len(frames), 1)


# -- fragment reassembly: linear, bounded -----------------------------------------------------


def test_one_datagram_in_8117_fragments(tmp_path: Path) -> None:
    """A 65 KB datagram cut into 8,117 eight-byte IPv4 fragments, sent last-first with every
    tenth fragment twice: rebuilt exactly (each fragment costs time in its own length; the
    time is measured in benchmarks, never asserted)."""
    payload = bytes(range(256)) * 253 + bytes(160)  # 64,928 bytes: 8 + 64,928 = 8,117 x 8
    parts = fragment(ipv4_udp(payload, ident=9), 8)
    assert len(parts) == 8117
    order = (parts[1:] + parts[1::10])[::-1] + parts[:1]
    path = write(tmp_path, "frags.pcap", pcap_bytes([ethernet(p) for p in order]))
    with CaptureReader(path) as reader:
        got = list(reader)
    assert [d.payload for d in got] == [payload]
    assert reader.stats.reassembled == 1
    assert reader.stats.incomplete == 0
    assert reader.stats.fragments == len(order)


def test_reassembly_memory_is_bounded_in_bytes(tmp_path: Path) -> None:
    """300 datagrams (4 kB each) that never complete: the table holds at most its byte bound
    (checked when the plain datagram after them comes out), gives the oldest up (counted),
    and a later complete datagram still comes out."""
    first_parts = [fragment(ipv4_udp(bytes(4000), ident=i), 2000)[0] for i in range(300)]
    good = fragment(ipv4_udp(MOLD * 20, ident=5000), 496)
    frames = [ethernet(p) for p in [*first_parts, ipv4_udp(MOLD, ident=6000), *good]]
    held = []
    with CaptureReader(io.BytesIO(pcap_bytes(frames)), max_pending_bytes=100_000) as reader:
        got = []
        for d in reader:
            got.append(d.payload)
            held.append(reader._pending_bytes)
    assert got == [MOLD, MOLD * 20]
    assert 90_000 < held[0] <= 100_000
    assert reader.stats.incomplete == 300
    assert reader._pending_bytes == 0


def test_contradicting_fragments_are_malformed(tmp_path: Path) -> None:
    """Two last fragments that disagree on the length: the datagram is dropped, counted."""
    parts = fragment(ipv4_udp(MOLD * 10, ident=4), 64)
    liar = dpkt.ip.IP(parts[-1])
    liar.data = bytes(liar.data) + b"xxxxxxxx"
    liar.len = 20 + len(liar.data)
    frames = [ethernet(p) for p in [parts[-1], bytes(liar), *parts[:-1]]]
    with CaptureReader(io.BytesIO(pcap_bytes(frames))) as reader:
        assert list(reader) == []
    assert reader.stats.malformed >= 1


# -- pcapng writing ----------------------------------------------------------------------------


def test_writer_pcapng_round_trip(tmp_path: Path) -> None:
    """A .pcapng path gets a real pcapng (nanosecond timestamps); reading it back gives
    the datagrams, addresses and timestamps written."""
    path = tmp_path / "out.pcapng"
    sent = [
        (build_packet("SESSION001", 1 + i, [b"Q" * (i + 1)]), 1_700_000_000.5 + i)
        for i in range(50)
    ]
    with CaptureWriter(path) as writer:
        for payload, ts in sent:
            writer.write(payload, ("10.1.2.3", 4000), ("239.1.1.1", 5000), ts)
    assert path.read_bytes()[:4] == b"\x0a\x0d\x0d\x0a"
    assert detect_file_kind(path) == FileKind.PCAPNG
    with CaptureReader(path) as reader:
        got = list(reader)
    assert [(d.payload, d.timestamp) for d in got] == sent
    assert {(d.src, d.dst) for d in got} == {(("10.1.2.3", 4000), ("239.1.1.1", 5000))}
    with open(path, "rb") as f:  # dpkt's reader agrees on the frames
        assert len(list(dpkt.pcapng.Reader(f))) == 50


@pytest.mark.skipif(shutil.which("tshark") is None, reason="tshark is not installed")
def test_written_pcapng_decodes_in_tshark(tmp_path: Path) -> None:
    path = tmp_path / "out.pcapng"
    with CaptureWriter(path) as writer:
        for i in range(5):
            writer.write(
                build_packet("SESSION001", 1 + i, [b"Z"]),
                ("10.0.0.1", 1),
                ("239.1.1.1", 5000),
                1e9 + i,
            )
    done = subprocess.run(
        ["tshark", "-r", str(path), "-d", "udp.port==5000,moldudp64", "-T", "fields",
         "-e", "frame.time_epoch", "-e", "moldudp64.sequence"],
        capture_output=True, text=True, timeout=120, check=True,
    )  # fmt: skip
    rows = [line.split("\t") for line in done.stdout.splitlines()]
    assert [int(seq) for _, seq in rows] == [1, 2, 3, 4, 5]
    assert [round(float(t)) for t, _ in rows] == [1_000_000_000 + i for i in range(5)]
    info = subprocess.run(
        ["capinfos", "-t", str(path)], capture_output=True, text=True, check=False
    )
    if info.returncode == 0:
        assert "pcapng" in info.stdout


@settings(
    max_examples=200,
    deadline=5000,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
@given(data=mutated_capture())
def test_mutated_captures_read_or_raise_capture_error(data: bytes) -> None:
    """Mutations of real and generated captures: every reading path (C scanner, pure Python
    runs, per datagram) gives the same datagrams and counters and either ends or raises
    CaptureError, never another exception; memory stays bounded (tracemalloc < 64 MiB)."""
    import tracemalloc

    from moldudp64 import capture

    results = []
    saved = capture._scan
    tracemalloc.start()
    try:
        for scan, how in ((saved, "batches"), (None, "batches"), (None, "tuples")):
            capture._scan = scan
            got: list[object] = []
            error = None
            try:
                with CaptureReader(io.BytesIO(data)) as reader:
                    if how == "batches":
                        for times, src, dst, payloads in reader.batches():
                            got.extend(
                                (t, src, dst, p) for t, p in zip(times, payloads, strict=True)
                            )
                    else:
                        got.extend(reader.tuples())
            except CaptureError as exc:
                error = str(exc)
            results.append((got, error))
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        capture._scan = saved
        tracemalloc.stop()
    assert results[0] == results[1] == results[2]
    assert peak < 64 << 20
