"""The chance guard (biomark.analysis.chance): has a model learned before its features are read?"""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from scipy import stats

from biomark.analysis.chance import (
    accuracy_test,
    chance_guard,
    guard_table,
    p_clause,
    p_value_text,
    withhold_candidates,
)
from biomark.exceptions import ConfigError, DataError

CLASSES = ["COVID-19", "Edema", "Effusion", "Emphysema", "Fibrosis", "Pneumonia", "Normal"]


def _run(accuracy: float, n_per_class: int = 24, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Labels of the demo phantom (7 x 24) and predictions right on a share ``accuracy``, wrong at
    random."""
    rng = np.random.default_rng(seed)
    labels = np.repeat(CLASSES, n_per_class)
    wrong = np.array([rng.choice([c for c in CLASSES if c != y]) for y in labels])
    right = rng.random(len(labels)) < accuracy
    return labels, np.where(right, labels, wrong)


def test_a_run_at_chance_has_not_learned(caplog) -> None:
    """The quick demo: 7-class accuracy 12-18 %, 2-class 71-76 % against 85.7 % for always 'not
    COVID-19'. The log line names the test and its level."""
    labels, pred = _run(1 / 7)
    with caplog.at_level("WARNING", logger="biomark.analysis.chance"):
        guard = chance_guard(labels, pred, strategy="scratch", positive="COVID-19", classes=CLASSES)
    assert "scratch: accuracy" in caplog.text and "is not significantly above the majority" in (
        caplog.text
    )
    assert f"(one-sided binomial p = {guard.multiclass.p_value:.2g}, not below 0.05)" in caplog.text
    m, b = guard.multiclass, guard.binary
    assert not guard.learned and guard.verdict == "not above chance"
    assert m.majority_rate == pytest.approx(1 / 7) and m.chance_rate == pytest.approx(1 / 7)
    assert m.p_value == pytest.approx(
        stats.binomtest(m.correct, m.n, 1 / 7, alternative="greater").pvalue
    )
    assert (
        b is not None
        and b.majority_rate == pytest.approx(6 / 7)
        and b.majority_class == "not COVID-19"
    )
    assert not b.above_majority
    banner = guard.banner()
    assert (
        banner is not None
        and "scratch has NOT learned" in banner
        and "no candidate biomarkers" in banner
    )
    assert "no better than always answering 'not COVID-19'" in banner
    assert f"{100 * m.accuracy:.1f} %" in banner and "14.3 %" in banner and "85.7 %" in banner


def test_a_run_that_learned_passes() -> None:
    labels, pred = _run(0.95)
    guard = chance_guard(labels, pred, strategy="scratch", positive="COVID-19")
    assert guard.learned and guard.multiclass.p_value < 1e-20
    assert guard.binary is not None and guard.binary.above_majority
    assert guard.banner() is None and guard.sentence().startswith("scratch has learned something")


def test_a_p_value_that_underflowed_is_printed_as_a_bound_not_as_zero() -> None:
    """The demo's scratch run: 1,630 of 2,100 right against 1/7; the exact p (about 1e-800)
    underflows to 0."""
    from biomark.report.guards import guard_frame

    labels = np.repeat(CLASSES, 300)
    pred = labels.copy()
    pred[:470] = np.where(labels[:470] == "Normal", "Edema", "Normal")
    guard = chance_guard(labels, pred, strategy="scratch", positive="COVID-19")
    m = guard.multiclass
    assert m.correct == 1630 and m.p_value == 0.0
    assert "one-sided exact binomial p < 1e-300" in m.describe() and "p = 0" not in m.describe()
    assert guard_frame([guard])["p (> majority)"].iloc[0] == "< 1e-300"
    assert p_clause(0.0273) == "p = 0.027" and p_value_text(0.5) == "0.5"
    assert p_clause(2e-300) == "p = 2e-300" and p_value_text(1e-301) == "< 1e-300"


def test_learned_classes_but_the_two_class_figure_is_not_above_always_not_covid() -> None:
    """55 % on 7 classes is far above chance, yet its 2-class accuracy (86 %) is what 'not COVID-19'
    always gets."""
    labels, pred = _run(0.55)
    guard = chance_guard(labels, pred, strategy="scratch", positive="COVID-19")
    assert guard.learned and not guard.binary.above_majority
    banner = guard.banner()
    assert banner is not None and "scratch has learned something" in banner
    assert "the 2-class figures are no better than always answering 'not COVID-19'" in banner


def test_wilson_interval_and_majority_on_imbalanced_classes() -> None:
    labels = np.array(["Normal"] * 80 + ["COVID-19"] * 20)
    pred = np.array(["Normal"] * 100)  # always the majority: 80 % accuracy, nothing learned
    test = accuracy_test(labels, pred)
    assert test.accuracy == 0.8 and test.majority_rate == 0.8 and test.majority_class == "Normal"
    assert not test.above_majority
    ci = stats.binomtest(80, 100).proportion_ci(0.95, method="wilson")
    assert (test.ci_low, test.ci_high) == pytest.approx((ci.low, ci.high))
    assert test.ci_low < 0.8 < test.ci_high  # two-sided
    assert chance_guard(labels, pred, positive="COVID-19").binary.majority_rate == pytest.approx(
        0.8
    )


def test_positive_class_absent_gives_no_binary_test() -> None:
    labels, pred = _run(0.6)
    assert chance_guard(labels, pred, positive="Tuberculosis").binary is None
    assert chance_guard(labels, pred).binary is None


def test_guard_table_has_a_row_per_task() -> None:
    labels, pred = _run(1 / 7)
    guards = [
        chance_guard(labels, pred, strategy="scratch", positive="COVID-19"),
        chance_guard(*_run(0.6), strategy="frozen"),
    ]
    table = guard_table(guards)
    assert table["strategy"].tolist() == ["scratch", "scratch", "frozen"]
    assert table["verdict"].tolist() == ["not above the majority rate"] * 2 + [
        "above the majority rate"
    ]
    assert (table["ci_low"] <= table["accuracy"]).all() and (
        table["accuracy"] <= table["ci_high"]
    ).all()


def test_withheld_candidates_are_not_called_candidates() -> None:
    table = pd.DataFrame(
        {
            "feature": ["f0001", "f0002", "f0003"],
            "is_candidate": pd.array([True, False, pd.NA], dtype="boolean"),
            "status": ["candidate", "rejected: not stable", "undetermined: untested in lungs"],
        }
    )
    at_chance = chance_guard(*_run(1 / 7), strategy="scratch")
    out = withhold_candidates(table, at_chance)
    assert not out["is_candidate"].any() and out["is_candidate"].notna().all()
    assert out["status"].str.startswith("withheld: the model is not above chance").all()
    assert out["status"].iat[0].endswith("the criteria alone said: candidate")
    assert table["is_candidate"].iat[0]  # input left alone
    learned = chance_guard(*_run(0.6), strategy="scratch")
    pd.testing.assert_frame_equal(withhold_candidates(table, learned), table)
    with pytest.raises(DataError, match="lacks column"):
        withhold_candidates(table.drop(columns=["status"]), at_chance)


@pytest.mark.parametrize(
    ("kwargs", "error", "match"),
    [
        ({"y_true": [], "y_pred": []}, DataError, "empty"),
        ({"y_true": ["a", "b"], "y_pred": ["a"]}, DataError, "one prediction per image"),
        ({"y_true": ["a", None], "y_pred": ["a", "b"]}, DataError, "missing entries"),
        ({"y_true": ["a", "b"], "y_pred": ["a", "b"], "alpha": 1.0}, ConfigError, "alpha"),
        (
            {"y_true": ["a", "b"], "y_pred": ["a", "b"], "confidence": 0.0},
            ConfigError,
            "confidence",
        ),
    ],
)
def test_bad_inputs_are_named(kwargs: dict, error: type, match: str) -> None:
    with pytest.raises(error, match=match):
        accuracy_test(**kwargs)


def test_one_class_cannot_be_beaten() -> None:
    test = accuracy_test(["a"] * 5, ["a"] * 5)
    assert test.accuracy == 1.0 and test.p_value == 1.0 and not test.above_majority
