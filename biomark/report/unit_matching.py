"""Matching one strategy's units across its folds for the report.

Where each fold trained its own backbone, unit j of one fold is not unit j of
another: :func:`matched_features` matches them
(:func:`biomark.analysis.alignment.align_folds`, on the activations every
fold's model gave the same reference images, centred within each class),
puts the out-of-fold features in the matched order, keeps the live families,
reads each family's consensus, measures how redundant the units are, and
writes the match quality into the report (a table, the members of each
family, a note). A shared backbone
(``frozen``) needs no matching: its alignment is the identity.
"""

from __future__ import annotations

import logging
from dataclasses import replace

import numpy as np
import pandas as pd

from biomark.analysis.alignment import (
    POOR_MATCH_SHARE,
    FoldAlignment,
    align_folds,
    align_rows,
    identity_alignment,
    labels_by_image,
    own_backbones,
)
from biomark.analysis.biomarkers import Criteria
from biomark.analysis.checks import constant_in_class
from biomark.analysis.class_variation import dominant_class
from biomark.analysis.redundancy import (
    UnitRedundancy,
    direction_table,
    near_copy_matrix,
    unit_redundancy,
)
from biomark.analysis.unit_families import (
    agreeing_classes,
    family_consensus,
    within_class_member_r,
)
from biomark.exceptions import BiomarkError
from biomark.report.feature_maps import lung_table
from biomark.report.report_models import ModelOutputs
from biomark.report.strategy_report import ReportSettings, StrategyReport

__all__ = ["fold_near_copies", "matched_features"]

logger = logging.getLogger(__name__)


def matched_features(
    rep: StrategyReport,
    mo: ModelOutputs,
    dumped: tuple[dict[int, np.ndarray], pd.Index] | None,
    X_full: np.ndarray,
    bad_units: dict[int, np.ndarray],
    settings: ReportSettings,
) -> tuple[FoldAlignment | None, np.ndarray, np.ndarray, Criteria]:
    """Match units across folds and keep the live ones; fills ``rep.X``, names, lung table, units
    and notes.

    Returns the alignment (None: unmatched), the aligned features, the kept
    columns and the criteria (the match threshold raised to the shuffled-image
    null where that is higher).
    """
    label, meta = rep.label, rep.meta
    d = X_full.shape[1]
    folds = meta["fold"].to_numpy()
    al, reference, ref_ids, ref_labels = _match_units(rep, mo, dumped, d, settings.seed)
    rep.alignment = al
    rep.unit_basis = "shared" if rep.shared_features else ("unmatched" if al is None else "matched")
    if al is not None and len(rep.folds) == 1:
        rep.unit_basis = "shared"
    prefix = "u" if rep.unit_basis == "matched" else "f"
    X_al = align_rows(X_full, folds, al) if al is not None and not al.identity else X_full
    bad = np.zeros(d, dtype=bool)
    for f, mask in bad_units.items():
        bad |= mask[al.perms[f]] if al is not None else mask
    names_full = [f"{prefix}{j:04d}" for j in range(d)]
    live = ~bad & (np.ptp(np.where(np.isfinite(X_al), X_al, 0.0), axis=0) > 0)
    keep = np.flatnonzero(live)
    names = [names_full[j] for j in keep]
    rep.feature_names, rep.X = names, X_al[:, keep].astype(np.float64)
    if al is not None and not al.identity and reference:
        rep.model_views, rep.model_view_ids = reference, ref_ids
        rep.X_consensus = _consensus(rep, al, reference, ref_ids, keep)
        rep.within_class_match = _within_class_match(al, reference, ref_labels, keep, names)
    rep.redundancy, rep.directions = _redundancy(rep, X_full, folds, reference, ref_labels, al)
    rep.n_constant = int((~bad & ~live).sum())
    if rep.n_constant:
        rep.notes.append(
            f"{label}: {rep.n_constant} of {d} features are constant over all out-of-fold images "
            "(dead units) and were dropped from the statistics."
        )
    criteria = settings.criteria
    if al is not None and not al.identity:
        criteria = _describe_matching(rep, al, keep, names, criteria)
        if reference and al.within_classes:
            _describe_dominance(rep, reference, ref_labels, al)
    elif rep.unit_basis == "unmatched":
        rep.notes.append(
            f"{label}: GAP unit j of one fold is not the same feature as unit j of another; "
            "pooled statistics mix different units."
        )
    if mo.lung_in is not None and mo.lung_tot is not None:
        lin = (
            align_rows(mo.lung_in, folds, al) if al is not None and not al.identity else mo.lung_in
        )
        ltot = (
            align_rows(mo.lung_tot, folds, al)
            if al is not None and not al.identity
            else mo.lung_tot
        )
        rep.lung, rep.per_image_lung = lung_table(lin, ltot, keep, names)
        rep.per_image_lung_measured = np.isfinite(ltot)
    labels = meta["label"].astype(str).to_numpy()
    for f in rep.folds:  # in the fold's own units, named as in its features.parquet
        rows, ok = folds == f, np.flatnonzero(~bad_units[f])
        _, w = constant_in_class(
            X_full[rows][:, ok],
            labels[rows],
            strategy=label,
            fold=f,
            feature_names=[f"f{j:04d}" for j in ok],
            min_group_size=settings.min_group_size,
        )
        rep.warnings.extend(w)
    return al, X_al, keep, criteria


