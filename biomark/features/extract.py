"""``biomark extract``: train every strategy under cross-validation and dump features.

Two levels, both driven only by files:

* a **job** (:func:`run_job`) is one (strategy, fold): it reads ``run.json``,
  the dataset and ``folds.csv``, trains the fold's model, predicts, and
  writes everything into ``<run>/<strategy>/fold_XX/``, ``done.json`` last.
  Jobs share no in-memory state, so they can run in any order or on other
  machines (a later step may hand them to a Dask cluster).
* a **run** (:func:`run_extract`) resolves and checks the dataset *before
  any training*, creates the run folder with ``run.json`` and ``folds.csv``
  (computed once, reused by every strategy), runs the jobs that are not
  finished, then writes per-strategy summaries and ``summary.md``
  (:func:`finish_run`).

Resuming: a fold with ``done.json`` is skipped; a fold without it is redone
(Keras's ``BackupAndRestore`` state in ``fold_XX/backup/`` lets training
continue from its last finished epoch). A crash loses at most the fold in
progress. ``force=True`` deletes and redoes.

The folder layout is documented in :mod:`biomark.features.run_folder`.
This module imports no Keras; the training and prediction functions of
:mod:`biomark.train` are imported when a job runs and return numpy arrays.

Examples
--------
>>> from biomark.config import load_plan
>>> plan = load_plan("analyses/quick.yaml")                      # doctest: +SKIP
>>> run_dir = run_extract(plan, out_dir="/tmp/runs")             # doctest: +SKIP
>>> (run_dir / "summary.md").is_file()                           # doctest: +SKIP
True
"""

from __future__ import annotations

import json
import logging
import math
import shutil
import time
import zlib
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from biomark.config import Plan, StrategySpec, apply_overrides, plan_from_mapping, plan_hash, plan_to_dict
from biomark.data.dataset import Dataset, dataset_paths, load_dataset
from biomark.data.folds import check_folds, make_folds, validation_split
from biomark.exceptions import BiomarkError, ConfigError, DataError, RunError
from biomark.features.deep import META_COLUMNS, fold_dir, write_block_features, write_features
from biomark.features.run_folder import (
    DONE_FILE,
    FOLDS_FILE,
    METRICS_FILE,
    TIMINGS_FILE,
    fold_table_summary,
    is_done,
    json_ready,
    read_fold_record,
    read_folds,
    read_run,
    update_run,
    write_folds,
    write_run,
    write_strategy_summary,
    write_summary_md,
)
from biomark.io.atomic import write_csv_atomic, write_json_atomic
from biomark.io.disk import check_writable_dir
from biomark.io.remote import is_url, redact
from biomark.progress import progress
from biomark.provenance import environment
from biomark.train.checkpoint import CHECKPOINT_FILE

__all__ = [
    "POSITIVE_CLASS",
    "RESUME_KEYS",
    "Job",
    "RunSetup",
    "finish_run",
    "job_seed",
    "log_finished_job",
    "prepare_run",
    "record_finished_job",
    "resolve_dataset",
    "run_extract",
    "run_job",
    "validate_inputs",
]

logger = logging.getLogger(__name__)

#: The class the paper's 2-class metrics are about.
POSITIVE_CLASS = "COVID-19"
#: Plan sections that must not change between the start of a run and a resume.
RESUME_KEYS: tuple[str, ...] = ("seed", "cv", "model", "training", "dump")


def job_seed(seed: int, strategy: str, fold: int) -> int:
    """Seed of one job: the plan's seed plus a stable offset for (strategy, fold).

    The offset is a CRC-32 of ``"<strategy>/<fold>"`` (Python's ``hash`` is
    salted per process, CRC-32 is not), so a job gets the same seed on every
    machine and in every order.

    Examples
    --------
    >>> job_seed(0, "scratch", 0) == job_seed(0, "scratch", 0)
    True
    >>> job_seed(0, "scratch", 0) != job_seed(0, "scratch", 1)
    True
    """
    label = StrategySpec.parse(strategy).label
    return (int(seed) + zlib.crc32(f"{label}/{int(fold)}".encode())) % (2**31 - 1)


