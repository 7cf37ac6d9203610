"""The ITCH 5.0 messages of publish --generate, demo and the tests: a synthetic trading day."""

from __future__ import annotations

from collections.abc import Iterable

from ..itch50.generator import generate_day
from ..itch50.messages import LAYOUTS

# ITCH 5.0 message types and their lengths (the type byte included).
ITCH_LENGTHS: dict[bytes, int] = {code.encode(): lay.size for code, lay in LAYOUTS.items()}


def generate_itch(count: int, seed: int = 0) -> Iterable[bytes]:
    """``count`` messages of a synthetic, self-consistent TotalView-ITCH 5.0 day
    (:func:`moldudp64.itch50.generator.generate_day`): a system event first."""
    return generate_day(count, seed=seed)
