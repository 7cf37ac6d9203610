"""Which layer may import which, as docs/DESIGN.md draws it, checked on the source."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

from _client.test_layers import SRC, imported

#: The protocol cores and the file formats: no network, clock, thread or event loop, and
#: they import only each other (never a layer above them). ``capture`` is the capture
#: layer (it reads and writes files and formats addresses with ``socket.inet_ntoa``); of
#: the cores only ``replay`` uses it, to replay a capture file. ``itch50`` is a package:
#: its ``__init__`` and its modules but ``sinks`` and ``book_tables`` (outputs) are cores.
CORES = {
    "wire", "receiver", "publisher", "rerequest", "store", "replay", "validation",
    "events", "exceptions", "faults", "binaryfile", "_closing", "soupbintcp",
    "itch50", "itch50.messages", "itch50.codec", "itch50.arrow", "itch50.generator",
    "itch50.book",
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


def source_of(module: str) -> Path:
    """The file of ``module`` (dotted, under moldudp64): ``a.b`` is a/b.py or a/b/__init__.py."""
    path = SRC.joinpath(*module.split("."))
    return path / "__init__.py" if path.is_dir() else path.with_suffix(".py")


def module_of(name: str) -> str:
    """The moldudp64 module an imported name lives in (``moldudp64.itch50.arrow._arrow`` ->
    ``itch50.arrow``; a name that is a package's attribute -> the package)."""
    parts = name.split(".")[1:]
    while parts and not (SRC.joinpath(*parts).is_dir() or source_of(".".join(parts)).exists()):
        parts.pop()
    return ".".join(parts)


def test_every_itch50_module_is_a_core_or_an_output() -> None:
    modules = {f"itch50.{p.stem}" for p in (SRC / "itch50").glob("*.py")} - {"itch50.__init__"}
    assert modules - CORES == {"itch50.sinks", "itch50.book_tables"}


@pytest.mark.parametrize("core", sorted(CORES))
def test_a_core_imports_only_cores_and_no_io(core: str) -> None:
    path = source_of(core)
    allowed = CORES | ALLOWED_EXTRA.get(core, set()) | {""}
    above = sorted(n for n in imported(path) if module_of(n) not in allowed)
    assert above == [], f"{core} imports {above}"
    assert not stdlib_imports(path) & set(IO_MODULES), f"{core} does I/O"


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
    for name, below in JETSTREAM.items():
        allowed = CORES | {f"jetstream.{m}" for m in below} | {""}
        bad = sorted(n for n in imported(folder / f"{name}.py") if module_of(n) not in allowed)
        assert bad == [], f"jetstream/{name}.py imports {bad}"


#: Imports back up that close a cycle, not yet undone: soup's listen uses listen's receive
#: loop (``_receive``, ``_ListenResult``, ``_lost_text``), which belongs below both.
KNOWN_BACK_EDGES = [("soup", "listen")]


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

    for module, below in KNOWN_BACK_EDGES:
        graph[module].discard(below)
    cycles = [c for m in sorted(graph) if (c := cycle_from(m, ()))]
    assert cycles == [], " -> ".join(cycles[0])
