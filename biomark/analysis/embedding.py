"""UMAP maps of one strategy's features, with numbers that say what the map shows.

* :func:`umap_embedding` -- a seeded 2-D UMAP (umap-learn is imported inside,
  it is slow to import).
* :func:`knn_purity` -- fraction of each image's k nearest neighbours that
  share its label (class, or fold: how much the map is organised by the fold's
  model rather than by the image).
* :func:`trustworthiness_score` -- scikit-learn's trustworthiness of the map.
* :func:`linear_probe` -- logistic regression on standardised features,
  cross-validated on the run's own folds.
* :func:`embed_strategy` -- all of the above for one strategy.

Out-of-fold features of different folds come from *different* models. For a
strategy whose feature basis differs between fold models (training from
scratch above all), a probe trained on some folds and tested on another also
measures how consistent the representation is across models; the
within-fold probe (:func:`within_fold_probe`) uses one model's features only.
"""

from __future__ import annotations

import hashlib
import logging
import sys
import warnings
from collections import OrderedDict
from dataclasses import dataclass

import numpy as np

__all__ = [
    "EmbeddingResult",
    "embed_strategy",
    "embedding_key",
    "knn_purity",
    "load_umap",
    "linear_probe",
    "standardise",
    "trustworthiness_score",
    "umap_embedding",
    "umap_input",
    "within_fold_probe",
]

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class EmbeddingResult:
    """The UMAP map and map-quality numbers of one strategy.

    Attributes
    ----------
    coords : ndarray of shape (n_images, 2) or None
        UMAP coordinates (None when UMAP was skipped).
    class_purity_features, class_purity_embedding : float
        kNN class purity in the standardised feature space / in the map
        (NaN for the map when skipped).
    fold_purity_features : float
        kNN purity of the *fold* label in feature space (chance level is
        ``fold_purity_chance``).
    fold_purity_chance : float
        Expected fold purity if neighbours ignored folds: sum of squared fold shares.
    class_purity_chance : float
        Same for classes.
    trustworthiness : float
        Of the map, NaN when skipped.
    probe_accuracy : ndarray of shape (n_folds,)
        Leave-one-fold-out logistic-regression accuracy per test fold.
    within_fold_accuracy : ndarray of shape (n_folds,)
        Cross-validated accuracy inside each fold (one model's features).
    k : int
        Neighbours used.
    """

    coords: np.ndarray | None
    class_purity_features: float
    class_purity_embedding: float
    fold_purity_features: float
    fold_purity_chance: float
    class_purity_chance: float
    trustworthiness: float
    probe_accuracy: np.ndarray
    within_fold_accuracy: np.ndarray
    k: int


def standardise(X: np.ndarray) -> np.ndarray:
    """Z-score columns; constant columns are dropped.

    Parameters
    ----------
    X : ndarray of shape (n, d)

    Returns
    -------
    ndarray of shape (n, d_kept), float64

    Examples
    --------
    >>> X = np.array([[1.0, 5.0, 10.0], [3.0, 5.0, 20.0], [5.0, 5.0, 30.0]])
    >>> Z = standardise(X)
    >>> Z.shape  # the constant middle column is dropped
    (3, 2)
    >>> Z[:, 0].round(3).tolist()
    [-1.225, 0.0, 1.225]
    """
    X = np.asarray(X, dtype=np.float64)
    std = X.std(axis=0)
    keep = std > 0
    return (X[:, keep] - X[:, keep].mean(axis=0)) / std[keep]


def _import_umap():
    """Import umap-learn without letting it import TensorFlow, its compiled code kept on disk.

    umap-learn's ``__init__`` tries to import TensorFlow for ParametricUMAP,
    which we do not use; where TensorFlow is installed that costs seconds and
    breaks the rule that analysis code does not load it. While importing, the
    name is mapped to None (an ImportError for umap, which it handles), then
    restored.
    """
    if "umap" not in sys.modules and "tensorflow" not in sys.modules:
        sys.modules["tensorflow"] = None
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                import umap
        finally:
            if sys.modules.get("tensorflow", 0) is None:
                del sys.modules["tensorflow"]
    import umap

    _cache_compiled_code(("umap", "pynndescent"))
    return umap


def load_umap() -> None:
    """Import umap-learn here, its compiled code from numba's cache (compiled first where none is).

    In a fresh environment the import compiles pynndescent's functions (about
    12 s on a 2-core AMD EPYC) and the first map umap-learn's; a process that
    will draw maps can start this early, beside other work.
    """
    _import_umap()


