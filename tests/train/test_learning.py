"""The training recipe learns: a scratch MobileNetV2 beats chance on an easy phantom, and
the fit check tells a learnable training set from one with shuffled labels.

Small on purpose (3 well-separated phantom classes, 64 px, a few epochs): the demo's
accuracy is a benchmark figure (``benchmarks/learning.py``), not a test.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from biomark.config import Plan, StrategySpec, apply_overrides
from biomark.data.phantom import generate_phantom
from biomark.train.fitcheck import fit_check
from biomark.train.loop import train_fold

CLASSES = ("Edema", "Emphysema", "Normal")
SIZE = 64


@pytest.fixture(scope="module")
def easy_phantom(
    tmp_path_factory: pytest.TempPathFactory,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Three phantom classes with strong signatures, 60 images each: (images, labels, patient
    groups)."""
    from PIL import Image

    out = tmp_path_factory.mktemp("easy_phantom")
    csv = generate_phantom(
        out,
        n_per_class=60,
        seed=3,
        image_size=SIZE,
        signature_strength=3.0,
        nonsquare_fraction=0.0,
        images_per_patient=1,
        jobs=2,
    )
    frame = pd.read_csv(csv)
    frame = frame[frame["label"].isin(CLASSES)].reset_index(drop=True)
    images = np.stack([np.asarray(Image.open(out / p)) for p in frame["path"]]).astype(np.uint8)
    labels = frame["label"].map({c: i for i, c in enumerate(CLASSES)}).to_numpy()
    return images, labels, frame["patient_id"].to_numpy()


def _plan(**overrides: object) -> Plan:
    base = {
        "model.image_size": SIZE,
        "model.weights": "none",
        "model.alpha": 0.35,
        "model.head_units": 64,
        "model.augment.rotation_degrees": 0.0,
        "model.augment.shift_pixels": 0,
        "training.epochs": 8,
        "training.batch_size": 16,
        "training.warmup_epochs": 1,
        "training.early_stopping.enabled": False,
        "training.fit_check_epoch": 4,
    }
    base.update(overrides)
    return apply_overrides(Plan(), base)