def fold_near_copies(
    rep: StrategyReport, al: FoldAlignment | None, keep: np.ndarray
) -> dict[int, np.ndarray] | None:
    """Per fold: which kept features are near-copies of which in that fold's network, in the
    columns of ``rep.X`` (:func:`biomark.analysis.redundancy.near_copy_matrix`).

    Matched folds read each network's own activations on the reference images
    (``rep.model_views``, in the matched order); a shared backbone reads its
    out-of-fold features, one network for every fold. None where neither is
    known (units not matched): the top-k frequency then counts each feature's own
    rank only.
    """
    if al is not None and not al.identity and rep.model_views:
        return {f: near_copy_matrix(x[:, al.perms[f]][:, keep]) for f, x in rep.model_views.items()}
    if rep.unit_basis == "shared" and rep.X is not None and len(rep.X) >= 3:
        copies = near_copy_matrix(rep.X)
        return dict.fromkeys(rep.folds, copies)
    return None


def _match_units(
    rep: StrategyReport,
    mo: ModelOutputs,
    dumped: tuple[dict[int, np.ndarray], pd.Index] | None,
    n_units: int,
    seed: int,
) -> tuple[FoldAlignment | None, dict[int, np.ndarray], pd.Index, np.ndarray]:
    """The strategy's unit matching, with the reference activations, image ids and classes it
    used.

    The identity for a shared backbone (no reference: nothing is returned for
    it), else matching by reference activations: the dumped ones
    (:func:`biomark.report.strategy_folds.dumped_reference`), else those the
    fold models embedded here.
    """
    label = rep.label
    none: tuple[dict[int, np.ndarray], pd.Index, np.ndarray] = (
        {},
        pd.Index([], dtype=object),
        np.empty(0, dtype=object),
    )
    if rep.shared_features:
        return identity_alignment(rep.folds, n_units), *none
    if len(rep.folds) == 1:
        return identity_alignment(rep.folds, n_units, method="one fold: nothing to match"), *none
    if dumped is not None and dumped[0]:
        reference, ref_ids = _with_out_of_fold_rows(rep, *dumped)
        method = (
            f"within-class activation correlation (each class's mean removed) over {len(ref_ids)} "
            "images of features_all.parquet (every fold's model)"
        )
    else:
        reference, ref_ids = _with_out_of_fold_rows(
            rep,
            dict(mo.reference),
            pd.Index(rep.reference_ids if rep.reference_ids is not None else [], dtype=object),
        )
        method = (
            "within-class activation correlation (each class's mean removed) over "
            f"{len(ref_ids)} class-stratified reference images embedded by every fold's model here"
        )
    if set(rep.folds) - set(reference):
        rep.notes.append(
            f"{label}: units cannot be matched across folds (no features_all.parquet and no "
            "model.keras with the dataset's images for every fold); fold stability is left "
            "untested, and pooled statistics mix different units."
        )
        return None, *none
    finite = {f: np.where(np.isfinite(x), x, 0.0) for f, x in reference.items()}
    try:
        # matched on the variation within classes, which a biomarker must grade; the consensus and
        # every reading use the activations as they are
        labels = labels_by_image(rep.meta, ref_ids)
        return align_folds(finite, labels=labels, seed=seed, method=method), finite, ref_ids, labels
    except BiomarkError as err:
        rep.notes.append(f"{label}: units could not be matched across folds ({err}).")
        return None, *none


