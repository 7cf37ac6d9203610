"""TotalView-ITCH 5.0 decoding: hand-checked examples of every message type, the shared
captures against an independent dissector, round trips, both paths agreeing, hostile bytes."""

from __future__ import annotations

import io
import json
import os
import subprocess
import sys
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from capture_helpers import SHARED_CAPTURES
from moldudp64 import itch50
from moldudp64.binaryfile import BinaryFileReader, write_binaryfile
from moldudp64.capture import CaptureReader
from moldudp64.exceptions import (
    BinaryFileError,
    EncodeError,
    ItchDecodeError,
    MoldUDP64Error,
    TruncatedFile,
)
from moldudp64.itch50 import (
    NOII,
    AddOrder,
    AddOrderMPID,
    BrokenTrade,
    CrossTrade,
    DLCRPriceDiscovery,
    IPOQuotingPeriodUpdate,
    LULDAuctionCollar,
    MarketParticipantPosition,
    MWCBDeclineLevel,
    MWCBStatus,
    OperationalHalt,
    OrderCancel,
    OrderDelete,
    OrderExecuted,
    OrderExecutedWithPrice,
    OrderReplace,
    RawMessage,
    RegSHORestriction,
    RetailInterest,
    StockDirectory,
    StockTradingAction,
    SystemEvent,
    Trade,
)
from moldudp64.wire import Packet

pa = pytest.importorskip("pyarrow")
pq = pytest.importorskip("pyarrow.parquet")
SRC = str(Path(itch50.__file__).resolve().parents[2])


def be(value: int, width: int) -> bytes:
    return value.to_bytes(width, "big")


# Stock Locate 7, Tracking Number 3, Timestamp 09:30:00.000000123 (ns since midnight).
T = 34_200_000_000_123
HDR = be(7, 2) + be(3, 2) + be(T, 6)

