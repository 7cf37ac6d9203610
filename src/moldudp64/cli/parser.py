"""The argument parser: one function per command."""

from __future__ import annotations

import argparse
import importlib
import logging
from typing import Any, NoReturn

from .. import __version__
from .common import EXIT_USAGE, FORMATS
from .feed import parse_nats_source
from .options import (
    CAPTURED_PORT,
    COUNT,
    GROUP_PORT,
    HOST_PORT,
    INTERFACE,
    IPV4,
    MESSAGES_PER_SECOND,
    PORT,
    POSITIVE_SECONDS,
    PROBABILITY,
    RATE,
    SECONDS,
    SEED,
    SEQ,
    SESSION,
    TTL,
    _int_at_least,
    _max_payload,
    _network,
    _port_from,
    _rate_limit,
    _type,
)
from .soup import parse_soup_source

logger = logging.getLogger("moldudp64.cli")


class _Command:
    """A command's function, imported when the command runs: ``--help`` and usage errors
    never load the client, the servers or the capture reader."""

    def __init__(self, module: str, function: str) -> None:
        self.module = module
        self.function = function

    def __call__(self, args: argparse.Namespace) -> int:
        module = importlib.import_module(f"{__package__}.{self.module}")
        func: Any = getattr(module, self.function)
        return int(func(args))


# --------------------------------------------------------------------------- parser


class _Parser(argparse.ArgumentParser):
    """argparse, with usage errors as one line on stderr (exit 2)."""

    def error(self, message: str) -> NoReturn:
        self.exit(EXIT_USAGE, f"{self.prog}: error: {message} (see '{self.prog} --help')\n")


class _Formatter(argparse.HelpFormatter):
    """Wraps descriptions; keeps the examples epilog exactly as written."""

    def _fill_text(self, text: str, width: int, indent: str) -> str:
        if text.startswith("examples:"):
            return "".join(indent + line for line in text.splitlines(keepends=True))
        return super()._fill_text(text, width, indent)


_RAW = _Formatter

EPILOG_MAIN = """\
examples:
  moldudp64 demo                                        # see it all work, in a few seconds
  moldudp64 inspect feed.pcap                           # sessions, sequences, gaps in a capture
  moldudp64 listen 239.1.1.1:30001 --request-server 10.0.0.5:30002 --output feed.bin
  moldudp64 publish 239.1.1.1:30001 --session TEST000001 --input feed.bin --request-port 30002
  moldudp64 serve --input feed.bin --session TEST000001 --port 30003   # or serve a file alone

exit codes: 0 done, 2 bad usage or input, 3 messages lost for good,
            4 idle timeout, 130 interrupted (SIGINT, SIGTERM, SIGHUP; after flushing),
            141 the output's reader went away (broken pipe)
"""

EPILOG_INSPECT = """\
examples:
  moldudp64 inspect capture.pcap
  moldudp64 inspect capture.pcapng --port 26477 --session 000010059B
  moldudp64 inspect capture.pcap --output messages.bin            # BinaryFILE of the session
  moldudp64 inspect capture.pcap --output - --format jsonl | head
  moldudp64 inspect capture.pcap --raw -o - --format jsonl        # every message as it came
  moldudp64 inspect 20190730.NASDAQ_ITCH50                         # what a BinaryFILE holds
  moldudp64 inspect feed.bin --session S1 --first-seq 1185 -o - --format jsonl

exits 3 when gaps remain in any session; 2 when the capture is cut short or corrupt part way
(everything before the damage is reported and written first), or the file is no pcap, pcapng
or BinaryFILE; 5 when no MoldUDP64 packet passes the filters (as grep's 1: no match).
"""

EPILOG_LISTEN = """\
examples:
  moldudp64 listen 239.1.1.1:30001 --request-server 10.0.0.5:30002 -o feed.bin
  moldudp64 listen 239.1.1.1:30001 --line-b 239.1.1.2:30001 --interface 10.0.0.7 \\
      --request-server 10.0.0.5:30002 --request-server 10.0.0.6:30002 -o feed.bin
  moldudp64 listen 239.1.1.1:30001 --count 10                    # a glance, as text
  moldudp64 listen 239.1.1.1:30001 -o - --format jsonl --idle-timeout 5 | jq .seq
  moldudp64 listen 239.1.1.1:30001 -o feed.bin --capture feed.pcap

exit codes: 0 session ended (or --count reached) with every message written,
            3 messages lost for good, or data that came after the end of session (the
            rest written; stderr names the ranges), 4 --idle-timeout seconds without
            progress (no message written, recovered, reported or arriving: empty answers
            and other sessions' datagrams do not count), 130 Ctrl-C, SIGTERM or SIGHUP
            (after flushing and the summary), 141 the reader of -o - went away;
            6 (nats:// source) --start-seq past the end of the stored session.
"""

