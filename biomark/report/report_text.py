"""The report's sentences: what limits the conclusions, the verdict on the paper's claim, the
methods.

Plain-text builders over a :class:`~biomark.report.report_data.ReportData`,
used by :func:`biomark.report.report_page.build_report_page`; nothing here
renders HTML.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd

from biomark.analysis.attribution import method_sentence
from biomark.analysis.audit import POOLED_RECOVERABLE, RECOVERABLE, SPLIT_REPEATS, flagged_rows
from biomark.analysis.blackout import OUTSIDE_VERDICTS
from biomark.analysis.by_source import confounding_sentences
from biomark.analysis.chance import p_clause
from biomark.analysis.construction import shared_by_construction
from biomark.analysis.inputs import true_where
from biomark.analysis.lung_null import LungNull
from biomark.analysis.redundancy import NEAR_COPY_R, distinct_candidates
from biomark.exceptions import ConfigError
from biomark.features.run_folder import RunFolder
from biomark.features.run_summary import epochs_words, validation_split_words
from biomark.provenance import package_versions
from biomark.report.compare_page import claim_reading
from biomark.report.report_data import ReportData
from biomark.report.strategy_report import ReportSettings, StrategyReport

__all__ = [
    "audit_clauses",
    "claim_verdict",
    "class_sources_table",
    "flag_evidence",
    "learned",
    "limitations",
    "methods_sentences",
    "n_candidates",
    "plan_weights",
    "source_sentences",
    "strategy_summary",
]


def plan_weights(data: ReportData) -> str:
    """The run's ``model.weights`` (``"none"``: random backbones, a control)."""
    return data.info.weights


def n_candidates(rep: StrategyReport) -> int:
    """How many of the strategy's shortlisted (feature, class) pairs are candidates."""
    t = rep.candidates
    return int(true_where(t["is_candidate"]).sum()) if t is not None and len(t) else 0


def learned(rep: StrategyReport) -> bool:
    """Whether the strategy is above chance (no chance guard: assumed so)."""
    return rep.chance is None or rep.chance.learned


def strategy_summary(rep: StrategyReport) -> str:
    """One strategy in a sentence: its candidates among the shortlist, and what the audit found.

    The index page's summary and ``biomark report``'s printout say the same.
    """
    t = rep.candidates if rep.candidates is not None else pd.DataFrame()
    folds = f"folds {rep.folds}" + (
        f" (not finished: {rep.missing_folds})" if rep.missing_folds else ""
    )
    if not learned(rep):
        return (
            f"{rep.heading}: not above chance, so none of its {len(t)} shortlisted "
            f"(feature, class) pairs is called a candidate; {folds}."
        )
    n_c = n_candidates(rep)
    n_u = int(t["is_candidate"].isna().sum()) if len(t) else 0
    audit = audit_clauses(rep.source_predictability)
    if rep.blackout_reading is not None:
        reading = rep.blackout_reading
        kept = (
            f" ({', '.join(reading.kept_classes)} still told apart: see the audit)"
            if reading.kept_classes and reading.verdict in OUTSIDE_VERDICTS
            else ""
        )
        audit.append(f"lung blackout: {reading.label}{kept}")
    if rep.lung_swap_reading is not None:
        audit.append(f"lung swap: {rep.lung_swap_reading.label}")
    distinct = distinct_candidates(t)
    merged = (
        f" ({distinct} distinct feature{'s' if distinct != 1 else ''} once near-copies are merged, "
        "see copy_of)"
        if 0 < distinct < n_c
        else ""
    )
    return (
        f"{rep.heading}: {n_c} candidate biomarker(s){merged} among {len(t)} shortlisted "
        f"(feature, class) pairs; {n_u} undetermined for lack of a test; {folds}"
        + (f". Audit: {'; '.join(audit)}." if audit else ".")
    )


def class_sources_table(data: ReportData) -> pd.DataFrame | None:
    """The class x source composition (the same images for every strategy: the first audit has
    it)."""
    for rep in data.strategies.values():
        sp = rep.source_predictability
        if sp is not None and sp.attrs.get("class_sources") is not None:
            return sp.attrs["class_sources"]
    return None


