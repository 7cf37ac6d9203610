"""Helpers for the command's end-to-end tests: run ``python -m moldudp64`` as a subprocess."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def run(
    *args: str, timeout: float = 60, stdin: bytes | None = None, cwd: Path | None = None
) -> subprocess.CompletedProcess[bytes]:
    """Run the command to completion; stdout/stderr captured as bytes."""
    env = dict(os.environ)
    env.pop("COLUMNS", None)
    return subprocess.run(
        [sys.executable, "-m", "moldudp64", *args],
        capture_output=True,
        timeout=timeout,
        input=stdin,
        cwd=cwd,
        env=env,
        check=False,
    )


def start(*args: str) -> subprocess.Popen[bytes]:
    """Start the command in the background (stdout/stderr piped)."""
    return subprocess.Popen(
        [sys.executable, "-m", "moldudp64", *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )


def jsonl(data: bytes) -> list[dict[str, object]]:
    """The objects of a JSON-lines output."""
    return [json.loads(line) for line in data.decode().splitlines() if line.strip()]


def assert_one_line_error(proc: subprocess.CompletedProcess[bytes], code: int = 2) -> str:
    """The process failed with ``code`` and one clear line on stderr, no traceback."""
    err = proc.stderr.decode()
    assert proc.returncode == code, (proc.returncode, err)
    assert "Traceback" not in err, err
    lines = [line for line in err.splitlines() if line.strip()]
    assert len(lines) == 1, err
    assert "error" in lines[0], err
    return lines[0]


# Live listen tests (tests/cli/test_cli_live.py and its neighbours)

SESSION = "TEST000001"
GROUP = "239.7.7.7"
#: listen's (bridge's, book's, gateway's) --end-confirm for tests not about the end of
#: session rule: an end believed after 0.3 s of quiet, not the 2.5 s default.
QUICK_END = ("--end-confirm", "0.3")


def free_port() -> int:
    """A UDP port nothing on 127.0.0.1 or 0.0.0.0 uses right now (and the next one too)."""
    for _ in range(50):
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
            s.bind(("0.0.0.0", 0))
            port = int(s.getsockname()[1])
        if port < 65000:
            try:
                with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as t:
                    t.bind(("0.0.0.0", port + 1))
            except OSError:
                continue
            return port
    raise RuntimeError("no free port pair")


def start_listen(*args: str) -> subprocess.Popen[bytes]:
    """Start `moldudp64 listen` and wait until it has joined (its first stderr line)."""
    proc = start("listen", *args)
    assert proc.stderr is not None
    line = proc.stderr.readline().decode()
    assert "joined" in line, line + proc.stderr.read().decode()
    return proc


def finish(proc: subprocess.Popen[bytes], timeout: float = 60) -> tuple[int, str]:
    """Wait for a background command; its exit code and stderr."""
    _, err = proc.communicate(timeout=timeout)
    return proc.returncode, err.decode()
