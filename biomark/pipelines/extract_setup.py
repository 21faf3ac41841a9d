"""Checking and preparing a ``biomark extract`` run before any training.

:func:`prepare_run` resolves the plan's dataset (generating the phantom when
asked), runs every check that can fail a run (:func:`validate_inputs`),
refuses a resume whose plan changed what the finished folds depend on
(:data:`RESUME_KEYS`), writes ``run.json`` and ``folds.csv`` and lists the
jobs; :func:`plan_run` is the same without writing anything (``--dry-run``).
:mod:`biomark.pipelines.extract` runs the jobs.
"""

from __future__ import annotations

import logging
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd

from biomark.config import (
    DEFAULT_POSITIVE_CLASS,
    Plan,
    StrategySpec,
    apply_overrides,
    check_positive_class,
    plan_hash,
    plan_to_dict,
)
from biomark.data.dataset import Dataset, dataset_paths, load_dataset
from biomark.data.folds import check_folds, make_folds, validation_split
from biomark.exceptions import ConfigError, DataError, RunError
from biomark.features.run_folder import FOLDS_FILE, RunFolder, fold_table_summary
from biomark.features.run_info import DatasetRecord, FoldsRecord, RunInfo, now_utc
from biomark.io.disk import check_writable_dir
from biomark.io.remote import is_url, redact
from biomark.pipelines.data import resolve_dataset
from biomark.pipelines.extract_job import Job
from biomark.pipelines.url_storage import run_copy_dir

__all__ = ["RESUME_KEYS", "RunSetup", "plan_run", "prepare_run", "validate_inputs"]

logger = logging.getLogger(__name__)

#: Plan sections (and settings) that must not change between the start of a run and a resume.
RESUME_KEYS: tuple[str, ...] = ("seed", "cv", "model", "training", "dump", "positive_class")


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

    @property
    def run(self) -> RunFolder:
        """The run folder."""
        return RunFolder(self.run_dir)


# --------------------------------------------------------------------------- #
# Checks and the run folder
# --------------------------------------------------------------------------- #


def validate_inputs(plan: Plan, dataset: Dataset, strategies: list[StrategySpec]) -> pd.DataFrame:
    """Every check that can fail a run, done before any training.

    Checks that the dataset has the plan's ``positive_class`` and at least two
    classes with images (and warns when the network's input is larger than the
    dataset's films), that ``cv.k`` folds are possible for every class
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
        The plan's ``positive_class`` is not one of the dataset's classes, or fewer
        than two classes have images.
    WeightsError
        A weights file that does not exist, or ImageNet weights for an
        ``alpha`` that has none.
    """
    from biomark.models.strategies import needs_pretrained
    from biomark.models.weights import resolve_backbone_weights

    manifest = dataset.manifest
    check_positive_class(plan, dataset.classes, where=str(dataset.root))
    counts = manifest["label"].value_counts()
    empty = [c for c in dataset.classes if c not in counts.index]
    if len(counts) < 2:
        raise DataError(
            f"{dataset.root}: only one class has images ({counts.index[0]}); a classifier needs two"
        )
    if empty:
        logger.warning(
            "classes without images (their output unit never trains): %s", ", ".join(empty)
        )
    if dataset.size and plan.model.image_size > dataset.size:
        logger.warning(
            "model.image_size=%d is larger than the films of %s (%d px): the network sees them "
            "enlarged, with no more detail than at %d px, at %.1f times the computation; "
            "build the dataset at %d px (`biomark data build --size %d`) or lower model.image_size",
            plan.model.image_size,
            dataset.root,
            dataset.size,
            dataset.size,
            (plan.model.image_size / dataset.size) ** 2,
            plan.model.image_size,
            plan.model.image_size,
        )
    check_folds(
        manifest,
        plan.cv.k,
        plan.cv.grouping,
        validation_fraction=plan.cv.validation_fraction,
        seed=plan.seed,
    )
    folds = make_folds(
        manifest,
        plan.cv.k,
        grouping=plan.cv.grouping,
        seed=plan.seed,
        near_duplicate_distance=plan.cv.near_duplicate_distance,
    )
    folds["label"] = manifest["label"].to_numpy()
    folds["patient_id"] = manifest["patient_id"].to_numpy()
    for fold in range(plan.cv.k):
        train = manifest[folds["fold"].to_numpy() != fold].reset_index(drop=True)
        try:
            validation_split(
                train,
                plan.cv.validation_fraction,
                grouping=plan.cv.grouping,
                seed=plan.seed + fold,
                near_duplicate_distance=plan.cv.near_duplicate_distance,
            )
        except ConfigError as err:
            raise ConfigError(f"fold {fold}: {err}") from err
    if any(needs_pretrained(s) for s in strategies):
        weights = resolve_backbone_weights(
            plan.model.weights, alpha=plan.model.alpha, image_size=plan.model.image_size
        )
        if weights == "imagenet":
            logger.info(
                "ImageNet weights are not cached yet: Keras will download them at the first "
                "pretrained job"
            )
    return folds


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


