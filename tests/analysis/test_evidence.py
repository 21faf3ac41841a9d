"""The report's candidate logic on synthetic per-fold features with planted truth.

Three folds each "train their own network": every fold's units are a random
permutation of the same latent units (plus fold noise). Latent unit 3 tracks
the severity of class A, 7 of class B, 11 of class C (inside the lungs); unit
20 is a source tag (``site_B``, outside the lungs) that the heads also use;
the rest is noise. Each fold's head reads its own unit order. The pipeline
is the report's: reference embeddings -> :func:`align_folds` -> aligned
out-of-fold columns and attributions (:func:`explain_head` on each fold's
head) -> :func:`assess_strategy` -> :func:`class_picks`.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from scipy import stats as sps

from biomark.analysis.alignment import align_folds, align_rows
from biomark.analysis.associate import associate, strongest_correlates
from biomark.analysis.attribution import explain_head
from biomark.analysis.biomarkers import Criteria, StrategyEvidence, candidate_table, class_picks
from biomark.analysis.evidence import EvidenceSettings, RadiomicValues, assess_strategy
from biomark.analysis.head import Head
from biomark.analysis.redundancy import near_copy_matrix
from biomark.exceptions import ConfigError, DataError

CLASSES = ["A", "B", "C", "Normal"]
PLANTED = {"A": 3, "B": 7, "C": 11}
TAG = 20
D = 40
N_FOLDS = 3
SETTINGS = EvidenceSettings(top_k=5, n_bootstrap=100, n_mixed=1, seed=0)


def _latent(
    rng: np.random.Generator, labels: np.ndarray, severity: np.ndarray, site_b: np.ndarray
) -> np.ndarray:
    n = labels.size
    z = np.maximum(rng.normal(1.0, 0.5, size=(n, D)), 0.0)
    for cls, unit in PLANTED.items():
        z[:, unit] += 2.5 * severity * (labels == cls)
    z[:, TAG] += 2.0 * site_b
    return z


def _head(perm: np.ndarray, rng: np.random.Generator) -> Head:
    """A fold's head: one hidden unit per planted unit (and one on the tag for class A), in the
    fold's order."""
    w1 = 0.02 * rng.standard_normal((D, 8))
    w2 = 0.02 * rng.standard_normal((8, len(CLASSES)))
    for k, (cls, unit) in enumerate(PLANTED.items()):
        w1[perm[unit], k] = 1.0
        w2[k, CLASSES.index(cls)] = 2.0
    w1[perm[TAG], 3] = 1.0
    w2[3, CLASSES.index("A")] = 1.0
    return Head(w1, np.full(8, -0.5), w2, np.zeros(len(CLASSES)))


@pytest.fixture(scope="module")
def synthetic() -> dict:
    rng = np.random.default_rng(0)
    per_class = 30
    labels = np.repeat(CLASSES, per_class * N_FOLDS)
    n = labels.size
    rng.shuffle(labels)
    severity = np.where(labels == "Normal", 0.0, rng.uniform(0.1, 1.0, n))
    site_b = rng.random(n) < np.where(labels == "A", 0.8, 0.25)
    folds = np.arange(n) % N_FOLDS
    patients = np.array([f"p{i // 2:04d}" for i in range(n)])
    z = _latent(rng, labels, severity, site_b)
    ref_labels = np.repeat(CLASSES, 20)
    z_ref = _latent(
        rng, ref_labels, rng.uniform(0, 1, ref_labels.size), rng.random(ref_labels.size) < 0.4
    )
    perms = {f: rng.permutation(D) for f in range(N_FOLDS)}
    X = np.empty((n, D))
    reference, importance = {}, {}
    for f, perm in perms.items():
        rows = folds == f
        own = np.empty((rows.sum(), D))
        own[:, perm] = z[rows] + 0.1 * rng.standard_normal((rows.sum(), D))
        X[rows] = own
        reference[f] = np.empty_like(z_ref)
        reference[f][:, perm] = z_ref + 0.1 * rng.standard_normal(z_ref.shape)
        importance[f] = explain_head(
            _head(perm, rng), own, own[:16], method="expected-gradients"
        ).mean_abs()
    meta = pd.DataFrame(
        {
            "image_id": [f"img{i:04d}" for i in range(n)],
            "label": labels,
            "patient_id": patients,
            "source": np.where(site_b, "site_B", "site_A"),
            "fold": folds,
        }
    )
    lung_by_latent = np.full(D, 0.55)
    lung_by_latent[list(PLANTED.values())] = 0.85
    lung_by_latent[TAG] = 0.1
    return {
        "X": X,
        "meta": meta,
        "severity": severity,
        "perms": perms,
        "reference": reference,
        "importance": importance,
        "lung_by_latent": lung_by_latent,
    }


