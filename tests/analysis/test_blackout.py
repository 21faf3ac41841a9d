"""The lung-blackout control read against the majority rate (biomark.analysis.blackout)."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from biomark.analysis.blackout import blackout_distribution, read_blackout
from biomark.analysis.chance import NOT_READABLE_AT_CHANCE

CLASSES = ["COVID-19", "Edema", "Effusion", "Emphysema", "Fibrosis", "Normal", "Pneumonia"]


@pytest.fixture
def learned() -> tuple[np.ndarray, np.ndarray]:
    """7 balanced classes x 40 images; the model is right on 70 % of them, its errors spread
    evenly."""
    y = np.repeat(CLASSES, 40)
    i = np.arange(len(y))
    codes = np.repeat(np.arange(7), 40)
    pred = np.where(i % 10 < 7, codes, (codes + 1 + i % 6) % 7)
    return y, np.asarray(CLASSES, dtype=object)[pred]


def _blackout(y: np.ndarray, keep: float, collapse: str | None = None) -> np.ndarray:
    """Right on a share ``keep`` of each class, else spread over all classes (or all
    ``collapse``)."""
    i = np.arange(len(y))
    codes = pd.Index(CLASSES).get_indexer(y)
    spread = np.asarray(CLASSES, dtype=object)[
        (codes + i) % 7
    ]  # exactly 1/7 right, every class equally often
    out = np.where((i % 40) < keep * 40, y, spread)
    if collapse is not None:
        out = np.where((i % 40) < keep * 40, y, collapse)
    return out


def test_blackout_back_at_the_majority_rate_with_spread_predictions_reads_the_lungs(
    learned,
) -> None:
    y, pred = learned
    r = read_blackout(y, pred, _blackout(y, 0.0))
    assert r.verdict == "reads the lungs" and not r.collapsed
    assert r.accuracy_blackout == pytest.approx(1 / 7) and r.majority_rate == pytest.approx(1 / 7)
    assert r.survival_for_flags == pytest.approx(0.0)
    assert r.sentence.startswith("Reads the lungs") and "14.3%" in r.sentence


def test_blackout_collapse_is_out_of_distribution(learned) -> None:
    y, pred = learned
    r = read_blackout(y, pred, _blackout(y, 0.0, collapse="Normal"))
    assert r.verdict == "out of distribution" and r.collapsed
    assert r.top_classes[0] == "Normal" and r.top_share > 0.8
    assert r.survival_for_flags is None
    assert "neither shows that it reads the lungs nor that it reads outside them" in r.sentence


def test_blackout_below_the_majority_rate_is_out_of_distribution() -> None:
    """As on the real films: blacked out, accuracy fell to 27 %, half the majority rate (54 %)."""
    rng = np.random.default_rng(0)
    y = np.r_[np.full(540, "Normal"), rng.choice(CLASSES[:5] + ["Pneumonia"], 460)]
    pred = np.where(rng.random(1000) < 0.8, y, "Normal")
    bo = np.where(rng.random(1000) < 0.27, y, np.where(y == "Normal", "Pneumonia", "Normal"))
    r = read_blackout(y, pred, bo)
    assert r.majority_rate == pytest.approx(0.54) and r.accuracy_blackout < 0.35
    assert r.verdict == "out of distribution" and "below the majority rate" in r.sentence


@pytest.mark.parametrize(
    ("keep", "verdict"), [(0.9, "reads outside the lungs"), (0.3, "partly outside the lungs")]
)
def test_blackout_that_keeps_accuracy_reads_outside(learned, keep: float, verdict: str) -> None:
    y, pred = learned
    r = read_blackout(y, pred, _blackout(y, keep))
    assert r.verdict == verdict
    expected = (r.accuracy_blackout - 1 / 7) / (r.accuracy_original - 1 / 7)
    assert r.survival_above_chance == pytest.approx(expected)
    assert r.survival_for_flags == pytest.approx(expected)


def test_accuracy_kept_by_one_class_names_that_class_and_the_lungs_outline(learned) -> None:
    """As on the demo phantom: with the lungs blacked out, only Emphysema (a disease of the lungs'
    size and darkness, which a blackout keeps or mimics) is still recalled; every other class
    falls to chance. The reading says which class keeps the accuracy and why that need not be
    outside the lungs."""
    y, pred = learned
    bo = _blackout(y, 0.0)
    bo[(y == "Emphysema") & (np.arange(len(y)) % 40 < 26)] = "Emphysema"  # recall 70 % -> 65 %+
    r = read_blackout(y, pred, bo)
    assert r.verdict == "partly outside the lungs"
    assert r.kept_classes == ("Emphysema",)
    assert "the class still told apart is Emphysema (recall 70% → " in r.sentence
    assert "keeps the lungs' outline" in r.sentence and "lung swap" in r.sentence
    table = blackout_distribution(y, pred, bo)
    assert table.loc["Emphysema", "recalled_blackout"] >= 26


def test_a_class_given_to_every_blacked_out_film_is_not_told_apart(learned) -> None:
    """A collapse onto one answer recalls that class fully but does not tell it apart."""
    y, pred = learned
    r = read_blackout(y, pred, _blackout(y, 0.0, collapse="Normal"))
    assert r.kept_classes == ()


def test_blackout_of_a_model_at_chance_is_not_read(learned) -> None:
    y, _ = learned
    r = read_blackout(y, _blackout(y, 0.0), _blackout(y, 0.9))  # keeps "104 %" of nothing
    assert r.verdict == "model at chance" and r.survival_for_flags is None
    assert r.sentence.startswith("Not readable")
    assert r.label == NOT_READABLE_AT_CHANCE  # as a summary line gives it


def test_blackout_skips_images_without_a_mask_and_counts_predictions(learned) -> None:
    y, pred = learned
    bo = _blackout(y, 0.0).astype(object)
    bo[:10] = None
    assert read_blackout(y, pred, bo).n == len(y) - 10
    table = blackout_distribution(y, pred, bo)
    assert list(table.columns) == [
        "true",
        "predicted",
        "predicted_blackout",
        "recalled",
        "recalled_blackout",
    ]
    assert table["true"].sum() == len(y) - 10 and table.loc["Normal", "true"] == 40
    # 70 % of each class recalled originally (28 of 40), 1 in 7 blacked out (every class alike)
    assert table.loc["Normal", "recalled"] == 28 and table.loc["Normal", "recalled_blackout"] == 6
    with pytest.raises(ValueError, match="no image has a blacked-out prediction"):
        read_blackout(y, pred, [None] * len(y))
