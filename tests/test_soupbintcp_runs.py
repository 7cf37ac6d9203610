"""SoupBinTCP runs: Sequenced Data packets <-> BinaryFILE blocks in one pass, the C
accelerator and its pure-Python twins giving identical bytes and events (random streams,
split at every byte; heartbeats, debug packets and an End of Session mid-run)."""

from __future__ import annotations

import random
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from moldudp64 import soupbintcp, store
from moldudp64.events import Event, MessagesDelivered, SessionEnded
from moldudp64.soupbintcp import (
    ConnectionClosed,
    MessageRun,
    SoupClientCore,
    SoupServerCore,
    StoreSession,
    build_login_accepted,
)
from moldudp64.store import BinaryFileStore, MemoryStore
from moldudp64.wire import join_blocks

try:
    from moldudp64 import _speedups
except ImportError:  # pragma: no cover - no C compiler where the package was built
    _speedups = None  # type: ignore[assignment]

PY = {
    "soup_to_blocks": soupbintcp._soup_to_blocks_py,
    "soup_split": soupbintcp._soup_split_py,
    "blocks_to_soup": soupbintcp._blocks_to_soup_py,
    "split_binaryfile": soupbintcp._split_binaryfile_py,
}
needs_c = pytest.mark.skipif(
    _speedups is None or not hasattr(_speedups, "soup_to_blocks"),
    reason="the C accelerator is not built",
)


def seq(message: bytes) -> bytes:
    return (len(message) + 1).to_bytes(2, "big") + b"S" + message


def random_message(rng: random.Random) -> bytes:
    return rng.randbytes(rng.choice([0, 1, 2, 5, 20, 300]))


def random_frames(rng: random.Random, n: int) -> tuple[bytes, list[bytes]]:
    """Packets a server may send after Login Accepted (S mostly, H, +, U), and the
    messages of the S ones in order."""
    out, messages = [], []
    for _ in range(n):
        kind = rng.random()
        if kind < 0.8:
            message = random_message(rng)
            messages.append(message)
            out.append(seq(message))
        elif kind < 0.9:
            out.append(b"\x00\x01H")
        elif kind < 0.95:
            debug = rng.randbytes(rng.randrange(5))
            out.append((len(debug) + 1).to_bytes(2, "big") + b"+" + debug)
        else:
            out.append(b"\x00\x03Uab")
    return b"".join(out), messages


# --------------------------------------------------------------------------- the twins


@needs_c
@pytest.mark.parametrize("seed", range(20))
def test_c_and_python_convert_every_run_alike(seed: int) -> None:
    rng = random.Random(seed)
    stream, _ = random_frames(rng, 40)
    stream += rng.choice([b"", b"\x00", b"\x00\x05S", b"\x00\x00S", seq(b"x")[:3]])
    for pos in range(len(stream) + 1):
        assert _speedups.soup_to_blocks(stream, pos) == PY["soup_to_blocks"](stream, pos)
        assert _speedups.soup_split(stream, pos) == PY["soup_split"](stream, pos)


def test_a_run_is_the_binaryfile_of_its_messages() -> None:
    stream = seq(b"ab") + seq(b"") + seq(b"xyz") + b"\x00\x01H" + seq(b"late")
    for convert, split in ((PY["soup_to_blocks"], PY["soup_split"]), *_c_pairs()):
        count, blocks, end = convert(stream, 0)
        assert (count, blocks, end) == (3, join_blocks([b"ab", b"", b"xyz"]), 14)
        assert split(stream, 0) == ([b"ab", b"", b"xyz"], 14)
        # A length of 0, an incomplete packet, or another type ends the run.
        assert convert(b"\x00\x00S" + seq(b"a"), 0) == (0, b"", 0)
        assert convert(seq(b"abc")[:-1], 0) == (0, b"", 0)
        assert convert(stream, 14) == (0, b"", 14)
        assert convert(stream, 17) == (1, join_blocks([b"late"]), len(stream))


def _c_pairs() -> list[tuple[Callable[..., Any], Callable[..., Any]]]:
    if _speedups is None or not hasattr(_speedups, "soup_to_blocks"):
        return []
    return [(_speedups.soup_to_blocks, _speedups.soup_split)]


