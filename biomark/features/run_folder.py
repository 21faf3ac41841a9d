"""The run folder of ``biomark extract``: its files, their readers and the summaries.

Layout (``<output_dir>/<plan.name>/``)::

    run.json                  the plan, its hash, dataset dir + manifest hash, classes,
                              fold summary, seed, environment (versions, Keras backend,
                              devices), one entry per finished job, timings
    folds.csv                 image_id, fold, label, patient_id: computed once per run,
                              shared by every strategy
    summary.md                one page: the paper's Tables 1/4/5 for every strategy
                              (mean ± std over folds) and pooled confusion matrices
    <strategy>/               scratch, frozen, finetune_3, ...
        summary.json          pooled_metrics over the folds (with bootstrap 95% CIs)
        metrics.csv           one row per fold: metrics, epochs
        timings.csv           one row per fold: seconds, images/second, resumed epochs
        confusion.csv         pooled n x n confusion matrix, rows predicted, columns actual
        confusion_2class.csv  pooled COVID-19-vs-rest matrix, same orientation
        fold_XX/
            model.keras       trained model
            history.csv       one row per epoch
            split.csv         image_id, role (train / val / test)
            features.parquet  test-fold images: metadata, prob_<class>, f0000...
            features_all.parquet  (dump.features: all) every image, + in_test_fold
            blocks.npz        (dump.blocks) pooled output of every MobileNetV2 block
            metrics.json      what was trained: fold_metrics, epochs, early stopping,
                              fit check (identical for a resumed and an uninterrupted fold)
            timings.json      how it ran: seconds, images/second, resume, pipeline
            checkpoint.npz    while training: the state to resume from exactly
            done.json         written last: the fold is complete

This module reads and writes those files; it imports no deep-learning library.
"""

from __future__ import annotations

import json
import logging
import math
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np
import pandas as pd

from biomark.exceptions import RunError
from biomark.features.deep import fold_dir, strategy_dir
from biomark.io.atomic import write_csv_atomic, write_json_atomic, write_text_atomic
from biomark.train.metrics import paper_table, pooled_metrics

__all__ = [
    "DONE_FILE",
    "FOLDS_FILE",
    "METRICS_FILE",
    "TIMINGS_FILE",
    "RUN_FILE",
    "SUMMARY_MD",
    "STRATEGY_SUMMARY",
    "fold_table_summary",
    "is_done",
    "json_ready",
    "markdown_table",
    "read_folds",
    "read_run",
    "results_table",
    "strategy_title",
    "update_run",
    "write_folds",
    "write_run",
    "write_strategy_summary",
    "write_summary_md",
]

logger = logging.getLogger(__name__)

RUN_FILE = "run.json"
FOLDS_FILE = "folds.csv"
SUMMARY_MD = "summary.md"
STRATEGY_SUMMARY = "summary.json"
METRICS_FILE = "metrics.json"
TIMINGS_FILE = "timings.json"
DONE_FILE = "done.json"


