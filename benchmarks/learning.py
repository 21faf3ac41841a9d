"""Does MobileNetV2 trained from scratch learn the demo phantom, and where does an epoch's time go?

Usage::

    python benchmarks/learning.py                        # every configuration, fold 1 of 3
    python benchmarks/learning.py --configs recipe --folds-run 3   # the demo's recipe, all 3 folds
    python benchmarks/learning.py --configs recipe,bf16 --json learning.json

Each configuration is the demo plan (``analyses/quick.yaml``) with a few
settings changed (``CONFIGS``). It trains the ``scratch`` strategy through the
real training code (:func:`biomark.train.loop.train_fold`) on the plan's
phantom, with the run's own folds and validation split, serially in this
process, and prints per configuration:

* accuracy on the training images (a fixed sample of 256, no augmentation,
  final model) and out of fold (the test folds run, pooled), 7-class and
  COVID-19 vs rest, with the majority rates;
* epochs trained and the fold's time split: training steps, validation,
  BatchNormalization re-estimation, fit check + checkpoint, and the first
  epoch's excess over a later one (mostly graph tracing; near 0 when the
  compiled model is reused from an earlier configuration with the same
  architecture and optimizer);
* images per second in the training steps, and CPU use: process CPU seconds
  per wall second during training (2.0 = both cores of this machine busy).

The phantom is generated once into ``--data`` (default: a folder under the
system's temporary directory) and reused.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from biomark.provenance import describe_cpu

REPO = Path(__file__).resolve().parents[1]

#: Plan overrides of each configuration, on top of analyses/quick.yaml.
CONFIGS: dict[str, dict[str, Any]] = {
    "recipe": {},
    "old-recipe": {  # this project's recipe before the training issue, on the same data
        "training.optimizer": "adam",
        "training.learning_rate": 1e-3,
        "training.schedule": "constant",
        "training.weight_decay": 0.0,
        "training.label_smoothing": 0.0,
        "training.class_weight": "balanced",
        "training.batchnorm_recalibration": "epoch",
        "model.batchnorm_momentum": 0.999,
        "model.zero_init_residual": False,
        "model.intensity": "fixed",
        "model.augment.rotation_degrees": 10.0,
        "model.augment.shift_pixels": 10,
    },
    "no-zero-init": {"model.zero_init_residual": False},
    "paper-augment": {"model.augment.rotation_degrees": 10.0, "model.augment.shift_pixels": 10},
    "no-augment": {"model.augment.rotation_degrees": 0.0, "model.augment.shift_pixels": 0},
    "bilinear": {"model.augment.interpolation": "bilinear"},
    "nearest": {"model.augment.interpolation": "nearest"},
    "fixed-intensity": {"model.intensity": "fixed"},
    "bn-0.999": {"model.batchnorm_momentum": 0.999, "training.batchnorm_recalibration": "none"},
    "bf16": {"training.mixed_precision": True},
}


def prepare(plan: Any, data_dir: Path) -> Any:
    """The plan's phantom dataset in ``data_dir`` (generated once)."""
    from biomark.config import apply_overrides
    from biomark.data.dataset import load_dataset
    from biomark.pipelines.data import resolve_dataset

    plan = apply_overrides(plan, {"data.dir": str(data_dir)})
    return load_dataset(resolve_dataset(plan))


def run_config(name: str, plan: Any, dataset: Any, folds_run: int, out: Path) -> dict[str, Any]:
    """Train ``scratch`` on the first ``folds_run`` folds; return the figures."""
    from biomark.config import StrategySpec
    from biomark.data.folds import make_folds, validation_split
    from biomark.train.loop import train_fold
    from biomark.train.predict import predict_features

    manifest = dataset.manifest
    labels = dataset.labels_as_int()
    classes = list(dataset.classes)
    covid = classes.index("COVID-19")
    folds = make_folds(manifest, plan.cv.k, grouping=plan.cv.grouping, seed=plan.seed)[
        "fold"
    ].to_numpy()
    truth, predicted, rows = [], [], []
    for fold in range(folds_run):
        test = np.flatnonzero(folds == fold)
        fit = np.flatnonzero(folds != fold)
        tr, va = validation_split(
            manifest.iloc[fit].reset_index(drop=True),
            plan.cv.validation_fraction,
            grouping=plan.cv.grouping,
            seed=plan.seed + fold,
        )
        cpu0, t0 = _cpu_seconds(), time.perf_counter()
        result = train_fold(
            dataset.images,
            labels,
            fit[tr],
            fit[va],
            strategy=StrategySpec("scratch"),
            n_classes=len(classes),
            model_settings=plan.model,
            training=plan.training,
            out_dir=out / name / f"fold_{fold}",
            seed=plan.seed + fold,
            desc=f"{name} fold {fold}",
        )
        cpu_per_wall = (_cpu_seconds() - cpu0) / (time.perf_counter() - t0)
        probs = predict_features(result.model, np.asarray(dataset.images[test]), batch_size=64)[
            "probs"
        ]
        truth.append(labels[test])
        predicted.append(probs.argmax(axis=1))
        execution = result.execution()
        seconds = execution["pipeline"]["seconds"]
        rows.append(
            {
                "fold": fold,
                "train_accuracy": result.final_train_accuracy,
                "epochs": result.epochs_run,
                "fit_check": (result.fit_check or {}).get("status"),
                "cpu_per_wall": cpu_per_wall,
                "step_images_per_second": execution["step_images_per_second"],
                "threads": execution["pipeline"]["threads"]["intra_op"],
                **seconds,
            }
        )
    y, p = np.concatenate(truth), np.concatenate(predicted)
    per_fold = pd.DataFrame(rows)
    return {
        "config": name,
        "overrides": CONFIGS[name],
        "folds": folds_run,
        "train_accuracy": float(per_fold["train_accuracy"].mean()),
        "oof_accuracy": float(np.mean(y == p)),
        "majority_rate": float(np.bincount(y).max() / len(y)),
        "covid_vs_rest_accuracy": float(np.mean((y == covid) == (p == covid))),
        "covid_vs_rest_majority": float(max(np.mean(y == covid), np.mean(y != covid))),
        "recall": {classes[c]: float(np.mean(p[y == c] == c)) for c in range(len(classes))},
        "epochs": per_fold["epochs"].tolist(),
        "fit_check": per_fold["fit_check"].tolist(),
        "seconds": {
            k: float(per_fold[k].sum()) for k in ("steps", "validation", "batchnorm", "check")
        },
        "first_epoch_extra": [
            None if pd.isna(v) else float(v) for v in per_fold["first_epoch_extra"]
        ],
        "step_images_per_second": float(per_fold["step_images_per_second"].median()),
        "cpu_per_wall": float(per_fold["cpu_per_wall"].median()),
        "threads": int(per_fold["threads"].iloc[0]) if per_fold["threads"].notna().all() else None,
    }


