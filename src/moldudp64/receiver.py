"""The MoldUDP64 client protocol core: sessions, sequencing, gap recovery and timers.

(One file, longer than the others, on purpose: one state machine whose rules share the
same state at every step, read top to bottom as aioquic's ``connection.py`` is; the
configuration and statistics records sit beside it because they name that state.)

:class:`ReceiverCore` does no I/O and reads no clock. The live client, the asyncio client
and the capture reader feed it datagrams (:meth:`~ReceiverCore.receive_datagram`) and
timer ticks (:meth:`~ReceiverCore.handle_timer`), and take out events
(:meth:`~ReceiverCore.events_received`) and request datagrams with the server each goes to
(:meth:`~ReceiverCore.datagrams_to_send`); :meth:`~ReceiverCore.get_timer` says when to
call back.

What it guarantees: every sequence number of the session is delivered exactly once and in
order (:class:`~moldudp64.events.MessagesDelivered`, one event per run of consecutive
messages), or reported lost (:class:`~moldudp64.events.MessagesLost`) in its place in the
stream. Packets that arrive early are kept (bounded), only missing ranges are requested,
partial answers are completed at once, unanswered requests are retried on a timer with
backoff over the servers in turn, and a new session is never spliced into the old one.

What it trusts (nothing on the wire is authenticated, so each rule below is a defence).
The rule above them all is "data wins": real data of the followed session that arrives on
a line, or that an honest server holds, is delivered, or named with its range in an event
(:class:`~moldudp64.events.MessagesAfterEnd`); it is never only counted and never
reported lost. Requests are cheap, beliefs are costly:

- **A near gap is requested at once.** A live datagram whose first number is beyond the
  highest held but within ``max_messages_per_request`` of it opens a gap on its own word
  (requested after ``request_delay``): 1-2 then 5 asks for 3..4 at once.
- **A sequence number far beyond everything held is a claim until confirmed.** Kept
  aside, not acted on, until a second datagram vouches for it: any other datagram of the
  session whose last number (data) or own number (heartbeat, end of session) reaches it,
  from either line or a server's answer. A copy of it on the same line within
  :data:`_REPEAT_INTERVAL` is a network duplicate and vouches for nothing, unless it is
  the third. Datagrams kept aside are bounded and dropped (``unconfirmed_sequence``) after
  ``confirm_within`` (one that ends right at a live end of session is kept while that end
  repeats and is weighed: a real tail after a long outage, see ``_tail_unheard``). So a
  stray far ahead costs nothing, and a late join (feed at
  5,000,000, wanted from 1) backfills as soon as the second live packet arrives. End of
  input (:meth:`~ReceiverCore.finish`) takes what is kept aside as it is.
- **A gap is lost only once the feed has passed it.** :data:`_WITNESSES` distinct live
  data datagrams at or beyond everything held since the gap opened (heartbeats, ends of
  session and copies are none: a forger gives them for nothing), or a believed end of
  session, show the feed went past it; only then may it be given up (attempts exhausted,
  no server) and only then does a server's silence about it count against the server.
  Before that its numbers are "not yet arrived": one bounded request (its front) at a
  time, parked with doubling waits once out of attempts, asked again as soon as the feed
  passes it. Attempts are per range: data that reaches a range's front makes the rest a
  range of its own, so requests for a phantom range never use up a real gap's. The
  memory bound, a session change and end of input give up what they must regardless.
- **An end of session is believed** once the feed carried nothing else of the session for
  ``end_confirm`` after it (real publishers repeat it, then fall silent; a forged one is
  disproved by the next packet or heartbeat, which restart the wait, or by data beyond it;
  one that repeated only once :data:`_WITNESSES` distinct live data datagrams went beyond
  it, each restarting the wait: a lone forged datagram after a real end cannot keep the
  session from ending). Meanwhile a near gap before it is requested. One below what was
  delivered is refused (``end_of_session_below_data``) unless it repeats and the quiet
  confirms it: then the session ends there and what was delivered beyond it (forged data
  at the next number, the admitted limit) is named
  (:class:`~moldudp64.events.MessagesAfterEnd`, with a warning), so a forger cannot keep a
  session from ending; one contradicted by data beyond it dropped
  (``end_of_session_contradicted``; one below data held but not yet delivered is refused
  alike unless it repeats), one far beyond everything held never believed: the numbers
  before it are taken as missing a window at a time (:meth:`_chase_end`), and live data
  far below it drops it (an end below it is one of two ends). Of two ends the data held
  agrees with, the one right after all
  data held wins once it repeated, else the one repeated more often (a real publisher
  repeats its end: a forged one seen once, even right after all data held, cannot hold the
  claim against it), on a tie the one right after all data held, else the newer. What is
  held or kept aside beyond a believed end, and data that arrives beyond it later (of a
  datagram across the end, the part from the end on: the part below is the session's), is
  named (:class:`~moldudp64.events.MessagesAfterEnd`, each number once; counted as
  ``after_end_of_session``). After :class:`SessionEnded` nothing more of that session is
  delivered.
- **Answers count only from a configured server** (address and port), or one the user
  sent a request of their own to; others are dropped (``unknown_server``). ``addr=None``
  means the driver vouches for the source. An answer that brings nothing new (a
  zero-count packet from a server whose store lags) credits the server but is no
  progress: its request runs on to its timeout and backoff (unless nothing it asked for
  is missing any more: then it is done).
- **A large gap is fetched in pieces.** Once an answer for a gap the feed has passed
  comes back partial (a datagram holds what fits), the rest is asked for in pieces of
  about what one answer carried, its own request and up to ``max_pieces_in_flight``
  more at once per core, each with its own attempts (``ReceiverCore._pump``); a
  piece out of attempts is reported lost with the pieces of its gap right behind it (as
  a range asked for from its front is). Gaps not passed are never cut into pieces. A
  passed gap is asked for only within a reach past the next number to deliver, lowest
  numbers first (``ReceiverCore._reach_end``): what comes back beyond that would
  only be held.
- **Time never goes back**: a ``now`` below the last one counts as the last one, and
  later ones move on from there (the step back is kept in ``_skew``).
- **A session switch needs evidence**: the followed session ended, or it sent nothing
  for ``stale_after`` while the other session is live (two distinct datagrams, the last
  within ``stale_after``). Of those waiting, one with data in two datagrams goes first,
  the earliest seen, and is pushed out of the capped waiting room last. Only when none
  did, one seen through heartbeats and ends alone whose end names a number beyond 1 (two
  distinct ends, the last after the followed session's last: its data were lost on
  the line, and its end says messages before it exist) is followed, and its numbers are
  asked for: data wins, so what a server holds is delivered and the rest is reported
  lost with its range, never dropped unnamed. Such a session yields to one with data once
  its requests are out of attempts with nothing of its data brought (``_bare``), so
  a forger's ends or heartbeats cost a bounded delay and bounded requests; heartbeats
  alone never make a session followed. One whose first end came before the first session
  followed was first seen (its ends came first on the line as the receiver joined; a
  heartbeat is no such evidence) is older than it, never followed once that one ended.
  While the followed session ends (an end seen or believed), or is silent, one that
  would follow it and sent its own end is not forgotten for its silence
  (``_keep_silent``); once followed, the quiet after its end
  counts from its last datagram, so an end it repeated and then fell quiet after while it
  waited is believed as if followed all along (its gaps are then passed). Either way the
  gaps the feed passed (after a believed end, all) are settled first: recovered, or given
  up with their own reason within their attempts (the session to follow is not forgotten
  for falling silent meanwhile); only numbers the feed never passed are given up as
  ``session changed``. Until then the other session's
  datagrams wait (bounded; see :class:`ReceiverConfig`). A session left is never
  followed again (its live data beyond where it was left is named by
  ``MessagesAfterEnd``); sessions that were never followed cannot push it out of that memory.
- **A dead server costs one request timeout.** Servers that answer (nothing unanswered
  since) are asked first, then servers never tried, then by how many requests they left
  unanswered. A retry never goes back to the server(s) whose attempt just timed out while
  another is usable; when none is known to answer, a retry goes to all others at once.
- **Bounds count real memory**: a held message costs its bytes plus
  :data:`_MSG_OVERHEAD`, a held piece :data:`_PIECE_OVERHEAD` more; datagrams kept aside
  and those of a waiting session count against the same ``max_held_packets`` and
  ``max_held_bytes``; past them another session's datagrams are dropped first (counted,
  ``next_session_backlog_full``), and a real gap is given up only when the followed
  session's own held data needs the room. A waiting session's highest end of session is
  kept outside that room (``ReceiverCore._kept_end``), so its end is known once
  followed.

How it is built: the state is the next sequence number to deliver (``expected``), the
highest sequence number known to exist (``horizon``), the messages held between them
(disjoint pieces keyed by their first sequence number), the missing ranges between them
(sorted "segments", each with its request state), and ranges given up but not yet reached
(delivered in order as ``MessagesLost``). Every number below ``horizon`` and at or above
``expected`` is in exactly one of held, missing or given up. Segments waiting for a
request sit in a heap by due time, so a datagram costs the same whatever the number of
open gaps (a segment list insert is a memmove). Requests are made only in
:meth:`~ReceiverCore.handle_timer` / :meth:`~ReceiverCore.datagrams_to_send`, never
while a datagram is received, so a driver that reads every socket first never asks a
server for what the other line brought. A packet whose sequence number is the expected
one while nothing is missing takes the fast path: one header unpack, two compares,
:func:`~moldudp64.wire.parse_blocks` (validates and splits), and its messages join the
pending :class:`~moldudp64.events.MessagesDelivered` the previous fast-path packet made
(while that is still the newest event not taken), else one new event.
:meth:`~ReceiverCore.receive_datagrams` takes a batch (one ``recvmmsg`` or one run of a
capture) and :meth:`~ReceiverCore.receive_in_order` runs the fast path over a batch in one
loop. While a gap is open, a live packet carrying the next number beyond everything held
is held without the general checks.
"""

from __future__ import annotations

import logging
import struct
from bisect import bisect_left, bisect_right
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from heapq import heappop, heappush
from math import nextafter
from operator import attrgetter

from .events import (
    Address,
    DatagramDropped,
    DatagramReceived,
    Event,
    FeedResumed,
    FeedStale,
    GapDetected,
    GapFilled,
    MessagesAfterEnd,
    MessagesDelivered,
    MessagesLost,
    ServerDisabled,
    ServerEnabled,
    SessionChanged,
    SessionEnded,
    SessionStarted,
    Source,
)
from .exceptions import ConfigError, MalformedPacket
from .validation import check_server_address, check_session
from .wire import (
    END_OF_SESSION,
    HEADER,
    MAX_DATAGRAM,
    MAX_MESSAGE_COUNT,
    Buffer,
    RetransmissionPacket,
    c_parse_blocks,
    decode_session,
    encode_session,
    parse_blocks,
)

__all__ = [
    "LOST_ALL_SERVERS_OUT",
    "LOST_ATTEMPTS_EXHAUSTED",
    "LOST_END_OF_INPUT",
    "LOST_HELD_LIMIT",
    "LOST_NO_SERVERS",
    "LOST_SESSION_CHANGED",
    "ReceiverConfig",
    "ReceiverCore",
    "ReceiverStats",
]

logger = logging.getLogger(__name__)

#: ``MessagesLost.reason`` values.
LOST_NO_SERVERS = "no re-request servers"
LOST_ALL_SERVERS_OUT = "all re-request servers out of rotation"
LOST_ATTEMPTS_EXHAUSTED = "request attempts exhausted"
LOST_HELD_LIMIT = "held-packet limit exceeded"
LOST_END_OF_INPUT = "end of input"
LOST_SESSION_CHANGED = "session changed"

#: ``DatagramDropped.reason`` values besides the ``MalformedPacket.reason`` tags.
DROP_WRONG_SESSION = "wrong_session"
DROP_OLD_SESSION = "old_session"
DROP_AFTER_END = "after_end_of_session"
DROP_UNKNOWN_SERVER = "unknown_server"
DROP_UNCONFIRMED = "unconfirmed_sequence"
DROP_EOS_BELOW_DATA = "end_of_session_below_data"
DROP_EOS_CONTRADICTED = "end_of_session_contradicted"
DROP_SESSION_BACKLOG = "next_session_backlog_full"
#: Drops of another session's datagrams: reported even after the followed session ended.
_OTHER_SESSION_DROPS = frozenset({DROP_WRONG_SESSION, DROP_OLD_SESSION, DROP_SESSION_BACKLOG})

_unpack_header = HEADER.unpack_from
_RETX = Source.RETRANSMISSION
_start_of = attrgetter("start")


def _unheeded(server: _Server) -> int:
    """How far down the rotation a server goes: requests it left unanswered since its
    last answer, and zero-count answers in a row while what they asked for was missing
    (see ``_choose``)."""
    return server.failures + server.empty


#: A copy of a datagram on the same line within this many seconds is a network duplicate:
#: it confirms nothing (a feed's heartbeats and ends of session repeat far slower).
_REPEAT_INTERVAL = 0.05
#: Copies that confirm a datagram kept aside though they came too soon to count as
#: independent (a read that took them together; a network rarely makes three of one).
_CONFIRMING_COPIES = 3
#: How far beyond a claim a confirming datagram may start (in messages): more than a burst
#: of packets lost between them, far less than the distance between two random strays.
_VOUCH_WINDOW = 65_536
#: Datagrams kept aside for confirmation, at most (the oldest is dropped first).
_MAX_CLAIMS = 64
#: Other sessions tracked while one is followed, at most.
_MAX_CANDIDATES = 8
#: Seconds over which a session seen through its ends alone must have repeated them to go
#: before a session with data that the line brought after it (see ``_ended_before``).
_END_SPREAD = 0.2
#: Distinct live data datagrams at or beyond the highest number held (not heartbeats, not
#: ends of session, not copies), from the one that opened a gap on,
#: that make it "passed by the feed" (more than a few forged datagrams can give): only then
#: may its numbers be reported lost, or a server's silence about them count against it.
_WITNESSES = 5
#: How long past its silence (in ``stale_after``\ s) a switch to the next session may wait
#: while the servers bring the followed session's missing numbers or a request for them is
#: in flight (``ReceiverCore._fetch_may_wait``): a next session that is live is delayed
#: that long at most, never for the whole of a slow server's recovery of a long session.
_FETCH_WAIT_STALES = 10
#: How long (seconds: the spec's heartbeat interval) a session seen before the first one
#: followed must have been quiet before the wait for its second datagram gives way to a
#: waiting room three quarters full (``_room_pressed``).
_QUIET_STRAY = 1.0
#: An end of session further than this (or ``max_messages_per_request``, if larger)
#: beyond everything held is never believed: the gap before it would cost more than one
#: bounded request.
_END_WINDOW = 1024
#: Data that keeps coming after the end is named (one ``MessagesAfterEnd`` per run of
#: consecutive numbers) once the run stops for this long, or is this old at most.
_AFTER_END_QUIET = 0.1
_AFTER_END_MAX_WAIT = 1.0
#: Servers one retry goes to at once, at most.
_MAX_FANOUT = 8
#: ``_Segment.req_seq`` of a piece waiting for one of the ``max_pieces_in_flight`` slots.
_WAITING = -2
#: ``_Segment.req_seq`` of a range of a passed gap beyond the reach (see
#: ``ReceiverCore._reach``): asked for once delivery comes near it.
_AHEAD = -3
#: ``ReceiverCore._reach_end`` with every server out of rotation.
_NO_REACH = 1 << 64
#: Real memory of a held message beyond its bytes: the bytes object's header (33 bytes,
#: rounded up to the allocator's 16) and its list slot, over-allocation included.
_MSG_OVERHEAD = 64
#: Real memory of a held piece beyond its messages: its record, list and table entry,
#: and the missing range and timer entry that may come with it.
_PIECE_OVERHEAD = 400


def _parse_blocks_or_none(data: bytes) -> list[bytes] | None:
    """:func:`parse_blocks`, None instead of raising for a malformed packet."""
    try:
        return parse_blocks(data)
    except MalformedPacket:
        return None


#: The fast path's splitter: the C accelerator's own entry point when it is built.
_parse_or_none = c_parse_blocks if c_parse_blocks is not None else _parse_blocks_or_none


def _take_next_py(data: Buffer, expected: int, session_raw: bytes | None) -> list[bytes] | None:
    """The messages of ``data`` when the fast path takes it: a valid data packet
    (``bytes``, ``0 < count < 0xFFFF``) of the session ``session_raw`` whose first number
    is ``expected``; None for any other datagram."""
    if type(data) is not bytes or len(data) < HEADER.size:
        return None
    session, seq, count = _unpack_header(data)
    if seq != expected or session != session_raw or not 0 < count < END_OF_SESSION:
        return None
    return _parse_blocks_or_none(data)


def _take_run_py(
    datagrams: Sequence[Buffer],
    start: int,
    expected: int,
    session_raw: bytes | None,
    out: list[bytes],
) -> int:
    """Take ``datagrams[start:]`` while :func:`_take_next_py` takes each (``expected``
    moving on past each one taken), their messages appended to ``out``; the index of the
    first not taken (``len(datagrams)`` when all were)."""
    if start < 0:
        return start
    i = start
    n = len(datagrams)
    while i < n:
        msgs = _take_next_py(datagrams[i], expected, session_raw)
        if msgs is None:
            break
        out += msgs
        expected += len(msgs)
        i += 1
    return i


def _load_takers() -> tuple[
    Callable[[Buffer, int, bytes | None], list[bytes] | None],
    Callable[[Sequence[Buffer], int, int, bytes | None, list[bytes]], int],
]:
    """The fast path's takers: the C accelerator's when it is built (and wanted), else the
    pure-Python twins (same results)."""
    if c_parse_blocks is None:  # MOLDUDP64_PURE_PYTHON, or no accelerator
        return _take_next_py, _take_run_py
    try:
        from ._speedups import take_next, take_run
    except ImportError:  # an accelerator built before these existed
        return _take_next_py, _take_run_py
    return take_next, take_run


#: The fast path in one call: a datagram's messages (:func:`_take_next_py`), and a batch's
#: in-order run (:func:`_take_run_py`); C when built.
_take_next, _take_run = _load_takers()
_INF = float("inf")
#: Sessions remembered as "already left" so their late packets never switch us back.
_MAX_PAST_SESSIONS = 64
#: Late datagrams of a session left behind remembered per session (copies named once).
_MAX_PAST_NAMED = 64


def _vouches(start: int, value: int, claim_start: int, claim_value: int) -> bool:
    """Whether a datagram ``[start, value]`` (its first sequence number and the one it
    shows to exist) confirms a claim ``[claim_start, claim_value]``: it reaches the claim,
    and does not start far beyond it (two strays far apart confirm nothing)."""
    return value >= claim_start and start <= claim_value + _VOUCH_WINDOW


