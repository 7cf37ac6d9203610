"""NASDAQ TotalView-ITCH 5.0: the messages MoldUDP64 carries, decoded.

(Longer than most modules on purpose: one table of layouts and the two paths over it, per
message and columnar, which must agree field for field, are kept side by side.)

Two paths over one table of layouts (:data:`LAYOUTS`, from the specification):

* per message, for live handlers: :func:`decode` turns one message into a typed record (a
  ``NamedTuple`` per message type, fields named as in the specification in snake_case);
  :func:`to_dict` gives a JSON-ready dict; :func:`encode` is the inverse of :func:`decode`.
* columnar, for files and batches: :func:`messages_to_arrow`, :func:`records_to_arrow` and
  :func:`binaryfile_to_arrow` build one Apache Arrow table per message type (with ``session``
  and ``seq`` columns) with NumPy, a few array operations per message type and chunk, never a
  Python loop per field; :func:`write_parquet` and :func:`write_csv` write one file per type.
  The columnar path needs the ``arrow`` extra (``pip install 'moldudp64[arrow]'``).

Values: timestamps are integer nanoseconds since midnight; prices are exact integers in the
specification's units (4 implied decimal places; 8 for the MWCB levels), with exact decimal
views (:func:`price_decimal`, Arrow ``decimal128`` columns) and JSON numbers from
:func:`to_dict`; alphanumeric fields longer than one byte have their space padding stripped
(one-byte codes are kept as sent, so a space code stays ``" "``); bytes outside ASCII are
decoded as Latin-1, so no byte is lost or replaced. The Reserved byte of the Stock Trading
Action message is skipped.

Nothing is guessed: a message of an unknown type, or whose length is not its type's, is an
:class:`~moldudp64.exceptions.ItchDecodeError` from :func:`decode`, a :class:`RawMessage`
from :func:`decode_or_raw`, and a row of the ``invalid`` table on the columnar path.
"""

from __future__ import annotations

import os
import struct
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from decimal import Decimal
from itertools import islice
from typing import TYPE_CHECKING, Any, BinaryIO, Final, NamedTuple, TypeAlias

from .exceptions import (
    BinaryFileError,
    EncodeError,
    ItchDecodeError,
    MissingDependency,
    TruncatedFile,
)

if TYPE_CHECKING:
    import numpy as np
    import numpy.typing as npt

__all__ = [
    "LAYOUTS",
    "MESSAGE_CLASSES",
    "MESSAGE_NAMES",
    "NOII",
    "PRICE_FIELDS",
    "AddOrder",
    "AddOrderMPID",
    "BrokenTrade",
    "CrossTrade",
    "DLCRPriceDiscovery",
    "IPOQuotingPeriodUpdate",
    "LULDAuctionCollar",
    "MWCBDeclineLevel",
    "MWCBStatus",
    "MarketParticipantPosition",
    "OperationalHalt",
    "OrderCancel",
    "OrderDelete",
    "OrderExecuted",
    "OrderExecutedWithPrice",
    "OrderReplace",
    "RawMessage",
    "Record",
    "RegSHORestriction",
    "RetailInterest",
    "StockDirectory",
    "StockTradingAction",
    "SystemEvent",
    "Trade",
    "arrow_schema",
    "binaryfile_to_arrow",
    "decode",
    "decode_or_raw",
    "encode",
    "iter_binaryfile_batches",
    "iter_message_batches",
    "iter_record_batches",
    "messages_to_arrow",
    "price_decimal",
    "records_to_arrow",
    "to_dict",
    "write_csv",
    "write_parquet",
]


class SystemEvent(NamedTuple):
    """'S' System Event (12 bytes)."""

    stock_locate: int
    tracking_number: int
    timestamp: int
    event_code: str

    @property
    def message_type(self) -> str:
        return "S"


class StockDirectory(NamedTuple):
    """'R' Stock Directory (39 bytes)."""

    stock_locate: int
    tracking_number: int
    timestamp: int
    stock: str
    market_category: str
    financial_status_indicator: str
    round_lot_size: int
    round_lots_only: str
    issue_classification: str
    issue_sub_type: str
    authenticity: str
    short_sale_threshold_indicator: str
    ipo_flag: str
    luld_reference_price_tier: str
    etp_flag: str
    etp_leverage_factor: int
    inverse_indicator: str

    @property
    def message_type(self) -> str:
        return "R"


class StockTradingAction(NamedTuple):
    """'H' Stock Trading Action (25 bytes)."""

    stock_locate: int
    tracking_number: int
    timestamp: int
    stock: str
    trading_state: str
    reason: str

    @property
    def message_type(self) -> str:
        return "H"


class RegSHORestriction(NamedTuple):
    """'Y' Reg SHO Short Sale Price Test Restricted Indicator (20 bytes)."""

    stock_locate: int
    tracking_number: int
    timestamp: int
    stock: str
    reg_sho_action: str

    @property
    def message_type(self) -> str:
        return "Y"


class MarketParticipantPosition(NamedTuple):
    """'L' Market Participant Position (26 bytes)."""

    stock_locate: int
    tracking_number: int
    timestamp: int
    mpid: str
    stock: str
    primary_market_maker: str
    market_maker_mode: str
    market_participant_state: str

    @property
    def message_type(self) -> str:
        return "L"


class MWCBDeclineLevel(NamedTuple):
    """'V' MWCB Decline Level (35 bytes)."""

    stock_locate: int
    tracking_number: int
    timestamp: int
    level_1: int
    level_2: int
    level_3: int

    @property
    def message_type(self) -> str:
        return "V"


class MWCBStatus(NamedTuple):
    """'W' MWCB Status (12 bytes)."""

    stock_locate: int
    tracking_number: int
    timestamp: int
    breached_level: str

    @property
    def message_type(self) -> str:
        return "W"


