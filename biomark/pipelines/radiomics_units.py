"""The deep features that ``biomark radiomics`` relates to radiomic features.

One column per unit that means the same thing in every image: a shared
backbone's out-of-fold features as they are; for a backbone trained per fold,
its units matched across folds on ``features_all.parquet`` and read as each
family's consensus; without those dumps, the pooled out-of-fold features, said
to mix networks (:func:`deep_units`).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd

from biomark.exceptions import BiomarkError, RunError
from biomark.features.run_folder import RunFolder
from biomark.features.run_info import RunInfo
from biomark.report.radiomics_alignment import UnitBasis

if TYPE_CHECKING:
    from biomark.analysis.alignment import FoldAlignment

__all__ = ["DeepUnits", "deep_units", "pooled_units"]

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class DeepUnits:
    """A strategy's deep features as related to radiomics (see :func:`deep_units`).

    Attributes
    ----------
    values : ndarray of shape (n_images, n_units)
        In the rows of the strategy's out-of-fold table.
    names : list of str
        ``f####`` (out-of-fold features) or ``u####`` (matched unit families).
    basis : {"shared", "matched", "unmatched"}
    note : str
        What a column is, in words (shown on the page).
    agree_in : dict of str to str
        For matched families: the classes on whose images the members agree
        (comma-separated, empty for none); empty otherwise.
    """

    values: np.ndarray
    names: list[str]
    basis: UnitBasis
    note: str
    agree_in: dict[str, str] = field(default_factory=dict)


def deep_units(
    run: RunFolder, info: RunInfo, strategy: str, meta: pd.DataFrame, X: np.ndarray
) -> DeepUnits:
    """The deep features to relate to radiomics: one column per unit that means the same in every
    fold.

    A shared backbone's out-of-fold features are that already. A backbone
    per fold has its own unit ``j``, so pooling the folds' out-of-fold
    features would correlate a mixture of unrelated units with radiomics
    (and a cross-validated CCA would test one network's units on
    another's); its units are matched across folds on ``features_all.parquet``
    as the biomark report matches them (:func:`biomark.analysis.alignment.align_folds`, within
    the images' classes: the same families), and each family is read
    as its consensus over the folds' models
    (:func:`biomark.analysis.unit_families.family_consensus`). Without those
    dumps the pooled features are kept and said to mix units.
    """
    from biomark.analysis.alignment import (
        GOOD_MATCH_R,
        POOR_MATCH_SHARE,
        align_folds,
        labels_by_image,
        own_backbones,
    )
    from biomark.analysis.class_variation import dominant_class
    from biomark.analysis.unit_families import family_consensus

    n_units = X.shape[1]
    folds = sorted(int(f) for f in meta["fold"].unique()) if "fold" in meta.columns else []
    if info.shared_backbone(strategy) or len(folds) < 2:
        names = [f"f{j:04d}" for j in range(n_units)]
        what = "a shared backbone" if info.shared_backbone(strategy) else "one fold"
        return DeepUnits(
            X,
            names,
            "shared",
            f"out-of-fold features of {what}: feature f#### is the same unit in every image",
        )
    try:
        reference, ref_ids = run.reference_features(strategy, folds)
    except RunError as err:  # a truncated or corrupt dump: the page says so and goes on
        logger.warning("%s: %s", strategy, err)
        return pooled_units(
            X, strategy, len(folds), f"a features_all.parquet cannot be read ({err})"
        )
    rows = ref_ids.get_indexer(meta["image_id"].astype(str))
    if not reference or (rows < 0).any():
        return pooled_units(
            X,
            strategy,
            len(folds),
            "the run has no features_all.parquet for every fold (`dump: {features: all}` in the "
            "plan), so units cannot be matched across folds",
        )
    logger.info(
        "%s: matching units across the folds' networks on features_all.parquet (%d images)",
        strategy,
        len(ref_ids),
    )
    finite = {f: np.where(np.isfinite(x), x, 0.0) for f, x in reference.items()}
    labels = labels_by_image(meta, ref_ids) if "label" in meta.columns else None
    try:
        alignment = align_folds(finite, labels=labels)  # its method names the basis and images
    except BiomarkError as err:  # e.g. folds that dumped different numbers of units
        return pooled_units(
            X, strategy, len(folds), f"its units could not be matched across folds ({err})"
        )
    consensus = family_consensus(finite, alignment)[rows]
    # the share the report's index quotes: families matched in every fold (the compare page
    # matches over all images, for its maps and probes)
    matched = alignment.share_matched(GOOD_MATCH_R)
    names = [f"u{j:04d}" for j in range(n_units)]
    agree_in = _classes_agreeing(finite, alignment, labels, names) if labels is not None else {}
    note = (
        f"{own_backbones(strategy)}, so units were matched one to one to fold "
        f"{alignment.reference_fold}'s by {alignment.method} of features_all.parquet, and u#### "
        "is each family's consensus over the folds' models (every "
        "image read by every fold's model, as on the report's index page)"
    )
    dominance = (
        dominant_class(finite[alignment.reference_fold], labels) if labels is not None else None
    )
    if dominance is not None and dominance.dominates:
        note += (
            f"; in fold {alignment.reference_fold}'s network {dominance.describe()}, so a "
            f"family matched well agrees on {dominance.cls} above all (members_agree_in names "
            "the classes on whose images its members agree)"
        )
    if matched < POOR_MATCH_SHARE:
        note += (
            f"; only {matched:.0%} of families matched at r >= {GOOD_MATCH_R} in every fold, so "
            "most families average units that track different things: read this strategy's totals "
            "(pairs, CCA), not single u#### rows"
        )
        coherent = sum(bool(v) for v in agree_in.values()) / max(len(agree_in), 1)
        if coherent > 0:
            note += (
                f", except where members_agree_in names a class: the {coherent:.0%} of families "
                f"whose members agree at r >= {GOOD_MATCH_R} on that class's images grade the "
                "same thing there"
            )
    return DeepUnits(consensus, names, "matched", note, agree_in)


def _classes_agreeing(
    reference: dict[int, np.ndarray],
    alignment: FoldAlignment,
    labels: np.ndarray,
    names: list[str],
) -> dict[str, str]:
    """Per family name, the classes on whose images its members agree at ``GOOD_MATCH_R`` (comma-
    separated; empty for none): where one u#### row reads one thing
    (:func:`biomark.analysis.unit_families.agreeing_classes`)."""
    from biomark.analysis.alignment import GOOD_MATCH_R
    from biomark.analysis.unit_families import agreeing_classes, within_class_member_r

    agree = agreeing_classes(within_class_member_r(reference, alignment, labels), GOOD_MATCH_R)
    return dict(zip(names, agree.tolist(), strict=True))


def pooled_units(X: np.ndarray, strategy: str, n_folds: int, why: str) -> DeepUnits:
    """A backbone per fold whose units were not matched: the pooled out-of-fold features, said to
    mix networks."""
    from biomark.analysis.alignment import own_backbones

    return DeepUnits(
        X,
        [f"f{j:04d}" for j in range(X.shape[1])],
        "unmatched",
        f"{own_backbones(strategy)}, and {why}: f#### pools unit j of {n_folds} "
        "unrelated networks, the associations below mix different units, and the out-of-fold CCA "
        "tests one network's units on another's",
    )