@dataclass(frozen=True, slots=True)
class ReceiverConfig:
    """What a :class:`ReceiverCore` wants and how hard it tries to recover gaps.

    Names follow the ``moldudp`` Rust client where it has one. Defaults:

    - ``expected_session_ident`` None: lock onto the first session seen. When set, the
      session is pinned: packets of any other session are dropped and counted.
    - ``expected_seq_num`` None (means 1): the first message wanted; gaps before it are
      never requested. ``start_from_first_seen`` True instead starts from the first
      data packet's sequence number (not both; heartbeats and ends of session before it
      are counted, never set the start).
    - ``rerequest_server_addrs`` empty: no recovery; a gap waits ``loss_grace`` (0.1 s)
      for reordered packets, then is reported lost (once the feed has passed it). Give
      numeric addresses, as the driver reports a datagram's source: answers from any other
      address are dropped.
    - ``max_rerequest_retries`` 100: consecutive unanswered requests before a server is
      taken out of rotation (:class:`ServerDisabled`); it is tried again after
      ``server_retry_interval`` (5 s) when no other server is usable, and back in
      rotation (:class:`ServerEnabled`) as soon as it answers.
    - ``request_timeout`` 0.05 s for the first attempt, multiplied by ``request_backoff``
      (2.0) per attempt up to ``max_request_timeout`` (1.0 s); ``max_request_attempts``
      8 unanswered attempts per range (about 4.5 s) before it is reported lost (once the
      feed has passed it; see the module doc).
    - ``request_delay`` 0.0: how long a new gap waits before it is requested (give a
      few milliseconds when a B line or reordering usually fills gaps by itself).
    - ``max_messages_per_request`` 1024 (at most 0xFFFE), ``max_requests_in_flight`` 32.
    - ``max_pieces_in_flight`` 8: requests in flight at once, per core, for the pieces of
      gaps larger than one answer datagram carries, beyond each gap's own request. A gap
      the feed has passed whose first answer came back partial is asked for in pieces of
      what one answer carried (learned from the answers), this many at once besides its
      own request (and besides the ``max_requests_in_flight`` gaps' own requests), each
      with its own timeout, attempts and backoff, spread over the servers; the rest of
      such a gap waits for a free slot.
    - ``max_held_packets`` 50,000 and ``max_held_bytes`` 64 MiB bound the early packets
      held, in real memory (object overhead counted); past either, the oldest gap is
      reported lost and delivery goes on.
    - ``stale_after`` 3.0 s without a live datagram, of the followed session or of one
      waiting to be followed, raises :class:`FeedStale` (None: never); the followed
      session's own silence for that long is what a switch on staleness waits for.
    - ``raw`` False: True is the low-level mode, :class:`DatagramReceived` for every valid
      datagram in arrival order instead of :class:`MessagesDelivered`; gaps are still
      requested automatically and :meth:`ReceiverCore.request` adds requests.
    - ``follow_session_changes`` True: when not pinned, a new session on the feed is
      followed (:class:`SessionChanged`) once the evidence is there: the current one
      ended (end of session believed), or it sent nothing for ``stale_after`` while the
      new one is live, and (either way) the gaps the feed passed are settled;
      ``stale_after`` None: only after an end. A new one seen only through its repeated
      ends is followed only when none with data waits (see the module doc).
      Meanwhile the new one's datagrams wait (within the held bounds; beyond them they
      are counted as ``next_session_backlog_full`` and requested once followed); packets
      of a session left behind are dropped (``old_session``), never spliced in; its live
      data beyond where it was left (its end, or the number it stopped at) is named by a
      ``MessagesAfterEnd`` with that number as ``end_seq`` (copies once). False
      keeps the first session only.
    - ``confirm_within`` 3.0 s: how long a datagram far beyond everything held (more
      than ``max_messages_per_request`` ahead) waits for a second datagram to confirm it
      before it is dropped (``unconfirmed_sequence``; see the module doc).
    - ``end_confirm`` 2.5 s: how long the feed must carry nothing of the session but
      ends of session at the same number before that end is believed (more than two of
      the feed's heartbeat intervals, typically 1 s, which a real publisher stops at its
      end: one lost heartbeat does not let a forged end through; every heartbeat or
      packet of the session restarts the wait).
    """

    expected_session_ident: str | bytes | None = None
    expected_seq_num: int | None = None
    rerequest_server_addrs: Sequence[Address] = ()
    max_rerequest_retries: int = 100
    start_from_first_seen: bool = False
    raw: bool = False
    follow_session_changes: bool = True
    request_timeout: float = 0.05
    request_backoff: float = 2.0
    max_request_timeout: float = 1.0
    max_request_attempts: int = 8
    request_delay: float = 0.0
    max_messages_per_request: int = 1024
    max_requests_in_flight: int = 32
    max_pieces_in_flight: int = 8
    max_held_packets: int = 50_000
    max_held_bytes: int = 64 * 1024 * 1024
    stale_after: float | None = 3.0
    loss_grace: float = 0.1
    server_retry_interval: float = 5.0
    confirm_within: float = 3.0
    end_confirm: float = 2.5

    def __post_init__(self) -> None:
        session = self.expected_session_ident
        if session is not None:
            check_session(session, "expected_session_ident")
        seq = self.expected_seq_num
        if seq is not None and (
            not isinstance(seq, int) or isinstance(seq, bool) or not 1 <= seq < 2**64
        ):
            raise ConfigError(f"expected_seq_num {seq!r} is not an integer in 1..2**64-1")
        if seq is not None and self.start_from_first_seen:
            raise ConfigError("give expected_seq_num or start_from_first_seen, not both")
        if isinstance(self.rerequest_server_addrs, str | bytes):
            raise ConfigError("rerequest_server_addrs must be a list of (host, port) pairs")
        try:
            servers = tuple(check_server_address(a) for a in self.rerequest_server_addrs)
        except TypeError:
            raise ConfigError(
                "rerequest_server_addrs must be a list of (host, port) pairs"
            ) from None
        if len(set(servers)) != len(servers):
            raise ConfigError(f"rerequest_server_addrs lists a server twice: {servers!r}")
        object.__setattr__(self, "rerequest_server_addrs", servers)
        for name, low, high in (
            ("max_rerequest_retries", 1, None),
            ("max_request_attempts", 1, None),
            ("max_messages_per_request", 1, MAX_MESSAGE_COUNT),
            ("max_requests_in_flight", 1, None),
            ("max_pieces_in_flight", 1, None),
            ("max_held_packets", 1, None),
            ("max_held_bytes", 1, None),
        ):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool):
                raise ConfigError(f"{name} must be an int, not {type(value).__name__}")
            if value < low or (high is not None and value > high):
                bound = f"{low}..{high}" if high is not None else f">= {low}"
                raise ConfigError(f"{name} {value} is outside {bound}")
        for name, positive in (
            ("request_timeout", True),
            ("max_request_timeout", True),
            ("server_retry_interval", True),
            ("confirm_within", True),
            ("end_confirm", True),
            ("request_delay", False),
            ("loss_grace", False),
        ):
            value = getattr(self, name)
            if not isinstance(value, int | float) or isinstance(value, bool):
                raise ConfigError(f"{name} must be a number, not {type(value).__name__}")
            if not value >= 0 or (positive and value == 0) or value == float("inf"):
                raise ConfigError(f"{name} {value} must be a finite number > 0")
        if self.max_request_timeout < self.request_timeout:
            raise ConfigError("max_request_timeout is smaller than request_timeout")
        if not isinstance(self.request_backoff, int | float) or not (
            1.0 <= self.request_backoff < 1000.0
        ):
            raise ConfigError(f"request_backoff {self.request_backoff!r} is outside 1..1000")
        stale = self.stale_after
        if stale is not None and (
            not isinstance(stale, int | float) or isinstance(stale, bool) or not 0 < stale < 1e9
        ):
            raise ConfigError(f"stale_after {stale!r} must be a number > 0 or None")


@dataclass(frozen=True, slots=True)
class ReceiverStats:
    """A snapshot of a :class:`ReceiverCore`'s counters and state.

    Packets count every datagram handed in, by source; messages count the messages of the
    valid data packets of the followed session, by source (duplicates included). Held
    packets and bytes (real memory, overhead counted) include the datagrams kept aside for
    confirmation (``unconfirmed_packets``) and those of another session waiting for the
    evidence of a switch. ``requests_sent`` includes the user's own requests (also counted
    in ``user_requests``) when they went to a configured server. ``messages_before_start``
    counts messages numbered below the first one wanted (``expected_seq_num``): not
    duplicates. ``other_session_packets`` counts the datagrams of sessions other than the
    one followed (those of a session later switched to excepted).
    """

    packets: dict[Source, int]
    messages: dict[Source, int]
    messages_delivered: int
    heartbeats: int
    end_of_session_packets: int
    duplicate_packets: int
    duplicate_messages: int
    messages_before_start: int
    other_session_packets: int
    gaps_detected: int
    gap_messages: int
    messages_recovered: int
    messages_lost: int
    requests_sent: dict[Address, int]
    user_requests: int
    answers: dict[Address, int]
    timeouts: dict[Address, int]
    malformed: dict[str, int]
    dropped: dict[str, int]
    held_packets: int
    held_bytes: int
    unconfirmed_packets: int
    peak_held_packets: int
    peak_held_bytes: int
    open_gaps: int
    missing_messages: int
    requests_in_flight: int
    servers_in_rotation: int
    session: str | None
    next_seq_num: int | None
    stale: bool
    ended: bool
    #: An end of session seen, waiting for the quiet that confirms it (``end_confirm``):
    #: a reader's idle timer should wait for it too.
    end_of_session_pending: bool = False


@dataclass(slots=True)
class _Lead:
    """The one request a gap (up to ``max_messages_per_request``) keeps in flight
    outside the ``max_pieces_in_flight`` bound, shared by the pieces cut from it: while
    one of them holds it, another of them is a piece (see ``ReceiverCore._pump``)."""

    busy: bool = False
    #: Its segments waiting for a slot (see ``ReceiverCore._slot_wait``), some stale.
    waiting: list[_Segment] = field(default_factory=list)


@dataclass(slots=True)
class _Segment:
    """A missing range ``[start, end)`` and the state of its request."""

    start: int
    end: int
    detected: float
    attempts: int = 0
    #: When to (re)send it; None while the request ``req_seq`` is in flight.
    due: float | None = None
    req_seq: int = -1
    #: The servers whose attempt at it last went unanswered: the retry goes elsewhere.
    avoid: tuple[_Server, ...] = ()
    #: False once filled, split off or given up (its entries in the due heap are stale).
    alive: bool = True
    #: The core's witness count when the range went missing (see :data:`_WITNESSES`).
    wit0: int = 0
    #: Times it ran out of attempts before the feed passed it (each waits twice as long).
    parks: int = 0
    #: Attempts at the range as it starts now: only these can use it up. Data that
    #: reaches its front makes what is left a range of its own (the requests so far, e.g.
    #: for the front of a forged heartbeat's phantom range, could not reach it).
    own_attempts: int = 0
    #: A server answered part of it (a partial answer): once the feed has passed it, the
    #: rest may be asked for in pieces, several at once (see ``ReceiverCore._pump``).
    #: A piece out of attempts takes the pieces of its gap right behind it along (as a
    #: range asked for from its front is lost when the front runs out): a server that
    #: stopped answering, or numbers nothing real reached, cost one piece's attempts.
    fan: bool = False
    #: Its gap's lead (shared with the pieces cut from it; made at its first request).
    lead: _Lead | None = None
    #: Of its ``attempts``, those taken along from the range it was cut off (requests
    #: that went unanswered before it was a piece of its own): forgiven once an answer
    #: to its gap brings data (see ``ReceiverCore._on_answer``).
    inherited: int = 0
    #: The same for ``own_attempts``.
    inherited_own: int = 0


@dataclass(slots=True)
class _Request:
    """A request in flight: ``[seq, end)`` sent to each of ``servers``."""

    end: int
    servers: tuple[_Server, ...]
    deadline: float
    #: Whether the feed has passed the range: only then does no answer count as a failure.
    counted: bool = True
    #: Messages asked for (a piece asks beyond its own range, up to the end of its gap:
    #: the answer shows how many one datagram carries).
    count: int = 0
    #: One of the pieces of a gap asked for several at once (``max_pieces_in_flight``).
    piece: bool = False
    #: The lead it holds (its gap's one request outside that bound), if it does.
    lead: _Lead | None = None
    #: Its gap's lead, held or not (the pieces cut from the same gap share it).
    family: _Lead | None = None
    #: Its servers that answered it with nothing new (a store that lags): alive, so a
    #: range's final attempt does not avoid them (see ``ReceiverCore._choose``).
    answered: tuple[_Server, ...] = ()


@dataclass(slots=True)
class _Server:
    """A re-request server and its health."""

    addr: Address
    #: Requests left unanswered since its last answer.
    failures: int = 0
    #: When it last answered (or, never answered, when it was first asked): with
    #: ``failures``, whether it fell silent (see ``ReceiverCore._all_silent``).
    heard: float | None = None
    #: When it was last asked: a server not asked for as long as one range's attempts
    #: take was not heard from because nothing was asked (``_all_silent``).
    asked: float = -_INF
    #: When the first of its ``failures`` timed out: the silence ``_all_silent`` weighs
    #: began no earlier (many first attempts timing out at once are no long silence).
    failing_since: float = 0.0
    #: Zero-count answers in a row while what they were asked for was still missing (a
    #: store that lags): a new range goes to it only after the servers that bring data,
    #: like to a silent server (``_choose``), until one of its answers brings data.
    empty: int = 0
    disabled: bool = False
    retry_at: float = 0.0
    requests: int = 0
    answers: int = 0
    timeouts: int = 0


@dataclass(slots=True)
class _Held:
    msgs: list[bytes]
    nbytes: int = field(default=0)


@dataclass(slots=True)
class _Claim:
    """A datagram of the followed session that reaches beyond everything held: kept
    aside until a second datagram confirms its sequence number (see the module doc)."""

    start: int
    #: The sequence number it vouches for: one past its last message (data), or its own
    #: number (heartbeat, end of session).
    value: int
    data: bytes
    source: Source
    at: float
    addr: Address | None
    nbytes: int
    #: Copies of it seen (network duplicates, or reads that took several at once).
    copies: int = 1
    #: An end of session's: distinct live data datagrams beyond it seen so far (a repeated
    #: end stands against fewer than :data:`_WITNESSES`; see ``ReceiverCore._end_stands``).
    beyond: int = 0
    #: One past the last of those counted (so a copy or an older one is not counted again).
    beyond_top: int = 0
    #: When it first came and when its last copy came (``at`` moves with the quiet): an
    #: end of session's copies count as repeats over :data:`_END_SPREAD` (``_repeated``).
    born: float = -_INF
    last: float = -_INF
    #: An end of session far ahead: the next number to deliver at the last look (0 before
    #: one; see ``ReceiverCore._settle_end``).
    mark: int = 0

    def __post_init__(self) -> None:
        if self.born == -_INF:
            self.born = self.last = self.at


@dataclass(slots=True)
class _Candidate:
    """Datagrams of another session, kept while the evidence for a switch gathers."""

    datagrams: list[tuple[bytes, Source, float, Address | None]]
    nbytes: int = 0
    last_at: float = 0.0
    #: Distinct datagrams seen (copies of the previous one on the same line within
    #: :data:`_REPEAT_INTERVAL` are one).
    distinct: int = 0
    #: Datagrams seen, kept or not.
    seen: int = 0
    #: Distinct datagrams that carried data or an end of session (heartbeats never count):
    #: what it showed, which orders who is pushed out of the full waiting room.
    shown: int = 0
    #: When its first datagram came.
    first_at: float = 0.0
    #: Whether it carried data (one that did goes before one seen only through its ends).
    carries: bool = False
    #: Whether it sent an end of session (see ``ReceiverCore._consider_switch``).
    ends: bool = False
    #: Distinct ends of session it sent (heartbeats never count), and when the last came.
    end_count: int = 0
    end_at: float = 0.0
    #: When its first end of session came (what ``ReceiverCore._after_quiet`` weighs: a
    #: heartbeat carries no evidence that a session was ending as the receiver joined;
    #: and the start of its ends' spread, see ``_ended_before``).
    first_end_at: float = _INF
    #: Its highest end of session and the line and server it came from, kept outside
    #: ``datagrams`` (whose room may be full): once followed, its end is known.
    end_seq: int = 0
    end_source: Source = Source.LINE_A
    end_addr: Address | None = None
    #: One past its highest data (or its highest heartbeat), and when its last datagram
    #: that was news came: data beyond that top, a heartbeat at or beyond it, an end
    #: beyond its ends so far (copies and repeated ends are none; see ``_news_at``).
    top: int = 0
    news_at: float = 0.0
    #: One past the highest number of its data dropped for want of room while it waited,
    #: each within one request of what was kept or dropped before (a forger's datagram
    #: far ahead never reaches it): numbers that arrived, so once followed the gap up to
    #: it is one the feed passed.
    dropped_top: int = 0
    #: One past the highest number of its data kept while it waited.
    kept_top: int = 0


def _cand_dropped(cand: _Candidate, seq: int, count: int, window: int) -> None:
    """Remember how far the data of a waiting session dropped for want of room reached
    (``seq`` and ``count`` from its header; see ``_Candidate.dropped_top``)."""
    if (
        0 < count < END_OF_SESSION
        and seq + count > cand.dropped_top
        and seq <= max(cand.dropped_top, cand.kept_top) + window
    ):
        cand.dropped_top = seq + count


def _waiting_size(data: bytes) -> int:
    """What a datagram waiting for a switch counts against ``max_held_bytes``: what it
    will cost once held (its messages' overhead too), so a backlog that fit while it
    waited still fits when replayed, and costs no real gap of its session for room."""
    _session, _seq, count = _unpack_header(data)
    size = len(data) + _PIECE_OVERHEAD
    return size + _MSG_OVERHEAD * count if 0 < count < END_OF_SESSION else size


def _ready(c: _Candidate) -> bool:
    """A waiting session that carried data in two distinct datagrams."""
    return c.carries and c.distinct >= 2


def _ended_before(c: _Candidate, seen: float) -> bool:
    """Whether ``c`` is evident (``_evident``), was seen before ``seen`` and repeated its
    end over :data:`_END_SPREAD` at least (a publisher repeats its end over time; one copy
    on each line, milliseconds apart, is a stray's two datagrams)."""
    return _evident(c) and c.first_at < seen and c.end_at - c.first_end_at >= _END_SPREAD


def _evident(c: _Candidate) -> bool:
    """A waiting session seen only through heartbeats and ends of session, two distinct
    ends among them (heartbeats never count), one beyond 1: evidence that its messages
    before its end exist (its data were lost on the line; a server may hold them)."""
    return not c.carries and c.end_count >= 2 and c.end_seq > 1


