"""Speed of ``biomark report`` at the paper's size, and of SHAP on the paper's head.

Usage::

    python benchmarks/report.py                      # both parts
    python benchmarks/report.py --no-run             # attribution timing only
    python benchmarks/report.py --shap-reference 1   # also time shap.PermutationExplainer on 1 image
    python benchmarks/report.py --run runs/quick     # a real run: seconds per stage and strategy
    python benchmarks/report.py --run runs/quick --workers 1   # one strategy after another

``--run RUN`` times ``biomark report`` on an existing run folder (models and
dataset included; the run's reports folder, ``reports/<run name>/`` with its
radiomics and compare outputs, copied first, as ``make demo`` leaves it) and
prints wall and CPU seconds per stage of every strategy (models: loading and
every forward pass; attributions; unit matching; statistics and audit;
thumbnails) and for writing the page. CPU seconds are those of the process
and its worker processes (``getrusage``), so they hold on a shared machine
where wall time does not. ``--workers N`` sets the worker processes (default
as ``biomark report``: one per strategy on 2 or more cores).

Part 1 writes a synthetic run folder of the paper's size directly with
:func:`biomark.features.deep.write_features` (no training, no models, no
dataset): 3,905 images in the paper's 7 classes (455 COVID-19, 293 Edema, 311
Effusion, 315 Emphysema, 280 Fibrosis, 910 Pneumonia, 1,341 Normal), 10
patient-grouped folds, 3 strategies of 1,280-d GAP features with a planted
class signal in a few features, two images per patient, two sources.
It then times ``biomark report`` on it end to end; the SHAP, map and blackout
sections degrade to "missing" because there is no ``model.keras``.

Part 2 times the attributions of one fold of the paper's head (1280 -> 2500
-> 7, random He-scaled weights) on sparse non-negative GAP-like features, 16
background images: the report's exact Expected Gradients on every test image
of a paper-size fold (390) and on 56 (a quick-plan fold), and the permutation
walk (the report's method before) on 32 images with 2 antithetic pairs, with
the agreement of their rankings; with ``--shap-reference N`` also
``shap.PermutationExplainer`` (one antithetic pair) on N images.
"""  # noqa: E501

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd

from biomark.allocator import keep_freed_memory
from biomark.data.phantom import PAPER_CLASS_COUNTS
from biomark.provenance import describe_cpu

CLASSES = PAPER_CLASS_COUNTS  # the paper's images per class, section 2.1
STRATEGIES = ("scratch", "frozen", "finetune:11")


def write_paper_run(run_dir: Path, *, n_folds: int = 10, d: int = 1280, seed: int = 0) -> Path:
    """A run folder of the paper's size with out-of-fold features only."""
    from biomark.features.deep import META_COLUMNS, fold_dir, write_features
    from biomark.train.metrics import fold_metrics

    rng = np.random.default_rng(seed)
    labels = np.concatenate([[c] * n for c, n in CLASSES.items()])
    n = labels.size
    patients = np.array([f"{labels[i][:3]}{i // 2:05d}" for i in range(n)])
    uniq = np.unique(patients)
    fold_of_patient = dict(zip(uniq, rng.permutation(np.arange(uniq.size) % n_folds), strict=True))
    folds = np.array([fold_of_patient[p] for p in patients])
    source = np.where(
        labels == "COVID-19",
        "cohen",
        np.where(np.isin(labels, ["Pneumonia", "Normal"]), "kermany", "nih"),
    )
    classes = list(CLASSES)
    code = pd.Index(classes).get_indexer(labels)
    run_dir.mkdir(parents=True, exist_ok=True)
    pd.DataFrame(
        {
            "image_id": [f"img{i:05d}" for i in range(n)],
            "fold": folds,
            "label": labels,
            "patient_id": patients,
        }
    ).to_csv(run_dir / "folds.csv", index=False)
    for s in STRATEGIES:
        X = np.maximum(rng.standard_normal((n, d)) * 0.8, 0).astype(np.float32)
        X[:, d - 40 :] = 0.0  # dead units
        for c in range(len(classes)):
            X[code == c, 3 * c : 3 * c + 3] += 1.0  # planted class signal
        probs = rng.dirichlet(np.ones(len(classes)), size=n)
        probs[np.arange(n), code] += 1.0
        probs /= probs.sum(axis=1, keepdims=True)
        for f in range(n_folds):
            rows = np.flatnonzero(folds == f)
            meta = pd.DataFrame(
                {
                    "image_id": [f"img{i:05d}" for i in rows],
                    "label": labels[rows],
                    "patient_id": patients[rows],
                    "source": source[rows],
                    "fold": f,
                    "strategy": s,
                    "pred": np.asarray(classes)[probs[rows].argmax(axis=1)],
                }
            )[list(META_COLUMNS)]
            out = fold_dir(run_dir, s, f)
            write_features(out / "features.parquet", meta, X[rows], probs[rows], classes)
            m = {
                "fold": f,
                "metrics": fold_metrics(
                    code[rows],
                    probs[rows].argmax(axis=1),
                    probs[rows],
                    classes,
                    positive="COVID-19",
                ),
            }
            (out / "done.json").write_text(json.dumps({"fold": f}))
            (out / "metrics.json").write_text(json.dumps(m))
    plan = {
        "name": run_dir.name,
        "seed": seed,
        "strategies": list(STRATEGIES),
        "cv": {"k": n_folds, "grouping": "patient", "validation_fraction": 0.1},
        "model": {
            "alpha": 1.0,
            "image_size": 200,
            "weights": "imagenet",
            "head_units": 2500,
            "dropout": 0.5,
        },
    }
    info = {
        "name": run_dir.name,
        "plan": plan,
        "seed": seed,
        "classes": classes,
        "positive_class": "COVID-19",
        "strategies": list(STRATEGIES),
        "folds": {"k": n_folds, "grouping": "patient"},
        "dataset": {"dir": str(run_dir / "no-dataset"), "n_images": int(n)},
    }
    (run_dir / "run.json").write_text(json.dumps(info))
    return run_dir


