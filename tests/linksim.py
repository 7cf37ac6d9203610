"""An in-memory MoldUDP64 link on a simulated clock, for receiver tests.

A real :class:`~moldudp64.publisher.PublisherCore` (storing into a
:class:`~moldudp64.store.MemoryStore`) sends live packets over one or two lines to a
:class:`~moldudp64.receiver.ReceiverCore`; the core's requests go to real
:class:`~moldudp64.rerequest.RerequestServerCore` objects answering from the same store
(one datagram of as many whole messages as fit in 1452 bytes). Every hop drops,
duplicates, reorders and delays datagrams as configured, from one seeded generator, so a
run is reproducible. No sockets, no sleeping: time is a number this helper advances.
"""

from __future__ import annotations

import heapq
import random
from collections.abc import Iterable
from dataclasses import dataclass, field

from moldudp64.events import (
    Address,
    Event,
    MessagesDelivered,
    MessagesLost,
    SessionEnded,
    Source,
)
from moldudp64.publisher import PublisherCore
from moldudp64.receiver import ReceiverConfig, ReceiverCore
from moldudp64.rerequest import RerequestServerCore
from moldudp64.store import MemoryStore
from moldudp64.wire import build_end_of_session

CLIENT_ADDR: Address = ("127.0.0.1", 40000)


@dataclass
class Faults:
    """What one hop does to datagrams: probabilities and delays (seconds)."""

    drop: float = 0.0
    duplicate: float = 0.0
    reorder: float = 0.0
    delay: float = 0.001
    #: A reordered datagram is held back by up to this much more.
    reorder_delay: float = 0.004


@dataclass(order=True)
class _Arrival:
    at: float
    order: int
    kind: str = field(compare=False)
    data: bytes = field(compare=False)
    source: Source = field(compare=False)
    addr: Address | None = field(compare=False)