def flag_evidence(row: pd.Series) -> str:
    """``"AUC 0.63, Holm p = 0.032"``: the evidence of one row of a source audit table.

    Examples
    --------
    >>> flag_evidence(pd.Series({"class": "COVID-19", "auc": 0.634, "p_adjusted": 0.0321}))
    'AUC 0.63, Holm p = 0.032'
    """
    return f"AUC {row['auc']:.2f}, Holm p = {row['p_adjusted']:.2g}"


def audit_clauses(audit: pd.DataFrame | None) -> list[str]:
    """The model-level source audit of one strategy in clauses: the pooled test, then each flagged
    class.

    Parameters
    ----------
    audit : DataFrame or None
        :func:`biomark.analysis.audit.source_predictability`'s table.

    Returns
    -------
    list of str
        E.g. ``["pooled over the classes, source is not recoverable within classes (Holm p = 1)",
        "source is weakly recoverable within COVID-19 (AUC 0.63, Holm p = 0.032)", ...,
        "with no source signal at all, about 1 run in 20 is flagged somewhere by chance ..."]``;
        empty without an audit.

    Examples
    --------
    The pooled result and the thresholds travel in the table's ``attrs``:

    >>> audit = pd.DataFrame(
    ...     {
    ...         "class": ["COVID-19", "Normal"],
    ...         "verdict": ["source is weakly recoverable", "source is not recoverable"],
    ...         "auc": [0.634, 0.51],
    ...         "p_adjusted": [0.0321, 1.0],
    ...     }
    ... )
    >>> audit.attrs["pooled"] = {
    ...     "classes": 2,
    ...     "verdict": "source is not recoverable within classes",
    ...     "p_adjusted": 1.0,
    ... }
    >>> audit.attrs["thresholds"] = {"alpha": 0.05}
    >>> clauses = audit_clauses(audit)
    >>> clauses[0]
    'pooled over the classes, source is not recoverable within classes (Holm p = 1)'
    >>> clauses[1]
    'source is weakly recoverable within COVID-19 (AUC 0.63, Holm p = 0.032)'
    >>> print(clauses[2])  # only when something is flagged
    with no source signal at all, about 1 run in 20 is flagged somewhere by chance ...
    >>> audit_clauses(None)
    []
    """
    if audit is None:
        return []
    pooled = audit.attrs.get("pooled") or {}
    clauses = (
        [f"pooled over the classes, {pooled['verdict']} (Holm p = {pooled['p_adjusted']:.2g})"]
        if pooled.get("classes")
        else []
    )
    flagged = flagged_rows(audit)
    clauses += [
        f"{row['verdict']} within {row['class']} ({flag_evidence(row)})"
        for _, row in flagged.iterrows()
    ]
    alpha = (audit.attrs.get("thresholds") or {}).get("alpha")
    if len(flagged) and alpha:
        clauses.append(
            f"with no source signal at all, about 1 run in {round(1 / alpha)} is flagged somewhere "
            f"by chance (Holm over the classes and the pooled test at {alpha:g}), so a flag near "
            "that threshold asks for a look at those classes' sources rather than proving a "
            "shortcut"
        )
    return clauses


def source_sentences(data: ReportData) -> list[str]:
    """Which classes cannot be told apart from their source, in words (empty when none)."""
    table = class_sources_table(data)
    return confounding_sentences(table) if table is not None else []