def _with_out_of_fold_rows(
    rep: StrategyReport, reference: dict[int, np.ndarray], ref_ids: pd.Index
) -> tuple[dict[int, np.ndarray], pd.Index]:
    """The reference images that have a row in the out-of-fold table, and their activations.

    Every fold's model embeds the images of every fold, also of a fold whose
    own feature table could not be read and was left out of the report
    (:func:`biomark.report.strategy_folds.load_folds`). Those images
    have no class, source or patient in ``rep.meta``: matching, the consensus
    and the source audit read the others, and a note says how many were set
    aside.
    """
    if not len(ref_ids):
        return reference, ref_ids
    known = ref_ids.astype(str).isin(rep.meta["image_id"].astype(str))
    if known.all():
        return reference, ref_ids
    rep.notes.append(
        f"{rep.label}: {int((~known).sum())} of the {len(ref_ids)} images every fold's model "
        "embedded have no out-of-fold row (their fold's feature table is missing or unreadable, "
        f"see the warnings above); units are matched and audited on the other {int(known.sum())}."
    )
    return {f: x[known] for f, x in reference.items()}, ref_ids[known]


def _consensus(
    rep: StrategyReport,
    al: FoldAlignment,
    reference: dict[int, np.ndarray],
    ref_ids: pd.Index,
    keep: np.ndarray,
) -> np.ndarray | None:
    """The kept families' consensus on the rows of ``rep.meta``; None (with a note) when some image
    was not embedded by every fold."""
    ids = rep.meta["image_id"].astype(str).to_numpy()
    rows = ref_ids.get_indexer(ids)
    if (rows < 0).any():
        rep.notes.append(
            f"{rep.label}: only {len(ref_ids)} reference images went through every fold's model, "
            "so what a family tracks within a class is read from each image's out-of-fold member "
            "alone (`dump: {features: all}` in the plan gives every image a reading by every fold)."
        )
        return None
    return family_consensus(reference, al)[rows][:, keep]


def _within_class_match(
    al: FoldAlignment,
    reference: dict[int, np.ndarray],
    ref_labels: np.ndarray,
    keep: np.ndarray,
    names: list[str],
) -> pd.DataFrame:
    """Per kept family (rows, named) and class (columns): its members' weakest agreement on the
    class's reference images (:func:`biomark.analysis.unit_families.within_class_member_r`)."""
    table = within_class_member_r(reference, al, ref_labels)
    return table.iloc[keep].set_axis(names)


def share_agreeing_in_some_class(rep: StrategyReport, min_r: float) -> float | None:
    """Share of the kept families whose members agree at ``min_r`` on some class's images (None:
    not measured)."""
    table = rep.within_class_match
    if table is None or table.empty or not table.notna().any(axis=None):
        return None
    return float((agreeing_classes(table, min_r) != "").mean())


def _redundancy(
    rep: StrategyReport,
    X_full: np.ndarray,
    folds: np.ndarray,
    reference: dict[int, np.ndarray],
    ref_labels: np.ndarray,
    al: FoldAlignment | None,
) -> tuple[UnitRedundancy | None, pd.DataFrame | None]:
    """How many directions the strategy's units span over one network's images, and, where they are
    near-copies, which.

    A note, and (None, None), when it cannot be measured.
    """
    labels = rep.meta["label"].astype(str).to_numpy()
    if reference and al is not None and al.reference_fold in reference:
        X, row_labels = reference[al.reference_fold], ref_labels
    elif rep.shared_features:
        X, row_labels = X_full, labels  # one backbone: every fold's rows come from the same units
    else:
        first = folds == (rep.folds[0] if rep.folds else -1)
        X, row_labels = X_full[first], labels[first]
    X = X[:, np.isfinite(X).all(axis=0)]
    try:
        red = unit_redundancy(X)
    except BiomarkError as err:
        rep.notes.append(f"{rep.label}: redundancy of the units not measured ({err}).")
        return None, None
    logger.info("%s: %s", rep.label, red.describe())
    directions = None
    labelled = pd.notna(
        row_labels
    )  # reference images dropped from the out-of-fold table have no label here
    if red.redundant and labelled.sum() >= 3:
        directions = direction_table(X[labelled], row_labels[labelled], n_directions=red.dimension)
    return red, directions


