"""SoupBinTCP against Nassau itself: Nassau's client against our server, our client against
Nassau's server (tests/interop/NassauPeer.java over Nassau's SoupBinTCPClient and
SoupBinTCPServer). Runs when tests/interop/build_nassau.sh has built the classes (needs a
JDK and the Nassau and foundation sources); skipped otherwise, saying so."""

from __future__ import annotations

import os
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from moldudp64.events import Message
from moldudp64.soupbintcp import LoginRejectedError
from moldudp64.store import MemoryStore
from moldudp64.sync.soupbintcp import SoupBinTCP, SoupServer

ROOT = Path(__file__).resolve().parents[1]
CLASSES = Path(os.environ.get("MOLDUDP64_NASSAU_CLASSES", ROOT / "build" / "interop" / "classes"))
JAVA = shutil.which("java")

pytestmark = pytest.mark.skipif(
    JAVA is None or not (CLASSES / "NassauPeer.class").exists(),
    reason="Nassau not built: run tests/interop/build_nassau.sh (needs a JDK and git)",
)

COUNT = 20
MESSAGES = [b"message %d" % i for i in range(1, COUNT + 1)]


def nassau(*args: str, timeout: float = 30) -> list[str]:
    """Run NassauPeer to the end; its lines."""
    assert JAVA is not None
    done = subprocess.run(
        [JAVA, "-cp", str(CLASSES), "NassauPeer", *args],
        capture_output=True,
        timeout=timeout,
        check=False,
    )
    assert done.returncode == 0, done.stderr.decode()
    return done.stdout.decode().splitlines()


@pytest.fixture
def our_server() -> Iterator[SoupServer]:
    store = MemoryStore()
    store.extend(MESSAGES)
    with SoupServer(store, "SES1", username="bob", password="secret") as server:
        yield server


def messages_of(lines: list[str]) -> list[bytes]:
    return [bytes.fromhex(line[4:]) for line in lines if line.startswith("MSG ")]


# --------------------------------------------------------------------------- Nassau's client


def test_nassau_client_reads_our_session_byte_exact(our_server: SoupServer) -> None:
    host, port = our_server.address
    lines = nassau("client", host, str(port), "bob", "secret", "SES1", "1")
    # Nassau returns fields raw: our session left-justified, our number right-justified.
    assert lines[0] == "ACCEPTED [SES1      ] 1"
    assert messages_of(lines) == MESSAGES
    assert lines[-1] == "END"


def test_nassau_client_resumes_where_it_asks(our_server: SoupServer) -> None:
    # Nassau right-justifies the session it asks for ("      SES1"): accepted all the same.
    host, port = our_server.address
    lines = nassau("client", host, str(port), "bob", "secret", "SES1", "15")
    assert lines[0] == "ACCEPTED [SES1      ] 15"
    assert messages_of(lines) == MESSAGES[14:]
    latest = nassau("client", host, str(port), "bob", "secret", "", "0")
    assert latest == [f"ACCEPTED [SES1      ] {COUNT + 1}", "END"]


@pytest.mark.parametrize(
    ("user", "password", "session", "code"),
    [("bob", "wrong", "SES1", "A"), ("eve", "secret", "SES1", "A"), ("bob", "secret", "SES2", "S")],
)
def test_nassau_client_is_rejected(
    our_server: SoupServer, user: str, password: str, session: str, code: str
) -> None:
    host, port = our_server.address
    assert nassau("client", host, str(port), user, password, session, "1") == [f"REJECTED {code}"]


# --------------------------------------------------------------------------- Nassau's server


class NassauServer:
    """NassauPeer's server in the background; its lines once it exits."""

    def __init__(self, *, drop_after: int = 0, connections: int = 1) -> None:
        assert JAVA is not None
        self.proc = subprocess.Popen(
            [JAVA, "-cp", str(CLASSES), "NassauPeer", "server", "0", "bob", "secret", "SES1",
             str(COUNT), str(drop_after), str(connections)],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
        )  # fmt: skip
        assert self.proc.stdout is not None
        first = self.proc.stdout.readline().decode()
        assert first.startswith("LISTENING "), first + self.proc.stderr.read().decode()  # type: ignore[union-attr]
        self.address = ("127.0.0.1", int(first.split()[1]))

    def finish(self) -> list[str]:
        out, err = self.proc.communicate(timeout=30)
        assert self.proc.returncode == 0, err.decode()
        return out.decode().splitlines()


def test_our_client_reads_nassau_session_and_logs_in_byte_exact() -> None:
    server = NassauServer()
    with SoupBinTCP(server.address, username="bob", password="secret", session="SES1") as client:
        got = list(client.messages(timeout=20))
    lines = server.finish()
    # What Nassau read from our Login Request, raw: alphanumerics left-justified, the
    # number right-justified.
    assert lines[0] == "LOGIN [bob   ] [secret    ] [SES1      ] 1"
    assert got == [Message("SES1", i + 1, m) for i, m in enumerate(MESSAGES)]
    assert client.core.ended
    assert lines[-1] == "LOGOUT" or len(lines) == 1


def test_our_client_resumes_from_nassau_after_a_dropped_connection() -> None:
    server = NassauServer(drop_after=7, connections=2)
    with SoupBinTCP(server.address, username="bob", password="secret") as client:
        got = [m.data for m in client.messages(timeout=20)]
    lines = server.finish()
    logins = [line for line in lines if line.startswith("LOGIN")]
    # The first login asks for the current session; the resume names the one given.
    assert logins == [
        "LOGIN [bob   ] [secret    ] [          ] 1",
        "LOGIN [bob   ] [secret    ] [SES1      ] 8",
    ]
    assert got == MESSAGES
    assert client.connections == 2


@pytest.mark.parametrize(
    ("password", "session", "code"), [("wrong", "SES1", "A"), ("secret", "SES9", "S")]
)
def test_our_client_is_rejected_by_nassau(password: str, session: str, code: str) -> None:
    # Nassau's server keeps the connection after a rejection; our client ends at once.
    server = NassauServer()
    with (
        SoupBinTCP(server.address, username="bob", password=password, session=session) as client,
        pytest.raises(LoginRejectedError) as caught,
    ):
        list(client.messages(timeout=20))
    assert caught.value.reason == code
    lines = server.finish()
    assert lines[0].startswith("LOGIN [bob   ]")


def test_both_sides_agree_over_a_long_session() -> None:
    """Many messages, with our server's batching: Nassau counts every one."""
    store = MemoryStore()
    messages = [b"%d" % i * (i % 50 + 1) for i in range(50_000)]
    store.extend(messages)
    with SoupServer(store, "BIG") as server:
        host, port = server.address
        lines = nassau("client", host, str(port), "", "", "", "1", timeout=60)
    assert messages_of(lines) == messages
