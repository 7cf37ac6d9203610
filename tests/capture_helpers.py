"""Helpers that build capture files for tests: frames of every supported link type, pcap
and pcapng writers (dpkt), IPv4 fragmentation, and the shared captures' ground truth."""

from __future__ import annotations

import csv
import io
import socket
import struct
from dataclasses import dataclass
from pathlib import Path

import dpkt
from hypothesis import strategies as st

from moldudp64.wire import build_end_of_session, build_packet

SHARED_CAPTURES = Path(__file__).resolve().parents[2] / "shared" / "captures"
if not SHARED_CAPTURES.is_dir():  # running from a clone elsewhere
    SHARED_CAPTURES = Path("/work/shared/captures")


@dataclass(frozen=True)
class ExpectedPacket:
    """One row of expected.tsv: one MoldUDP64 packet as Wireshark decodes it."""

    file: str
    port: int
    session: str
    sequence: int
    count: int
    lengths: tuple[int, ...]


def expected_rows() -> list[ExpectedPacket]:
    """Every row of the shared captures' expected.tsv."""
    rows = []
    with open(SHARED_CAPTURES / "expected.tsv", newline="") as f:
        for row in csv.DictReader(f, delimiter="\t"):
            lengths = tuple(int(x) for x in row["message_lengths"].split(",") if x)
            rows.append(
                ExpectedPacket(
                    row["file"],
                    int(row["udp_dst_port"]),
                    row["session"],
                    int(row["sequence"]),
                    int(row["count"]),
                    lengths,
                )
            )
    return rows


def ipv4_udp(
    payload: bytes,
    src: tuple[str, int] = ("10.0.0.1", 4000),
    dst: tuple[str, int] = ("239.1.1.1", 5000),
    ident: int = 1,
) -> bytes:
    """An IPv4 packet carrying one UDP datagram (checksums filled by dpkt)."""
    udp = dpkt.udp.UDP(sport=src[1], dport=dst[1], data=payload)
    udp.ulen = 8 + len(payload)
    ip = dpkt.ip.IP(
        src=socket.inet_aton(src[0]), dst=socket.inet_aton(dst[0]), p=17, id=ident, data=udp
    )
    return bytes(ip)


def fragment(ip_packet: bytes, size: int) -> list[bytes]:
    """Split an IPv4 packet into fragments carrying ``size`` payload bytes (multiple of 8)."""
    assert size % 8 == 0
    ip = dpkt.ip.IP(ip_packet)
    body = ip_packet[ip.hl * 4 :]
    out = []
    for offset in range(0, len(body), size):
        part = body[offset : offset + size]
        more = offset + size < len(body)
        frag = dpkt.ip.IP(
            src=ip.src, dst=ip.dst, p=ip.p, id=ip.id, ttl=ip.ttl, mf=int(more), offset=offset // 8
        )
        frag.data = part
        frag.len = 20 + len(part)
        out.append(bytes(frag))
    return out


def ethernet(ip_packet: bytes, vlans: tuple[int, ...] = (), ethertype: int = 0x0800) -> bytes:
    """An Ethernet frame with the given 802.1Q tags (outermost first, 0x88a8 for the first of
    two, as QinQ does)."""
    head = b"\x01\x00\x5e\x01\x01\x01" + b"\x02\x00\x0a\x00\x00\x01"
    for i, vid in enumerate(vlans):
        tpid = 0x88A8 if i == 0 and len(vlans) > 1 else 0x8100
        head += struct.pack(">HH", tpid, vid)
    return head + struct.pack(">H", ethertype) + ip_packet


def sll(ip_packet: bytes) -> bytes:
    """A Linux cooked (v1) frame."""
    return struct.pack(">HHH8sH", 0, 1, 6, b"\x02\x00\x0a\x00\x00\x01\x00\x00", 0x0800) + ip_packet


def sll2(ip_packet: bytes) -> bytes:
    """A Linux cooked v2 frame."""
    return (
        struct.pack(">HHIHBB8s", 0x0800, 0, 2, 1, 0, 6, b"\x02\x00\x0a\x00\x00\x01\x00\x00")
        + ip_packet
    )


def pcap_bytes(
    frames: list[bytes], linktype: int = 1, *, nano: bool = False, t0: float = 1000.0
) -> bytes:
    """A classic pcap file (dpkt's writer) holding ``frames`` 1 ms apart."""
    out = io.BytesIO()
    w = dpkt.pcap.Writer(out, snaplen=262144, linktype=linktype, nano=nano)
    for i, frame in enumerate(frames):
        w.writepkt(frame, ts=t0 + i * 0.001)
    return out.getvalue()


