"""Which layer may import which, as docs/DESIGN.md draws it, checked on the source."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

from _client.test_layers import SRC, imported

#: The protocol cores and the file formats: no network, clock, thread or event loop, and
#: they import only each other (never a layer above them). ``capture`` is the capture
#: layer (it reads and writes files and formats addresses with ``socket.inet_ntoa``); of
#: the cores only ``replay`` uses it, to replay a capture file.
CORES = {
    "wire", "receiver", "publisher", "rerequest", "store", "replay", "itch50", "validation",
    "events", "exceptions", "faults", "binaryfile", "_closing",
}  # fmt: skip
CORES.add("soupbintcp")  # SoupBinTCP's client and server cores
ALLOWED_EXTRA = {"replay": {"capture"}}
#: What a core may never import: the clock, sockets, threads, event loops.
IO_MODULES = ("socket", "time", "threading", "asyncio", "selectors")


def stdlib_imports(path: Path) -> set[str]:
    """The top-level modules ``path`` imports at run time (not under ``TYPE_CHECKING``)."""
    tree = ast.parse(path.read_text())
    for node in ast.walk(tree):
        if isinstance(node, ast.If) and getattr(node.test, "id", None) == "TYPE_CHECKING":
            node.body = []
    names: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names.update(a.name.split(".")[0] for a in node.names)
        elif isinstance(node, ast.ImportFrom) and not node.level and node.module:
            names.add(node.module.split(".")[0])
    return names


@pytest.mark.parametrize("core", sorted(CORES))
def test_a_core_imports_only_cores_and_no_io(core: str) -> None:
    path = SRC / f"{core}.py"
    allowed = {f"moldudp64.{c}" for c in CORES | ALLOWED_EXTRA.get(core, set())}
    allowed.add("moldudp64")
    above = sorted(
        n for n in imported(path) if not any(n == a or n.startswith(a + ".") for a in allowed)
    )
    assert above == [], f"{core}.py imports {above}"
    assert not stdlib_imports(path) & set(IO_MODULES), f"{core}.py does I/O"


def test_nothing_imports_the_command_line() -> None:
    for path in sorted(SRC.rglob("*.py")):
        if path.parent.name == "cli" or path.name == "__main__.py":
            continue
        bad = sorted(n for n in imported(path) if n.startswith("moldudp64.cli"))
        assert bad == [], f"{path.relative_to(SRC)} imports {bad}"
