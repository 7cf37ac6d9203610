"""What every command shares: exit codes, UsageError, stderr lines, progress, files, signals."""

from __future__ import annotations

import logging
import os
import signal
import stat
import sys
import threading
import time
from collections.abc import Sequence
from typing import Any

from .._output import named_error
from ..exceptions import MoldUDP64Error

logger = logging.getLogger("moldudp64.cli")

EXIT_OK = 0
EXIT_FAILURE = 1  # an internal error (a bug), never bad input
EXIT_USAGE = 2
EXIT_LOST = 3
EXIT_IDLE = 4
EXIT_INTERRUPTED = 130
EXIT_BROKEN_PIPE = 141  # 128 + SIGPIPE: what a shell shows for a command ended by SIGPIPE
EXIT_PAST_END = 6  # listen nats://: --start-seq is past the stored session's end

FORMATS = ("binaryfile", "jsonl", "text", "parquet", "csv")  # the last two: --decode
#: Captures larger than this get a progress bar (on a terminal).
PROGRESS_MIN_BYTES = 8 * 1024 * 1024
#: At most this many lost ranges are listed one by one (inspect's report).
MAX_LISTED_RANGES = 20
#: listen names every lost range on stderr, up to this many.
MAX_LOST_RANGES_KEPT = 10_000


class UsageError(MoldUDP64Error):
    """A bad option combination found after parsing (exit 2)."""


# --------------------------------------------------------------------------- helpers


def _format_ranges(
    ranges: Sequence[tuple[int, int]], limit: int = MAX_LISTED_RANGES, total: int | None = None
) -> str:
    """The first ``limit`` ranges, then how many more of ``total`` (default: all given)."""
    parts = [f"{a}" if a == b else f"{a}-{b}" for a, b in ranges[:limit]]
    shown = len(parts)
    total = len(ranges) if total is None else total
    if total > shown:
        parts.append(f"... ({total - shown} more range{'s' if total - shown != 1 else ''})")
    return ", ".join(parts)


def _stderr_is_terminal() -> bool:
    return sys.stderr.isatty()


def _say(text: str) -> None:
    """A line on stderr (status, summaries, warnings); a closed or broken stderr (a hung-up
    terminal, a reader gone) loses the line, never the command: the exit code still tells."""
    try:
        print(text, file=sys.stderr, flush=True)
    except (OSError, ValueError):
        _silence(2)


def _silence(fd: int) -> None:
    """Point a standard fd that failed at /dev/null, so nothing written later (or flushed
    at exit) fails again."""
    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        if devnull != fd:
            os.dup2(devnull, fd)
            os.close(devnull)
    except OSError:
        pass


def _progress(total: int, desc: str) -> Any:
    """A tqdm bar on stderr for large inputs when stderr is a terminal, else None."""
    if total < PROGRESS_MIN_BYTES or not _stderr_is_terminal():
        return None
    import importlib

    tqdm = importlib.import_module("tqdm").tqdm  # imported lazily, untyped
    return tqdm(total=total, unit="B", unit_scale=True, desc=desc, leave=False, file=sys.stderr)


def _same_file(a: str, b: str) -> bool:
    """Whether two paths name one file: the same path once symlinks are resolved (even if
    it does not exist yet), or the same inode (hard links)."""
    if os.path.realpath(a) == os.path.realpath(b):
        return True
    try:
        sa, sb = os.stat(a), os.stat(b)
    except OSError:
        return False
    return (sa.st_dev, sa.st_ino) == (sb.st_dev, sb.st_ino)


def _stdout_is(path: str) -> bool:
    """Whether stdout is the regular file ``path`` (``> path`` or ``>> path``)."""
    try:
        out = os.fstat(sys.stdout.fileno())
        st = os.stat(path)
    except (OSError, AttributeError, ValueError):
        return False

    return stat.S_ISREG(out.st_mode) and (out.st_dev, out.st_ino) == (st.st_dev, st.st_ino)


