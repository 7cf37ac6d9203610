"""Socket construction and batch receive, on real sockets."""

from __future__ import annotations

import socket
from collections.abc import Callable

import pytest

from moldudp64 import net
from moldudp64.exceptions import ConfigError, SocketError

RECEIVERS: list[Callable[[socket.socket, int], list[bytes]]] = [net._recv_batch_py]
if net.c_recv_batch is not None:
    RECEIVERS.append(net._recv_batch_c)


@pytest.mark.parametrize("recv_batch", RECEIVERS)
def test_recv_batch_takes_what_is_waiting_and_never_blocks(
    recv_batch: Callable[[socket.socket, int], list[bytes]],
) -> None:
    receiver = net.open_unicast_socket(("127.0.0.1", 0))
    sender = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    try:
        assert recv_batch(receiver, 8) == []
        sent = [bytes([i]) * (i * 100 + 1) for i in range(5)] + [b"", b"x" * 65507]
        for datagram in sent:
            sender.sendto(datagram, receiver.getsockname())
        got: list[bytes] = []
        for _ in range(100):
            got.extend(recv_batch(receiver, 3))
            if len(got) == len(sent):
                break
        assert got == sent
        assert recv_batch(receiver, 8) == []
    finally:
        receiver.close()
        sender.close()


@pytest.mark.parametrize(
    ("text", "expected"),
    [("127.0.0.1:9000", ("127.0.0.1", 9000)), ("localhost:1", ("127.0.0.1", 1))],
)
def test_parse_address(text: str, expected: tuple[str, int]) -> None:
    assert net.parse_address(text) == expected


@pytest.mark.parametrize("text", ["127.0.0.1", "127.0.0.1:0", "127.0.0.1:70000", "h:x", ":5"])
def test_parse_address_rejects_bad_text(text: str) -> None:
    with pytest.raises(ConfigError):
        net.parse_address(text)


def test_non_multicast_group_and_foreign_interface_are_config_errors() -> None:
    with pytest.raises(ConfigError, match="not a multicast group"):
        net.open_multicast_receiver("127.0.0.1", 5000)
    with pytest.raises(ConfigError, match="not an address of this host"):
        net.open_multicast_receiver("239.1.1.1", 5000, "192.0.2.77")
    with pytest.raises(ConfigError, match="TTL"):
        net.open_multicast_sender(ttl=300)


def test_port_in_use_without_reuse_names_the_address() -> None:
    first = net.open_unicast_socket(("127.0.0.1", 0))
    try:
        port = first.getsockname()[1]
        with pytest.raises(SocketError) as info:
            net.open_unicast_socket(("127.0.0.1", port))
        assert f"127.0.0.1:{port}" in str(info.value)
        assert info.value.cause is not None
        assert isinstance(info.value, OSError)
    finally:
        first.close()


def test_receive_buffer_is_raised(caplog: pytest.LogCaptureFixture) -> None:
    sock = net.open_unicast_socket(("127.0.0.1", 0), rcvbuf=4 * 1024 * 1024)
    try:
        got = sock.getsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF)
        # As root SO_RCVBUFFORCE gets the size; otherwise a warning names rmem_max.
        assert got >= 4 * 1024 * 1024 or "net.core.rmem_max" in caplog.text
    finally:
        sock.close()


def test_multicast_send_and_receive_on_loopback(multicast: None) -> None:
    receiver = net.open_multicast_receiver("239.1.2.3", 31001, "127.0.0.1")
    second = net.open_multicast_receiver("239.1.2.3", 31001, "127.0.0.1")  # shared port
    sender = net.open_multicast_sender("127.0.0.1")
    try:
        assert sender.getsockopt(socket.IPPROTO_IP, socket.IP_MULTICAST_TTL) == 1
        sender.sendto(b"hello", ("239.1.2.3", 31001))
        for sock in (receiver, second):
            sock.settimeout(2)
            assert sock.recv(100) == b"hello"
    finally:
        for sock in (receiver, second, sender):
            sock.close()


DROP_RECEIVERS: list[Callable[[socket.socket, int], tuple[list[bytes], int]]] = [
    net._recv_batch_drops_py
]
if net.c_recv_batch_drops is not None:
    DROP_RECEIVERS.append(net._recv_batch_drops_c)


@pytest.mark.parametrize("recv_batch_drops", DROP_RECEIVERS)
def test_recv_batch_drops_reports_the_kernel_drop_counter(
    recv_batch_drops: Callable[[socket.socket, int], tuple[list[bytes], int]],
) -> None:
    """Overflow a small receive buffer: the datagrams that got in come back in order, and
    one queued after the overflow carries the socket's drop count (SO_RXQ_OVFL)."""
    receiver = net.open_unicast_socket(("127.0.0.1", 0), rcvbuf=None)
    receiver.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 16384)
    receiver.setsockopt(socket.SOL_SOCKET, net.SO_RXQ_OVFL, 1)
    sender = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    try:
        assert recv_batch_drops(receiver, 8) == ([], -1)
        sent = [i.to_bytes(4, "big") * 75 for i in range(400)]
        for datagram in sent:
            sender.sendto(datagram, receiver.getsockname())
        first, before = recv_batch_drops(receiver, 256)
        assert first and before == -1  # queued before any drop: no counter
        assert first == sent[: len(first)]
        sender.sendto(b"after", receiver.getsockname())
        got, drops = recv_batch_drops(receiver, 256)
        assert got == [b"after"]
        assert drops == len(sent) - len(first) > 0
    finally:
        receiver.close()
        sender.close()


def test_interface_by_name_or_address() -> None:
    assert net.check_interface_addr("lo") == "127.0.0.1"
    assert net.check_interface_addr("127.0.0.1") == "127.0.0.1"
    assert net.check_interface_addr("0.0.0.0") == "0.0.0.0"
    with pytest.raises(ConfigError, match="neither an IPv4 address nor the name"):
        net.check_interface_addr("nosuch0")


def test_multicast_join_by_interface_name(multicast: None) -> None:
    receiver = net.open_multicast_receiver("239.1.2.4", 31002, "lo")
    sender = net.open_multicast_sender("lo")
    try:
        sender.sendto(b"by name", ("239.1.2.4", 31002))
        receiver.settimeout(2)
        assert receiver.recv(100) == b"by name"
    finally:
        receiver.close()
        sender.close()
