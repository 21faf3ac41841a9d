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
checkpoint, all in this loop rather than in Keras callbacks, so that every
piece of state is in one place and can be saved. The training recipe (AdamW,
warm-up and cosine decay, label smoothing, per-image standardisation,
BatchNormalization momentum 0.9, zero-initialised residual blocks) is the
plan's ``model`` and ``training`` settings; see :mod:`biomark.config`.

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
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, get_args

import keras
import numpy as np
import pandas as pd

from biomark.config import ModelSettings, Monitor, StrategySpec, TrainingSettings
from biomark.exceptions import ConfigError
from biomark.io.atomic import atomic_path, write_csv_atomic
from biomark.progress import progress
from biomark.train.accelerate import (
    allow_jit,
    compile_counters,
    configure_threads,
    counter_delta,
    enable_compilation_cache,
    has_gpu,
    jit_compile_setting,
    mixed_policy,
)
from biomark.train.batchnorm import recalibrate_batchnorm
from biomark.train.checkpoint import CHECKPOINT_FILE, FoldCheckpoint, StoppingState, fingerprint
from biomark.train.class_weights import class_weights
from biomark.train.evaluate import predict_probs, sparse_crossentropy
from biomark.train.fitcheck import fit_check, fit_sample_rows
from biomark.train.result import TrainResult
from biomark.train.reuse import compiled_model
from biomark.train.schedule import WarmupCosine, learning_rate_for, make_optimizer, schedule_lengths

__all__ = [
    "CHECKPOINT_FILE",
    "HISTORY_FILE",
    "MODEL_FILE",
    "TrainResult",
    "backend_info",
    "learning_rate_for",
    "make_optimizer",
    "mixed_precision",
    "recalibrate_batchnorm",
    "save_model_atomic",
    "train_fold",
]

logger = logging.getLogger(__name__)

MODEL_FILE = "model.keras"
HISTORY_FILE = "history.csv"
_MONITORS: tuple[str, ...] = get_args(Monitor)  # a hand-built EarlyStoppingSettings skips the plan's check
#: Training batches used to re-estimate BatchNormalization statistics
#: (``training.batchnorm_recalibration``): before each validation, and at the end.
EPOCH_BN_BATCHES = 16
FINAL_BN_BATCHES = 64
#: Training batches used to re-estimate the statistics for the fit check.
CHECK_BN_BATCHES = 16
#: Settings that change speed only, not the trained model: left out of the
#: checkpoint's fingerprint, so a resumed fold may use other loader settings.
_SPEED_ONLY = ("cache_in_memory", "loader_workers", "loader_queue_size", "xla_cache", "threads")


def backend_info() -> dict[str, Any]:
    """Keras version, backend and the devices it computes on (for ``run.json``)."""
    try:
        devices = list(keras.distribution.list_devices())
    except (NotImplementedError, RuntimeError, ValueError) as err:  # pragma: no cover - backend specific
        devices = [f"unknown ({err})"]
    return {
        "keras": keras.__version__,
        "backend": keras.backend.backend(),
        "devices": devices,
        "floatx": keras.config.floatx(),
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


def _compile_for(training: TrainingSettings, strategy: StrategySpec) -> Callable[[keras.Model], WarmupCosine]:
    """A function that compiles a model for this training and returns its schedule."""

    def compile_model(model: keras.Model) -> WarmupCosine:
        schedule = WarmupCosine(learning_rate_for(strategy, training), cosine=training.schedule == "cosine")
        allow_jit(model)
        model.compile(
            optimizer=make_optimizer(training.optimizer, schedule, training.weight_decay),
            loss=keras.losses.CategoricalCrossentropy(label_smoothing=training.label_smoothing),
            # A metric object (not the string "accuracy") and an optimizer built
            # before the first step mean no variable is created while the train
            # step is traced; otherwise TensorFlow traces the whole step twice.
            metrics=[keras.metrics.CategoricalAccuracy(name="accuracy")],
            jit_compile=jit_compile_setting(),
        )
        return schedule

    return compile_model


def _read(variable: Any) -> np.ndarray:
    return np.array(keras.ops.convert_to_numpy(variable))


class _CheckpointWriter:
    """Writes each epoch's checkpoint in a background thread while the next epoch trains.

    The writing (tens of MB) would otherwise stall training at every epoch's
    end. One write at a time: a new one first waits for the previous, and a
    write's error surfaces at the next :meth:`save` or :meth:`wait`. The file
    is replaced atomically, so a kill during a write leaves the previous
    epoch's checkpoint.
    """

    def __init__(self) -> None:
        from concurrent.futures import ThreadPoolExecutor

        self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="biomark-checkpoint")
        self._pending: Any = None

    def save(self, state: FoldCheckpoint, path: Path) -> None:
        """Write a snapshot of ``state`` (later changes to it are not written)."""
        self.wait()
        snapshot = dataclasses.replace(
            state, history=[dict(r) for r in state.history],
            stopping=None if state.stopping is None else dataclasses.replace(state.stopping),
            fit_check=None if state.fit_check is None else dict(state.fit_check),
        )
        self._pending = self._pool.submit(snapshot.save, path)

    def wait(self) -> None:
        """Block until the last write is on disk; re-raise its error."""
        if self._pending is not None:
            pending, self._pending = self._pending, None
            pending.result()

    def close(self) -> None:
        self._pool.shutdown(wait=True)