def _cpu_seconds() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def print_table(results: list[dict[str, Any]]) -> None:
    print(
        f"\n{'config':<16} {'train':>6} {'oof':>6} {'covid':>6} {'epochs':>9} {'steps s':>8} "
        f"{'val s':>6} {'BN s':>6} {'chk s':>6} {'trace s':>8} {'img/s':>6} {'cpu':>5}"
    )
    for r in results:
        trace = "/".join("-" if v is None else f"{v:.0f}" for v in r["first_epoch_extra"])
        s = r["seconds"]
        print(
            f"{r['config']:<16} {100 * r['train_accuracy']:5.1f}% {100 * r['oof_accuracy']:5.1f}% "
            f"{100 * r['covid_vs_rest_accuracy']:5.1f}% {'/'.join(map(str, r['epochs'])):>9} "
            f"{s['steps']:8.1f} {s['validation']:6.1f} {s['batchnorm']:6.1f} {s['check']:6.1f} "
            f"{trace:>8} {r['step_images_per_second']:6.0f} {r['cpu_per_wall']:5.2f}"
        )
    if results:
        r = results[0]
        print(
            f"\nchance: 7-class majority rate {100 * r['majority_rate']:.1f}%, COVID-19 vs rest "
            f"{100 * r['covid_vs_rest_majority']:.1f}%; out-of-fold figures pool the folds run."
        )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--plan", type=Path, default=REPO / "analyses" / "quick.yaml")
    parser.add_argument(
        "--configs", default=",".join(CONFIGS), help=f"comma-separated, of: {', '.join(CONFIGS)}"
    )
    parser.add_argument(
        "--folds-run", type=int, default=1, help="folds trained per configuration (of cv.k)"
    )
    parser.add_argument(
        "--data", type=Path, default=Path(tempfile.gettempdir()) / "biomark-learning-phantom"
    )
    parser.add_argument("--json", type=Path, help="also write the figures here")
    args = parser.parse_args(argv)
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    sys.path.insert(0, str(REPO))
    from biomark.config import apply_overrides, load_plan

    names = [c.strip() for c in args.configs.split(",") if c.strip()]
    unknown = [c for c in names if c not in CONFIGS]
    if unknown:
        parser.error(f"unknown configuration(s) {unknown}; use {', '.join(CONFIGS)}")
    base = load_plan(args.plan)
    t0 = time.perf_counter()
    dataset = prepare(base, args.data)
    print(
        f"phantom: {len(dataset)} images at {dataset.size} px in {args.data} "
        f"({time.perf_counter() - t0:.0f} s)"
    )
    print(
        f"machine: {describe_cpu()}, {os.cpu_count()} CPUs, load average {os.getloadavg()[0]:.2f} "
        "at start"
    )
    results = []
    with tempfile.TemporaryDirectory(prefix="biomark-learning-") as out:
        for name in names:
            plan = apply_overrides(base, CONFIGS[name])
            results.append(
                run_config(name, plan, dataset, min(args.folds_run, plan.cv.k), Path(out))
            )
            print(
                f"{name}: out-of-fold {100 * results[-1]['oof_accuracy']:.1f}% "
                f"(load average {os.getloadavg()[0]:.2f})",
                flush=True,
            )
    print_table(results)
    print(f"load average at the end: {os.getloadavg()[0]:.2f}")
    if args.json:
        args.json.write_text(json.dumps(results, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
