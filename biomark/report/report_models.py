"""The model-based evidence of the biomarker report: SHAP, maps, lung mass, blackout, thumbnails.

:func:`model_evidence` goes through a strategy's finished folds; for each fold
with a ``model.keras`` it loads the model once
(:func:`biomark.features.report_inputs.run_fold_model`) and computes, on the
fold's test images: SHAP values of the numpy head
(:func:`biomark.analysis.attribution.explain_head`), the activation mass of
every GAP feature inside the lung masks
(:func:`biomark.analysis.localisation.lung_mass`), Grad-CAM of a few images
and the accuracy with the lungs blacked out. :func:`thumbnails` draws the
images with the highest and lowest values of the top features with their
maps. Without a dataset or a model the corresponding fields stay empty and
a note says why.
"""

from __future__ import annotations

import logging
import time
import warnings
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

from biomark.analysis.attribution import explain_head, stratified_subset
from biomark.analysis.head import Head
from biomark.analysis.localisation import cell_fractions, grad_cam, lung_mass, upsample
from biomark.data.dataset import Dataset
from biomark.exceptions import BiomarkError
from biomark.features.report_inputs import fold_model_path, load_head, lung_masks, run_fold_model, selected_maps

if TYPE_CHECKING:  # pragma: no cover - typing only
    from biomark.report.report_strategy import ReportSettings, StrategyReport

__all__ = ["model_evidence", "thumbnails"]

logger = logging.getLogger(__name__)


def _rows_of(dataset: Dataset, ids: np.ndarray) -> np.ndarray | None:
    index = pd.Index(dataset.manifest["image_id"].astype(str))
    rows = index.get_indexer(ids.astype(str))
    return None if (rows < 0).any() else rows


