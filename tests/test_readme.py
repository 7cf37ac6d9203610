"""The README's Python examples stay true: each imports, and those that need no outside
network run (the publisher inside the private namespace)."""

from __future__ import annotations

import ast
import re
from pathlib import Path

import pytest

from moldudp64.binaryfile import write_binaryfile

README = Path(__file__).resolve().parents[1] / "README.md"
BLOCKS = re.findall(r"```python\n(.*?)```", README.read_text(), flags=re.S)


def block_with(needle: str) -> str:
    (found,) = [b for b in BLOCKS if needle in b]
    return found


def test_every_example_compiles_and_its_imports_exist() -> None:
    assert len(BLOCKS) >= 5
    for block in BLOCKS:
        compile(block, "README.md", "exec", flags=ast.PyCF_ALLOW_TOP_LEVEL_AWAIT)
        imports = "\n".join(line for line in block.splitlines() if line.startswith("from "))
        exec(imports, {})


def test_wire_format_example_runs(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    write_binaryfile("day.NASDAQ_ITCH50", [b"S" * 12])
    exec(block_with("pack_messages("), {})


def test_publishing_example_runs(multicast: None) -> None:
    namespace = {"messages": [b"A" * 36] * 1000}
    exec(block_with("Publisher("), namespace)
    assert namespace["pub"].next_seq_num == 1001


def test_replay_example_runs(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from moldudp64.capture import CaptureWriter
    from moldudp64.wire import build_heartbeat, build_packet

    monkeypatch.chdir(tmp_path)
    with CaptureWriter("feed.pcap") as writer:
        for seq in (1, 2, 4):
            packet = build_packet("SESSION001", seq, [b"m"])
            writer.write(packet, ("10.0.0.1", 4000), ("239.1.1.1", 26477), float(seq))
        writer.write(build_heartbeat("SESSION001", 5), ("10.0.0.1", 4000),
                     ("239.1.1.1", 26477), 5.0)
    printed: list[tuple[object, ...]] = []
    exec(block_with("replay_capture("), {"print": lambda *a: printed.append(a)})
    assert printed == [("SESSION001", 1, 1), ("SESSION001", 2, 1), ("SESSION001", "lost", 3, 3),
                       ("SESSION001", 4, 1)]


def test_soupbintcp_example_runs(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    write_binaryfile("day.bin", [b"A" * 36] * 100)
    namespace: dict[str, object] = {}
    exec(block_with("SoupServer("), namespace)
    assert namespace["client"].next_seq_num == 101  # type: ignore[attr-defined]