#: ``publish --linger``: seconds without a re-request before publish stops answering.
DEFAULT_LINGER = 3.0

EPILOG_PUBLISH = """\
examples:
  moldudp64 publish 239.1.1.1:30001 --session TEST000001 --input feed.bin
  moldudp64 publish 239.1.1.1:30001 --session TEST000001 --generate 100000 --rate 50000
  moldudp64 publish 239.1.1.1:30001 --session TEST000001 --generate 10000 \\
      --request-port 30002 --drop 0.05 --duplicate 0.01 --reorder 0.02 --seed 7
  unshare -rn bash -c 'ip link set lo up && ip link set lo multicast on &&
      ip route add 224.0.0.0/4 dev lo && moldudp64 publish 239.1.1.1:30001 \\
      --interface 127.0.0.1 --session TEST000001 --generate 1000'   # nothing leaves the host

These send real multicast (TTL 1) to the group out of the host's interface (or
--interface), onto its network; the last runs in a private network namespace whose only
interface is loopback, to try it on one machine.

Sends the messages, answers re-requests on --request-port throughout (default: the
feed port + 1), then sends end of session for --end-of-session-duration seconds, and
goes on answering re-requests until none has come for --linger seconds (a client still
catching up is served to the end; stderr says so). The whole --input is checked first:
a capture, or a message longer than --max-payload allows, is refused (exit 2) before
any packet goes out. Re-requests over --rate-limit wait for budget (up to 0.5 s), then
are refused; the summary counts them by reason.
"""

EPILOG_SERVE = """\
examples:
  moldudp64 serve --input feed.bin --session TEST000001 --port 30002
  moldudp64 serve --input 20190730.NASDAQ_ITCH50 --session 000010059B --port 30002 \\
      --bind 10.0.0.5 --duration 3600

Answers MoldUDP64 re-requests from a recorded BinaryFILE (message n is sequence n)
until Ctrl-C or --duration. Requests over --rate-limit (per source host) wait for budget
(up to 0.5 s), then are refused: counted in the summary, logged once per source per 10 s.
"""

EPILOG_DEMO = """\
examples:
  moldudp64 demo
  moldudp64 demo --messages 100000 --drop 0.2 --seed 3
  moldudp64 demo --loopback                      # skip the private network namespace
  moldudp64 demo --dir demo && cd demo           # then try inspect on what it leaves
  moldudp64 inspect capture.pcap
  moldudp64 inspect day.NASDAQ_ITCH50 --decode itch50 --format parquet -o day

Runs a publisher that loses, duplicates and reorders packets, its re-request server
and a client together; as root in a private network namespace with real multicast,
otherwise over loopback. The messages are a generated TotalView-ITCH 5.0 day. Leaves in
--dir the datagrams the client received (capture.pcap) and the messages it delivered
(day.NASDAQ_ITCH50, a BinaryFILE). Exits 0 only if the client's output equals the input.
"""


def _add_verbose(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "-v",
        "--verbose",
        action="count",
        default=argparse.SUPPRESS,
        help="debug logging on stderr",
    )


def _add_allow(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--allow",
        metavar="NETWORK",
        type=_type("network", _network),
        action="append",
        help="answer re-requests only from this network (repeatable; default: anyone)",
    )


def _add_rate_limit(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--rate-limit",
        metavar="N|none",
        type=_type("rate limit", _rate_limit),
        help="re-requests a second per source host, and N full answers' bytes (default: "
        "2000 requests and 4 MB a second); a request over it waits up to 0.5 s for budget, "
        "then is refused (counted, logged); 'none' turns the limit off",
    )


def _metrics_port(text: str) -> int:
    value = int(text) if text.strip().isdigit() else -1
    if not 0 <= value <= 65535:
        raise ValueError(f"{text!r} is not a port number (0: any free port)")
    return value


def _add_metrics(p: argparse.ArgumentParser) -> None:
    """--metrics-port / --metrics-addr: Prometheus metrics over HTTP (every long-running
    command; needs the [metrics] extra)."""
    p.add_argument(
        "--metrics-port",
        metavar="PORT",
        type=_type("port", _metrics_port),
        help="serve Prometheus metrics on http://ADDR:PORT/metrics while running (0: any "
        "free port, announced on stderr); needs pip install 'moldudp64[metrics]'",
    )
    p.add_argument(
        "--metrics-addr",
        metavar="ADDR",
        type=IPV4,
        default="127.0.0.1",
        help="address the metrics are served on (default 127.0.0.1)",
    )