class IPOQuotingPeriodUpdate(NamedTuple):
    """'K' IPO Quoting Period Update (28 bytes)."""

    stock_locate: int
    tracking_number: int
    timestamp: int
    stock: str
    ipo_quotation_release_time: int
    ipo_quotation_release_qualifier: str
    ipo_price: int

    @property
    def message_type(self) -> str:
        return "K"


class LULDAuctionCollar(NamedTuple):
    """'J' LULD Auction Collar (35 bytes)."""

    stock_locate: int
    tracking_number: int
    timestamp: int
    stock: str
    auction_collar_reference_price: int
    upper_auction_collar_price: int
    lower_auction_collar_price: int
    auction_collar_extension: int

    @property
    def message_type(self) -> str:
        return "J"


class OperationalHalt(NamedTuple):
    """'h' Operational Halt (21 bytes)."""

    stock_locate: int
    tracking_number: int
    timestamp: int
    stock: str
    market_code: str
    operational_halt_action: str

    @property
    def message_type(self) -> str:
        return "h"


class AddOrder(NamedTuple):
    """'A' Add Order (no MPID attribution) (36 bytes)."""

    stock_locate: int
    tracking_number: int
    timestamp: int
    order_reference_number: int
    buy_sell_indicator: str
    shares: int
    stock: str
    price: int

    @property
    def message_type(self) -> str:
        return "A"


class AddOrderMPID(NamedTuple):
    """'F' Add Order with MPID attribution (40 bytes)."""

    stock_locate: int
    tracking_number: int
    timestamp: int
    order_reference_number: int
    buy_sell_indicator: str
    shares: int
    stock: str
    price: int
    attribution: str

    @property
    def message_type(self) -> str:
        return "F"


class OrderExecuted(NamedTuple):
    """'E' Order Executed (31 bytes)."""

    stock_locate: int
    tracking_number: int
    timestamp: int
    order_reference_number: int
    executed_shares: int
    match_number: int

    @property
    def message_type(self) -> str:
        return "E"


class OrderExecutedWithPrice(NamedTuple):
    """'C' Order Executed With Price (36 bytes)."""

    stock_locate: int
    tracking_number: int
    timestamp: int
    order_reference_number: int
    executed_shares: int
    match_number: int
    printable: str
    execution_price: int

    @property
    def message_type(self) -> str:
        return "C"


class OrderCancel(NamedTuple):
    """'X' Order Cancel (23 bytes)."""

    stock_locate: int
    tracking_number: int
    timestamp: int
    order_reference_number: int
    cancelled_shares: int

    @property
    def message_type(self) -> str:
        return "X"


class OrderDelete(NamedTuple):
    """'D' Order Delete (19 bytes)."""

    stock_locate: int
    tracking_number: int
    timestamp: int
    order_reference_number: int

    @property
    def message_type(self) -> str:
        return "D"


class OrderReplace(NamedTuple):
    """'U' Order Replace (35 bytes)."""

    stock_locate: int
    tracking_number: int
    timestamp: int
    original_order_reference_number: int
    new_order_reference_number: int
    shares: int
    price: int

    @property
    def message_type(self) -> str:
        return "U"


class Trade(NamedTuple):
    """'P' Trade (non-cross) (44 bytes)."""

    stock_locate: int
    tracking_number: int
    timestamp: int
    order_reference_number: int
    buy_sell_indicator: str
    shares: int
    stock: str
    price: int
    match_number: int

    @property
    def message_type(self) -> str:
        return "P"


class CrossTrade(NamedTuple):
    """'Q' Cross Trade (40 bytes)."""

    stock_locate: int
    tracking_number: int
    timestamp: int
    shares: int
    stock: str
    cross_price: int
    match_number: int
    cross_type: str

    @property
    def message_type(self) -> str:
        return "Q"


class BrokenTrade(NamedTuple):
    """'B' Broken Trade (19 bytes)."""

    stock_locate: int
    tracking_number: int
    timestamp: int
    match_number: int

    @property
    def message_type(self) -> str:
        return "B"


class NOII(NamedTuple):
    """'I' Net Order Imbalance Indicator (NOII) (50 bytes)."""

    stock_locate: int
    tracking_number: int
    timestamp: int
    paired_shares: int
    imbalance_shares: int
    imbalance_direction: str
    stock: str
    far_price: int
    near_price: int
    current_reference_price: int
    cross_type: str
    price_variation_indicator: str

    @property
    def message_type(self) -> str:
        return "I"


class RetailInterest(NamedTuple):
    """'N' Retail Price Improvement Indicator (RPII) (20 bytes)."""

    stock_locate: int
    tracking_number: int
    timestamp: int
    stock: str
    interest_flag: str

    @property
    def message_type(self) -> str:
        return "N"


class DLCRPriceDiscovery(NamedTuple):
    """'O' Direct Listing with Capital Raise Price Discovery (48 bytes)."""

    stock_locate: int
    tracking_number: int
    timestamp: int
    stock: str
    open_eligibility_status: str
    minimum_allowable_price: int
    maximum_allowable_price: int
    near_execution_price: int
    near_execution_time: int
    lower_price_range_collar: int
    upper_price_range_collar: int

    @property
    def message_type(self) -> str:
        return "O"


class RawMessage(NamedTuple):
    """A message :func:`decode_or_raw` could not decode: its bytes and why (``reason``)."""

    data: bytes
    reason: str

    @property
    def message_type(self) -> str:
        return chr(self.data[0]) if self.data else ""


Record: TypeAlias = (
    SystemEvent
    | StockDirectory
    | StockTradingAction
    | RegSHORestriction
    | MarketParticipantPosition
    | MWCBDeclineLevel
    | MWCBStatus
    | IPOQuotingPeriodUpdate
    | LULDAuctionCollar
    | OperationalHalt
    | AddOrder
    | AddOrderMPID
    | OrderExecuted
    | OrderExecutedWithPrice
    | OrderCancel
    | OrderDelete
    | OrderReplace
    | Trade
    | CrossTrade
    | BrokenTrade
    | NOII
    | RetailInterest
    | DLCRPriceDiscovery
)

