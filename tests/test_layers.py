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
ALLOWED_EXTRA = {"replay": {"capture"}}
#: The cores' optional C accelerators (no I/O either): any core may use them.
ACCELERATORS = {"_speedups", "_itch50"}
#: What a core may never import: the clock, sockets, threads, event loops.
IO_MODULES = ("socket", "time", "threading", "asyncio", "selectors")


def _within(name: str, modules: set[str]) -> bool:
    """Whether ``name`` is one of ``modules`` or a name inside one."""
    return any(name == m or name.startswith(m + ".") for m in modules)


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
    allowed = {f"moldudp64.{c}" for c in CORES | ACCELERATORS | ALLOWED_EXTRA.get(core, set())}
    above = sorted(n for n in imported(path) if n != "moldudp64" and not _within(n, allowed))
    assert above == [], f"{core}.py imports {above}"
    assert not stdlib_imports(path) & set(IO_MODULES), f"{core}.py does I/O"


def test_nothing_imports_the_command_line() -> None:
    for path in sorted(SRC.rglob("*.py")):
        if path.parent.name == "cli" or path.name == "__main__.py":
            continue
        bad = sorted(n for n in imported(path) if n.startswith("moldudp64.cli"))
        assert bad == [], f"{path.relative_to(SRC)} imports {bad}"


#: The JetStream package: what each of its modules may import from the package (the rest
#: of moldudp64 it may use is the cores only: never sockets, a client or the command).
JETSTREAM = {
    "connection": set(),
    "stream": {"connection"},
    "records": {"connection"},
    "search": {"connection", "records", "stream"},
    "bridge": {"connection", "records", "stream"},
    "reader": {"connection", "records", "search", "stream"},
    "store": {"connection", "records", "search", "stream"},
    "__init__": {"connection", "stream", "records", "search", "bridge", "reader", "store"},
}  # fmt: skip


def test_the_jetstream_package_has_a_module_per_part_and_each_imports_only_below_it() -> None:
    folder = SRC / "jetstream"
    assert sorted(p.stem for p in folder.glob("*.py")) == sorted(JETSTREAM)
    cores = {f"moldudp64.{c}" for c in CORES | ACCELERATORS}
    for name, below in JETSTREAM.items():
        allowed = cores | {f"moldudp64.jetstream.{m}" for m in below}
        bad = sorted(
            n
            for n in imported(folder / f"{name}.py")
            if n not in ("moldudp64", "moldudp64.jetstream") and not _within(n, allowed)
        )
        assert bad == [], f"jetstream/{name}.py imports {bad}"


def test_the_command_modules_import_one_another_without_a_cycle() -> None:
    """What two commands share lives in a module below both (``cli/feed.py`` for listen
    and bridge), never in one of them importing the other back."""
    folder = SRC / "cli"
    graph = {
        path.stem: {n.split(".")[2] for n in imported(path) if n.startswith("moldudp64.cli.")}
        - {path.stem}
        for path in folder.glob("*.py")
        if path.stem != "__init__"
    }

    def cycle_from(module: str, trail: tuple[str, ...]) -> tuple[str, ...] | None:
        if module in trail:
            return (*trail[trail.index(module) :], module)
        for below in sorted(graph.get(module, ())):
            found = cycle_from(below, (*trail, module))
            if found:
                return found
        return None

    cycles = [c for m in sorted(graph) if (c := cycle_from(m, ()))]
    assert cycles == [], " -> ".join(cycles[0])
