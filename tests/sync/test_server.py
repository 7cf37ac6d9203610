"""Blocking RerequestServer and Publisher over real sockets (127.0.0.1 and loopback multicast).

Wireshark's tshark judges what the publisher sends when it is installed.
"""

from __future__ import annotations

import functools
import importlib
import queue
import random
import re
import shutil
import signal
import socket
import struct
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import dpkt
import pytest

from moldudp64.exceptions import ConfigError, MessageTooLarge, SocketError
from moldudp64.faults import FaultInjector
from moldudp64.net import open_multicast_receiver
from moldudp64.rerequest import RateLimit
from moldudp64.store import BinaryFileStore, MemoryStore
from moldudp64.sync.server import Publisher, RerequestServer
from moldudp64.wire import Packet, PacketKind, split_blocks

SESSION = "SYNCSRV001"
RNG = random.Random(1234)
MESSAGES = [RNG.randbytes(RNG.randrange(0, 120)) for _ in range(3000)]


def request(seq: int, count: int, session: str = SESSION) -> bytes:
    return struct.pack(">10sQH", session.encode(), seq, count)


def longest_prefix(seq: int, count: int, max_payload: int = 1452) -> list[bytes]:
    out: list[bytes] = []
    used = 0
    for m in MESSAGES[seq - 1 : seq - 1 + count]:
        used += 2 + len(m)
        if used > max_payload:
            break
        out.append(m)
    return out


def client(host: str = "127.0.0.1") -> socket.socket:
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.bind((host, 0))
    sock.settimeout(5.0)
    return sock


def wait_for(predicate: Callable[[], bool], timeout: float = 5.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError("condition not reached in time")
        time.sleep(0.005)


@pytest.fixture
def server() -> Iterator[RerequestServer]:
    store = MemoryStore()
    for m in MESSAGES:
        store.append(m)
    with RerequestServer(SESSION, store, ("127.0.0.1", 0)) as srv:
        yield srv


# -- re-request server -------------------------------------------------------------------


def test_exact_answers_to_random_ranges(server: RerequestServer) -> None:
    sock = client()
    rng = random.Random(99)
    for _ in range(200):
        seq = rng.randrange(1, len(MESSAGES) + 1)
        count = rng.choice([1, 2, rng.randrange(1, 40), 0xFFFF])
        sock.sendto(request(seq, count), server.address)
        answer = sock.recv(65535)
        packet = Packet.parse(answer)
        assert (packet.session_ident, packet.seq_num) == (SESSION, seq)
        assert split_blocks(answer) == longest_prefix(seq, count)
    assert server.stats.answers == 200
    sock.close()


def test_partial_answer_at_the_payload_cap(server: RerequestServer) -> None:
    sock = client()
    sock.sendto(request(1, 3000), server.address)
    answer = sock.recv(65535)
    got = split_blocks(answer)
    assert got == longest_prefix(1, 3000)
    assert len(answer) <= 1472 < len(answer) + 2 + len(MESSAGES[len(got)])
    sock.close()


@pytest.mark.parametrize(
    ("data", "reason"),
    [
        (request(1, 1)[:19], "bad_length"),
        (request(1, 1) + b"!", "bad_length"),
        (request(1, 1, "ANOTHER001"), "wrong_session"),
        (request(0, 1), "seq_zero"),
        (request(1, 0), "count_zero"),
        (request(3001, 1), "not_held"),
    ],
)
def test_silence_for_each_bad_request(server: RerequestServer, data: bytes, reason: str) -> None:
    sock = client()
    sock.sendto(data, server.address)
    sock.sendto(request(7, 1), server.address)  # served in order: its answer comes first
    answer = sock.recv(65535)
    assert Packet.parse(answer).seq_num == 7
    assert split_blocks(answer) == [MESSAGES[6]]
    stats = server.stats
    assert {k: v for k, v in stats.refused.items() if v} == {reason: 1}
    assert stats.answers == 1
    sock.settimeout(0.05)
    with pytest.raises(TimeoutError):
        sock.recv(65535)
    sock.close()


def test_rate_limit_holds_a_flood_while_another_source_is_served() -> None:
    store = MemoryStore()
    for m in MESSAGES:
        store.append(m)
    limit = RateLimit(requests_per_second=20, bytes_per_second=1e9, burst_seconds=1.0)
    with RerequestServer(SESSION, store, ("127.0.0.1", 0), rate_limit=limit) as srv:
        flooder = client("127.0.0.1")
        flooder.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4 * 1024 * 1024)
        started = time.monotonic()
        for i in range(2000):
            flooder.sendto(request(1 + i % 100, 50), srv.address)
            if i % 200 == 199:  # let the server keep up, whatever the socket buffer size
                wait_for(functools.partial(lambda n: srv.stats.requests >= n, i + 1))
        answered = 0
        flooder.settimeout(0.7)  # what waits for budget comes within max_delay (0.5 s)
        try:
            while True:
                flooder.recv(65535)
                answered += 1
        except TimeoutError:
            pass
        elapsed = time.monotonic() - started
        bound = 20 + 20 * elapsed + 1  # the burst, then the rate
        assert 20 <= answered <= bound
        assert srv.stats.waited > 0 and srv.stats.waiting == 0
        assert srv.stats.refused["rate_limited"] >= 2000 - bound
        # a second source is still served
        other = client("127.0.0.2")
        other.sendto(request(5, 2), srv.address)
        assert split_blocks(other.recv(65535)) == MESSAGES[4:6]
        flooder.close()
        other.close()