def time_report(tmp: Path) -> None:
    from biomark.cli import main

    t0 = time.perf_counter()
    run = write_paper_run(tmp / "runs" / "paper_size")
    t_write = time.perf_counter() - t0
    print(
        "synthetic run: 3905 images x 10 folds x 3 strategies x 1280 features written in "
        f"{t_write:.1f} s"
    )
    t0 = time.perf_counter()
    status = main(["-q", "report", "--run", str(run), "--reports", str(tmp / "reports")])
    seconds = time.perf_counter() - t0
    print(
        f"biomark report (no models: SHAP/maps/blackout reported missing): exit {status}, "
        f"{seconds:.1f} s wall"
    )
    index = tmp / "reports" / "paper_size" / "index.html"
    print(
        f"  index.html {index.stat().st_size / 1e6:.1f} MB, candidates.csv "
        f"{len(pd.read_csv(index.parent / 'candidates.csv'))} rows"
    )


def time_shap(reference: int) -> None:
    from scipy import stats as sps

    from biomark.analysis.attribution import explain_head, stratified_subset
    from biomark.analysis.head import Head

    rng = np.random.default_rng(0)
    head = Head.random(1280, 2500, 7, rng=rng)
    X = np.maximum(rng.standard_normal((390, 1280)), 0)
    labels = rng.choice(list(CLASSES), size=390)
    sub = stratified_subset(labels, 32, seed=0)
    bg = rng.choice(390, size=16, replace=False)
    for n in (390, 56):
        t0, c0 = time.perf_counter(), time.process_time()
        eg = explain_head(head, X[:n], X[bg], method="expected-gradients", precision="float32")
        seconds, cpu = time.perf_counter() - t0, time.process_time() - c0
        s = eg.additivity_summary()
        print(
            f"Expected Gradients per fold (exact, float32, {n} images, background 16): "
            f"{seconds:.2f} s wall, {cpu:.2f} s CPU ({1000 * seconds / n:.1f} ms/image); "
            f"additivity max |error| {s['max_abs_error']:.1e} (mean |f(x) - E f| "
            f"{s['output_scale']:.2f})"
        )
    t0, c0 = time.perf_counter(), time.process_time()
    att = explain_head(
        head, X[sub], X[bg], method="permutation", n_permutations=2, seed=0, precision="float32"
    )
    seconds, cpu = time.perf_counter() - t0, time.process_time() - c0
    s = att.additivity_summary()
    print(
        "permutation walk per fold (float32, 32 images, background 16, 2 antithetic pairs): "
        f"{seconds:.1f} s wall, {cpu:.1f} s CPU ({seconds / 32:.2f} s/image); additivity max "
        f"|error| {s['max_abs_error']:.1e}"
    )
    eg32 = explain_head(head, X[sub], X[bg], method="expected-gradients", precision="float32")
    a, b = eg32.mean_abs(), att.mean_abs()
    rho = np.mean([sps.spearmanr(a[:, c], b[:, c])[0] for c in range(a.shape[1])])
    top = np.mean(
        [
            len(set(np.argsort(-a[:, c])[:20]) & set(np.argsort(-b[:, c])[:20])) / 20
            for c in range(a.shape[1])
        ]
    )
    print(
        f"  same 32 images: Spearman rho of mean |attribution| per class {rho:.3f}; top-20 overlap "
        f"{top:.2f}"
    )
    if reference:
        t0 = time.perf_counter()
        ref = explain_head(
            head, X[sub[:reference]], X[bg], method="shap-permutation", n_permutations=1
        )
        seconds = time.perf_counter() - t0
        print(
            f"shap.PermutationExplainer, same head, 1 pair: {seconds / reference:.1f} s/image; "
            f"additivity max |error| {ref.additivity_summary()['max_abs_error']:.1e}"
        )


