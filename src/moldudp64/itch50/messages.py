"""The TotalView-ITCH 5.0 messages: one record class per type and the table of layouts.

:data:`LAYOUTS` (from the specification: every message type, its length, its fields with
offsets and kinds) drives both decoding paths (:mod:`.decode` per message, :mod:`.arrow`
columnar); each record class's fields are checked against it at import.
"""

from __future__ import annotations

from typing import Final, NamedTuple, TypeAlias

__all__ = [
    "INVALID",
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
    "Field",
    "IPOQuotingPeriodUpdate",
    "LULDAuctionCollar",
    "Layout",
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
_LAYOUT_OF_NAME: Final[dict[str, Layout]] = {lay.name: lay for lay in LAYOUTS.values()}