def model_evidence(run_dir: Any, rep: StrategyReport, dataset: Dataset | None, X_full: np.ndarray,
                   keep: np.ndarray, settings: ReportSettings) -> tuple[dict[int, np.ndarray], np.ndarray | None]:
    """Run every fold's model once and fill the model-based fields of ``rep``.

    Parameters
    ----------
    run_dir : path
    rep : StrategyReport
        Filled in place: ``additivity``, ``blackout``, ``lung``,
        ``lung_area_fraction``, ``lung_attainable``, ``per_image_lung``,
        ``mask_source``, ``identity_error``, ``gradcam``, ``notes``, ``skipped``.
    dataset : Dataset or None
    X_full : ndarray of shape (n_images, n_features)
        Out-of-fold GAP features (all features), rows as ``rep.meta``.
    keep : ndarray of int
        Non-constant feature columns (``rep.feature_names``).
    settings : ReportSettings

    Returns
    -------
    importance : dict of int to ndarray of shape (n_features, n_classes)
        Per fold with a model: mean |SHAP| of every class logit.
    rows : ndarray of int or None
        Dataset rows of ``rep.meta`` (None without a usable dataset).
    """
    meta, label = rep.meta, rep.label
    labels = meta["label"].astype(str).to_numpy()
    classes = list(rep.classes)
    names_full = [f"f{j:04d}" for j in range(X_full.shape[1])]
    names = rep.feature_names
    present = rep.folds
    lung_in = np.full((len(meta), len(names_full)), np.nan)
    lung_tot = np.full((len(meta), len(names_full)), np.nan)
    area: list[float] = []
    attainable: list[float] = []
    per_fold_imp: dict[int, np.ndarray] = {}
    add_rows, bo_rows = [], []
    cam_store: list[dict[str, Any]] = []
    masks_all = None
    rows_all = _rows_of(dataset, meta["image_id"].to_numpy()) if dataset is not None else None
    if dataset is None:
        rep.notes.append(f"{label}: the run's dataset is not readable here; image maps, lung fractions and "
                         "the blackout control are missing.")
    elif rows_all is None:
        rep.notes.append(f"{label}: some out-of-fold images are not in the dataset; image sections are missing.")
    else:
        lm = lung_masks(dataset, rows_all)
        masks_all, rep.mask_source = lm, lm.source
        if len(lm.problems):
            rep.notes.append(f"{label}: {len(lm.problems)} lung mask(s) unusable ({lm.source}); those images are "
                             "left out of lung fractions and the blackout.")
    rng = np.random.default_rng(settings.seed)
    t_models = time.perf_counter()
    for f in present:
        path = fold_model_path(run_dir, label, f)
        pos = np.flatnonzero(meta["fold"].to_numpy() == f)
        if path is None:
            rep.skipped.append({"test": "model", "class": None, "n": len(pos),
                                "reason": f"fold {f}: no model.keras; SHAP, maps and blackout skipped"})
            continue
        head = None
        if masks_all is not None and rows_all is not None:
            fold_masks = masks_all.masks[pos]
            usable = masks_all.usable[pos]

            def reduce(maps: np.ndarray, p: np.ndarray, fm: np.ndarray = fold_masks) -> tuple:
                fr = cell_fractions(fm[p], maps.shape[2:])
                inside, total = lung_mass(maps, fr)
                return p, inside, total, fr.mean(axis=(1, 2)), fr.max(axis=(1, 2))

            n_cam = max(1, settings.n_gradcam // max(1, len(present)))
            cam_rows = np.sort(rng.choice(len(pos), size=min(n_cam, len(pos)), replace=False))
            images = np.asarray(dataset.images[np.sort(rows_all[pos])])[np.argsort(np.argsort(rows_all[pos]))]
            try:
                out = run_fold_model(path, images, strategy=label, fold=f, reduce=reduce, cam_rows=cam_rows,
                                     blackout_masks=fold_masks * usable[:, None, None] if settings.blackout else None)
            except BiomarkError as err:
                rep.notes.append(str(err))
                continue
            head = Head.from_arrays(out.head, where=str(path))
            rep.identity_error = np.nanmax([rep.identity_error, float(np.abs(out.map_gap - X_full[pos]).max())])
            for p, inside, total, fr_mean, fr_max in out.reduced:
                ok = usable[p]
                lung_in[pos[p[ok]]] = inside[ok]
                lung_tot[pos[p[ok]]] = total[ok]
                area.extend(fr_mean[ok].tolist())
                attainable.extend(fr_max[ok].tolist())
            if out.cam_maps is not None:
                gap = X_full[pos[cam_rows]]
                pred = head.probs(gap).argmax(axis=1)
                cam = grad_cam(out.cam_maps, head.gradient(gap, pred, "logit"))
                for i, r in enumerate(cam_rows):
                    cam_store.append({"image_id": meta["image_id"].iat[pos[r]], "label": labels[pos[r]],
                                      "pred": classes[int(pred[i])], "fold": f, "image": images[r],
                                      "overlay": upsample(cam[i], images[r].shape)})
            if out.blackout_probs is not None and usable.any():
                truth = pd.Index(classes).get_indexer(labels[pos])
                orig = pd.Index(classes).get_indexer(meta["pred"].astype(str).to_numpy()[pos])
                bo = out.blackout_probs.argmax(axis=1)
                if "pred_blackout" not in meta:  # per image, for biomark.analysis.controls.read_blackout
                    meta["pred_blackout"] = pd.Series([None] * len(meta), index=meta.index, dtype=object)
                meta.iloc[pos[usable], meta.columns.get_loc("pred_blackout")] = np.asarray(classes, object)[bo[usable]]
                chance = float(pd.Series(truth[usable]).value_counts(normalize=True).max())
                bo_rows.append({"fold": f, "n": int(usable.sum()),
                                "accuracy_original": float(np.mean(orig[usable] == truth[usable])),
                                "accuracy_blackout": float(np.mean(bo[usable] == truth[usable])),
                                "majority_rate": chance})
        else:
            head = Head.from_arrays(load_head(path), where=str(path))
        # SHAP on the head, this fold's test images
        Xf = X_full[pos].astype(np.float64)
        sub = stratified_subset(labels[pos], settings.shap_samples, seed=settings.seed + f)
        bg = np.sort(np.random.default_rng(settings.seed + 1000 + f).choice(
            len(pos), size=min(settings.n_background, len(pos)), replace=False))
        att = explain_head(head, Xf[sub], Xf[bg], n_permutations=settings.n_permutations, seed=settings.seed + f,
                           precision=settings.shap_precision)  # type: ignore[arg-type]
        per_fold_imp[f] = att.mean_abs()
        add_rows.append({"fold": f, "n_explained": len(sub), "n_background": len(bg), "method": att.method,
                         "output": att.output, "n_permutations": att.n_permutations,
                         "precision": settings.shap_precision,
                         **att.additivity_summary(), "seconds": att.seconds})
    rep.seconds["models_and_shap"] = time.perf_counter() - t_models
    rep.gradcam = cam_store[: settings.n_gradcam]
    if add_rows:
        rep.additivity = pd.DataFrame(add_rows)
    if bo_rows:
        bo = pd.DataFrame(bo_rows)
        n = bo["n"].to_numpy()
        pooled = {"fold": "all", "n": int(n.sum()),
                  "accuracy_original": float(np.average(bo["accuracy_original"], weights=n)),
                  "accuracy_blackout": float(np.average(bo["accuracy_blackout"], weights=n)),
                  "majority_rate": float(np.average(bo["majority_rate"], weights=n))}
        bo = pd.concat([bo, pd.DataFrame([pooled])], ignore_index=True)
        with np.errstate(divide="ignore", invalid="ignore"):
            bo["survival"] = bo["accuracy_blackout"] / bo["accuracy_original"]
            above = bo["accuracy_original"] - bo["majority_rate"]
            bo["survival_above_chance"] = np.where(
                above > 0, (bo["accuracy_blackout"] - bo["majority_rate"]) / above.where(above > 0), np.nan)
        rep.blackout = bo
    if np.isfinite(lung_tot).any():
        tot = np.nansum(lung_tot, axis=0)
        with np.errstate(divide="ignore", invalid="ignore"):
            frac = np.where(tot > 0, np.nansum(lung_in, axis=0) / tot, np.nan)
            per_image = np.where(lung_tot > 0, lung_in / lung_tot, np.nan)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)
            median = np.nanmedian(per_image, axis=0)
        rep.lung = pd.DataFrame({"lung_fraction": frac[keep], "lung_fraction_median": median[keep]},
                                index=pd.Index(names, name="feature"))
        rep.lung_area_fraction = float(np.mean(area)) if area else float("nan")
        rep.lung_attainable = float(np.mean(attainable)) if attainable else float("nan")
        rep.per_image_lung = per_image
    return per_fold_imp, rows_all


