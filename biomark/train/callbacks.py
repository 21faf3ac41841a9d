"""The Keras callbacks of :func:`biomark.train.loop.train_fold`.

:class:`PaddedValidation`
    Validation after each epoch (BatchNormalization re-estimated first), from
    full batches (the last padded, the padding dropped), so one compiled
    predict step serves every epoch and fold; writes ``val_loss`` and
    ``val_accuracy`` into the epoch's logs. Keras's own validation (``fit(...,
    validation_data=...)``) cannot mask padding: its ``metrics`` ignore
    sample weights, and its loss divides by the padded batch size.
:class:`EpochBackup`
    Keras's ``BackupAndRestore`` at epoch ends, safe for asynchronous dispatch.
:class:`EpochRecorder`
    ``history.csv``, per-epoch timings and the progress bar.

None of them has a per-batch hook: one would make Keras wait for every
training step to finish before dispatching the next (see
``keras.callbacks.CallbackList``), which with JAX leaves the device idle
while the host prepares the next step.
"""

from __future__ import annotations

import logging
import time
from pathlib import Path
from typing import Any

import keras
import numpy as np
import pandas as pd

from biomark.io.atomic import write_csv_atomic
from biomark.progress import progress
from biomark.train.batchnorm import recalibrate_batchnorm

__all__ = ["EpochBackup", "EpochRecorder", "PaddedValidation", "sparse_crossentropy"]

logger = logging.getLogger(__name__)


def sparse_crossentropy(probs: np.ndarray, labels: np.ndarray) -> float:
    """Mean cross-entropy of softmax probabilities, as Keras computes it.

    Keras's ``sparse_categorical_crossentropy`` on probabilities clips them to
    ``[epsilon, 1 - epsilon]`` and renormalises: ``-log(p_y / sum(p))``.

    Parameters
    ----------
    probs : ndarray of shape (n_images, n_classes)
    labels : ndarray of shape (n_images,), int

    Returns
    -------
    float

    Examples
    --------
    >>> round(sparse_crossentropy(np.array([[0.5, 0.5], [0.9, 0.1]]), np.array([0, 0])), 6)
    0.399254
    """
    eps = keras.config.epsilon()
    clipped = np.clip(np.asarray(probs, dtype=np.float64), eps, 1.0 - eps)
    picked = clipped[np.arange(len(labels)), np.asarray(labels, dtype=np.int64)]
    return float(np.mean(np.log(clipped.sum(axis=1)) - np.log(picked)))


class EpochBackup(keras.callbacks.BackupAndRestore):
    """Keras's ``BackupAndRestore`` saving at epoch ends, marked safe for asynchronous dispatch.

    With ``save_freq="epoch"`` its per-batch hook does nothing, but its mere
    presence would make Keras wait for every training step; ``async_safe``
    lets steps run ahead.
    """

    async_safe = True


class PaddedValidation(keras.callbacks.Callback):
    """Validation loss and accuracy at each epoch's end, written into the epoch's logs.

    Must come first among the callbacks, so that the backup saves the
    re-estimated statistics and early stopping, the recorder and Keras's
    history see ``val_loss`` and ``val_accuracy``.

    Parameters
    ----------
    batches : ImageBatches
        The validation images without labels, ``pad_to_batch=True``.
    labels : ndarray of shape (n_images,), int
        Their classes.
    bn_batches : sequence of (images, labels) batches, optional
        Training batches to re-estimate BatchNormalization statistics from
        before validating (:func:`recalibrate_batchnorm`); None skips it.
    bn_max_batches : int, default 16
    recorder : EpochRecorder, optional
        Told when the epoch's training steps are over.
    """

    def __init__(
        self,
        batches: Any,
        labels: np.ndarray,
        *,
        bn_batches: Any = None,
        bn_max_batches: int = 16,
        recorder: EpochRecorder | None = None,
    ) -> None:
        super().__init__()
        self.batches = batches
        self.labels = np.asarray(labels, dtype=np.int64)
        self.bn_batches = bn_batches
        self.bn_max_batches = bn_max_batches
        self.recorder = recorder

    def on_epoch_end(self, epoch: int, logs: dict | None = None) -> None:
        if self.recorder is not None:
            self.recorder.mark_steps_done()
        if self.bn_batches is not None:
            recalibrate_batchnorm(self.model, self.bn_batches, self.bn_max_batches)
        probs = np.asarray(self.model.predict(self.batches, verbose=0))[: len(self.labels)]
        if logs is not None:
            logs["val_loss"] = sparse_crossentropy(probs, self.labels)
            logs["val_accuracy"] = float(np.mean(probs.argmax(axis=1) == self.labels))


class EpochRecorder(keras.callbacks.Callback):
    """History CSV (rewritten atomically every epoch), timings and a progress bar.

    Placed after ``BackupAndRestore`` so that, on a resume, the first epoch
    seen is the restored one; history rows from beyond it are dropped. Each
    epoch's ``step_seconds`` ends when its last training step has finished:
    marked by :class:`PaddedValidation` before it validates, else here.
    """

    def __init__(self, path: Path, epochs: int, desc: str) -> None:
        super().__init__()
        self.path = path
        self.epochs = epochs
        self.desc = desc
        self.rows: list[dict[str, Any]] = []
        self.start_epoch: int | None = None
        self.seconds: list[float] = []
        self.step_seconds: list[float] = []
        self._bar: Any = None
        self._t0 = 0.0
        self._t_steps: float | None = None

    def _steps_done(self) -> float:
        """Seconds since the epoch began, once its last training step has finished."""
        # Reading a value the last step wrote waits for it (JAX dispatches asynchronously).
        keras.ops.convert_to_numpy(self.model.optimizer.iterations)
        return time.perf_counter() - self._t0

    def on_train_begin(self, logs: dict | None = None) -> None:
        self._bar = progress(total=self.epochs, desc=self.desc, unit="epoch", leave=False)

    def on_epoch_begin(self, epoch: int, logs: dict | None = None) -> None:
        if self.start_epoch is None:
            self.start_epoch = epoch
            if epoch > 0 and self.path.is_file():
                previous = pd.read_csv(self.path)
                self.rows = previous[previous["epoch"] <= epoch].to_dict("records")
            self._bar.n = epoch
            self._bar.refresh()
        self._t_steps = None
        self._t0 = time.perf_counter()

    def mark_steps_done(self) -> None:
        """Note that this epoch's training steps are over (before validation starts)."""
        if self._t_steps is None:
            self._t_steps = self._steps_done()

    def on_epoch_end(self, epoch: int, logs: dict | None = None) -> None:
        step_seconds = self._steps_done() if self._t_steps is None else self._t_steps
        seconds = time.perf_counter() - self._t0
        self.seconds.append(seconds)
        self.step_seconds.append(step_seconds)
        row: dict[str, Any] = {"epoch": epoch + 1}
        row.update({k: float(v) for k, v in (logs or {}).items() if np.ndim(v) == 0})
        row["seconds"] = round(seconds, 3)
        row["step_seconds"] = round(step_seconds, 3)
        self.rows.append(row)
        write_csv_atomic(self.path, pd.DataFrame(self.rows))
        shown = {k: f"{row[k]:.3g}" for k in ("loss", "val_loss", "accuracy", "val_accuracy") if k in row}
        self._bar.set_postfix(shown, refresh=False)
        self._bar.update(1)
        logger.debug("%s epoch %d: %s (%.1f s)", self.desc, epoch + 1, shown, seconds)

    def on_train_end(self, logs: dict | None = None) -> None:
        if self._bar is not None:
            self._bar.close()
