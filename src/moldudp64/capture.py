"""Read UDP datagrams out of pcap and pcapng captures, and write datagrams into pcap files.

(Above 900 lines on purpose: one reader for two file formats, six link layers, IPv4
reassembly and IPv6 header chains, each bound checked where the bytes are read; split,
the checks would be further from the reads they guard.)

Reading: :class:`CaptureReader` yields :class:`CapturedDatagram` (timestamp, source,
destination, UDP payload) from a pcap or pcapng file. Link layers: Ethernet (with any
number of 802.1Q /
802.1ad VLAN tags, so QinQ too), Linux cooked captures v1 and v2 (SLL, SLL2), raw IPv4/IPv6,
and BSD loopback. IPv4 fragments are reassembled in a bounded table; datagrams whose
fragments never all arrive are counted, never silently dropped. Every frame that does not
yield a datagram is counted in :class:`CaptureStats` by reason.

Library choice: dpkt parses the pcap file header. pcapng blocks are framed here, so that
every block length is checked against ``_MAX_RECORD`` before anything is read (dpkt's reader
allocates whatever a block claims), and so are IPv6 header chains (any chain: ESP, AH,
options, fragments). A damaged file raises :class:`CaptureDamaged` naming the byte where
the readable part ends, after every intact record. The hot path is sliced
by hand, because dpkt builds a Python object per record header and per protocol header:
``dpkt.pcap.Reader`` alone yields about 430,000 records/s with nothing decoded. For classic
pcap files of Ethernet frames, records are cut out of 1 MiB chunks and plain IPv4 (no
options, not a fragment) + UDP is sliced in place, about 850,000 datagrams/s; every other
frame (VLAN tags, Linux cooked, raw IP, fragments, pcapng) goes through ``_decode()``,
still hand-sliced with ``struct``. A test checks both paths give the same datagrams and
counts, and another that the record framing matches dpkt's reader.

:meth:`CaptureReader.batches` yields the same datagrams as runs between the same endpoints
(``inspect`` uses it). With the optional C accelerator ``_capture`` (``scan``), plain
IPv4/UDP records are cut out of a reused 1 MiB buffer a run at a time, about 6,000,000
datagrams/s; without it (or with ``MOLDUDP64_PURE_PYTHON=1``) the runs are grouped from
:meth:`CaptureReader.tuples`. Tests compare both with :meth:`CaptureReader.tuples`.

Writing: :class:`CaptureWriter` wraps datagrams in Ethernet/IPv4/UDP frames (headers packed
with ``struct``, about 4 us a datagram) into a classic pcap (dpkt's writer) or a pcapng
(blocks packed here, nanosecond timestamps) so that Wireshark and tshark open the file and
decode MoldUDP64 with ``-d udp.port==PORT,moldudp64``.
"""

from __future__ import annotations

import io
import os
import socket
import struct
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, fields
from typing import IO, BinaryIO, Final, Literal, NamedTuple

import dpkt

from ._closing import Closing
from .events import Address
from .exceptions import CaptureError, MalformedPacket
from .wire import END_OF_SESSION, HEADER_SIZE, Packet

__all__ = [
    "LINKTYPE_NAMES",
    "CaptureDamaged",
    "CaptureReader",
    "CaptureStats",
    "CaptureWriter",
    "CapturedDatagram",
    "FileKind",
    "detect_file_kind",
    "group_datagrams",
    "is_moldudp64",
    "read_datagrams",
]


class CaptureDamaged(CaptureError):
    """A capture readable up to byte ``offset`` only: the file ends inside a record
    (``truncated``, as when tcpdump is killed) or a record there is corrupt. Raised after
    every datagram of the intact records before ``offset`` was yielded."""

    def __init__(self, message: str, *, offset: int, truncated: bool) -> None:
        super().__init__(message)
        self.offset = offset
        self.truncated = truncated


class CapturedDatagram(NamedTuple):
    """One UDP datagram found in a capture (not the live client's
    :class:`moldudp64.sync.Datagram`)."""

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
    other_link: int = 0  # pcapng frames of an interface whose link type is not supported

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


