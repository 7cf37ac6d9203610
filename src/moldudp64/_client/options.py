"""Client settings: :class:`ClientOptions`, checked by :func:`make_options` for both clients."""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, fields
from typing import Any

from ..events import Address
from ..exceptions import ConfigError, EncodeError, MoldUDP64Error
from ..net import (
    DEFAULT_RCVBUF,
    check_interface_addr,
    check_multicast_addr,
    format_address,
    parse_address,
)
from ..receiver import ReceiverConfig
from ..wire import encode_session

__all__ = [
    "AB_REQUEST_DELAY",
    "DEFAULT_MAX_BACKLOG",
    "DROP_POLL_INTERVAL",
    "HOT_STREAK",
    "READ_BATCH",
    "ClientOptions",
    "as_address",
    "make_options",
]

#: Default bound on messages (plus other events) queued between receiver thread and
#: consumer: about 40 MB of 36-byte messages; past it the kernel buffer takes the burst.
DEFAULT_MAX_BACKLOG = 500_000
#: Most datagrams read from one socket per wake-up before timers and flushing run.
READ_BATCH = 256
#: Most reads in a row without polling, while every read fills a whole batch.
HOT_STREAK = 8
#: Seconds between reads of the kernel's drop counters while the feed flows.
DROP_POLL_INTERVAL = 1.0
#: Default ``request_delay`` when a B line is configured: the arbitration window a new gap
#: waits for the other line before it is requested. A and B copies of a packet normally
#: arrive well under a millisecond apart; 5 ms covers a slow path at 5 ms of added
#: latency for what both lines really lost (request timeouts are ten times that).
AB_REQUEST_DELAY = 0.005


@dataclass(frozen=True, slots=True)
class ClientOptions:
    """Validated client settings shared by ``MoldUDP64`` and ``AsyncMoldUDP64``."""

    multicast_addr: Address
    interface_addr: str
    rerequest_server_addrs: tuple[Address, ...]
    expected_session_ident: str | None
    expected_seq_num: int | None
    max_rerequest_retries: int
    line_b_addr: Address | None
    rcvbuf: int | None
    reuse: bool
    max_backlog: int
    follow_session_changes: bool
    stop_at_end_of_session: bool
    strict: bool
    receiver_options: dict[str, Any]

    def receiver_config(
        self, *, raw: bool, servers: Sequence[Address] | None = None
    ) -> ReceiverConfig:
        """The :class:`~moldudp64.receiver.ReceiverConfig` these options stand for."""
        kwargs: dict[str, Any] = {
            "expected_session_ident": self.expected_session_ident,
            "expected_seq_num": self.expected_seq_num,
            "rerequest_server_addrs": list(
                self.rerequest_server_addrs if servers is None else servers
            ),
            "max_rerequest_retries": self.max_rerequest_retries,
            "raw": raw,
            "follow_session_changes": self.follow_session_changes,
        }
        kwargs.update(self.receiver_options)
        try:
            return ReceiverConfig(**kwargs)
        except (TypeError, ValueError) as exc:
            if isinstance(exc, MoldUDP64Error):
                raise
            raise ConfigError(f"bad receiver option: {exc}") from None


def as_address(value: object, what: str) -> Address:
    """``(host, port)`` or ``"host:port"`` as a checked address (ConfigError otherwise)."""
    if isinstance(value, str):
        return parse_address(value, what)
    if isinstance(value, tuple) and len(value) == 2 and isinstance(value[0], str):
        port = value[1]
        if not isinstance(port, int) or isinstance(port, bool):
            raise ConfigError(f"{what} {value!r}: port must be an integer")
        return parse_address(f"{value[0]}:{port}", what)
    raise ConfigError(f"{what} {value!r} must be (host, port) or 'host:port'")


def _as_group(value: object, what: str) -> Address:
    if isinstance(value, str):
        host, sep, port = value.rpartition(":")
        if not sep or not port.isdigit():
            raise ConfigError(f"{what} {value!r} is not GROUP:PORT")
        value = (host, int(port))
    return check_multicast_addr(value, what)


def _positive_int(value: object, what: str, *, allow_none: bool = False) -> int | None:
    if value is None and allow_none:
        return None
    if not isinstance(value, int) or isinstance(value, bool) or value < 1:
        raise ConfigError(f"{what} {value!r} must be a positive integer")
    return value


