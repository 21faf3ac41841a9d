"""``biomark compare``: do two strategies of a run learn the same features?

:func:`compare_strategies` reads and checks a run folder (strategies present,
every fold finished, the same test images in every fold for both strategies,
finite features), aligns both strategies' out-of-fold features image by image
(:func:`load_pair`) and their per-block outputs when dumped, and hands them to
:func:`biomark.analysis.compare.compare_features` and
:func:`~biomark.analysis.compare.layerwise_cka`. :func:`run_compare` is the
command: the pairs asked for, the settings (the run's plan, another plan, the
flags), and the page and table of each pair
(:func:`biomark.report.compare_page.write_compare_report`).
"""

from __future__ import annotations

import hashlib
import itertools
import logging
from collections import OrderedDict
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd

from biomark.analysis.compare import (
    CompareResult,
    FeatureComparison,
    LayerwiseCKA,
    MapInput,
    check_settings,
    compare_features,
    layerwise_cka,
    map_inputs,
    strategy_maps,
)
from biomark.config import CompareSettings, Plan, StrategySpec, apply_overrides, load_plan
from biomark.exceptions import BiomarkError, ConfigError, RunError
from biomark.features.deep import check_same_width
from biomark.features.run_folder import RunFolder
from biomark.features.run_info import RunInfo
from biomark.io.disk import check_writable_dir
from biomark.pipelines.compare_maps import map_worker
from biomark.progress import progress

if TYPE_CHECKING:
    from biomark.analysis.alignment import FoldAlignment

__all__ = [
    "ComparedPair",
    "compare_strategies",
    "load_pair",
    "open_run",
    "resolve_strategy",
    "run_compare",
]

logger = logging.getLogger(__name__)


def open_run(run_dir: str | Path) -> tuple[RunFolder, RunInfo]:
    """The run folder and its ``run.json`` (empty, with a warning, when the folder has none).

    Raises
    ------
    RunError
        The folder does not exist, or its ``run.json`` cannot be read.
    """
    run = RunFolder(run_dir)
    if not run.root.is_dir():
        raise RunError(f"{run.root}: run folder not found; give the folder `biomark extract` wrote")
    if not run.has_info():
        logger.warning("%s: no run.json; taking strategies and folds from the folder", run.run_json)
    return run, run.read_info(missing_ok=True)


def resolve_strategy(run: RunFolder, info: RunInfo, name: str) -> str:
    """The label of ``name`` (``finetune_3`` -> ``finetune:3``) if the run has it.

    Raises
    ------
    RunError
        If the strategy is not in the run (the message lists those that are).
    """
    strategies = run.strategies_found(info)
    try:
        label = StrategySpec.parse(name).label
    except ConfigError as err:
        raise RunError(
            f"{err}; strategies in {run.root}: {', '.join(strategies) or 'none'}"
        ) from err
    if label not in strategies or not run.folds_with(label):
        raise RunError(
            f"strategy {label!r} is not in run {run.root} (no feature tables); strategies there: "
            f"{', '.join(strategies) or 'none'}. Add it to the plan and run `biomark extract`"
        )
    return label


def _check_folds(
    run: RunFolder, info: RunInfo, strategy: str, expected: tuple[int, ...]
) -> list[int]:
    found = run.folds_with(strategy)
    missing = sorted(set(expected) - set(found))
    if missing or (info.k is not None and len(found) < info.k):
        raise RunError(
            f"run {run.root}: strategy {strategy!r} has features for folds {found} but the plan "
            f"has k={info.k} folds; missing fold(s) {missing or '(count short)'}. Re-run `biomark "
            "extract` to finish them"
        )
    return found


def _check_finite(X: np.ndarray, strategy: str, fold: int, run: RunFolder) -> None:
    finite = np.isfinite(X)
    if not finite.all():
        bad_rows = int((~finite).any(axis=1).sum())
        raise RunError(
            f"run {run.root}: strategy {strategy!r} fold {fold}: {int((~finite).sum())} NaN/Inf "
            f"feature value(s) in {bad_rows} image(s); the model diverged or the dump is corrupt. "
            "Re-run `biomark extract` for this fold"
        )