@dataclass(frozen=True)
class Job:
    """One (strategy, fold) of a run."""

    strategy: str
    fold: int
    done: bool = False

    @property
    def name(self) -> str:
        """``"scratch fold 3"``."""
        return f"{self.strategy} fold {self.fold}"


@dataclass
class RunSetup:
    """A checked run, ready for its jobs (what :func:`prepare_run` returns).

    Attributes
    ----------
    plan : Plan
    run_dir : Path
        ``<output_dir>/<plan.name>``; not created by a dry run.
    dataset_dir : Path
    dataset : Dataset or None
        None only in a dry run whose phantom is not generated yet.
    folds : DataFrame or None
        ``image_id``, ``fold``, ``label``, ``patient_id`` (None as ``dataset``).
    jobs : list of Job
        Every (strategy, fold) of the selected strategies, in run order.
    notes : list of str
        What a dry run would do first (e.g. generate the phantom).
    """

    plan: Plan
    run_dir: Path
    dataset_dir: Path
    dataset: Dataset | None
    folds: pd.DataFrame | None
    jobs: list[Job] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)


# --------------------------------------------------------------------------- #
# Dataset and checks
# --------------------------------------------------------------------------- #


def resolve_dataset(plan: Plan, *, generate: bool = True) -> Path:
    """The dataset folder of a plan, generating the phantom there when asked.

    A ``plan.data.dir`` that is an fsspec URL (``s3://...``) is copied to
    local disk first (:func:`biomark.data.remote.mirror_dataset`; only what
    changed is downloaded) and the copy is returned. If ``plan.data.dir``
    holds no ``manifest.csv`` and ``plan.data.phantom`` is set, the phantom is generated into it
    (:func:`biomark.data.phantom.generate_phantom`) and built
    (:func:`biomark.data.build.build_dataset`) with a cache of
    ``phantom.image_size`` pixels.

    Parameters
    ----------
    plan : Plan
    generate : bool, default True
        False only checks (for a dry run).

    Returns
    -------
    Path

    Raises
    ------
    DataError
        If there is no dataset and no phantom section to generate one.
    """
    if is_url(plan.data.dir):
        from biomark.data.remote import mirror_dataset

        return mirror_dataset(plan.data.dir)  # reading needs local files: a cached copy
    root = Path(plan.data.dir).expanduser()
    phantom = plan.data.phantom
    if dataset_paths(root).manifest.is_file():
        if phantom is not None:
            _check_phantom_settings(root, phantom)
        return root
    if phantom is None:
        raise DataError(
            f"data.dir={str(root)!r}: no manifest.csv there; build the dataset first "
            f"(`biomark data build ... --out {root}` or `biomark data phantom --out {root}`), "
            "give another folder with --data, or add a data.phantom section to the plan"
        )
    if not generate:
        return root
    from biomark.data.build import build_dataset
    from biomark.data.phantom import generate_phantom

    raw_size = max(64, phantom.raw_size or phantom.image_size)  # the generator draws at least 64 px
    logger.info(
        "no dataset at %s: generating the phantom there (%d images per class, seed %d, drawn at %d px, "
        "cached at %d px, signature strength %g)",
        root, phantom.n_per_class, phantom.seed, raw_size, phantom.image_size, phantom.signature_strength,
    )
    csv = generate_phantom(
        root,
        n_per_class=phantom.n_per_class,
        seed=phantom.seed,
        image_size=raw_size,
        images_per_patient=phantom.images_per_patient,
        confounder=phantom.confounder,
        signature_strength=phantom.signature_strength,
        jobs=-1,
    )
    build_dataset(root, sources={"manifest": [csv]}, image_size=phantom.image_size)
    return root


