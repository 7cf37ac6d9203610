"""Socket construction: multicast receive and send, unicast request sockets, buffer sizes.

Every failure is a :class:`~moldudp64.exceptions.SocketError` naming the address and the
cause; every bad value is a :class:`~moldudp64.exceptions.ConfigError`, raised before any
socket is opened. Defaults that could reach a real network are the conservative ones:
multicast TTL 1 and the interface the caller names.
"""

from __future__ import annotations

import ipaddress
import logging
import os
import socket
import struct
import sys
from collections.abc import Callable, Iterable
from typing import Protocol

from . import validation
from .events import Address, Source
from .exceptions import ConfigError, SocketError

__all__ = [
    "DEFAULT_RCVBUF",
    "LineOptions",
    "check_interface_addr",
    "check_multicast_addr",
    "check_port",
    "enable_drop_counter",
    "format_address",
    "open_client_sockets",
    "open_line_sockets",
    "open_multicast_receiver",
    "open_multicast_sender",
    "open_request_socket",
    "open_unicast_socket",
    "parse_address",
    "read_kernel_drops",
    "recv_batch",
    "recv_batch_drops",
    "set_receive_buffer",
    "socket_inode",
]

logger = logging.getLogger(__name__)

#: Receive buffer asked for by default: 8 MiB absorbs about 5,000 full-size packets.
DEFAULT_RCVBUF = 8 * 1024 * 1024
_SO_RCVBUFFORCE = getattr(socket, "SO_RCVBUFFORCE", 33)


def _recv_batch_py(sock: socket.socket, max_count: int = 64) -> list[bytes]:
    """Up to ``max_count`` datagrams already waiting on a non-blocking socket; [] if none."""
    out: list[bytes] = []
    recv = sock.recv
    try:
        while len(out) < max_count:
            out.append(recv(65536))
    except (BlockingIOError, InterruptedError):
        pass
    return out


def _load_recv_batch() -> Callable[[int, int, int], list[bytes]] | None:
    if os.environ.get("MOLDUDP64_PURE_PYTHON"):
        return None
    try:
        from ._speedups import recv_batch as c_recv_batch
    except ImportError:
        return None
    return c_recv_batch


#: recvmmsg() through the C accelerator (None without it, or off Linux).
c_recv_batch = _load_recv_batch()


def _recv_batch_c(sock: socket.socket, max_count: int = 64) -> list[bytes]:
    """:func:`recv_batch` in one ``recvmmsg()`` system call."""
    assert c_recv_batch is not None
    return c_recv_batch(sock.fileno(), max_count, 65536)


#: Up to ``max_count`` datagrams waiting on a non-blocking socket, [] when none is ready
#: (one ``recvmmsg()`` call with the C accelerator, a ``recv()`` loop without).
recv_batch = _recv_batch_py if c_recv_batch is None else _recv_batch_c

SO_RXQ_OVFL = getattr(socket, "SO_RXQ_OVFL", 40)
_OVFL_SPACE = socket.CMSG_SPACE(4) if hasattr(socket, "CMSG_SPACE") else 64


def _recv_batch_drops_py(sock: socket.socket, max_count: int = 64) -> tuple[list[bytes], int]:
    """:func:`recv_batch`, and the socket's kernel drop count as the last datagram carried
    it (``SO_RXQ_OVFL``, which must be enabled on the socket), or -1 if none carried it."""
    out: list[bytes] = []
    drops = -1
    recvmsg = sock.recvmsg
    try:
        while len(out) < max_count:
            data, anc, _flags, _addr = recvmsg(65536, _OVFL_SPACE)
            out.append(data)
            for level, kind, payload in anc:
                if level == socket.SOL_SOCKET and kind == SO_RXQ_OVFL and len(payload) >= 4:
                    drops = int.from_bytes(payload[:4], sys.byteorder)
    except (BlockingIOError, InterruptedError):
        pass
    return out, drops


def _load_recv_batch_drops() -> Callable[[int, int, int], tuple[list[bytes], int]] | None:
    if c_recv_batch is None:
        return None
    try:
        from ._speedups import recv_batch_drops
    except ImportError:  # an accelerator built before it existed
        return None
    return recv_batch_drops