def _outside_lungs_sentence(rep: StrategyReport, table: pd.DataFrame, data: ReportData) -> str:
    """How many shortlisted features are flagged outside the lungs, and against what."""
    flagged = int(true_where(table["flag_outside_lungs"]).sum())
    null, threshold = rep.lung_null, data.settings.criteria.min_lung_fraction
    if null is None:
        return (
            f"{rep.label}: {flagged} of {len(table)} shortlisted features lie mostly outside the "
            f"lung fields (lung fraction below {threshold:g})."
        )
    text = (
        f"{rep.label}: {flagged} of {len(table)} shortlisted features read further outside the "
        f"lungs than {null.upper_percentile} % of units without a learned preference "
        f"(lung fraction below {null.outside_threshold(threshold):.3f}; random units: "
        f"{null.band()})."
    )
    below = null.outside_threshold(threshold)
    tested, expected, p = null.outside_excess(
        flagged, pd.to_numeric(table["lung_fraction"], errors="coerce").to_numpy(), threshold
    )
    alpha = data.settings.criteria.alpha
    text += (
        f" Random units read that low at a rate of {100 * null.share_below(below):.1f} %, so "
        f"about {expected:.1f} of {tested} would by chance ({p_clause(p)}, binomial, one-sided): "
        + (
            "more than chance, so the strategy's shortlisted features lean outside the lungs."
            if p < alpha
            else "no more than chance, so this many flags is no evidence that the strategy reads "
            "outside the lungs; each flagged feature is still excluded from the candidates."
        )
    )
    if _random_control(rep, data):
        text += " This is a random-features control: its units have no learned preference either."
    return text


def lung_null_of(data: ReportData) -> LungNull | None:
    """The run's lung null (one per run, shared by the strategies that read it), or None."""
    return next((r.lung_null for r in data.strategies.values() if r.lung_null is not None), None)


def lung_criterion(data: ReportData) -> str:
    """The lung criterion as the report applied it, e.g. "lung fraction ≥ 0.523 = max(0.5, the
    random units' 95th percentile)" or, without the random units, "lung fraction ≥ 0.5"."""
    threshold = data.settings.criteria.min_lung_fraction
    null = lung_null_of(data)
    if null is None:
        return f"lung fraction ≥ {threshold:g}"
    return (
        f"lung fraction ≥ {null.inside_threshold(threshold):.3f} = max({threshold:g}, the random "
        f"units' {null.upper_percentile}th percentile)"
    )


def _random_control(rep: StrategyReport, data: ReportData) -> bool:
    """Whether the strategy is a random-features control (a label that names no strategy: not)."""
    try:
        return data.info.random_control(rep.label)
    except ConfigError:
        return False


def limitations(data: ReportData) -> list[str]:
    """Plain sentences on what limits the conclusions, generated from the guards and the audit."""
    out = []
    for rep in data.strategies.values():
        if not learned(rep):
            m = rep.chance.multiclass  # type: ignore[union-attr]
            out.append(
                f"{rep.label}: the model is not above chance ({100 * m.accuracy:.1f} % vs a "
                f"majority rate of {100 * m.majority_rate:.1f} %, {p_clause(m.p_value)}); none of "
                "its features is a candidate and no shortcut verdict is drawn from them."
            )
    out.extend(source_sentences(data))
    for rep in data.strategies.values():
        sp = rep.source_predictability
        if sp is not None and learned(rep):
            bad = sp[sp["verdict"] == RECOVERABLE]
            for _, r in bad.iterrows():
                out.append(
                    f"{rep.label}: within {r['class']}, the image source is recoverable from the "
                    f"features (AUC {r['auc']:.2f}, beyond the permutation null's 95th percentile "
                    f"{r['null_q95']:.2f}; Holm p = {r['p_adjusted']:.2g}): features can separate "
                    "sites, not only disease."
                )
            pooled = sp.attrs.get("pooled") or {}
            if pooled.get("verdict") == POOLED_RECOVERABLE and bad.empty:
                out.append(
                    f"{rep.label}: over all classes together the source is recoverable within "
                    f"class (mean AUC {pooled['auc']:.2f} vs null 95th percentile "
                    f"{pooled['null_q95']:.2f}, p = {pooled['p']:.2g}, Holm "
                    f"{pooled['p_adjusted']:.2g}), though no single class reaches significance."
                )
        reading = rep.blackout_reading
        if reading is not None and (
            reading.verdict == "out of distribution" or reading.verdict in OUTSIDE_VERDICTS
        ):
            out.append(f"{rep.label}: lung blackout: {reading.sentence}")
        swap = rep.lung_swap_reading
        if swap is not None and swap.flagged and learned(rep):
            out.append(f"{rep.label}: lung swap: {swap.sentence}")
        table = rep.candidates
        if table is not None and len(table) and learned(rep):
            if true_where(table["flag_outside_lungs"]).any():
                out.append(_outside_lungs_sentence(rep, table, data))
        out.extend(rep.notes)
    if plan_weights(data).strip().lower() in ("", "none"):
        out.append(
            "model.weights is 'none': the frozen and fine-tuned strategies start from one seeded "
            "random backbone (random-features controls), so nothing on this page compares scratch "
            "with ImageNet features."
        )
    n_img = max((len(r.meta) for r in data.strategies.values()), default=0)
    if n_img < 200:
        out.append(f"Only {n_img} images: tests have little power and the intervals are wide.")
    out.extend(_localisation_limits(data))
    out.append(
        "SHAP values explain the classifier head given the GAP features (interventional, "
        "independent features); they say which features the head uses, not what in the image "
        "causes them."
    )
    return out