#: Message type code -> record class.
MESSAGE_CLASSES: Final[dict[str, type[Record]]] = {
    "S": SystemEvent,
    "R": StockDirectory,
    "H": StockTradingAction,
    "Y": RegSHORestriction,
    "L": MarketParticipantPosition,
    "V": MWCBDeclineLevel,
    "W": MWCBStatus,
    "K": IPOQuotingPeriodUpdate,
    "J": LULDAuctionCollar,
    "h": OperationalHalt,
    "A": AddOrder,
    "F": AddOrderMPID,
    "E": OrderExecuted,
    "C": OrderExecutedWithPrice,
    "X": OrderCancel,
    "D": OrderDelete,
    "U": OrderReplace,
    "P": Trade,
    "Q": CrossTrade,
    "B": BrokenTrade,
    "I": NOII,
    "N": RetailInterest,
    "O": DLCRPriceDiscovery,
}


# The layouts, as the specification's tables give them: type, length, table name, then each
# field after the common header (Stock Locate, Tracking Number, Timestamp) as name:kind.
# Kinds: u2/u4/u8 unsigned big-endian integers; c a one-byte alpha code (kept as sent);
# aN an N-byte alpha field (space padding stripped); p4 a 4-byte price with 4 implied
# decimal places; p8 an 8-byte price with 8 (MWCB levels); x a reserved byte (skipped).
_SPEC: Final = """
S 12 system_event               event_code:c
R 39 stock_directory            stock:a8 market_category:c financial_status_indicator:c
                                round_lot_size:u4 round_lots_only:c issue_classification:c
                                issue_sub_type:a2 authenticity:c short_sale_threshold_indicator:c
                                ipo_flag:c luld_reference_price_tier:c etp_flag:c
                                etp_leverage_factor:u4 inverse_indicator:c
H 25 stock_trading_action       stock:a8 trading_state:c reserved:x reason:a4
Y 20 reg_sho_restriction        stock:a8 reg_sho_action:c
L 26 market_participant_position mpid:a4 stock:a8 primary_market_maker:c market_maker_mode:c
                                market_participant_state:c
V 35 mwcb_decline_level         level_1:p8 level_2:p8 level_3:p8
W 12 mwcb_status                breached_level:c
K 28 ipo_quoting_period_update  stock:a8 ipo_quotation_release_time:u4
                                ipo_quotation_release_qualifier:c ipo_price:p4
J 35 luld_auction_collar        stock:a8 auction_collar_reference_price:p4
                                upper_auction_collar_price:p4 lower_auction_collar_price:p4
                                auction_collar_extension:u4
h 21 operational_halt           stock:a8 market_code:c operational_halt_action:c
A 36 add_order                  order_reference_number:u8 buy_sell_indicator:c shares:u4 stock:a8
                                price:p4
F 40 add_order_mpid             order_reference_number:u8 buy_sell_indicator:c shares:u4 stock:a8
                                price:p4 attribution:a4
E 31 order_executed             order_reference_number:u8 executed_shares:u4 match_number:u8
C 36 order_executed_with_price  order_reference_number:u8 executed_shares:u4 match_number:u8
                                printable:c execution_price:p4
X 23 order_cancel               order_reference_number:u8 cancelled_shares:u4
D 19 order_delete               order_reference_number:u8
U 35 order_replace              original_order_reference_number:u8 new_order_reference_number:u8
                                shares:u4 price:p4
P 44 trade                      order_reference_number:u8 buy_sell_indicator:c shares:u4 stock:a8
                                price:p4 match_number:u8
Q 40 cross_trade                shares:u8 stock:a8 cross_price:p4 match_number:u8 cross_type:c
B 19 broken_trade               match_number:u8
I 50 noii                       paired_shares:u8 imbalance_shares:u8 imbalance_direction:c
                                stock:a8 far_price:p4 near_price:p4 current_reference_price:p4
                                cross_type:c price_variation_indicator:c
N 20 retail_interest            stock:a8 interest_flag:c
O 48 dlcr_price_discovery       stock:a8 open_eligibility_status:c minimum_allowable_price:p4
                                maximum_allowable_price:p4 near_execution_price:p4
                                near_execution_time:u8 lower_price_range_collar:p4
                                upper_price_range_collar:p4
"""

_HEADER: Final = "stock_locate:u2 tracking_number:u2 timestamp:ts"
_SIZES: Final = {"u2": 2, "u4": 4, "u8": 8, "ts": 6, "c": 1, "x": 1, "p4": 4, "p8": 8}
_PLACES: Final = {"p4": 4, "p8": 8}


class Field(NamedTuple):
    """One field of a layout: ``offset`` and ``size`` in bytes from the message's start."""

    name: str
    kind: str
    offset: int
    size: int


class Layout(NamedTuple):
    """One message type: its code, table name, length, record class and fields."""

    message_type: str
    name: str
    size: int
    cls: type[Record]
    fields: tuple[Field, ...]


def _parse_spec() -> dict[str, Layout]:
    lines: list[str] = []
    for line in _SPEC.strip().splitlines():
        if line.startswith(" "):
            lines[-1] += " " + line.strip()
        else:
            lines.append(line)
    layouts: dict[str, Layout] = {}
    for line in lines:
        code, size, name, *specs = line.split()
        fields: list[Field] = []
        offset = 1
        for spec in [*_HEADER.split(), *specs]:
            fname, kind = spec.split(":")
            width = _SIZES.get(kind) or int(kind[1:])
            fields.append(Field(fname, kind, offset, width))
            offset += width
        cls = MESSAGE_CLASSES[code]
        names = tuple(f.name for f in fields if f.kind != "x")
        if offset != int(size) or cls._fields != names:
            raise AssertionError(f"ITCH layout {code!r} does not match its class")
        layouts[code] = Layout(code, name, int(size), cls, tuple(fields))
    return layouts