# Each message written field by field from the specification's tables, with its record.
EXAMPLES: list[tuple[bytes, itch50.Record]] = [
    (b"S" + HDR + b"O", SystemEvent(7, 3, T, "O")),
    (
        b"R" + HDR + b"AAPL    " + b"Q" + b"N" + be(100, 4) + b"N" + b"C" + b"Z " + b"P"
        + b"N" + b"N" + b"1" + b"N" + be(0, 4) + b"N",
        StockDirectory(7, 3, T, "AAPL", "Q", "N", 100, "N", "C", "Z", "P", "N", "N", "1", "N",
                       0, "N"),
    ),
    (b"H" + HDR + b"ZVZZT   " + b"H" + b" " + b"T1  ",
     StockTradingAction(7, 3, T, "ZVZZT", "H", "T1")),
    (b"Y" + HDR + b"ZVZZT   " + b"1", RegSHORestriction(7, 3, T, "ZVZZT", "1")),
    (b"L" + HDR + b"MAXM" + b"FGMC    " + b"Y" + b"N" + b"A",
     MarketParticipantPosition(7, 3, T, "MAXM", "FGMC", "Y", "N", "A")),
    (b"V" + HDR + be(391_234_500_000, 8) + be(360_000_000_000, 8) + be(330_000_000_000, 8),
     MWCBDeclineLevel(7, 3, T, 391_234_500_000, 360_000_000_000, 330_000_000_000)),
    (b"W" + HDR + b"1", MWCBStatus(7, 3, T, "1")),
    (b"K" + HDR + b"RDDT    " + be(43_200, 4) + b"A" + be(340_000, 4),
     IPOQuotingPeriodUpdate(7, 3, T, "RDDT", 43_200, "A", 340_000)),
    (b"J" + HDR + b"ZVZZT   " + be(100_000, 4) + be(110_000, 4) + be(90_000, 4) + be(1, 4),
     LULDAuctionCollar(7, 3, T, "ZVZZT", 100_000, 110_000, 90_000, 1)),
    (b"h" + HDR + b"ZVZZT   " + b"Q" + b"H", OperationalHalt(7, 3, T, "ZVZZT", "Q", "H")),
    (b"A" + HDR + be(1_551_269, 8) + b"B" + be(300, 4) + b"AMZU    " + be(242_700, 4),
     AddOrder(7, 3, T, 1_551_269, "B", 300, "AMZU", 242_700)),
    (b"F" + HDR + be(9_752_743, 8) + b"B" + be(5, 4) + b"META    " + be(801_100, 4) + b"UBSS",
     AddOrderMPID(7, 3, T, 9_752_743, "B", 5, "META", 801_100, "UBSS")),
    (b"E" + HDR + be(23_499_418, 8) + be(25, 4) + be(255_547, 8),
     OrderExecuted(7, 3, T, 23_499_418, 25, 255_547)),
    (b"C" + HDR + be(23_499_418, 8) + be(25, 4) + be(255_548, 8) + b"Y" + be(637_400, 4),
     OrderExecutedWithPrice(7, 3, T, 23_499_418, 25, 255_548, "Y", 637_400)),
    (b"X" + HDR + be(1_551_269, 8) + be(100, 4), OrderCancel(7, 3, T, 1_551_269, 100)),
    (b"D" + HDR + be(2_902_330, 8), OrderDelete(7, 3, T, 2_902_330)),
    (b"U" + HDR + be(2_589_422, 8) + be(3_541_246, 8) + be(100, 4) + be(548_800, 4),
     OrderReplace(7, 3, T, 2_589_422, 3_541_246, 100, 548_800)),
    (b"P" + HDR + be(0, 8) + b"S" + be(200, 4) + b"QQQ     " + be(4_012_300, 4) + be(777, 8),
     Trade(7, 3, T, 0, "S", 200, "QQQ", 4_012_300, 777)),
    (b"Q" + HDR + be(1_000_000, 8) + b"AAPL    " + be(1_893_300, 4) + be(888, 8) + b"O",
     CrossTrade(7, 3, T, 1_000_000, "AAPL", 1_893_300, 888, "O")),
    (b"B" + HDR + be(888, 8), BrokenTrade(7, 3, T, 888)),
    (
        b"I" + HDR + be(1, 8) + be(0, 8) + b"N" + b"MDC     " + be(464_400, 4) * 3 + b"O" + b"L",
        NOII(7, 3, T, 1, 0, "N", "MDC", 464_400, 464_400, 464_400, "O", "L"),
    ),
    (b"N" + HDR + b"ZVZZT   " + b"B", RetailInterest(7, 3, T, "ZVZZT", "B")),
    (
        b"O" + HDR + b"ZVZZT   " + b"Y" + be(100_000, 4) + be(200_000, 4) + be(150_000, 4)
        + be(34_500_000_000_000, 8) + be(140_000, 4) + be(160_000, 4),
        DLCRPriceDiscovery(7, 3, T, "ZVZZT", "Y", 100_000, 200_000, 150_000,
                           34_500_000_000_000, 140_000, 160_000),
    ),
]

# Message lengths as the specification's tables give them.
SPEC_LENGTHS = {
    "S": 12, "R": 39, "H": 25, "Y": 20, "L": 26, "V": 35, "W": 12, "K": 28, "J": 35, "h": 21,
    "A": 36, "F": 40, "E": 31, "C": 36, "X": 23, "D": 19, "U": 35, "P": 44, "Q": 40, "B": 19,
    "I": 50, "N": 20, "O": 48,
}


def test_every_message_type_of_the_specification_has_a_layout_and_an_example() -> None:
    assert {code: lay.size for code, lay in itch50.LAYOUTS.items()} == SPEC_LENGTHS
    assert sorted(r.message_type for _, r in EXAMPLES) == sorted(SPEC_LENGTHS)


@pytest.mark.parametrize(("data", "record"), EXAMPLES, ids=[r.message_type for _, r in EXAMPLES])
def test_hand_checked_example_decodes_and_encodes_back(data: bytes, record: Any) -> None:
    assert len(data) == SPEC_LENGTHS[record.message_type]
    assert itch50.decode(data) == record
    assert type(itch50.decode(data)) is type(record)
    assert itch50.decode(memoryview(data)) == record
    assert itch50.encode(record) == data


@pytest.mark.parametrize(("data", "record"), EXAMPLES, ids=[r.message_type for _, r in EXAMPLES])
def test_hand_checked_example_decodes_the_same_in_columns(data: bytes, record: Any) -> None:
    tables = itch50.messages_to_arrow([data], session="000010059B", first_seq=42)
    name = itch50.MESSAGE_NAMES[record.message_type]
    assert list(tables) == [name]
    (row,) = tables[name].to_pylist()
    assert row.pop("session") == "000010059B"
    assert row.pop("seq") == 42
    assert row == columnar_view(record)


