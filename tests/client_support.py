"""Helpers for the client tests: feeds of packets, a publisher, a threaded re-request server.

Everything binds to 127.0.0.1 or sends to a 239.x group inside the test run's private
network namespace; nothing can leave the machine.
"""

from __future__ import annotations

import selectors
import socket
import threading
import time
from collections.abc import Callable, Iterable, Sequence
from types import TracebackType
from typing import Self

from moldudp64.events import Address, Message
from moldudp64.net import open_unicast_socket
from moldudp64.rerequest import RerequestServerCore
from moldudp64.store import MemoryStore
from moldudp64.wire import build_end_of_session, build_heartbeat, pack_messages

SESSION = "TESTSESS01"
GROUP = "239.192.7.1"
#: The group the client tests' clients are made for (never joined where a test hands
#: them loopback sockets).
GROUP_ADDR = (GROUP, 30001)
#: Small packets, so a few thousand messages make a few hundred packets.
PAYLOAD = 200
#: Fast recovery timers so the tests take milliseconds, and an end of session believed
#: after 0.3 s of quiet (the default 2.5 s would make each test wait that long).
FAST = {"request_timeout": 0.02, "max_request_timeout": 0.1, "loss_grace": 0.02,
        "end_confirm": 0.3}  # fmt: skip
#: Give up quickly when every server is dead.
GIVE_UP = {**FAST, "max_request_attempts": 3}


def expected(messages: Sequence[bytes], session: str = SESSION, first: int = 1) -> list[Message]:
    """The messages a client should hand out for ``messages`` numbered from ``first``."""
    return [Message(session, first + i, m) for i, m in enumerate(messages)]


def make_messages(n: int, tag: bytes = b"") -> list[bytes]:
    """``n`` distinct messages of varied lengths (some empty)."""
    out = []
    for i in range(1, n + 1):
        body = tag + i.to_bytes(4, "big")
        out.append(b"" if i % 97 == 0 else body * (1 + i % 5))
    return out


def make_packets(
    messages: Sequence[bytes], session: str = SESSION, first_seq: int = 1
) -> list[bytes]:
    """The downstream packets carrying ``messages`` numbered from ``first_seq``."""
    return pack_messages(session, first_seq, messages, PAYLOAD)


def end_of_session(messages: Sequence[bytes], session: str = SESSION, first_seq: int = 1) -> bytes:
    """The end-of-session packet that follows ``messages``."""
    return build_end_of_session(session, first_seq + len(messages))


def heartbeat(messages: Sequence[bytes], session: str = SESSION, first_seq: int = 1) -> bytes:
    """A heartbeat announcing the sequence number after ``messages``."""
    return build_heartbeat(session, first_seq + len(messages))


