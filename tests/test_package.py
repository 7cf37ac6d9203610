"""The top-level package: every public name resolves, layers load on first use."""

from __future__ import annotations

import subprocess
import sys

import pytest

import moldudp64


@pytest.mark.parametrize("name", moldudp64.__all__)
def test_every_public_name_resolves(name: str) -> None:
    assert getattr(moldudp64, name) is not None
    assert name in dir(moldudp64)


def test_unknown_name_is_an_attribute_error() -> None:
    with pytest.raises(AttributeError, match="no attribute 'Nope'"):
        _ = moldudp64.Nope  # type: ignore[attr-defined]


def test_import_loads_no_io_layer() -> None:
    code = (
        "import sys, moldudp64; "
        "print(sorted(m for m in ('asyncio', 'dpkt', 'moldudp64.sync', 'moldudp64.capture') "
        "if m in sys.modules))"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert done.stdout.strip() == "[]"