def _split(labels: np.ndarray, groups: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    from sklearn.model_selection import StratifiedGroupKFold

    train, test = next(
        StratifiedGroupKFold(3, shuffle=True, random_state=0).split(labels, labels, groups)
    )
    return train, test


@pytest.mark.slow
def test_scratch_learns_an_easy_phantom_and_the_fit_check_tells_it_from_shuffled_labels(
    easy_phantom, tmp_path: Path, caplog
) -> None:
    """Shuffled labels can be memorised (Zhang et al. 2017), but nothing carries to validation
    images.

    Both networks train with the same settings, so the second reuses the first's traced step.
    """
    images, labels, groups = easy_phantom
    train, test = _split(labels, groups)
    plan = _plan()
    kwargs = dict(
        strategy=StrategySpec("scratch"),
        n_classes=3,
        model_settings=plan.model,
        training=plan.training,
        seed=0,
    )
    shuffled = np.random.default_rng(0).permutation(labels)
    memorised = train_fold(
        images, shuffled, train, test, out_dir=tmp_path / "shuffled", desc="shuffled", **kwargs
    )
    assert memorised.fit_check["status"] in ("not_generalising", "cannot_fit")
    assert (
        "shuffled learns its own training images" in caplog.text
        or "shuffled cannot fit" in caplog.text
    )

    learnable = train_fold(images, labels, train, None, out_dir=tmp_path / "real", **kwargs)
    assert learnable.pipeline["reused_compiled_model"]
    from biomark.train.predict import predict_features

    predicted = predict_features(learnable.model, images[test], batch_size=16)["probs"]
    accuracy = float(np.mean(predicted.argmax(axis=1) == labels[test]))
    assert accuracy >= 0.7, f"held-out accuracy {accuracy:.2f}, chance 0.33"
    assert (
        learnable.fit_check["status"] == "fits" and "val_accuracy" not in learnable.fit_check
    )  # no validation images
    assert learnable.final_train_accuracy >= 0.9


def test_fit_check_compares_with_the_majority_rate() -> None:
    labels = np.array([0] * 60 + [1] * 20 + [2] * 20)
    always_majority = fit_check(np.zeros(100, dtype=int), labels, epoch=3)
    assert (
        fit_check(labels, labels, epoch=3, val_predicted=labels[::2], val_labels=labels[::2])[
            "status"
        ]
        == "fits"
    )
    assert always_majority["train_accuracy"] == 0.6 and always_majority["majority_rate"] == 0.6
    assert (
        always_majority["status"] == "cannot_fit"
    )  # 60 % is no better than answering the majority class
    better = labels.copy()
    better[:10] = 1  # 90 % correct
    result = fit_check(better, labels, epoch=5)
    assert result["status"] == "fits" and result["epoch"] == 5 and result["p_value"] < 1e-6


@pytest.mark.parametrize(
    ("random_backbone", "advice", "level"),
    [
        (True, "random-features control that is not expected to learn much", "INFO"),
        (False, "Check the learning rate, the augmentation and the number of images", "WARNING"),
    ],
)
def test_cannot_fit_warning_names_a_random_backbone_as_the_reason(
    caplog, random_backbone: bool, advice: str, level: str
) -> None:
    """A frozen random backbone at chance is the control working, not a recipe to fix: it is
    logged (INFO), not warned about, and the reason named."""
    from biomark.train.epochs import _log_fit_check

    labels = np.array([0] * 60 + [1] * 20 + [2] * 20)
    check = fit_check(np.zeros(100, dtype=int), labels, epoch=3)
    with caplog.at_level("INFO", logger="biomark.train.epochs"):
        _log_fit_check(check, "frozen fold 0", True, random_backbone=random_backbone)
    assert [r.levelname for r in caplog.records if r.name == "biomark.train.epochs"] == [level]
    assert "frozen fold 0 cannot fit its own training set" in caplog.text
    assert advice in caplog.text
    other = "learning rate" if random_backbone else "random-features control"
    assert other not in caplog.text


@pytest.mark.parametrize(
    ("early_fits", "final_fits", "level", "says"),
    [
        (False, True, "INFO", "scratch fold 1 fits its own training set after all: 100.0% of"),
        (False, False, "INFO", "scratch fold 1 still cannot fit its own training set: 60.0%"),
        (True, False, "WARNING", "scratch fold 1 still cannot fit its own training set: 60.0%"),
        (True, True, None, ""),
    ],
)
def test_the_fit_check_is_read_again_after_the_last_epoch(
    caplog, early_fits: bool, final_fits: bool, level: str | None, says: str
) -> None:
    """The demo's scratch fold 1 sat at 15.6 % after the early check (the learning rate at its
    peak) and ended at 83.3 % on its test films, while the log still read "cannot fit ... its
    features will not mean much". The same sample is now predicted by the final model: the early
    warning is withdrawn when it fits, repeated when it still does not, and raised when a fold
    that fitted early no longer does; ``metrics.json`` records both readings."""
    from biomark.train.checkpoint import FoldCheckpoint
    from biomark.train.epochs import confirm_final_fit

    labels = np.array([0] * 60 + [1] * 20 + [2] * 20)
    majority = np.zeros(100, dtype=int)
    early = fit_check(labels if early_fits else majority, labels, epoch=3)
    state = FoldCheckpoint(key="k", epoch=16, stopping=None, fit_check=early)
    with caplog.at_level("INFO", logger="biomark.train.epochs"):
        confirm_final_fit(state, labels if final_fits else majority, labels, "scratch fold 1")
    assert state.fit_check is not None
    assert state.fit_check["status"] == early["status"]  # the early reading is kept
    assert state.fit_check["final_status"] == ("fits" if final_fits else "cannot_fit")
    assert state.fit_check["final_epoch"] == 16
    records = [r for r in caplog.records if r.name == "biomark.train.epochs"]
    if level is None:
        assert not records
    else:
        assert [r.levelname for r in records] == [level] and says in caplog.text

    # a check that ran at the last epoch is not read twice
    at_end = FoldCheckpoint(key="k", epoch=3, stopping=None, fit_check=early)
    confirm_final_fit(at_end, labels, labels, "scratch fold 1")
    assert at_end.fit_check == early


def test_an_accuracy_above_the_majority_rate_but_not_significantly_says_at_which_level(
    caplog,
) -> None:
    """The demo's log read "training accuracy 20.7% after 3 epochs, not above the majority rate
    16.0% (binomial p = 0.028)": above it, and with p under 0.05, yet "not above", because the
    check's level is 1 %. The warning now says "not significantly above" and names the level."""
    from biomark.train.epochs import _log_fit_check

    labels = np.repeat([0, 1, 2, 3, 4, 5], [44, 40, 40, 40, 40, 40])  # majority rate 44/244
    predicted = labels.copy()
    predicted[58:] = (labels[58:] + 1) % 6  # 58 of 244 right: 23.8 %, just above 18.0 %
    check = fit_check(predicted, labels, epoch=3)
    assert check["status"] == "cannot_fit" and 0.01 <= check["p_value"] < 0.05
    assert check["alpha"] == 0.01
    with caplog.at_level("INFO", logger="biomark.train.epochs"):
        _log_fit_check(check, "frozen fold 1", True, random_backbone=True)
    assert "training accuracy 23.8% after 3 epochs, not significantly above the majority rate" in (
        caplog.text
    )
    assert f"(one-sided binomial p = {check['p_value']:.2g}, not below 0.01)" in caplog.text
