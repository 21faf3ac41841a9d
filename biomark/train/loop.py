"""Train one MobileNetV2 on one cross-validation fold: :func:`train_fold`.

One call builds the model for a strategy (:func:`biomark.models.mobilenet.build_model`),
trains it epoch by epoch on the training rows with early stopping on a
validation split (taken by the caller *inside* the training folds), and saves
it. Every file it writes lives in the fold's folder:

``model.keras``
    The trained model (best epoch when early stopping restores weights),
    written atomically.
``history.csv``
    One row per epoch: ``epoch`` (1-based), ``loss`` and ``accuracy`` (the
    training batches, with augmentation, label smoothing and class weights),
    ``val_loss`` (plain cross-entropy) and ``val_accuracy``, ``learning_rate``
    (at the epoch's end), and its time: ``seconds`` (the whole epoch),
    ``step_seconds`` (training steps), ``val_seconds`` (validation),
    ``bn_seconds`` (BatchNormalization re-estimation) and ``check_seconds``
    (the fit check and the checkpoint).
``checkpoint.npz``
    Everything needed to resume exactly (:mod:`biomark.train.checkpoint`),
    rewritten atomically after every epoch. A fold interrupted at any moment
    and trained again into the same folder ends bit for bit where an
    uninterrupted one would. ``keep_checkpoint=False`` removes it at the end.

Each epoch is one ``model.fit(..., epochs=1)`` call followed by validation,
the fit check (:mod:`biomark.train.fitcheck`), early stopping and the
checkpoint, all in one loop (:mod:`biomark.train.epochs`) rather than in Keras
callbacks, so that every piece of state is in one place and can be saved. The
training recipe (AdamW, warm-up and cosine decay, label smoothing, per-image
standardisation, BatchNormalization momentum 0.9, zero-initialised residual
blocks) is the plan's ``model`` and ``training`` settings; see
:mod:`biomark.config`.

With TensorFlow, the folds of one strategy share one compiled model
(:mod:`biomark.train.reuse`), so only the first pays for tracing. Only
backend-agnostic Keras 3 is used here; what differs by backend (XLA, thread
pools, mixed-precision policy, JAX's compilation cache) is in
:mod:`biomark.train.accelerate`.
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
from collections.abc import Callable, Hashable, Iterator
from pathlib import Path
from typing import Any, get_args

import keras
import numpy as np
import pandas as pd

from biomark.config import (
    EarlyStoppingSettings,
    ModelSettings,
    Monitor,
    StrategySpec,
    TrainingSettings,
)
from biomark.exceptions import ConfigError
from biomark.io.atomic import atomic_path
from biomark.models.strategies import is_random_control
from biomark.train.accelerate import (
    allow_jit,
    compile_counters,
    configure_threads,
    enable_compilation_cache,
    jit_compile_setting,
    mixed_policy,
)
from biomark.train.batchnorm import recalibrate_batchnorm
from biomark.train.checkpoint import CHECKPOINT_FILE, FoldCheckpoint, StoppingState, fingerprint
from biomark.train.class_weights import class_weights
from biomark.train.epochs import (
    HISTORY_FILE,
    EpochTimes,
    FoldBatches,
    confirm_final_fit,
    train_epochs,
)
from biomark.train.evaluate import predict_probs
from biomark.train.fitcheck import fit_sample_rows
from biomark.train.fold_record import loader_record, pipeline_record, throughput
from biomark.train.result import TrainResult
from biomark.train.reuse import compiled_model, schedule_key
from biomark.train.schedule import WarmupCosine, learning_rate_for, make_optimizer, schedule_lengths

__all__ = [
    "CHECKPOINT_FILE",
    "HISTORY_FILE",
    "MODEL_FILE",
    "TrainResult",
    "fingerprinted_training",
    "learning_rate_for",
    "make_optimizer",
    "mixed_precision",
    "recalibrate_batchnorm",
    "save_model_atomic",
    "train_fold",
]

logger = logging.getLogger(__name__)

MODEL_FILE = "model.keras"
_MONITORS: tuple[str, ...] = get_args(
    Monitor
)  # a hand-built EarlyStoppingSettings skips the plan's check
#: Training batches used to re-estimate BatchNormalization statistics after
#: training (``training.batchnorm_recalibration``; before each validation:
#: :data:`biomark.train.epochs.EPOCH_BN_BATCHES`).
FINAL_BN_BATCHES = 64
#: Settings that change speed only, not the trained model: left out of the
#: checkpoint's fingerprint, so a resumed fold may use other loader settings.
_SPEED_ONLY = ("cache_in_memory", "loader_workers", "loader_queue_size", "xla_cache", "threads")
#: Settings added after checkpoints were first written, with the value that does what those
#: checkpoints' training did: left out of the fingerprint at that value, so a fold
#: interrupted before the setting existed still resumes.
_OMITTED_AT = {"run_eagerly": False}


def fingerprinted_training(training: TrainingSettings) -> dict[str, Any]:
    """The training settings a fold's checkpoint fingerprint covers.

    Speed-only settings are left out (a resume may use other loader
    settings), and so is a setting added later while it has the value that
    reproduces older checkpoints' training (:data:`_OMITTED_AT`).

    Examples
    --------
    >>> "run_eagerly" in fingerprinted_training(TrainingSettings())
    False
    >>> fingerprinted_training(TrainingSettings(run_eagerly=True))["run_eagerly"]
    True
    """
    return {
        k: v
        for k, v in dataclasses.asdict(training).items()
        if k not in _SPEED_ONLY and not (k in _OMITTED_AT and v == _OMITTED_AT[k])
    }


@contextlib.contextmanager
def mixed_precision(enabled: bool) -> Iterator[str]:
    """Set Keras's global dtype policy for the block; restore it after.

    Yields the policy name in force (``float32`` when not enabled;
    ``mixed_float16`` on a GPU, ``mixed_bfloat16`` otherwise).
    """
    previous = keras.mixed_precision.global_policy()
    if not enabled:
        yield previous.name
        return
    policy = mixed_policy()
    keras.mixed_precision.set_global_policy(policy)
    try:
        yield policy
    finally:
        keras.mixed_precision.set_global_policy(previous)


def save_model_atomic(model: keras.Model, path: str | Path) -> Path:
    """Save a Keras model as ``.keras`` so readers never see half a file.

    Written through :func:`biomark.io.atomic.atomic_path` (temporary file in
    the same folder, then :func:`os.replace`; a full disk or a read-only folder
    becomes a named error). Keras insists on the ``.keras`` suffix, so the
    temporary name keeps it (``keep_suffix``).
    """
    with atomic_path(path, suffix=".keras", keep_suffix=True) as tmp:
        model.save(tmp, overwrite=True)
    return Path(path)


def _compile_for(
    training: TrainingSettings, strategy: StrategySpec
) -> Callable[[keras.Model], WarmupCosine]:
    """A function that compiles a model for this training and returns its schedule."""

    def compile_model(model: keras.Model) -> WarmupCosine:
        schedule = WarmupCosine(
            learning_rate_for(strategy, training), cosine=training.schedule == "cosine"
        )
        allow_jit(model)
        model.compile(
            optimizer=make_optimizer(training.optimizer, schedule, training.weight_decay),
            loss=keras.losses.CategoricalCrossentropy(label_smoothing=training.label_smoothing),
            # A metric object (not the string "accuracy") and an optimizer built
            # before the first step mean no variable is created while the train
            # step is traced; otherwise TensorFlow traces the whole step twice.
            metrics=[keras.metrics.CategoricalAccuracy(name="accuracy")],
            jit_compile=jit_compile_setting(),
            run_eagerly=training.run_eagerly,
        )
        return schedule

    return compile_model


def train_fold(
    images: np.ndarray,
    labels: np.ndarray,
    train_rows: np.ndarray,
    val_rows: np.ndarray | None,
    *,
    strategy: StrategySpec,
    n_classes: int,
    model_settings: ModelSettings,
    training: TrainingSettings,
    out_dir: str | Path,
    seed: int = 0,
    backbone_seed: int | None = None,
    desc: str = "",
    after_epoch: Callable[[int], None] | None = None,
    keep_checkpoint: bool = False,
) -> TrainResult:
    """Build, train and save the model of one (strategy, fold).

    Parameters
    ----------
    images : ndarray of shape (n_images, side, side), uint8
        The dataset's image cache (memory-mapped is fine).
    labels : ndarray of shape (n_images,), int
        Class index of every cached image.
    train_rows : ndarray of shape (n_train,), int
        Cache rows to fit on.
    val_rows : ndarray of shape (n_val,), int, or None
        Cache rows for early stopping (taken from inside the training folds).
        Empty or None disables early stopping on ``val_*`` monitors.
    strategy : StrategySpec
        ``scratch``, ``frozen`` or ``finetune:N``.
    n_classes : int
        Number of output classes.
    model_settings : ModelSettings
        The plan's ``model`` section (``image_size`` sets the input side; the
        cache is resized once when it differs).
    training : TrainingSettings
        The plan's ``training`` section.
    out_dir : str or Path
        The fold's folder; ``model.keras``, ``history.csv`` and
        ``checkpoint.npz`` go here. A checkpoint of the same fold and settings
        resumes training from it.
    seed : int, default 0
        Seeds the model's initial weights, augmentation, dropout and the
        order of the training images.
    backbone_seed : int, optional
        Seeds the random backbone of a random-features control (a pretrained
        strategy with ``model.weights: none``) on its own, so that the folds
        given one ``backbone_seed`` share one backbone
        (:func:`biomark.models.mobilenet.build_model`); part of the
        checkpoint's fingerprint for such a control. Ignored otherwise.
    desc : str
        Label of the progress bar and log lines (e.g. ``"scratch fold 3"``).
    after_epoch : callable, optional
        Called with the 1-based epoch after its checkpoint is written.
    keep_checkpoint : bool, default False
        Leave ``checkpoint.npz`` in place after training (for a caller that
        writes more outputs and removes it once they are safe, as
        :func:`biomark.pipelines.extract_job.run_job` does).

    Returns
    -------
    TrainResult

    Raises
    ------
    ConfigError
        If ``training.optimizer`` or the early-stopping monitor is unknown.
    WeightsError
        If a pretrained strategy's backbone weights cannot be loaded.
    """
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    stopping_settings = training.early_stopping
    _check_monitor(stopping_settings.monitor)
    name = desc or strategy.label
    train_rows = np.asarray(train_rows, dtype=np.int64)
    val_rows = np.asarray([] if val_rows is None else val_rows, dtype=np.int64)
    labels = np.asarray(labels, dtype=np.int64)
    threads = configure_threads(training.threads)
    lr = learning_rate_for(strategy, training)
    class_weight = class_weights(labels[train_rows], n_classes, training.class_weight)
    xla_cache = enable_compilation_cache(training.xla_cache)
    counters_before = compile_counters()
    batches = _fold_batches(
        images,
        labels,
        train_rows,
        val_rows,
        model_settings=model_settings,
        training=training,
        n_classes=n_classes,
        seed=seed,
    )
    fold = _FoldData(name, labels, train_rows, val_rows, lr, class_weight, batches)
    early = _early_stopping_on(training, batches, name)
    random_control = is_random_control(strategy, model_settings.weights)
    backbone_seed = backbone_seed if random_control else None
    key = _fold_key(
        strategy, (seed, backbone_seed), n_classes, model_settings, training, train_rows, val_rows
    )

    warmup_steps, total_steps = schedule_lengths(training, len(batches.train))
    with mixed_precision(training.mixed_precision) as policy:
        entry = _compiled_fold_model(
            strategy,
            n_classes,
            model_settings,
            training,
            (seed, backbone_seed),
            policy,
            batches,
            name,
            schedule=schedule_key(lr, warmup_steps, total_steps),
        )
        model = entry.model
        entry.schedule.configure(lr, warmup_steps, total_steps)

        state = _resume_or_start(
            model, out_dir / CHECKPOINT_FILE, key, stopping_settings, early, name
        )
        run = _Execution(threads, xla_cache, counters_before, policy, entry.reused, state.epoch)
        _log_start(fold, training, run, (warmup_steps, total_steps))
        run.times, run.train_seconds = train_epochs(
            model,
            state,
            batches,
            labels,
            val_rows,
            training,
            class_weight,
            name,
            out_dir,
            after_epoch,
            random_backbone=random_control,
        )
        finished = _finish_model(model, state, batches, labels, training, out_dir, name)
    if not keep_checkpoint:
        (out_dir / CHECKPOINT_FILE).unlink(missing_ok=True)
    return _train_result(model, state, fold, training, finished, run)


@dataclasses.dataclass(frozen=True)
class _FoldData:
    """One fold's name, checked labels and rows, batches, peak learning rate and class weights."""

    name: str
    labels: np.ndarray
    train_rows: np.ndarray
    val_rows: np.ndarray
    learning_rate: float
    class_weight: dict[int, float] | None
    batches: FoldBatches


