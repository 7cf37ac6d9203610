"""Finding a sequence number's record over stream sequence, in O(log n) lookups."""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING

from .connection import _nats
from .records import Record, _decode
from .stream import check_stream_name, session_subject

if TYPE_CHECKING:
    from nats.js import JetStreamContext
    from nats.js.api import RawStreamMsg


async def _message_at_or_after(
    js: JetStreamContext, stream: str, subject: str, stream_seq: int, direct: bool = False
) -> RawStreamMsg | None:
    """The subject's first message at or after ``stream_seq``; ``direct``: a direct get
    (the payload raw, no JSON or base64; any replica may answer)."""
    nats = _nats()
    try:
        msg: RawStreamMsg = await js.get_msg(
            stream, seq=max(stream_seq, 1), subject=subject, next=True, direct=direct
        )
    except nats.js.errors.NotFoundError:
        return None
    return msg


async def _record_at_or_after(
    js: JetStreamContext, stream: str, subject: str, stream_seq: int, direct: bool = False
) -> Record | None:
    msg = await _message_at_or_after(js, stream, subject, stream_seq, direct)
    return None if msg is None else _decode(msg)


def _reaches(rec: Record, seq: int) -> bool:
    """Whether a reader wanting ``seq`` takes ``rec``: it holds ``seq`` or more, or ends."""
    return rec.kind == "end" or rec.next_seq > seq


async def find_record(
    js: JetStreamContext,
    stream: str,
    session: str,
    seq: int,
    *,
    below: Record | None = None,
    above: Record | None = None,
    direct: bool = False,
    seen: Callable[[Record], object] | None = None,
) -> tuple[Record | None, int]:
    """The first stored record of ``session`` that holds ``seq`` or comes after it (else
    the last record, or None when there is none), and the number of lookups it took.

    The search runs over stream sequence between a record known not to reach ``seq`` and
    one known to reach it (``below`` and ``above`` when the caller knows such records, e.g.
    from earlier searches, else the session's first and last). Steps alternate between
    interpolation on sequence numbers (records are aligned windows, so it usually lands on
    the record at once) and bisection, so it takes O(log n) lookups at worst and two or
    three on a stream of one session. ``seen`` is called with each record decoded;
    ``direct`` uses direct gets (only safe on a stream of one replica: a lagging replica
    may answer "none" for records it has not yet).

    A record a foreign writer appended behind the tail may mislead the search past a
    record holding ``seq``: :func:`_find` also says the record found's predecessor, so a
    reader sees the tiling broken there and reads from the session's start instead."""
    best, _, lookups = await _find(
        js, stream, session, seq, below=below, above=above, direct=direct, seen=seen
    )
    return best, lookups


async def _find(
    js: JetStreamContext,
    stream: str,
    session: str,
    seq: int,
    *,
    below: Record | None = None,
    above: Record | None = None,
    direct: bool = False,
    seen: Callable[[Record], object] | None = None,
) -> tuple[Record | None, Record | None, int]:
    """As :func:`find_record`, with the record found's predecessor on the subject when the
    search established it (None when not known: the record found is the first or last)."""
    nats = _nats()
    check_stream_name(stream)
    subject = session_subject(stream, session)
    lookups = 0

    async def at_or_after(stream_seq: int) -> Record | None:
        nonlocal lookups
        lookups += 1
        rec = await _record_at_or_after(js, stream, subject, stream_seq, direct)
        if rec is not None and seen is not None:
            seen(rec)
        return rec

    if below is None or above is None or below.stream_seq >= above.stream_seq:
        below = await at_or_after(1)
        if below is None or _reaches(below, seq):
            return below, None, lookups
        try:
            above = _decode(await js.get_last_msg(stream, subject))
        except nats.js.errors.NotFoundError:  # pragma: no cover - purged meanwhile
            return None, None, lookups + 1
        lookups += 1
        if seen is not None:
            seen(above)
        if not _reaches(above, seq):
            return above, None, lookups
    # Invariants: best reaches seq; no record up to low does; the subject has no record
    # after low and before lo, nor after hi and before best (so when lo > hi, low is the
    # record just before best).
    best, low = above, below
    lo, hi = low.stream_seq + 1, best.stream_seq - 1
    step = 0
    while lo <= hi:
        if step % 2 == 0:  # interpolate: where seq falls between low and best
            span = best.seq - low.next_seq
            frac = (seq - low.next_seq) / span if span > 0 else 0.5
            mid = min(hi, max(lo, lo + int(frac * (hi - lo + 1))))
        else:
            mid = (lo + hi) // 2
        step += 1
        rec = await at_or_after(mid)
        if rec is None or rec.stream_seq >= best.stream_seq:
            hi = mid - 1  # no record from mid up to best
        elif _reaches(rec, seq):
            best, hi = rec, mid - 1
        else:
            low, lo = rec, rec.stream_seq + 1
    if best.kind == "data" and len(best.messages) != best.count:  # a caller's light record
        best = await at_or_after(best.stream_seq) or best
    return best, low, lookups
