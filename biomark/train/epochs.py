"""The epochs of one fold's training: :func:`train_epochs` runs them, :func:`run_epoch` one of them.

An epoch is one ``model.fit(..., epochs=1)`` call followed by validation,
the fit check (:mod:`biomark.train.fitcheck`), the early-stopping update and
the checkpoint, all here rather than in Keras callbacks, so that every piece
of state is in :class:`~biomark.train.checkpoint.FoldCheckpoint` and can be
saved (:class:`CheckpointWriter`, in a background thread) and resumed. After
every epoch ``history.csv`` is rewritten. :func:`biomark.train.loop.train_fold`
builds the model and the batches (:class:`FoldBatches`) and calls
:func:`train_epochs`.
"""

from __future__ import annotations

import dataclasses
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import keras
import numpy as np
import pandas as pd

from biomark.config import TrainingSettings
from biomark.io.atomic import write_csv_atomic
from biomark.progress import progress
from biomark.train.batchnorm import recalibrate_batchnorm
from biomark.train.checkpoint import CHECKPOINT_FILE, FoldCheckpoint
from biomark.train.evaluate import predict_probs, sparse_crossentropy
from biomark.train.fitcheck import confirm_fit, fit_check

__all__ = [
    "CHECK_BN_BATCHES",
    "EPOCH_BN_BATCHES",
    "HISTORY_FILE",
    "CheckpointWriter",
    "EpochTimes",
    "FoldBatches",
    "confirm_final_fit",
    "read_variable",
    "run_epoch",
    "train_epochs",
]

logger = logging.getLogger(__name__)

HISTORY_FILE = "history.csv"
#: Training batches used to re-estimate BatchNormalization statistics before
#: each validation (``training.batchnorm_recalibration: epoch``).
EPOCH_BN_BATCHES = 16
#: Training batches used to re-estimate the statistics for the fit check.
CHECK_BN_BATCHES = 16


def read_variable(variable: Any) -> np.ndarray:
    """A Keras variable's value as a numpy array (a copy)."""
    return np.array(keras.ops.convert_to_numpy(variable))


class CheckpointWriter:
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
            state,
            history=[dict(r) for r in state.history],
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
class EpochTimes:
    """Seconds of the epochs run in this call, by kind.

    Examples
    --------
    >>> times = EpochTimes(total=[30.0, 10.0, 12.0], steps=[25.0, 8.0, 9.0], validation=3.0)
    >>> times.summary()  # first_epoch_extra: 25 s minus the median later epoch's 8.5 s
    {'steps': 42.0, 'validation': 3.0, 'batchnorm': 0.0, 'check': 0.0, 'first_epoch_extra': 16.5}
    """

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


@dataclass
class FoldBatches:
    """The batch feeders of one fold (:class:`biomark.train.loader.ImageBatches`).

    ``train``: shuffled, labelled training batches; ``val``: the validation
    images, unlabelled and padded (scored against the labels here, by
    :mod:`biomark.train.evaluate`), or None without validation images;
    ``fit``: the fit-check sample ``fit_rows`` of the training rows.
    """

    train: Any
    val: Any
    fit: Any
    fit_rows: np.ndarray


def train_epochs(
    model: keras.Model,
    state: FoldCheckpoint,
    batches: FoldBatches,
    labels: np.ndarray,
    val_rows: np.ndarray,
    training: TrainingSettings,
    class_weight: dict[int, float] | None,
    name: str,
    out_dir: Path,
    after_epoch: Callable[[int], None] | None,
    *,
    random_backbone: bool = False,
) -> tuple[EpochTimes, float]:
    """Run the remaining epochs of ``state``, writing ``history.csv`` and the checkpoint after each.

    ``random_backbone``: the strategy is a random-features control
    (:func:`biomark.models.strategies.is_random_control`): when it cannot fit,
    the fit check logs that at INFO (the control behaving as expected) and names
    the random backbone as the reason, where another strategy gets a warning.

    Returns the epochs' times and the seconds the loop took.
    """
    times = EpochTimes()
    writer = CheckpointWriter()
    bar = progress(total=training.epochs, desc=name, unit="epoch", leave=False)
    bar.n = state.epoch
    bar.refresh()
    t_loop = time.perf_counter()
    try:
        while state.epoch < training.epochs and not (state.stopping and state.stopping.should_stop):
            run_epoch(
                model,
                state,
                times,
                batches,
                labels,
                val_rows,
                training,
                class_weight,
                name,
                random_backbone=random_backbone,
            )
            write_csv_atomic(out_dir / HISTORY_FILE, pd.DataFrame(state.history))
            t_save = time.perf_counter()
            state.model_variables = [read_variable(v) for v in model.variables]
            state.optimizer_variables = [read_variable(v) for v in model.optimizer.variables]
            writer.save(state, out_dir / CHECKPOINT_FILE)
            times.check += time.perf_counter() - t_save
            row = state.history[-1]
            bar.set_postfix(
                {
                    k: f"{row[k]:.3g}"
                    for k in ("loss", "accuracy", "val_loss", "val_accuracy")
                    if k in row
                },
                refresh=False,
            )
            bar.update(1)
            if after_epoch is not None:
                writer.wait()
                after_epoch(state.epoch)
        writer.wait()
    finally:
        writer.close()
        bar.close()
    return times, time.perf_counter() - t_loop