@dataclass
class _EpochTimes:
    """Seconds of the epochs run in this call, by kind."""

    total: list[float] = field(default_factory=list)
    steps: list[float] = field(default_factory=list)
    validation: float = 0.0
    batchnorm: float = 0.0
    check: float = 0.0

    def summary(self) -> dict[str, float | None]:
        later = self.steps[1:]
        extra = self.steps[0] - float(np.median(later)) if later else None
        return {
            "steps": round(sum(self.steps), 3),
            "validation": round(self.validation, 3),
            "batchnorm": round(self.batchnorm, 3),
            "check": round(self.check, 3),
            "first_epoch_extra": None if extra is None else round(extra, 3),
        }


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
    from biomark.models.mobilenet import backbone_is_random, build_model
    from biomark.train.loader import ImageBatches

    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    stopping_settings = training.early_stopping
    if stopping_settings.monitor not in _MONITORS:
        raise ConfigError(
            f"training.early_stopping.monitor={stopping_settings.monitor!r}: use one of {', '.join(_MONITORS)}"
        )
    name = desc or strategy.label
    train_rows = np.asarray(train_rows, dtype=np.int64)
    val_rows = np.asarray([] if val_rows is None else val_rows, dtype=np.int64)
    labels = np.asarray(labels, dtype=np.int64)
    threads = configure_threads(training.threads)
    lr = learning_rate_for(strategy, training)
    class_weight = class_weights(labels[train_rows], n_classes, training.class_weight)
    xla_cache = enable_compilation_cache(training.xla_cache)
    counters_before = compile_counters()
    loader = {
        "image_size": model_settings.image_size,
        "batch_size": training.batch_size,
        "in_memory": training.cache_in_memory,
        "workers": training.loader_workers,
        "max_queue_size": training.loader_queue_size,
        "use_multiprocessing": False,
    }
    train_data = ImageBatches(images, labels, rows=train_rows, shuffle=True, seed=seed,
                              drop_remainder=training.drop_remainder, n_classes=n_classes, **loader)
    # Unlabelled, padded: scored against the labels here (biomark.train.evaluate).
    val_data = ImageBatches(images, rows=val_rows, pad_to_batch=True, **loader) if len(val_rows) else None
    fit_rows = train_rows[fit_sample_rows(len(train_rows), seed)]
    fit_data = ImageBatches(images, rows=fit_rows, pad_to_batch=True, **loader)
    early = stopping_settings.enabled and (val_data is not None or not stopping_settings.monitor.startswith("val_"))
    if stopping_settings.enabled and not early:
        logger.warning("%s: no validation images (cv.validation_fraction=0?), so early stopping on %s is off; "
                       "training runs all %d epochs", name, stopping_settings.monitor, training.epochs)
    key = fingerprint(
        strategy=strategy.label, seed=int(seed), n_classes=int(n_classes),
        model=dataclasses.asdict(model_settings),
        training={k: v for k, v in dataclasses.asdict(training).items() if k not in _SPEED_ONLY},
        train_rows=train_rows, val_rows=val_rows, backend=keras.backend.backend(),
    )

    with mixed_precision(training.mixed_precision) as policy:
        fresh = build_model(strategy, n_classes, model_settings, seed=seed)
        if strategy.name != "scratch" and backbone_is_random(strategy, model_settings):
            n_random = recalibrate_batchnorm(fresh, train_data, include_frozen=True)
            logger.debug("%s: random backbone (model.weights=none): %d BatchNormalization layers take their "
                         "statistics from the training images before training", name, n_random)
        cache_key = (strategy.label, repr(model_settings), repr(training), int(n_classes), policy,
                     keras.backend.backend())
        entry = compiled_model(cache_key, fresh, _compile_for(training, strategy))
        model = entry.model
        del fresh
        warmup_steps, total_steps = schedule_lengths(training, len(train_data))
        entry.schedule.configure(lr, warmup_steps, total_steps)

        state = FoldCheckpoint.load(out_dir / CHECKPOINT_FILE, key)
        if state is not None:
            for variable, value in zip(model.variables, state.model_variables):
                variable.assign(value)
            for variable, value in zip(model.optimizer.variables, state.optimizer_variables):
                variable.assign(value)
            logger.info("%s: resuming after epoch %d from %s", name, state.epoch, out_dir / CHECKPOINT_FILE)
        else:
            mode = "max" if "accuracy" in stopping_settings.monitor else "min"
            state = FoldCheckpoint(key=key, epoch=0,
                                   stopping=StoppingState(mode, stopping_settings.patience) if early else None)
        resumed_from = state.epoch
        logger.debug("%s: %d train / %d val images, %s peak lr %g (%d warm-up of %d steps), policy %s, "
                     "class weights %s, compiled model %s", name, len(train_rows), len(val_rows), training.optimizer,
                     lr, warmup_steps, total_steps, policy, class_weight, "reused" if entry.reused else "new")

        times = _EpochTimes()
        writer = _CheckpointWriter()
        bar = progress(total=training.epochs, desc=name, unit="epoch", leave=False)
        bar.n = state.epoch
        bar.refresh()
        t_loop = time.perf_counter()
        try:
            while state.epoch < training.epochs and not (state.stopping and state.stopping.should_stop):
                _run_epoch(model, state, times, train_data, val_data, fit_data, labels, val_rows, fit_rows,
                           training, class_weight, name)
                write_csv_atomic(out_dir / HISTORY_FILE, pd.DataFrame(state.history))
                t_save = time.perf_counter()
                state.model_variables = [_read(v) for v in model.variables]
                state.optimizer_variables = [_read(v) for v in model.optimizer.variables]
                writer.save(state, out_dir / CHECKPOINT_FILE)
                times.check += time.perf_counter() - t_save
                row = state.history[-1]
                bar.set_postfix({k: f"{row[k]:.3g}" for k in ("loss", "accuracy", "val_loss", "val_accuracy")
                                 if k in row}, refresh=False)
                bar.update(1)
                if after_epoch is not None:
                    writer.wait()
                    after_epoch(state.epoch)
            writer.wait()
        finally:
            writer.close()
            bar.close()
        train_seconds = time.perf_counter() - t_loop

        if stopping_settings.restore_best_weights and state.best_weights is not None:
            model.set_weights(state.best_weights)
        n_bn = 0
        if training.batchnorm_recalibration != "none":
            n_bn = recalibrate_batchnorm(model, train_data, FINAL_BN_BATCHES)
        final_pred = predict_probs(model, fit_data).argmax(axis=1)
        final_train_accuracy = float(np.mean(final_pred == labels[fit_rows]))
        model_path = save_model_atomic(model, out_dir / MODEL_FILE)
    if not keep_checkpoint:
        (out_dir / CHECKPOINT_FILE).unlink(missing_ok=True)

    history = pd.DataFrame(state.history)
    stopping = state.stopping
    later = times.total[1:]  # the first epoch of a call includes tracing (unless the model was reused)
    rate = len(train_rows) / float(np.median(later)) if later else float("nan")
    n_stepped = len(train_data) * training.batch_size if training.drop_remainder else len(train_rows)
    n_stepped = min(n_stepped, len(train_rows))
    steps_later = times.steps[1:]
    step_rate = n_stepped / float(np.median(steps_later)) if steps_later else float("nan")
    counters_after = compile_counters()
    pipeline = {
        "backend": keras.backend.backend(),
        "gpu": has_gpu(),
        "policy": policy,
        "jit_compile": model.jit_compile,  # what Keras uses (it may refuse XLA)
        "threads": threads,
        "reused_compiled_model": entry.reused,
        "xla_cache": None if xla_cache is None else str(xla_cache),
        "compile": counter_delta(counters_before, counters_after) if counters_after else None,
        "seconds": times.summary(),
        "loader": {
            "cache_in_memory": training.cache_in_memory,
            "workers": training.loader_workers,
            "queue_size": training.loader_queue_size,
            "batch_size": training.batch_size,
            "drop_remainder": training.drop_remainder,
            "train_batches": len(train_data),
            "train_images_dropped": len(train_rows) - n_stepped,
            "val_images_padded": 0 if val_data is None else val_data.n_served - val_data.n_images,
        },
    }
    return TrainResult(
        model=model,
        model_path=model_path,
        history=history,
        epochs_run=state.epoch,
        best_epoch=None if stopping is None or not stopping.best_epoch else stopping.best_epoch,
        stopped_early=bool(stopping is not None and stopping.should_stop and state.epoch < training.epochs),
        resumed_from_epoch=resumed_from,
        train_seconds=train_seconds,
        train_images_per_second=rate,
        n_train=len(train_rows),
        n_val=len(val_rows),
        optimizer=training.optimizer,
        learning_rate=lr,
        class_weight=class_weight,
        bn_recalibrated=n_bn,
        step_images_per_second=step_rate,
        first_epoch_seconds=times.total[0] if times.total else float("nan"),
        fit_check=state.fit_check,
        final_train_accuracy=final_train_accuracy,
        pipeline=pipeline,
    )