def _check_phantom_settings(root: Path, phantom: Any) -> None:
    """Refuse a phantom folder drawn with other settings than the plan's ``data.phantom``.

    A plan that changed its phantom (more images, another strength) would
    otherwise silently train on the old one. The folder is never overwritten:
    the user removes it (or points ``data.dir`` elsewhere).
    """
    from biomark.data.phantom import PHANTOM_CLASSES, SETTINGS_FILE

    path = root / SETTINGS_FILE
    wanted = {
        "class_counts": {c: phantom.n_per_class for c in PHANTOM_CLASSES},
        "seed": phantom.seed,
        "image_size": max(64, phantom.raw_size or phantom.image_size),
        "images_per_patient": float(phantom.images_per_patient),
        "confounder": phantom.confounder,
        "signature_strength": float(phantom.signature_strength),
    }
    if not path.is_file():
        return  # a dataset built some other way (or by an older biomark): nothing to compare
    found = json.loads(path.read_text(encoding="utf-8"))
    differ = {k: (found.get(k), v) for k, v in wanted.items() if found.get(k) != v}
    if differ:
        listed = ", ".join(f"{k} {have!r} (plan: {want!r})" for k, (have, want) in differ.items())
        raise DataError(
            f"{root}: this phantom was drawn with other settings than the plan's data.phantom: {listed}. "
            f"Delete {root} to draw the plan's phantom there, or set data.dir to another folder"
        )


def validate_inputs(plan: Plan, dataset: Dataset, strategies: list[StrategySpec]) -> pd.DataFrame:
    """Every check that can fail a run, done before any training.

    Checks that the dataset has the paper's positive class and at least two
    classes with images, that ``cv.k`` folds are possible for every class
    (images, and patients with ``grouping: patient``), that every training
    fold can give up a validation split, and that the backbone weights of the
    pretrained strategies exist. Returns the fold table.

    Parameters
    ----------
    plan : Plan
    dataset : Dataset
    strategies : list of StrategySpec

    Returns
    -------
    DataFrame
        ``image_id``, ``fold``, ``label``, ``patient_id`` (from
        :func:`biomark.data.folds.make_folds`, seeded with ``plan.seed``).

    Raises
    ------
    ConfigError
        ``cv.k`` too large for a class, a validation split that cannot be made.
    DataError
        No ``COVID-19`` class or fewer than two classes with images.
    WeightsError
        A weights file that does not exist, or ImageNet weights for an
        ``alpha`` that has none.
    """
    from biomark.models.strategies import needs_pretrained
    from biomark.models.weights import resolve_backbone_weights

    manifest = dataset.manifest
    if POSITIVE_CLASS not in dataset.classes:
        raise DataError(
            f"{dataset.root}: the dataset's classes ({', '.join(dataset.classes)}) have no "
            f"{POSITIVE_CLASS!r}; the paper's 2-class metrics need it (rename the class in the "
            "recipe's finding_map, or rebuild the dataset)"
        )
    counts = manifest["label"].value_counts()
    empty = [c for c in dataset.classes if c not in counts.index]
    if len(counts) < 2:
        raise DataError(f"{dataset.root}: only one class has images ({counts.index[0]}); a classifier needs two")
    if empty:
        logger.warning("classes without images (their output unit never trains): %s", ", ".join(empty))
    check_folds(manifest, plan.cv.k, plan.cv.grouping, validation_fraction=plan.cv.validation_fraction, seed=plan.seed)
    folds = make_folds(manifest, plan.cv.k, grouping=plan.cv.grouping, seed=plan.seed,
                       near_duplicate_distance=plan.cv.near_duplicate_distance)
    folds["label"] = manifest["label"].to_numpy()
    folds["patient_id"] = manifest["patient_id"].to_numpy()
    for fold in range(plan.cv.k):
        train = manifest[folds["fold"].to_numpy() != fold].reset_index(drop=True)
        try:
            validation_split(train, plan.cv.validation_fraction, grouping=plan.cv.grouping, seed=plan.seed + fold,
                             near_duplicate_distance=plan.cv.near_duplicate_distance)
        except ConfigError as err:
            raise ConfigError(f"fold {fold}: {err}") from err
    if any(needs_pretrained(s) for s in strategies):
        weights = resolve_backbone_weights(plan.model.weights, alpha=plan.model.alpha, image_size=plan.model.image_size)
        if weights == "imagenet":
            logger.info("ImageNet weights are not cached yet: Keras will download them at the first pretrained job")
    return folds


