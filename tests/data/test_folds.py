"""Tests for biomark.data.folds: patient-grouped stratified folds and validation split."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from sklearn.model_selection import StratifiedKFold

from biomark.exceptions import ConfigError, ManifestError
from biomark.data.folds import check_folds, make_folds, patient_groups, validation_split

CLASSES = {"COVID-19": 60, "Normal": 120, "Pneumonia": 90}


@pytest.fixture
def manifest() -> pd.DataFrame:
    """270 images of 3 classes; patients hold 1-4 images of one class."""
    rng = np.random.default_rng(0)
    rows = []
    patient = 0
    for label, count in CLASSES.items():
        made = 0
        while made < count:
            n = min(int(rng.integers(1, 5)), count - made)
            for _ in range(n):
                rows.append({"image_id": f"img{len(rows):04d}", "label": label, "patient_id": f"p{patient:03d}"})
            made += n
            patient += 1
    frame = pd.DataFrame(rows)
    return frame.sample(frac=1.0, random_state=1).reset_index(drop=True)


def test_every_image_in_exactly_one_fold(manifest):
    folds = make_folds(manifest, k=5, seed=0)
    assert list(folds.columns) == ["image_id", "fold"]
    assert folds["image_id"].tolist() == manifest["image_id"].tolist()
    assert set(folds["fold"]) == set(range(5))
    assert folds["image_id"].is_unique


@pytest.mark.parametrize("grouping", ["patient", "none"])
def test_deterministic_for_a_seed(manifest, grouping):
    a = make_folds(manifest, k=5, grouping=grouping, seed=7)
    b = make_folds(manifest, k=5, grouping=grouping, seed=7)
    c = make_folds(manifest, k=5, grouping=grouping, seed=8)
    pd.testing.assert_frame_equal(a, b)
    assert not a["fold"].equals(c["fold"])


def test_no_patient_in_two_folds(manifest):
    folds = make_folds(manifest, k=5, seed=0)
    per_patient = folds["fold"].groupby(manifest["patient_id"]).nunique()
    assert (per_patient == 1).all()


def test_class_balance_roughly_kept(manifest):
    folds = make_folds(manifest, k=5, seed=0)
    table = pd.crosstab(folds["fold"], manifest["label"])
    for label, count in CLASSES.items():
        expected = count / 5
        assert (abs(table[label] - expected) <= max(4, 0.25 * expected)).all(), table


def test_grouping_none_is_stratified_kfold(manifest):
    folds = make_folds(manifest, k=5, grouping="none", seed=3)
    expected = np.empty(len(manifest), dtype=int)
    splits = StratifiedKFold(5, shuffle=True, random_state=3).split(np.zeros(len(manifest)), manifest["label"])
    for i, (_, test) in enumerate(splits):
        expected[test] = i
    np.testing.assert_array_equal(folds["fold"].to_numpy(), expected)


def test_unknown_patient_is_its_own_group(manifest):
    manifest.loc[:9, "patient_id"] = ""
    groups = patient_groups(manifest)
    assert len(set(groups[:10])) == 10
    make_folds(manifest, k=5, seed=0)  # runs


@pytest.mark.parametrize(
    ("k", "grouping", "match"),
    [
        (61, "none", r"cv.k=61: class 'COVID-19' has only 60 image\(s\).*lower cv.k to at most 60"),
        (40, "patient", r"cv.k=40: class 'COVID-19' has only \d+ patient\(s\).*use cv.grouping: none"),
        (1, "patient", "need at least 2 folds"),
    ],
)
def test_check_folds_errors(manifest, k, grouping, match):
    with pytest.raises(ConfigError, match=match):
        check_folds(manifest, k, grouping)
    with pytest.raises(ConfigError, match=match):
        make_folds(manifest, k=k, grouping=grouping)


def test_missing_patient_column(manifest):
    with pytest.raises(ManifestError, match="patient_id"):
        make_folds(manifest.drop(columns="patient_id"), k=5)
    make_folds(manifest.drop(columns="patient_id"), k=5, grouping="none")


def test_unknown_grouping(manifest):
    with pytest.raises(ConfigError, match="cv.grouping='site'"):
        make_folds(manifest, k=5, grouping="site")  # type: ignore[arg-type]


@pytest.mark.parametrize("grouping", ["patient", "none"])
def test_validation_split_inside_training_rows(manifest, grouping):
    folds = make_folds(manifest, k=5, seed=0)
    training = manifest[folds["fold"] != 0].reset_index(drop=True)
    train, val = validation_split(training, 0.1, grouping=grouping, seed=0)
    assert len(np.intersect1d(train, val)) == 0
    np.testing.assert_array_equal(np.sort(np.concatenate([train, val])), np.arange(len(training)))
    assert 0.05 < len(val) / len(training) < 0.17
    assert set(training["label"].iloc[val]) == set(CLASSES)  # stratified
    if grouping == "patient":
        shared = set(training["patient_id"].iloc[train]) & set(training["patient_id"].iloc[val])
        assert shared == set()
    again = validation_split(training, 0.1, grouping=grouping, seed=0)
    np.testing.assert_array_equal(again[1], val)


def test_validation_fraction_zero(manifest):
    train, val = validation_split(manifest, 0.0)
    np.testing.assert_array_equal(train, np.arange(len(manifest)))
    assert val.size == 0


@pytest.mark.parametrize(
    ("fraction", "rows", "match"),
    [
        (0.5, 270, r"cv.validation_fraction=0.5: use a value in \[0, 0.5\)"),
        (0.1, 6, r"holds out 1 in 10 .* \(3 patients, largest class \d images\) can be split at most 3 way"),
    ],
)
def test_validation_split_errors(manifest, fraction, rows, match):
    small = manifest.head(rows).assign(patient_id=[f"q{i // 2}" for i in range(min(rows, len(manifest)))])
    with pytest.raises(ConfigError, match=match):
        validation_split(small, fraction)


def small_manifest(counts: tuple[int, ...], images_per_patient: int = 1) -> pd.DataFrame:
    rows = [
        {"image_id": f"{label}{i}", "label": label, "patient_id": f"{label}-p{i // images_per_patient}"}
        for label, n in zip(("COVID-19", "Normal", "Pneumonia", "Edema"), counts)
        for i in range(n)
    ]
    return pd.DataFrame(rows)


def validate_like_extract(manifest: pd.DataFrame, k: int, fraction: float, grouping: str, seed: int = 0) -> None:
    """What ``biomark extract`` checks before training: the folds, then each fold's validation split."""
    check_folds(manifest, k, grouping, validation_fraction=fraction, seed=seed)
    folds = make_folds(manifest, k, grouping=grouping, seed=seed)["fold"].to_numpy()
    for fold in range(k):
        validation_split(manifest[folds != fold].reset_index(drop=True), fraction, grouping=grouping, seed=seed + fold)


