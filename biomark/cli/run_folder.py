"""The run folder ``compare``, ``report`` and ``radiomics`` read: ``--run``, or the only run under
``runs/``.

Module-level imports are standard library only (the CLI's ``--help`` stays instant).
"""

from __future__ import annotations

import argparse
import logging
from pathlib import Path

from biomark.exceptions import ConfigError

__all__ = ["RUNS_DIR", "add_run_argument", "resolve_run"]

logger = logging.getLogger(__name__)

#: Where plans write their runs unless they set ``output_dir`` (:class:`biomark.config.Plan`).
RUNS_DIR = Path("runs")


def add_run_argument(parser: argparse.ArgumentParser) -> None:
    """Add ``--run``, optional when the current folder holds exactly one run under ``runs/``."""
    parser.add_argument(
        "--run",
        metavar="RUN_DIR",
        help=f"run folder written by `biomark extract` (default: the only run under {RUNS_DIR}/)",
    )


def resolve_run(given: str | None, runs_dir: Path = RUNS_DIR) -> str:
    """The run folder to read: ``given``, else the only folder with a ``run.json`` in ``runs_dir``.

    Parameters
    ----------
    given : str or None
        ``--run`` as typed (a path or an fsspec URL), used as is.
    runs_dir : Path, default ``runs``
        Looked in (relative to the current folder) when ``given`` is None.

    Returns
    -------
    str

    Raises
    ------
    ConfigError
        When ``given`` is None and ``runs_dir`` holds no run, or several (named).
    """
    if given:
        return given
    found = sorted(path.parent for path in runs_dir.glob("*/run.json"))
    if len(found) == 1:
        logger.info("--run not given: reading %s, the only run under %s/", found[0], runs_dir)
        return str(found[0])
    if not found:
        raise ConfigError(
            f"--run not given, and {runs_dir}/ here holds no run (a folder with run.json); give "
            "--run RUN_DIR, or make one with `biomark extract --plan PLAN`"
        )
    names = ", ".join(str(path) for path in found)
    raise ConfigError(
        f"--run not given, and {runs_dir}/ holds {len(found)} runs ({names}); choose one, e.g. "
        f"--run {found[0]}"
    )