#: Message type code -> :class:`Layout` (every type of the specification).
LAYOUTS: Final[dict[str, Layout]] = _parse_spec()
#: Message type code -> table (and file) name, e.g. ``"A" -> "add_order"``.
MESSAGE_NAMES: Final[dict[str, str]] = {code: lay.name for code, lay in LAYOUTS.items()}
#: Message type code -> {price field: implied decimal places}.
PRICE_FIELDS: Final[dict[str, dict[str, int]]] = {
    code: {f.name: _PLACES[f.kind] for f in lay.fields if f.kind in _PLACES}
    for code, lay in LAYOUTS.items()
}
#: Name of the table that holds what could not be decoded on the columnar path.
INVALID: Final = "invalid"

_LAYOUT_OF_CLASS: Final[dict[type, Layout]] = {lay.cls: lay for lay in LAYOUTS.values()}
_STRUCT_CODES: Final = {
    "u2": "H", "u4": "I", "u8": "Q", "ts": "HI", "c": "B", "x": "x", "p4": "I", "p8": "Q",
}  # fmt: skip


def _struct_format(layout: Layout) -> str:
    return ">x" + "".join(_STRUCT_CODES.get(f.kind) or f"{f.size}s" for f in layout.fields)


# ---------------------------------------------------------------------------------------------
# Per message

_CHR: Final = tuple(chr(i) for i in range(256))  # one-byte codes, Latin-1
_ALPHA: dict[bytes, str] = {}  # padded alpha field -> stripped str (symbols repeat)
_ALPHA_CACHE_SIZE: Final = 1 << 16


def _alpha_miss(raw: bytes) -> str:
    text = raw.rstrip(b" ").decode("latin-1")
    if len(_ALPHA) >= _ALPHA_CACHE_SIZE:
        _ALPHA.clear()
    _ALPHA[raw] = text
    return text


def _make_decoder(layout: Layout) -> Callable[[Any], Record]:
    """Compile one decoder: a single ``struct`` unpack, then the record built in one call."""
    names: list[str] = []
    values: list[str] = []
    for i, f in enumerate(layout.fields):
        if f.kind == "x":
            continue
        if f.kind == "ts":
            names += [f"v{i}h", f"v{i}l"]
            values.append(f"v{i}h << 32 | v{i}l")
        elif f.kind == "c":
            names.append(f"v{i}")
            values.append(f"_chr[v{i}]")
        elif f.kind.startswith("a"):
            names.append(f"v{i}")
            values.append(f"(_alpha_get(v{i}) or _alpha_miss(v{i}))")
        else:
            names.append(f"v{i}")
            values.append(f"v{i}")
    source = (
        f"def decode_{layout.name}(message):\n"
        f"    {', '.join(names)}, = _unpack(message)\n"
        f"    return _new(_cls, ({', '.join(values)},))\n"
    )
    namespace: dict[str, Any] = {
        "_unpack": struct.Struct(_struct_format(layout)).unpack,
        "_new": tuple.__new__,
        "_cls": layout.cls,
        "_chr": _CHR,
        "_alpha_get": _ALPHA.get,
        "_alpha_miss": _alpha_miss,
    }
    exec(source, namespace)
    decoder: Callable[[Any], Record] = namespace[f"decode_{layout.name}"]
    return decoder


def _invalid(message: bytes | bytearray | memoryview) -> ItchDecodeError:
    length = len(message)
    if length == 0:
        return ItchDecodeError("empty ITCH message", reason="empty", message_type="", length=0)
    code = chr(message[0])
    layout = LAYOUTS.get(code)
    if layout is None:
        return ItchDecodeError(
            f"unknown ITCH 5.0 message type {code!r} ({length} bytes)",
            reason="unknown_type",
            message_type=code,
            length=length,
        )
    return ItchDecodeError(
        f"ITCH 5.0 message type {code!r} must be {layout.size} bytes, got {length}",
        reason="bad_length",
        message_type=code,
        length=length,
    )


def _unknown(message: bytes | bytearray | memoryview) -> Record:
    raise _invalid(message)


_DECODERS: Final[list[Callable[[Any], Record]]] = [_unknown] * 256
for _layout in LAYOUTS.values():
    _DECODERS[ord(_layout.message_type)] = _make_decoder(_layout)


def decode(message: bytes | bytearray | memoryview) -> Record:
    """Decode one ITCH 5.0 message (the bytes of one MoldUDP64 message block).

    Raises :class:`~moldudp64.exceptions.ItchDecodeError` (``reason`` ``"empty"``,
    ``"unknown_type"`` or ``"bad_length"``) for anything that is not exactly one message.
    """
    try:
        return _DECODERS[message[0]](message)
    except (IndexError, struct.error):
        raise _invalid(message) from None


def decode_or_raw(message: bytes | bytearray | memoryview) -> Record | RawMessage:
    """Like :func:`decode`, but return a :class:`RawMessage` instead of raising."""
    try:
        return _DECODERS[message[0]](message)
    except (IndexError, struct.error, ItchDecodeError):
        return RawMessage(bytes(message), _invalid(message).reason)


def price_decimal(record: Record, field: str) -> Decimal:
    """The exact decimal value of a price field, e.g. ``Decimal('63.7400')``."""
    places = PRICE_FIELDS[record.message_type].get(field)
    if places is None:
        raise KeyError(f"{field!r} is not a price field of {type(record).__name__}")
    value: int = getattr(record, field)
    return Decimal(value).scaleb(-places)


_DICT_PRICES: Final[dict[type, tuple[tuple[str, int], ...]]] = {
    lay.cls: tuple((name, 10**places) for name, places in PRICE_FIELDS[code].items())
    for code, lay in LAYOUTS.items()
}


