"""The re-request server core: answers 20-byte request packets from a message store (no I/O).

:meth:`RerequestServerCore.handle_request` takes one datagram, the address it came from
and ``now``, and returns the answer datagram to send back to that address, or None. An
answer is an ordinary downstream packet: the server's session, the requested sequence
number, and as many of the requested messages as fit whole in ``max_payload`` bytes of
blocks (never more than requested). When even the first requested message is larger
than ``max_payload`` it is sent alone (up to the 65,507-byte UDP limit) so that a client
can still get it.

Requests get no answer, and are counted in :attr:`RerequestStats.refused` by reason, when:

=============== ===================================================================
``bad_length``  the datagram is not exactly 20 bytes
``not_allowed`` the source address is outside the allow-list
``wrong_session`` it names another session
``seq_zero``    it asks for sequence number 0
``count_zero``  it asks for 0 messages
``rate_limited`` the source is over its requests-per-second or bytes-per-second budget
``not_held``    the store does not hold the requested sequence number
``too_large``   the requested message does not fit in any datagram
``store_error`` the store could not be read (a file that shrank, a closed store)
=============== ===================================================================

Rate limiting is per source host (the port is ignored: a client may use many) with two
token buckets, requests and answer bytes, refilled continuously up to one burst each.
The table of sources is bounded (least recently seen out first), so a flood of spoofed
sources costs bounded memory. A global bytes-per-second cap bounds the total answer
traffic whatever the number of sources.
"""

from __future__ import annotations

import ipaddress
import struct
from collections import OrderedDict
from collections.abc import Iterable
from dataclasses import dataclass, field

from .events import Address
from .exceptions import ConfigError, MoldUDP64Error
from .store import MessageStore
from .wire import (
    DEFAULT_MAX_PAYLOAD,
    HEADER_SIZE,
    MAX_DATAGRAM,
    MAX_MESSAGE_COUNT,
    encode_session,
    join_blocks,
)

__all__ = [
    "DEFAULT_RATE_LIMIT",
    "REFUSAL_REASONS",
    "RateLimit",
    "RerequestServerCore",
    "RerequestStats",
]

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
)

_REQUEST = struct.Struct(">10sQH")
IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network


@dataclass(frozen=True, slots=True)
class RateLimit:
    """Per-source budgets (token buckets); ``burst_seconds`` of each rate may be used at once.

    The defaults are generous for a client recovering a large gap (about 2,700 full
    answers a second per source) and still keep any one source from flooding the server
    or aiming it at a third party. ``global_bytes_per_second`` caps the sum over all
    sources (None: no global cap).
    """

    requests_per_second: float = 2000.0
    bytes_per_second: float = 4_000_000.0
    burst_seconds: float = 1.0
    max_sources: int = 4096
    global_bytes_per_second: float | None = 50_000_000.0

    def __post_init__(self) -> None:
        for name in ("requests_per_second", "bytes_per_second", "burst_seconds"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int | float) or value <= 0:
                raise ConfigError(f"rate limit {name} {value!r} must be a number > 0")
        gbps = self.global_bytes_per_second
        if gbps is not None and (
            isinstance(gbps, bool) or not isinstance(gbps, int | float) or gbps <= 0
        ):
            raise ConfigError(f"rate limit global_bytes_per_second {gbps!r} must be > 0 or None")
        if isinstance(self.max_sources, bool) or not isinstance(self.max_sources, int):
            raise ConfigError(f"rate limit max_sources {self.max_sources!r} must be an int")
        if self.max_sources < 1:
            raise ConfigError(f"rate limit max_sources {self.max_sources} must be >= 1")


@dataclass(frozen=True, slots=True)
class RerequestStats:
    """What a re-request server did so far (a snapshot)."""

    requests: int
    answers: int
    messages: int
    bytes: int
    refused: dict[str, int] = field(default_factory=dict)
    sources: int = 0

    @property
    def refused_total(self) -> int:
        """Requests that got no answer."""
        return sum(self.refused.values())


#: The rate limit a re-request server applies unless told otherwise.
DEFAULT_RATE_LIMIT = RateLimit()