def test_answers_from_a_binaryfile_store(tmp_path: Path) -> None:
    path = tmp_path / "day.bin"
    with BinaryFileStore(path, writable=True) as writer:
        for m in MESSAGES:
            writer.append(m)
    with (
        BinaryFileStore(path) as store,
        RerequestServer(SESSION, store, ("127.0.0.1", 0)) as srv,
    ):
        sock = client()
        for seq in (1, 64, 65, 1500, 2999, 3000):
            sock.sendto(request(seq, 10), srv.address)
            assert split_blocks(sock.recv(65535)) == longest_prefix(seq, 10)
        sock.close()


def test_answer_faults_drop_everything() -> None:
    store = MemoryStore()
    store.append(b"x")
    faults = FaultInjector(drop=1.0, seed=1)
    with RerequestServer(SESSION, store, ("127.0.0.1", 0), faults=faults) as srv:
        sock = client()
        sock.sendto(request(1, 1), srv.address)
        wait_for(lambda: faults.stats.seen == 1)
        assert srv.stats.answers == 1 and faults.stats.dropped == 1
        sock.close()


def test_bind_failure_is_a_socket_error(server: RerequestServer) -> None:
    with pytest.raises(SocketError):
        RerequestServer(SESSION, MemoryStore(), server.address)


def test_close_is_clean_and_idempotent() -> None:
    srv = RerequestServer(SESSION, MemoryStore(), ("127.0.0.1", 0)).start()
    thread = srv._thread
    srv.close()
    srv.close()
    assert thread is not None and not thread.is_alive()
    assert srv.closed
    with pytest.raises(ConfigError):
        srv.start()


# -- publisher ---------------------------------------------------------------------------


def drain(sock: socket.socket, until_eos: bool = True, timeout: float = 5.0) -> list[bytes]:
    sock.setblocking(True)
    sock.settimeout(timeout)
    out: list[bytes] = []
    while True:
        data = sock.recv(65535)
        out.append(data)
        if until_eos and Packet(data).packet_kind is PacketKind.END_OF_SESSION:
            return out


def messages_in(packets: list[bytes]) -> list[bytes]:
    out: list[bytes] = []
    expected_seq = 1
    for p in packets:
        packet = Packet.parse(p)
        if packet.packet_kind is PacketKind.STANDARD:
            assert packet.seq_num == expected_seq
            blocks = split_blocks(p)
            out += blocks
            expected_seq += len(blocks)
    return out