@dataclasses.dataclass
class _Execution:
    """How this call runs the fold (``TrainResult``'s execution fields); times set once trained."""

    threads: dict[str, Any]  # configure_threads
    xla_cache: Path | None
    counters_before: dict[str, float]  # compile_counters before the fold
    policy: str  # the dtype policy in force
    reused: bool  # the compiled model was an earlier fold's
    resumed_from: int  # epochs restored from the checkpoint
    times: EpochTimes = dataclasses.field(default_factory=EpochTimes)
    train_seconds: float = 0.0


def _log_start(
    fold: _FoldData, training: TrainingSettings, run: _Execution, steps: tuple[int, int]
) -> None:
    """Log (debug) what the fold trains with; ``steps``: the schedule's warm-up and total steps."""
    logger.debug(
        "%s: %d train / %d val images, %s peak lr %g (%d warm-up of %d steps), policy %s, "
        "class weights %s, compiled model %s",
        fold.name,
        len(fold.train_rows),
        len(fold.val_rows),
        training.optimizer,
        fold.learning_rate,
        *steps,
        run.policy,
        fold.class_weight,
        "reused" if run.reused else "new",
    )


def _train_result(
    model: keras.Model,
    state: FoldCheckpoint,
    fold: _FoldData,
    training: TrainingSettings,
    finished: tuple[int, float, Path],
    run: _Execution,
) -> TrainResult:
    """The fold's :class:`TrainResult`, with its throughput and ``pipeline`` record.

    Parameters
    ----------
    model : keras.Model
    state : FoldCheckpoint
        After the last epoch (history, early stopping, fit check).
    fold : _FoldData
    training : TrainingSettings
    finished : tuple of (int, float, Path)
        What :func:`_finish_model` returned.
    run : _Execution
    """
    n_bn, final_train_accuracy, model_path = finished
    n_train, times = len(fold.train_rows), run.times
    rate, step_rate, n_stepped = throughput(times, n_train, len(fold.batches.train), training)
    pipeline = pipeline_record(
        model,
        run.policy,
        run.threads,
        reused=run.reused,
        xla_cache=run.xla_cache,
        counters_before=run.counters_before,
        times=times,
        loader=loader_record(training, fold.batches, n_train - n_stepped),
    )
    stopping = state.stopping
    return TrainResult(
        model=model,
        model_path=model_path,
        history=pd.DataFrame(state.history),
        epochs_run=state.epoch,
        best_epoch=None if stopping is None or not stopping.best_epoch else stopping.best_epoch,
        stopped_early=bool(
            stopping is not None and stopping.should_stop and state.epoch < training.epochs
        ),
        resumed_from_epoch=run.resumed_from,
        train_seconds=run.train_seconds,
        train_images_per_second=rate,
        n_train=n_train,
        n_val=len(fold.val_rows),
        optimizer=training.optimizer,
        learning_rate=fold.learning_rate,
        class_weight=fold.class_weight,
        bn_recalibrated=n_bn,
        step_images_per_second=step_rate,
        first_epoch_seconds=times.total[0] if times.total else float("nan"),
        fit_check=state.fit_check,
        final_train_accuracy=final_train_accuracy,
        pipeline=pipeline,
    )


