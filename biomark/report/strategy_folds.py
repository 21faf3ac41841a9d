"""Reading one strategy's finished folds for the report.

:func:`load_folds` reads the folds' out-of-fold features and checks them
(non-finite probabilities or features: warnings naming fold and file; an
unreadable table leaves its fold out); :func:`classification_tables` gives
the paper's tables (the run's own summary, else pooled from the folds'
metrics); :func:`unfinished_folds_warning` says what analysing without some
folds changes; :func:`dumped_reference` reads every fold's
``features_all.parquet`` once, for matching units across folds.
"""

from __future__ import annotations

import logging
from collections import Counter
from typing import Any

import numpy as np
import pandas as pd

from biomark.analysis.checks import nonfinite_features, nonfinite_rows, warning
from biomark.exceptions import BiomarkError, RunError
from biomark.features.deep import redo_fold
from biomark.features.run_folder import STRATEGY_SUMMARY, RunFolder
from biomark.report.strategy_report import StrategyReport
from biomark.train.metrics import pooled_metrics

__all__ = [
    "classification_tables",
    "dumped_reference",
    "load_folds",
    "mixed_backbones_warning",
    "unfinished_folds_warning",
]

logger = logging.getLogger(__name__)


def classification_tables(
    run: RunFolder, label: str, classes: list[str], meta: pd.DataFrame, folds: list[int], seed: int
) -> tuple[dict[str, Any] | None, str, pd.DataFrame | None]:
    """The paper's classification tables of the analysed folds: (pooled metrics, where from,
    per-fold rows).

    The run's own summary when it covers exactly these folds; else pooled
    here from the folds' ``metrics.json`` (a fold left out of the report is
    left out of its tables too).
    """
    try:
        summary = run.strategy_summary(label)
    except RunError as err:
        logger.warning("%s: %s; the classification tables are recomputed", label, err)
        summary = None
    if summary is not None and summary.get("n_folds") == len(folds):
        return summary, STRATEGY_SUMMARY, run.strategy_table(label, "metrics.csv")
    records = []
    for f in folds:
        try:
            record = run.fold_metrics(label, f)
        except RunError as err:
            logger.warning("%s: %s; its classification figures are left out", label, err)
            return None, f"fold metrics.json unreadable ({err})", None
        if record is not None:
            records.append(record)
    if not records:
        return None, "", None
    probs = meta[[f"prob_{c}" for c in classes]].to_numpy()
    try:
        pooled = pooled_metrics(
            [r["metrics"] for r in records],
            y_true=meta["label"].to_numpy(),
            y_pred=meta["pred"].to_numpy(),
            probabilities=probs,
            classes=classes,
            n_bootstrap=1000,
            seed=seed,
        )
        rows = [
            {
                "fold": r["fold"],
                "n_test": r["metrics"]["n_images"],
                **{
                    k: r["metrics"][k]
                    for k in (
                        "accuracy",
                        "binary_accuracy",
                        "sensitivity",
                        "specificity",
                        "macro_auc",
                        "covid_auc",
                    )
                },
            }
            for r in records
        ]
    except (KeyError, BiomarkError) as err:
        logger.warning(
            "%s: fold metrics.json unreadable (%s: %s); classification tables left out",
            label,
            type(err).__name__,
            err,
        )
        return None, f"fold metrics.json unreadable ({type(err).__name__}: {err})", None
    return (
        pooled,
        f"recomputed from the {len(records)} analysed fold{'s' if len(records) != 1 else ''}",
        pd.DataFrame(rows),
    )


def unfinished_folds_warning(
    run: RunFolder, label: str, missing: list[int], present: list[int], k: int
) -> dict[str, str]:
    """The warning of a strategy analysed without some of its folds (shown at the top, logged)."""
    return warning(
        label,
        ", ".join(str(f) for f in missing),
        "all",
        "unfinished folds",
        f"fold(s) {missing} are not finished (no done.json in "
        f"{run.fold_dir(label, missing[0]).parent}); analysed on folds {present} only. Their test "
        f"images are missing from every table, and fold stability is judged over {len(present)} of "
        f"{k} folds, so fewer networks must agree and more features pass. Re-run `biomark extract` "
        "with the run's plan: it trains only the unfinished folds.",
    )


def mixed_backbones_warning(run: RunFolder, label: str, folds: list[int]) -> dict[str, str] | None:
    """The warning of a random-features control whose folds do not share one backbone.

    A control's folds share one seeded random backbone, whose seed each fold
    records as ``backbone_seed`` in its ``metrics.json``
    (:meth:`~biomark.features.run_folder.RunFolder.backbone_seeds`); folds
    trained by earlier versions of biomark drew a backbone of their own and
    record none, and those of the versions before one backbone per run drew
    one per strategy.
    A run interrupted under such a version and resumed under this one mixes
    both, and its folds' units then come from unrelated random networks.
    Every fold recording one seed, or none recording any, is consistent:
    None. Unreadable ``metrics.json`` files are skipped here (the
    classification tables report them).
    """
    by_seed = run.backbone_seeds(label, folds)
    if len(by_seed) < 2:
        return None
    parts = [
        f"fold(s) {members} drew a backbone of their own (no backbone_seed in metrics.json: "
        "trained before a control's folds shared one)"
        if seed is None
        else f"fold(s) {members} share the backbone of seed {seed}"
        for seed, members in sorted(by_seed.items(), key=lambda item: item[1][0])
    ]
    return warning(
        label,
        ", ".join(str(f) for f in sorted(f for members in by_seed.values() for f in members)),
        "all",
        "mixed backbones",
        f"this random-features control's folds were not trained from one backbone: "
        f"{'; '.join(parts)}. Their units come from unrelated random networks, so the matching "
        "across these folds pairs units that no common backbone relates. Re-run `biomark "
        f"extract --force --strategies {label}` with the run's plan for a control whose folds "
        "share one backbone.",
    )


