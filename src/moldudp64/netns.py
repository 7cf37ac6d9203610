"""Enter a private network namespace where loopback is the only interface.

Used by the test suite and by ``moldudp64 demo`` so that real multicast can be exercised
without any packet being able to leave the machine. Linux only, and needs root
(CAP_SYS_ADMIN); :func:`enter_private_netns` says why when it cannot.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import os
import shutil
import subprocess
import sys

__all__ = ["enter_private_netns", "in_private_netns"]

_CLONE_NEWNET = 0x40000000
_entered = False


def in_private_netns() -> bool:
    """Whether this process already moved itself into a private namespace."""
    return _entered


def enter_private_netns() -> str | None:
    """Move this process into a new network namespace with loopback up and multicast routed to it.

    Call it before any thread is started: threads started later inherit the namespace.
    Returns None on success, otherwise the reason it could not (and nothing changed).
    """
    global _entered
    if _entered:
        return None
    if not sys.platform.startswith("linux"):
        return "network namespaces need Linux"
    if os.geteuid() != 0:
        return "a private network namespace needs root"
    ip = shutil.which("ip")
    if ip is None:
        return "the 'ip' command (iproute2) is not installed"
    libc = ctypes.CDLL(ctypes.util.find_library("c") or None, use_errno=True)
    if libc.unshare(_CLONE_NEWNET) != 0:
        err = ctypes.get_errno()
        return f"unshare(CLONE_NEWNET) failed: {os.strerror(err)}"
    _entered = True
    for args in (
        ["link", "set", "lo", "up"],
        ["link", "set", "lo", "multicast", "on"],
        ["route", "add", "224.0.0.0/4", "dev", "lo"],
    ):
        done = subprocess.run([ip, *args], capture_output=True, text=True, check=False)
        if done.returncode != 0:
            return f"ip {' '.join(args)} failed in the new namespace: {done.stderr.strip()}"
    return None