def _cpu_seconds() -> float:
    """CPU seconds of this process and of its finished child processes (the report's workers)."""
    import resource

    own, kids = (
        resource.getrusage(resource.RUSAGE_SELF),
        resource.getrusage(resource.RUSAGE_CHILDREN),
    )
    return own.ru_utime + own.ru_stime + kids.ru_utime + kids.ru_stime


def time_run(
    run: Path, reports: Path, *, workers: int | None = None, outputs: Path | None = None
) -> None:
    """Seconds per stage of ``biomark report`` on a real run folder.

    ``outputs``: the run's reports folder as ``make demo`` leaves it (radiomics
    and compare CSVs), copied into ``reports`` first so the report reads what
    it reads there.
    """
    import shutil

    from biomark.pipelines.report import analyse_run
    from biomark.pipelines.report_workers import worker_count
    from biomark.report.report_page import write_report
    from biomark.report.report_strategy import ReportSettings

    if outputs is not None and outputs.is_dir():
        shutil.copytree(outputs, reports / outputs.name)
    settings = ReportSettings(workers=workers)
    t0, c0 = time.perf_counter(), _cpu_seconds()
    data = analyse_run(run, settings, reports=reports)
    t1, c1 = time.perf_counter(), _cpu_seconds()
    write_report(data)
    t2, c2 = time.perf_counter(), _cpu_seconds()
    n = worker_count(workers, len(data.strategies))
    print(
        f"biomark report {run}: {t2 - t0:.1f} s wall, {c2 - c0:.1f} s CPU with its workers "
        f"({f'{n} worker processes' if n > 1 else 'strategies one after another in this process'}; "
        f"analysis {t1 - t0:.1f} s wall / {c1 - c0:.1f} s CPU; page {t2 - t1:.1f} s wall / "
        f"{c2 - c1:.1f} s CPU); "
        f"{'radiomics and compare outputs from ' + str(outputs) if outputs is not None and outputs.is_dir() else 'no reports folder copied'}"  # noqa: E501
    )
    for label, rep in data.strategies.items():
        parts = ", ".join(f"{k} {v:.1f}" for k, v in rep.seconds.items())
        print(
            f"  {label}: {parts} (s wall); {len(rep.feature_names)} features, unit basis "
            f"{rep.unit_basis}, lungs by {rep.lung_method or 'n/a'}"
        )


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--no-run", action="store_true", help="skip the paper-size report")
    parser.add_argument(
        "--shap-reference",
        type=int,
        default=0,
        metavar="N",
        help="also time shap.PermutationExplainer on N images",
    )
    parser.add_argument(
        "--run", type=Path, metavar="RUN", help="time the report of this run folder only"
    )
    parser.add_argument(
        "--workers",
        type=int,
        metavar="N",
        help=(
            "with --run: worker processes (default: biomark report's, one per strategy on 2+ cores)"
        ),
    )
    parser.add_argument(
        "--reports",
        type=Path,
        default=Path("reports"),
        metavar="DIR",
        help="with --run: reports folder whose <run name>/ (radiomics, compare) is copied first "
        "(default: reports)",
    )
    args = parser.parse_args()
    keep_freed_memory()  # as the biomark command does, before TensorFlow allocates
    os.environ.setdefault("BIOMARK_PROGRESS", "0")
    print(
        f"python {sys.version.split()[0]}, {describe_cpu()}, {os.cpu_count()} CPU cores, load "
        f"average {os.getloadavg()[0]:.1f}"
    )
    if args.run is not None:
        with tempfile.TemporaryDirectory() as tmp:
            time_run(
                args.run, Path(tmp), workers=args.workers, outputs=args.reports / args.run.name
            )
        return 0
    time_shap(args.shap_reference)
    if not args.no_run:
        with tempfile.TemporaryDirectory() as tmp:
            time_report(Path(tmp))
    return 0


if __name__ == "__main__":
    sys.exit(main())