# --------------------------------------------------------------------------- #
# Run folder
# --------------------------------------------------------------------------- #


def _select_strategies(plan: Plan, strategies: list[str] | None) -> list[StrategySpec]:
    if not strategies:
        return list(plan.strategies)
    in_plan = {s.label: s for s in plan.strategies}
    chosen = []
    for text in strategies:
        spec = StrategySpec.parse(text)
        if spec.label not in in_plan:
            raise ConfigError(
                f"strategy {spec.label!r} is not in the plan's strategies "
                f"({', '.join(in_plan)}); choose among them or add it to the plan"
            )
        if spec not in chosen:
            chosen.append(spec)
    return chosen


def _with_paths(plan: Plan, data_dir: str | None, out_dir: str | None) -> Plan:
    return apply_overrides(plan, {"data.dir": data_dir, "output_dir": out_dir})


def prepare_run(
    plan: Plan,
    *,
    data_dir: str | None = None,
    out_dir: str | None = None,
    force: bool = False,
    strategies: list[str] | None = None,
    dry_run: bool = False,
) -> RunSetup:
    """Resolve the dataset, check everything, and create (or reopen) the run folder.

    Parameters
    ----------
    plan : Plan
    data_dir : str, optional
        Overrides ``plan.data.dir``.
    out_dir : str, optional
        Overrides ``plan.output_dir``; the run folder is ``out_dir/plan.name``.
    force : bool, default False
        Start the selected strategies over; if the dataset's manifest changed,
        start the whole run over.
    strategies : list of str, optional
        A subset of the plan's strategies (default: all).
    dry_run : bool, default False
        Check only: write nothing, generate nothing.

    Returns
    -------
    RunSetup

    Raises
    ------
    ConfigError, DataError, WeightsError
        From :func:`validate_inputs`, or a strategy not in the plan.
    RunError
        The run folder exists for another dataset manifest or other training
        settings (use ``force`` or another ``name``).
    """
    plan = _with_paths(plan, data_dir, out_dir)
    chosen = _select_strategies(plan, strategies)
    run_dir = Path(plan.output_dir).expanduser() / plan.name
    if not dry_run:  # a read-only --out fails now, not after the dataset is generated
        check_writable_dir(run_dir, "output folder (--out / output_dir)")
    dataset_dir = resolve_dataset(plan, generate=not dry_run)
    if dry_run and not dataset_paths(dataset_dir).manifest.is_file():
        jobs = [Job(s.label, f) for s in chosen for f in range(plan.cv.k)]
        note = f"the phantom would be generated into {dataset_dir} first; fold checks run after that"
        return RunSetup(plan, run_dir, dataset_dir, None, None, jobs, [note])
    dataset = load_dataset(dataset_dir)
    folds = validate_inputs(plan, dataset, chosen)

    existing = (run_dir / "run.json").is_file()
    if existing:
        info = read_run(run_dir)
        same_manifest = info["dataset"]["manifest_sha256"] == dataset.manifest_sha256
        changed = [key for key in RESUME_KEYS if info["plan"].get(key) != plan_to_dict(plan).get(key)]
        if not same_manifest and not force:
            raise RunError(
                f"{run_dir}: this run was started on a dataset whose manifest differs from "
                f"{dataset_paths(dataset_dir).manifest} (sha256 {info['dataset']['manifest_sha256'][:12]}… vs "
                f"{dataset.manifest_sha256[:12]}…); its folds no longer apply. Use --force to start "
                "the run over, or give the plan a new name"
            )
        if changed and not force:
            raise RunError(
                f"{run_dir}: the plan's {', '.join(changed)} settings differ from those this run "
                "was started with, so finished folds would not be comparable; use --force to "
                "start the run over, or give the plan a new name"
            )
        if not same_manifest or changed:
            if not dry_run:
                logger.warning(
                    "%s: %s changed; --force starts the whole run over",
                    run_dir, "the dataset manifest" if not same_manifest else ", ".join(changed),
                )
                shutil.rmtree(run_dir)
            existing = False
        elif (run_dir / FOLDS_FILE).is_file():
            saved = read_folds(run_dir)
            if not saved[["image_id", "fold"]].equals(folds[["image_id", "fold"]]):
                raise RunError(
                    f"{run_dir / FOLDS_FILE}: the saved folds differ from those the plan gives "
                    "for this dataset; use --force to start over or give the plan a new name"
                )
    jobs = [
        Job(s.label, f, (not force) and existing and is_done(run_dir, s.label, f))
        for s in chosen
        for f in range(plan.cv.k)
    ]
    setup = RunSetup(plan, run_dir, dataset_dir, dataset, folds, jobs)
    if dry_run:
        return setup
    _write_run_start(setup, chosen, existing)
    return setup