def _cache_compiled_code(packages: tuple[str, ...]) -> None:
    """Keep the machine code numba compiles for these packages on disk, for the next process.

    Written by hand because neither library offers it: most of umap-learn's and some of
    pynndescent's numba functions are declared without ``cache=True``, so every process
    compiled them again on its first UMAP, about 17 s on a 2-core AVX2 machine (0.2 s from
    the cache; the embedding is bit-identical). The cache lives where numba puts it, next to
    the package in ``__pycache__`` or in ``NUMBA_CACHE_DIR``; where neither can be written,
    the functions stay as they were.
    """
    from numba.core.caching import NullCache
    from numba.core.registry import CPUDispatcher

    for name, module in list(sys.modules.items()):
        if module is None or name.split(".")[0] not in packages:
            continue
        for function in list(vars(module).values()):
            cache = getattr(function, "_cache", None)  # numba's own attribute, not in its stubs
            if isinstance(function, CPUDispatcher) and isinstance(cache, NullCache):
                try:
                    function.enable_caching()
                except RuntimeError as err:  # no writable cache location
                    logger.debug("numba cache not kept for %s: %s", name, err)
                    return


#: umap-learn's own limit: below it, a sample's neighbours are exact (every pairwise distance);
#: from it, approximate (NN-descent).
UMAP_EXACT_BELOW = 4096


def umap_input(Z: np.ndarray) -> tuple[np.ndarray, str]:
    """What to hand UMAP for a Euclidean map of ``Z``: ``(data, metric)``.

    umap-learn finds a small sample's neighbours (below :data:`UMAP_EXACT_BELOW`
    points) from every pairwise distance, computed by scikit-learn's
    ``pairwise_distances`` on umap's numba metric: a Python call per pair, 2-5 s
    for the demo's 2,100 images. The same Euclidean matrix from BLAS takes a
    tenth of a second and goes down the same exact path as ``"precomputed"``.
    Larger samples keep umap's approximate neighbours on the features.

    Examples
    --------
    >>> data, metric = umap_input(np.random.default_rng(0).standard_normal((50, 8)))
    >>> data.shape, metric  # a small sample: its full distance matrix
    ((50, 50), 'precomputed')
    """
    if Z.shape[0] >= UMAP_EXACT_BELOW:
        return Z, "euclidean"
    from sklearn.metrics import pairwise_distances

    return pairwise_distances(Z, metric="euclidean"), "precomputed"


def umap_embedding(
    X: np.ndarray, *, n_neighbors: int = 15, min_dist: float = 0.1, random_state: int = 0
) -> np.ndarray:
    """Seeded 2-D UMAP of standardised features.

    Parameters
    ----------
    X : ndarray of shape (n, d)
    n_neighbors : int, default 15
        Clipped to n - 1 for small samples.
    min_dist : float, default 0.1
    random_state : int, default 0
        Seed (UMAP then runs single-threaded and reproducibly).

    Returns
    -------
    ndarray of shape (n, 2), float32
    """
    umap = _import_umap()
    Z = standardise(X)
    n_neighbors = max(2, min(n_neighbors, Z.shape[0] - 1))
    data, metric = umap_input(Z)
    reducer = umap.UMAP(
        n_components=2,
        n_neighbors=n_neighbors,
        min_dist=min_dist,
        metric=metric,
        random_state=random_state,
        n_jobs=1,
    )
    with warnings.catch_warnings():
        # spectral-init / n_jobs notices on tiny inputs; no inverse_transform when precomputed
        warnings.simplefilter("ignore")
        return np.asarray(reducer.fit_transform(data), dtype=np.float32)


def knn_purity(X: np.ndarray, labels: np.ndarray, k: int = 10) -> float:
    """Mean fraction of each point's k nearest neighbours sharing its label.

    Parameters
    ----------
    X : ndarray of shape (n, d)
        Points (Euclidean distance); the point itself is not its own neighbour.
    labels : array-like of shape (n,)
    k : int, default 10
        Clipped to n - 1.

    Returns
    -------
    float in [0, 1]

    Examples
    --------
    Two well-separated classes; the folds are dealt out regardless of them:

    >>> rng = np.random.default_rng(0)
    >>> X = np.vstack([rng.normal(0, 1, (30, 5)), rng.normal(5, 1, (30, 5))])
    >>> labels = np.repeat(["a", "b"], 30)
    >>> folds = np.tile([0, 1, 2], 20)
    >>> knn_purity(X, labels, k=5)
    1.0
    >>> round(knn_purity(X, folds, k=5), 2)  # near the chance level of 1/3
    0.31
    """
    from sklearn.neighbors import NearestNeighbors

    labels = np.asarray(labels)
    k = max(1, min(k, X.shape[0] - 1))
    nn = NearestNeighbors(n_neighbors=k + 1).fit(X)
    _, idx = nn.kneighbors(X)
    neighbours = idx[:, 1:]
    return float((labels[neighbours] == labels[:, None]).mean())