def to_dict(record: Record | RawMessage) -> dict[str, Any]:
    """A JSON-ready dict: ``message_type`` then every field by name, prices as numbers.

    Prices become the float nearest their exact decimal value, which prints as that decimal
    (``637400`` -> ``63.74``) whenever it has at most 15 significant digits: every 4-place
    price does. A :class:`RawMessage` gives ``message_type``, ``reason``, ``length`` and
    ``data`` (hex).
    """
    if type(record) is RawMessage:
        return {
            "message_type": record.message_type,
            "reason": record.reason,
            "length": len(record.data),
            "data": record.data.hex(),
        }
    out: dict[str, Any] = {"message_type": record.message_type}
    out.update(record._asdict())
    for name, scale in _DICT_PRICES[type(record)]:
        out[name] = out[name] / scale
    return out


def encode(record: Record) -> bytes:
    """The wire bytes of a record (the inverse of :func:`decode`).

    Raises :class:`~moldudp64.exceptions.EncodeError` for a value that does not fit its
    field: an integer out of range, a code that is not one character, an alpha value too
    long or outside Latin-1.
    """
    layout = _LAYOUT_OF_CLASS.get(type(record))
    if layout is None:
        raise EncodeError(f"not an ITCH 5.0 record: {type(record).__name__}")
    values: list[Any] = []
    for f in layout.fields:
        if f.kind == "x":  # Reserved (alpha): a space
            values.append(b" ")
            continue
        value = getattr(record, f.name)
        if f.kind == "ts":
            if type(value) is not int or not 0 <= value < 1 << 48:
                raise EncodeError(f"{f.name} must be an int in [0, 2**48), got {value!r}")
            values += [value >> 32, value & 0xFFFFFFFF]
        elif f.kind == "c" or f.kind.startswith("a"):
            try:
                raw = str(value).encode("latin-1")
            except UnicodeEncodeError:
                raise EncodeError(f"{f.name} must be Latin-1 text, got {value!r}") from None
            if not isinstance(value, str) or len(raw) > f.size or (f.kind == "c" and not raw):
                raise EncodeError(f"{f.name} must be text of up to {f.size} bytes: {value!r}")
            values.append(raw[0] if f.kind == "c" else raw.ljust(f.size, b" "))
        else:
            values.append(value)
    try:
        body = struct.pack(">" + _struct_format(layout)[2:].replace("x", "c"), *values)
    except struct.error as exc:
        raise EncodeError(f"{type(record).__name__}: {exc}") from None
    return layout.message_type.encode() + body


# ---------------------------------------------------------------------------------------------
# Columnar

_CHUNK_MESSAGES: Final = 1 << 20
_MAX_CHUNK_MESSAGES: Final = 1 << 24  # keeps every 32-bit string offset of a chunk in range
_CHUNK_BYTES: Final = 8 << 20  # fits the caches better than larger chunks


def _arrow() -> tuple[Any, Any, Any]:
    """numpy, pyarrow and pyarrow.compute, or a clear error naming the extra."""
    try:
        import numpy
        import pyarrow
        import pyarrow.compute
    except ImportError as exc:
        raise MissingDependency(
            f"the columnar ITCH 5.0 API needs pyarrow and numpy ({exc}): "
            "pip install 'moldudp64[arrow]'",
            extra="arrow",
        ) from exc
    return numpy, pyarrow, pyarrow.compute


_ARROW_INTS: Final = {"u2": "uint16", "u4": "uint32", "u8": "uint64"}


def arrow_schema(message_type: str) -> Any:
    """The ``pyarrow.Schema`` of a message type's table (code ``"A"`` or name ``"add_order"``).

    Columns: ``session`` (string), ``seq`` (uint64), then the fields in order: integers as
    unsigned integers of their width, ``timestamp`` as int64 nanoseconds since midnight, alpha
    fields as strings, prices as ``decimal128(10, 4)`` (``decimal128(20, 8)`` for MWCB levels),
    exact. ``"invalid"`` gives the schema of the table of messages that could not be decoded.
    """
    _, pa, _ = _arrow()
    columns = [("session", pa.string()), ("seq", pa.uint64())]
    if message_type == INVALID:
        return pa.schema(
            [
                *columns,
                ("message_type", pa.string()),
                ("length", pa.uint32()),
                ("reason", pa.string()),
                ("data", pa.binary()),
            ]
        )
    layout = LAYOUTS.get(message_type) or _LAYOUT_OF_NAME.get(message_type)
    if layout is None:
        raise KeyError(f"not an ITCH 5.0 message type: {message_type!r}")
    for f in layout.fields:
        if f.kind == "x":
            continue
        if f.kind == "ts":
            typ = pa.int64()
        elif f.kind == "p4":
            typ = pa.decimal128(10, 4)
        elif f.kind == "p8":
            typ = pa.decimal128(20, 8)
        elif f.kind in _ARROW_INTS:
            typ = getattr(pa, _ARROW_INTS[f.kind])()
        else:
            typ = pa.string()
        columns.append((f.name, typ))
    return pa.schema(columns)


_LAYOUT_OF_NAME: Final[dict[str, Layout]] = {lay.name: lay for lay in LAYOUTS.values()}


class _Plan(NamedTuple):
    dtype: Any  # numpy structured dtype over one message
    schema: Any


_PLANS: dict[str, _Plan] = {}


def _plan(layout: Layout) -> _Plan:
    plan = _PLANS.get(layout.message_type)
    if plan is None:
        np, _, _ = _arrow()
        names: list[str] = []
        formats: list[str] = []
        offsets: list[int] = []

        def add(name: str, fmt: str, offset: int) -> None:
            names.append(name)
            formats.append(fmt)
            offsets.append(offset)

        for f in layout.fields:
            if f.kind == "ts":
                add("timestamp_hi", ">u2", f.offset)
                add("timestamp_lo", ">u4", f.offset + 2)
            elif f.kind in ("u2", "u4", "u8", "p4", "p8"):
                add(f.name, f">u{f.size}", f.offset)
            elif f.kind != "x":
                add(f.name, f"S{f.size}", f.offset)
        dtype = np.dtype(
            {"names": names, "formats": formats, "offsets": offsets, "itemsize": layout.size}
        )
        plan = _PLANS[layout.message_type] = _Plan(dtype, arrow_schema(layout.message_type))
    return plan