def claim_verdict(data: ReportData) -> list[str]:
    """Plain sentences on the paper's claim: do the strategies' features (and candidates) differ?"""
    out = []
    guards = {k: v.chance for k, v in data.strategies.items() if v.chance is not None}
    run = RunFolder(data.run_dir)
    for _, r in data.cka.iterrows():
        v = r["linear_cka_debiased"]
        if isinstance(v, float) and np.isfinite(v):
            labels = (str(r["a"]), str(r["b"]))
            built = shared_by_construction(
                *labels,
                plan_weights(data),
                one_random_backbone=run.one_random_backbone(labels),
            )
            pair = {k: g for k, g in guards.items() if k in (r["a"], r["b"])}
            out.append(
                f"{r['a']} vs {r['b']}: debiased linear CKA {v:.2f} ({r['source']}): "
                + claim_reading(v, p_value=None, built=built, guards=pair)
            )
    if data.overlap is not None:
        for _, r in data.overlap.iterrows():
            jf, jm = r["jaccard_features"], r["jaccard_families"]
            if any(
                not learned(data.strategies[k]) for k in (r["a"], r["b"]) if k in data.strategies
            ):
                continue  # shortlists of a model at chance: no feature-level reading
            if np.isfinite(jf):
                out.append(
                    f"{r['a']} vs {r['b']} ({r['basis']}): Jaccard overlap of radiomic correlates "
                    f"{jf:.2f} (features), {jm:.2f} (families; shared: "
                    f"{r['shared_families'] or 'none'})."
                )
    counts = {
        k: n_candidates(v)
        for k, v in data.strategies.items()
        if v.candidates is not None and len(v.candidates)
    }
    if counts:
        scratch = data.strategies.get("scratch")
        if scratch is not None and not learned(scratch):
            out.append(
                "The claim that training from scratch yields biomarkers cannot be tested on this "
                "run: the scratch model is not above chance, so its features are not ones it "
                "learned."
            )
        elif counts.get("scratch") == 0:
            out.append(
                "No scratch feature passes every criterion: on this run the claim that training "
                "from scratch yields biomarkers is not supported (which differs from 'refuted': "
                "see the undetermined rows and the limitations)."
            )
        out.append(
            "Candidates per strategy: "
            + ", ".join(
                f"{k} {v}"
                + ("" if learned(data.strategies[k]) else " (model at chance: none called)")
                for k, v in counts.items()
            )
            + "."
        )
    return out


def _setup_sentences(data: ReportData) -> list[str]:
    """The run and its data, the cross-validation, the model and training, the software."""
    info = data.info
    keras_info = info.keras

    def plan(key: str) -> Any:
        return info.plan_value(key, "?")

    versions = package_versions(
        ("numpy", "scipy", "pandas", "scikit-learn", "statsmodels", "shap", "plotly")
    )
    return [
        f"Run {data.name} (plan hash {info.plan_hash or '?'}, seed {info.seed}); "
        f"dataset {info.dataset.dir or '?'} ({info.dataset.n_images or '?'} images, "
        f"classes {', '.join(info.classes)}).",
        f"{info.k or '?'}-fold cross-validation grouped by "
        f"{info.folds.grouping or plan('cv.grouping')} (folds in folds.csv, shared by every "
        f"strategy), {validation_split_words(plan('cv.validation_fraction'))}.",
        f"MobileNetV2 alpha {plan('model.alpha')} at {plan('model.image_size')} px, weights "
        f"{plan('model.weights')}, head Dense({plan('model.head_units')}, relu) → BatchNorm → "
        f"Dropout({plan('model.dropout')}) → softmax; {plan('training.optimizer')}, lr "
        f"{plan('training.learning_rate')}, "
        f"{epochs_words(info)}, "
        f"batch {plan('training.batch_size')}. "
        f"Strategies: {', '.join(data.strategies)}.",
        f"Keras {keras_info.get('keras', '?')} on {keras_info.get('backend', '?')}; "
        + ", ".join(f"{k} {v}" for k, v in versions.items())
        + ".",
    ]


