"""``moldudp64 demo``: publisher, faulty network and receiver in one private namespace."""

from __future__ import annotations

import argparse
import logging
import os
import socket
import tempfile
import threading
import time
from typing import Any

from ..binaryfile import BinaryFileWriter
from ..events import (
    Address,
)
from ..faults import FaultInjector
from ..net import open_unicast_socket
from ..netns import enter_private_netns
from ..sync.client import MoldUDP64, open_line_sockets, open_request_socket
from ..sync.server import Publisher
from ..wire import (
    END_OF_SESSION,
)
from .common import (
    EXIT_INTERRUPTED,
    EXIT_LOST,
    EXIT_OK,
    UsageError,
    _say,
    _Status,
    _stderr_is_terminal,
)
from .itchgen import generate_itch
from .listen import _CaptureHook, _lost_text, _PcapTap, _receive
from .publish import _faults
from .sinks import MessageSink

logger = logging.getLogger("moldudp64.cli")

# --------------------------------------------------------------------------- demo


class _ListSink(MessageSink):
    """Keeps the delivered messages in memory (demo)."""

    def __init__(self) -> None:
        self.messages: list[bytes] = []
        self.sequences_ok = True
        self._next: int | None = None

    def write(self, session: str, seq_num: int, messages: list[bytes]) -> None:
        if self._next is not None and seq_num != self._next:
            self.sequences_ok = False
        self._next = seq_num + len(messages)
        self.messages.extend(messages)
        self.count += len(messages)


def _wire_tally(faults: Any, size: int) -> Any:
    """Wrap a FaultInjector so it records which sequence numbers went out on the wire."""

    class WireTally(FaultInjector):
        """A FaultInjector that marks, per sequence number, whether any copy was sent."""

        def __init__(self) -> None:
            super().__init__(faults.drop, faults.duplicate, faults.reorder, seed=faults.seed)
            self.sent_seqs = bytearray(size + 1)

        def _mark(self, out: list[bytes]) -> list[bytes]:
            for data in out:
                count = (data[18] << 8) | data[19]
                if 0 < count < END_OF_SESSION:
                    seq = int.from_bytes(data[10:18], "big")
                    end = min(seq + count, size + 1)
                    if seq < end:
                        self.sent_seqs[seq:end] = b"\x01" * (end - seq)
            return out

        def process(self, datagram: bytes) -> list[bytes]:
            return self._mark(super().process(datagram))

        def flush(self) -> list[bytes]:
            return self._mark(super().flush())

    return WireTally()


#: What the demo leaves in its directory: the client's datagrams, and the day it delivered.
CAPTURE_NAME = "capture.pcap"
DAY_NAME = "day.NASDAQ_ITCH50"


def _demo_directory(path: str | None) -> str:
    """The directory the demo leaves its files in: ``path`` (created if need be), or a new
    temporary one."""
    if path is None:
        return tempfile.mkdtemp(prefix="moldudp64-demo-")
    if os.path.exists(path) and not os.path.isdir(path):
        raise UsageError(f"--dir {path} is a file: give a directory (created if need be)")
    os.makedirs(path, exist_ok=True)  # an OSError names the path: one line, exit 2
    return path


