"""Both clients against a network that is not on their side, live on real sockets.

- A/B arbitration: each line loses packets the other carries; nothing may be requested.
- Forged retransmissions: answers from an address that is no configured server (another
  host, or the server's host on another port) are dropped and counted, never delivered.
- The low-level datagram iterator ends after the end of session, or on close().

Multicast runs inside the test run's private network namespace (the ``multicast``
fixture); the deterministic A/B cases use loopback unicast sockets handed to the client.
"""

from __future__ import annotations

import asyncio
import logging
import random
import re
import socket
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from itertools import pairwise
from pathlib import Path
from typing import Any

import pytest

from cli_helpers import start
from client_support import (
    FAST,
    SESSION,
    Repeater,
    Responder,
    end_of_session,
    expected,
    free_udp_port,
    make_messages,
    make_packets,
    sender,
)
from moldudp64.asyncio.client import AsyncMoldUDP64
from moldudp64.binaryfile import iter_binaryfile
from moldudp64.events import (
    Address,
    DatagramDropped,
    Event,
    Message,
    MessagesAfterEnd,
    SessionChanged,
    SessionEnded,
    Source,
)
from moldudp64.exceptions import ConfigError
from moldudp64.net import open_unicast_socket
from moldudp64.sync.client import AB_REQUEST_DELAY, Datagram, MoldUDP64
from moldudp64.wire import PacketKind

GROUP_A = "239.192.9.1"
GROUP_B = "239.192.9.2"
#: Quick timers; an end of session believed after 0.3 s of quiet (end_confirm: its 2.5 s
#: default would make every test whose feed ends wait that out).
QUICK_END = {"end_confirm": 0.3}  # the default timers, a quick end of session
FORGED_SOURCE_HOST = "127.0.0.66"  # a loopback address like any other: bindable, not a server
README = Path(__file__).resolve().parents[1] / "README.md"


def lines() -> tuple[Address, Address]:
    return (GROUP_A, free_udp_port()), (GROUP_B, free_udp_port())


def complementary_loss(n: int, seed: int, share: float = 0.1) -> tuple[set[int], set[int]]:
    """Disjoint packet indexes that line A and line B lose (about ``share`` of ``n`` each;
    never the last packet, the end of session): every packet is on at least one line."""
    rng = random.Random(seed)
    lost = rng.sample(range(n - 1), 2 * round(share * (n - 1)))
    return set(lost[::2]), set(lost[1::2])


def send_ab(
    tx: socket.socket,
    packets: Sequence[bytes],
    line_a: Address,
    line_b: Address,
    lose: tuple[set[int], set[int]],
    lag: int = 0,
) -> None:
    """Every packet on both lines but where lost, back to back: A's copy of packet i,
    then B's copy of packet i - ``lag``."""
    lose_a, lose_b = lose
    for i in range(len(packets) + lag):
        if i < len(packets) and i not in lose_a:
            tx.sendto(packets[i], line_a)
        j = i - lag
        if j >= 0 and j not in lose_b:
            tx.sendto(packets[j], line_b)


@contextmanager
def watchdog(close: Callable[[], object], seconds: float = 10.0) -> Iterator[threading.Event]:
    """Call ``close`` after ``seconds`` (so a test that would hang fails instead); the event
    tells whether it fired."""
    fired = threading.Event()

    def fire() -> None:
        fired.set()
        close()

    timer = threading.Timer(seconds, fire)
    timer.start()
    try:
        yield fired
    finally:
        timer.cancel()


# --------------------------------------------------------------------------- A/B arbitration


