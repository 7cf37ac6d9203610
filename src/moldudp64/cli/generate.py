"""``moldudp64 generate itch50``: a synthetic TotalView-ITCH 5.0 day, as a BinaryFILE."""

from __future__ import annotations

import argparse
import sys
import time

from .._output import WholeWrites
from ..binaryfile import BinaryFileWriter
from ..itch50.generator import generate_day
from .common import EXIT_OK, _rate_text, _say


def cmd_generate(args: argparse.Namespace) -> int:
    """moldudp64 generate itch50 -o FILE [--messages N] [--seed S] [--stocks K]."""
    t0 = time.monotonic()
    messages = generate_day(args.messages, seed=args.seed, stocks=args.stocks)
    if args.output == "-":
        sys.stdout.flush()
        writer = BinaryFileWriter(WholeWrites(sys.stdout.buffer, False))  # type: ignore[arg-type]
        name = "stdout"
    else:
        writer = BinaryFileWriter(args.output)
        name = args.output
    with writer:
        write = writer.write
        for message in messages:
            write(message)
    elapsed = time.monotonic() - t0
    _say(
        f"moldudp64 generate: {writer.count} messages of a TotalView-ITCH 5.0 day "
        f"(seed {args.seed}) written to {name} in {elapsed:.1f} s "
        f"({_rate_text(writer.count, elapsed)})"
    )
    return EXIT_OK
