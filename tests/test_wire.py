"""Wire format: byte-exact records both ways, properties, and real NASDAQ captures."""

from __future__ import annotations

import csv
import os
import struct
from pathlib import Path

import dpkt
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from moldudp64 import wire as codec
from moldudp64.exceptions import EncodeError, MalformedPacket, MessageTooLarge, MoldUDP64Error
from moldudp64.wire import (
    DEFAULT_MAX_PAYLOAD,
    HEADER_SIZE,
    MAX_DATAGRAM,
    Packer,
    Packet,
    PacketKind,
    RequestPacket,
    RetransmissionPacket,
    RetransmissionRequest,
    build_end_of_session,
    build_heartbeat,
    build_packet,
    encode_session,
    pack_messages,
    split_blocks,
)

# shared/ lies beside the clone, here and in CI.
CAPTURES = Path(__file__).resolve().parents[2] / "shared" / "captures"

SESSION = b"000010059B"

# parse_blocks in pure Python and, when built, through the C accelerator: same results.
PARSERS = [codec._parse_blocks_py] + ([codec._parse_blocks_c] if codec.c_parse_blocks else [])


def parse_all(data: bytes) -> list[bytes]:
    """parse_blocks through every implementation, checking that they agree."""
    results = [parse(data) for parse in PARSERS]
    assert all(r == results[0] for r in results)
    return results[0]


def test_c_accelerator_is_built_here() -> None:
    # pip install . builds it with the system compiler; the fallback is tested either way.
    pure = os.environ.get("MOLDUDP64_PURE_PYTHON")
    assert codec.c_parse_blocks is not None or pure or not os.environ.get("CI")

# (description, session, seq, messages, exact wire bytes)
DATA_PACKETS = [
    (
        "one message",
        "000010059B",
        1,
        [b"ABC"],
        b"000010059B" + b"\x00" * 7 + b"\x01" + b"\x00\x01" + b"\x00\x03ABC",
    ),
    (
        "two messages, one empty",
        "S1",
        0x0102030405060708,
        [b"", b"xy"],
        b"S1        " + bytes.fromhex("0102030405060708") + b"\x00\x02" + b"\x00\x00"
        + b"\x00\x02xy",
    ),
    (
        "largest sequence number",
        b"ABCDEFGHIJ",
        2**64 - 1,
        [b"Z"],
        b"ABCDEFGHIJ" + b"\xff" * 8 + b"\x00\x01" + b"\x00\x01Z",
    ),
]


@pytest.mark.parametrize(("desc", "session", "seq", "messages", "wire"), DATA_PACKETS)
def test_data_packet_builds_and_parses_byte_exact(
    desc: str, session: str | bytes, seq: int, messages: list[bytes], wire: bytes
) -> None:
    assert build_packet(session, seq, messages) == wire
    packet = Packet.parse(wire)
    assert packet.session_ident_raw == encode_session(session)
    assert packet.seq_num == seq
    assert packet.msg_count == len(messages) == len(packet)
    assert packet.packet_kind is PacketKind.STANDARD
    assert [bytes(m) for m in packet] == messages
    assert split_blocks(wire) == messages == parse_all(wire)
    assert packet.next_seq_num == seq + len(messages)


def test_heartbeat_and_end_of_session_are_byte_exact_and_hold_no_messages() -> None:
    heartbeat = build_heartbeat("000010059B", 42)
    assert heartbeat == b"000010059B" + (42).to_bytes(8, "big") + b"\x00\x00"
    eos = build_end_of_session("000010059B", 42)
    assert eos == b"000010059B" + (42).to_bytes(8, "big") + b"\xff\xff"
    for wire, kind in ((heartbeat, PacketKind.HEARTBEAT), (eos, PacketKind.END_OF_SESSION)):
        packet = Packet.parse(wire)
        assert packet.packet_kind is kind
        assert len(packet) == 0
        assert list(packet) == []
        assert packet.next_seq_num == 42  # never 42 + 65535