@needs_c
@pytest.mark.parametrize("seed", range(20))
def test_c_and_python_turn_blocks_into_packets_alike(seed: int) -> None:
    rng = random.Random(seed)
    messages = [random_message(rng) for _ in range(30)]
    if seed % 4 == 0:
        messages.insert(rng.randrange(30), b"L" * 0xFFFF)  # too long for a packet
    blocks = join_blocks(messages)
    for cut in sorted({len(blocks), *(rng.randrange(len(blocks)) for _ in range(20))}):
        part = blocks[:cut]
        for max_count in (0, 1, 7, 1 << 40):
            got = _speedups.blocks_to_soup(part, max_count)
            assert got == PY["blocks_to_soup"](part, max_count)
            assert _speedups.scan_blocks(part, max_count) == store._scan_blocks_py(part, max_count)
        assert _speedups.split_binaryfile(part) == PY["split_binaryfile"](part)


def test_blocks_become_the_packets_send_messages_writes() -> None:
    messages = [b"a", b"", b"hello", b"x" * 300]
    count, packets, used = PY["blocks_to_soup"](join_blocks(messages) + b"\x00", 1 << 40)
    assert (count, used) == (4, len(join_blocks(messages)))
    assert packets == b"".join(seq(m) for m in messages)
    # It stops before a message too long for a packet, and at max_count.
    assert PY["blocks_to_soup"](join_blocks([b"a", b"L" * 0xFFFF]), 9)[:1] == (1,)
    assert PY["blocks_to_soup"](join_blocks(messages), 2)[0] == 2


# --------------------------------------------------------------------------- the client core


