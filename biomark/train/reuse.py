"""One compiled model per strategy and process: folds 2..k pay no tracing.

TensorFlow traces a model's training and prediction steps into graphs the
first time they run, per model object: for MobileNetV2 that took 12 s on a
quiet 2-core machine and over 100 s on a busy one, paid again by every fold
because every fold builds a new model. The folds of one strategy have the
same architecture, trainable layers and optimizer, so the first fold's
compiled model can train the others: :func:`compiled_model` copies a freshly
built model's initial state (weights, BatchNormalization statistics, random
generator states) into the cached model and resets its optimizer to its
just-built state. The result is bit for bit what the fresh model would have
trained (tested), without a new trace.

With JAX the same holds, with one difference: JAX passes the model's and the
optimizer's variables into its compiled step explicitly, but values held
elsewhere are frozen into the program when it is traced, and the schedule's
variables (:class:`biomark.train.schedule.WarmupCosine`) are such values. So
under JAX the key also holds the schedule's peak and lengths
(:func:`schedule_key`): folds with the same number of training batches (the
usual case with constant batch shapes) share one traced step, and a fold with
other lengths traces its own (JAX's persistent compilation cache,
:mod:`biomark.train.accelerate`, may still load its program). Measured at the
paper's size on one H200, a scratch fold's first epoch spent 16 s tracing a
step whose compiled program then came from that cache.
"""

from __future__ import annotations

import logging
from collections import OrderedDict
from collections.abc import Callable, Hashable
from dataclasses import dataclass
from typing import Any

import keras
import numpy as np

__all__ = [
    "CompiledModel",
    "clear_compiled_models",
    "compiled_model",
    "reuse_enabled",
    "schedule_key",
]

logger = logging.getLogger(__name__)


@dataclass
class CompiledModel:
    """A compiled model and what a new fold must reset.

    Attributes
    ----------
    model : keras.Model
    schedule : WarmupCosine
        The optimizer's learning-rate schedule (configured per fold).
    optimizer_initial : list of ndarray
        The optimizer's variables right after it was built (zeros, step 0).
    reused : bool
        Whether this fold got a model compiled by an earlier fold.
    """

    model: Any
    schedule: Any
    optimizer_initial: list[np.ndarray]
    reused: bool = False


#: Compiled models kept (least recently used dropped first): a run trains its
#: jobs strategy by strategy, so the next fold's model is almost always the
#: last one used.
MAX_CACHED = 2
_CACHE: OrderedDict[Hashable, CompiledModel] = OrderedDict()


def reuse_enabled() -> bool:
    """Whether compiled models are reused across folds (TensorFlow and JAX backends)."""
    return keras.backend.backend() in ("tensorflow", "jax")


def schedule_key(peak: float, warmup_steps: int, total_steps: int) -> tuple[float, int, int] | None:
    """The part of a compiled model's key that the learning-rate schedule adds.

    ``None`` under TensorFlow, whose traced step reads the schedule's variables
    at run time; the schedule's values under JAX, which freezes them into the
    traced step (see the module notes).
    """
    if keras.backend.backend() != "jax":
        return None
    return float(peak), int(warmup_steps), int(total_steps)


def clear_compiled_models() -> None:
    """Forget every cached model (frees their memory)."""
    _CACHE.clear()


def compiled_model(
    key: Hashable,
    fresh: keras.Model,
    compile_fn: Callable[[keras.Model], Any],
) -> CompiledModel:
    """The compiled model for ``key``, holding ``fresh``'s initial state.

    Parameters
    ----------
    key : hashable
        Everything that shapes the compiled steps: strategy, model and
        optimizer settings, number of classes, dtype policy, backend.
    fresh : keras.Model
        A newly built (uncompiled) model with this fold's initial weights.
    compile_fn : callable
        Compiles a model and returns its learning-rate schedule; called once
        per key (on ``fresh``, which is then cached).

    Returns
    -------
    CompiledModel
        ``reused`` is True when an earlier fold's model now holds ``fresh``'s
        state; ``fresh`` itself is then no longer needed.
    """
    cached = _CACHE.get(key) if reuse_enabled() else None
    if cached is None:
        schedule = compile_fn(fresh)
        fresh.optimizer.build(fresh.trainable_variables)
        initial = [np.array(keras.ops.convert_to_numpy(v)) for v in fresh.optimizer.variables]
        entry = CompiledModel(fresh, schedule, initial, reused=False)
        if reuse_enabled():
            _CACHE[key] = entry
            while len(_CACHE) > MAX_CACHED:
                _CACHE.popitem(last=False)
        return entry
    target, source = cached.model.variables, fresh.variables
    if len(target) != len(source) or any(
        tuple(a.shape) != tuple(b.shape) for a, b in zip(target, source, strict=True)
    ):
        # Not the same architecture after all (a key too coarse): compile anew.
        logger.debug("cached model for %r does not match the new one; compiling anew", key)
        del _CACHE[key]
        return compiled_model(key, fresh, compile_fn)
    for t, s in zip(target, source, strict=True):
        t.assign(s)
    for variable, value in zip(
        cached.model.optimizer.variables, cached.optimizer_initial, strict=True
    ):
        variable.assign(value)
    cached.reused = True
    _CACHE.move_to_end(key)
    return cached