def test_ab_default_request_delay_is_the_arbitration_window() -> None:
    a, b = lines()
    assert MoldUDP64(a).options.receiver_config(raw=False).request_delay == 0.0
    with_b = MoldUDP64(a, line_b_addr=b).options.receiver_config(raw=False)
    assert with_b.request_delay == AB_REQUEST_DELAY == 0.005
    tuned = AsyncMoldUDP64(a, line_b_addr=b, request_delay=0.02)
    assert tuned.options.receiver_config(raw=False).request_delay == 0.02
    assert MoldUDP64(a, request_delay=0).options.receiver_config(raw=False).request_delay == 0
    for bad in (-0.001, float("nan"), float("inf"), "5ms", True):
        with pytest.raises(ConfigError, match="request_delay"):
            MoldUDP64(a, line_b_addr=b, request_delay=bad)  # type: ignore[arg-type]


#: (B's lag behind A in packets, request_delay): back to back with the default window
#: (B's copy of a packet A lost is on the wire before A's next packet reveals the gap);
#: B a few packets behind A with a wider window (the sender is a Python thread here,
#: and a GIL switch interval is the default window's 5 ms; on a loaded 2-core CI machine
#: the sender thread may wait tens of milliseconds between A's packet and B's copy).
AB_CASES = [(0, None), (4, 0.25)]


@pytest.mark.parametrize("receiver_thread", [True, False], ids=["thread", "pull"])
@pytest.mark.parametrize(("lag", "delay"), AB_CASES, ids=["back-to-back", "b-lags"])
def test_ab_lines_that_cover_each_other_need_no_request(
    multicast: None, receiver_thread: bool, lag: int, delay: float | None
) -> None:
    msgs = make_messages(6000)
    packets = [*make_packets(msgs), end_of_session(msgs)]
    line_a, line_b = lines()
    lose = complementary_loss(len(packets), seed=lag + 1)
    tx = sender()
    with Responder({SESSION: msgs}) as server:
        c = MoldUDP64(
            line_a,
            "127.0.0.1",
            [server.address],
            line_b_addr=line_b,
            request_delay=delay,
            receiver_thread=receiver_thread,
            rcvbuf=4 << 20,
            receiver_options=QUICK_END,
        )
        try:
            with c:
                if receiver_thread:
                    send_ab(tx, packets, line_a, line_b, lose, lag)
                    got = list(c.messages(timeout=10))
                else:  # pull mode reads as it iterates: send from a thread meanwhile
                    t = threading.Thread(
                        target=send_ab, args=(tx, packets, line_a, line_b, lose, lag)
                    )
                    t.start()
                    got = list(c.messages(timeout=10))
                    t.join(10)
        finally:
            tx.close()
        assert got == expected(msgs)  # every message once, in order
        assert server.requests == 0 and c.stats.requests_sent == 0
    stats = c.stats.receiver
    assert stats.packets[Source.LINE_A] > 0 and stats.packets[Source.LINE_B] > 0
    # line A did lose packets and line B brought them (often before A's next packet was
    # even confirmed, so no gap opened at all)
    assert stats.packets[Source.LINE_A] < len(packets) - len(packets) // 20
    assert c.lost_ranges == []


@pytest.mark.parametrize(("lag", "delay"), AB_CASES, ids=["back-to-back", "b-lags"])
def test_asyncio_ab_lines_that_cover_each_other_need_no_request(
    multicast: None, lag: int, delay: float | None
) -> None:
    msgs = make_messages(6000)
    packets = [*make_packets(msgs), end_of_session(msgs)]
    line_a, line_b = lines()
    lose = complementary_loss(len(packets), seed=3)

    async def main(server: Address) -> tuple[list[Message], AsyncMoldUDP64]:
        c = AsyncMoldUDP64(
            line_a,
            "127.0.0.1",
            [server],
            line_b_addr=line_b,
            request_delay=delay,
            rcvbuf=4 << 20,
            receiver_options=QUICK_END,
        )
        tx = sender()
        try:
            async with c:
                sending = asyncio.get_running_loop().run_in_executor(
                    None, send_ab, tx, packets, line_a, line_b, lose, lag
                )
                got = [m async for m in c.messages(timeout=10)]
                await sending
        finally:
            tx.close()
        return got, c

    with Responder({SESSION: msgs}) as server:
        got, c = asyncio.run(main(server.address))
        assert server.requests == 0
    assert got == expected(msgs)
    assert c.stats.requests_sent == 0 and c.lost_ranges == []
    # line A did lose packets and line B brought them (often before A's next packet was
    # even confirmed, so no gap opened at all)
    assert c.stats.receiver.packets[Source.LINE_A] < len(packets) - len(packets) // 20


