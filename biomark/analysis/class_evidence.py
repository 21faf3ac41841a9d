"""Does the network grade each disease, and by what? Its own class evidence, within the class.

A graded biomarker rises with the severity of its disease among the patients
who have it. No single GAP unit need do that (the network spreads what it
knows over many units), but the network's own evidence for a class does
whenever the network grades the disease: how much more probable it finds the
class than a normal film,

    evidence_c(image) = log p(c | image) - log p(Normal | image),

from the out-of-fold probabilities (each image scored by the fold model that
never trained on it). :func:`evidence_scores` computes it;
:func:`evidence_table` says, per class and among that class's images only,
which lung radiomic features the evidence rises or falls with (Spearman,
Benjamini-Hochberg across the class's features), and on a phantom how well it
tracks the planted severity and burden. On the demo's clean phantoms it did at
|rho| >= 0.5 in 1-4 of 6 classes per seed, more often than any one unit the
report picks (``benchmarks/acceptance_pick_rules.py``).

numpy/pandas/scipy only.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pandas as pd
from scipy import stats

from biomark.analysis.associate import radiomic_family
from biomark.analysis.phantom_truth import spearman_columns, spearman_p
from biomark.analysis.radiomic_zones import radiomic_zones
from biomark.analysis.stats import bh_fdr

__all__ = ["EVIDENCE_COLUMNS", "evidence_scores", "evidence_table"]

#: Columns of :func:`evidence_table`, in order.
EVIDENCE_COLUMNS = [
    "class",
    "n",
    "evidence_median",
    "n_radiomic",
    "n_associated",
    "top_correlates",
    "top_families",
    "top_zone",
    "severity_rho",
    "severity_p",
    "note",
    "burden_rho",
    "burden_p",
]

#: Probabilities are floored here before the log, so that a probability
#: rounded to 0 gives a large but finite evidence.
PROBABILITY_FLOOR = 1e-7


def evidence_scores(
    probabilities: np.ndarray, classes: Sequence[str], *, normal: str = "Normal"
) -> pd.DataFrame:
    """Per image, the log-odds of each diseased class against the normal class.

    Parameters
    ----------
    probabilities : ndarray of shape (n_images, n_classes)
        Softmax outputs, columns in the order of ``classes``.
    classes : sequence of str
    normal : str, default "Normal"

    Returns
    -------
    DataFrame
        One column per class other than ``normal`` (rows as given).

    Raises
    ------
    ValueError
        If ``normal`` is not among ``classes`` or the widths differ.

    Examples
    --------
    >>> p = np.array([[0.5, 0.25, 0.25]])
    >>> evidence_scores(p, ["A", "B", "Normal"]).round(3).to_dict("records")
    [{'A': 0.693, 'B': 0.0}]
    """
    P = np.asarray(probabilities, dtype=np.float64)
    names = [str(c) for c in classes]
    if P.ndim != 2 or P.shape[1] != len(names):
        raise ValueError(f"probabilities of shape {P.shape} for {len(names)} classes")
    if normal not in names:
        raise ValueError(f"no {normal!r} class among {names}: the evidence is against it")
    logp = np.log(np.clip(P, PROBABILITY_FLOOR, 1.0))
    base = logp[:, names.index(normal)]
    return pd.DataFrame(
        {c: logp[:, j] - base for j, c in enumerate(names) if c != normal},
    )


def evidence_table(
    scores: pd.DataFrame,
    labels: Sequence[str],
    *,
    radiomics: pd.DataFrame | None = None,
    severity: Sequence[float] | None = None,
    burden: Sequence[float] | None = None,
    top: int = 3,
    alpha: float = 0.05,
    min_images: int = 10,
) -> pd.DataFrame:
    """Per diseased class: what the network's evidence tracks among that class's images.

    Parameters
    ----------
    scores : DataFrame
        :func:`evidence_scores`, rows aligned with ``labels``.
    labels : sequence of str
        True class of every image.
    radiomics : DataFrame, optional
        Lung radiomic features of the same images (rows aligned; NaN where an
        image has none). Columns that are constant or incomplete within a
        class are left out of that class.
    severity : sequence of float, optional
        A planted or graded severity (phantom): adds ``severity_rho`` and
        ``severity_p``.
    burden : sequence of float, optional
        How much signature each film holds (the phantom's ``burden``; NaN
        where a class has none): adds ``burden_rho`` and ``burden_p``.
    top : int, default 3
        Correlates named per class.
    alpha : float, default 0.05
        False discovery rate of ``n_associated``.
    min_images : int, default 10
        Classes with fewer images are listed with a note and not tested.

    Returns
    -------
    DataFrame
        :data:`EVIDENCE_COLUMNS`: ``n_radiomic`` features tested, ``n_associated``
        of them at the FDR, ``top_correlates`` the strongest of those as
        ``name (+rho)``, ``top_families`` the families of the associated ones,
        ``top_zone`` the lung zones where the strongest, measured zone by zone,
        tracks the evidence better than in the rest of its band
        (:func:`~biomark.analysis.radiomic_zones.radiomic_zones`; ``""`` where none
        leads or there are no zone features).
    """
    labels_arr = np.asarray([str(v) for v in labels], dtype=object)
    if len(labels_arr) != len(scores):
        raise ValueError(f"{len(scores)} evidence rows for {len(labels_arr)} labels")
    sev = None if severity is None else np.asarray(severity, dtype=np.float64)
    load = None if burden is None else np.asarray(burden, dtype=np.float64)
    R = None if radiomics is None else radiomics.to_numpy(dtype=np.float64)
    rows = []
    for cls in scores.columns:
        inside = labels_arr == cls
        n = int(inside.sum())
        row: dict[str, object] = {"class": cls, "n": n}
        if n < min_images:
            rows.append({**row, "note": f"fewer than {min_images} images"})
            continue
        ev = scores[cls].to_numpy(dtype=np.float64)[inside]
        row["evidence_median"] = float(np.median(ev))
        if np.ptp(ev) == 0:
            rows.append({**row, "note": "the evidence is constant within the class"})
            continue
        if R is not None and radiomics is not None:
            Rc = R[inside]
            usable = np.isfinite(Rc).all(axis=0) & (np.ptp(np.nan_to_num(Rc), axis=0) > 0)
            names = [c for c, ok in zip(radiomics.columns, usable, strict=True) if ok]
            row["n_radiomic"] = len(names)
            if names:
                rho = spearman_columns(Rc[:, usable], ev)  # finite: constant columns left out
                hit = np.flatnonzero(bh_fdr(spearman_p(rho, n), alpha)[0])
                order = hit[np.argsort(-np.abs(rho[hit]))]
                row["n_associated"] = len(hit)
                if len(hit):
                    row["top_correlates"] = "; ".join(
                        f"{names[j]} ({rho[j]:+.2f})" for j in order[:top]
                    )
                    families = pd.Series([radiomic_family(names[j]) for j in hit]).value_counts()
                    row["top_families"] = ", ".join(f"{k}: {v}" for k, v in families.items())
                    first = int(order[0])
                    row["top_zone"] = radiomic_zones(
                        ev[:, None],
                        pd.DataFrame(Rc[:, usable], columns=names),
                        {cls: (names[first], float(rho[first]))},
                        [cls],
                    ).iloc[0]
        for name, planted in (("severity", sev), ("burden", load)):
            if planted is None:
                continue
            s = planted[inside]
            ok = np.isfinite(s)
            if ok.sum() >= min_images and np.ptp(s[ok]) > 0:
                res = stats.spearmanr(ev[ok], s[ok])
                row[f"{name}_rho"], row[f"{name}_p"] = float(res.statistic), float(res.pvalue)
        rows.append(row)
    return pd.DataFrame(rows).reindex(columns=EVIDENCE_COLUMNS)
