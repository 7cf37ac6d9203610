"""Read UDP datagrams out of pcap and pcapng captures, and write datagrams into pcap files.

Reading: :class:`CaptureReader` yields :class:`Datagram` (timestamp, source, destination,
UDP payload) from a pcap or pcapng file. Link layers: Ethernet (with any number of 802.1Q /
802.1ad VLAN tags, so QinQ too), Linux cooked captures v1 and v2 (SLL, SLL2), raw IPv4/IPv6,
and BSD loopback. IPv4 fragments are reassembled in a bounded table; datagrams whose
fragments never all arrive are counted, never silently dropped. Every frame that does not
yield a datagram is counted in :class:`CaptureStats` by reason.

Library choice: dpkt parses the file formats (the pcap file header; every pcapng block) and
decodes the uncommon case (IPv6, whose extension headers it walks). The hot path is sliced
by hand, because dpkt builds a Python object per record header and per protocol header:
``dpkt.pcap.Reader`` alone yields about 430,000 records/s with nothing decoded. For classic
pcap files of Ethernet frames, records are cut out of 1 MiB chunks and plain IPv4 (no
options, not a fragment) + UDP is sliced in place, about 850,000 datagrams/s; every other
frame (VLAN tags, Linux cooked, raw IP, fragments, pcapng) goes through :meth:`_decode`,
still hand-sliced with ``struct``. A test checks both paths give the same datagrams and
counts, and another that the record framing matches dpkt's reader.

:meth:`CaptureReader.batches` yields the same datagrams as runs between the same endpoints
(``inspect`` uses it). With the optional C accelerator ``_capture`` (``scan``), plain
IPv4/UDP records are cut out of a reused 1 MiB buffer a run at a time, about 6,000,000
datagrams/s; without it (or with ``MOLDUDP64_PURE_PYTHON=1``) the runs are grouped from
:meth:`CaptureReader.tuples`. Tests compare both with :meth:`CaptureReader.tuples`.

Writing: :class:`CaptureWriter` wraps datagrams in Ethernet/IPv4/UDP frames (headers packed
with ``struct``, about 4 us a datagram; dpkt's pcap writer writes the file) so that Wireshark
and tshark open the file and decode MoldUDP64 with ``-d udp.port==PORT,moldudp64``.
"""

from __future__ import annotations

import io
import os
import socket
import struct
from collections.abc import Callable, Iterator
from dataclasses import dataclass, fields
from typing import IO, BinaryIO, Final, NamedTuple

import dpkt

from ._closing import Closing
from .events import Address
from .exceptions import CaptureError, MalformedPacket
from .wire import END_OF_SESSION, HEADER_SIZE, Packet

__all__ = [
    "CaptureReader",
    "CaptureStats",
    "CaptureWriter",
    "Datagram",
    "FileKind",
    "detect_file_kind",
    "is_moldudp64",
    "read_datagrams",
]


class Datagram(NamedTuple):
    """One UDP datagram found in a capture."""

    timestamp: float
    src: Address
    dst: Address
    payload: bytes


@dataclass(slots=True)
class CaptureStats:
    """What a :class:`CaptureReader` saw, frame by frame (counters only grow)."""

    frames: int = 0
    datagrams: int = 0  # UDP datagrams yielded (after the port filter)
    other_port: int = 0  # UDP datagrams left out by the port filter
    not_udp: int = 0  # IP packets of another protocol (TCP, ICMP, IGMP, ...)
    not_ip: int = 0  # frames that carry no IP (ARP, LLDP, ...)
    truncated: int = 0  # frames cut short by the snap length: payload incomplete
    malformed: int = 0  # bad IP or UDP header
    fragments: int = 0  # IPv4 fragments of UDP datagrams seen
    reassembled: int = 0  # datagrams rebuilt from fragments
    incomplete: int = 0  # fragmented datagrams given up (timeout, eviction, end of file)

    def as_dict(self) -> dict[str, int]:
        """The counters by name."""
        return {f.name: getattr(self, f.name) for f in fields(self)}


class FileKind:
    """What :func:`detect_file_kind` recognised."""

    PCAP: Final = "pcap"
    PCAPNG: Final = "pcapng"
    BINARYFILE: Final = "binaryfile"
    EMPTY: Final = "empty"