@pytest.mark.parametrize(("lag", "delay"), AB_CASES, ids=["back-to-back", "b-lags"])
def test_listen_line_b_needs_no_request(
    multicast: None, tmp_path: Path, lag: int, delay: float | None
) -> None:
    msgs = make_messages(6000)
    packets = [*make_packets(msgs), end_of_session(msgs)]
    line_a, line_b = lines()
    out = tmp_path / "out.bin"
    tx = sender()
    tuning = [] if delay is None else ["--request-delay", str(delay)]
    with Responder({SESSION: msgs}) as server:
        proc = start(
            "listen",
            f"{line_a[0]}:{line_a[1]}",
            "--line-b",
            f"{line_b[0]}:{line_b[1]}",
            "--interface",
            "127.0.0.1",
            "--request-server",
            f"127.0.0.1:{server.address[1]}",
            "--output",
            str(out),
            "--idle-timeout",
            "10",
            "--end-confirm",
            "0.3",
            *tuning,
        )
        try:
            assert proc.stderr is not None
            joined = proc.stderr.readline().decode()
            assert "joined" in joined, joined
            send_ab(tx, packets, line_a, line_b, complementary_loss(len(packets), seed=5), lag)
            _, err = proc.communicate(timeout=30)
        finally:
            tx.close()
            if proc.poll() is None:
                proc.kill()
                proc.wait()
        assert proc.returncode == 0, err.decode()
        assert server.requests == 0
    assert list(iter_binaryfile(out)) == msgs


def _queued_ab() -> tuple[list[bytes], list[bytes], tuple[set[int], set[int]]]:
    """About 1,100 packets; line A loses every third of the first half, line B every
    third of the second half. A read of 256 datagrams on line A then reaches further
    into the session than one on line B: A's gaps near its end have B copies that are
    still in the kernel when the read ends."""
    msgs = make_messages(15_000)
    packets = [*make_packets(msgs), end_of_session(msgs)]
    half = len(packets) // 2
    lose_a = {i for i in range(half) if i % 3 == 0}
    lose_b = {i for i in range(half, len(packets) - 1) if i % 3 == 1}
    return msgs, packets, (lose_a, lose_b)


@pytest.mark.parametrize("receiver_thread", [True, False], ids=["thread", "pull"])
def test_what_waits_on_line_b_is_read_before_a_request_goes_out(receiver_thread: bool) -> None:
    """No arbitration window at all (request_delay=0): line B's copies are already in
    the kernel when line A's gaps are found, so they are read before any request."""
    msgs, packets, lose = _queued_ab()
    a, b, rereq = (open_unicast_socket(("127.0.0.1", 0), rcvbuf=4 << 20) for _ in range(3))
    tx = sender()
    with Responder({SESSION: msgs}) as server:
        c = MoldUDP64(
            (GROUP_A, 30001),
            rerequest_server_addrs=[server.address],
            request_delay=0,
            receiver_thread=receiver_thread,
            receiver_options=FAST,
        )
        try:
            if receiver_thread:  # queue everything before the receiver thread exists
                send_ab(tx, packets, a.getsockname(), b.getsockname(), lose)
                c.open_with_sockets([a, b], rereq)
            else:  # pull mode reads nothing until the consumer iterates
                c.open_with_sockets([a, b], rereq)
                send_ab(tx, packets, a.getsockname(), b.getsockname(), lose)
            with c:
                got = list(c.messages(timeout=10))
        finally:
            tx.close()
        assert server.requests == 0
    assert got == expected(msgs)
    assert c.stats.requests_sent == 0 and c.stats.receiver.gaps_detected > 0