def _strings(column: Any, width: int, strip: bool) -> Any:
    """A pyarrow string array from a NumPy ``S<width>`` column, padding stripped if asked."""
    np, pa, pc = _arrow()
    count = len(column)
    data = np.ascontiguousarray(column).view(np.uint8)
    if data.size and int(data.max()) >= 0x80:  # not ASCII: decode as Latin-1 (rare, hostile)
        rows = data.reshape(count, width)
        return pa.array(
            [(r.tobytes().rstrip(b" ") if strip else r.tobytes()).decode("latin-1") for r in rows],
            pa.string(),
        )
    offsets = np.arange(0, (count + 1) * width, width, dtype=np.int32)
    array = pa.StringArray.from_buffers(count, pa.py_buffer(offsets), pa.py_buffer(data))
    return pc.ascii_rtrim(array, characters=" ") if strip and width > 1 else array


def _decimals(column: Any, precision: int, scale: int) -> Any:
    np, pa, _ = _arrow()
    count = len(column)
    words = np.zeros((count, 2), dtype=np.uint64)  # 128-bit little-endian, high word 0
    words[:, 0] = column
    typ = pa.decimal128(precision, scale)
    return pa.Array.from_buffers(typ, count, [None, pa.py_buffer(words)])


def _gather(buf: Any, starts: Any, size: int, windows: dict[int, Any]) -> Any:
    """The records ``buf[s:s + size]`` for each of ``starts``, as one uint8 array (one copy)."""
    np, _, _ = _arrow()
    if c_gather is not None:
        return np.frombuffer(c_gather(buf, starts, size), dtype=np.uint8)
    if size not in windows:  # a view: row o is buf[o:o + size], no copy
        windows[size] = np.lib.stride_tricks.sliding_window_view(buf, size)
    return windows[size][starts].reshape(-1)


def _session_column(sessions: list[str], codes: Any, idx: Any) -> Any:
    """The ``session`` column of rows ``idx`` (``codes`` index ``sessions``; None: the first)."""
    np, pa, pc = _arrow()
    if codes is None:
        raw = sessions[0].encode()
        offsets = np.arange(0, (len(idx) + 1) * len(raw), max(len(raw), 1), dtype=np.int32)
        if not raw:
            offsets = np.zeros(len(idx) + 1, dtype=np.int32)
        data = pa.py_buffer(raw * len(idx))
        return pa.StringArray.from_buffers(len(idx), pa.py_buffer(offsets), data)
    return pc.take(pa.array(sessions, pa.string()), pa.array(codes[idx]))


_SIZES_TABLE: list[Any] = []


def _size_of_code() -> Any:
    """Message length by type code (0 for unknown codes), as a NumPy lookup table."""
    if not _SIZES_TABLE:
        np, _, _ = _arrow()
        table = np.zeros(256, dtype=np.int64)
        for code, layout in LAYOUTS.items():
            table[ord(code)] = layout.size
        table[0] = -1  # code 0 is never a type; an empty message (length 0) must not match
        _SIZES_TABLE.append(table)
    return _SIZES_TABLE[0]


def _decode_chunk(
    buf: npt.NDArray[np.uint8],
    starts: npt.NDArray[np.int64],
    lengths: npt.NDArray[np.int64],
    seqs: npt.NDArray[np.uint64],
    codes: npt.NDArray[np.int32] | None,
    sessions: list[str],
) -> dict[str, Any]:
    """Decode the messages ``buf[starts[i]:starts[i] + lengths[i]]`` into record batches."""
    np, pa, _ = _arrow()
    count = len(starts)
    types = np.zeros(count, dtype=np.uint8)
    nonempty = lengths > 0
    types[nonempty] = buf[starts[nonempty]]
    # A message decodes when its length is its type's; the others get key 0. One stable
    # sort groups each type's messages, in their order.
    keys = np.where(_size_of_code()[types] == lengths, types, 0).astype(np.uint8)
    order = np.argsort(keys, kind="stable")
    bounds = np.concatenate(([0], np.cumsum(np.bincount(keys, minlength=256))))
    windows: dict[int, Any] = {}
    out: dict[str, Any] = {}
    for code in np.flatnonzero(bounds[2:] > bounds[1:-1]) + 1:
        layout = LAYOUTS[chr(code)]
        idx = order[bounds[code] : bounds[code + 1]]
        plan = _plan(layout)
        recs = _gather(buf, starts[idx], layout.size, windows).view(plan.dtype)
        columns = [_session_column(sessions, codes, idx), pa.array(seqs[idx])]
        for f in layout.fields:
            if f.kind == "ts":
                hi = recs["timestamp_hi"].astype(np.int64)
                columns.append(pa.array((hi << 32) | recs["timestamp_lo"].astype(np.int64)))
            elif f.kind in _ARROW_INTS:
                columns.append(pa.array(recs[f.name].astype(f"=u{f.size}")))
            elif f.kind == "p4":
                columns.append(_decimals(recs[f.name], 10, 4))
            elif f.kind == "p8":
                columns.append(_decimals(recs[f.name], 20, 8))
            elif f.kind != "x":
                columns.append(_strings(recs[f.name], f.size, f.kind != "c"))
        out[layout.name] = pa.RecordBatch.from_arrays(columns, schema=plan.schema)
    bad = order[: bounds[1]]
    if bad.size:
        out[INVALID] = _invalid_batch(buf, starts, lengths, seqs, codes, sessions, bad)
    return dict(sorted(out.items(), key=lambda item: _ORDER.get(item[0], len(_ORDER))))