def refuse_overlapping_files(files: Sequence[tuple[str, str | None, bool]]) -> None:
    """Refuse (UsageError) before any file is opened for writing when an output is an input
    or another output. ``files``: (option, path or None, is an output); ``-`` is stdout."""
    named = [(opt, path, out) for opt, path, out in files if path is not None]
    for i, (opt_a, a, out_a) in enumerate(named):
        for opt_b, b, out_b in named[i + 1 :]:
            if not (out_a or out_b):
                continue
            if a == "-" or b == "-":
                other = b if a == "-" else a
                if other != "-" and _stdout_is(other):
                    raise UsageError(f"{opt_a} and {opt_b} are the same file ({other}, on stdout)")
                if other == "-" and out_a and out_b:
                    raise UsageError(f"{opt_a} and {opt_b} are both stdout")
                continue
            if _same_file(a, b):
                raise UsageError(f"{opt_a} {a} and {opt_b} {b} are the same file")


_CAPTURE_SUFFIXES = (".pcap", ".pcapng", ".cap", ".dmp", ".ntar")


# --------------------------------------------------------------------------- live status


class _Status:
    """A one-line live status on stderr, redrawn at most 4 times a second (terminals only)."""

    def __init__(self, enabled: bool) -> None:
        self.enabled = enabled
        self._next = 0.0
        self._width = 0

    def show(self, text: str, *, force: bool = False) -> None:
        if not self.enabled:
            return
        now = time.monotonic()
        if not force and now < self._next:
            return
        self._next = now + 0.25
        pad = max(0, self._width - len(text))
        self._width = len(text)
        self._put("\r" + text + " " * pad)

    def clear(self) -> None:
        if self.enabled and self._width:
            self._put("\r" + " " * self._width + "\r")
            self._width = 0

    def _put(self, text: str) -> None:
        try:
            sys.stderr.write(text)
            sys.stderr.flush()
        except (OSError, ValueError):  # the terminal hung up (SIGHUP's usual cause)
            self.enabled = False
            _silence(2)


def _rate_text(count: int, seconds: float) -> str:
    rate = count / seconds if seconds > 0 else 0.0
    if rate >= 1e6:
        return f"{rate / 1e6:.2f}M msg/s"
    if rate >= 1e3:
        return f"{rate / 1e3:.1f}k msg/s"
    return f"{rate:.0f} msg/s"


#: The signals that end a command as Ctrl-C does: flush, summary, exit 130. One that is
#: ignored when the command starts (``nohup``, a background job) stays ignored.
STOP_SIGNALS = tuple(
    getattr(signal, name) for name in ("SIGINT", "SIGTERM", "SIGHUP") if hasattr(signal, name)
)


def _catch_signals(handler: Any) -> list[tuple[int, Any]]:
    """Install ``handler`` for every stop signal not ignored; the handlers it replaced
    (none outside the main thread, where Python cannot set handlers)."""

    if threading.current_thread() is not threading.main_thread():
        return []
    previous = []
    for signum in STOP_SIGNALS:
        if signal.getsignal(signum) is not signal.SIG_IGN:
            previous.append((signum, signal.signal(signum, handler)))
    return previous


class _StopFlag:
    """SIGINT (Ctrl-C), SIGTERM and SIGHUP set a flag instead of raising, so a command stops
    between two messages, never in the middle of writing one (main thread only)."""

    def __init__(self) -> None:
        self.set = False
        self.signum: int | None = None
        self._previous: list[tuple[int, Any]] = []

    def _handler(self, signum: int, frame: object) -> None:
        self.set = True
        if self.signum is None:
            self.signum = signum

    def __enter__(self) -> _StopFlag:
        self._previous = _catch_signals(self._handler)
        return self

    def __exit__(self, *exc: object) -> None:
        for signum, handler in self._previous:
            signal.signal(signum, handler)
        self._previous.clear()


_named = named_error  # every output error names the output