class ReceiverCore:
    """The client protocol core: datagrams and timer ticks in, events and requests out.

    Never raises on received data. Not thread-safe: drive it from one thread or task.
    """

    def __init__(self, config: ReceiverConfig | None = None) -> None:
        cfg = config if config is not None else ReceiverConfig()
        self.config = cfg
        self._events: list[Event] = []
        self._out: list[tuple[bytes, Address]] = []
        self._pinned = cfg.expected_session_ident is not None
        self._session_raw: bytes | None = (
            encode_session(cfg.expected_session_ident)
            if cfg.expected_session_ident is not None
            else None
        )
        self._session: str | None = (
            decode_session(self._session_raw) if self._session_raw is not None else None
        )
        #: Sessions left behind (never followed again), oldest first; bounded: where each
        #: was left (its end, or the number it stopped at) and the first numbers of its
        #: late data named since (so line A and B copies are named once; bounded).
        self._past: dict[bytes, tuple[int, dict[int, int]]] = {}
        #: Live data of sessions left behind that keeps coming, not yet named, by session:
        #: ``[first, end, started, last, left]`` (see :meth:`_past_after`); bounded by
        #: ``_past``.
        self._past_runs: dict[bytes, list[int | float]] = {}
        #: For each session left behind, the ranges its ``named`` covers, merged
        #: (overlapping or touching joined) and sorted: ``(named, starts, ends)``, valid
        #: while ``named`` is that dict and unchanged (see :meth:`_past_cover`).
        self._past_covers: dict[bytes, tuple[dict[int, int], list[int], list[int]]] = {}
        #: The ranges ``[first, end)`` the followed session reported lost (MessagesLost),
        #: sorted, merged, at most :data:`_MAX_PAST_NAMED` (the lowest let go), less what
        #: live data named since: live data that still comes into them arrived after all
        #: and is named (``MessagesAfterEnd``, see :meth:`_name_lost`), never only
        #: counted. Kept per session left behind in ``_past_lost`` (bounded by ``_past``).
        self._lost_spans: list[list[int]] = []
        self._past_lost: dict[bytes, list[list[int]]] = {}
        #: Other sessions seen while following one, with their datagrams; bounded.
        self._cands: dict[bytes, _Candidate] = {}
        self._cand_packets = 0
        self._cand_bytes = 0
        #: When to look at the other sessions again (see :meth:`_consider_switch`).
        self._switch_check: float | None = None
        self._started = False
        first = 1 if cfg.expected_seq_num is None else cfg.expected_seq_num
        self._first = first
        self._expected = first
        self._horizon = first
        #: Equals ``_expected`` when the fast path may be taken, else -1.
        self._fast_seq = -1
        self._eos: int | None = None
        #: An end of session seen once, not yet confirmed: (its number, the datagram,
        #: line, arrival time).
        self._eos_claim: _Claim | None = None
        #: The last end of session refused against the claim, and how often it came.
        self._eos_rival: tuple[int, int] | None = None
        #: The last claimed end of session that live data beyond it dropped, and how often
        #: it came: its repeats still count when it comes again (see ``_end_stands``).
        self._eos_gone: tuple[int, int] | None = None
        #: An end of session that agreed with the data (at or beyond all of it, near the
        #: horizon) but could not be believed for the numbers before it the feed never
        #: passed (more than :data:`_END_WINDOW`): remembered, one per session, and
        #: claimed again once they are recovered or given up (see ``_wake_pending_end``).
        self._pending_end: _Claim | None = None
        #: The highest end of session of the followed session that repeated but was
        #: dropped, far beyond everything held: when the session is left, the numbers
        #: before it not delivered are reported lost with the rest (see ``_switch_to``).
        self._end_seen = 0
        #: When ``_pending_end`` may be looked at again (see ``_refresh``).
        self._pending_at = -_INF
        #: When an answer last brought data not held before (see ``_end_fetched``).
        self._brought_at = -_INF
        #: When the first request went out since then (see ``_asked_in_flight``).
        self._asked_at = -_INF
        #: When the followed session's last live datagram that was no end of session came
        #: (slow path): what breaks the quiet after an end (see ``_wake_pending_end``).
        self._other_at = -_INF
        self._ended = False
        self._ended_at = 0.0
        #: The latest time on the core's clock (for what happens deep inside a call).
        self._clock = -_INF
        #: Added to every ``now`` handed in: the sum of every step the driver's clock took
        #: backwards (a ``now`` below the last one counts as the last one).
        self._skew = 0.0
        #: Live datagrams seen at or beyond the highest number held (see _WITNESSES).
        self._wit = 0
        #: One past the last data witness (a copy of it, or data below it, is none).
        self._wit_top = 0
        #: One past the highest live data below a believed end of session that arrived
        #: after it was believed, and when (see :meth:`_passed`).
        self._below_end_top = 0
        self._below_end_at = -_INF
        #: Missing numbers of the open gaps by the witness count they went missing at
        #: (``_Segment.wit0``), kept as gaps open, fill, split and go (see
        #: :meth:`_unpassed`): weighing an end of session never walks the gaps. Keys the
        #: feed passed are let go at the next look, or once there are ten (``_new_gap``).
        self._by_wit0: dict[int, int] = {}
        #: Missing numbers of all open gaps.
        self._missing = 0
        #: ``(session, seq)``: an end of session at or below ``seq`` was found near (see
        #: :meth:`_end_is_near`) while the horizon was at or beyond it, so it stays near
        #: (gaps open only at the horizon; lowered by ``_cut_at``).
        self._near_upto: tuple[bytes | None, int] = (None, -1)
        #: A far end remembered and claimed again although the numbers before it are too
        #: many (see ``_tail_unheard``): believed after its quiet unless live data far
        #: below it drops it first.
        self._unheard: tuple[bytes | None, int] = (None, -1)
        #: ``(wit0, tie, segment)`` for the segments out of attempts that the feed has not
        #: passed yet, a heap: asked again as soon as it does (or after a long wait).
        self._parked: list[tuple[int, int, _Segment]] = []
        #: Messages beyond the believed end already reported (MessagesAfterEnd) end here.
        self._after_hw = 0
        #: Distinct data datagrams that came beyond all named after the session ended (at
        #: :data:`_WITNESSES`, the numbers between the end and them are named).
        self._after_wit = 0
        #: The ranges ``[first, end)`` below ``_after_hw`` reported so far, sorted, merged,
        #: at most :data:`_MAX_PAST_NAMED` (the lowest let go: named again, never unnamed):
        #: a datagram that arrives below the mark out of order names what they miss.
        self._after_named: list[list[int]] = []
        #: ``(first, end, started, last)``: data that came after the end, not yet named.
        self._after_run: tuple[int, int, float, float] | None = None
        #: One past the highest data message taken by the slow paths (the fast paths keep
        #: ``expected`` at the top): what ends of session are weighed against.
        self._data_top = 0
        self._held: dict[int, _Held] = {}
        self._held_bytes = 0
        self._claims: list[_Claim] = []
        self._claim_bytes = 0
        self._lost: dict[int, tuple[int, str]] = {}
        self._segs: list[_Segment] = []
        #: ``(due, tie, segment)`` for every segment waiting to be requested; entries whose
        #: segment is dead or whose due time changed are stale and skipped.
        self._due: list[tuple[float, int, _Segment]] = []
        self._tie = 0
        self._requests: dict[int, _Request] = {}
        #: ``(start, tie, segment)`` for the pieces waiting for a slot (see _pump).
        self._slot_wait: list[tuple[int, int, _Segment]] = []
        #: ``(start, tie, segment)`` for the ranges of passed gaps beyond the reach.
        self._ahead: list[tuple[int, int, _Segment]] = []
        #: Messages one answer datagram carried (partial answers, smoothed; 0: unknown).
        self._fit = 0
        #: What one answer could cost held (see ``_room``): the most a message of an
        #: answer cost, and the most an answer cut short by what one datagram carries (a
        #: partial one) cost; 0 before any.
        self._msg_cost = 0
        self._answer_cost = 0
        self._next_deadline = _INF
        self._servers = [_Server(a) for a in cfg.rerequest_server_addrs]
        self._by_addr = {s.addr: s for s in self._servers}
        #: Servers the user sent requests of their own to (their answers are accepted).
        self._user_servers: set[Address] = set()
        self._rr = 0
        self._timer: float | None = None
        self._last_live: float | None = None
        #: The followed session's last live datagram that was a copy of numbers already
        #: delivered (or a heartbeat below them), and its last one that was not before a
        #: run of such copies began: see :meth:`_news_at` (the fast paths bring news).
        self._copy_at = -_INF
        self._news_before = -_INF
        #: When the last datagram of a session waiting to be followed arrived: the feed is
        #: stale only when neither the followed session nor a waiting one sent anything.
        self._heard = -_INF
        self._stale = False
        #: Messages delivered when a session seen only through heartbeats and ends was
        #: followed (see ``_bare``); None when the followed session carried data.
        self._bare_mark: int | None = None
        #: Messages delivered and reported lost when the followed session was followed
        #: (see ``_phantom``).
        self._follow_mark = (0, 0)
        #: When the followed session's last end of session came off a line (see
        #: ``_end_repeats``).
        self._end_heard = -_INF
        #: When the first session followed (at the start) was first seen: a session seen
        #: before it only through its ends is older (see ``_after_quiet``).
        self._follow_seen = -_INF
        #: Reasons already reported once (contradictions that repeat on every packet).
        self._reported: set[str] = set()
        self._debug = logger.isEnabledFor(logging.DEBUG)
        #: The fast path's last event and its message list, extended while it is the
        #: newest event not yet taken (one event per run of consecutive messages).
        self._open: Event | None = None
        self._open_msgs: list[bytes] = []
        # counters
        self._packets = [0, 0, 0]
        self._messages = [0, 0, 0]
        self._delivered = 0
        self._heartbeats = 0
        self._eos_packets = 0
        self._dup_packets = 0
        self._dup_messages = 0
        self._before_start = 0
        self._other_packets = 0
        self._gaps = 0
        self._gap_messages = 0
        self._recovered = 0
        self._lost_messages = 0
        self._user_requests = 0
        self._malformed: dict[str, int] = {}
        self._dropped: dict[str, int] = {}
        self._peak_held = 0
        self._peak_held_bytes = 0

    # ------------------------------------------------------------------ public API

    @property
    def session(self) -> str | None:
        """The session followed (or pinned), None before the first packet."""
        return self._session

    @property
    def next_seq_num(self) -> int | None:
        """The next sequence number to deliver; None until the first packet names it
        (``start_from_first_seen``)."""
        if not self._started and self.config.start_from_first_seen:
            return None
        return self._expected

    @property
    def ended(self) -> bool:
        """Whether the session ended and everything before its end was delivered or lost."""
        return self._ended

    def events_received(self) -> list[Event]:
        """Return the events since the last call (and forget them)."""
        events = self._events
        self._events = []
        return events

    def datagrams_to_send(self, now: float) -> list[tuple[bytes, Address]]:
        """Return the request datagrams to send, each with its server (and forget them).

        Requests are made here (and in :meth:`handle_timer`), never while a datagram is
        received, so a driver that reads every socket before calling this never asks a
        server for what another line already brought."""
        now = self._at(now)
        if self._timer is not None and self._timer <= now:
            self._handle_timer(now)
        out = self._out
        self._out = []
        return out

    def get_timer(self) -> float | None:
        """The earliest time :meth:`handle_timer` should be called, or None."""
        timer = self._timer
        stale = self._stale_at()
        if stale is not None and (timer is None or stale[1] < timer):
            timer = stale[1]
        if self._claims:
            expire = self._claims[0].at + self.config.confirm_within
            if timer is None or expire < timer:
                timer = expire
        switch_at = self._switch_check if self._cands else None
        if switch_at is not None and (timer is None or switch_at < timer):
            timer = switch_at
        eos = self._eos_claim
        if eos is not None and (timer is None or eos.at + self.config.end_confirm < timer):
            timer = eos.at + self.config.end_confirm
        run = self._after_run
        if run is not None:
            flush_at = min(run[3] + _AFTER_END_QUIET, run[2] + _AFTER_END_MAX_WAIT)
            if timer is None or flush_at < timer:
                timer = flush_at
        if self._past_runs:
            past_at = self._past_runs_due()
            if past_at is not None and (timer is None or past_at < timer):
                timer = past_at
        if timer is None or not self._skew:
            return timer
        at = timer - self._skew  # on the driver's clock, never a float step early
        while at + self._skew < timer:
            at = nextafter(at, _INF)
        return at

    def _quiet_after_end(self) -> bool:
        """Whether the feed's silence is the quiet after an end of session that may be
        believed (not staleness): one far beyond everything held (a forger's, or one
        whose numbers are still being fetched window by window, or a lone one more than
        a window beyond all data held, :meth:`_lone_far`) is no such end, so
        ``FeedStale`` still comes ``stale_after`` after the feed's last datagram."""
        eos = self._eos_claim
        if eos is None:
            return False
        window = max(self.config.max_messages_per_request, _END_WINDOW)
        return eos.start <= self._horizon + window and not self._lone_far(eos)

    def _at(self, now: float) -> float:
        """``now`` (the driver's clock) on the core's own clock, which never goes back: a
        ``now`` below the last one counts as the last one, and later ones move on from it."""
        t = now + self._skew
        if t < self._clock:
            self._skew = self._clock - now
            return self._clock
        self._clock = t
        return t

    def handle_timer(self, now: float) -> None:
        """Act on whatever is due at ``now``: retries, timeouts, grace periods, staleness."""
        self._handle_timer(self._at(now))

    def _handle_timer(self, now: float) -> None:
        run = self._after_run
        if run is not None and now >= min(run[3] + _AFTER_END_QUIET, run[2] + _AFTER_END_MAX_WAIT):
            self._flush_after_run()
        if self._past_runs:
            self._flush_past_runs(now)
        if self._cands:  # first: a session followed now is checked below like any other
            self._consider_switch(now)
        if self._claims or self._eos_claim is not None:
            self._expire_claims(now)
        self._check_stale(now)
        if self._requests or self._segs:
            if self._next_deadline <= now:
                self._expire_requests(now)
                self._drain()
            self._enforce_held_bound()
            self._pump(now)
            self._drain()
            # delivery moved on (a range given up): what it brought near goes now
            while self._ahead and self._release_ahead(now):
                self._pump(now)
                self._drain()
        if self._cands:  # the session may have ended above
            session = self._session_raw
            self._consider_switch(now)
            if self._session_raw != session:
                if self._segs:  # the new one's gaps are due
                    self._pump(now)
                    self._drain()
                self._check_stale(now)  # the new one may be silent already
        self._refresh(now)

    def _stale_at(self) -> tuple[float, float] | None:
        """The feed's last datagram (of the followed session or of one waiting to be
        followed) and the time the feed is stale if nothing more comes, ``stale_after``
        later; None while it cannot be (stale already, ended, or the quiet after an end)."""
        stale_after = self.config.stale_after
        last = self._last_live
        if (
            stale_after is None
            or last is None
            or self._stale
            or self._ended
            or self._quiet_after_end()  # the feed fell silent after an end: not stale
        ):
            return None
        last = max(last, self._heard)
        return last, last + stale_after

    def _check_stale(self, now: float) -> None:
        """Raise :class:`FeedStale` once the time :meth:`_stale_at` names has come."""
        stale = self._stale_at()
        if stale is not None and stale[1] <= now:
            self._stale = True
            self._fast_seq = -1
            self._events.append(FeedStale(now - stale[0]))

    def receive_datagram(
        self, data: Buffer, source: Source, now: float, addr: Address | None = None
    ) -> None:
        """Take one datagram from ``source`` (line A, line B or a re-request answer)."""
        t = now + self._skew
        if t < self._clock:  # the driver's clock went back: this is the last time again
            self._skew = self._clock - now
            t = self._clock
        now = t
        seq = self._fast_seq
        if seq >= 0 and source != _RETX:
            # the fast path: the next data packet of the session, nothing missing
            msgs = _take_next(data, seq, self._session_raw)
            if msgs is not None:
                count = len(msgs)
                events = self._events
                if events and events[-1] is self._open:
                    # the previous fast-path event is still pending: extend its run
                    self._open_msgs.extend(msgs)
                else:
                    self._open = MessagesDelivered(self._session, seq, msgs)  # type: ignore[arg-type]
                    self._open_msgs = msgs
                    events.append(self._open)
                self._expected = self._horizon = self._fast_seq = seq + count
                self._packets[source] += 1
                self._messages[source] += count
                self._delivered += count
                self._last_live = self._clock = now
                return
        try:
            session, seq, count = _unpack_header(data)
        except struct.error:
            self._receive_slow(data, source, now, addr)
            return
        if (
            seq == self._horizon
            and self._segs
            and session == self._session_raw
            and 0 < count < END_OF_SESSION
            and source != _RETX
            and type(data) is bytes
            and type(source) is Source
            and self._eos is None
            and self._eos_claim is None
            and self._pending_end is None
            and not self._claims
            and not self._stale
            and self._started
            and not self.config.raw
            and self._receive_beyond(data, source, now, seq, count)
        ):
            return
        self._receive_slow(data, source, now, addr)

    def _receive_beyond(
        self, data: bytes, source: Source, now: float, seq: int, count: int
    ) -> bool:
        """A live data packet right after the highest held while gaps are open (the usual
        packet while a gap waits): held as :meth:`_receive_slow` would, without its general
        checks. False (nothing done) when it is malformed."""
        msgs = _parse_or_none(data)
        if msgs is None:
            return False
        self._packets[source] += 1
        self._last_live = self._clock = now
        if seq >= self._wit_top:
            self._wit += 1
            self._wit_top = seq + count
            if self._parked:
                self._wake_parked(now)
        self._messages[source] += count
        self._horizon = self._data_top = seq + count
        nbytes = sum(map(len, msgs)) + _MSG_OVERHEAD * count + _PIECE_OVERHEAD
        held = self._held
        held[seq] = _Held(msgs, nbytes)
        self._held_bytes += nbytes
        # Nothing to deliver: a gap lies between ``expected`` and this packet.
        cfg = self.config
        # (another session's datagrams waiting for a switch count too: no claims here)
        packets = len(held) + self._cand_packets
        held_bytes = self._held_bytes + self._cand_bytes
        if packets > cfg.max_held_packets or held_bytes > cfg.max_held_bytes:
            self._enforce_held_bound()
            self._refresh(now)
        else:
            if packets > self._peak_held:
                self._peak_held = packets
            if held_bytes > self._peak_held_bytes:
                self._peak_held_bytes = held_bytes
        return True

    def receive_datagrams(
        self,
        datagrams: Sequence[Buffer],
        source: Source,
        now: float,
        addr: Address | None = None,
    ) -> None:
        """Take a batch of datagrams that came together from ``source`` at ``now``.

        The same as calling :meth:`receive_datagram` on each in turn (same events, same
        state), with the in-order run taken in one loop.
        """
        i = 0
        n = len(datagrams)
        receive = self.receive_datagram
        take = self.receive_in_order
        while i < n:
            i = take(datagrams, i, source, now)
            if i < n:
                receive(datagrams[i], source, now, addr)
                i += 1

    def receive_in_order(
        self, datagrams: Sequence[Buffer], start: int, source: Source, now: float
    ) -> int:
        """Take ``datagrams[start:]`` while each takes the fast path; return the index of
        the first that does not (``len(datagrams)`` when all did).

        The fast path is a valid data packet (``bytes``) of the followed session carrying
        the next sequence number while nothing is missing, from line A or B: for those
        this is exactly :meth:`receive_datagram` (``now`` is their arrival time); hand the
        datagram at the returned index to :meth:`receive_datagram` yourself.
        """
        now += self._skew
        if now < self._clock:
            return start  # the clock went back: receive_datagram takes it
        expected = self._fast_seq
        n = len(datagrams)
        if (
            expected < 0
            or start >= n
            or source == _RETX
            or self._session_raw is None
            or type(source) is not Source
        ):
            return start
        events = self._events
        out = self._open_msgs if events and events[-1] is self._open else []
        had = len(out)
        i = _take_run(datagrams, start, expected, self._session_raw, out)
        if i == start:
            return start
        taken = len(out) - had
        first = expected
        expected += taken
        if out is not self._open_msgs:  # no pending fast-path event to extend
            self._open = MessagesDelivered(self._session, first, out)  # type: ignore[arg-type]
            self._open_msgs = out
            events.append(self._open)
        self._expected = self._horizon = self._fast_seq = expected
        self._packets[source] += i - start
        self._messages[source] += taken
        self._delivered += taken
        self._last_live = self._clock = now
        return i

    def request(
        self,
        packet: RetransmissionPacket,
        now: float,
        server: Address | None = None,
    ) -> None:
        """Send a request of the user's own (low-level mode) to ``server`` or the next one.

        Its answer is processed like any other. Raises :class:`ConfigError` when no server
        is given and none is configured, :class:`EncodeError` for a count of 0.
        """
        data = packet.build()
        now = self._at(now)
        if server is None:
            if not self._servers:
                raise ConfigError("no re-request server configured to send the request to")
            chosen = self._choose(now, ())
            target = (chosen[0] if chosen else self._servers[0]).addr
        else:
            target = check_server_address(server)
        known = self._by_addr.get(target)
        if known is not None:
            known.requests += 1
        else:
            self._user_servers.add(target)
        self._user_requests += 1
        self._out.append((data, target))

    def finish(self, now: float) -> None:
        """End of input: take what is held, report every open gap lost, deliver the rest.

        Datagrams kept aside for confirmation are taken as they are (no more evidence can
        come); requests in flight or not yet sent are forgotten. Datagrams that come later
        are handled as usual (as if the stream resumed).
        """
        now = self._at(now)
        self._flush_after_run()
        self._flush_past_runs(None)
        self._take_claims(None, now)
        eos = self._eos_claim
        if eos is not None:  # no more evidence can come: the end stands as it is
            self._eos_claim = None
            self._believe_end(eos.start, now, claim=eos)
        self._segs_give_up(0, len(self._segs), LOST_END_OF_INPUT)
        self._drain()
        pending = self._pending_end
        if pending is not None and self._eos is None:  # its numbers are given up now
            self._pending_end = None
            self._believe_end(pending.start, now, claim=pending)
            self._segs_give_up(0, len(self._segs), LOST_END_OF_INPUT)
            self._drain()
        if self._cands:
            cands = self._cands
            if self._session_raw is None:  # the session most datagrams named
                best = max(cands, key=lambda s: len(cands[s].datagrams))
            else:
                best = max(cands, key=lambda s: cands[s].last_at)
            self._switch_to(best, now)
            self._take_claims(None, now)
            self._segs_give_up(0, len(self._segs), LOST_END_OF_INPUT)
            self._drain()
        self._requests.clear()
        self._next_deadline = _INF
        self._out.clear()
        self._refresh(now)

    @property
    def stats(self) -> ReceiverStats:
        """A snapshot of the counters and the current state."""
        sources = list(Source)
        return ReceiverStats(
            packets={s: self._packets[s] for s in sources},
            messages={s: self._messages[s] for s in sources},
            messages_delivered=self._delivered,
            heartbeats=self._heartbeats,
            end_of_session_packets=self._eos_packets,
            duplicate_packets=self._dup_packets,
            duplicate_messages=self._dup_messages,
            messages_before_start=self._before_start,
            other_session_packets=self._other_packets,
            gaps_detected=self._gaps,
            gap_messages=self._gap_messages,
            messages_recovered=self._recovered,
            messages_lost=self._lost_messages,
            requests_sent={s.addr: s.requests for s in self._servers},
            user_requests=self._user_requests,
            answers={s.addr: s.answers for s in self._servers},
            timeouts={s.addr: s.timeouts for s in self._servers},
            malformed=dict(self._malformed),
            dropped=dict(self._dropped),
            held_packets=len(self._held) + len(self._claims) + self._cand_packets,
            held_bytes=self._held_bytes + self._claim_bytes + self._cand_bytes,
            unconfirmed_packets=len(self._claims) + (self._eos_claim is not None),
            peak_held_packets=self._peak_held,
            peak_held_bytes=self._peak_held_bytes,
            open_gaps=len(self._segs),
            missing_messages=self._missing,
            requests_in_flight=len(self._requests),
            servers_in_rotation=sum(1 for s in self._servers if not s.disabled),
            session=self._session,
            next_seq_num=self.next_seq_num,
            stale=self._stale,
            ended=self._ended,
            end_of_session_pending=self._eos_claim is not None,
        )

    def __repr__(self) -> str:
        return (
            f"ReceiverCore(session={self._session!r}, next_seq_num={self.next_seq_num}, "
            f"gaps={len(self._segs)}, held={len(self._held)}, "
            f"in_flight={len(self._requests)}, ended={self._ended})"
        )

    # ------------------------------------------------------------------ slow path

    def _drop(
        self,
        reason: str,
        source: Source,
        addr: Address | None,
        malformed: bool = False,
        once: bool = False,
    ) -> None:
        """Count a datagram not taken; report it (``once``: only the first time for this
        reason, for contradictions a feed repeats). Nothing of the ended session is
        reported after its end; another session's datagrams ignored still are."""
        counts = self._malformed if malformed else self._dropped
        counts[reason] = counts.get(reason, 0) + 1
        if (self._ended and reason not in _OTHER_SESSION_DROPS) or (
            once and reason in self._reported
        ):
            return
        if once:
            self._reported.add(reason)
        self._events.append(DatagramDropped(reason, source, addr))
        if self._debug:
            logger.debug("dropped datagram from %s %s: %s", source.name, addr, reason)

    def _receive_slow(
        self,
        data: Buffer,
        source: Source,
        now: float,
        addr: Address | None,
        counted: bool = False,
        trusted: bool = False,
    ) -> None:
        """Everything the fast paths do not take. ``counted``: a datagram kept aside and
        taken in now (already counted as a packet); ``trusted``: its sequence number is
        confirmed already."""
        if now > self._clock:
            self._clock = now
        if type(source) is not Source:
            try:
                source = Source(source)
            except ValueError:
                source = _RETX
        if not counted:
            self._packets[source] += 1
            if (
                source == _RETX
                and addr is not None
                and addr not in self._by_addr
                and addr not in self._user_servers
            ):  # not from a server we asked: never trusted
                self._drop(DROP_UNKNOWN_SERVER, source, addr)
                return
        if type(data) is not bytes:
            data = bytes(data)
        try:
            msgs = parse_blocks(data)
        except MalformedPacket as exc:
            self._drop(exc.reason, source, addr, malformed=True)
            self._refresh(now)
            return
        session_raw, seq, count = _unpack_header(data)
        eos = self._eos_claim
        if eos is not None and eos.at + self.config.end_confirm <= now:
            self._settle_end(eos, now)  # the feed kept quiet long enough (before this one)
        if session_raw != self._session_raw:
            # another session, or (not pinned) the first: followed once evidence is there
            self._other_session(session_raw, data, source, now, addr)
            self._refresh(now)
            return
        live = source != _RETX
        if live and not counted:
            if self._stale:
                self._stale = False
                last = self._last_live if self._last_live is not None else now
                self._events.append(FeedResumed(now - max(last, self._heard)))
            claim = self._eos_claim
            if (
                (seq + count <= self._expected and 0 < count < END_OF_SESSION)
                or (count == 0 and seq < self._expected)
                or (
                    count == END_OF_SESSION
                    and (seq == self._eos or (claim is not None and seq == claim.start))
                )
            ):
                # a copy of what was delivered brings no news of the session
                if self._last_live is not None and self._last_live != self._copy_at:
                    self._news_before = self._last_live
                self._copy_at = now
            self._last_live = now
            if count != END_OF_SESSION:
                self._other_at = now  # (the fast paths run only with no end remembered)
        if live and not counted:
            eos = self._eos_claim
            if eos is not None and (count != END_OF_SESSION or seq != eos.start):
                if 0 < count < END_OF_SESSION and seq + count > eos.start:
                    if self._end_stands(eos, seq):
                        eos.at = now  # a repeated end outweighs a lone datagram beyond it
                    else:  # data beyond it: that end of session was false
                        self._eos_claim = None
                        self._eos_gone = (eos.start, eos.copies)
                        self._drop(DROP_EOS_CONTRADICTED, eos.source, eos.addr, once=True)
                elif 0 < count < END_OF_SESSION and not self._end_is_near(eos.start):
                    # data far below it: a real end is never far ahead of the feed
                    self._eos_claim = None
                    self._unheard = (None, -1)
                    self._drop(DROP_UNCONFIRMED, eos.source, eos.addr)
                    self._revive_refused(eos, now)  # the repeated end it beat stands again
                    if self._eos_claim is not None:
                        self._eos_claim.at = now  # (this datagram restarts its quiet)
                elif count != END_OF_SESSION:
                    eos.at = now  # the feed goes on below it: the quiet starts again
            if 0 < count < END_OF_SESSION and seq >= self._horizon and seq >= self._wit_top:
                # distinct data at or beyond everything held: the feed went on (heartbeats,
                # ends and copies are not witnesses: a forger gives them for nothing)
                self._wit += 1
                self._wit_top = seq + count
                if self._parked:
                    self._wake_parked(now)
        if not counted and self._claims:
            self._expire_claims(now)
        if not self._started:
            if self.config.start_from_first_seen and not 0 < count < END_OF_SESSION:
                # only data fixes where the stream starts: a heartbeat or an end of session
                # carries none (a forged one far ahead must not set the start); counted
                if count:
                    self._eos_packets += 1
                else:
                    self._heartbeats += 1
                self._refresh(now)
                return
            self._started = True
            if self.config.start_from_first_seen:
                self._expected = self._horizon = self._first = seq
            self._events.append(SessionStarted(self._session or "", self._expected))
        if self._ended:  # the session is over: count; only data beyond its end is named
            if 0 < count < END_OF_SESSION:
                self._messages[source] += count
                if self._lost_spans and live and seq < self._expected:
                    self._name_lost(self._lost_spans, seq, seq + count, self._eos or seq, now)
                if seq + count <= self._expected:
                    self._count_old(seq, count)
                else:
                    self._after_end(seq, count, source, addr, later=True)
            elif count == 0:
                self._heartbeats += 1
            else:
                self._eos_packets += 1
            return
        raw = self.config.raw
        if 0 < count < END_OF_SESSION and seq + count <= self._expected and live and not raw:
            # a live copy of what was delivered (line B behind line A): count it, done
            self._messages[source] += count
            if self._lost_spans:  # or data of what was reported lost: named
                self._name_lost(self._lost_spans, seq, seq + count, self._expected, now)
            if seq >= self._first:
                self._dup_packets += 1
                self._dup_messages += count
            else:
                self._count_old(seq, count)
            return
        if raw and not counted:
            self._events.append(DatagramReceived(data, source, addr))
        if count == END_OF_SESSION:
            self._eos_packets += 1
            if source != _RETX:
                self._end_heard = now  # (see _end_repeats)
            if self._claims and source != _RETX:
                self._keep_tail(seq, now)
            self._on_end_of_session(seq, data, source, now, addr)
        else:
            value = seq + count
            opener = seq > self._horizon
            if (
                opener
                and live
                and not trusted
                and seq > self._horizon + self.config.max_messages_per_request
                and not self._vouched(seq, value, data, source, now)
            ):
                # far beyond everything held: kept aside until confirmed (a near gap is
                # requested at once: requests are cheap, only beliefs are costly)
                self._hold_claim(seq, value, data, source, now, addr)
                self._take_claims(value, now, data, source, seq)
                self._refresh(now)
                return
            if count == 0:
                self._heartbeats += 1
            else:
                self._messages[source] += count
                if (
                    live
                    and self._eos is not None
                    and value <= self._eos
                    and seq >= self._below_end_top
                ):  # the feed goes on below a believed end: see _passed
                    self._below_end_top = value
                    self._below_end_at = now
            if self._eos is not None and value > self._eos and count and seq < self._eos:
                # it straddles the believed end: the part from the end on is named, the
                # part below it is the session's (data wins: it arrived)
                self._after_end(seq, count, source, addr)
                msgs = msgs[: self._eos - seq]
                count = len(msgs)
                value = seq + count
            if self._eos is not None and value > self._eos:
                if count:
                    self._after_end(seq, count, source, addr)
                else:
                    self._drop(DROP_AFTER_END, source, addr, once=True)
            else:
                if (
                    self._eos_claim is not None
                    and value > self._eos_claim.start
                    and count
                    and not (live and self._end_stands(self._eos_claim, seq))
                ):
                    false = self._eos_claim
                    self._eos_claim = None  # data beyond it: that end of session was false
                    if live:  # (an answer beyond it is a server's word: its repeats are void)
                        self._eos_gone = (false.start, false.copies)
                    self._drop(DROP_EOS_CONTRADICTED, source, addr, once=True)
                    self._revive_rival(false, value, now)
                pending = self._pending_end
                if (
                    pending is not None
                    and value > pending.start
                    and count
                    and not (live and self._end_stands(pending, seq))
                ):
                    self._pending_end = None  # data beyond it: that end was false too
                    self._drop(DROP_EOS_CONTRADICTED, pending.source, pending.addr, once=True)
                if opener and self._claims and not trusted:
                    self._take_claims(value, now, data, source, seq)  # confirmed below it: first
                new = 0
                if count == 0:
                    if value > self._horizon:
                        self._heartbeat_gap(value, now)
                        self._horizon = value
                else:
                    if raw:  # the user has the datagram; hold only the count
                        msgs = [b""] * count
                    new = self._accept(seq, msgs, now)
                if not live:
                    self._on_answer(seq, addr, now, count > 0 and new > 0, count, len(data))
                if self._claims and not trusted:
                    self._take_claims(value, now, data, source, seq)
        self._drain()
        self._enforce_held_bound()
        if self._cands and not counted:
            self._consider_switch(now)
        self._refresh(now)

    def _after_end(
        self, seq: int, count: int, source: Source, addr: Address | None, later: bool = False
    ) -> None:
        """Data beyond the believed end of session: named with its range (each number
        once), never delivered, never only counted. ``later``: it came after the session
        ended; the first packet of a run is named at once, the consecutive numbers that
        follow it are gathered and named together once the run stops
        (:data:`_AFTER_END_QUIET`), grows old (:data:`_AFTER_END_MAX_WAIT`), a run that
        does not follow it comes, or at :meth:`finish` / a session change."""
        self._dropped[DROP_AFTER_END] = self._dropped.get(DROP_AFTER_END, 0) + 1
        end = seq + count
        low = max(seq, self._eos or 0)
        if low < self._after_hw:  # below what was named: an earlier datagram overtaken
            self._after_below(low, min(end, self._after_hw))
        first = max(seq, self._after_hw, self._eos or 0)
        if later and seq >= self._after_hw and self._after_wit < _WITNESSES:
            self._after_wit += 1  # distinct data beyond all named: the feed goes on
            if self._after_wit == _WITNESSES and self._servers and self._eos is not None:
                # it went on beyond the end: the numbers between the end and this data
                # exist, and a configured server may hold them; named (bounded), never
                # silently skipped
                self._after_below(max(self._eos, first - _VOUCH_WINDOW), first)
        if end > first:
            self._mark_after(first, end)
        if later and end > first:
            self._after_hw = end
            run = self._after_run
            if run is not None and run[1] == first:
                self._after_run = (run[0], end, run[2], self._clock)
                return
            self._flush_after_run()  # then this one is named at once, a run starts after it
            self._after_run = (end, end, self._clock, self._clock)
        if end > first:
            self._after_hw = end
            events = self._events
            last = events[-1] if events else None
            if type(last) is MessagesAfterEnd and last.last_seq + 1 == first:
                first = last.first_seq  # one event per run of consecutive numbers
                events.pop()
            events.append(MessagesAfterEnd(self._session or "", first, end - 1, self._eos or first))
            logger.info(
                "messages %d..%d of %r arrived beyond its end of session at %d (from %s)",
                first, end - 1, self._session, self._eos, source.name,
            )  # fmt: skip

    def _mark_after(self, first: int, end: int) -> None:
        """``[first, end)`` beyond the end is named (or gathered to be): see
        ``_after_named``."""
        spans = self._after_named
        i = bisect_left(spans, [first])
        spans.insert(i, [first, end])
        if i + 1 < len(spans) and spans[i + 1][0] <= end:  # merge with the one after
            spans[i][1] = max(end, spans.pop(i + 1)[1])
        if i and spans[i - 1][1] >= first:  # and with the one before
            spans[i - 1][1] = max(spans[i - 1][1], spans.pop(i)[1])
        if len(spans) > _MAX_PAST_NAMED:
            del spans[0]

    def _after_below(self, first: int, end: int) -> None:
        """Data ``[first, end)`` beyond the end but below ``_after_hw`` (it arrived after
        data beyond it): the numbers not named yet are named now, each range at once."""
        holes = []
        for a, b in self._after_named:
            if a >= end:
                break
            if a > first:
                holes.append((first, a))
            first = max(first, b)
        if first < end:
            holes.append((first, end))
        session = self._session or ""
        for a, b in holes:
            self._mark_after(a, b)
            self._events.append(MessagesAfterEnd(session, a, b - 1, self._eos or a))
            logger.info(
                "messages %d..%d of %r arrived beyond its end of session at %d (late)",
                a, b - 1, session, self._eos,
            )  # fmt: skip

    def _name_lost(
        self,
        spans: list[list[int]],
        first: int,
        end: int,
        end_seq: int,
        now: float,
        session_raw: bytes | None = None,
    ) -> None:
        """Live data ``[first, end)`` where ``spans`` (ranges reported lost, see
        ``_lost_spans``) still lie: it arrived after all (the loss was reported on a
        forger's evidence, or the datagram came late), so what it covers is named
        (``MessagesAfterEnd``, ``end_seq`` where the session ended or was left, or the
        next number to deliver) and taken out of ``spans``, each number once; as for a
        session left behind (:meth:`_past_after`, whose runs it shares), the first packet
        of a run is named at once and the consecutive numbers that follow it together."""
        key = session_raw if session_raw is not None else self._session_raw
        if key is None:
            return
        i = bisect_right(spans, [first]) - 1
        if i < 0 or spans[i][1] <= first:
            i += 1
        while i < len(spans) and spans[i][0] < end:
            a, b = spans[i]
            lo, hi = max(a, first), min(b, end)
            pieces = [p for p in ([a, lo], [hi, b]) if p[1] > p[0]]
            spans[i : i + 1] = pieces
            i += len(pieces) - (1 if hi < b else 0)
            run = self._past_runs.get(key)
            if run is not None and run[1] == lo and run[4] == end_seq:
                run[1] = hi
                run[3] = now
                continue
            if run is not None:
                self._flush_past_run(key)
            session = decode_session(key)
            self._events.append(MessagesAfterEnd(session, lo, hi - 1, end_seq))
            logger.info(
                "messages %d..%d of %r reported lost arrived after all (live)",
                lo, hi - 1, session,
            )  # fmt: skip
            self._past_runs[key] = [hi, hi, now, now, end_seq]
        while len(spans) > _MAX_PAST_NAMED:
            del spans[0]

    def _flush_after_run(self) -> None:
        """Name the run of data gathered after the end (see :meth:`_after_end`)."""
        run = self._after_run
        if run is None:
            return
        self._after_run = None
        first, end = run[0], run[1]
        if end <= first:
            return  # nothing followed the packet named at once
        session = self._session or ""
        self._events.append(MessagesAfterEnd(session, first, end - 1, self._eos or first))
        logger.info(
            "messages %d..%d of %r arrived beyond its end of session at %d",
            first, end - 1, session, self._eos,
        )  # fmt: skip

    def _count_old(self, seq: int, count: int) -> None:
        """Messages below the next one to deliver: duplicates, or before the start."""
        below = min(seq + count, self._first) - seq
        if below > 0:
            self._before_start += below
            count -= below
        if count > 0:
            self._dup_packets += 1
            self._dup_messages += count

    # ------------------------------------------------------------------ confirmation

    def _is_copy(self, claim: _Claim, data: bytes, source: Source, now: float) -> bool:
        """Whether ``data`` is a copy of ``claim``'s datagram (the same line, soon after):
        a network duplicate, which confirms nothing."""
        return claim.source == source and now - claim.at < _REPEAT_INTERVAL and claim.data == data

    def _vouched(self, seq: int, value: int, data: bytes, source: Source, now: float) -> bool:
        """Whether another datagram kept aside already shows that ``seq`` exists (and lies
        near it: see :func:`_vouches`)."""
        for claim in self._claims:
            if _vouches(claim.start, claim.value, seq, value) and not self._is_copy(
                claim, data, source, now
            ):
                return True
        return False

    def _hold_claim(
        self,
        seq: int,
        value: int,
        data: bytes,
        source: Source,
        now: float,
        addr: Address | None,
    ) -> None:
        claims = self._claims
        for claim in claims:
            if self._is_copy(claim, data, source, now):
                self._dup_packets += 1
                claim.copies += 1
                if claim.copies >= _CONFIRMING_COPIES:
                    self._take_claims(claim.value, now, b"", _RETX, claim.start)
                return
        nbytes = len(data) + _PIECE_OVERHEAD
        claims.append(_Claim(seq, value, data, source, now, addr, nbytes))
        self._claim_bytes += nbytes
        while len(claims) > _MAX_CLAIMS:
            old = claims.pop(0)
            self._claim_bytes -= old.nbytes
            self._drop(DROP_UNCONFIRMED, old.source, old.addr)
        self._enforce_held_bound()

    def _keep_tail(self, seq: int, now: float) -> None:
        """A live end of session at ``seq``: a datagram kept aside that ends right at it
        (a real tail after a long outage) is kept as long as that end repeats, so it is
        still there when the end is weighed (see :meth:`_believe_end`)."""
        claims = self._claims
        for claim in claims:
            if claim.value == seq and claim.value > claim.start:
                claims.remove(claim)
                claim.at = now  # (kept in the order they expire)
                claims.append(claim)
                return

    def _take_claims(
        self,
        value: int | None,
        now: float,
        data: bytes = b"",
        source: Source = _RETX,
        start: int = 0,
    ) -> None:
        """Take in, in order of sequence number, every datagram kept aside that is now
        confirmed: by a datagram ``[start, value]`` that vouches for it (and is not a copy
        of it), or because the stream has reached it. ``value`` None takes them all (end
        of input). What is taken in confirms, in turn, what it vouches for."""
        claims = self._claims
        if not claims:
            return
        horizon = self._horizon
        taken: list[_Claim] = []
        kept: list[_Claim] = []
        for claim in claims:
            if (
                value is None
                or claim.start <= horizon
                or (
                    _vouches(start, value, claim.start, claim.value)
                    and not self._is_copy(claim, data, source, now)
                )
            ):
                taken.append(claim)
            else:
                kept.append(claim)
        if not taken:
            return
        i = 0
        while i < len(taken) and kept:
            voucher = taken[i]
            for claim in kept[:]:
                if _vouches(voucher.start, voucher.value, claim.start, claim.value):
                    taken.append(claim)
                    kept.remove(claim)
            i += 1
        self._claims = kept
        for claim in sorted(taken, key=_start_of):
            self._claim_bytes -= claim.nbytes
            self._receive_slow(
                claim.data, claim.source, max(claim.at, now), claim.addr, counted=True, trusted=True
            )

    def _expire_claims(self, now: float) -> None:
        """Datagrams kept aside longer than ``confirm_within`` were never confirmed: drop;
        an end of session the feed kept quiet after for ``end_confirm`` is believed."""
        within = self.config.confirm_within  # the same sum as get_timer: no float gap
        claims = self._claims
        end = self._eos_claim or self._pending_end
        while claims and claims[0].at + within <= now:
            old = claims.pop(0)
            if end is not None and end.copies >= 2 and old.value == end.start and within > 0:
                # right below a repeated end still weighed: kept while it is (its belief
                # takes it in; the quiet after a real end's last datagram may outlast
                # confirm_within when another end delayed it), renewed, still bounded
                old.at = now
                claims.append(old)
                continue
            self._claim_bytes -= old.nbytes
            self._drop(DROP_UNCONFIRMED, old.source, old.addr)
        eos = self._eos_claim
        if eos is not None and eos.at + self.config.end_confirm <= now:
            self._settle_end(eos, now)

    def _settle_end(self, eos: _Claim, now: float) -> None:
        """The feed kept quiet for ``end_confirm`` after an end of session: believed if
        near what is held; one still far beyond it waits on while the numbers before it
        are being fetched (the horizon moved since the last look), else it is dropped."""
        window = max(self.config.max_messages_per_request, _END_WINDOW)
        heard_by = self._asked_heard_by(now)
        fetching = (
            self._horizon > eos.value
            or (
                # too far to be remembered (see _believe_end), its window still being fetched
                eos.start > self._horizon + window
                and 0 < eos.mark < self._expected
                and bool(self._segs)
            )
            # a request for missing numbers in flight, and it would be dropped: neither
            # remembered nor giving way to an end it won over or one remembered
            or (
                heard_by is not None
                and self._eos_rival is None
                and self._pending_end is None
                and not max(self._data_top, self._expected) <= eos.start <= self._horizon + window
            )
        )
        if self._lone_far(eos):
            # numbers nothing real reached lie before it: never believed on the quiet alone
            eos.value, eos.mark, eos.at = self._horizon, self._expected, now
            return
        beyond_by = self._beyond_heard_by(eos.start, now)
        if beyond_by is not None and self._end_is_near(eos.start):
            # a server as slow as the timeouts allow may still answer with data beyond it
            eos.at = beyond_by - self.config.end_confirm  # looked at again then
            return
        if self._end_is_near(eos.start) or not fetching:
            self._eos_claim = None
            self._believe_end(eos.start, now, repeated=eos.copies >= 2, claim=eos)
            rival = self._eos_rival
            if (
                self._eos is None
                and self._eos_claim is None
                and (
                    self._pending_end is not eos
                    # remembered for the numbers before it nothing real reached, while the
                    # end it won over repeated more often at a number nothing real reached
                    # and no server answered for (see _wake_pending_end)
                    or (rival is not None and self._rival_beats(rival, eos.copies))
                )
            ):
                self._revive_refused(eos, now)  # refused: the end it won over stands again
                again = self._eos_claim
                if again is not None and again.at + self.config.end_confirm <= now:
                    self._settle_end(again, now)  # its quiet was kept as long already
            return
        eos.value = self._horizon  # where the fetching stood at this look
        eos.mark = self._expected
        eos.at = now
        if self._claims:
            self._keep_tail(eos.start, now)  # (its quiet starts again: so does the tail's)

    def _name_claims_after_end(self) -> None:
        """The datagrams kept aside beyond a believed end: data named after the end
        (``MessagesAfterEnd``), heartbeats counted; none kept any more."""
        for beyond in self._claims:
            self._claim_bytes -= beyond.nbytes
            if beyond.value > beyond.start:
                self._after_end(beyond.start, beyond.value - beyond.start, beyond.source, None)
            else:
                self._drop(DROP_AFTER_END, beyond.source, beyond.addr, once=True)
        self._claims = []

    def _asked_heard_by(self, now: float) -> float | None:
        """When the outcome of the requests for the missing numbers is known at the latest
        (``_asked_until``), if that is still to come: a server as slow as the configured
        timeouts allow may still answer with data (before an end far ahead: the fetching
        goes on; beyond an end: data that disproves it, evidence a forger cannot remove).
        None when there is no such request, or the switch on silence would not wait for
        it (``_asked_in_flight`` is this, as a yes or no). Bounded: only an answer with
        data restarts the wait, and an honest server holds only the real session's
        numbers."""
        until = self._asked_until()
        if until is None or now >= until or not self._requests or not self._fetch_may_wait(now):
            return None
        # (one at its deadline counts: its next attempt goes out in the same look)
        return until if any(req.deadline >= now for req in self._requests.values()) else None

    def _beyond_heard_by(self, seq: int, now: float) -> float | None:
        """When the outcome of the first requests for the missing numbers at or beyond an
        end of session at ``seq`` is known at the latest, if that is still to come: one
        ``max_request_timeout`` after they were first due (``detected`` plus
        ``request_delay``). A server as slow as the configured timeouts allow may still
        answer with data beyond the end, which disproves it (evidence a forger cannot
        remove). Bounded: a forger's heartbeat or end far ahead that had numbers beyond a
        real end asked for delays it by one ``max_request_timeout`` at most, and never
        beyond the bounds of the wait for a switch (``_fetch_may_wait``)."""
        cfg = self.config
        until = None
        for seg in reversed(self._segs):
            if seg.end <= seq:
                break
            if seg.attempts:
                at = seg.detected + cfg.request_delay + cfg.max_request_timeout
                if now < at and (until is None or at > until):
                    until = at
        if until is None or not self._fetch_may_wait(now):
            return None
        return until

    def _lone_far(self, eos: _Claim) -> bool:
        """Whether the end of session ``eos`` is a lone datagram (one copy, never repeated)
        more than a request window (:data:`_END_WINDOW`) beyond all data held: evidence a
        forger gives for one datagram. Believed on its quiet, it would have that many
        numbers nothing real reached reported lost, and the real data still to come
        too. Such an end is believed only once the data reaches within a window of it or
        it repeats as publishers repeat their end; meanwhile the numbers before it are
        asked for window by window (bounded: one request at a time) and "not yet
        arrived"; a session left meanwhile has them reported as any left session's."""
        window = max(self.config.max_messages_per_request, _END_WINDOW)
        top = self._data_top if self._data_top > self._expected else self._expected
        return eos.copies < 2 and eos.start > top + window

    def _repeated(self, eos: _Claim) -> bool:
        """Whether the end of session ``eos`` repeated as a publisher repeats its end: its
        copies spread over :data:`_END_SPREAD` at least, or three (two copies milliseconds
        apart, one on each line, are a stray's two datagrams)."""
        return eos.copies >= 3 or (eos.copies >= 2 and eos.last - eos.born >= _END_SPREAD)

    def _rival_beats(self, rival: tuple[int, int], copies: int) -> bool:
        """Whether the end ``rival`` (number, copies) beaten by an end with ``copies`` is
        claimed again: it names the next number to deliver, which starts an unpassed gap the
        servers were asked for until out of attempts with no answer (``_unanswered``), and
        it repeated more often, or repeated and is right after all data held (the data
        recovered reached it: of two ends that one wins once it repeated)."""
        if not self._unanswered(rival[0]):
            return False
        return rival[1] > copies or (rival[1] >= 2 and rival[0] >= self._data_top)

    def _unanswered(self, seq: int) -> bool:
        """Whether ``seq`` is the next number to deliver and starts a gap the feed has not
        passed that the servers were asked for until out of attempts with no answer
        (parked): nothing real reached it and no server holds it."""
        segs = self._segs
        if seq != self._expected or not segs:
            return False
        seg = segs[0]
        return seg.start == seq and seg.parks > 0 and self._wit - seg.wit0 < _WITNESSES

    def _chase_end(self, now: float) -> None:
        """An end of session far beyond everything held, with nothing missing before the
        horizon: the next ``max_messages_per_request`` numbers before it are taken as
        missing (one bounded request; a real end's repeats pass them, so a server that
        cannot fill them lets them be reported lost). Answers bring the horizon nearer
        window by window (see :meth:`_on_answer`)."""
        eos = self._eos_claim
        if eos is None or self._segs or eos.start <= self._horizon or not self._started:
            return
        rival = self._eos_rival
        if (
            rival is not None
            and rival[1] >= 2
            and rival[0] == self._horizon == max(self._data_top, self._expected)
        ):  # the data recovered agrees with the repeated end it won over: that end is
            # claimed again (a far end is never believed: the session would never end)
            self._eos_claim = None
            self._revive_refused(eos, now)
            return
        start = self._horizon
        end = min(eos.start, start + self.config.max_messages_per_request)
        self._new_gap(start, end, now)
        self._horizon = end

    def _rival_asked(self) -> bool:
        """Whether the repeated end a far one won over (``_eos_rival``; the far one claimed,
        or remembered: ``_pending_end``) is right after all data held (the data recovered
        reached it: the next number to deliver) and its number is being asked for with
        attempts left: once they run out unanswered, that end is claimed again and ends
        the session there (``_rival_beats``), so a switch on silence waits for that
        (bounded: one range's attempts), not reporting the number the data reached and
        the far end's phantoms lost while its real end is being weighed. An honest server
        holding a real tail beyond it answers the first attempt and disproves it."""
        rival, far = self._eos_rival, self._eos_claim or self._pending_end
        if rival is None or far is None or rival[1] < 2 or self._eos is not None:
            return False
        segs = self._segs
        return (
            rival[0] == self._expected >= self._data_top
            and bool(segs)
            and segs[0].start == rival[0]
            and not self._unanswered(rival[0])
        )

    def _end_stands(self, eos: _Claim, seq: int) -> bool:
        """Whether the end of session ``eos`` stands against live data at ``seq`` beyond
        it: one that repeated does until :data:`_WITNESSES` distinct data datagrams went
        beyond it (the feed went on: it was false). Real publishers repeat their end, so a
        lone forged datagram after it cannot keep the session from ever ending: the quiet
        after it confirms the end, and what was delivered beyond it is named (see
        :meth:`_believe_end`)."""
        if eos.copies < 2:
            return False
        if seq >= eos.beyond_top:  # distinct, not yet counted (also inside a gap that
            # forged far heartbeats or data opened beyond it: the live feed goes on there)
            eos.beyond += 1
            eos.beyond_top = seq + 1
        return eos.beyond < _WITNESSES

    def _end_is_near(self, seq: int) -> bool:
        """Whether an end of session at ``seq`` may be believed: not if it lies far beyond
        everything held, nor if more than that many numbers before it are missing that
        the feed never passed (believing it would have them all asked for and given up:
        without bound, when forged data far ahead opened the gap). See
        :data:`_END_WINDOW`.

        Asked on every datagram while an end is claimed, so it never walks the gaps: the
        unpassed numbers are counted as gaps change (:meth:`_unpassed`); only an end
        below the horizon with more than that many unpassed numbers in all walks, down
        from it over the gaps opened since the last few witnesses, and once near it stays
        near (``_near_upto``)."""
        window = max(self.config.max_messages_per_request, _END_WINDOW)
        horizon = self._horizon
        if seq > horizon + window:
            return False
        session, upto = self._near_upto
        if seq <= upto and session == self._session_raw:
            return True
        if self._unpassed() > window:
            if seq >= horizon:  # every missing number lies below it
                return False
            # (segments are in the order they went missing, ``wit0`` never more than one
            # below that of one before it: past one two below the passed mark, all were)
            passed = self._wit - _WITNESSES
            segs = self._segs
            i = bisect_left(segs, seq, key=_start_of)
            unpassed = 0
            while i:
                i -= 1
                seg = segs[i]
                if seg.wit0 < passed:
                    break
                if seg.wit0 > passed:
                    unpassed += min(seg.end, seq) - seg.start
                    if unpassed > window:
                        return False
        if seq <= horizon:  # gaps open only beyond it now: it stays near
            self._near_upto = (self._session_raw, max(seq, upto))
        return True

    def _unpassed(self) -> int:
        """Missing numbers of the open gaps the feed has not passed (see
        :data:`_WITNESSES`): the sum of ``_by_wit0`` once the keys it passed are let go."""
        by = self._by_wit0
        passed = self._wit - _WITNESSES
        for key in [k for k in by if k <= passed]:
            del by[key]
        return sum(by.values())

    def _less_missing(self, seg: _Segment, count: int) -> None:
        """``count`` numbers of ``seg`` are no longer missing (filled, given up or cut)."""
        self._missing -= count
        by = self._by_wit0
        left = by.get(seg.wit0)
        if left is not None:
            by[seg.wit0] = left - count

    def _on_end_of_session(
        self, seq: int, data: bytes, source: Source, now: float, addr: Address | None
    ) -> None:
        """End of session at ``seq``: a claim, believed once the feed carried nothing else
        of the session for ``end_confirm`` after it (see the module doc). A near gap
        before it is requested at once."""
        if self._eos is not None:
            if seq != self._eos:
                self._drop(DROP_EOS_CONTRADICTED, source, addr, once=True)
            return
        if source == _RETX:
            return  # an answer never ends a session
        claim = self._eos_claim
        if seq < self._expected:  # below what was delivered: the data wins, unless the
            # end repeats and the quiet then confirms it (forged data delivered before it
            # must not keep the session from ever ending; see _believe_end)
            if seq < self._first:  # below the first number wanted: never reached
                self._drop(DROP_EOS_BELOW_DATA, source, addr, once=True)
            elif claim is not None and claim.start == seq:
                claim.copies += 1
                claim.last = now
            elif claim is None:
                self._eos_claim = _Claim(
                    seq, self._horizon, data, source, now, addr, 0, self._repeats(seq, 1)
                )
            else:
                self._drop(DROP_EOS_BELOW_DATA, source, addr, once=True)
            return
        if claim is not None and claim.start == seq:
            claim.copies += 1  # a repeat: the quiet goes on
            claim.last = now
            self._chase_end(now)
            return
        horizon = self._horizon
        near = horizon + self.config.max_messages_per_request
        if claim is not None:  # two ends of session: of those the data agrees with (at
            # or beyond all data held, and near it) the one right after all data held wins
            # once it repeated; else the one repeated more often (a real publisher repeats
            # its end: a lone forged one, even right after all data held, is outrepeated),
            # on a tie the one right after all data held, else the newer
            top = max(self._data_top, self._expected)
            reach = top + max(self.config.max_messages_per_request, _END_WINDOW)
            # (one right after all data held and repeated is kept: a forged farther one
            # cannot make phantom numbers up to it lost; the numbers up to a near farther
            # one are still asked for, so a real tail an honest server holds puts data
            # beyond the kept one once answered, which then disproves it)
            # (with no data taken yet, as in a session seen only through its ends, no end
            # agrees with the data: an end at the first number wins only by its repeats)
            agreed = top if self._data_top or self._expected > self._first else -1
            exact = claim.start == agreed
            rival = self._eos_rival
            copies = rival[1] + 1 if rival is not None and rival[0] == seq else 1
            self._eos_rival = (seq, copies)
            if not top <= claim.start <= reach:
                # (neither agrees with the data, as when forged data far ahead was taken:
                # the one repeated more often, else the newer; one that agrees wins)
                keep = not top <= seq <= reach and copies < claim.copies
            elif not top <= seq <= reach:
                keep = (exact and self._repeated(claim)) or copies <= claim.copies
            elif exact:
                keep = self._repeated(claim) or copies <= claim.copies
            elif seq == agreed:
                keep = copies < 2 <= claim.copies
            else:
                keep = copies < claim.copies
            if keep:
                self._drop(DROP_EOS_CONTRADICTED, source, addr, once=True)
                if horizon < seq <= near:
                    self._new_gap(horizon, seq, now)
                    self._horizon = seq
                elif seq > near and not self._segs and horizon == top:
                    # far: the window after the data is asked for all the same (one
                    # bounded request; cut if the kept end is believed), so a real tail
                    # an honest server holds disproves a forged end right after the data
                    self._new_gap(horizon, near, now)
                    self._horizon = near
                return
            self._eos_rival = (claim.start, claim.copies)
            self._drop(DROP_EOS_CONTRADICTED, claim.source, claim.addr, once=True)
        else:
            copies = self._repeats(seq, 1)
        if horizon < seq <= near:
            self._new_gap(self._horizon, seq, now)  # the tail went missing: ask at once
            self._horizon = seq
        # (``value``: the horizon when it was last looked at; see _settle_end)
        self._eos_claim = _Claim(seq, self._horizon, data, source, now, addr, 0, copies)
        self._chase_end(now)

    def _repeats(self, seq: int, copies: int) -> int:
        """The copies of an end of session at ``seq`` claimed anew: with those it had when
        data beyond it last dropped it, or as the end refused against the claim (the
        claim since dropped), so a real end that repeats between forged datagrams still
        counts as repeated (see ``_end_stands``)."""
        for seen in (self._eos_gone, self._eos_rival):
            if seen is not None and seen[0] == seq:
                copies = max(copies, seen[1] + 1)
        return copies

    def _revive_rival(self, false: _Claim, value: int, now: float) -> None:
        """Data up to ``value`` disproved the end of session ``false`` that had won over
        another end (``_eos_rival``): that other end, if the data does not disprove it too,
        is the end claimed again (with the copies it had), so a forged end repeated more
        often than the real one cannot, once the data shows it false, leave the field to
        its own later repeats below the data (see :meth:`_on_end_of_session`). Data
        held beyond it from before (not this data, nor anything delivered) does not
        disprove one that repeated: a repeated end stands against data beyond it (see
        :meth:`_end_stands`), so forged far data cannot make the real end's repeats void."""
        rival = self._eos_rival
        self._eos_rival = None
        if rival is None or self._session_raw is None:
            return
        seq, copies = rival
        if seq < max(value, self._data_top, self._expected) and (
            copies < 2 or seq < max(value, self._expected)
        ):
            return
        self._claim_again(self._session_raw, seq, copies, false, now)

    def _revive_refused(self, false: _Claim, now: float) -> None:
        """The end of session ``false`` won over another (``_eos_rival``) and was then refused once
        its quiet came (far beyond what the feed showed, or below data without repeats)
        or dropped by live datagrams far below it: that other end, if it repeated, is
        claimed again with its copies, its quiet counted from where the refused one's
        stood (only ends of session came since: the feed carried nothing else of the
        session), so a forger's end repeated more often cannot, by being refused, take
        the real end with it (the session would never end) nor hold it up past the next
        session."""
        rival = self._eos_rival
        if rival is None or rival[1] < 2 or self._session_raw is None or self._ended:
            return
        self._eos_rival = None
        claim = self._claim_again(self._session_raw, rival[0], rival[1], false, now)
        if claim is not None:
            claim.at = min(claim.at, false.at)

    def _claim_again(
        self, session_raw: bytes, seq: int, copies: int, false: _Claim, now: float
    ) -> _Claim | None:
        """The end of session at ``seq`` that came ``copies`` times, claimed again in place
        of ``false`` (from its line and server) with those copies; the claim, if it is
        that end (see :meth:`_revive_rival`, :meth:`_revive_refused`)."""
        data = HEADER.pack(session_raw, seq, END_OF_SESSION)
        self._on_end_of_session(seq, data, false.source, now, false.addr)
        claim = self._eos_claim
        if claim is None or claim.start != seq:
            return None
        claim.copies = max(claim.copies, copies)
        return claim

    def _believe_end(
        self, seq: int, now: float, repeated: bool = False, claim: _Claim | None = None
    ) -> None:
        """The session ends at ``seq``: what was kept aside below it is confirmed, what is
        held or kept aside beyond it is named (:class:`MessagesAfterEnd`) and let go,
        the missing numbers before it can be reported lost, and the tail is requested.
        One below what was delivered is refused, unless it repeated (``repeated``) and the
        quiet confirmed it: then the session ends there, and what was delivered beyond it
        (forged data at the next number, which cannot be told from real) is named.
        ``claim``: the end of session's datagram, whose line a refusal names."""
        source, addr = (claim.source, claim.addr) if claim is not None else (_RETX, None)
        if seq < self._expected:  # the data delivered since went beyond it
            if not repeated:
                self._drop(DROP_EOS_BELOW_DATA, source, addr, once=True)
                return
            top = self._expected
            self._cut_at(top)  # anything held beyond is named, gaps beyond let go
            self._eos = seq
            self._after_hw = max(self._after_hw, top)
            self._mark_after(seq, top)
            session = self._session or ""
            self._events.append(MessagesAfterEnd(session, seq, top - 1, seq))
            self._name_claims_after_end()  # kept aside beyond it: named, never only counted
            logger.warning(
                "session %r ended at %d (its end of session repeated, then the feed fell "
                "quiet) although messages %d..%d were delivered: data beyond the end, "
                "possibly forged",
                session, seq, seq, top - 1,
            )  # fmt: skip
            self._end()
            return
        if seq < self._data_top and not repeated:  # data held beyond it contradicts it:
            # data wins (a forger's lone end cannot truncate what arrived; a real end
            # repeats, so forged data beyond it cannot keep a session from ending)
            self._drop(DROP_EOS_CONTRADICTED, source, addr, once=True)
            return
        window = max(self.config.max_messages_per_request, _END_WINDOW)
        top = max(self._data_top, self._expected)
        if (
            not self._end_is_near(seq)
            and (claim is None or self._unheard != (self._session_raw, seq))
            and not (
                # repeated, at or beyond all data held and within two windows of it, with
                # no more numbers unpassed than a lone end leaves when believed (one
                # window chased, one up to it), having won over an end below it that did
                # not repeat: the numbers that lone other end (forged or not) had asked
                # for are no reason to wait for ever (an end a forger adds delays, never
                # prevents, the end; every number up to it is named). Of two repeated
                # ends see _rival_beats; a lone end waits as before (pending)
                claim is not None
                and self._repeated(claim)
                and self._eos_rival is not None
                and (self._eos_rival[1] < 2 or self._eos_rival[0] < self._expected)
                and self._eos_rival[0] < seq
                and top <= seq <= top + 2 * window
                and self._unpassed() <= 2 * window
            )
        ):  # far beyond what the feed has shown
            if (
                claim is not None
                and self._repeated(claim)
                and any(kept.value == seq for kept in self._claims)
            ):  # a datagram kept aside ends right at it (a real tail after a long
                # outage, then its end repeated): it vouches for that, as a heartbeat
                # would, and is remembered with it (see _tail_unheard)
                self._take_claims(seq, now, b"", _RETX, seq)
                top = max(self._data_top, self._expected)
            pending = self._pending_end
            if (
                claim is not None
                and seq <= self._horizon + window
                and (
                    top <= seq
                    # (or, with no other end weighed against it, below data held it
                    # stands against: repeated, fewer than _WITNESSES distinct datagrams
                    # beyond it; see _end_stands)
                    or (
                        seq >= self._expected
                        and repeated
                        and claim.beyond < _WITNESSES
                        and self._eos_rival is None
                    )
                )
                and (pending is None or seq == top or pending.start != top)
            ):
                # it agrees with the data, only the numbers before it the feed never
                # passed are too many: remembered, claimed again once they are settled
                self._pending_end = claim
                return
            if claim is not None and self._repeated(claim) and seq > self._end_seen:
                self._end_seen = seq  # its numbers are named if the session is left
            self._drop(DROP_UNCONFIRMED, source, addr)
            return
        self._pending_end = None
        self._take_claims(seq, now, b"", _RETX, seq)
        self._eos = seq
        self._name_claims_after_end()
        if seq > self._horizon:
            self._new_gap(self._horizon, seq, now)
            self._horizon = seq
        elif seq < self._horizon:
            self._cut_at(seq)
        self._wit += _WITNESSES  # the feed says it has passed every gap before its end
        self._drain()

    def _cut_at(self, seq: int) -> None:
        """Let go of everything held, missing or given up from ``seq`` on (an end of
        session below data held): held data beyond it is named, never dropped silently."""
        for start in sorted(k for k in self._held if k + len(self._held[k].msgs) > seq):
            piece = self._held[start]
            keep = max(seq - start, 0)
            if keep:
                self._held[start] = _Held(piece.msgs[:keep], 0)
            else:
                del self._held[start]
            self._held_bytes -= piece.nbytes
            if keep:
                kept = self._held[start]
                kept.nbytes = sum(map(len, kept.msgs)) + _MSG_OVERHEAD * keep + _PIECE_OVERHEAD
                self._held_bytes += kept.nbytes
            self._after_end(start + keep, len(piece.msgs) - keep, _RETX, None)
        self._data_top = min(self._data_top, seq)
        segs = self._segs
        i = bisect_left(segs, seq, key=_start_of)
        if i > 0 and segs[i - 1].end > seq:
            self._less_missing(segs[i - 1], segs[i - 1].end - seq)
            segs[i - 1].end = seq
        for seg in segs[i:]:
            seg.alive = False
            self._less_missing(seg, seg.end - seg.start)
        del segs[i:]
        session, upto = self._near_upto
        if upto > seq:  # gaps may open from it again
            self._near_upto = (session, seq)
        for start in [k for k in self._lost if k >= seq]:
            stop, _ = self._lost.pop(start)
            self._lost_messages -= stop - start
        for start, (stop, reason) in list(self._lost.items()):
            if stop > seq:
                self._lost[start] = (seq, reason)
                self._lost_messages -= stop - seq
        self._horizon = seq

    # ------------------------------------------------------------------ sessions

    def _other_session(
        self, session_raw: bytes, data: bytes, source: Source, now: float, addr: Address | None
    ) -> None:
        """A datagram of a session other than the one followed: dropped, or kept as
        evidence for a switch (see :class:`ReceiverConfig`, ``follow_session_changes``)."""
        self._other_packets += 1
        past = self._past.get(session_raw)
        if past is not None:
            self._drop(DROP_OLD_SESSION, source, addr, once=True)
            _session, seq, count = _unpack_header(data)
            left, named = past
            spans = self._past_lost.get(session_raw)
            if spans and source != _RETX and 0 < count < END_OF_SESSION and seq < left:
                self._name_lost(spans, seq, min(seq + count, left), left, now, session_raw)
            if source != _RETX and 0 < count < END_OF_SESSION and seq + count > left:
                # live data of a session left behind: not delivered (a session left is
                # never followed again) but named with its range, never dropped unnamed
                self._past_after(session_raw, left, named, max(seq, left), seq + count, now)
            return
        if self._session_raw is not None and (
            self._pinned or not self.config.follow_session_changes or source == _RETX
        ):
            self._drop(DROP_WRONG_SESSION, source, addr, once=True)  # said once, counted
            return
        cands = self._cands
        cand = cands.get(session_raw)
        if cand is None:
            if len(cands) >= _MAX_CANDIDATES:
                # a session that carried data in two datagrams is pushed out last: a
                # forger's stream of one-packet sessions cannot push out the real next one;
                # among those alike, the one that showed least (distinct data datagrams and
                # ends, never heartbeats: ``shown``) goes first, then the one quiet longest:
                # to push out a real session the forger must show more than it did, under
                # each of more names than the room holds (a cost, not a wall)
                oldest = min(
                    cands,
                    key=lambda s: (
                        cands[s].distinct >= 2 and cands[s].carries,
                        cands[s].shown,
                        cands[s].last_at,
                    ),
                )
                self._forget_candidate(oldest, DROP_WRONG_SESSION)
            cand = cands[session_raw] = _Candidate([], first_at=now)
        waiting = cand.datagrams
        _session, seq, kind = _unpack_header(data)
        if not (
            waiting
            and waiting[-1][1] == source
            and now - waiting[-1][2] < _REPEAT_INTERVAL
            and waiting[-1][0] == data
        ):
            # (a heartbeat below data it sent vouches for nothing: no second witness; a
            # copy of its data on its line a while later is one, as a network duplicate of
            # a quiet session's last datagram is all that session may show, review21)
            if kind or not cand.carries or seq >= cand.top:
                cand.distinct += 1
            fresh = True
        else:
            fresh = False
        cfg = self.config
        size = _waiting_size(data)
        if (
            self._cand_packets + len(self._held) >= cfg.max_held_packets
            or self._cand_bytes + self._held_bytes + size > cfg.max_held_bytes
        ):
            # no room to keep it: counted; once followed, its gap is requested
            self._dropped[DROP_SESSION_BACKLOG] = self._dropped.get(DROP_SESSION_BACKLOG, 0) + 1
            _cand_dropped(cand, seq, kind, cfg.max_messages_per_request)
        else:
            if 0 < kind < END_OF_SESSION and seq + kind > cand.kept_top:
                cand.kept_top = seq + kind
            waiting.append((data, source, now, addr))
            cand.nbytes += size
            self._cand_packets += 1
            self._cand_bytes += size
            if self.config.raw:
                self._events.append(DatagramReceived(data, source, addr))
            held = len(self._held) + self._cand_packets
            if held > self._peak_held:
                self._peak_held = held
        cand.last_at = now
        cand.seen += 1
        if source != _RETX:  # the feed is live (FeedStale means no session sends)
            if self._stale:
                self._stale = False
                last = self._last_live if self._last_live is not None else now
                self._events.append(FeedResumed(now - max(last, self._heard)))
            self._heard = now
        if 0 < kind < END_OF_SESSION:
            if seq + kind > cand.top:
                cand.top, cand.news_at = seq + kind, now
        elif (kind == 0 and seq >= cand.top) or (kind == END_OF_SESSION and seq > cand.end_seq):
            cand.top, cand.news_at = max(cand.top, seq if kind == 0 else 0), now
        if fresh and kind:
            cand.shown += 1
        if 0 < kind < END_OF_SESSION:
            cand.carries = True  # data; heartbeats and ends of session carry none
        elif kind == END_OF_SESSION:
            cand.ends = True
            if cand.first_end_at == _INF:
                cand.first_end_at = now
            if fresh:
                cand.end_count += 1
                cand.end_at = now
            if seq > cand.end_seq:
                cand.end_seq, cand.end_source, cand.end_addr = seq, source, addr
        self._consider_switch(now)

    def _past_after(
        self,
        session_raw: bytes,
        left: int,
        named: dict[int, int],
        first: int,
        end: int,
        now: float,
    ) -> None:
        """Live data ``[first, end)`` of a session left behind at ``left``: named with its
        range, each number once (a copy on the other line is not named again). As for the
        followed session's data after its end (:meth:`_after_end`), the first packet of a
        run is named at once and the consecutive numbers that follow it are gathered and
        named together once the run stops (:data:`_AFTER_END_QUIET`), a run that does
        not follow it comes, or at :meth:`finish` / a session change; while it goes on,
        what it gathered is named every :data:`_AFTER_END_MAX_WAIT`: one event per run
        (and per second it lasts), not per datagram, so a client logging each is bounded."""
        run = self._past_runs.get(session_raw)
        # skip what was named, or is gathered, already: to the first number neither covers
        # (a bisect on the named ranges merged, so a copy costs the same however many)
        _named, starts, ends = self._past_cover(session_raw, named)
        while True:
            i = bisect_right(starts, first) - 1
            if i >= 0 and ends[i] > first:
                first = ends[i]
            if run is not None and run[0] <= first < run[1]:
                first = int(run[1])
                continue
            break
        if first >= end:
            return
        if run is not None:
            if run[1] == first:
                run[1] = end
                run[3] = now
                return
            self._flush_past_run(session_raw)
        self._name_past(session_raw, named, first, end, left)
        self._past_runs[session_raw] = [end, end, now, now, left]

    def _past_cover(
        self, session_raw: bytes, named: dict[int, int]
    ) -> tuple[dict[int, int], list[int], list[int]]:
        """The ranges ``named`` covers, merged and sorted (cached until it changes)."""
        cover = self._past_covers.get(session_raw)
        if cover is not None and cover[0] is named:
            return cover
        starts: list[int] = []
        ends: list[int] = []
        for a, b in sorted(named.items()):
            if ends and a <= ends[-1]:
                if b > ends[-1]:
                    ends[-1] = b
            else:
                starts.append(a)
                ends.append(b)
        cover = self._past_covers[session_raw] = (named, starts, ends)
        if len(self._past_covers) > _MAX_PAST_SESSIONS:
            for name in [x for x in self._past_covers if x not in self._past]:
                del self._past_covers[name]
        return cover

    def _name_past(
        self, session_raw: bytes, named: dict[int, int], first: int, end: int, left: int
    ) -> None:
        """One :class:`MessagesAfterEnd` for ``[first, end)`` of a session left behind."""
        self._past_covers.pop(session_raw, None)  # (its merged ranges change)
        named[first] = end
        if len(named) > _MAX_PAST_NAMED:
            del named[next(iter(named))]
        self._events.append(MessagesAfterEnd(decode_session(session_raw), first, end - 1, left))

    def _flush_past_run(self, session_raw: bytes) -> None:
        """Name the run gathered for a session left behind (see :meth:`_past_after`)."""
        run = self._past_runs.pop(session_raw, None)
        if run is None or run[1] <= run[0]:
            return  # nothing followed the packet named at once
        past = self._past.get(session_raw)
        named: dict[int, int] = past[1] if past is not None else {}
        self._name_past(session_raw, named, int(run[0]), int(run[1]), int(run[4]))

    def _past_runs_due(self) -> float | None:
        """When the earliest run of a session left behind is to be named, or None."""
        if not self._past_runs:
            return None
        return min(
            min(r[3] + _AFTER_END_QUIET, r[2] + _AFTER_END_MAX_WAIT)
            for r in self._past_runs.values()
        )

    def _flush_past_runs(self, now: float | None) -> None:
        """Name the runs of sessions left behind that are due at ``now`` (None: all)."""
        for name in list(self._past_runs):
            r = self._past_runs[name]
            if now is None or now >= r[3] + _AFTER_END_QUIET:
                self._flush_past_run(name)
            elif now >= r[2] + _AFTER_END_MAX_WAIT:  # it goes on: named so far, gathered on
                self._flush_past_run(name)
                self._past_runs[name] = [r[1], r[1], now, r[3], r[4]]

    def _drop_candidate_datagram(self) -> None:
        """Drop the oldest datagram waiting for a session switch (to make room for the
        followed session's own data); counted, and requested once that session is
        followed."""
        cand = min(
            (c for c in self._cands.values() if c.datagrams), key=lambda c: c.datagrams[0][2]
        )
        data, source, _at, addr = cand.datagrams.pop(0)
        _session, seq, count = _unpack_header(data)
        _cand_dropped(cand, seq, count, self.config.max_messages_per_request)
        size = _waiting_size(data)
        cand.nbytes -= size
        self._cand_packets -= 1
        self._cand_bytes -= size
        self._drop(DROP_SESSION_BACKLOG, source, addr, once=True)

    def _forget_candidate(self, session_raw: bytes, reason: str) -> None:
        cand = self._cands.pop(session_raw)
        self._cand_packets -= len(cand.datagrams)
        self._cand_bytes -= cand.nbytes
        for _data, source, _at, addr in cand.datagrams:
            self._drop(reason, source, addr, once=True)

    def _consider_switch(self, now: float) -> None:
        """Follow another session when the evidence is there: the current one ended (and
        its gaps are settled), or it fell silent for ``stale_after`` while the other one
        is live (two distinct datagrams, the last within ``stale_after``); or the current
        one was followed on its ends alone and a session with data waits (``_bare``)."""
        stale_after = self.config.stale_after
        cands = self._cands
        self._switch_check = None
        if stale_after is not None:
            silent = [s for s, c in cands.items() if c.last_at + stale_after <= now]
            if silent:
                # one that is followed now (below), or would be but for the gaps the feed
                # passed in the current session or its end still to confirm, is not
                # forgotten for its silence meanwhile: its datagrams wait (bounded)
                silent = [s for s in silent if not self._keep_silent(cands[s], now)]
            for name in silent:
                self._forget_candidate(name, DROP_WRONG_SESSION)
        if not cands:
            return
        if self._session_raw is None:
            # the first session: the earliest seen that two datagrams name, once no session
            # seen before it may still show its second (an older session ending as the next
            # one starts is followed first; a lone stray delays the start by stale_after)
            # (a session without data, heartbeats or ends alone, never wins: one with data does)
            ready = [s for s, c in cands.items() if c.distinct >= 2 and c.carries]
            if not ready and not any(c.carries for c in cands.values()):
                # a session whose data was all lost shows only its ends: followed once
                # they went on alone for end_confirm (no session with data meanwhile)
                confirm = self.config.end_confirm
                ready = [
                    s
                    for s, c in cands.items()
                    if c.end_count >= 2 and c.first_at + confirm <= now
                ]
            if ready:
                first = min(ready, key=lambda s: cands[s].first_at)
                older = [
                    c
                    for c in cands.values()
                    if c.first_at < cands[first].first_at and c.carries
                ]
                # (the wait for an older one's second datagram, which a lone stray and its
                # heartbeats can prolong, gives way before the room overflows once the older
                # ones have been quiet for a heartbeat interval: a session still sending
                # sends at least that often; the data that arrived is not dropped for a
                # stray, attack8)
                if not older or (
                    self._room_pressed()
                    and all(c.last_at + _QUIET_STRAY <= now for c in older)
                ):
                    # one seen earlier through its ends alone (two distinct, one beyond 1):
                    # a session whose data were all lost on the line, ending as the
                    # receiver joined; followed first to ask the servers for its numbers
                    # (the line's order; forged ends cost a bounded delay, ``_bare``)
                    seen = cands[first].first_at
                    ends_first = [s for s, c in cands.items() if _ended_before(c, seen)]
                    if ends_first:
                        first = min(ends_first, key=lambda s: cands[s].first_at)
                    self._switch_to(first, now)
                    return
        else:
            # the next session is one that carried data in two datagrams (a forger's
            # one-packet sessions never are), the earliest seen of them: the line's order;
            # only when there is none, after an end, the newest with data since the end
            # (then, only when none carried data, one whose end of session names messages
            # its data never brought, still sent after the followed session fell quiet:
            # followed to ask a server for them)
            ready = [s for s, c in cands.items() if _ready(c)]
            evident = [s for s in cands if self._after_quiet(cands[s])]
            if ready and evident:
                # one seen through its ends alone goes before one with data only when the
                # session followed was followed on its ends alone too (as at the start)
                # and the line brought it first (a session whose data were all lost,
                # ending before the next began; forged ends cost a bounded delay: _bare)
                seen = min(cands[s].first_at for s in ready)
                # (or sent only copies since its last news: lone datagrams, no life)
                bare = self._bare_mark is not None or self._news_at() != self._last_live
                evident = [s for s in evident if bare and _ended_before(cands[s], seen)]
            best = (
                min(ready + evident, key=lambda s: cands[s].first_at)
                if ready or evident
                else max(cands, key=lambda s: cands[s].last_at)
            )
            if self._ended and (
                ready or evident or (cands[best].carries and cands[best].last_at >= self._ended_at)
            ):  # a stray seen before the end is no new session
                self._switch_to(best, now)
                return
            if (ready or evident) and self._bare():
                # followed on its heartbeats and ends alone, and no server brought any
                # of its data within its attempts: a session with data goes first (or
                # one seen through its ends alone that the line brought before it)
                self._switch_to(best, now)
                return
            last = now if self._last_live is None else self._last_live
            silent_at = None if stale_after is None else last + stale_after
            if (
                silent_at is not None
                and now >= silent_at
                and (ready or evident)
                and not self._passed_gap_open()
                and not self._end_fetched(now)
                and not self._asked_in_flight(now)
                and not self._rival_asked()
            ):
                eos = self._eos_claim
                if (
                    eos is not None
                    # (nothing missing before it: numbers beyond it the end lets go)
                    and (not self._segs or self._segs[0].start >= eos.start)
                    and stale_after is not None
                    and stale_after >= self.config.end_confirm
                    and self._end_is_near(eos.start)
                ):  # its end came before that silence, which confirmed it: it ends first
                    self._settle_end(eos, now)
                elif self._pending_end is not None:  # (or the end it remembers gave way:
                    self._wake_pending_end(now)  # _rival_asked, now out of attempts)
                self._switch_to(best, now)
                return
            news = self._news_at()
            if (
                (ready or evident)
                and stale_after is not None
                and news is not None
                and news + stale_after <= now
                and not self._segs  # nothing of it asked for: a real session's answers wait
                and self._eos_claim is None  # nor its end being confirmed: it ends first
            ):
                # the followed session sent only copies of what it delivered for
                # stale_after (lone datagrams a forger gives for nothing) while a whole
                # session passed and fell quiet after its repeated end (or one seen
                # through its ends alone since its news): that one goes
                whole = [s for s in ready if self._whole(cands[s], now)] + evident
                if whole:
                    self._switch_to(min(whole, key=lambda s: cands[s].first_at), now)
                    return
        if not cands:
            return
        # look again when the current session would be silent long enough, or when the
        # first candidate is forgotten, or when a session of ends alone has shown them for
        # end_confirm (all in the future: this never spins)
        check = _INF
        if stale_after is not None:
            # (those kept above past their silence are looked at again as the gaps settle)
            due = [c.last_at + stale_after for c in cands.values()]
            check = min((t for t in due if t > now), default=_INF)
            if self._session_raw is not None and self._last_live is not None:
                silent_at = self._last_live + stale_after
                if now < silent_at < check:
                    check = silent_at
                # (and when the answers bringing its missing numbers would stop: _end_fetched)
                fetched = self._brought_at + min(stale_after, self.config.max_request_timeout)
                if self._segs and now < fetched < check:
                    check = fetched
                # (and when the wait for the requests in flight ends: _asked_in_flight)
                asked = self._asked_until()
                if asked is not None and self._requests and now < asked < check:
                    check = asked
                # (and when those waits end however the servers do: _fetch_may_wait)
                bound = silent_at + _FETCH_WAIT_STALES * stale_after
                if self._segs and now < bound < check:
                    check = bound
                news = self._news_at()
                if news is not None and news != self._last_live:
                    # only copies since its news: look again when a whole session may go
                    confirm = self.config.end_confirm
                    for c in cands.values():
                        if (_ready(c) and c.end_count >= 2) or self._after_quiet(c):
                            at = max(news + stale_after, c.last_at + confirm)
                            if now < at < check:
                                check = at
        if self._session_raw is None:
            for c in cands.values():
                if c.ends and not c.carries and now < c.first_at + self.config.end_confirm < check:
                    check = c.first_at + self.config.end_confirm
        self._switch_check = check if check < _INF else None

    def _keep_silent(self, cand: _Candidate, now: float) -> bool:
        """Whether a waiting session silent for ``stale_after`` is kept (not forgotten):
        one that would be followed next, while the followed session is over or ending
        (ended, its gaps the feed passed still asked for, an end of session seen, or
        silent itself). Silence is what a session does once it sent its end, so while
        the followed one is only ending or silent, one is kept only if it sent its end
        (a forger's two data datagrams that fall silent are forgotten as before)."""
        if not (_ready(cand) or self._after_quiet(cand)):
            return False
        if self._ended or self._finishing(now):
            return True
        last, stale_after = self._last_live, self.config.stale_after
        until = self._asked_until()
        if until is not None and now <= until and last is not None and cand.last_at > last:
            # live when the followed one fell silent, and the switch to it may wait for a
            # request in flight (``_asked_in_flight``; up to the wait's last instant, when
            # the switch comes: bounded)
            return True
        if not cand.ends:
            return False
        if _ready(cand) or self._after_quiet(cand):
            # data in two datagrams and its end, or its ends alone since the followed
            # one's last news: a whole next session that fell quiet while the followed
            # one still sends (its tail, copies or a forger's datagrams); kept (bounded
            # by the waiting room) until the followed one is done with
            return True
        return (
            self._eos_claim is not None
            or self._eos is not None
            or (last is not None and stale_after is not None and last + stale_after <= now)
        )

    def _after_quiet(self, cand: _Candidate) -> bool:
        """Whether ``cand`` is evident (``_evident``) and sent an end of session after the
        followed session's last: a stray seen while the feed went on is no next session.
        Once the first session followed (at the start) ended, one whose first end came
        before that session was first seen is older than it (its ends came first on the
        line: it was ending as the receiver
        joined, as yesterday's session ends while today's starts): it is never followed
        after it (no session comes back; a session with data wins at the start, see
        ``_consider_switch``)."""
        last = self._news_at()
        return (
            _evident(cand)
            and (last is None or cand.end_at > last)
            and not (self._ended and cand.first_end_at < self._follow_seen)
        )

    def _bare(self) -> bool:
        """Whether the followed session was followed on its heartbeats and ends alone and
        nothing of its data came (live or from a server) while nothing of it is asked for
        with attempts left: a session that carries data is then followed instead (a
        forger's heartbeats or ends cannot hold the receiver; an honest server answers
        the first attempts at a real session's numbers)."""
        mark = self._bare_mark
        if mark is None or self._data_top or self._delivered != mark or self._held:
            return False
        if self._requests:
            return False
        limit = self.config.max_request_attempts
        return all(seg.attempts >= limit for seg in self._segs)

    def _finishing(self, now: float) -> bool:
        """Whether the followed session is over (its end believed, or silent for
        ``stale_after``) while a gap the feed passed in it is still asked for, or while
        the servers keep bringing its missing numbers (``_end_fetched``)."""
        if self._session_raw is None or self._ended:
            return False
        last, stale_after = self._last_live, self.config.stale_after
        over = self._eos is not None or (
            last is not None and stale_after is not None and last + stale_after <= now
        )
        return over and (self._passed_gap_open() or self._end_fetched(now))

    def _end_fetched(self, now: float) -> bool:
        """Whether numbers of the followed session are missing (before an end of session
        claimed far ahead, window by window; a late join's front gap the feed never
        passed) and the servers keep bringing them (an answer with new data within
        ``max_request_timeout``, at most ``stale_after``: a server slower than a request's
        longest timeout is not bringing them): the real session's silence after its end,
        not staleness; a switch then would report real data the servers hold lost.
        Bounded: only a configured server's answer with data not held before counts (a
        forger's datagrams or a zero-count answer never do), and an honest server holds
        only the real session's numbers."""
        wait = self.config.stale_after
        if not self._segs or wait is None or not self._fetch_may_wait(now):
            return False
        wait = min(wait, self.config.max_request_timeout)
        return now - self._brought_at < wait

    def _fetch_may_wait(self, now: float) -> bool:
        """Whether a switch on the followed session's silence may still wait for its
        missing numbers (``_end_fetched``, ``_asked_in_flight``): for
        :data:`_FETCH_WAIT_STALES` times ``stale_after`` past that silence at most, and only
        while the datagrams waiting for the switch and those held fill under three quarters
        of the held bounds. Real data the servers still hold of it is then reported lost
        ("session changed"), a cost of the bounds: the next session's live data is never
        dropped for the wait, nor delayed beyond it."""
        cfg, last = self.config, self._last_live
        stale_after = cfg.stale_after
        if stale_after is None or last is None:
            return True
        if now >= last + (1 + _FETCH_WAIT_STALES) * stale_after:
            return False
        return not self._room_pressed()

    def _room_pressed(self) -> bool:
        """Whether the datagrams waiting for a switch and those held fill three quarters
        of the held bounds (packets or bytes): a wait that a forger can prolong gives way
        then, before real data that arrived is dropped for room."""
        cfg = self.config
        packets = self._cand_packets + len(self._held)
        nbytes = self._cand_bytes + self._held_bytes
        return 4 * packets >= 3 * cfg.max_held_packets or 4 * nbytes >= 3 * cfg.max_held_bytes

    def _asked_in_flight(self, now: float) -> bool:
        """Whether the switch on the followed session's silence waits for the outcome of
        a request for its missing numbers in flight: while a server as slow as the
        configured timeouts allow may still answer, up to ``max_request_timeout`` after
        the servers were first asked for them since an answer last brought data not held
        before (``_asked_until``). A switch before would report the real data it brings
        lost; once its answer brings data, ``_end_fetched`` holds the switch and the next
        wait counts from the next request. A server that did not answer within that time
        is slower than the timeouts allow: taken for a dead one (no wait). Bounded: a
        forger's datagrams bring no answer with data (only a configured server's does),
        so the switch waits one request timeout past the first request at most."""
        return self._asked_heard_by(now) is not None

    def _asked_until(self) -> float | None:
        """When the wait of ``_asked_in_flight`` ends at the latest (None: no gap open)."""
        if not self._segs:
            return None
        return max(self._asked_at, self._brought_at) + self.config.max_request_timeout

    def _passed_gap_open(self) -> bool:
        """Whether a gap the feed has passed (a believed end passes them all) is still being
        asked for: real data its servers hold, which a switch on staleness would report lost
        although it has attempts left. The switch waits until it is recovered or given up
        with its own reason (the attempts, the servers, the memory bound: all bounded)."""
        if self._missing > self._unpassed():  # (every gap misses a number at least)
            return True
        # a session followed on its ends alone whose numbers a server is bringing: its end
        # says they exist, and they are being delivered (an answer with data ends each
        # request): real data a switch would report lost while it comes
        limit = self.config.max_request_attempts
        return (
            self._bare_mark is not None
            and self._delivered > self._bare_mark
            and any(seg.attempts < limit for seg in self._segs)
        )

    def _news_at(self) -> float | None:
        """When the followed session last sent news: its last live datagram that was not
        a copy of numbers already delivered (a heartbeat at or beyond them is news: a
        real feed's quiet). None before its first."""
        last = self._last_live
        if last is not None and last == self._copy_at:
            return self._news_before if self._news_before > -_INF else None
        return last

    def _whole(self, cand: _Candidate, now: float) -> bool:
        """Whether a waiting session looks whole: data in two datagrams and its end
        repeated, then quiet for ``end_confirm`` (a real session that passed while the
        followed one still sent; its end may be believed as soon as it is followed)."""
        quiet = cand.last_at + self.config.end_confirm <= now
        return _ready(cand) and cand.end_count >= 2 and quiet

    def _phantom(self) -> bool:
        """Whether the followed session showed nothing real: followed on data, nothing of
        it delivered or reported lost since (no server brought any of its numbers), no end
        of it believed, and all it holds is one datagram's numbers (copies of it, which
        vouched for each other: never a second datagram that continues it) beyond a gap at
        its front wider than one request (``max_messages_per_request``) that the feed never
        passed, as two forged data datagrams of the next session's name sent before its
        feed are. Its numbers before that datagram are "not yet arrived", not lost (see
        ``_leave_phantom``). A real session whose first packets were lost (a gap of one
        request or less), or of which two datagrams arrived (a late join in its last
        datagrams, a first burst lost), is not one: its gap is reported lost and what it
        held delivered."""
        held = self._held
        return (
            self._session_raw is not None
            and self._bare_mark is None  # followed on data (one of ends alone is left)
            and not self._ended
            and self._eos is None
            and (self._delivered, self._lost_messages) == self._follow_mark
            and len(held) == 1
            and bool(self._segs)
            and self._segs[0].start == self._expected
            and not self._passed_gap_open()
            and min(held) - self._expected > self.config.max_messages_per_request
        )

    def _leave_phantom(self) -> None:
        """Leave a session that showed nothing real (``_phantom``) without reporting its
        numbers lost: its gaps are dropped (nothing real reached them), the datagram it
        held is named with its range (``MessagesAfterEnd``, ``end_seq`` the first number
        it was waiting for: it was left there), never delivered nor dropped unnamed; its
        name is not remembered as left (see ``_switch_to``), so the real session of that
        name is followed, and delivered from its first number, when it comes."""
        for seg in self._segs:
            seg.alive = False
            self._less_missing(seg, seg.end - seg.start)
        self._segs.clear()
        session, left = self._session or "", self._expected
        for seq in sorted(self._held):
            piece = self._held.pop(seq)
            self._held_bytes -= piece.nbytes
            self._events.append(MessagesAfterEnd(session, seq, seq + len(piece.msgs) - 1, left))

    def _end_repeats(self, now: float) -> float | None:
        """When the end of session last came, if the followed session was followed on
        its ends alone, nothing real reached it since (nothing of it delivered: no data
        on a line, no server answer), no session with data waits, and its end still
        repeats (it came within ``end_confirm``); else None. Its numbers are then "not
        yet arrived", not lost: the spec's publisher repeats its end "for a while", the
        last chance to fill gaps, so they are given up only once its end fell quiet; a
        far end forged before the real feed of that name no longer has its first
        numbers reported lost before they arrive (each asked once more per quiet: a
        bounded cost)."""
        mark = self._bare_mark
        if mark is None or self._delivered != mark:
            return None
        last = self._end_heard
        if now >= last + self.config.end_confirm:
            return None
        if any(c.carries for c in self._cands.values()):
            return None
        return last

    def _switch_to(self, session_raw: bytes, now: float) -> None:
        """Leave the current session for ``session_raw``: close the old one's books, then
        take the new session's datagrams that waited for it."""
        self._flush_after_run()  # the old session's, before the new one's events
        self._flush_past_runs(None)
        old = self._session or ""
        self._take_claims(None, now)
        phantom = self._phantom()
        if phantom:
            self._leave_phantom()
        self._segs_give_up(0, len(self._segs), LOST_SESSION_CHANGED)
        if self._eos is None:
            # the numbers an end of it named (repeated, as a publisher repeats its end) that
            # were never asked for are named too, not forgotten with the end
            ends = [c for c in (self._eos_claim, self._pending_end) if c is not None]
            top = max([c.start for c in ends if self._repeated(c)] + [self._end_seen])
            eos = self._eos_claim
            if (
                eos is not None
                and eos.start > top
                and self._lone_far(eos)
                and self._end_is_near(eos.start)
            ):  # a lone end kept claimed, its numbers asked for up to a window before it
                top = eos.start
            if top > self._horizon:
                self._give_up_range(self._horizon, top, LOST_SESSION_CHANGED)
                self._horizon = top
        self._end_seen = 0
        self._brought_at = -_INF  # (its answers brought the old session's data)
        self._asked_at = -_INF
        self._requests.clear()
        self._next_deadline = _INF
        self._drain()
        self._held.clear()
        self._held_bytes = 0
        self._eos_claim = None
        self._eos_rival = None
        self._eos_gone = None
        self._pending_end = None
        if self._session_raw is not None and not phantom:
            left = self._eos if self._eos is not None else max(self._expected, self._horizon)
            # what was named beyond its end already (MessagesAfterEnd) is not named again
            named = {a: b for a, b in self._after_named if b > left}
            self._past[self._session_raw] = (left, named)
            if self._lost_spans:
                self._past_lost[self._session_raw] = self._lost_spans
            while len(self._past) > _MAX_PAST_SESSIONS:
                gone = next(iter(self._past))
                del self._past[gone]
                self._past_lost.pop(gone, None)
        self._lost_spans = []
        cand = self._cands.pop(session_raw)
        self._cand_packets -= len(cand.datagrams)
        self._cand_bytes -= cand.nbytes
        self._other_packets -= cand.seen  # its datagrams are the followed session's now
        self._session_raw = session_raw
        self._session = decode_session(session_raw)
        start = 1
        if self.config.start_from_first_seen:  # the first data sets the start
            for data, _source, _at, _addr in cand.datagrams:
                _session, seq, count = _unpack_header(data)
                if 0 < count < END_OF_SESSION:
                    start = seq
                    break
        # (a stale feed stays stale: no datagram arrived; the next one says FeedResumed)
        if old:
            self._first = self._expected = self._horizon = start
            self._started = True
            self._events.append(SessionChanged(old, self._session, start))
        self._eos = None
        self._after_hw = 0
        self._after_wit = 0
        self._after_named = []
        self._data_top = 0
        self._wit_top = 0
        self._below_end_top, self._below_end_at = 0, -_INF
        self._ended = False
        self._bare_mark = None if cand.carries else self._delivered
        self._follow_mark = (self._delivered, self._lost_messages)
        self._end_heard = -_INF
        # (at the start only: one seen before the first session followed was ending as
        # the receiver joined; after a switch, one seen first is still followed after)
        self._follow_seen = -_INF if old else cand.first_at
        self._reported.clear()
        self._lost.clear()
        if self._last_live is not None:  # the feed's last datagram: the old session's, maybe
            self._heard = max(self._heard, self._last_live)
        self._last_live = cand.last_at
        self._copy_at = self._news_before = -_INF
        if cand.news_at < cand.last_at:  # what it sent since its last news were copies
            self._copy_at, self._news_before = cand.last_at, cand.news_at
        for data, source, _at, addr in cand.datagrams:
            self._receive_slow(data, source, now, addr, counted=True)
        if cand.dropped_top > self._horizon and self._started and not self._ended:
            # its data beyond what was replayed arrived and was dropped for want of room:
            # numbers the feed passed (asked for, and reported lost if no server holds
            # them), never a gap left waiting for the feed to pass it
            self._new_gap(self._horizon, cand.dropped_top, now, passed=True)
            self._horizon = cand.dropped_top
        claim = self._eos_claim
        if claim is not None and cand.last_at < claim.at:
            # the quiet after its end began with the session's last datagram, not now: a
            # session that repeated its end and fell silent while it waited ends as one
            # followed all along would (not left on staleness before its end is believed)
            claim.at = cand.last_at
            if claim.at + self.config.end_confirm <= now:
                self._settle_end(claim, now)  # quiet long enough already
        self._kept_end(cand, now)
        # drop the rest of a session now left behind, and all others when none is followed
        keep = self.config.follow_session_changes and not self._pinned
        for name in list(self._cands):
            if name in self._past:
                self._forget_candidate(name, DROP_OLD_SESSION)
            elif not keep:
                self._forget_candidate(name, DROP_WRONG_SESSION)
        # the sessions still waiting are looked at again at once: the one followed now may
        # have ended in its replay (its end repeated, then quiet while it waited) or be
        # silent already, and no datagram may come to look for it (the caller returns)
        self._switch_check = now if self._cands else None

    def _kept_end(self, cand: _Candidate, now: float) -> None:
        """The end of session a newly followed session sent while it waited, which the
        replay of its waiting datagrams did not bring (no room was left to keep it): taken
        as if it arrived now, so the quiet after it must still last ``end_confirm``. Only
        at or beyond the data replayed (data wins: data beyond it disproves it) and never
        as a repeat, so it can neither truncate the session nor end it below its data."""
        seq = cand.end_seq
        claim = self._eos_claim
        if not seq or self._ended or self._eos is not None:
            return
        if claim is not None and claim.start == seq:
            return  # the replay brought it
        if seq < max(self._data_top, self._expected):
            self._drop(DROP_EOS_CONTRADICTED, cand.end_source, cand.end_addr, once=True)
            return
        if not self._started:
            if self.config.start_from_first_seen:
                return  # no data fixed where the stream starts: nothing to end
            self._started = True
            self._events.append(SessionStarted(self._session or "", self._expected))
        data = HEADER.pack(self._session_raw, seq, END_OF_SESSION)
        self._on_end_of_session(seq, data, cand.end_source, now, cand.end_addr)

    # ------------------------------------------------------------------ sequencing

    def _new_gap(
        self, start: int, end: int, now: float, by_data: bool = False, passed: bool = False
    ) -> None:
        # data that opened it (counted just before) is its first witness; a heartbeat or
        # an end of session is none; ``passed``: numbers known to have arrived
        wit0 = self._wit - _WITNESSES if passed else self._wit - 1 if by_data else self._wit
        seg = _Segment(start, end, now, wit0=wit0)
        self._segs.append(seg)
        self._missing += end - start
        by = self._by_wit0
        by[wit0] = by.get(wit0, 0) + end - start
        if len(by) > 2 * _WITNESSES:  # let go of the keys the feed passed: they stay few
            self._unpassed()
        self._schedule(seg, now + self.config.request_delay)
        self._gaps += 1
        self._gap_messages += end - start
        self._events.append(GapDetected(self._session or "", start, end - 1))
        if self._debug:
            logger.debug("gap %d..%d (%d messages)", start, end - 1, end - start)

    def _heartbeat_gap(self, value: int, now: float) -> None:
        """The numbers a heartbeat at ``value`` says exist beyond everything held: a gap,
        or, when the highest missing range ends at everything held and the feed has not
        passed it, that range made longer (named by its own ``GapDetected``). A heartbeat
        carries no data: it proves nothing real reached those numbers, and numbers the
        feed never passed are asked for from the front of their range alone, so one range
        serves as well as many, and forged heartbeats each further ahead cost no memory
        (one gap each would grow without bound). It is as unpassed as its newest part."""
        segs = self._segs
        horizon = self._horizon
        if segs:
            seg = segs[-1]
            if seg.alive and seg.end == horizon and self._wit - seg.wit0 < _WITNESSES:
                # the counts kept as gaps change (_missing, _by_wit0): the range moves to
                # its newer witness key with the numbers it gains
                by = self._by_wit0
                had = seg.end - seg.start
                self._less_missing(seg, had)
                seg.end = value
                if self._wit > seg.wit0:
                    seg.wit0 = self._wit
                self._missing += value - seg.start
                by[seg.wit0] = by.get(seg.wit0, 0) + value - seg.start
                self._gaps += 1
                self._gap_messages += value - horizon
                self._events.append(GapDetected(self._session or "", horizon, value - 1))
                return
        self._new_gap(horizon, value, now)

    def _schedule(self, seg: _Segment, due: float) -> None:
        seg.due = due
        self._tie += 1
        heappush(self._due, (due, self._tie, seg))

    def _accept(self, seq: int, msgs: list[bytes], now: float) -> int:
        """Take the data messages ``msgs`` numbered from ``seq``: keep only what is new;
        return how many were new."""
        end = seq + len(msgs)
        if end > self._data_top:
            self._data_top = end
        expected = self._expected
        if end <= expected:
            self._count_old(seq, len(msgs))
            return 0
        if seq < expected:
            self._count_old(seq, expected - seq)
            msgs = msgs[expected - seq :]
            seq = expected
        horizon = self._horizon
        pieces: list[tuple[int, list[bytes]]] = []
        if seq >= horizon:
            if seq > horizon:
                self._new_gap(horizon, seq, now, by_data=True)
            pieces.append((seq, msgs))
            self._horizon = end
        else:
            upto = min(end, horizon)
            filled = self._fill(seq, upto)
            new = 0
            for a, b in filled:
                pieces.append((a, msgs[a - seq : b - seq]))
                new += b - a
                self._events.append(GapFilled(self._session or "", a, b - 1))
            self._recovered += new
            self._dup_messages += (upto - seq) - new
            if end > horizon:
                pieces.append((horizon, msgs[horizon - seq :]))
                self._horizon = end
            elif not filled:
                self._dup_packets += 1
        held = self._held
        new = 0
        for start, part in pieces:
            nbytes = sum(map(len, part)) + _MSG_OVERHEAD * len(part) + _PIECE_OVERHEAD
            held[start] = _Held(part, nbytes)
            self._held_bytes += nbytes
            new += len(part)
        return new

    def _fill(self, start: int, end: int) -> list[tuple[int, int]]:
        """Remove ``[start, end)`` from the missing segments; return the ranges removed."""
        segs = self._segs
        by = self._by_wit0
        i = bisect_right(segs, start, key=_start_of) - 1
        if i < 0 or segs[i].end <= start:
            i += 1
        filled: list[tuple[int, int]] = []
        while i < len(segs) and segs[i].start < end:
            seg = segs[i]
            a = seg.start if seg.start > start else start
            b = seg.end if seg.end < end else end
            filled.append((a, b))
            self._missing -= b - a  # (_less_missing, inlined: the answers' path)
            left = by.get(seg.wit0)
            if left is not None:
                by[seg.wit0] = left - (b - a)
            if seg.start < a:
                if b < seg.end:
                    right = _Segment(
                        b,
                        seg.end,
                        seg.detected,
                        seg.attempts,
                        None,
                        seg.req_seq,
                        seg.avoid,
                        wit0=seg.wit0,
                        parks=seg.parks,
                        fan=seg.fan,
                        lead=seg.lead,
                        inherited=seg.inherited,
                        inherited_own=seg.inherited_own,
                    )
                    seg.end = a
                    segs.insert(i + 1, right)
                    if seg.due is not None:
                        self._schedule(right, seg.due)
                        if seg.parks:  # woken with it
                            self._tie += 1
                            heappush(self._parked, (right.wit0, self._tie, right))
                    elif seg.req_seq == _AHEAD:  # waits for delivery to near it
                        self._tie += 1
                        heappush(self._ahead, (right.start, self._tie, right))
                    elif seg.req_seq == _WAITING:  # waits for a slot with it
                        self._tie += 1
                        heappush(self._slot_wait, (right.start, self._tie, right))
                        if seg.lead is not None:
                            seg.lead.waiting.append(right)
                    i += 2
                else:
                    seg.end = a
                    i += 1
            elif b < seg.end:
                seg.start = b
                seg.own_attempts = seg.inherited_own = 0  # a range of its own now (see _Segment)
                i += 1
            else:
                seg.alive = False
                del segs[i]
        return filled

    def _on_answer(
        self,
        seq: int,
        addr: Address | None,
        now: float,
        progress: bool,
        count: int = 0,
        size: int = 0,
    ) -> None:
        """A re-request answer of ``count`` messages (``size`` bytes) starting at ``seq``
        came: credit its server; when it brought something new (``progress``), finish its
        request and ask for the rest at once (a partial answer: in pieces once the feed
        passed the range, see :meth:`_pump`). One that brought nothing (a server whose
        store lags) leaves the request to time out."""
        if count:
            cost = size + _MSG_OVERHEAD * count
            if cost > self._msg_cost * count:
                self._msg_cost = -(-cost // count)
        req = self._requests.get(seq)
        partial = req is not None and 0 < count < req.count
        if partial:  # what one datagram carries: the size of the pieces (see _pump)
            if cost > self._answer_cost:
                self._answer_cost = cost
            fit = self._fit
            self._fit = count if count >= fit else fit - (fit - count + 3) // 4
        server = self._by_addr.get(addr) if addr is not None else None
        if server is None and req is not None:
            server = req.servers[0]
        awaited = req is not None and not progress and self._awaited(seq, req)
        if server is not None:
            server.answers += 1
            server.failures = 0
            server.heard = now
            if progress:
                server.empty = 0
                self._brought_at = now
            elif awaited and not count:
                server.empty += 1
            if awaited and req is not None and server not in req.answered:
                req.answered += (server,)
            if server.disabled:
                server.disabled = False
                self._events.append(ServerEnabled(server.addr))
        if req is None or awaited:
            return
        # something new came, or nothing it asked for is missing any more (another
        # answer, e.g. a piece's that reached on, or a line brought it): it is done
        del self._requests[seq]
        if req.lead is not None:
            self._free_lead(req.lead, now)
        if self._eos_claim is not None and not self._segs:
            self._chase_end(now)
        if req.deadline <= self._next_deadline:
            self._next_deadline = min(
                (r.deadline for r in self._requests.values()), default=_INF
            )
        segs = self._segs
        i = bisect_right(segs, seq, key=_start_of)
        i = max(i - 1, 0)
        while i < len(segs) and (segs[i].start < req.end or segs[i].req_seq == seq):
            seg = segs[i]
            if seg.req_seq == seq and seg.due is None:
                # partial answer: request the rest at once, as a fresh range
                seg.req_seq = -1
                seg.attempts = 0
                seg.inherited = 0
                seg.avoid = ()
                seg.fan = seg.fan or partial
                self._schedule(seg, now)
            i += 1
        if progress and req.family is not None:
            # the pieces cut from this gap while its front went unanswered took those
            # unanswered attempts along; an answer that brought data shows they were the
            # answers' loss, not numbers nothing real reached: each keeps its own only
            lead = req.family
            while i < len(segs) and segs[i].lead is lead:
                seg = segs[i]
                if seg.inherited or seg.inherited_own:
                    seg.attempts -= seg.inherited
                    seg.own_attempts -= seg.inherited_own
                    seg.inherited = seg.inherited_own = 0
                i += 1
        if self._slot_wait and req.piece:
            self._release_slots(now)

    def _awaited(self, seq: int, req: _Request) -> bool:
        """Whether part of what the request at ``seq`` asked for is still missing and
        waits for it (its answer or its timeout)."""
        segs = self._segs
        i = max(bisect_right(segs, seq, key=_start_of) - 1, 0)
        while i < len(segs) and (segs[i].start < req.end or segs[i].req_seq == seq):
            if segs[i].req_seq == seq:
                return True
            i += 1
        return False

    def _drain(self) -> None:
        """Deliver what is held from ``expected`` on and pass over ranges given up."""
        expected = self._expected
        held = self._held
        if expected not in held and expected not in self._lost:  # waiting on a gap
            if self._eos is not None and not self._ended and expected >= self._eos:
                self._end()
            return
        lost = self._lost
        batch: list[bytes] | None = None
        batch_seq = expected
        events = self._events
        raw = self.config.raw
        session = self._session or ""
        while True:
            piece = held.pop(expected, None)
            if piece is not None:
                self._held_bytes -= piece.nbytes
                msgs = piece.msgs
                if batch is None:
                    batch = msgs
                    batch_seq = expected
                else:
                    batch += msgs
                expected += len(msgs)
                continue
            gone = lost.pop(expected, None)
            if gone is None:
                break
            if batch is not None:
                self._deliver(batch_seq, batch, raw, events, session)
                batch = None
            stop, reason = gone
            while True:  # merge consecutive ranges given up for the same reason
                nxt = lost.get(stop)
                if nxt is None or nxt[1] != reason:
                    break
                del lost[stop]
                stop = nxt[0]
            events.append(MessagesLost(session, expected, stop - 1, reason))
            spans = self._lost_spans
            if spans and spans[-1][1] == expected:
                spans[-1][1] = stop
            else:
                spans.append([expected, stop])
                if len(spans) > _MAX_PAST_NAMED:
                    del spans[0]
            logger.info("messages %d..%d of %r lost: %s", expected, stop - 1, session, reason)
            expected = stop
        if batch is not None:
            self._deliver(batch_seq, batch, raw, events, session)
        self._expected = expected
        if self._eos is not None and not self._ended and expected >= self._eos:
            self._end()

    def _end(self) -> None:
        """Everything before the end of session is delivered or lost: the session ended."""
        self._ended = True
        self._ended_at = self._clock
        self._events.append(SessionEnded(self._session or "", self._eos or self._expected))
        self._requests.clear()
        self._next_deadline = _INF

    def _deliver(
        self, seq: int, batch: list[bytes], raw: bool, events: list[Event], session: str
    ) -> None:
        self._delivered += len(batch)
        if not raw:
            events.append(MessagesDelivered(session, seq, batch))

    def _give_up_range(self, start: int, end: int, reason: str) -> None:
        self._lost[start] = (end, reason)
        self._lost_messages += end - start

    def _segs_give_up(self, i: int, j: int, reason: str) -> None:
        """Report segments ``i..j-1`` lost (delivered in order by :meth:`_drain`)."""
        for seg in self._segs[i:j]:
            seg.alive = False
            self._give_up_range(seg.start, seg.end, reason)
            self._less_missing(seg, seg.end - seg.start)
        del self._segs[i:j]

    def _enforce_held_bound(self) -> None:
        """Past the held bound (what is held, kept aside and waiting for a switch, all
        counted), drop the oldest datagram of another session first (counted as
        ``next_session_backlog_full``: a stray backlog never costs a real gap); then give
        up the oldest gap (delivering what it held back); with no gap left, drop the oldest
        datagram kept aside for confirmation."""
        cfg = self.config
        while (
            len(self._held) + len(self._claims) + self._cand_packets > cfg.max_held_packets
            or self._held_bytes + self._claim_bytes + self._cand_bytes > cfg.max_held_bytes
        ):
            segs = self._segs
            if self._cand_packets:
                self._drop_candidate_datagram()
            elif segs:
                j = 1
                while j < len(segs) and segs[j].start == segs[j - 1].end:
                    j += 1
                self._segs_give_up(0, j, LOST_HELD_LIMIT)
                self._drain()
            elif self._claims:
                old = self._claims.pop(0)
                self._claim_bytes -= old.nbytes
                self._drop(DROP_UNCONFIRMED, old.source, old.addr)
            else:
                break
        held = len(self._held) + len(self._claims) + self._cand_packets
        if held > self._peak_held:
            self._peak_held = held
        held_bytes = self._held_bytes + self._claim_bytes + self._cand_bytes
        if held_bytes > self._peak_held_bytes:
            self._peak_held_bytes = held_bytes

    # ------------------------------------------------------------------ requests

    def _choose(
        self,
        now: float,
        avoid: tuple[_Server, ...],
        spread: bool = False,
        final: bool = False,
    ) -> list[_Server]:
        """The servers to send a request to.

        Servers in rotation (else those out of it that are due for another try, else those
        out of it that have answered before), less the ones in ``avoid`` (whose attempt just
        went unanswered) while another is left.
        Those with nothing unanswered since their last answer come first, then those never
        tried, then by how many requests they left unanswered; equals take turns. For a
        range's first request, a zero-count answer while its numbers were still missing (a
        store that lags) counts as one left unanswered, until one of its answers brings
        data: a lagging server costs a request timeout once, not one per gap (a retry may
        still go to it: where the other servers' silence does not count against them, as
        for numbers the feed has not passed, it may be the one that answers). A retry
        when no server is known to answer goes to every other candidate at once, so one
        dead server costs at most one request timeout. The pieces of a large gap
        (``spread``) take turns over the servers that answer and those never tried: a
        dead one costs one piece's timeout, and the piece is asked again elsewhere.
        A range's ``final`` attempt (the one whose failure reports it lost) goes to every
        usable server at once but those that left the attempt before it unanswered (one
        that answered it with nothing, its store lagging, is asked again: it may hold the
        numbers by then, while the turn would fall to a dead one), and to those among them
        that have answered before (its earlier answers to these numbers may have been
        lost; a server never heard from is the worse bet).
        """
        servers = self._servers
        usable = [s for s in servers if not s.disabled]
        if not usable:
            usable = [s for s in servers if s.retry_at <= now]
            if not usable:
                # all out of rotation: one that has answered before is still worth asking
                # while the range has attempts left (a late answer is no death)
                usable = [s for s in servers if s.answers]
                if not usable:
                    return []
        pool = [s for s in usable if s not in avoid] if avoid else usable
        if not pool:
            pool = usable
        if final:
            # and every usable one that has answered before: an answering server whose
            # answers to these numbers were lost is a better bet than one never heard
            pool += [s for s in usable if s.answers and s not in pool]
            return sorted(pool, key=_unheeded)[:_MAX_FANOUT]
        good = [
            s
            for s in pool
            if (s.answers or spread) and not s.failures and not (s.empty and not avoid)
        ]
        if not good and not avoid:
            least = min(map(_unheeded, pool))
            good = [s for s in pool if _unheeded(s) == least]
        if good:
            chosen = good[self._rr % len(good)]
            self._rr += 1
            return [chosen]
        return sorted(pool, key=_unheeded)[:_MAX_FANOUT]

    def _wake_parked(self, now: float) -> None:
        """Ask at once for the parked segments the feed has now passed."""
        parked = self._parked
        passed = self._wit - _WITNESSES
        woken = False
        while parked and parked[0][0] <= passed:
            seg = heappop(parked)[2]
            if seg.alive and seg.due is not None:
                self._schedule(seg, now)
                woken = True
        if woken:
            self._refresh(now)

    def _timeout_for(self, attempts: int) -> float:
        cfg = self.config
        try:
            timeout = cfg.request_timeout * cfg.request_backoff ** max(attempts - 1, 0)
        except OverflowError:  # (a gap never passed is asked for as long as it lasts)
            return cfg.max_request_timeout
        return min(timeout, cfg.max_request_timeout)

    def _index(self, seg: _Segment) -> int:
        return bisect_left(self._segs, seg.start, key=_start_of)

    def _release_ahead(self, now: float) -> bool:
        """Ranges waiting in ``_ahead`` (for a request slot, or for delivery to near
        them): as many as there are own request slots free are due now, the
        lowest-numbered first (delivery waits on them), up to :meth:`_reach_end`.
        Whether any was."""
        released = False
        ahead = self._ahead
        reqs = self._requests
        free = self.config.max_requests_in_flight - len(reqs)
        if self._fit:  # (pieces only once an answer came back partial)
            free += sum(r.piece for r in reqs.values())
        if free <= 0 or not ahead:  # (the cheap checks first)
            return False
        reach = self._reach_end()
        room = self._room() if reach != _NO_REACH else _NO_REACH
        while ahead and free > 0 and ahead[0][0] < reach:
            seg = heappop(ahead)[2]
            if seg.alive and seg.req_seq == _AHEAD and seg.due is None:
                if seg.start >= reach or (room <= 0 and seg is not self._segs[0]):
                    # its front filled since: keyed anew; or no held room for its
                    # answer (the lowest waits first: nothing above it goes either)
                    self._tie += 1
                    heappush(ahead, (seg.start, self._tie, seg))
                    if room <= 0:
                        break
                    continue
                seg.req_seq = -1
                self._schedule(seg, now)
                free -= 1
                room -= 1
                released = True
        return released

    def _room(self) -> int:
        """How many more requests may go out for ranges above the lowest missing one:
        what comes back for them is held until that one comes, so the answers of those
        in flight and of these fit in half the held room left (the other half stays for
        live data), and the receiver's own requests never fill the held bounds. Each
        answer counts as two held pieces (it may end one range and start the next) of
        what one answer could cost: the largest datagram of ``max_messages_per_request``
        messages, or that many of the costliest message answered so far, or the
        costliest answer cut short by what a datagram carries, whichever is least. The
        lowest missing range is always asked for: its answer is delivered, not held."""
        cfg = self.config
        room = (
            cfg.max_held_packets - len(self._held) - len(self._claims) - self._cand_packets
        ) // 4
        most = cfg.max_messages_per_request
        cost = MAX_DATAGRAM + _MSG_OVERHEAD * most
        if self._msg_cost and self._msg_cost * most < cost:
            cost = self._msg_cost * most
        if self._answer_cost and self._answer_cost < cost:
            cost = self._answer_cost
        free = cfg.max_held_bytes - self._held_bytes - self._claim_bytes - self._cand_bytes
        return min(room, free // (2 * (cost + 2 * _PIECE_OVERHEAD))) - len(self._requests)

    def _reach_end(self) -> int:
        """Up to where the ranges of a passed gap are asked for: delivery is gated by the
        lowest missing numbers, and whatever comes back beyond them is held until they
        come, so requests stay within what the held bounds can keep (half of
        ``max_held_packets`` past the next number to deliver, one request's worth when
        the held bytes pass half of ``max_held_bytes``) and within what
        ``max_requests_in_flight`` gaps' own requests cover. With every server out of
        rotation (nothing is coming back) there is no bound: each range's attempts run at
        once, so a dead server's gap is reported lost in about one range's attempts per
        ``max_requests_in_flight`` windows."""
        cfg = self.config
        most = cfg.max_messages_per_request
        reach = min(cfg.max_held_packets // 2, cfg.max_requests_in_flight * most)
        if self._held_bytes * 2 > cfg.max_held_bytes:
            reach = most
        servers = self._servers
        if servers and servers[0].disabled and all(s.disabled for s in servers):
            return _NO_REACH
        return self._expected + max(reach, most)

    def _free_lead(self, lead: _Lead, now: float) -> None:
        """A gap's lead request ended: the lowest of its pieces waiting for a slot, if
        any, is due now (it takes the lead)."""
        lead.busy = False
        if lead.waiting:
            live = [s for s in lead.waiting if s.req_seq == _WAITING and s.due is None]
            if live:
                seg = min(live, key=_start_of)
                live.remove(seg)
                if seg.alive:
                    seg.req_seq = -1
                    self._schedule(seg, now)
            lead.waiting = [s for s in live if s.alive]

    def _release_slots(self, now: float) -> None:
        """Pieces waiting for a slot (see :meth:`_pump`): as many as there are free
        slots are due now, the lowest-numbered first."""
        waiting = self._slot_wait
        free = self.config.max_pieces_in_flight - sum(r.piece for r in self._requests.values())
        while waiting and free > 0:
            seg = heappop(waiting)[2]
            if seg.alive and seg.req_seq == _WAITING and seg.due is None:
                seg.req_seq = -1
                self._schedule(seg, now)
                free -= 1

    def _pump(self, now: float) -> None:
        """Send the requests that are due, within the in-flight bounds.

        A gap the feed has passed is asked for in pieces once an answer to it came back
        partial (``_Segment.fan``): pieces of what one answer carried (``_fit``, a little
        less, so that answers overlap rather than leave holes), each asking on to the end
        of its gap (at most ``max_messages_per_request``: its answer carries what fits
        and shows how much that is), each a segment of its own (its own timeout, attempts,
        backoff and server). Each gap (up to ``max_messages_per_request``: a passed one is
        cut there first) keeps one request in flight outside the bound (its
        :class:`_Lead`, handed on when that request ends); beyond it, at most
        ``max_pieces_in_flight`` piece requests per core. A piece with no free slot waits
        in ``_slot_wait`` and its lead's list (no entry in the due heap, ``req_seq``
        :data:`_WAITING`) until a piece's request or its lead's ends. Gaps not passed are never cut
        into pieces: numbers nothing real has reached cost one bounded request at a time.
        """
        cfg = self.config
        heap = self._due
        limit = cfg.max_requests_in_flight
        most = cfg.max_messages_per_request
        session_raw = self._session_raw
        if session_raw is None:
            return
        fit = self._fit
        whole = min(fit, most) if fit else most  # what one answer carries
        piece = max(whole - whole // 8, 1)  # a piece: a little less
        reach = self._reach_end()
        room = self._room() if reach != _NO_REACH else _NO_REACH
        if self._slot_wait:
            self._release_slots(now)
        slots = cfg.max_pieces_in_flight
        if self._fit:  # (pieces only once an answer came back partial)
            slots -= sum(r.piece for r in self._requests.values())
        ahead = self._ahead
        if ahead:
            self._release_ahead(now)
        while heap and heap[0][0] <= now:
            due, _, seg = heap[0]
            if not seg.alive or seg.due != due:
                heappop(heap)
                continue
            passed = self._passed(seg, now)
            lead = seg.lead
            if lead is None:
                lead = seg.lead = _Lead()
            fan = passed and seg.fan
            is_piece = fan and lead.busy
            if (
                passed and room <= 0 and seg is not self._segs[0]
            ) or (  # no held room for its answer (see _room): not yet
                not is_piece
                and (
                    (passed and seg.start >= reach)  # far ahead of delivery: not yet
                    or len(self._requests) - (cfg.max_pieces_in_flight - slots) >= limit
                )
            ):  # (the pieces' slots come on top of the gaps' own requests)
                heappop(heap)
                seg.due = None
                seg.req_seq = _AHEAD
                self._tie += 1
                heappush(ahead, (seg.start, self._tie, seg))
                continue
            if is_piece and slots <= 0:  # wait for a piece's request to end
                heappop(heap)
                seg.due = None
                seg.req_seq = _WAITING
                self._tie += 1
                heappush(self._slot_wait, (seg.start, self._tie, seg))
                lead.waiting.append(seg)
                continue
            heappop(heap)
            final = passed and seg.own_attempts + 1 >= cfg.max_request_attempts
            servers = self._choose(now, seg.avoid, spread=fan, final=final)
            if not servers:
                give_up_at = seg.detected + cfg.loss_grace
                last = self._end_repeats(now)
                if last is not None:  # not yet arrived while its end repeats
                    give_up_at = max(give_up_at, last + cfg.end_confirm)
                if now >= give_up_at and passed:
                    reason = LOST_NO_SERVERS if not self._servers else LOST_ALL_SERVERS_OUT
                    i = self._index(seg)
                    self._segs_give_up(i, i + 1, reason)
                    continue
                # wait for the grace period, for the feed to pass it (numbers nothing
                # real has reached are not lost), or for a server due for another try
                again = give_up_at if now < give_up_at else now + cfg.max_request_timeout
                retry = min((s.retry_at for s in self._servers), default=again)
                self._schedule(seg, min(again, max(retry, now + 1e-6)))
                continue
            if seg.attempts >= cfg.max_request_attempts and passed:
                if seg.own_attempts >= cfg.max_request_attempts:
                    # its own attempts too were spent while its numbers had not arrived:
                    # asked once more now, with the longest timeout (a server that holds
                    # it has its full time to answer), given up if that goes unanswered
                    seg.attempts = seg.inherited = cfg.max_request_attempts - 1
                    seg.own_attempts = seg.inherited_own = cfg.max_request_attempts - 1
                else:
                    seg.attempts = 0  # out of attempts while not yet passed: fresh ones now
                    seg.inherited = 0
            end = ask = seg.end
            if end - seg.start > most:
                if passed:  # a gap of its own from there (its own lead and pieces)
                    rest = _Segment(seg.start + most, seg.end, seg.detected, wit0=seg.wit0)
                    seg.end = seg.start + most
                    self._segs.insert(self._index(seg) + 1, rest)
                    self._schedule(rest, due)
                end = ask = seg.start + most  # not passed: only its front is asked for
            if fan and end - seg.start > whole:  # a piece off its front; the rest waits
                rest = _Segment(  # with the attempts its numbers went unanswered so far
                    seg.start + piece,
                    end,
                    seg.detected,
                    seg.attempts,
                    wit0=seg.wit0,
                    own_attempts=seg.own_attempts,
                    fan=True,
                    lead=lead,
                    inherited=seg.attempts,
                    inherited_own=seg.own_attempts,
                )
                seg.end = end = seg.start + piece
                self._segs.insert(self._index(seg) + 1, rest)
                self._schedule(rest, due)
            count = ask - seg.start
            seg.attempts += 1
            seg.own_attempts += 1
            seg.due = None
            seg.req_seq = seg.start
            deadline = now + self._timeout_for(seg.attempts)
            if self._asked_at <= self._brought_at:
                self._asked_at = now  # (the first request since data was last brought)
            holds = not lead.busy
            lead.busy = True
            self._requests[seg.start] = _Request(
                end,
                tuple(servers),
                deadline,
                passed,
                count,
                is_piece,
                lead if holds else None,
                lead,
            )
            if is_piece:
                slots -= 1
            room -= 1
            if deadline < self._next_deadline:
                self._next_deadline = deadline
            request = HEADER.pack(session_raw, seg.start, count)
            for server in servers:
                server.requests += 1
                if server.heard is None or server.asked + self._attempts_span() <= now:
                    server.heard = now  # (idle since: its silence is counted from here)
                server.asked = now
                self._out.append((request, server.addr))

    def _passed(self, seg: _Segment, now: float) -> bool:
        """Whether the feed has passed the missing range ``seg`` (:data:`_WITNESSES`; a
        believed end passes every gap before it), so that no answer is a failure and it
        may be given up once out of attempts. Not while live data below a believed end
        still arrives (within ``end_confirm``) and the range lies beyond it: the feed has
        not reached those numbers yet (an end believed in a line outage of a live feed),
        and a server's silence about them is no failure. Bounded: each such datagram must
        go beyond the last, below the end."""
        if self._wit - seg.wit0 < _WITNESSES:
            return False
        return not (
            self._eos is not None
            and seg.start >= self._below_end_top
            and now < self._below_end_at + self.config.end_confirm
        )

    def _attempts_span(self) -> float:
        """How long one range's ``max_request_attempts`` unanswered attempts take."""
        return sum(self._timeout_for(k) for k in range(1, self.config.max_request_attempts + 1))

    def _all_silent(self, now: float, detected: float) -> bool:
        """Whether every server fell silent while a range detected at ``detected`` was
        missing: each left ``max_request_attempts`` requests for numbers the feed passed
        unanswered in a row, and answered nothing (nor anything at all) for as long as one
        range's attempts take. A range of such a gap that then times out is given up at
        once, as a range asked for from its front is when the front runs out: a server
        that stopped answering costs one range's attempts, not one per window or piece.
        A gap opened after the silence began gets its attempts in full, and any answer
        ends the silence. The silence is counted from the first of those requests to time
        out, not from its last answer: ranges asked for after a quiet spell, their first
        attempts timing out together, are no silence as long as one range's attempts."""
        servers = self._servers
        if not servers:
            return False
        limit = self.config.max_request_attempts
        span = self._attempts_span()
        for server in servers:
            heard = server.heard
            if (
                heard is None
                or server.failures < limit
                or heard + span > now
                or heard < detected
                or server.failing_since + span > now
            ):
                return False
        return True

    def _expire_requests(self, now: float) -> None:
        """Requests unanswered past their deadline: count the failure, retry or give up."""
        expired = [seq for seq, req in self._requests.items() if req.deadline <= now]
        cfg = self.config
        for seq in expired:
            req = self._requests.pop(seq)
            if req.lead is not None:
                self._free_lead(req.lead, now)
            for server in req.servers:
                server.timeouts += 1
                if not req.counted:
                    continue  # numbers the feed has not passed: no answer is no failure
                if not server.failures:
                    server.failing_since = now
                server.failures += 1
                if server.disabled:
                    server.retry_at = now + cfg.server_retry_interval
                elif server.failures >= cfg.max_rerequest_retries:
                    server.disabled = True
                    server.retry_at = now + cfg.server_retry_interval
                    self._events.append(ServerDisabled(server.addr, server.failures))
            segs = self._segs
            i = max(bisect_right(segs, seq, key=_start_of) - 1, 0)
            while i < len(segs) and (segs[i].start < req.end or segs[i].req_seq == seq):
                seg = segs[i]
                if seg.req_seq == seq and seg.due is None:
                    seg.req_seq = -1
                    passed = self._passed(seg, now)
                    last = self._end_repeats(now)
                    if passed and seg.own_attempts >= cfg.max_request_attempts and last is not None:
                        # its end still repeats: asked once more when it fell quiet
                        self._schedule(seg, max(now, last + cfg.end_confirm))
                        seg.avoid = req.servers
                        i += 1
                        continue
                    if passed and (
                        seg.own_attempts >= cfg.max_request_attempts
                        or self._all_silent(now, seg.detected)
                    ):
                        # with it, the pieces of its gap right behind it (as one range
                        # asked for from its front is lost when the front runs out)
                        j = i + 1
                        while (
                            j < len(segs)
                            and segs[j].start == segs[j - 1].end
                            and segs[j].lead is seg.lead
                        ):
                            j += 1
                        self._segs_give_up(i, j, LOST_ATTEMPTS_EXHAUSTED)
                        continue
                    if not passed and (
                        seg.own_attempts >= cfg.max_request_attempts
                        or (
                            seg.attempts >= cfg.max_request_attempts
                            and now < self._other_at + cfg.max_request_timeout
                        )
                    ):
                        # not passed by the feed: not yet arrived; asked again once it is,
                        # or after a wait that doubles each time (requests stay few); a
                        # range whose front live data moved gets its own attempts at its
                        # new front once the feed stopped (while it flows, the feed may
                        # pass it: the attempts at its old fronts count)
                        seg.parks += 1
                        wait = cfg.server_retry_interval * 2 ** min(seg.parks - 1, 6)
                        self._schedule(seg, now + wait)
                        self._tie += 1
                        heappush(self._parked, (seg.wit0, self._tie, seg))
                        i += 1
                        # (the next attempt goes elsewhere too, but not away from a server
                        # that answered with nothing: its store lags, it may hold them then)
                        seg.avoid = tuple(s for s in req.servers if s not in req.answered)
                        continue
                    seg.avoid = req.servers
                    if (
                        passed
                        and seg.own_attempts + 1 >= cfg.max_request_attempts
                        and req.answered
                    ):
                        # its final attempt: a server that answered this one with nothing
                        # (its store lags) may hold the numbers by then (see _choose)
                        seg.avoid = tuple(s for s in req.servers if s not in req.answered)
                    self._schedule(seg, now)
                i += 1
        self._next_deadline = min((r.deadline for r in self._requests.values()), default=_INF)
        if self._slot_wait:
            self._release_slots(now)

    def _wake_pending_end(self, now: float) -> None:
        """The end of session remembered for the numbers before it the feed never passed
        (``_pending_end``): once they are recovered or given up (few enough are left to
        believe it), or no server can bring them (:meth:`_tail_unheard`), it is claimed
        again, as if it arrived now (the quiet that confirms it must last ``end_confirm``
        from here; data beyond it still disproves it)."""
        pending = self._pending_end
        if pending is None or self._eos_claim is not None or self._eos is not None or self._ended:
            return
        rival = self._eos_rival
        if rival is not None and self._rival_beats(rival, pending.copies):
            # the end it won over repeated more often, at the next number to deliver, which
            # nothing real reached and no server answered for: that end is claimed again,
            # its quiet counted from the remembered one's or the session's last datagram
            # that was no end, whichever came later (forged data far ahead and a far end
            # agreeing with it cannot keep the real end from ending the session; a server
            # that holds the numbers answers, and the remembered end waits for them)
            self._revive_refused(pending, now)
            claim = self._eos_claim
            if claim is not None:
                claim.at = min(now, max(pending.at, self._other_at))
                if claim.at + self.config.end_confirm <= now:
                    self._settle_end(claim, now)  # its quiet was kept as long already
            return
        if not self._end_is_near(pending.start):
            if not self._tail_unheard(pending):
                return
            self._unheard = (self._session_raw, pending.start)  # (believable after its quiet)
        self._pending_end = None
        if pending.start < self._expected or (
            # data held beyond it: a repeated end stands against fewer than _WITNESSES
            # distinct live datagrams beyond it (see _end_stands), also when they came
            # while it was remembered (two forged far datagrams cannot void a real end)
            pending.start < self._data_top
            and not self._repeated(pending)
        ):
            self._drop(DROP_EOS_CONTRADICTED, pending.source, pending.addr, once=True)
            return
        self._on_end_of_session(pending.start, pending.data, pending.source, now, pending.addr)
        claim = self._eos_claim
        if claim is not None and claim.start == pending.start:
            claim.copies = max(claim.copies, pending.copies)

    def _tail_unheard(self, pending: _Claim) -> bool:
        """Whether the end remembered for the numbers before it the feed never passed
        (``pending``) is believable all the same: it repeated, it is right after the data
        held (a datagram that arrived ends at it: a real tail after a long outage), and no
        server can bring the numbers before it (none configured, or they were asked for
        the next number to deliver until out of attempts with no answer). An honest
        server that holds them answers, and the end waits while it does; the gap is
        bounded (:data:`_VOUCH_WINDOW`), so believing it costs bounded requests."""
        seq = pending.start
        if not self._repeated(pending) or not seq == self._data_top == self._horizon:
            return False
        if seq - self._expected > _VOUCH_WINDOW:
            return False
        return not self._servers or self._unanswered(self._expected)

    def _refresh(self, now: float) -> None:
        """Recompute the protocol timer and whether the fast path may be taken."""
        if self._pending_end is not None and (not self._segs or now >= self._pending_at):
            # (looked at once per request_timeout at most while gaps are open: the look
            # walks them, and a datagram's cost must not grow with their number)
            self._pending_at = now + self.config.request_timeout
            self._wake_pending_end(now)
        timer: float | None = None
        if self._ahead and self._segs:
            self._release_ahead(now)
        if self._requests:
            timer = self._next_deadline
        if self._segs:  # (a range due with no slot free goes to _ahead when pumped)
            heap = self._due
            while heap and (not heap[0][2].alive or heap[0][2].due != heap[0][0]):
                heappop(heap)
            if heap and (timer is None or heap[0][0] < timer):
                timer = heap[0][0]
        elif not self._segs:
            self._due.clear()
            self._ahead.clear()
        self._timer = timer
        self._fast_seq = (
            self._expected
            if (
                self._started
                and self._horizon == self._expected
                and not self.config.raw
                and not self._stale
                and self._eos is None
                and not self._ended
                and not self._claims
                and self._eos_claim is None
            )
            else -1
        )
