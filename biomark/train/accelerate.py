"""What keeps an accelerator busy, backend by backend: XLA, precision, compilation cache.

Everything in :mod:`biomark.train` that depends on the Keras backend
(TensorFlow or JAX, chosen by ``KERAS_BACKEND`` before Keras is imported)
lives here, so the training loop stays backend-agnostic:

* :func:`jit_compile_setting`: the ``jit_compile`` passed to ``model.compile``.
  Keras's JAX trainer runs op by op without it, so JAX always compiles; with
  TensorFlow, XLA only on a GPU (on a CPU it costs more start-up, measured
  ~1.5x, than it saves on short runs).
* :func:`allow_jit`: Keras 3 marks ``RandomRotation`` and ``RandomTranslation``
  ``supports_jit = False`` (TensorFlow's image-transform op has no XLA
  kernel), and one such layer makes Keras silently compile nothing: with JAX
  the whole train step then runs op by op (measured 3.4x slower per image on
  a CPU; far worse on a GPU, where every op is a separate dispatch). Their
  JAX implementation traces fine, so with JAX they are marked jit-capable.
* :func:`mixed_policy`: ``mixed_float16`` on a GPU, ``mixed_bfloat16`` on a
  CPU (CPUs and TPUs do bfloat16 natively).
* :func:`enable_compilation_cache`: JAX's persistent compilation cache. A new
  model per fold means a new jitted train step per fold; JAX finds the
  compiled executable of fold 1 on disk (its key is the lowered program, and
  every fold of a strategy lowers to the same program when the batch shapes
  agree) instead of compiling it again. TensorFlow has no equivalent used
  here.
* :func:`average_batch_statistics`: the BatchNormalization re-estimation of
  :func:`biomark.train.batchnorm.recalibrate_batchnorm` as one compiled
  training-mode forward pass per batch (``jax.jit`` or ``tf.function``).
  Called eagerly, Keras runs the model layer by layer from Python (measured
  ~90 ms per pass with JAX on this CPU, whatever the batch).
* :func:`inference_function`: a model's inference pass traced once for any
  batch size (TensorFlow), so a caller need not pad its last batch to the
  traced shape as it must for ``predict``.
* :func:`configure_threads`: how many CPU threads TensorFlow's operations use
  (``training.threads``; 0 = every core this process may run on).
* :func:`compile_counters`: cumulative JAX compilation figures (compiles,
  compile seconds, persistent-cache hits and misses) from ``jax.monitoring``
  events, so a fold can record what it compiled and what it reused.

``jax`` is imported only when Keras's backend is JAX.

Examples
--------
>>> jit_compile_setting() in (True, False, "auto")
True
>>> resolve_xla_cache("none") is None
True
"""

from __future__ import annotations

import logging
import os
import threading
import weakref
from collections.abc import Callable
from pathlib import Path
from typing import Any

import keras

__all__ = [
    "MIN_CACHED_COMPILE_SECONDS",
    "allow_jit",
    "average_batch_statistics",
    "compile_counters",
    "configure_threads",
    "counter_delta",
    "enable_compilation_cache",
    "has_gpu",
    "inference_function",
    "jit_compile_setting",
    "mixed_policy",
    "resolve_xla_cache",
]

logger = logging.getLogger(__name__)

#: Compilations faster than this are not written to JAX's persistent cache
#: (JAX's default is 1 s). Low enough for the forward (validation, prediction)
#: steps, high enough to skip the many tiny per-op programs of eager calls.
MIN_CACHED_COMPILE_SECONDS = 0.2

