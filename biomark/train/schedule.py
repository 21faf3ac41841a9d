"""The optimizer of one fold: its kind, its learning rate, and the learning-rate schedule.

* :func:`learning_rate_for` -- the peak rate of a strategy (fine-tuning uses a
  smaller one).
* :class:`WarmupCosine` -- linear warm-up, then cosine decay to zero, computed
  every step from the optimizer's step counter.
* :func:`make_optimizer` -- ``adamw``, ``adam``, ``sgd`` or ``rmsprop`` with
  that schedule and the plan's weight decay, evaluating the schedule once per
  step for the decay (:class:`OneRatePerStep`).

The schedule keeps its peak rate and its lengths in Keras variables rather
than Python numbers. Python numbers would be baked into the traced training
step, so the next fold (a few images more or fewer, so a few steps more or
fewer) would need a new trace; variables let one compiled step serve every
fold of a strategy (:mod:`biomark.train.reuse`). Keras's own
``CosineDecay(warmup_steps=...)`` stores plain numbers, hence this class.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any

import keras

from biomark.config import StrategySpec, TrainingSettings
from biomark.exceptions import ConfigError
from biomark.models.strategies import is_random_control

__all__ = [
    "OneRatePerStep",
    "WarmupCosine",
    "learning_rate_for",
    "make_optimizer",
    "schedule_lengths",
    "training_for",
]


def training_for(
    strategy: StrategySpec, training: TrainingSettings, weights: str
) -> TrainingSettings:
    """The training settings of one strategy: ``control_epochs`` for a random-features control.

    A pretrained strategy (``frozen``, ``finetune:N``) run with
    ``model.weights: none`` starts from a seeded random backbone: a control,
    trained for ``training.control_epochs`` when that is set (> 0).

    Examples
    --------
    >>> training = TrainingSettings(epochs=12, control_epochs=4)
    >>> training_for(StrategySpec("frozen"), training, "none").epochs
    4
    >>> training_for(StrategySpec("frozen"), training, "imagenet").epochs
    12
    >>> training_for(StrategySpec("scratch"), training, "none").epochs
    12
    """
    if is_random_control(strategy, weights) and training.control_epochs > 0:
        return dataclasses.replace(training, epochs=int(training.control_epochs))
    return training


def learning_rate_for(strategy: StrategySpec, training: TrainingSettings) -> float:
    """The (peak) learning rate a strategy trains with.

    ``scratch`` (every weight starts random) and ``frozen`` (only the new,
    randomly initialised head trains) use ``training.learning_rate``.
    ``finetune:N`` uses the smaller ``training.finetune_learning_rate``: its
    unfrozen blocks start from pretrained weights, and large updates (driven by
    the large gradients of the still-random head) would wreck the very features
    fine-tuning means to keep -- the usual Keras transfer-learning advice.

    Examples
    --------
    >>> learning_rate_for(StrategySpec("finetune", 3), TrainingSettings())
    0.0005
    """
    if strategy.name == "finetune":
        return float(training.finetune_learning_rate)
    return float(training.learning_rate)


def schedule_lengths(training: TrainingSettings, steps_per_epoch: int) -> tuple[int, int]:
    """Warm-up and total steps of a fold's schedule.

    The warm-up lasts ``training.warmup_epochs`` epochs, but at most half of
    the training, so that a short run still decays.

    Examples
    --------
    >>> schedule_lengths(TrainingSettings(epochs=12, warmup_epochs=2), 10)
    (20, 120)
    >>> schedule_lengths(TrainingSettings(epochs=1, warmup_epochs=2), 10)
    (5, 10)
    """
    total = max(1, int(training.epochs) * int(steps_per_epoch))
    if training.schedule != "cosine":
        return 0, total
    warmup = min(int(training.warmup_epochs) * int(steps_per_epoch), total // 2)
    return warmup, total


@keras.saving.register_keras_serializable(package="biomark")
class WarmupCosine(keras.optimizers.schedules.LearningRateSchedule):
    """Linear warm-up to ``peak``, then cosine decay to 0 (or a constant ``peak``).

    ``lr(step) = peak * (step + 1) / warmup`` for ``step < warmup``, then
    ``peak * (1 + cos(pi * (step - warmup) / (total - warmup))) / 2``, reaching
    0 at ``total``. With ``cosine=False`` the rate is ``peak`` throughout.
    ``step`` counts from 0, so the first step already moves the weights.

    Parameters
    ----------
    peak : float
    warmup_steps, total_steps : int
    cosine : bool, default True

    Examples
    --------
    >>> schedule = WarmupCosine(1.0, warmup_steps=2, total_steps=6)
    >>> [round(float(keras.ops.convert_to_numpy(schedule(s))), 3) for s in range(7)]
    [0.5, 1.0, 1.0, 0.854, 0.5, 0.146, 0.0]
    """

    def __init__(
        self, peak: float, warmup_steps: int = 0, total_steps: int = 1, cosine: bool = True
    ) -> None:
        self.cosine = bool(cosine)
        self.peak = keras.Variable(
            float(peak), dtype="float32", trainable=False, name="schedule_peak"
        )
        self.warmup_steps = keras.Variable(
            float(warmup_steps), dtype="float32", trainable=False, name="schedule_warmup_steps"
        )
        self.total_steps = keras.Variable(
            float(total_steps), dtype="float32", trainable=False, name="schedule_total_steps"
        )

    def configure(self, peak: float, warmup_steps: int, total_steps: int) -> None:
        """Set the schedule of a new fold (no retracing)."""
        self.peak.assign(float(peak))
        self.warmup_steps.assign(float(warmup_steps))
        self.total_steps.assign(float(max(1, total_steps)))

    def __call__(self, step):  # noqa: D102 - Keras API
        ops = keras.ops
        step = ops.cast(step, "float32")
        if not self.cosine:
            return ops.multiply(self.peak, ops.ones_like(step))
        warm = self.peak * (step + 1.0) / ops.maximum(self.warmup_steps, 1.0)
        span = ops.maximum(self.total_steps - self.warmup_steps, 1.0)
        progress = ops.clip((step - self.warmup_steps) / span, 0.0, 1.0)
        decay = self.peak * 0.5 * (1.0 + ops.cos(math.pi * progress))
        return ops.where(step < self.warmup_steps, warm, decay)

    def get_config(self) -> dict:  # noqa: D102 - Keras API
        return {
            "peak": float(keras.ops.convert_to_numpy(self.peak)),
            "warmup_steps": int(keras.ops.convert_to_numpy(self.warmup_steps)),
            "total_steps": int(keras.ops.convert_to_numpy(self.total_steps)),
            "cosine": self.cosine,
        }


class OneRatePerStep:
    """Optimizer mixin: the decoupled weight decay reads the learning rate once per step, not once
    per variable.

    Keras applies weight decay variable by variable and asks for
    ``optimizer.learning_rate`` each time, which evaluates a schedule anew:
    162 times a step for MobileNetV2 (about 25 operations each for
    :class:`WarmupCosine`), so a traced step carried 162 copies of the
    schedule: tracing a 96-px MobileNetV2 alpha 0.35 step took 38-39 s with
    them, 31-32 s without (2-core AVX2 CPU; step time within noise). The decay
    happens before the step counter moves, so every one of those evaluations
    gives the same rate: this mixin computes it once, pins it while the decay
    runs, and leaves the arithmetic (and so the weights, bit for bit) as Keras's
    own optimizer would. Written by hand because Keras has no option for it;
    ``_apply_weight_decay`` and ``_get_current_learning_rate`` are Keras
    internals (pinned Keras version; a test compares the weights with the stock
    optimizer's and counts the schedule's evaluations).

    Examples
    --------
    Every optimizer of :func:`make_optimizer` is Keras's own class with this mixin:

    >>> optimizer = make_optimizer("sgd", WarmupCosine(1e-3, 2, 10), weight_decay=1e-4)
    >>> isinstance(optimizer, OneRatePerStep), isinstance(optimizer, keras.optimizers.SGD)
    (True, True)
    """

    _pinned_rate: object = None

    def _get_current_learning_rate(self) -> Any:  # noqa: D102 - Keras internal
        if self._pinned_rate is not None:
            return self._pinned_rate
        return super()._get_current_learning_rate()  # type: ignore[misc]  # a mixin: Keras's class follows

    def _apply_weight_decay(self, variables: list[Any]) -> None:  # noqa: D102 - Keras internal
        if getattr(self, "weight_decay", None) is None:
            super()._apply_weight_decay(variables)  # type: ignore[misc]
            return
        rate = super()._get_current_learning_rate()  # type: ignore[misc]
        # object.__setattr__: Keras's optimizer tracks what is set on it; a rate tensor is not
        # state.
        object.__setattr__(self, "_pinned_rate", rate)
        try:
            super()._apply_weight_decay(variables)  # type: ignore[misc]
        finally:
            object.__setattr__(self, "_pinned_rate", None)


@keras.saving.register_keras_serializable(package="biomark")
class AdamW(OneRatePerStep, keras.optimizers.AdamW):
    """Keras's ``AdamW``, its schedule read once per step (:class:`OneRatePerStep`)."""


