"""One ``biomark extract`` job: train, predict and dump one (strategy, fold); every input and output
a file.

:func:`run_job` reads ``run.json``, the dataset and ``folds.csv`` and writes
into ``<run>/<strategy>/fold_XX/`` through
:class:`~biomark.features.run_folder.RunFolder`, ``done.json`` last. Jobs
share no in-memory state, so they run in any order, in this process or on a
cluster's workers (:mod:`biomark.pipelines.executor`). The training and
prediction functions of :mod:`biomark.train` are imported when a job runs.
"""

from __future__ import annotations

import math
import time
import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from biomark.config import Plan, StrategySpec
from biomark.data.dataset import Dataset, load_dataset
from biomark.data.folds import validation_split
from biomark.exceptions import BiomarkError, RunError
from biomark.features.deep import META_COLUMNS
from biomark.features.run_folder import FOLDS_FILE, RunFolder
from biomark.features.run_info import json_ready, now_utc

__all__ = ["Job", "backbone_seed", "job_seed", "run_job"]

#: The class the paper's 2-class metrics are about.


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


def backbone_seed(seed: int) -> int:
    """Seed of the random-features controls' backbone: one per run, shared by every control and
    every fold.

    A pretrained strategy run with ``model.weights: none`` draws its backbone
    from this seed in every fold, and ``frozen`` and every ``finetune:N`` of
    the run draw the same one, as the pretrained strategies all read
    ImageNet's one backbone; each fold's head, augmentation and shuffling
    still follow :func:`job_seed`. So a control differs from its pretrained
    strategy in its weights alone: its folds differ as the pretrained
    strategy's do (only in what they train, and for the control in the
    BatchNormalization statistics each fold takes from its training images),
    and two controls share the stages neither trains
    (:func:`biomark.analysis.construction.shared_by_construction`), as the
    pretrained pair shares ImageNet's.

    Examples
    --------
    >>> backbone_seed(0) == backbone_seed(0) != backbone_seed(1)
    True
    """
    return (int(seed) + zlib.crc32(b"backbone")) % (2**31 - 1)


@dataclass(frozen=True)
class Job:
    """One (strategy, fold) of a run; ``done`` when its ``done.json`` existed at preparation."""

    strategy: str
    fold: int
    done: bool = False

    @property
    def name(self) -> str:
        """``"scratch fold 3"``."""
        return f"{self.strategy} fold {self.fold}"

    @property
    def key(self) -> str:
        """``"scratch-fold03"``: the job in task keys and lock names."""
        return f"{StrategySpec.parse(self.strategy).dirname}-fold{self.fold:02d}"


def _meta(
    manifest: pd.DataFrame, rows: np.ndarray, fold: int, label: str, pred: np.ndarray
) -> pd.DataFrame:
    meta = manifest.iloc[rows][["image_id", "label", "patient_id", "source"]].reset_index(drop=True)
    meta["fold"] = fold
    meta["strategy"] = label
    meta["pred"] = pred
    return meta[list(META_COLUMNS)]