def _add_output(p: argparse.ArgumentParser, default: str | None) -> None:
    p.add_argument(
        "--output",
        "-o",
        metavar="PATH|-",
        default=default,
        help="where messages go ('-' is stdout)" + (f"; default {default}" if default else ""),
    )
    p.add_argument(
        "--format",
        choices=FORMATS,
        default=None,
        help="binaryfile (2-byte length + message), jsonl ({session, seq, length, data hex}) "
        "or text; "
        "default text on a terminal, by extension for files (.jsonl, .txt), else binaryfile; "
        "with --decode: jsonl, text, or parquet/csv (-o DIR: one file per message type; "
        "both need pip install 'moldudp64[arrow]')",
    )
    p.add_argument(
        "--decode",
        choices=("itch50",),
        help="decode the messages as TotalView-ITCH 5.0: jsonl {session, seq, message_type, "
        "fields...}; format by default text on a terminal, jsonl on stdout and for .jsonl, "
        "csv for DIR.csv, else parquet (-o DIR)",
    )


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of the ``moldudp64`` command."""
    parser = _Parser(
        prog="moldudp64",
        description="NASDAQ MoldUDP64 toolkit: record, replay, serve, inspect and demo feeds.",
        epilog=EPILOG_MAIN,
        formatter_class=_RAW,
    )
    parser.add_argument("--version", action="version", version=f"moldudp64 {__version__}")
    _add_verbose(parser)
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)

    _add_inspect(sub)
    _add_listen(sub)
    _add_publish(sub)
    _add_serve(sub)
    _add_bridge(sub)
    _add_book(sub)
    _add_gateway(sub)
    _add_demo(sub)
    _add_generate(sub)
    _add_bench(sub)
    return parser


def _add_inspect(sub: Any) -> None:
    """The ``inspect`` command's arguments."""
    p = sub.add_parser(
        "inspect",
        help="report the sessions, sequences and gaps of a pcap/pcapng or a BinaryFILE",
        description="Read a pcap or pcapng capture (Ethernet, VLAN tags, Linux cooked "
        "captures; IPv4 fragments reassembled), find its MoldUDP64 packets (by --port, or "
        "by recognising them), run them through the receiver core and report per session. "
        "Given a BinaryFILE instead, say what is in it.",
        epilog=EPILOG_INSPECT,
        formatter_class=_RAW,
    )
    _add_verbose(p)
    p.add_argument("capture", metavar="CAPTURE", help="pcap, pcapng or BinaryFILE")
    p.add_argument(
        "--port",
        type=CAPTURED_PORT,
        help="only UDP datagrams from or to this port (0 too: anonymised captures use it); "
        "a listen --capture file holds re-request answers on other ports: leave it out there",
    )
    p.add_argument(
        "--session",
        type=SESSION,
        help="only this session (a BinaryFILE: the session to label its messages with)",
    )
    p.add_argument(
        "--raw",
        action="store_true",
        help="write every message of every MoldUDP64 packet as it comes in the capture "
        "(no ordering, no de-duplication), with its packet's session and sequence number "
        "and, in jsonl (ts) and text, the frame's timestamp; the report stays the ordered one",
    )
    p.add_argument(
        "--first-seq",
        metavar="N",
        type=SEQ,
        help="BinaryFILE only: label its messages N, N+1, ... (a BinaryFILE holds no sequence "
        "numbers: without it they are messages 1..N of the file; --session labels the session)",
    )
    p.add_argument("--start-seq", dest="first_seq", type=SEQ, help=argparse.SUPPRESS)
    _add_output(p, None)
    p.set_defaults(func=_Command("inspect", "cmd_inspect"))


def _add_feed(p: argparse.ArgumentParser) -> None:
    """How a command joins and recovers a feed (``listen`` and ``bridge``)."""
    p.add_argument(
        "--interface",
        metavar="ADDR|NAME",
        type=INTERFACE,
        default="0.0.0.0",
        help="address or name (eth0) of the interface to join on (default: the kernel's choice)",
    )
    p.add_argument(
        "--request-server",
        metavar="HOST:PORT",
        type=HOST_PORT,
        action="append",
        help="a re-request server (repeat for several; requests are spread over them)",
    )
    p.add_argument("--session", type=SESSION, help="only this session (default: the first seen)")
    p.add_argument("--start-seq", metavar="N", type=SEQ, help="first sequence number wanted")
    p.add_argument("--line-b", metavar="GROUP:PORT", type=GROUP_PORT, help="the B line")
    p.add_argument(
        "--request-delay",
        metavar="SECONDS",
        type=SECONDS,
        help="how long a new gap waits for the other line (or a late packet) before it is "
        "requested (default 0.005 with --line-b, else 0)",
    )
    p.add_argument(
        "--end-confirm",
        metavar="SECONDS",
        type=POSITIVE_SECONDS,
        help="seconds of quiet after an end of session before it is believed (default 2.5: "
        "more than two heartbeat intervals, so one lost heartbeat lets no forged end "
        "through); lower only on a trusted network",
    )


