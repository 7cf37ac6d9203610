"""Per message: one ITCH 5.0 message's bytes to a typed record and back.

:func:`decode` (one precompiled ``struct`` unpack per message type, alpha fields through a
bounded cache), :func:`decode_or_raw` (a :class:`~.messages.RawMessage` instead of
:class:`~moldudp64.exceptions.ItchDecodeError`), :func:`to_dict` (JSON-ready),
:func:`encode` (the inverse of :func:`decode`), :func:`price_decimal`. Pure Python.
"""

from __future__ import annotations

import json
import struct
from collections.abc import Callable
from decimal import Decimal
from typing import Any, Final

from ..exceptions import EncodeError, ItchDecodeError
from .messages import _LAYOUT_OF_CLASS, LAYOUTS, PRICE_FIELDS, Layout, RawMessage, Record

__all__ = [
    "decode",
    "decode_or_raw",
    "encode",
    "json_fields",
    "price_decimal",
    "to_dict",
    "to_json",
]

_json_string: Final = json.encoder.encode_basestring_ascii  # what json.dumps uses for a str
_json_dumps: Final = json.dumps


def _struct_format(layout: Layout) -> str:
    return ">x" + "".join(_STRUCT_CODES.get(f.kind) or f"{f.size}s" for f in layout.fields)


_STRUCT_CODES: Final = {
    "u2": "H", "u4": "I", "u8": "Q", "ts": "HI", "c": "B", "x": "x", "p4": "I", "p8": "Q",
}  # fmt: skip

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


_DICT_PRICES: Final[dict[type, tuple[tuple[str, int, int], ...]]] = {
    lay.cls: tuple((name, 10**places, -places) for name, places in PRICE_FIELDS[code].items())
    for code, lay in LAYOUTS.items()
}


def to_dict(record: Record | RawMessage, *, exact: bool = False) -> dict[str, Any]:
    """A JSON-ready dict: ``message_type`` then every field by name, prices as numbers.

    Prices become the float nearest their exact decimal value, which prints as that decimal
    (``637400`` -> ``63.74``) whenever it has at most 15 significant digits: every 4-place
    price does, an MWCB level (8 places) may not. With ``exact=True`` they are exact
    :class:`~decimal.Decimal` values instead (``Decimal('63.7400')``); :func:`to_json` writes
    them exactly. A :class:`RawMessage` gives ``message_type``, ``reason``, ``length`` and
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
    for name, scale, exponent in _DICT_PRICES[type(record)]:
        out[name] = Decimal(out[name]).scaleb(exponent) if exact else out[name] / scale
    return out


def _price_text(places: int) -> Callable[[int], str]:
    """The exact decimal text of a price in units of 10**-places (``242700`` -> ``24.2700``)."""
    scale = 10**places
    spec = f"0{places}d"

    def text(value: int) -> str:
        units, fraction = divmod(value, scale)
        return f"{units}.{fraction:{spec}}"

    return text


_PRICE_TEXT: Final = {"p4": _price_text(4), "p8": _price_text(8)}


def _make_json_fields(layout: Layout) -> Callable[[Any], str]:
    """Compile the JSON text of one type's fields (``"message_type": "A", ...``, no braces):
    one ``%`` format, alpha fields escaped as ``json.dumps`` does, prices exact."""
    parts = [f'"message_type": {_json_string(layout.message_type)}']
    values: list[str] = []
    index = 0
    for f in layout.fields:
        if f.kind == "x":
            continue
        if f.kind in _PRICE_TEXT:
            parts.append(f'"{f.name}": %s')
            values.append(f"_{f.kind}(r[{index}])")
        elif f.kind == "c" or f.kind.startswith("a"):
            parts.append(f'"{f.name}": %s')
            values.append(f"_string(r[{index}])")
        else:
            parts.append(f'"{f.name}": %d')
            values.append(f"r[{index}]")
        index += 1
    template = ", ".join(parts)  # no other "%": names and type codes are letters
    source = f"def json_{layout.name}(r):\n    return {template!r} % ({', '.join(values)},)\n"
    namespace: dict[str, Any] = {
        "_string": _json_string,
        **{f"_{k}": v for k, v in _PRICE_TEXT.items()},
    }
    exec(source, namespace)
    fields: Callable[[Any], str] = namespace[f"json_{layout.name}"]
    return fields


_JSON_FIELDS: Final[dict[type, Callable[[Any], str]]] = {
    lay.cls: _make_json_fields(lay) for lay in LAYOUTS.values()
}


def json_fields(record: Record | RawMessage) -> str:
    """The members of :func:`to_json`'s object without its braces, to follow other members
    (``'"message_type": "A", ..., "price": 24.2700'``)."""
    make = _JSON_FIELDS.get(type(record))
    if make is None:
        return _json_dumps(to_dict(record))[1:-1]
    return make(record)


def to_json(record: Record | RawMessage) -> str:
    """One JSON object: the members of :func:`to_dict`, with every price written as its exact
    decimal in the field's places (``24.2700``; an MWCB level ``184467440737.09551615``,
    which a float cannot hold). ``json.loads(text, parse_float=decimal.Decimal)`` reads them
    back exactly; plain ``json.loads`` as the nearest floats."""
    return "{" + json_fields(record) + "}"


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