@pytest.mark.parametrize(
    ("counts", "per_patient", "k", "fraction", "grouping"),
    [
        ((6, 6, 2), 1, 5, 0.2, "patient"),  # the issue: "lower cv.k to at most 2", then sklearn's n_splits=5 error
        ((6, 6, 2), 1, 2, 0.2, "none"),
        ((3, 3, 3), 1, 5, 0.2, "patient"),
        ((4, 4, 4, 4), 1, 3, 0.2, "none"),
        ((8, 8, 8), 2, 4, 0.1, "patient"),
        ((2, 2), 1, 5, 0.25, "patient"),  # no fraction works: the advice is 0
        ((9, 5, 4), 2, 3, 0.1, "patient"),  # patients, not images, bound k
    ],
)
def test_following_the_advice_works(counts, per_patient, k, fraction, grouping):
    """Every check names the k and fraction the splitters get; doing what the message says succeeds."""
    import re

    manifest = small_manifest(counts, per_patient)
    with pytest.raises(ConfigError) as first:
        validate_like_extract(manifest, k, fraction, grouping)
    message = str(first.value)
    lower = re.search(r"lower cv\.k to at most (\d+)", message)
    new_fraction = re.search(r"set cv\.validation_fraction to (0(?:\.\d+)?)", message)
    assert lower or new_fraction, message
    validate_like_extract(
        manifest,
        int(lower.group(1)) if lower else k,
        float(new_fraction.group(1)) if new_fraction else fraction,
        grouping,
    )


def test_validation_split_never_raises_sklearns_error():
    """All classes smaller than the parts: sklearn's ValueError used to escape."""
    manifest = small_manifest((3, 3, 3))
    with pytest.raises(ConfigError, match=r"holds out 1 in 5 .* \(9 patients, largest class 3 images\) .*"
                                          r"set cv\.validation_fraction to 0\.34 \(1 in 3\)"):
        validation_split(manifest, 0.2)
    train, val = validation_split(manifest, 0.34)
    assert len(val) == 3 and set(manifest["label"].iloc[val]) == {"COVID-19", "Normal", "Pneumonia"}


def test_check_folds_names_the_fold_of_a_failing_validation_split():
    manifest = small_manifest((4, 4, 4, 4))
    check_folds(manifest, 3, "none")  # k alone is fine
    with pytest.raises(ConfigError, match=r"^fold \d: cv\.validation_fraction=0\.2 holds out 1 in 5"):
        check_folds(manifest, 3, "none", validation_fraction=0.2)
    check_folds(manifest, 3, "none", validation_fraction=0.0)


def test_no_impossible_k_is_advised():
    """A class with one image (or one patient) cannot be split by any k >= 2: the advice says what can."""
    with pytest.raises(ConfigError, match=r"class 'Pneumonia' has only 1 image\(s\).*; add images of 'Pneumonia'$"):
        check_folds(small_manifest((4, 4, 1)), 2, "none")
    with pytest.raises(ConfigError, match=r"only 1 patient\(s\) \(3 images\).*patient; use cv\.grouping: none"):
        check_folds(small_manifest((4, 4, 3), images_per_patient=3), 2, "patient")