def cmd_demo(args: argparse.Namespace) -> int:
    """moldudp64 demo: publisher with loss + re-request server + client, output == input."""


    # Before any thread starts: a private network namespace for real multicast, if root.
    why_not = None if args.loopback else enter_private_netns()
    multicast = why_not is None and not args.loopback
    session = "DEMO000001"
    port = args.port or (30001 if multicast else 0)
    messages = list(generate_itch(args.messages, args.seed))
    directory = _demo_directory(args.dir)
    capture_path = os.path.join(directory, CAPTURE_NAME)
    tap = _PcapTap(capture_path)
    faults = _faults(args)
    if faults is not None:
        faults = _wire_tally(faults, len(messages))
    lines: list[socket.socket] = []
    if not multicast:  # the client's socket first: its port is where the publisher sends
        lines = [open_unicast_socket(("127.0.0.1", port), rcvbuf=8 * 1024 * 1024)]
        port = lines[0].getsockname()[1]
    group: Address = ("239.255.64.1", port)  # unicast: only names the feed for the client
    target: Address = group if multicast else ("127.0.0.1", port)
    transport = (
        f"multicast {group[0]}:{port} in a private network namespace"
        if multicast
        else f"unicast 127.0.0.1:{port} over loopback" + (f" ({why_not})" if why_not else "")
    )
    _say(
        f"moldudp64 demo: {len(messages)} messages of a generated TotalView-ITCH 5.0 day "
        f"over {transport}; faults: "
        f"drop {args.drop:g}, duplicate {args.duplicate:g}, reorder {args.reorder:g} "
        f"(seed {args.seed})"
    )
    publisher = Publisher(
        session,
        target,
        unicast=not multicast,
        heartbeat_interval=0.25,
        end_of_session_duration=args.end_of_session_duration,
        rerequest_bind=("127.0.0.1", 0),
        faults=faults,
    )
    sink = _ListSink()
    status = _Status(_stderr_is_terminal())
    t0 = time.monotonic()
    try:
        assert publisher.rerequest_address is not None
        hook = _CaptureHook(tap, group, None, "127.0.0.1")
        client = MoldUDP64(
            group, "0.0.0.0", [publisher.rerequest_address], session, on_datagram=hook
        )
        if multicast:
            lines = [sock for sock, _ in open_line_sockets(client.options)]
        client.open_with_sockets(lines, open_request_socket(client.options))
        hook.opened(client.local_request_address)
        with publisher:
            run_error: list[BaseException] = []

            def publish() -> None:
                try:
                    publisher.run(messages, rate=args.rate, end_session=False)
                    publisher.end_session(wait=False)
                except BaseException as exc:  # reported by the main thread
                    run_error.append(exc)

            thread = threading.Thread(target=publish, name="moldudp64-demo-publisher", daemon=True)
            thread.start()
            try:
                result = _receive(
                    client,
                    sink,
                    count=None,
                    idle_timeout=args.timeout,
                    status=status,
                    label="demo",
                )
            finally:
                client.close()
                publisher.stop()
                thread.join()
            if run_error:
                raise run_error[0]
            pstats = publisher.stats
            rstats = publisher.rerequest_stats
    finally:
        status.clear()
        tap.close()
    elapsed = time.monotonic() - t0
    day_path = os.path.join(directory, DAY_NAME)
    with BinaryFileWriter(day_path) as writer:
        for message in sink.messages:
            writer.write(message)
    core = client.stats.receiver
    fstats = faults.stats if faults is not None else None
    equal = sink.messages == messages and sink.sequences_ok
    # Exact: the sequence numbers no copy of which left the publisher, and of those the
    # ones the client delivered (every one of them came from a re-request).
    lost_seqs = (
        [seq for seq in range(1, len(messages) + 1) if not faults.sent_seqs[seq]]
        if faults is not None
        else []
    )
    first = result.first_seq or 1
    wire_lost = len(lost_seqs)
    recovered = sum(1 for seq in lost_seqs if first <= seq < first + len(sink.messages))
    _say(
        f"moldudp64 demo: {pstats.packets} packets sent"
        + (
            f"; on the wire {fstats.dropped} dropped, {fstats.duplicated} duplicated, "
            f"{fstats.reordered} reordered"
            if fstats is not None
            else ""
        )
        + (f"; {rstats.requests} re-requests answered" if rstats is not None else "")
        + (f"; {core.gaps_detected} gaps seen by the client" if core is not None else "")
        + f"; {elapsed:.1f} s"
    )
    print(
        f"demo: published {len(messages)} messages, lost on the wire {wire_lost}, "
        f"recovered {recovered}, delivered {len(sink.messages)}, "
        + ("output equals input" if equal else "OUTPUT DIFFERS FROM INPUT")
        + ("" if not result.lost_messages else f" (lost for good: {_lost_text(result)})"),
        flush=True,
    )
    _say(
        f"moldudp64 demo: kept in {directory}/: {CAPTURE_NAME} ({tap.writer.count} datagrams "
        f"as the client received them) and {DAY_NAME} (the {writer.count} messages delivered, "
        f"a BinaryFILE); decode them with: moldudp64 inspect "
        f"{os.path.join(directory, DAY_NAME)} --decode itch50 --format parquet -o "
        f"{os.path.join(directory, 'day')}"
    )
    if result.interrupted:
        return EXIT_INTERRUPTED
    if not equal:
        return EXIT_LOST
    return EXIT_OK


