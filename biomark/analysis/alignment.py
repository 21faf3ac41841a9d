"""Matching the GAP units of separately trained networks across folds.

For ``scratch`` and ``finetune:N`` every fold trains its own backbone, so GAP
unit ``j`` of fold 0 and unit ``j`` of fold 1 are unrelated: any statistic that
compares index ``j`` across folds (top-k frequency, Kendall's W, a pooled test
over out-of-fold rows) mixes different units. Here each fold's units are
matched one to one to the units of a **reference fold** by the correlation of
their activations over one common set of **reference images** that every
fold's model embedded (Li et al. 2016, "Convergent learning: do different
neural networks learn the same representations?": one-to-one bipartite
matching of units by activation correlation). One pair of networks is matched
by :func:`biomark.analysis.unit_match.match_units`.

* :func:`align_folds` -- every fold matched to the reference fold:
  :class:`FoldAlignment` with, per fold, the permutation that puts the fold's
  units into the reference fold's order, the matched correlations, and the
  *unit families* (reference unit ``j`` with its per-fold members). Given the
  images' classes it matches on the variation *within* classes
  (:func:`centre_within_classes`): what a biomarker must grade.
* :func:`identity_alignment` -- a shared backbone (``frozen`` with pretrained
  weights): unit ``j`` is the same unit in every fold.
* :func:`align_rows` -- out-of-fold rows put into the reference fold's unit order.

What a matched family reads on the reference images (its consensus, its members'
agreement within each class) is :mod:`biomark.analysis.unit_families`.

numpy/scipy only.

Examples
--------
Three folds whose units are noisy copies of fold 0's, each in its own order:

>>> rng = np.random.default_rng(0)
>>> fold0 = rng.standard_normal((200, 5))
>>> order = {1: np.array([4, 2, 0, 3, 1]), 2: np.array([1, 0, 3, 4, 2])}
>>> folds = {0: fold0}
>>> for f, perm in order.items():     # unit j of fold 0 is unit perm[j] of fold f
...     folds[f] = np.empty_like(fold0)
...     folds[f][:, perm] = fold0 + 0.3 * rng.standard_normal((200, 5))
>>> al = align_folds(folds)
>>> [al.perms[f].tolist() for f in (1, 2)]
[[4, 2, 0, 3, 1], [1, 0, 3, 4, 2]]
>>> al.share_matched()
1.0
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from biomark.analysis.unit_match import match_units
from biomark.exceptions import DataError

__all__ = [
    "FoldAlignment",
    "align_folds",
    "align_rows",
    "centre_within_classes",
    "identity_alignment",
    "own_backbones",
]

logger = logging.getLogger(__name__)

#: Matched correlation from which a unit counts as well matched (``share_matched``).
GOOD_MATCH_R = 0.5

#: Below this share of families matched at ``GOOD_MATCH_R`` in every fold
#: (:meth:`FoldAlignment.share_matched`), every page (compare, radiomics, the report's index) says
#: most matched families mix units that track different things.
POOR_MATCH_SHARE: float = 0.5


@dataclass
class FoldAlignment:
    """Every fold's units put into the reference fold's order.

    Attributes
    ----------
    reference_fold : int
    folds : list of int
    perms : dict of int to ndarray of int, shape (n_units,)
        Per fold: ``perms[f][j]`` is the unit of fold ``f`` in family ``j``
        (the reference fold's permutation is the identity).
    r : dict of int to ndarray of shape (n_units,)
        Per fold: matched correlation with the reference unit (1 for the
        reference fold itself; NaN for silent units).
    null_r : dict of int to ndarray of shape (n_units,)
        Per non-reference fold: :attr:`~biomark.analysis.unit_match.UnitMatch.null_r`.
    best_r : dict of int to ndarray of shape (n_units,)
        Per non-reference fold: :attr:`~biomark.analysis.unit_match.UnitMatch.best_r`.
    method : str
        How the match was made (shown in the report).
    n_reference : int
        Reference images the match used (0 for the identity).
    identity : bool
        True for a shared backbone: no matching was needed.
    within_classes : bool
        True when the units were matched on their variation within classes
        (``r`` are then pooled within-class correlations).

    Examples
    --------
    >>> al = FoldAlignment(
    ...     reference_fold=0,
    ...     folds=[0, 1],
    ...     perms={0: np.array([0, 1, 2]), 1: np.array([2, 0, 1])},
    ...     r={0: np.ones(3), 1: np.array([0.9, 0.8, 0.3])},
    ... )
    >>> al.member_table()
                     members  match_r  unit_f0  unit_f1
    family
    0       f0:0000, f1:0002      0.9        0        2
    1       f0:0001, f1:0000      0.8        1        0
    2       f0:0002, f1:0001      0.3        2        1
    >>> round(al.share_matched(), 3)  # families matched at r >= 0.5 in every fold
    0.667
    """

    reference_fold: int
    folds: list[int]
    perms: dict[int, np.ndarray]
    r: dict[int, np.ndarray]
    null_r: dict[int, np.ndarray] = field(default_factory=dict)
    best_r: dict[int, np.ndarray] = field(default_factory=dict)
    method: str = ""
    n_reference: int = 0
    identity: bool = False
    within_classes: bool = False

    @property
    def n_units(self) -> int:
        """Units per fold."""
        return int(next(iter(self.perms.values())).size)

    def family_r(self) -> np.ndarray:
        """Per family, the weakest matched correlation over the other folds, shape (n_units,).

        1 for a shared backbone or a single fold; NaN when a member is silent.
        """
        others = [self.r[f] for f in self.folds if f != self.reference_fold]
        if not others:
            return np.ones(self.n_units)
        stack = np.vstack(others)
        out = stack.min(axis=0)
        out[np.isnan(stack).any(axis=0)] = np.nan
        return out

    def members(self, family: int) -> str:
        """``"f0:0123, f1:0877, f2:0031"``: the fold units of one family."""
        return ", ".join(f"f{f}:{int(self.perms[f][family]):04d}" for f in self.folds)

    def member_table(self) -> pd.DataFrame:
        """One row per family: ``family, members, match_r`` and ``unit_f<k>`` per fold."""
        frame = pd.DataFrame({f"unit_f{f}": self.perms[f] for f in self.folds})
        frame.insert(0, "match_r", self.family_r())
        frame.insert(0, "members", [self.members(j) for j in range(self.n_units)])
        frame.index = pd.Index(range(self.n_units), name="family")
        return frame

    def quality(self, good: float = GOOD_MATCH_R) -> pd.DataFrame:
        """Per matched fold: the distribution of matched correlations and its null.

        Returns
        -------
        DataFrame
            One row per non-reference fold (and ``all``): ``fold, n_units,
            n_silent, r_median, r_q10, r_q90, share_matched`` (share of live units
            with ``r >= good``), ``null_r_q95``, ``share_above_null``
            (share of live units above the null's 95th percentile),
            ``best_r_median`` and ``share_best_matched`` (the same for each
            unit's best counterpart,
            :attr:`~biomark.analysis.unit_match.UnitMatch.best_r`; NaN when not recorded).
        """
        rows = []
        pooled_r, pooled_null, pooled_best = [], [], []
        for f in self.folds:
            if f == self.reference_fold and not self.identity:
                continue
            r = self.r[f]
            live = r[np.isfinite(r)]
            null = self.null_r.get(f, np.array([]))
            null = null[np.isfinite(null)]
            best = self.best_r.get(f, np.array([]))
            best = best[np.isfinite(best)]
            pooled_r.append(live)
            pooled_null.append(null)
            pooled_best.append(best)
            rows.append(self._quality_row(str(f), r.size, live, null, best, good))
        if len(rows) > 1:
            rows.append(
                self._quality_row(
                    "all",
                    sum(self.r[f].size for f in self.folds if f != self.reference_fold),
                    np.concatenate(pooled_r),
                    np.concatenate(pooled_null),
                    np.concatenate(pooled_best),
                    good,
                )
            )
        return pd.DataFrame(
            rows,
            columns=[
                "fold",
                "n_units",
                "n_silent",
                "r_median",
                "r_q10",
                "r_q90",
                "share_matched",
                "null_r_q95",
                "share_above_null",
                "best_r_median",
                "share_best_matched",
            ],
        )

    @staticmethod
    def _quality_row(
        fold: str, n: int, live: np.ndarray, null: np.ndarray, best: np.ndarray, good: float
    ) -> dict[str, object]:
        q95 = float(np.quantile(null, 0.95)) if null.size else float("nan")
        return {
            "fold": fold,
            "n_units": int(n),
            "n_silent": int(n - live.size),
            "r_median": float(np.median(live)) if live.size else float("nan"),
            "r_q10": float(np.quantile(live, 0.10)) if live.size else float("nan"),
            "r_q90": float(np.quantile(live, 0.90)) if live.size else float("nan"),
            "share_matched": float(np.mean(live >= good)) if live.size else float("nan"),
            "null_r_q95": q95,
            "share_above_null": float(np.mean(live > q95))
            if live.size and np.isfinite(q95)
            else float("nan"),
            "best_r_median": float(np.median(best)) if best.size else float("nan"),
            "share_best_matched": float(np.mean(best >= good)) if best.size else float("nan"),
        }

    def share_matched(self, good: float = GOOD_MATCH_R) -> float:
        """Share of live families whose every member matches at ``r >= good`` (1 for the
        identity)."""
        fr = self.family_r()
        live = fr[np.isfinite(fr)]
        return float(np.mean(live >= good)) if live.size else float("nan")


def own_backbones(label: str) -> str:
    """Why a strategy's folds do not share units: how each fold came by its own backbone.

    Examples
    --------
    >>> own_backbones("finetune:2")
    'each fold fine-tuned its own copy of the backbone'
    """
    # frozen shares its features only with pretrained weights. Without them it is a control whose
    # folds share one seeded random backbone (biomark.pipelines.extract_job.backbone_seed; runs
    # made before biomark shared it drew one per fold), and each fold estimates that backbone's
    # BatchNormalization statistics on its own training images.
    if label == "frozen":
        return (
            "each fold's seeded random backbone (model.weights: none) took its BatchNormalization "
            "statistics from that fold's training images"
        )
    if label.startswith("finetune"):
        return "each fold fine-tuned its own copy of the backbone"
    return "each fold trained its own backbone"


def identity_alignment(
    folds: Sequence[int], n_units: int, *, method: str = "identity (shared backbone)"
) -> FoldAlignment:
    """The alignment of a shared backbone: unit ``j`` is unit ``j`` in every fold.

    Examples
    --------
    >>> al = identity_alignment([2, 0, 1], n_units=3)
    >>> al.reference_fold, al.folds, al.perms[2].tolist(), al.share_matched()
    (0, [0, 1, 2], [0, 1, 2], 1.0)
    >>> al.members(1)
    'f0:0001, f1:0001, f2:0001'
    """
    folds = sorted(int(f) for f in folds)
    if not folds:
        raise DataError("identity_alignment: no folds given")
    ident = np.arange(int(n_units), dtype=np.int64)
    return FoldAlignment(
        reference_fold=folds[0],
        folds=folds,
        perms={f: ident.copy() for f in folds},
        r={f: np.ones(int(n_units)) for f in folds},
        best_r={f: np.ones(int(n_units)) for f in folds},
        method=method,
        identity=True,
    )


def labels_by_image(meta: pd.DataFrame, image_ids: Sequence[object]) -> np.ndarray:
    """The class of each of ``image_ids``, read from a table of images and their classes.

    The reference images on which units are matched come from the folds'
    ``features_all.parquet`` in their own order; their classes come from the
    out-of-fold table. This lines the two up.

    Parameters
    ----------
    meta : DataFrame
        One row per image, with ``image_id`` and ``label`` columns.
    image_ids : sequence
        The images wanted, in the order wanted.

    Returns
    -------
    ndarray of shape (len(image_ids),)
        The classes, NaN for an image ``meta`` does not hold.

    Raises
    ------
    DataError
        If ``meta`` lacks the ``image_id`` or ``label`` column.

    Examples
    --------
    >>> meta = pd.DataFrame({"image_id": ["a", "b"], "label": ["Normal", "Edema"]})
    >>> labels_by_image(meta, ["b", "c", "a"]).tolist()
    ['Edema', nan, 'Normal']
    """
    missing = [c for c in ("image_id", "label") if c not in meta.columns]
    if missing:
        raise DataError(
            f"labels_by_image: the image table has no {' or '.join(missing)} column "
            f"(columns: {', '.join(map(str, meta.columns))})"
        )
    known = pd.Series(meta["label"].to_numpy(), index=meta["image_id"].astype(str).to_numpy())
    return known.reindex(pd.Index(image_ids).astype(str)).to_numpy()


def centre_within_classes(x: np.ndarray, labels: Sequence[object] | np.ndarray) -> np.ndarray:
    """Each column minus its mean over the rows of the same class.

    Correlations of the result are pooled within-class correlations: how two
    units co-vary among images of one class, with the differences between
    the classes' means taken out. Rows without a class (NaN or None) are
    centred as one more group.

    Parameters
    ----------
    x : ndarray of shape (n_images, n_units)
    labels : sequence or ndarray, length n_images

    Returns
    -------
    ndarray of shape (n_images, n_units), float64

    Raises
    ------
    DataError
        If ``labels`` does not have one entry per row of ``x``.

    Examples
    --------
    >>> centre_within_classes(np.array([[1.0], [3.0], [10.0], [14.0]]), ["a", "a", "b", "b"]).ravel()
    array([-1.,  1., -2.,  2.])
    """  # noqa: E501
    values = np.asarray(x, dtype=np.float64)
    groups = pd.Series(list(labels), dtype=object)
    if len(groups) != values.shape[0]:
        raise DataError(
            f"centre_within_classes: {len(groups)} labels for {values.shape[0]} rows of activations"
        )
    keys = groups.where(groups.notna(), "<no class>").astype(str).to_numpy()
    means = pd.DataFrame(values).groupby(keys).transform("mean").to_numpy()
    return values - means


def align_folds(
    reference: Mapping[int, np.ndarray],
    *,
    labels: Sequence[object] | np.ndarray | None = None,
    reference_fold: int | None = None,
    seed: int = 0,
    method: str = "",
) -> FoldAlignment:
    """Match every fold's units to the reference fold's.

    Parameters
    ----------
    reference : mapping of int to ndarray of shape (n_images, n_units)
        Per fold: the activations of the same reference images (rows in the
        same order in every fold) through that fold's model.
    labels : sequence or ndarray, length n_images, optional
        The class of each reference image. When given, units are matched on
        their activations centred within each class
        (:func:`centre_within_classes`), so the matched correlation is the
        pooled within-class one: two members of a family then grade the same
        variation among images of a class. Over all images the classes'
        differences dominate every correlation, and units that grade the same
        finding but fire for different other classes pair poorly (on the
        phantom's scratch folds, members matched at r -0.1 over all images
        correlate at 0.2-0.7 within Effusion). Default: all images, as they
        are.
    reference_fold : int, optional
        Default: the lowest fold.
    seed : int, default 0
        Seeds the nulls (fold ``f`` uses ``seed + f``).
    method : str, optional
        Description recorded in the result (default: names the images count).

    Returns
    -------
    FoldAlignment

    Raises
    ------
    DataError
        If fewer than one fold is given, the reference fold is absent, the
        folds' activations differ in shape or are not finite, or ``labels``
        does not have one entry per reference image.

    Examples
    --------
    Folds 1 and 2 hold noisy copies of fold 0's units, each in its own order:

    >>> rng = np.random.default_rng(0)
    >>> base = rng.standard_normal((100, 4))
    >>> acts = {0: base}
    >>> acts[1] = base[:, [3, 1, 0, 2]] + 0.2 * rng.standard_normal((100, 4))
    >>> acts[2] = base[:, [1, 0, 3, 2]] + 0.2 * rng.standard_normal((100, 4))
    >>> al = align_folds(acts)
    >>> al.perms[1].tolist(), al.perms[2].tolist()
    ([2, 1, 3, 0], [1, 0, 3, 2])
    >>> al.members(0), al.share_matched()
    ('f0:0000, f1:0002, f2:0001', 1.0)
    """
    folds = sorted(int(f) for f in reference)
    if not folds:
        raise DataError("align_folds: no fold activations given")
    ref = folds[0] if reference_fold is None else int(reference_fold)
    if ref not in reference:
        raise DataError(f"align_folds: reference fold {ref} has no activations (folds: {folds})")
    if labels is not None:
        reference = {f: centre_within_classes(x, labels) for f, x in reference.items()}
    base = np.asarray(reference[ref], dtype=np.float64)
    n_units = base.shape[1]
    self_r = np.where(np.ptp(base, axis=0) > 0, 1.0, np.nan)
    perms = {ref: np.arange(n_units, dtype=np.int64)}
    rs = {ref: self_r}
    nulls: dict[int, np.ndarray] = {}
    best: dict[int, np.ndarray] = {}
    for f in folds:
        if f == ref:
            continue
        match = match_units(base, reference[f], seed=seed + f)
        perms[f], rs[f], nulls[f], best[f] = match.perm, match.r, match.null_r, match.best_r
    out = FoldAlignment(
        reference_fold=ref,
        folds=folds,
        perms=perms,
        r=rs,
        null_r=nulls,
        best_r=best,
        method=method
        or (
            f"{'within-class ' if labels is not None else ''}activation correlation on "
            f"{base.shape[0]} reference images"
        ),
        n_reference=int(base.shape[0]),
        within_classes=labels is not None,
    )
    q = out.quality()
    if len(q):
        last = q.iloc[-1]
        logger.info(
            "units matched to fold %d over %d reference images%s: median r %.2f, %.0f%% at "
            "r >= %.1f (null 95th percentile %.2f)",
            ref,
            base.shape[0],
            " within classes" if labels is not None else " (classes pooled)",
            last["r_median"],
            100 * last["share_matched"],
            GOOD_MATCH_R,
            last["null_r_q95"],
        )
    return out


def align_rows(X: np.ndarray, row_folds: np.ndarray, alignment: FoldAlignment) -> np.ndarray:
    """Columns of each row's fold put into the reference order (rows stay where they are).

    Parameters
    ----------
    X : ndarray of shape (n_rows, n_units)
        Per-row values in the row's own fold's unit order (out-of-fold GAP
        features, per-image lung masses, ...).
    row_folds : ndarray of int, shape (n_rows,)
    alignment : FoldAlignment

    Returns
    -------
    ndarray of shape (n_rows, n_units)
        Column ``j`` holds family ``j`` (each row's member of it).

    Raises
    ------
    DataError
        If a row's fold is not in the alignment or the widths differ.

    Examples
    --------
    Family ``j`` is unit ``perms[1][j]`` of fold 1:

    >>> al = FoldAlignment(
    ...     reference_fold=0,
    ...     folds=[0, 1],
    ...     perms={0: np.array([0, 1, 2]), 1: np.array([2, 0, 1])},
    ...     r={0: np.ones(3), 1: np.ones(3)},
    ... )
    >>> X = np.array([[10, 11, 12], [20, 21, 22]])
    >>> align_rows(X, np.array([0, 1]), al).tolist()
    [[10, 11, 12], [22, 20, 21]]
    """
    X = np.asarray(X)
    row_folds = np.asarray(row_folds)
    if X.ndim != 2 or X.shape[0] != row_folds.size or X.shape[1] != alignment.n_units:
        raise DataError(
            f"align_rows: values {X.shape} do not fit {row_folds.size} rows x "
            f"{alignment.n_units} units"
        )
    unknown = sorted(set(np.unique(row_folds).tolist()) - set(alignment.perms))
    if unknown:
        raise DataError(
            f"align_rows: fold(s) {unknown} have no unit matching (matched: {alignment.folds})"
        )
    out = np.empty_like(X)
    for f, perm in alignment.perms.items():
        rows = row_folds == f
        if rows.any():
            out[rows] = X[rows][:, perm]
    return out