class LinkSim:
    """Publisher -> faulty lines -> receiver core -> faulty requests -> re-request servers."""

    def __init__(
        self,
        config: ReceiverConfig,
        *,
        session: str = "SESSION001",
        seed: int = 0,
        line_a: Faults | None = None,
        line_b: Faults | None = None,
        requests: Faults | None = None,
        answers: Faults | None = None,
        dead_servers: Iterable[Address] = (),
        heartbeat_interval: float | None = 0.5,
        end_of_session_duration: float = 1.0,
        max_payload: int = 1452,
        answer_payload: int = 1452,
    ) -> None:
        self.rng = random.Random(seed)
        self.now = 0.0
        self.core = ReceiverCore(config)
        self.max_payload = max_payload
        self.heartbeat_interval = heartbeat_interval
        self.end_of_session_duration = end_of_session_duration
        self.answer_payload = answer_payload
        #: Every server answers for every session published so far (by the request's session).
        self.servers: dict[Address, dict[bytes, RerequestServerCore]] = {
            addr: {} for addr in config.rerequest_server_addrs
        }
        #: What was published, per session, in the order the sessions started.
        self.sessions: dict[str, list[bytes]] = {}
        self.publishers: list[PublisherCore] = []
        self.new_session(session)
        self.dead_servers = set(dead_servers)
        self.line_a = line_a if line_a is not None else Faults()
        self.line_b = line_b
        self.request_faults = requests if requests is not None else Faults()
        self.answer_faults = answers if answers is not None else Faults()
        self.events: list[Event] = []
        self.requests_seen: list[tuple[bytes, Address]] = []
        self.live_sent = 0
        self.live_dropped = 0
        #: Live data datagrams that reached the receiver, by session.
        self.live_data_arrived: dict[str, int] = {}
        self._heap: list[_Arrival] = []
        self._order = 0

    # -- driving ------------------------------------------------------------------

    def new_session(self, session: str) -> None:
        """Start publishing a new session (the previous publisher keeps its timers)."""
        store = MemoryStore()
        publisher = PublisherCore(
            session,
            max_payload=self.max_payload,
            flush_delay=None,
            heartbeat_interval=self.heartbeat_interval,
            end_of_session_duration=self.end_of_session_duration,
            end_of_session_interval=0.1,
            store=store,
        )
        self.store = store
        self.publisher = publisher
        self.publishers.append(publisher)
        self.published: list[bytes] = []
        self.sessions[session] = self.published
        for by_session in self.servers.values():
            by_session[publisher.session_ident_raw] = RerequestServerCore(
                session, store, max_payload=self.answer_payload, rate_limit=None
            )

    def publish(self, messages: Iterable[bytes]) -> None:
        """Publish messages now and send out the packets they fill (last one flushed)."""
        msgs = list(messages)
        self.publisher.publish_many(msgs, self.now)
        self.publisher.flush(self.now)
        self.published.extend(msgs)
        self._collect()

    def end_session(self, reliable: bool = False) -> None:
        """Start the publisher's end-of-session period; ``reliable`` also sends one
        end-of-session packet past the faults (so the tail of the stream is always known)."""
        self.publisher.end_session(self.now)
        self._collect()
        if reliable:
            pub = self.publisher
            eos = build_end_of_session(pub.session_ident_raw, pub.next_seq_num)
            self.inject(eos, Source.LINE_A, delay=self.line_a.delay + self.line_a.reorder_delay)

    def inject(
        self, data: bytes, source: Source, delay: float = 0.0, addr: Address | None = None
    ) -> None:
        """Put one datagram on the way to the receiver, as-is (``addr``: its source)."""
        self._push(self.now + delay, "rx", data, source, addr)

    def run(self, duration: float) -> None:
        """Advance the clock by ``duration``, delivering and answering what falls due."""
        self.run_until(self.now + duration)

    def run_until(self, end: float) -> None:
        """Advance the clock to ``end``."""
        while True:
            at = self._next_time()
            if at is None or at > end:
                break
            self.now = max(self.now, at)
            self._step()
        self.now = max(self.now, end)

    def settle(self, limit: float = 120.0) -> None:
        """Run until the publisher is done and the receiver has nothing left to recover."""
        stop = self.now + limit
        while self.now < stop:
            if (
                not self._heap
                and all(p.get_timer() is None for p in self.publishers)
                and not self._core_busy()
            ):
                return
            at = self._next_time()
            if at is None or at > stop:
                break
            self.now = max(self.now, at)
            self._step()

    def _core_busy(self) -> bool:
        stats = self.core.stats
        return (
            stats.open_gaps > 0
            or stats.requests_in_flight > 0
            or stats.held_packets > 0
            or stats.unconfirmed_packets > 0  # an end of session waiting for confirmation
        )

    def _next_time(self) -> float | None:
        timers = [self.core.get_timer(), *(p.get_timer() for p in self.publishers)]
        times = [t for t in timers if t is not None]
        if self._heap:
            times.append(self._heap[0].at)
        return min(times) if times else None

    def _step(self) -> None:
        now = self.now
        for publisher in self.publishers:
            timer = publisher.get_timer()
            if timer is not None and timer <= now:
                publisher.handle_timer(now)
        timer = self.core.get_timer()
        if timer is not None and timer <= now:
            self.core.handle_timer(now)
            after = self.core.get_timer()
            assert after is None or after > now, f"the core's timer stays due at {now}"
        while self._heap and self._heap[0].at <= now:
            item = heapq.heappop(self._heap)
            if item.kind == "rx":
                count = int.from_bytes(item.data[18:20], "big")
                if item.source is not Source.RETRANSMISSION and 0 < count < 0xFFFF:
                    name = item.data[:10].decode().rstrip()
                    self.live_data_arrived[name] = self.live_data_arrived.get(name, 0) + 1
                self.core.receive_datagram(item.data, item.source, now, item.addr)
            else:
                assert item.addr is not None
                self._serve(item.data, item.addr)
        self._collect()

    def _collect(self) -> None:
        now = self.now
        for publisher in self.publishers:
            for packet in publisher.datagrams_to_send(now):
                self._send_live(packet)
        for request, server in self.core.datagrams_to_send(now):
            self.requests_seen.append((request, server))
            self._send(self.request_faults, "srv", request, Source.RETRANSMISSION, server)
        self.events.extend(self.core.events_received())

    def _serve(self, request: bytes, server: Address) -> None:
        if server in self.dead_servers or server not in self.servers:
            return
        core = self.servers[server].get(request[:10])
        if core is None:
            return
        answer = core.handle_request(request, CLIENT_ADDR, self.now)
        if answer is not None:
            self._send(self.answer_faults, "rx", answer, Source.RETRANSMISSION, server)

    def _send_live(self, packet: bytes) -> None:
        self.live_sent += 1
        before = len(self._heap)
        self._send(self.line_a, "rx", packet, Source.LINE_A, None)
        if self.line_b is not None:
            self._send(self.line_b, "rx", packet, Source.LINE_B, None)
        if len(self._heap) == before:
            self.live_dropped += 1

    def _send(
        self, faults: Faults, kind: str, data: bytes, source: Source, addr: Address | None
    ) -> None:
        rng = self.rng
        if rng.random() < faults.drop:
            return
        copies = 2 if rng.random() < faults.duplicate else 1
        for _ in range(copies):
            at = self.now + faults.delay
            if rng.random() < faults.reorder:
                at += rng.random() * faults.reorder_delay
            self._push(at, kind, data, source, addr)

    def _push(
        self, at: float, kind: str, data: bytes, source: Source, addr: Address | None
    ) -> None:
        self._order += 1
        heapq.heappush(self._heap, _Arrival(at, self._order, kind, data, source, addr))

    # -- checking -----------------------------------------------------------------

    def stream(
        self, session: str | None = None
    ) -> tuple[list[tuple[int, bytes]], list[tuple[int, int, str]]]:
        """The delivered ``(seq, message)`` pairs and lost ``(first, last, reason)`` ranges
        of ``session`` (default: the first), checking on the way that they tile its
        sequence space from 1 in order, and that sessions follow each other unmixed."""
        name = session if session is not None else next(iter(self.sessions))
        cursor = 1
        delivered: list[tuple[int, bytes]] = []
        lost: list[tuple[int, int, str]] = []
        order = list(self.sessions)
        last_index = -1
        for event in self.events:
            if not isinstance(event, MessagesDelivered | MessagesLost):
                continue
            index = order.index(event.session)
            assert index >= last_index, "a session came back after the next one started"
            last_index = index
            if event.session != name:
                continue
            if isinstance(event, MessagesDelivered):
                assert event.seq_num == cursor, (event.seq_num, cursor)
                assert event.messages, "an empty batch"
                delivered.extend(enumerate(event.messages, start=event.seq_num))
                cursor += len(event.messages)
            else:
                assert event.first_seq == cursor, (event.first_seq, cursor)
                assert event.last_seq >= event.first_seq
                lost.append((event.first_seq, event.last_seq, event.reason))
                cursor = event.last_seq + 1
        return delivered, lost

    def check_exact(self, session: str | None = None) -> list[tuple[int, int, str]]:
        """Assert delivered == published minus exactly the ranges reported lost (for
        ``session``, default the first); return the lost ranges."""
        name = session if session is not None else next(iter(self.sessions))
        published = self.sessions[name]
        delivered, lost = self.stream(name)
        lost_seqs = {s for first, last, _ in lost for s in range(first, last + 1)}
        expected = [
            (seq, msg) for seq, msg in enumerate(published, start=1) if seq not in lost_seqs
        ]
        assert delivered == expected
        covered = len(delivered) + len(lost_seqs)
        assert covered == len(published), (covered, len(published))
        return lost

    def session_ended(self) -> int:
        """How many SessionEnded events were emitted."""
        return sum(isinstance(e, SessionEnded) for e in self.events)


def messages(count: int, start: int = 1, size: int = 30) -> list[bytes]:
    """``count`` distinct messages of ``size`` bytes (size >= 8), numbered from ``start``."""
    return [(b"M%07d" % n).ljust(size, b".") for n in range(start, start + count)]