def test_request_packet_is_exactly_20_bytes_both_ways() -> None:
    wire = b"000010059B" + (1000).to_bytes(8, "big") + (25).to_bytes(2, "big")
    request = RetransmissionPacket("000010059B", 1000, 25)
    assert request.build() == wire
    assert RetransmissionPacket.parse(wire) == request
    assert RequestPacket is RetransmissionPacket
    retry = RetransmissionRequest.of(request)
    assert retry.attempts == 0
    assert retry.build() == wire


@pytest.mark.parametrize("length", [0, 19, 21, 40])
def test_request_of_wrong_length_is_rejected(length: int) -> None:
    with pytest.raises(MalformedPacket) as info:
        RetransmissionPacket.parse(b"x" * length)
    assert info.value.reason == "bad_length"


def test_request_for_zero_messages_is_refused_when_building() -> None:
    with pytest.raises(EncodeError):
        RetransmissionPacket("S", 1, 0).build()


MALFORMED = [
    ("short", b"000010059B\x00", "short", 11),
    ("truncated length", b"S" * 10 + b"\x00" * 7 + b"\x01\x00\x01\x00", "truncated_block", 20),
    ("block past end", b"S" * 10 + b"\x00" * 7 + b"\x01\x00\x01\x00\x05abc", "truncated_block", 20),
    ("missing blocks", b"S" * 10 + b"\x00" * 7 + b"\x01\x00\x02\x00\x01a", "missing_blocks", 23),
    ("trailing bytes", b"S" * 10 + b"\x00" * 7 + b"\x01\x00\x01\x00\x01ab", "trailing_bytes", 23),
    ("heartbeat with data", b"S" * 10 + b"\x00" * 8 + b"\x00\x00x", "blocks_in_control", 20),
    ("eos with data", b"S" * 10 + b"\x00" * 8 + b"\xff\xff\x00\x01a", "blocks_in_control", 20),
]


@pytest.mark.parametrize(("desc", "wire", "reason", "offset"), MALFORMED)
def test_malformed_packets_name_what_and_where(
    desc: str, wire: bytes, reason: str, offset: int
) -> None:
    with pytest.raises(MalformedPacket) as info:
        Packet.parse(wire)
    assert info.value.reason == reason
    assert info.value.offset == offset
    for parse in PARSERS:
        with pytest.raises(MalformedPacket) as fast:
            parse(wire)
        assert (fast.value.reason, fast.value.offset) == (reason, offset)
    assert isinstance(info.value, ValueError)
    assert isinstance(info.value, MoldUDP64Error)


def test_truncated_packet_iterates_complete_messages_only() -> None:
    wire = build_packet("S", 7, [b"one", b"two", b"three"])[:-2]
    packet = Packet(wire)
    assert [bytes(m) for m in packet] == [b"one", b"two"]
    assert len(packet) == 2 != packet.msg_count
    assert split_blocks(wire) == [b"one", b"two"]


def test_iteration_is_zero_copy() -> None:
    wire = bytearray(build_packet("S", 1, [b"abc"]))
    (view,) = list(Packet(wire))
    wire[-1] = ord("Z")
    assert bytes(view) == b"abZ"


@pytest.mark.parametrize(
    ("session", "seq", "messages"),
    [
        ("TOO-LONG-SESSION", 1, [b"a"]),
        ("caf\u00e9", 1, [b"a"]),
        ("S", -1, [b"a"]),
        ("S", 2**64, [b"a"]),
        ("S", 1, []),
        ("S", 2**64 - 1, [b"a", b"b"]),
    ],
)
def test_out_of_range_values_are_refused_when_building(
    session: str, seq: int, messages: list[bytes]
) -> None:
    with pytest.raises(EncodeError):
        build_packet(session, seq, messages)


def test_message_longer_than_65535_is_refused() -> None:
    with pytest.raises(MessageTooLarge):
        build_packet("S", 1, [b"x" * 65536])


