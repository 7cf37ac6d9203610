"""``python -m moldudp64``: the moldudp64 command."""

from __future__ import annotations

import sys

from .cli import main

if __name__ == "__main__":
    sys.exit(main())
