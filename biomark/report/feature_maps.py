"""Per-feature image evidence of the biomarker report: lung fractions and map thumbnails.

:func:`lung_table` pools, per feature, the share of its activation (or of its
occlusion effect) that falls inside the lung masks; :func:`thumbnails` draws
the images with the highest and lowest values of the top features with the
feature's ``out_relu`` map overlaid, through the fold models
:func:`biomark.report.report_models.model_evidence` left open.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd

from biomark.analysis.alignment import FoldAlignment
from biomark.analysis.inputs import true_where
from biomark.analysis.localisation import upsample
from biomark.data.dataset import Dataset
from biomark.features.report_inputs import selected_maps
from biomark.report.report_models import ModelOutputs, read_rows
from biomark.report.strategy_report import ReportSettings, StrategyReport

__all__ = ["lung_table", "thumbnails"]


def lung_table(
    lung_in: np.ndarray, lung_tot: np.ndarray, keep: np.ndarray, names: list[str]
) -> tuple[pd.DataFrame, np.ndarray]:
    """Per feature, the share of its activation (or occlusion effect) inside the lungs.

    Parameters
    ----------
    lung_in, lung_tot : ndarray of shape (n_images, n_features)
        Per image, in the report's (aligned) feature order; NaN where unknown.
    keep : ndarray of int
        Columns tested (``names``).
    names : list of str

    Returns
    -------
    table : DataFrame
        Index ``feature``: ``lung_fraction`` (pooled over images) and ``lung_fraction_median``.
    per_image : ndarray of shape (n_images, n_features)
        ``lung_in / lung_tot`` (NaN where the feature is silent or unknown).
    """
    import warnings

    tot = np.nansum(lung_tot, axis=0)
    with np.errstate(divide="ignore", invalid="ignore"):
        frac = np.where(tot > 0, np.nansum(lung_in, axis=0) / tot, np.nan)
        per_image = np.where(lung_tot > 0, lung_in / lung_tot, np.nan)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        median = np.nanmedian(per_image, axis=0)
    table = pd.DataFrame(
        {"lung_fraction": frac[keep], "lung_fraction_median": median[keep]},
        index=pd.Index(names, name="feature"),
    )
    return table, per_image


def thumbnails(
    rep: StrategyReport,
    dataset: Dataset | None,
    mo: ModelOutputs,
    X: np.ndarray,
    alignment: FoldAlignment | None,
    settings: ReportSettings,
) -> list[dict[str, Any]]:
    """Highest- and lowest-valued images of the top features with the feature's map overlaid.

    Parameters
    ----------
    rep : StrategyReport
        With its candidate table.
    dataset : Dataset or None
    mo : ModelOutputs
        With the open fold models.
    X : ndarray of shape (n_images, n_features)
        Features in the report's (aligned) order; column ``j`` is feature ``j``
        of ``rep.feature_names``' numbering (``f0012`` / ``u0012`` -> 12).
    alignment : FoldAlignment or None
        Maps a family to each fold's channel (None: the identity).
    settings : ReportSettings

    Returns
    -------
    list of dict
        Per feature: ``feature, class, status, tiles`` (each tile: ``image_id, label, value,
        which, image, overlay, lung_fraction, lung_measured``: whether the lung test ran on
        that image; a measured image without a fraction is one where the feature is silent).
    """
    table = rep.candidates
    rows_all = mo.rows
    if (
        dataset is None
        or rows_all is None
        or table is None
        or table.empty
        or settings.n_gallery < 1
    ):
        return []
    order = table.assign(_c=true_where(table["is_candidate"])).sort_values(
        ["_c", "rank"], ascending=[False, True], kind="stable"
    )
    picked = order.drop_duplicates("feature").head(settings.n_gallery)
    per_image = rep.per_image_lung
    measured = rep.per_image_lung_measured
    folds = rep.meta["fold"].to_numpy()
    n = settings.n_thumbnails

    def channel(i: int, j: int) -> int:
        return j if alignment is None else int(alignment.perms[int(folds[i])][j])

    requests = []  # (feature row, tile rank, image position, family)
    for g, (_, row) in enumerate(picked.iterrows()):
        j = int(str(row["feature"])[1:])
        order_idx = np.argsort(X[:, j], kind="stable")
        for rank, i in enumerate(list(order_idx[::-1][:n]) + list(order_idx[:n])):
            requests.append((g, rank, int(i), j))
    maps: dict[tuple[int, int], np.ndarray] = {}
    for f in sorted({int(folds[i]) for _, _, i, _ in requests}):
        fm = mo.models.get(f)
        if fm is None:
            continue
        here = sorted({i for _, _, i, _ in requests if folds[i] == f})
        channels = sorted({channel(i, j) for _, _, i, j in requests if folds[i] == f})
        fmaps = selected_maps(fm, read_rows(dataset, rows_all[here]), channels)
        for a, i in enumerate(here):
            for b, c in enumerate(channels):
                maps[(i, c)] = fmaps[a, b]
    out = []
    for g, (_, row) in enumerate(picked.iterrows()):
        tiles = []
        for gg, rank, i, j in requests:
            if gg != g or (i, channel(i, j)) not in maps:
                continue
            image = np.asarray(dataset.images[rows_all[i]])
            tiles.append(
                {
                    "image_id": rep.meta["image_id"].iat[i],
                    "label": rep.meta["label"].iat[i],
                    "value": float(X[i, j]),
                    "which": "highest" if rank < n else "lowest",
                    "image": image,
                    "overlay": upsample(maps[(i, channel(i, j))], image.shape),
                    "lung_fraction": float(per_image[i, j])
                    if per_image is not None
                    else float("nan"),
                    "lung_measured": bool(measured[i, j]) if measured is not None else False,
                }
            )
        if tiles:
            out.append(
                {
                    "feature": row["feature"],
                    "class": row["class"],
                    "status": row["status"],
                    "tiles": tiles,
                }
            )
    return out