_COUNTER_EVENTS = {
    "/jax/compilation_cache/cache_hits": "cache_hits",
    "/jax/compilation_cache/cache_misses": "cache_misses",
}
_DURATION_EVENTS = {
    "/jax/core/compile/backend_compile_duration": ("compiles", "compile_seconds"),
    "/jax/compilation_cache/compile_time_saved_sec": (None, "compile_seconds_saved"),
}
# Per model: the jitted statistics pass, keyed by the trainable variables it was traced with.
_STATS_FUNCTIONS: weakref.WeakKeyDictionary[Any, dict[tuple[int, ...], Callable[..., Any]]] = (
    weakref.WeakKeyDictionary()
)
_counters: dict[str, float] = {}
_THREADS_WARNED: set[int] = set()
_counters_lock = threading.Lock()
_listening = False


def _backend() -> str:
    return keras.backend.backend()


def has_gpu() -> bool:
    """Whether Keras's backend sees a GPU."""
    try:
        return bool(keras.distribution.list_devices("gpu"))
    except (NotImplementedError, RuntimeError, ValueError):  # pragma: no cover - backend specific
        return False


def jit_compile_setting() -> bool | str:
    """The ``jit_compile`` argument for ``model.compile``.

    Returns
    -------
    bool or "auto"
        ``True`` with JAX (its Keras trainer runs op by op otherwise);
        ``"auto"`` with TensorFlow on a GPU (XLA where every layer supports
        it); ``False`` with TensorFlow on a CPU.
    """
    if _backend() == "jax":
        return True
    return "auto" if has_gpu() else False


def allow_jit(model: keras.Model) -> list[str]:
    """With JAX, mark the model's augmentation layers as XLA-compilable.

    Keras 3 sets ``supports_jit = False`` on ``RandomRotation`` and
    ``RandomTranslation`` for TensorFlow's sake; ``model.compile(jit_compile=
    True)`` then warns and compiles nothing. Under JAX their transform is
    ``jax.scipy``-based and traces (checked: jitted and eager outputs agree,
    and the seed state advances every step), so the flag is lifted there.
    Does nothing with other backends.

    Parameters
    ----------
    model : keras.Model
        Nested models are searched too.

    Returns
    -------
    list of str
        Names of the layers changed (empty with TensorFlow).
    """
    if _backend() != "jax":
        return []
    kinds = (keras.layers.RandomRotation, keras.layers.RandomTranslation)
    changed = []
    for layer in model._flatten_layers(include_self=False, recursive=True):
        if isinstance(layer, kinds) and not layer.supports_jit:
            layer.supports_jit = True
            changed.append(layer.name)
    return changed