def columnar_view(record: Any) -> dict[str, Any]:
    """A record as the columnar path shows it: prices as exact decimals."""
    row = record._asdict()
    for name in itch50.PRICE_FIELDS[record.message_type]:
        row[name] = itch50.price_decimal(record, name)
    return row


def test_prices_and_timestamps_have_exact_and_decimal_views() -> None:
    add = itch50.decode(EXAMPLES[10][0])
    assert add.price == 242_700
    assert itch50.price_decimal(add, "price") == Decimal("24.27")
    assert itch50.to_dict(add) == {
        "message_type": "A", "stock_locate": 7, "tracking_number": 3, "timestamp": T,
        "order_reference_number": 1_551_269, "buy_sell_indicator": "B", "shares": 300,
        "stock": "AMZU", "price": 24.27,
    }
    assert json.dumps(itch50.to_dict(itch50.decode(EXAMPLES[13][0]))).endswith(
        '"printable": "Y", "execution_price": 63.74}'
    )
    mwcb = itch50.decode(EXAMPLES[5][0])
    assert itch50.price_decimal(mwcb, "level_1") == Decimal("3912.345")
    assert itch50.to_dict(mwcb)["level_1"] == 3912.345
    tables = itch50.messages_to_arrow([EXAMPLES[5][0]])
    assert tables["mwcb_decline_level"].schema.field("level_1").type == pa.decimal128(20, 8)
    with pytest.raises(KeyError):
        itch50.price_decimal(add, "shares")


def test_alpha_padding_is_stripped_but_one_byte_codes_are_kept() -> None:
    halt = itch50.decode(b"H" + HDR + b"AMC     " + b"T" + b" " + b"    ")
    assert (halt.stock, halt.trading_state, halt.reason) == ("AMC", "T", "")
    noii = itch50.decode(b"I" + HDR + be(0, 16) + b" " + b"BRK A   " + be(0, 12) + b"  ")
    assert (noii.imbalance_direction, noii.stock, noii.cross_type) == (" ", "BRK A", " ")


def test_bytes_outside_ascii_are_decoded_as_latin1_by_both_paths() -> None:
    data = b"A" + HDR + be(1, 8) + b"\xe9" + be(1, 4) + b"\xc9T\x00\xff    " + be(1, 4)
    record = itch50.decode(data)
    assert (record.buy_sell_indicator, record.stock) == ("é", "ÉT\x00ÿ")
    (row,) = itch50.messages_to_arrow([data])["add_order"].to_pylist()
    assert (row["buy_sell_indicator"], row["stock"]) == ("é", "ÉT\x00ÿ")
    assert itch50.encode(record) == data


# --- what cannot be decoded -------------------------------------------------------------


@pytest.mark.parametrize(
    ("data", "reason", "message_type"),
    [
        (b"", "empty", ""),
        (b"Z" + HDR, "unknown_type", "Z"),
        (b"\x00" * 36, "unknown_type", "\x00"),
        (EXAMPLES[10][0][:-1], "bad_length", "A"),
        (EXAMPLES[10][0] + b" ", "bad_length", "A"),
        (b"A", "bad_length", "A"),
    ],
)
def test_unknown_type_or_wrong_length_is_a_typed_error_or_a_raw_record(
    data: bytes, reason: str, message_type: str
) -> None:
    with pytest.raises(ItchDecodeError) as caught:
        itch50.decode(data)
    assert isinstance(caught.value, MoldUDP64Error) and isinstance(caught.value, ValueError)
    assert (caught.value.reason, caught.value.message_type, caught.value.length) == (
        reason, message_type, len(data)
    )
    raw = itch50.decode_or_raw(data)
    assert raw == RawMessage(data, reason) and raw.message_type == message_type
    assert itch50.to_dict(raw) == {
        "message_type": message_type, "reason": reason, "length": len(data), "data": data.hex()
    }
    tables = itch50.messages_to_arrow([EXAMPLES[0][0], data], session="S", first_seq=9)
    assert tables["invalid"].to_pylist() == [
        {"session": "S", "seq": 10, "message_type": message_type, "length": len(data),
         "reason": reason, "data": data}
    ]
    assert tables["system_event"].num_rows == 1