def _assess(s: dict, *, matched: bool = True) -> tuple:
    folds = s["meta"]["fold"].to_numpy()
    names = [f"u{j:04d}" for j in range(D)]
    if matched:
        al = align_folds(s["reference"])
        X = align_rows(s["X"], folds, al)
        imp = {f: v[al.perms[f]] for f, v in s["importance"].items()}
        units = al.member_table().set_axis(names)[["members", "match_r"]]
        # lung fractions are properties of the latent unit each family tracks (as measured per fold)
        lung = s["lung_by_latent"][np.argsort(s["perms"][0])][al.perms[0]]
    else:
        al, X, imp, units = None, s["X"], s["importance"], None
        names = [f"f{j:04d}" for j in range(D)]
        lung = s["lung_by_latent"][np.argsort(s["perms"][0])]
    result = assess_strategy(
        X,
        s["meta"],
        strategy="scratch",
        classes=CLASSES,
        feature_names=names,
        importance=imp,
        unit_basis="matched" if matched else "unmatched",
        units=units,
        lung=pd.DataFrame({"lung_fraction": lung}, index=names),
        lung_method="occlusion",
        lung_attainable=1.0,
        lung_baseline=0.3,
        settings=SETTINGS,
    )
    return result, X, names, al


def test_planted_families_become_candidates_and_the_tag_is_excluded(synthetic) -> None:
    result, X, names, al = _assess(synthetic)
    perms = synthetic["perms"]
    # the reference fold is fold 0: family u{perm0[k]} is latent unit k
    family = {cls: f"u{perms[0][unit]:04d}" for cls, unit in PLANTED.items()}
    tag = f"u{perms[0][TAG]:04d}"
    table = result.table.set_index(["class", "feature"])
    for cls, feat in family.items():
        row = table.loc[(cls, feat)]
        assert row["is_candidate"] == True, (cls, row["status"])  # noqa: E712
        assert row["match_r"] > 0.9 and "matched units" in row["stability_basis"]
        assert row["members"] == ", ".join(
            f"f{f}:{perms[f][PLANTED[cls]]:04d}" for f in range(N_FOLDS)
        )
    tag_row = table.loc[("A", tag)]
    assert bool(tag_row["flag_source"]) and bool(tag_row["flag_outside_lungs"])
    assert tag_row["is_candidate"] == False  # noqa: E712
    assert bool(tag_row["significant"]) and bool(
        tag_row["stable"]
    )  # a real, stable shortcut: flagged, not kept
    picks = class_picks(result.table, X, synthetic["meta"]["image_id"], feature_names=names)
    chosen = picks.table.set_index("class")
    labels = synthetic["meta"]["label"].to_numpy()
    for cls, feat in family.items():
        assert chosen.at[cls, "feature"] == feat and chosen.at[cls, "chosen_as"] == "top candidate"
        own = labels == cls
        rho = sps.spearmanr(picks.values[cls].to_numpy()[own], synthetic["severity"][own])[0]
        assert rho >= 0.5
    assert tag not in set(chosen["feature"])
    assert list(picks.values.index[:2]) == ["img0000", "img0001"]


def test_without_matching_index_level_stability_is_not_claimed(synthetic) -> None:
    """The same folds compared by index j: stability is untested, so nothing becomes a candidate."""
    result, *_ = _assess(synthetic, matched=False)
    table = result.table
    assert table["stable"].isna().all()
    assert not table["is_candidate"].fillna(False).astype(bool).any()
    assert table["stability_basis"].str.contains("not matched").all()


def _three_families(
    match_r: list[float], topk: list[float], family_freq: pd.Series, **extra: object
) -> StrategyEvidence:
    """Families u0000-u0002 of class A, each showing the class effect in every fold."""
    names = ["u0000", "u0001", "u0002"]
    return StrategyEvidence(
        strategy="scratch",
        tests={},
        shortlist={"A": names},
        unit_basis="matched",
        units=pd.DataFrame(
            {"members": ["f0:0000, f1:0003", "f0:0001, f1:0002", "f0:0002, f1:0001"]}, index=names
        ).assign(match_r=match_r),
        stability={"A": pd.DataFrame({"topk_freq": topk}, index=names)},
        fold_effects={"A": pd.DataFrame({"fold_effect_freq": [1.0, 1.0, 1.0]}, index=names)},
        fold_radiomics=family_freq.rename("radiomic_family_freq").to_frame(),
        **extra,
    )


