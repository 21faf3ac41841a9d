"""The ``biomark`` command line.

Each subcommand lives in its own module exposing ``add_parser(subparsers)``
and ``run(args) -> int``. Those modules import only the standard library at
import time, so ``biomark --help`` (and every subcommand's ``--help``) never
imports TensorFlow or other heavy dependencies; the work is imported inside
``run``.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
from types import ModuleType
from typing import Sequence

from biomark import __version__
from biomark.exceptions import BiomarkError

__all__ = ["main", "build_parser"]


def _commands() -> dict[str, ModuleType]:
    from biomark.cli import compare, data, extract, radiomics, report

    return {
        "data": data,
        "extract": extract,
        "compare": compare,
        "radiomics": radiomics,
        "report": report,
    }


def build_parser() -> argparse.ArgumentParser:
    """The top-level parser with one sub-parser per command."""
    parser = argparse.ArgumentParser(
        prog="biomark",
        description=(
            "Do the features a CNN learns from chest X-rays behave like biomarkers, "
            "or like shortcuts? Build datasets, train MobileNetV2 three ways under "
            "cross-validation, compare representations, relate them to radiomics, "
            "and write HTML reports."
        ),
    )
    parser.add_argument("--version", action="version", version=f"biomark {__version__}")
    parser.add_argument("-v", "--verbose", action="count", default=0, help="more log output (-vv: debug)")
    parser.add_argument("-q", "--quiet", action="store_true", help="no progress bars, warnings only")
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND")
    for module in _commands().values():
        module.add_parser(subparsers)
    return parser


def _configure_logging(verbose: int, quiet: bool) -> None:
    level = logging.WARNING if quiet else (logging.DEBUG if verbose >= 2 else logging.INFO)
    logging.basicConfig(
        level=level,
        format="%(asctime)s %(levelname)-7s %(name)s: %(message)s",
        datefmt="%H:%M:%S",
        stream=sys.stderr,
    )
    if quiet:
        os.environ["BIOMARK_PROGRESS"] = "0"
    # Quieten chatty third-party loggers unless debugging.
    if verbose < 2:
        for name in ("tensorflow", "absl", "numba", "PIL", "matplotlib", "radiomics", "h5py", "distributed"):
            logging.getLogger(name).setLevel(logging.WARNING)


def main(argv: Sequence[str] | None = None) -> int:
    """Run the ``biomark`` command; returns the process exit status."""
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "command", None):
        parser.print_help()
        return 2
    _configure_logging(args.verbose, args.quiet)
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    try:
        return int(args.handler(args) or 0)
    except BiomarkError as err:
        print(f"biomark {args.command}: error: {err}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print(f"biomark {args.command}: interrupted; finished work is kept, re-run to resume", file=sys.stderr)
        return 130


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
