"""The feature sections of the biomarker report: attributions, localisation, statistics, stability,
candidates.

Each function renders one section of ``index.html`` from a
:class:`~biomark.report.report_data.ReportData` into a
:class:`~biomark.report.page.Page`; :mod:`biomark.report.report_page` puts
them in order.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from biomark.analysis.alignment import own_backbones
from biomark.analysis.biomarkers import TABLE_COLUMNS
from biomark.analysis.inputs import true_where
from biomark.analysis.redundancy import NEAR_COPY_R
from biomark.report.figures import gallery_html, shap_figure
from biomark.report.page import Page
from biomark.report.report_data import ReportData
from biomark.report.report_text import claim_verdict, learned, lung_criterion
from biomark.report.strategy_report import StrategyReport

__all__ = [
    "attribution_section",
    "candidate_section",
    "localisation_section",
    "ranked_rows",
    "stability_section",
    "statistics_section",
    "strategies_section",
    "top_candidates",
    "unit_matching",
    "unit_redundancy_note",
    "unpicked_rows",
]


def ranked_rows(table: pd.DataFrame) -> pd.DataFrame:
    """Candidate rows: candidates first, then undetermined, then by rank.

    Examples
    --------
    ``is_candidate`` is NA where a row could not be tested (undetermined):

    >>> table = pd.DataFrame(
    ...     {
    ...         "feature": ["f1", "f2", "f3", "f4"],
    ...         "rank": [1, 2, 3, 4],
    ...         "is_candidate": [False, None, True, True],
    ...     }
    ... )
    >>> ranked_rows(table)["feature"].tolist()
    ['f3', 'f4', 'f2', 'f1']
    """
    order = table.assign(
        _c=true_where(table["is_candidate"]), _u=table["is_candidate"].isna()
    ).sort_values(["_c", "_u", "rank"], ascending=[False, False, True], kind="stable")
    return order.drop(columns=["_c", "_u"])


def top_candidates(data: ReportData, n: int = 10) -> pd.DataFrame:
    """The best rows of the candidate table: candidates first, then rank (for the CLI)."""
    table = data.candidates
    if table.empty:
        return table
    return (
        ranked_rows(table)[
            [
                "strategy",
                "class",
                "feature",
                "cliffs_delta",
                "auc",
                "q",
                "stable",
                "lung_fraction",
                "radiomic_r2",
                "is_candidate",
                "flags",
                *(["copy_of"] if "copy_of" in table.columns else []),
            ]
        ]
        .head(n)
        .reset_index(drop=True)
    )


def _strategy_tables(rep: StrategyReport, top: int = 5) -> pd.DataFrame:
    table = rep.candidates
    if table is None or table.empty:
        return pd.DataFrame()
    # The evidence columns of the candidate table, from the SHAP rank to the mixed model's q.
    evidence = TABLE_COLUMNS[TABLE_COLUMNS.index("rank") : TABLE_COLUMNS.index("mixed_q") + 1]
    cols = ["class", "feature", *evidence]
    return table[table["rank"] <= top][cols]


#: Columns of the candidate tables, verdict first so it is never cut off.
_CANDIDATE_COLUMNS = (
    "strategy",
    "class",
    "feature",
    "is_candidate",
    "status",
    "flags",
    "copy_of",
    "rank",
    "q",
    "topk_freq",
    "topk_freq_own",
    "stability_basis",
    "members",
    "match_r",
    "lung_fraction",
    "lung_method",
    "cliffs_delta",
    "auc",
    "auc_ci_low",
    "auc_ci_high",
    "source_q",
    "radiomic_correlates",
    "radiomic_zone",
    "radiomic_correlates_all_films",
    "radiomic_r2",
)


def _folds_needed(data: ReportData) -> str:
    """E.g. ", here 3 of 3": how many of the analysed folds the stability share asks for."""
    counts = sorted({len(rep.folds) for rep in data.strategies.values() if rep.folds})
    if not counts:
        return ""
    share = data.settings.criteria.min_stability
    # the fewest folds that pass the criterion's own test (biomarkers: frequency >= min_stability)
    needed = [f"{next((m for m in range(n + 1) if m / n >= share), n)} of {n}" for n in counts]
    return f", here {' or '.join(needed)}"


def _null_clause(rep: StrategyReport, min_lung_fraction: float) -> str:
    """What units without a learned preference read by the same method ("" without them)."""
    null = rep.lung_null
    if null is None:
        return ""
    return (
        f" By the same method the {null.source} read {null.band()} (lung_null.csv): a feature "
        f"counts as in the lungs at {null.inside_threshold(min_lung_fraction):.3f} or more and is "
        f"flagged outside them below {null.outside_threshold(min_lung_fraction):.3f}."
    )


def candidate_section(page: Page, data: ReportData, n_top: int = 12) -> None:
    s = data.settings
    table = data.candidates
    page.paragraph(
        f"A candidate is FDR-significant (q < {s.criteria.alpha}), stable (top-{s.top_k} in ≥ "
        f"{s.criteria.min_stability:.0%} of folds{_folds_needed(data)}, where a near-copy of the "
        f"feature in the same fold's network, r ≥ {NEAR_COPY_R:g}, ranked in its place counts as "
        "the feature: topk_freq_own is its own frequency; for unit families matched "
        f"poorly across folds, the same class effect in ≥ {s.criteria.min_stability:.0%} of folds "
        f"and members that agree on the class's own images at r ≥ {s.criteria.min_match_r:g}, "
        f"see stability_basis), inside the lungs ({lung_criterion(data)}) and not a source "
        "marker, and comes from a model that is "
        "above chance. radiomic_r2 is how much of the feature's variation within its class the "
        "lung radiomics explain (leave-one-out ridge R²; for a matched unit family, of its "
        "consensus over the folds' models, see Methods): a biomarker should grade its finding, and "
        "a feature that reads the lungs should do so visibly there. radiomic_correlates names "
        "the radiomic features it correlates with most among its class's films (Spearman, FDR "
        "within the class): what it grades there; radiomic_zone, where in the lungs it grades it: "
        "the zones (of upper, middle and lower, and of central and peripheral) in which the "
        "strongest correlate, measured zone by zone, tracks the feature better than in the other "
        "zones of the same band (95% bootstrap interval of the difference above 0; empty where no "
        "zone leads, as for a finding spread over the lungs, or without zone radiomics); "
        "radiomic_correlates_all_films, over every "
        "film, mostly says what sets the class apart. copy_of names the "
        f"better-ranked candidate a candidate is a near-copy of (activation r ≥ {NEAR_COPY_R:g} "
        "over the images, every pair of a group): copies are one biomarker counted twice. Below: "
        "the best rows with the reason for their verdict, then every row."
    )
    if not len(table):
        page.note("No shortlisted features (see the notes above).", kind="warning")
        return
    top = ranked_rows(table).head(n_top)
    shown = ["strategy", "class", "feature", "is_candidate", "status", "flags", "copy_of"]
    page.table(
        top[[c for c in shown if c in top.columns]],
        caption=(
            f"The {len(top)} best rows (candidates first, then by rank) and why each is or is not "
            "a candidate."
        ),
    )
    for rep in data.strategies.values():
        swap = rep.lung_swap_reading
        if swap is not None and swap.flagged and learned(rep):
            page.note(
                f"{rep.label}: the lung swap finds its answers for {', '.join(swap.flagged)} "
                "swayed by what surrounds the lungs (shortcut audit). Their rows can still be lung "
                "features, but the model's verdict on these classes leans on the surroundings too: "
                "check that the disease shows there.",
                kind="warning",
            )
    _picks_table(page, data)
    cols = [c for c in _CANDIDATE_COLUMNS if c in table.columns]
    page.interactive_table(
        table[cols],
        float_format="{:.3g}",
        wrap=("status", "flags", "radiomic_correlates", "radiomic_correlates_all_films"),
        link="candidates.csv",
        caption=(
            f"All {len(table)} shortlisted (feature, class) rows: click a header to sort, type "
            "to filter (e.g. 'scratch covid candidate'); every column in candidates.csv."
        ),
    )


def _picks_table(page: Page, data: ReportData) -> None:
    """Per class of each strategy that learned: the one feature the report stands behind, and
    why."""
    frames = []
    for rep in data.strategies.values():
        picks = rep.picks() if learned(rep) else None
        if picks is not None and len(picks.table):
            frames.append(picks.table)
    if not frames:
        return
    picked = pd.concat(frames, ignore_index=True)
    extra = ["auc", "lung_fraction", "radiomic_correlates", "radiomic_zone"]
    picked = picked.merge(
        data.candidates[["strategy", "class", "feature", *extra]],
        on=["strategy", "class", "feature"],
        how="left",
    )
    page.table(
        picked[["strategy", "class", "feature", "chosen_as", "radiomic_r2", *extra]],
        float_format="{:.3g}",
        wrap=("radiomic_correlates",),
        caption=(
            "Per class, the feature the report stands behind (its pick): among the candidates, or "
            "without one the stable, significant, unflagged features, the one whose variation "
            "within the class the lung radiomics explain best (radiomic_r2); otherwise the "
            "top-ranked feature, which is not evidence."
        ),
    )
    unpicked = unpicked_rows(data)
    if unpicked is not None:
        page.table(
            unpicked,
            wrap=("why",),
            caption=(
                "Classes whose pick above is only the top-ranked feature, and why no feature "
                "qualified: counts over the class's shortlist (significant: q < "
                f"{data.settings.criteria.alpha:g}; stable: see the criteria above). Where the "
                "folds' networks each separate a class with units of their own, the network's "
                "evidence for the class as a whole may still grade it (Does the network grade "
                "each disease?)."
            ),
        )


def unpicked_rows(data: ReportData) -> pd.DataFrame | None:
    """Every strategy that learned: its classes without a pick the report stands behind, and why
    (:func:`biomark.analysis.unpicked.why_unpicked`); None when there are none."""
    frames = [
        rep.unpicked
        for rep in data.strategies.values()
        if learned(rep) and rep.unpicked is not None and len(rep.unpicked)
    ]
    return pd.concat(frames, ignore_index=True) if frames else None


def attribution_section(page: Page, data: ReportData) -> None:
    """SHAP additivity per fold and the mean |SHAP| of every strategy."""
    page.paragraph(
        "Attributions (SHAP family; the method is in the table and the Methods) of each class "
        "logit of the classifier head with respect to the GAP features, per "
        "fold. Additivity: the attributions of an image sum to its logit minus the mean logit of "
        "the background; the errors below are that identity's rounding error."
    )
    adds = [
        r.additivity.assign(strategy=r.label)
        for r in data.strategies.values()
        if r.additivity is not None
    ]
    if adds:
        page.table(
            pd.concat(adds, ignore_index=True),
            caption="Per fold: SHAP method, images, additivity error",
            float_format="{:.3g}",
        )
    for rep in data.strategies.values():
        if rep.importance:
            page.figure(
                shap_figure(rep.importance, f"{rep.label}: mean |SHAP|"),
                caption=(
                    "Mean |SHAP| over folds and explained images; choose the class in the menu."
                ),
            )
        else:
            page.note(
                f"{rep.label}: no SHAP values (no model.keras in the fold folders).", kind="warning"
            )


def _tile_lung(fraction: float, measured: bool) -> str:
    """A gallery tile's lung fraction, or why it has none: the feature is silent there, or the image
    was not measured."""
    if np.isfinite(fraction):
        return f"{fraction:.2f}"
    return "– (silent)" if measured else "– (not measured)"


def localisation_section(page: Page, data: ReportData) -> None:
    """Lung fractions, map galleries and Grad-CAM: where the features live."""
    s = data.settings
    for rep in data.strategies.values():
        page.subsection(rep.heading)
        if rep.lung is None:
            page.note(
                f"{rep.label}: lung fractions missing (needs model.keras and the dataset's "
                "images).",
                kind="warning",
            )
            continue
        page.paragraph(
            f"{rep.label}: masks from {rep.mask_source}; a feature spread evenly over the image "
            f"would have lung fraction {rep.lung_area_fraction:.2f}, one firing only in the map "
            f"cell with the most lung {rep.lung_attainable:.2f} (the most the maps can show). "
            "Identity check: spatial mean of the "
            f"out_relu map vs the dumped GAP value, max |difference| {rep.identity_error:.2g}. "
            f"Lung fractions measured by: {rep.lung_method or 'out_relu maps'}."
            + _null_clause(rep, s.criteria.min_lung_fraction)
        )  # units: method
        if rep.lung_attainable < s.criteria.min_lung_fraction and not rep.lung_method.startswith(
            "occlusion"
        ):
            page.note(
                f"{rep.label}: the out_relu maps are too coarse for the lung test (attainable lung "
                f"fraction {rep.lung_attainable:.2f} < {s.criteria.min_lung_fraction}); the "
                "criterion is left untested. Use a larger model.image_size.",
                kind="warning",
            )
        if rep.thumbnails:
            groups = [
                {
                    "title": f"{g['feature']} ({g['class']}; {g['status']})",
                    "shared_scale": True,
                    "tiles": [
                        {
                            "image": t["image"],
                            "overlay": t["overlay"],
                            "text": f"{t['which']}: {t['label']} {t['value']:.2f}, lung "
                            + _tile_lung(t["lung_fraction"], t["lung_measured"]),
                        }
                        for t in g["tiles"]
                    ],
                }
                for g in rep.thumbnails
            ]
            page.html(
                gallery_html(
                    groups,
                    "Images with the highest and lowest values of each feature, its map "
                    "overlaid (red, one scale per feature; bilinear upsampling of the out_relu "
                    "channel); 'lung' is the feature's lung fraction in that image, measured as "
                    "stated above ('not measured': the image is not among those the lung test ran "
                    "on; 'silent': the feature neither fires nor responds to the test there).",
                )
            )
        if rep.gradcam:
            page.html(
                gallery_html(
                    [
                        {
                            "title": f"{rep.label}: Grad-CAM of the predicted class",
                            "tiles": [
                                {
                                    "image": g["image"],
                                    "overlay": g["overlay"],
                                    "text": f"{g['label']} → {g['pred']}",
                                }
                                for g in rep.gradcam
                            ],
                        }
                    ],
                    "Grad-CAM with weights (1/HW)·∂logit/∂g from the numpy head's analytic "
                    "gradient.",
                )
            )


def statistics_section(page: Page, data: ReportData) -> None:
    """The top shortlisted features per class at image, patient and mixed-model level."""
    page.paragraph(
        "The top shortlisted features per class: image level (delta, AUC [CI], q), patient level "
        "(per-patient means) and mixed model (coefficient, q)."
    )
    for rep in data.strategies.values():
        t = _strategy_tables(rep)
        if len(t) or rep.skipped:
            page.subsection(rep.heading)
        if len(t):
            page.table(t, caption=f"{rep.label}: top 5 per class", float_format="{:.3g}")
        if rep.skipped:
            page.table(
                pd.DataFrame(rep.skipped).drop_duplicates(),
                caption=f"{rep.label}: tests not run, and why",
            )


def stability_section(page: Page, data: ReportData) -> None:
    """How many directions the units span, unit matching across folds, and Kendall's W of the folds'
    rankings."""
    for rep in data.strategies.values():
        page.subsection(rep.heading)
        unit_redundancy_note(page, rep)
        unit_matching(page, rep)  # units: matched units across folds
        if rep.kendall is not None:
            page.table(
                rep.kendall,
                caption=f"{rep.label}: Kendall's W of the folds' mean |SHAP| rankings",
                float_format="{:.3g}",
            )
        else:
            page.note(
                f"{rep.label}: stability needs SHAP values on at least two folds.", kind="warning"
            )


def strategies_section(page: Page, data: ReportData) -> None:
    """The paper's claim: CKA between strategies and the overlap of radiomic correlates."""
    page.paragraph(
        "The paper suggests features learned from scratch may be biomarkers distinct from those of "
        "ImageNet-pretrained networks. Tested here by the representations' similarity (CKA) and by "
        "the overlap of the candidates' radiomic correlates (named among each candidate's class's "
        "films, radiomic_correlates)."
    )
    for text in claim_verdict(data):
        page.paragraph(text)
    if len(data.cka):
        page.table(
            data.cka, caption="Debiased linear CKA between strategies (1 = same representation)"
        )
    if data.overlap is not None and len(data.overlap):
        page.table(
            data.overlap, caption="Jaccard overlap of radiomic correlates (features, families)"
        )