_NUL_SESSION = bytes(10)


def _why(exc: BaseException, default: str) -> str:
    """An exception's text, or ``default`` when it has none (never "()")."""
    return str(exc).strip() or default


def is_moldudp64(payload: bytes | memoryview, *, printable_session: bool = True) -> bool:
    """Whether a UDP payload is plausibly a MoldUDP64 downstream packet.

    The framing must validate exactly (every block complete, no trailing bytes, no blocks
    in heartbeats or end of session), which rules out the 20-byte requests clients send;
    with ``printable_session`` (the default, for recognising MoldUDP64 among other UDP
    traffic) the session must also be printable ASCII, which rules out almost any other
    protocol, or ten NUL bytes (as in anonymised public captures).
    """
    if len(payload) < HEADER_SIZE:
        return False
    session = bytes(payload[:10])
    if printable_session and session != _NUL_SESSION and not all(0x20 <= b < 0x7F for b in session):
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

#: The link types the reader decodes, by number, with their names.
LINKTYPE_NAMES: Mapping[int, str] = {
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
# IPv6 extension headers that count 8-byte units and carry a next header (hop-by-hop,
# routing, destination options, mobility, HIP, shim6, experiments).
_IPV6_EXTENSIONS = frozenset({0, 43, 60, 135, 139, 140, 253, 254})
_MAX_RECORD = 1 << 24  # a pcap record or pcapng block longer than this is corruption
_MAX_INTERFACES = 1 << 16  # pcapng interfaces one file may describe
_NG_SHB = 0x0A0D0D0A
_NG_IDB = 1
_NG_PB = 2  # obsolete packet block
_NG_SPB = 3
_NG_EPB = 6
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
    """The fragments received so far of one IP datagram: the bytes at their offsets and
    which 8-byte blocks are filled, so each fragment costs time in its own length only."""

    __slots__ = ("blocks", "covered", "data", "first_seen", "total")

    def __init__(self, now: float) -> None:
        self.first_seen = now
        self.data = bytearray()
        self.blocks = bytearray()  # one byte per 8-byte block: 1 once it has arrived
        self.covered = 0  # blocks filled
        self.total: int | None = None

    def add(self, offset: int, body: bytes, last: bool) -> bytes | None:
        """Take one fragment; the whole payload once every block has arrived, else None.
        Raises ValueError for a fragment that contradicts the others (a lie)."""
        end = offset + len(body)
        total = self.total
        if last:
            if (total is not None and total != end) or len(self.blocks) * 8 > end + 7:
                raise ValueError("inconsistent last fragment")
            self.total = total = end
        elif total is not None and end > total:
            raise ValueError("fragment beyond the last one")
        data = self.data
        if len(data) < end:
            data.extend(bytes(end - len(data)))
        data[offset:end] = body
        first, stop = offset >> 3, (end + 7) >> 3
        blocks = self.blocks
        if len(blocks) < stop:
            blocks.extend(bytes(stop - len(blocks)))
        new = blocks.count(0, first, stop)
        if new:
            self.covered += new
            blocks[first:stop] = b"\x01" * (stop - first)
        if total is not None and self.covered == (total + 7) >> 3:
            return bytes(data[:total])
        return None

    @property
    def memory(self) -> int:
        """Bytes held (what the pending table's byte bound counts)."""
        return len(self.data) + len(self.blocks)


class CaptureReader(Closing):
    """Iterate over the UDP datagrams of a pcap or pcapng file.

    ``port`` keeps only datagrams from or to that UDP port. ``max_pending_fragments`` and
    ``max_pending_bytes`` bound the reassembly table (oldest entry given up first; each
    fragment costs time in its own length, so reassembly is linear) and ``fragment_timeout``
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
        max_pending_bytes: int = 16 << 20,
        fragment_timeout: float = 30.0,
    ) -> None:
        if port is not None and not 0 <= port <= 0xFFFF:
            raise CaptureError(f"UDP port {port} out of range 0..65535")
        self.port = port
        self.stats = CaptureStats()
        self.max_pending_fragments = max(1, max_pending_fragments)
        self.max_pending_bytes = max_pending_bytes
        self.fragment_timeout = fragment_timeout
        self._pending: dict[tuple[bytes, bytes, int], _Fragments] = {}
        self._pending_bytes = 0
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
        self._ng = False
        if head in _PCAP_MAGICS:
            self.format = FileKind.PCAP
            rest = self._file.read(20)
            try:
                # dpkt parses and checks the file header (magic, byte order, link type).
                reader = dpkt.pcap.Reader(io.BytesIO(head + rest))
            except (ValueError, dpkt.UnpackError, struct.error) as exc:
                raise CaptureError(
                    f"{self.name}: not a readable pcap file: {_why(exc, 'bad file header')}"
                ) from exc
            le = head in (b"\xd4\xc3\xb2\xa1", b"\x4d\x3c\xb2\xa1")
            nano = head in (b"\x4d\x3c\xb2\xa1", b"\xa1\xb2\x3c\x4d")
            self._record = struct.Struct("<IIII" if le else ">IIII")
            self._ts_scale = 1e-9 if nano else 1e-6
            self.linktype: int = reader.datalink() & 0x0FFFFFFF  # upper bits: FCS info
            self.snaplen: int = reader.snaplen
        elif head == _PCAPNG_MAGIC:
            self.format = FileKind.PCAPNG
            self._ng = True
            self._ng_open()
        elif not head:
            raise CaptureError(f"{self.name}: empty file, not a capture")
        else:
            raise CaptureError(f"{self.name}: not a pcap or pcapng file (magic {head.hex()})")
        if self.linktype not in LINKTYPE_NAMES:
            raise CaptureError(
                f"{self.name}: link type {self.linktype} not supported "
                f"(supported: Ethernet, Linux cooked SLL/SLL2, raw IP, loopback)"
            )

    def _damaged(
        self, offset: int, what: str, *, truncated: bool, frames: int | None = None
    ) -> CaptureDamaged:
        """The error for a file readable up to ``offset`` only."""
        if frames is None:
            frames = self.stats.frames
        if truncated:
            text = f"truncated at byte {offset} (file ends inside {what} after {frames} packets)"
        else:
            text = f"corrupt at byte {offset} ({what} after {frames} packets)"
        return CaptureDamaged(f"{self.name}: {text}", offset=offset, truncated=truncated)

    def _frames(self) -> Iterator[tuple[float, bytes, int]]:
        """(timestamp, frame, link type) per record, classic pcap or pcapng."""
        if self._ng:
            yield from self._ng_frames()
            return
        read = self._file.read
        unpack = self._record.unpack
        scale = self._ts_scale
        linktype = self.linktype
        offset = 24
        while True:
            hdr = read(16)
            if len(hdr) < 16:
                if hdr:
                    raise self._damaged(offset, "a record header", truncated=True)
                return
            sec, frac, caplen, _wirelen = unpack(hdr)
            if caplen > _MAX_RECORD:
                raise self._damaged(
                    offset, f"corrupt record: captured length {caplen}", truncated=False
                )
            buf = read(caplen)
            if len(buf) < caplen:
                raise self._damaged(offset, "a packet", truncated=True)
            offset += 16 + caplen
            yield sec + frac * scale, buf, linktype

    # -- pcapng, framed by hand: every block length is checked before anything is read

    def _ng_open(self) -> None:
        """Read the section header, then look ahead to the first interface (its link type
        is the file's); a block that is not one is kept for :meth:`_ng_frames`."""
        self._ng_pos = 0
        self._ng_little = True
        self._ng_ifaces: list[tuple[int, float, float, int]] = []
        self._ng_ahead: list[tuple[int, int, bytes]] = []
        self._ng_error: CaptureDamaged | None = None
        self.linktype = _LT_ETHERNET  # nominal, when the file names no interface
        self.snaplen = 0
        self._ng_block(_PCAPNG_MAGIC)  # the section header (damage here: nothing to read)
        try:
            while True:
                block = self._ng_block()
                if block is None:
                    return
                if block[0] == _NG_IDB:
                    self._ng_interface(block[2], block[1])
                    self.linktype, _scale, _offset, self.snaplen = self._ng_ifaces[0]
                    return
                if block[0] in (_NG_EPB, _NG_SPB, _NG_PB):
                    self._ng_ahead.append(block)
                    return
        except CaptureDamaged as exc:
            self._ng_error = exc  # raised in turn, after what came before it

    def _ng_block(self, magic: bytes = b"") -> tuple[int, int, bytes] | None:
        """The next block as (type, offset, body without its type, lengths and trailer);
        None at the end of the file. A section header sets the byte order."""
        start = self._ng_pos
        read = self._file.read
        head = magic + read(8 - len(magic))
        if not head:
            return None
        if len(head) < 8:
            raise self._damaged(start, "a pcapng block header", truncated=True)
        prefix = b""
        if head[:4] == _PCAPNG_MAGIC:
            prefix = read(4)
            if len(prefix) < 4:
                raise self._damaged(start, "a pcapng section header", truncated=True)
            if prefix == b"\x4d\x3c\x2b\x1a":
                self._ng_little = True
            elif prefix == b"\x1a\x2b\x3c\x4d":
                self._ng_little = False
            else:
                raise self._damaged(
                    start, f"pcapng byte-order magic {prefix.hex()}", truncated=False
                )
            btype = _NG_SHB
        order: Literal["little", "big"] = "little" if self._ng_little else "big"
        if not prefix:
            btype = int.from_bytes(head[:4], order)
        length = int.from_bytes(head[4:8], order)
        if length < 12 + len(prefix) or length % 4 or length > _MAX_RECORD:
            raise self._damaged(start, f"pcapng block length {length}", truncated=False)
        want = length - 8 - len(prefix)
        rest = read(want)
        if len(rest) < want:
            raise self._damaged(start, "a pcapng block", truncated=True)
        if rest[-4:] != head[4:8]:
            raise self._damaged(start, "pcapng block whose two lengths differ", truncated=False)
        self._ng_pos = start + length
        if btype == _NG_SHB:
            self._ng_ifaces = []  # a new section: its own interfaces
        return btype, start, prefix + rest[:-4]

    def _ng_interface(self, body: bytes, offset: int) -> None:
        """An interface description: link type, snap length, timestamp resolution/offset."""
        if len(body) < 8:
            raise self._damaged(offset, "short pcapng interface block", truncated=False)
        if len(self._ng_ifaces) >= _MAX_INTERFACES:
            raise self._damaged(
                offset, f"more than {_MAX_INTERFACES} pcapng interfaces", truncated=False
            )
        order: Literal["little", "big"] = "little" if self._ng_little else "big"
        linktype = int.from_bytes(body[0:2], order) & 0x0FFF
        snaplen = int.from_bytes(body[4:8], order)
        scale, ts_offset = 1e-6, 0.0
        pos = 8
        while pos + 4 <= len(body):
            code = int.from_bytes(body[pos : pos + 2], order)
            size = int.from_bytes(body[pos + 2 : pos + 4], order)
            value = body[pos + 4 : pos + 4 + size]
            if code == 0:
                break
            if code == 9 and size == 1:  # if_tsresol
                units = value[0]
                scale = 2.0 ** -(units & 0x7F) if units & 0x80 else 10.0**-units
            elif code == 14 and size == 8:  # if_tsoffset, seconds
                ts_offset = float(int.from_bytes(value, order, signed=True))
            pos += 4 + ((size + 3) & ~3)
        self._ng_ifaces.append((linktype, scale, ts_offset, snaplen))

    def _ng_frames(self) -> Iterator[tuple[float, bytes, int]]:
        """(timestamp, frame, link type) per packet block; other blocks are skipped. A
        packet block that contradicts itself (or names no interface) counts as malformed."""
        stats = self.stats
        last_ts = 0.0
        ahead, self._ng_ahead = self._ng_ahead, []
        while True:
            if ahead:
                block: tuple[int, int, bytes] | None = ahead.pop()
            else:
                block = None if self._ng_error is not None else self._ng_block()
            if block is None:
                if self._ng_error is not None:
                    raise self._ng_error
                return
            btype, offset, body = block
            if btype == _NG_IDB:
                self._ng_interface(body, offset)
                continue
            if btype not in (_NG_EPB, _NG_SPB, _NG_PB):
                continue  # section header, name resolution, statistics, custom, ...
            order: Literal["little", "big"] = "little" if self._ng_little else "big"
            ifaces = self._ng_ifaces
            if btype == _NG_SPB:
                if len(body) < 4 or not ifaces:
                    stats.frames += 1
                    stats.malformed += 1
                    continue
                linktype, _scale, _off, snaplen = ifaces[0]
                size = int.from_bytes(body[0:4], order)
                if snaplen:
                    size = min(size, snaplen)
                yield last_ts, body[4 : 4 + size], linktype
                continue
            if btype == _NG_EPB:
                head_size = 20
                iface = int.from_bytes(body[0:4], order) if len(body) >= 4 else -1
            else:  # obsolete packet block: 2-byte interface id, 2-byte drop count
                head_size = 20
                iface = int.from_bytes(body[0:2], order) if len(body) >= 2 else -1
            if len(body) < head_size or not 0 <= iface < len(ifaces):
                stats.frames += 1
                stats.malformed += 1
                continue
            high = int.from_bytes(body[4:8], order)
            low = int.from_bytes(body[8:12], order)
            caplen = int.from_bytes(body[12:16], order)
            if caplen > len(body) - head_size:
                stats.frames += 1
                stats.malformed += 1
                continue
            linktype, scale, ts_offset, _snaplen = ifaces[iface]
            last_ts = ((high << 32) | low) * scale + ts_offset
            yield last_ts, body[head_size : head_size + caplen], linktype

    @property
    def link_name(self) -> str:
        """The link type's name (e.g. ``Ethernet``), or its number when unknown."""
        return LINKTYPE_NAMES.get(self.linktype, str(self.linktype))

    def tell(self) -> int:
        """How far into the file the reader has read (bytes): for progress bars."""
        return self._file.tell()

    # -- decoding -------------------------------------------------------------------------

    def __iter__(self) -> Iterator[CapturedDatagram]:
        make = CapturedDatagram._make
        for item in self.tuples():
            yield make(item)

    def tuples(self) -> Iterator[tuple[float, Address, Address, bytes]]:
        """Like iterating the reader, as plain ``(timestamp, src, dst, payload)`` tuples
        (the fast path: no object per datagram)."""
        if not self._ng and self.linktype == _LT_ETHERNET:
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
            and not self._ng
            and self.linktype == _LT_ETHERNET
        ):
            return self._scan_pcap_ethernet(_scan, readinto)
        return group_datagrams(self.tuples())

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
        base = 24  # the file offset of data[0]
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
                        raise self._damaged(
                            base + pos,
                            f"corrupt record: captured length {caplen}",
                            truncated=False,
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
                base += pos
                pos = 0
                size = tail
                with memoryview(data) as view:
                    got = readinto(view[tail:]) or 0
                size += got
                if not got:
                    if tail == 0:
                        return
                    where = "a record header" if tail < 16 else "a packet"
                    raise self._damaged(base, where, truncated=True)
        finally:
            self._give_up_fragments()

    def _generic(self) -> Iterator[tuple[float, Address, Address, bytes]]:
        """Any file and link type, frame by frame through :meth:`_decode`."""
        stats = self.stats
        port = self.port
        decode = self._decode
        try:
            for ts, buf, linktype in self._frames():
                stats.frames += 1
                found = decode(ts, buf, linktype)
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
        self._pending_bytes = 0

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
        base = 24  # the file offset of data[0]
        frames = datagrams = other_port = 0
        try:
            while True:
                if pos + 16 > size:
                    more = read(_CHUNK)
                    if not more:
                        if pos < size:
                            raise self._damaged(
                                base + pos,
                                "a record header",
                                truncated=True,
                                frames=stats.frames + frames,
                            )
                        return
                    data = data[pos:] + more
                    base += pos
                    pos = 0
                    size = len(data)
                    continue
                sec, frac, caplen, _wirelen = unpack_record(data, pos)
                start = pos + 16
                end = start + caplen
                if end > size:
                    if caplen > _MAX_RECORD:
                        raise self._damaged(
                            base + pos,
                            f"corrupt record: captured length {caplen}",
                            truncated=False,
                            frames=stats.frames + frames,
                        )
                    more = read(max(_CHUNK, caplen))
                    if not more:
                        raise self._damaged(
                            base + pos, "a packet", truncated=True, frames=stats.frames + frames
                        )
                    data = data[pos:] + more
                    base += pos
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

    def _decode(
        self, ts: float, buf: bytes, linktype: int = -1
    ) -> tuple[float, Address, Address, bytes] | None:
        """One frame of ``linktype`` (default: the reader's): its UDP datagram, or None
        (counted why)."""
        stats = self.stats
        if linktype < 0:
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
        elif linktype not in LINKTYPE_NAMES:  # a pcapng interface of another kind
            stats.other_link += 1
            return None
        else:  # raw IP: the version nibble says which
            off = 0
            version = buf[0] >> 4 if buf else 0
            etype = _ETH_IPV4 if version == 4 else _ETH_IPV6 if version == 6 else -1
        if etype == _ETH_IPV4:
            found = self._ipv4(buf, off, ts)
        elif etype == _ETH_IPV6:
            found = self._ipv6(buf, off, ts)
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
            key = (src, dst, ident | (proto << 16))
            whole = self._reassemble(key, (frag & 0x1FFF) * 8, not frag & 0x2000, body, ts)
            if whole is None:
                return None
            stats.reassembled += 1
            body = whole
        found = self._udp(body)
        if found is None:
            return None
        return socket.inet_ntoa(src), socket.inet_ntoa(dst), found[0], found[1], found[2]

    def _reassemble(
        self, key: tuple[bytes, bytes, int], offset: int, last: bool, body: bytes, ts: float
    ) -> bytes | None:
        """Add one fragment (IPv4 or IPv6); the whole IP payload once every fragment has
        arrived. The table is bounded in entries and bytes (oldest given up first)."""
        stats = self.stats
        pending = self._pending
        # Give up datagrams whose fragments stopped coming (capture time).
        timeout = self.fragment_timeout
        if pending and ts - next(iter(pending.values())).first_seen > timeout:
            for stale in [k for k, v in pending.items() if ts - v.first_seen > timeout]:
                self._drop_pending(stale)
                stats.incomplete += 1
        if offset + len(body) > 0xFFFF or (not last and len(body) % 8):
            if key in pending:
                self._drop_pending(key)
                stats.incomplete += 1
            stats.malformed += 1
            return None
        entry = pending.get(key)
        if entry is None:
            if len(pending) >= self.max_pending_fragments:
                self._drop_pending(next(iter(pending)))  # oldest first (insertion order)
                stats.incomplete += 1
            entry = pending[key] = _Fragments(ts)
        before = entry.memory
        try:
            whole = entry.add(offset, body, last)
        except ValueError:
            self._drop_pending(key)
            stats.malformed += 1
            stats.incomplete += 1
            return None
        self._pending_bytes += entry.memory - before
        if whole is not None:
            self._drop_pending(key)
            return whole
        while self._pending_bytes > self.max_pending_bytes and len(pending) > 1:
            oldest = next(iter(pending))
            if oldest == key:  # keep the one just added; give up the next oldest
                oldest = next(k for k in pending if k != key)
            self._drop_pending(oldest)
            stats.incomplete += 1
        return None

    def _drop_pending(self, key: tuple[bytes, bytes, int]) -> None:
        entry = self._pending.pop(key)
        self._pending_bytes -= entry.memory

    def _ipv6(self, buf: bytes, off: int, ts: float) -> tuple[str, str, int, int, bytes] | None:
        """Decode IPv6 (+UDP) at ``off``, walking the extension headers by hand: anything
        but UDP at the end of the chain (ESP, TCP, ICMPv6, no next header) is ``not_udp``."""
        stats = self.stats
        if len(buf) < off + 40:
            stats.truncated += 1
            return None
        if buf[off] >> 4 != 6:
            stats.malformed += 1
            return None
        plen = (buf[off + 4] << 8) | buf[off + 5]
        nxt = buf[off + 6]
        src, dst = buf[off + 8 : off + 24], buf[off + 24 : off + 40]
        pos = off + 40
        end = pos + plen
        if plen == 0 and nxt == 0:  # a jumbogram (hop-by-hop option): not on Ethernet
            stats.malformed += 1
            return None
        if end > len(buf):
            stats.truncated += 1
            return None
        body: bytes | None = None
        for _ in range(32):  # a longer chain than this is a lie
            if nxt == _PROTO_UDP:
                body = buf[pos:end]
                break
            if nxt in _IPV6_EXTENSIONS or nxt == 51:  # 51: AH counts 4-byte units
                if pos + 2 > end:
                    stats.malformed += 1
                    return None
                size = (buf[pos + 1] + 2) * 4 if nxt == 51 else (buf[pos + 1] + 1) * 8
                nxt = buf[pos]
                pos += size
            elif nxt == 44:  # fragment header
                if pos + 8 > end:
                    stats.malformed += 1
                    return None
                first = buf[pos]
                field = (buf[pos + 2] << 8) | buf[pos + 3]
                ident = int.from_bytes(buf[pos + 4 : pos + 8], "big")
                pos += 8
                offset = field & 0xFFF8
                more = bool(field & 1)
                if not offset and not more:  # an atomic fragment: the payload is whole
                    nxt = first
                    continue
                stats.fragments += 1
                key = (src, dst, ident | (first << 32) | (1 << 40))
                whole = self._reassemble(key, offset, not more, buf[pos:end], ts)
                if whole is None:
                    return None
                stats.reassembled += 1
                if first != _PROTO_UDP:
                    stats.not_udp += 1
                    return None
                body = whole
                break
            else:  # ESP (50), no next header (59), TCP, ICMPv6, ...: not a UDP datagram
                stats.not_udp += 1
                return None
            if pos > end:
                stats.malformed += 1
                return None
        if body is None:
            stats.malformed += 1
            return None
        found = self._udp(body)
        if found is None:
            return None
        sport, dport, payload = found
        return (
            socket.inet_ntop(socket.AF_INET6, src),
            socket.inet_ntop(socket.AF_INET6, dst),
            sport,
            dport,
            payload,
        )

    def _udp(self, body: bytes) -> tuple[int, int, bytes] | None:
        """The ports and payload of the UDP datagram ``body``, or None (counted)."""
        if len(body) < 8:
            self.stats.malformed += 1
            return None
        sport, dport, ulen, _csum = _UDP_HDR.unpack_from(body, 0)
        if ulen < 8 or ulen > len(body):
            self.stats.malformed += 1
            return None
        return sport, dport, body[8:ulen]

    # -- lifetime -------------------------------------------------------------------------

    def close(self) -> None:
        """Close the file if this reader opened it."""
        if self._owns_file:
            self._file.close()


def group_datagrams(
    found: Iterator[tuple[float, Address, Address, bytes]],
) -> Iterator[tuple[list[float], Address, Address, list[bytes]]]:
    """``(timestamp, src, dst, payload)`` datagrams as ``(timestamps, src, dst, payloads)``
    runs of consecutive datagrams between the same endpoints (at most 4096 each), the shape
    :meth:`CaptureReader.batches` gives. A :class:`CaptureError` raised by ``found`` comes
    after the datagrams read before it."""
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


def read_datagrams(
    path: str | os.PathLike[str], *, port: int | None = None
) -> list[CapturedDatagram]:
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
    """Write datagrams as Ethernet/IPv4/UDP frames, nanosecond timestamps, to a classic pcap
    or (``fmt="pcapng"``, the default for a path ending ``.pcapng``) a pcapng file.

    Addresses must be IPv4 ``(host, port)`` pairs; a host name is resolved by nothing: it
    must be dotted quad. Datagrams larger than one Ethernet frame are written whole
    (jumbo frames), which Wireshark decodes as they are.
    """

    def __init__(
        self,
        target: str | os.PathLike[str] | IO[bytes],
        *,
        snaplen: int = 262144,
        fmt: str | None = None,
    ):
        self._owns_file = not hasattr(target, "write")
        if fmt is None:
            name = os.fspath(target) if self._owns_file else ""  # type: ignore[arg-type]
            fmt = FileKind.PCAPNG if str(name).lower().endswith(".pcapng") else FileKind.PCAP
        if fmt not in (FileKind.PCAP, FileKind.PCAPNG):
            raise CaptureError(f"cannot write captures as {fmt!r} (pcap or pcapng)")
        self.format = fmt
        if self._owns_file:
            name = os.fspath(target)  # type: ignore[arg-type]
            try:
                self._file: IO[bytes] = open(name, "wb")  # noqa: SIM115
            except OSError as exc:
                raise CaptureError(f"cannot create {name}: {exc.strerror or exc}") from exc
        else:
            self._file = target  # type: ignore[assignment]
        self._writer: dpkt.pcap.Writer | None = None
        if fmt == FileKind.PCAP:
            self._writer = dpkt.pcap.Writer(self._file, snaplen=snaplen, nano=True)
        else:
            self._file.write(_pcapng_header(snaplen))
        self._macs: dict[tuple[str, str], tuple[bytes, bytes, bytes]] = {}
        self._ident = 0
        self.count = 0

    def write(self, payload: bytes, src: Address, dst: Address, timestamp: float) -> None:
        """Append one UDP datagram from ``src`` to ``dst`` seen at ``timestamp`` (Unix time).

        The headers are packed here (IPv4 header checksum filled in; UDP checksum 0, which
        IPv4 defines as "not computed") so a live recorder keeps up with its feed; dpkt's
        writer frames a pcap record, a pcapng enhanced packet block is packed here.
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
        frame = eth + bytes(header) + udp + bytes(payload)
        if self._writer is not None:
            self._writer.writepkt_time(frame, timestamp)
        else:
            nanos = round(timestamp * 1e9)
            pad = -len(frame) & 3
            length = 32 + len(frame) + pad
            self._file.write(
                _EPB_HEAD.pack(
                    _NG_EPB, length, 0, nanos >> 32, nanos & 0xFFFFFFFF, len(frame), len(frame)
                )
                + frame
                + b"\x00" * pad
                + length.to_bytes(4, "little")
            )
        self.count += 1

    def flush(self) -> None:
        """Push buffered frames to the file."""
        self._file.flush()

    def close(self) -> None:
        """Flush, and close the file if this writer opened it."""
        self._file.flush()
        if self._owns_file:
            self._file.close()


_EPB_HEAD = struct.Struct("<IIIIIII")


def _pcapng_header(snaplen: int) -> bytes:
    """A little-endian pcapng section header, then one Ethernet interface with nanosecond
    timestamps (``if_tsresol`` 9)."""
    shb = struct.pack("<IIIHHq", _NG_SHB, 28, 0x1A2B3C4D, 1, 0, -1) + (28).to_bytes(4, "little")
    options = struct.pack("<HHB3x", 9, 1, 9) + struct.pack("<HH", 0, 0)
    idb_len = 20 + len(options)
    idb = (
        struct.pack("<IIHHI", _NG_IDB, idb_len, _LT_ETHERNET, 0, snaplen)
        + options
        + idb_len.to_bytes(4, "little")
    )
    return shb + idb
