"""Compare the representations two learning strategies learnt, fold by fold.

The paper (Apostolopoulos et al., 2020, discussion) states that the learning
strategies "do not mine the same features". :func:`compare_features` makes
that measurable on two strategies' out-of-fold features, aligned image by
image per test fold (reading and checking them from a run folder is
:mod:`biomark.pipelines.compare`'s job):

1. CKA between the two strategies on each test fold (like with like): debiased
   linear CKA (headline, with permutation p-value and bootstrap interval),
   biased linear CKA (for comparison with the literature) and debiased RBF CKA;
   optionally per class;
2. the block-by-block CKA matrix when both strategies dumped per-block outputs
   (:func:`layerwise_cka`);
3. UMAP maps, kNN purity, trustworthiness and linear probes per strategy.

:class:`CompareResult` holds every number; :func:`write_compare_csv` writes
them as one tidy table.
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

from biomark.analysis.construction import Construction, shared_by_construction
from biomark.analysis.embedding import EmbeddingResult, embed_strategy, embedding_key
from biomark.analysis.similarity import FoldSimilarity, Kernel, cka_matrix, fold_similarity
from biomark.config import CompareSettings
from biomark.exceptions import ConfigError
from biomark.io.atomic import write_csv_atomic
from biomark.progress import progress

if TYPE_CHECKING:  # pragma: no cover - typing only (features is a lower room: no cycle)
    from biomark.features.run_folder import RunFolder
    from biomark.features.run_info import RunInfo

__all__ = [
    "CSV_COLUMNS",
    "CompareResult",
    "Construction",
    "FeatureComparison",
    "LayerwiseCKA",
    "MapInput",
    "check_settings",
    "compare_features",
    "layerwise_cka",
    "map_inputs",
    "shared_by_construction",
    "strategy_maps",
    "write_compare_csv",
]

logger = logging.getLogger(__name__)

#: Columns of the tidy CSV written by :func:`write_compare_csv`.
CSV_COLUMNS: tuple[str, ...] = (
    "a",
    "b",
    "metric",
    "strategy",
    "class",
    "fold",
    "statistic",
    "value",
    "ci_low",
    "ci_high",
    "p_value",
    "n_images",
)

HEADLINE = "linear_cka_debiased"


@dataclass(frozen=True)
class LayerwiseCKA:
    """Block-by-block debiased linear CKA, averaged over folds.

    Attributes
    ----------
    blocks_a, blocks_b : tuple of str
        Block names in network order (rows / columns of ``matrix``).
    matrix : ndarray of shape (len(blocks_a), len(blocks_b))
    folds : tuple of int
        Folds that had ``blocks.npz`` for both strategies.
    """

    blocks_a: tuple[str, ...]
    blocks_b: tuple[str, ...]
    matrix: np.ndarray
    folds: tuple[int, ...]


@dataclass
class CompareResult:
    """Everything ``biomark compare`` computes for one pair of strategies.

    Attributes
    ----------
    run : RunFolder
        The run folder the features came from.
    info : RunInfo
        Its ``run.json`` (classes, positive class, the plan's weights).
    a, b : str
        Strategy labels.
    folds : tuple of int
    n_images : int
    dims : dict of str to int
        Feature dimension per strategy.
    settings : CompareSettings
    random_state : int
    cka : dict of str to FoldSimilarity
        By metric (``linear_cka_debiased``, ``linear_cka_biased``, ``rbf_cka_debiased``).
    per_class : dict of str to FoldSimilarity
        Debiased linear CKA on each class's images only (empty when disabled).
    layerwise : LayerwiseCKA or None
    embedding : dict of str to EmbeddingResult
        By strategy label.
    meta : DataFrame of shape (n_images, ...)
        Metadata of A's out-of-fold images (fold order), for plots.
    notes : list of str
        Things a reader should know (skipped classes, missing blocks, ...).
    unit_matching : dict of str to str
        Per strategy whose folds' units were matched to one fold's before the
        maps and probes (each fold trained its own backbone), how.
    """

    run: RunFolder
    info: RunInfo
    a: str
    b: str
    folds: tuple[int, ...]
    n_images: int
    dims: dict[str, int]
    settings: CompareSettings
    random_state: int
    cka: dict[str, FoldSimilarity]
    per_class: dict[str, FoldSimilarity]
    layerwise: LayerwiseCKA | None
    embedding: dict[str, EmbeddingResult]
    meta: pd.DataFrame
    notes: list[str] = field(default_factory=list)
    unit_matching: dict[str, str] = field(default_factory=dict)

    @property
    def headline(self) -> FoldSimilarity:
        """Debiased linear CKA."""
        return self.cka[HEADLINE]

    def to_frame(self) -> pd.DataFrame:
        """All numbers as a tidy table with :data:`CSV_COLUMNS`."""
        rows: list[dict[str, Any]] = []
        for sim in self.cka.values():
            rows.extend(_similarity_rows(sim))
        for cls, sim in self.per_class.items():
            rows.extend(_similarity_rows(sim, cls))
        if self.layerwise is not None:
            rows.extend(_layerwise_rows(self.layerwise))
        for strategy, emb in self.embedding.items():
            rows.extend(_embedding_rows(emb, self.folds, strategy=strategy, n_images=self.n_images))
        frame = pd.DataFrame(
            [{"a": self.a, "b": self.b, "strategy": "", "class": "", **row} for row in rows]
        )
        for column in CSV_COLUMNS:
            if column not in frame:
                frame[column] = None
        return frame[list(CSV_COLUMNS)]


def _similarity_rows(sim: FoldSimilarity, cls: str = "") -> list[dict[str, Any]]:
    """Rows of one similarity: its value per fold, then its mean (with CI and p) and spread over the
    folds."""
    common = {"metric": sim.metric, "class": cls}
    rows = [
        {
            **common,
            "fold": str(f),
            "statistic": "value",
            "value": sim.values[i],
            "ci_low": sim.fold_ci[i, 0],
            "ci_high": sim.fold_ci[i, 1],
            "p_value": None if sim.fold_p_values is None else sim.fold_p_values[i],
            "n_images": sim.n_images[i],
        }
        for i, f in enumerate(sim.folds)
    ]
    n = int(sim.n_images.sum())
    rows.append(
        {
            **common,
            "fold": "all",
            "statistic": "mean",
            "value": sim.mean,
            "ci_low": sim.mean_ci[0],
            "ci_high": sim.mean_ci[1],
            "p_value": sim.p_value,
            "n_images": n,
        }
    )
    rows.extend(
        {**common, "fold": "all", "statistic": stat, "value": getattr(sim, stat), "n_images": n}
        for stat in ("std", "min", "max")
    )
    return rows


def _layerwise_rows(lw: LayerwiseCKA) -> list[dict[str, Any]]:
    """Rows of the layer-wise CKA matrix, one per (block of a, block of b)."""
    return [
        {
            "metric": f"layerwise_cka_debiased:{ba}|{bb}",
            "fold": "mean",
            "statistic": "mean",
            "value": lw.matrix[i, j],
            "n_images": None,
        }
        for i, ba in enumerate(lw.blocks_a)
        for j, bb in enumerate(lw.blocks_b)
    ]


def _embedding_rows(
    emb: EmbeddingResult, folds: Sequence[int], *, strategy: str, n_images: int
) -> list[dict[str, Any]]:
    """Rows of one strategy's neighbourhood purities, UMAP trustworthiness and linear probes."""
    base = {"strategy": strategy, "n_images": n_images, "fold": "all", "statistic": "value"}
    scalar = {
        "knn_class_purity_features": emb.class_purity_features,
        "knn_class_purity_umap": emb.class_purity_embedding,
        "knn_class_purity_chance": emb.class_purity_chance,
        "knn_fold_purity_features": emb.fold_purity_features,
        "knn_fold_purity_chance": emb.fold_purity_chance,
        "trustworthiness_umap": emb.trustworthiness,
    }
    rows = [{**base, "metric": metric, "value": value} for metric, value in scalar.items()]
    for metric, acc in (
        ("probe_accuracy_leave_fold_out", emb.probe_accuracy),
        ("probe_accuracy_within_fold", emb.within_fold_accuracy),
    ):
        rows.extend(
            {**base, "metric": metric, "fold": str(f), "value": v}
            for f, v in zip(folds, acc, strict=True)
        )
        for stat, fn in (("mean", np.nanmean), ("std", np.nanstd)):
            value = float(fn(acc)) if np.isfinite(acc).any() else float("nan")
            rows.append({**base, "metric": metric, "statistic": stat, "value": value})
    return rows


# --------------------------------------------------------------------------- #
# The computation
# --------------------------------------------------------------------------- #


def check_settings(settings: CompareSettings) -> None:
    """Reject settings the comparison cannot use.

    Raises
    ------
    ConfigError
        A negative number of permutations or bootstrap draws, ``knn_k < 1``,
        ``umap_neighbors < 2`` or a non-positive RBF bandwidth.
    """
    for name in ("n_permutations", "n_bootstrap"):
        if getattr(settings, name) < 0:
            raise ConfigError(f"compare.{name}={getattr(settings, name)}: must be 0 (skip) or more")
    if settings.knn_k < 1 or settings.umap_neighbors < 2:
        raise ConfigError("compare.knn_k must be >= 1 and compare.umap_neighbors >= 2")
    if not settings.rbf_sigma_fraction > 0:
        raise ConfigError(
            f"compare.rbf_sigma_fraction={settings.rbf_sigma_fraction}: must be positive"
        )


def layerwise_cka(
    blocks: Sequence[tuple[dict[str, np.ndarray], dict[str, np.ndarray]]],
    folds: Sequence[int],
) -> LayerwiseCKA:
    """Block-by-block debiased linear CKA of two strategies, averaged over folds.

    Parameters
    ----------
    blocks : sequence of (dict, dict)
        Per fold, both strategies' per-block outputs (block name -> array of
        shape (n_f, n_channels)), rows aligned image by image.
    folds : sequence of int
        The folds, in the order of ``blocks``.

    Returns
    -------
    LayerwiseCKA
    """
    matrices, names_a, names_b = [], None, None
    for block_a, block_b in progress(blocks, desc="layer-wise CKA", unit="fold", leave=False):
        if names_a is None:
            names_a, names_b = tuple(block_a), tuple(block_b)
        matrices.append(cka_matrix(block_a, block_b))
    return LayerwiseCKA(names_a or (), names_b or (), np.mean(matrices, axis=0), tuple(folds))


@dataclass
class FeatureComparison:
    """The numbers :func:`compare_features` computes (see :class:`CompareResult` for their
    meaning)."""

    cka: dict[str, FoldSimilarity]
    per_class: dict[str, FoldSimilarity]
    embedding: dict[str, EmbeddingResult]
    notes: list[str] = field(default_factory=list)


def _per_class(
    xas: list[np.ndarray],
    xbs: list[np.ndarray],
    folds: list[int],
    metas: list[pd.DataFrame],
    classes: Sequence[str],
    common: dict[str, Any],
    notes: list[str],
) -> dict[str, FoldSimilarity]:
    """Debiased linear CKA on each class's images (folds with fewer than 4 of them left out)."""
    per_class: dict[str, FoldSimilarity] = {}
    index = {f: i for i, f in enumerate(folds)}
    for cls in classes:
        parts = [
            (f, m["label"].astype(str).to_numpy() == cls) for f, m in zip(folds, metas, strict=True)
        ]
        keep = [(f, rows) for f, rows in parts if rows.sum() >= 4]
        if len(keep) < len(parts):
            notes.append(
                f"Class {cls!r}: {len(parts) - len(keep)} fold(s) with fewer than 4 images left "
                "out of the per-class CKA."
            )
        if not keep:
            continue
        try:
            per_class[cls] = fold_similarity(
                [xas[index[f]][rows] for f, rows in keep],
                [xbs[index[f]][rows] for f, rows in keep],
                [f for f, _ in keep],
                label=f"class {cls}",
                **common,
            )
        except ValueError as err:
            notes.append(f"Class {cls!r}: per-class CKA not computed ({err}).")
    return per_class


def compare_features(
    a: str,
    b: str,
    folds: list[int],
    metas: list[pd.DataFrame],
    xas: list[np.ndarray],
    xbs: list[np.ndarray],
    settings: CompareSettings,
    *,
    random_state: int = 0,
    classes: Sequence[str] = (),
    umap: bool = True,
    show_progress: bool | None = None,
    map_features: Mapping[str, list[np.ndarray]] | None = None,
    maps: bool = True,
) -> FeatureComparison:
    """CKA (three estimators, optionally per class), UMAP, kNN purity and probes of two strategies.

    Parameters
    ----------
    a, b : str
        Strategy labels (named in messages).
    folds : list of int
    metas : list of DataFrame of shape (n_f, ...)
        Per fold, the images' metadata (``label``, ``fold``), in the rows' order.
    xas, xbs : list of ndarray of shape (n_f, d_a) and (n_f, d_b)
        Per fold, both strategies' features, rows aligned image by image.
    settings : CompareSettings
    random_state : int, default 0
        Seed of permutations, bootstrap and UMAP.
    classes : sequence of str, optional
        Classes of the per-class CKA (default: those in ``metas``).
    umap : bool, default True
        False skips the UMAP maps (purity and probes are still computed).
    show_progress : bool or None
        Progress bars (None: only on a terminal).
    map_features : mapping of str to list of ndarray, optional
        Per strategy, the features its maps, kNN purity and probes read
        instead of ``xas`` or ``xbs`` (the same rows): e.g. units matched
        across folds whose models trained their own backbones. CKA, within one
        fold, needs no matching.
    maps : bool, default True
        False leaves ``embedding`` empty, for a caller that computes the maps
        and probes elsewhere (:func:`map_inputs`, :func:`strategy_maps`).

    Returns
    -------
    FeatureComparison

    Raises
    ------
    ConfigError
        Invalid settings.
    ValueError
        A CKA estimator failed on these features (the metric is named).
    """
    check_settings(settings)
    meta = pd.concat(metas, ignore_index=True)
    notes: list[str] = []
    common: dict[str, Any] = dict(
        n_permutations=settings.n_permutations,
        n_bootstrap=settings.n_bootstrap,
        random_state=random_state,
        show_progress=show_progress,
    )
    cka: dict[str, FoldSimilarity] = {}
    estimators: tuple[tuple[Kernel, bool], ...] = (
        ("linear", True),
        ("linear", False),
        ("rbf", True),
    )
    for kernel, debiased in estimators:
        name = f"{kernel}_cka_{'debiased' if debiased else 'biased'}"
        logger.info("%s vs %s: %s over %d folds", a, b, name, len(folds))
        try:
            # no bootstrap interval for the biased estimator: resampled duplicates inflate it
            # (similarity.py)
            options = dict(common, n_bootstrap=common["n_bootstrap"] if debiased else 0)
            cka[name] = fold_similarity(
                xas,
                xbs,
                folds,
                kernel=kernel,
                debiased=debiased,
                sigma=settings.rbf_sigma_fraction,
                label=name,
                **options,
            )
        except ValueError as err:
            raise ValueError(f"{a!r} vs {b!r}: {name} failed: {err}") from err
    per_class: dict[str, FoldSimilarity] = {}
    if settings.per_class:
        per_class = _per_class(
            xas,
            xbs,
            folds,
            metas,
            list(classes) or sorted(meta["label"].astype(str).unique()),
            common,
            notes,
        )
    embedding = (
        strategy_maps(
            map_inputs(
                a,
                b,
                metas,
                xas,
                xbs,
                settings,
                umap=umap,
                random_state=random_state,
                map_features=map_features,
            ),
            show_progress=show_progress,
        )
        if maps
        else {}
    )
    return FeatureComparison(cka, per_class, embedding, notes)


@dataclass(frozen=True)
class MapInput:
    """What :func:`~biomark.analysis.embedding.embed_strategy` reads for one strategy of a pair.

    Attributes
    ----------
    X : ndarray of shape (n_images, d)
        The strategy's out-of-fold features over every fold (matched units where given).
    labels, folds : ndarray of shape (n_images,)
    options : dict
        Its keyword arguments (neighbours, UMAP settings, seed).
    """

    X: np.ndarray
    labels: np.ndarray
    folds: np.ndarray
    options: dict[str, Any]

    def key(self) -> str:
        """The content key of this input: equal keys give equal maps."""
        return embedding_key(self.X, self.labels, self.folds, **self.options)

    def embed(self) -> EmbeddingResult:
        """:func:`~biomark.analysis.embedding.embed_strategy` of this input, in this process."""
        return embed_strategy(self.X, self.labels, self.folds, **self.options)


def map_inputs(
    a: str,
    b: str,
    metas: list[pd.DataFrame],
    xas: list[np.ndarray],
    xbs: list[np.ndarray],
    settings: CompareSettings,
    *,
    umap: bool = True,
    random_state: int = 0,
    map_features: Mapping[str, list[np.ndarray]] | None = None,
) -> dict[str, MapInput]:
    """Per strategy of a pair, what its UMAP map, kNN purity and probes read.

    Parameters
    ----------
    a, b, metas, xas, xbs, settings, umap, random_state, map_features
        As :func:`compare_features`.

    Returns
    -------
    dict of str to MapInput
        ``a`` then ``b``.
    """
    meta = pd.concat(metas, ignore_index=True)
    labels = meta["label"].astype(str).to_numpy()
    folds = meta["fold"].to_numpy()
    options: dict[str, Any] = dict(
        k=settings.knn_k,
        n_neighbors=settings.umap_neighbors,
        min_dist=settings.umap_min_dist,
        umap=umap,
        random_state=random_state,
    )
    return {
        strategy: MapInput(
            np.concatenate((map_features or {}).get(strategy, xs)), labels, folds, options
        )
        for strategy, xs in ((a, xas), (b, xbs))
    }


def strategy_maps(
    inputs: Mapping[str, MapInput],
    *,
    embed: Callable[[str, MapInput], EmbeddingResult] | None = None,
    show_progress: bool | None = None,
) -> dict[str, EmbeddingResult]:
    """Each strategy's UMAP map, kNN purity and linear probes.

    Parameters
    ----------
    inputs : mapping of str to MapInput
        From :func:`map_inputs`.
    embed : callable, optional
        ``embed(strategy, input)`` gives one strategy's result (default:
        :meth:`MapInput.embed`, here), e.g. one computed in a worker process.
    show_progress : bool or None
        Progress bars (None: only on a terminal).

    Returns
    -------
    dict of str to EmbeddingResult
    """
    out: dict[str, EmbeddingResult] = {}
    for strategy, item in progress(
        list(inputs.items()),
        desc="maps and probes",
        unit="strategy",
        leave=False,
        enabled=show_progress,
    ):
        if embed is None:
            logger.info(
                "%s: %s, kNN purity and linear probes",
                strategy,
                "UMAP" if item.options["umap"] else "no UMAP",
            )
            out[strategy] = item.embed()
        else:
            out[strategy] = embed(strategy, item)
    return out


def write_compare_csv(result: CompareResult, path: str | Path) -> Path:
    """Write :meth:`CompareResult.to_frame` atomically as CSV and return the path."""
    return write_csv_atomic(path, result.to_frame())


def settings_dict(settings: CompareSettings) -> dict[str, Any]:
    """The settings as plain data (for provenance)."""
    return dataclasses.asdict(settings)