def json_ready(obj: Any) -> Any:
    """Replace NaN/inf floats by None (strict JSON), recursing into dicts and lists."""
    if isinstance(obj, dict):
        return {str(k): json_ready(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [json_ready(v) for v in obj]
    if isinstance(obj, (float, np.floating)):
        value = float(obj)
        return value if math.isfinite(value) else None
    if isinstance(obj, np.integer):
        return int(obj)
    return obj


def read_run(run_dir: str | Path) -> dict[str, Any]:
    """Read ``run.json``.

    Raises
    ------
    RunError
        If the folder has no readable ``run.json``.
    """
    path = Path(run_dir) / RUN_FILE
    if not path.is_file():
        raise RunError(f"{path}: not a run folder (no {RUN_FILE}); start the run with `biomark extract --plan ...`")
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as err:
        raise RunError(f"{path}: unreadable ({err}); restore it or start over with --force") from err


def write_run(run_dir: str | Path, info: dict[str, Any]) -> Path:
    """Write ``run.json`` atomically."""
    return write_json_atomic(Path(run_dir) / RUN_FILE, json_ready(info))


def update_run(run_dir: str | Path, change: Callable[[dict[str, Any]], None]) -> dict[str, Any]:
    """Read ``run.json``, apply ``change`` to the dict in place, write it back atomically."""
    info = read_run(run_dir)
    change(info)
    write_run(run_dir, info)
    return info


def write_folds(run_dir: str | Path, folds: pd.DataFrame) -> Path:
    """Write ``folds.csv`` (image_id, fold, label, patient_id) atomically."""
    return write_csv_atomic(Path(run_dir) / FOLDS_FILE, folds)


def read_folds(run_dir: str | Path) -> pd.DataFrame:
    """Read ``folds.csv`` with text identifiers.

    Raises
    ------
    RunError
        If the file is missing.
    """
    path = Path(run_dir) / FOLDS_FILE
    if not path.is_file():
        raise RunError(f"{path}: fold table missing; re-run `biomark extract` to recreate it")
    return pd.read_csv(path, dtype={"image_id": str, "patient_id": str, "label": str}, keep_default_na=False)


def fold_table_summary(folds: pd.DataFrame, classes: Sequence[str]) -> dict[str, Any]:
    """Images per fold, overall and per class (for ``run.json``).

    Parameters
    ----------
    folds : DataFrame with columns fold, label
    classes : sequence of str

    Returns
    -------
    dict
        ``k``, ``sizes`` (images per fold), ``per_class`` (class -> images per fold).
    """
    k = int(folds["fold"].max()) + 1
    counts = pd.crosstab(folds["label"], folds["fold"]).reindex(index=list(classes), columns=range(k), fill_value=0)
    return {
        "k": k,
        "sizes": folds["fold"].value_counts().reindex(range(k), fill_value=0).astype(int).tolist(),
        "per_class": {c: counts.loc[c].astype(int).tolist() for c in classes},
    }


def read_fold_record(folder: str | Path) -> dict[str, Any]:
    """A finished fold's ``metrics.json`` merged with its ``timings.json`` (when present).

    The merged record has the keys of both files: ``strategy``, ``fold``,
    ``training``, ``metrics``, ... and ``timings``, ``images_per_second``,
    ``execution``.
    """
    folder = Path(folder)
    record = json.loads((folder / METRICS_FILE).read_text(encoding="utf-8"))
    timings = folder / TIMINGS_FILE
    if timings.is_file():
        record.update(json.loads(timings.read_text(encoding="utf-8")))
    return record


def is_done(run_dir: str | Path, strategy: str, fold: int) -> bool:
    """Whether the (strategy, fold) job finished (its ``done.json`` exists)."""
    return (fold_dir(run_dir, strategy, fold) / DONE_FILE).is_file()


_FOLD_METRICS = ("accuracy", "binary_accuracy", "sensitivity", "specificity", "macro_auc", "covid_auc")
_TITLES = {"scratch": "Training from scratch", "frozen": "Off-the-shelf features (frozen)"}


def strategy_title(label: str) -> str:
    """The paper's name of a strategy (``finetune:3`` -> ``Fine-Tuning 3``)."""
    if label.startswith("finetune"):
        return f"Fine-Tuning {label.replace('_', ':').split(':')[1]}"
    return _TITLES.get(label, label)


def _fold_records(run_dir: Path, strategy: str, k: int) -> list[dict[str, Any]]:
    records = []
    for fold in range(k):
        path = fold_dir(run_dir, strategy, fold) / METRICS_FILE
        if not is_done(run_dir, strategy, fold) or not path.is_file():
            raise RunError(
                f"{fold_dir(run_dir, strategy, fold)}: fold {fold} of {strategy!r} is not finished; "
                "re-run `biomark extract` to finish it"
            )
        records.append(read_fold_record(path.parent))
    return records


def write_strategy_summary(
    run_dir: str | Path,
    strategy: str,
    classes: Sequence[str],
    k: int,
    *,
    n_bootstrap: int = 1000,
    seed: int = 0,
) -> dict[str, Any]:
    """Pool a finished strategy's folds: ``summary.json``, ``metrics.csv``, confusion CSVs.

    Parameters
    ----------
    run_dir : str or Path
    strategy : str
        ``scratch``, ``frozen``, ``finetune:N`` (or ``finetune_N``).
    classes : sequence of str
        The dataset's classes (``run.json``).
    k : int
        Number of folds; all must be finished.
    n_bootstrap : int, default 1000
        Bootstrap resamples of the pooled out-of-fold predictions for 95% CIs.
    seed : int, default 0
        Seed of the bootstrap.

    Returns
    -------
    dict
        The content of ``summary.json``: :func:`biomark.train.metrics.pooled_metrics`
        plus ``strategy``, ``title`` and per-fold ``epochs_run``.

    Raises
    ------
    RunError
        If a fold is not finished.
    """
    run_dir = Path(run_dir)
    records = _fold_records(run_dir, strategy, k)
    prob_columns = [f"prob_{c}" for c in classes]
    frames = [
        pd.read_parquet(fold_dir(run_dir, strategy, f) / "features.parquet", columns=["label", "pred", *prob_columns])
        for f in range(k)
    ]
    oof = pd.concat(frames, ignore_index=True)
    pooled = pooled_metrics(
        [r["metrics"] for r in records],
        y_true=oof["label"].to_numpy(),
        y_pred=oof["pred"].to_numpy(),
        probabilities=oof[prob_columns].to_numpy(),
        classes=list(classes),
        n_bootstrap=n_bootstrap,
        seed=seed,
    )
    label = strategy.replace("_", ":")
    summary = {
        "strategy": label,
        "title": strategy_title(label),
        **pooled,
        "epochs_run": [r["training"]["epochs_run"] for r in records],
    }
    base = strategy_dir(run_dir, strategy)
    write_json_atomic(base / STRATEGY_SUMMARY, json_ready(summary))
    rows, timing_rows = [], []
    for r in records:
        m = r["metrics"]
        rows.append(
            {
                "fold": r["fold"],
                "n_test": m["n_images"],
                **{name: m[name] for name in _FOLD_METRICS},
                "epochs_run": r["training"]["epochs_run"],
                "best_epoch": r["training"]["best_epoch"],
            }
        )
        timings, rates = r.get("timings", {}), r.get("images_per_second", {})
        timing_rows.append(
            {
                "fold": r["fold"],
                "train_seconds": timings.get("train_seconds"),
                "predict_seconds": timings.get("predict_seconds"),
                "total_seconds": timings.get("total_seconds"),
                "train_images_per_second": rates.get("train"),
                "predict_images_per_second": rates.get("predict"),
                "resumed_from_epoch": r.get("execution", {}).get("resumed_from_epoch"),
            }
        )
    write_csv_atomic(base / "metrics.csv", pd.DataFrame(rows))
    write_csv_atomic(base / "timings.csv", pd.DataFrame(timing_rows))
    write_csv_atomic(base / "confusion.csv", paper_table(np.asarray(pooled["confusion"]), classes), index=True)
    positive = pooled["positive"]
    write_csv_atomic(
        base / "confusion_2class.csv",
        paper_table(np.asarray(pooled["binary_confusion"]), [positive, f"Non-{positive}"]),
        index=True,
    )
    return summary


def _pct(mean: float | None, std: float | None = None) -> str:
    if mean is None or (isinstance(mean, float) and math.isnan(mean)):
        return "n/a"
    text = f"{100 * mean:.2f}"
    if std is not None and not (isinstance(std, float) and math.isnan(std)):
        text += f" ± {100 * std:.2f}"
    return text


def results_table(run_dir: str | Path) -> pd.DataFrame:
    """The paper's Tables 1/4/5 for every summarised strategy of a run (text cells).

    Returns
    -------
    DataFrame
        One row per strategy (run order): ``Strategy``, ``Accuracy 2-class (%)``,
        ``Accuracy <n>-class (%)``, ``Sensitivity (%)``, ``Specificity (%)`` as
        ``mean ± std`` over folds, and ``Folds``.
    """
    run_dir = Path(run_dir)
    info = read_run(run_dir)
    n = len(info["classes"])
    rows = []
    for label in info.get("strategies", []):
        path = strategy_dir(run_dir, label) / STRATEGY_SUMMARY
        if not path.is_file():
            continue
        s = json.loads(path.read_text(encoding="utf-8"))
        mean, std = s["mean"], s["std"]
        rows.append(
            {
                "Strategy": s["title"],
                "Accuracy 2-class (%)": _pct(mean["binary_accuracy"], std["binary_accuracy"]),
                f"Accuracy {n}-class (%)": _pct(mean["accuracy"], std["accuracy"]),
                "Sensitivity (%)": _pct(mean["sensitivity"], std["sensitivity"]),
                "Specificity (%)": _pct(mean["specificity"], std["specificity"]),
                "Folds": s["n_folds"],
            }
        )
    return pd.DataFrame(rows)


def markdown_table(frame: pd.DataFrame, index: bool = False) -> str:
    """A GitHub-flavoured markdown table (no ``tabulate`` dependency)."""
    if index:
        frame = frame.reset_index()
    header = [str(c) for c in frame.columns]
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    for row in frame.itertuples(index=False):
        lines.append("| " + " | ".join(str(v) for v in row) + " |")
    return "\n".join(lines)


def _confusion_markdown(cm: list[list[int]], labels: Sequence[str]) -> str:
    table = paper_table(np.asarray(cm), labels)
    table.index = [f"**{i}**" for i in table.index]
    table.index.name = "predicted \\ actual"
    return markdown_table(table, index=True)


def write_summary_md(run_dir: str | Path) -> Path:
    """Write ``summary.md``: results table and pooled confusion matrices of every strategy."""
    run_dir = Path(run_dir)
    info = read_run(run_dir)
    classes = info["classes"]
    plan = info["plan"]
    k = info["folds"]["k"]
    lines = [
        f"# biomark extract: {info['name']}",
        "",
        f"- plan hash `{info['plan_hash']}`, seed {info['seed']}",
        f"- dataset `{info['dataset']['dir']}` ({info['dataset']['n_images']} images, "
        f"{len(classes)} classes, manifest sha256 `{info['dataset']['manifest_sha256'][:16]}…`)",
        f"- {k}-fold cross-validation, grouping `{plan['cv']['grouping']}`, validation fraction "
        f"{plan['cv']['validation_fraction']} of the training folds for early stopping",
        f"- MobileNetV2 alpha {plan['model']['alpha']}, {plan['model']['image_size']} px, weights "
        f"`{plan['model']['weights']}`; {plan['training']['optimizer']} lr {plan['training']['learning_rate']} "
        f"(fine-tuning {plan['training']['finetune_learning_rate']}), up to {plan['training']['epochs']} epochs, "
        f"batch {plan['training']['batch_size']}",
        f"- Keras {info['environment'].get('keras', {}).get('keras', '?')} on "
        f"`{info['environment'].get('keras', {}).get('backend', '?')}` "
        f"({', '.join(info['environment'].get('keras', {}).get('devices', []))})",
    ]
    if str(plan["model"]["weights"]).strip().lower() == "none" and any(
        not str(label).startswith("scratch") for label in info.get("strategies", [])
    ):
        lines.append(
            "- **model.weights: none** - frozen and fine-tuned strategies start from a seeded *random* "
            "backbone (a random-features control), not from ImageNet"
        )
    lines += [
        "",
        f"## Accuracy, sensitivity and specificity (mean ± std over {k} folds)",
        "",
        "As the paper's Tables 1, 4 and 5. 2-class: COVID-19 vs the rest; sensitivity and "
        "specificity refer to that 2-class task.",
        "",
    ]
    table = results_table(run_dir)
    lines.append(markdown_table(table) if len(table) else "_no strategy has finished all its folds yet_")
    for label in info.get("strategies", []):
        path = strategy_dir(run_dir, label) / STRATEGY_SUMMARY
        if not path.is_file():
            continue
        s = json.loads(path.read_text(encoding="utf-8"))
        boot = s.get("bootstrap") or {}
        ci = "; ".join(
            f"{name} {_pct(v['estimate'])} [{_pct(v['low'])}, {_pct(v['high'])}]"
            for name, v in boot.items()
            if name in ("accuracy", "binary_accuracy", "sensitivity", "specificity")
        )
        lines += [
            "",
            f"## {s['title']} (`{label}`)",
            "",
            f"Pooled over folds (rows predicted, columns actual, as the paper's Tables 2/3/6/7). "
            f"Epochs run per fold: {s['epochs_run']}.",
        ]
        if ci:
            lines += ["", f"Pooled estimate with bootstrap 95% CI ({s['n_bootstrap']} resamples): {ci}."]
        lines += ["", _confusion_markdown(s["confusion"], classes), ""]
        positive = s["positive"]
        lines.append(_confusion_markdown(s["binary_confusion"], [positive, f"Non-{positive}"]))
    lines += ["", f"_Written from `{RUN_FILE}` and the per-strategy `{STRATEGY_SUMMARY}` files._", ""]
    return write_text_atomic(run_dir / SUMMARY_MD, "\n".join(lines))