_ORDER: Final = {lay.name: i for i, lay in enumerate(LAYOUTS.values())}


def _invalid_batch(
    buf: Any, starts: Any, lengths: Any, seqs: Any, codes: Any, sessions: list[str], bad: Any
) -> Any:
    """The messages that could not be decoded, one row each (a loop: these should be rare)."""
    _, pa, _ = _arrow()
    data = [buf[s : s + n].tobytes() for s, n in zip(starts[bad], lengths[bad], strict=True)]
    errors = [_invalid(message) for message in data]
    return pa.RecordBatch.from_arrays(
        [
            _session_column(sessions, codes, bad),
            pa.array(seqs[bad]),
            pa.array([e.message_type for e in errors], pa.string()),
            pa.array(lengths[bad].astype("uint32")),
            pa.array([e.reason for e in errors], pa.string()),
            pa.array(data, pa.binary()),
        ],
        schema=arrow_schema(INVALID),
    )


Buffer: TypeAlias = bytes | bytearray | memoryview


def _batches_of_list(
    messages: Sequence[Buffer], sessions: list[str], seqs: Any, codes: Any
) -> dict[str, Any]:
    np, _, _ = _arrow()
    buf = np.frombuffer(b"".join(messages), dtype=np.uint8)
    lengths = np.fromiter(map(len, messages), dtype=np.int64, count=len(messages))
    starts = np.cumsum(lengths) - lengths
    return _decode_chunk(buf, starts, lengths, seqs, codes, sessions)


def _chunks(items: Iterable[Any], size: int) -> Iterator[list[Any]]:
    if not 1 <= size <= _MAX_CHUNK_MESSAGES:
        raise ValueError(f"chunk_size must be in [1, {_MAX_CHUNK_MESSAGES}], got {size}")
    iterator = iter(items)
    while True:
        chunk = list(islice(iterator, size))
        if not chunk:
            return
        yield chunk


def iter_message_batches(
    messages: Iterable[Buffer],
    *,
    session: str = "",
    first_seq: int = 1,
    chunk_size: int = _CHUNK_MESSAGES,
) -> Iterator[dict[str, Any]]:
    """Decode consecutive messages of one session (``first_seq`` onwards) a chunk at a time.

    Yields, per chunk of ``chunk_size`` messages, ``{table name: pyarrow.RecordBatch}`` (names
    from :data:`MESSAGE_NAMES`, plus ``"invalid"``); memory stays bounded by the chunk.
    """
    np, _, _ = _arrow()
    seq = first_seq
    for chunk in _chunks(messages, chunk_size):
        seqs = np.arange(seq, seq + len(chunk), dtype=np.uint64)
        seq += len(chunk)
        yield _batches_of_list(chunk, [session], seqs, None)


def iter_record_batches(
    records: Iterable[tuple[str, int, Buffer]], *, chunk_size: int = _CHUNK_MESSAGES
) -> Iterator[dict[str, Any]]:
    """Like :func:`iter_message_batches`, from ``(session, seq, data)`` tuples (a capture's
    messages, in any order; each row keeps its own session and sequence number)."""
    np, _, _ = _arrow()
    for chunk in _chunks(records, chunk_size):
        session_of, seq_of, data = zip(*chunk, strict=True)
        distinct = list(dict.fromkeys(session_of))
        codes = None
        if len(distinct) > 1:
            index = {s: i for i, s in enumerate(distinct)}
            codes = np.fromiter(map(index.__getitem__, session_of), np.int32, len(chunk))
        seqs = np.fromiter(seq_of, dtype=np.uint64, count=len(chunk))
        yield _batches_of_list(data, distinct, seqs, codes)


def iter_binaryfile_batches(
    source: str | os.PathLike[str] | BinaryIO,
    *,
    session: str = "",
    first_seq: int = 1,
    chunk_bytes: int = _CHUNK_BYTES,
) -> Iterator[dict[str, Any]]:
    """Like :func:`iter_message_batches`, reading a BinaryFILE ``chunk_bytes`` at a time.

    A file that ends inside a message raises :class:`~moldudp64.exceptions.TruncatedFile`
    after every complete message was yielded (as :class:`~moldudp64.BinaryFileReader` does).
    """
    np, _, _ = _arrow()
    from .binaryfile import BinaryFileReader

    if not 1 <= chunk_bytes <= 1 << 30:
        raise ValueError(f"chunk_bytes must be in [1, 2**30], got {chunk_bytes}")
    reader = BinaryFileReader(source)
    readinto = reader._file.readinto  # type: ignore[attr-defined]
    # at least one whole message; reused: the batches copy what they keep
    block = bytearray(max(chunk_bytes, 1 << 17))
    view = memoryview(block)
    seq = first_seq
    base = 0  # file offset of block[0]
    filled = 0  # bytes of block holding data (a partial message carried over first)
    try:
        while True:
            try:
                got = readinto(view[filled:])
            except OSError as exc:
                raise BinaryFileError(f"cannot read {reader.name}: {exc}") from exc
            if not got:
                if filled:
                    tail = bytes(view[:filled])
                    raise _truncated(reader.name, tail, base, seq - first_seq)
                return
            filled += got
            heads, end = _scan(view[:filled])
            if heads.size:
                buf = np.frombuffer(view[:filled], dtype=np.uint8)
                lengths = (buf[heads].astype(np.int64) << 8) | buf[heads + 1]
                count = heads.size
                seqs = np.arange(seq, seq + count, dtype=np.uint64)
                seq += count
                yield _decode_chunk(buf, heads + 2, lengths, seqs, None, [session])
                del buf
            block[: filled - end] = block[end:filled]
            filled -= end
            base += end
    finally:
        view.release()
        reader.close()