def _write_run_start(setup: RunSetup, chosen: list[StrategySpec], keep_history: bool) -> None:
    from biomark.train.loop import backend_info

    plan, run_dir, dataset = setup.plan, setup.run_dir, setup.dataset
    assert dataset is not None and setup.folds is not None
    run_dir.mkdir(parents=True, exist_ok=True)
    previous = read_run(run_dir) if (run_dir / "run.json").is_file() else {}
    if not (run_dir / FOLDS_FILE).is_file() or not keep_history:
        write_folds(run_dir, setup.folds)
    labels = [s.label for s in chosen]
    known = list(previous.get("strategies", [])) if keep_history else []
    env = environment()
    env["keras"] = backend_info()
    now = datetime.now(timezone.utc).isoformat(timespec="seconds")
    info = {
        "name": plan.name,
        "created": previous.get("created", now) if keep_history else now,
        "updated": now,
        "plan": plan_to_dict(plan),
        "plan_hash": plan_hash(plan),
        "seed": plan.seed,
        "dataset": {
            "dir": str(Path(setup.dataset_dir).resolve()),
            **({"url": redact(plan.data.dir)} if is_url(plan.data.dir) else {}),
            "manifest_sha256": dataset.manifest_sha256,
            "n_images": len(dataset),
            "image_size": dataset.size,
            "class_counts": (
                dataset.manifest["label"].value_counts().reindex(dataset.classes, fill_value=0).astype(int).to_dict()
            ),
        },
        "classes": list(dataset.classes),
        "positive_class": POSITIVE_CLASS,
        "folds": {
            "file": FOLDS_FILE,
            "grouping": plan.cv.grouping,
            "seed": plan.seed,
            **fold_table_summary(setup.folds, dataset.classes),
        },
        "strategies": known + [label for label in labels if label not in known],
        "environment": env,
        "jobs": previous.get("jobs", {}) if keep_history else {},
        "timings": previous.get("timings", {}) if keep_history else {},
    }
    write_run(run_dir, info)


# --------------------------------------------------------------------------- #
# One job
# --------------------------------------------------------------------------- #


def _clear_fold(path: Path, force: bool) -> None:
    """Empty a fold folder for a redo, keeping its training checkpoint (and the history it extends)."""
    if not path.exists():
        return
    if force:
        shutil.rmtree(path)
        return
    keep = {CHECKPOINT_FILE, "history.csv"} if (path / CHECKPOINT_FILE).is_file() else set()
    for child in path.iterdir():
        if child.name in keep:
            continue
        if child.is_dir():
            shutil.rmtree(child)
        else:
            child.unlink()


def _meta(manifest: pd.DataFrame, rows: np.ndarray, fold: int, label: str, pred: np.ndarray) -> pd.DataFrame:
    meta = manifest.iloc[rows][["image_id", "label", "patient_id", "source"]].reset_index(drop=True)
    meta["fold"] = fold
    meta["strategy"] = label
    meta["pred"] = pred
    return meta[list(META_COLUMNS)]