def _check_ids(
    run: RunFolder, a: str, b: str, fold: int, ids_a: pd.Series, ids_b: pd.Series
) -> None:
    for strategy, ids in ((a, ids_a), (b, ids_b)):
        if ids.duplicated().any():
            raise RunError(
                f"run {run.root}: strategy {strategy!r} fold {fold} lists image id(s) "
                f"{sorted(ids[ids.duplicated()].unique())[:5]} more than once; re-run `biomark "
                "extract`"
            )
    only_a = sorted(set(ids_a) - set(ids_b))
    only_b = sorted(set(ids_b) - set(ids_a))
    if only_a or only_b:
        raise RunError(
            f"run {run.root}: fold {fold} has different test images for {a!r} ({len(ids_a)} "
            f"images) and {b!r} ({len(ids_b)} images): {len(only_a)} only in {a!r} (e.g. "
            f"{only_a[:3]}), {len(only_b)} only in {b!r} (e.g. {only_b[:3]}). Both must use the "
            "run's folds.csv; re-run `biomark extract`"
        )


def load_pair(
    run: RunFolder, info: RunInfo, a: str, b: str
) -> tuple[list[int], list[pd.DataFrame], list[np.ndarray], list[np.ndarray]]:
    """Load both strategies' out-of-fold features, aligned image by image per fold.

    Parameters
    ----------
    run : RunFolder
    info : RunInfo
        Its ``run.json``.
    a, b : str
        Strategy labels (validated by :func:`resolve_strategy`).

    Returns
    -------
    folds : list of int
    metas : list of DataFrame of shape (n_f, ...)
        A's metadata per fold (B's rows are put in this order), with B's
        predictions as ``pred_b``.
    Xa : list of ndarray of shape (n_f, d_a)
    Xb : list of ndarray of shape (n_f, d_b)

    Raises
    ------
    RunError
        Missing folds, different fold sets, image ids that differ between the
        strategies in a fold (counts and examples named), duplicated ids, or
        NaN/Inf features.
    """
    expected = run.expected_folds(info, run.strategies_found(info))
    folds_a, folds_b = _check_folds(run, info, a, expected), _check_folds(run, info, b, expected)
    if folds_a != folds_b:
        raise RunError(
            f"run {run.root}: strategies {a!r} and {b!r} have different folds ({folds_a} vs "
            f"{folds_b}); re-run `biomark extract` so both finish every fold"
        )
    metas, xas, xbs = [], [], []
    for fold in progress(folds_a, desc="loading folds", unit="fold", leave=False):
        meta_a, Xa = run.features(a, fold)
        meta_b, Xb = run.features(b, fold)
        ids_a, ids_b = meta_a["image_id"].astype(str), meta_b["image_id"].astype(str)
        _check_ids(run, a, b, fold, ids_a, ids_b)
        _check_finite(Xa, a, fold, run)
        _check_finite(Xb, b, fold, run)
        order = pd.Index(ids_b).get_indexer(ids_a)
        meta_a = meta_a.copy()
        meta_a["pred_b"] = meta_b["pred"].to_numpy()[order] if "pred" in meta_b else None
        metas.append(meta_a)
        xas.append(Xa)
        xbs.append(Xb[order])
    for s, xs in ((a, xas), (b, xbs)):
        check_same_width({f: x.shape[1] for f, x in zip(folds_a, xs, strict=True)}, run.root, s)
    return folds_a, metas, xas, xbs