def _scan_py(data: bytes | memoryview) -> tuple[list[int], int]:
    """Offsets of the complete length-prefixed messages at the start of ``data``, and the end."""
    heads: list[int] = []
    append = heads.append
    pos = 0
    size = len(data)
    while pos + 2 <= size:
        stop = pos + 2 + (data[pos] << 8 | data[pos + 1])
        if stop > size:
            break
        append(pos)
        pos = stop
    return heads, pos


def _load_helpers() -> tuple[Any, Any]:
    if os.environ.get("MOLDUDP64_PURE_PYTHON"):
        return None, None
    try:
        from ._itch50 import gather, scan
    except ImportError:
        return None, None
    return scan, gather


#: The C twins (None without them) of :func:`_scan_py` (offsets as native int64 bytes) and
#: of the NumPy gather in :func:`_gather`.
c_scan, c_gather = _load_helpers()


def _scan(data: bytes | memoryview) -> tuple[npt.NDArray[np.int64], int]:
    np, _, _ = _arrow()
    if c_scan is not None:
        heads, end = c_scan(data)
        return np.frombuffer(heads, dtype=np.int64), end
    offsets, end = _scan_py(data)
    return np.array(offsets, dtype=np.int64), end


def _truncated(name: str, tail: bytes, offset: int, count: int) -> TruncatedFile:
    if len(tail) < 2:
        detail = "inside its 2-byte length field"
    else:
        detail = f"after {len(tail) - 2} of its {tail[0] << 8 | tail[1]} bytes"
    return TruncatedFile(
        f"{name}: truncated message at byte offset {offset} (message {count + 1}): "
        f"file ends {detail}",
        offset=offset,
    )


def _collect(batches: Iterable[Mapping[str, Any]]) -> dict[str, Any]:
    _, pa, _ = _arrow()
    parts: dict[str, list[Any]] = {}
    for chunk in batches:
        for name, batch in chunk.items():
            parts.setdefault(name, []).append(batch)
    ordered = sorted(parts, key=lambda name: _ORDER.get(name, len(_ORDER)))
    return {name: pa.Table.from_batches(parts[name]) for name in ordered}


def messages_to_arrow(
    messages: Iterable[Buffer], *, session: str = "", first_seq: int = 1
) -> dict[str, Any]:
    """Consecutive messages of one session -> ``{table name: pyarrow.Table}``.

    One table per message type present (``"add_order"``, ``"trade"``, ...; see
    :func:`arrow_schema`), plus ``"invalid"`` when some message could not be decoded.
    """
    return _collect(iter_message_batches(messages, session=session, first_seq=first_seq))


def records_to_arrow(records: Iterable[tuple[str, int, Buffer]]) -> dict[str, Any]:
    """``(session, seq, data)`` tuples -> ``{table name: pyarrow.Table}``."""
    return _collect(iter_record_batches(records))


def binaryfile_to_arrow(
    source: str | os.PathLike[str] | BinaryIO, *, session: str = "", first_seq: int = 1
) -> dict[str, Any]:
    """A BinaryFILE -> ``{table name: pyarrow.Table}`` (message n is sequence number n)."""
    return _collect(iter_binaryfile_batches(source, session=session, first_seq=first_seq))


def _file_writer(
    kind: str,
    source: Mapping[str, Any] | Iterable[Mapping[str, Any]],
    directory: str | os.PathLike[str],
    open_writer: Callable[[str, Any], Any],
) -> dict[str, int]:
    if isinstance(source, Mapping):
        source = [source]
    os.makedirs(directory, exist_ok=True)
    writers: dict[str, Any] = {}
    rows: dict[str, int] = {}
    try:
        for chunk in source:
            for name, batch in chunk.items():
                if name not in _ORDER and name != INVALID:
                    raise KeyError(f"not an ITCH 5.0 table name: {name!r}")
                writer = writers.get(name)
                if writer is None:
                    path = os.path.join(directory, f"{name}.{kind}")
                    writer = writers[name] = open_writer(path, batch.schema)
                writer.write(batch)
                rows[name] = rows.get(name, 0) + batch.num_rows
    finally:
        for writer in writers.values():
            writer.close()
    return rows


def write_parquet(
    source: Mapping[str, Any] | Iterable[Mapping[str, Any]],
    directory: str | os.PathLike[str],
    *,
    compression: str = "zstd",
) -> dict[str, int]:
    """Write one Parquet file per table (``DIR/add_order.parquet``, ...); return rows per table.

    ``source`` is a dict of tables (from :func:`binaryfile_to_arrow`, ...) or an iterable of
    them (from the ``iter_*_batches`` functions: streamed, so memory stays bounded by a chunk).
    """
    _arrow()
    import pyarrow.parquet as pq

    def open_writer(path: str, schema: Any) -> Any:
        return pq.ParquetWriter(path, schema, compression=compression)

    return _file_writer("parquet", source, directory, open_writer)


def write_csv(
    source: Mapping[str, Any] | Iterable[Mapping[str, Any]], directory: str | os.PathLike[str]
) -> dict[str, int]:
    """Write one CSV file per table (``DIR/add_order.csv``, ...), as :func:`write_parquet`.

    Prices are written as exact decimals (``24.2700``); the ``invalid`` table's ``data`` as hex.
    """
    _, pa, pc = _arrow()
    import pyarrow.csv as pacsv

    class HexWriter:
        def __init__(self, path: str, schema: Any) -> None:
            self.hex = "data" in schema.names and schema.field("data").type == pa.binary()
            if self.hex:
                schema = schema.set(schema.get_field_index("data"), pa.field("data", pa.string()))
            self.writer = pacsv.CSVWriter(path, schema)

        def write(self, batch: Any) -> None:
            if self.hex:
                index = batch.schema.get_field_index("data")
                text = pa.array([None if b is None else b.hex() for b in batch[index].to_pylist()])
                batch = batch.set_column(index, "data", text)
            self.writer.write(batch)

        def close(self) -> None:
            self.writer.close()

    del pc
    return _file_writer("csv", source, directory, HexWriter)
