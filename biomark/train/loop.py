"""Train one MobileNetV2 on one cross-validation fold: :func:`train_fold`.

One call builds the model for a strategy (:func:`biomark.models.mobilenet.build_model`),
compiles it, fits it on the training rows with early stopping on a validation
split (taken by the caller *inside* the training folds), and saves it. Every
file it writes lives in the fold's folder:

``model.keras``
    The trained model (best epoch when early stopping restores weights),
    written atomically.
``history.csv``
    One row per epoch: ``epoch`` (1-based), ``loss``, ``accuracy``,
    ``val_loss``, ``val_accuracy``, ``learning_rate``, ``seconds`` (the whole
    epoch) and ``step_seconds`` (its training steps only: validation and
    BatchNormalization re-estimation excluded).
``backup/``
    :class:`keras.callbacks.BackupAndRestore` state while training runs. A
    fold interrupted mid-training resumes from its last finished epoch when
    trained again into the same folder; the folder is removed when training
    ends normally.

Choices the paper leaves open (it states none of optimizer, learning rate,
epochs or batch size) are plan settings (``training.*``); see
:func:`learning_rate_for` for why fine-tuning uses a smaller rate.

Only backend-agnostic Keras 3 is used, so ``KERAS_BACKEND=jax`` runs the same
code on a GPU; what differs by backend (XLA, mixed-precision policy, JAX's
persistent compilation cache) is in :mod:`biomark.train.accelerate`. The input
pipeline follows the plan's ``training`` settings: the fold's images are
copied into RAM once (``cache_in_memory``), batches are assembled ahead in
threads (``loader_workers``), and batch shapes are the same in every step and
fold (``drop_remainder`` for training; validation batches are padded and the
padding masked), so XLA compiles each step once per strategy and the
compilation cache serves the other folds. What was used is recorded per fold
(:attr:`TrainResult.pipeline`).
"""

from __future__ import annotations

import contextlib
import logging
import math
import os
import shutil
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterator, Sequence

import keras
import numpy as np
import pandas as pd

from biomark.config import ModelSettings, StrategySpec, TrainingSettings
from biomark.exceptions import ConfigError
from biomark.train.accelerate import (
    allow_jit,
    compile_counters,
    counter_delta,
    enable_compilation_cache,
    has_gpu,
    jit_compile_setting,
    mixed_policy,
)
from biomark.train.batchnorm import recalibrate_batchnorm
from biomark.train.callbacks import EpochBackup, EpochRecorder, PaddedValidation