def test_poorly_matched_families_are_judged_on_what_they_track() -> None:
    ev = _three_families(
        [0.9, 0.3, 0.2], [1.0, 0.0, 1.0], pd.Series([1.0, 1.0 / 3.0], index=["u0001", "u0002"])
    )
    table = candidate_table(ev).set_index("feature")
    good, poor, drifting = table.loc["u0000"], table.loc["u0001"], table.loc["u0002"]
    assert good["stable"] == True and "top-k frequency" in good["stability_basis"]  # noqa: E712
    assert poor["stable"] == True and "class effect" in poor["stability_basis"]  # noqa: E712
    assert (
        "radiomic" in poor["stability_basis"] and poor["topk_freq"] == 0.0
    )  # its rank is not what counts
    assert drifting["stable"] == False and drifting["radiomic_family_freq"] == pytest.approx(1 / 3)  # noqa: E712
    with pytest.raises(ConfigError, match="min_match_r"):
        Criteria(min_match_r=1.5)


def test_poorly_matched_families_are_stable_when_their_members_agree_within_the_class() -> None:
    """Where every image went through every fold's model, a poorly matched family is stable when it
    shows the class effect in every fold and its members agree on the class's own images; the
    radiomic family is the fallback where that agreement is unknown."""
    names = ["u0000", "u0001", "u0002"]
    ev = _three_families(
        [-0.1, 0.2, 0.1],
        [0.0, 1.0, 0.0],
        pd.Series([0.0, 1.0, 1.0], index=names),
        within_class_match=pd.DataFrame({"A": [0.62, 0.3, np.nan]}, index=names),
    )
    table = candidate_table(ev).set_index("feature")
    agree, disagree, unknown = table.loc["u0000"], table.loc["u0001"], table.loc["u0002"]
    # agreeing members: stable whatever their top radiomic correlate does
    assert agree["stable"] == True  # noqa: E712
    assert "members agreeing within the class (r 0.62)" in agree["stability_basis"]
    assert agree["within_class_r"] == 0.62 and np.isnan(unknown["within_class_r"])
    # members that track different variation within the class: not stable, rank or not
    assert disagree["stable"] == False  # noqa: E712
    assert "(r 0.30)" in disagree["stability_basis"]
    # agreement unknown: the radiomic family decides, as before
    assert unknown["stable"] == True  # noqa: E712
    assert "family of the top radiomic correlate" in unknown["stability_basis"]
    # the class effect is still required
    ev.fold_effects["A"].loc["u0000", "fold_effect_freq"] = 1 / 3
    assert candidate_table(ev).set_index("feature").at["u0000", "stable"] == False  # noqa: E712


def test_poor_matching_through_assess_strategy(synthetic) -> None:
    """Families below the match threshold are judged on their class effect per fold (and say so)."""
    result, X, names, al = _assess(synthetic)
    strict = EvidenceSettings(
        top_k=5, n_bootstrap=0, n_mixed=0, criteria=Criteria(min_match_r=0.999)
    )
    units = al.member_table().set_axis(names)[["members", "match_r"]]
    folds = synthetic["meta"]["fold"].to_numpy()
    again = assess_strategy(
        X,
        synthetic["meta"],
        strategy="scratch",
        classes=CLASSES,
        feature_names=names,
        importance={f: v[al.perms[f]] for f, v in synthetic["importance"].items()},
        unit_basis="matched",
        units=units,
        settings=strict,
        radiomic_values=RadiomicValues(
            X[:, :5] + 0.01 * np.arange(len(folds))[:, None], ["a", "a", "b", "b", "c"]
        ),
    )
    table = again.table.set_index(["class", "feature"])
    row = table.loc[("A", f"u{synthetic['perms'][0][PLANTED['A']]:04d}")]
    assert "poorly matched" in row["stability_basis"] and row["fold_effect_freq"] == 1.0
    assert np.isfinite(row["radiomic_family_freq"])


