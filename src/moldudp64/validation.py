"""Checks of configuration values, shared by the cores, the I/O layers and the CLI.

A core module: no sockets, no clock, no threads. Every check returns the value it
accepted (normalised where said) or raises :class:`~moldudp64.exceptions.ConfigError`
with a message naming the setting (``what``/``name``) and the bad value::

    port = check_port(30001, "group port")
    group = check_multicast_addr(("239.1.1.1", 30001))
    drop = check_probability(0.1, "drop")
"""

from __future__ import annotations

import ipaddress
import math

from .events import Address
from .exceptions import ConfigError
from .wire import HEADER_SIZE, MAX_DATAGRAM, MAX_SEQ_NUM, encode_session

__all__ = [
    "check_batch_size",
    "check_finite_positive",
    "check_ipv4",
    "check_max_payload",
    "check_multicast_addr",
    "check_port",
    "check_probability",
    "check_publish_group",
    "check_rate",
    "check_seconds",
    "check_seq_num",
    "check_server_address",
    "check_session",
    "check_ttl",
]


def _is_int(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _is_number(value: object) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def check_port(port: object, what: str = "port", *, allow_zero: bool = False) -> int:
    """Return ``port`` if it is a valid UDP port number (1..65535, or 0 with ``allow_zero``)."""
    low = 0 if allow_zero else 1
    if not _is_int(port) or not low <= port <= 65535:  # type: ignore[operator]
        raise ConfigError(f"{what} {port!r} is not a port number ({low}..65535)")
    return port  # type: ignore[return-value]


def check_ipv4(host: object, what: str = "address") -> ipaddress.IPv4Address:
    """Parse a dotted IPv4 address string."""
    if not isinstance(host, str):
        raise ConfigError(f"{what} {host!r} must be a dotted IPv4 address string")
    try:
        return ipaddress.IPv4Address(host)
    except ValueError:
        raise ConfigError(f"{what} {host!r} is not an IPv4 address") from None


def check_multicast_addr(addr: object, what: str = "multicast address") -> Address:
    """Return ``(group, port)`` if the group is an IPv4 multicast address."""
    if not isinstance(addr, tuple) or len(addr) != 2:
        raise ConfigError(f"{what} {addr!r} must be a (group, port) tuple")
    group = check_ipv4(addr[0], f"{what} group")
    if not group.is_multicast:
        raise ConfigError(f"{what} {addr[0]} is not a multicast group (224.0.0.0/4)")
    return (str(group), check_port(addr[1], f"{what} port"))


def check_publish_group(group: object, *, unicast: bool = False) -> Address:
    """A publisher's destination: an IPv4 multicast ``(group, port)``, any host with ``unicast``."""
    if not isinstance(group, tuple) or len(group) != 2 or not isinstance(group[0], str):
        raise ConfigError(f"group {group!r} must be a (host, port) tuple")
    if not unicast:
        try:
            multicast = ipaddress.IPv4Address(group[0]).is_multicast
        except ValueError:
            multicast = False
        if not multicast:
            raise ConfigError(
                f"group {group[0]!r} is not a multicast group (224.0.0.0/4); "
                "pass unicast=True to publish to a unicast address"
            )
    port = group[1]
    if not _is_int(port) or not 1 <= port <= 65535:
        raise ConfigError(f"group port {port!r} is not a port number (1..65535)")
    return (group[0], port)


def check_server_address(addr: object) -> Address:
    """A re-request server's ``(host, port)``: a non-empty host string and a port 1..65535."""
    if (
        not isinstance(addr, tuple)
        or len(addr) != 2
        or not isinstance(addr[0], str)
        or not addr[0]
        or not _is_int(addr[1])
        or not 0 < addr[1] < 65536
    ):
        raise ConfigError(f"re-request server address {addr!r} is not a (host, port) pair")
    return (addr[0], addr[1])


def check_ttl(ttl: object) -> int:
    """A multicast TTL, 0..255."""
    if not _is_int(ttl) or not 0 <= ttl <= 255:  # type: ignore[operator]
        raise ConfigError(f"multicast TTL {ttl!r} is outside 0..255")
    return ttl  # type: ignore[return-value]


def check_probability(value: object, name: str) -> float:
    """A probability: a number in 0..1, as a float."""
    if not _is_number(value) or not 0.0 <= value <= 1.0:  # type: ignore[operator]
        raise ConfigError(f"{name} probability {value!r} must be a number in 0..1")
    return float(value)  # type: ignore[arg-type]


def check_rate(rate: object) -> float | None:
    """A publishing rate in messages a second (> 0), or None for unpaced."""
    if rate is not None and (not _is_number(rate) or not rate > 0):  # type: ignore[operator]
        raise ConfigError(f"rate {rate!r} must be a number of messages per second > 0")
    return None if rate is None else float(rate)  # type: ignore[arg-type]


def check_batch_size(batch_size: object) -> int:
    """A batch size, an int >= 1."""
    if not _is_int(batch_size) or batch_size < 1:  # type: ignore[operator]
        raise ConfigError(f"batch_size {batch_size!r} must be an int >= 1")
    return batch_size  # type: ignore[return-value]


def check_seconds(value: object, name: str) -> float:
    """A duration in seconds >= 0 (0 allowed), as a float."""
    if not _is_number(value) or value < 0:  # type: ignore[operator]
        raise ConfigError(f"{name} {value!r} must be a number of seconds >= 0")
    return float(value)  # type: ignore[arg-type]


def check_finite_positive(value: object, name: str) -> float:
    """A finite number > 0 (a rate, a budget), as a float."""
    if not _is_number(value) or not math.isfinite(value) or value <= 0:  # type: ignore[arg-type,operator]
        raise ConfigError(f"{name} {value!r} must be a finite number > 0")
    return float(value)  # type: ignore[arg-type]


def check_seq_num(value: object, name: str = "first_seq_num") -> int:
    """A first sequence number: an int in 1..2**64-1."""
    if not _is_int(value):
        raise ConfigError(f"{name} {value!r} must be an int")
    if not 1 <= value <= MAX_SEQ_NUM:  # type: ignore[operator]
        raise ConfigError(f"{name} {value} must be 1..2**64-1")
    return value  # type: ignore[return-value]


def check_session(session: object, what: str = "session") -> bytes:
    """A session name (up to 10 ASCII characters) as its 10 raw bytes."""
    try:
        return encode_session(session)  # type: ignore[arg-type]
    except ValueError as exc:  # EncodeError
        raise ConfigError(f"{what}: {exc}") from None


def check_max_payload(max_payload: object) -> int:
    """Bytes of message blocks a packet may carry: 3..(MAX_DATAGRAM - header)."""
    limit = MAX_DATAGRAM - HEADER_SIZE
    if not _is_int(max_payload):
        raise ConfigError(f"max_payload {max_payload!r} must be an int")
    if not 3 <= max_payload <= limit:  # type: ignore[operator]
        raise ConfigError(f"max_payload {max_payload} must be 3..{limit} bytes")
    return max_payload  # type: ignore[return-value]
