"""validation.py: every check accepts what is valid, names the setting when it is not, and
answers anything at all with a value or a ConfigError (never another exception)."""

from __future__ import annotations

import ast
import contextlib
import math
from collections.abc import Callable
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from moldudp64 import net, validation
from moldudp64.exceptions import ConfigError
from moldudp64.validation import (
    check_batch_size,
    check_finite_positive,
    check_ipv4,
    check_max_payload,
    check_multicast_addr,
    check_port,
    check_probability,
    check_publish_group,
    check_rate,
    check_seconds,
    check_seq_num,
    check_server_address,
    check_session,
    check_ttl,
)


def error(check: Callable[[], object]) -> str:
    with pytest.raises(ConfigError) as info:
        check()
    return str(info.value)


def test_ports() -> None:
    assert check_port(1) == 1 and check_port(65535) == 65535
    assert check_port(0, allow_zero=True) == 0
    assert error(lambda: check_port(0)) == "port 0 is not a port number (1..65535)"
    assert error(lambda: check_port(65536, "bind port", allow_zero=True)) == (
        "bind port 65536 is not a port number (0..65535)"
    )
    assert "True" in error(lambda: check_port(True))  # a bool is not a port
    assert "'80'" in error(lambda: check_port("80"))


def test_addresses() -> None:
    assert str(check_ipv4("10.0.0.1")) == "10.0.0.1"
    assert error(lambda: check_ipv4(167772161, "bind address")) == (
        "bind address 167772161 must be a dotted IPv4 address string"
    )
    assert error(lambda: check_ipv4("::1")) == "address '::1' is not an IPv4 address"
    assert check_multicast_addr(("239.1.1.1", 30001)) == ("239.1.1.1", 30001)
    assert error(lambda: check_multicast_addr(("10.1.1.1", 30001))) == (
        "multicast address 10.1.1.1 is not a multicast group (224.0.0.0/4)"
    )
    assert "must be a (group, port) tuple" in error(lambda: check_multicast_addr("239.1.1.1"))
    assert check_server_address(("127.0.0.1", 9000)) == ("127.0.0.1", 9000)
    for bad in [("", 9000), ("127.0.0.1", 0), ("127.0.0.1",), ["127.0.0.1", 9000]]:
        assert "is not a (host, port) pair" in error(lambda b=bad: check_server_address(b))


def test_publish_group_is_multicast_unless_unicast() -> None:
    assert check_publish_group(("239.1.1.1", 1)) == ("239.1.1.1", 1)
    assert "pass unicast=True" in error(lambda: check_publish_group(("127.0.0.1", 5000)))
    assert check_publish_group(("127.0.0.1", 5000), unicast=True) == ("127.0.0.1", 5000)
    assert error(lambda: check_publish_group(("239.1.1.1", 0))) == (
        "group port 0 is not a port number (1..65535)"
    )
    assert error(lambda: check_publish_group("239.1.1.1:1")) == (
        "group '239.1.1.1:1' must be a (host, port) tuple"
    )


def test_numbers() -> None:
    assert check_ttl(0) == 0 and check_ttl(255) == 255
    assert error(lambda: check_ttl(256)) == "multicast TTL 256 is outside 0..255"
    assert check_probability(1, "drop") == 1.0
    assert error(lambda: check_probability(1.5, "drop")) == (
        "drop probability 1.5 must be a number in 0..1"
    )
    assert "nan" in error(lambda: check_probability(math.nan, "reorder"))
    assert check_rate(None) is None and check_rate(10) == 10.0
    assert error(lambda: check_rate(0)) == "rate 0 must be a number of messages per second > 0"
    assert "'fast'" in error(lambda: check_rate("fast"))  # not a TypeError from the comparison
    assert check_batch_size(1) == 1
    assert error(lambda: check_batch_size(0)) == "batch_size 0 must be an int >= 1"
    assert check_seconds(0, "flush_delay") == 0.0
    assert error(lambda: check_seconds(-1, "flush_delay")) == (
        "flush_delay -1 must be a number of seconds >= 0"
    )
    assert check_finite_positive(2, "rate limit burst_seconds") == 2.0
    for bad in (0, -1, math.inf, math.nan, True, "1"):
        message = error(lambda b=bad: check_finite_positive(b, "rate limit burst_seconds"))
        assert message.startswith("rate limit burst_seconds ")
        assert message.endswith(" must be a finite number > 0")
    assert check_max_payload(3) == 3 and check_max_payload(1452) == 1452
    assert error(lambda: check_max_payload(2)) == "max_payload 2 must be 3..65487 bytes"
    assert error(lambda: check_max_payload(3.0)) == "max_payload 3.0 must be an int"


def test_sequence_numbers_and_sessions() -> None:
    assert check_seq_num(1) == 1 and check_seq_num(2**64 - 1) == 2**64 - 1
    assert error(lambda: check_seq_num(0)) == "first_seq_num 0 must be 1..2**64-1"
    assert error(lambda: check_seq_num(2**64)) == f"first_seq_num {2**64} must be 1..2**64-1"
    assert error(lambda: check_seq_num(True)) == "first_seq_num True must be an int"
    assert check_session("ABC") == b"ABC       "
    assert error(lambda: check_session("ELEVEN-CHAR")).startswith("session: ")
    assert error(lambda: check_session("séssion", "expected_session_ident")).startswith(
        "expected_session_ident: session 'séssion' is not ASCII"
    )
    assert error(lambda: check_session(7)) == "session: session must be str or bytes, not int"


anything = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(),
    st.floats(),
    st.text(max_size=20),
    st.binary(max_size=20),
    st.tuples(st.text(max_size=16), st.integers()),
    st.tuples(st.integers(), st.text()),
    st.lists(st.integers(), max_size=3),
)

CHECKS: list[Callable[[object], object]] = [
    check_port,
    check_ipv4,
    check_multicast_addr,
    check_publish_group,
    check_server_address,
    check_ttl,
    lambda v: check_probability(v, "drop"),
    check_rate,
    check_batch_size,
    lambda v: check_seconds(v, "flush_delay"),
    lambda v: check_finite_positive(v, "x"),
    check_seq_num,
    check_session,
    check_max_payload,
]


@given(value=anything, which=st.integers(0, len(CHECKS) - 1))
def test_any_value_gets_a_value_or_a_config_error(value: object, which: int) -> None:
    with contextlib.suppress(ConfigError):
        CHECKS[which](value)


def test_net_keeps_its_check_names_with_the_same_wording() -> None:
    assert net.check_port(5) == 5
    assert error(lambda: net.check_port(0, "group port")) == (
        "group port 0 is not a port number (1..65535)"
    )
    assert net.check_multicast_addr(("239.0.0.1", 9)) == ("239.0.0.1", 9)
    assert error(lambda: net.check_multicast_addr(("1.2.3.4", 9), "line B")) == (
        "line B 1.2.3.4 is not a multicast group (224.0.0.0/4)"
    )


def test_validation_is_a_core_module() -> None:
    """No sockets, clock or threads: the cores may import it."""
    tree = ast.parse(Path(validation.__file__).read_text())
    imported = {
        alias.name.split(".")[0]
        for node in ast.walk(tree)
        if isinstance(node, ast.Import)
        for alias in node.names
    } | {node.module or "" for node in ast.walk(tree) if isinstance(node, ast.ImportFrom)}
    assert not imported & {"socket", "time", "threading", "asyncio", "selectors"}
    relative = {m for m in imported if m in {"events", "exceptions", "wire", "__future__"}}
    assert imported - relative <= {"ipaddress", "math"}