def unit_redundancy_note(page: Page, rep: StrategyReport) -> None:
    """One sentence: how many directions the strategy's units span (a warning box when they are
    near-copies)."""
    red = rep.redundancy
    if red is None or red.n_live == 0:
        return
    text = f"{rep.label}: {red.describe()}."
    if red.redundant:
        text += (
            " Read a stability or candidate verdict of one unit as a verdict on its direction; the "
            "network's own class evidence (Does the network grade each disease?) is one reading "
            "per class that does not depend on which copy ranks first."
        )
        page.note(text, kind="warning")
    else:
        page.paragraph(text)
    if rep.directions is not None and len(rep.directions):
        page.table(
            rep.directions,
            float_format="{:.2f}",
            caption=(
                f"{rep.label}: the leading directions of its units over the same images: share of "
                "the units' variance; share of the direction's own variance that lies between the "
                "class means (near 1: a class code; near 0: a factor that varies within the "
                "classes, where grading or a shortcut would live); the classes at either end (each "
                "direction turned so that its units, on the whole, fire more at the high end); "
                "units whose activation follows the direction at "
                f"|r| ≥ {NEAR_COPY_R:g}."
            ),
        )


def unit_matching(page: Page, rep: StrategyReport) -> None:
    """How well a strategy's units were matched across folds (nothing for a shared backbone)."""
    if rep.alignment_quality is None or rep.alignment is None:
        return
    al = rep.alignment
    page.paragraph(
        f"{rep.label}: {own_backbones(rep.label)}; units were matched one to one to fold "
        f"{al.reference_fold}'s by {al.method}. A feature u#### is that family; its members per "
        "fold are in candidates.csv (members, match_r)."
    )
    within = " within classes (each class's mean removed)" if al.within_classes else ""
    page.table(
        rep.alignment_quality,
        float_format="{:.2f}",
        caption=(
            f"{rep.label}: matched activation correlations{within} per fold (median, 10th and 90th "
            "percentiles), the share of units matched at r ≥ 0.5 (or above the null, if it reaches "
            "higher), the same matching on image-shuffled activations (null: what unrelated units "
            "reach), and each unit's best counterpart in the fold whether or not the one-to-one "
            "match gave it that unit (best_r_median, share_best_matched: far above the matched "
            "figures when the units are near-copies)."
        ),
    )
