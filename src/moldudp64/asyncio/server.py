"""asyncio publisher and re-request server over the protocol cores.

:class:`AsyncRerequestServer` answers request packets from a store on a datagram
endpoint; :class:`AsyncPublisher` sends a session to a multicast group (TTL 1 and
multicast loopback on by default), drives the core's timers with ``loop.call_at`` and
owns an :class:`AsyncRerequestServer` when given ``rerequest_bind``::

    async with AsyncPublisher("SESSION001", ("239.1.1.1", 30001),
                              rerequest_bind=("0.0.0.0", 30002)) as pub:
        await pub.run(messages, rate=100_000)   # ends the session at the end

The cores' ``now`` is ``loop.time()``. Everything runs in the event loop's thread, except
the reads of a store that says ``blocking_io`` (JetStream): the server's core then runs in
one worker thread, a batch at a time, so a slow store never stalls the loop.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import heapq
import logging
import math
import socket
from collections import OrderedDict, deque
from collections.abc import AsyncIterable, Callable, Iterable
from concurrent.futures import ThreadPoolExecutor
from types import TracebackType
from typing import Any

from ..events import Address
from ..exceptions import ConfigError
from ..faults import FaultInjector
from ..net import open_multicast_sender, open_unicast_socket
from ..publisher import Pacer, PublisherFront, PublisherOptions, RunResult
from ..rerequest import (
    DEFAULT_RATE_LIMIT,
    NEWCOMER_ALLOWANCE,
    REQUEST_READ_SIZE,
    IPNetwork,
    PeerTable,
    RateLimit,
    RerequestServerCore,
    RerequestStats,
)
from ..store import MessageStore
from ..wire import DEFAULT_MAX_PAYLOAD, Buffer

__all__ = ["AsyncPublisher", "AsyncRerequestServer", "RunResult"]

logger = logging.getLogger(__name__)

#: Answers queued in the transport beyond this many bytes are dropped (and counted).
_MAX_WRITE_BUFFER = 1024 * 1024
#: Requests read and answered together (the first from the transport, the rest directly).
_RECV_BATCH = 256
#: With a blocking store: the shared socket's batches go to the worker thread in chunks
#: of this many requests, so an adopted client's batch never waits behind more than one.
_WORKER_CHUNK = 16
#: With a blocking store: chunks of the shared socket waiting for the worker thread;
#: beyond, dropped unread (counted ``busy``).
_MAX_PENDING_BATCHES = 16
#: The key of new sources' first requests among the adopted clients' batches (served
#: after established clients', before the others: see rerequest.NEWCOMER_ALLOWANCE).
_NEWCOMERS: Address = ("", -1)
#: Ranks of the worker's order beyond any seniority (a loop time).
_LATER = 1e15
#: Sources of requests dropped ``busy`` remembered for the core (crowd detection).
_MAX_UNREAD_HOSTS = 4096
#: New sources' first requests waiting for the worker (the newcomers' lane), at most.
_MAX_NEWCOMER_LANE = _RECV_BATCH
#: Counters of the requests each source sent to the shared socket (two per source,
#: hashed, saturating; 256 KiB): a source's first ``NEWCOMER_ALLOWANCE`` as *received*
#: may take the newcomers' lane, whether or not the worker ever read them.
_ARRIVAL_BITS = 18
_ARRIVAL_MASK = (1 << _ARRIVAL_BITS) - 1


class _Protocol(asyncio.DatagramProtocol):
    """Forwards datagrams and flow-control signals to its owner."""

    def __init__(
        self,
        on_datagram: Callable[[bytes, Address], None] | None,
        on_error: Callable[[Exception], None],
    ) -> None:
        self.on_datagram = on_datagram
        self.on_error = on_error
        self.writable = asyncio.Event()
        self.writable.set()

    def datagram_received(self, data: bytes, addr: Any) -> None:
        if self.on_datagram is not None:
            self.on_datagram(data, (str(addr[0]), int(addr[1])))

    def error_received(self, exc: Exception) -> None:
        self.on_error(exc)

    def pause_writing(self) -> None:
        self.writable.clear()

    def resume_writing(self) -> None:
        self.writable.set()


class AsyncRerequestServer:
    """Answers MoldUDP64 request packets from ``store`` on a datagram endpoint.

    Make one with ``await AsyncRerequestServer.create(session, store, bind)`` (or
    ``async with``); ``close()`` stops it. Options are those of
    :class:`~moldudp64.rerequest.RerequestServerCore`; ``faults`` applies seeded drop /
    duplicate / reorder to the answers.
    """

    def __init__(
        self,
        session: str | bytes,
        store: MessageStore,
        *,
        max_payload: int = DEFAULT_MAX_PAYLOAD,
        rate_limit: RateLimit | None = DEFAULT_RATE_LIMIT,
        allow: Iterable[IPNetwork | str] | None = None,
        faults: FaultInjector | None = None,
    ) -> None:
        self.core = RerequestServerCore(
            session, store, max_payload=max_payload, rate_limit=rate_limit, allow=allow
        )
        self.faults = faults
        self._transport: asyncio.DatagramTransport | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._send_errors = 0
        self._closed = False
        self._timer: asyncio.TimerHandle | None = None
        self._sock: socket.socket | None = None
        self._peers: PeerTable[socket.socket] = PeerTable()
        # A store that may block (blocking_io): the core runs in one worker thread; batches
        # (None: the timer's turn) wait for it in _pending, drained by the _worker task.
        self._executor: ThreadPoolExecutor | None = None
        if getattr(store, "blocking_io", False):
            self._executor = ThreadPoolExecutor(1, thread_name_prefix="moldudp64-store")
        self._pending: deque[list[tuple[bytes, Address]]] = deque()  # the shared socket's
        #: Adopted clients' batches and the timer's turns (None), a heap by seniority (the
        #: timer, then the longest adopted client first): the worker takes these first.
        self._pending_first: list[tuple[float, int, Address | None]] = []
        self._pending_count = 0
        #: The batch waiting in _pending_first for each adopted client (one at most).
        self._peer_batches: dict[Address, list[tuple[bytes, Address]]] = {}
        #: The newcomers' lane: new sources' first requests by source (round robin), and
        #: how many it holds; a source that sent more than its allowance leaves it.
        self._lane: OrderedDict[str, list[tuple[bytes, Address]]] = OrderedDict()
        self._lane_items = 0
        self._arrivals: bytearray | None = None
        #: Whether the adopted client whose batch is being queued is still within its
        #: first requests as received (see _rank).
        self._newcomer_peer = False
        self._timer_pending = False
        #: Sources of datagrams dropped ``busy``, told to the core with the next batch.
        self._unread_hosts: set[str] = set()
        self._busy = 0  # request datagrams dropped unread: too many batches waiting
        self._shed = 0  # request datagrams of benched sources dropped before the worker
        self._worker: asyncio.Task[None] | None = None

    @classmethod
    async def create(
        cls,
        session: str | bytes,
        store: MessageStore,
        bind: Address = ("127.0.0.1", 0),
        *,
        rcvbuf: int | None = 4 * 1024 * 1024,
        sock: socket.socket | None = None,
        **options: Any,
    ) -> AsyncRerequestServer:
        """Open the socket on ``bind`` (or use ``sock``) and start serving."""
        server = cls(session, store, **options)
        await server.start(bind, rcvbuf=rcvbuf, sock=sock)
        return server

    async def start(
        self,
        bind: Address = ("127.0.0.1", 0),
        *,
        rcvbuf: int | None = 4 * 1024 * 1024,
        sock: socket.socket | None = None,
    ) -> None:
        """Open the socket and start serving (idempotent)."""
        if self._closed:
            raise ConfigError("the re-request server is closed")
        if self._transport is not None:
            return
        self._loop = asyncio.get_running_loop()
        if sock is None:
            sock = open_unicast_socket(bind, rcvbuf=rcvbuf)
        transport, _ = await self._loop.create_datagram_endpoint(
            lambda: _Protocol(self._on_request, self._on_error), sock=sock
        )
        self._transport = transport
        self._sock = sock
        # Lets a known client's own connected socket share the port (see _adopt_peer).
        with contextlib.suppress(OSError):
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)

    @property
    def address(self) -> Address:
        """The ``(host, port)`` the server listens on."""
        if self._transport is None:
            raise ConfigError("the re-request server is not started")
        host, port = self._transport.get_extra_info("sockname")[:2]
        return (str(host), int(port))

    @property
    def stats(self) -> RerequestStats:
        """The core's counts: answers, bytes, refusals by reason (``busy``: dropped unread
        while too many batches waited for a blocking store)."""
        stats = self.core.stats
        if not self._busy and not self._shed:
            return stats
        refused = dict(stats.refused)
        refused["busy"] = refused.get("busy", 0) + self._busy
        refused["rate_limited"] = refused.get("rate_limited", 0) + self._shed
        extra = self._busy + self._shed
        return dataclasses.replace(stats, requests=stats.requests + extra, refused=refused)

    @property
    def send_errors(self) -> int:
        """Answers not sent: socket errors, or dropped while 1 MiB was already queued."""
        return self._send_errors

    def _on_error(self, exc: Exception) -> None:
        self._send_errors += 1
        logger.debug("re-request server socket error: %s", exc)

    def _on_request(self, data: bytes, addr: Address) -> None:
        """One datagram from the transport: read what else is waiting on the socket (a
        batch, so the core sheds a flood before doing work) and answer it all."""
        assert self._loop is not None and self._transport is not None
        batch = [(data, addr)]
        sock = self._sock
        if sock is not None:
            recvfrom = sock.recvfrom
            for _ in range(_RECV_BATCH - 1):
                try:
                    more, source = recvfrom(REQUEST_READ_SIZE)
                except (BlockingIOError, InterruptedError):
                    break
                except OSError as exc:  # e.g. an ICMP error reported on a later call
                    self._on_error(exc)
                    continue
                batch.append((more, (str(source[0]), int(source[1]))))
        self._answer_batch(batch)

    def _answer_batch(
        self, batch: list[tuple[bytes, Address]], peer: Address | None = None
    ) -> None:
        """Answer ``batch``, read from ``peer``'s own socket or (None) the shared one."""
        assert self._loop is not None
        if self._executor is not None:
            if peer is not None:
                core = self.core
                if not core.established(peer[0]):  # a flood's adopted source: shed here too
                    now, benched = self._loop.time(), core.benched
                    kept = [item for item in batch if not benched(item[1][0], now)]
                    self._shed += len(batch) - len(kept)
                    batch = kept
                if batch:
                    self._newcomer_peer = self._arrived(peer[0], len(batch)) < NEWCOMER_ALLOWANCE
                    self._offload(batch, peer)
            else:
                # Shed the flood's benched sources here, before they take the worker's
                # queue (a read of the core's bench: a dict look-up, safe across threads).
                batch = self._sort_shared(batch)
                for i in range(0, len(batch), _WORKER_CHUNK):
                    self._offload(batch[i : i + _WORKER_CHUNK])
            return
        core = self.core
        waiting = core.waiting
        for answer, to in core.handle_requests(batch, self._loop.time()):
            self._send_answer(answer, to)
        if core.waiting != waiting:  # some wait for budget: the timer may have to be sooner
            self._rearm()

    def _sort_shared(
        self, batch: list[tuple[bytes, Address]]
    ) -> list[tuple[bytes, Address]]:
        """With a blocking store, a batch of the shared socket before the worker sees it:
        benched sources' requests shed (a read of the core's bench: a dict look-up, safe
        across threads), new sources' first requests into the newcomers' lane (ahead of
        the rest, as a client's own); the rest, for the shared socket's queue.

        A source's first ``NEWCOMER_ALLOWANCE`` requests *as received* count, not as
        the core read them: a flood's sources whose requests never reached the core
        (dropped ``busy``) would else stay newcomers for ever and fill the lane."""
        assert self._loop is not None
        now, core = self._loop.time(), self.core
        benched, newcomer = core.benched, core.newcomer
        arrived = self._arrived
        lane = self._lane
        rest: list[tuple[bytes, Address]] = []
        joined = False
        for item in batch:
            host = item[1][0]
            if benched(host, now):
                self._shed += 1
                continue
            sent = arrived(host, 1)
            if sent < NEWCOMER_ALLOWANCE and newcomer(host, now):
                if self._lane_items >= _MAX_NEWCOMER_LANE:
                    self._drop_busy([item])
                    continue
                queued = lane.get(host)
                if queued is None:
                    lane[host] = [item]
                else:
                    queued.append(item)
                self._lane_items += 1
                joined = True
                continue
            if sent == NEWCOMER_ALLOWANCE:  # past its allowance: it leaves the lane
                left = lane.pop(host, None)
                if left is not None:
                    self._lane_items -= len(left)
                    rest.extend(left)
            rest.append(item)
        if joined and _NEWCOMERS not in self._peer_batches:
            self._peer_batches[_NEWCOMERS] = []  # a marker: the chunks come from the lane
            self._pending_count += 1
            heapq.heappush(self._pending_first, (_LATER, self._pending_count, _NEWCOMERS))
            self._start_worker()
        return rest

    def _arrived(self, host: str, count: int) -> int:
        """Count ``count`` requests received from ``host``; those it sent before (at most
        255: the counters saturate)."""
        table = self._arrivals
        if table is None:
            table = self._arrivals = bytearray(1 << _ARRIVAL_BITS)
        h = hash(host)
        i, j = h & _ARRIVAL_MASK, (h >> _ARRIVAL_BITS) & _ARRIVAL_MASK
        sent = min(table[i], table[j])
        if sent < 255:
            table[i] = min(255, table[i] + count)
            table[j] = min(255, table[j] + count)
        return sent

    def _lane_chunk(self) -> list[tuple[bytes, Address]]:
        """Up to ``_WORKER_CHUNK`` of the newcomers' lane, one a source in turn."""
        lane = self._lane
        chunk: list[tuple[bytes, Address]] = []
        while lane and len(chunk) < _WORKER_CHUNK:
            host, queued = next(iter(lane.items()))
            chunk.append(queued.pop(0))
            if queued:
                lane.move_to_end(host)
            else:
                del lane[host]
        self._lane_items -= len(chunk)
        return chunk

    def _on_peer_readable(self, peer: Address) -> None:
        """A known client's own socket is readable: one batch from it."""
        sock = self._peers.get(peer)
        if sock is None or self._closed:
            return
        batch: list[tuple[bytes, Address]] = []
        # recvfrom, not recv: a datagram from anyone may have landed here between the
        # socket's bind() and its connect(); it is answered as from whoever sent it.
        recvfrom = sock.recvfrom
        for _ in range(_RECV_BATCH):
            try:
                data, source = recvfrom(REQUEST_READ_SIZE)
                batch.append((data, (str(source[0]), int(source[1]))))
            except (BlockingIOError, InterruptedError):
                break
            except OSError as exc:  # the peer's port is closed (ICMP): forget it
                logger.debug("re-request peer %s:%s: %s", peer[0], peer[1], exc)
                self._drop_peer(peer)
                break
        self._peers.touch(peer, self._loop.time() if self._loop else 0.0)
        if batch:
            self._answer_batch(batch, peer)

    def _send_answer(self, answer: bytes, addr: Address) -> None:
        if self.faults is None:
            self._send(answer, addr)
        else:
            for out, to in self.faults.process_to(answer, addr):
                self._send(out, to)
        if self._peers.answered(addr):
            self._adopt_peer(addr)

    def _adopt_peer(self, addr: Address) -> None:
        """Give a client that got answers its own connected socket on the server's port,
        read with ``loop.add_reader``: the kernel then queues its requests apart, so a
        flood that overflows the server's socket costs known clients nothing."""
        loop, main = self._loop, self._sock
        if loop is None or main is None or self._closed:
            return
        self._close_idle_peers()
        if self._peers.full:
            return  # every adopted client is active: a flood cannot push one out
        if not self._peers.may_adopt(loop.time()):
            return  # a later answer adopts it
        sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        try:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            sock.bind(main.getsockname())
            sock.connect(addr)
            sock.setblocking(False)
            loop.add_reader(sock.fileno(), self._on_peer_readable, addr)
        except (OSError, ValueError, NotImplementedError) as exc:  # still served, not apart
            logger.debug("no own socket for re-request peer %s:%s: %s", addr[0], addr[1], exc)
            sock.close()
            return
        self._peers.add(addr, sock, loop.time())

    def _drop_peer(self, addr: Address) -> None:
        sock = self._peers.pop(addr)
        if sock is not None:
            if self._loop is not None:
                with contextlib.suppress(OSError, ValueError):
                    self._loop.remove_reader(sock.fileno())
            sock.close()

    def _close_idle_peers(self) -> None:
        if self._loop is None:
            return
        for addr in self._peers.idle(self._loop.time()):
            self._drop_peer(addr)

    def _rearm(self) -> None:
        """Arm one ``call_at`` for the core's next waiting answer, if any."""
        assert self._loop is not None
        when = self.core.get_timer()
        timer = self._timer
        if timer is not None:
            if when is not None and timer.when() <= when:
                return
            timer.cancel()
            self._timer = None
        if when is not None and not self._closed:
            self._timer = self._loop.call_at(when, self._on_timer)

    def _offload(
        self, batch: list[tuple[bytes, Address]] | None, peer: Address | None = None
    ) -> None:
        """Queue ``batch`` (None: answers now due) for the worker thread: the timer's turn
        and adopted clients' batches (from ``peer``'s socket) first, longest adopted first,
        then the shared socket's; a batch beyond ``_MAX_PENDING_BATCHES`` waiting in its
        queue is dropped and counted ``busy``."""
        if batch is None:
            if self._timer_pending:
                return
            self._timer_pending = True
            self._pending_count += 1
            heapq.heappush(self._pending_first, (-math.inf, self._pending_count, None))
        elif peer is not None:
            waiting = self._peer_batches.get(peer)
            if waiting is not None:  # one batch a client: this one joins it
                room = _RECV_BATCH - len(waiting)
                waiting.extend(batch[:room])
                if len(batch) > room:
                    self._drop_busy(batch[room:])
            else:
                self._peer_batches[peer] = list(batch)
                self._pending_count += 1
                rank = self._rank(peer)
                heapq.heappush(self._pending_first, (rank, self._pending_count, peer))
        elif len(self._pending) >= _MAX_PENDING_BATCHES:
            self._drop_busy(batch)
            return
        else:
            self._pending.append(batch)
        self._start_worker()

    def _start_worker(self) -> None:
        if self._worker is None or self._worker.done():
            assert self._loop is not None
            self._worker = self._loop.create_task(self._work())

    def _drop_busy(self, batch: list[tuple[bytes, Address]]) -> None:
        """Drop ``batch`` unread (counted ``busy``); its sources are told to the core."""
        self._busy += len(batch)  # not the core's counts: the worker thread owns those
        unread = self._unread_hosts
        if len(unread) < _MAX_UNREAD_HOSTS:
            unread.update(addr[0] for _, addr in batch)

    def _rank(self, peer: Address) -> float:
        """The worker's order (lowest first) for a batch of ``peer`` (an adopted client,
        or _NEWCOMERS): established sources by seniority, then new sources' first
        requests, then the other adopted clients by seniority."""
        core, now = self.core, self._loop.time() if self._loop is not None else 0.0
        if peer == _NEWCOMERS or (self._newcomer_peer and core.newcomer(peer[0], now)):
            return _LATER
        since = self._peers.since(peer)
        return since if core.established(peer[0]) else _LATER + 1.0 + since

    async def _work(self) -> None:
        """Run the queued batches through the core in the worker thread, one at a time,
        and send their answers from the loop."""
        loop, executor, core = self._loop, self._executor, self.core
        assert loop is not None and executor is not None
        pending, first = self._pending, self._pending_first
        while (pending or first) and not self._closed:
            batch: list[tuple[bytes, Address]] | None
            if first:
                rank, _, peer = heapq.heappop(first)
                if peer is None:
                    self._timer_pending = False
                    batch = None
                elif peer == _NEWCOMERS:
                    batch = self._lane_chunk()
                    if self._lane:  # behind those of its rank queued meanwhile
                        self._pending_count += 1
                        heapq.heappush(first, (rank, self._pending_count, peer))
                    else:
                        del self._peer_batches[peer]
                    if not batch:
                        continue
                else:
                    batch = self._peer_batches.pop(peer)
                    if len(batch) > _WORKER_CHUNK:  # the rest after the next in rank
                        self._peer_batches[peer] = batch[_WORKER_CHUNK:]
                        self._pending_count += 1  # round robin among those of its rank
                        heapq.heappush(first, (rank, self._pending_count, peer))
                        batch = batch[:_WORKER_CHUNK]
            else:
                batch = pending.popleft()
            if self._unread_hosts:
                unread, self._unread_hosts = self._unread_hosts, set()
                await loop.run_in_executor(executor, core.note_unread, unread, loop.time())
            if batch is None:
                answers = await loop.run_in_executor(executor, core.answers_due, loop.time())
            else:
                answers = await loop.run_in_executor(
                    executor, core.handle_requests, batch, loop.time()
                )
            if self._closed:
                return
            for answer, to in answers:
                self._send_answer(answer, to)
            self._rearm()  # the core is idle here: the worker thread waits for the next

    def _on_timer(self) -> None:
        self._timer = None
        if self._closed or self._loop is None or self._transport is None:
            return
        if self._executor is not None:
            self._offload(None)
            return
        for answer, addr in self.core.answers_due(self._loop.time()):
            self._send_answer(answer, addr)
        self._rearm()

    def _send(self, data: bytes, addr: Address) -> None:
        assert self._transport is not None
        peer = self._peers.get(addr)
        if peer is not None:
            try:
                peer.send(data)
            except OSError as exc:  # full (counted, as below) or the client is gone
                self._send_errors += 1
                logger.debug("re-request answer to %s:%s not sent: %s", addr[0], addr[1], exc)
            return
        # Selector and proactor datagram transports have it, though typeshed does not say so.
        buffered = getattr(self._transport, "get_write_buffer_size", None)
        if buffered is not None and buffered() > _MAX_WRITE_BUFFER:
            # The kernel is not taking answers: drop (counted) rather than queue without bound.
            self._send_errors += 1
            return
        self._transport.sendto(data, addr)

    def close(self) -> None:
        """Stop serving and close the socket (idempotent)."""
        if self._closed:
            return
        self._closed = True
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        for peer in self._peers.addresses():
            self._drop_peer(peer)
        self._pending.clear()
        self._pending_first.clear()
        self._peer_batches.clear()
        self._lane.clear()
        if self._worker is not None:
            self._worker.cancel()
        if self._executor is not None:
            self._executor.shutdown(wait=False, cancel_futures=True)
        if self._transport is not None:
            if self.faults is not None:
                for out, to in self.faults.flush_to():
                    self._transport.sendto(out, to)
            self._transport.close()

    async def __aenter__(self) -> AsyncRerequestServer:
        if self._transport is None:
            await self.start()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()


