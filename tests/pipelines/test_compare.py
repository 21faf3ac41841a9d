"""``biomark compare`` end to end on synthetic run folders (biomark.pipelines.compare)."""

from __future__ import annotations

import json
import re
import shutil

import numpy as np
import pandas as pd
import pytest

from biomark.analysis.compare import CSV_COLUMNS, write_compare_csv
from biomark.config import CompareSettings
from biomark.exceptions import BiomarkError, ConfigError, RunError
from biomark.features.deep import fold_dir, load_features, write_features
from biomark.pipelines.compare import compare_strategies, open_run, resolve_strategy

FAST = CompareSettings(n_permutations=30, n_bootstrap=30, knn_k=5, umap_neighbors=10)


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory, make_feature_run):
    return make_feature_run(tmp_path_factory.mktemp("runs") / "demo", blocks=True)


@pytest.fixture(scope="module")
def rotated(run_dir):
    """scratch vs frozen (frozen = rotated, scaled, shifted scratch + small noise), with UMAP."""
    return compare_strategies(run_dir, "scratch", "frozen", FAST, umap=True)


@pytest.fixture(scope="module")
def independent(run_dir):
    return compare_strategies(run_dir, "scratch", "finetune_3", FAST, umap=False)


def test_planted_rotation_is_found(rotated):
    sim = rotated.headline
    assert sim.folds == (0, 1, 2)
    assert sim.values.shape == (3,) and (sim.values > 0.99).all()
    assert sim.p_value == pytest.approx(1 / 31)
    assert sim.mean_ci[0] > 0.99
    assert set(rotated.cka) == {"linear_cka_debiased", "linear_cka_biased", "rbf_cka_debiased"}
    assert rotated.n_images == 180 and rotated.dims == {"scratch": 32, "frozen": 32}


def test_independent_strategy_is_not_similar(independent):
    sim = independent.headline
    assert abs(sim.mean) < 0.15
    assert sim.p_value > 0.01
    assert sim.mean_ci[0] <= 0 <= sim.mean_ci[1] or abs(sim.mean) < 0.05
    # the biased estimator is visibly above the debiased one for unrelated data
    assert independent.cka["linear_cka_biased"].mean > sim.mean + 0.05


def test_rows_are_aligned_by_image_id(run_dir, rotated):
    """Strategies list a fold's images in different orders; compare pairs them by id."""
    meta_a, _ = load_features(run_dir, "scratch", 0)
    meta_b, _ = load_features(run_dir, "frozen", 0)
    assert list(meta_a["image_id"]) != list(meta_b["image_id"])
    assert rotated.headline.values[0] > 0.99


def test_per_class_and_layerwise(rotated):
    assert set(rotated.per_class) == {"covid", "normal", "pneumonia"}
    assert all(s.mean > 0.95 for s in rotated.per_class.values())
    lw = rotated.layerwise
    assert lw is not None and lw.blocks_a == ("block_1", "block_2", "Conv_1")
    assert lw.matrix.shape == (3, 3) and lw.matrix[2, 2] > 0.99
    assert lw.folds == (0, 1, 2)


def test_embedding_numbers(rotated, independent):
    emb = rotated.embedding["scratch"]
    assert emb.coords is not None and emb.coords.shape == (180, 2)
    assert emb.class_purity_features > 0.8  # planted class signal
    assert 0.0 <= emb.trustworthiness <= 1.0
    assert np.nanmean(emb.probe_accuracy) > 0.8
    assert independent.embedding["finetune:3"].coords is None
    assert np.nanmean(independent.embedding["finetune:3"].probe_accuracy) < 0.6


def test_tidy_csv(rotated, tmp_path):
    path = write_compare_csv(rotated, tmp_path / "out.csv")
    frame = pd.read_csv(path)
    assert tuple(frame.columns) == CSV_COLUMNS
    head = frame[
        (frame.metric == "linear_cka_debiased")
        & (frame.fold == "all")
        & (frame.statistic == "mean")
        & frame["class"].isna()
    ]
    assert (
        len(head) == 1
        and head.value.iloc[0] > 0.99
        and head.p_value.iloc[0] == pytest.approx(1 / 31)
    )
    assert {
        "knn_class_purity_features",
        "trustworthiness_umap",
        "probe_accuracy_leave_fold_out",
    } <= set(frame.metric)
    assert frame.metric.str.startswith("layerwise_cka_debiased:").sum() == 9


def test_read_run_and_resolve(run_dir):
    run, info = open_run(run_dir)
    assert run.strategies_found(info) == ("scratch", "frozen", "finetune:3")
    assert info.k == 3 and run.expected_folds(info) == (0, 1, 2)
    assert info.compare_settings().n_permutations == 20
    assert resolve_strategy(run, info, "finetune_3") == "finetune:3"


