"""The ``moldudp64`` command: listen, publish, serve, inspect, demo, generate, bench.

Exit codes: 0 done; 2 bad usage or input (one line on stderr, never a traceback; also a
closed stdout or an output that cannot be written, the file named); 3 messages lost for
good (everything else was written; stderr names the lost ranges); 4 idle timeout; 130
interrupted by SIGINT, SIGTERM or SIGHUP (after flushing what was received and printing
the summary); 141 the reader of the output went away (broken pipe, e.g. ``| head``: quiet,
as a command ended by SIGPIPE).

One module per command (``inspect``, ``listen``, ``publish`` with serve, ``demo``,
``generate``, ``bench``); ``parser`` builds the argument parser and loads a command's
module only when that command runs (``moldudp64 --help`` stays fast); ``options`` holds the
option types, ``sinks`` the outputs, ``common`` what every command shares, ``main`` the
entry point.
Nothing outside this package imports it.
"""

from __future__ import annotations

from .common import (
    EXIT_BROKEN_PIPE,
    EXIT_FAILURE,
    EXIT_IDLE,
    EXIT_INTERRUPTED,
    EXIT_LOST,
    EXIT_OK,
    EXIT_USAGE,
)
from .itchgen import generate_itch
from .main import main
from .parser import build_parser

__all__ = [
    "EXIT_BROKEN_PIPE",
    "EXIT_FAILURE",
    "EXIT_IDLE",
    "EXIT_INTERRUPTED",
    "EXIT_LOST",
    "EXIT_OK",
    "EXIT_USAGE",
    "build_parser",
    "generate_itch",
    "main",
]
