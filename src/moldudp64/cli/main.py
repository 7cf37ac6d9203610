"""Entry point: parse, run the command, turn every error into an exit code."""

from __future__ import annotations

import errno
import io
import logging
import os
import signal
import sys
from collections.abc import Sequence
from typing import Any

from ..exceptions import MoldUDP64Error
from .common import (
    EXIT_BROKEN_PIPE,
    EXIT_FAILURE,
    EXIT_INTERRUPTED,
    EXIT_USAGE,
    _catch_signals,
    _say,
    _silence,
)
from .parser import build_parser

logger = logging.getLogger("moldudp64.cli")

# --------------------------------------------------------------------------- main


def _setup_logging(verbosity: int) -> None:
    logging.basicConfig(
        level=logging.DEBUG if verbosity else logging.WARNING,
        format="moldudp64: %(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )
    logging.raiseExceptions = False  # a closed or broken stderr never stops a command
    if not verbosity:
        # The commands report loss themselves (summary, lost ranges); the client's
        # per-range warnings would say it twice.
        logging.getLogger("moldudp64.sync.client").setLevel(logging.ERROR)


class _Interrupted(KeyboardInterrupt):
    """A stop signal, raised in the main thread like Ctrl-C's KeyboardInterrupt."""

    def __init__(self, signum: int) -> None:
        super().__init__(signal.Signals(signum).name)
        self.signum = signum


def _interrupt(signum: int, frame: object) -> None:
    raise _Interrupted(signum)


def _sigterm_as_interrupt() -> list[tuple[int, Any]]:
    """Let SIGTERM and SIGHUP end a command the way Ctrl-C does (flush, summary, exit 130)
    unless they are ignored (``nohup``); return the handlers replaced."""
    return _catch_signals(_interrupt)


class _ClosedStdout(io.TextIOBase):
    """sys.stdout when the command starts with fd 1 closed (``>&-``): any write fails at
    once with a clear error (exit 2) instead of an AttributeError on None."""

    class _Raw(io.RawIOBase):
        def writable(self) -> bool:
            return True

        def write(self, data: Any) -> int:
            raise _ClosedStdout.error()

    def __init__(self) -> None:
        super().__init__()
        self.buffer = self._Raw()

    @staticmethod
    def error() -> OSError:
        return OSError(errno.EBADF, "closed, nothing can be written to it", "stdout")

    def writable(self) -> bool:
        return True

    def write(self, text: str) -> int:
        raise self.error()


def _fill_closed_std_fds() -> None:
    """A closed fd 0, 1 or 2 gets /dev/null, so no file opened later takes its number (and
    gets a stray print); a closed stdout then refuses writes, a closed stderr drops them."""
    for fd in (0, 1, 2):
        try:
            os.fstat(fd)
        except OSError:
            try:
                placeholder = os.open(os.devnull, os.O_WRONLY if fd == 2 else os.O_RDONLY)
            except OSError:
                continue
            if placeholder != fd:
                os.dup2(placeholder, fd)
                os.close(placeholder)
            if fd == 1:
                sys.stdout = _ClosedStdout()
            elif fd == 2:
                sys.stderr = open(2, "w", closefd=False)  # noqa: SIM115
    if sys.stdout is None:
        sys.stdout = _ClosedStdout()
    if sys.stderr is None:
        sys.stderr = open(os.devnull, "w")  # noqa: SIM115


def _flush_stdout_quietly() -> None:
    """At the very end: whatever stdout still holds, without an "Exception ignored" later."""
    try:
        sys.stdout.flush()
    except (OSError, ValueError):
        _silence(1)


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command; return its exit code."""
    _fill_closed_std_fds()
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit:  # --help, --version, a usage error
        _flush_stdout_quietly()
        raise
    _setup_logging(getattr(args, "verbose", 0))
    prog = f"moldudp64 {args.command}"
    previous = _sigterm_as_interrupt()
    try:
        code = int(args.func(args))
        sys.stdout.flush()  # a write error of the last output is the command's error too
        return code
    except KeyboardInterrupt as exc:
        how = f" by {exc.args[0]}" if isinstance(exc, _Interrupted) else ""
        _say(f"{prog}: interrupted{how}")
        return EXIT_INTERRUPTED
    except BrokenPipeError:
        # The reader of the output went away (| head): stop quietly, as SIGPIPE would.
        _silence(1)
        return EXIT_BROKEN_PIPE
    except (MoldUDP64Error, OSError, UnicodeError) as exc:
        if getattr(args, "verbose", 0):
            logger.debug("error details", exc_info=True)
        text = str(exc) or type(exc).__name__
        if isinstance(exc, OSError) and not isinstance(exc, MoldUDP64Error):
            text = f"{exc.filename + ': ' if exc.filename else ''}{exc.strerror or exc}"
        _say(f"{prog}: error: {text}")
        return EXIT_USAGE
    except Exception as exc:  # a bug: still one line, the traceback with -v
        logger.debug("internal error", exc_info=True)
        _say(f"{prog}: internal error: {type(exc).__name__}: {exc} (-v shows the traceback)")
        return EXIT_FAILURE
    finally:
        for signum, handler in previous:
            signal.signal(signum, handler)
        _flush_stdout_quietly()


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