class _Bucket:
    """Two token buckets of one source."""

    __slots__ = ("bytes", "requests", "stamp")

    def __init__(self, requests: float, nbytes: float, now: float) -> None:
        self.requests = requests
        self.bytes = nbytes
        self.stamp = now


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
        try:
            self._session = encode_session(session)
        except ValueError as exc:
            raise ConfigError(f"session: {exc}") from None
        limit = MAX_DATAGRAM - HEADER_SIZE
        if isinstance(max_payload, bool) or not isinstance(max_payload, int):
            raise ConfigError(f"max_payload {max_payload!r} must be an int")
        if not 3 <= max_payload <= limit:
            raise ConfigError(f"max_payload {max_payload} must be 3..{limit} bytes")
        if rate_limit is not None and not isinstance(rate_limit, RateLimit):
            raise ConfigError(f"rate_limit must be a RateLimit or None, not {rate_limit!r}")
        self.store = store
        self.max_payload = max_payload
        self.rate_limit = rate_limit
        self.allow: tuple[IPNetwork, ...] | None = None
        if allow is not None:
            networks: list[IPNetwork] = []
            for net in allow:
                try:
                    networks.append(ipaddress.ip_network(net, strict=False))
                except (ValueError, TypeError) as exc:
                    raise ConfigError(f"allow-list entry {net!r}: {exc}") from None
            self.allow = tuple(networks)
        self._allowed_cache: OrderedDict[str, bool] = OrderedDict()
        self._sources: OrderedDict[str, _Bucket] = OrderedDict()
        self._global_bytes = 0.0
        self._global_stamp: float | None = None
        self._requests = 0
        self._answers = 0
        self._messages = 0
        self._bytes = 0
        self._refused = dict.fromkeys(REFUSAL_REASONS, 0)
        #: The last error the store raised (requests then go unanswered, as ``store_error``).
        self.last_store_error: Exception | None = None

    @property
    def session_ident_raw(self) -> bytes:
        """The 10 session bytes this server answers for."""
        return self._session

    @property
    def stats(self) -> RerequestStats:
        """Counts so far (a snapshot)."""
        return RerequestStats(
            requests=self._requests,
            answers=self._answers,
            messages=self._messages,
            bytes=self._bytes,
            refused=dict(self._refused),
            sources=len(self._sources),
        )

    def _refuse(self, reason: str) -> None:
        self._refused[reason] += 1

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

    def _bucket(self, host: str, now: float, limit: RateLimit) -> _Bucket:
        sources = self._sources
        bucket = sources.get(host)
        burst = limit.burst_seconds
        if bucket is None:
            bucket = _Bucket(limit.requests_per_second * burst, limit.bytes_per_second * burst, now)
            sources[host] = bucket
            if len(sources) > limit.max_sources:
                sources.popitem(last=False)
        else:
            sources.move_to_end(host)
            elapsed = now - bucket.stamp
            if elapsed > 0:
                bucket.requests = min(
                    limit.requests_per_second * burst,
                    bucket.requests + elapsed * limit.requests_per_second,
                )
                bucket.bytes = min(
                    limit.bytes_per_second * burst, bucket.bytes + elapsed * limit.bytes_per_second
                )
                bucket.stamp = now
        return bucket

    def _global_ok(self, now: float, limit: RateLimit) -> bool:
        rate = limit.global_bytes_per_second
        if rate is None:
            return True
        cap = rate * limit.burst_seconds
        if self._global_stamp is None:
            self._global_bytes = cap
        else:
            elapsed = now - self._global_stamp
            if elapsed > 0:
                self._global_bytes = min(cap, self._global_bytes + elapsed * rate)
        self._global_stamp = now
        return self._global_bytes > 0

    def handle_request(self, data: bytes, addr: Address, now: float) -> bytes | None:
        """The answer to one request datagram from ``addr``, or None (counted by reason)."""
        self._requests += 1
        if len(data) != HEADER_SIZE:
            self._refuse("bad_length")
            return None
        host = addr[0]
        if self.allow is not None and not self._is_allowed(host):
            self._refuse("not_allowed")
            return None
        session, seq_num, count = _REQUEST.unpack_from(data)
        if session != self._session:
            self._refuse("wrong_session")
            return None
        if seq_num == 0:
            self._refuse("seq_zero")
            return None
        if count == 0:
            self._refuse("count_zero")
            return None
        limit = self.rate_limit
        bucket: _Bucket | None = None
        if limit is not None:
            bucket = self._bucket(host, now, limit)
            if bucket.requests < 1.0 or bucket.bytes <= 0 or not self._global_ok(now, limit):
                self._refuse("rate_limited")
                return None
            bucket.requests -= 1.0
        store = self.store
        if not store.first_seq_num <= seq_num < store.next_seq_num:
            self._refuse("not_held")
            return None
        count = min(count, MAX_MESSAGE_COUNT)
        try:
            messages = store.get(seq_num, count, self.max_payload)
            if not messages:
                messages = store.get(seq_num, 1, MAX_DATAGRAM - HEADER_SIZE)
        except (MoldUDP64Error, OSError) as exc:
            self._refuse("store_error")
            self.last_store_error = exc
            return None
        if not messages:
            self._refuse("too_large")
            return None
        answer = _REQUEST.pack(self._session, seq_num, len(messages)) + join_blocks(messages)
        size = len(answer)
        if bucket is not None:
            bucket.bytes -= size
        if limit is not None and limit.global_bytes_per_second is not None:
            self._global_bytes -= size
        self._answers += 1
        self._messages += len(messages)
        self._bytes += size
        return answer

    def __repr__(self) -> str:
        return (
            f"RerequestServerCore(session={self._session.decode('latin-1')!r}, "
            f"store={self.store!r}, max_payload={self.max_payload})"
        )