def _add_stop(p: argparse.ArgumentParser) -> None:
    """When a receiving command stops (``listen`` and ``bridge``)."""
    p.add_argument("--count", metavar="N", type=COUNT, help="stop after N messages")
    p.add_argument(
        "--idle-timeout",
        metavar="SECONDS",
        type=POSITIVE_SECONDS,
        help="stop (exit 4) after this long without any packet",
    )


def _add_listen(sub: Any) -> None:
    """The ``listen`` command's arguments."""
    p = sub.add_parser(
        "listen",
        help="join a feed, recover gaps, write every message in order",
        description="Join a MoldUDP64 feed, recover gaps from the re-request servers and "
        "write every message in sequence order exactly once.",
        epilog=EPILOG_LISTEN,
        formatter_class=_RAW,
    )
    _add_verbose(p)
    p.add_argument(
        "group",
        metavar="GROUP:PORT|nats://HOST:PORT/STREAM|soup://HOST:PORT",
        type=_feed_or_nats,
        help="the feed (line A), a session a bridge stored in JetStream stream STREAM, or a "
        "SoupBinTCP session: soup://[USER:PASS@]HOST:PORT[/SESSION]",
    )
    _add_feed(p)
    _add_output(p, "-")
    _add_stop(p)
    p.add_argument(
        "--capture",
        metavar="PATH.pcap|PATH.pcapng",
        help="also record the raw datagrams (pcapng for a .pcapng path, else classic pcap)",
    )
    _add_metrics(p)
    _add_listen_soup(p)
    p.set_defaults(func=_Command("listen", "cmd_listen"))


def _add_publish(sub: Any) -> None:
    """The ``publish`` command's arguments."""
    p = sub.add_parser(
        "publish",
        help="publish a BinaryFILE (or generated messages) as a session",
        description="Publish a BinaryFILE, or a generated TotalView-ITCH 5.0 day of N "
        "messages (as moldudp64 generate itch50 writes), as a "
        "MoldUDP64 session, serving re-requests throughout, then end the session.",
        epilog=EPILOG_PUBLISH,
        formatter_class=_RAW,
    )
    _add_verbose(p)
    p.add_argument("group", metavar="GROUP:PORT", type=GROUP_PORT, help="where to send")
    p.add_argument("--session", type=SESSION, required=True, help="session name (10 chars max)")
    source = p.add_mutually_exclusive_group(required=True)
    source.add_argument("--input", metavar="FILE", help="BinaryFILE to publish")
    source.add_argument(
        "--generate", metavar="N", type=COUNT, help="publish N messages of a generated ITCH 5.0 day"
    )
    p.add_argument(
        "--interface", metavar="ADDR|NAME", type=INTERFACE, help="outgoing interface (or its name)"
    )
    p.add_argument("--ttl", metavar="N", type=TTL, default=1, help="multicast TTL (default 1)")
    p.add_argument(
        "--rate",
        metavar="MESSAGES_PER_SECOND",
        type=RATE,
        default=0.0,
        help="pace the messages (default 0: as fast as possible)",
    )
    p.add_argument(
        "--request-port", metavar="PORT", type=PORT, help="re-request port (default: port + 1)"
    )
    p.add_argument(
        "--max-payload",
        metavar="BYTES",
        type=_max_payload,
        default=1452,
        help="bytes of message blocks per packet after the header (default 1452)",
    )
    p.add_argument(
        "--heartbeat-interval",
        metavar="SECONDS",
        type=POSITIVE_SECONDS,
        default=1.0,
        help="heartbeat when idle this long (default 1)",
    )
    p.add_argument(
        "--end-of-session-duration",
        metavar="SECONDS",
        type=SECONDS,
        default=2.0,
        help="how long to send end of session (default 2)",
    )
    p.add_argument(
        "--linger",
        metavar="SECONDS",
        type=SECONDS,
        default=DEFAULT_LINGER,
        help="after the end of session, answer re-requests until none has come for this "
        f"long (default {DEFAULT_LINGER:g}; 0: stop with the end of session)",
    )
    p.add_argument("--drop", metavar="P", type=PROBABILITY, default=0.0, help="drop packets")
    p.add_argument(
        "--duplicate", metavar="P", type=PROBABILITY, default=0.0, help="duplicate packets"
    )
    p.add_argument("--reorder", metavar="P", type=PROBABILITY, default=0.0, help="reorder packets")
    p.add_argument("--seed", metavar="N", type=SEED, help="seed of the faults and the generator")
    _add_allow(p)
    _add_rate_limit(p)
    _add_metrics(p)
    p.set_defaults(func=_Command("publish", "cmd_publish"))