def _check_monitor(monitor: str) -> None:
    """Reject an early-stopping monitor the loop does not record."""
    if monitor not in _MONITORS:
        raise ConfigError(
            f"training.early_stopping.monitor={monitor!r}: use one of {', '.join(_MONITORS)}"
        )


def _fold_key(
    strategy: StrategySpec,
    seeds: tuple[int, int | None],
    n_classes: int,
    model_settings: ModelSettings,
    training: TrainingSettings,
    train_rows: np.ndarray,
    val_rows: np.ndarray,
) -> str:
    """The fingerprint a checkpoint must carry to be resumed: everything that shapes the
    training (``seeds``: the fold's seed and, for a random-features control, its backbone seed)."""
    seed, backbone_seed = seeds
    # a control's backbone seed only where it is used, so other checkpoints keep their fingerprint
    shared = {} if backbone_seed is None else {"backbone_seed": int(backbone_seed)}
    return fingerprint(
        strategy=strategy.label,
        seed=int(seed),
        **shared,
        n_classes=int(n_classes),
        model=dataclasses.asdict(model_settings),
        training=fingerprinted_training(training),
        train_rows=train_rows,
        val_rows=val_rows,
        backend=keras.backend.backend(),
    )


def _fold_batches(
    images: np.ndarray,
    labels: np.ndarray,
    train_rows: np.ndarray,
    val_rows: np.ndarray,
    *,
    model_settings: ModelSettings,
    training: TrainingSettings,
    n_classes: int,
    seed: int,
) -> FoldBatches:
    """The training, validation and fit-check batches of one fold, built with the plan's loader
    settings."""
    from biomark.train.loader import ImageBatches

    loader: dict[str, Any] = {
        "image_size": model_settings.image_size,
        # No batch larger than the fold's training images: the validation and fit-check batches
        # are padded to the batch size, and a training.batch_size of 100,000 padded a fold's few
        # validation films to 100,000 zero images (the process was killed for memory).
        "batch_size": min(training.batch_size, max(1, len(train_rows))),
        "in_memory": training.cache_in_memory,
        "workers": training.loader_workers,
        "max_queue_size": training.loader_queue_size,
        "use_multiprocessing": False,
    }
    train_data = ImageBatches(
        images,
        labels,
        rows=train_rows,
        shuffle=True,
        seed=seed,
        drop_remainder=training.drop_remainder,
        n_classes=n_classes,
        **loader,
    )
    # Unlabelled, padded: scored against the labels here (biomark.train.evaluate).
    val_data = (
        ImageBatches(images, rows=val_rows, pad_to_batch=True, **loader) if len(val_rows) else None
    )
    fit_rows = train_rows[fit_sample_rows(len(train_rows), seed)]
    fit_data = ImageBatches(images, rows=fit_rows, pad_to_batch=True, **loader)
    return FoldBatches(train=train_data, val=val_data, fit=fit_data, fit_rows=fit_rows)