def _check_resume(
    run: RunFolder,
    plan: Plan,
    dataset: Dataset,
    dataset_dir: Path,
    folds: pd.DataFrame,
    *,
    force: bool,
    dry_run: bool,
) -> bool:
    """Whether an existing run folder is resumed (False: none, or started over with ``force``).

    Raises
    ------
    RunError
        The run was started on another manifest or with other settings (without ``force``),
        or its saved folds differ from the plan's.
    """
    if not run.has_info():
        return False
    info = run.read_info()
    same_manifest = info.dataset.manifest_sha256 == dataset.manifest_sha256
    wanted = plan_to_dict(plan)
    try:
        # settings added to biomark since the run started are read at their defaults, which do
        # what biomark did before them (e.g. training.run_eagerly: false)
        settings = plan_to_dict(info.plan_settings())
    except ConfigError:
        settings = dict(info.plan)  # a setting this version no longer reads: compared as recorded
    # a run.json from before the plan had positive_class recorded it at its top level only
    settings["positive_class"] = info.plan.get(
        "positive_class", info.positive_class or DEFAULT_POSITIVE_CLASS
    )
    changed = [key for key in RESUME_KEYS if settings.get(key) != wanted.get(key)]
    if not same_manifest and not force:
        raise RunError(
            f"{run.root}: this run was started on a dataset whose manifest differs from "
            f"{dataset_paths(dataset_dir).manifest} (sha256 {info.dataset.manifest_sha256[:12]}… "
            f"vs {dataset.manifest_sha256[:12]}…); its folds no longer apply. Use --force to start "
            "the run over, or give the plan a new name"
        )
    if changed and not force:
        raise RunError(
            f"{run.root}: the plan's {', '.join(changed)} settings differ from those this run "
            "was started with, so finished folds would not be comparable; use --force to "
            "start the run over, or give the plan a new name"
        )
    if not same_manifest or changed:
        if not dry_run:
            logger.warning(
                "%s: %s changed; --force starts the whole run over",
                run.root,
                "the dataset manifest" if not same_manifest else ", ".join(changed),
            )
            shutil.rmtree(run.root)
        return False
    if run.folds_csv.is_file():
        saved = run.read_folds()
        if not saved[["image_id", "fold"]].equals(folds[["image_id", "fold"]]):
            raise RunError(
                f"{run.root / FOLDS_FILE}: the saved folds differ from those the plan gives "
                "for this dataset; use --force to start over or give the plan a new name"
            )
    return True


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
    plan = apply_overrides(plan, {"data.dir": data_dir, "output_dir": out_dir})
    chosen = _select_strategies(plan, strategies)
    run = RunFolder(Path(plan.output_dir).expanduser() / plan.name)
    if not dry_run:  # a read-only --out fails now, not after the dataset is generated
        check_writable_dir(run.root, "output folder (--out / output_dir)")
    dataset_dir = resolve_dataset(plan, generate=not dry_run)
    if dry_run and not dataset_paths(dataset_dir).manifest.is_file():
        jobs = [Job(s.label, f) for s in chosen for f in range(plan.cv.k)]
        note = (
            f"the phantom would be generated into {dataset_dir} first; fold checks run after that"
        )
        return RunSetup(plan, run.root, dataset_dir, None, None, jobs, [note])
    dataset = load_dataset(dataset_dir)
    folds = validate_inputs(plan, dataset, chosen)
    existing = _check_resume(run, plan, dataset, dataset_dir, folds, force=force, dry_run=dry_run)
    jobs = [
        Job(s.label, f, (not force) and existing and run.is_done(s.label, f))
        for s in chosen
        for f in range(plan.cv.k)
    ]
    setup = RunSetup(plan, run.root, dataset_dir, dataset, folds, jobs)
    if not dry_run:
        _write_run_start(setup, chosen, existing)
    return setup


