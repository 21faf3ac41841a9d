"""The model-based evidence of the biomarker report: attributions, localisation, blackout, unit
matching, thumbnails.

:func:`model_evidence` goes through a strategy's finished folds; for each fold
with a ``model.keras`` it opens the model once
(:func:`biomark.features.report_inputs.open_fold_model`) and computes, in
the fold's own unit order: attributions of the numpy head
(:func:`biomark.analysis.attribution.explain_head`), where every GAP feature
lives (inside the lung masks by the ``out_relu`` maps,
:func:`biomark.analysis.localisation.lung_mass`, or -- when the maps are too
coarse to tell, as at 64 or 96 px -- by occluding the lungs and the rest,
:func:`biomark.analysis.localisation.occlusion_effects`), Grad-CAM of a few
images, the accuracy with the lungs blacked out, the answers for films given
another film's lungs (:mod:`biomark.analysis.lung_swap`), the agreement of the dumped
features with the model, and the GAP vectors of a common set of reference
images (for matching units across folds). The open models are kept for
:func:`thumbnails`, which draws the images with the highest and lowest values
of the top features with their maps, and closed by :func:`close_models`.
Without a dataset or a model the corresponding fields stay empty and a note
says why.
"""

from __future__ import annotations

import logging
import math
import time
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd

from biomark.analysis.attribution import explain_head, stratified_subset
from biomark.analysis.checks import model_disagreement, warning
from biomark.analysis.head import Head
from biomark.analysis.localisation import (
    attainable_lung_fraction,
    cell_fractions,
    grad_cam,
    lung_mass,
    occlusion_effects,
    upsample,
)
from biomark.analysis.lung_swap import pair_donors
from biomark.data.dataset import Dataset
from biomark.data.masks import LungMasks
from biomark.exceptions import BiomarkError
from biomark.features.report_inputs import (
    fold_model_path,
    lung_masks,
    open_fold_model,
    release_models,
    run_fold_model,
    strategy_models,
)
from biomark.report.strategy_report import ReportSettings, StrategyReport

__all__ = [
    "ModelOutputs",
    "close_models",
    "by_occlusion",
    "maps_attainable",
    "model_evidence",
    "read_rows",
    "reference_rows",
]

logger = logging.getLogger(__name__)


@dataclass
class ModelOutputs:
    """What the fold models gave, in each fold's own unit order (before matching).

    Attributes
    ----------
    importance : dict of int to ndarray of shape (n_features, n_classes)
        Per fold with a model: mean |attribution| of every class logit.
    reference : dict of int to ndarray of shape (n_reference, n_features)
        Per fold: GAP vectors of the reference images (:func:`reference_rows`).
    lung_in, lung_tot : ndarray of shape (n_images, n_features)
        Per image (rows of ``rep.meta``): activation mass (maps) or occlusion
        effect inside the lungs, and in total; NaN where unknown.
    models : dict of int to FoldModel
        The open fold models, sharing one architecture (closed by :func:`close_models`).
    rows : ndarray of int or None
        Dataset rows of ``rep.meta`` (None without a usable dataset).
    """

    importance: dict[int, np.ndarray] = field(default_factory=dict)
    reference: dict[int, np.ndarray] = field(default_factory=dict)
    lung_in: np.ndarray | None = None
    lung_tot: np.ndarray | None = None
    models: dict[int, Any] = field(default_factory=dict)
    rows: np.ndarray | None = None


def _rows_of(dataset: Dataset, ids: np.ndarray) -> np.ndarray | None:
    index = pd.Index(dataset.manifest["image_id"].astype(str))
    rows = index.get_indexer(ids.astype(str))
    return None if (rows < 0).any() else rows


def read_rows(dataset: Dataset, rows: np.ndarray) -> np.ndarray:
    """Images of some dataset rows, in the given order (sorted reads of the memory map)."""
    return np.asarray(dataset.images[np.sort(rows)])[np.argsort(np.argsort(rows))]


def reference_rows(meta: pd.DataFrame, n: int, seed: int) -> np.ndarray:
    """Positions in ``meta`` of the reference images every fold's model embeds (class-stratified,
    seeded)."""
    return stratified_subset(meta["label"].astype(str).to_numpy(), n, seed=seed)