def _check_fit(model: keras.Model, train_data: Any, fit_data: Any, labels: np.ndarray, val_data: Any,
               val_labels: np.ndarray, epoch: int) -> dict[str, Any]:
    """:func:`biomark.train.fitcheck.fit_check` on the fit sample and validation images, leaving the model as it was.

    Predicts the training sample with the moving BatchNormalization
    statistics as they are, then both the sample and the validation images
    with statistics re-estimated for the current weights (which is what the
    weights have learned). The model's statistics and random-generator states
    are restored afterwards, so the check does not change the training.
    """
    kept = [_read(v) for v in model.non_trainable_variables]
    as_is = predict_probs(model, fit_data).argmax(axis=1)
    recalibrate_batchnorm(model, train_data, CHECK_BN_BATCHES)
    learned = predict_probs(model, fit_data).argmax(axis=1)
    val_pred = None if val_data is None else predict_probs(model, val_data).argmax(axis=1)
    for variable, value in zip(model.non_trainable_variables, kept):
        variable.assign(value)
    return fit_check(learned, labels, epoch, inference_predicted=as_is, val_predicted=val_pred,
                     val_labels=None if val_data is None else val_labels)


def _log_fit_check(check: dict[str, Any], name: str, recalibrated_at_end: bool) -> None:
    epoch, majority = check["epoch"], 100 * check["majority_rate"]
    if check["status"] == "cannot_fit":
        logger.warning(
            "%s cannot fit its own training set: training accuracy %.1f%% after %d epochs, not above the majority "
            "rate %.1f%% (binomial p = %.2g); its features will not mean much. Check the learning rate, the "
            "augmentation and the number of images (README, 'Training recipe')",
            name, 100 * check["train_accuracy"], epoch, majority, check["p_value"])
    elif check["status"] == "not_generalising":
        logger.warning(
            "%s learns its own training images (%.1f%% after %d epochs) but nothing that carries over: validation "
            "accuracy %.1f%%, not above its majority rate %.1f%% (binomial p = %.2g). The network is memorising; "
            "check that the labels belong to the images and that there are enough of them",
            name, 100 * check["train_accuracy"], epoch, 100 * check["val_accuracy"],
            100 * check["val_majority_rate"], check["val_p_value"])
    if check.get("inference_status") == "lags":
        # With re-estimation at the end the saved model is not affected; validation (early stopping) is.
        (logger.info if recalibrated_at_end else logger.warning)(
            "%s fits its training set (%.1f%% after %d epochs) but predicts it at %.1f%% with its BatchNormalization "
            "statistics as they stand (majority rate %.1f%%): the statistics lag behind the weights, so validation "
            "scores are pessimistic%s", name, 100 * check["train_accuracy"], epoch,
            100 * check["inference_accuracy"], majority,
            "; they are re-estimated after training" if recalibrated_at_end
            else ". Set training.batchnorm_recalibration to 'final' (or 'epoch'), or train more steps")
    if check["status"] == "fits":
        logger.debug("%s fits its training set: %.1f%% after %d epochs (majority rate %.1f%%)",
                     name, 100 * check["train_accuracy"], epoch, majority)


