"""The ``biomark`` command line.

Each subcommand lives in its own module exposing ``add_parser(subparsers)``
and ``run(args) -> int``. Those modules import only the standard library at
import time, so ``biomark --help`` (and every subcommand's ``--help``) never
imports TensorFlow or other heavy dependencies; the work is imported inside
``run``.
"""

from __future__ import annotations

import argparse
import os
import sys
import traceback
from collections.abc import Sequence
from types import ModuleType

from biomark import __version__
from biomark.allocator import keep_freed_memory
from biomark.cli.logs import configure_logging
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
    _add_verbosity(parser, default=True)
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND")
    for module in _commands().values():
        module.add_parser(subparsers)
    for sub in _subcommand_parsers(parser):
        _add_verbosity(sub, default=False)
    return parser


def _add_verbosity(parser: argparse.ArgumentParser, *, default: bool) -> None:
    """``-v``/``-q`` on ``parser``: with defaults on the top level, without on subcommands.

    argparse parses a subcommand's options into a fresh namespace and copies
    every key over the top-level one, so a subcommand's defaults would
    overwrite ``biomark -q compare``'s ``-q``. Subcommands therefore leave
    the options out of the namespace unless given (``argparse.SUPPRESS``), and
    count ``-v`` under their own name, so ``biomark -v compare -v`` is ``-vv``.
    """
    group = parser.add_argument_group("output")
    group.add_argument(
        "-v",
        "--verbose",
        action="count",
        dest="verbose" if default else "verbose_after",
        default=0 if default else argparse.SUPPRESS,
        help="more log output (-vv: debug); before or after the command",
    )
    group.add_argument(
        "-q",
        "--quiet",
        action="store_true",
        default=False if default else argparse.SUPPRESS,
        help="no progress bars, warnings only; before or after the command",
    )


def _subcommand_parsers(parser: argparse.ArgumentParser) -> list[argparse.ArgumentParser]:
    """Every subcommand's parser below ``parser`` (``compare``, ``data``, ``data build``, ...)."""
    found = []
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for sub in dict.fromkeys(action.choices.values()):  # aliases map to the same parser
                found.append(sub)
                found.extend(_subcommand_parsers(sub))
    return found


def main(argv: Sequence[str] | None = None) -> int:
    """Run the ``biomark`` command; returns the process exit status."""
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "command", None):
        parser.print_help()
        return 2
    configure_logging(args.verbose + getattr(args, "verbose_after", 0), args.quiet)
    keep_freed_memory()  # before TensorFlow allocates, or it has no effect
    try:
        return int(args.handler(args) or 0)
    except BiomarkError as err:
        print(f"biomark {args.command}: error: {err}", file=sys.stderr)
        return 1
    except OSError as err:
        # A full disk or a read-only folder that a writer did not name itself.
        named = _named_os_error(err)
        if named is None:
            if not err.filename:
                raise
            # A file the command could not open or create, named by the OS: say which and why,
            # and keep the traceback for -v.
            if args.verbose + getattr(args, "verbose_after", 0):
                traceback.print_exception(err, file=sys.stderr)
            named = BiomarkError(
                f"{err.filename}: {err.strerror or type(err).__name__}; check the path (an "
                "existing folder you can write, or a file you can read) and re-run (-v shows "
                "where it happened)"
            )
        print(f"biomark {args.command}: error: {named}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print(
            f"biomark {args.command}: interrupted; finished work is kept, re-run to resume",
            file=sys.stderr,
        )
        return 130


def _named_os_error(err: OSError) -> BiomarkError | None:
    from biomark.io.disk import translate_os_error

    return translate_os_error(err, err.filename or os.getcwd())


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