def _check_fit(
    model: keras.Model,
    train_data: Any,
    fit_data: Any,
    labels: np.ndarray,
    val_data: Any,
    val_labels: np.ndarray,
    epoch: int,
) -> dict[str, Any]:
    """:func:`biomark.train.fitcheck.fit_check` on the fit sample and validation images, leaving the
    model as it was.

    Predicts the training sample with the moving BatchNormalization
    statistics as they are, then both the sample and the validation images
    with statistics re-estimated for the current weights (which is what the
    weights have learned). The model's statistics and random-generator states
    are restored afterwards, so the check does not change the training.
    """
    kept = [read_variable(v) for v in model.non_trainable_variables]
    as_is = predict_probs(model, fit_data).argmax(axis=1)
    recalibrate_batchnorm(model, train_data, CHECK_BN_BATCHES)
    learned = predict_probs(model, fit_data).argmax(axis=1)
    val_pred = None if val_data is None else predict_probs(model, val_data).argmax(axis=1)
    for variable, value in zip(model.non_trainable_variables, kept, strict=True):
        variable.assign(value)
    return fit_check(
        learned,
        labels,
        epoch,
        inference_predicted=as_is,
        val_predicted=val_pred,
        val_labels=None if val_data is None else val_labels,
    )


def _log_fit_check(
    check: dict[str, Any], name: str, recalibrated_at_end: bool, *, random_backbone: bool = False
) -> None:
    epoch, majority = check["epoch"], 100 * check["majority_rate"]
    if check["status"] == "cannot_fit":
        advice = (
            "Its backbone starts from seeded random weights (model.weights: none), a "
            "random-features control that is not expected to learn much; for the paper's strategy "
            "give ImageNet weights (model.weights: imagenet, or a local .h5 file; README, "
            "'Analysis plans and the run folder')"
            if random_backbone
            else (
                "Check the learning rate, the augmentation and the number of images (README, "
                "'Training recipe')"
            )
        )
        # a random-features control that cannot fit is the control behaving as expected: logged,
        # not warned about (a warning there teaches the reader to skip warnings)
        (logger.info if random_backbone else logger.warning)(
            "%s cannot fit its own training set: training accuracy %.1f%% after %d epochs, not "
            "significantly above the majority rate %.1f%% (one-sided binomial p = %.2g, not below "
            "%g); if it still cannot after its last epoch (checked again then), its features will "
            "not mean much. %s",
            name,
            100 * check["train_accuracy"],
            epoch,
            majority,
            check["p_value"],
            check["alpha"],
            advice,
        )
    elif check["status"] == "not_generalising":
        logger.warning(
            "%s learns its own training images (%.1f%% after %d epochs) but nothing that carries "
            "over: validation accuracy %.1f%%, not significantly above its majority rate %.1f%% "
            "(one-sided binomial p = %.2g, not below %g). The network is memorising; check that "
            "the labels belong to the images and that there are enough of them",
            name,
            100 * check["train_accuracy"],
            epoch,
            100 * check["val_accuracy"],
            100 * check["val_majority_rate"],
            check["val_p_value"],
            check["alpha"],
        )
    if check.get("inference_status") == "lags":
        # With re-estimation at the end the saved model is not affected; validation (early stopping)
        # is.
        (logger.info if recalibrated_at_end else logger.warning)(
            "%s fits its training set (%.1f%% after %d epochs) but predicts it at %.1f%% with its "
            "BatchNormalization statistics as they stand (majority rate %.1f%%): the statistics "
            "lag behind the weights, so validation scores are pessimistic%s",
            name,
            100 * check["train_accuracy"],
            epoch,
            100 * check["inference_accuracy"],
            majority,
            "; they are re-estimated after training"
            if recalibrated_at_end
            else (
                ". Set training.batchnorm_recalibration to 'final' (or 'epoch'), or train more "
                "steps"
            ),
        )
    if check["status"] == "fits":
        logger.debug(
            "%s fits its training set: %.1f%% after %d epochs (majority rate %.1f%%)",
            name,
            100 * check["train_accuracy"],
            epoch,
            majority,
        )