def _chance(labels: np.ndarray) -> float:
    _, counts = np.unique(labels, return_counts=True)
    share = counts / counts.sum()
    return float((share**2).sum())


def trustworthiness_score(X: np.ndarray, embedding: np.ndarray, k: int = 10) -> float:
    """scikit-learn's trustworthiness of ``embedding`` w.r.t. ``X`` (k clipped to n/2 - 1).

    Examples
    --------
    >>> rng = np.random.default_rng(0)
    >>> X = rng.standard_normal((60, 5))
    >>> Q, _ = np.linalg.qr(rng.standard_normal((5, 5)))
    >>> trustworthiness_score(X, 3 * X @ Q)  # a rotated, scaled copy keeps every neighbour
    1.0
    >>> bool(trustworthiness_score(X, rng.standard_normal((60, 2))) < 0.6)  # a random map
    True
    """
    from sklearn.manifold import trustworthiness

    k = max(1, min(k, X.shape[0] // 2 - 1))
    return float(trustworthiness(X, embedding, n_neighbors=k))


def _probe_model(random_state: int):
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    return make_pipeline(
        StandardScaler(), LogisticRegression(max_iter=2000, random_state=random_state)
    )


def _one_blas_thread():
    """A context in which NumPy's BLAS runs on one thread.

    The probes' L-BFGS fits are sequences of small matrix-vector products
    on ~1,000 x 1,280 blocks, where OpenBLAS's thread hand-offs cost more
    than they gain: on 2 cores the 15 within-fold fits of the demo's scratch
    features took 25.7 s with two BLAS threads and 3.4 s with one
    (LOFO probe: 5.6 s vs 1.2 s). threadpoolctl (a scikit-learn dependency)
    sets the limit for the block only.
    """
    from threadpoolctl import threadpool_limits

    return threadpool_limits(limits=1, user_api="blas")


def linear_probe(
    X: np.ndarray, y: np.ndarray, folds: np.ndarray, *, random_state: int = 0
) -> np.ndarray:
    """Logistic-regression accuracy, leave-one-fold-out on the run's folds.

    Parameters
    ----------
    X : ndarray of shape (n, d)
    y : array-like of shape (n,)
        Class labels.
    folds : array-like of shape (n,)
        The run's fold of each image.
    random_state : int, default 0

    Returns
    -------
    ndarray of shape (n_folds,)
        Accuracy on each fold (sorted fold order); NaN for a fold whose
        training part has a single class.

    Examples
    --------
    >>> rng = np.random.default_rng(0)
    >>> X = np.vstack([rng.normal(0, 1, (30, 5)), rng.normal(5, 1, (30, 5))])
    >>> y = np.repeat(["a", "b"], 30)
    >>> linear_probe(X, y, folds=np.tile([0, 1, 2], 20)).tolist()
    [1.0, 1.0, 1.0]
    """
    y, folds = np.asarray(y), np.asarray(folds)
    scores = []
    for f in np.unique(folds):
        test = folds == f
        if len(np.unique(y[~test])) < 2:
            scores.append(np.nan)
            continue
        with _one_blas_thread():
            model = _probe_model(random_state).fit(X[~test], y[~test])
        scores.append(float((model.predict(X[test]) == y[test]).mean()))
    return np.array(scores)


def within_fold_probe(
    X: np.ndarray, y: np.ndarray, folds: np.ndarray, *, n_splits: int = 5, random_state: int = 0
) -> np.ndarray:
    """Stratified cross-validated probe accuracy *inside* each fold.

    Returns
    -------
    ndarray of shape (n_folds,)
        NaN for a fold with a class of fewer than 2 images.

    Examples
    --------
    >>> rng = np.random.default_rng(0)
    >>> X = np.vstack([rng.normal(0, 1, (30, 5)), rng.normal(5, 1, (30, 5))])
    >>> y = np.repeat(["a", "b"], 30)
    >>> within_fold_probe(X, y, folds=np.tile([0, 1, 2], 20)).tolist()
    [1.0, 1.0, 1.0]
    """
    from sklearn.model_selection import StratifiedKFold, cross_val_score

    y, folds = np.asarray(y), np.asarray(folds)
    scores = []
    for f in np.unique(folds):
        rows = folds == f
        _, counts = np.unique(y[rows], return_counts=True)
        splits = min(n_splits, int(counts.min())) if len(counts) > 1 else 0
        if splits < 2:
            scores.append(np.nan)
            continue
        cv = StratifiedKFold(n_splits=splits, shuffle=True, random_state=random_state)
        with _one_blas_thread():
            scores.append(
                float(cross_val_score(_probe_model(random_state), X[rows], y[rows], cv=cv).mean())
            )
    return np.array(scores)


def embed_strategy(
    X: np.ndarray,
    labels: np.ndarray,
    folds: np.ndarray,
    *,
    k: int = 10,
    n_neighbors: int = 15,
    min_dist: float = 0.1,
    umap: bool = True,
    random_state: int = 0,
) -> EmbeddingResult:
    """UMAP map, kNN purity, trustworthiness and linear probes of one strategy.

    Parameters
    ----------
    X : ndarray of shape (n_images, d)
        Out-of-fold features (all folds).
    labels : array-like of shape (n_images,)
    folds : array-like of shape (n_images,)
    k : int, default 10
        Neighbours for purity and trustworthiness.
    n_neighbors, min_dist : UMAP settings
    umap : bool, default True
        False skips the map (purity in the map and trustworthiness are NaN).
    random_state : int, default 0

    Returns
    -------
    EmbeddingResult
    """
    labels, folds = np.asarray(labels), np.asarray(folds)
    key = embedding_key(
        X,
        labels,
        folds,
        k=k,
        n_neighbors=n_neighbors,
        min_dist=min_dist,
        umap=umap,
        random_state=random_state,
    )
    if key in _EMBEDDINGS:
        return _EMBEDDINGS[key]
    Z = standardise(X)
    coords = None
    purity_map = trust = float("nan")
    if umap:
        coords = umap_embedding(
            X, n_neighbors=n_neighbors, min_dist=min_dist, random_state=random_state
        )
        purity_map = knn_purity(coords, labels, k)
        trust = trustworthiness_score(Z, coords, k)
    result = EmbeddingResult(
        coords=coords,
        class_purity_features=knn_purity(Z, labels, k),
        class_purity_embedding=purity_map,
        fold_purity_features=knn_purity(Z, folds, k),
        fold_purity_chance=_chance(folds),
        class_purity_chance=_chance(labels),
        trustworthiness=trust,
        probe_accuracy=linear_probe(X, labels, folds, random_state=random_state),
        within_fold_accuracy=within_fold_probe(X, labels, folds, random_state=random_state),
        k=k,
    )
    _EMBEDDINGS[key] = result
    while len(_EMBEDDINGS) > _MAX_EMBEDDINGS:
        _EMBEDDINGS.popitem(last=False)
    return result


# ``compare --all`` compares every pair of strategies, so each strategy's map and
# probes were computed once per pair it is in (UMAP: tens of seconds at 2,000
# images); results are kept by the content of their inputs.
_MAX_EMBEDDINGS = 8
_EMBEDDINGS: OrderedDict[str, EmbeddingResult] = OrderedDict()


def embedding_key(X: np.ndarray, labels: np.ndarray, folds: np.ndarray, **settings: object) -> str:
    """The content key of :func:`embed_strategy`'s inputs: the same key, the same result.

    Examples
    --------
    >>> X = np.zeros((4, 2))
    >>> key = embedding_key(X, np.array(list("aabb")), np.array([0, 1, 0, 1]), k=2)
    >>> key == embedding_key(X.copy(), np.array(list("aabb")), np.array([0, 1, 0, 1]), k=2)
    True
    >>> key == embedding_key(X, np.array(list("aabb")), np.array([0, 1, 0, 1]), k=3)
    False
    """
    digest = hashlib.sha256()
    for array in (np.ascontiguousarray(X), np.asarray(labels).astype(str), np.asarray(folds)):
        digest.update(str(array.shape).encode())
        digest.update(array.tobytes())
    digest.update(repr(sorted(settings.items())).encode())
    return digest.hexdigest()
