"""Test-wide set-up: the whole suite runs inside a private network namespace.

When the suite runs as root on Linux it first moves itself into a new network namespace
where loopback is the only interface, so no test can send a packet off this machine and
real multicast can be used on loopback. Tests that need multicast use the
``multicast`` fixture, which skips with the reason when no namespace could be made.
"""

from __future__ import annotations

import pytest

from moldudp64.netns import enter_private_netns

NETNS_ERROR = enter_private_netns()


@pytest.fixture
def multicast() -> None:
    """Skip the test (with the reason) unless loopback multicast in a private namespace works."""
    if NETNS_ERROR is not None:
        pytest.skip(f"no private network namespace for multicast: {NETNS_ERROR}")
