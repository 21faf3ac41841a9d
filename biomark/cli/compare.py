"""``biomark compare``: CKA, UMAP and probes of two strategies of a run.

Module-level imports are standard library only; the work is imported in :func:`run`.
"""

from __future__ import annotations

import argparse
import logging
import sys

from biomark.cli.run_folder import add_run_argument, resolve_run

__all__ = ["add_parser", "run"]

logger = logging.getLogger(__name__)


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    """Register ``compare`` on the top-level sub-parsers."""
    parser = subparsers.add_parser(
        "compare",
        help="compare the representations two strategies learnt (CKA, UMAP, probes)",
        description=(
            "Do two learning strategies mine the same features? Computes debiased CKA between "
            "their out-of-fold features on every test fold (permutation p-value, bootstrap "
            "interval), the block-by-block CKA matrix when blocks were dumped, UMAP maps, kNN "
            "purity and linear probes, and writes reports/<run>/compare_<a>_vs_<b>.html and .csv."
        ),
    )
    add_run_argument(parser)
    parser.add_argument("--a", metavar="STRATEGY", help="first strategy, e.g. scratch")
    parser.add_argument(
        "--b", metavar="STRATEGY", help="second strategy, e.g. frozen or finetune:11"
    )
    parser.add_argument(
        "--all", action="store_true", help="compare every pair of strategies in the run"
    )
    parser.add_argument(
        "--plan", metavar="PLAN", help="take compare settings from this plan (default: the run's)"
    )
    parser.add_argument(
        "--reports", default="reports", metavar="DIR", help="reports folder (default: reports)"
    )
    parser.add_argument(
        "--permutations", type=int, metavar="N", help="permutations of the test (0: none)"
    )
    parser.add_argument(
        "--bootstrap", type=int, metavar="N", help="bootstrap resamples (0: no intervals)"
    )
    parser.add_argument("--no-umap", action="store_true", help="skip the UMAP maps (faster)")
    parser.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    """Run ``biomark compare``; returns the exit status."""
    from biomark.pipelines.compare import run_compare
    from biomark.report.compare_page import format_p

    pairs = run_compare(
        resolve_run(args.run),
        a=args.a,
        b=args.b,
        all_pairs=args.all,
        plan=args.plan,
        reports=args.reports,
        permutations=args.permutations,
        bootstrap=args.bootstrap,
        umap=not args.no_umap,
    )
    lines = []
    for pair in pairs:
        result, sim = pair.result, pair.result.headline
        ci = f"[{sim.mean_ci[0]:.3f}, {sim.mean_ci[1]:.3f}]" if sim.n_bootstrap else "[no CI]"
        lines.append(
            f"{result.a} vs {result.b}: debiased linear CKA {sim.mean:.3f} {ci}, "
            f"{format_p(sim.p_value, sim.n_permutations)} ({len(sim.folds)} folds, "
            f"{result.n_images} images)\n  wrote {pair.html}\n  wrote {pair.csv}"
        )
    print("\n".join(lines), file=sys.stdout)
    return 0