def close_models(out: ModelOutputs) -> None:
    """Close the open fold models and free the deep-learning library's state."""
    if out.models:
        next(iter(out.models.values())).close()  # one holder for every fold
        out.models.clear()
        release_models()


def _grid_side(image_size: int) -> int:
    # MobileNetV2 halves the side five times with 'same' padding: ceil(side / 32).
    return max(1, math.ceil(image_size / 32))


def maps_attainable(masks: np.ndarray, image_size: int) -> float:
    """The mean lung fraction the ``out_relu`` maps can show on these lung masks
    (:func:`~biomark.analysis.localisation.attainable_lung_fraction`)."""
    side = _grid_side(image_size)
    return float(attainable_lung_fraction(masks, (side, side)).mean())


def by_occlusion(attainable: float, settings: ReportSettings) -> bool:
    """Whether to localise by occlusion: the maps cannot show ``settings.min_map_attainable``
    (NaN, no usable mask: occlusion too). The strategies and the run's lung null decide alike."""
    return not (attainable >= settings.min_map_attainable)


def model_evidence(
    run_dir: Any,
    rep: StrategyReport,
    dataset: Dataset | None,
    X_full: np.ndarray,
    settings: ReportSettings,
    *,
    reference: bool = True,
) -> ModelOutputs:
    """Run every fold's model once and fill the model-based fields of ``rep``.

    Parameters
    ----------
    run_dir : path
    rep : StrategyReport
        Filled in place: ``additivity``, ``blackout``, ``lung_area_fraction``,
        ``lung_attainable``, ``lung_method``, ``mask_source``,
        ``identity_error``, ``gradcam``, ``notes``, ``skipped``, ``warnings``.
    dataset : Dataset or None
    X_full : ndarray of shape (n_images, n_features)
        Out-of-fold GAP features as dumped (each fold's own units), rows as
        ``rep.meta``; non-finite values are allowed (replaced by the model's
        recomputation for the attributions).
    settings : ReportSettings
    reference : bool, default True
        Embed the reference images (needed to match units across folds).

    Returns
    -------
    ModelOutputs
    """
    meta, label = rep.meta, rep.label
    n_all, d = X_full.shape
    mo = ModelOutputs(lung_in=np.full((n_all, d), np.nan), lung_tot=np.full((n_all, d), np.nan))
    ctx = _image_context(rep, dataset, settings, reference)
    mo.rows = ctx.rows
    acc = _Collected()
    rng = np.random.default_rng(settings.seed)
    # created with the first model: a run without models never imports the deep-learning library
    holder = None
    t_models = time.perf_counter()
    t_attr = 0.0
    for f in rep.folds:
        path = fold_model_path(run_dir, label, f)
        pos = np.flatnonzero(meta["fold"].to_numpy() == f)
        if path is None:
            rep.skipped.append(
                {
                    "test": "model",
                    "class": None,
                    "n": len(pos),
                    "reason": f"fold {f}: no model.keras; attributions, maps and blackout skipped",
                }
            )
            continue
        holder = holder if holder is not None else strategy_models()
        try:
            fm = open_fold_model(path, strategy=label, fold=f, models=holder)
        except BiomarkError as err:
            _model_failed(rep, f, err)
            continue
        mo.models[f] = fm
        Xf = X_full[pos].astype(np.float64)
        if ctx.masks is not None and ctx.rows is not None:
            passed = _fold_image_pass(fm, str(path), f, pos, Xf, rep, ctx, settings, rng, mo, acc)
            if passed is None:
                continue
            head, Xf = passed
        else:
            head = Head.from_arrays(fm.head_arrays(), where=str(path))
            Xf = np.where(np.isfinite(Xf), Xf, 0.0)
        t_attr += _fold_attributions(head, Xf, ctx.labels[pos], f, settings, mo, acc)
    rep.seconds["models"] = time.perf_counter() - t_models - t_attr
    rep.seconds["attributions"] = t_attr
    rep.gradcam = acc.cams[: settings.n_gradcam]
    if acc.additivity:
        rep.additivity = pd.DataFrame(acc.additivity)
    if acc.blackout:
        rep.blackout = _blackout_table(acc.blackout, _blacked_out_labels(meta))
    if acc.swap:
        rep.lung_swap = pd.concat(acc.swap, ignore_index=True)
    if not np.isfinite(mo.lung_tot).any():  # type: ignore[arg-type]
        mo.lung_in = mo.lung_tot = None
    return mo