def test_packer_fills_a_1452_byte_payload_exactly() -> None:
    # 33 blocks of 2 + 42 bytes = 1452 bytes exactly; the 34th starts a new packet.
    packer = Packer(SESSION, 1)
    finished = [p for p in (packer.add(b"m" * 42) for _ in range(34)) if p is not None]
    assert len(finished) == 1
    first = Packet.parse(finished[0])
    assert len(finished[0]) == HEADER_SIZE + DEFAULT_MAX_PAYLOAD == 1472
    assert (first.seq_num, first.msg_count) == (1, 33)
    last = packer.flush()
    assert last is not None
    assert (Packet.parse(last).seq_num, Packet.parse(last).msg_count) == (34, 1)
    assert packer.flush() is None
    assert packer.next_seq_num == 35


def test_packer_refuses_a_message_that_cannot_fit_alone() -> None:
    packer = Packer(SESSION, 1, max_payload=100)
    packer.add(b"x" * 98)
    with pytest.raises(MessageTooLarge) as info:
        packer.add(b"x" * 99)
    assert info.value.limit == 98
    assert packer.pending == 1  # nothing half-added


def test_pack_messages_numbers_consecutively() -> None:
    packets = pack_messages(SESSION, 100, [bytes([i]) * 200 for i in range(20)])
    seqs = [(Packet.parse(p).seq_num, Packet.parse(p).msg_count) for p in packets]
    assert seqs == [(100, 7), (107, 7), (114, 6)]


message_lists = st.lists(st.binary(max_size=300), min_size=1, max_size=60)


@given(messages=message_lists, seq=st.integers(1, 2**63), payload=st.integers(302, 9000))
def test_pack_then_parse_returns_the_same_messages(
    messages: list[bytes], seq: int, payload: int
) -> None:
    packets = pack_messages(SESSION, seq, messages, max_payload=payload)
    out: list[bytes] = []
    expected_seq = seq
    for wire in packets:
        assert len(wire) - HEADER_SIZE <= payload
        packet = Packet.parse(wire)
        assert packet.seq_num == expected_seq
        out.extend(split_blocks(wire))
        expected_seq = packet.next_seq_num
    assert out == messages


@settings(max_examples=300)
@given(data=st.binary(max_size=200))
def test_parsing_arbitrary_bytes_raises_only_malformed_packet(data: bytes) -> None:
    try:
        packet = Packet.parse(data)
    except MalformedPacket:
        for parse in PARSERS:
            with pytest.raises(MalformedPacket):
                parse(data)
        return
    assert sum(1 for _ in packet) == len(packet)
    assert parse_all(data) == packet.messages()


@given(count=st.integers(1, 0xFFFE), tail=st.binary(max_size=50))
def test_huge_claimed_count_costs_only_what_is_present(count: int, tail: bytes) -> None:
    wire = SESSION + (1).to_bytes(8, "big") + count.to_bytes(2, "big") + tail
    packet = Packet(wire)
    assert len(packet) <= len(tail) // 2
    assert len(split_blocks(wire)) == len(packet)


# --- real captures --------------------------------------------------------------------


def _udp_payloads(path: Path) -> list[bytes]:
    """A small helper (the capture module has the full reader): Ethernet/IPv4/UDP only."""
    out = []
    with path.open("rb") as handle:
        for _ts, frame in dpkt.pcap.Reader(handle):
            eth = dpkt.ethernet.Ethernet(frame)
            out.append(bytes(eth.data.data.data))
    return out


def _expected_rows() -> list[dict[str, str]]:
    with (CAPTURES / "expected.tsv").open() as handle:
        return list(csv.DictReader(handle, delimiter="\t"))


@pytest.mark.skipif(not CAPTURES.is_dir(), reason="shared/captures is not beside the repo")
def test_real_captures_decode_exactly_as_wireshark() -> None:
    rows = _expected_rows()
    decoded = []
    for name in sorted({row["file"] for row in rows}):
        for payload in _udp_payloads(CAPTURES / name):
            packet = Packet.parse(payload)
            decoded.append(
                {
                    "file": name,
                    "session": packet.session_ident,
                    "sequence": str(packet.seq_num),
                    "count": str(packet.msg_count),
                    "message_lengths": ",".join(str(len(m)) for m in packet),
                }
            )
    want = [
        {k: row[k] for k in ("file", "session", "sequence", "count", "message_lengths")}
        for row in rows
    ]
    assert sorted(decoded, key=lambda r: (r["file"], int(r["sequence"]))) == sorted(
        want, key=lambda r: (r["file"], int(r["sequence"]))
    )
    assert len(decoded) == 15