def run_job(
    run_dir: str | Path, strategy: str, fold: int, *, force: bool = False, dataset_dir: str | Path | None = None
) -> dict[str, Any]:
    """Train, predict and dump one (strategy, fold); every input and output is a file.

    Reads ``run.json`` (plan, dataset folder and manifest hash), the dataset
    and ``folds.csv``; writes into ``<run>/<strategy>/fold_XX/``: ``model.keras``,
    ``history.csv``, ``split.csv``, ``features.parquet`` (test-fold images),
    ``features_all.parquet`` (``dump.features: all``), ``blocks.npz``
    (``dump.blocks``; the same images as the largest feature table),
    ``metrics.json`` and, last, ``done.json``.

    Parameters
    ----------
    run_dir : str or Path
        A run folder prepared by :func:`prepare_run`.
    strategy : str
        ``scratch``, ``frozen`` or ``finetune:N`` (``finetune_N`` too).
    fold : int
        Test fold, 0 .. k-1.
    force : bool, default False
        Redo even a finished fold (its folder is deleted first).
    dataset_dir : str or Path, optional
        Where this machine reads the dataset, when not at the path ``run.json``
        records (a local copy of a dataset at a URL); its manifest must be the
        run's.

    Returns
    -------
    dict
        The content of ``metrics.json`` (for a finished fold that is not
        forced, the saved one).

    Raises
    ------
    RunError
        The run folder is incomplete, the fold is out of range, or the
        dataset's manifest changed since the run started.
    WeightsError
        Pretrained weights cannot be loaded.
    """
    from biomark.train.loop import train_fold
    from biomark.train.metrics import fold_metrics
    from biomark.train.predict import predict_features

    t_start = time.perf_counter()
    run_dir = Path(run_dir)
    spec = StrategySpec.parse(strategy)
    info = read_run(run_dir)
    plan = plan_from_mapping(info["plan"])
    if not 0 <= fold < plan.cv.k:
        raise RunError(f"fold {fold} is out of range: the run has cv.k={plan.cv.k} folds (0..{plan.cv.k - 1})")
    out = fold_dir(run_dir, spec.label, fold)
    if (out / DONE_FILE).is_file() and not force:
        return read_fold_record(out)
    _clear_fold(out, force)
    out.mkdir(parents=True, exist_ok=True)

    dataset_at = dataset_dir if dataset_dir is not None else info["dataset"]["dir"]
    dataset = load_dataset(dataset_at)
    if dataset.manifest_sha256 != info["dataset"]["manifest_sha256"]:
        raise RunError(
            f"{dataset_at}: the manifest changed since run {run_dir} started; "
            "its folds no longer apply. Start over with --force or use a new run name"
        )
    manifest = dataset.manifest
    folds = read_folds(run_dir)
    fold_of = folds.set_index("image_id")["fold"].reindex(manifest["image_id"]).to_numpy()
    if np.isnan(fold_of.astype(float)).any():
        raise RunError(f"{run_dir / FOLDS_FILE}: some dataset images have no fold; start over with --force")
    test_rows = np.flatnonzero(fold_of == fold)
    fit_rows = np.flatnonzero(fold_of != fold)
    tr, va = validation_split(
        manifest.iloc[fit_rows].reset_index(drop=True),
        plan.cv.validation_fraction,
        grouping=plan.cv.grouping,
        seed=plan.seed + fold,  # the same validation images for every strategy
        near_duplicate_distance=plan.cv.near_duplicate_distance,
    )
    train_rows, val_rows = fit_rows[tr], fit_rows[va]
    roles = np.full(len(manifest), "train", dtype=object)
    roles[val_rows], roles[test_rows] = "val", "test"
    write_csv_atomic(out / "split.csv", pd.DataFrame({"image_id": manifest["image_id"], "role": roles}))

    seed = job_seed(plan.seed, spec.label, fold)
    labels = dataset.labels_as_int()
    classes = list(dataset.classes)
    name = f"{spec.label} fold {fold}"
    try:
        result = train_fold(
            dataset.images, labels, train_rows, val_rows,
            strategy=spec, n_classes=len(classes), model_settings=plan.model, training=plan.training,
            out_dir=out, seed=seed, desc=name, keep_checkpoint=True,
        )
        t_predict = time.perf_counter()
        predict_rows = np.arange(len(manifest)) if plan.dump.features == "all" else test_rows
        outputs = predict_features(
            result.model, dataset.images[predict_rows], blocks=plan.dump.blocks,
            batch_size=plan.training.batch_size, image_size=plan.model.image_size,
        )
        predict_seconds = time.perf_counter() - t_predict
    except BiomarkError:
        raise
    except (ValueError, RuntimeError, OSError, MemoryError) as err:
        raise RunError(
            f"{name} failed ({type(err).__name__}: {err}); finished folds are kept, re-run to resume"
        ) from err

    probs, gap = outputs.pop("probs"), outputs.pop("gap")
    pred_index = probs.argmax(axis=1)
    pred = np.asarray(classes, dtype=object)[pred_index]
    position = {row: i for i, row in enumerate(predict_rows)}
    test_pos = np.array([position[r] for r in test_rows], dtype=np.int64)
    write_features(
        out / "features.parquet",
        _meta(manifest, test_rows, fold, spec.label, pred[test_pos]),
        gap[test_pos], probs[test_pos], classes,
    )
    if plan.dump.features == "all":
        meta_all = _meta(manifest, predict_rows, fold, spec.label, pred)
        meta_all["in_test_fold"] = fold_of[predict_rows] == fold
        write_features(out / "features_all.parquet", meta_all, gap, probs, classes)
    if plan.dump.blocks:
        write_block_features(out / "blocks.npz", manifest["image_id"].to_numpy()[predict_rows], outputs)

    metrics = fold_metrics(labels[test_rows], pred_index[test_pos], probs[test_pos], classes, positive=POSITIVE_CLASS)
    total_seconds = time.perf_counter() - t_start
    record = json_ready(
        {
            "strategy": spec.label,
            "fold": fold,
            "k": plan.cv.k,
            "seed": seed,
            "n_train": len(train_rows),
            "n_val": len(val_rows),
            "n_test": len(test_rows),
            "training": result.summary(),
            "metrics": metrics,
        }
    )
    timings = json_ready(
        {
            "timings": {
                "train_seconds": round(result.train_seconds, 3),
                "predict_seconds": round(predict_seconds, 3),
                "total_seconds": round(total_seconds, 3),
            },
            "images_per_second": {
                "train": result.train_images_per_second,
                "predict": len(predict_rows) / predict_seconds if predict_seconds > 0 else math.nan,
            },
            "execution": result.execution(),
        }
    )
    write_json_atomic(out / METRICS_FILE, record)
    write_json_atomic(out / TIMINGS_FILE, timings)
    files = sorted(p.name for p in out.iterdir() if p.is_file() and not p.name.startswith(".")
                   and p.name != CHECKPOINT_FILE)
    write_json_atomic(
        out / DONE_FILE,
        {
            "strategy": spec.label,
            "fold": fold,
            "finished": datetime.now(timezone.utc).isoformat(timespec="seconds"),
            "seconds": round(total_seconds, 3),
            "plan_hash": info.get("plan_hash"),
            "files": files,
        },
    )
    (out / CHECKPOINT_FILE).unlink(missing_ok=True)  # the fold's outputs are safe now
    return {**record, **timings}


