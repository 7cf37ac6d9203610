""":class:`ClientBase`: what the blocking and the asyncio client are made of before any I/O.

The one constructor of both clients (every setting checked by
:func:`~moldudp64._client.options.make_options`), their consumer side (policy, cursor,
records), their counters and :class:`~moldudp64._client.backlog.Backlog`, and the checks
both make before opening sockets or taking a request. The I/O layers add their own state
in :meth:`ClientBase._setup`.
"""

from __future__ import annotations

import logging
import socket
from collections.abc import Iterable, Sequence
from typing import Any

from ..events import Address, Source
from ..exceptions import ClientClosed, ConfigError, MoldUDP64Error
from ..net import DEFAULT_RCVBUF
from ..receiver import ReceiverCore
from ..wire import RetransmissionPacket
from .backlog import Backlog
from .consumer import BatchCursor, ClientRecords, ClientStats, EventHandler, EventPolicy
from .options import DEFAULT_MAX_BACKLOG, as_address, make_options

__all__ = ["ClientBase", "LineSockets"]

#: A client's downstream sockets, each with the line it carries.
LineSockets = list[tuple[socket.socket, Source]]


class ClientBase(ClientRecords):
    """Settings, consumer side, counters and back-pressure shared by both clients.

    Subclasses name their logger in ``_log`` (loss is logged there, once per range) and
    set up their own state in :meth:`_setup`; a client with settings of its own spells
    them out in its ``__init__`` (so ``help()`` shows them) and hands them to ``_setup``.
    """

    _log = logging.getLogger(__name__)

    def __init__(
        self,
        multicast_addr: Address | str,
        interface_addr: str = "0.0.0.0",
        rerequest_server_addrs: Iterable[Address | str] = (),
        expected_session_ident: str | None = None,
        expected_seq_num: int | None = None,
        max_rerequest_retries: int = 100,
        *,
        line_b_addr: Address | str | None = None,
        rcvbuf: int | None = DEFAULT_RCVBUF,
        reuse: bool = True,
        request_timeout: float | None = None,
        stale_after: float | None = None,
        max_backlog: int = DEFAULT_MAX_BACKLOG,
        follow_session_changes: bool = True,
        stop_at_end_of_session: bool = True,
        on_event: EventHandler | None = None,
        strict: bool = False,
        receiver_options: dict[str, Any] | None = None,
        request_delay: float | None = None,
    ) -> None:
        self.options = make_options(
            multicast_addr,
            interface_addr,
            rerequest_server_addrs,
            expected_session_ident,
            expected_seq_num,
            max_rerequest_retries,
            line_b_addr=line_b_addr,
            rcvbuf=rcvbuf,
            reuse=reuse,
            max_backlog=max_backlog,
            request_timeout=request_timeout,
            stale_after=stale_after,
            follow_session_changes=follow_session_changes,
            stop_at_end_of_session=stop_at_end_of_session,
            strict=strict,
            receiver_options=receiver_options,
            request_delay=request_delay,
        )
        self._policy = EventPolicy(
            on_event, self.options.strict, self.options.stop_at_end_of_session, self._log
        )
        self._cursor = BatchCursor(self._policy)
        self._core: Any = None
        self._raw = False
        self._started = False
        self._closing = False
        self._rereq_addr: Address | None = None
        self._backlog = Backlog(self.options.max_backlog)  # and the kernel drops
        self._n_datagrams = 0
        self._n_recv_errors = 0
        self._n_sent = 0
        self._n_send_errors = 0
        self._n_internal = 0
        self._setup()

    def _setup(self) -> None:
        """The I/O layer's own state (a subclass's settings are already on ``self``)."""

    @property
    def stats(self) -> ClientStats:
        """A snapshot of the counters (client's and core's)."""
        return ClientStats(
            datagrams_received=self._n_datagrams,
            recv_errors=self._n_recv_errors,
            requests_sent=self._n_sent,
            send_errors=self._n_send_errors,
            kernel_drops=self._backlog.kernel_drops,
            backlog_pauses=self._backlog.pauses,
            internal_errors=self._n_internal,
            receiver=None if self._core is None else self._core.stats,
            backlog=self._backlog.level,
        )

    def _check_unopened(self) -> None:
        if self._closing:
            raise ClientClosed("the client is closed")
        if self._started:
            raise MoldUDP64Error("the client is already started")

    def _given_sockets(
        self,
        downstream: socket.socket | Sequence[socket.socket],
        rereq: socket.socket,
        servers: Sequence[Address] | None,
    ) -> tuple[LineSockets, socket.socket, list[Address] | None]:
        """Check sockets the caller opened: ``(lines, rereq, servers)`` to launch with."""
        self._check_unopened()
        socks = [downstream] if isinstance(downstream, socket.socket) else list(downstream)
        if not 1 <= len(socks) <= 2:
            raise ConfigError("downstream must be one socket or [line_a, line_b]")
        server_list = (
            None if servers is None else [as_address(s, "re-request server") for s in servers]
        )
        for sock in [*socks, rereq]:
            sock.setblocking(False)
        lines = list(zip(socks, (Source.LINE_A, Source.LINE_B), strict=False))
        return lines, rereq, server_list

    def _start_core(self, raw: bool, servers: Sequence[Address] | None, rereq: Address) -> None:
        """The receiver core for this run (``raw``: low level); answers come to ``rereq``."""
        self._raw = raw
        self._core = ReceiverCore(self.options.receiver_config(raw=raw, servers=servers))
        self._rereq_addr = (str(rereq[0]), int(rereq[1]))

    def _check_request(self, req: object) -> None:
        """A low-level request must be one, fit on the wire, and find the client open."""
        if not isinstance(req, RetransmissionPacket):
            raise TypeError(f"expected a RetransmissionRequest, got {type(req).__name__}")
        req.build()  # refuse what cannot go on the wire (EncodeError) here, not later
        if self._closing:
            raise ClientClosed("the client is closed")