def test_encode_refuses_values_that_do_not_fit() -> None:
    add = EXAMPLES[10][1]
    for bad in (
        add._replace(price=1 << 32),
        add._replace(shares=-1),
        add._replace(stock="TOOLONGSYM"),
        add._replace(buy_sell_indicator="BS"),
        add._replace(buy_sell_indicator=""),
        add._replace(stock="€"),
        add._replace(timestamp=1 << 48),
    ):
        with pytest.raises(EncodeError):
            itch50.encode(bad)


# --- truth: an independent dissector's decoding of the shared captures -------------------


def capture_messages() -> list[tuple[dict[str, Any], str, int, bytes]]:
    """(expected row, session, seq, message) for every ITCH message of the truth file."""
    with open(SHARED_CAPTURES / "itch50-expected.jsonl") as lines:
        expected = [json.loads(line) for line in lines]
    found = []
    for name in sorted({e["file"] for e in expected}):
        with CaptureReader(SHARED_CAPTURES / name) as reader:
            for frame, datagram in enumerate(reader, 1):
                packet = Packet(datagram.payload)
                for index, message in enumerate(packet, 1):
                    found.append((name, frame, index, packet.session_ident,
                                  packet.seq_num + index - 1, bytes(message)))
    assert [(e["file"], e["frame"], e["index"], e["seq"]) for e in expected] == [
        (name, frame, index, seq) for name, frame, index, _, seq, _ in found
    ]
    return [(e, s, q, m) for e, (*_, s, q, m) in zip(expected, found, strict=True)]


def same(mine: Any, theirs: str) -> bool:
    if isinstance(mine, int | float | Decimal):
        return Decimal(str(mine)) == Decimal(theirs)
    return bool(mine.strip() == theirs.strip())


@pytest.mark.skipif(not SHARED_CAPTURES.is_dir(), reason="shared captures not found")
def test_every_field_of_the_shared_captures_matches_the_independent_dissector() -> None:
    messages = capture_messages()
    assert len(messages) == 49
    tables = itch50.records_to_arrow((s, q, m) for _, s, q, m in messages)
    rows = {(r["session"], r["seq"]): r for t in tables.values() for r in t.to_pylist()}
    assert "invalid" not in tables and len(rows) == len(messages)
    checked = 0
    for expected, session, seq, message in messages:
        decoded = itch50.to_dict(itch50.decode(message))
        per_message = {k.replace("_", ""): v for k, v in decoded.items()}
        columnar = {k.replace("_", ""): v for k, v in rows[(session, seq)].items()}
        columnar["messagetype"] = per_message["messagetype"]
        for key, value in expected["fields"].items():
            assert same(per_message[key], value), (expected, key)
            assert same(columnar[key], value), (expected, key)
            checked += 1
    assert checked > 400


# --- properties ------------------------------------------------------------------------

CODES = list(itch50.LAYOUTS)
TEXT = st.characters(min_codepoint=0x20, max_codepoint=0x7E)


def value_of(field: itch50.Field) -> st.SearchStrategy[Any]:
    if field.kind == "ts":
        return st.integers(0, (1 << 48) - 1)
    if field.kind == "c":
        return TEXT
    if field.kind.startswith("a"):  # stripped on decode: no trailing space
        return st.text(TEXT, max_size=field.size).map(lambda s: s.rstrip(" "))
    return st.integers(0, (1 << (8 * field.size)) - 1)


def record_of(code: str) -> st.SearchStrategy[Any]:
    layout = itch50.LAYOUTS[code]
    fields = [value_of(f) for f in layout.fields if f.kind != "x"]
    return st.tuples(*fields).map(lambda values: layout.cls(*values))


RECORDS = st.sampled_from(CODES).flatmap(record_of)


@given(st.lists(RECORDS, min_size=1, max_size=40))
@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
def test_random_records_round_trip_and_both_paths_agree(records: list[Any]) -> None:
    messages = [itch50.encode(r) for r in records]
    assert [itch50.decode(m) for m in messages] == records
    tables = itch50.messages_to_arrow(messages, session="RT", first_seq=100)
    rows = sorted(((r.pop("seq"), r) for t in tables.values() for r in t.to_pylist()),
                  key=lambda item: item[0])
    assert [seq for seq, _ in rows] == list(range(100, 100 + len(records)))
    for (_, row), record in zip(rows, records, strict=True):
        assert row.pop("session") == "RT"
        assert row == columnar_view(record)