_PCAP_MAGICS = {
    b"\xd4\xc3\xb2\xa1",
    b"\xa1\xb2\xc3\xd4",
    b"\x4d\x3c\xb2\xa1",
    b"\xa1\xb2\x3c\x4d",
}
_PCAPNG_MAGIC = b"\x0a\x0d\x0d\x0a"


def detect_file_kind(path: str | os.PathLike[str]) -> str:
    """Say whether a file is a pcap, a pcapng, or (anything else) a BinaryFILE candidate.

    Raises :class:`OSError` when the file cannot be opened.
    """
    with open(path, "rb") as f:
        head = f.read(4)
    if not head:
        return FileKind.EMPTY
    if head in _PCAP_MAGICS:
        return FileKind.PCAP
    if head == _PCAPNG_MAGIC:
        return FileKind.PCAPNG
    return FileKind.BINARYFILE


def is_moldudp64(payload: bytes | memoryview, *, printable_session: bool = True) -> bool:
    """Whether a UDP payload is plausibly a MoldUDP64 downstream packet.

    The framing must validate exactly (every block complete, no trailing bytes, no blocks
    in heartbeats or end of session), which rules out the 20-byte requests clients send;
    with ``printable_session`` (the default, for recognising MoldUDP64 among other UDP
    traffic) the session must also be printable ASCII, which rules out almost any other
    protocol.
    """
    if len(payload) < HEADER_SIZE:
        return False
    session = bytes(payload[:10])
    if printable_session and not all(0x20 <= b < 0x7F for b in session):
        return False
    try:
        Packet(payload).validate()
    except MalformedPacket:
        return False
    count = (payload[18] << 8) | payload[19]
    return count != END_OF_SESSION or len(payload) == HEADER_SIZE


# Link types (LINKTYPE_* values as stored in files).
_LT_NULL = 0
_LT_ETHERNET = 1
_LT_RAW_VALUES = frozenset({12, 14, 101})
_LT_LOOP = 108
_LT_SLL = 113
_LT_IPV4 = 228
_LT_IPV6 = 229
_LT_SLL2 = 276

_SUPPORTED_LINKTYPES = {
    _LT_NULL: "BSD loopback",
    _LT_ETHERNET: "Ethernet",
    12: "raw IP",
    14: "raw IP",
    101: "raw IP",
    _LT_LOOP: "OpenBSD loopback",
    _LT_SLL: "Linux cooked (SLL)",
    _LT_IPV4: "raw IPv4",
    _LT_IPV6: "raw IPv6",
    _LT_SLL2: "Linux cooked v2 (SLL2)",
}

_ETH_IPV4 = 0x0800
_ETH_IPV6 = 0x86DD
_VLAN_TYPES = frozenset({0x8100, 0x88A8, 0x9100, 0x9200})

_PROTO_UDP = 17
_MAX_RECORD = 1 << 24  # a pcap record longer than this is corruption, not a packet
_CHUNK = 1 << 20
_SCAN_CHUNK = 1 << 20

_ScanFunction = Callable[
    [bytearray, int, int, bool, float, int, int],
    tuple[int, int, int, "bytes | None", list[float], list[bytes]],
]


def _load_scan() -> _ScanFunction | None:
    if os.environ.get("MOLDUDP64_PURE_PYTHON"):
        return None
    try:
        from ._capture import scan
    except ImportError:
        return None
    return scan


#: The C record scanner (None without the accelerator, or with MOLDUDP64_PURE_PYTHON=1).
_scan = _load_scan()
_U16 = struct.Struct(">H")
_IPV4_HDR = struct.Struct(">BBHHHBBH4s4s")
_UDP_HDR = struct.Struct(">HHHH")
_IPV4_WORDS = struct.Struct(">10H")
# From the start of an Ethernet frame: ethertype, IPv4 version/IHL, total length, flags and
# fragment offset, protocol, UDP length (the fields the fast path tests).
_ETH_IPV4_UDP = struct.Struct(">12xHBxH2xHxB2x8x4xH")


