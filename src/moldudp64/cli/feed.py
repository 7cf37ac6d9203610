"""What ``listen`` and ``bridge`` both need to name and read a feed: the client over a
multicast feed, and a ``nats://HOST:PORT/STREAM`` source."""

from __future__ import annotations

import argparse
import os
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

if TYPE_CHECKING:
    from ..sync.client import DatagramHook, MoldUDP64

#: listen's kernel receive buffer per line socket when root (SO_RCVBUFFORCE): 64 MiB
#: holds about 50,000 full-blast packets while the reader is busy.
LISTEN_RCVBUF = 64 * 1024 * 1024
#: listen lets datagrams gather this long (seconds) once the feed socket is readable:
#: reads of a few hundred datagrams instead of a few dozen, about half the CPU.
LISTEN_COALESCE = 0.001


def _is_root() -> bool:
    return hasattr(os, "geteuid") and os.geteuid() == 0


def feed_client(
    args: argparse.Namespace,
    on_datagram: DatagramHook | None = None,
    *,
    rcvbuf: int = LISTEN_RCVBUF,
) -> MoldUDP64:
    """The client ``listen`` (and ``bridge``) reads a feed with, from the feed options.

    Pull mode: the calling thread reads, runs the core and takes the events (no thread
    hand-offs); a large kernel buffer (``rcvbuf`` per line socket: root may force it past
    net.core.rmem_max) takes the bursts (the client is imported here: the parser imports
    this module)."""
    from ..net import DEFAULT_RCVBUF
    from ..sync.client import MoldUDP64

    return MoldUDP64(
        args.group,
        args.interface,
        list(args.request_server or []),
        args.session,
        args.start_seq,
        line_b_addr=args.line_b,
        request_delay=args.request_delay,
        rcvbuf=rcvbuf if _is_root() else DEFAULT_RCVBUF,
        receiver_thread=False,
        on_datagram=on_datagram,
        coalesce=LISTEN_COALESCE,
        receiver_options=_receiver_options(args),
    )


def _receiver_options(args: argparse.Namespace) -> dict[str, Any] | None:
    """The receiver settings the feed options give (``--end-confirm``), None for none."""
    end_confirm = getattr(args, "end_confirm", None)
    return None if end_confirm is None else {"end_confirm": end_confirm}


@dataclass(frozen=True)
class NatsSource:
    """``nats://HOST:PORT/STREAM`` as ``listen`` takes it."""

    url: str
    stream: str


def parse_nats_source(text: str) -> NatsSource:
    """``nats://[USER[:PASSWORD]@]HOST[:PORT]/STREAM`` -> NatsSource (port 4222 when not
    given); ValueError names what is wrong."""
    from ..exceptions import ConfigError
    from ..jetstream import check_stream_name

    parts = urlsplit(text)
    stream = parts.path.strip("/")
    if parts.scheme != "nats" or not parts.hostname or not stream or "/" in stream:
        raise ValueError(f"{text!r} is not nats://HOST:PORT/STREAM")
    if parts.query or parts.fragment:
        raise ValueError(f"{text!r}: nothing may follow STREAM ('?' or '#')")
    try:
        port = parts.port
    except ValueError:
        raise ValueError(f"{text!r}: bad port") from None
    if port == 0:
        raise ValueError(f"{text!r}: bad port 0")
    try:
        check_stream_name(stream)
    except ConfigError as exc:
        raise ValueError(f"{text!r}: {exc}") from None
    host = f"[{parts.hostname}]" if ":" in parts.hostname else parts.hostname
    userinfo = parts.netloc.rpartition("@")[0]
    at = f"{userinfo}@" if userinfo else ""
    return NatsSource(f"nats://{at}{host}:{port or 4222}", stream)
