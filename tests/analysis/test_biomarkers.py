"""Candidate logic: a planted biomarker is found, a planted shortcut is flagged; stats wiring;
phantom audit."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from scipy.stats import spearmanr

from biomark.analysis.audit import source_predictability
from biomark.analysis.biomarkers import (
    Criteria,
    StrategyEvidence,
    candidate_table,
    correlate_overlap,
    jaccard,
)
from biomark.analysis.patient_level import mixed_model_tests, patient_level_tests
from biomark.analysis.picks import ground_truth
from biomark.analysis.source_flags import feature_source_association
from biomark.analysis.stability import stability_table, topk_frequency
from biomark.analysis.stats import feature_tests
from biomark.exceptions import ConfigError

NAMES = ["f0000", "f0001", "f0002", "f0003", "f0004", "f0005"]


@pytest.fixture(scope="module")
def planted() -> dict:
    """f0000: true biomarker of class A; f0001: source shortcut; f0002..: noise."""
    rng = np.random.default_rng(0)
    n = 240
    patients = np.array([f"p{i // 2:03d}" for i in range(n)])  # two images per patient, same class
    labels = np.repeat(np.array(["A", "B", "C"] * (n // 6)), 2)
    source = np.where(
        rng.random(n // 2) < np.where(labels[::2] == "A", 0.8, 0.2), "site_B", "site_A"
    ).repeat(2)
    X = rng.standard_normal((n, 6))
    X[:, 0] += 1.5 * (labels == "A")  # biomarker: class only
    X[:, 1] += 2.0 * (
        source == "site_B"
    )  # shortcut: source (so also class A, through the confounding)
    importance = np.abs(rng.standard_normal((5, 6))) * 0.1
    importance[:, 0] += 1.0  # top in every fold
    importance[:, 1] += 0.8
    importance[0, 2] += 2.0  # top in one fold only
    tests = {c: feature_tests(X, labels, positive=c, n_bootstrap=0) for c in ("A", "B", "C")}
    short = {"A": ["f0000", "f0001", "f0002"]}
    ev = StrategyEvidence(
        strategy="scratch",
        tests=tests,
        shortlist=short,
        importance={"A": pd.Series(importance.mean(axis=0), index=NAMES)},
        ci={
            "A": feature_tests(
                X[:, :3], labels, positive="A", feature_names=NAMES[:3], n_bootstrap=200
            )
        },
        patient={"A": patient_level_tests(X, labels, patients, features=[0, 1, 2], positive="A")},
        mixed={"A": mixed_model_tests(X, labels, patients, features=[0, 1, 2], positive="A")},
        stability={"A": stability_table(importance, k=2, feature_names=NAMES)},
        lung=pd.DataFrame({"lung_fraction": [0.8, 0.1, 0.7, 0.6, 0.6, 0.6]}, index=NAMES),
        source=feature_source_association(X, labels, source, feature_names=NAMES),
        lung_baseline=0.3,
        lung_attainable=0.9,
    )
    return {
        "X": X,
        "labels": labels,
        "patients": patients,
        "source": source,
        "importance": importance,
        "ev": ev,
    }


def test_planted_biomarker_found_and_shortcut_flagged(planted) -> None:
    table = candidate_table(planted["ev"]).set_index("feature")
    bio, short, noise = table.loc["f0000"], table.loc["f0001"], table.loc["f0002"]
    assert bio["is_candidate"] == True and bio["status"] == "candidate" and bio["flags"] == ""  # noqa: E712
    assert short["is_candidate"] == False  # noqa: E712
    assert bool(short["flag_source"]) and bool(short["flag_outside_lungs"])
    assert "source beyond class" in short["flags"] and "outside lungs" in short["flags"]
    assert noise["is_candidate"] == False and "not stable" in noise["status"]  # noqa: E712
    assert bio["lung_enrichment"] == pytest.approx(0.8 / 0.3)


def test_statistics_are_wired_from_stats(planted) -> None:
    ev, table = planted["ev"], candidate_table(planted["ev"]).set_index("feature")
    for feat in ("f0000", "f0001"):
        assert table.at[feat, "q"] == ev.tests["A"].at[feat, "mw_q"]
        assert table.at[feat, "cliffs_delta"] == ev.tests["A"].at[feat, "cliffs_delta"]
        assert table.at[feat, "auc_ci_low"] == ev.ci["A"].at[feat, "auc_ci_low"]
        assert table.at[feat, "patient_q"] == ev.patient["A"].at[feat, "mw_q"]
        assert table.at[feat, "mixed_coef"] == ev.mixed["A"].at[feat, "coef"]
        assert table.at[feat, "topk_freq"] == ev.stability["A"].at[feat, "topk_freq"]
    assert table.at["f0000", "auc_ci_low"] > 0.6
    assert table.at["f0000", "patient_q"] < 0.05 and table.at["f0000", "mixed_q"] < 0.05


def test_stability_of_planted_stable_and_unstable_features(planted) -> None:
    freq = topk_frequency(planted["importance"], k=2)
    assert freq[0] == 1.0 and freq[2] == pytest.approx(0.2)
    st = stability_table(planted["importance"], k=2, feature_names=NAMES)
    assert st.index[0] == "f0000" and st.attrs["kendalls_w"] > 0.3


def test_unknown_criteria_leave_the_verdict_open(planted) -> None:
    ev = planted["ev"]
    no_maps = StrategyEvidence(
        strategy="frozen",
        tests=ev.tests,
        shortlist={"A": ["f0000"]},
        stability=ev.stability,
        source=ev.source,
    )
    row = candidate_table(no_maps).iloc[0]
    assert (
        pd.isna(row["is_candidate"])
        and row["status"].startswith("undetermined")
        and "in lungs" in row["status"]
    )
    assert "lung fraction unknown" in row["flags"]
    coarse = StrategyEvidence(
        strategy="frozen",
        tests=ev.tests,
        shortlist={"A": ["f0000"]},
        stability=ev.stability,
        source=ev.source,
        lung=ev.lung,
        lung_attainable=0.3,
    )
    row = candidate_table(coarse).iloc[0]
    assert pd.isna(row["in_lungs"]) and row["lung_fraction"] == 0.8 and "too coarse" in row["flags"]
    assert candidate_table(StrategyEvidence("x", {}, {})).empty


def test_blackout_flag_and_criteria_validation(planted) -> None:
    ev = planted["ev"]
    ev2 = StrategyEvidence(**{**ev.__dict__, "blackout_survival": 0.9})
    table = candidate_table(ev2)
    assert table["flag_model_reads_outside_lungs"].all()
    with pytest.raises(ConfigError, match="min_lung_fraction"):
        Criteria(min_lung_fraction=2.0)


def test_ground_truth_uses_the_top_candidate(planted) -> None:
    rng = np.random.default_rng(1)
    labels = planted["labels"]
    severity = np.where(labels == "Normal", 0.0, rng.uniform(0.15, 1, labels.size))
    X = planted["X"].copy()
    X[:, 0] = severity + 0.1 * rng.standard_normal(labels.size)
    table = candidate_table(planted["ev"])
    truth = ground_truth(table, X, labels, severity, feature_names=NAMES, normal="C")
    a = truth.set_index("class").loc["A"]
    assert (
        a["feature"] == "f0000"
        and a["chosen_as"] == "top candidate"
        and a["rho"] > 0.9
        and a["p"] < 1e-6
    )
    # the ceiling over every feature: the planted one, with scipy's rho
    own = labels == "A"
    assert a["best_any_feature"] == "f0000" and a["best_any_rho"] == pytest.approx(
        spearmanr(X[own, 0], severity[own])[0]
    )
    assert truth.set_index("class").loc["B"]["note"] == "no feature shortlisted for this class"
    assert truth["rho_out_of_fold"].isna().all()  # X is the only reading
    # X a family consensus: the pick is also read from each image's out-of-fold member
    noisy = X.copy()
    noisy[:, 0] = severity + rng.standard_normal(labels.size)
    both = ground_truth(
        table, X, labels, severity, feature_names=NAMES, normal="C", out_of_fold=noisy
    ).set_index("class")
    assert both.at["A", "rho"] == pytest.approx(a["rho"])
    assert both.at["A", "rho_out_of_fold"] == pytest.approx(
        spearmanr(noisy[own, 0], severity[own])[0]
    )
    assert both.at["A", "rho_out_of_fold"] < both.at["A", "rho"]
    assert truth[["rho_burden", "best_any_rho_burden"]].isna().all().all()  # no burden given


def test_ground_truth_reads_the_pick_against_the_planted_burden(planted) -> None:
    # the pick sums a finding whose extent is drawn at random: it tracks the burden
    # (severity x extent) closely and the severity only loosely
    rng = np.random.default_rng(2)
    labels = planted["labels"]
    severity = np.where(labels == "Normal", 0.0, rng.uniform(0.15, 1, labels.size))
    burden = severity * rng.choice([0.2, 1.0], labels.size)
    X = planted["X"].copy()
    X[:, 0] = burden + 0.01 * rng.standard_normal(labels.size)
    table = candidate_table(planted["ev"])
    truth = ground_truth(
        table, X, labels, severity, feature_names=NAMES, normal="C", burden=burden
    ).set_index("class")
    own = labels == "A"
    assert truth.at["A", "rho_burden"] == pytest.approx(spearmanr(X[own, 0], burden[own])[0])
    assert truth.at["A", "rho_burden"] > 0.95 > 0.8 > truth.at["A", "rho"]
    assert truth.at["A", "best_any_rho_burden"] == pytest.approx(truth.at["A", "rho_burden"])
    # a class without a burden (Emphysema's is NaN) gets none
    none = ground_truth(
        table,
        X,
        labels,
        severity,
        feature_names=NAMES,
        normal="C",
        burden=np.where(own, np.nan, burden),
    ).set_index("class")
    assert np.isnan(none.at["A", "rho_burden"]) and none.at["A", "rho"] == truth.at["A", "rho"]


def test_correlate_overlap_jaccard() -> None:
    assert jaccard({"a", "b"}, {"b", "c"}) == pytest.approx(1 / 3) and np.isnan(
        jaccard(set(), set())
    )
    base = {"is_candidate": pd.array([True], dtype="boolean"), "feature": ["f0"]}
    a = pd.DataFrame(
        {
            **base,
            "radiomic_correlates": ["glcm_Contrast (+0.50); firstorder_Mean (-0.40)"],
            "radiomic_families": ["glcm: 3, firstorder: 1"],
        }
    )
    b = pd.DataFrame(
        {**base, "radiomic_correlates": ["glcm_Contrast (+0.30)"], "radiomic_families": ["glcm: 1"]}
    )
    out = correlate_overlap({"scratch": a, "frozen": b}).iloc[0]
    assert out["jaccard_features"] == pytest.approx(0.5) and out[
        "jaccard_families"
    ] == pytest.approx(0.5)
    assert out["shared_families"] == "glcm"


@pytest.fixture(scope="module")
def phantom_features(tmp_path_factory: pytest.TempPathFactory) -> dict[bool, tuple]:
    """Image features of the phantom with and without the source confounder.

    Features are 4 x 4 block maxima and means of the 64-px images (32 per image)
    rather than a trained network's: a tiny network trained for a test does not
    learn the burned-in tag reliably, and these features carry whatever the
    image carries, so the audit itself is what is tested.
    """
    from sklearn.model_selection import GroupKFold

    from biomark.data.build import build_dataset
    from biomark.data.dataset import load_dataset
    from biomark.data.phantom import generate_phantom

    out = {}
    for conf in (True, False):
        root = tmp_path_factory.mktemp(f"phantom_conf_{conf}")
        csv = generate_phantom(
            root, n_per_class=80, seed=2, image_size=64, images_per_patient=2, confounder=conf
        )
        build_dataset(root, sources={"manifest": [csv]}, image_size=64)
        ds = load_dataset(root)
        man = ds.manifest
        im = np.asarray(ds.images, dtype=float).reshape(len(man), 4, 16, 4, 16)
        X = np.concatenate(
            [im.max(axis=(2, 4)).reshape(len(man), -1), im.mean(axis=(2, 4)).reshape(len(man), -1)],
            1,
        )
        folds = np.zeros(len(man), dtype=int)
        for f, (_, test) in enumerate(GroupKFold(5).split(man, groups=man["patient_id"])):
            folds[test] = f
        out[conf] = (X, man, folds)
    return out


@pytest.mark.parametrize("confounder", [True, False])
def test_audit_flags_the_phantom_confounder(phantom_features, confounder: bool) -> None:
    X, man, folds = phantom_features[confounder]
    sp = source_predictability(X, man["label"], man["source"], folds=folds, seed=0).set_index(
        "class"
    )
    fa = feature_source_association(X, man["label"], man["source"])
    labels = man["label"].to_numpy()
    tests = {"COVID-19": feature_tests(X, labels, positive="COVID-19", n_bootstrap=0)}
    names = list(tests["COVID-19"].index)
    ev = StrategyEvidence(
        "scratch",
        tests,
        {"COVID-19": names},
        source=fa,
        lung=pd.DataFrame({"lung_fraction": 0.9}, index=names),
    )
    flagged = candidate_table(ev)["flag_source"].fillna(False).astype(bool)
    if confounder:
        assert (
            sp.at["COVID-19", "verdict"] == "source is recoverable"
            and sp.at["COVID-19", "auc"] > 0.8
        )
        assert flagged.any()
        assert man.loc[man["artifact"].astype(str) == "True", "source"].eq("site_B").all()
    else:
        assert sp.at["COVID-19", "verdict"] != "source is recoverable"
        assert not flagged.any()


def test_lung_null_sets_both_lung_thresholds(planted) -> None:
    """Against a random network's units (0.46-0.52), a feature at 0.48 reads like a random unit:
    neither in the lungs nor flagged outside; one at 0.40 is flagged, one at 0.60 is in the
    lungs. Without the null the fixed 0.5 flags the 0.48 feature."""
    from dataclasses import replace

    from biomark.analysis.lung_null import LungNull

    lung = pd.DataFrame({"lung_fraction": [0.60, 0.40, 0.48, 0.6, 0.6, 0.6]}, index=NAMES)
    null = LungNull(np.linspace(0.46, 0.52, 1001), n_images=300, source="random units")
    ev = replace(planted["ev"], lung=lung, lung_null=null)
    table = candidate_table(ev).set_index("feature")
    assert table.at["f0000", "in_lungs"] == True  # noqa: E712
    assert table.at["f0001", "flag_outside_lungs"] == True  # noqa: E712
    assert "further outside than 95 % of random units" in table.at["f0001", "flags"]
    middle = table.loc["f0002"]
    assert middle["in_lungs"] == False and middle["flag_outside_lungs"] == False  # noqa: E712
    assert "not in the lungs beyond a random unit (lung fraction < 0.517)" in middle["status"]
    fixed = candidate_table(replace(ev, lung_null=None)).set_index("feature")
    assert fixed.at["f0002", "flag_outside_lungs"] == True  # noqa: E712
    assert "activation mainly outside the lungs" in fixed.at["f0002", "status"]
