"""Tests for biomark.data.folds: patient-grouped (duplicate-aware), leave-one-source-out and plain
folds."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from sklearn.model_selection import StratifiedKFold

from biomark.config import plan_from_mapping
from biomark.data.folds import (
    check_folds,
    fold_groups,
    make_folds,
    patient_groups,
    validation_split,
)
from biomark.exceptions import ConfigError, ManifestError

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
                rows.append(
                    {
                        "image_id": f"img{len(rows):04d}",
                        "label": label,
                        "patient_id": f"p{patient:03d}",
                    }
                )
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
    splits = StratifiedKFold(5, shuffle=True, random_state=3).split(
        np.zeros(len(manifest)), manifest["label"]
    )
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
        (
            40,
            "patient",
            r"cv.k=40: class 'COVID-19' has only \d+ patient\(s\).*use cv.grouping: none",
        ),
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
        (
            0.1,
            6,
            r"holds out 1 in 10 .* \(3 patients, largest class \d images\) can be split at most 3 "
            r"way",
        ),
    ],
)
def test_validation_split_errors(manifest, fraction, rows, match):
    small = manifest.head(rows).assign(
        patient_id=[f"q{i // 2}" for i in range(min(rows, len(manifest)))]
    )
    with pytest.raises(ConfigError, match=match):
        validation_split(small, fraction)


def small_manifest(counts: tuple[int, ...], images_per_patient: int = 1) -> pd.DataFrame:
    rows = [
        {
            "image_id": f"{label}{i}",
            "label": label,
            "patient_id": f"{label}-p{i // images_per_patient}",
        }
        for label, n in zip(
            ("COVID-19", "Normal", "Pneumonia", "Edema")[: len(counts)], counts, strict=True
        )
        for i in range(n)
    ]
    return pd.DataFrame(rows)


def validate_like_extract(
    manifest: pd.DataFrame, k: int, fraction: float, grouping: str, seed: int = 0
) -> None:
    """What ``biomark extract`` checks before training: the folds, then each fold's validation
    split."""
    check_folds(manifest, k, grouping, validation_fraction=fraction, seed=seed)
    folds = make_folds(manifest, k, grouping=grouping, seed=seed)["fold"].to_numpy()
    for fold in range(k):
        validation_split(
            manifest[folds != fold].reset_index(drop=True),
            fraction,
            grouping=grouping,
            seed=seed + fold,
        )


@pytest.mark.parametrize(
    ("counts", "per_patient", "k", "fraction", "grouping"),
    [
        (
            (6, 6, 2),
            1,
            5,
            0.2,
            "patient",
        ),  # the issue: "lower cv.k to at most 2", then sklearn's n_splits=5 error
        ((6, 6, 2), 1, 2, 0.2, "none"),
        ((3, 3, 3), 1, 5, 0.2, "patient"),
        ((4, 4, 4, 4), 1, 3, 0.2, "none"),
        ((8, 8, 8), 2, 4, 0.1, "patient"),
        ((2, 2), 1, 5, 0.25, "patient"),  # no fraction works: the advice is 0
        ((9, 5, 4), 2, 3, 0.1, "patient"),  # patients, not images, bound k
    ],
)
def test_following_the_advice_works(counts, per_patient, k, fraction, grouping):
    """Every check names the k and fraction the splitters get; doing what the message says
    succeeds."""
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
    with pytest.raises(
        ConfigError,
        match=r"holds out 1 in 5 .* \(9 patients, largest class 3 images\) .*"
        r"set cv\.validation_fraction to 0\.34 \(1 in 3\)",
    ):
        validation_split(manifest, 0.2)
    train, val = validation_split(manifest, 0.34)
    assert len(val) == 3 and set(manifest["label"].iloc[val]) == {"COVID-19", "Normal", "Pneumonia"}


def test_check_folds_names_the_fold_of_a_failing_validation_split():
    manifest = small_manifest((4, 4, 4, 4))
    check_folds(manifest, 3, "none")  # k alone is fine
    with pytest.raises(
        ConfigError, match=r"^fold \d: cv\.validation_fraction=0\.2 holds out 1 in 5"
    ):
        check_folds(manifest, 3, "none", validation_fraction=0.2)
    check_folds(manifest, 3, "none", validation_fraction=0.0)


def test_no_impossible_k_is_advised():
    """A class with one image (or one patient) cannot be split by any k >= 2: the advice says what
    can."""
    with pytest.raises(
        ConfigError,
        match=r"class 'Pneumonia' has only 1 image\(s\), fewer than the 2 folds; add images of "
        r"'Pneumonia', or leave the class out of the dataset \(`biomark data build --recipe R`",
    ):
        check_folds(small_manifest((4, 4, 1)), 2, "none")
    with pytest.raises(
        ConfigError,
        match=r"only 1 patient\(s\) \(3 images\).*patient; add patients of 'Pneumonia', leave the "
        r"class out of the dataset \(`biomark data build --recipe R`.*or use cv\.grouping: none",
    ):
        check_folds(small_manifest((4, 4, 3), images_per_patient=3), 2, "patient")


# --------------------------------------------------------------------------- duplicates kept with
# the patient


def _with_copies(manifest: pd.DataFrame, pairs: list[tuple[int, int]]) -> pd.DataFrame:
    """Give every row its own sha256, then make each (i, j) pair an exact copy (same sha256)."""
    frame = manifest.assign(sha256=[f"{i:064x}" for i in range(len(manifest))])
    for i, j in pairs:
        frame.loc[j, "sha256"] = frame.loc[i, "sha256"]
    return frame


def _cross_patient_pairs(manifest: pd.DataFrame, n: int) -> list[tuple[int, int]]:
    """n disjoint (i, j) pairs of rows of different patients (some of different classes too)."""
    rng = np.random.default_rng(5)
    pairs: list[tuple[int, int]] = []
    used: set[int] = set()
    while len(pairs) < n:
        i, j = (int(x) for x in rng.choice(len(manifest), size=2, replace=False))
        if manifest.loc[i, "patient_id"] != manifest.loc[j, "patient_id"] and not {i, j} & used:
            pairs.append((i, j))
            used |= {i, j}
    return pairs


@pytest.mark.parametrize("seed", range(5))
def test_exact_duplicates_across_patients_share_a_fold(manifest, seed):
    pairs = _cross_patient_pairs(manifest, 12)
    copies = _with_copies(manifest, pairs)
    fold = make_folds(copies, k=5, seed=seed)["fold"].to_numpy()
    assert all(fold[i] == fold[j] for i, j in pairs)
    per_patient = pd.Series(fold).groupby(copies["patient_id"]).nunique()
    assert (per_patient == 1).all()  # patients still whole
    # without the sha256 links, patient grouping alone splits some of the same pairs (what issue 13
    # saw)
    plain = make_folds(copies.drop(columns="sha256"), k=5, seed=seed)["fold"].to_numpy()
    assert any(plain[i] != plain[j] for i, j in pairs)


def test_duplicate_chains_join_patients(manifest):
    # row a (patient P) is a copy of row b (patient Q): every image of P and Q is one group
    a, b = _cross_patient_pairs(manifest, 1)[0]
    groups = fold_groups(_with_copies(manifest, [(a, b)]))
    joined = manifest["patient_id"].isin(
        [manifest.loc[a, "patient_id"], manifest.loc[b, "patient_id"]]
    )
    assert len(set(groups[joined.to_numpy()])) == 1
    assert len(set(groups)) == manifest["patient_id"].nunique() - 1


def test_empty_sha256_links_nothing(manifest):
    frame = manifest.assign(sha256="")
    assert len(set(fold_groups(frame))) == manifest["patient_id"].nunique()


def test_near_duplicates_only_behind_the_setting(manifest):
    pairs = _cross_patient_pairs(manifest, 10)
    # 256-bit hashes as data build writes them (biomark.data.duplicates.image_phash)
    words = (
        np.random.default_rng(3)
        .integers(0, 2**63, size=(len(manifest), 4), dtype=np.int64)
        .astype(np.uint64)
    )
    for i, j in pairs:
        words[j] = words[i]
        words[j, 0] ^= np.uint64(0b101)  # 2 bits apart: a re-encoded copy
    frame = _with_copies(manifest, []).assign(
        phash=["".join(f"{int(w):016x}" for w in row) for row in words]
    )
    exact_only = fold_groups(frame)
    near = fold_groups(frame, near_duplicate_distance=14)
    assert all(near[i] == near[j] for i, j in pairs)
    assert any(exact_only[i] != exact_only[j] for i, j in pairs)
    for seed in range(3):
        fold = make_folds(frame, k=5, seed=seed, near_duplicate_distance=14)["fold"].to_numpy()
        assert all(fold[i] == fold[j] for i, j in pairs)


def test_validation_split_keeps_copies_on_one_side(manifest):
    pairs = _cross_patient_pairs(manifest, 15)
    copies = _with_copies(manifest, pairs)
    for seed in range(3):
        train, val = validation_split(copies, 0.2, seed=seed)
        in_val = np.isin(np.arange(len(copies)), val)
        assert all(in_val[i] == in_val[j] for i, j in pairs)


def test_copies_that_leave_too_few_groups_are_an_error():
    frame = pd.DataFrame(
        {
            "image_id": [f"i{n}" for n in range(8)],
            "label": ["A"] * 4 + ["B"] * 4,
            "patient_id": [f"p{n}" for n in range(8)],
            "sha256": ["s0", "s0", "s0", "s1"] + list("wxyz"),
        }
    )
    check_folds(frame, 3, "patient")  # 4 patients per class: fine before joining copies
    with pytest.raises(
        ConfigError, match=r"class 'A' has only 2 patient group\(s\).*duplicates.csv"
    ):
        make_folds(frame, k=3)


def test_grouping_none_logs_copies_in_two_folds(manifest, caplog):
    copies = _with_copies(manifest, _cross_patient_pairs(manifest, 12))
    with caplog.at_level("WARNING", logger="biomark.data.folds"):
        make_folds(copies, k=5, grouping="none", seed=0)
    assert (
        "exact copies in another fold" in caplog.text and "use cv.grouping: patient" in caplog.text
    )


# --------------------------------------------------------------------------- leave-one-source-out


@pytest.fixture
def multi_source() -> pd.DataFrame:
    """3 sources; COVID-19 from cohen+actualmed, Normal from all three, Pneumonia from
    cohen+kermany."""
    layout = {
        ("cohen", "COVID-19"): 12,
        ("actualmed", "COVID-19"): 6,
        ("cohen", "Normal"): 4,
        ("actualmed", "Normal"): 6,
        ("kermany", "Normal"): 20,
        ("cohen", "Pneumonia"): 5,
        ("kermany", "Pneumonia"): 15,
    }
    rows = []
    for (source, label), count in layout.items():
        for i in range(count):
            rows.append(
                {
                    "image_id": f"{source}-{label}-{i}",
                    "label": label,
                    "source": source,
                    "patient_id": f"{source}-{label}-p{i // 2}",
                    "sha256": f"{len(rows):064x}",
                }
            )
    return pd.DataFrame(rows).sample(frac=1.0, random_state=2).reset_index(drop=True)


def test_leave_one_source_out_folds(multi_source):
    folds = make_folds(multi_source, k=3, grouping="source", seed=0)
    assert folds["image_id"].tolist() == multi_source["image_id"].tolist()
    for fold, source in enumerate(["actualmed", "cohen", "kermany"]):  # sources in name order
        test = folds["fold"].to_numpy() == fold
        assert set(multi_source.loc[test, "source"]) == {source}
        assert (
            multi_source.loc[multi_source["source"] == source].index == np.flatnonzero(test)
        ).all()
        trained_on = set(multi_source.loc[~test, "label"])
        assert set(multi_source.loc[test, "label"]) <= trained_on  # every test class was trained on
    pd.testing.assert_frame_equal(folds, make_folds(multi_source, k=3, grouping="source", seed=9))


def test_leave_one_source_out_validation_split_is_grouped(multi_source):
    folds = make_folds(multi_source, k=3, grouping="source")
    training = multi_source[folds["fold"] != 1].reset_index(drop=True)
    assert "cohen" not in set(training["source"])
    train, val = validation_split(training, 0.25, grouping="source", seed=0)
    assert set(training["patient_id"].iloc[train]).isdisjoint(training["patient_id"].iloc[val])
    assert len(np.intersect1d(train, val)) == 0 and len(train) + len(val) == len(training)


@pytest.mark.parametrize(
    ("edit", "k", "error", "match"),
    [
        (
            None,
            4,
            ConfigError,
            r"cv.k=4: cv.grouping: source makes one test fold per source and the dataset has "
            r"3 \(actualmed, cohen, kermany\); set cv.k: 3",
        ),
        (
            "single",
            3,
            ConfigError,
            r"needs every class in at least two sources, but Edema comes only from kermany\. "
            r".*absent from training.*use cv.grouping: patient",
        ),
        ("one_source", 2, ConfigError, r"every image comes from 'cohen'; use cv.grouping: patient"),
        ("no_source", 3, ManifestError, r"1 image\(s\) have no source"),
    ],
)
def test_leave_one_source_out_errors(multi_source, edit, k, error, match):
    frame = multi_source.copy()
    if edit == "single":
        frame.loc[frame["source"].eq("kermany") & frame["label"].eq("Pneumonia"), "label"] = "Edema"
        frame.loc[frame["source"].eq("cohen") & frame["label"].eq("Pneumonia"), "label"] = (
            "COVID-19"
        )
    elif edit == "one_source":
        frame["source"] = "cohen"
    elif edit == "no_source":
        frame.loc[0, "source"] = ""
    with pytest.raises(error, match=match):
        check_folds(frame, k, "source")
    with pytest.raises(error, match=match):
        make_folds(frame, k=k, grouping="source")


def test_leave_one_source_out_needs_a_source_column(multi_source):
    with pytest.raises(ManifestError, match=r"missing column\(s\) source.*grouping='source'"):
        make_folds(multi_source.drop(columns="source"), k=3, grouping="source")


def test_leave_one_source_out_logs_copies_across_sources(multi_source, caplog):
    cohen = multi_source.index[multi_source["source"] == "cohen"][0]
    kermany = multi_source.index[multi_source["source"] == "kermany"][0]
    multi_source.loc[kermany, "sha256"] = multi_source.loc[cohen, "sha256"]
    with caplog.at_level("WARNING", logger="biomark.data.folds"):
        make_folds(multi_source, k=3, grouping="source")
    assert (
        "1 image(s) have exact copies in another fold" in caplog.text
        and "not unseen" in caplog.text
    )


@pytest.mark.parametrize(
    ("cv", "match"),
    [
        ({"grouping": "source", "k": 3}, None),
        ({"near_duplicate_distance": 4}, None),
        ({"near_duplicate_distance": 257}, r"cv.near_duplicate_distance=257: use -1"),
        ({"near_duplicate_distance": -2}, r"cv.near_duplicate_distance=-2"),
        (
            {"grouping": "hospital"},
            r"cv.grouping='hospital' is not allowed: use one of 'patient', 'source', 'none'",
        ),
    ],
)
def test_cv_settings_validation(cv, match):
    if match is None:
        plan = plan_from_mapping({"cv": cv})
        assert plan.cv.grouping == cv.get("grouping", "patient")
        assert plan.cv.near_duplicate_distance == cv.get("near_duplicate_distance", -1)
    else:
        with pytest.raises(ConfigError, match=match):
            plan_from_mapping({"cv": cv})


def test_built_dataset_copies_listed_in_duplicates_csv_share_a_fold(tmp_path, make_xray, save_png):
    import shutil

    from biomark.data.build import build_dataset
    from biomark.data.dataset import load_dataset

    root = tmp_path / "site"
    for label in ("covid", "normal"):
        for k in range(10):
            save_png(
                root / label / f"{label}{k}.png", make_xray(100 * (label == "normal") + k, (24, 32))
            )
    shutil.copy(
        root / "covid" / "covid0.png", root / "covid" / "copy_of_covid0.png"
    )  # another "patient"
    shutil.copy(
        root / "normal" / "normal3.png", root / "covid" / "mislabelled.png"
    )  # same film, two labels
    build_dataset(
        tmp_path / "ds", sources={"folder": [root]}, image_size=32, near_duplicate_distance=-1
    )
    manifest = load_dataset(tmp_path / "ds").manifest
    pairs = (
        pd.read_csv(tmp_path / "ds" / "duplicates.csv")[["image_id_a", "image_id_b"]]
        .to_numpy()
        .tolist()
    )
    assert sorted(map(sorted, pairs)) == [
        ["site-copy_of_covid0", "site-covid0"],
        ["site-mislabelled", "site-normal3"],
    ]
    for seed in range(5):
        fold = make_folds(manifest, k=3, seed=seed).set_index("image_id")["fold"]
        assert all(fold[a] == fold[b] for a, b in pairs)