# --------------------------------------------------------------------------- #
# The run
# --------------------------------------------------------------------------- #


def _pct(value: float | None) -> str:
    return "n/a" if value is None or (isinstance(value, float) and math.isnan(value)) else f"{100 * value:.1f}%"


def log_finished_job(record: dict[str, Any], *, where: str = "", note: str = "") -> None:
    """One log line for a finished (strategy, fold) job with its metrics.

    ``where`` names the worker that ran it (cluster runs); ``note`` is appended.
    """
    m = record["metrics"]
    logger.info(
        "%s fold %d/%d%s: %d-class acc %s | COVID-19 vs rest acc %s | sens %s | spec %s (%d epochs, %.0f s)%s",
        record["strategy"], record["fold"] + 1, record["k"], f" on {where}" if where else "",
        len(m.get("confusion") or []),
        _pct(m.get("accuracy")), _pct(m.get("binary_accuracy")), _pct(m.get("sensitivity")),
        _pct(m.get("specificity")), record["training"]["epochs_run"], record["timings"]["total_seconds"], note,
    )


def record_finished_job(run_dir: str | Path, record: dict[str, Any], **extra: Any) -> None:
    """Add a finished job's entry (time, epochs, accuracy, ``extra``) to ``run.json``."""
    key = f"{StrategySpec.parse(record['strategy']).dirname}/fold_{record['fold']:02d}"

    def note(info: dict[str, Any]) -> None:
        now = datetime.now(timezone.utc).isoformat(timespec="seconds")
        info.setdefault("jobs", {})[key] = {
            "finished": now,
            "seconds": record["timings"]["total_seconds"],
            "epochs_run": record["training"]["epochs_run"],
            "accuracy": record["metrics"]["accuracy"],
            **extra,
        }
        info["updated"] = now

    update_run(run_dir, note)


