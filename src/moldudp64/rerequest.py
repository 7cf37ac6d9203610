"""The re-request server core: answers 20-byte request packets from a message store (no I/O).

:meth:`RerequestServerCore.handle_request` takes one datagram, the address it came from
and ``now``, and returns the answer datagram to send back to that address, or None;
:meth:`~RerequestServerCore.handle_requests` does the same for a batch (the I/O layers'
path: a source already refused in the batch is shed before any other work). An answer is
an ordinary downstream packet: the server's session, the requested sequence number, and
as many of the requested messages as fit whole in ``max_payload`` bytes of blocks (never
more than requested).

Answer size rule: every answer holds at most ``max_payload`` bytes of blocks, with one
exception: when the first requested message is alone larger than ``max_payload`` it is
answered alone (up to the 65,507-byte UDP limit), because a message cannot be split and
a client could otherwise never get it. Such an answer is charged to the byte budgets
like any other. A message too large even for that is refused (``too_large``).

Requests get no answer, and are counted in :attr:`RerequestStats.refused` by reason, when:

================= =================================================================
``bad_length``    the datagram is not exactly 20 bytes
``not_allowed``   the source address is outside the allow-list
``wrong_session`` it names another session
``seq_zero``      it asks for sequence number 0
``count_zero``    it asks for 0 messages
``rate_limited``  the source is over its budget and cannot wait for it (see below)
``not_held``      the store does not hold the requested sequence number
``too_large``     the requested message does not fit in any datagram
``store_error``   the store could not be read (a file that shrank, a closed store)
================= =================================================================

Rate limiting (:class:`RateLimit`) is per source host (the port is ignored: a client may
use many) with two token buckets, requests and answer bytes, refilled continuously up to
one burst each, plus a global answer-bytes cap shared by all sources. A request over
budget is not refused at once: it waits (at most ``max_waiting`` per source, at most
``max_delay`` seconds) and is answered when the budget allows, by
:meth:`~RerequestServerCore.answers_due` at :meth:`~RerequestServerCore.get_timer`. So
a client that asks no faster than its answers arrive (one request at a time, the next
when the answer came) is slowed to its budget, never refused; a source that floods fills
its small queue and the rest is refused. Waiting sources are served round robin, so a
source within its budget keeps its share of the global cap while others flood. Every
refusal for rate is counted, and summarised in one warning line per ``log_interval``
seconds (how many, from how many sources, the busiest ones), whatever the number of
sources.

A source that got ``ESTABLISH_AFTER`` answers, never refused by the class budget
(below), the last while fewer than ``CROWD`` new sources asked in this second and the
one before and they used less than half that budget, is *established* (it has a
history of valid requests, from before any flood of many sources): it keeps its own budget
whatever the crowd, and its bucket is kept while it is quiet (up to
``ESTABLISHED_IDLE`` seconds), so a flood of other sources cannot push it out. At most
``max_sources // 4`` (at most 256) are established at once; a seat frees only when its
holder has been quiet that long. Every other source is *new*: new sources are rated as
a class, all of them together within the budget of one source (requests and bytes),
beyond which they are refused at once (a flood of many sources costs a refusal each,
not an answer). Within the class, each source's first ``NEWCOMER_ALLOWANCE`` requests
in its first ``NEWCOMER_SECONDS`` come first: they may overdraw the class budget (by
at most half a second of it), so a client that turns up during a flood from thousands
of sources that have long spent theirs is still answered at once. What a source spent
of that allowance is remembered in a fixed 256 KiB table (two hashed counters),
bounded whatever the flood.

In :meth:`~RerequestServerCore.handle_requests` (the servers' path), a new source
refused by the class budget (its allowance spent) has its requests shed unread for a
second, and a source refused over its own budget (its queue of waiting requests full)
for 20 ms: a flood then costs a dictionary look-up a datagram, and a server with a
slow store sheds it before queueing (:meth:`~RerequestServerCore.benched`).

What cannot be told apart: a client new to the server during a flood from many
sources is one of them: it has its allowance, then a share of the class budget, until
the flood stops.
"""

from __future__ import annotations

import ipaddress
import logging
import math
import struct
from collections import OrderedDict, deque
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Generic, TypeVar

from .events import Address
from .exceptions import ConfigError, MoldUDP64Error
from .store import MessageStore
from .validation import check_finite_positive, check_max_payload, check_session
from .wire import (
    DEFAULT_MAX_PAYLOAD,
    HEADER_SIZE,
    MAX_DATAGRAM,
    MAX_MESSAGE_COUNT,
    join_blocks,
)

__all__ = [
    "DEFAULT_RATE_LIMIT",
    "REFUSAL_REASONS",
    "REQUEST_READ_SIZE",
    "PeerTable",
    "RateLimit",
    "RerequestServerCore",
    "RerequestStats",
]

logger = logging.getLogger(__name__)

