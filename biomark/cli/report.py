"""``biomark report``: are the learned features biomarkers or shortcuts? One HTML page per run.

Module-level imports are standard library only; the work is imported in :func:`run`.

Outputs (``<reports>/<run name>/``): ``index.html`` (self-contained),
``candidates.csv``, ``additivity.csv``, ``blackout.csv``, ``lung_swap.csv``, ``source_audit.csv``,
``unpicked.csv`` (classes without a pick, and why) and, on the phantom, ``ground_truth.csv``.
"""

from __future__ import annotations

import argparse
import logging
import sys

from biomark.cli.run_folder import add_run_argument, resolve_run

__all__ = ["add_parser", "run"]

logger = logging.getLogger(__name__)


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    """Register ``report`` on the top-level sub-parsers."""
    parser = subparsers.add_parser(
        "report",
        help=(
            "biomarker report of a run: attributions, statistics, stability, shortcut audit, "
            "candidates"
        ),
        description=(
            "Write reports/<run>/index.html and candidates.csv: the paper's classification tables, "
            "SHAP attributions of the head, where each feature fires in the image, per-feature "
            "statistics (image, patient, mixed model), fold stability, the shortcut audit (source, "
            "lungs, lung blackout, lung swap) and the candidate biomarkers; prints the top "
            "candidates."
        ),
    )
    add_run_argument(parser)
    parser.add_argument(
        "--reports", default="reports", metavar="DIR", help="reports folder (default: reports)"
    )
    parser.add_argument(
        "--strategies",
        metavar="LIST",
        help="comma-separated strategies (default: all of the run's)",
    )
    parser.add_argument(
        "--top-k",
        type=int,
        default=20,
        metavar="N",
        help="features shortlisted per class, and k of the top-k stability (default 20)",
    )
    parser.add_argument(
        "--shap-samples",
        type=int,
        default=64,
        metavar="N",
        help="test images explained per fold, a class-stratified subset when a fold has more "
        "(default 64)",
    )
    parser.add_argument(
        "--no-blackout",
        action="store_true",
        help="skip the image-level controls: the lung blackout and the lung swap",
    )
    parser.add_argument(
        "--seed", type=int, default=0, help="seed of every sampling step (default 0)"
    )
    parser.add_argument(
        "--workers",
        type=int,
        metavar="N",
        help="processes analysing the strategies side by side (default: one per strategy on a "
        "machine with 2 or more cores; 1: one after another in this process); same verdicts",
    )
    parser.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    """Run ``biomark report``; returns the exit status."""
    from functools import partial

    from biomark.cli.logs import configure_logging
    from biomark.pipelines.report import run_report
    from biomark.report.grading_sections import truth_lines
    from biomark.report.report_text import strategy_summary
    from biomark.report.source_regions_page import region_sentence

    strategies = (
        tuple(s.strip() for s in args.strategies.split(",") if s.strip())
        if args.strategies
        else None
    )
    done = run_report(
        resolve_run(args.run),
        strategies=strategies,
        top_k=args.top_k,
        shap_samples=args.shap_samples,
        blackout=not args.no_blackout,
        seed=args.seed,
        reports=args.reports,
        workers=args.workers,
        # each worker process logs like this command
        setup=partial(
            configure_logging, args.verbose + getattr(args, "verbose_after", 0), args.quiet
        ),
    )
    data, top = done.data, done.top
    n = len(data.strategies)
    lines = [
        f"report {data.name}: {n} {'strategy' if n == 1 else 'strategies'} in {data.seconds:.0f} s"
    ]
    lines += [strategy_summary(rep) for rep in data.strategies.values()]
    if len(top):
        lines.append(
            f"top {len(top)} rows of the candidate table (candidates first, then the best-ranked "
            f"shortlisted features; every row in {done.paths['candidates']}):"
        )
        shown = top.assign(
            is_candidate=top["is_candidate"].astype(object).where(top["is_candidate"].notna(), "?"),
            flags=top["flags"].astype(str).str.slice(0, 50),
        )
        lines.append(shown.to_string(index=False, float_format=lambda v: f"{v:.3g}"))
    else:
        lines.append("no feature shortlisted")
    for label, rep in data.strategies.items():
        if rep.lung_swap_reading is not None:
            lines.append(f"lung swap, {label}: {rep.lung_swap_reading.summary}")
    lines += truth_lines(data.truth)
    in_images = region_sentence(data.source_regions)
    if in_images:
        lines.append(f"source in the images: {in_images}")
    for item in data.missing:
        lines.append(f"missing: {item['section']} ({item['reason']}); run `{item['command']}`")
    lines.append(f"  wrote {done.paths['candidates']}")
    lines.append(f"  wrote {done.paths['index']}")
    print("\n".join(lines), file=sys.stdout)
    return 0