def _add_serve(sub: Any) -> None:
    """The ``serve`` command's arguments."""
    p = sub.add_parser(
        "serve",
        help="a stand-alone re-request server for a recorded BinaryFILE",
        description="Answer MoldUDP64 re-requests from a recorded BinaryFILE.",
        epilog=EPILOG_SERVE,
        formatter_class=_RAW,
    )
    _add_verbose(p)
    p.add_argument("--input", metavar="FILE", help="the BinaryFILE")
    p.add_argument(
        "--nats",
        metavar="URL",
        action="append",
        help="serve from JetStream instead (nats://HOST:PORT, repeatable), with --stream",
    )
    p.add_argument("--stream", metavar="NAME", help="the JetStream stream a bridge fills")
    p.add_argument("--session", type=SESSION, required=True, help="its session name")
    p.add_argument("--port", type=PORT, help="UDP port to serve re-requests on")
    p.add_argument(
        "--bind", metavar="ADDR", type=IPV4, default="0.0.0.0", help="address to serve on"
    )
    p.add_argument(
        "--max-payload",
        metavar="BYTES",
        type=_max_payload,
        default=1452,
        help="bytes of message blocks per answer (default 1452)",
    )
    p.add_argument(
        "--duration", metavar="SECONDS", type=SECONDS, help="stop after this long (default: never)"
    )
    _add_allow(p)
    _add_rate_limit(p)
    _add_metrics(p)
    _add_serve_soup(p)
    p.set_defaults(func=_Command("soup", "cmd_serve"))


def _feed_or_nats(text: str) -> Any:
    """listen's source: GROUP:PORT, or nats://HOST:PORT/STREAM (or soup://HOST:PORT)."""
    if text.startswith("nats://"):
        return _type("nats://HOST:PORT/STREAM", parse_nats_source)(text)
    if text.startswith("soup://"):
        return _type("soup://[USER:PASS@]HOST:PORT[/SESSION]", parse_soup_source)(text)
    if "://" in text:
        scheme = text.split("://", 1)[0]
        raise argparse.ArgumentTypeError(
            f"{text!r}: a {scheme}:// source is not supported (GROUP:PORT or nats://HOST:PORT/STREAM)"
        )
    return GROUP_PORT(text)


EPILOG_BRIDGE = """\
examples:
  moldudp64 bridge 239.1.1.1:30001 --request-server 10.0.0.5:30002 \\
      --nats nats://10.0.1.1:4222 --nats nats://10.0.1.2:4222 --stream ITCH
  moldudp64 listen nats://10.0.1.1:4222/ITCH --start-seq 1000000 -o tail.bin
  moldudp64 serve --nats nats://10.0.1.1:4222 --stream ITCH --session 000010059B --port 30002

Appends every message, in order, with lost ranges and the end of session in their place,
to JetStream stream NAME (created when absent: subjects NAME.>, file storage). Run two
bridges on the same feed and stream: each message is stored once. Exit codes as listen.
"""


def _add_bridge(sub: Any) -> None:
    """The ``bridge`` command's arguments."""
    p = sub.add_parser(
        "bridge",
        help="join a feed and append it to a NATS JetStream stream",
        description="Join a MoldUDP64 feed, recover gaps, and append every message in order "
        "to a JetStream stream, many messages per stream message.",
        epilog=EPILOG_BRIDGE,
        formatter_class=_RAW,
    )
    _add_verbose(p)
    p.add_argument("group", metavar="GROUP:PORT", type=GROUP_PORT, help="the feed (line A)")
    p.add_argument(
        "--nats",
        metavar="URL",
        action="append",
        required=True,
        help="nats://HOST:PORT (repeatable)",
    )
    p.add_argument("--stream", metavar="NAME", required=True, help="the JetStream stream")
    _add_feed(p)
    _add_stop(p)
    _add_metrics(p)
    p.set_defaults(func=_Command("bridge", "cmd_bridge"))


def _symbols(text: str) -> frozenset[str]:
    names = frozenset(n.strip() for n in text.split(",") if n.strip())
    if not names:
        raise argparse.ArgumentTypeError(f"{text!r}: give stock symbols, comma-separated")
    return names


