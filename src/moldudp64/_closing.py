"""A base for objects that are used in ``with`` blocks and end in ``close()``."""

from __future__ import annotations

from typing import Self


class Closing:
    """``with obj:`` returns ``obj`` and calls ``obj.close()`` on the way out."""

    def close(self) -> None:
        """Release what the object holds."""
        raise NotImplementedError

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