def test_publisher_to_a_multicast_group(multicast: None) -> None:
    group = ("239.5.5.5", 31005)
    rx = open_multicast_receiver(*group, interface_addr="127.0.0.1")
    with Publisher(
        SESSION,
        group,
        interface_addr="127.0.0.1",
        rerequest_bind=("127.0.0.1", 0),
        end_of_session_duration=0.0,
    ) as pub:
        result = pub.run(MESSAGES[:1000])
        assert result.messages == 1000 and not result.stopped
        assert (result.first_seq_num, result.next_seq_num) == (1, 1001)
        packets = drain(rx)
        # the re-request server beside it answers from the same messages
        sock = client()
        assert pub.rerequest_address is not None
        sock.sendto(request(500, 3), pub.rerequest_address)
        assert split_blocks(sock.recv(65535)) == MESSAGES[499:502]
        sock.close()
    rx.close()
    assert messages_in(packets) == MESSAGES[:1000]
    eos = Packet.parse(packets[-1])
    assert (eos.packet_kind, eos.seq_num) == (PacketKind.END_OF_SESSION, 1001)
    assert all(len(p) <= 1472 for p in packets)
    assert result.stats.messages == 1000


def test_publisher_heartbeats_when_idle_over_unicast() -> None:
    rx = client()
    with Publisher(
        SESSION,
        rx.getsockname(),
        unicast=True,
        heartbeat_interval=0.02,
        first_seq_num=5,
        end_of_session_duration=0.05,
    ) as pub:
        assert pub.publish(b"hello") == 5
        assert Packet.parse(rx.recv(65535)).messages() == [b"hello"]
        beat = Packet.parse(rx.recv(65535))  # nothing else is published: a heartbeat comes
        assert (beat.packet_kind, beat.seq_num) == (PacketKind.HEARTBEAT, 6)
        assert pub.publish_many([b"a", b"b"]) == range(6, 8)
        pub.flush()
        assert pub.end_session(timeout=5.0)
        assert pub.ended
    rx.close()


def test_publisher_paced_run_with_progress_and_stop() -> None:
    rx = client()
    rx.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4 * 1024 * 1024)
    seen: list[int] = []
    with Publisher(SESSION, rx.getsockname(), unicast=True, heartbeat_interval=None) as pub:
        result = pub.run(MESSAGES[:200], rate=20_000, progress=seen.append, end_session=False)
        assert result.messages == 200 and seen[-1] == 200
        assert not pub.core.ending

        def endless() -> Iterator[bytes]:
            while True:
                yield b"z"

        threading.Timer(0.1, pub.stop).start()
        stopped = pub.run(endless(), rate=1000)
        assert stopped.stopped and stopped.messages > 0
    rx.close()


def test_publisher_with_live_faults_drops_packets() -> None:
    rx = client()
    faults = FaultInjector(drop=1.0, seed=2)
    with Publisher(
        SESSION, rx.getsockname(), unicast=True, faults=faults, heartbeat_interval=None
    ) as pub:
        pub.run(MESSAGES[:50], end_session=False)
    assert faults.stats.dropped == faults.stats.seen > 0
    rx.settimeout(0.05)
    with pytest.raises(TimeoutError):
        rx.recv(65535)
    rx.close()


