"""The ITCH 5.0 messages of publish --generate, demo and the tests: a synthetic trading day."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

# The ITCH 5.0 package is imported on first use: every command imports this module
# (``moldudp64.cli`` names generate_itch), and listen or serve need none of it.


def generate_itch(count: int, seed: int = 0) -> Iterable[bytes]:
    """``count`` messages of a synthetic, self-consistent TotalView-ITCH 5.0 day
    (:func:`moldudp64.itch50.generator.generate_day`): a system event first."""
    from ..itch50.generator import generate_day

    return generate_day(count, seed=seed)


def __getattr__(name: str) -> Any:
    """``ITCH_LENGTHS``: ITCH 5.0 message types and their lengths (the type byte
    included), made on first use."""
    if name != "ITCH_LENGTHS":
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    from ..itch50.messages import LAYOUTS

    lengths = {code.encode(): lay.size for code, lay in LAYOUTS.items()}
    globals()[name] = lengths
    return lengths