@pytest.fixture(params=["c", "python"])
def impl(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> str:
    """Run the core on the C accelerator, or on the pure-Python twins."""
    if request.param == "c":
        if _speedups is None or not hasattr(_speedups, "soup_to_blocks"):
            pytest.skip("the C accelerator is not built")
        for name in PY:
            monkeypatch.setattr(soupbintcp, name, getattr(_speedups, name))
    else:
        for name, twin in PY.items():
            monkeypatch.setattr(soupbintcp, name, twin)
    return str(request.param)


def feed(chunks: Iterator[bytes], runs: bool) -> list[Event]:
    client = SoupClientCore(session="TEST000001", seq_num=5, runs=runs)
    client.connect(0.0)
    events: list[Event] = []
    for chunk in chunks:
        client.receive(chunk, 1.0)
        events += client.events_received()
    return events


def flat(events: list[Event]) -> list[Any]:
    """Events with messages one by one (numbered), whatever the batching."""
    out: list[Any] = []
    for ev in events:
        if isinstance(ev, MessagesDelivered | MessageRun):
            if isinstance(ev, MessageRun):
                assert ev.blocks == join_blocks(ev.messages)
                assert ev.count == len(ev.messages) > 0
            out += [(ev.seq_num + i, m) for i, m in enumerate(ev.messages)]
        else:
            out.append(ev)
    return out


def merged(events: list[Event]) -> list[Event]:
    """Runs as MessagesDelivered, consecutive runs of one read as one."""
    out: list[Event] = []
    for ev in events:
        if isinstance(ev, MessageRun):
            last = out[-1] if out else None
            if isinstance(last, MessagesDelivered) and last.last_seq + 1 == ev.seq_num:
                out[-1] = MessagesDelivered(ev.session, last.seq_num, last.messages + ev.messages)
            else:
                out.append(MessagesDelivered(ev.session, ev.seq_num, ev.messages))
        else:
            out.append(ev)
    return out


@pytest.mark.parametrize("seed", range(6))
def test_every_split_gives_the_same_messages_and_events(impl: str, seed: int) -> None:
    rng = random.Random(seed)
    body, messages = random_frames(rng, 25)
    tail, _ = random_frames(rng, 5)  # after End of Session: never delivered
    cut = rng.randrange(len(body))
    while cut and not _is_boundary(body, cut):
        cut -= 1
    stream = build_login_accepted("TEST000001", 5) + body[:cut] + b"\x00\x01Z" + body[cut:]
    stream += tail
    expected = flat(feed(iter([stream]), runs=False))
    delivered = [m for m in expected if isinstance(m, tuple)]
    assert delivered == [(5 + i, m) for i, m in enumerate(messages[: _sequenced(body[:cut])])]
    assert any(isinstance(ev, SessionEnded) for ev in expected)
    assert isinstance(expected[-1], ConnectionClosed)
    for runs in (False, True):
        whole = feed(iter([stream]), runs)
        assert flat(whole) == expected
        for at in range(len(stream) + 1):  # split at every byte
            assert flat(feed(iter([stream[:at], stream[at:]]), runs)) == expected
        byte_by_byte = feed((stream[i : i + 1] for i in range(len(stream))), runs)
        assert flat(byte_by_byte) == expected
    # Runs and lists: the same events in the same order (a run per run of packets).
    assert merged(feed(iter([stream]), True)) == feed(iter([stream]), False)


def _sequenced(frames: bytes) -> int:
    """How many Sequenced Data packets ``frames`` holds."""
    pos = count = 0
    while pos < len(frames):
        count += frames[pos + 2] == 0x53
        pos += 2 + ((frames[pos] << 8) | frames[pos + 1])
    return count


def _is_boundary(body: bytes, at: int) -> bool:
    pos = 0
    while pos < at:
        pos += 2 + ((body[pos] << 8) | body[pos + 1])
    return pos == at


def test_c_and_python_cores_give_identical_events() -> None:
    if _speedups is None or not hasattr(_speedups, "soup_to_blocks"):
        pytest.skip("the C accelerator is not built")
    rng = random.Random(99)
    body, _ = random_frames(rng, 200)
    stream = build_login_accepted("TEST000001", 5) + body + b"\x00\x01Z"
    chunks = []
    pos = 0
    while pos < len(stream):
        step = rng.randrange(1, 200)
        chunks.append(stream[pos : pos + step])
        pos += step
    got = {}
    for name, funcs in (("c", {n: getattr(_speedups, n) for n in PY}), ("python", PY)):
        saved = {n: getattr(soupbintcp, n) for n in PY}
        try:
            for n, f in funcs.items():
                setattr(soupbintcp, n, f)
            got[name] = [feed(iter(chunks), runs) for runs in (False, True)]
        finally:
            for n, f in saved.items():
                setattr(soupbintcp, n, f)
    assert got["c"] == got["python"]  # MessageRun blocks included, byte for byte


# --------------------------------------------------------------------------- the server side


def test_send_blocks_writes_what_send_messages_writes(impl: str) -> None:
    rng = random.Random(5)
    messages = [random_message(rng) for _ in range(200)]
    cores = []
    for _ in range(2):
        core = SoupServerCore()
        core.connected(0.0)
        core.accept("TEST000001", 1, 0.0)
        cores.append(core)
    cores[0].send_messages(messages, 1.0)
    assert cores[1].send_blocks(join_blocks(messages), 1.0) == 200
    assert cores[0].outgoing(1 << 30) == cores[1].outgoing(1 << 30)
    assert cores[0].next_seq_num == cores[1].next_seq_num == 201


def test_a_binaryfile_is_served_as_a_memory_store_is(impl: str, tmp_path: Path) -> None:
    rng = random.Random(6)
    messages = [random_message(rng) for _ in range(3000)]
    path = tmp_path / "day.bin"
    path.write_bytes(join_blocks(messages))
    stores = [MemoryStore(), BinaryFileStore(path, index_interval=64)]
    for message in messages:
        stores[0].append(message)
    sent = []
    for st in stores:
        core = SoupServerCore(max_output=4096)
        core.connected(0.0)
        session = StoreSession("TEST000001", st, finished=True)
        core.accept("TEST000001", 17, 0.0)
        out = bytearray()
        while not core.ended or core.output_bytes:
            session.fill(core, 1.0)
            out += core.outgoing(1 << 30)
            core.consumed(core.output_bytes)
        sent.append(bytes(out))
    stores[1].close()
    assert sent[0] == sent[1]
    assert sent[1].startswith(build_login_accepted("TEST000001", 17) + seq(messages[16]))
    assert sent[1].endswith(seq(messages[-1]) + b"\x00\x01Z")


def test_get_blocks_reads_what_get_run_reads(impl: str, tmp_path: Path) -> None:
    rng = random.Random(7)
    messages = [random_message(rng) for _ in range(500)]
    path = tmp_path / "day.bin"
    path.write_bytes(join_blocks(messages))
    with BinaryFileStore(path, index_interval=16) as st:
        at = 1
        for _ in range(200):  # reading on (the cursor) and jumping about (the index)
            if rng.random() < 0.3:
                at = rng.randrange(1, 510)
            max_count, max_bytes = rng.randrange(1, 40), rng.randrange(1, 3000)
            count, blocks = st.get_blocks(at, max_count, max_bytes)
            assert blocks == join_blocks(st.get_run(at, max_count, max_bytes))
            assert count == len(st.get_run(at, max_count, max_bytes))
            at += count