#: recvmmsg() with each datagram's SO_RXQ_OVFL drop count (None without the accelerator).
c_recv_batch_drops = _load_recv_batch_drops()


def _recv_batch_drops_c(sock: socket.socket, max_count: int = 64) -> tuple[list[bytes], int]:
    """:func:`recv_batch_drops` in one ``recvmmsg()`` system call."""
    assert c_recv_batch_drops is not None
    return c_recv_batch_drops(sock.fileno(), max_count, 65536)


#: ``(datagrams, drops)``: :func:`recv_batch` and the kernel's drop count for the socket
#: as the last datagram carried it (``SO_RXQ_OVFL`` enabled), -1 when none carried it.
recv_batch_drops = _recv_batch_drops_py if c_recv_batch_drops is None else _recv_batch_drops_c


def format_address(addr: Address) -> str:
    """``host:port`` for messages."""
    return f"{addr[0]}:{addr[1]}"


def check_port(port: object, what: str = "port", *, allow_zero: bool = False) -> int:
    """Return ``port`` if it is a valid UDP port number, else raise ConfigError."""
    return validation.check_port(port, what, allow_zero=allow_zero)


_ipv4 = validation.check_ipv4


def parse_address(text: str, what: str = "address", *, default_host: str | None = None) -> Address:
    """Parse ``host:port`` (host a dotted IPv4 address or a name that resolves to one)."""
    host, sep, port_text = text.rpartition(":")
    if not sep:
        raise ConfigError(f"{what} {text!r} is not HOST:PORT")
    if not host:
        if default_host is None:
            raise ConfigError(f"{what} {text!r} has no host (expected HOST:PORT)")
        host = default_host
    try:
        port = int(port_text)
    except ValueError:
        raise ConfigError(f"{what} {text!r}: port {port_text!r} is not a number") from None
    check_port(port, f"{what} {text!r}: port")
    try:
        ipaddress.IPv4Address(host)
    except ValueError:
        try:
            host = socket.gethostbyname(host)
        except OSError as exc:
            raise ConfigError(f"{what} {text!r}: cannot resolve host {host!r}: {exc}") from None
    return (host, port)


def check_multicast_addr(addr: object, what: str = "multicast address") -> Address:
    """Return ``(group, port)`` if the group is an IPv4 multicast address, else ConfigError."""
    return validation.check_multicast_addr(addr, what)


_SIOCGIFADDR = 0x8915  # Linux: an interface's IPv4 address


def _address_of_interface(name: str) -> ipaddress.IPv4Address | None:
    """The IPv4 address of the interface called ``name`` (Linux), or None if there is none."""
    if not sys.platform.startswith("linux") or not name or len(name) > 15:
        return None
    try:
        socket.if_nametoindex(name)
    except OSError:
        return None
    import fcntl

    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
        try:
            raw = fcntl.ioctl(probe.fileno(), _SIOCGIFADDR, struct.pack("256s", name.encode()))
        except OSError:
            raise ConfigError(f"interface {name} has no IPv4 address") from None
    return ipaddress.IPv4Address(raw[20:24])


def check_interface_addr(interface_addr: object) -> str:
    """Return the interface's IPv4 address, given as an address of this host or 0.0.0.0, or
    as the name of one of its interfaces (``"eth0"``, Linux)."""
    if isinstance(interface_addr, str):
        try:
            ipaddress.IPv4Address(interface_addr)
        except ValueError:
            by_name = _address_of_interface(interface_addr)
            if by_name is None:
                raise ConfigError(
                    f"interface {interface_addr!r} is neither an IPv4 address nor the name "
                    "of an interface of this host"
                ) from None
            return str(by_name)
    addr = _ipv4(interface_addr, "interface address")
    if addr.is_unspecified:
        return str(addr)
    probe = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    try:
        probe.bind((str(addr), 0))
    except OSError as exc:
        raise ConfigError(
            f"interface address {addr} is not an address of this host ({exc.strerror})"
        ) from None
    finally:
        probe.close()
    return str(addr)