@keras.saving.register_keras_serializable(package="biomark")
class Adam(OneRatePerStep, keras.optimizers.Adam):
    """Keras's ``Adam``, its schedule read once per step (:class:`OneRatePerStep`)."""


@keras.saving.register_keras_serializable(package="biomark")
class SGD(OneRatePerStep, keras.optimizers.SGD):
    """Keras's ``SGD``, its schedule read once per step (:class:`OneRatePerStep`)."""


@keras.saving.register_keras_serializable(package="biomark")
class RMSprop(OneRatePerStep, keras.optimizers.RMSprop):
    """Keras's ``RMSprop``, its schedule read once per step (:class:`OneRatePerStep`)."""


def make_optimizer(
    name: str,
    learning_rate: float | keras.optimizers.schedules.LearningRateSchedule,
    weight_decay: float = 0.0,
) -> keras.optimizers.Optimizer:
    """A fresh Keras optimizer: ``adamw``, ``adam``, ``sgd`` (momentum 0.9) or ``rmsprop``.

    Each is Keras's own class with :class:`OneRatePerStep` mixed in (same
    updates, the schedule evaluated once per step for the weight decay).

    Parameters
    ----------
    name : str
    learning_rate : float or LearningRateSchedule
    weight_decay : float, default 0
        Decoupled weight decay (``AdamW``'s; Keras applies the other
        optimizers' ``weight_decay`` the same way). Plain ``adam`` with a
        non-zero decay is AdamW.

    Raises
    ------
    ConfigError
        If ``name`` is not one of the four.

    Examples
    --------
    >>> type(make_optimizer("adamw", 1e-3, 0.05)).__name__
    'AdamW'
    """
    decay = float(weight_decay) or None
    if name == "adamw":
        return AdamW(learning_rate=learning_rate, weight_decay=float(weight_decay))
    if name == "adam":
        return Adam(learning_rate=learning_rate, weight_decay=decay)
    if name == "sgd":
        return SGD(learning_rate=learning_rate, momentum=0.9, weight_decay=decay)
    if name == "rmsprop":
        return RMSprop(learning_rate=learning_rate, weight_decay=decay)
    raise ConfigError(f"training.optimizer={name!r}: use 'adamw', 'adam', 'sgd' or 'rmsprop'")
