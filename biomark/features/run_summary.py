"""The summaries of a run folder: per strategy (pooled metrics, confusion matrices) and
``summary.md``.

:func:`write_strategy_summary` pools a finished strategy's folds
(:func:`biomark.train.metrics.pooled_metrics`) into ``<strategy>/summary.json``,
``metrics.csv``, ``timings.csv`` and the confusion CSVs; :func:`results_table`
is the paper's Tables 1/4/5 for every summarised strategy, and
:func:`write_summary_md` the run's one-page ``summary.md``. Every file goes
through :class:`~biomark.features.run_folder.RunFolder`.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import numpy as np
import pandas as pd

from biomark.config import DEFAULT_POSITIVE_CLASS
from biomark.exceptions import RunError
from biomark.features.deep import read_fold_table
from biomark.features.run_folder import RUN_FILE, STRATEGY_SUMMARY, RunFolder
from biomark.features.run_info import RunInfo
from biomark.train.metrics import paper_table, pooled_metrics

__all__ = [
    "epochs_words",
    "markdown_table",
    "results_table",
    "strategy_title",
    "summary_markdown",
    "validation_split_words",
    "write_strategy_summary",
    "write_summary_md",
]

_FOLD_METRICS = (
    "accuracy",
    "binary_accuracy",
    "sensitivity",
    "specificity",
    "macro_auc",
    "covid_auc",
)
_TITLES = {"scratch": "Training from scratch", "frozen": "Off-the-shelf features (frozen)"}


def strategy_title(label: str) -> str:
    """The paper's name of a strategy (``finetune:3`` -> ``Fine-Tuning 3``).

    Examples
    --------
    >>> strategy_title("finetune_3"), strategy_title("frozen")
    ('Fine-Tuning 3', 'Off-the-shelf features (frozen)')
    """
    if label.startswith("finetune"):
        return f"Fine-Tuning {label.replace('_', ':').split(':')[1]}"
    return _TITLES.get(label, label)


def _fold_records(run: RunFolder, strategy: str, k: int) -> list[dict[str, Any]]:
    records = []
    for fold in range(k):
        if not run.is_done(strategy, fold) or run.fold_metrics(strategy, fold) is None:
            raise RunError(
                f"{run.fold_dir(strategy, fold)}: fold {fold} of {strategy!r} is not finished; "
                "re-run `biomark extract` to finish it"
            )
        records.append(run.fold_record(strategy, fold))
    return records


def _fold_rows(records: list[dict[str, Any]]) -> tuple[pd.DataFrame, pd.DataFrame]:
    """``metrics.csv`` and ``timings.csv``: one row per fold."""
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
    return pd.DataFrame(rows), pd.DataFrame(timing_rows)


def write_strategy_summary(
    run: RunFolder,
    strategy: str,
    classes: Sequence[str],
    k: int,
    *,
    n_bootstrap: int = 1000,
    seed: int = 0,
) -> dict[str, Any]:
    """Pool a finished strategy's folds: ``summary.json``, ``metrics.csv``, ``timings.csv``,
    confusion CSVs.

    Parameters
    ----------
    run : RunFolder
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
    records = _fold_records(run, strategy, k)
    prob_columns = [f"prob_{c}" for c in classes]
    frames = [
        read_fold_table(
            run.fold_dir(strategy, f) / "features.parquet",
            strategy,
            f,
            columns=["label", "pred", *prob_columns],
        )
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
    metrics, timings = _fold_rows(records)
    positive = pooled["positive"]
    run.write_strategy_files(
        strategy,
        summary,
        {"metrics.csv": metrics, "timings.csv": timings},
        {
            "confusion.csv": paper_table(np.asarray(pooled["confusion"]), classes),
            "confusion_2class.csv": paper_table(
                np.asarray(pooled["binary_confusion"]), [positive, f"Non-{positive}"]
            ),
        },
    )
    return summary


def _pct(mean: float | None, std: float | None = None) -> str:
    if mean is None or (isinstance(mean, float) and math.isnan(mean)):
        return "n/a"
    text = f"{100 * mean:.2f}"
    if std is not None and not (isinstance(std, float) and math.isnan(std)):
        text += f" ± {100 * std:.2f}"
    return text


def results_table(run: RunFolder, info: RunInfo | None = None) -> pd.DataFrame:
    """The paper's Tables 1/4/5 for every summarised strategy of a run (text cells).

    Parameters
    ----------
    run : RunFolder
    info : RunInfo, optional
        Its ``run.json`` (default: read it).

    Returns
    -------
    DataFrame
        One row per strategy (run order): ``Strategy``, ``Accuracy 2-class (%)``,
        ``Accuracy <n>-class (%)``, ``Sensitivity (%)``, ``Specificity (%)`` as
        ``mean ± std`` over folds, and ``Folds``.
    """
    info = info if info is not None else run.read_info()
    n = len(info.classes)
    rows = []
    for label in info.strategies:
        s = run.strategy_summary(label)
        if s is None:
            continue
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
    """A GitHub-flavoured markdown table of ``frame``, through :meth:`pandas.DataFrame.to_markdown`.

    Parameters
    ----------
    frame : DataFrame of shape (n_rows, n_columns)
        Cells are written as ``str(value)``; a ``|`` in a cell or a column name is escaped
        as ``\\|`` so it cannot split the row (``tabulate`` does not escape it).
    index : bool, default False
        Write the index as the first column (named by ``frame.index.name``).

    Returns
    -------
    str
        The table, one line per row after the header and separator lines.
    """
    if index:
        frame = frame.reset_index()
    cells = frame.map(lambda value: str(value).replace("|", r"\|"))
    cells.columns = [str(c).replace("|", r"\|") for c in frame.columns]
    # every cell is already text: numparse off so tabulate prints it as str() gave it
    return cells.to_markdown(index=False, tablefmt="github", disable_numparse=True)


def _confusion_markdown(cm: list[list[int]], labels: Sequence[str]) -> str:
    table = paper_table(np.asarray(cm), labels)
    table.index = [f"**{i}**" for i in table.index]
    table.index.name = "predicted \\ actual"
    return markdown_table(table, index=True)


def validation_split_words(fraction: Any, purpose: str = "") -> str:
    """A plan's ``cv.validation_fraction`` in words, for ``summary.md`` and the report's methods.

    Parameters
    ----------
    fraction : float or str
        The recorded value (``"?"`` when the run does not record it).
    purpose : str, optional
        What the held-out images are for, added in brackets when some are held out.

    Examples
    --------
    >>> validation_split_words(0.2, "early stopping on `val_loss`")
    'validation fraction 0.2 of the training folds (early stopping on `val_loss`)'
    >>> validation_split_words(0.0, "early stopping on `val_loss`")
    'no validation split (each model trains on every image of its training folds)'
    >>> validation_split_words("?")
    'validation fraction ?'
    """
    try:
        held_out = float(fraction) > 0
    except (TypeError, ValueError):
        return f"validation fraction {fraction}"
    if not held_out:
        return "no validation split (each model trains on every image of its training folds)"
    return f"validation fraction {fraction} of the training folds" + (
        f" ({purpose})" if purpose else ""
    )


def _has_random_controls(info: RunInfo) -> bool:
    """Whether the run has random-backbone controls: ``model.weights: none`` and a strategy other
    than scratch (:func:`biomark.models.strategies.is_random_control`, read from the labels)."""
    return str(info.plan_value("model.weights")).strip().lower() == "none" and any(
        not str(label).startswith("scratch") for label in info.strategies
    )


def epochs_words(info: RunInfo) -> str:
    """How long a run's models train, in words, for ``summary.md`` and the report's methods.

    The random-backbone controls (pretrained strategies run with ``model.weights: none``) train
    for ``training.control_epochs`` when that is set (:func:`biomark.train.schedule.training_for`).

    Examples
    --------
    >>> plan = {"model": {"weights": "none"}, "training": {"epochs": 16, "control_epochs": 4,
    ...         "early_stopping": {"enabled": False}}}
    >>> epochs_words(RunInfo(plan=plan, strategies=("scratch", "frozen")))
    '16 epochs (the random-backbone controls 4)'
    >>> epochs_words(RunInfo(plan=plan, strategies=("scratch",)))
    '16 epochs'
    """
    p = info.plan_value
    up_to = "up to " if bool(p("training.early_stopping.enabled", True)) else ""
    words = f"{up_to}{p('training.epochs')} epochs"
    try:
        control = int(p("training.control_epochs", 0) or 0)
    except (TypeError, ValueError):
        control = 0
    if _has_random_controls(info) and control > 0:
        words += f" (the random-backbone controls {up_to}{control})"
    return words


def _header(info: RunInfo) -> list[str]:
    """The first lines of ``summary.md``: the run, its dataset, cross-validation, model and
    environment."""
    p = info.plan_value
    keras = info.keras
    stopping = bool(p("training.early_stopping.enabled", True))
    validation = (
        f"early stopping on `{p('training.early_stopping.monitor', 'val_loss')}`, patience "
        f"{p('training.early_stopping.patience', '?')}"
        if stopping
        else "validation metrics only: early stopping off"
    )
    split = validation_split_words(p("cv.validation_fraction"), validation)
    lines = [
        f"# biomark extract: {info.name}",
        "",
        f"- plan hash `{info.plan_hash}`, seed {info.seed}",
        f"- dataset `{info.dataset.dir}` ({info.dataset.n_images} images, "
        f"{len(info.classes)} classes, manifest sha256 `{info.dataset.manifest_sha256[:16]}…`)",
        f"- {info.k}-fold cross-validation, grouping `{p('cv.grouping')}`, {split}",
        f"- MobileNetV2 alpha {p('model.alpha')}, {p('model.image_size')} px, weights "
        f"`{p('model.weights')}`; {p('training.optimizer')} lr {p('training.learning_rate')} "
        f"(fine-tuning {p('training.finetune_learning_rate')}), "
        f"{epochs_words(info)}, batch "
        f"{p('training.batch_size')}",
        f"- Keras {keras.get('keras', '?')} on `{keras.get('backend', '?')}` "
        f"({', '.join(keras.get('devices', []))})",
    ]
    if _has_random_controls(info):
        lines.append(
            "- **model.weights: none** - frozen and fine-tuned strategies start from a seeded "
            "*random* backbone (a random-features control), not from ImageNet"
        )
    return lines


def summary_markdown(run: RunFolder, info: RunInfo | None = None) -> str:
    """The text of ``summary.md``: results table and pooled confusion matrices of every strategy."""
    info = info if info is not None else run.read_info()
    classes = info.classes
    positive = info.positive_class or DEFAULT_POSITIVE_CLASS
    lines = _header(info) + [
        "",
        f"## Accuracy, sensitivity and specificity (mean ± std over {info.k} folds)",
        "",
        f"As the paper's Tables 1, 4 and 5. 2-class: {positive} vs the rest; sensitivity and "
        "specificity refer to that 2-class task.",
        "",
    ]
    table = results_table(run, info)
    lines.append(
        markdown_table(table) if len(table) else "_no strategy has finished all its folds yet_"
    )
    for label in info.strategies:
        s = run.strategy_summary(label)
        if s is None:
            continue
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
            lines += [
                "",
                f"Pooled estimate with bootstrap 95% CI ({s['n_bootstrap']} resamples): {ci}.",
            ]
        lines += ["", _confusion_markdown(s["confusion"], classes), ""]
        positive = s["positive"]
        lines.append(_confusion_markdown(s["binary_confusion"], [positive, f"Non-{positive}"]))
    lines += [
        "",
        f"_Written from `{RUN_FILE}` and the per-strategy `{STRATEGY_SUMMARY}` files._",
        "",
    ]
    return "\n".join(lines)


def write_summary_md(run: RunFolder, info: RunInfo | None = None) -> Any:
    """Write ``summary.md`` (:func:`summary_markdown`) and return its path."""
    return run.write_summary_md(summary_markdown(run, info))