def _layerwise(
    run: RunFolder, a: str, b: str, folds: list[int], metas: list[pd.DataFrame], notes: list[str]
) -> LayerwiseCKA | None:
    """The block-by-block CKA over the folds where both strategies dumped ``blocks.npz`` (None: none
    did)."""
    usable = [i for i, f in enumerate(folds) if all(run.has_blocks(s, f) for s in (a, b))]
    if not usable:
        notes.append(
            "No layer-wise comparison: the run has no per-block outputs for both strategies. "
            "Add `dump: {blocks: true}` to the plan and re-run `biomark extract`."
        )
        return None
    if len(usable) < len(folds):
        notes.append(
            f"Layer-wise CKA uses the {len(usable)} of {len(folds)} folds that have blocks.npz for "
            "both."
        )
    aligned = []
    for i in usable:
        fold = folds[i]
        ids = metas[i]["image_id"].astype(str).to_numpy()
        pair = []
        for s in (a, b):
            block_ids, blocks = run.blocks(s, fold)
            index = pd.Index(block_ids.astype(str)).get_indexer(ids)
            if (index < 0).any():
                raise RunError(
                    f"run {run.root}: strategy {s!r} fold {fold}: blocks.npz lacks "
                    f"{(index < 0).sum()} of the fold's {len(ids)} test images; re-run `biomark "
                    "extract` with `dump: {blocks: true}`"
                )
            pair.append({name: value[index] for name, value in blocks.items()})
        aligned.append((pair[0], pair[1]))
    return layerwise_cka(aligned, [folds[i] for i in usable])


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
        Seed of permutations, bootstrap and UMAP (default: the run's seed).
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
    pair = _prepare_pair(run_dir, a, b, settings, random_state)
    return _result(pair, _similarities(pair, umap=umap, show_progress=show_progress))


@dataclass(frozen=True)
class _PreparedPair:
    """One pair of a run, read, checked and aligned: what its numbers are computed from."""

    run: RunFolder
    info: RunInfo
    a: str
    b: str
    settings: CompareSettings
    seed: int
    folds: list[int]
    metas: list[pd.DataFrame]
    xas: list[np.ndarray]
    xbs: list[np.ndarray]
    map_features: dict[str, list[np.ndarray]]
    matching: dict[str, str]

    def map_inputs(self, umap: bool) -> dict[str, MapInput]:
        """Each strategy's map input (:func:`~biomark.analysis.compare.map_inputs`)."""
        return map_inputs(
            self.a,
            self.b,
            self.metas,
            self.xas,
            self.xbs,
            self.settings,
            umap=umap,
            random_state=self.seed,
            map_features=self.map_features,
        )


def _prepare_pair(
    run_dir: str | Path,
    a: str,
    b: str,
    settings: CompareSettings | None,
    random_state: int | None,
) -> _PreparedPair:
    """Read, check and align strategies ``a`` and ``b`` of a run, their units matched across folds
    where their folds trained their own backbones (see :func:`compare_strategies`)."""
    run, info = open_run(run_dir)
    a, b = resolve_strategy(run, info, a), resolve_strategy(run, info, b)
    if a == b:
        raise RunError(f"--a and --b are both {a!r}; give two different strategies of {run.root}")
    settings = settings if settings is not None else info.compare_settings()
    check_settings(settings)
    seed = info.seed if random_state is None else int(random_state)
    logger.info("comparing %s vs %s in %s", a, b, run.root)
    folds, metas, xas, xbs = load_pair(run, info, a, b)
    map_features: dict[str, list[np.ndarray]] = {}
    matching: dict[str, str] = {}
    for label, xs in ((a, xas), (b, xbs)):
        matched, how = matched_units(run, info, label, folds, xs, seed=seed)
        if matched is not None:
            map_features[label] = matched
        if how:
            matching[label] = how
    return _PreparedPair(
        run, info, a, b, settings, seed, folds, metas, xas, xbs, map_features, matching
    )


def _similarities(
    pair: _PreparedPair, *, umap: bool, show_progress: bool | None = None, maps: bool = True
) -> FeatureComparison:
    """:func:`~biomark.analysis.compare.compare_features` of a prepared pair (``maps=False``: its
    CKA only)."""
    try:
        return compare_features(
            pair.a,
            pair.b,
            pair.folds,
            pair.metas,
            pair.xas,
            pair.xbs,
            pair.settings,
            random_state=pair.seed,
            classes=pair.info.classes,
            umap=umap,
            show_progress=show_progress,
            map_features=pair.map_features,
            maps=maps,
        )
    except ConfigError:
        raise
    except ValueError as err:  # an estimator that failed on these features (named in the message)
        raise RunError(f"run {pair.run.root}: {err}") from err


def _result(pair: _PreparedPair, numbers: FeatureComparison) -> CompareResult:
    """A prepared pair's :class:`~biomark.analysis.compare.CompareResult`, its block-by-block CKA
    added where both strategies dumped blocks."""
    layerwise = _layerwise(pair.run, pair.a, pair.b, pair.folds, pair.metas, numbers.notes)
    return CompareResult(
        run=pair.run,
        info=pair.info,
        a=pair.a,
        b=pair.b,
        folds=tuple(pair.folds),
        n_images=sum(len(m) for m in pair.metas),
        dims={pair.a: int(pair.xas[0].shape[1]), pair.b: int(pair.xbs[0].shape[1])},
        settings=pair.settings,
        random_state=pair.seed,
        cka=numbers.cka,
        per_class=numbers.per_class,
        layerwise=layerwise,
        embedding=numbers.embedding,
        meta=pd.concat(pair.metas, ignore_index=True),
        notes=numbers.notes,
        unit_matching=pair.matching,
    )


def matched_units(
    run: RunFolder,
    info: RunInfo,
    label: str,
    folds: list[int],
    xs: list[np.ndarray],
    *,
    seed: int = 0,
) -> tuple[list[np.ndarray] | None, str]:
    """One strategy's out-of-fold features with every fold's units in the first fold's order.

    Each fold of ``scratch`` or ``finetune:N`` trains its own backbone, so unit
    ``j`` of one fold is not unit ``j`` of another, and a map or a
    leave-one-fold-out probe over pooled folds reads unrelated units side by
    side. The units are matched one to one by activation correlation on the
    images every fold's model embedded (``features_all.parquet``;
    :func:`biomark.analysis.alignment.align_folds`) over all images, the
    classes' differences included: the maps and probes compare classes. (The
    report matches within classes, what a biomarker must grade; on the Xeon
    demo's scratch that lowers the leave-one-fold-out probe from 0.68 to 0.60.)

    The matching is used whatever its quality: unmatched, unit ``j`` of every
    fold is an arbitrary pairing, which a one-to-one match by correlation can
    only improve on. The sentence gives its quality, and says so when most
    matches are weak (on the Xeon demo's scratch, 24 % of units matched at
    r >= 0.5 in every other fold lift the leave-one-fold-out probe from below
    chance, 0.05, to 0.68, near the within-fold 0.83).

    Returns
    -------
    features : list of ndarray or None
        Per fold, ``xs`` with its columns in the first fold's unit order; None
        for a shared backbone, a single fold, or no ``features_all.parquet`` in
        every fold.
    how : str
        A sentence for the page: how the units were matched and how well, or why
        not (empty for a shared backbone or a single fold: nothing to match).
    """
    from biomark.analysis.alignment import align_rows, own_backbones

    if info.shared_backbone(label) or len(folds) < 2:
        return None, ""
    unmatched = f"{label}: {own_backbones(label)}, and its units could not be matched across folds"
    pooled = "maps and leave-one-fold-out probes pool unrelated units."
    try:
        reference, ids = run.reference_features(label, folds)
        if not reference:
            return None, (
                f"{unmatched} (no features_all.parquet in every fold; `dump: {{features: all}}` in "
                f"the plan writes them): {pooled}"
            )
        finite = {f: np.where(np.isfinite(x), x, 0.0) for f, x in reference.items()}
        alignment = _alignment(finite, seed)
    except BiomarkError as err:
        return None, f"{unmatched} ({err}): {pooled}"
    matched = [align_rows(x, np.full(len(x), f), alignment) for f, x in zip(folds, xs, strict=True)]
    return matched, _matching_sentence(label, alignment, len(ids))


# ``compare --all`` matches a strategy's units once per pair it is in: two one-to-one assignments
# of 1,280 x 1,280 units and their nulls, 1.4-3.8 s per strategy on the demo. The alignment is
# kept by the content of the activations it came from (never mutated once made).
_MAX_ALIGNMENTS = 4
_ALIGNMENTS: OrderedDict[str, FoldAlignment] = OrderedDict()


def _alignment(reference: dict[int, np.ndarray], seed: int) -> FoldAlignment:
    """:func:`biomark.analysis.alignment.align_folds` of ``reference``, once per content."""
    from biomark.analysis.alignment import align_folds

    digest = hashlib.sha256(repr(seed).encode())
    for fold in sorted(reference):
        x = np.ascontiguousarray(reference[fold])
        digest.update(f"{fold}:{x.shape}:{x.dtype}".encode())
        digest.update(x.tobytes())
    key = digest.hexdigest()
    if key in _ALIGNMENTS:
        _ALIGNMENTS.move_to_end(key)
        return _ALIGNMENTS[key]
    alignment = align_folds(reference, seed=seed)
    _ALIGNMENTS[key] = alignment
    while len(_ALIGNMENTS) > _MAX_ALIGNMENTS:
        _ALIGNMENTS.popitem(last=False)
    return alignment


def _matching_sentence(label: str, alignment: FoldAlignment, n_images: int) -> str:
    """How one strategy's units were matched across folds, and how well."""
    from biomark.analysis.alignment import GOOD_MATCH_R, POOR_MATCH_SHARE, own_backbones

    share = alignment.share_matched(GOOD_MATCH_R)
    overall = alignment.quality(GOOD_MATCH_R).set_index("fold").loc["all"]
    sentence = (
        f"{label}: {own_backbones(label)}, so its units were matched one to one to fold "
        f"{alignment.reference_fold}'s by activation correlation over {n_images} images every "
        "fold's model embedded, classes' differences included, since the maps and probes compare "
        "classes (the report and the radiomics page match within classes, for what a unit grades "
        "inside a class: other families, other figures) (median matched r "
        f"{overall['r_median']:.2f}; "
        f"{100 * share:.0f} % of its units found a counterpart at r >= {GOOD_MATCH_R} in every "
        f"other fold; {100 * overall['share_above_null']:.0f} % of the matches above the 95th "
        f"percentile of a shuffled-image null, {overall['null_r_q95']:.2f}); its map, kNN purity "
        "and probes read every fold in those units. CKA, within one fold, needs no matching."
    )
    if share < POOR_MATCH_SHARE:
        sentence += (
            " Most matches are weak, so the folds' maps and probes still read partly different "
            "units; unmatched, they would read wholly unrelated ones."
        )
    return sentence


@dataclass(frozen=True)
class ComparedPair:
    """One pair ``biomark compare`` compared, and the files it wrote."""

    result: CompareResult
    html: Path
    csv: Path


def _pairs(
    run: RunFolder, info: RunInfo, a: str | None, b: str | None, all_pairs: bool
) -> list[tuple[str, str]]:
    strategies = run.strategies_found(info)
    if all_pairs:
        if a or b:
            raise ConfigError("give either --all or --a/--b, not both")
        if len(strategies) < 2:
            raise ConfigError(
                f"run {run.root} has {len(strategies)} strategy; --all needs at least 2"
            )
        return list(itertools.combinations(strategies, 2))
    if not (a and b):
        raise ConfigError(
            "give two strategies with --a and --b (e.g. --a scratch --b frozen), or --all; "
            f"strategies in {run.root}: {', '.join(strategies) or 'none'}"
        )
    return [(resolve_strategy(run, info, a), resolve_strategy(run, info, b))]


def compare_settings_for(
    info: RunInfo,
    plan: str | Path | None = None,
    *,
    permutations: int | None = None,
    bootstrap: int | None = None,
) -> CompareSettings:
    """CompareSettings from ``plan``, else the run's plan, with the flags applied through plan
    validation.

    Raises
    ------
    ConfigError
        A negative flag, or an invalid plan or ``compare:`` section.
    """
    for flag, value in (("permutations", permutations), ("bootstrap", bootstrap)):
        if value is not None and value < 0:
            raise ConfigError(f"--{flag}={value}: must be 0 or more")
    overrides = {"compare.n_permutations": permutations, "compare.n_bootstrap": bootstrap}
    if plan:
        return load_plan(plan, overrides).compare
    return apply_overrides(Plan(compare=info.compare_settings()), overrides).compare


def run_compare(
    run_dir: str | Path,
    *,
    a: str | None = None,
    b: str | None = None,
    all_pairs: bool = False,
    plan: str | Path | None = None,
    reports: str | Path = "reports",
    permutations: int | None = None,
    bootstrap: int | None = None,
    umap: bool = True,
) -> list[ComparedPair]:
    """``biomark compare``: compare the pairs asked for and write each pair's page and table.

    Parameters
    ----------
    run_dir : path
    a, b : str, optional
        One pair (with ``all_pairs`` False).
    all_pairs : bool, default False
        Every pair of the run's strategies.
    plan : path, optional
        Take the compare settings from this plan (default: the run's).
    reports : path, default "reports"
        Pages go to ``<reports>/<run folder name>/compare_<a>_vs_<b>.html`` and ``.csv``.
    permutations, bootstrap : int, optional
        Override ``compare.n_permutations`` / ``compare.n_bootstrap`` (0: none).
    umap : bool, default True

    Returns
    -------
    list of ComparedPair

    Raises
    ------
    ConfigError
        Both or neither of ``all_pairs`` and ``a``/``b``, fewer than two strategies, bad settings.
    RunError
        As :func:`compare_strategies`.
    """
    from biomark.report.compare_page import write_compare_report

    run, info = open_run(run_dir)
    pairs = _pairs(run, info, a, b, all_pairs)
    settings = compare_settings_for(info, plan, permutations=permutations, bootstrap=bootstrap)
    check_writable_dir(Path(reports) / run.name, "--reports")  # before the comparisons, not after
    prepared: list[_PreparedPair] = []
    inputs: list[dict[str, MapInput]] = []
    out = []
    with map_worker() as worker:
        worker.start(umap)
        # each strategy's map and probes go to the worker as soon as its pair is read, the pairs'
        # CKA tests run here meanwhile, and each page is written once its maps are back
        for first, second in pairs:
            prepared.append(_prepare_pair(run.root, first, second, settings, None))
            inputs.append(prepared[-1].map_inputs(umap))
            for strategy, map_input in inputs[-1].items():
                worker.submit(strategy, map_input)
        numbers = [_similarities(pair, umap=umap, maps=False) for pair in prepared]
        for pair, similarity, item in zip(prepared, numbers, inputs, strict=True):
            similarity.embedding.update(strategy_maps(item, embed=worker.result))
            result = _result(pair, similarity)
            html, csv = write_compare_report(result, Path(reports))
            out.append(ComparedPair(result, html, csv))
    return out