class _Fragments:
    """The fragments received so far of one IPv4 datagram."""

    __slots__ = ("first_seen", "parts", "size", "total")

    def __init__(self, now: float) -> None:
        self.first_seen = now
        self.parts: dict[int, bytes] = {}
        self.size = 0
        self.total: int | None = None

    def complete(self) -> bytes | None:
        """The reassembled payload when every byte has arrived, else None."""
        if self.total is None:
            return None
        out = bytearray(self.total)
        covered = 0
        for offset in sorted(self.parts):
            part = self.parts[offset]
            if offset > covered:
                return None
            end = min(offset + len(part), self.total)
            if end > covered:
                out[covered:end] = part[covered - offset : end - offset]
                covered = end
        return bytes(out) if covered >= self.total else None


class CaptureReader(Closing):
    """Iterate over the UDP datagrams of a pcap or pcapng file.

    ``port`` keeps only datagrams from or to that UDP port. ``max_pending_fragments``
    bounds the reassembly table (oldest entry given up first) and ``fragment_timeout``
    (seconds of capture time) gives up datagrams whose fragments stopped coming.
    ``stats`` counts everything, including what was not yielded. Open errors and
    corrupt files raise :class:`CaptureError`; a file cut off in the last record raises
    it too, after every complete record was yielded.
    """

    def __init__(
        self,
        source: str | os.PathLike[str] | BinaryIO,
        *,
        port: int | None = None,
        max_pending_fragments: int = 1024,
        fragment_timeout: float = 30.0,
    ) -> None:
        if port is not None and not 0 <= port <= 0xFFFF:
            raise CaptureError(f"UDP port {port} out of range 0..65535")
        self.port = port
        self.stats = CaptureStats()
        self.max_pending_fragments = max(1, max_pending_fragments)
        self.fragment_timeout = fragment_timeout
        self._pending: dict[tuple[bytes, bytes, int], _Fragments] = {}
        self._owns_file = not hasattr(source, "read")
        if self._owns_file:
            self.name = os.fspath(source)  # type: ignore[arg-type]
            try:
                self._file: BinaryIO = open(source, "rb")  # type: ignore[arg-type,assignment]  # noqa: SIM115
            except OSError as exc:
                raise CaptureError(f"cannot open {self.name}: {exc.strerror or exc}") from exc
        else:
            self._file = source  # type: ignore[assignment]
            self.name = str(getattr(source, "name", "<capture>"))
        try:
            self._open()
        except BaseException:
            self.close()
            raise

    # -- file framing -------------------------------------------------------------------

    def _open(self) -> None:
        head = self._file.read(4)
        if head in _PCAP_MAGICS:
            self.format = FileKind.PCAP
            rest = self._file.read(20)
            try:
                # dpkt parses and checks the file header (magic, byte order, link type).
                reader = dpkt.pcap.Reader(io.BytesIO(head + rest))
            except (ValueError, dpkt.UnpackError) as exc:
                raise CaptureError(f"{self.name}: not a readable pcap file ({exc})") from exc
            le = head in (b"\xd4\xc3\xb2\xa1", b"\x4d\x3c\xb2\xa1")
            nano = head in (b"\x4d\x3c\xb2\xa1", b"\xa1\xb2\x3c\x4d")
            self._record = struct.Struct("<IIII" if le else ">IIII")
            self._ts_scale = 1e-9 if nano else 1e-6
            self.linktype: int = reader.datalink() & 0x0FFFFFFF  # upper bits: FCS info
            self.snaplen: int = reader.snaplen
            self._ng: dpkt.pcapng.Reader | None = None
        elif head == _PCAPNG_MAGIC:
            self.format = FileKind.PCAPNG
            self._file.seek(-4, os.SEEK_CUR)
            try:
                self._ng = dpkt.pcapng.Reader(self._file)
            except (ValueError, dpkt.UnpackError, struct.error) as exc:
                raise CaptureError(f"{self.name}: not a readable pcapng file ({exc})") from exc
            self.linktype = self._ng.datalink()
            self.snaplen = self._ng.snaplen
        elif not head:
            raise CaptureError(f"{self.name}: empty file, not a capture")
        else:
            raise CaptureError(f"{self.name}: not a pcap or pcapng file (magic {head.hex()})")
        if self.linktype not in _SUPPORTED_LINKTYPES:
            raise CaptureError(
                f"{self.name}: link type {self.linktype} not supported "
                f"(supported: Ethernet, Linux cooked SLL/SLL2, raw IP, loopback)"
            )

    def _frames(self) -> Iterator[tuple[float, bytes]]:
        """(timestamp, frame) per record, classic pcap or pcapng."""
        if self._ng is not None:
            try:
                for ts, buf in self._ng:
                    yield float(ts), bytes(buf)
            except (ValueError, dpkt.UnpackError, struct.error) as exc:
                raise CaptureError(
                    f"{self.name}: corrupt or truncated pcapng block after "
                    f"{self.stats.frames} packets ({exc})"
                ) from exc
            return
        read = self._file.read
        unpack = self._record.unpack
        scale = self._ts_scale
        while True:
            hdr = read(16)
            if len(hdr) < 16:
                if hdr:
                    raise CaptureError(
                        f"{self.name}: file ends inside a record header after "
                        f"{self.stats.frames} packets"
                    )
                return
            sec, frac, caplen, _wirelen = unpack(hdr)
            if caplen > _MAX_RECORD:
                raise CaptureError(
                    f"{self.name}: corrupt record after {self.stats.frames} packets "
                    f"(captured length {caplen})"
                )
            buf = read(caplen)
            if len(buf) < caplen:
                raise CaptureError(
                    f"{self.name}: file ends inside a packet after {self.stats.frames} packets"
                )
            yield sec + frac * scale, buf

    # -- decoding -------------------------------------------------------------------------

    def __iter__(self) -> Iterator[Datagram]:
        make = Datagram._make
        for item in self.tuples():
            yield make(item)

    def tuples(self) -> Iterator[tuple[float, Address, Address, bytes]]:
        """Like iterating the reader, as plain ``(timestamp, src, dst, payload)`` tuples
        (the fast path: no object per datagram)."""
        if self._ng is None and self.linktype == _LT_ETHERNET:
            return self._fast_pcap_ethernet()
        return self._generic()

    def batches(self) -> Iterator[tuple[list[float], Address, Address, list[bytes]]]:
        """The datagrams in file order as ``(timestamps, src, dst, payloads)`` runs of
        consecutive datagrams between the same endpoints (flattened, the same datagrams
        as :meth:`tuples`, and the same counts). The fastest way through a big capture:
        with the C accelerator, plain IPv4/UDP records are cut out a run at a time."""
        readinto = getattr(self._file, "readinto", None)
        if (
            _scan is not None
            and readinto is not None
            and self._ng is None
            and self.linktype == _LT_ETHERNET
        ):
            return self._scan_pcap_ethernet(_scan, readinto)
        return self._group(self.tuples())

    @staticmethod
    def _group(
        found: Iterator[tuple[float, Address, Address, bytes]],
    ) -> Iterator[tuple[list[float], Address, Address, list[bytes]]]:
        """Runs of consecutive datagrams between the same endpoints (at most 4096 each)."""
        times: list[float] = []
        payloads: list[bytes] = []
        run_src: Address | None = None
        run_dst: Address | None = None
        try:
            for ts, src, dst, payload in found:
                if src != run_src or dst != run_dst or len(payloads) >= 4096:
                    if payloads:
                        assert run_src is not None and run_dst is not None
                        yield times, run_src, run_dst, payloads
                        times, payloads = [], []
                    run_src, run_dst = src, dst
                times.append(ts)
                payloads.append(payload)
        except CaptureError:  # a file cut off: what was read comes first
            if payloads:
                assert run_src is not None and run_dst is not None
                yield times, run_src, run_dst, payloads
            raise
        if payloads:
            assert run_src is not None and run_dst is not None
            yield times, run_src, run_dst, payloads

    def _scan_pcap_ethernet(
        self, scan: _ScanFunction, readinto: Callable[[memoryview], int | None]
    ) -> Iterator[tuple[list[float], Address, Address, list[bytes]]]:
        """Classic pcap of Ethernet frames through the C scanner, 1 MiB at a time; the
        records it leaves (anything but plain IPv4/UDP) go through :meth:`_decode`."""
        stats = self.stats
        port = -1 if self.port is None else self.port
        decode = self._decode
        unpack_record = self._record.unpack_from
        little = self._record.format.startswith("<")
        scale = self._ts_scale
        cache: dict[bytes, tuple[Address, Address]] = {}
        inet_ntoa = socket.inet_ntoa
        # One buffer, refilled in place: the unread tail moves to the front, then reads.
        data = bytearray(_SCAN_CHUNK)
        pos = 0
        size = 0
        try:
            while True:
                pos, frames, other, key, times, payloads = scan(
                    data, pos, size, little, scale, port, _MAX_RECORD
                )
                stats.frames += frames
                stats.other_port += other
                if key is not None:
                    addrs = cache.get(key)
                    if addrs is None:
                        addrs = (
                            (inet_ntoa(key[0:4]), (key[8] << 8) | key[9]),
                            (inet_ntoa(key[4:8]), (key[10] << 8) | key[11]),
                        )
                        if len(cache) < 4096:
                            cache[key] = addrs
                    stats.datagrams += len(payloads)
                    yield times, addrs[0], addrs[1], payloads
                if frames:
                    continue
                # The record at pos is incomplete, or not plain IPv4/UDP: the general way.
                if pos + 16 <= size:
                    sec, frac, caplen, _wirelen = unpack_record(data, pos)
                    start = pos + 16
                    end = start + caplen
                    if end <= size:
                        pos = end
                        stats.frames += 1
                        found = decode(sec + frac * scale, bytes(data[start:end]))
                        if found is None:
                            continue
                        if port >= 0 and port != found[1][1] and port != found[2][1]:
                            stats.other_port += 1
                            continue
                        stats.datagrams += 1
                        yield [found[0]], found[1], found[2], [found[3]]
                        continue
                    if caplen > _MAX_RECORD:
                        raise CaptureError(
                            f"{self.name}: corrupt record after {stats.frames} "
                            f"packets (captured length {caplen})"
                        )
                    want = 16 + caplen
                else:
                    want = 16
                # Refill: keep the unread tail, then read as much as the buffer holds.
                tail = size - pos
                if want > len(data):
                    data = bytearray(data[pos:size]) + bytearray(want - tail)
                elif tail:
                    data[:tail] = data[pos:size]
                pos = 0
                size = tail
                with memoryview(data) as view:
                    got = readinto(view[tail:]) or 0
                size += got
                if not got:
                    if tail == 0:
                        return
                    where = "a record header" if tail < 16 else "a packet"
                    raise CaptureError(
                        f"{self.name}: file ends inside {where} after {stats.frames} packets"
                    )
        finally:
            self._give_up_fragments()

    def _generic(self) -> Iterator[tuple[float, Address, Address, bytes]]:
        """Any file and link type, frame by frame through :meth:`_decode`."""
        stats = self.stats
        port = self.port
        decode = self._decode
        try:
            for ts, buf in self._frames():
                stats.frames += 1
                found = decode(ts, buf)
                if found is None:
                    continue
                if port is not None and port != found[1][1] and port != found[2][1]:
                    stats.other_port += 1
                    continue
                stats.datagrams += 1
                yield found
        finally:
            self._give_up_fragments()

    def _give_up_fragments(self) -> None:
        """End of file: whatever is still being reassembled never will be."""
        self.stats.incomplete += len(self._pending)
        self._pending.clear()

    def _fast_pcap_ethernet(self) -> Iterator[tuple[float, Address, Address, bytes]]:
        """Classic pcap of Ethernet frames, read in 1 MiB chunks; plain IPv4/UDP frames are
        sliced here, everything else goes through :meth:`_decode`."""
        stats = self.stats
        port = self.port
        decode = self._decode
        read = self._file.read
        unpack_record = self._record.unpack_from
        unpack_fast = _ETH_IPV4_UDP.unpack_from
        scale = self._ts_scale
        cache: dict[bytes, tuple[Address, Address]] = {}
        inet_ntoa = socket.inet_ntoa
        data = b""
        pos = 0
        size = 0
        frames = datagrams = other_port = 0
        try:
            while True:
                if pos + 16 > size:
                    more = read(_CHUNK)
                    if not more:
                        if pos < size:
                            raise CaptureError(
                                f"{self.name}: file ends inside a record header after "
                                f"{stats.frames + frames} packets"
                            )
                        return
                    data = data[pos:] + more
                    pos = 0
                    size = len(data)
                    continue
                sec, frac, caplen, _wirelen = unpack_record(data, pos)
                start = pos + 16
                end = start + caplen
                if end > size:
                    if caplen > _MAX_RECORD:
                        raise CaptureError(
                            f"{self.name}: corrupt record after {stats.frames + frames} "
                            f"packets (captured length {caplen})"
                        )
                    more = read(max(_CHUNK, caplen))
                    if not more:
                        raise CaptureError(
                            f"{self.name}: file ends inside a packet after "
                            f"{stats.frames + frames} packets"
                        )
                    data = data[pos:] + more
                    pos = 0
                    size = len(data)
                    continue
                pos = end
                frames += 1
                ts = sec + frac * scale
                # Plain Ethernet + IPv4 (no options, not a fragment) + UDP: slice it here.
                if caplen >= 42:
                    etype, vihl, total, frag, proto, ulen = unpack_fast(data, start)
                else:
                    etype = 0
                if (
                    etype == _ETH_IPV4
                    and vihl == 0x45
                    and proto == _PROTO_UDP
                    and not frag & 0x3FFF
                ):
                    ip = start + 14
                    if ip + total <= end and 8 <= ulen <= total - 20:
                        key = data[ip + 12 : ip + 24]
                        addrs = cache.get(key)
                        if addrs is None:
                            addrs = (
                                (inet_ntoa(key[0:4]), (key[8] << 8) | key[9]),
                                (inet_ntoa(key[4:8]), (key[10] << 8) | key[11]),
                            )
                            if len(cache) < 4096:
                                cache[key] = addrs
                        src, dst = addrs
                        if port is not None and port != src[1] and port != dst[1]:
                            other_port += 1
                            continue
                        datagrams += 1
                        yield ts, src, dst, data[ip + 28 : ip + 20 + ulen]
                        continue
                found = decode(ts, data[start:end])
                if found is None:
                    continue
                if port is not None and port != found[1][1] and port != found[2][1]:
                    other_port += 1
                    continue
                datagrams += 1
                yield found
        finally:
            stats.frames += frames
            stats.datagrams += datagrams
            stats.other_port += other_port
            self._give_up_fragments()

    def _decode(self, ts: float, buf: bytes) -> tuple[float, Address, Address, bytes] | None:
        """One frame of the reader's link type: its UDP datagram, or None (counted why)."""
        stats = self.stats
        linktype = self.linktype
        # Find the network layer: ethertype and offset of the IP header.
        if linktype == _LT_ETHERNET:
            off = 12
            if len(buf) < 14:
                stats.malformed += 1
                return None
            etype = (buf[12] << 8) | buf[13]
            while etype in _VLAN_TYPES:
                off += 4
                if len(buf) < off + 2:
                    etype = -1
                    break
                etype = (buf[off] << 8) | buf[off + 1]
            off += 2
            if (  # 802.3 length field, then LLC/SNAP carrying an ethertype
                0 <= etype < 0x0600
                and len(buf) >= off + 8
                and buf[off : off + 6] == b"\xaa\xaa\x03\x00\x00\x00"
            ):
                etype = (buf[off + 6] << 8) | buf[off + 7]
                off += 8
        elif linktype == _LT_SLL:
            if len(buf) < 16:
                stats.malformed += 1
                return None
            etype, off = (buf[14] << 8) | buf[15], 16
        elif linktype == _LT_SLL2:
            if len(buf) < 20:
                stats.malformed += 1
                return None
            etype, off = (buf[0] << 8) | buf[1], 20
        elif linktype in (_LT_NULL, _LT_LOOP):
            if len(buf) < 4:
                stats.malformed += 1
                return None
            family = int.from_bytes(buf[:4], "big" if linktype == _LT_LOOP else "little")
            if family > 0xFFFF:  # written on a host of the other byte order
                family = int.from_bytes(buf[:4], "little" if linktype == _LT_LOOP else "big")
            etype = _ETH_IPV4 if family == 2 else _ETH_IPV6 if family in (24, 28, 30) else -1
            off = 4
        else:  # raw IP: the version nibble says which
            off = 0
            version = buf[0] >> 4 if buf else 0
            etype = _ETH_IPV4 if version == 4 else _ETH_IPV6 if version == 6 else -1
        if etype == _ETH_IPV4:
            found = self._ipv4(buf, off, ts)
        elif etype == _ETH_IPV6:
            found = self._ipv6(buf, off)
        else:
            stats.not_ip += 1
            return None
        if found is None:
            return None
        src, dst, sport, dport, payload = found
        return ts, (src, sport), (dst, dport), payload

    def _ipv4(self, buf: bytes, off: int, ts: float) -> tuple[str, str, int, int, bytes] | None:
        """Decode IPv4 (+UDP) at ``off``; None when nothing to yield (counted)."""
        stats = self.stats
        if len(buf) < off + 20:
            stats.truncated += 1
            return None
        vihl, _tos, total, ident, frag, _ttl, proto, _sum, src, dst = _IPV4_HDR.unpack_from(
            buf, off
        )
        ihl = (vihl & 0x0F) * 4
        if vihl >> 4 != 4 or ihl < 20 or total < ihl:
            stats.malformed += 1
            return None
        if proto != _PROTO_UDP:
            stats.not_udp += 1
            return None
        end = off + total
        if end > len(buf):
            stats.truncated += 1
            return None
        body = buf[off + ihl : end]
        if frag & 0x3FFF:  # more fragments, or not the first: reassemble
            stats.fragments += 1
            whole = self._reassemble(src, dst, ident, frag, body, ts)
            if whole is None:
                return None
            stats.reassembled += 1
            body = whole
        if len(body) < 8:
            stats.malformed += 1
            return None
        sport, dport, ulen, _csum = _UDP_HDR.unpack_from(body, 0)
        if ulen < 8 or ulen > len(body):
            stats.malformed += 1
            return None
        return socket.inet_ntoa(src), socket.inet_ntoa(dst), sport, dport, body[8:ulen]

    def _reassemble(
        self, src: bytes, dst: bytes, ident: int, frag: int, body: bytes, ts: float
    ) -> bytes | None:
        """Add one fragment; the whole IP payload once every fragment has arrived."""
        pending = self._pending
        # Give up datagrams whose fragments stopped coming (capture time).
        timeout = self.fragment_timeout
        if pending and ts - next(iter(pending.values())).first_seen > timeout:
            for stale in [k for k, v in pending.items() if ts - v.first_seen > timeout]:
                del pending[stale]
                self.stats.incomplete += 1
        key = (src, dst, ident)
        entry = pending.get(key)
        if entry is None:
            if len(pending) >= self.max_pending_fragments:
                del pending[next(iter(pending))]  # oldest first (dicts keep insertion order)
                self.stats.incomplete += 1
            entry = pending[key] = _Fragments(ts)
        offset = (frag & 0x1FFF) * 8
        if offset + len(body) > 0xFFFF or (frag & 0x2000 and len(body) % 8):
            del pending[key]
            self.stats.malformed += 1
            self.stats.incomplete += 1
            return None
        if offset not in entry.parts:
            entry.parts[offset] = body
            entry.size += len(body)
        if not frag & 0x2000:
            entry.total = offset + len(body)
        whole = entry.complete()
        if whole is not None:
            del pending[key]
        return whole

    def _ipv6(self, buf: bytes, off: int) -> tuple[str, str, int, int, bytes] | None:
        """Decode IPv6 (+UDP) with dpkt, which walks the extension headers."""
        stats = self.stats
        try:
            ip6 = dpkt.ip6.IP6(buf[off:])
        except (dpkt.UnpackError, struct.error, ValueError):
            stats.truncated += 1
            return None
        udp = ip6.data
        if not isinstance(udp, dpkt.udp.UDP):
            if ip6.p == _PROTO_UDP or 44 in getattr(ip6, "extension_hdrs", {}):
                stats.malformed += 1
            else:
                stats.not_udp += 1
            return None
        data = bytes(udp.data)
        if udp.ulen < 8 or len(data) < udp.ulen - 8:
            stats.truncated += 1
            return None
        return (
            socket.inet_ntop(socket.AF_INET6, ip6.src),
            socket.inet_ntop(socket.AF_INET6, ip6.dst),
            udp.sport,
            udp.dport,
            data[: udp.ulen - 8],
        )

    # -- lifetime -------------------------------------------------------------------------

    def close(self) -> None:
        """Close the file if this reader opened it."""
        if self._owns_file:
            self._file.close()