def test_radiomic_r2_is_read_from_the_consensus_when_given(synthetic) -> None:
    """Within-class R^2 uses the family consensus; the tests of class separation stay on X."""
    _, X, names, al = _assess(synthetic)
    rng = np.random.default_rng(3)
    R = X + 0.05 * rng.standard_normal(X.shape)  # radiomics that measure every unit
    common = dict(
        strategy="scratch",
        classes=CLASSES,
        feature_names=names,
        importance={f: v[al.perms[f]] for f, v in synthetic["importance"].items()},
        unit_basis="matched",
        units=al.member_table().set_axis(names)[["members", "match_r"]],
        settings=SETTINGS,
        radiomic_values=RadiomicValues(R, ["a"] * X.shape[1]),
    )
    plain = assess_strategy(X, synthetic["meta"], **common)
    unrelated = rng.standard_normal(X.shape)
    other = assess_strategy(X, synthetic["meta"], consensus=unrelated, **common)
    a, b = plain.table.set_index(["class", "feature"]), other.table.set_index(["class", "feature"])
    pd.testing.assert_series_equal(a["q"], b["q"])  # the same class tests
    pd.testing.assert_series_equal(a["stable"], b["stable"])
    explained = a["radiomic_r2"].dropna()
    assert explained.min() > 0.9
    assert b.loc[explained.index, "radiomic_r2"].max() < 0.2  # unrelated values: nothing explained
    with pytest.raises(DataError, match="consensus values"):
        assess_strategy(X, synthetic["meta"], consensus=unrelated[:, :3], **common)


def test_radiomic_correlates_are_named_within_the_class_and_over_all_films(synthetic) -> None:
    """A class's feature is described by what grades it among the class's films; what sets the
    class apart over all films is kept in its own column."""
    _, X, names, al = _assess(synthetic)
    labels = synthetic["meta"]["label"].to_numpy()
    feature = f"u{synthetic['perms'][0][PLANTED['A']]:04d}"
    x = X[:, names.index(feature)]
    rng = np.random.default_rng(5)
    in_a = labels == "A"
    R = np.c_[
        in_a + 1e-3 * rng.standard_normal(labels.size),  # the class itself, nothing within it
        np.where(in_a, x, -x),  # grades the feature among A's films only
        rng.standard_normal(labels.size),
        rng.standard_normal((labels.size, 2)),  # the other bands of the lungs: nothing there
    ]
    radiomic_names = [
        "firstorder_Mean",
        "lower_glcm_Contrast",
        "glrlm_RunEntropy",
        "upper_glcm_Contrast",
        "middle_glcm_Contrast",
    ]
    all_films = strongest_correlates(
        associate(X, R, deep_names=names, radiomic_names=radiomic_names).table(
            only_significant=True
        )
    )
    families = ["firstorder", "glcm", "glrlm", "glcm", "glcm"]
    common = dict(strategy="scratch", classes=CLASSES, feature_names=names, settings=SETTINGS)
    result = assess_strategy(
        X,
        synthetic["meta"],
        importance={f: v[al.perms[f]] for f, v in synthetic["importance"].items()},
        unit_basis="matched",
        units=al.member_table().set_axis(names)[["members", "match_r"]],
        radiomics=all_films,
        radiomic_values=RadiomicValues(R, families, radiomic_names),
        **common,
    )
    row = result.table.set_index(["class", "feature"]).loc[("A", feature)]
    assert row["radiomic_correlates"].startswith("lower_glcm_Contrast (+1.00)")
    assert "firstorder_Mean" not in row["radiomic_correlates"]
    assert row["radiomic_families"].startswith("glcm: 1")
    assert row["radiomic_zone"] == "lower"  # graded in the lower band, not the upper or middle
    assert row["radiomic_correlates_all_films"].startswith("firstorder_Mean (+")
    # without the columns' names nothing is named within the class
    unnamed = assess_strategy(
        X,
        synthetic["meta"],
        radiomics=all_films,
        radiomic_values=RadiomicValues(R, families),
        **common,
    )
    rows = unnamed.table.set_index(["class", "feature"])
    assert (rows["radiomic_correlates"].fillna("") == "").all()
    assert (rows["radiomic_zone"].fillna("") == "").all()
    assert rows.loc[("A", feature), "radiomic_correlates_all_films"].startswith("firstorder_Mean")