__all__ = [
    "HISTORY_FILE",
    "MODEL_FILE",
    "TrainResult",
    "backend_info",
    "balanced_class_weight",
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
BACKUP_DIR = "backup"
_MONITORS = ("loss", "accuracy", "val_loss", "val_accuracy")
#: Training batches used to re-estimate BatchNormalization statistics before
#: each validation, and once more after training.
EPOCH_BN_BATCHES = 16
FINAL_BN_BATCHES = 64


@dataclass
class TrainResult:
    """What :func:`train_fold` produced.

    Attributes
    ----------
    model : keras.Model
        The trained model (weights of the best epoch when early stopping
        restores them).
    model_path : Path
        Where ``model`` was saved (``model.keras``).
    history : DataFrame
        One row per epoch, including epochs run before a resume.
    epochs_run : int
        Epochs trained in total (early stopping may end before ``epochs``).
    best_epoch : int or None
        1-based epoch with the best monitored value (None without a monitor).
    stopped_early : bool
        Whether early stopping ended training.
    resumed_from_epoch : int
        Epochs restored from ``backup/`` (0 for a fresh start).
    train_seconds : float
        Wall time of ``model.fit`` in this call.
    train_images_per_second : float
        Training throughput of the median epoch after the first (the first
        includes graph tracing; validation is included); NaN when fewer than
        two epochs ran in this call.
    step_images_per_second : float
        Images per second in the training steps alone (``step_seconds`` of
        ``history.csv``, median epoch after the first; images of full batches
        only); NaN when fewer than two epochs ran in this call.
    first_epoch_seconds : float
        Wall time of this call's first epoch (includes tracing and XLA
        compilation, or loading it from the compilation cache); NaN when no
        epoch ran.
    n_train, n_val : int
        Images used to fit and for early stopping.
    optimizer : str
    learning_rate : float
    class_weight : dict of int to float, or None
    bn_recalibrated : int
        BatchNormalization layers whose moving statistics were re-estimated
        after training (:func:`recalibrate_batchnorm`).
    pipeline : dict
        How the fold was computed: Keras ``backend``, ``gpu`` (bool), dtype
        ``policy``, ``jit_compile``, ``xla_cache`` (folder, or None),
        ``compile`` (JAX only: ``compiles``, ``compile_seconds``,
        ``cache_hits``, ``cache_misses``, ``compile_seconds_saved`` during
        this fold; None with TensorFlow) and ``loader`` (``cache_in_memory``,
        ``workers``, ``queue_size``, ``batch_size``, ``drop_remainder``,
        ``train_batches``, ``train_images_dropped`` and ``val_images_padded``
        per epoch).
    """

    model: Any
    model_path: Path
    history: pd.DataFrame
    epochs_run: int
    best_epoch: int | None
    stopped_early: bool
    resumed_from_epoch: int
    train_seconds: float
    train_images_per_second: float
    n_train: int
    n_val: int
    optimizer: str
    learning_rate: float
    class_weight: dict[int, float] | None = field(default=None)
    bn_recalibrated: int = 0
    step_images_per_second: float = float("nan")
    first_epoch_seconds: float = float("nan")
    pipeline: dict[str, Any] = field(default_factory=dict)

    def summary(self) -> dict[str, Any]:
        """The JSON-friendly fields (everything but the model and history)."""
        return {
            "model_file": self.model_path.name,
            "epochs_run": self.epochs_run,
            "best_epoch": self.best_epoch,
            "stopped_early": self.stopped_early,
            "resumed_from_epoch": self.resumed_from_epoch,
            "train_seconds": round(self.train_seconds, 3),
            "train_images_per_second": _finite_or_none(self.train_images_per_second),
            "n_train": self.n_train,
            "n_val": self.n_val,
            "optimizer": self.optimizer,
            "learning_rate": self.learning_rate,
            "class_weight": (
                None if self.class_weight is None else {str(k): round(v, 6) for k, v in self.class_weight.items()}
            ),
            "bn_recalibrated": self.bn_recalibrated,
            "step_images_per_second": _finite_or_none(self.step_images_per_second),
            "first_epoch_seconds": _finite_or_none(self.first_epoch_seconds),
            "pipeline": self.pipeline,
        }


def _finite_or_none(value: float) -> float | None:
    return round(float(value), 3) if math.isfinite(value) else None


def learning_rate_for(strategy: StrategySpec, training: TrainingSettings) -> float:
    """The learning rate a strategy trains with.

    ``scratch`` (every weight starts random) and ``frozen`` (only the new,
    randomly initialised head trains) use ``training.learning_rate``.
    ``finetune:N`` uses the smaller ``training.finetune_learning_rate``: its
    unfrozen blocks start from pretrained weights, and large updates
    (driven by the large gradients of the still-random head) would wreck the
    very features fine-tuning means to keep - the usual Keras transfer-learning
    advice.

    Examples
    --------
    >>> learning_rate_for(StrategySpec("finetune", 3), TrainingSettings())
    0.0001
    """
    if strategy.name == "finetune":
        return float(training.finetune_learning_rate)
    return float(training.learning_rate)


def make_optimizer(name: str, learning_rate: float) -> keras.optimizers.Optimizer:
    """A fresh Keras optimizer: ``adam``, ``sgd`` (momentum 0.9) or ``rmsprop``.

    Raises
    ------
    ConfigError
        If ``name`` is not one of the three.
    """
    if name == "adam":
        return keras.optimizers.Adam(learning_rate=learning_rate)
    if name == "sgd":
        return keras.optimizers.SGD(learning_rate=learning_rate, momentum=0.9)
    if name == "rmsprop":
        return keras.optimizers.RMSprop(learning_rate=learning_rate)
    raise ConfigError(f"training.optimizer={name!r}: use 'adam', 'sgd' or 'rmsprop'")


def balanced_class_weight(labels: np.ndarray, n_classes: int) -> dict[int, float]:
    """scikit-learn's ``balanced`` class weights, ``n / (n_present * count)``.

    Parameters
    ----------
    labels : ndarray of shape (n_images,), int
        Training labels.
    n_classes : int
        Number of classes; a class absent from ``labels`` gets weight 1.0.

    Returns
    -------
    dict of int to float

    Examples
    --------
    >>> balanced_class_weight(np.array([0, 0, 0, 1]), 3)
    {0: 0.6666666666666666, 1: 2.0, 2: 1.0}
    """
    from sklearn.utils.class_weight import compute_class_weight

    present = np.unique(labels)
    weights = compute_class_weight("balanced", classes=present, y=labels)
    out = {c: 1.0 for c in range(n_classes)}
    out.update({int(c): float(w) for c, w in zip(present, weights)})
    return out


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

    Keras insists on the ``.keras`` suffix, so the temporary file is
    ``.<name>.<random>.keras`` in the same folder, then renamed.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(prefix=f".{path.stem}.", suffix=".keras", dir=path.parent)
    os.close(fd)
    try:
        model.save(tmp_name, overwrite=True)
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp_name, 0o666 & ~umask)  # mkstemp creates 0600; give the usual permissions
        os.replace(tmp_name, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp_name)
        raise
    return path


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
    extra_callbacks: Sequence[keras.callbacks.Callback] = (),
    recalibrate_bn: bool = True,
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
        The fold's folder; ``model.keras``, ``history.csv`` and ``backup/``
        go here. An existing ``backup/`` resumes training from it.
    seed : int, default 0
        Seeds Keras (``keras.utils.set_random_seed``), the model's initial
        weights and the loader's shuffling.
    desc : str
        Label of the progress bar and log lines (e.g. ``"scratch fold 3"``).
    extra_callbacks : sequence of keras.callbacks.Callback
        Extra callbacks, run after biomark's own (backup, history, early stopping).
    recalibrate_bn : bool, default True
        Re-estimate the moving statistics of the trainable BatchNormalization
        layers from training images (:func:`recalibrate_batchnorm`) before
        every validation (``EPOCH_BN_BATCHES`` batches) and after training
        (``FINAL_BN_BATCHES``). Without it the statistics that validation and
        inference use lag thousands of steps behind the weights, which makes
        ``val_loss`` (and early stopping) meaningless early on and a short
        training predict a single class.

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
    from biomark.models.mobilenet import build_model
    from biomark.train.loader import ImageBatches

    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    stopping = training.early_stopping
    if stopping.monitor not in _MONITORS:
        raise ConfigError(
            f"training.early_stopping.monitor={stopping.monitor!r}: use one of {', '.join(_MONITORS)}"
        )
    train_rows = np.asarray(train_rows, dtype=np.int64)
    val_rows = np.asarray([] if val_rows is None else val_rows, dtype=np.int64)
    labels = np.asarray(labels, dtype=np.int64)

    keras.backend.clear_session()
    keras.utils.set_random_seed(seed)
    lr = learning_rate_for(strategy, training)
    class_weight = (
        balanced_class_weight(labels[train_rows], n_classes) if training.class_weight == "balanced" else None
    )
    size = model_settings.image_size
    xla_cache = enable_compilation_cache(training.xla_cache)
    counters_before = compile_counters()
    loader = {
        "image_size": size,
        "batch_size": training.batch_size,
        "in_memory": training.cache_in_memory,
        "workers": training.loader_workers,
        "max_queue_size": training.loader_queue_size,
        "use_multiprocessing": False,
    }
    train_data = ImageBatches(
        images, labels, rows=train_rows, shuffle=True, seed=seed,
        drop_remainder=training.drop_remainder, **loader,
    )
    val_data = None
    if len(val_rows):
        # Unlabelled: PaddedValidation predicts, then scores against labels[val_rows].
        val_data = ImageBatches(images, rows=val_rows, pad_to_batch=True, **loader)
    with mixed_precision(training.mixed_precision) as policy:
        model = build_model(strategy, n_classes, model_settings, seed=seed)
        if strategy.name != "scratch" and str(model_settings.weights).strip().lower() == "none":
            n_random = recalibrate_batchnorm(model, train_data, include_frozen=True)
            logger.info(
                "%s: random backbone (model.weights=none): %d BatchNormalization layers take their "
                "statistics from the training images before training",
                desc or strategy.label, n_random,
            )
        allow_jit(model)
        jit_compile = jit_compile_setting()
        model.compile(
            optimizer=make_optimizer(training.optimizer, lr),
            loss="sparse_categorical_crossentropy",
            # A metric object (not the string "accuracy") and an optimizer built
            # here mean no variable is created while the train step is traced;
            # otherwise TensorFlow traces the whole step twice (~2x start-up).
            metrics=[keras.metrics.SparseCategoricalAccuracy(name="accuracy")],
            jit_compile=jit_compile,
        )
        model.optimizer.build(model.trainable_variables)
        recorder = EpochRecorder(out_dir / HISTORY_FILE, training.epochs, desc or strategy.label)
        # Validation only acts at epoch end and must precede every reader of
        # val_* (and the backup, which saves its re-estimated statistics).
        # BackupAndRestore must precede the others' epoch-begin hooks: it sets
        # the initial epoch they see.
        callbacks: list[keras.callbacks.Callback] = []
        if val_data is not None:
            callbacks.append(
                PaddedValidation(
                    val_data, labels[val_rows], recorder=recorder,
                    bn_batches=train_data if recalibrate_bn else None, bn_max_batches=EPOCH_BN_BATCHES,
                )
            )
        callbacks += [EpochBackup(str(out_dir / BACKUP_DIR), delete_checkpoint=True), recorder]
        early = None
        if stopping.enabled and (val_data is not None or not stopping.monitor.startswith("val_")):
            early = keras.callbacks.EarlyStopping(
                monitor=stopping.monitor,
                patience=stopping.patience,
                restore_best_weights=stopping.restore_best_weights,
            )
            callbacks.append(early)
        elif stopping.enabled:
            logger.warning(
                "%s: no validation images (cv.validation_fraction=0?), so early stopping on %s "
                "is off; training runs all %d epochs",
                desc or strategy.label, stopping.monitor, training.epochs,
            )
        logger.debug(
            "%s: %d train / %d val images, %s lr=%g, policy %s, class weights %s",
            desc or strategy.label, len(train_rows), len(val_rows), training.optimizer, lr, policy, class_weight,
        )
        callbacks.extend(extra_callbacks)
        t0 = time.perf_counter()
        model.fit(
            train_data,
            epochs=training.epochs,
            class_weight=class_weight,
            callbacks=callbacks,
            shuffle=False,  # the loader shuffles with its own seeded generator
            verbose=0,
        )
        train_seconds = time.perf_counter() - t0
        n_bn = recalibrate_batchnorm(model, train_data, FINAL_BN_BATCHES) if recalibrate_bn else 0
        model_path = save_model_atomic(model, out_dir / MODEL_FILE)
    shutil.rmtree(out_dir / BACKUP_DIR, ignore_errors=True)

    history = pd.DataFrame(recorder.rows)
    epochs_run = int(history["epoch"].max()) if len(history) else 0
    best_epoch = None
    if stopping.monitor in history.columns and len(history):
        column = history[stopping.monitor]
        best = column.idxmax() if "accuracy" in stopping.monitor else column.idxmin()
        best_epoch = int(history.loc[best, "epoch"])
    later = recorder.seconds[1:]  # the first epoch of a call includes graph tracing
    rate = len(train_rows) / float(np.median(later)) if later else float("nan")
    steps_later = recorder.step_seconds[1:]
    n_stepped = len(train_data) * training.batch_size if training.drop_remainder else len(train_rows)
    n_stepped = min(n_stepped, len(train_rows))
    step_rate = n_stepped / float(np.median(steps_later)) if steps_later else float("nan")
    counters_after = compile_counters()
    pipeline = {
        "backend": keras.backend.backend(),
        "gpu": has_gpu(),
        "policy": policy,
        "jit_compile": model.jit_compile,  # what Keras uses (it may refuse XLA)
        "xla_cache": None if xla_cache is None else str(xla_cache),
        "compile": counter_delta(counters_before, counters_after) if counters_after else None,
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
        epochs_run=epochs_run,
        best_epoch=best_epoch,
        stopped_early=bool(early is not None and early.stopped_epoch > 0),
        resumed_from_epoch=int(recorder.start_epoch or 0),
        train_seconds=train_seconds,
        train_images_per_second=rate,
        n_train=len(train_rows),
        n_val=len(val_rows),
        optimizer=training.optimizer,
        learning_rate=lr,
        class_weight=class_weight,
        bn_recalibrated=n_bn,
        step_images_per_second=step_rate,
        first_epoch_seconds=recorder.seconds[0] if recorder.seconds else float("nan"),
        pipeline=pipeline,
    )