def test_sender_socket_options() -> None:
    """TTL 1 and multicast loopback on by default; both configurable.

    (Whether loopback off keeps local listeners out cannot be shown on lo itself: a
    packet sent out of lo comes back in through it.)
    """
    with Publisher(SESSION, ("239.5.5.6", 31008), heartbeat_interval=None) as pub:
        sock = pub._sock
        assert sock.getsockopt(socket.IPPROTO_IP, socket.IP_MULTICAST_TTL) == 1
        assert sock.getsockopt(socket.IPPROTO_IP, socket.IP_MULTICAST_LOOP) == 1
    with Publisher(
        SESSION, ("239.5.5.6", 31008), ttl=3, loopback=False, heartbeat_interval=None
    ) as pub:
        sock = pub._sock
        assert sock.getsockopt(socket.IPPROTO_IP, socket.IP_MULTICAST_TTL) == 3
        assert sock.getsockopt(socket.IPPROTO_IP, socket.IP_MULTICAST_LOOP) == 0


def test_allow_list_over_sockets() -> None:
    store = MemoryStore()
    store.append(b"only for 127.0.0.2")
    with RerequestServer(SESSION, store, ("127.0.0.1", 0), allow=["127.0.0.2/32"]) as srv:
        outsider, insider = client("127.0.0.1"), client("127.0.0.2")
        outsider.sendto(request(1, 1), srv.address)
        insider.sendto(request(1, 1), srv.address)
        assert split_blocks(insider.recv(65535)) == [b"only for 127.0.0.2"]
        wait_for(lambda: srv.stats.requests == 2)
        assert srv.stats.refused["not_allowed"] == 1
        outsider.settimeout(0.05)
        with pytest.raises(TimeoutError):
            outsider.recv(65535)
        outsider.close()
        insider.close()


def test_bench_server_quick(capsys: pytest.CaptureFixture[str]) -> None:
    bench_dir = str(Path(__file__).resolve().parents[2] / "benchmarks")
    sys.path.insert(0, bench_dir)  # the store part runs in a spawned child that imports it
    try:
        bench = importlib.import_module("bench_server")
        # a small many-source flood, briefly (tests/test_fairness.py asserts on a real one)
        result = bench.main(
            ["--quick", "--messages", "3000", "--requests", "300", "--store-messages", "5000",
             "--flood-sources", "60", "--flood-quiet", "0.5"]
        )  # fmt: skip
    finally:
        sys.path.remove(bench_dir)
    assert all(value > 0 for value in result.values())
    assert result["store_peak_rss_mib"] < 100
    assert "answers, loopback UDP" in capsys.readouterr().out


def test_publisher_bad_options() -> None:
    with pytest.raises(ConfigError):
        Publisher(SESSION, ("127.0.0.1", 0), unicast=True)
    with pytest.raises(ConfigError):
        Publisher(SESSION, ("239.1.1.1", 9), ttl=300)
    pub = Publisher(SESSION, ("127.0.0.1", 9), unicast=True)
    with pytest.raises(ConfigError):
        pub.run([], rate=0)
    pub.close()
    with pytest.raises(ConfigError):
        pub.publish(b"x")


# -- Wireshark as an independent judge ---------------------------------------------------

TSHARK = shutil.which("tshark")


