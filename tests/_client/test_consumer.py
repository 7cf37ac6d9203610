"""The clients' shared consumer side and back-pressure (moldudp64._client), without sockets."""

from __future__ import annotations

import logging
from itertools import chain

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from client_support import SESSION
from moldudp64._client import Backlog, BatchCursor, EventPolicy
from moldudp64.events import (
    ConsumerOverrun,
    Event,
    FeedStale,
    Message,
    MessagesAfterEnd,
    MessagesDelivered,
    MessagesLost,
    SessionEnded,
)


@settings(max_examples=60, deadline=None)
@given(
    sizes=st.lists(st.integers(0, 6), min_size=1, max_size=8),
    extra=st.lists(st.sampled_from(["lost", "stale", "end"]), max_size=4),
    stops=st.lists(st.integers(1, 9), max_size=6),
)
def test_batch_cursor_hands_each_message_out_once(
    sizes: list[int], extra: list[str], stops: list[int]
) -> None:
    """Any batches, interleaved events and break points: every message exactly once."""
    batches: list[list[Event]] = []
    seq = 1
    want: list[Message] = []
    for n, size in enumerate(sizes):
        batch: list[Event] = []
        data = [b"%d" % (seq + i) for i in range(size)]
        if data:
            batch.append(MessagesDelivered(SESSION, seq, data))
            want.extend(Message(SESSION, seq + i, d) for i, d in enumerate(data))
            seq += size
        if n < len(extra):
            kind = extra[n]
            batch.append(
                MessagesLost(SESSION, seq, seq, "test")
                if kind == "lost"
                else FeedStale(1.0)
                if kind == "stale"
                else SessionEnded(SESSION, seq)
            )
        batches.append(batch)
    feed = iter(batches)
    seen: list[Event] = []
    cursor = BatchCursor(EventPolicy(seen.append, strict=False, stop_at_end=True))
    got: list[Message] = []
    for stop in [*stops, 10**9, 10**9, 10**9, 10**9, 10**9]:
        for i, m in enumerate(chain.from_iterable(cursor.batches(lambda: next(feed, None)))):
            got.append(m)
            if i + 1 == stop:
                break
    assert got == want
    assert seen == [e for b in batches for e in b if not isinstance(e, MessagesDelivered)]


def test_backlog_pauses_past_the_limit_and_resumes_once_at_half() -> None:
    b = Backlog(100)
    assert not b.add(100)  # at the limit: not over it
    assert b.add(1) and b.over()  # the reader must pause
    b.pause()
    assert not b.add(50)  # paused already: not asked again
    assert not b.take(50) and not b.low()  # 101 behind: still too far
    assert b.take(51)  # 50 behind: resume, asked once ...
    assert not b.take(0) and b.low()  # ... not twice for one pause
    b.resume()
    assert (b.paused, b.pauses, b.level) == (False, 1, 50)


def test_backlog_reports_each_kernel_drop_once() -> None:
    b = Backlog(10)
    b.start_drops([11, 12], {11: 5, 99: 7})  # drops before the start are not ours
    assert b.take_overrun() is None and b.kernel_drops == 0
    b.count_drops(11, 8)  # SO_RXQ_OVFL with a datagram: the total so far
    b.poll_drops({11: 8, 12: 2, 99: 1000})  # /proc: same total again, and a stranger
    assert b.take_overrun() == ConsumerOverrun(5)
    assert b.take_overrun() is None
    b.count_drops(12, 1)  # a stale, smaller total never counts backwards
    b.poll_drops(None)  # /proc unreadable
    assert b.take_overrun() is None and b.kernel_drops == 5


@pytest.mark.parametrize("limit", [0, -1])
def test_backlog_limit_must_be_positive(limit: int) -> None:
    with pytest.raises(ValueError, match="positive"):
        Backlog(limit)


def test_event_policy_logs_loss_on_the_logger_it_is_given(
    caplog: pytest.LogCaptureFixture,
) -> None:
    mine = logging.getLogger("moldudp64.test.owner")
    policy = EventPolicy(None, strict=False, stop_at_end=True, log=mine)
    with caplog.at_level(logging.WARNING, logger="moldudp64"):
        policy.handle(MessagesLost(SESSION, 3, 9, "test"))
    assert [(r.name, r.levelno) for r in caplog.records] == [
        ("moldudp64.test.owner", logging.WARNING)
    ]
    assert policy.messages_lost == 7


def test_event_policy_logs_data_after_the_end_a_bounded_number_of_lines(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """20,000 ranges of data after the end (a stray publisher going on, a forger): ten
    lines one by one, then one at each tenfold (100, 1,000, 10,000); every range counted."""
    policy = EventPolicy(None, strict=False, stop_at_end=True)
    with caplog.at_level(logging.WARNING, logger="moldudp64"):
        for k in range(20_000):
            policy.handle(MessagesAfterEnd(SESSION, 10 + 2 * k, 10 + 2 * k, 5))
    lines = [r.getMessage() for r in caplog.records]
    assert len(lines) == 10 + 3, lines[-5:]
    first = f"messages 10..10 of session {SESSION!r} arrived after its end of session at 5"
    assert lines[0] == first
    assert lines[-1].startswith("10000 ranges, 10000 messages, arrived after their end")
    assert (policy.after_end_ranges, policy.after_end_messages) == (20_000, 20_000)