def test_unknown_strategy_lists_those_present(run_dir):
    with pytest.raises(
        RunError,
        match=r"'finetune:11' is not in run .*strategies there: scratch, frozen, finetune:3",
    ):
        compare_strategies(run_dir, "scratch", "finetune:11", FAST, umap=False)
    with pytest.raises(RunError, match="unknown strategy 'imagenet'.*scratch, frozen"):
        compare_strategies(run_dir, "scratch", "imagenet", FAST, umap=False)


def test_same_strategy_twice(run_dir):
    with pytest.raises(RunError, match="both 'scratch'"):
        compare_strategies(run_dir, "scratch", "scratch", FAST, umap=False)


def _copy(run_dir, tmp_path):
    return shutil.copytree(run_dir, tmp_path / run_dir.name)


def test_missing_fold_named(run_dir, tmp_path):
    run = _copy(run_dir, tmp_path)
    shutil.rmtree(fold_dir(run, "frozen", 2))
    with pytest.raises(
        RunError,
        match=(
            r"'frozen' has features for folds \[0, 1\].*k=3.*missing fold\(s\) \[2\].*biomark "
            r"extract"
        ),
    ):
        compare_strategies(run, "scratch", "frozen", FAST, umap=False)


def test_missing_fold_without_folds_csv(run_dir, tmp_path):
    run = _copy(run_dir, tmp_path)
    (run / "folds.csv").unlink()
    shutil.rmtree(fold_dir(run, "scratch", 0))
    with pytest.raises(RunError, match=r"'scratch'.*missing fold\(s\) \[0\]"):
        compare_strategies(run, "scratch", "frozen", FAST, umap=False)


def _rewrite(run, strategy, fold, edit):
    path = fold_dir(run, strategy, fold) / "features.parquet"
    meta, X = load_features(run, strategy, fold)
    meta, X = edit(meta, X)
    probs = meta[[c for c in meta.columns if c.startswith("prob_")]].to_numpy()
    classes = [c[5:] for c in meta.columns if c.startswith("prob_")]
    write_features(path, meta.drop(columns=[f"prob_{c}" for c in classes]), X, probs, classes)


def test_mismatched_image_ids(run_dir, tmp_path):
    run = _copy(run_dir, tmp_path)

    def drop_two(meta, X):
        return meta.iloc[2:].reset_index(drop=True), X[2:]

    _rewrite(run, "frozen", 1, drop_two)
    with pytest.raises(
        RunError,
        match=r"fold 1 has different test images for 'scratch' \(60 images\) and "
        r"'frozen' \(58 images\): 2 only in 'scratch'",
    ):
        compare_strategies(run, "scratch", "frozen", FAST, umap=False)


def test_nan_features_named(run_dir, tmp_path):
    run = _copy(run_dir, tmp_path)

    def poison(meta, X):
        X = X.copy()
        X[3, :2] = np.nan
        X[5, 0] = np.inf
        return meta, X

    _rewrite(run, "frozen", 2, poison)
    with pytest.raises(
        RunError, match=r"'frozen' fold 2: 3 NaN/Inf feature value\(s\) in 2 image\(s\)"
    ):
        compare_strategies(run, "scratch", "frozen", FAST, umap=False)


def test_folds_of_different_widths_named(run_dir, tmp_path):
    run = _copy(run_dir, tmp_path)
    _rewrite(run, "scratch", 1, lambda meta, X: (meta, X[:, :-1]))
    with pytest.raises(
        RunError,
        match=r"features.parquet of strategy 'scratch' hold different numbers of features "
        r"\(fold 0: (\d+), fold 1: (?!\1)\d+, fold 2: \1\)",
    ):
        compare_strategies(run, "scratch", "frozen", FAST, umap=False)


def test_bad_settings_and_missing_run(tmp_path, run_dir):
    with pytest.raises(ConfigError, match="n_permutations=-1"):
        compare_strategies(
            run_dir, "scratch", "frozen", CompareSettings(n_permutations=-1), umap=False
        )
    with pytest.raises(RunError, match="run folder not found"):
        compare_strategies(tmp_path / "nope", "scratch", "frozen")


def test_errors_are_biomark_errors():
    assert issubclass(RunError, BiomarkError)


def test_run_json_compare_section_is_validated(run_dir, tmp_path):
    run = _copy(run_dir, tmp_path)
    info = json.loads((run / "run.json").read_text())
    info["plan"]["compare"] = {"n_permutation": 5}
    (run / "run.json").write_text(json.dumps(info))
    with pytest.raises(ConfigError, match="run.json.*unknown setting.*compare.n_permutation"):
        compare_strategies(run, "scratch", "frozen", umap=False)