def test_max_datagram_is_accepted() -> None:
    message = b"q" * (MAX_DATAGRAM - HEADER_SIZE - 2)
    wire = build_packet("S", 1, [message])
    assert len(wire) == MAX_DATAGRAM
    assert split_blocks(wire) == [message]
    assert struct.unpack_from(">H", wire, 18)[0] == 1


JOINERS = [codec._join_blocks_py]
if codec.join_blocks is not codec._join_blocks_py:
    JOINERS.append(codec.join_blocks)


@given(messages=st.lists(st.binary(max_size=300), max_size=40))
def test_join_blocks_is_the_inverse_of_split(messages: list[bytes]) -> None:
    for join in JOINERS:
        body = join(messages)
        assert body == b"".join(len(m).to_bytes(2, "big") + m for m in messages)
        if messages:
            assert split_blocks(build_packet("S", 1, messages)) == messages
            assert build_packet("S", 1, messages)[HEADER_SIZE:] == body


def test_join_blocks_refuses_a_message_over_65535_bytes() -> None:
    for join in JOINERS:
        with pytest.raises(ValueError):
            join([b"x" * 65536])


# --- sequence numbers near 2**64 ------------------------------------------------------

TOP = 2**64 - 1


def header(seq: int, count: int, session: bytes = SESSION) -> bytes:
    return session + seq.to_bytes(8, "big") + count.to_bytes(2, "big")


@pytest.mark.parametrize(
    ("seq", "count"), [(TOP - 1, 5), (TOP, 2), (TOP - 0xFFFC, 0xFFFE), (2**64 - 256, 300)]
)
def test_data_packet_numbered_past_2_64_is_malformed(seq: int, count: int) -> None:
    """Its last messages would be numbered 2**64 and up: refused, by every parser alike."""
    wire = header(seq, count) + b"\x00\x01a" * count
    with pytest.raises(MalformedPacket) as info:
        Packet.parse(wire)
    assert (info.value.reason, info.value.offset) == ("seq_overflow", 10)
    assert "2**64-1" in str(info.value)
    for parse in PARSERS:
        with pytest.raises(MalformedPacket) as fast:
            parse(wire)
        assert (fast.value.reason, fast.value.offset) == ("seq_overflow", 10)


@pytest.mark.parametrize(("seq", "count"), [(TOP - 4, 5), (TOP, 1), (TOP - 0xFFFD, 0xFFFE)])
def test_data_packet_ending_exactly_at_2_64_minus_1_is_valid(seq: int, count: int) -> None:
    wire = header(seq, count) + b"\x00\x01a" * count
    assert Packet.parse(wire).msg_count == count
    assert parse_all(wire) == [b"a"] * count


@pytest.mark.parametrize("count", [0, 0xFFFF])
def test_heartbeat_and_end_of_session_may_name_any_64_bit_number(count: int) -> None:
    """They number no message: 2**64-1 (and 0, seen in real captures) are valid."""
    for seq in (0, TOP):
        wire = header(seq, count)
        assert Packet.parse(wire).next_seq_num == seq
        assert parse_all(wire) == []


@settings(max_examples=300)
@given(
    seq=st.one_of(st.integers(2**64 - 0x20000, TOP), st.integers(0, TOP)),
    count=st.integers(0, 0xFFFF),
    blocks=st.integers(0, 4),
    extra=st.binary(max_size=3),
)
def test_both_parsers_agree_with_packet_parse_near_the_top(
    seq: int, count: int, blocks: int, extra: bytes
) -> None:
    """Pure Python and C: the same messages, or the same reason and offset."""
    wire = header(seq, count) + b"\x00\x02ab" * blocks + extra
    try:
        want: list[bytes] | tuple[str, int] = Packet.parse(wire).messages()
    except MalformedPacket as exc:
        want = (exc.reason, exc.offset)
    for parse in PARSERS:
        try:
            got: list[bytes] | tuple[str, int] = parse(wire)
        except MalformedPacket as exc:
            got = (exc.reason, exc.offset)
        assert got == want, parse
    if 0 < count < 0xFFFF and seq + count - 1 > TOP:
        assert want == ("seq_overflow", 10)