def load_folds(
    run: RunFolder, label: str, folds: list[int], classes: list[str]
) -> tuple[pd.DataFrame, np.ndarray, dict[int, np.ndarray], list[dict[str, str]]]:
    """Out-of-fold features of the finished folds, checked: (meta, X, non-finite units per fold,
    warnings).

    Images with non-finite probabilities are dropped; features with a
    non-finite value are marked per fold (left out after matching).
    """
    metas, xs, bad, warns = [], [], {}, []
    for f in list(folds):
        where = str(run.fold_dir(label, f) / "features.parquet")
        try:
            m, x = run.features(label, f)
        except (
            RunError,
            OSError,
            ValueError,
        ) as err:  # a truncated table (pyarrow's ArrowInvalid is a ValueError)
            warns.append(
                warning(
                    label,
                    f,
                    "all",
                    "unreadable features",
                    f"{where}: unreadable ({type(err).__name__}: {err}); this fold is left out of "
                    "the report."
                    + (
                        ""  # the run folder's own error already says what to do
                        if isinstance(err, RunError)
                        else f" {redo_fold(run.fold_dir(label, f))}."
                    ),
                )
            )
            folds.remove(f)
            continue
        prob_cols = [c for c in (f"prob_{k}" for k in classes) if c in m.columns]
        if prob_cols:
            rows, w = nonfinite_rows(
                m[prob_cols].to_numpy(dtype=np.float64),
                m["image_id"].astype(str).tolist(),
                strategy=label,
                fold=f,
                where=where,
            )
            warns.extend(w)
            m, x = m[~rows].reset_index(drop=True), x[~rows]
        names = [f"f{j:04d}" for j in range(x.shape[1])]
        bad[f], w = nonfinite_features(x, strategy=label, fold=f, feature_names=names, where=where)
        warns.extend(w)
        metas.append(m)
        xs.append(x)
    metas, xs = _same_width(run, label, folds, metas, xs, warns)
    bad = {f: bad[f] for f in folds}
    if not metas:
        raise RunError(
            f"{run.strategy_dir(label)}: no readable features.parquet in any finished fold; re-run "
            f"`biomark extract --force --strategies {label}`"
        )
    return pd.concat(metas, ignore_index=True), np.concatenate(xs), bad, warns


def dumped_reference(
    run: RunFolder, rep: StrategyReport, present: list[int]
) -> tuple[dict[int, np.ndarray], pd.Index] | None:
    """The folds' ``features_all.parquet`` on their common images, read once for matching units.

    None when the fold models must embed a reference subset here instead: some
    fold did not dump every image, or a dump cannot be read (each unreadable
    file is then a warning box at the top). Empty for a shared backbone, which
    needs no matching.
    """
    if rep.shared_features:
        return {}, pd.Index([], dtype=object)
    if set(present) - set(run.folds_with(rep.label, "features_all.parquet")):
        return None
    try:
        return run.reference_features(rep.label, rep.folds)
    except RunError:
        for f in rep.folds:  # only on this path: name every file that cannot be read
            try:
                run.features(rep.label, f, kind="all")
            except RunError as err:
                rep.warnings.append(
                    warning(
                        rep.label,
                        f,
                        "all",
                        "unreadable features_all",
                        f"{err}; units are matched on a reference subset embedded by the fold "
                        "models instead",
                    )
                )
        return None


def _same_width(
    run: RunFolder,
    label: str,
    folds: list[int],
    metas: list[pd.DataFrame],
    xs: list[np.ndarray],
    warns: list[dict[str, str]],
) -> tuple[list[pd.DataFrame], list[np.ndarray]]:
    """Leave out (with a warning each) the folds whose feature count differs from most folds'.

    Such a fold was trained with another network (the plan's model changed
    and only that fold was re-run); its units cannot be set beside the others'.
    ``folds`` loses those folds in place.
    """
    widths = [x.shape[1] for x in xs]
    if len(set(widths)) <= 1:
        return metas, xs
    common = Counter(widths).most_common(1)[0][0]  # ties: the first fold's (first encountered)
    keep = [d == common for d in widths]
    for f, d, ok in zip(list(folds), widths, keep, strict=True):
        if not ok:
            warns.append(
                warning(
                    label,
                    f,
                    "all",
                    "other network",
                    f"{run.fold_dir(label, f) / 'features.parquet'}: {d} features where the other "
                    f"folds have {common}, so this fold's network is not the others' (the plan's "
                    "model changed and only this fold was re-run?); it is left out of the report. "
                    f"Re-run `biomark extract --force --strategies {label}` so that every fold "
                    "uses the same model.",
                )
            )
            folds.remove(f)
    return [m for m, ok in zip(metas, keep, strict=True) if ok], [
        x for x, ok in zip(xs, keep, strict=True) if ok
    ]