def make_options(
    multicast_addr: object,
    interface_addr: object = "0.0.0.0",
    rerequest_server_addrs: Iterable[object] = (),
    expected_session_ident: object = None,
    expected_seq_num: object = None,
    max_rerequest_retries: object = 100,
    *,
    line_b_addr: object = None,
    rcvbuf: object = DEFAULT_RCVBUF,
    reuse: bool = True,
    max_backlog: object = DEFAULT_MAX_BACKLOG,
    request_timeout: object = None,
    stale_after: object = None,
    follow_session_changes: bool = True,
    stop_at_end_of_session: bool = True,
    strict: bool = False,
    receiver_options: dict[str, Any] | None = None,
    request_delay: object = None,
) -> ClientOptions:
    """Check every client setting and raise :class:`ConfigError` naming the first bad one.

    Runs before any socket is opened (the interface check binds a throw-away probe).
    ``request_delay`` None means the core's default (no delay), or
    :data:`AB_REQUEST_DELAY` when a B line is configured.
    """
    group = _as_group(multicast_addr, "multicast address")
    line_b = None if line_b_addr is None else _as_group(line_b_addr, "line B address")
    if line_b is not None and line_b == group:
        raise ConfigError(f"line B address {format_address(line_b)} is the same as line A")
    iface = check_interface_addr(interface_addr)
    if isinstance(rerequest_server_addrs, str) or (
        isinstance(rerequest_server_addrs, tuple)
        and len(rerequest_server_addrs) == 2
        and isinstance(rerequest_server_addrs[1], int)
    ):
        raise ConfigError(
            f"rerequest_server_addrs {rerequest_server_addrs!r} must be a list of addresses"
        )
    servers = tuple(as_address(s, "re-request server") for s in rerequest_server_addrs)
    if len(set(servers)) != len(servers):
        raise ConfigError(f"re-request servers listed twice: {servers}")
    session: str | None = None
    if expected_session_ident is not None:
        if not isinstance(expected_session_ident, str | bytes):
            raise ConfigError(f"expected_session_ident {expected_session_ident!r} is not text")
        try:
            raw = encode_session(expected_session_ident)
        except EncodeError as exc:
            raise ConfigError(f"expected_session_ident: {exc}") from None
        session = raw.decode("ascii")
    seq = _positive_int(expected_seq_num, "expected_seq_num", allow_none=True)
    retries = _positive_int(max_rerequest_retries, "max_rerequest_retries")
    assert retries is not None
    buf = _positive_int(rcvbuf, "rcvbuf", allow_none=True)
    backlog = _positive_int(max_backlog, "max_backlog")
    assert backlog is not None
    extra = dict(receiver_options or {})
    known = {f.name for f in fields(ReceiverConfig)}
    for name, value, aliases in (
        ("request_timeout", request_timeout, ("request_timeout", "rerequest_timeout")),
        ("stale_after", stale_after, ("stale_after", "stale_interval", "stale_timeout")),
    ):
        if value is None:
            continue
        if not isinstance(value, int | float) or isinstance(value, bool) or not value > 0:
            raise ConfigError(f"{name} {value!r} must be a positive number of seconds")
        target = next((a for a in aliases if a in known), None)
        if target is None:
            raise ConfigError(f"{name} is not supported by this receiver core")
        extra.setdefault(target, float(value))
    if request_delay is not None:
        if (
            not isinstance(request_delay, int | float)
            or isinstance(request_delay, bool)
            or not 0 <= request_delay < math.inf
        ):
            raise ConfigError(f"request_delay {request_delay!r} must be a number of seconds >= 0")
        extra.setdefault("request_delay", float(request_delay))
    elif line_b is not None:
        extra.setdefault("request_delay", AB_REQUEST_DELAY)
    unknown = sorted(set(extra) - known)
    if unknown:
        raise ConfigError(f"unknown receiver option(s): {', '.join(unknown)}")
    options = ClientOptions(
        multicast_addr=group,
        interface_addr=iface,
        rerequest_server_addrs=servers,
        expected_session_ident=session,
        expected_seq_num=seq,
        max_rerequest_retries=retries,
        line_b_addr=line_b,
        rcvbuf=buf,
        reuse=bool(reuse),
        max_backlog=backlog,
        follow_session_changes=bool(follow_session_changes),
        stop_at_end_of_session=bool(stop_at_end_of_session),
        strict=bool(strict),
        receiver_options=extra,
    )
    options.receiver_config(raw=False)  # let the core reject bad values now
    return options
