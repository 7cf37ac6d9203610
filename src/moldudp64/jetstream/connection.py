"""nats-py on first use, its errors as JetStreamError, and connecting."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

from ..exceptions import MissingDependency, MoldUDP64Error

if TYPE_CHECKING:
    from nats.aio.client import Client as NATS

_log = logging.getLogger(__name__)

_WRONG_LAST_SEQUENCE = 10071
_IN_PROCESS = 10158
_STREAM_FULL = 10077  # maximum messages/bytes exceeded (discard new): no outage, a limit
_STREAM_NOT_FOUND = 10059


class JetStreamError(MoldUDP64Error):
    """JetStream could not be reached or refused, or a stored record is damaged."""


def _nats() -> Any:
    try:
        import nats
        import nats.js.api
        import nats.js.errors
    except ImportError as exc:  # pragma: no cover - the test extra installs nats-py
        raise MissingDependency(
            "moldudp64.jetstream needs nats-py: pip install 'moldudp64[nats]'", extra="nats"
        ) from exc
    return nats


def _transient() -> tuple[type[Exception], ...]:
    """nats errors worth waiting out: no answer, no stream leader yet, reconnecting."""
    errors = _nats().errors
    return (
        errors.TimeoutError,
        errors.NoRespondersError,
        errors.OutboundBufferLimitError,
        errors.StaleConnectionError,
        errors.ConnectionReconnectingError,
        _nats().js.errors.ServiceUnavailableError,
        _nats().js.errors.NoStreamResponseError,
    )


@contextlib.contextmanager
def jetstream_errors(what: str) -> Iterator[None]:
    """Turn nats-py's errors inside the block into :class:`JetStreamError` naming ``what``."""
    nats = _nats()
    try:
        yield
    except nats.errors.Error as exc:
        raise JetStreamError(f"{what}: {exc!r}") from exc


async def _log_error(exc: Exception) -> None:
    _log.debug("NATS: %s", exc)


async def connect(servers: str | list[str], **options: Any) -> NATS:
    """Connect to NATS (``nats://HOST:PORT``, one or several); errors become JetStreamError.

    ``options`` go to ``nats.connect``; connection errors are logged, not printed.
    """
    nats = _nats()
    options.setdefault("error_cb", _log_error)
    options.setdefault("connect_timeout", 2.0)
    # The first connection tries each server a few times; reconnects later keep trying
    # for reconnect_attempts x reconnect_time_wait (default 60 x 2 s).
    reconnect_attempts = options.pop("max_reconnect_attempts", 60)
    options.setdefault("reconnect_time_wait", 2.0)
    try:
        nc = await nats.connect(
            servers, max_reconnect_attempts=min(reconnect_attempts, 2), **options
        )
    except Exception as exc:
        raise JetStreamError(f"cannot connect to NATS {servers}: {exc}") from exc
    nc.options["max_reconnect_attempts"] = reconnect_attempts
    return nc  # type: ignore[no-any-return]


async def _cancel_the_rest() -> None:
    """Cancel and await the loop's other tasks (nats-py's readers left after close), so a
    private loop closes with nothing pending."""
    tasks = [t for t in asyncio.all_tasks() if t is not asyncio.current_task()]
    for task in tasks:
        task.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)
