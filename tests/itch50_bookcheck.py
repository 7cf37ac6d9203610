"""The long check, run by hand (CI runs the small one in tests/itch50/test_book.py):
``moldudp64 book`` on generated days of millions of messages, its Parquet tables compared
row for row with the reference book, streamed (memory stays bounded)::

    python tests/itch50_bookcheck.py --messages 2000000 --seeds 1,2,3 [--pure-python]
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from typing import Any

import pyarrow.parquet as pq

from itch50_bookref import ReferenceBook
from moldudp64.binaryfile import write_binaryfile
from moldudp64.itch50.book_tables import table_files
from moldudp64.itch50.generator import generate_day


def rows(out: str, name: str) -> Iterator[dict[str, Any]]:
    for path in table_files(out, name):  # depth: its part files, in order
        for batch in pq.ParquetFile(path).iter_batches(batch_size=65_536):
            yield from batch.to_pylist()


def check(messages: int, seed: int, depth: int, pure: bool) -> bool:
    with tempfile.TemporaryDirectory() as tmp:
        day = os.path.join(tmp, "day.bin")
        write_binaryfile(day, generate_day(messages, seed=seed))
        env = dict(os.environ)
        if pure:
            env["MOLDUDP64_PURE_PYTHON"] = "1"
        out = os.path.join(tmp, "book")
        t0 = time.monotonic()
        proc = subprocess.run(
            [sys.executable, "-m", "moldudp64", "book", day, "-o", out, "--depth", str(depth)],
            env=env, capture_output=True, text=True, check=False,
        )  # fmt: skip
        print(proc.stderr.strip(), f"[{time.monotonic() - t0:.1f} s]")
        if proc.returncode != 0:
            return False
        names = ("bbo", "trades", "depth")
        got = {name: rows(out, name) for name in names}
        book = ReferenceBook(depth=depth)
        counts = dict.fromkeys(got, 0)
        for seq, message in enumerate(generate_day(messages, seed=seed), start=1):
            book.apply(message, seq)
            for name, expected in (("bbo", book.bbo), ("trades", book.trades),
                                   ("depth", book.depth_rows)):  # fmt: skip
                for row in expected:
                    actual = next(got[name], None)
                    if actual != row:
                        print(f"seed {seed}: {name} row {counts[name]} differs:\n{actual}\n{row}")
                        return False
                    counts[name] += 1
                expected.clear()
        for name, rest in got.items():
            if next(rest, None) is not None:
                print(f"seed {seed}: {name} has rows beyond the reference's {counts[name]}")
                return False
        print(f"seed {seed}: {messages} messages, equal row for row: {counts}")
        return True


def main() -> int:
    p = argparse.ArgumentParser()
    p.add_argument("--messages", type=int, default=1_000_000)
    p.add_argument("--seeds", default="1,2,3")
    p.add_argument("--depth", type=int, default=10)
    p.add_argument("--pure-python", action="store_true")
    args = p.parse_args()
    ok = all(
        check(args.messages, int(s), args.depth, args.pure_python) for s in args.seeds.split(",")
    )
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