def _retrain_per_fold(
    run_dir, strategy: str, *, all_images: bool, seed: int = 1, noise: float = 0.05
) -> None:
    """Make each fold of ``strategy`` a network of its own: the same units in a fold-specific
    order (a planted permutation) plus noise (``noise`` times a standard normal); with
    ``all_images``, each fold's model also embeds every image (``features_all.parquet``)."""
    from biomark.features.run_folder import RunFolder

    run = RunFolder(run_dir)
    rng = np.random.default_rng(seed)
    meta_all, X_all = run.features(strategy)  # every image once, in fold order
    d = X_all.shape[1]
    for f in run.folds_with(strategy, "features.parquet"):
        perm = np.arange(d) if f == 0 else rng.permutation(d)
        meta, X = run.features(strategy, f)
        noisy = X[:, perm] + noise * rng.standard_normal(X.shape)
        write_features(fold_dir(run_dir, strategy, f) / "features.parquet", meta, noisy)
        if all_images:  # the meta keeps its probability columns
            everyone = X_all[:, perm] + noise * rng.standard_normal(X_all.shape)
            write_features(
                fold_dir(run_dir, strategy, f) / "features_all.parquet", meta_all, everyone
            )


@pytest.mark.parametrize("all_images", [True, False])
def test_units_of_folds_with_their_own_networks_are_matched_before_the_probes(
    make_feature_run, tmp_path, all_images
):
    run_dir = make_feature_run(tmp_path / "demo", strategies=("scratch", "frozen"))
    _retrain_per_fold(run_dir, "scratch", all_images=all_images)
    result = compare_strategies(run_dir, "scratch", "frozen", FAST, umap=False)
    lofo = float(np.mean(result.embedding["scratch"].probe_accuracy))
    how = result.unit_matching["scratch"]
    if all_images:
        # matched back to fold 0's order: the other folds' probe reads the same units again
        assert "matched one to one to fold 0's" in how and "100 % of its units found" in how
        assert "Most matches are weak" not in how
        assert lofo > 0.9
    else:
        # nothing to match on: said, and the pooled units carry no class across folds
        assert "no features_all.parquet in every fold" in how and "unrelated units" in how
        assert lofo < 0.6
    within = float(np.mean(result.embedding["scratch"].within_fold_accuracy))
    assert within > 0.9  # inside one network the class is there either way
    # CKA is read within each fold, where a permutation of units changes nothing
    cka = result.cka["linear_cka_debiased"].values
    plain = compare_strategies(make_feature_run(tmp_path / "plain"), "scratch", "frozen", FAST)
    assert np.allclose(cka, plain.cka["linear_cka_debiased"].values, atol=0.05)
    # frozen is a random-features control here (no pretrained weights): each fold estimated its
    # random backbone's BatchNormalization statistics on its own images, and it dumped no
    # features_all.parquet, so the page says its units could not be matched
    assert "could not be matched" in result.unit_matching["frozen"]
    assert "took its BatchNormalization statistics" in result.unit_matching["frozen"]


def test_weak_matches_are_used_and_said_to_be_weak(make_feature_run, tmp_path):
    """Folds whose units are mostly weak copies of each other: the match is still used (it beats
    pairing unit j with unit j), and the page says most matches are weak."""
    probes = {}
    for all_images in (True, False):
        run_dir = make_feature_run(tmp_path / f"all_{all_images}", strategies=("scratch", "frozen"))
        _retrain_per_fold(run_dir, "scratch", all_images=all_images, noise=2.0)
        result = compare_strategies(run_dir, "scratch", "frozen", FAST, umap=False)
        probes[all_images] = float(np.mean(result.embedding["scratch"].probe_accuracy))
        if all_images:
            how = result.unit_matching["scratch"]
    share = int(re.search(r"(\d+) % of its units found a counterpart at r >= 0.5", how)[1])
    assert share < 50 and "Most matches are weak" in how and "median matched r" in how
    assert "read every fold in those units" in how
    # the last run dumped no features_all.parquet: nothing to match on, said so
    assert "could not be matched" in result.unit_matching["scratch"]
    assert probes[True] > probes[False] + 0.1


def test_a_strategy_in_several_pairs_is_matched_once(make_feature_run, tmp_path, monkeypatch):
    """``compare --all`` puts a strategy into every pair it is in; its units are matched once and
    the pairs read the same match."""
    from collections import OrderedDict

    import biomark.analysis.alignment as alignment
    import biomark.pipelines.compare as compare_pipeline

    monkeypatch.setattr(compare_pipeline, "_ALIGNMENTS", OrderedDict())  # none from other tests
    calls = []
    real = alignment.align_folds

    def counting(reference, **kwargs):
        calls.append(sorted(reference))
        return real(reference, **kwargs)

    monkeypatch.setattr(alignment, "align_folds", counting)
    run_dir = make_feature_run(tmp_path / "demo", strategies=("scratch", "frozen"))
    _retrain_per_fold(run_dir, "scratch", all_images=True)
    first = compare_strategies(run_dir, "scratch", "frozen", FAST, umap=False)
    second = compare_strategies(run_dir, "frozen", "scratch", FAST, umap=False)
    assert len(calls) == 1
    assert first.unit_matching["scratch"] == second.unit_matching["scratch"]
    # other activations are matched afresh
    _retrain_per_fold(run_dir, "scratch", all_images=True, seed=2)
    compare_strategies(run_dir, "scratch", "frozen", FAST, umap=False)
    assert len(calls) == 2