REFUSAL_REASONS = (
    "bad_length",
    "not_allowed",
    "wrong_session",
    "seq_zero",
    "count_zero",
    "rate_limited",
    "not_held",
    "too_large",
    "store_error",
    "busy",
)

_REQUEST = struct.Struct(">10sQH")
IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network
#: A request is 20 bytes: a server reads 21 (a longer datagram, cut, is still refused as
#: ``bad_length``); a small read buffer is a cheaper read under a flood.
REQUEST_READ_SIZE = 21
#: A :class:`PeerTable`'s per-client handle (a socket, in the I/O layers).
T = TypeVar("T")
#: Requests waiting for budget, over all sources (bounded memory whatever the flood).
_MAX_WAITING_TOTAL = 16_384
#: The host name the overflow bucket is logged under.
_DEFAULT_GLOBAL = 50_000_000.0
#: One request token, less what float rounding of a refill may leave short.
_ONE = 1.0 - 1e-6
_OVERFLOW = "(new sources while the source table is full)"
#: Answers after which a source is established (see the module's docstring).
ESTABLISH_AFTER = 4
#: Established sources at most (and at most a quarter of ``max_sources``).
MAX_ESTABLISHED = 256
#: New sources asking within a second that make a crowd: none is established meanwhile.
CROWD = 64
#: Seconds an established source may be quiet before its seat may go to another.
ESTABLISHED_IDLE = 60.0
#: Answers each new source may have ahead of the class budget (see the docstring).
NEWCOMER_ALLOWANCE = 32
#: ... and only in the first this many seconds of its bucket (a flood's sources soon lose it).
NEWCOMER_SECONDS = 2.0
#: How far newcomers' first answers may overdraw the class budget, in seconds of it.
_CLASS_DEBT_SECONDS = 0.5
#: Counters of the newcomers' allowance spent (two per source, hashed; 256 KiB).
_ALLOWANCE_BITS = 18
#: Seconds a new source refused by the class budget has its batched requests shed unread.
_BENCH_SECONDS = 1.0
#: The same for a source refused over its own budget (its queue of waiting ones full).
_OWN_BENCH_SECONDS = 0.02
#: Sources on that bench at most (beyond, it is emptied: memory bounded).
_MAX_BENCHED = 65_536
#: Hosts named in the rate-refusal summary's counts (the rest are counted, not named).
_MAX_REFUSAL_HOSTS = 4096


def _positive(value: object, name: str) -> None:
    check_finite_positive(value, f"rate limit {name}")


@dataclass(frozen=True, slots=True)
class RateLimit:
    """Per-source budgets (token buckets); ``burst_seconds`` of each rate may be used at once.

    ``requests_per_second`` and ``bytes_per_second`` bound one source host; the defaults
    (2,000 requests and 4 MB a second, about 2,700 full answers) hold any one host to a
    few percent of a 1 Gb/s link. ``global_bytes_per_second`` caps the sum over all
    sources (None: no global cap). A request over budget waits up to ``max_delay``
    seconds for it, with at most ``max_waiting`` others of its source, before it is
    refused; ``max_sources`` bounds the table of sources; refusals of one source are
    logged at most once every ``log_interval`` seconds.
    """

    requests_per_second: float = 2000.0
    bytes_per_second: float = 4_000_000.0
    burst_seconds: float = 1.0
    max_sources: int = 4096
    global_bytes_per_second: float | None = _DEFAULT_GLOBAL
    max_delay: float = 0.5
    max_waiting: int = 64
    log_interval: float = 10.0

    def __post_init__(self) -> None:
        for name in ("requests_per_second", "bytes_per_second", "burst_seconds", "log_interval"):
            _positive(getattr(self, name), name)
        if self.global_bytes_per_second is not None:
            _positive(self.global_bytes_per_second, "global_bytes_per_second")
        delay = self.max_delay
        if (
            isinstance(delay, bool)
            or not isinstance(delay, int | float)
            or not math.isfinite(delay)
            or delay < 0
        ):
            raise ConfigError(f"rate limit max_delay {delay!r} must be a finite number >= 0")
        for name in ("max_sources", "max_waiting"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int):
                raise ConfigError(f"rate limit {name} {value!r} must be an int")
        if self.max_sources < 1:
            raise ConfigError(f"rate limit max_sources {self.max_sources} must be >= 1")
        if self.max_waiting < 0:
            raise ConfigError(f"rate limit max_waiting {self.max_waiting} must be >= 0")

    @classmethod
    def per_source(
        cls, requests_per_second: float, max_payload: int = DEFAULT_MAX_PAYLOAD
    ) -> RateLimit:
        """The limit ``--rate-limit N`` sets: N requests a second per source, and the bytes
        of N full answers (``max_payload`` + 20 each); the global cap is the default one,
        or one source's byte budget when that is larger."""
        _positive(requests_per_second, "requests_per_second")
        nbytes = float(requests_per_second) * (max_payload + HEADER_SIZE)
        return cls(
            requests_per_second=float(requests_per_second),
            bytes_per_second=nbytes,
            global_bytes_per_second=max(_DEFAULT_GLOBAL, nbytes),
        )