def _tables(text: str) -> tuple[str, ...]:
    names = tuple(dict.fromkeys(n.strip() for n in text.split(",") if n.strip()))
    bad = [n for n in names if n not in ("bbo", "trades", "depth")]
    if bad or not names:
        raise argparse.ArgumentTypeError(f"{text!r}: tables are bbo, trades, depth")
    return names


EPILOG_BOOK = """\
examples:
  moldudp64 book day.bin -o book/                  # a BinaryFILE (or a pcap/pcapng)
  moldudp64 book day.bin -o book/ --symbols AAPL,MSFT --depth 5
  moldudp64 book day.bin -o book/ --interval 60 --depth 20 --tables depth
  moldudp64 book 239.1.1.1:30001 --request-server 10.0.0.5:30002 -o book/
  moldudp64 book nats://127.0.0.1:4222/ITCH -o book/
  moldudp64 book 239.1.1.1:30001 -o book/ --snapshot-port 30020   # late joiners:
  moldudp64 listen 239.1.1.1:30001 --snapshot soup://127.0.0.1:30020 -o late.bin

Writes DIR/bbo.parquet (a row per change of a stock's best bid or offer), DIR/trades.parquet
(a row per E, C, P, Q, B) and DIR/depth/ (a row per change of a stock's top --depth levels;
with --interval, every stock's levels at each multiple of the interval), a directory of part
files part-000000.parquet, part-000001.parquet, ... each holding the rows after the previous
one's (read it as one dataset: pyarrow.parquet.read_table('DIR/depth'), DuckDB
'DIR/depth/*.parquet'). Messages
lost and not recovered: DIR/book_state.parquet names the ranges (every book unreliable from
there) and the exit code is 3.
"""


def _add_snapshot_server(p: argparse.ArgumentParser, book: str) -> None:
    """--snapshot-port and --snapshot-addr: GLIMPSE-style snapshots of ``book``."""
    p.add_argument(
        "--snapshot-port",
        metavar="PORT",
        type=_type("port", _port_from(0)),
        help=f"serve GLIMPSE-style snapshots of {book} over SoupBinTCP on this port (0: any "
        "free one): each login gets the system event, every stock's directory, trading "
        "state and an Add Order per resting order in priority order, then End of Snapshot "
        "with the feed number to continue from (listen --snapshot soup://... joins late)",
    )
    p.add_argument(
        "--snapshot-addr",
        metavar="ADDR",
        type=IPV4,
        default="127.0.0.1",
        help="address of the snapshot server (default 127.0.0.1)",
    )


def _add_book(sub: Any) -> None:
    """The ``book`` command's arguments."""
    p = sub.add_parser(
        "book",
        help="build the ITCH 5.0 order book; write bbo, trades and depth tables (Parquet)",
        description="Build every stock's full-depth order book from TotalView-ITCH 5.0 "
        "messages (a BinaryFILE, a pcap/pcapng capture, a live feed with recovery, or a "
        "session stored in JetStream) and write its tables as Parquet, a bounded batch at "
        "a time.",
        epilog=EPILOG_BOOK,
        formatter_class=_RAW,
    )
    _add_verbose(p)
    p.add_argument(
        "source",
        metavar="SOURCE",
        help="a BinaryFILE or pcap/pcapng, a live GROUP:PORT, nats://HOST:PORT/STREAM, or "
        "a SoupBinTCP session soup://[USER:PASS@]HOST:PORT[/SESSION]",
    )
    p.add_argument("--output", "-o", metavar="DIR", required=True, help="directory of tables")
    p.add_argument(
        "--depth",
        metavar="N",
        type=_int_at_least(1, "depth", 50),
        default=10,
        help="levels per side in the depth table (default 10; 20 for research samples)",
    )
    p.add_argument(
        "--symbols",
        metavar="A,B",
        type=_symbols,
        help="rows only for these stocks (every book is kept all the same)",
    )
    p.add_argument(
        "--interval",
        metavar="SECONDS",
        type=POSITIVE_SECONDS,
        help="depth holds each stock's levels at every multiple of SECONDS of the feed's "
        "clock, instead of a row per change",
    )
    p.add_argument(
        "--tables",
        metavar="LIST",
        type=_tables,
        default=("bbo", "trades", "depth"),
        help="which tables (default bbo,trades,depth)",
    )
    p.add_argument(
        "--port",
        type=CAPTURED_PORT,
        help="captures: only UDP datagrams from or to this port",
    )
    _add_snapshot_server(p, "the book")
    p.add_argument(
        "--max-retries",
        metavar="N",
        type=_int_at_least(0, "retries"),
        default=5,
        help="soup://: reconnects in a row before giving up (default 5)",
    )
    _add_feed(p)
    _add_stop(p)
    p.set_defaults(func=_Command("book", "cmd_book"))