def free_udp_port() -> int:
    """A UDP port nothing on 127.0.0.1 uses right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def sender() -> socket.socket:
    """A blocking UDP socket for publishing (multicast TTL 1, loopback on)."""
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    s.setsockopt(socket.IPPROTO_IP, socket.IP_MULTICAST_TTL, 1)
    s.setsockopt(socket.IPPROTO_IP, socket.IP_MULTICAST_LOOP, 1)
    s.setsockopt(socket.IPPROTO_IP, socket.IP_MULTICAST_IF, socket.inet_aton("127.0.0.1"))
    return s


def publish(
    sock: socket.socket,
    dest: Address,
    packets: Iterable[bytes],
    drop: Callable[[int], bool] | Iterable[int] = (),
    end_repeats: int = 0,
) -> int:
    """Send ``packets`` to ``dest`` except those whose index ``drop`` selects; return sent.

    ``end_repeats``: send an end-of-session packet that many times more, 60 ms apart, as a
    real server repeats it (a single one is only a claim when the data before it was lost).
    """
    drop_fn: Callable[[int], bool] = drop if callable(drop) else set(drop).__contains__
    sent = 0
    for i, packet in enumerate(packets):
        if not drop_fn(i):
            sock.sendto(packet, dest)
            sent += 1
            if len(packet) == 20 and packet[18:20] == b"\xff\xff":
                for _ in range(end_repeats):
                    time.sleep(0.06)
                    sock.sendto(packet, dest)
    return sent


class Closing:
    """A test helper closed by ``close()`` or on leaving its ``with`` block."""

    def close(self) -> None:
        """Release what the helper holds (each subclass says what)."""
        raise NotImplementedError

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()


class Responder(Closing):
    """A re-request server on 127.0.0.1 in a thread, answering from a RerequestServerCore.

    ``feeds`` maps each session to its messages (numbered from 1). ``silent`` makes a
    server that receives requests but never answers (a dead server that still exists).
    """

    def __init__(
        self,
        feeds: dict[str, Sequence[bytes]],
        *,
        max_payload: int = PAYLOAD,
        silent: bool = False,
    ) -> None:
        self.cores: dict[bytes, RerequestServerCore] = {}
        for session, messages in feeds.items():
            store = MemoryStore(max_bytes=None)
            for msg in messages:
                store.append(msg)
            core = RerequestServerCore(session, store, max_payload=max_payload, rate_limit=None)
            self.cores[core.session_ident_raw] = core
        self.silent = silent
        self.requests = 0
        self.answers = 0
        self.sock = open_unicast_socket(("127.0.0.1", 0))
        self.address: Address = self.sock.getsockname()
        self._stop_r, self._stop_w = socket.socketpair()
        self._thread = threading.Thread(target=self._run, name="test-responder", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        sel = selectors.DefaultSelector()
        sel.register(self.sock, selectors.EVENT_READ)
        sel.register(self._stop_r, selectors.EVENT_READ)
        try:
            while True:
                for key, _ in sel.select():
                    if key.fileobj is self._stop_r:
                        return
                    self._serve()
        finally:
            sel.close()

    def _serve(self) -> None:
        while True:
            try:
                data, addr = self.sock.recvfrom(65536)
            except BlockingIOError:
                return
            self.requests += 1
            if self.silent:
                continue
            core = self.cores.get(data[:10])
            if core is None:
                continue
            answer = core.handle_request(data, addr, time.monotonic())
            if answer is not None:
                self.sock.sendto(answer, addr)
                self.answers += 1

    def close(self) -> None:
        """Stop the thread and close the socket."""
        if self._thread.is_alive():
            self._stop_w.send(b"x")
            self._thread.join(5)
        self.sock.close()
        self._stop_r.close()
        self._stop_w.close()


class Loop:
    """A line socket, a request socket, and a sender, all on 127.0.0.1."""

    def __init__(self, rcvbuf: int | None = 4 << 20) -> None:
        self.line = open_unicast_socket(("127.0.0.1", 0), rcvbuf=rcvbuf)
        self.rereq = open_unicast_socket(("127.0.0.1", 0))
        self.dest: Address = self.line.getsockname()
        self.tx = sender()

    def send(
        self,
        packets: list[bytes],
        drop: Iterable[int] | Callable[[int], bool] = (),
        end_repeats: int = 0,
    ) -> None:
        """Publish ``packets`` to the line socket (see :func:`publish`)."""
        publish(self.tx, self.dest, packets, drop, end_repeats)

    def close(self) -> None:
        """Close the three sockets."""
        self.tx.close()
        self.line.close()
        self.rereq.close()


def closed_port_address() -> Address:
    """An address on 127.0.0.1 where nothing listens (requests get ICMP port unreachable)."""
    return ("127.0.0.1", free_udp_port())


def wait_until(predicate: Callable[[], bool], timeout: float = 5.0) -> bool:
    """Poll ``predicate`` until it holds or ``timeout`` passes; return whether it held."""
    deadline = time.monotonic() + timeout
    delay = 0.001
    while not predicate():
        if time.monotonic() > deadline:
            return False
        time.sleep(delay)
        delay = min(delay * 2, 0.02)
    return True


class Repeater(Closing):
    """Sends ``packet`` to ``dest`` every ``interval`` seconds until closed (a live feed's
    heartbeats or end-of-session packets, which a real server keeps sending)."""

    def __init__(self, sock: socket.socket, dest: Address, packet: bytes, interval: float = 0.02):
        self._stop = threading.Event()

        def run() -> None:
            while not self._stop.wait(interval):
                sock.sendto(packet, dest)

        self._thread = threading.Thread(target=run, name="test-repeater", daemon=True)
        self._thread.start()

    def close(self) -> None:
        """Stop sending."""
        self._stop.set()
        self._thread.join(5)