def _run_epoch(
    model: keras.Model,
    state: FoldCheckpoint,
    times: _EpochTimes,
    train_data: Any,
    val_data: Any,
    fit_data: Any,
    labels: np.ndarray,
    val_rows: np.ndarray,
    fit_rows: np.ndarray,
    training: TrainingSettings,
    class_weight: dict[int, float] | None,
    name: str,
) -> None:
    """Train one epoch, validate, check the fit, update early stopping; ``state`` is updated in place."""
    epoch = state.epoch + 1  # 1-based number of the epoch run now
    t0 = time.perf_counter()
    train_data.set_epoch(epoch - 1)
    fitted = model.fit(train_data, epochs=1, class_weight=class_weight, shuffle=False, verbose=0)
    t_steps = time.perf_counter() - t0
    row: dict[str, Any] = {"epoch": epoch}
    row.update({k: float(v[-1]) for k, v in fitted.history.items()})
    row["learning_rate"] = float(keras.ops.convert_to_numpy(model.optimizer.learning_rate))

    t_bn = time.perf_counter()
    if training.batchnorm_recalibration == "epoch":
        recalibrate_batchnorm(model, train_data, EPOCH_BN_BATCHES)
    bn_seconds = time.perf_counter() - t_bn

    t_val = time.perf_counter()
    if val_data is not None:
        probs = predict_probs(model, val_data)
        row["val_loss"] = sparse_crossentropy(probs, labels[val_rows])
        row["val_accuracy"] = float(np.mean(probs.argmax(axis=1) == labels[val_rows]))
    val_seconds = time.perf_counter() - t_val

    t_check = time.perf_counter()
    if training.fit_check_epoch and epoch == min(training.fit_check_epoch, training.epochs):
        state.fit_check = _check_fit(model, train_data, fit_data, labels[fit_rows], val_data,
                                     labels[val_rows], epoch)
        _log_fit_check(state.fit_check, name, training.batchnorm_recalibration != "none")
    check_seconds = time.perf_counter() - t_check

    if state.stopping is not None:
        monitored = row.get(training.early_stopping.monitor, float("nan"))
        improved = state.stopping.update(monitored, epoch)
        if improved and training.early_stopping.restore_best_weights:
            state.best_weights = [np.array(w) for w in model.get_weights()]
    seconds = time.perf_counter() - t0
    row.update({"seconds": round(seconds, 3), "step_seconds": round(t_steps, 3), "val_seconds": round(val_seconds, 3),
                "bn_seconds": round(bn_seconds, 3), "check_seconds": round(check_seconds, 3)})
    state.history.append(row)
    state.epoch = epoch
    times.total.append(seconds)
    times.steps.append(t_steps)
    times.validation += val_seconds
    times.batchnorm += bn_seconds
    times.check += check_seconds
    shown = {k: round(row[k], 4) for k in ("loss", "accuracy", "val_loss", "val_accuracy") if k in row}
    logger.debug("%s epoch %d: %s (%.1f s, steps %.1f s)", name, epoch, shown, seconds, t_steps)
