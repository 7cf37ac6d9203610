"""Synthetic ITCH 5.0 messages for publish --generate, demo and the tests."""

from __future__ import annotations

import logging
import random
from collections.abc import Iterable

logger = logging.getLogger("moldudp64.cli")

# --------------------------------------------------------------------------- ITCH generator

# ITCH 5.0 message types and their lengths (the type byte included).
ITCH_LENGTHS: dict[bytes, int] = {
    b"S": 12, b"R": 39, b"H": 25, b"Y": 20, b"L": 26, b"V": 35, b"W": 12, b"K": 28,
    b"J": 35, b"h": 21, b"A": 36, b"F": 40, b"E": 31, b"C": 36, b"X": 23, b"D": 19,
    b"U": 35, b"P": 44, b"Q": 40, b"B": 19, b"I": 50, b"N": 20, b"O": 48,
}  # fmt: skip
# A plausible mix: mostly order flow, some trades and administrative messages.
_ITCH_MIX = [b"A"] * 40 + [b"D"] * 22 + [b"U"] * 10 + [b"E"] * 8 + [b"X"] * 6 + [b"F"] * 4
_ITCH_MIX += [b"P", b"P", b"C", b"I", b"R", b"H", b"L", b"Q", b"N", b"Y"]


def generate_itch(count: int, seed: int = 0) -> Iterable[bytes]:
    """``count`` ITCH-5.0-shaped messages (right type and length, common header filled):
    a system event first, then a seeded mix of order-book messages."""
    rng = random.Random(seed)
    clock = 34_200_000_000_000  # 09:30 in nanoseconds since midnight
    for i in range(count):
        kind = b"S" if i == 0 else rng.choice(_ITCH_MIX)
        clock += rng.randrange(1, 50_000)
        locate = rng.randrange(1, 9000)
        header = kind + locate.to_bytes(2, "big") + (i & 0xFFFF).to_bytes(2, "big")
        header += clock.to_bytes(6, "big")
        body = rng.randbytes(ITCH_LENGTHS[kind] - len(header))
        yield header + body