def _early_stopping_on(training: TrainingSettings, batches: FoldBatches, name: str) -> bool:
    """Whether early stopping runs: enabled, and its monitor has values (``val_*`` needs validation
    images)."""
    stopping_settings = training.early_stopping
    early = stopping_settings.enabled and (
        batches.val is not None or not stopping_settings.monitor.startswith("val_")
    )
    if stopping_settings.enabled and not early:
        logger.warning(
            "%s: no validation images (cv.validation_fraction=0?), so early stopping on %s is off; "
            "training runs all %d epochs",
            name,
            stopping_settings.monitor,
            training.epochs,
        )
    return early


def _compiled_fold_model(
    strategy: StrategySpec,
    n_classes: int,
    model_settings: ModelSettings,
    training: TrainingSettings,
    seeds: tuple[int, int | None],
    policy: str,
    batches: FoldBatches,
    name: str,
    schedule: Hashable = None,
) -> Any:
    """The compiled model of this (strategy, settings), with fresh seeded weights.

    ``seeds`` is the fold's seed and its backbone seed (None: the fold's seed
    draws the backbone too; see :func:`biomark.models.mobilenet.build_model`).
    A pretrained strategy whose backbone is random (``model.weights: none``)
    takes its BatchNormalization statistics from the fold's training images
    first, so the folds of a control that share one backbone still differ in
    those statistics.
    The compiled model is shared by the folds of one strategy
    (:func:`biomark.train.reuse.compiled_model`), and under JAX by the folds
    whose learning-rate schedule is the same (``schedule``,
    :func:`biomark.train.reuse.schedule_key`); its entry also holds the
    learning-rate schedule.
    """
    from biomark.models.memory import check_training_fits
    from biomark.models.mobilenet import build_model

    seed, backbone_seed = seeds
    fresh = build_model(strategy, n_classes, model_settings, seed=seed, backbone_seed=backbone_seed)
    check_training_fits(fresh, batches.train.batch_size, name=name)
    if is_random_control(strategy, model_settings.weights):
        n_random = recalibrate_batchnorm(
            fresh, batches.train, include_frozen=True, run_eagerly=training.run_eagerly
        )
        logger.debug(
            "%s: random backbone (model.weights=none): %d BatchNormalization layers take their "
            "statistics from the training images before training",
            name,
            n_random,
        )
    cache_key = (
        strategy.label,
        repr(model_settings),
        repr(training),
        int(n_classes),
        policy,
        keras.backend.backend(),
        schedule,
    )
    return compiled_model(cache_key, fresh, _compile_for(training, strategy))