@dataclass
class _ImageContext:
    """What every fold's image pass shares: dataset rows, lung masks, the localisation method, the
    reference set."""

    labels: np.ndarray  # class of every out-of-fold image (rows of ``rep.meta``), as text
    dataset: Dataset | None = None
    rows: np.ndarray | None = None  # dataset row of every out-of-fold image
    masks: LungMasks | None = None
    occlusion: bool = False  # localise by occlusion (maps too coarse) instead of out_relu maps
    fill: Any = None  # the mean image, with the occlusion
    ref_pos: np.ndarray | None = None  # positions in meta of the reference images
    ref_images: Any = None  # their pixels, with the unit matching


@dataclass
class _Collected:
    """Rows gathered over the folds: Grad-CAM overlays, blackout accuracies, lung-swap answers,
    attribution summaries."""

    cams: list[dict[str, Any]] = field(default_factory=list)
    blackout: list[dict[str, Any]] = field(default_factory=list)
    swap: list[pd.DataFrame] = field(default_factory=list)
    additivity: list[dict[str, Any]] = field(default_factory=list)


def _image_context(
    rep: StrategyReport, dataset: Dataset | None, settings: ReportSettings, reference: bool
) -> _ImageContext:
    """Read the masks and decide how to localise (maps or occlusion); fills the mask fields and
    notes of ``rep``."""
    label, meta = rep.label, rep.meta
    ctx = _ImageContext(labels=meta["label"].astype(str).to_numpy(), dataset=dataset)
    ctx.rows = _rows_of(dataset, meta["image_id"].to_numpy()) if dataset is not None else None
    if dataset is None:
        rep.notes.append(
            f"{label}: the run's dataset is not readable here; image maps, lung fractions and "
            "the blackout control are missing."
        )
        return ctx
    if ctx.rows is None:
        rep.notes.append(
            f"{label}: some out-of-fold images are not in the dataset; image sections are missing."
        )
        return ctx
    lm = lung_masks(dataset, ctx.rows)
    ctx.masks, rep.mask_source = lm, lm.source
    if len(lm.problems):
        rep.notes.append(
            f"{label}: {len(lm.problems)} lung mask(s) unusable ({lm.source}); those images are "
            "left out of lung fractions and the blackout."
        )
    side = int(rep.image_size or dataset.size)
    grid = (_grid_side(side), _grid_side(side))
    if lm.usable.any():
        rep.lung_attainable = maps_attainable(lm.masks[lm.usable], side)
        rep.lung_area_fraction = float(lm.masks[lm.usable].mean())
    ctx.occlusion = by_occlusion(rep.lung_attainable, settings)
    if ctx.occlusion:
        ctx.fill = read_rows(dataset, ctx.rows).mean(axis=0)
        subset = (
            ""
            if settings.n_controls is None
            else f" on up to {settings.n_controls} test images per fold"
        )
        rep.lung_method = (
            f"occlusion{subset} (lungs vs outside filled with the mean image; out_relu maps of "
            f"{grid[0]}x{grid[1]} reach a lung fraction of only {rep.lung_attainable:.2f})"
        )
    else:
        rep.lung_method = f"out_relu maps ({grid[0]}x{grid[1]})"
    if reference:
        ctx.ref_pos = reference_rows(meta, settings.n_reference, settings.seed)
        ctx.ref_images = read_rows(dataset, ctx.rows[ctx.ref_pos])
        rep.reference_ids = meta["image_id"].astype(str).to_numpy()[ctx.ref_pos]
    return ctx


