"""What ran a fold and how fast: the ``pipeline`` record of its ``metrics.json``.

:func:`pipeline_record` gathers the backend, precision, threads, CPU, compile
counters, epoch times and the input pipeline (:func:`loader_record`);
:func:`throughput` turns the epoch times into images per second;
:func:`backend_info` is the Keras part of ``run.json``'s environment.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import keras
import numpy as np

from biomark.config import TrainingSettings
from biomark.provenance import cpu_info
from biomark.train.accelerate import compile_counters, counter_delta, has_gpu
from biomark.train.epochs import EpochTimes, FoldBatches

__all__ = ["backend_info", "loader_record", "pipeline_record", "throughput"]


def backend_info() -> dict[str, Any]:
    """Keras version, backend and the devices it computes on (for ``run.json``)."""
    try:
        devices = list(keras.distribution.list_devices())
    except (
        NotImplementedError,
        RuntimeError,
        ValueError,
    ) as err:  # pragma: no cover - backend specific
        devices = [f"unknown ({err})"]
    return {
        "keras": keras.__version__,
        "backend": keras.backend.backend(),
        "devices": devices,
        "floatx": keras.config.floatx(),
    }


def pipeline_record(
    model: keras.Model,
    policy: str,
    threads: dict[str, Any],
    *,
    reused: bool,
    xla_cache: Path | None,
    counters_before: dict[str, float],
    times: EpochTimes,
    loader: dict[str, Any],
) -> dict[str, Any]:
    """What ran the fold (``pipeline`` of its ``metrics.json``): backend, precision, threads, CPU,
    compiles, times."""
    counters_after = compile_counters()
    return {
        "backend": keras.backend.backend(),
        "gpu": has_gpu(),
        "policy": policy,
        "jit_compile": model.jit_compile,  # what Keras uses (it may refuse XLA)
        "run_eagerly": bool(model.run_eagerly),
        "threads": threads,
        "cpu": cpu_info(),  # its instruction sets choose the kernels, so the rounding of training
        "reused_compiled_model": reused,
        "xla_cache": None if xla_cache is None else str(xla_cache),
        "compile": counter_delta(counters_before, counters_after) if counters_after else None,
        "seconds": times.summary(),
        "loader": loader,
    }


def throughput(
    times: EpochTimes, n_train: int, n_batches: int, training: TrainingSettings
) -> tuple[float, float, int]:
    """Training images per second (whole epochs, and steps only) and the images the steps saw per
    epoch.

    The first epoch of a call is left out of both rates: it includes tracing
    (unless the compiled model was reused).

    Examples
    --------
    1000 training images in 31 full batches of 32 (the last 8 images dropped):

    >>> times = EpochTimes(total=[30.0, 10.0, 12.0, 11.0], steps=[25.0, 8.0, 9.0, 8.5])
    >>> rate, step_rate, n_stepped = throughput(times, 1000, 31, TrainingSettings(batch_size=32))
    >>> round(rate, 1), round(step_rate, 1), n_stepped  # 1000 / 11 s, 992 / 8.5 s
    (90.9, 116.7, 992)
    """
    later = times.total[1:]
    rate = n_train / float(np.median(later)) if later else float("nan")
    n_stepped = n_batches * training.batch_size if training.drop_remainder else n_train
    n_stepped = min(n_stepped, n_train)
    steps_later = times.steps[1:]
    step_rate = n_stepped / float(np.median(steps_later)) if steps_later else float("nan")
    return rate, step_rate, n_stepped


def loader_record(
    training: TrainingSettings, batches: FoldBatches, n_dropped: int
) -> dict[str, Any]:
    """The input pipeline as ``metrics.json`` records it (``pipeline.loader``)."""
    return {
        "cache_in_memory": training.cache_in_memory,
        "workers": training.loader_workers,
        "queue_size": training.loader_queue_size,
        "batch_size": batches.train.batch_size,  # the plan's, or the fold's images when fewer
        "drop_remainder": training.drop_remainder,
        "train_batches": len(batches.train),
        "train_images_dropped": n_dropped,
        "val_images_padded": 0
        if batches.val is None
        else batches.val.n_served - batches.val.n_images,
    }