def average_batch_statistics(
    model: keras.Model,
    layers: list[Any],
    batches: Any,
    n_batches: int,
    *,
    run_eagerly: bool | None = None,
) -> bool:
    """Set BatchNormalization moving statistics to their mean over batches, in one compiled pass per
    batch.

    For each of the first ``n_batches`` batches, one compiled training-mode
    forward pass (augmentation and dropout on, as in training) gives every
    layer's batch mean and variance (momentum 0 makes the moving statistics
    equal them); their average over batches replaces the moving statistics,
    as the eager cumulative update of
    :func:`biomark.train.batchnorm.recalibrate_batchnorm` does. The random
    generators' states advance as in eager calls. The pass (``jax.jit`` or
    ``tf.function`` over :meth:`keras.Model.stateless_call`) is traced once per
    model and trainable set and reused; called eagerly, Keras runs the model
    layer by layer from Python (measured ~90 ms per pass with JAX, seconds
    with TensorFlow on a busy CPU).

    Parameters
    ----------
    model : keras.Model
    layers : list of keras.layers.BatchNormalization
        The layers to re-estimate; each must be ``trainable`` now (the caller
        sets the flags and restores them).
    batches : sequence of (images, labels) batches
    n_batches : int
    run_eagerly : bool, optional
        Run the pass op by op instead of tracing it (``training.run_eagerly``);
        default: the model's own ``run_eagerly`` (False before it is compiled).

    Returns
    -------
    bool
        False (nothing done) with a backend other than JAX or TensorFlow.
    """
    backend = _backend()
    if backend not in ("jax", "tensorflow"):
        return False
    ops = keras.ops
    momenta = [layer.momentum for layer in layers]
    for layer in layers:
        layer.momentum = 0.0  # moving statistics := this batch's statistics
    try:
        trainable = model.trainable_variables
        non_trainable = model.non_trainable_variables
        position = {id(v): i for i, v in enumerate(non_trainable)}
        slots = [
            (position[id(layer.moving_mean)], position[id(layer.moving_variance)])
            for layer in layers
        ]
        if run_eagerly is None:
            run_eagerly = bool(getattr(model, "run_eagerly", False))
        if run_eagerly:
            forward_fn = _stateless_forward(model)  # no trace, as the model's own steps
        else:
            functions = _STATS_FUNCTIONS.setdefault(model, {})
            key = tuple(id(v) for v in trainable)
            if key not in functions:
                functions[key] = _traced(_stateless_forward(model), backend)
            forward_fn = functions[key]
        trainable_values = [v.value for v in trainable]
        state = [v.value for v in non_trainable]
        sums = [[ops.zeros_like(state[m]), ops.zeros_like(state[v])] for m, v in slots]
        for t in range(n_batches):
            state = list(forward_fn(trainable_values, state, ops.convert_to_tensor(batches[t][0])))
            for total, (m, v) in zip(sums, slots, strict=True):
                total[0] = total[0] + state[m]
                total[1] = total[1] + state[v]
        for variable, value in zip(non_trainable, state, strict=True):
            variable.assign(value)  # random generators advanced; statistics replaced next
        for layer, (mean, variance) in zip(layers, sums, strict=True):
            layer.moving_mean.assign(mean / n_batches)
            layer.moving_variance.assign(variance / n_batches)
    finally:
        for layer, momentum in zip(layers, momenta, strict=True):
            layer.momentum = momentum
    return True


def _traced(forward: Callable[..., Any], backend: str) -> Callable[..., Any]:
    """``forward`` as one compiled program: ``jax.jit`` or ``tf.function``."""
    if backend == "jax":
        import jax

        return jax.jit(forward)
    import tensorflow as tf

    return tf.function(forward, reduce_retracing=True)


def inference_function(model: keras.Model) -> Callable[[Any], Any] | None:
    """``model``'s inference pass as one traced function for batches of any size (TensorFlow).

    Keras's ``predict`` traces its step for the shape of the first batch and
    traces again for another, so callers pad every batch to one size, and
    the padding is computed as if it were images (in the demo report at 96
    px, 11 % of a strategy's passes, 18 % of the lung null's, and a
    thumbnail call of 4-14 images ran as 113). With TensorFlow a
    ``tf.function`` whose input signature leaves the batch size open is
    traced once and runs every batch as it is, with less overhead per call:
    700 + 1,024 images through the demo's backbone at 96 px took 3.4-3.5 s
    against 4.1-5.3 s with ``predict`` and padded batches (2-core AVX2 EPYC).
    ``jax.jit`` compiles once per shape, so with JAX (or another backend)
    there is none and callers use ``predict``.

    Parameters
    ----------
    model : keras.Model
        One float32 input.

    Returns
    -------
    callable or None
        ``f(batch) -> ndarray``, the model's output for a float32 batch of
        the input's shape; None with a backend other than TensorFlow.
    """
    if _backend() != "tensorflow" or len(model.inputs) != 1:
        return None
    import tensorflow as tf

    spec = tf.TensorSpec((None, *model.inputs[0].shape[1:]), tf.float32)
    traced = tf.function(lambda x: model(x, training=False), input_signature=[spec])
    return lambda batch: traced(batch).numpy()


def _stateless_forward(model: keras.Model) -> Callable[[list[Any], list[Any], Any], list[Any]]:
    """A training-mode forward pass returning the updated non-trainable values (weakly bound to
    ``model``)."""
    model_ref = weakref.ref(model)  # a strong reference would keep the model alive forever

    def forward(trainable_values: list[Any], non_trainable_values: list[Any], x: Any) -> list[Any]:
        live = model_ref()
        assert live is not None  # traced and called only while the model is alive
        _, updated = live.stateless_call(trainable_values, non_trainable_values, x, training=True)
        return list(updated)

    return forward


