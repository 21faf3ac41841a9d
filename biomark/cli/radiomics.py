"""``biomark radiomics``: pyradiomics features of a dataset, related to a run's deep features.

Module-level imports are standard library only (``biomark radiomics --help``
imports neither pyradiomics, SimpleITK nor TensorFlow); the work is imported
in :func:`run`.

Outputs
    ``DATA_DIR/radiomics/<params-stem>_<region>/``: ``features.parquet``,
    ``failures.csv``, ``radiomics.json``, ``masks.npy`` + ``masks.csv`` +
    ``gallery/``, ``controls/<variant>/features.parquet`` and ``cache/``;
    the page ``<reports>/<run name>/radiomics.html`` (with ``--run``; without
    it ``<reports>/<dataset folder name>/radiomics.html``) with its tables as
    ``radiomics_*.csv`` beside it.
"""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path

from biomark.cli.run_folder import RUNS_DIR, resolve_run
from biomark.exceptions import ConfigError

__all__ = ["add_parser", "run"]

logger = logging.getLogger(__name__)


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    """Register ``radiomics`` on the top-level sub-parsers."""
    parser = subparsers.add_parser(
        "radiomics",
        help="pyradiomics features of every image, and their association with deep features",
        description=(
            "Compute pyradiomics features (2-D, inside the lungs or the whole image) on the cached "
            "images the CNN saw, in parallel and cached per image; with --run, correlate them with "
            "every strategy's out-of-fold deep features (Spearman + FDR, partial, CCA, negative "
            "controls) and write reports/<run>/radiomics.html."
        ),
    )
    parser.add_argument(
        "--data",
        metavar="DATA_DIR",
        help="dataset folder (biomark data build/phantom), or its fsspec URL (default: the dataset "
        "the run trained on, as its run.json records it; with neither --data nor --run, the only "
        f"run under {RUNS_DIR}/)",
    )
    parser.add_argument(
        "--params",
        metavar="YAML",
        default=None,
        help="pyradiomics parameter file (default: analyses/radiomics_cxr2d.yaml)",
    )
    parser.add_argument(
        "--jobs",
        type=int,
        default=-1,
        metavar="N",
        help="worker processes (-1: all cores; default -1)",
    )
    parser.add_argument(
        "--region",
        choices=("lung", "image", "zones"),
        default="lung",
        help="where to compute features: lung mask, whole image, or lung plus each lung zone "
        "(upper/middle/lower, central/peripheral; 6x the extraction time) (default lung)",
    )
    parser.add_argument(
        "--run",
        metavar="RUN_DIR",
        help="run folder: also relate its deep features to radiomics (with --data alone, none)",
    )
    parser.add_argument(
        "--reports", default="reports", metavar="DIR", help="reports folder (default: reports)"
    )
    parser.add_argument(
        "--controls",
        dest="controls",
        action="store_true",
        default=None,
        help="also extract the negative controls (default: on with --run)",
    )
    parser.add_argument(
        "--no-controls", dest="controls", action="store_false", help="skip the negative controls"
    )
    parser.add_argument(
        "--seed", type=int, default=0, help="seed of the shuffled control (default 0)"
    )
    parser.add_argument(
        "--scheduler",
        metavar="ADDRESS",
        help="extract image batches on a Dask cluster: tcp://HOST:PORT or local:N (replaces "
        "--jobs; needs `pip install biomark[distributed]`; DATA_DIR must be visible to every "
        "worker at the same path, or be an fsspec URL such as s3://bucket/cxr)",
    )
    parser.set_defaults(handler=run)


def _default_params() -> Path:
    here = Path("analyses/radiomics_cxr2d.yaml")
    if here.is_file():
        return here
    return Path(__file__).resolve().parents[2] / "analyses" / "radiomics_cxr2d.yaml"


def run(args: argparse.Namespace) -> int:
    """Run ``biomark radiomics``; returns the exit status."""
    from biomark.pipelines.executor import executor_for
    from biomark.pipelines.radiomics import run_dataset, run_radiomics_command

    data, run_dir = args.data, args.run
    # No --data: the run's own dataset, so `biomark radiomics` in the demo's folder needs no paths.
    if data is None:
        try:
            run_dir = resolve_run(run_dir)
        except ConfigError as err:
            raise ConfigError(
                f"{err}; or give --data DATA_DIR for a dataset's radiomics alone"
            ) from err
        data = run_dataset(run_dir)
        logger.info("--data not given: reading %s, the dataset %s was trained on", data, run_dir)
    done = run_radiomics_command(
        data,
        Path(args.params) if args.params else _default_params(),
        region=args.region,
        jobs=args.jobs,
        run_dir=run_dir,
        reports=args.reports,
        controls=args.controls,
        seed=args.seed,
        executor=executor_for(args.scheduler or None),
    )
    result, truth, analyses = done.result, done.truth, done.analyses
    counts = result.info["counts"]
    lines = [
        f"radiomics: {counts['extracted']}/{counts['images']} images, {counts['features']} "
        f"features ({counts['computed']} computed, {counts['from_cache']} from cache; "
        f"{counts['masks_flagged']} implausible mask(s) excluded; {counts['failure_rows']} failure "
        "row(s))",
        f"  wrote {result.out_dir / 'features.parquet'}",
        f"  wrote {result.out_dir / 'failures.csv'}",
        f"  wrote {result.out_dir / 'radiomics.json'}",
    ]
    if truth is not None:
        scored = truth.dropna(subset=["rho_within"])
        best = ", ".join(
            f"{r['class']}: {r['best_overall']} ({r['rho_overall']:+.2f})"
            for _, r in scored.iterrows()
        )
        lines.append(f"  phantom ground truth: {best or 'too few images per class'}")
    if analyses:
        from biomark.analysis.controls import ControlThresholds
        from biomark.report.radiomics_page import strategy_verdicts

        min_abs_rho = ControlThresholds().min_abs_rho  # what the verdicts count as associated
        for strategy, verdict in strategy_verdicts(analyses).items():
            a = analyses[strategy]
            lines.append(
                f"  {strategy}: {a.result.n_associated(min_abs_rho):,} of {a.result.rho.size:,} "
                f"pairs associated (FDR-significant with |rho| >= {min_abs_rho:g}; "
                f"{a.result.n_significant:,} significant); {verdict.split(':')[0]}"
            )
    lines.append(f"  wrote {done.page}")
    print("\n".join(lines), file=sys.stdout)
    return 0
