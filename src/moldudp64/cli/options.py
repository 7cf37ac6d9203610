"""Option types of the command line: each checks its text and says what is wrong."""

from __future__ import annotations

import argparse
import ipaddress
import logging
import math
from collections.abc import Callable
from typing import Any

from ..events import (
    Address,
)
from ..exceptions import EncodeError, MoldUDP64Error
from ..net import check_interface_addr, parse_address
from ..wire import (
    HEADER_SIZE,
    MAX_DATAGRAM,
    MAX_SEQ_NUM,
    encode_session,
)
from .sinks import _printable

logger = logging.getLogger("moldudp64.cli")

# --------------------------------------------------------------------------- option types


def _type(name: str, convert: Callable[[str], Any]) -> Callable[[str], Any]:
    """Wrap ``convert`` so its errors become argparse's one-line usage errors."""

    def parse(text: str) -> Any:
        try:
            return convert(text)
        except (ValueError, MoldUDP64Error) as exc:
            raise argparse.ArgumentTypeError(str(exc)) from None

    parse.__name__ = name
    return parse


def _int_at_least(
    low: int, what: str, high: int | None = None, high_text: str | None = None
) -> Callable[[str], int]:
    def convert(text: str) -> int:
        try:
            value = int(text, 0)
        except ValueError:
            raise ValueError(f"{text!r} is not an integer") from None
        if high is not None and not low <= value <= high:
            raise ValueError(f"{text!r}: {what} must be {low}..{high_text or high}")
        if value < low:
            raise ValueError(f"{text!r}: {what} must be >= {low}")
        return value

    return _type(what, convert)


def _float(text: str, what: str) -> float:
    try:
        return float(text)
    except ValueError:
        raise ValueError(f"{text!r} is not a number of {what}") from None


def _seconds(text: str) -> float:
    value = _float(text, "seconds")
    if not math.isfinite(value) or value < 0:
        raise ValueError(f"{text!r}: seconds must be a finite number >= 0")
    return value


def _positive_seconds(text: str) -> float:
    value = _float(text, "seconds")
    if not math.isfinite(value) or value <= 0:
        raise ValueError(f"{text!r}: seconds must be a finite number > 0")
    return value


def _rate(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise ValueError(f"{text!r} is not a number") from None
    if not math.isfinite(value) or value < 0:
        raise ValueError(f"{text!r}: rate must be a finite number >= 0 (0: unlimited)")
    return value


def _probability(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise ValueError(f"{text!r} is not a probability") from None
    if not 0.0 <= value <= 1.0:
        raise ValueError(f"{text!r}: a probability is between 0 and 1")
    return value


def _port_from(low: int) -> Callable[[str], int]:
    """A port number ``low``..65535 (decimal)."""

    def convert(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise ValueError(f"{text!r} is not a port number") from None
        if not low <= value <= 65535:
            raise ValueError(f"{text!r}: port must be {low}..65535")
        return value

    return convert


_port = _port_from(1)
#: inspect --port: 0..65535 (port 0 is legal on the wire; anonymised captures use it).
_captured_port = _port_from(0)


def _session(text: str) -> str:
    """A session name as given, without the trailing spaces the wire pads it with."""
    raw = encode_session(text)  # EncodeError: not ASCII, longer than 10
    if not all(0x20 <= b < 0x7F for b in raw):
        raise EncodeError(f"session {text!r} must be printable ASCII")
    name = text.rstrip(" ")
    if not name:
        raise EncodeError(f"session {text!r} is empty: give 1 to 10 printable ASCII characters")
    return name


def _session_label(name: str) -> str:
    """How a summary shows a session: as typed (no wire padding), non-printables escaped."""
    return repr(_printable(name.rstrip(" ")))


def _host_port(text: str) -> Address:
    return parse_address(text, "address")


def _group_port(text: str) -> Address:
    addr = parse_address(text, "multicast address")
    first = int(addr[0].split(".")[0])
    if not 224 <= first <= 239:
        raise ValueError(f"{text!r}: {addr[0]} is not a multicast group (224.0.0.0/4)")
    return addr


def _ipv4(text: str) -> str:

    try:
        return str(ipaddress.IPv4Address(text))
    except ValueError:
        raise ValueError(f"{text!r} is not an IPv4 address") from None


def _interface(text: str) -> str:

    return check_interface_addr(text)


SESSION = _type("session", _session)
HOST_PORT = _type("HOST:PORT", _host_port)
GROUP_PORT = _type("GROUP:PORT", _group_port)
IPV4 = _type("address", _ipv4)
INTERFACE = _type("interface", _interface)
PORT = _type("port", _port)
CAPTURED_PORT = _type("port", _captured_port)
SECONDS = _type("seconds", _seconds)
POSITIVE_SECONDS = _type("seconds", _positive_seconds)
PROBABILITY = _type("probability", _probability)
RATE = _type("rate", _rate)
COUNT = _int_at_least(1, "count")
MESSAGES_PER_SECOND = _int_at_least(1, "rate in messages per second")
SEQ = _int_at_least(1, "sequence number", MAX_SEQ_NUM, "2**64-1")
SEED = _int_at_least(0, "seed")
TTL = _int_at_least(0, "TTL")


def _max_payload(text: str) -> int:
    value = _int_at_least(HEADER_SIZE, "payload")(text)
    if value > MAX_DATAGRAM - HEADER_SIZE:
        raise argparse.ArgumentTypeError(
            f"{text!r}: payload must be at most {MAX_DATAGRAM - HEADER_SIZE} bytes"
        )
    return value


# --------------------------------------------------------------------------- output sinks


def _network(text: str) -> Any:

    try:
        return ipaddress.ip_network(text, strict=False)
    except ValueError:
        raise ValueError(f"{text!r} is not a network (e.g. 10.0.0.0/8 or 10.1.2.3)") from None


def _rate_limit(text: str) -> float:
    if text.strip().lower() == "none":
        return 0.0
    try:
        value = float(text)
    except ValueError:
        raise ValueError(f"{text!r} is not a number of requests per second or 'none'") from None
    if not math.isfinite(value) or value <= 0:
        raise ValueError(f"{text!r}: the rate limit must be a number > 0, or 'none'")
    return value


