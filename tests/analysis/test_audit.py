"""Tests of biomark.analysis.audit: source predictability, source association, flags."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from scipy.stats.contingency import association

from biomark.analysis.audit import SOURCE_AUC_RECOVERABLE, source_predictability
from biomark.exceptions import ConfigError, DataError


def test_source_predictability_verdicts(
    mixed_sources: tuple[np.ndarray, np.ndarray, np.ndarray],
) -> None:
    X, labels, sources = mixed_sources
    df = source_predictability(X, labels, sources).set_index("class")
    covid, normal = df.loc["COVID-19"], df.loc["Normal"]
    assert covid["status"] == "tested" and covid["auc"] > 0.9
    assert covid["verdict"] == "source is recoverable" and covid["n_folds"] == 5 * 5  # 5 repeats
    assert covid["sources"] == "cohen:60, actualmed:60"
    assert normal["status"] == "tested" and abs(normal["auc"] - 0.5) < 0.15
    assert normal["auc"] <= SOURCE_AUC_RECOVERABLE and normal["verdict"] != "source is recoverable"
    edema = df.loc["Edema"]
    assert edema["status"] == "skipped" and np.isnan(edema["auc"])
    assert "only one source (nih)" in edema["reason"]
    pneu = df.loc["Pneumonia"]
    assert pneu["status"] == "skipped"
    assert "sirm:3" in pneu["reason"] and "< 5 images left out" in pneu["reason"]
    assert df.attrs["thresholds"] == {
        "recoverable": 0.7,
        "weak": 0.6,
        "alpha": 0.05,
        "n_permutations": 500,
        "adjustment": "holm",
        "views": 1,
    }


def test_source_predictability_thresholds_come_from_the_caller(
    mixed_sources: tuple[np.ndarray, np.ndarray, np.ndarray],
) -> None:
    """The plan's report.source_auc_* reach the verdicts: above every AUC, nothing reads
    'recoverable'."""
    X, labels, sources = mixed_sources
    df = source_predictability(X, labels, sources, auc_recoverable=0.999, auc_weak=0.9)
    covid = df.set_index("class").loc["COVID-19"]
    assert covid["auc"] < 0.999 and covid["verdict"] == "source is weakly recoverable"
    assert df.attrs["thresholds"]["recoverable"] == 0.999 and df.attrs["thresholds"]["weak"] == 0.9


def test_source_predictability_with_given_folds(
    mixed_sources: tuple[np.ndarray, np.ndarray, np.ndarray],
) -> None:
    X, labels, sources = mixed_sources
    folds = np.arange(len(labels)) % 3
    df = source_predictability(X, labels, sources, folds=folds).set_index("class")
    assert df.loc["COVID-19", "n_folds"] == 3 and df.loc["COVID-19", "auc"] > 0.9


def test_given_fold_missing_a_source_is_left_out_and_noted() -> None:
    rng = np.random.default_rng(1)
    labels = np.array(["Normal"] * 40)
    sources = np.repeat(["kermany", "nih"], 20)
    X = rng.normal(size=(40, 4))
    folds = np.r_[np.arange(20) % 2, np.full(20, 2)]  # nih only in fold 2
    row = source_predictability(X, labels, sources, folds=folds).iloc[0]
    assert row["status"] == "skipped" and row["n_folds"] == 0
    assert "no fold had every source" in row["reason"]


def test_three_sources_use_ovr_macro_auc() -> None:
    rng = np.random.default_rng(2)
    sources = np.repeat(["a", "b", "c"], 30)
    X = rng.normal(size=(90, 6))
    X[:, 0] += np.repeat([0.0, 3.0, 6.0], 30)
    row = source_predictability(X, ["Normal"] * 90, sources).iloc[0]
    # the middle source is found too: each source's score margin over its strongest rival
    assert row["n_sources"] == 3 and row["auc"] > 0.85 and row["verdict"] == "source is recoverable"


def test_disjoint_sources_give_cramers_v_one() -> None:
    """The paper's design: COVID-19 from Cohen, Pneumonia/Normal from Kermany,
    the rest from NIH."""
    counts = {
        "COVID-19": ("cohen", 30),
        "Pneumonia": ("kermany", 20),
        "Normal": ("kermany", 25),
        "Edema": ("nih", 10),
        "Effusion": ("nih", 12),
    }
    labels = np.repeat(list(counts), [c for _, c in counts.values()])
    sources = np.repeat([s for s, _ in counts.values()], [c for _, c in counts.values()])
    X = np.random.default_rng(0).normal(size=(len(labels), 3))
    df = source_predictability(X, labels, sources)
    assert df.attrs["class_source_cramers_v"] == pytest.approx(1.0)
    assert (df["status"] == "skipped").all()
    summary = df.attrs["summary"]
    assert "COVID-19 (cohen)" in summary and "cannot be told apart" in summary
    assert (
        "Pneumonia" not in summary.split("told apart")[0].split("no other class:")[1]
    )  # kermany is shared
    assert df.attrs["class_source_table"]["Normal"] == {"kermany": 25}


def test_cramers_v_matches_scipy_association(
    mixed_sources: tuple[np.ndarray, np.ndarray, np.ndarray],
) -> None:
    X, labels, sources = mixed_sources
    df = source_predictability(X[:, :2], labels, sources)
    table = pd.crosstab(labels, sources).to_numpy()
    assert df.attrs["class_source_cramers_v"] == pytest.approx(association(table, method="cramer"))
    summary = df.attrs["summary"]
    # nih also supplies Normal: Edema is not confounded with class, but it cannot be tested within
    # itself
    assert "no other class: COVID-19 (actualmed, cohen)" in summary
    assert (
        "Edema: every image comes from one source (nih)" in summary
        and "cannot be separated" in summary
    )
    assert "comparison with the other nih class(es) (Normal)" in summary
    assert "Pneumonia: 94% of its images come from kermany" in summary
    assert "Every class has images from several sources" not in summary


def test_single_source_gives_undefined_cramers_v() -> None:
    X = np.random.default_rng(0).normal(size=(20, 2))
    df = source_predictability(X, ["COVID-19"] * 10 + ["Normal"] * 10, ["nih"] * 20)
    assert np.isnan(df.attrs["class_source_cramers_v"])
    assert "only one source" in df.attrs["summary"]


@pytest.mark.parametrize(
    ("kwargs", "error", "match"),
    [
        ({"n_splits": 1}, ConfigError, "n_splits"),
        ({"n_repeats": 0}, ConfigError, "n_repeats must be an integer >= 1"),
        ({"min_per_source": 1}, ConfigError, "min_per_source"),
        ({"folds": np.zeros(3)}, ConfigError, "one fold id per image"),
    ],
)
def test_source_predictability_rejects_bad_settings(
    mixed_sources: tuple[np.ndarray, np.ndarray, np.ndarray], kwargs: dict, error: type, match: str
) -> None:
    X, labels, sources = mixed_sources
    with pytest.raises(error, match=match):
        source_predictability(X, labels, sources, **kwargs)


def test_source_predictability_rejects_mismatched_sources() -> None:
    with pytest.raises(DataError, match="sources must have one entry per row"):
        source_predictability(np.zeros((4, 2)), ["a"] * 4, ["s"] * 3)


def test_patient_grouping_prevents_leakage_through_shared_anatomy() -> None:
    """Films of one patient share features; source is per patient and unrelated to them.

    Ungrouped splits put a patient's films on both sides, so the classifier
    recognises the patient and "recovers" its source; grouped splits do not.
    """
    rng = np.random.default_rng(7)
    n_patients, per_patient, d = 60, 4, 64
    patient_features = rng.normal(size=(n_patients, d))
    X = np.repeat(patient_features, per_patient, axis=0) + 0.01 * rng.normal(
        size=(n_patients * per_patient, d)
    )
    patients = np.repeat([f"p{i}" for i in range(n_patients)], per_patient)
    sources = np.repeat(rng.choice(["site_A", "site_B"], size=n_patients), per_patient)
    labels = ["COVID-19"] * len(patients)
    leaky = source_predictability(X, labels, sources, seed=0)
    grouped = source_predictability(X, labels, sources, patient_ids=patients, seed=0)
    assert leaky.loc[0, "auc"] > 0.8
    assert abs(grouped.loc[0, "auc"] - 0.5) < 0.2
    assert grouped.loc[0, "verdict"] != "source is recoverable"


# --------------------------------------------------------------------------- #
# The permutation null (issue 12: false flags on the clean phantom)
# --------------------------------------------------------------------------- #
def _phantom_like(
    seed: int, tag: float, n_per_class: int = 24, d: int = 512
) -> tuple[np.ndarray, ...]:
    """GAP-like features of the demo phantom's design: 7 classes x 24 films, 2 films per patient,
    each patient from site_A or site_B with probability 1/2 (the clean phantom), 3 patient-grouped
    folds. ``tag`` shifts 30 features of every site_B film (a burned-in marker the network picked
    up)."""
    from sklearn.model_selection import StratifiedGroupKFold

    rng = np.random.default_rng(seed)
    classes = ["COVID-19", "Edema", "Effusion", "Emphysema", "Fibrosis", "Normal", "Pneumonia"]
    labels = np.repeat(classes, n_per_class)
    patients = np.array([f"{c}-{i // 2}" for c in classes for i in range(n_per_class)])
    site = {p: ("site_B" if rng.random() < 0.5 else "site_A") for p in np.unique(patients)}
    sources = np.array([site[p] for p in patients])
    class_effect = {c: rng.normal(0, 0.3, d) for c in classes}
    patient_effect = {p: rng.normal(0, 1.0, d) for p in site}
    X = np.stack(
        [class_effect[c] + patient_effect[p] for c, p in zip(labels, patients, strict=True)]
    )
    X = np.maximum(X + rng.normal(0, 1.0, X.shape), 0.0)  # after a ReLU, as GAP features are
    X[sources == "site_B", :30] += tag
    folds = np.zeros(len(labels), dtype=int)
    for f, (_, test) in enumerate(
        StratifiedGroupKFold(3, shuffle=True, random_state=seed).split(X, labels, patients)
    ):
        folds[test] = f
    return X, labels, sources, patients, folds


def test_no_source_flag_on_clean_features_over_seeds() -> None:
    """Chance alone gives within-class AUCs of 0.7-0.9 here (the demo's false flags); the null reads
    them as noise."""
    max_auc = []
    for seed in range(5):
        X, labels, sources, patients, folds = _phantom_like(seed, tag=0.0)
        df = source_predictability(X, labels, sources, folds=folds, patient_ids=patients, seed=seed)
        tested = df[df["status"] == "tested"]
        assert len(tested) >= 6  # a class can draw fewer than 5 films of one site
        assert (tested["verdict"] == "source is not recoverable").all(), (
            seed,
            df[["class", "auc", "p_adjusted"]],
        )
        assert df.attrs["pooled"]["verdict"] == "source is not recoverable within classes"
        assert (tested["null_q95"] > 0.65).all()  # what chance reaches with 8 test films per fold
        max_auc.append(df["auc"].max())
    assert (
        max(max_auc) > SOURCE_AUC_RECOVERABLE
    )  # the old rule (AUC > 0.7) would have flagged a clean run


def test_planted_tag_is_flagged_over_seeds() -> None:
    for seed in range(5):
        X, labels, sources, patients, folds = _phantom_like(seed, tag=2.0)
        df = source_predictability(X, labels, sources, folds=folds, patient_ids=patients, seed=seed)
        pooled = df.attrs["pooled"]
        assert pooled["verdict"] == "source is recoverable within classes", (seed, pooled)
        assert pooled["auc"] > 0.85 and pooled["p_adjusted"] < 0.02 and len(pooled["classes"]) >= 6
        assert (df["auc"] > df["null_q95"]).sum() >= 5


def test_repeated_shuffles_narrow_the_split_lottery_and_keep_the_tag() -> None:
    """Without the run's folds, one shuffle's AUC moves with the shuffle alone; the mean of 5 moves
    less.

    The data-level audit (radiomics, no run folds) read one shuffle: on a clean phantom class its
    AUC went from 0.58 to 0.64 with the shuffle seed, enough to flag a class or not.
    """
    X, labels, sources, patients, _ = _phantom_like(0, tag=0.0, n_per_class=60, d=64)

    def aucs(n_repeats: int) -> np.ndarray:
        """Every class's AUC (columns) under 10 shuffle seeds (rows)."""
        return np.array(
            [
                source_predictability(
                    X,
                    labels,
                    sources,
                    patient_ids=patients,
                    seed=seed,
                    n_repeats=n_repeats,
                    n_permutations=0,
                )["auc"].to_numpy()
                for seed in range(0, 100, 10)
            ]
        )

    single, repeated = aucs(1).std(axis=0).mean(), aucs(5).std(axis=0).mean()
    assert repeated < 0.7 * single, (
        single,
        repeated,
    )  # about 0.45x here (1/sqrt(5) if independent)
    df = source_predictability(X, labels, sources, patient_ids=patients, seed=0).set_index("class")
    assert (df["n_folds"] == 5 * 5).all()
    assert "averaged over 25 held-out folds (5 shuffled repeats)" in df.at["COVID-19", "reason"]
    tagged, labels, sources, patients, _ = _phantom_like(0, tag=2.0, n_per_class=60, d=64)
    pooled = source_predictability(tagged, labels, sources, patient_ids=patients, seed=0).attrs[
        "pooled"
    ]
    assert pooled["verdict"] == "source is recoverable within classes", pooled


def test_source_predictability_without_null_calls_nothing_recoverable(mixed_sources) -> None:
    X, labels, sources = mixed_sources
    df = source_predictability(X, labels, sources, n_permutations=0).set_index("class")
    assert df.at["COVID-19", "auc"] > 0.9 and np.isnan(df.at["COVID-19", "p"])
    assert df.at["COVID-19", "verdict"] == "source is not recoverable"


# --------------------------------------------------------------------------- #
# The confounding sentences in the audit's summary (issue 13)
# --------------------------------------------------------------------------- #
def test_no_confounding_sentence_when_every_class_is_mixed() -> None:
    from biomark.analysis.by_source import class_sources, confounding_sentences

    labels = np.repeat(["A", "B"], 20)
    sources = np.tile(["s1", "s2"], 20)
    assert confounding_sentences(class_sources(labels, sources)) == []
    df = source_predictability(
        np.random.default_rng(0).normal(size=(40, 3)), labels, sources, n_permutations=9
    )
    assert "Every class has images from several sources" in df.attrs["summary"]


def _networks_with_their_own_tag_unit(
    seed: int, tag: float
) -> tuple[list[np.ndarray], np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Three fold networks' features of the same 120 films of one class: each network carries the
    source (``tag`` SDs) in a unit of its own, as separately trained networks do. Returns the
    views, labels, sources, patients and each film's held-out fold."""
    rng = np.random.default_rng(seed)
    n = 120
    sources = np.repeat(["site_A", "site_B"], n // 2)
    labels = np.full(n, "COVID-19")
    patients = np.array([f"p{i // 2}" for i in range(n)])
    fold = np.tile(np.repeat([0, 1, 2], 2), n // 6)
    views = []
    for k in range(3):
        view = rng.standard_normal((n, 20))
        view[:, 5 * k] += tag * (sources == "site_B")
        views.append(view)
    return views, labels, sources, patients, fold


def test_views_find_a_source_each_fold_network_carries_in_its_own_unit() -> None:
    """The out-of-fold features of three networks, probed across folds, show nothing (each fold's
    probe is fitted on other networks' units); probed within each network and averaged over the
    views, the source is recoverable."""
    views, labels, sources, patients, fold = _networks_with_their_own_tag_unit(0, tag=1.5)
    out_of_fold = np.choose(fold[:, None], views)  # each film read by the network that held it out
    across = source_predictability(
        out_of_fold, labels, sources, folds=fold, patient_ids=patients, n_permutations=200
    ).set_index("class")
    assert across.at["COVID-19", "verdict"] == "source is not recoverable"
    within = source_predictability(views, labels, sources, patient_ids=patients, n_permutations=200)
    row = within.set_index("class").loc["COVID-19"]
    assert row["verdict"] == "source is recoverable" and row["auc"] > SOURCE_AUC_RECOVERABLE
    assert within.attrs["thresholds"]["views"] == 3


def test_views_without_a_source_stay_clean_over_seeds() -> None:
    flagged = 0
    for seed in range(10):
        views, labels, sources, patients, _ = _networks_with_their_own_tag_unit(seed, tag=0.0)
        row = (
            source_predictability(
                views, labels, sources, patient_ids=patients, n_permutations=200, seed=seed
            )
            .set_index("class")
            .loc["COVID-19"]
        )
        assert 0.5 < row["null_q95"] < 0.75
        flagged += row["p"] < 0.05
    assert flagged <= 2  # a 5 % test over 10 draws


def test_one_view_in_a_list_is_the_array_itself(
    mixed_sources: tuple[np.ndarray, np.ndarray, np.ndarray],
) -> None:
    X, labels, sources = mixed_sources
    pd.testing.assert_frame_equal(
        source_predictability([X], labels, sources, n_permutations=50),
        source_predictability(X, labels, sources, n_permutations=50),
    )


def test_views_of_different_images_are_refused() -> None:
    views, labels, sources, patients, _ = _networks_with_their_own_tag_unit(0, tag=1.0)
    with pytest.raises(DataError, match=r"views hold different numbers of images \(\[119, 120\]\)"):
        source_predictability([views[0], views[1][:-1]], labels, sources)
    with pytest.raises(DataError, match="no view"):
        source_predictability([], labels, sources)
