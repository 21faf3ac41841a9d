"""The HTML page of ``biomark compare``: do two strategies learn the same features?

:func:`write_compare_report` writes, for a :class:`~biomark.analysis.compare.CompareResult`,
``<reports>/<run>/compare_<a>_vs_<b>.html`` (self-contained) and the tidy CSV
beside it. :func:`interpret` is the plain-language sentence at the top, with
the thresholds stated in :data:`CKA_BANDS`.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from pathlib import Path

import numpy as np
import pandas as pd

from biomark.analysis.chance import ChanceGuard, chance_guard
from biomark.analysis.compare import (
    CompareResult,
    Construction,
    settings_dict,
    shared_by_construction,
    write_compare_csv,
)
from biomark.config import ReportPlanSettings
from biomark.provenance import package_versions
from biomark.report.compare_figures import (
    METRIC_NAMES,
    fold_figure,
    heatmap_figure,
    null_figure,
    umap_figure,
)
from biomark.report.guards import add_chance_guard
from biomark.report.page import Page

__all__ = [
    "CKA_BANDS",
    "build_compare_page",
    "claim_reading",
    "construction",
    "diagonal_text",
    "interpret",
    "report_paths",
    "strategy_guards",
    "write_compare_report",
]

logger = logging.getLogger(__name__)

#: (upper bound, wording) for debiased linear CKA, used by :func:`interpret`.
CKA_BANDS: tuple[tuple[float, str], ...] = (
    (0.2, "share little of their representation"),
    (0.5, "share some but far from all of their representation"),
    (0.8, "share much of their representation, but not all of it"),
    (float("inf"), "learn nearly the same representation (up to rotation and scale)"),
)
#: Permutation p at or above which a CKA reads "not distinguishable" (default of
#: ``report.cka_alpha``).
ALPHA: float = ReportPlanSettings.cka_alpha


def _safe(strategy: str) -> str:
    return strategy.replace(":", "_")


def report_paths(reports_dir: str | Path, run_name: str, a: str, b: str) -> tuple[Path, Path]:
    """``(html, csv)`` paths: ``<reports>/<run>/compare_<a>_vs_<b>.{html,csv}`` (``:`` -> ``_``)."""
    stem = Path(reports_dir) / run_name / f"compare_{_safe(a)}_vs_{_safe(b)}"
    return stem.with_suffix(".html"), stem.with_suffix(".csv")


def format_p(p: float | None, n_permutations: int) -> str:
    """``p = 0.034``, or ``p < 0.001`` when no permutation reached the observed value."""
    if p is None:
        return "no permutation test"
    floor = 1.0 / (n_permutations + 1)
    if p <= floor + 1e-12:
        return f"p < {1.0 / n_permutations:.2g}" if n_permutations else "p n/a"
    return f"p = {p:.3f}" if p >= 0.001 else f"p = {p:.1e}"


def strategy_guards(result: CompareResult) -> dict[str, ChanceGuard]:
    """The chance guard of both strategies, from the out-of-fold predictions in ``result.meta``."""
    meta, info = result.meta, result.info
    alpha = info.report_settings().chance_alpha
    out = {}
    for strategy, column in ((result.a, "pred"), (result.b, "pred_b")):
        if column in meta and meta[column].notna().all():
            out[strategy] = chance_guard(
                meta["label"],
                meta[column],
                strategy=strategy,
                positive=info.positive_class,
                classes=list(info.classes) or None,
                alpha=alpha,
            )
    return out


def construction(result: CompareResult) -> Construction:
    """What the two strategies share by construction, from the run's ``model.weights`` and, for
    random-features controls, the backbone seeds their folds record."""
    return shared_by_construction(
        result.a,
        result.b,
        result.info.weights,
        one_random_backbone=result.run.one_random_backbone((result.a, result.b)),
    )


def claim_reading(
    value: float,
    *,
    p_value: float | None,
    built: Construction,
    guards: Mapping[str, ChanceGuard],
    alpha: float = ALPHA,
) -> str:
    """What a debiased linear CKA between two strategies says about the paper's claim.

    In order: a strategy at chance (no conclusion), a random-features control
    (named, no conclusion), no detectable shared structure, then the wording
    of :data:`CKA_BANDS`; shared blocks are stated whenever there are any, and
    only a comparison with pretrained weights and nothing shared is said to
    support the paper's claim.

    Parameters
    ----------
    value : float
        Fold-mean debiased linear CKA.
    p_value : float or None
        Its permutation p (None: not tested).
    built : Construction
        :func:`biomark.analysis.compare.shared_by_construction` of the pair.
    guards : mapping of str to ChanceGuard
        The strategies' chance guards (missing ones are not checked).
    alpha : float, default 0.05
        ``p_value`` at or above this reads "not distinguishable" (the plan's ``report.cka_alpha``).

    Examples
    --------
    >>> from biomark.analysis.compare import shared_by_construction
    >>> built = shared_by_construction("scratch", "frozen", "imagenet")  # nothing shared
    >>> print(claim_reading(0.31, p_value=0.001, built=built, guards={}))
    the two strategies share some but far from all of their representation; this supports the
    paper's claim that the strategies 'do not mine the same features'.
    >>> print(claim_reading(0.31, p_value=0.4, built=built, guards={}))
    not distinguishable from unrelated representations at the 0.05 level: on these images the
    two strategies do not mine the same features.

    A strategy at chance stops any reading:

    >>> guessing = chance_guard(["a", "b"] * 10, ["a"] * 20, strategy="scratch")
    >>> print(claim_reading(0.31, p_value=0.001, built=built, guards={"scratch": guessing}))
    No conclusion about the paper's claim: scratch is not above chance ...
    """
    at_chance = [g.strategy for g in guards.values() if not g.learned]
    if at_chance:
        one = len(at_chance) == 1
        return (
            f"No conclusion about the paper's claim: {' and '.join(at_chance)} "
            f"{'is' if one else 'are'} not above chance (see the chance guard), so "
            f"{'its' if one else 'their'} features are not features {'it' if one else 'they'} "
            "learned to tell the classes apart with; CKA here only measures what networks that "
            "guess have in common."
        )
    if p_value is not None and p_value >= alpha:
        reading = f"not distinguishable from unrelated representations at the {alpha} level"
    else:
        reading = "the two strategies " + next(text for bound, text in CKA_BANDS if value < bound)
    if built.controls or built.shared:
        return f"{reading}. {built.sentence()}"
    if p_value is not None and p_value >= alpha:
        return f"{reading}: on these images the two strategies do not mine the same features."
    if value >= CKA_BANDS[-2][0]:  # the last band: nearly the same representation
        return (
            f"{reading}; the paper's claim that the strategies 'do not mine the same features' is "
            "supported only in the weak sense that the representations are not interchangeable."
        )
    return (
        f"{reading}; this supports the paper's claim that the strategies 'do not mine the same "
        "features'."
    )


def diagonal_text(result: CompareResult, built: Construction) -> str:
    """Block-by-block CKA from the last shared block through the trained ones (empty without
    both)."""
    lw = result.layerwise
    last = built.last_shared_block
    if lw is None or last is None or last not in lw.blocks_a or last not in lw.blocks_b:
        return ""
    start = lw.blocks_a.index(last)
    values = [
        (name, float(lw.matrix[i, lw.blocks_b.index(name)]))
        for i, name in enumerate(lw.blocks_a)
        if i >= start and name in lw.blocks_b
    ]
    steps = ", ".join(
        f"{name}{' (last shared)' if name == last else ''} {v:.2f}" for name, v in values
    )
    return (
        f"Compared stage by stage (the diagonal of the block-by-block CKA): {steps}. The trained "
        f"stages take the similarity from {values[0][1]:.2f} to {values[-1][1]:.2f}; that change, "
        "not the final value, is what the training did."
    )


def interpret(result: CompareResult, guards: dict[str, ChanceGuard] | None = None) -> str:
    """The plain sentences on what the headline CKA means (thresholds in :data:`CKA_BANDS`).

    ``guards``: the strategies' chance guards when the caller has them
    (:func:`strategy_guards`, which logs a warning for a strategy at chance).
    """
    sim = result.headline
    ci = sim.mean_ci
    ci_text = (
        f"{int(sim.confidence * 100)}% CI {ci[0]:.2f}–{ci[1]:.2f}; " if np.isfinite(ci[0]) else ""
    )
    head = (
        f"Debiased linear CKA between {result.a} and {result.b} is {sim.mean:.2f} "
        f"({ci_text}{format_p(sim.p_value, sim.n_permutations)}; mean over {len(sim.folds)} test "
        f"folds, range {sim.min:.2f}–{sim.max:.2f})"
    )
    built = construction(result)
    reading = claim_reading(
        sim.mean,
        p_value=sim.p_value,
        built=built,
        guards=strategy_guards(result) if guards is None else guards,
        alpha=result.info.report_settings().cka_alpha,
    )
    text = f"{head}: {reading}"
    diagonal = diagonal_text(result, built)
    return f"{text} {diagonal}" if diagonal else text


def _summary_table(result: CompareResult) -> pd.DataFrame:
    rows = []
    for metric, sim in result.cka.items():
        rows.append(
            {
                "metric": METRIC_NAMES.get(metric, metric),
                "mean over folds": sim.mean,
                f"{int(sim.confidence * 100)}% CI": (
                    f"{sim.mean_ci[0]:.3f} – {sim.mean_ci[1]:.3f}"
                    if np.isfinite(sim.mean_ci[0])
                    else "–"
                ),
                "permutation p": format_p(sim.p_value, sim.n_permutations),
                "fold std": sim.std,
                "fold min – max": f"{sim.min:.3f} – {sim.max:.3f}",
            }
        )
    return pd.DataFrame(rows)


def _quality_table(result: CompareResult) -> pd.DataFrame:
    rows = []
    for strategy, emb in result.embedding.items():

        def mean_sd(values: np.ndarray) -> str:
            if not np.isfinite(values).any():
                return "–"
            return f"{np.nanmean(values):.3f} ± {np.nanstd(values):.3f}"

        rows.append(
            {
                "strategy": strategy,
                "feature dim": result.dims[strategy],
                f"kNN class purity, features (k={emb.k})": emb.class_purity_features,
                "kNN class purity, UMAP": emb.class_purity_embedding,
                "class purity by chance": emb.class_purity_chance,
                "kNN fold purity, features": emb.fold_purity_features,
                "fold purity by chance": emb.fold_purity_chance,
                "trustworthiness (UMAP)": emb.trustworthiness,
                "probe accuracy, leave-one-fold-out": mean_sd(emb.probe_accuracy),
                "probe accuracy, within fold": mean_sd(emb.within_fold_accuracy),
            }
        )
    return pd.DataFrame(rows)


def _per_class_table(result: CompareResult) -> pd.DataFrame:
    rows = []
    for cls, sim in result.per_class.items():
        rows.append(
            {
                "class": cls,
                "images": int(sim.n_images.sum()),
                "folds": len(sim.folds),
                "debiased linear CKA": sim.mean,
                f"{int(sim.confidence * 100)}% CI": (
                    f"{sim.mean_ci[0]:.3f} – {sim.mean_ci[1]:.3f}"
                    if np.isfinite(sim.mean_ci[0])
                    else "–"
                ),
                "permutation p": format_p(sim.p_value, sim.n_permutations),
                "fold min – max": f"{sim.min:.3f} – {sim.max:.3f}",
            }
        )
    return pd.DataFrame(rows)


def build_compare_page(result: CompareResult) -> Page:
    """The compare page as a :class:`~biomark.report.page.Page` (not yet written).

    Reads as the page's table of contents: one function per section.
    """
    run, s = result.run, result.settings
    versions = package_versions(
        ("numpy", "scipy", "pandas", "scikit-learn", "umap-learn", "plotly")
    )
    page = Page(
        f"Do {result.a} and {result.b} learn the same features?",
        subtitle=f"Representation comparison of run {run.name}",
        provenance={
            "run folder": str(run.root.resolve()),
            "compare settings": settings_dict(s),
            "random_state": result.random_state,
            "packages": ", ".join(f"{k} {v}" for k, v in versions.items()),
        },
    )
    built = construction(result)
    page.section("Summary")
    _summary_section(page, result, built)
    page.section("What was compared")
    _compared_section(page, result, built)
    page.section("CKA between the two strategies")
    _cka_section(page, result)
    if result.per_class:
        page.section("CKA within each class")
        page.table(
            _per_class_table(result),
            caption=(
                "Debiased linear CKA computed on one class's images only: do the strategies agree "
                "on how they tell images of the same class apart?"
            ),
        )
    page.section("Layer by layer")
    _layer_section(page, result, built)
    page.section("UMAP maps")
    _umap_section(page, result)
    page.section("Map quality and linear probes")
    for label in (result.a, result.b):
        if label in result.unit_matching:
            page.paragraph(result.unit_matching[label])
    page.table(
        _quality_table(result),
        caption=(
            "kNN purity: fraction of each image's k nearest neighbours sharing its class (or fold) "
            "in the standardised feature space and in the map. Trustworthiness: scikit-learn's, of "
            "the map. Probes: logistic regression on standardised features; leave-one-fold-out "
            "trains on the other folds' features (other models: in matched units where said "
            "above) and tests on this fold's, within-fold cross-validates inside one model's "
            "features."
        ),
    )
    return page


def _summary_section(page: Page, result: CompareResult, built: Construction) -> None:
    """Whether the strategies learned, what they share by construction, the reading of CKA, the
    run's notes."""
    guards = strategy_guards(result)
    add_chance_guard(page, guards.values())
    if not guards:
        page.note(
            "No predictions in the feature tables: whether the strategies learned was not checked.",
            kind="warning",
        )
    if built.controls:
        # the reading names the control itself: one warning box, not the same sentence twice
        page.note(interpret(result, guards), kind="warning")
    else:
        page.paragraph(interpret(result, guards))
    page.note(
        "How to read CKA: centered kernel alignment compares the two strategies' feature vectors "
        "of the same test images. 1 means the same representation up to rotation and scale; 0 "
        "means unrelated. The debiased estimator is used because the biased one is inflated when "
        "images are few relative to features (here about "
        f"{int(np.median(result.headline.n_images))} images per fold vs "
        f"{max(result.dims.values())} features). Wording thresholds: < 0.2 little, 0.2–0.5 some, "
        f"0.5–0.8 much, ≥ 0.8 nearly the same; p ≥ {result.info.report_settings().cka_alpha} is "
        "reported as no detectable shared structure."
    )
    for text in result.notes:
        page.note(text, kind="warning")


def _compared_section(page: Page, result: CompareResult, built: Construction) -> None:
    """The run, strategies, folds, images, dimensions, classes and settings compared, as one
    table."""
    run, s = result.run, result.settings
    facts = pd.DataFrame(
        [
            ("run", f"{run.name} ({run.root})"),
            ("strategies", f"{result.a} (A) vs {result.b} (B)"),
            ("folds", f"{len(result.folds)} test folds: {', '.join(map(str, result.folds))}"),
            (
                "images",
                f"{result.n_images} out-of-fold images (each compared under the model that did not "
                "train on it)",
            ),
            ("feature dimension", ", ".join(f"{k}: {v}" for k, v in result.dims.items())),
            (
                "classes",
                ", ".join(result.info.classes)
                or ", ".join(sorted(result.meta["label"].astype(str).unique())),
            ),
            (
                "permutations / bootstrap",
                f"{s.n_permutations} / {s.n_bootstrap} (seed {result.random_state})",
            ),
            (
                "backbone weights",
                f"model.weights '{built.weights}'"
                + (
                    f" (random-features control: {', '.join(built.controls)})"
                    if built.controls
                    else ""
                ),
            ),
            ("shared by construction", built.shared_text() or "nothing"),
        ],
        columns=["", "value"],
    )
    page.table(facts)


def _cka_section(page: Page, result: CompareResult) -> None:
    """The headline CKA table, its per-fold figure and its permutation null."""
    page.table(
        _summary_table(result),
        caption=(
            "Mean over test folds of the per-fold CKA. Interval: bootstrap percentile interval of "
            "that mean, images resampled within folds. p: permutation test of the fold mean, "
            "pairing of images shuffled within folds."
        ),
    )
    page.figure(
        fold_figure(result), caption="CKA on each test fold, with per-fold bootstrap intervals."
    )
    if result.headline.null_means.size:
        page.figure(
            null_figure(result.headline),
            caption=(
                "Permutation null distribution of the fold-mean debiased linear CKA (images' "
                "pairing shuffled) and the observed value."
            ),
        )


def _layer_section(page: Page, result: CompareResult, built: Construction) -> None:
    """The block-by-block CKA heat map and its diagonal, or how to get them."""
    if result.layerwise is not None:
        page.figure(
            heatmap_figure(result),
            caption=(
                f"Debiased linear CKA between every block of {result.a} (rows) and of {result.b} "
                f"(columns), averaged over folds {', '.join(map(str, result.layerwise.folds))} "
                "(Kornblith et al. 2019)."
            ),
        )
        diagonal = diagonal_text(result, built)
        if diagonal:
            page.paragraph(diagonal)
    else:
        page.note(
            "Not available for this run: the block-by-block heat map needs per-block outputs. Add "
            "`dump: {blocks: true}` to the plan and re-run `biomark extract`."
        )


def _umap_section(page: Page, result: CompareResult) -> None:
    """Both strategies' UMAP maps, or a note that they were skipped."""
    if all(e.coords is not None for e in result.embedding.values()):
        page.figure(
            umap_figure(result),
            caption=(
                "UMAP of each strategy's out-of-fold features (standardised), seeded. Use the menu "
                "to colour by class, fold, source or patient; hover for image id, label and "
                "prediction. Out-of-fold features of different folds come from different models: a "
                "map organised by fold shows that, even in units matched across folds (see below), "
                "where the networks' scales and near-copies still differ."
            ),
        )
    else:
        page.note("UMAP was skipped (--no-umap).")


def write_compare_report(
    result: CompareResult, reports_dir: str | Path = "reports"
) -> tuple[Path, Path]:
    """Write ``compare_<a>_vs_<b>.html`` and ``.csv`` under ``<reports_dir>/<run name>/``.

    Returns
    -------
    (html_path, csv_path)
    """
    html_path, csv_path = report_paths(reports_dir, result.run.name, result.a, result.b)
    write_compare_csv(result, csv_path)
    build_compare_page(result).write(html_path)
    return html_path, csv_path