def test_asyncio_what_waits_on_line_b_is_read_before_a_request_goes_out() -> None:
    """The asyncio transports read one datagram per readiness callback: requests still
    wait for every socket to be read (request_delay=0, everything queued in advance)."""
    msgs, packets, lose = _queued_ab()

    async def main(server: Address) -> tuple[list[Message], AsyncMoldUDP64]:
        a, b, rereq = (open_unicast_socket(("127.0.0.1", 0), rcvbuf=4 << 20) for _ in range(3))
        c = AsyncMoldUDP64(
            (GROUP_A, 30001),
            rerequest_server_addrs=[server],
            request_delay=0,
            receiver_options=FAST,
        )
        await c.open_with_sockets([a, b], rereq)
        tx = sender()
        try:
            send_ab(tx, packets, a.getsockname(), b.getsockname(), lose)  # no await: queued
            async with c:
                got = [m async for m in c.messages(timeout=10)]
        finally:
            tx.close()
        return got, c

    with Responder({SESSION: msgs}) as server:
        got, c = asyncio.run(main(server.address))
        assert server.requests == 0
    assert got == expected(msgs)
    assert c.stats.requests_sent == 0 and c.stats.receiver.gaps_detected > 0


# --------------------------------------------------------------------------- forged answers


class Forger:
    """Sends forged answers to ``dest`` from ``bind``: the session's real sequence numbers
    with other content, one round at once and then every ``interval`` s until closed."""

    def __init__(self, bind: Address, dest: Address, packets: Sequence[bytes], interval: float):
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.bind(bind)
        self.address: Address = self.sock.getsockname()
        self.sent = 0
        self._packets = packets
        self._dest = dest
        self._stop = threading.Event()
        self._round()
        self._thread = threading.Thread(target=self._run, args=(interval,), daemon=True)
        self._thread.start()

    def _round(self) -> None:
        for packet in self._packets:
            self.sock.sendto(packet, self._dest)
            self.sent += 1

    def _run(self, interval: float) -> None:
        while not self._stop.wait(interval):
            self._round()

    def close(self) -> None:
        self._stop.set()
        self._thread.join(5)
        self.sock.close()


@contextmanager
def forgers(dest: Address, n_messages: int) -> Iterator[list[Forger]]:
    """Two forgers: one on another host (127.0.0.66), one on the server's host on another
    port. Their packets carry sequence numbers 1..n_messages with the wrong content."""
    forged = make_packets(make_messages(n_messages, tag=b"FORGED"))
    made = [
        Forger((FORGED_SOURCE_HOST, 0), dest, forged, 0.01),
        Forger(("127.0.0.1", 0), dest, forged, 0.01),
    ]
    try:
        yield made
    finally:
        for f in made:
            f.close()


def assert_forgeries_dropped(
    seen: Sequence[Event], stats: Any, fakes: Sequence[Forger], server: Address
) -> None:
    """Every forger's datagrams were seen and dropped as ``unknown_server``; none of the
    real server's answers was; the real server's answers were taken."""
    dropped = [e for e in seen if isinstance(e, DatagramDropped) and e.reason == "unknown_server"]
    assert {e.addr for e in dropped} == {f.address for f in fakes}
    assert all(e.source is Source.RETRANSMISSION for e in dropped)
    assert stats.dropped["unknown_server"] >= len(dropped) > 0
    assert stats.answers[server] > 0 and stats.messages_recovered > 0


def lossy_feed(msgs: Sequence[bytes], every: int = 7) -> list[bytes]:
    """The feed's packets with every ``every``-th lost, then the end of session."""
    packets = make_packets(msgs)
    return [p for i, p in enumerate(packets) if i % every != 3] + [end_of_session(msgs)]