def _add_demo(sub: Any) -> None:
    """The ``demo`` command's arguments."""
    p = sub.add_parser(
        "demo",
        help="see it all work: lossy publisher, re-request server and client together",
        description="Run a publisher with loss, a re-request server and a client together "
        "and check that the client's output equals the input.",
        epilog=EPILOG_DEMO,
        formatter_class=_RAW,
    )
    _add_verbose(p)
    p.add_argument("--messages", metavar="N", type=COUNT, default=20_000, help="default 20000")
    p.add_argument("--drop", metavar="P", type=PROBABILITY, default=0.05, help="default 0.05")
    p.add_argument("--duplicate", metavar="P", type=PROBABILITY, default=0.01, help="default 0.01")
    p.add_argument("--reorder", metavar="P", type=PROBABILITY, default=0.02, help="default 0.02")
    p.add_argument("--seed", metavar="N", type=SEED, default=1, help="default 1")
    p.add_argument(
        "--rate",
        metavar="MESSAGES_PER_SECOND",
        type=MESSAGES_PER_SECOND,
        default=50_000,
        help="default 50000",
    )
    p.add_argument("--port", type=PORT, help="feed port (default 30001, or a free one on loopback)")
    p.add_argument(
        "--end-of-session-duration", metavar="SECONDS", type=SECONDS, default=1.0, help="default 1"
    )
    p.add_argument(
        "--timeout",
        metavar="SECONDS",
        type=POSITIVE_SECONDS,
        default=10.0,
        help="give up after this long without a packet (default 10)",
    )
    p.add_argument(
        "--loopback", action="store_true", help="unicast over loopback, no network namespace"
    )
    p.add_argument(
        "--dir",
        metavar="DIR",
        help="leave capture.pcap and day.NASDAQ_ITCH50 here (default: a new temporary "
        "directory, named at the end)",
    )
    p.set_defaults(func=_Command("demo", "cmd_demo"))


EPILOG_GENERATE = """\
examples:
  moldudp64 generate itch50 -o day.NASDAQ_ITCH50                      # 1,000,000 messages
  moldudp64 generate itch50 -o big.NASDAQ_ITCH50 --messages 10000000 --seed 7
  moldudp64 inspect day.NASDAQ_ITCH50 --decode itch50 --format parquet -o day

A trading day of every message type an order book needs: system events, a stock directory,
trading actions, adds, executions (often partial), cancels, deletes, replaces, hidden
trades, crosses and rare broken trades, every reference valid. The same seed gives the same
file. Python: moldudp64.itch50.generator.generate_day.
"""


def _add_generate(sub: Any) -> None:
    """The ``generate`` command's arguments."""
    p = sub.add_parser(
        "generate",
        help="write a synthetic, self-consistent TotalView-ITCH 5.0 day as a BinaryFILE",
        description="Write a synthetic TotalView-ITCH 5.0 trading day (seeded, realistic, "
        "every order reference valid) as a BinaryFILE.",
        epilog=EPILOG_GENERATE,
        formatter_class=_RAW,
    )
    _add_verbose(p)
    p.add_argument("kind", choices=("itch50",), help="what to generate: itch50")
    p.add_argument(
        "-o", "--output", metavar="FILE", required=True, help="the BinaryFILE to write (- stdout)"
    )
    p.add_argument(
        "--messages", metavar="N", type=COUNT, default=1_000_000, help="default 1000000"
    )
    p.add_argument("--seed", metavar="N", type=SEED, default=0, help="default 0")
    p.add_argument(
        "--stocks", metavar="N", type=COUNT, default=500, help="most stocks listed (default 500)"
    )
    p.set_defaults(func=_Command("generate", "cmd_generate"))


def _add_bench(sub: Any) -> None:
    """The ``bench`` command's arguments."""
    p = sub.add_parser(
        "bench",
        help="measure how fast this machine runs the receiver, the client and inspect",
        description="Run the benchmarks that need neither root nor a C compiler and print "
        "them as a table with this machine's details: messages per second through the "
        "receiver core (in order, and with 5% loss, 1% duplicates, 3% reordering), into a "
        "Python for loop through the blocking and asyncio clients, and packets per second "
        "of inspect on a generated pcap. "
        "benchmarks/run.py in the source tree adds live multicast against a C loop.",
        epilog=EPILOG_BENCH,
        formatter_class=_RAW,
    )
    _add_verbose(p)
    p.add_argument(
        "--scale",
        metavar="X",
        type=_type("scale", float),
        default=0.25,
        help="size of the runs, 1.0 being the full suite's (default 0.25: about 7 s on an "
        "idle machine, 5 s of CPU)",
    )
    p.add_argument("--skip-inspect", action="store_true", help="leave out the inspect part")
    p.set_defaults(func=_Command("bench", "cmd_bench"))