def thumbnails(run_dir: Any, rep: StrategyReport, dataset: Dataset | None, rows_all: np.ndarray | None,
                X_full: np.ndarray, settings: ReportSettings) -> list[dict[str, Any]]:
    """Highest- and lowest-valued images of the top features with the feature's map overlaid.

    Returns
    -------
    list of dict
        Per feature: ``feature, class, status, tiles`` (each tile: ``image_id, label, value,
        which, image, overlay, lung_fraction``).
    """
    table = rep.candidates
    if dataset is None or rows_all is None or table is None or table.empty or settings.n_gallery < 1:
        return []
    order = table.assign(_c=table["is_candidate"].fillna(False).astype(bool)).sort_values(
        ["_c", "rank"], ascending=[False, True], kind="stable")
    picked = order.drop_duplicates("feature").head(settings.n_gallery)
    per_image = rep.per_image_lung
    folds = rep.meta["fold"].to_numpy()
    n = settings.n_thumbnails
    requests = []  # (feature row, tile rank, image position, channel)
    for g, (_, row) in enumerate(picked.iterrows()):
        j = int(str(row["feature"])[1:])
        order_idx = np.argsort(X_full[:, j], kind="stable")
        for rank, i in enumerate(list(order_idx[::-1][:n]) + list(order_idx[:n])):
            requests.append((g, rank, int(i), j))
    maps: dict[tuple[int, int], np.ndarray] = {}
    for f in sorted({int(folds[i]) for _, _, i, _ in requests}):
        path = fold_model_path(run_dir, rep.label, f)
        if path is None:
            continue
        here = sorted({i for _, _, i, _ in requests if folds[i] == f})
        channels = sorted({j for _, _, i, j in requests if folds[i] == f})
        images = np.stack([np.asarray(dataset.images[rows_all[i]]) for i in here])
        fmaps = selected_maps(path, images, channels)
        for a, i in enumerate(here):
            for b, j in enumerate(channels):
                maps[(i, j)] = fmaps[a, b]
    out = []
    for g, (_, row) in enumerate(picked.iterrows()):
        tiles = []
        for gg, rank, i, j in requests:
            if gg != g or (i, j) not in maps:
                continue
            image = np.asarray(dataset.images[rows_all[i]])
            tiles.append({"image_id": rep.meta["image_id"].iat[i], "label": rep.meta["label"].iat[i],
                          "value": float(X_full[i, j]), "which": "highest" if rank < n else "lowest",
                          "image": image, "overlay": upsample(maps[(i, j)], image.shape),
                          "lung_fraction": float(per_image[i, j]) if per_image is not None else float("nan")})
        if tiles:
            out.append({"feature": row["feature"], "class": row["class"], "status": row["status"], "tiles": tiles})
    return out