@pytest.mark.parametrize("receiver_thread", [True, False], ids=["thread", "pull"])
def test_forged_answers_are_dropped_and_counted(multicast: None, receiver_thread: bool) -> None:
    msgs = make_messages(2000)
    line_a, _ = lines()
    seen: list[Event] = []
    tx = sender()
    with Responder({SESSION: msgs}) as server:
        c = MoldUDP64(
            line_a,
            "127.0.0.1",
            [server.address],
            on_event=seen.append,
            receiver_thread=receiver_thread,
            receiver_options=FAST,
            rcvbuf=4 << 20,
        )
        try:
            with c:
                assert c.local_request_address is not None
                dest = ("127.0.0.1", c.local_request_address[1])
                with forgers(dest, len(msgs)) as fakes:
                    t = threading.Thread(
                        target=lambda: [tx.sendto(p, line_a) for p in lossy_feed(msgs)]
                    )
                    t.start()
                    got = list(c.messages(timeout=10))
                    t.join(10)
        finally:
            tx.close()
        assert server.answers > 0
    assert got == expected(msgs)  # the published content, never a forged message
    assert_forgeries_dropped(seen, c.stats.receiver, fakes, server.address)


def test_asyncio_forged_answers_are_dropped_and_counted(multicast: None) -> None:
    msgs = make_messages(2000)
    line_a, _ = lines()
    seen: list[Event] = []

    async def main(server: Address) -> tuple[list[Message], AsyncMoldUDP64, list[Forger]]:
        c = AsyncMoldUDP64(
            line_a,
            "127.0.0.1",
            [server],
            on_event=seen.append,
            receiver_options=FAST,
            rcvbuf=4 << 20,
        )
        tx = sender()
        try:
            async with c:
                assert c.local_request_address is not None
                with forgers(("127.0.0.1", c.local_request_address[1]), len(msgs)) as fakes:
                    for p in lossy_feed(msgs):
                        tx.sendto(p, line_a)
                    got = [m async for m in c.messages(timeout=10)]
        finally:
            tx.close()
        return got, c, fakes

    with Responder({SESSION: msgs}) as server:
        got, c, fakes = asyncio.run(main(server.address))
        assert server.answers > 0
    assert got == expected(msgs)
    assert_forgeries_dropped(seen, c.stats.receiver, fakes, server.address)


def test_low_level_stream_never_yields_a_forged_answer(multicast: None) -> None:
    msgs = make_messages(2000)
    line_a, _ = lines()
    tx = sender()
    with Responder({SESSION: msgs}) as server:
        c = MoldUDP64(line_a, "127.0.0.1", [server.address], receiver_options=FAST)
        datagrams, _ = c.start()
        try:
            assert c.local_request_address is not None
            with forgers(("127.0.0.1", c.local_request_address[1]), len(msgs)) as fakes:
                for p in lossy_feed(msgs):
                    tx.sendto(p, line_a)
                with watchdog(c.close) as fired:
                    got = list(datagrams)
                assert not fired.is_set()
        finally:
            c.close()
            tx.close()
    answers = [d for d in got if d.source is Source.RETRANSMISSION]
    assert answers and {d.addr for d in answers} == {server.address}
    held = {d.packet().seq_num: d.packet() for d in got if d.packet().msg_count not in (0, 0xFFFF)}
    assert [bytes(m) for _, p in sorted(held.items()) for m in p] == msgs
    assert c.stats.receiver.dropped["unknown_server"] > 0
    assert all(f.sent > 0 for f in fakes)


# --------------------------------------------------------------------------- low-level end


def _ends_with_the_session(got: Sequence[Datagram], msgs: Sequence[bytes]) -> None:
    """``got`` holds an end-of-session datagram and, live or retransmitted, every message."""
    packets = [d.packet() for d in got]
    assert any(p.packet_kind is PacketKind.END_OF_SESSION for p in packets)
    data = {p.seq_num: p for p in packets if p.packet_kind is PacketKind.STANDARD}
    assert [bytes(m) for _, p in sorted(data.items()) for m in p] == list(msgs)


