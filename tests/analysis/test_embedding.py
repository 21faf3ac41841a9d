"""UMAP, kNN purity, trustworthiness and linear probes (biomark.analysis.embedding)."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest

from biomark.analysis.embedding import (
    UMAP_EXACT_BELOW,
    embed_strategy,
    knn_purity,
    linear_probe,
    standardise,
    trustworthiness_score,
    umap_embedding,
    umap_input,
    within_fold_probe,
)


def _clusters(rng: np.random.Generator, n_per: int = 40, d: int = 10, spread: float = 6.0):
    labels = np.repeat(np.array(["a", "b", "c"]), n_per)
    centres = rng.standard_normal((3, d)) * spread
    X = centres[np.repeat(np.arange(3), n_per)] + rng.standard_normal((3 * n_per, d))
    folds = np.tile(np.arange(3), n_per)
    return X, labels, folds


def test_knn_purity_known_answers():
    rng = np.random.default_rng(0)
    X, labels, _ = _clusters(rng)
    assert knn_purity(X, labels, k=5) == pytest.approx(1.0)
    noise = rng.standard_normal((300, 5))
    shuffled = rng.choice(["a", "b", "c"], size=300)
    assert knn_purity(noise, shuffled, k=10) == pytest.approx(1 / 3, abs=0.06)
    # a point is not its own neighbour: two far-apart pairs with different labels
    pairs = np.array([[0.0], [0.1], [10.0], [10.1]])
    assert knn_purity(pairs, np.array([0, 1, 0, 1]), k=1) == 0.0


def test_standardise_drops_constant_columns():
    X = np.column_stack([np.arange(5.0), np.full(5, 3.0), 2 * np.arange(5.0)])
    Z = standardise(X)
    assert Z.shape == (5, 2)
    np.testing.assert_allclose(Z.mean(axis=0), 0, atol=1e-12)
    np.testing.assert_allclose(Z.std(axis=0), 1)


def test_linear_probe_separable_and_random():
    rng = np.random.default_rng(1)
    X, labels, folds = _clusters(rng)
    np.testing.assert_allclose(linear_probe(X, labels, folds), 1.0)
    assert within_fold_probe(X, labels, folds).min() >= 0.9
    noise = rng.standard_normal(X.shape)
    assert np.mean(linear_probe(noise, labels, folds)) < 0.6


def test_umap_is_seeded_and_tensorflow_free():
    rng = np.random.default_rng(2)
    X, labels, folds = _clusters(rng, n_per=30)
    had_tf = "tensorflow" in sys.modules
    a = umap_embedding(X, n_neighbors=10, random_state=3)
    b = umap_embedding(X, n_neighbors=10, random_state=3)
    assert a.shape == (90, 2)
    np.testing.assert_array_equal(a, b)
    assert ("tensorflow" in sys.modules) == had_tf
    assert trustworthiness_score(X, a, k=5) > 0.8
    assert knn_purity(a, labels, k=5) > 0.9


@pytest.mark.filterwarnings("ignore:using precomputed metric:UserWarning")
def test_umap_reads_a_small_sample_from_its_distance_matrix_as_from_the_features():
    """The BLAS distance matrix ("precomputed") gives umap the same neighbour graph as its own
    Euclidean metric on the features; a large sample keeps the features."""
    from biomark.analysis.embedding import _import_umap

    umap = _import_umap()  # without TensorFlow
    X, _, _ = _clusters(np.random.default_rng(5), n_per=30)
    Z = standardise(X)
    data, metric = umap_input(Z)
    assert metric == "precomputed" and data.shape == (90, 90)
    own = umap.UMAP(n_neighbors=10, random_state=1, n_jobs=1).fit(Z).graph_
    ours = umap.UMAP(n_neighbors=10, random_state=1, n_jobs=1, metric=metric).fit(data).graph_
    # the same edges; their weights equal up to the distances' rounding (about 2e-6)
    assert (own != 0).toarray().tolist() == (ours != 0).toarray().tolist()
    assert np.allclose(own.toarray(), ours.toarray(), atol=1e-5)
    big = np.zeros((UMAP_EXACT_BELOW, 2))
    assert umap_input(big)[1] == "euclidean" and umap_input(big)[0] is big


def test_embed_strategy_without_umap():
    rng = np.random.default_rng(4)
    X, labels, folds = _clusters(rng, n_per=20)
    result = embed_strategy(X, labels, folds, k=5, umap=False)
    assert result.coords is None
    assert np.isnan(result.trustworthiness) and np.isnan(result.class_purity_embedding)
    assert result.class_purity_features == pytest.approx(1.0)
    assert result.fold_purity_chance == pytest.approx(1 / 3)
    assert result.probe_accuracy.shape == (3,)


def test_umaps_compiled_code_is_kept_for_the_next_process():
    """umap-learn compiles its numba functions without ``cache=True``; biomark keeps them on
    disk."""
    from numba.core.caching import FunctionCache
    from numba.core.registry import CPUDispatcher

    rng = np.random.default_rng(5)
    X, _, _ = _clusters(rng, n_per=10)
    umap_embedding(X, n_neighbors=5, random_state=0)
    import umap.layouts

    compiled = [
        f
        for f in vars(umap.layouts).values()
        if isinstance(f, CPUDispatcher)
        and f.py_func.__module__ == "umap.layouts"
        and f.signatures  # compiled by this embedding (or an earlier one)
    ]
    assert compiled, "the embedding ran numba code of umap.layouts"
    for function in compiled:
        assert isinstance(function._cache, FunctionCache), function.py_func.__name__
        index = Path(function.stats.cache_path).glob(f"*{function.py_func.__name__}*.nbi")
        assert any(index), f"no cache index for {function.py_func.__name__}"
