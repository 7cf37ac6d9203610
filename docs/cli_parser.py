"""The command's own argument parser, as the reference page renders it.

The parser is the one ``moldudp64`` runs (:func:`moldudp64.cli.build_parser`); only each
epilog (examples and exit codes, laid out for a terminal) is turned into a literal block,
so that it reads on the page exactly as ``--help`` prints it.
"""

from __future__ import annotations

import argparse
import textwrap

from moldudp64.cli.parser import build_parser


def _epilogs_as_literal_blocks(parser: argparse.ArgumentParser) -> None:
    if parser.epilog:
        parser.epilog = "::\n\n" + textwrap.indent(parser.epilog.rstrip("\n"), "    ")
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for sub in action.choices.values():
                _epilogs_as_literal_blocks(sub)


def parser() -> argparse.ArgumentParser:
    """The ``moldudp64`` parser, epilogs as literal blocks."""
    p = build_parser()
    _epilogs_as_literal_blocks(p)
    return p