def test_pure_python_fallback_is_forced_by_the_environment() -> None:
    """MOLDUDP64_PURE_PYTHON=1: parse_blocks is the Python twin, and refuses the same way."""
    import subprocess
    import sys

    wire = header(TOP - 1, 5) + b"\x00\x01a" * 5
    code = (
        "from moldudp64 import wire\n"
        "from moldudp64.exceptions import MalformedPacket\n"
        "assert wire.c_parse_blocks is None and wire.parse_blocks is wire._parse_blocks_py\n"
        f"try: wire.parse_blocks({wire!r})\n"
        "except MalformedPacket as e: print(e.reason)\n"
    )
    env = dict(os.environ, MOLDUDP64_PURE_PYTHON="1")
    out = subprocess.run(
        [sys.executable, "-c", code], env=env, capture_output=True, check=True, text=True
    )
    assert out.stdout.strip() == "seq_overflow"


def test_receiver_drops_a_packet_numbered_past_2_64_and_delivers_nothing_of_it() -> None:
    from moldudp64.events import DatagramDropped, MessagesDelivered, Source
    from moldudp64.receiver import ReceiverConfig, ReceiverCore

    core = ReceiverCore(ReceiverConfig(expected_seq_num=TOP - 1, expected_session_ident=SESSION))
    core.receive_datagram(header(TOP - 1, 5) + b"\x00\x01a" * 5, Source.LINE_A, 0.0)
    events = core.events_received()
    assert not any(isinstance(e, MessagesDelivered) for e in events)
    assert [e.reason for e in events if isinstance(e, DatagramDropped)] == ["seq_overflow"]
    core.receive_datagram(header(TOP - 1, 2) + b"\x00\x01a" * 2, Source.LINE_A, 0.1)
    delivered = [e for e in core.events_received() if isinstance(e, MessagesDelivered)]
    assert [(e.seq_num, len(e.messages)) for e in delivered] == [(TOP - 1, 2)]


# --- request packets: the constructor and parse agree ----------------------------------


@pytest.mark.parametrize(
    ("seq", "count", "named"),
    [
        (1, 65535, "65535"),  # 0xFFFF means end of session, never a count of messages
        (1, 0, "0"),
        (0, 1, "0"),
        (TOP, 2, str(TOP)),
        (-1, 1, "-1"),
        (2**64, 1, str(2**64)),
        (1, "3", "str"),
        (1, True, "bool"),
    ],
)
def test_request_out_of_range_is_refused_naming_the_value(seq: int, count: int, named: str) -> None:
    with pytest.raises(EncodeError, match=named):
        RetransmissionPacket("S", seq, count)
    with pytest.raises(EncodeError, match=named):
        RetransmissionRequest("S", seq, count)


@pytest.mark.parametrize(
    ("seq", "count", "reason"),
    [(1, 0, "bad_count"), (1, 0xFFFF, "bad_count"), (0, 5, "seq_zero"), (TOP, 2, "seq_overflow")],
)
def test_request_parse_refuses_what_the_constructor_refuses(
    seq: int, count: int, reason: str
) -> None:
    with pytest.raises(MalformedPacket) as info:
        RetransmissionPacket.parse(header(seq, count))
    assert info.value.reason == reason