@given(st.lists(RECORDS, min_size=1, max_size=40))
@settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.too_slow])
def test_to_json_is_to_dict_with_exact_prices(records: list[Any]) -> None:
    for record in records:
        text = itch50.to_json(record)
        assert json.loads(text, parse_float=Decimal) == itch50.to_dict(record, exact=True)
        assert json.loads(text) == itch50.to_dict(record)  # the nearest floats, in order
        assert list(json.loads(text)) == list(itch50.to_dict(record))


def test_to_json_writes_every_price_in_its_places() -> None:
    levels = itch50.MWCBDeclineLevel(0, 0, 1, 2**64 - 1, 0, 1)
    assert itch50.to_json(levels).endswith(
        '"level_1": 184467440737.09551615, "level_2": 0.00000000, "level_3": 0.00000001}'
    )
    assert itch50.to_dict(levels)["level_1"] == 184467440737.09552  # a float cannot hold it
    assert itch50.to_dict(levels, exact=True)["level_1"] == Decimal("184467440737.09551615")
    add = itch50.AddOrder(7, 3, T, 1, "B", 1, 'A"\u00e9\n', 0)
    assert itch50.to_json(add) == json.dumps(itch50.to_dict(add)).replace('0.0}', '0.0000}')


@pytest.mark.parametrize("code", CODES)
@given(data=st.data())
@settings(max_examples=25, deadline=None)
def test_every_message_type_round_trips(code: str, data: st.DataObject) -> None:
    record = data.draw(record_of(code))
    message = itch50.encode(record)
    assert len(message) == SPEC_LENGTHS[code]
    assert itch50.decode(message) == record
    (row,) = itch50.messages_to_arrow([message])[itch50.MESSAGE_NAMES[code]].to_pylist()
    assert {k: v for k, v in row.items() if k not in ("session", "seq")} == columnar_view(record)


MUTATED = st.tuples(RECORDS, st.binary(max_size=4), st.integers(0, 60)).map(
    lambda t: (itch50.encode(t[0])[: t[2]] + t[1])
)


@given(st.lists(st.one_of(st.binary(max_size=60), MUTATED), max_size=30))
@settings(max_examples=300, deadline=None)
def test_fuzzed_bytes_never_crash_and_both_paths_agree(messages: list[bytes]) -> None:
    expected = []
    for message in messages:
        try:
            expected.append(itch50.decode(message))
        except ItchDecodeError as exc:
            expected.append(RawMessage(message, exc.reason))
        assert itch50.decode_or_raw(message) == expected[-1]
        if not isinstance(expected[-1], RawMessage):  # what decodes re-encodes to the same
            assert itch50.decode(itch50.encode(expected[-1])) == expected[-1]
    tables = itch50.messages_to_arrow(messages)
    got: dict[int, Any] = {}
    for name, table in tables.items():
        for row in table.to_pylist():
            got[row["seq"]] = row
            row.pop("session")
            row.pop("seq")
            row["table"] = name
    assert sorted(got) == list(range(1, len(messages) + 1))
    for seq, record in enumerate(expected, 1):
        if isinstance(record, RawMessage):
            assert got[seq] == {"table": "invalid", "message_type": record.message_type,
                                "length": len(record.data), "reason": record.reason,
                                "data": record.data}
        else:
            assert got[seq] == {"table": itch50.MESSAGE_NAMES[record.message_type],
                                **columnar_view(record)}


# --- BinaryFILEs -----------------------------------------------------------------------


def mixed_messages(count: int) -> list[bytes]:
    return [EXAMPLES[i % len(EXAMPLES)][0] for i in range(count)] + [b"Zbad", b""]


def test_binaryfile_in_small_chunks_equals_one_list(tmp_path: Path) -> None:
    messages = mixed_messages(5000)
    path = tmp_path / "day.bin"
    write_binaryfile(path, messages)
    whole = itch50.messages_to_arrow(messages, session="D1", first_seq=1)
    from_file = itch50.binaryfile_to_arrow(path, session="D1")
    assert from_file.keys() == whole.keys()
    for name, table in whole.items():
        assert from_file[name].equals(table), name
    chunks = itch50.iter_binaryfile_batches(path, session="D1", chunk_bytes=1)
    chunked = itch50.arrow._collect(chunks)
    for name, table in whole.items():
        assert chunked[name].equals(table), name
    assert whole["invalid"].column("seq").to_pylist() == [5001, 5002]