def read_datagrams(path: str | os.PathLike[str], *, port: int | None = None) -> list[Datagram]:
    """Every UDP datagram of a capture, in file order (small files; tests and tools)."""
    with CaptureReader(path, port=port) as reader:
        return list(reader)


def _mac_for(ip: str) -> bytes:
    """The Ethernet address a frame to ``ip`` carries: the multicast MAC for groups."""
    raw = socket.inet_aton(ip)
    if 224 <= raw[0] <= 239:
        return b"\x01\x00\x5e" + bytes([raw[1] & 0x7F, raw[2], raw[3]])
    return b"\x02\x00" + raw  # locally administered, derived from the address


class CaptureWriter(Closing):
    """Write datagrams to a classic pcap (nanosecond timestamps) as Ethernet/IPv4/UDP frames.

    Addresses must be IPv4 ``(host, port)`` pairs; a host name is resolved by nothing: it
    must be dotted quad. Datagrams larger than one Ethernet frame are written whole
    (jumbo frames), which Wireshark decodes as they are.
    """

    def __init__(self, target: str | os.PathLike[str] | IO[bytes], *, snaplen: int = 262144):
        self._owns_file = not hasattr(target, "write")
        if self._owns_file:
            name = os.fspath(target)  # type: ignore[arg-type]
            try:
                self._file: IO[bytes] = open(name, "wb")  # noqa: SIM115
            except OSError as exc:
                raise CaptureError(f"cannot create {name}: {exc.strerror or exc}") from exc
        else:
            self._file = target  # type: ignore[assignment]
        self._writer = dpkt.pcap.Writer(self._file, snaplen=snaplen, nano=True)
        self._macs: dict[tuple[str, str], tuple[bytes, bytes, bytes]] = {}
        self._ident = 0
        self.count = 0

    def write(self, payload: bytes, src: Address, dst: Address, timestamp: float) -> None:
        """Append one UDP datagram from ``src`` to ``dst`` seen at ``timestamp`` (Unix time).

        The headers are packed here (IPv4 header checksum filled in; UDP checksum 0, which
        IPv4 defines as "not computed") so a live recorder keeps up with its feed; dpkt's
        writer frames the record.
        """
        macs = self._macs.get((src[0], dst[0]))
        if macs is None:
            try:
                src_ip, dst_ip = socket.inet_aton(src[0]), socket.inet_aton(dst[0])
            except (OSError, TypeError) as exc:
                raise CaptureError(f"not an IPv4 address pair: {src!r} -> {dst!r}") from exc
            macs = (_mac_for(dst[0]) + _mac_for(src[0]) + b"\x08\x00", src_ip, dst_ip)
            if len(self._macs) < 1024:
                self._macs[(src[0], dst[0])] = macs
        eth, src_ip, dst_ip = macs
        ulen = 8 + len(payload)
        if ulen + 20 > 0xFFFF:
            raise CaptureError(f"datagram of {len(payload)} bytes is too large for IPv4")
        self._ident = (self._ident + 1) & 0xFFFF
        header = bytearray(
            _IPV4_HDR.pack(
                0x45, 0, 20 + ulen, self._ident, 0x4000, 1, _PROTO_UDP, 0, src_ip, dst_ip
            )
        )
        total = sum(_IPV4_WORDS.unpack(header))
        total = (total & 0xFFFF) + (total >> 16)
        total = (total & 0xFFFF) + (total >> 16)
        header[10:12] = (~total & 0xFFFF).to_bytes(2, "big")
        udp = _UDP_HDR.pack(src[1], dst[1], ulen, 0)
        self._writer.writepkt_time(eth + bytes(header) + udp + bytes(payload), timestamp)
        self.count += 1

    def flush(self) -> None:
        """Push buffered frames to the file."""
        self._file.flush()

    def close(self) -> None:
        """Flush, and close the file if this writer opened it."""
        self._file.flush()
        if self._owns_file:
            self._file.close()