def confirm_final_fit(
    state: FoldCheckpoint, final_predicted: np.ndarray, labels: np.ndarray, name: str
) -> None:
    """Read the fit check's sample again with the final model, record it in ``state.fit_check``
    and log what changed since the early check.

    A network can sit at its majority rate after the early check (the learning rate near its
    peak) and fit its images well by the end; the early warning is then withdrawn in the log. One
    that still cannot fit is logged again; one that fitted early and no longer does is warned
    about. Nothing is done when the check ran after the last epoch or not at all.
    """
    check = state.fit_check
    if check is None or state.epoch <= check["epoch"]:
        return
    state.fit_check = check = confirm_fit(check, final_predicted, labels, state.epoch)
    figures = (
        100 * check["final_accuracy"],
        check["n"],
        check["final_epoch"],
        100 * check["majority_rate"],
        check["final_p_value"],
    )
    if check["status"] == "cannot_fit" and check["final_status"] == "fits":
        logger.info(
            "%s fits its own training set after all: %.1f%% of the check's %d images after %d "
            "epochs (majority rate %.1f%%, one-sided binomial p = %.2g); the warning after epoch "
            "%d came before it had learned",
            name,
            *figures,
            check["epoch"],
        )
    elif check["final_status"] == "cannot_fit":
        (logger.info if check["status"] == "cannot_fit" else logger.warning)(
            "%s still cannot fit its own training set: %.1f%% of the check's %d images after %d "
            "epochs (majority rate %.1f%%, one-sided binomial p = %.2g); its features will not "
            "mean much",
            name,
            *figures,
        )


def run_epoch(
    model: keras.Model,
    state: FoldCheckpoint,
    times: EpochTimes,
    batches: FoldBatches,
    labels: np.ndarray,
    val_rows: np.ndarray,
    training: TrainingSettings,
    class_weight: dict[int, float] | None,
    name: str,
    *,
    random_backbone: bool = False,
) -> None:
    """Train one epoch, validate, check the fit, update early stopping; ``state`` is updated in
    place."""
    train_data, val_data, fit_data, fit_rows = (
        batches.train,
        batches.val,
        batches.fit,
        batches.fit_rows,
    )
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
        state.fit_check = _check_fit(
            model, train_data, fit_data, labels[fit_rows], val_data, labels[val_rows], epoch
        )
        _log_fit_check(
            state.fit_check,
            name,
            training.batchnorm_recalibration != "none",
            random_backbone=random_backbone,
        )
    check_seconds = time.perf_counter() - t_check

    if state.stopping is not None:
        monitored = row.get(training.early_stopping.monitor, float("nan"))
        improved = state.stopping.update(monitored, epoch)
        if improved and training.early_stopping.restore_best_weights:
            state.best_weights = [np.array(w) for w in model.get_weights()]
    seconds = time.perf_counter() - t0
    row.update(
        {
            "seconds": round(seconds, 3),
            "step_seconds": round(t_steps, 3),
            "val_seconds": round(val_seconds, 3),
            "bn_seconds": round(bn_seconds, 3),
            "check_seconds": round(check_seconds, 3),
        }
    )
    state.history.append(row)
    state.epoch = epoch
    times.total.append(seconds)
    times.steps.append(t_steps)
    times.validation += val_seconds
    times.batchnorm += bn_seconds
    times.check += check_seconds
    shown = {
        k: round(row[k], 4) for k in ("loss", "accuracy", "val_loss", "val_accuracy") if k in row
    }
    logger.debug("%s epoch %d: %s (%.1f s, steps %.1f s)", name, epoch, shown, seconds, t_steps)