def _statistics_sentences(s: ReportSettings) -> list[str]:
    """The per-feature tests, then the fold stability and redundancy of the features."""
    return [
        "Per-feature statistics (biomark.analysis.stats): class-vs-rest Mann–Whitney U with "
        "Benjamini–Hochberg q over all features, Cliff's delta, single-feature AUC with a "
        f"stratified bootstrap {100 * (1 - s.criteria.alpha):.0f}% interval ({s.n_bootstrap} "
        f"draws); the shortlist ({s.top_k} per class, by mean |SHAP|) repeated on per-patient "
        f"means and, for the top {s.n_mixed}, with a linear mixed model (random intercept per "
        "patient, REML: the estimates of statsmodels MixedLM, biomark.analysis.random_intercept).",
        f"Fold stability: top-{s.top_k} frequency of each feature across folds (by per-fold mean "
        "|SHAP|; a near-copy of the feature in the same fold's network, activation r ≥ "
        f"{NEAR_COPY_R:g} over the images, ranked in its place counts as the feature, since which "
        "of a network's near-copies the attributions rank first is partly chance) and Kendall's W "
        "of the folds' rankings; where the folds' backbones differ "
        "(trained or fine-tuned per fold, or a random backbone whose BatchNormalization statistics "
        "each fold estimated on its own training images), over unit families "
        "matched one to one to a reference fold by activation correlation on common images, each "
        "class's mean removed so that members grade the same variation within classes (scipy "
        f"linear_sum_assignment), and, for families matched below r = {s.criteria.min_match_r}, "
        "the share of folds showing the class effect (|Cliff's delta| ≥ "
        f"{s.criteria.min_fold_effect} with the pooled sign) and the members' weakest correlation "
        "on the class's own reference images "
        "(biomark.analysis.unit_families.within_class_member_r; "
        "without every image through every fold's model, whether the top radiomic correlate "
        "keeps its family). How many directions the units span: "
        "principal components of the standardised units holding 90% of their variance over one "
        f"network's images, and the share of units with a near-copy (r ≥ {NEAR_COPY_R:g}) in the "
        "same network (biomark.analysis.redundancy); candidates that are near-copies of a "
        f"better-ranked candidate (complete linkage, every pair at r ≥ {NEAR_COPY_R:g}) name it in "
        "copy_of.",
    ]


def _audit_sentence(data: ReportData) -> str:
    """The source audit, the lung localisation and the lung-blackout and lung-swap controls."""
    s = data.settings
    masks = ", ".join(sorted({r.mask_source for r in data.strategies.values() if r.mask_source}))
    return (
        "Audit: within-class source prediction (ridge classifier on features standardised within "
        "the class, "
        "held-out folds, ROC AUC; where the folds train networks of their own, each network is "
        "probed on its own units over the images every fold's model embedded and the AUCs are "
        "averaged, since a probe fitted on one network's units does not carry over to another's) "
        "against a permutation null (sources shuffled between patients within the class, the same "
        "shuffles for every network; Holm over classes, and one pooled test over classes); "
        + (
            "the same test on the images' radiomics, inside the lung mask and outside it (the "
            "radiomics' outside control), for where the images themselves carry their source, its "
            f"AUC averaged over {SPLIT_REPEATS} shuffles of a patient-grouped 5-fold split "
            "(biomark.analysis.source_regions); "
            if data.source_regions is not None
            else ""
        )
        + "source beyond class per feature (nested OLS F-test on per-patient means, BH); share of "
        "each feature inside "
        f"the lung mask ({masks or 'no masks'}): its activation mass on the out_relu maps where "
        "they are fine enough, else its change when the lungs, or the rest, are filled with the "
        "mean image (occlusion); lung-blackout control (lung pixels set to 0, each fold's model "
        "re-run on its test images), read against the majority rate and the class distribution of "
        "the blacked-out predictions (biomark.analysis.blackout.read_blackout); lung-swap control "
        "(each test film with the lungs of a film of another class pasted over both lung masks, "
        f"grown by {s.swap_margin:.0%} of the side): per class, are composites answered as that "
        "class more often when their surroundings are of it, at the same lung class "
        "(Cochran-Mantel-Haenszel, one-sided, Holm over classes; biomark.analysis.lung_swap)."
    )