def _fold_image_pass(
    fm: Any,
    where: str,
    f: int,
    pos: np.ndarray,
    Xf: np.ndarray,
    rep: StrategyReport,
    ctx: _ImageContext,
    settings: ReportSettings,
    rng: np.random.Generator,
    mo: ModelOutputs,
    acc: _Collected,
) -> tuple[Head, np.ndarray] | None:
    """One fold's model over its test images: checks, reference embeddings, lung mass, Grad-CAM,
    blackout.

    Returns the fold's head and its features with non-finite dumped values
    replaced by the model's recomputation; None (and a note in ``rep``) when
    the model could not run on the images.
    """
    assert ctx.masks is not None and ctx.rows is not None
    label, meta, labels = rep.label, rep.meta, ctx.labels
    fold_masks = ctx.masks.masks[pos]
    usable = ctx.masks.usable[pos]

    def reduce(maps: np.ndarray, p: np.ndarray, fm_: np.ndarray = fold_masks) -> tuple:
        return (p, *lung_mass(maps, cell_fractions(fm_[p], maps.shape[2:])))

    n_cam = max(1, settings.n_gradcam // max(1, len(rep.folds)))
    cam_rows = np.sort(rng.choice(len(pos), size=min(n_cam, len(pos)), replace=False))
    images = read_rows(ctx.dataset, ctx.rows[pos])  # type: ignore[arg-type]
    # the image-level controls (blackout, occlusion) run on one class-stratified subset of the fold
    ctrl = (
        np.arange(len(pos))
        if settings.n_controls is None
        else stratified_subset(labels[pos], settings.n_controls, seed=settings.seed + 2000 + f)
    )
    usable_masks = fold_masks * usable[:, None, None]
    pairs = None
    if settings.blackout:  # the lung swap goes with the blackout: both are image-level controls
        donors = pair_donors(labels[pos][ctrl], usable[ctrl], seed=settings.seed + 3000 + f)
        has = donors >= 0
        pairs = np.column_stack([ctrl[has], ctrl[donors[has]]])
    # The reference images among this fold's test images are embedded with them, not twice.
    own = np.isin(ctx.ref_pos, pos) if ctx.ref_pos is not None else None
    try:
        out = run_fold_model(
            fm,
            images,
            strategy=label,
            fold=f,
            reduce=None if ctx.occlusion else reduce,
            cam_rows=cam_rows,
            blackout_masks=usable_masks if settings.blackout else None,
            reference_images=ctx.ref_images[~own] if own is not None else None,
            occlusion=(usable_masks, ctx.fill) if ctx.occlusion else None,
            control_rows=ctrl,
            swap=(usable_masks, pairs, round(settings.swap_margin * images.shape[-1]))
            if pairs is not None
            else None,
        )
    except BiomarkError as err:
        _model_failed(rep, f, err)
        return None
    head = Head.from_arrays(out.head, where=where)
    _check_against_dump(out, head, Xf, rep, f, pos)
    Xf = np.where(np.isfinite(Xf), Xf, out.gap)
    if own is not None:
        _store_reference(out, own, pos, ctx.ref_pos, mo, f)  # type: ignore[arg-type]
    _store_lung_mass(out, ctrl if ctx.occlusion else None, usable, pos, mo)
    if out.cam_maps is not None:
        _store_gradcam(out.cam_maps, head, Xf, cam_rows, images, rep, labels, f, pos, acc)
    if out.blackout_gap is not None and usable[ctrl].any():
        acc.blackout.append(
            _blackout_fold(
                head.probs(out.blackout_gap),
                meta,
                labels,
                list(rep.classes),
                pos[ctrl],
                usable[ctrl],
                f,
            )
        )
    if out.swap_gap is not None and pairs is not None:
        acc.swap.append(_swap_fold(head.probs(out.swap_gap), meta, labels, rep, pos, pairs, f))
    return head, Xf


def _swap_fold(
    probs: np.ndarray,
    meta: pd.DataFrame,
    labels: np.ndarray,
    rep: StrategyReport,
    pos: np.ndarray,
    pairs: np.ndarray,
    f: int,
) -> pd.DataFrame:
    """One row per lung-swap composite of the fold: whose surroundings, whose lungs, and the
    answers."""
    outside, lungs = pos[pairs[:, 0]], pos[pairs[:, 1]]
    ids = meta["image_id"].astype(str).to_numpy()
    return pd.DataFrame(
        {
            "fold": f,
            "image_id": ids[outside],
            "lung_donor": ids[lungs],
            "label": labels[outside],
            "lung_label": labels[lungs],
            "pred": meta["pred"].astype(str).to_numpy()[outside],
            "pred_swap": np.asarray(rep.classes, dtype=object)[probs.argmax(axis=1)],
        }
    )


def _model_failed(rep: StrategyReport, fold: int, err: BiomarkError) -> None:
    """A fold model that cannot be loaded or run: a warning box at the top and in the log, not a
    footnote."""
    rep.warnings.append(
        warning(
            rep.label,
            fold,
            "all",
            "model",
            f"{err}; this fold's attributions, maps, blackout and lung swap are skipped",
        )
    )


def _check_against_dump(
    out: Any, head: Head, Xf: np.ndarray, rep: StrategyReport, f: int, pos: np.ndarray
) -> None:
    """Warn where the model's recomputed features or probabilities disagree with what extract
    dumped."""
    names_full = [f"f{j:04d}" for j in range(Xf.shape[1])]
    err_gap, w = model_disagreement(
        out.map_gap, Xf, strategy=rep.label, fold=f, feature_names=names_full
    )
    rep.warnings.extend(w)
    prob_cols = [f"prob_{c}" for c in rep.classes]
    if set(prob_cols) <= set(rep.meta.columns):
        dumped = rep.meta[prob_cols].to_numpy(dtype=np.float64)[pos]
        _, w = model_disagreement(
            head.probs(np.where(np.isfinite(Xf), Xf, out.gap)),
            dumped,
            strategy=rep.label,
            fold=f,
            feature_names=prob_cols,
            what="probabilities",
        )
        rep.warnings.extend(w)
    rep.identity_error = float(np.nanmax([rep.identity_error, err_gap]))


def _store_reference(
    out: Any, own: np.ndarray, pos: np.ndarray, ref_pos: np.ndarray, mo: ModelOutputs, f: int
) -> None:
    """The fold's embedding of the reference images: its own test images' GAP plus the others' extra
    pass."""
    ref = np.empty((own.size, out.gap.shape[1]), dtype=np.float32)
    ref[own] = out.gap[np.searchsorted(pos, ref_pos[own])]
    if (~own).any() and out.reference_gap is not None:
        ref[~own] = out.reference_gap
    mo.reference[f] = ref


def _store_lung_mass(
    out: Any, ctrl: np.ndarray | None, usable: np.ndarray, pos: np.ndarray, mo: ModelOutputs
) -> None:
    """Per image and unit, activation (or occlusion effect, on the ``ctrl`` rows) inside the lungs
    and in total."""
    if ctrl is not None and out.gap_lungs_filled is not None and out.gap_outside_filled is not None:
        ok = usable[ctrl]
        inside, total = occlusion_effects(
            out.gap[ctrl], out.gap_lungs_filled, out.gap_outside_filled
        )
        mo.lung_in[pos[ctrl[ok]]] = inside[ok]  # type: ignore[index]
        mo.lung_tot[pos[ctrl[ok]]] = total[ok]  # type: ignore[index]
    for p, inside, total in out.reduced:
        ok = usable[p]
        mo.lung_in[pos[p[ok]]] = inside[ok]  # type: ignore[index]
        mo.lung_tot[pos[p[ok]]] = total[ok]  # type: ignore[index]


def _store_gradcam(
    cam_maps: np.ndarray,
    head: Head,
    Xf: np.ndarray,
    cam_rows: np.ndarray,
    images: np.ndarray,
    rep: StrategyReport,
    labels: np.ndarray,
    f: int,
    pos: np.ndarray,
    acc: _Collected,
) -> None:
    """Grad-CAM overlays of the predicted class on the fold's chosen images (``labels``: of every
    row of ``rep.meta``)."""
    meta, classes = rep.meta, list(rep.classes)
    gap = Xf[cam_rows]
    pred = head.probs(gap).argmax(axis=1)
    cam = grad_cam(cam_maps, head.gradient(gap, pred, "logit"))
    for i, r in enumerate(cam_rows):
        acc.cams.append(
            {
                "image_id": meta["image_id"].iat[pos[r]],
                "label": labels[pos[r]],
                "pred": classes[int(pred[i])],
                "fold": f,
                "image": images[r],
                "overlay": upsample(cam[i], images[r].shape),
            }
        )


def _blackout_fold(
    blackout_probs: np.ndarray,
    meta: pd.DataFrame,
    labels: np.ndarray,
    classes: list[str],
    rows_c: np.ndarray,
    ok: np.ndarray,
    f: int,
) -> dict[str, Any]:
    """Accuracy with and without the lungs blacked out on the fold's control images; per-image
    predictions into ``meta``."""
    truth = pd.Index(classes).get_indexer(labels[rows_c])
    orig = pd.Index(classes).get_indexer(meta["pred"].astype(str).to_numpy()[rows_c])
    bo = blackout_probs.argmax(axis=1)
    if "pred_blackout" not in meta:  # per image, for biomark.analysis.blackout.read_blackout
        meta["pred_blackout"] = pd.Series([None] * len(meta), index=meta.index, dtype=object)
    meta.iloc[rows_c[ok], meta.columns.get_loc("pred_blackout")] = np.asarray(classes, object)[
        bo[ok]
    ]
    chance = float(pd.Series(truth[ok]).value_counts(normalize=True).max())
    return {
        "fold": f,
        "n": int(ok.sum()),
        "accuracy_original": float(np.mean(orig[ok] == truth[ok])),
        "accuracy_blackout": float(np.mean(bo[ok] == truth[ok])),
        "majority_rate": chance,
    }


def _fold_attributions(
    head: Head,
    Xf: np.ndarray,
    labels: np.ndarray,
    f: int,
    settings: ReportSettings,
    mo: ModelOutputs,
    acc: _Collected,
) -> float:
    """Attributions of the head on the fold's test images (a stratified subset); returns their
    seconds."""
    n = len(Xf)
    sub = (
        np.arange(n)
        if settings.shap_samples is None
        else stratified_subset(labels, settings.shap_samples, seed=settings.seed + f)
    )
    bg = np.sort(
        np.random.default_rng(settings.seed + 1000 + f).choice(
            n, size=min(settings.n_background, n), replace=False
        )
    )
    att = explain_head(
        head,
        Xf[sub],
        Xf[bg],
        method=settings.shap_method,
        n_permutations=settings.n_permutations,
        seed=settings.seed + f,
        precision=settings.shap_precision,
    )
    mo.importance[f] = att.mean_abs()
    acc.additivity.append(
        {
            "fold": f,
            "n_explained": len(sub),
            "n_background": len(bg),
            "method": att.method,
            "output": att.output,
            "n_permutations": att.n_permutations,
            "precision": settings.shap_precision,
            **att.additivity_summary(),
            "seconds": att.seconds,
        }
    )
    return att.seconds


def _blacked_out_labels(meta: pd.DataFrame) -> pd.Series:
    """The true class of every image with a blacked-out prediction, all folds together."""
    return meta.loc[meta["pred_blackout"].notna(), "label"].astype(str)


def _blackout_table(bo_rows: list[dict[str, Any]], pooled_labels: pd.Series) -> pd.DataFrame:
    """The per-fold blackout rows and a pooled row ``fold == "all"``.

    The pooled row's majority rate is that of the pooled images (always answering the class
    most frequent among them), as :func:`biomark.analysis.blackout.read_blackout` reads it, so the
    table's pooled ``survival_above_chance`` is the figure the page's sentence quotes. It can sit
    below the folds' own majority rates, whose majority classes may differ.
    """
    bo = pd.DataFrame(bo_rows)
    n = bo["n"].to_numpy()
    pooled = {
        "fold": "all",
        "n": int(n.sum()),
        "accuracy_original": float(np.average(bo["accuracy_original"], weights=n)),
        "accuracy_blackout": float(np.average(bo["accuracy_blackout"], weights=n)),
        "majority_rate": float(pooled_labels.value_counts(normalize=True).max()),
    }
    bo = pd.concat([bo, pd.DataFrame([pooled])], ignore_index=True)
    with np.errstate(divide="ignore", invalid="ignore"):
        bo["survival"] = bo["accuracy_blackout"] / bo["accuracy_original"]
        above = bo["accuracy_original"] - bo["majority_rate"]
        bo["survival_above_chance"] = np.where(
            above > 0,
            (bo["accuracy_blackout"] - bo["majority_rate"]) / above.where(above > 0),
            np.nan,
        )
    return bo