def _describe_dominance(
    rep: StrategyReport,
    reference: dict[int, np.ndarray],
    ref_labels: np.ndarray,
    al: FoldAlignment,
) -> None:
    """A note (and a log line) when one class holds most of the within-class variation the match
    pools: the match quality then reads the members' agreement on that class."""
    found = {f: dominant_class(reference[f], ref_labels) for f in al.folds if f in reference}
    dom = {f: d for f, d in found.items() if d is not None}
    rep.class_dominance = dom
    ref = dom.get(al.reference_fold)
    if ref is None or not ref.dominates:
        return
    text = (
        f"{rep.label}: the match pools the variation within every class, and in fold "
        f"{al.reference_fold}'s network {ref.describe()}, so how well a family matched mostly "
        f"says whether its members agree on {ref.cls} images; whether they are one feature for "
        "another class is their agreement on that class's own images (within_class_r)."
    )
    other = {f: d for f, d in dom.items() if d.cls != ref.cls and d.dominates}
    if other:
        listed = ", ".join(
            f"fold {f}'s in {d.cls} ({d.median_share:.0%})" for f, d in other.items()
        )
        text += (
            f" Not every network's lies there: {listed}; a network whose within-class variation "
            f"lies in another class than fold {al.reference_fold}'s pairs poorly with it, whatever "
            "its units grade."
        )
    logger.info("%s", text)
    rep.notes.append(text)


def _describe_matching(
    rep: StrategyReport, al: FoldAlignment, keep: np.ndarray, names: list[str], criteria: Criteria
) -> Criteria:
    """Match quality into ``rep`` (table, units, a note); the criteria with the match threshold
    above chance."""
    label = rep.label
    null_q95 = float(al.quality().iloc[-1]["null_r_q95"])
    if np.isfinite(null_q95) and null_q95 > criteria.min_match_r:
        # With few reference images unrelated units reach r >= 0.5 by chance: require more than
        # chance.
        criteria = replace(criteria, min_match_r=min(1.0, null_q95))
        rep.notes.append(
            f"{label}: with {al.n_reference} reference images unrelated units match at up to "
            f"r = {null_q95:.2f} (95th percentile of the shuffled-image null); a family "
            "counts as well matched only above that."
        )
    rep.alignment_quality = al.quality(criteria.min_match_r)
    rep.units = al.member_table().iloc[keep].set_axis(names)[["members", "match_r"]]
    share = al.share_matched(criteria.min_match_r)
    last = rep.alignment_quality.iloc[-1]
    text = (
        f"{label}: {own_backbones(label)}, so its units were matched to fold "
        f"{al.reference_fold}'s by {al.method}; a feature u#### is a matched family (its members "
        f"are listed). Matched correlation: median {last['r_median']:.2f}, {100 * share:.0f}% of "
        f"families matched at r >= {criteria.min_match_r:.2g} in every fold (unrelated "
        f"units: 95th percentile {last['null_r_q95']:.2f})."
    )
    if share < POOR_MATCH_SHARE:
        text += (
            " Matching is poor: for families below the threshold, stability is judged on what the "
            "units track (their class effect in each fold, and whether the members agree on that "
            "class's own images: a unit may grade one class and not the others), not on their "
            "rank."
        )
        agree = share_agreeing_in_some_class(rep, criteria.min_match_r)
        if agree is not None:
            text += (
                f" {agree:.0%} of families have members that agree at r >= "
                f"{criteria.min_match_r:.2g} on the images of at least one class."
            )
        best = float(last["share_best_matched"])
        redundant = rep.redundancy is not None and rep.redundancy.redundant
        if redundant and np.isfinite(best) and best >= 0.5:
            text += (
                f" Yet {best:.0%} of units have a counterpart at r >= {criteria.min_match_r:.2g} "
                f"in another fold (best-counterpart median r {last['best_r_median']:.2f}), just "
                "not a unique one: the units are near-copies of a few directions (see Fold "
                "stability), and the one-to-one match has to pair copies with each other."
            )
    rep.notes.append(text)
    return criteria
