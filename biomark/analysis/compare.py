"""Compare the representations two learning strategies learnt, fold by fold.

The paper (Apostolopoulos et al., 2020, discussion) states that the learning
strategies "do not mine the same features". :func:`compare_strategies` makes
that measurable for a run folder written by ``biomark extract``:

1. read and validate the run (strategies present, every fold finished, the
   same test images in every fold for both strategies, finite features);
2. CKA between the two strategies on each test fold (like with like): debiased
   linear CKA (headline, with permutation p-value and bootstrap interval),
   biased linear CKA (for comparison with the literature) and debiased RBF CKA;
   optionally per class;
3. the block-by-block CKA matrix when both strategies dumped ``blocks.npz``;
4. UMAP maps, kNN purity, trustworthiness and linear probes per strategy.

:func:`write_compare_csv` writes every number as one tidy table.
"""

from __future__ import annotations

import dataclasses
import json
import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from biomark.analysis.embedding import EmbeddingResult, embed_strategy
from biomark.analysis.similarity import FoldSimilarity, cka_matrix, fold_similarity
from biomark.config import CompareSettings, StrategySpec, from_mapping
from biomark.exceptions import ConfigError, RunError
from biomark.features.deep import list_folds, load_block_features, load_features
from biomark.io.atomic import write_csv_atomic
from biomark.progress import progress

__all__ = [
    "CSV_COLUMNS",
    "CompareResult",
    "Construction",
    "LayerwiseCKA",
    "RunInfo",
    "compare_strategies",
    "load_pair",
    "read_run",
    "resolve_strategy",
    "shared_by_construction",
    "write_compare_csv",
]

logger = logging.getLogger(__name__)

#: Columns of the tidy CSV written by :func:`write_compare_csv`.
CSV_COLUMNS: tuple[str, ...] = (
    "a", "b", "metric", "strategy", "class", "fold", "statistic",
    "value", "ci_low", "ci_high", "p_value", "n_images",
)

HEADLINE = "linear_cka_debiased"


