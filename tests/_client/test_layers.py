"""The client layers import downwards only: ``_client`` and ``net`` under both I/O layers,
and ``sync`` and ``asyncio`` never each other."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

import moldudp64

SRC = Path(moldudp64.__file__).parent


def imported(path: Path) -> set[str]:
    """The moldudp64 modules a source file imports, as absolute names."""
    package = "moldudp64." + ".".join(path.relative_to(SRC).parent.parts)
    package = package.rstrip(".")
    names: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom):
            base = package.split(".")
            if node.level:
                base = base[: len(base) - node.level + 1]
                name = ".".join([*base, node.module] if node.module else base)
            else:
                name = node.module or ""
            names.add(name)
            names.update(f"{name}.{a.name}" for a in node.names)
        elif isinstance(node, ast.Import):
            names.update(a.name for a in node.names)
    return {n for n in names if n.startswith("moldudp64")}


@pytest.mark.parametrize(
    ("folder", "forbidden"),
    [
        ("sync", ("moldudp64.asyncio", "moldudp64.cli")),
        ("asyncio", ("moldudp64.sync", "moldudp64.cli")),
        ("_client", ("moldudp64.sync", "moldudp64.asyncio", "moldudp64.cli")),
    ],
)
def test_layer_never_imports_its_sibling(folder: str, forbidden: tuple[str, ...]) -> None:
    for path in sorted((SRC / folder).glob("*.py")):
        bad = sorted(n for n in imported(path) if n.startswith(forbidden))
        assert bad == [], f"{path.name} imports {bad}"


def test_the_asyncio_client_loads_without_the_blocking_one() -> None:
    code = (
        "import sys, moldudp64.asyncio.client; "
        "print(sorted(m for m in sys.modules if m.startswith('moldudp64.sync')))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"