@dataclass(frozen=True, slots=True)
class RerequestStats:
    """What a re-request server did so far (a snapshot).

    ``waited`` counts answers that waited for budget; ``waiting`` the requests waiting now.
    """

    requests: int
    answers: int
    messages: int
    bytes: int
    refused: dict[str, int] = field(default_factory=dict)
    sources: int = 0
    waited: int = 0
    waiting: int = 0

    @property
    def refused_total(self) -> int:
        """Requests that got no answer."""
        return sum(self.refused.values())


#: The rate limit a re-request server applies unless told otherwise.
DEFAULT_RATE_LIMIT = RateLimit()


class _Bucket:
    """Two token buckets of one source, its waiting requests and its refusal log state."""

    __slots__ = (
        "answered",
        "born",
        "bytes",
        "established",
        "requests",
        "seen",
        "stamp",
        "waiting",
        "window",
    )

    def __init__(self, requests: float, nbytes: float, now: float) -> None:
        self.requests = requests
        self.bytes = nbytes
        self.stamp = now
        self.seen = now  # when the source last asked
        self.born = now
        self.window = -1  # the last second (int(now)) it was counted active in
        self.answered = 0  # -1: refused by the class budget, never to be established
        self.established = False
        #: (seq_num, count, addr, deadline) of requests waiting for budget, oldest first.
        self.waiting: deque[tuple[int, int, Address, float]] = deque()

    def refill(self, now: float, limit: RateLimit) -> None:
        elapsed = now - self.stamp
        if elapsed > 0:
            burst = limit.burst_seconds
            self.requests = min(
                limit.requests_per_second * burst,
                self.requests + elapsed * limit.requests_per_second,
            )
            self.bytes = min(
                limit.bytes_per_second * burst, self.bytes + elapsed * limit.bytes_per_second
            )
            self.stamp = now

    def full(self, limit: RateLimit) -> bool:
        burst = limit.burst_seconds
        return (
            not self.waiting
            and self.requests >= limit.requests_per_second * burst
            and self.bytes >= limit.bytes_per_second * burst
        )

    def ready_at(self, limit: RateLimit) -> float:
        """When this bucket next allows an answer (``stamp`` or later)."""
        wait = 0.0
        if self.requests < 1.0:
            wait = (1.0 - self.requests) / limit.requests_per_second + 1e-9
        if self.bytes <= 0:
            wait = max(wait, -self.bytes / limit.bytes_per_second + 1e-9)
        return self.stamp + wait