def finish_run(run_dir: str | Path, strategies: list[str] | None = None) -> Path:
    """Write each finished strategy's summaries and the run's ``summary.md``.

    Parameters
    ----------
    run_dir : str or Path
    strategies : list of str, optional
        Strategies to (re)summarise; default: every strategy of the run whose
        folds are all finished.

    Returns
    -------
    Path
        ``summary.md``.
    """
    run_dir = Path(run_dir)
    info = read_run(run_dir)
    k = info["folds"]["k"]
    plan = info["plan"]
    for label in strategies or info.get("strategies", []):
        if all(is_done(run_dir, label, f) for f in range(k)):
            write_strategy_summary(
                run_dir, label, info["classes"], k,
                n_bootstrap=plan["compare"]["n_bootstrap"], seed=info["seed"],
            )
        else:
            logger.warning("%s: not every fold finished; no summary yet", label)
    return write_summary_md(run_dir)


def run_extract(
    plan: Plan,
    *,
    data_dir: str | None = None,
    out_dir: str | None = None,
    force: bool = False,
    strategies: list[str] | None = None,
) -> Path:
    """Run every (strategy, fold) job of a plan and summarise; resumable.

    Parameters
    ----------
    plan : Plan
        The analysis plan (``analyses/*.yaml``).
    data_dir : str, optional
        Overrides ``plan.data.dir``.
    out_dir : str, optional
        Overrides ``plan.output_dir``.
    force : bool, default False
        Redo finished folds of the selected strategies.
    strategies : list of str, optional
        A subset of the plan's strategies.

    Returns
    -------
    Path
        The run folder ``<output_dir>/<plan.name>``.

    Raises
    ------
    ConfigError, DataError, WeightsError
        Invalid inputs, found before any training.
    RunError
        The run folder belongs to another dataset or settings, or a job failed
        (finished folds are kept; re-running resumes).
    """
    t0 = time.perf_counter()
    setup = prepare_run(plan, data_dir=data_dir, out_dir=out_dir, force=force, strategies=strategies)
    run_dir = setup.run_dir
    todo = [job for job in setup.jobs if not job.done]
    logger.info(
        "run %s: %d jobs (%d finished, %d to do) -> %s",
        setup.plan.name, len(setup.jobs), len(setup.jobs) - len(todo), len(todo), run_dir,
    )
    bar = progress(total=len(setup.jobs), desc=f"extract {setup.plan.name}", unit="job")
    try:
        for job in setup.jobs:
            if job.done:
                logger.info("%s: skipping finished fold", job.name)
                bar.update(1)
                continue
            bar.set_postfix_str(job.name, refresh=True)
            record = run_job(run_dir, job.strategy, job.fold, force=force)
            log_finished_job(record)
            record_finished_job(run_dir, record)
            bar.update(1)
    finally:
        bar.close()
    summary = finish_run(run_dir, [s.label for s in _select_strategies(setup.plan, strategies)])
    seconds = time.perf_counter() - t0

    def timing(info: dict[str, Any]) -> None:
        info.setdefault("timings", {})["last_invocation_seconds"] = round(seconds, 3)
        info["timings"]["jobs_seconds"] = round(sum(j.get("seconds", 0.0) for j in info.get("jobs", {}).values()), 3)

    update_run(run_dir, timing)
    logger.info("run %s finished in %.0f s: %s", setup.plan.name, seconds, summary)
    return run_dir
