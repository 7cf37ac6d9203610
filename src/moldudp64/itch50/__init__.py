"""NASDAQ TotalView-ITCH 5.0: the messages MoldUDP64 carries, decoded.

Two paths over one table of layouts (:data:`LAYOUTS`, from the specification, in
:mod:`.messages`):

* per message, for live handlers: :func:`decode` turns one message into a typed record (a
  ``NamedTuple`` per message type, fields named as in the specification in snake_case);
  :func:`to_dict` gives a JSON-ready dict, :func:`to_json` one JSON object with exact
  prices; :func:`encode` is the inverse of :func:`decode`.
* columnar, for files and batches: :func:`messages_to_arrow`, :func:`records_to_arrow` and
  :func:`binaryfile_to_arrow` build one Apache Arrow table per message type (with ``session``
  and ``seq`` columns) with NumPy, a few array operations per message type and chunk, never a
  Python loop per field; :func:`write_parquet` and :func:`write_csv` write one file per type.
  The columnar path needs the ``arrow`` extra (``pip install 'moldudp64[arrow]'``).

Values: timestamps are integer nanoseconds since midnight; prices are exact integers in the
specification's units (4 implied decimal places; 8 for the MWCB levels), with exact decimal
views (:func:`price_decimal`, Arrow ``decimal128`` columns, :func:`to_json` numbers, CSV
text) and floats from :func:`to_dict`; alphanumeric fields longer than one byte have their
space padding stripped (one-byte codes are kept as sent, so a space code stays ``" "``);
bytes outside ASCII are decoded as Latin-1, so no byte is lost or replaced. The Reserved byte
of the Stock Trading Action message is skipped.

Nothing is guessed: a message of an unknown type, or whose length is not its type's, is an
:class:`~moldudp64.exceptions.ItchDecodeError` from :func:`decode`, a :class:`RawMessage`
from :func:`decode_or_raw`, and a row of the ``invalid`` table on the columnar path.

The package: :mod:`.messages` (record classes, layouts), :mod:`.codec` (per message: decode
and encode; not called ``decode``, the function's name here), :mod:`.arrow` (columnar),
:mod:`.sinks` (the outputs of ``--decode itch50``: imported on use, not here). Every name
below is importable from ``moldudp64.itch50`` itself.
"""

from __future__ import annotations

from .arrow import (
    Buffer,
    arrow_schema,
    binaryfile_to_arrow,
    c_gather,
    c_scan,
    iter_binaryfile_batches,
    iter_message_batches,
    iter_record_batches,
    messages_to_arrow,
    records_to_arrow,
    write_csv,
    write_parquet,
)
from .codec import (
    decode,
    decode_or_raw,
    encode,
    price_decimal,
    to_dict,
    to_json,
)
from .messages import (
    INVALID,
    LAYOUTS,
    MESSAGE_CLASSES,
    MESSAGE_NAMES,
    NOII,
    PRICE_FIELDS,
    AddOrder,
    AddOrderMPID,
    BrokenTrade,
    CrossTrade,
    DLCRPriceDiscovery,
    Field,
    IPOQuotingPeriodUpdate,
    Layout,
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
    Record,
    RegSHORestriction,
    RetailInterest,
    StockDirectory,
    StockTradingAction,
    SystemEvent,
    Trade,
)

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
    "Buffer",
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
    "arrow_schema",
    "binaryfile_to_arrow",
    "c_gather",
    "c_scan",
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
    "to_json",
    "write_csv",
    "write_parquet",
]