class AsyncPublisher(PublisherFront):
    """Publishes one MoldUDP64 session to ``group`` from an event loop; may serve re-requests.

    Options are those of :class:`moldudp64.sync.server.Publisher`. Call ``await start()``
    (or use ``async with``) before publishing; :meth:`publish` and :meth:`publish_many`
    are plain methods that send at once (call them from the loop's thread).
    """

    rerequest_server: AsyncRerequestServer | None

    def _setup(self, options: PublisherOptions) -> None:
        self.rerequest_server = None
        if options.rerequest_bind is not None:
            assert self.store is not None
            self.rerequest_server = AsyncRerequestServer(
                options.session,
                self.store,
                max_payload=options.max_payload,
                rate_limit=options.rate_limit,
                allow=options.allow,
                faults=options.answer_faults,
            )
        self._loop: asyncio.AbstractEventLoop | None = None
        self._transport: asyncio.DatagramTransport | None = None
        self._protocol: _Protocol | None = None
        self._timer: asyncio.TimerHandle | None = None
        self._ended = asyncio.Event()
        self._stop = False
        self._closed = False

    # -- life cycle ---------------------------------------------------------------------

    async def start(self) -> AsyncPublisher:
        """Open the sockets, start the re-request server and the timers (idempotent)."""
        if self._closed:
            raise ConfigError("the publisher is closed")
        if self._transport is not None:
            return self
        loop = asyncio.get_running_loop()
        options = self.options
        sock = options.sock
        if sock is None:
            sock = open_multicast_sender(
                options.interface_addr, ttl=options.ttl, loopback=options.loopback
            )
        protocol = _Protocol(None, self._on_error)
        try:
            transport, _ = await loop.create_datagram_endpoint(lambda: protocol, sock=sock)
            if self.rerequest_server is not None:
                assert options.rerequest_bind is not None
                await self.rerequest_server.start(options.rerequest_bind)
        except BaseException:
            sock.close()
            raise
        self._loop = loop
        self._transport = transport
        self._protocol = protocol
        self.core.start(loop.time())
        self._rearm()
        return self

    def close(self) -> None:
        """Stop timers, the re-request server and any :meth:`run`; close sockets."""
        if self._closed:
            return
        self._closed = True
        self._stop = True
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        if self.rerequest_server is not None:
            self.rerequest_server.close()
        if self._transport is not None:
            if self.faults is not None:
                for datagram in self.faults.flush():
                    self._transport.sendto(datagram, self.group)
            self._transport.close()
        self._ended.set()  # wake waiters

    def stop(self) -> None:
        """Make a running :meth:`run` return soon."""
        self._stop = True

    async def __aenter__(self) -> AsyncPublisher:
        return await self.start()

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    # -- publishing ---------------------------------------------------------------------

    def publish(self, message: Buffer) -> int:
        """Publish one message; return its sequence number."""
        loop = self._check_started()
        seq = self.core.publish(message, loop.time())
        self._send_due()
        return seq

    def publish_many(self, messages: Iterable[Buffer]) -> range:
        """Publish several messages, packed together; return their sequence numbers."""
        loop = self._check_started()
        seqs = self.core.publish_many(messages, loop.time())
        self._send_due()
        return seqs

    def flush(self) -> None:
        """Send the partial packet now."""
        loop = self._check_started()
        self.core.flush(loop.time())
        self._send_due()

    async def end_session(self, *, wait: bool = True, timeout: float | None = None) -> bool:
        """Send pending messages, then end-of-session packets for the configured period.

        With ``wait``, return when that period is over (or after ``timeout``).
        """
        loop = self._check_started()
        self.core.end_session(loop.time())
        self._send_due()
        if wait:
            return await self.wait_ended(timeout)
        return self.core.ended

    async def wait_ended(self, timeout: float | None = None) -> bool:
        """Wait until the end-of-session period is over; return whether it is."""
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._ended.wait(), timeout)
        return self.core.ended

    async def run(
        self,
        messages: Iterable[Buffer] | AsyncIterable[Buffer],
        *,
        rate: float | None = None,
        end_session: bool = True,
        progress: Callable[[int], None] | None = None,
        progress_interval: float = 0.5,
        batch_size: int = 512,
    ) -> RunResult:
        """Publish every message, paced at ``rate`` messages a second if given.

        Like :meth:`moldudp64.sync.server.Publisher.run` (the session is ended also when
        publishing fails); yields to the loop between batches so re-requests are answered
        while it runs.
        """
        pacer = Pacer(rate, batch_size, progress_interval)
        await self.start()
        loop = self._check_started()
        pacer.start(loop.time(), self.core.next_seq_num)

        async def publish_batch() -> None:
            if not self._closed:
                self.publish_many(pacer.batch)
            pacer.done(not self._closed)
            assert self._protocol is not None
            if not self._protocol.writable.is_set():
                await self._protocol.writable.wait()
            else:
                await asyncio.sleep(0)

        try:
            async for message in _aiter(messages):
                if self._stop:
                    break
                wait = pacer.add(message, loop.time)
                if wait is not None:
                    await publish_batch()
                    if wait > 0:
                        await asyncio.sleep(wait)
                if progress is not None and pacer.progress_due(loop.time()):
                    progress(pacer.count)
            if pacer.batch and not self._stop:
                await publish_batch()
            stopped = self._stop
            if not stopped and not self._closed:
                self.flush()
        except Exception:
            # A message too large, a source that fails: still end the session properly.
            if end_session and not self._closed:
                with contextlib.suppress(Exception):
                    await self.end_session(wait=True)
            raise
        if progress is not None:
            progress(pacer.count)
        if end_session and not stopped and not self._closed:
            await self.end_session(wait=True)
        return pacer.result(loop.time(), self._stop, self.core.stats)

    # -- internals ----------------------------------------------------------------------

    def _check_started(self) -> asyncio.AbstractEventLoop:
        if self._closed:
            raise ConfigError("the publisher is closed")
        if self._loop is None:
            raise ConfigError("the publisher is not started (await start() first)")
        return self._loop

    def _on_error(self, exc: Exception) -> None:
        self._send_errors += 1
        logger.debug("publisher socket error: %s", exc)

    def _send_due(self) -> None:
        assert self._loop is not None and self._transport is not None
        if self._closed:
            return
        transport = self._transport
        group = self.group
        faults = self.faults
        for datagram in self.core.datagrams_to_send(self._loop.time()):
            if faults is None:
                transport.sendto(datagram, group)
            else:
                for out in faults.process(datagram):
                    transport.sendto(out, group)
        if self.core.ended:
            self._ended.set()
        self._rearm()

    def _rearm(self) -> None:
        assert self._loop is not None
        when = self.core.get_timer()
        timer = self._timer
        if timer is not None:
            if when is not None and timer.when() == when:
                return
            timer.cancel()
            self._timer = None
        if when is not None and not self._closed:
            self._timer = self._loop.call_at(when, self._on_timer)

    def _on_timer(self) -> None:
        self._timer = None
        if self._closed or self._loop is None:
            return
        self.core.handle_timer(self._loop.time())
        self._send_due()


async def _aiter(messages: Iterable[Buffer] | AsyncIterable[Buffer]) -> AsyncIterable[Buffer]:
    if isinstance(messages, AsyncIterable):
        async for message in messages:
            yield message
    else:
        for message in messages:
            yield message