@pytest.mark.parametrize("pure", [False, True], ids=["c-scan", "pure-python-scan"])
@given(data=st.binary(max_size=300))
@settings(
    max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
def test_any_bytes_as_a_binaryfile_decode_or_stop_like_the_reader(
    data: bytes, pure: bool, monkeypatch: pytest.MonkeyPatch
) -> None:
    if pure:
        monkeypatch.setattr(itch50.arrow, "c_scan", None)
        monkeypatch.setattr(itch50.arrow, "c_gather", None)
    expected: list[bytes] = []
    error = None
    try:
        expected.extend(BinaryFileReader(io.BytesIO(data)))
    except TruncatedFile as exc:
        error = str(exc).replace("<stream>", "")
    batches = []
    try:
        batches.extend(itch50.iter_binaryfile_batches(io.BytesIO(data), chunk_bytes=64))
    except TruncatedFile as exc:
        assert str(exc).replace("<stream>", "") == error
    else:
        assert error is None
    rows = sum(b.num_rows for chunk in batches for b in chunk.values())
    assert rows == len(expected)


def test_scan_in_c_and_in_python_agree() -> None:
    if itch50.c_scan is None:
        pytest.skip("C helper not built")
    import numpy as np

    data = b"".join(len(m).to_bytes(2, "big") + m for m in mixed_messages(300)) + b"\x00\x30AB"
    heads, end = itch50.c_scan(data)
    assert (np.frombuffer(heads, np.int64).tolist(), end) == itch50.arrow._scan_py(data)


def test_columns_are_the_same_without_the_c_helpers(monkeypatch: pytest.MonkeyPatch) -> None:
    messages = [*mixed_messages(3000), b"\xff" * 36, EXAMPLES[3][0][:-2]]
    with_c = itch50.messages_to_arrow(messages, session="S", first_seq=5)
    monkeypatch.setattr(itch50.arrow, "c_scan", None)
    monkeypatch.setattr(itch50.arrow, "c_gather", None)
    without = itch50.messages_to_arrow(messages, session="S", first_seq=5)
    assert with_c.keys() == without.keys() and len(with_c) == len(itch50.LAYOUTS) + 1
    for name, table in with_c.items():
        assert without[name].equals(table), name


def test_c_gather_refuses_records_outside_the_data() -> None:
    if itch50.c_gather is None:
        pytest.skip("C helper not built")
    import numpy as np

    assert itch50.c_gather(b"abcdef", np.array([0, 3], np.int64), 3) == b"abcdef"
    for starts, size in (([4], 3), ([-1], 3), ([0], -1)):
        with pytest.raises(ValueError):
            itch50.c_gather(b"abcdef", np.array(starts, np.int64), size)


def test_a_binaryfile_that_cannot_be_opened_is_a_typed_error(tmp_path: Path) -> None:
    with pytest.raises(BinaryFileError, match="cannot open BinaryFILE"):
        itch50.binaryfile_to_arrow(tmp_path / "missing.bin")
    with pytest.raises(ValueError, match="chunk_bytes"):
        next(itch50.iter_binaryfile_batches(tmp_path / "missing.bin", chunk_bytes=0))
    with pytest.raises(ValueError, match="chunk_size"):
        next(itch50.iter_message_batches([b"x"], chunk_size=0))


def test_truncated_binaryfile_raises_after_the_complete_messages(tmp_path: Path) -> None:
    path = tmp_path / "cut.bin"
    write_binaryfile(path, mixed_messages(100))
    path.write_bytes(path.read_bytes() + b"\x00\x24A")  # an add order cut after 1 byte
    rows = 0
    with pytest.raises(TruncatedFile) as caught:
        for chunk in itch50.iter_binaryfile_batches(path):
            rows += sum(b.num_rows for b in chunk.values())
    assert rows == 102
    with pytest.raises(TruncatedFile) as by_reader:
        list(BinaryFileReader(path))
    assert str(caught.value) == str(by_reader.value) and caught.value.offset > 0


# --- writers ---------------------------------------------------------------------------


def test_parquet_directory_has_one_file_per_type_and_reads_back(tmp_path: Path) -> None:
    path = tmp_path / "day.bin"
    write_binaryfile(path, mixed_messages(2000))
    out = tmp_path / "pq"
    batches = itch50.iter_binaryfile_batches(path, session="S1", chunk_bytes=4096)
    rows = itch50.write_parquet(batches, out)
    tables = itch50.binaryfile_to_arrow(path, session="S1")
    assert rows == {name: t.num_rows for name, t in tables.items()}
    assert sorted(p.name for p in out.iterdir()) == sorted(f"{n}.parquet" for n in tables)
    for name, table in tables.items():
        assert pq.read_table(out / f"{name}.parquet").equals(table), name
    trades = pq.read_table(out / "trade.parquet").group_by("stock").aggregate([("shares", "sum")])
    assert trades.to_pylist() == [{"stock": "QQQ", "shares_sum": 200 * tables["trade"].num_rows}]


def test_csv_directory_writes_exact_prices_and_hex_for_invalid_messages(tmp_path: Path) -> None:
    itch50.write_csv(itch50.messages_to_arrow(mixed_messages(30), session="S1"), tmp_path)
    add = (tmp_path / "add_order.csv").read_text().splitlines()
    assert add[0] == ('"session","seq","stock_locate","tracking_number","timestamp",'
                      '"order_reference_number","buy_sell_indicator","shares","stock","price"')
    assert add[1] == f'"S1",11,7,3,{T},1551269,"B",300,"AMZU",24.2700'
    invalid = (tmp_path / "invalid.csv").read_text().splitlines()
    assert invalid[1:] == ['"S1",31,"Z",4,"unknown_type","5a626164"', '"S1",32,"",0,"empty",""']


def test_csv_writes_8_place_decimals_plainly(tmp_path: Path) -> None:
    levels = itch50.encode(itch50.MWCBDeclineLevel(0, 0, 1, 2**64 - 1, 0, 1))
    itch50.write_csv(itch50.messages_to_arrow([levels], session='S"1,'), tmp_path)
    lines = (tmp_path / "mwcb_decline_level.csv").read_text().splitlines()
    assert lines == [
        '"session","seq","stock_locate","tracking_number","timestamp","level_1","level_2",'
        '"level_3"',
        '"S""1,",1,0,0,1,184467440737.09551615,0.00000000,0.00000001',
    ]


def test_csv_written_by_hand_is_what_pyarrow_writes(tmp_path: Path) -> None:
    """The plain-decimal path writes every other column exactly as pyarrow's writer."""
    records = [("S\"1,\n", 1, m) for m in mixed_messages(200)] + [("", 2, EXAMPLES[3][0])]
    tables = itch50.records_to_arrow(records)
    rows = tables["add_order"].num_rows
    floats = [1733560000.123456, 0.1, 1e20, 1.5, 123456789.0, None, 1e-7, -0.0]
    notes = [None, "", '"', "a,b", "\u00e9"]
    tables["add_order"] = (
        tables["add_order"]
        .append_column("ts", pa.array([floats[i % len(floats)] for i in range(rows)]))
        .append_column("note", pa.array([notes[i % len(notes)] for i in range(rows)]))
    )
    for name, table in tables.items():
        for by_hand in (False, True):
            path = str(tmp_path / f"{name}.{by_hand}.csv")
            writer = itch50.arrow._CsvWriter(path, table.schema, by_hand=by_hand)
            for batch in table.to_batches(max_chunksize=7):
                writer.write(batch)
            writer.close()
        mine = (tmp_path / f"{name}.True.csv").read_bytes()
        assert mine == (tmp_path / f"{name}.False.csv").read_bytes(), name


def test_writers_refuse_names_that_are_not_tables(tmp_path: Path) -> None:
    with pytest.raises(KeyError):
        itch50.write_parquet({"../escape": pa.table({"a": [1]})}, tmp_path)


# --- installs without the arrow extra ----------------------------------------------------


def run_python(code: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PYTHONPATH": SRC}
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env,
                          check=False, timeout=60)


def test_per_message_decode_needs_neither_numpy_nor_pyarrow() -> None:
    done = run_python(
        "import sys; sys.modules['numpy'] = sys.modules['pyarrow'] = None\n"
        "import moldudp64\nfrom moldudp64 import itch50\n"
        f"print(itch50.decode({EXAMPLES[15][0]!r}))\n"
        "try:\n    itch50.messages_to_arrow([])\n"
        "except moldudp64.MissingDependency as e:\n"
        "    print(e.extra, e, isinstance(e, ImportError))\n"
    )
    assert done.returncode == 0, done.stderr
    first, second = done.stdout.splitlines()
    assert first == (
        f"OrderDelete(stock_locate=7, tracking_number=3, timestamp={T}, "
        "order_reference_number=2902330)"
    )
    assert second.startswith("arrow ") and "pip install 'moldudp64[arrow]'" in second
    assert second.endswith(" True")


# --- the package ---------------------------------------------------------------------

#: The public names of moldudp64.itch50 when it was one module: the package keeps them all.
MODULE_NAMES = [
    "LAYOUTS", "MESSAGE_CLASSES", "MESSAGE_NAMES", "NOII", "PRICE_FIELDS", "INVALID", "AddOrder",
    "AddOrderMPID", "BrokenTrade", "CrossTrade", "DLCRPriceDiscovery", "IPOQuotingPeriodUpdate",
    "LULDAuctionCollar", "MWCBDeclineLevel", "MWCBStatus", "MarketParticipantPosition",
    "OperationalHalt", "OrderCancel", "OrderDelete", "OrderExecuted", "OrderExecutedWithPrice",
    "OrderReplace", "RawMessage", "Record", "RegSHORestriction", "RetailInterest",
    "StockDirectory", "StockTradingAction", "SystemEvent", "Trade", "Field", "Layout", "Buffer",
    "arrow_schema", "binaryfile_to_arrow", "decode", "decode_or_raw", "encode",
    "iter_binaryfile_batches", "iter_message_batches", "iter_record_batches", "messages_to_arrow",
    "price_decimal", "records_to_arrow", "to_dict", "write_csv", "write_parquet", "c_scan",
    "c_gather",
]


@pytest.mark.parametrize("name", MODULE_NAMES)
def test_the_package_keeps_every_public_name_of_the_module(name: str) -> None:
    assert name in itch50.__all__
    assert hasattr(itch50, name)


def test_the_package_does_not_load_its_outputs() -> None:
    done = run_python(
        "import sys, moldudp64.itch50\n"
        "print(sorted(m for m in sys.modules if m.startswith('moldudp64.itch50.')))\n"
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == (
        "['moldudp64.itch50.arrow', 'moldudp64.itch50.codec', 'moldudp64.itch50.messages']"
    )


# --- the benchmark runs ----------------------------------------------------------------


def test_benchmark_runs_on_a_small_size() -> None:
    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
    try:
        import bench_itch50
    finally:
        sys.path.pop(0)
    rows = bench_itch50.main(["--quick"])
    labels = [label for label, _, _ in rows]
    assert labels == [
        "columnar BinaryFILE -> Arrow", "BinaryFILE -> Parquet directory", "per-message decode()"
    ]
    assert all(rate > 0 and rss > 0 for _, rate, rss in rows)


# --- the README's worked example and the example script ---------------------------------


def test_readme_example_writes_a_parquet_directory(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import re

    readme = (Path(__file__).resolve().parents[1] / "README.md").read_text()
    (block,) = [b for b in re.findall(r"```python\n(.*?)```", readme, flags=re.S)
                if "write_parquet(" in b]
    monkeypatch.chdir(tmp_path)
    write_binaryfile("day.NASDAQ_ITCH50", mixed_messages(1000))
    namespace: dict[str, Any] = {}
    exec(block, namespace)
    assert namespace["rows"]["trade"] == namespace["tables"]["trade"].num_rows > 0
    trades = pq.read_table("day/trade.parquet")
    assert set(trades.column("session").to_pylist()) == {"000010059B"}


def test_message_rate_example_prints_the_busiest_second(tmp_path: Path) -> None:
    messages = [itch50.encode(itch50.AddOrder(1, 0, T + i * 1000, i, "B", 1, "A", 1))
                for i in range(50)]
    messages += [itch50.encode(itch50.OrderDelete(1, 0, T + 2 * 10**9, 1))]
    itch50.write_parquet(itch50.messages_to_arrow(messages), tmp_path / "pq")
    script = Path(__file__).resolve().parents[1] / "examples" / "itch50_message_rate.py"
    done = subprocess.run([sys.executable, str(script), str(tmp_path / "pq")], capture_output=True,
                          text=True, check=False, timeout=60, env={**os.environ, "PYTHONPATH": SRC})
    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    assert lines[1].split() == ["add_order", "50", "09:30:00", "50"]
    assert lines[2].split() == ["order_delete", "1", "09:30:02", "1"]
