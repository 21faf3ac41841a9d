"""The feature-table schema of biomark.features.deep: write, load, round trip, errors."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from biomark.exceptions import RunError
from biomark.features.deep import (
    META_COLUMNS,
    feature_columns,
    fold_dir,
    list_folds,
    load_block_features,
    load_features,
    strategy_dir,
    write_block_features,
    write_features,
)

CLASSES = ("COVID-19", "Normal")


def meta_for(fold: int, n: int, strategy: str = "finetune:3") -> pd.DataFrame:
    ids = [f"f{fold}_img{i}" for i in range(n)]
    return pd.DataFrame(
        {
            "image_id": ids,
            "label": [CLASSES[i % 2] for i in range(n)],
            "patient_id": [f"p{fold}_{i // 2}" for i in range(n)],
            "source": "site_A",
            "fold": fold,
            "strategy": strategy,
            "pred": [CLASSES[(i + 1) % 2] for i in range(n)],
        }
    )


@pytest.fixture
def run_dir(tmp_path: Path) -> Path:
    rng = np.random.default_rng(0)
    for fold, n in ((0, 3), (1, 4)):
        features = rng.normal(size=(n, 6)).astype(np.float32) + fold
        probs = np.tile([0.25, 0.75], (n, 1))
        path = fold_dir(tmp_path, "finetune:3", fold) / "features.parquet"
        write_features(path, meta_for(fold, n), features, probs, CLASSES)
    return tmp_path


def test_names_and_folders(tmp_path: Path) -> None:
    assert feature_columns(3) == ["f0000", "f0001", "f0002"]
    assert feature_columns(1280)[-1] == "f1279"
    assert (
        strategy_dir(tmp_path, "finetune:3")
        == strategy_dir(tmp_path, "finetune_3")
        == tmp_path / "finetune_3"
    )
    assert fold_dir(tmp_path, "scratch", 7) == tmp_path / "scratch" / "fold_07"


def test_written_table_has_meta_then_probabilities_then_features(run_dir: Path) -> None:
    frame = pd.read_parquet(fold_dir(run_dir, "finetune_3", 1) / "features.parquet")
    expected = [*META_COLUMNS, "prob_COVID-19", "prob_Normal", *feature_columns(6)]
    assert list(frame.columns) == expected
    assert frame[feature_columns(6)].dtypes.unique().tolist() == [np.float32]


def test_round_trip_of_one_fold_and_of_all_folds(run_dir: Path) -> None:
    meta, X = load_features(run_dir, "finetune:3", 1)
    pd.testing.assert_frame_equal(meta[list(META_COLUMNS)], meta_for(1, 4), check_dtype=False)
    assert X.shape == (4, 6) and X.dtype == np.float32
    assert meta["prob_Normal"].tolist() == [0.75] * 4
    meta_all, X_all = load_features(run_dir, "finetune_3")
    assert meta_all["fold"].tolist() == [0, 0, 0, 1, 1, 1, 1]  # concatenated in fold order
    np.testing.assert_array_equal(X_all[3:], X)
    assert list_folds(run_dir, "finetune:3") == [0, 1]


def test_extra_columns_are_kept_as_metadata(tmp_path: Path) -> None:
    meta = meta_for(0, 2).assign(in_test_fold=[True, False])
    path = fold_dir(tmp_path, "scratch", 0) / "features_all.parquet"
    write_features(path, meta, np.ones((2, 3)))
    loaded, X = load_features(tmp_path, "scratch", 0, kind="all")
    assert loaded["in_test_fold"].tolist() == [True, False]
    assert X.shape == (2, 3)


def test_write_rejects_bad_inputs(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="lacks column"):
        write_features(tmp_path / "x.parquet", meta_for(0, 2).drop(columns="pred"), np.ones((2, 3)))
    with pytest.raises(ValueError, match="do not match"):
        write_features(tmp_path / "x.parquet", meta_for(0, 2), np.ones((3, 3)))
    assert not list(tmp_path.iterdir())  # nothing half-written


def test_missing_strategy_or_fold_is_a_run_error(run_dir: Path) -> None:
    with pytest.raises(RunError, match="no features.parquet found for strategy 'scratch'"):
        load_features(run_dir, "scratch")
    with pytest.raises(RunError, match=r"fold 5 of strategy.*finished folds: \[0, 1\]"):
        load_features(run_dir, "finetune:3", 5)
    with pytest.raises(RunError, match="dump: \\{features: all\\}"):
        load_features(run_dir, "finetune:3", kind="all")


def test_a_table_not_written_by_extract_or_folds_of_other_widths_are_run_errors(
    run_dir: Path,
) -> None:
    """Feature columns must be f0000 ... in order, and every fold of a strategy as wide as the
    others."""
    path = fold_dir(run_dir, "finetune:3", 1) / "features.parquet"
    frame = pd.read_parquet(path)
    frame.drop(columns=["f0002"]).to_parquet(path)
    with pytest.raises(
        RunError,
        match=(
            r"fold_01/features.parquet: the feature columns .* fold 1 are not f0000 .*missing f0002"
        ),
    ):
        load_features(run_dir, "finetune:3", 1)
    frame.drop(columns=["f0005"]).to_parquet(path)  # valid, but one feature fewer than fold 0
    assert load_features(run_dir, "finetune:3", 1)[1].shape == (4, 5)
    with pytest.raises(RunError, match=r"different numbers of features \(fold 0: 6, fold 1: 5\)"):
        load_features(run_dir, "finetune:3")


def test_block_features_round_trip(tmp_path: Path) -> None:
    blocks = {"block_1": np.arange(6.0).reshape(3, 2), "Conv_1": np.ones((3, 4))}
    write_block_features(fold_dir(tmp_path, "frozen", 2) / "blocks.npz", ["a", "b", "c"], blocks)
    ids, loaded = load_block_features(tmp_path, "frozen", 2)
    assert ids.tolist() == ["a", "b", "c"]
    assert list(loaded) == ["block_1", "Conv_1"]  # network order kept
    np.testing.assert_array_equal(loaded["block_1"], blocks["block_1"])
    assert loaded["Conv_1"].dtype == np.float32
    with pytest.raises(RunError, match="blocks: true"):
        load_block_features(tmp_path, "frozen", 0)
