"""Write a large MoldUDP64 capture for the ``inspect`` benchmark.

    python benchmarks/make_pcap.py OUT.pcap [--packets N] [--per-packet K] [--port P] [--loss F]

Every packet is a data packet of one session, in order, from one source to one multicast
group, carrying ``K`` ITCH-shaped 36-byte messages (an Add Order's length), framed as
Ethernet/IPv4/UDP by the project's :class:`~moldudp64.capture.CaptureWriter` (so tshark
and Wireshark open it). 1,000,000 packets take a few seconds.
"""

from __future__ import annotations

import argparse
import random
import struct
import sys
import time

from moldudp64.capture import CaptureWriter
from moldudp64.wire import HEADER, encode_session

SESSION = "000010059B"
PORT = 26477
SOURCE = ("10.0.0.1", 40000)
GROUP = ("239.1.1.1", PORT)
MESSAGE_LENGTH = 36
START_TIME = 1_700_000_000.0
PACKET_INTERVAL = 1e-5  # 100,000 packets a second of capture time


def make_pcap(
    path: str,
    packets: int,
    *,
    per_packet: int = 3,
    port: int = PORT,
    session: str = SESSION,
    loss: float = 0.0,
    seed: int = 1,
) -> int:
    """Write ``packets`` in-order data packets of ``per_packet`` messages (leaving out a
    seeded random ``loss`` fraction of them, as gaps); return the number of messages
    numbered (written or left out)."""
    raw = encode_session(session)
    dst = (GROUP[0], port)
    pack_header = HEADER.pack
    # ITCH-shaped blocks: a 2-byte length, then an 'A' message whose 8-byte locate field
    # carries the sequence number (every message differs, none is a copy of another).
    block_head = struct.pack(">H", MESSAGE_LENGTH) + b"A"
    filler = bytes(range(MESSAGE_LENGTH - 1 - 8))
    pack_seq = struct.Struct(">Q").pack
    seq = 1
    chance = random.Random(seed).random
    with CaptureWriter(path) as writer:
        write = writer.write
        for i in range(packets):
            if loss and chance() < loss:
                seq += per_packet
                continue
            parts = [pack_header(raw, seq, per_packet)]
            for k in range(per_packet):
                parts.append(block_head + pack_seq(seq + k) + filler)
            write(b"".join(parts), SOURCE, dst, START_TIME + i * PACKET_INTERVAL)
            seq += per_packet
    return seq - 1


def main(argv: list[str] | None = None) -> int:
    """Command line: write the capture and say how long it took."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("output")
    parser.add_argument("--packets", type=int, default=1_000_000)
    parser.add_argument("--per-packet", type=int, default=3)
    parser.add_argument("--port", type=int, default=PORT)
    parser.add_argument("--loss", type=float, default=0.0, help="fraction of packets left out")
    args = parser.parse_args(argv)
    started = time.perf_counter()
    messages = make_pcap(
        args.output, args.packets, per_packet=args.per_packet, port=args.port, loss=args.loss
    )
    elapsed = time.perf_counter() - started
    print(
        f"{args.output}: {args.packets} packets, {messages} messages, port {args.port} "
        f"({elapsed:.1f} s)",
        file=sys.stderr,
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