def mixed_policy() -> str:
    """Keras mixed-precision policy for this device: float16 on a GPU, bfloat16 elsewhere."""
    return "mixed_float16" if has_gpu() else "mixed_bfloat16"


def resolve_xla_cache(setting: str) -> Path | None:
    """The folder a ``training.xla_cache`` setting names, or None for ``none``.

    ``auto`` is ``$BIOMARK_XLA_CACHE`` when set, else
    ``$XDG_CACHE_HOME/biomark/xla`` (``~/.cache/biomark/xla``).
    """
    value = str(setting).strip()
    if value.lower() == "none":
        return None
    if value.lower() == "auto":
        if os.environ.get("BIOMARK_XLA_CACHE"):
            return Path(os.environ["BIOMARK_XLA_CACHE"]).expanduser()
        base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
        return Path(base).expanduser() / "biomark" / "xla"
    return Path(value).expanduser()


def enable_compilation_cache(setting: str) -> Path | None:
    """Point JAX's persistent compilation cache at the folder ``setting`` names.

    Does nothing with TensorFlow. With JAX it sets ``jax_compilation_cache_dir``
    (creating the folder), lowers ``jax_persistent_cache_min_compile_time_secs``
    to :data:`MIN_CACHED_COMPILE_SECONDS`, and resets JAX's once-per-process
    decision whether the cache is used (an earlier compilation without a
    folder would otherwise leave it off). ``none`` turns the cache off. It
    also starts counting compilation events for :func:`compile_counters`.

    Parameters
    ----------
    setting : str
        ``training.xla_cache``: ``auto``, ``none`` or a folder.

    Returns
    -------
    Path or None
        The cache folder in use; None with TensorFlow or ``none``.

    Notes
    -----
    The cache is trusted: executables read from it run in this process, so it
    must not be writable by others (the default is under the user's home).
    It is not size-limited; delete the folder to reclaim space.
    """
    if _backend() != "jax":
        return None
    import jax
    from jax.experimental.compilation_cache import compilation_cache

    _listen()
    path = resolve_xla_cache(setting)
    # jax registers its flags as attributes at run time; its stubs do not list them
    current = jax.config.jax_compilation_cache_dir  # type: ignore[attr-defined]
    if path is None:
        if jax.config.jax_enable_compilation_cache:  # type: ignore[attr-defined]
            jax.config.update("jax_enable_compilation_cache", False)
            compilation_cache.reset_cache()
        return None
    path.mkdir(parents=True, exist_ok=True)
    if current != str(path) or not jax.config.jax_enable_compilation_cache:  # type: ignore[attr-defined]
        jax.config.update("jax_enable_compilation_cache", True)
        jax.config.update("jax_compilation_cache_dir", str(path))
        compilation_cache.reset_cache()
        logger.info("JAX persistent compilation cache: %s", path)
    jax.config.update("jax_persistent_cache_min_compile_time_secs", MIN_CACHED_COMPILE_SECONDS)
    return path


def _listen() -> None:
    """Register the ``jax.monitoring`` listeners once per process (they cannot be removed)."""
    global _listening
    with _counters_lock:
        if _listening:
            return
        _listening = True
    import jax.monitoring

    def on_event(event: str, **_: Any) -> None:
        key = _COUNTER_EVENTS.get(event)
        if key is not None:
            with _counters_lock:
                _counters[key] = _counters.get(key, 0) + 1

    def on_duration(event: str, duration_secs: float, **_: Any) -> None:
        keys = _DURATION_EVENTS.get(event)
        if keys is None:
            return
        count, seconds = keys
        with _counters_lock:
            if count is not None:
                _counters[count] = _counters.get(count, 0) + 1
            _counters[seconds] = _counters.get(seconds, 0.0) + float(duration_secs)

    jax.monitoring.register_event_listener(on_event)
    jax.monitoring.register_event_duration_secs_listener(on_duration)