@pytest.mark.parametrize("receiver_thread", [True, False], ids=["thread", "pull"])
def test_low_level_iteration_ends_after_the_end_of_session(
    multicast: None, receiver_thread: bool
) -> None:
    msgs = make_messages(1500)
    line_a, _ = lines()
    tx = sender()
    with Responder({SESSION: msgs}) as server:
        c = MoldUDP64(
            line_a,
            "127.0.0.1",
            [server.address],
            receiver_thread=receiver_thread,
            receiver_options=FAST,
        )
        datagrams, _ = c.start()
        try:
            for p in lossy_feed(msgs):  # gaps still open at the end of session
                tx.sendto(p, line_a)
            # the end of session repeats, as a real server sends it for a while
            with Repeater(tx, line_a, end_of_session(msgs)), watchdog(c.close) as fired:
                got = list(datagrams)
            assert not fired.is_set(), "the iteration only ended on close()"
            assert c.session_ended and not c.closed
        finally:
            c.close()
            tx.close()
    assert any(d.source is Source.RETRANSMISSION for d in got)
    _ends_with_the_session(got, msgs)


@pytest.mark.parametrize("receiver_thread", [True, False], ids=["thread", "pull"])
def test_low_level_iteration_ends_on_close_from_another_thread(
    multicast: None, receiver_thread: bool
) -> None:
    c = MoldUDP64(lines()[0], "127.0.0.1", receiver_thread=receiver_thread)
    datagrams, _ = c.start()
    out: list[Datagram] = []
    t = threading.Thread(target=lambda: out.extend(datagrams))
    t.start()
    t.join(0.2)
    assert t.is_alive()  # nothing came: still waiting
    c.close()
    t.join(5)
    assert not t.is_alive() and out == []


def test_asyncio_low_level_iteration_ends_after_the_end_of_session(multicast: None) -> None:
    msgs = make_messages(1500)
    line_a, _ = lines()

    async def main(server: Address) -> tuple[list[Datagram], AsyncMoldUDP64]:
        c = AsyncMoldUDP64(line_a, "127.0.0.1", [server], receiver_options=FAST)
        datagrams, _ = await c.start()
        tx = sender()
        try:
            for p in lossy_feed(msgs):
                tx.sendto(p, line_a)
            with Repeater(tx, line_a, end_of_session(msgs)):
                got = await asyncio.wait_for(_collect(datagrams), 10)
            assert c.session_ended and not c.closed
        finally:
            await c.close()
            tx.close()
        return got, c

    with Responder({SESSION: msgs}) as server:
        got, _ = asyncio.run(main(server.address))
    assert any(d.source is Source.RETRANSMISSION for d in got)
    _ends_with_the_session(got, msgs)


async def _collect(datagrams: Any) -> list[Datagram]:
    return [d async for d in datagrams]


@pytest.mark.parametrize("closer", ["task", "thread"])
def test_asyncio_low_level_iteration_ends_on_close(multicast: None, closer: str) -> None:
    """close() from another task, or from another thread through the loop, ends it."""

    async def main() -> list[Datagram]:
        c = AsyncMoldUDP64(lines()[0], "127.0.0.1")
        datagrams, _ = await c.start()
        reader = asyncio.create_task(_collect(datagrams))
        await asyncio.sleep(0.1)
        assert not reader.done()
        if closer == "task":
            await c.close()
        else:
            loop = asyncio.get_running_loop()
            t = threading.Thread(
                target=lambda: asyncio.run_coroutine_threadsafe(c.close(), loop).result(5)
            )
            t.start()
            await loop.run_in_executor(None, t.join, 5)
        return await asyncio.wait_for(reader, 5)

    assert asyncio.run(main()) == []