def _write_run_start(setup: RunSetup, chosen: list[StrategySpec], keep_history: bool) -> None:
    from biomark.provenance import environment
    from biomark.train.accelerate import configure_threads
    from biomark.train.fold_record import backend_info

    plan, run, dataset = setup.plan, setup.run, setup.dataset
    assert dataset is not None and setup.folds is not None
    run.root.mkdir(parents=True, exist_ok=True)
    previous = run.read_info() if keep_history and run.has_info() else RunInfo()
    if not run.folds_csv.is_file() or not keep_history:
        run.write_folds(setup.folds)
    labels = [s.label for s in chosen]
    known = list(previous.strategies)
    env = environment()
    # Listing the devices starts TensorFlow's runtime, which fixes its thread pools: set them
    # first, or training.threads would come too late for the folds trained in this process.
    configure_threads(plan.training.threads)
    env["keras"] = backend_info()
    now = now_utc()
    info = RunInfo(
        name=plan.name,
        created=previous.created or now,
        updated=now,
        plan=plan_to_dict(plan),
        plan_hash=plan_hash(plan),
        seed=plan.seed,
        dataset=DatasetRecord(
            dir=str(Path(setup.dataset_dir).resolve()),
            url=redact(plan.data.dir) if is_url(plan.data.dir) else None,
            manifest_sha256=dataset.manifest_sha256,
            n_images=len(dataset),
            image_size=dataset.size,
            class_counts=dataset.manifest["label"]
            .value_counts()
            .reindex(dataset.classes, fill_value=0)
            .astype(int)
            .to_dict(),
        ),
        classes=tuple(dataset.classes),
        positive_class=plan.positive_class,
        folds=FoldsRecord(
            file=FOLDS_FILE,
            grouping=plan.cv.grouping,
            seed=plan.seed,
            **_folds_summary(setup.folds, dataset.classes),
        ),
        strategies=tuple(known + [label for label in labels if label not in known]),
        environment=env,
        jobs=dict(previous.jobs),
        timings=previous.timings,
    )
    run.write_info(info)


def _folds_summary(folds: pd.DataFrame, classes: Any) -> dict[str, Any]:
    summary = fold_table_summary(folds, classes)
    return {"k": summary["k"], "sizes": tuple(summary["sizes"]), "per_class": summary["per_class"]}


def plan_run(plan: Plan, *, strategies: list[str] | None = None, force: bool = False) -> RunSetup:
    """What ``biomark extract --dry-run`` shows: every check, the jobs, and nothing written.

    A run folder at a URL is looked up in this machine's local copy of it.
    """
    out_dir = None
    if is_url(plan.output_dir):  # the client's local copy stands in for the URL
        out_dir = str(run_copy_dir(f"{plan.output_dir.rstrip('/')}/{plan.name}"))
    return prepare_run(plan, strategies=strategies, force=force, dry_run=True, out_dir=out_dir)