# --------------------------------------------------------------------------- bench

EPILOG_BENCH = """examples:
  moldudp64 bench                  # about 7 s on an idle machine
  moldudp64 bench --scale 1        # the full sizes of benchmarks/run.py
  moldudp64 bench --scale 0.01 --skip-inspect
"""


# --------------------------------------------------------------------------- SoupBinTCP


def _add_listen_soup(p: argparse.ArgumentParser) -> None:
    """listen's options for a soup:// session."""
    p.add_argument(
        "--max-retries",
        metavar="N",
        type=_int_at_least(0, "retries"),
        default=5,
        help="soup://: reconnects in a row before giving up (exit 3; default 5; waits of "
        "0.1 s doubling to 5 s)",
    )
    p.add_argument(
        "--snapshot",
        metavar="soup://HOST:PORT[/SESSION]",
        type=_type("soup://[USER:PASS@]HOST:PORT[/SESSION]", parse_soup_source),
        help="late join: write this GLIMPSE-style snapshot session up to its End of Snapshot "
        "message, then the feed from the number that message gives (the feed is joined "
        "first and held meanwhile; only the numbers between are requested)",
    )
    p.add_argument(
        "--snapshot-number",
        choices=("next", "last"),
        default="next",
        help="what the End of Snapshot number is: the next feed message to take (default) "
        "or the last one the snapshot includes",
    )


def _add_serve_soup(p: argparse.ArgumentParser) -> None:
    """serve's SoupBinTCP options."""
    p.add_argument(
        "--soup-port",
        metavar="PORT",
        type=_type("port", _port_from(0)),
        help="serve the session over SoupBinTCP on this TCP port (0: any free port)",
    )
    p.add_argument(
        "--soup-addr",
        metavar="ADDR",
        type=IPV4,
        default="0.0.0.0",
        help="address the SoupBinTCP server listens on (default 0.0.0.0)",
    )
    p.add_argument("--user", metavar="USER", help="SoupBinTCP username (6 characters max)")
    p.add_argument("--password", metavar="PASS", help="SoupBinTCP password (10 characters max)")


EPILOG_GATEWAY = """\
examples:
  moldudp64 gateway 239.1.1.1:30001 --request-server 10.0.0.5:30002 --soup-port 30010 \\
      --output day.bin
  moldudp64 listen soup://127.0.0.1:30010 --start-seq 1000 -o tail.bin
  moldudp64 gateway 239.1.1.1:30001 --soup-port 30010 --snapshot-port 30020   # late joiners:
  moldudp64 listen 239.1.1.1:30001 --snapshot soup://127.0.0.1:30020 -o late.bin

Joins the feed (recovering gaps), appends every message to --output (a BinaryFILE: memory
stays bounded) and serves it over SoupBinTCP, each client from the number it asks for.
A range lost on the feed stops the served session there: clients are disconnected after the
last message before it with no End of Session, a login at or past it is rejected (S), and
the loss is logged and summarised (exit 3). With --snapshot-port it also keeps the feed's
ITCH 5.0 order book (from message 1: --start-seq is refused) and serves it as GLIMPSE-style
snapshots, as book --snapshot-port does.
"""


def _add_gateway(sub: Any) -> None:
    """The ``gateway`` command's arguments."""
    p = sub.add_parser(
        "gateway",
        help="join a MoldUDP64 feed and serve it over SoupBinTCP",
        description="Join a MoldUDP64 feed, recover gaps, store it in a BinaryFILE and "
        "serve it over SoupBinTCP to any number of clients, each from the number it asks for.",
        epilog=EPILOG_GATEWAY,
        formatter_class=_RAW,
    )
    _add_verbose(p)
    p.add_argument("group", metavar="GROUP:PORT", type=GROUP_PORT, help="the feed (line A)")
    _add_feed(p)
    p.add_argument(
        "--output",
        "-o",
        metavar="FILE.bin",
        help="the BinaryFILE the feed is stored in (default: a temporary file, removed at "
        "the end)",
    )
    _add_stop(p)
    _add_serve_soup(p)
    _add_snapshot_server(p, "the ITCH 5.0 order book built from the feed")
    _add_metrics(p)
    p.set_defaults(func=_Command("soup", "cmd_gateway"))