def test_readme_low_level_example_runs_to_the_end_of_session(multicast: None) -> None:
    """The README's low-level example, run as written against a live feed (its addresses
    swapped for this namespace's), ends by itself after the end of session."""
    (block,) = [
        b
        for b in re.findall(r"```python\n(.*?)```", README.read_text(), flags=re.S)
        if ".start()" in b
    ]
    msgs = make_messages(500)
    line_a, _ = lines()
    tx = sender()
    with Responder({SESSION: msgs}) as server:
        code = block.replace('"233.54.12.111", 26477', f'"{line_a[0]}", {line_a[1]}')
        code = code.replace('"10.9.9.1", 26478', f'"127.0.0.1", {server.address[1]}')
        assert "233.54" not in code and "10.9.9" not in code
        namespace: dict[str, Any] = {}
        done = threading.Event()

        def run() -> None:
            exec(code, namespace)
            done.set()

        t = threading.Thread(target=run, daemon=True)
        t.start()
        try:
            assert _wait_for(lambda: "client" in namespace)
            client = namespace["client"]
            assert _wait_for(lambda: client.local_request_address is not None)
            for p in lossy_feed(msgs):
                tx.sendto(p, line_a)
            with Repeater(tx, line_a, end_of_session(msgs)):
                t.join(10)
        finally:
            tx.close()
            if "client" in namespace:
                namespace["client"].close()
        assert done.is_set(), "the README's loop did not end"
    assert namespace["client"].session_ended


def _wait_for(predicate: Callable[[], bool], timeout: float = 5.0) -> bool:
    from client_support import wait_until

    return wait_until(predicate, timeout)


def test_a_session_left_behind_that_keeps_sending_is_logged_a_bounded_number_of_lines(
    multicast: None, caplog: pytest.LogCaptureFixture
) -> None:
    """Live: session A ends, B is followed, then A's publisher sends 2,000 more packets
    (its data beyond its end). The blocking client names them in a few
    ``MessagesAfterEnd`` (one per run, not one per datagram), every number once, and its
    log has a bounded number of lines about them, not one per datagram."""
    other = "SESSIONB01"
    first = make_messages(20)
    line_a, _ = lines()
    tx = sender()
    c = MoldUDP64(line_a, "127.0.0.1", stop_at_end_of_session=False, receiver_options=QUICK_END)
    events: list[Event] = []
    try:
        # the client's own logger (an in-process CLI test earlier may have set its level)
        with (
            caplog.at_level(logging.WARNING, logger="moldudp64.sync.client"),
            watchdog(c.close) as fired,
        ):
            c.open()
            for p in make_packets(first):
                tx.sendto(p, line_a)
            for _ in range(3):  # A's end, repeated; then the quiet that confirms it
                tx.sendto(end_of_session(first), line_a)
                time.sleep(0.05)
            time.sleep(0.5)
            for p in make_packets(make_messages(2, b"b"), session=other):
                tx.sendto(p, line_a)
            time.sleep(0.3)
            late = make_messages(2000, b"late")
            for k, m in enumerate(late):  # A's publisher goes on: one message a packet
                tx.sendto(make_packets([m], first_seq=len(first) + 1 + k)[0], line_a)
                if k % 200 == 199:
                    time.sleep(0.01)
            for _ in range(3):
                tx.sendto(end_of_session(make_messages(2), session=other), line_a)
                time.sleep(0.05)
            for ev in c.events(timeout=5.0):
                events.append(ev)
                if isinstance(ev, SessionEnded) and ev.session == other:
                    break
        assert not fired.is_set(), "B never ended"
    finally:
        c.close()
        tx.close()
    assert SessionChanged(SESSION, other, 1) in events
    named = [e for e in events if isinstance(e, MessagesAfterEnd) and e.session == SESSION]
    numbers = [s for e in named for s in range(e.first_seq, e.last_seq + 1)]
    assert numbers == sorted(set(numbers))  # each number once, in order
    assert numbers[0] == 21 and len(numbers) > 1500, len(numbers)  # (the kernel may drop)
    holes = sum(b - a > 1 for a, b in pairwise(numbers))  # the kernel's drops, if any
    assert len(named) <= 2 * (holes + 1) + 10, (len(named), holes)  # per run, not per datagram
    logged = [r for r in caplog.records if "after" in r.getMessage() and "end" in r.getMessage()]
    assert 1 <= len(logged) <= 13, [r.getMessage() for r in logged]
