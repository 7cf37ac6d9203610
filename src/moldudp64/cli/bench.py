"""``moldudp64 bench``: the no-root, no-compiler benchmarks as one table."""

from __future__ import annotations

import argparse
import logging
import tempfile

from ..exceptions import ConfigError
from .common import EXIT_OK

logger = logging.getLogger("moldudp64.cli")


def cmd_bench(args: argparse.Namespace) -> int:
    """``moldudp64 bench``: the no-root, no-compiler benchmarks as one table."""

    from .. import bench

    if not 0 < args.scale <= 10:
        raise ConfigError(f"--scale {args.scale} must be in (0, 10]")
    results = bench.run_quick_suite(args.scale)
    if not args.skip_inspect:
        with tempfile.TemporaryDirectory(prefix="moldudp64-bench-") as tmp:
            results.extend(bench.bench_inspect(max(1000, int(1_000_000 * args.scale)), tmp))
    bench.print_table(results, title="moldudp64 bench", write=print)
    return EXIT_OK