def set_receive_buffer(sock: socket.socket, size: int, name: str) -> int:
    """Ask for a receive buffer of ``size`` bytes; return what the kernel gave.

    Tries ``SO_RCVBUFFORCE`` (root may exceed ``net.core.rmem_max``) and falls back to
    ``SO_RCVBUF``; warns, naming ``net.core.rmem_max``, when the kernel gives less.
    """
    try:
        sock.setsockopt(socket.SOL_SOCKET, _SO_RCVBUFFORCE, size)
    except OSError:
        try:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, size)
        except OSError as exc:
            logger.warning("%s: cannot set receive buffer to %d: %s", name, size, exc)
    got = sock.getsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF)
    # Linux reports twice the usable size it set aside.
    if got < size:
        logger.warning(
            "%s: receive buffer is %d bytes, less than the %d asked for; raise "
            "net.core.rmem_max (sysctl -w net.core.rmem_max=%d) to absorb bursts",
            name,
            got,
            size,
            size,
        )
    return got


def _fail(sock: socket.socket, what: str, addr: object, exc: OSError) -> SocketError:
    sock.close()
    return SocketError(f"{what} {addr}: {exc.strerror or exc}", address=addr, cause=exc)


def open_multicast_receiver(
    group: str,
    port: int,
    interface_addr: str = "0.0.0.0",
    *,
    rcvbuf: int | None = DEFAULT_RCVBUF,
    reuse: bool = True,
) -> socket.socket:
    """Open a UDP socket bound to ``port`` and joined to ``group`` on ``interface_addr``.

    With ``reuse`` (the default) several processes on one host can listen to one group.
    The socket is non-blocking.
    """
    check_multicast_addr((group, port))
    iface = check_interface_addr(interface_addr)
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM, socket.IPPROTO_UDP)
    where = f"{group}:{port}"
    try:
        if reuse:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    except OSError as exc:
        raise _fail(sock, "cannot set SO_REUSEADDR on", where, exc) from exc
    if rcvbuf:
        set_receive_buffer(sock, rcvbuf, where)
    try:
        # Binding the group address keeps unicast and other groups on the port out.
        sock.bind((group, port))
    except OSError as exc:
        raise _fail(sock, "cannot bind multicast socket to", where, exc) from exc
    mreq = socket.inet_aton(group) + socket.inet_aton(iface)
    try:
        sock.setsockopt(socket.IPPROTO_IP, socket.IP_ADD_MEMBERSHIP, mreq)
    except OSError as exc:
        raise _fail(sock, f"cannot join {group} on interface {iface} for", where, exc) from exc
    sock.setblocking(False)
    return sock


def open_unicast_socket(
    bind: Address = ("0.0.0.0", 0), *, rcvbuf: int | None = None, reuse: bool = False
) -> socket.socket:
    """Open a non-blocking UDP socket bound to ``bind`` (port 0 picks a free port)."""
    host = str(_ipv4(bind[0], "bind address"))
    port = check_port(bind[1], "bind port", allow_zero=True)
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM, socket.IPPROTO_UDP)
    where = f"{host}:{port}"
    try:
        if reuse:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        if rcvbuf:
            set_receive_buffer(sock, rcvbuf, where)
        sock.bind((host, port))
    except OSError as exc:
        raise _fail(sock, "cannot bind UDP socket to", where, exc) from exc
    sock.setblocking(False)
    return sock


