"""``biomark extract``: train MobileNetV2 per strategy under cross-validation, dump features.

Module-level imports are standard library only (``biomark extract --help``
imports no Keras); the work is imported in :func:`run`.
"""

from __future__ import annotations

import argparse
import logging
from pathlib import Path

__all__ = ["add_parser", "run"]

logger = logging.getLogger(__name__)


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    """Register ``extract`` on the top-level sub-parsers."""
    parser = subparsers.add_parser(
        "extract",
        help="train every strategy under k-fold cross-validation and dump GAP features",
        description=(
            "Train MobileNetV2 for every strategy of the plan (scratch, frozen, finetune:N) on "
            "every cross-validation fold, and write per fold the model, its history, the "
            "out-of-fold GAP features (features.parquet) and metrics; then per strategy the pooled "
            "metrics and confusion matrices, and a one-page summary.md like the paper's Tables "
            "1/4/5. Finished folds are skipped, so re-running resumes an interrupted run."
        ),
        epilog=(
            "examples:\n"
            "  biomark extract --plan analyses/quick.yaml --out /tmp/runs\n"
            "  biomark extract --plan analyses/apostolopoulos2020.yaml --data data/cxr --dry-run\n"
            "  biomark extract --plan analyses/apostolopoulos2020.yaml --data data/cxr "
            "--strategies scratch,frozen\n  biomark extract --plan analyses/quick.yaml --out "
            "/shared/runs --scheduler tcp://10.0.0.5:8786\n  biomark extract --plan "
            "analyses/apostolopoulos2020.yaml --data s3://lab/cxr --out s3://lab/runs --scheduler "
            "tcp://10.0.0.5:8786\n\n"
            "--data and --out may be fsspec URLs (s3://, gs://, az://, ftp://, ...; the protocol's "
            "package,\ne.g. s3fs, installed here and on every worker): the dataset is copied to "
            "each machine's\ncache (~/.cache/biomark or $BIOMARK_CACHE_DIR), folds are uploaded as "
            "they finish, and the\nlocal copy of the run folder printed at the end is what "
            "compare/report read."
        ),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument(
        "--plan", required=True, type=Path, metavar="PATH", help="analysis plan (YAML)"
    )
    parser.add_argument("--data", metavar="DIR", help="dataset folder or URL (overrides data.dir)")
    parser.add_argument(
        "--out", metavar="DIR", help="output folder or URL for runs (overrides output_dir)"
    )
    parser.add_argument(
        "--strategies",
        metavar="LIST",
        help="comma-separated subset of the plan's strategies, e.g. scratch,finetune:3",
    )
    parser.add_argument(
        "--epochs", type=int, metavar="N", help="maximum epochs (overrides training.epochs)"
    )
    parser.add_argument("--folds", type=int, metavar="K", help="number of folds (overrides cv.k)")
    parser.add_argument(
        "--force",
        action="store_true",
        help="redo finished folds (and start over if the data changed)",
    )
    parser.add_argument(
        "--dry-run",
        action="store_true",
        help="check the plan and data, list the jobs, train nothing",
    )
    parser.add_argument(
        "--scheduler",
        metavar="ADDRESS",
        help="run the jobs on a Dask cluster: tcp://HOST:PORT of a running `dask scheduler`, or "
        "local:N for a local cluster of N worker processes (needs `pip install "
        "biomark[distributed]`; the run and dataset folders must be visible to every worker at the "
        "same path, or be URLs)",
    )
    parser.set_defaults(handler=run)


def _strategies(text: str | None) -> list[str] | None:
    if text is None:
        return None
    items = [s.strip() for s in text.split(",") if s.strip()]
    return items or None


def _print_dry_run(args: argparse.Namespace, setup) -> None:  # noqa: ANN001 - RunSetup, imported lazily
    print(f"plan {args.plan}: run {setup.plan.name} -> {setup.run_dir}")
    print(f"dataset: {setup.dataset_dir}")
    if setup.dataset is not None and setup.folds is not None:
        counts = setup.dataset.manifest["label"].value_counts()
        print(
            f"  {len(setup.dataset)} images, {len(setup.dataset.classes)} classes: "
            + ", ".join(f"{c} {int(counts.get(c, 0))}" for c in setup.dataset.classes)
        )
        sizes = setup.folds["fold"].value_counts().sort_index().tolist()
        print(
            f"  {setup.plan.cv.k} folds ({setup.plan.cv.grouping} grouping), test images per fold: "
            f"{sizes}"
        )
    for note in setup.notes:
        print(f"  note: {note}")
    todo = [job for job in setup.jobs if not job.done]
    print(f"jobs: {len(setup.jobs)} ({len(setup.jobs) - len(todo)} finished, {len(todo)} to run)")
    for job in setup.jobs:
        print(f"  {'done' if job.done else 'todo'}  {job.name}")
    print("dry run: nothing was trained or written")


def run(args: argparse.Namespace) -> int:
    """Run ``biomark extract``; returns the exit status."""
    from biomark.config import load_plan

    overrides = {
        "data.dir": args.data,
        "output_dir": args.out,
        "training.epochs": args.epochs,
        "cv.k": args.folds,
    }
    plan = load_plan(args.plan, overrides)
    strategies = _strategies(args.strategies)
    if args.dry_run:
        from biomark.pipelines.extract import plan_run

        _print_dry_run(args, plan_run(plan, strategies=strategies, force=args.force))
        return 0

    from biomark.features.run_folder import RunFolder
    from biomark.features.run_summary import markdown_table, results_table
    from biomark.io.remote import is_url, redact
    from biomark.pipelines.executor import executor_for
    from biomark.pipelines.extract import run_extract

    run_dir = run_extract(
        plan, force=args.force, strategies=strategies, executor=executor_for(args.scheduler or None)
    )
    if is_url(plan.output_dir):
        print(f"run folder URL: {redact(plan.output_dir.rstrip('/') + '/' + plan.name)}")
    run = RunFolder(run_dir)
    table = results_table(run)
    print(f"run folder: {run_dir}")
    if len(table):
        print(markdown_table(table))
    print(f"summary: {run.summary_md}")
    return 0