def pcapng_bytes(frames: list[bytes], linktype: int = 1, *, t0: float = 1000.0) -> bytes:
    """A pcapng file (dpkt's writer) holding ``frames`` 1 ms apart."""
    out = io.BytesIO()
    w = dpkt.pcapng.Writer(out, snaplen=262144, linktype=linktype)
    for i, frame in enumerate(frames):
        w.writepkt(frame, ts=t0 + i * 0.001)
    return out.getvalue()


def anonymised_itch_capture(messages: list[bytes], *, vlan: int = 100) -> bytes:
    """A capture shaped like the public anonymised ITCH samples: Ethernet with one VLAN tag,
    IPv4 0.0.0.0 -> 0.0.0.0, UDP port 0 -> 0, MoldUDP64 session of ten NUL bytes, sequence
    number 0 in every packet, one message per packet (dpkt builds every header)."""
    frames = []
    for i, message in enumerate(messages):
        payload = bytes(10) + bytes(8) + (1).to_bytes(2, "big")
        payload += len(message).to_bytes(2, "big") + message
        udp = dpkt.udp.UDP(sport=0, dport=0, data=payload)
        udp.ulen = 8 + len(payload)
        ip = dpkt.ip.IP(src=bytes(4), dst=bytes(4), p=17, id=i & 0xFFFF, data=udp)
        frames.append(ethernet(bytes(ip), (vlan,) if vlan else ()))
    return pcap_bytes(frames)


def ipv6_frame(next_header: int, chain: bytes, src: str = "fe80::1", dst: str = "ff02::1") -> bytes:
    """An Ethernet frame carrying IPv6 whose payload (``chain``: extension headers and
    whatever follows) starts with ``next_header``."""
    head = struct.pack(">IHBB", 6 << 28, len(chain), next_header, 64)
    head += socket.inet_pton(socket.AF_INET6, src) + socket.inet_pton(socket.AF_INET6, dst)
    return ethernet(head + chain, ethertype=0x86DD)


def udp_bytes(payload: bytes, sport: int = 4000, dport: int = 5000) -> bytes:
    """A UDP header (checksum 0) and its payload."""
    return struct.pack(">HHHH", sport, dport, 8 + len(payload), 0) + payload


def _corpus() -> list[bytes]:
    seeds = [p.read_bytes() for p in sorted(SHARED_CAPTURES.rglob("*.pcap"))[:6]]
    packets = [build_packet("SESSION001", 1 + 3 * i, [b"A" * 20] * 3) for i in range(4)]
    packets.append(build_end_of_session("SESSION001", 13))
    frames = [ethernet(ipv4_udp(p, ident=i)) for i, p in enumerate(packets)]
    big = ipv4_udp(build_packet("SESSION001", 13, [b"F" * 900] * 3), ident=99)
    frames += [ethernet(f) for f in fragment(big, 1200)]
    seeds += [pcap_bytes(frames), pcapng_bytes(frames), anonymised_itch_capture([b"A" * 36] * 3)]
    return seeds


CORPUS = _corpus()
_EXTREMES = [0, 1, 7, 0xFF, 0xFFFF, 0x7FFFFFFF, 0xFFFFFFF0, 0xFFFFFFFF]


@st.composite
def mutated_capture(draw: st.DrawFn) -> bytes:
    """A real or generated capture with bytes flipped, 32-bit fields set to extreme values
    (record and block lengths among them), slices repeated or removed, and a cut."""
    data = bytearray(draw(st.sampled_from(CORPUS)))
    for _ in range(draw(st.integers(1, 6))):
        kind = draw(st.sampled_from(["flip", "word", "repeat", "cut", "drop"]))
        at = draw(st.integers(0, max(0, len(data) - 1)))
        if kind == "flip" and data:
            data[at] ^= draw(st.integers(1, 255))
        elif kind == "word":
            value = draw(st.sampled_from(_EXTREMES))
            data[at : at + 4] = value.to_bytes(4, draw(st.sampled_from(["little", "big"])))
        elif kind == "repeat":
            data[at:at] = data[at : at + draw(st.integers(1, 200))]
        elif kind == "drop":
            del data[at : at + draw(st.integers(1, 40))]
        else:
            del data[max(4, at) :]
    return bytes(data)