def open_multicast_sender(
    interface_addr: str | None = None,
    *,
    ttl: int = 1,
    loopback: bool = True,
    bind: Address | None = None,
) -> socket.socket:
    """Open a non-blocking UDP socket for sending to multicast groups.

    ``ttl`` defaults to 1 so packets never leave the local network segment; ``loopback``
    lets listeners on this host receive; ``interface_addr`` picks the outgoing interface
    (None: the kernel's route for the group).
    """
    validation.check_ttl(ttl)
    iface = None if interface_addr is None else check_interface_addr(interface_addr)
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM, socket.IPPROTO_UDP)
    try:
        sock.setsockopt(socket.IPPROTO_IP, socket.IP_MULTICAST_TTL, ttl)
        sock.setsockopt(socket.IPPROTO_IP, socket.IP_MULTICAST_LOOP, 1 if loopback else 0)
        if iface is not None and iface != "0.0.0.0":
            sock.setsockopt(socket.IPPROTO_IP, socket.IP_MULTICAST_IF, socket.inet_aton(iface))
    except OSError as exc:
        raise _fail(sock, "cannot configure multicast sender on", iface, exc) from exc
    if bind is not None:
        try:
            sock.bind((str(_ipv4(bind[0], "bind address")), check_port(bind[1], allow_zero=True)))
        except OSError as exc:
            raise _fail(sock, "cannot bind sender to", format_address(bind), exc) from exc
    sock.setblocking(False)
    return sock


# --------------------------------------------------------------------------- client sockets


class LineOptions(Protocol):
    """What the client socket openers read from a client's settings (``ClientOptions``)."""

    @property
    def multicast_addr(self) -> Address: ...
    @property
    def line_b_addr(self) -> Address | None: ...
    @property
    def interface_addr(self) -> str: ...
    @property
    def rcvbuf(self) -> int | None: ...
    @property
    def reuse(self) -> bool: ...


def open_line_sockets(options: LineOptions) -> list[tuple[socket.socket, Source]]:
    """Open and join the downstream sockets (line A, then line B if configured)."""
    opened: list[tuple[socket.socket, Source]] = []
    try:
        for addr, source in (
            (options.multicast_addr, Source.LINE_A),
            (options.line_b_addr, Source.LINE_B),
        ):
            if addr is None:
                continue
            sock = open_multicast_receiver(
                addr[0], addr[1], options.interface_addr, rcvbuf=options.rcvbuf, reuse=options.reuse
            )
            opened.append((sock, source))
    except BaseException:
        for sock, _ in opened:
            sock.close()
        raise
    return opened


def open_request_socket(options: LineOptions) -> socket.socket:
    """Open the unicast socket requests go out on and answers come back to (never the feed port)."""
    return open_unicast_socket(("0.0.0.0", 0), rcvbuf=options.rcvbuf)


def open_client_sockets(
    options: LineOptions,
) -> tuple[list[tuple[socket.socket, Source]], socket.socket]:
    """A client's line sockets and its request socket; none stays open if one fails."""
    lines = open_line_sockets(options)
    try:
        rereq = open_request_socket(options)
    except BaseException:
        for sock, _ in lines:
            sock.close()
        raise
    return lines, rereq


#: SO_RXQ_OVFL where the kernel has it (Linux), else None.
RXQ_OVFL = SO_RXQ_OVFL if sys.platform.startswith("linux") else None


def enable_drop_counter(sock: socket.socket) -> bool:
    """Ask Linux to report the socket's kernel drop count with each datagram (SO_RXQ_OVFL)."""
    if RXQ_OVFL is None:
        return False
    try:
        sock.setsockopt(socket.SOL_SOCKET, RXQ_OVFL, 1)
    except OSError:
        return False
    return True


def socket_inode(sock: socket.socket) -> int:
    """The inode that names ``sock`` in ``/proc/net/udp``."""
    return os.fstat(sock.fileno()).st_ino


def read_kernel_drops(inodes: Iterable[int]) -> dict[int, int] | None:
    """Datagrams the kernel dropped so far on each of these sockets, by inode.

    Read from ``/proc/self/net/udp``; None where it cannot be read (not Linux). Used where
    ``SO_RXQ_OVFL`` cannot be (asyncio transports read with ``recvfrom``) and when a
    paused reader resumes (``SO_RXQ_OVFL`` only reports with the next datagram).
    """
    wanted = {str(i): i for i in inodes}
    found: dict[int, int] = {}
    try:
        with open("/proc/self/net/udp", encoding="ascii") as f:
            next(f, None)
            for line in f:
                cols = line.split()
                if len(cols) >= 13 and cols[9] in wanted:
                    found[wanted[cols[9]]] = int(cols[-1])
    except (OSError, ValueError):
        return None
    return found