@dataclass(frozen=True)
class RunInfo:
    """What ``run.json`` and the folder say about a run.

    Attributes
    ----------
    run_dir : Path
    name : str
        Folder name (names the report folder).
    strategies : tuple of str
        Strategy labels (``finetune:3``) listed in the plan or found as folders.
    k : int or None
        Number of folds the plan asked for.
    expected_folds : tuple of int
        Fold ids that must exist (from ``folds.csv`` when present).
    classes : tuple of str
    seed : int
    plan : dict
        The plan as recorded in ``run.json`` (empty when absent).
    positive_class : str or None
        The 2-class task's positive class (``run.json``), None when not recorded.
    """

    run_dir: Path
    name: str
    strategies: tuple[str, ...]
    k: int | None
    expected_folds: tuple[int, ...]
    classes: tuple[str, ...]
    seed: int
    plan: dict[str, Any] = field(default_factory=dict)
    positive_class: str | None = None

    def compare_settings(self) -> CompareSettings:
        """The plan's ``compare:`` section, or the defaults."""
        try:
            return from_mapping(CompareSettings, self.plan.get("compare"), where="compare.")
        except ConfigError as err:
            raise ConfigError(f"{self.run_dir / 'run.json'}: {err}") from err


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
    run : RunInfo
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
    """

    run: RunInfo
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

    @property
    def headline(self) -> FoldSimilarity:
        """Debiased linear CKA."""
        return self.cka[HEADLINE]

    def to_frame(self) -> pd.DataFrame:
        """All numbers as a tidy table with :data:`CSV_COLUMNS`."""
        rows: list[dict[str, Any]] = []

        def add(**kw: Any) -> None:
            rows.append({"a": self.a, "b": self.b, "strategy": "", "class": "", **kw})

        def add_similarity(sim: FoldSimilarity, cls: str = "") -> None:
            for i, f in enumerate(sim.folds):
                add(metric=sim.metric, **{"class": cls}, fold=str(f), statistic="value", value=sim.values[i],
                    ci_low=sim.fold_ci[i, 0], ci_high=sim.fold_ci[i, 1],
                    p_value=None if sim.fold_p_values is None else sim.fold_p_values[i], n_images=sim.n_images[i])
            n = int(sim.n_images.sum())
            add(metric=sim.metric, **{"class": cls}, fold="all", statistic="mean", value=sim.mean,
                ci_low=sim.mean_ci[0], ci_high=sim.mean_ci[1], p_value=sim.p_value, n_images=n)
            for stat in ("std", "min", "max"):
                add(metric=sim.metric, **{"class": cls}, fold="all", statistic=stat, value=getattr(sim, stat),
                    n_images=n)

        for sim in self.cka.values():
            add_similarity(sim)
        for cls, sim in self.per_class.items():
            add_similarity(sim, cls)
        if self.layerwise is not None:
            lw = self.layerwise
            for i, ba in enumerate(lw.blocks_a):
                for j, bb in enumerate(lw.blocks_b):
                    add(metric=f"layerwise_cka_debiased:{ba}|{bb}", fold="mean", statistic="mean",
                        value=lw.matrix[i, j], n_images=None)
        for strategy, emb in self.embedding.items():
            base = {"strategy": strategy, "n_images": self.n_images}
            scalar = {
                "knn_class_purity_features": emb.class_purity_features,
                "knn_class_purity_umap": emb.class_purity_embedding,
                "knn_class_purity_chance": emb.class_purity_chance,
                "knn_fold_purity_features": emb.fold_purity_features,
                "knn_fold_purity_chance": emb.fold_purity_chance,
                "trustworthiness_umap": emb.trustworthiness,
            }
            for metric, value in scalar.items():
                rows.append({"a": self.a, "b": self.b, "class": "", "metric": metric, "fold": "all",
                             "statistic": "value", "value": value, **base})
            for metric, acc in (("probe_accuracy_leave_fold_out", emb.probe_accuracy),
                                ("probe_accuracy_within_fold", emb.within_fold_accuracy)):
                for f, v in zip(self.folds, acc):
                    rows.append({"a": self.a, "b": self.b, "class": "", "metric": metric, "fold": str(f),
                                 "statistic": "value", "value": v, **base})
                for stat, fn in (("mean", np.nanmean), ("std", np.nanstd)):
                    value = float(fn(acc)) if np.isfinite(acc).any() else float("nan")
                    rows.append({"a": self.a, "b": self.b, "class": "", "metric": metric, "fold": "all",
                                 "statistic": stat, "value": value, **base})
        frame = pd.DataFrame(rows)
        for column in CSV_COLUMNS:
            if column not in frame:
                frame[column] = None
        return frame[list(CSV_COLUMNS)]


# --------------------------------------------------------------------------- #
# Reading and validating the run folder
# --------------------------------------------------------------------------- #


def _label(text: str) -> str:
    return StrategySpec.parse(text).label


def read_run(run_dir: str | Path) -> RunInfo:
    """Read ``run.json`` (and ``folds.csv``) of a run folder.

    Raises
    ------
    RunError
        If the folder does not exist, or ``run.json`` or ``folds.csv`` cannot be read.
    """
    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        raise RunError(f"{run_dir}: run folder not found; give the folder `biomark extract` wrote")
    info: dict[str, Any] = {}
    path = run_dir / "run.json"
    if path.is_file():
        try:
            info = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, ValueError) as err:  # JSONDecodeError and UnicodeDecodeError are ValueErrors
            raise RunError(f"{path}: not valid JSON ({err}); re-run `biomark extract`") from err
    else:
        logger.warning("%s: no run.json; taking strategies and folds from the folder", path)
    plan = info.get("plan") or {}
    strategies: list[str] = []
    for name in plan.get("strategies") or []:
        try:
            strategies.append(_label(name))
        except ConfigError:
            logger.warning("%s: unknown strategy %r in the plan is ignored", path, name)
    for child in sorted(run_dir.iterdir()):
        if child.is_dir() and any(child.glob("fold_*/features.parquet")):
            try:
                label = _label(child.name)
            except ConfigError:
                continue
            if label not in strategies:
                strategies.append(label)
    k = (plan.get("cv") or {}).get("k")
    k = int(k) if k is not None else None
    folds_csv = run_dir / "folds.csv"
    expected: tuple[int, ...] = ()
    if folds_csv.is_file():
        try:
            expected = tuple(sorted(int(f) for f in pd.read_csv(folds_csv, usecols=["fold"])["fold"].unique()))
        except (OSError, ValueError) as err:  # pandas' ParserError and EmptyDataError are ValueErrors
            raise RunError(
                f"{folds_csv}: the run's fold table cannot be read ({type(err).__name__}: {err}); it is truncated "
                "or corrupt. Copy the run folder again, or re-run `biomark extract` with --force"
            ) from err
    elif k is not None:
        found = {f for s in strategies for f in list_folds(run_dir, s)}
        start = 0 if (not found or 0 in found) else 1
        expected = tuple(range(start, start + k))
    return RunInfo(
        run_dir=run_dir,
        name=run_dir.resolve().name,
        strategies=tuple(strategies),
        k=k,
        expected_folds=expected,
        classes=tuple(str(c) for c in info.get("classes") or ()),
        seed=int(plan.get("seed", 0) or 0),
        plan=plan,
        positive_class=str(info["positive_class"]) if info.get("positive_class") else None,
    )


def resolve_strategy(run: RunInfo, name: str) -> str:
    """The label of ``name`` (``finetune_3`` -> ``finetune:3``) if the run has it.

    Raises
    ------
    RunError
        If the strategy is not in the run (the message lists those that are).
    """
    try:
        label = _label(name)
    except ConfigError as err:
        raise RunError(f"{err}; strategies in {run.run_dir}: {', '.join(run.strategies) or 'none'}") from err
    if label not in run.strategies or not list_folds(run.run_dir, label):
        raise RunError(
            f"strategy {label!r} is not in run {run.run_dir} (no feature tables); strategies there: "
            f"{', '.join(run.strategies) or 'none'}. Add it to the plan and run `biomark extract`"
        )
    return label


def _check_folds(run: RunInfo, strategy: str) -> list[int]:
    found = list_folds(run.run_dir, strategy)
    missing = sorted(set(run.expected_folds) - set(found))
    if missing or (run.k is not None and len(found) < run.k):
        raise RunError(
            f"run {run.run_dir}: strategy {strategy!r} has features for folds {found} but the plan has "
            f"k={run.k} folds; missing fold(s) {missing or '(count short)'}. Re-run `biomark extract` to finish them"
        )
    return found


def _check_finite(X: np.ndarray, strategy: str, fold: int, run: RunInfo) -> None:
    finite = np.isfinite(X)
    if not finite.all():
        bad_rows = int((~finite).any(axis=1).sum())
        raise RunError(
            f"run {run.run_dir}: strategy {strategy!r} fold {fold}: {int((~finite).sum())} NaN/Inf feature "
            f"value(s) in {bad_rows} image(s); the model diverged or the dump is corrupt. Re-run `biomark extract` "
            "for this fold"
        )


def load_pair(
    run: RunInfo, a: str, b: str
) -> tuple[list[int], list[pd.DataFrame], list[np.ndarray], list[np.ndarray]]:
    """Load both strategies' out-of-fold features, aligned image by image per fold.

    Parameters
    ----------
    run : RunInfo
    a, b : str
        Strategy labels (validated by :func:`resolve_strategy`).

    Returns
    -------
    folds : list of int
    metas : list of DataFrame of shape (n_f, ...)
        A's metadata per fold (B's rows are put in this order).
    Xa : list of ndarray of shape (n_f, d_a)
    Xb : list of ndarray of shape (n_f, d_b)

    Raises
    ------
    RunError
        Missing folds, different fold sets, image ids that differ between the
        strategies in a fold (counts and examples named), duplicated ids, or
        NaN/Inf features.
    """
    folds_a, folds_b = _check_folds(run, a), _check_folds(run, b)
    if folds_a != folds_b:
        raise RunError(
            f"run {run.run_dir}: strategies {a!r} and {b!r} have different folds ({folds_a} vs {folds_b}); "
            "re-run `biomark extract` so both finish every fold"
        )
    metas, xas, xbs = [], [], []
    for fold in progress(folds_a, desc="loading folds", unit="fold", leave=False):
        meta_a, Xa = load_features(run.run_dir, a, fold)
        meta_b, Xb = load_features(run.run_dir, b, fold)
        ids_a, ids_b = meta_a["image_id"].astype(str), meta_b["image_id"].astype(str)
        for strategy, ids in ((a, ids_a), (b, ids_b)):
            if ids.duplicated().any():
                raise RunError(
                    f"run {run.run_dir}: strategy {strategy!r} fold {fold} lists image id(s) "
                    f"{sorted(ids[ids.duplicated()].unique())[:5]} more than once; re-run `biomark extract`"
                )
        only_a = sorted(set(ids_a) - set(ids_b))
        only_b = sorted(set(ids_b) - set(ids_a))
        if only_a or only_b:
            raise RunError(
                f"run {run.run_dir}: fold {fold} has different test images for {a!r} ({len(ids_a)} images) "
                f"and {b!r} ({len(ids_b)} images): {len(only_a)} only in {a!r} (e.g. {only_a[:3]}), "
                f"{len(only_b)} only in {b!r} (e.g. {only_b[:3]}). Both must use the run's folds.csv; "
                "re-run `biomark extract`"
            )
        _check_finite(Xa, a, fold, run)
        _check_finite(Xb, b, fold, run)
        order = pd.Index(ids_b).get_indexer(ids_a)
        meta_a = meta_a.copy()
        meta_a["pred_b"] = meta_b["pred"].to_numpy()[order] if "pred" in meta_b else None
        metas.append(meta_a)
        xas.append(Xa)
        xbs.append(Xb[order])
    return folds_a, metas, xas, xbs


# --------------------------------------------------------------------------- #
# The computation
# --------------------------------------------------------------------------- #


def _check_settings(settings: CompareSettings) -> None:
    for name in ("n_permutations", "n_bootstrap"):
        if getattr(settings, name) < 0:
            raise ConfigError(f"compare.{name}={getattr(settings, name)}: must be 0 (skip) or more")
    if settings.knn_k < 1 or settings.umap_neighbors < 2:
        raise ConfigError("compare.knn_k must be >= 1 and compare.umap_neighbors >= 2")
    if not settings.rbf_sigma_fraction > 0:
        raise ConfigError(f"compare.rbf_sigma_fraction={settings.rbf_sigma_fraction}: must be positive")


def _layerwise(run: RunInfo, a: str, b: str, folds: list[int], metas: list[pd.DataFrame],
               notes: list[str]) -> LayerwiseCKA | None:
    usable = [i for i, f in enumerate(folds)
              if all((run.run_dir / s.replace(":", "_") / f"fold_{f:02d}" / "blocks.npz").is_file() for s in (a, b))]
    if not usable:
        notes.append(
            "No layer-wise comparison: the run has no per-block outputs for both strategies. "
            "Add `dump: {blocks: true}` to the plan and re-run `biomark extract`."
        )
        return None
    if len(usable) < len(folds):
        notes.append(f"Layer-wise CKA uses the {len(usable)} of {len(folds)} folds that have blocks.npz for both.")
    matrices, names_a, names_b = [], None, None
    for i in progress(usable, desc="layer-wise CKA", unit="fold", leave=False):
        fold = folds[i]
        ids = metas[i]["image_id"].astype(str).to_numpy()
        aligned = []
        for s in (a, b):
            block_ids, blocks = load_block_features(run.run_dir, s, fold)
            index = pd.Index(block_ids.astype(str)).get_indexer(ids)
            if (index < 0).any():
                raise RunError(
                    f"run {run.run_dir}: strategy {s!r} fold {fold}: blocks.npz lacks {(index < 0).sum()} of the "
                    f"fold's {len(ids)} test images; re-run `biomark extract` with `dump: {{blocks: true}}`"
                )
            aligned.append({name: value[index] for name, value in blocks.items()})
        if names_a is None:
            names_a, names_b = tuple(aligned[0]), tuple(aligned[1])
        matrices.append(cka_matrix(aligned[0], aligned[1]))
    return LayerwiseCKA(names_a or (), names_b or (), np.mean(matrices, axis=0), tuple(folds[i] for i in usable))


def compare_strategies(
    run_dir: str | Path,
    a: str,
    b: str,
    settings: CompareSettings | None = None,
    *,
    random_state: int | None = None,
    umap: bool = True,
    show_progress: bool | None = None,
) -> CompareResult:
    """Compare the representations of strategies ``a`` and ``b`` of one run.

    Parameters
    ----------
    run_dir : str or Path
        Run folder written by ``biomark extract``.
    a, b : str
        Strategies (``scratch``, ``frozen``, ``finetune:3`` or ``finetune_3``).
    settings : CompareSettings, optional
        Defaults to the run plan's ``compare:`` section, else the defaults.
    random_state : int, optional
        Seed of permutations, bootstrap and UMAP (default: the plan's seed).
    umap : bool, default True
        False skips the UMAP maps (purity/probes are still computed).
    show_progress : bool or None
        Progress bars (None: only on a terminal).

    Returns
    -------
    CompareResult

    Raises
    ------
    RunError
        Unknown strategy, missing folds, mismatched image ids, NaN/Inf features.
    ConfigError
        Invalid settings.
    """
    run = read_run(run_dir)
    a, b = resolve_strategy(run, a), resolve_strategy(run, b)
    if a == b:
        raise RunError(f"--a and --b are both {a!r}; give two different strategies of {run.run_dir}")
    settings = settings if settings is not None else run.compare_settings()
    _check_settings(settings)
    seed = run.seed if random_state is None else int(random_state)
    logger.info("comparing %s vs %s in %s", a, b, run.run_dir)
    folds, metas, xas, xbs = load_pair(run, a, b)
    meta = pd.concat(metas, ignore_index=True)
    n_images = len(meta)
    notes: list[str] = []
    common = dict(n_permutations=settings.n_permutations, n_bootstrap=settings.n_bootstrap,
                  random_state=seed, show_progress=show_progress)
    cka: dict[str, FoldSimilarity] = {}
    for kernel, debiased in (("linear", True), ("linear", False), ("rbf", True)):
        name = f"{kernel}_cka_{'debiased' if debiased else 'biased'}"
        logger.info("%s vs %s: %s over %d folds", a, b, name, len(folds))
        try:
            # no bootstrap interval for the biased estimator: resampled duplicates inflate it (similarity.py)
            options = dict(common, n_bootstrap=common["n_bootstrap"] if debiased else 0)
            cka[name] = fold_similarity(xas, xbs, folds, kernel=kernel, debiased=debiased,  # type: ignore[arg-type]
                                        sigma=settings.rbf_sigma_fraction, label=name, **options)
        except ValueError as err:
            raise RunError(f"run {run.run_dir}: {a!r} vs {b!r}: {name} failed: {err}") from err
    per_class: dict[str, FoldSimilarity] = {}
    if settings.per_class:
        classes = list(run.classes) or sorted(meta["label"].astype(str).unique())
        for cls in classes:
            parts = [(f, m["label"].astype(str).to_numpy() == cls) for f, m in zip(folds, metas)]
            keep = [(f, rows) for f, rows in parts if rows.sum() >= 4]
            if len(keep) < len(parts):
                notes.append(f"Class {cls!r}: {len(parts) - len(keep)} fold(s) with fewer than 4 images left out "
                             "of the per-class CKA.")
            if not keep:
                continue
            index = {f: i for i, f in enumerate(folds)}
            try:
                per_class[cls] = fold_similarity(
                    [xas[index[f]][rows] for f, rows in keep], [xbs[index[f]][rows] for f, rows in keep],
                    [f for f, _ in keep], label=f"class {cls}", **common)
            except ValueError as err:
                notes.append(f"Class {cls!r}: per-class CKA not computed ({err}).")
    layerwise = _layerwise(run, a, b, folds, metas, notes)
    embedding: dict[str, EmbeddingResult] = {}
    for strategy, xs in progress([(a, xas), (b, xbs)], desc="maps and probes", unit="strategy", leave=False,
                                 enabled=show_progress):
        logger.info("%s: %s, kNN purity and linear probes", strategy, "UMAP" if umap else "no UMAP")
        embedding[strategy] = embed_strategy(
            np.concatenate(xs), meta["label"].astype(str).to_numpy(), meta["fold"].to_numpy(),
            k=settings.knn_k, n_neighbors=settings.umap_neighbors, min_dist=settings.umap_min_dist,
            umap=umap, random_state=seed)
    return CompareResult(
        run=run, a=a, b=b, folds=tuple(folds), n_images=n_images,
        dims={a: int(xas[0].shape[1]), b: int(xbs[0].shape[1])}, settings=settings, random_state=seed,
        cka=cka, per_class=per_class, layerwise=layerwise, embedding=embedding, meta=meta, notes=notes,
    )


# --------------------------------------------------------------------------- #
# What two strategies share by construction
# --------------------------------------------------------------------------- #


@dataclass(frozen=True)
class Construction:
    """What two strategies of one run share before any training (see :func:`shared_by_construction`).

    Attributes
    ----------
    a, b : str
        Strategy labels.
    weights : str
        The plan's ``model.weights`` (``none``, ``imagenet`` or a file).
    pretrained : bool
        ``weights`` is not ``none``: ``frozen``/``finetune:N`` start from
        pretrained weights; otherwise from seeded *random* backbones (each
        strategy its own seed), a random-features control.
    controls : tuple of str
        The strategies among ``a, b`` whose backbone is a random-features
        control (non-scratch strategies when ``weights`` is ``none``).
    shared : tuple of str
        Backbone stages identical in both by construction: the same
        pretrained weights, trained by neither (``stem``, ``block_1`` ...).
    trained_a, trained_b : tuple of str
        Stages each strategy trains (:func:`biomark.models.strategies.trainable_blocks`).
    """

    a: str
    b: str
    weights: str
    pretrained: bool
    controls: tuple[str, ...]
    shared: tuple[str, ...]
    trained_a: tuple[str, ...]
    trained_b: tuple[str, ...]

    @property
    def tests_claim(self) -> bool:
        """Whether a CKA between the two can bear on the paper's claim (pretrained weights only)."""
        return self.pretrained and not self.controls

    @property
    def last_shared_block(self) -> str | None:
        """The deepest shared ``block_k`` (None when no block is shared)."""
        blocks = [s for s in self.shared if s.startswith("block_")]
        return blocks[-1] if blocks else None

    def shared_text(self) -> str:
        """``"the stem and blocks 1–13 of 16"``, or ``""`` when nothing is shared."""
        return _stages_text(self.shared, of_total=True)

    def sentence(self) -> str:
        """What the construction means for reading a CKA between ``a`` and ``b``."""
        if self.controls:
            one = len(self.controls) == 1
            what = "is a random-features control" if one else "are random-features controls"
            start = "its backbone starts" if one else "their backbones start"
            return (f"{' and '.join(self.controls)} {what} here: model.weights is '{self.weights}', so {start} "
                    "from seeded random weights, not from ImageNet. This CKA therefore says nothing about pretrained "
                    "features and can neither support nor refute the paper's claim. Set model.weights to imagenet "
                    "(or a local .h5 file) and re-run `biomark extract` for that.")
        if self.shared:
            differ = _stages_text(tuple(set(self.trained_a) | set(self.trained_b)), of_total=False)
            return (f"{self.a} and {self.b} share {self.shared_text()} by construction (the same pretrained "
                    f"weights, trained by neither); only {differ} differ. Part of their similarity is built in: a "
                    "high CKA is expected whatever the training did, and only what the trained stages changed "
                    "speaks to the paper's claim.")
        return (f"{self.a} and {self.b} share no weights by construction (model.weights '{self.weights}'): whatever "
                "similarity they show comes from what each backbone learned or brought, not from shared layers.")


def _stages_text(stages: tuple[str, ...], *, of_total: bool) -> str:
    """``("stem", "block_1", "block_2", "top")`` -> ``"the stem, blocks 1–2 and the top stage (Conv_1)"``."""
    from biomark.models.strategies import BLOCKS

    ks = sorted(int(s.split("_")[1]) for s in stages if s.startswith("block_"))
    parts = ["the stem"] if "stem" in stages else []
    if ks:
        span = f"blocks {ks[0]}–{ks[-1]}" if len(ks) > 1 else f"block {ks[0]}"
        parts.append(span + (f" of {len(BLOCKS)}" if of_total else ""))
    if "top" in stages:
        parts.append("the top stage (Conv_1)")
    return ", ".join(parts[:-1]) + (" and " if len(parts) > 1 else "") + parts[-1] if parts else ""


def shared_by_construction(a: str, b: str, weights: str | None) -> Construction:
    """What strategies ``a`` and ``b`` share before training, given the plan's ``model.weights``.

    ``frozen`` and ``finetune:N`` from the same pretrained weights share every
    stage neither of them trains (``finetune:3`` and ``frozen``: the stem and
    blocks 1-13). With ``weights: none`` each non-scratch strategy starts from
    its own seeded random backbone (a random-features control), so nothing is
    shared but such a comparison cannot bear on the paper's claim.

    Parameters
    ----------
    a, b : str
        Strategy labels (``scratch``, ``frozen``, ``finetune:3`` / ``finetune_3``).
    weights : str or None
        ``run.json`` -> ``plan.model.weights`` (None counts as ``none``).

    Returns
    -------
    Construction

    Raises
    ------
    ConfigError
        An unknown strategy name.

    Examples
    --------
    >>> c = shared_by_construction("frozen", "finetune:3", "imagenet")
    >>> c.shared[:2], c.shared[-1], c.tests_claim
    (('stem', 'block_1'), 'block_13', True)
    >>> shared_by_construction("scratch", "frozen", "none").controls
    ('frozen',)
    """
    from biomark.models.strategies import BLOCKS, needs_pretrained, trainable_blocks

    spec_a, spec_b = StrategySpec.parse(a), StrategySpec.parse(b)
    w = str(weights if weights is not None else "none")
    pretrained = w.strip().lower() not in ("", "none", "null")
    controls = tuple(s.label for s in (spec_a, spec_b) if needs_pretrained(s) and not pretrained)
    ta, tb = trainable_blocks(spec_a), trainable_blocks(spec_b)
    shared: tuple[str, ...] = ()
    if pretrained and needs_pretrained(spec_a) and needs_pretrained(spec_b):
        shared = tuple(s for s in ("stem", *BLOCKS, "top") if s not in ta and s not in tb)
    return Construction(a=spec_a.label, b=spec_b.label, weights=w, pretrained=pretrained, controls=controls,
                        shared=shared, trained_a=ta, trained_b=tb)


def write_compare_csv(result: CompareResult, path: str | Path) -> Path:
    """Write :meth:`CompareResult.to_frame` atomically as CSV and return the path."""
    return write_csv_atomic(path, result.to_frame())


def settings_dict(settings: CompareSettings) -> dict[str, Any]:
    """The settings as plain data (for provenance)."""
    return dataclasses.asdict(settings)