class Capture:
    """tshark capturing ``udp port PORT`` on lo, synchronised by probe datagrams to PROBE.

    ``-P`` makes tshark print a line per captured packet while it writes the file, so a
    probe that shows up proves the capture is running (at start) and has seen everything
    sent before it (at the end): no sleeping on guesses.
    """

    def __init__(self, tshark: str, port: int, probe_port: int, path: Path) -> None:
        self.probe_addr = ("127.0.0.1", probe_port)
        self.proc = subprocess.Popen(
            [tshark, "-l", "-P", "-i", "lo", "-f", f"udp port {port} or udp port {probe_port}",
             "-w", str(path)],
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        )  # fmt: skip
        self.lines: queue.Queue[str] = queue.Queue()
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            self.lines.put(line)

    def sync(self, timeout: float = 20.0) -> bool:
        """Send probes until one is seen in the capture; False if none is in ``timeout``.

        Each call probes from a fresh socket, so only its own probes (by source port) count.
        """
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
            probe.bind(("127.0.0.1", 0))
            mark = f"{probe.getsockname()[1]} "
            deadline = time.monotonic() + timeout
            while time.monotonic() < deadline:
                probe.sendto(b"probe", self.probe_addr)
                try:
                    while True:
                        line = self.lines.get(timeout=0.1)
                        if mark in line and str(self.probe_addr[1]) in line:
                            return True
                except queue.Empty:
                    if self.proc.poll() is not None:
                        return False
        return False

    def stop(self) -> str:
        self.proc.send_signal(signal.SIGINT)
        try:
            _, err = self.proc.communicate(timeout=10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            _, err = self.proc.communicate()
        return err


def test_tshark_decodes_what_the_publisher_sends(multicast: None, tmp_path: Path) -> None:
    if TSHARK is None:
        pytest.skip("tshark is not installed (apt-get install tshark)")
    port = 31077
    group = ("239.5.5.77", port)
    path = tmp_path / "pub.pcapng"
    capture = Capture(TSHARK, port, 31078, path)
    try:
        if not capture.sync():
            pytest.skip(f"tshark cannot capture on lo here: {capture.stop().strip()}")
        rx = open_multicast_receiver(*group, interface_addr="127.0.0.1")
        sizes = [0, 1, 1450, *(RNG.randrange(0, 400) for _ in range(300))]
        messages = [bytes([i % 256]) * s for i, s in enumerate(sizes)]
        with Publisher(
            SESSION, group, interface_addr="127.0.0.1", end_of_session_duration=0.0
        ) as pub:
            pub.run(messages)
        sent = drain(rx)
        rx.close()
        assert capture.sync()  # everything sent before this probe is in the capture
    finally:
        capture.stop()
    fields = subprocess.run(
        [
            TSHARK, "-r", str(path), "-d", f"udp.port=={port},moldudp64", "-Y", f"udp.port=={port}",
            "-T", "fields", "-E", "occurrence=a", "-E", "aggregator=,",
            "-e", "moldudp64.sequence", "-e", "moldudp64.count", "-e", "moldudp64.msglen",
            "-e", "_ws.expert.severity",
        ],
        capture_output=True, text=True, check=True,
    ).stdout.splitlines()  # fmt: skip
    decoded = [line.split("\t") for line in fields if line.strip()]
    assert len(decoded) == len(sent)
    for row, datagram in zip(decoded, sent, strict=True):
        seq, count, lengths, severities = row
        packet = Packet.parse(datagram)
        assert int(seq) == packet.seq_num and int(count) == packet.msg_count
        want = [len(m) for m in split_blocks(datagram)] if len(packet) else []
        assert [int(n) for n in lengths.split(",") if n] == want
        # Wireshark comments that a bare 20-byte header might be a request; anything at
        # warning level (0x600000) or above would be a real fault.
        assert all(int(v) < 0x600000 for v in severities.split(",") if v), row
    decoded_lengths = [int(n) for row in decoded for n in row[2].split(",") if n]
    assert decoded_lengths == sizes
    assert int(decoded[-1][1]) == 0xFFFF and int(decoded[-1][0]) == len(messages) + 1


def test_tshark_judge_can_fail(tmp_path: Path) -> None:
    """The judge is not blind: tshark flags at warning level what our wire code never sends."""
    if TSHARK is None:
        pytest.skip("tshark is not installed (apt-get install tshark)")
    good = Packet.parse(struct.pack(">10sQHH", SESSION.encode(), 1, 1, 3) + b"abc").data
    bad = struct.pack(">10sQHH", SESSION.encode(), 2, 2, 3) + b"abc"  # count 2, one block
    path = tmp_path / "judge.pcap"
    with open(path, "wb") as f:
        writer = dpkt.pcap.Writer(f)
        for i, payload in enumerate([bytes(good), bad]):
            udp = dpkt.udp.UDP(sport=40000, dport=31099, data=payload)
            udp.ulen = len(udp)
            ip = dpkt.ip.IP(
                src=socket.inet_aton("127.0.0.1"),
                dst=socket.inet_aton("239.5.5.99"),
                p=dpkt.ip.IP_PROTO_UDP,
                ttl=1,
                data=udp,
            )
            ip.len = len(ip)
            eth = dpkt.ethernet.Ethernet(type=dpkt.ethernet.ETH_TYPE_IP, data=ip)
            writer.writepkt(bytes(eth), ts=1.0 + i)
    rows = subprocess.run(
        [TSHARK, "-r", str(path), "-d", "udp.port==31099,moldudp64", "-T", "fields",
         "-e", "moldudp64.sequence", "-e", "_ws.expert.severity"],
        capture_output=True, text=True, check=True,
    ).stdout.splitlines()  # fmt: skip
    severities = [
        max((int(v) for v in row.split("\t")[1].split(",") if v), default=0) for row in rows
    ]
    assert severities[0] < 0x600000 <= severities[1]


def test_run_with_batch_size_one_sends_each_message_before_taking_the_next() -> None:
    rx = client()

    def source() -> Iterator[bytes]:
        yield b"first"
        echoed = rx.recv(65535)  # only arrives if "first" went out before this pull
        yield b"after " + split_blocks(echoed)[0]

    with Publisher(SESSION, rx.getsockname(), unicast=True, heartbeat_interval=None) as pub:
        result = pub.run(source(), batch_size=1, end_session=False)
        assert result.messages == 2
        assert split_blocks(rx.recv(65535)) == [b"after first"]
        with pytest.raises(ConfigError):
            pub.run([], batch_size=0)
    rx.close()


def test_wait_ended_returns_when_the_publisher_is_closed_meanwhile() -> None:
    rx = client()
    pub = Publisher(
        SESSION, rx.getsockname(), unicast=True, heartbeat_interval=None, end_of_session_duration=30
    )
    pub.start()
    pub.publish(b"one")
    pub.end_session(wait=False)
    threading.Timer(0.1, pub.close).start()
    assert pub.wait_ended(timeout=10) is False  # closed long before the 30 s period ended
    assert pub.wait_ended() is False  # and again, now that it is closed: no ConfigError
    rx.close()


@pytest.mark.parametrize("host", ["127.0.0.1", "10.1.2.3", "255.255.255.255", "localhost", ""])
def test_publisher_refuses_a_unicast_group_as_the_command_does(host: str) -> None:
    """Like `publish 127.0.0.1:30001`, which says it is not a multicast group (exit 2)."""
    with pytest.raises(ConfigError, match=re.escape(f"group {host!r} is not a multicast group")):
        Publisher(SESSION, (host, 30001))
    if host[:1].isdigit():
        cli = subprocess.run(
            [sys.executable, "-m", "moldudp64", "publish", f"{host}:30001", "--session", "S",
             "--generate", "1"],
            capture_output=True, check=False, timeout=60,
        )  # fmt: skip
        assert cli.returncode == 2
        assert f"{host} is not a multicast group".encode() in cli.stderr


def test_a_run_that_fails_still_ends_the_session() -> None:
    """A message too large for the payload midway: the error is raised, and the messages
    before it and an end of session went out first, so no listener is left waiting."""
    rx = client()
    messages = [b"a" * 10] * 3 + [b"B" * 3000]
    with Publisher(
        SESSION, rx.getsockname(), unicast=True, heartbeat_interval=None,
        end_of_session_duration=0.05, end_of_session_interval=0.05,
    ) as pub:  # fmt: skip
        with pytest.raises(MessageTooLarge):
            pub.run(iter(messages), batch_size=1)
        assert pub.ended
    got: list[bytes] = []
    while (packet := Packet.parse(rx.recv(65535))).packet_kind is PacketKind.STANDARD:
        got.extend(bytes(m) for m in packet)
    assert got == messages[:3]
    assert (packet.packet_kind, packet.seq_num) == (PacketKind.END_OF_SESSION, 4)
    rx.close()