def compile_counters() -> dict[str, float]:
    """Cumulative JAX compilation figures of this process (empty with TensorFlow).

    Returns
    -------
    dict of str to float
        ``compiles`` (XLA programs obtained: compiled, or loaded from the
        persistent cache), ``compile_seconds`` (their time, loading
        included), ``cache_hits``, ``cache_misses`` (looked up, then
        compiled) and ``compile_seconds_saved`` (JAX's estimate for the
        hits), counted
        since :func:`enable_compilation_cache` was first called; empty when
        it never was or the backend is not JAX.
    """
    with _counters_lock:
        if not _listening:
            return {}
        return {
            "compiles": _counters.get("compiles", 0),
            "compile_seconds": _counters.get("compile_seconds", 0.0),
            "cache_hits": _counters.get("cache_hits", 0),
            "cache_misses": _counters.get("cache_misses", 0),
            "compile_seconds_saved": _counters.get("compile_seconds_saved", 0.0),
        }


def counter_delta(before: dict[str, float], after: dict[str, float]) -> dict[str, float]:
    """``after - before`` per key of ``after`` (seconds rounded to ms).

    Examples
    --------
    >>> counter_delta({"compiles": 2, "compile_seconds": 1.0}, {"compiles": 5, "compile_seconds": 3.25})
    {'compiles': 3, 'compile_seconds': 2.25}
    """  # noqa: E501
    out: dict[str, float] = {}
    for key, value in after.items():
        diff = value - before.get(key, 0)
        out[key] = round(diff, 3) if isinstance(diff, float) else diff
    return out


def available_cores() -> int:
    """CPU cores this process may run on (its affinity mask, else ``os.cpu_count``)."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # pragma: no cover - not Linux
        return os.cpu_count() or 1


def configure_threads(threads: int = 0) -> dict[str, Any]:
    """Set TensorFlow's CPU thread pools (once per process).

    With a fixed number of threads TensorFlow's CPU kernels give the same
    result run after run (tested: a resumed fold equals an uninterrupted one
    bit for bit), so no global determinism switch is needed; TensorFlow's
    ``enable_op_determinism`` would also make every unseeded random op of
    the user's own code fail.

    TensorFlow fixes its thread pools when its runtime starts; a later,
    different request is logged and ignored. JAX reads its thread settings
    from ``XLA_FLAGS`` before import, so with JAX nothing is changed here.

    Parameters
    ----------
    threads : int, default 0
        Intra-op threads (the pool that runs one convolution); 0 uses every
        core of the process's affinity mask.

    Returns
    -------
    dict
        ``available`` cores and the ``intra_op`` and ``inter_op`` pool sizes
        in force (0 = TensorFlow's default); recorded per fold.
    """
    available = available_cores()
    if _backend() != "tensorflow":
        return {"available": available, "intra_op": None, "inter_op": None}
    import tensorflow as tf

    threading_config = tf.config.threading
    # 0 is TensorFlow's own default: one intra-op thread per core of the affinity mask.
    if threads and threading_config.get_intra_op_parallelism_threads() != int(threads):
        try:
            threading_config.set_intra_op_parallelism_threads(int(threads))
        except RuntimeError:
            if int(threads) not in _THREADS_WARNED:
                _THREADS_WARNED.add(int(threads))
                logger.warning(
                    "training.threads=%d: TensorFlow's thread pools were already set up in this "
                    "process (%d intra-op threads, 0 = one per core); the setting applies to a new "
                    "process",
                    threads,
                    threading_config.get_intra_op_parallelism_threads(),
                )
    return {
        "available": available,
        "intra_op": int(threading_config.get_intra_op_parallelism_threads()),
        "inter_op": int(threading_config.get_inter_op_parallelism_threads()),
    }