@given(data=st.binary(min_size=20, max_size=20))
def test_any_20_bytes_parse_to_a_request_iff_the_constructor_takes_its_fields(
    data: bytes,
) -> None:
    session, seq, count = data[:10], int.from_bytes(data[10:18], "big"), data[18] * 256 + data[19]
    try:
        request = RetransmissionPacket.parse(data)
    except MalformedPacket:
        with pytest.raises(EncodeError):
            RetransmissionPacket(session, seq, count)
        return
    assert bytes(request) == request.build() == data
    assert RetransmissionPacket(session, seq, count) == request


def test_request_of_the_largest_range_is_valid() -> None:
    request = RetransmissionPacket("S", TOP - 0xFFFD, 0xFFFE)
    assert RetransmissionPacket.parse(bytes(request)) == request


def test_retransmission_request_wraps_a_packet_as_the_rust_crate_does() -> None:
    """RetransmissionRequest::new(rereq) maps to RetransmissionRequest(packet)."""
    packet = RetransmissionPacket("000010059B", 1000, 25)
    request = RetransmissionRequest(packet)
    assert isinstance(request, RetransmissionPacket)
    assert request == packet and request.attempts == 0
    assert bytes(request) == bytes(packet) == packet.build()
    assert len(bytes(packet)) == 20
    assert RetransmissionRequest(packet, attempts=2).attempts == 2
    assert RetransmissionRequest(request) == packet  # a request wraps too


def test_retransmission_request_refuses_mixed_or_missing_arguments() -> None:
    packet = RetransmissionPacket("S", 1, 1)
    with pytest.raises(EncodeError, match="alone"):
        RetransmissionRequest(packet, 5, 1)
    with pytest.raises(EncodeError, match="seq_num and msg_count"):
        RetransmissionRequest("S")
    for attempts in (-1, 1.5, None):
        with pytest.raises(EncodeError, match=repr(attempts)):
            RetransmissionRequest("S", 1, 1, attempts=attempts)  # type: ignore[arg-type]


# --- the wrong types: typed errors naming the value ------------------------------------


@pytest.mark.parametrize("value", [None, "a string", 12345, 1.5])
def test_packet_of_something_not_bytes_is_malformed_naming_its_type(value: object) -> None:
    name = type(value).__name__
    with pytest.raises(MalformedPacket, match=name) as info:
        Packet(value)  # type: ignore[arg-type]
    assert info.value.reason == "not_bytes"
    with pytest.raises(MalformedPacket, match=name):
        Packet.parse(value)  # type: ignore[arg-type]
    for parse in PARSERS:
        with pytest.raises(MalformedPacket, match=name):
            parse(value)  # type: ignore[arg-type]
    with pytest.raises(MalformedPacket, match=name):
        RetransmissionPacket.parse(value)  # type: ignore[arg-type]


@pytest.mark.parametrize(("value", "named"), [("str", "'str'"), (5, "int"), (None, "None")])
def test_a_message_that_is_not_bytes_is_an_encode_error(value: object, named: str) -> None:
    """An int is never taken as bytes(5) (five NULs); a str must be encoded first."""
    with pytest.raises(EncodeError, match=named):
        pack_messages("S", 1, [b"ok", value])  # type: ignore[list-item]
    with pytest.raises(EncodeError, match=named):
        build_packet("S", 1, [value])  # type: ignore[list-item]
    packer = Packer("S", 1)
    with pytest.raises(EncodeError, match=named):
        packer.add(value)  # type: ignore[arg-type]
    assert packer.pending == 0


def test_any_buffer_is_a_message_counted_in_bytes() -> None:
    import array

    wide = array.array("H", [0x0102, 0x0304])  # 2 items, 4 bytes
    (packet,) = pack_messages("S", 1, [wide, bytearray(b"xy"), memoryview(b"z")])
    assert parse_all(packet) == [wide.tobytes(), b"xy", b"z"]
    assert build_packet("S", 1, [wide]) == build_packet("S", 1, [wide.tobytes()])
    assert parse_all(bytearray(packet)) == parse_all(memoryview(packet)) == parse_all(packet)


def test_packer_refuses_a_max_payload_that_is_not_an_int() -> None:
    with pytest.raises(EncodeError, match="str"):
        Packer("S", 1, max_payload="1452")  # type: ignore[arg-type]