def _resume_or_start(
    model: keras.Model,
    path: Path,
    key: str,
    stopping_settings: EarlyStoppingSettings,
    early: bool,
    name: str,
) -> FoldCheckpoint:
    """The fold's checkpoint at ``path`` loaded into ``model`` when it matches ``key``, else a fresh
    state."""
    state = FoldCheckpoint.load(path, key)
    if state is not None:
        for variable, value in zip(model.variables, state.model_variables, strict=True):
            variable.assign(value)
        for variable, value in zip(
            model.optimizer.variables, state.optimizer_variables, strict=True
        ):
            variable.assign(value)
        logger.info("%s: resuming after epoch %d from %s", name, state.epoch, path)
        return state
    mode = "max" if "accuracy" in stopping_settings.monitor else "min"
    return FoldCheckpoint(
        key=key,
        epoch=0,
        stopping=StoppingState(mode, stopping_settings.patience) if early else None,
    )


def _finish_model(
    model: keras.Model,
    state: FoldCheckpoint,
    batches: FoldBatches,
    labels: np.ndarray,
    training: TrainingSettings,
    out_dir: Path,
    name: str,
) -> tuple[int, float, Path]:
    """Restore the best weights, re-estimate BatchNormalization, score the fit sample (and read
    the fit check again on it) and save the model.

    Returns the number of BatchNormalization layers re-estimated, the final
    accuracy on the fit-check sample and the path of ``model.keras``.
    """
    if training.early_stopping.restore_best_weights and state.best_weights is not None:
        model.set_weights(state.best_weights)
    n_bn = 0
    if training.batchnorm_recalibration != "none":
        n_bn = recalibrate_batchnorm(model, batches.train, FINAL_BN_BATCHES)
    final_pred = predict_probs(model, batches.fit).argmax(axis=1)
    final_train_accuracy = float(np.mean(final_pred == labels[batches.fit_rows]))
    confirm_final_fit(state, final_pred, labels[batches.fit_rows], name)
    return n_bn, final_train_accuracy, save_model_atomic(model, out_dir / MODEL_FILE)