class RerequestServerCore:
    """Answers MoldUDP64 request packets for one session from a :class:`MessageStore`.

    ``rate_limit`` None turns rate limiting off (only for trusted networks); ``allow``
    is an iterable of networks (``ipaddress`` objects or strings like ``"10.0.0.0/8"``)
    whose hosts may ask, None for everyone.
    """

    def __init__(
        self,
        session: str | bytes,
        store: MessageStore,
        max_payload: int = DEFAULT_MAX_PAYLOAD,
        rate_limit: RateLimit | None = DEFAULT_RATE_LIMIT,
        allow: Iterable[IPNetwork | str] | None = None,
    ) -> None:
        self._session = check_session(session)
        check_max_payload(max_payload)
        if rate_limit is not None and not isinstance(rate_limit, RateLimit):
            raise ConfigError(f"rate_limit must be a RateLimit or None, not {rate_limit!r}")
        self.store = store
        self.max_payload = max_payload
        self.rate_limit = rate_limit
        self.allow: tuple[IPNetwork, ...] | None = None
        if allow is not None:
            networks: list[IPNetwork] = []
            try:
                for net in allow:
                    networks.append(ipaddress.ip_network(net, strict=False))
            except (ValueError, TypeError) as exc:
                raise ConfigError(f"allow-list entry: {exc}") from None
            self.allow = tuple(networks)
        self._allowed_cache: OrderedDict[str, bool] = OrderedDict()
        #: New sources' buckets, least recently seen first.
        self._sources: OrderedDict[str, _Bucket] = OrderedDict()
        #: Established sources' buckets, least recently seen first.
        self._established: OrderedDict[str, _Bucket] = OrderedDict()
        #: Shared by new sources while the table is full of busy ones (never waits).
        self._overflow: _Bucket | None = None
        #: The budget of all new sources together (one source's), made at first use.
        self._class: _Bucket | None = None
        #: New sources that asked in this second and the one before (crowd detection).
        self._window = -1
        self._active_new = 0
        self._active_new_before = 0
        #: The newcomers' allowance spent, by two hashes of the host (made at first use).
        self._allowance: bytearray | None = None
        #: New sources refused by the class budget -> until when their requests are shed.
        self._benched: dict[str, float] = {}
        self._refusal_log_at: float | None = None
        self._refusals_unlogged = 0
        self._refusal_hosts: dict[str, int] = {}
        self._refusal_hosts_more = False  # more sources than _MAX_REFUSAL_HOSTS
        #: Hosts with waiting requests, in round-robin order.
        self._waiting_hosts: OrderedDict[str, _Bucket] = OrderedDict()
        self._waiting_total = 0
        self._global_bytes = 0.0
        self._global_stamp: float | None = None
        self._requests = 0
        self._answers = 0
        self._messages = 0
        self._bytes = 0
        self._waited = 0
        self._refused = dict.fromkeys(REFUSAL_REASONS, 0)
        #: The last error the store raised (requests then go unanswered, as ``store_error``).
        self.last_store_error: Exception | None = None

    @property
    def session_ident_raw(self) -> bytes:
        """The 10 session bytes this server answers for."""
        return self._session

    @property
    def waiting(self) -> int:
        """Requests waiting for budget now."""
        return self._waiting_total

    @property
    def stats(self) -> RerequestStats:
        """Counts so far (a snapshot)."""
        return RerequestStats(
            requests=self._requests,
            answers=self._answers,
            messages=self._messages,
            bytes=self._bytes,
            refused=dict(self._refused),
            sources=len(self._sources) + len(self._established),
            waited=self._waited,
            waiting=self._waiting_total,
        )

    # -- checks -------------------------------------------------------------------------

    def _is_allowed(self, host: str) -> bool:
        allow = self.allow
        if allow is None:
            return True
        cache = self._allowed_cache
        verdict = cache.get(host)
        if verdict is None:
            try:
                ip = ipaddress.ip_address(host)
            except ValueError:
                verdict = False
            else:
                verdict = any(ip in net for net in allow)
            cache[host] = verdict
            if len(cache) > 4096:
                cache.popitem(last=False)
        return verdict

    def _parse(self, data: bytes, host: str) -> tuple[int, int] | None:
        """(seq_num, count) of a valid request, or None (refusal counted)."""
        refused = self._refused
        if len(data) != HEADER_SIZE:
            refused["bad_length"] += 1
            return None
        if self.allow is not None and not self._is_allowed(host):
            refused["not_allowed"] += 1
            return None
        session, seq_num, count = _REQUEST.unpack_from(data)
        if session != self._session:
            refused["wrong_session"] += 1
            return None
        if seq_num == 0:
            refused["seq_zero"] += 1
            return None
        if count == 0:
            refused["count_zero"] += 1
            return None
        return seq_num, count

    # -- budgets ------------------------------------------------------------------------

    def _bucket(self, host: str, now: float, limit: RateLimit) -> tuple[_Bucket, bool]:
        """The bucket of ``host``, refilled to ``now``, and whether it is its own."""
        established = self._established
        bucket = established.get(host)
        if bucket is not None:
            established.move_to_end(host)
            bucket.refill(now, limit)
            bucket.seen = now
            return bucket, True
        window = self._roll_window(now)
        sources = self._sources
        bucket = sources.get(host)
        if bucket is not None:
            sources.move_to_end(host)
            bucket.refill(now, limit)
            bucket.seen = now
            if bucket.window != window:
                bucket.window = window
                self._active_new += 1
            return bucket, True
        self._active_new += 1
        burst = limit.burst_seconds
        if len(sources) + len(established) >= limit.max_sources:
            # Forget the least recently seen new source only if its bucket is full again:
            # a fresh bucket for it later then gives it nothing it did not have.
            oldest_host, oldest = next(iter(sources.items()), ("", None))
            if oldest is not None:
                oldest.refill(now, limit)
            if oldest is None or not oldest.full(limit):
                overflow = self._overflow
                if overflow is None:
                    overflow = self._overflow = _Bucket(
                        limit.requests_per_second * burst, limit.bytes_per_second * burst, now
                    )
                else:
                    overflow.refill(now, limit)
                return overflow, False
            del sources[oldest_host]
        bucket = _Bucket(limit.requests_per_second * burst, limit.bytes_per_second * burst, now)
        overflow = self._overflow
        if overflow is not None:
            # It may have spent from the overflow bucket while the table was full: it
            # starts with no more than that holds, so moving out of it gains nothing.
            overflow.refill(now, limit)
            bucket.requests = min(bucket.requests, overflow.requests)
            bucket.bytes = min(bucket.bytes, overflow.bytes)
        sources[host] = bucket
        return bucket, True

    def _roll_window(self, now: float) -> int:
        """The second ``now`` is in; a new one starts the count of active new sources."""
        window = int(now)
        if window != self._window:
            self._active_new_before = self._active_new if window == self._window + 1 else 0
            self._active_new = 0
            self._window = window
        return window

    def established(self, host: str) -> bool:
        """Whether ``host`` is an established source (read only, as :meth:`benched`)."""
        return host in self._established

    def newcomer(self, host: str, now: float) -> bool:
        """Whether ``host`` is a new source still within its first requests (see the
        module's docstring). Only reads: an I/O layer may ask from its own thread, to
        queue such requests ahead of a flood's."""
        if self.rate_limit is None or host in self._established:
            return False
        if self._allowance is None:
            return True
        bucket = self._sources.get(host)
        if bucket is not None and now - bucket.born >= NEWCOMER_SECONDS:
            return False
        _, i, j = self._allowance_slots(host)
        return min(self._allowance[i], self._allowance[j]) < NEWCOMER_ALLOWANCE

    def note_unread(self, hosts: Iterable[str], now: float) -> None:
        """Sources whose requests an I/O layer dropped unread (its queue full): counted
        among the new sources active now, so that a crowd hidden by the drops is still
        one (no source is established meanwhile)."""
        window = self._roll_window(now)
        established, sources = self._established, self._sources
        for host in hosts:
            if host in established:
                continue
            bucket = sources.get(host)
            if bucket is None:
                self._active_new += 1
            elif bucket.window != window:
                bucket.window = window
                self._active_new += 1

    def _global_refill(self, now: float, limit: RateLimit) -> None:
        rate = limit.global_bytes_per_second
        if rate is None:
            return
        cap = rate * limit.burst_seconds
        if self._global_stamp is None:
            self._global_bytes = cap
        else:
            elapsed = now - self._global_stamp
            if elapsed > 0:
                self._global_bytes = min(cap, self._global_bytes + elapsed * rate)
        self._global_stamp = now

    def _global_ready_at(self, limit: RateLimit) -> float:
        rate = limit.global_bytes_per_second
        if rate is None or self._global_bytes > 0 or self._global_stamp is None:
            return -math.inf
        return self._global_stamp - self._global_bytes / rate + 1e-9

    def _within(self, bucket: _Bucket, limit: RateLimit) -> bool:
        return (
            bucket.requests > _ONE
            and bucket.bytes > 0
            and (limit.global_bytes_per_second is None or self._global_bytes > 0)
        )

    def _class_bucket(self, now: float, limit: RateLimit) -> _Bucket:
        """The new sources' shared budget, refilled to ``now``."""
        cls = self._class
        if cls is None:
            burst = limit.burst_seconds
            cls = self._class = _Bucket(
                limit.requests_per_second * burst, limit.bytes_per_second * burst, now
            )
        else:
            cls.refill(now, limit)
        return cls

    def benched(self, host: str, now: float) -> bool:
        """Whether ``host``'s requests are shed unread now (a new source the class budget
        refused in the last second). Only reads: an I/O layer may ask from its own thread
        to drop such requests before queueing them for the core's."""
        until = self._benched.get(host)
        return until is not None and until > now

    def _allowance_slots(self, host: str) -> tuple[bytearray, int, int]:
        table = self._allowance
        if table is None:
            table = self._allowance = bytearray(1 << _ALLOWANCE_BITS)
        mask = (1 << _ALLOWANCE_BITS) - 1
        h = hash(host)
        return table, h & mask, (h >> _ALLOWANCE_BITS) & mask

    def _class_admits(
        self, host: str, bucket: _Bucket, now: float, limit: RateLimit
    ) -> tuple[_Bucket | None, bool]:
        """For a new source's request: the class bucket to charge when it may be answered
        now (else None), and whether it is one of the host's first
        ``NEWCOMER_ALLOWANCE`` requests within ``NEWCOMER_SECONDS`` of its first (which
        may overdraw the class budget)."""
        cls = self._class_bucket(now, limit)
        table, i, j = self._allowance_slots(host)
        newcomer = min(table[i], table[j]) < NEWCOMER_ALLOWANCE and (
            bucket is self._overflow or now - bucket.born < NEWCOMER_SECONDS
        )
        if newcomer:  # every request spends it, answered or not: a flood soon has none
            table[i] = min(255, table[i] + 1)
            table[j] = min(255, table[j] + 1)
        if cls.requests > _ONE and cls.bytes > 0:
            return cls, newcomer
        debt = _CLASS_DEBT_SECONDS
        if (
            newcomer
            and cls.requests > 1.0 - limit.requests_per_second * debt
            and cls.bytes > -limit.bytes_per_second * debt
        ):
            return cls, True
        return None, newcomer

    def _class_ready_at(self, limit: RateLimit) -> float:
        """When the class budget next allows an answer (-inf: not made yet)."""
        cls = self._class
        return -math.inf if cls is None else cls.ready_at(limit)

    def _note_answered(self, host: str, bucket: _Bucket, now: float, limit: RateLimit) -> None:
        """Count an answer to a new source with its own bucket; establish it at
        ``ESTABLISH_AFTER`` if a seat is free (or held by one quiet for long)."""
        if bucket.answered < 0:
            return
        bucket.answered += 1
        if bucket.answered < ESTABLISH_AFTER:
            return
        cls = self._class
        if (
            max(self._active_new, self._active_new_before) >= CROWD
            or (cls is not None
            and cls.requests < limit.requests_per_second * limit.burst_seconds / 2)
        ):
            return  # new sources are many now (a flood?): none is established meanwhile
        established = self._established
        if len(established) >= min(MAX_ESTABLISHED, limit.max_sources // 4):
            oldest_host, oldest = next(iter(established.items()), ("", None))
            if oldest is None or now - oldest.seen < ESTABLISHED_IDLE or oldest.waiting:
                return  # no seat: it stays new (and tries again at its next answer)
            del established[oldest_host]  # quiet for long: back among the new ones
            oldest.established = False
            oldest.answered = 0
            if len(self._sources) + len(established) < limit.max_sources:
                self._sources[oldest_host] = oldest
                self._sources.move_to_end(oldest_host, last=False)
        if self._sources.pop(host, None) is bucket:
            bucket.established = True
            established[host] = bucket

    def _refuse_rate(self, host: str, now: float, limit: RateLimit) -> None:
        """Count a refusal for rate; log a summary at most once per ``log_interval``."""
        self._refused["rate_limited"] += 1
        self._refusals_unlogged += 1
        hosts = self._refusal_hosts
        if host in hosts:
            hosts[host] += 1
        elif len(hosts) < _MAX_REFUSAL_HOSTS:
            hosts[host] = 1
        else:
            self._refusal_hosts_more = True
        last = self._refusal_log_at
        if last is None or now - last >= limit.log_interval:
            self.log_refusals(now)

    def log_refusals(self, now: float) -> None:
        """Log the rate refusals not reported yet, in one line (none: nothing)."""
        limit = self.rate_limit
        count = self._refusals_unlogged
        if not count or limit is None:
            return
        hosts = self._refusal_hosts
        busiest = sorted(hosts.items(), key=lambda item: -item[1])[:3]
        sources = f"{len(hosts)}{'+' if self._refusal_hosts_more else ''}"
        logger.warning(
            "re-requests refused: over the rate limit (%.0f requests, %.0f bytes a second "
            "per source; new sources together within one source's budget); %d refused "
            "since the last report, from %s source(s) (most: %s)",
            limit.requests_per_second,
            limit.bytes_per_second,
            count,
            sources,
            ", ".join(f"{h} {n}" for h, n in busiest),
        )
        self._refusal_log_at = now
        self._refusals_unlogged = 0
        self._refusal_hosts_more = False
        hosts.clear()

    # -- answers ------------------------------------------------------------------------

    def _answer(self, seq_num: int, count: int) -> bytes | None:
        """The answer from the store, or None (refusal counted); updates the counts."""
        store = self.store
        count = min(count, MAX_MESSAGE_COUNT)
        try:  # a store over the network may fail on its bounds too (JetStreamStore)
            if not store.first_seq_num <= seq_num < store.next_seq_num:
                self._refused["not_held"] += 1
                return None
            messages = store.get(seq_num, count, self.max_payload)
            if not messages:  # the first message alone is larger than max_payload
                messages = store.get(seq_num, 1, MAX_DATAGRAM - HEADER_SIZE)
        except (MoldUDP64Error, OSError) as exc:
            self._refused["store_error"] += 1
            self.last_store_error = exc
            return None
        if not messages:
            self._refused["too_large"] += 1
            return None
        answer = _REQUEST.pack(self._session, seq_num, len(messages)) + join_blocks(messages)
        self._answers += 1
        self._messages += len(messages)
        self._bytes += len(answer)
        return answer

    def _charged_answer(
        self,
        bucket: _Bucket,
        seq_num: int,
        count: int,
        limit: RateLimit,
        cls: _Bucket | None = None,
    ) -> bytes | None:
        bucket.requests -= 1.0
        if cls is not None:
            cls.requests -= 1.0
        answer = self._answer(seq_num, count)
        if answer is not None:
            size = len(answer)
            bucket.bytes -= size
            if cls is not None:
                cls.bytes -= size
            if limit.global_bytes_per_second is not None:
                self._global_bytes -= size
        return answer

    def _serve(
        self,
        host: str,
        bucket: _Bucket,
        own: bool,
        seq_num: int,
        count: int,
        now: float,
        limit: RateLimit,
    ) -> tuple[bool, bytes | None, bool]:
        """Answer a request whose source is within its own budget: (False, None, ...) when
        it is new and the class budget refuses it, else (True, the answer or None, ...);
        the last: whether it was one of a new source's first requests."""
        if bucket.established:
            return True, self._charged_answer(bucket, seq_num, count, limit), False
        cls, newcomer = self._class_admits(host, bucket, now, limit)
        if cls is None:
            if own:
                bucket.answered = -1  # one of a crowd: not to be established
            return False, None, newcomer
        answer = self._charged_answer(bucket, seq_num, count, limit, cls)
        if answer is not None and own:
            self._note_answered(host, bucket, now, limit)
        return True, answer, newcomer

    def _handle(
        self, data: bytes, addr: Address, now: float, shed: set[str] | None
    ) -> bytes | None:
        self._requests += 1
        host = addr[0]
        if shed is not None and host in shed:
            self._refused["rate_limited"] += 1
            return None
        parsed = self._parse(data, host)
        if parsed is None:
            return None
        seq_num, count = parsed
        limit = self.rate_limit
        if limit is None:
            return self._answer(seq_num, count)
        bucket, own = self._bucket(host, now, limit)
        self._global_refill(now, limit)
        if not bucket.waiting and self._within(bucket, limit):
            served, answer, newcomer = self._serve(
                host, bucket, own, seq_num, count, now, limit
            )
            if served:
                return answer
            # A new source while the class budget is spent: refused at once, and (its
            # first requests spent) its requests in batches for the next _BENCH_SECONDS
            # too (a dict look-up each).
            if shed is not None and not newcomer:
                shed.add(host)
                self._bench(host, now + _BENCH_SECONDS)
            self._refuse_rate(host if own else _OVERFLOW, now, limit)
            return None
        # Over its own budget: wait for it if the source may, else refuse.
        waiting = bucket.waiting
        if (
            own
            and len(waiting) < limit.max_waiting
            and self._waiting_total < _MAX_WAITING_TOTAL
            and self._wait_estimate(bucket, limit) - now <= limit.max_delay + 1e-6
        ):
            waiting.append((seq_num, count, addr, now + limit.max_delay))
            self._waiting_total += 1
            if host not in self._waiting_hosts:
                self._waiting_hosts[host] = bucket
            return None
        if shed is not None:
            shed.add(host)
            if own:  # its queue is full: it has its budget's worth waiting already
                self._bench(host, now + _OWN_BENCH_SECONDS)
        self._refuse_rate(host if own else _OVERFLOW, now, limit)
        return None

    def _bench(self, host: str, until: float) -> None:
        benched = self._benched
        if len(benched) >= _MAX_BENCHED:
            benched.clear()
        benched[host] = until

    def _wait_estimate(self, bucket: _Bucket, limit: RateLimit) -> float:
        """When a request joining ``bucket``'s queue could be answered, at the earliest."""
        ahead = len(bucket.waiting)  # each counted as a full answer: an upper bound
        ready = bucket.ready_at(limit) + ahead * max(
            1.0 / limit.requests_per_second,
            (self.max_payload + HEADER_SIZE) / limit.bytes_per_second,
        )
        return max(ready, self._global_ready_at(limit))

    def handle_request(self, data: bytes, addr: Address, now: float) -> bytes | None:
        """The answer to one request datagram from ``addr``, or None.

        None means refused (counted by reason) or, over budget, waiting: it then comes
        out of :meth:`answers_due`.
        """
        return self._handle(data, addr, now, None)

    def handle_requests(
        self, datagrams: Iterable[tuple[bytes, Address]], now: float
    ) -> list[tuple[bytes, Address]]:
        """Answers to a batch of ``(datagram, addr)``, with those of waiting requests now due.

        Waiting requests are served first (round robin over their sources); a source
        refused for rate in the batch has its further requests in it shed unread.
        """
        out = self.answers_due(now)
        shed: set[str] = set()
        handle = self._handle
        skipped = 0
        benched = self._benched
        for data, addr in datagrams:
            host = addr[0]
            if host in shed:  # the flood's hot path: no parsing, no bucket
                skipped += 1
                continue
            until = benched.get(host)
            if until is not None:
                if until > now:
                    skipped += 1
                    continue
                del benched[host]
            answer = handle(data, addr, now, shed)
            if answer is not None:
                out.append((answer, addr))
        if skipped:
            self._requests += skipped
            self._refused["rate_limited"] += skipped
        return out

    def answers_due(self, now: float) -> list[tuple[bytes, Address]]:
        """Answers to waiting requests whose budget has come (round robin over sources);
        those that waited ``max_delay`` in vain are refused."""
        limit = self.rate_limit
        hosts = self._waiting_hosts
        out: list[tuple[bytes, Address]] = []
        if limit is None or not hosts:
            return out
        self._global_refill(now, limit)
        progress = True
        while hosts and progress:
            progress = False
            for host in list(hosts):
                bucket = hosts[host]
                bucket.refill(now, limit)
                waiting = bucket.waiting
                while waiting and waiting[0][3] < now:  # waited in vain
                    waiting.popleft()
                    self._waiting_total -= 1
                    self._refuse_rate(host, now, limit)
                served = False
                if waiting and self._within(bucket, limit):
                    seq_num, count, addr, _ = waiting[0]
                    served, answer, _ = self._serve(
                        host, bucket, True, seq_num, count, now, limit
                    )
                    if served:
                        waiting.popleft()
                        self._waiting_total -= 1
                        if answer is not None:
                            self._waited += 1
                            out.append((answer, addr))
                        progress = True
                if not waiting:
                    del hosts[host]
                elif served:  # to the back of the round: the others' turn first
                    hosts.move_to_end(host)
        return out

    def get_timer(self) -> float | None:
        """When :meth:`answers_due` has work next, or None (no request waiting)."""
        limit = self.rate_limit
        if limit is None or not self._waiting_hosts:
            return None
        glob = self._global_ready_at(limit)
        cls = self._class_ready_at(limit)
        when = math.inf
        for bucket in self._waiting_hosts.values():
            ready = max(bucket.ready_at(limit), glob)
            if not bucket.established:
                ready = max(ready, cls)
            when = min(when, ready, bucket.waiting[0][3])
        return when

    def __repr__(self) -> str:
        return (
            f"RerequestServerCore(session={self._session.decode('latin-1')!r}, "
            f"store={self.store!r}, max_payload={self.max_payload})"
        )


class PeerTable(Generic[T]):
    """Which clients of a re-request server get their own connected socket (no I/O).

    A server's I/O layer keeps one ``handle`` (its socket) per adopted client here. A
    client is adopted at its second answer (one-off, perhaps spoofed, sources never are),
    at most ``adopt_rate`` a second after a burst of as many (socket churn costs CPU);
    at most ``max_peers`` are kept; one that sent nothing for ``idle_after`` seconds is
    due to be dropped (:meth:`idle`). The servers drop only those: while the table is
    full of active clients, a newcomer is not adopted (a flood of sources answered twice
    cannot push out a known client; the newcomer is served on the shared socket).
    """

    __slots__ = (
        "_answered",
        "_last_adopt",
        "_peers",
        "_seen",
        "_since",
        "_tokens",
        "adopt_rate",
        "idle_after",
        "max_peers",
    )

    def __init__(
        self, max_peers: int = 256, idle_after: float = 30.0, adopt_rate: float = 64.0
    ) -> None:
        self.max_peers = max_peers
        self.idle_after = idle_after
        self.adopt_rate = adopt_rate
        self._peers: OrderedDict[Address, T] = OrderedDict()
        self._seen: dict[Address, float] = {}
        self._since: dict[Address, float] = {}  # adopted at
        self._answered: OrderedDict[Address, None] = OrderedDict()  # answered once so far
        self._last_adopt = 0.0
        self._tokens = adopt_rate  # a burst of a second's worth, then the rate

    def __len__(self) -> int:
        return len(self._peers)

    def __contains__(self, addr: object) -> bool:
        return addr in self._peers

    def get(self, addr: Address) -> T | None:
        """The handle of an adopted client, or None."""
        return self._peers.get(addr)

    def addresses(self) -> list[Address]:
        """The adopted clients, least recently active first."""
        return list(self._peers)

    def answered(self, addr: Address) -> bool:
        """Note an answer sent to ``addr``; True when it should now be adopted."""
        if addr in self._peers:
            return False
        seen = self._answered
        if addr in seen:
            del seen[addr]
            return True
        seen[addr] = None
        if len(seen) > self.max_peers * 16:
            seen.popitem(last=False)
        return False

    def may_adopt(self, now: float) -> bool:
        """Take one adoption from the rate budget; False when it is spent (a later answer
        adopts the client)."""
        tokens = min(self.adopt_rate, self._tokens + (now - self._last_adopt) * self.adopt_rate)
        self._last_adopt = now
        if tokens < 1.0:
            self._tokens = tokens
            return False
        self._tokens = tokens - 1.0
        return True

    @property
    def full(self) -> bool:
        """Whether adopting one more means dropping :meth:`oldest` first."""
        return len(self._peers) >= self.max_peers

    def oldest(self) -> Address:
        """The least recently active adopted client."""
        return next(iter(self._peers))

    def add(self, addr: Address, handle: T, now: float) -> None:
        """Adopt ``addr`` with its ``handle``."""
        self._peers[addr] = handle
        self._seen[addr] = now
        self._since[addr] = now

    def since(self, addr: Address) -> float:
        """When ``addr`` was adopted (+inf if it is not): the servers serve the longest
        adopted first when they cannot serve everyone at once."""
        return self._since.get(addr, math.inf)

    def touch(self, addr: Address, now: float) -> None:
        """``addr`` sent requests at ``now`` (if adopted)."""
        if addr in self._peers:
            self._peers.move_to_end(addr)
            self._seen[addr] = now

    def pop(self, addr: Address) -> T | None:
        """Forget ``addr``; its handle (to close), or None if it was not adopted."""
        self._seen.pop(addr, None)
        self._since.pop(addr, None)
        return self._peers.pop(addr, None)

    def idle(self, now: float) -> list[Address]:
        """The adopted clients silent for ``idle_after`` seconds, oldest first."""
        out: list[Address] = []
        for addr in self._peers:
            if now - self._seen.get(addr, now) < self.idle_after:
                break
            out.append(addr)
        return out