def methods_sentences(data: ReportData) -> list[str]:
    """The Methods paragraph of the page, one sentence per item."""
    s = data.settings
    return [
        *_setup_sentences(data),
        method_sentence(
            s.shap_method,
            n_permutations=s.n_permutations,
            precision=s.shap_precision,  # units
            n_background=s.n_background,
            n_explained=s.shap_samples,
        ),
        *_statistics_sentences(s),
        "Chance guard: pooled out-of-fold accuracy against the majority rate (one-sided exact "
        "binomial test, Wilson interval); features of a strategy not above it are not read.",
        _audit_sentence(data),
        f"Candidate: q < {s.criteria.alpha}, top-k frequency ≥ {s.criteria.min_stability}, "
        f"{lung_criterion(data)}, source q ≥ {s.criteria.alpha}.",
        "What a feature tracks within its class (radiomic_r2: leave-one-out ridge R² from the lung "
        "radiomics; radiomic_correlates: Spearman with each lung radiomic feature on the class's "
        "films, Benjamini-Hochberg FDR over the class's pairs; radiomic_zone: the zones where the "
        "strongest correlate, measured zone by zone, correlates with the feature more than in the "
        "other zones of its band (upper/middle/lower or central/peripheral), by a 95% percentile "
        "bootstrap of the differences over the class's films, 999 resamples of the ranks taken "
        "once, no correction across rows; the per-class pick; the phantom's "
        "severity) is read, for a matched unit family "
        "whose every image went through every fold's model, from its consensus: the mean of its "
        "members, each standardised over those images "
        "(biomark.analysis.unit_families.family_consensus). All but one of an image's readings "
        "then come from models that trained on it; the tests of class separation above stay on "
        "out-of-fold values. For a family matched poorly (see the matching note) whose members do "
        "not agree on the class's own images either, the consensus averages different units, as "
        "its out-of-fold values mix them: read neither as one unit (stable says which agree).",
    ]


def _localisation_limits(data: ReportData) -> list[str]:
    """What 'inside the lungs' can mean, for the localisation methods the strategies used."""
    methods = {(rep.lung_method or "").split(" ")[0] for rep in data.strategies.values()}
    out = []
    if "out_relu" in methods:
        out.append(
            "The last convolutional maps are coarse (side/32 cells) and each cell's receptive "
            "field covers most of the image, so 'inside the lungs' by the maps means the "
            "activation sits in map cells over the lungs."
        )
    null = lung_null_of(data)
    if null is not None:
        threshold = data.settings.criteria.min_lung_fraction
        out.append(
            "Lung fractions are read against units without a learned preference: the "
            f"{null.source}, measured on {null.n_images} of the run's films by the same method, "
            f"read {null.band()}. A "
            f"feature counts as in the lungs at {null.inside_threshold(threshold):.3f} or more "
            f"and is flagged outside them below {null.outside_threshold(threshold):.3f}; between "
            "the two it prefers no region more than a random unit does."
        )
    if "occlusion" in methods:
        out.append(
            "Where the maps are too coarse, 'inside the lungs' means that a feature changes more "
            "when the lungs are filled with the mean image than when everything else is "
            "(occlusion): a filled region is an image the model never saw, so this compares two "
            "dependences and shows no map of where in the lungs the feature fires."
        )
    return out
