"""What one fold's training produced (:class:`TrainResult`, returned by
:func:`biomark.train.loop.train_fold`)."""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd

__all__ = ["TrainResult"]


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
        1-based epoch with the best monitored value (None without early stopping).
    stopped_early : bool
        Whether early stopping ended training.
    resumed_from_epoch : int
        Epochs restored from ``checkpoint.npz`` (0 for a fresh start).
    train_seconds : float
        Wall time of the epoch loop in this call.
    train_images_per_second : float
        Training throughput of the median epoch after the first (the first
        includes graph tracing; validation is included); NaN when fewer than
        two epochs ran in this call.
    step_images_per_second : float
        Images per second in the training steps alone (``step_seconds``,
        median epoch after the first; images of full batches only); NaN when
        fewer than two epochs ran in this call.
    first_epoch_seconds : float
        Wall time of this call's first epoch (includes tracing, or loading a
        compiled program); NaN when no epoch ran.
    n_train, n_val : int
        Images used to fit and for early stopping.
    optimizer : str
    learning_rate : float
        Peak learning rate.
    class_weight : dict of int to float, or None
    bn_recalibrated : int
        BatchNormalization layers whose moving statistics were re-estimated
        after training (``training.batchnorm_recalibration``).
    fit_check : dict or None
        :func:`biomark.train.fitcheck.fit_check` after ``training.fit_check_epoch``.
    final_train_accuracy : float
        Accuracy of the final model on the fit-check sample of training images
        (no augmentation), to compare with the test accuracy.
    pipeline : dict
        How the fold was computed: Keras ``backend``, ``gpu`` (bool), dtype
        ``policy``, ``jit_compile``, ``threads`` (:func:`configure_threads`),
        ``reused_compiled_model``, ``xla_cache`` (folder, or None),
        ``compile`` (JAX only: compiles and cache hits during this fold),
        ``loader`` (batching) and ``seconds`` (the fold's time by kind:
        ``steps``, ``validation``, ``batchnorm``, ``check``, ``first_epoch_extra``,
        the first epoch's excess over a later one, mostly tracing).
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
    fit_check: dict[str, Any] | None = None
    final_train_accuracy: float = float("nan")
    pipeline: dict[str, Any] = field(default_factory=dict)

    def summary(self) -> dict[str, Any]:
        """What was trained: the JSON-friendly results, identical for a resumed and an uninterrupted
        fold."""
        return {
            "model_file": self.model_path.name,
            "epochs_run": self.epochs_run,
            "best_epoch": self.best_epoch,
            "stopped_early": self.stopped_early,
            "n_train": self.n_train,
            "n_val": self.n_val,
            "optimizer": self.optimizer,
            "learning_rate": self.learning_rate,
            "class_weight": (
                None
                if self.class_weight is None
                else {str(k): round(v, 6) for k, v in self.class_weight.items()}
            ),
            "bn_recalibrated": self.bn_recalibrated,
            "fit_check": self.fit_check,
            "final_train_accuracy": _finite_or_none(self.final_train_accuracy, 6),
        }

    def execution(self) -> dict[str, Any]:
        """How this call ran: resume, timings, throughput and pipeline (differ from run to run)."""
        return {
            "resumed_from_epoch": self.resumed_from_epoch,
            "train_seconds": round(self.train_seconds, 3),
            "train_images_per_second": _finite_or_none(self.train_images_per_second),
            "step_images_per_second": _finite_or_none(self.step_images_per_second),
            "first_epoch_seconds": _finite_or_none(self.first_epoch_seconds),
            "pipeline": self.pipeline,
        }


def _finite_or_none(value: float, digits: int = 3) -> float | None:
    return round(float(value), digits) if math.isfinite(value) else None