def test_a_feature_whose_near_copy_ranks_in_its_place_is_stable() -> None:
    """Two near-copies carry class A's signal and the attributions credit one of them per fold,
    by chance which: with the network's near-copies given, both are stable across the folds; by
    their own ranks alone, neither (2 and 1 of 3 folds)."""
    rng = np.random.default_rng(3)
    classes = ["A", "B", "Normal"]
    labels = np.repeat(classes, 60)
    n, d = labels.size, 12
    signal = 2.0 * (labels == "A") + 0.5 * rng.standard_normal(n)
    X = rng.standard_normal((n, d))
    X[:, 0] = signal + 0.05 * rng.standard_normal(n)
    X[:, 1] = signal + 0.05 * rng.standard_normal(n)
    meta = pd.DataFrame(
        {
            "image_id": [f"img{i:03d}" for i in range(n)],
            "label": labels,
            "patient_id": [f"p{i:03d}" for i in range(n)],
            "source": np.where(np.arange(n) % 2, "site_B", "site_A"),
            "fold": np.arange(n) % 3,
        }
    )
    importance = {}
    for fold, lucky in enumerate((0, 0, 1)):
        imp = np.tile(rng.uniform(0.05, 0.3, d)[:, None], (1, len(classes)))
        imp[[0, 1]] = 0.0
        imp[lucky] = 1.0
        importance[fold] = imp
    names = [f"f{j:04d}" for j in range(d)]
    common = dict(
        strategy="frozen",
        classes=classes,
        feature_names=names,
        importance=importance,
        unit_basis="shared",
        settings=SETTINGS,
    )
    copies = dict.fromkeys(range(3), near_copy_matrix(X))
    own = assess_strategy(X, meta, **common).table.set_index(["class", "feature"])
    aware = assess_strategy(X, meta, near_copies=copies, **common).table.set_index(
        ["class", "feature"]
    )
    for feat, freq in (("f0000", 2 / 3), ("f0001", 1 / 3)):
        assert own.at[("A", feat), "topk_freq"] == pytest.approx(freq)
        assert own.at[("A", feat), "stable"] == False  # noqa: E712
        assert aware.at[("A", feat), "topk_freq"] == 1.0
        assert aware.at[("A", feat), "topk_freq_own"] == pytest.approx(freq)
        assert aware.at[("A", feat), "stable"] == True  # noqa: E712
    # a feature with no near-copy keeps its own frequency
    other = [f for f in aware.loc["A"].index if f not in ("f0000", "f0001")][0]
    assert aware.at[("A", other), "topk_freq"] == aware.at[("A", other), "topk_freq_own"]


def test_assess_strategy_rejects_an_unknown_unit_basis(synthetic) -> None:
    with pytest.raises(ConfigError, match="unit_basis"):
        assess_strategy(
            synthetic["X"],
            synthetic["meta"],
            strategy="s",
            classes=CLASSES,
            feature_names=[f"f{j:04d}" for j in range(D)],
            unit_basis="guessed",
        )


def _one_class_patients(meta: pd.DataFrame) -> pd.DataFrame:
    """Two images per patient, within a class (the fixture's patients mix classes)."""
    out = meta.copy()
    within = out.groupby("label").cumcount().to_numpy()
    out["patient_id"] = out["label"].astype(str) + "-" + (within // 2).astype(str)
    return out


def test_the_mixed_model_confirms_significant_features_only(synthetic) -> None:
    folds = synthetic["meta"]["fold"].to_numpy()
    al = align_folds(synthetic["reference"])
    X, names = align_rows(synthetic["X"], folds, al), [f"u{j:04d}" for j in range(D)]
    imp = {f: v[al.perms[f]] for f, v in synthetic["importance"].items()}
    meta = _one_class_patients(synthetic["meta"])
    table = assess_strategy(
        X,
        meta,
        strategy="scratch",
        classes=CLASSES,
        feature_names=names,
        importance=imp,
        unit_basis="matched",
        settings=SETTINGS,
    ).table
    fitted = table["mixed_q"].notna()
    assert (
        fitted.any()
    )  # the planted families are significant: each class's top feature is confirmed
    assert bool(table.loc[fitted, "significant"].astype(bool).all())
    # shuffled labels: nothing is significant, so nothing is fitted (and nothing fails)
    null_meta = meta.assign(label=np.random.default_rng(1).permutation(meta["label"].to_numpy()))
    null_meta = _one_class_patients(null_meta)
    null = assess_strategy(
        X,
        null_meta,
        strategy="scratch",
        classes=CLASSES,
        feature_names=names,
        importance=imp,
        unit_basis="matched",
        settings=SETTINGS,
    ).table
    not_significant = ~null["significant"].astype("boolean").fillna(False).astype(bool)
    assert not_significant.any() and null.loc[not_significant, "mixed_q"].isna().all()
