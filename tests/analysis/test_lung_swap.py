"""The lung-swap control: whose answers follow the lungs, and whose the surroundings."""

from __future__ import annotations

import numpy as np
import pytest

from biomark.analysis.chance import NOT_READABLE_AT_CHANCE
from biomark.analysis.lung_swap import PER_CLASS_COLUMNS, pair_donors, read_lung_swap
from biomark.exceptions import ConfigError, DataError

CLASSES = np.array(["COVID-19", "Edema", "Emphysema", "Normal"])


def _composites(n_per_class: int = 60, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Surroundings' and lungs' classes of composites drawn as the report draws them."""
    labels = np.repeat(CLASSES, n_per_class)
    donors = pair_donors(labels, np.ones(labels.size, bool), seed=seed)
    return labels, labels[donors]


def _noisy(answers: np.ndarray, rate: float, seed: int) -> np.ndarray:
    """``answers`` with a share ``rate`` replaced by random classes (the model's mistakes)."""
    rng = np.random.default_rng(seed)
    wrong = rng.random(answers.size) < rate
    return np.where(wrong, rng.choice(CLASSES, answers.size), answers)


def test_donors_are_of_another_class_and_only_usable_films_take_part() -> None:
    labels = np.array(["a", "a", "b", "b", "c", "c"])
    usable = np.array([True, True, True, False, True, True])
    donors = pair_donors(labels, usable, seed=3)
    assert donors[3] == -1  # its own mask is unusable
    has = donors >= 0
    assert has.sum() == 5 and (labels[donors[has]] != labels[has]).all()
    assert usable[donors[has]].all()
    np.testing.assert_array_equal(donors, pair_donors(labels, usable, seed=3))
    assert (
        pair_donors(np.array(["a", "a"]), np.ones(2, bool), seed=0) == -1
    ).all()  # one class: no donor


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_a_model_that_reads_the_lungs_is_not_flagged(seed: int) -> None:
    outside, lungs = _composites(seed=seed)
    pred = _noisy(outside, 0.2, seed)  # the original answers: 80 % right
    reading = read_lung_swap(outside, pred, lungs, _noisy(lungs, 0.3, seed + 10))
    assert reading.verdict == "follows the lungs" and reading.flagged == ()
    assert reading.lungs_p < 1e-6
    assert reading.follows_lungs > 0.6 and reading.follows_surroundings < 0.2
    assert list(reading.per_class.columns) == list(PER_CLASS_COLUMNS)
    assert "Follows the lungs" in reading.sentence


def test_a_class_its_surroundings_sway_is_flagged_and_only_it() -> None:
    outside, lungs = _composites()
    answers = np.where(
        outside == "COVID-19", "COVID-19", lungs
    )  # a tag outside the lungs decides COVID-19
    reading = read_lung_swap(outside, _noisy(outside, 0.2, 1), lungs, _noisy(answers, 0.2, 2))
    assert reading.summary.startswith("surroundings sway some classes (COVID-19); ")
    assert reading.verdict == "surroundings sway some classes" and reading.flagged == ("COVID-19",)
    row = reading.per_class.set_index("class").loc["COVID-19"]
    assert row["rate_own_surroundings"] > 0.7 and row["rate_other_surroundings"] < 0.15
    assert row["p_adjusted"] < 1e-6 and row["odds_ratio"] > 10
    assert (
        "sway the answers toward COVID-19" in reading.sentence
        and "shortcut suspect" in reading.sentence
    )


def test_composites_pulled_toward_one_class_whatever_their_surroundings_are_not_flagged() -> None:
    # odd composites answered "Normal" more often, whatever surrounds them: not a surroundings
    # effect
    outside, lungs = _composites(seed=4)
    rng = np.random.default_rng(4)
    answers = np.where(rng.random(lungs.size) < 0.4, "Normal", _noisy(lungs, 0.2, 5))
    reading = read_lung_swap(outside, _noisy(outside, 0.2, 6), lungs, answers)
    assert "Normal" not in reading.flagged


def test_a_model_whose_composite_answers_follow_neither_part_is_said_to() -> None:
    # right on whole films, but on composites it answers at random: lungs and surroundings tie
    outside, lungs = _composites(n_per_class=100)
    rng = np.random.default_rng(7)
    reading = read_lung_swap(
        outside, _noisy(outside, 0.2, 8), lungs, rng.choice(CLASSES, outside.size)
    )
    assert reading.verdict == "follows neither" and reading.flagged == ()
    assert reading.lungs_p >= 0.05 and "Follows neither" in reading.sentence
    assert abs(reading.follows_lungs - reading.follows_surroundings) < 0.06


def test_a_model_at_chance_is_not_read() -> None:
    outside, lungs = _composites()
    rng = np.random.default_rng(0)
    # its composites are answered by their surroundings, which would flag every class: not read
    reading = read_lung_swap(outside, rng.choice(CLASSES, outside.size), lungs, outside)
    assert reading.verdict == "model at chance" and "Not readable" in reading.sentence
    assert reading.flagged == () and not reading.per_class["flagged"].any()
    assert reading.label == NOT_READABLE_AT_CHANCE  # a summary does not say "at chance" of a
    # strategy that passed the chance guard on all its films


def test_missing_composites_are_left_out_and_bad_input_is_named() -> None:
    outside, lungs = _composites(n_per_class=20)
    lungs = lungs.astype(object)
    lungs[:5] = None  # no usable mask: no composite
    reading = read_lung_swap(outside, outside, lungs, lungs)
    assert reading.n == outside.size - 5
    with pytest.raises(DataError, match="differ in length"):
        read_lung_swap(outside, outside[:-1], lungs, lungs)
    with pytest.raises(DataError, match="no lung-swap composite"):
        read_lung_swap(["a"], ["a"], [None], [None])
    with pytest.raises(ConfigError, match="alpha"):
        read_lung_swap(outside, outside, lungs, lungs, alpha=1.5)


def test_two_classes_leave_nothing_to_compare() -> None:
    # with two classes every composite's surroundings are of the class its lungs are not: no stratum
    # holds composites with and without a class's surroundings
    labels = np.repeat(np.array(["COVID-19", "Normal"]), 30)
    lungs = labels[pair_donors(labels, np.ones(labels.size, bool), seed=0)]
    reading = read_lung_swap(labels, labels, lungs, lungs)
    assert reading.verdict == "not testable" and (reading.per_class["n_strata"] == 0).all()
    assert reading.flagged == ()


def test_lung_readers_are_flagged_at_about_the_nominal_rate() -> None:
    # 40 draws of a lung reader that errs 45 % of the time, mostly toward Normal: under the null
    # the per-class one-sided p falls below 0.05 about 5 % of the time (200 draws: 5.3 %, runs
    # flagged 6.5 %); deterministic seeds, so the bounds leave room for the draw, not for flakiness
    classes = np.array(["COVID-19", "Edema", "Emphysema", "Normal", "Effusion", "Fibrosis"])
    p_values, flagged = [], 0
    for seed in range(40):
        rng = np.random.default_rng(seed)
        labels = np.repeat(classes, 36)
        lungs = labels[pair_donors(labels, np.ones(labels.size, bool), seed=seed)]
        toward = rng.choice(classes, labels.size, p=[0.1, 0.1, 0.1, 0.5, 0.1, 0.1])
        answers = np.where(rng.random(labels.size) < 0.45, toward, lungs)
        reading = read_lung_swap(labels, labels, lungs, answers)
        p_values.extend(reading.per_class["p"])
        flagged += bool(reading.flagged)
    share = float(np.mean(np.asarray(p_values) < 0.05))
    assert 0.01 <= share <= 0.1 and flagged <= 5