def _split(
    run: RunFolder, plan: Plan, dataset: Dataset, label: str, fold: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Rows of the fold's train, validation and test images, and each image's fold; ``split.csv`` is
    written."""
    manifest = dataset.manifest
    folds = run.read_folds()
    fold_of = folds.set_index("image_id")["fold"].reindex(manifest["image_id"]).to_numpy()
    if np.isnan(fold_of.astype(float)).any():
        raise RunError(
            f"{run.root / FOLDS_FILE}: some dataset images have no fold; start over with --force"
        )
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
    run.write_split(label, fold, pd.DataFrame({"image_id": manifest["image_id"], "role": roles}))
    return train_rows, val_rows, test_rows, fold_of


def _open_dataset(
    run: RunFolder, dataset_dir: str | Path | None, manifest_sha256: str, recorded: str
) -> Dataset:
    dataset_at = dataset_dir if dataset_dir is not None else recorded
    dataset = load_dataset(dataset_at)
    if dataset.manifest_sha256 != manifest_sha256:
        raise RunError(
            f"{dataset_at}: the manifest changed since run {run.root} started; "
            "its folds no longer apply. Start over with --force or use a new run name"
        )
    return dataset


def run_job(
    run_dir: str | Path,
    strategy: str,
    fold: int,
    *,
    force: bool = False,
    dataset_dir: str | Path | None = None,
) -> dict[str, Any]:
    """Train, predict and dump one (strategy, fold); every input and output is a file.

    Reads ``run.json`` (plan, dataset folder and manifest hash), the dataset
    and ``folds.csv``; writes into ``<run>/<strategy>/fold_XX/``: ``model.keras``,
    ``history.csv``, ``split.csv``, ``features.parquet`` (test-fold images),
    ``features_all.parquet`` (``dump.features: all``), ``blocks.npz``
    (``dump.blocks``; the same images as the largest feature table),
    ``metrics.json``, ``timings.json`` and, last, ``done.json``.

    Parameters
    ----------
    run_dir : str or Path
        A run folder prepared by :func:`biomark.pipelines.extract.prepare_run`.
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
        The content of ``metrics.json`` and ``timings.json`` (for a finished
        fold that is not forced, the saved ones).

    Raises
    ------
    RunError
        The run folder is incomplete, the fold is out of range, the dataset's
        manifest changed since the run started, or training failed.
    WeightsError
        Pretrained weights cannot be loaded.
    """
    t_start = time.perf_counter()
    run = RunFolder(run_dir)
    spec = StrategySpec.parse(strategy)
    info = run.read_info()
    plan = info.plan_settings()
    if not 0 <= fold < plan.cv.k:
        raise RunError(
            f"fold {fold} is out of range: the run has cv.k={plan.cv.k} folds (0..{plan.cv.k - 1})"
        )
    if run.is_done(spec.label, fold) and not force:
        return run.fold_record(spec.label, fold)
    run.clear_fold(spec.label, fold, keep_checkpoint=not force)
    run.fold_dir(spec.label, fold).mkdir(parents=True, exist_ok=True)
    dataset = _open_dataset(run, dataset_dir, info.dataset.manifest_sha256, info.dataset.dir)
    train_rows, val_rows, test_rows, fold_of = _split(run, plan, dataset, spec.label, fold)
    trained = _train_and_predict(run, plan, dataset, spec, fold, train_rows, val_rows, test_rows)
    result, outputs, predict_rows, predict_seconds = trained
    record = _dump(
        run,
        plan,
        dataset,
        spec.label,
        fold,
        outputs,
        predict_rows,
        (train_rows, val_rows, test_rows),
        fold_of,
        result,
    )
    total_seconds = time.perf_counter() - t_start
    timings = {
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
    done = {
        "strategy": spec.label,
        "fold": fold,
        "finished": now_utc(),
        "seconds": round(total_seconds, 3),
        "plan_hash": info.plan_hash or None,
    }
    run.write_fold_results(spec.label, fold, record, timings, done)
    return json_ready({**record, **timings})


def _train_and_predict(
    run: RunFolder,
    plan: Plan,
    dataset: Dataset,
    spec: StrategySpec,
    fold: int,
    train_rows: np.ndarray,
    val_rows: np.ndarray,
    test_rows: np.ndarray,
) -> tuple[Any, dict[str, np.ndarray], np.ndarray, float]:
    """Train the fold's model and run it over the images to dump: (training result, outputs, rows,
    seconds)."""
    from biomark.train.loop import train_fold
    from biomark.train.predict import predict_features
    from biomark.train.schedule import training_for

    name = f"{spec.label} fold {fold}"
    try:
        result = train_fold(
            dataset.images,
            dataset.labels_as_int(),
            train_rows,
            val_rows,
            strategy=spec,
            n_classes=len(dataset.classes),
            model_settings=plan.model,
            training=training_for(spec, plan.training, plan.model.weights),
            out_dir=run.fold_dir(spec.label, fold),
            seed=job_seed(plan.seed, spec.label, fold),
            backbone_seed=backbone_seed(plan.seed),
            desc=name,
            keep_checkpoint=True,
        )
        t_predict = time.perf_counter()
        predict_rows = (
            np.arange(len(dataset.manifest)) if plan.dump.features == "all" else test_rows
        )
        outputs = predict_features(
            result.model,
            dataset.images[predict_rows],
            blocks=plan.dump.blocks,
            batch_size=plan.training.batch_size,
            image_size=plan.model.image_size,
            run_eagerly=plan.training.run_eagerly,
        )
        predict_seconds = time.perf_counter() - t_predict
    except BiomarkError:
        raise
    except (ValueError, RuntimeError, OSError, MemoryError) as err:
        raise RunError(
            f"{name} failed ({type(err).__name__}: {err}); finished folds are kept, re-run to "
            "resume"
        ) from err
    return result, outputs, predict_rows, predict_seconds


def _dump(
    run: RunFolder,
    plan: Plan,
    dataset: Dataset,
    label: str,
    fold: int,
    outputs: dict[str, np.ndarray],
    predict_rows: np.ndarray,
    rows: tuple[np.ndarray, np.ndarray, np.ndarray],
    fold_of: np.ndarray,
    result: Any,
) -> dict[str, Any]:
    """Write the fold's feature tables and block outputs; return the content of ``metrics.json``."""
    from biomark.train.metrics import fold_metrics

    manifest, classes = dataset.manifest, list(dataset.classes)
    train_rows, val_rows, test_rows = rows
    probs, gap = outputs.pop("probs"), outputs.pop("gap")
    pred_index = probs.argmax(axis=1)
    pred = np.asarray(classes, dtype=object)[pred_index]
    position = {row: i for i, row in enumerate(predict_rows)}
    test_pos = np.array([position[r] for r in test_rows], dtype=np.int64)
    run.write_features(
        label,
        fold,
        _meta(manifest, test_rows, fold, label, pred[test_pos]),
        gap[test_pos],
        probs[test_pos],
        classes,
    )
    if plan.dump.features == "all":
        meta_all = _meta(manifest, predict_rows, fold, label, pred)
        meta_all["in_test_fold"] = fold_of[predict_rows] == fold
        run.write_features(label, fold, meta_all, gap, probs, classes, kind="all")
    if plan.dump.blocks:
        run.write_blocks(label, fold, manifest["image_id"].to_numpy()[predict_rows], outputs)
    labels = dataset.labels_as_int()
    metrics = fold_metrics(
        labels[test_rows],
        pred_index[test_pos],
        probs[test_pos],
        classes,
        positive=plan.positive_class,
    )
    return json_ready(
        {
            "strategy": label,
            "fold": fold,
            "k": plan.cv.k,
            "seed": job_seed(plan.seed, label, fold),
            **_backbone_record(plan, StrategySpec.parse(label)),
            "n_train": len(train_rows),
            "n_val": len(val_rows),
            "n_test": len(test_rows),
            "training": result.summary(),
            "metrics": metrics,
        }
    )


def _backbone_record(plan: Plan, spec: StrategySpec) -> dict[str, int]:
    """``{"backbone_seed": ...}`` for a random-features control (the run's controls and their folds
    share that backbone), else nothing."""
    from biomark.models.strategies import is_random_control

    if not is_random_control(spec, plan.model.weights):
        return {}
    return {"backbone_seed": backbone_seed(plan.seed)}
