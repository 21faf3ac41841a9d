"""``biomark compare``: CKA, UMAP and probes of two strategies of a run.

Module-level imports are standard library only; the work is imported in :func:`run`.
"""

from __future__ import annotations

import argparse
import itertools
import logging
import sys
from pathlib import Path

__all__ = ["add_parser", "run"]

logger = logging.getLogger(__name__)


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    """Register ``compare`` on the top-level sub-parsers."""
    parser = subparsers.add_parser(
        "compare",
        help="compare the representations two strategies learnt (CKA, UMAP, probes)",
        description=(
            "Do two learning strategies mine the same features? Computes debiased CKA between their "
            "out-of-fold features on every test fold (permutation p-value, bootstrap interval), the "
            "block-by-block CKA matrix when blocks were dumped, UMAP maps, kNN purity and linear probes, "
            "and writes reports/<run>/compare_<a>_vs_<b>.html and .csv."
        ),
    )
    parser.add_argument("--run", required=True, metavar="RUN_DIR", help="run folder written by `biomark extract`")
    parser.add_argument("--a", metavar="STRATEGY", help="first strategy, e.g. scratch")
    parser.add_argument("--b", metavar="STRATEGY", help="second strategy, e.g. frozen or finetune:11")
    parser.add_argument("--all", action="store_true", help="compare every pair of strategies in the run")
    parser.add_argument("--plan", metavar="PLAN", help="take compare settings from this plan (default: the run's)")
    parser.add_argument("--reports", default="reports", metavar="DIR", help="reports folder (default: reports)")
    parser.add_argument("--permutations", type=int, metavar="N", help="permutations of the test (0: none)")
    parser.add_argument("--bootstrap", type=int, metavar="N", help="bootstrap resamples (0: no intervals)")
    parser.add_argument("--no-umap", action="store_true", help="skip the UMAP maps (faster)")
    parser.set_defaults(handler=run)


def _settings(args: argparse.Namespace, run_info):  # noqa: ANN001, ANN202 - types imported lazily
    """CompareSettings from --plan, else the run's plan, with the flags applied through plan validation."""
    from biomark.config import Plan, apply_overrides, load_plan

    overrides = {"compare.n_permutations": args.permutations, "compare.n_bootstrap": args.bootstrap}
    if args.plan:
        return load_plan(args.plan, overrides).compare
    return apply_overrides(Plan(compare=run_info.compare_settings()), overrides).compare


def run(args: argparse.Namespace) -> int:
    """Run ``biomark compare``; returns the exit status."""
    from biomark.analysis.compare import compare_strategies, read_run, resolve_strategy
    from biomark.exceptions import ConfigError
    from biomark.report.compare_page import format_p, write_compare_report

    run_info = read_run(args.run)
    if args.all:
        if args.a or args.b:
            raise ConfigError("give either --all or --a/--b, not both")
        if len(run_info.strategies) < 2:
            raise ConfigError(f"run {args.run} has {len(run_info.strategies)} strategy; --all needs at least 2")
        pairs = list(itertools.combinations(run_info.strategies, 2))
    else:
        if not (args.a and args.b):
            raise ConfigError(
                "give two strategies with --a and --b (e.g. --a scratch --b frozen), or --all; strategies in "
                f"{args.run}: {', '.join(run_info.strategies) or 'none'}"
            )
        pairs = [(resolve_strategy(run_info, args.a), resolve_strategy(run_info, args.b))]
    for flag in ("permutations", "bootstrap"):
        value = getattr(args, flag)
        if value is not None and value < 0:
            raise ConfigError(f"--{flag}={value}: must be 0 or more")
    settings = _settings(args, run_info)
    lines = []
    for a, b in pairs:
        result = compare_strategies(args.run, a, b, settings, umap=not args.no_umap)
        html_path, csv_path = write_compare_report(result, Path(args.reports))
        sim = result.headline
        ci = f"[{sim.mean_ci[0]:.3f}, {sim.mean_ci[1]:.3f}]" if sim.n_bootstrap else "[no CI]"
        lines.append(
            f"{result.a} vs {result.b}: debiased linear CKA {sim.mean:.3f} {ci}, "
            f"{format_p(sim.p_value, sim.n_permutations)} ({len(sim.folds)} folds, {result.n_images} images)\n"
            f"  wrote {html_path}\n  wrote {csv_path}"
        )
    print("\n".join(lines), file=sys.stdout)
    return 0
