"""How fast the wire layer splits a full NASDAQ packet (38 messages in 1472 bytes).

    python benchmarks/bench_wire.py [--quick]
"""

from __future__ import annotations

import argparse
import platform
import time
from collections.abc import Callable

from moldudp64 import wire
from moldudp64.wire import Packet, pack_messages, split_blocks


def full_packet() -> bytes:
    """The shape of the 38-message packet in the shared capture: 36 x 36 bytes + 2 x 40."""
    sizes = [36] * 8 + [40] + [36] * 4 + [40] + [36] * 24
    (packet,) = pack_messages("000010059B", 19009117, [b"A" * n for n in sizes])
    assert len(packet) == 1472 and len(Packet(packet)) == 38
    return packet


def rate(label: str, body: Callable[[], int], seconds: float) -> tuple[str, float]:
    """Run ``body`` (returns messages handled) for about ``seconds``; messages per second."""
    done = 0
    start = time.perf_counter()
    deadline = start + seconds
    while time.perf_counter() < deadline:
        done += body()
    return label, done / (time.perf_counter() - start)


def main(argv: list[str] | None = None) -> list[tuple[str, float]]:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--quick", action="store_true", help="a tiny run, for tests")
    args = parser.parse_args(argv)
    seconds = 0.05 if args.quick else 2.0
    packet = full_packet()
    batch = 100

    def iterate() -> int:
        n = 0
        for _ in range(batch):
            for _m in Packet(packet):
                n += 1
        return n

    def validate_and_split() -> int:
        n = 0
        for _ in range(batch):
            n += len(split_blocks(Packet(packet).validate().data))
        return n

    def parse_py() -> int:
        n = 0
        for _ in range(batch):
            n += len(wire._parse_blocks_py(packet))
        return n

    def parse_c() -> int:
        n = 0
        for _ in range(batch):
            n += len(wire._parse_blocks_c(packet))
        return n

    def split() -> int:
        n = 0
        for _ in range(batch):
            n += len(split_blocks(packet))
        return n

    results = [
        rate("Packet iteration (memoryview per message)", iterate, seconds),
        rate("Packet.validate + split_blocks (bytes per message)", validate_and_split, seconds),
        rate("parse_blocks, pure Python (validate + split)", parse_py, seconds),
        rate("split_blocks alone (no validation)", split, seconds),
    ]
    if wire.c_parse_blocks is not None:
        results.append(rate("parse_blocks, C accelerator (validate + split)", parse_c, seconds))
    print(f"# {platform.python_implementation()} {platform.python_version()} on "
          f"{platform.machine()} ({platform.processor() or 'cpu'})")
    for label, value in results:
        print(f"{label:55s} {value:>14,.0f} messages/s")
    return results


if __name__ == "__main__":
    main()
