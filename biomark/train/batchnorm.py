"""Re-estimate BatchNormalization statistics from training images ("precise BN").

:func:`recalibrate_batchnorm` replaces the moving statistics of a model's
BatchNormalization layers by the average batch statistics of its current
weights; :mod:`biomark.train.loop` calls it before every validation and after
training (see its docstring for why MobileNetV2 needs it).
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import keras

from biomark.train.accelerate import average_batch_statistics

__all__ = ["recalibrate_batchnorm"]


def _batchnorm_layers(layer: Any) -> Iterator[Any]:
    for sub in getattr(layer, "layers", []):
        if isinstance(sub, keras.layers.BatchNormalization):
            yield sub
        else:
            yield from _batchnorm_layers(sub)


def recalibrate_batchnorm(
    model: keras.Model,
    batches: Any,
    max_batches: int = 64,
    *,
    include_frozen: bool = False,
    run_eagerly: bool | None = None,
) -> int:
    """Re-estimate the moving statistics of the trainable BatchNormalization layers.

    Keras's BatchNormalization tracks exponential moving averages of the batch
    statistics; MobileNetV2's use momentum 0.999, so they need thousands of
    steps to forget their initial values (mean 0, variance 1). After a short
    training (the quick plan: ~20 steps) the moving statistics, which
    inference uses, are still mostly the initial ones and the trained model
    predicts one class for every image. This replaces them by the average
    batch statistics of the *final* weights over (up to ``max_batches``)
    training batches ("precise BN", as fvcore's ``update_bn_stats`` or
    PyTorch's ``swa_utils.update_bn``). For a long training the result is
    close to the moving averages. Frozen layers (``trainable=False``, inference
    mode) are left alone. Weights are not changed.

    Parameters
    ----------
    model : keras.Model
    batches : sequence of (images, labels) batches
        E.g. the training :class:`~biomark.train.loader.ImageBatches`.
    max_batches : int, default 64
    include_frozen : bool, default False
        Also re-estimate frozen layers (their ``trainable`` flag is restored
        after). Used before training a pretrained strategy whose backbone is
        random (``model.weights: none``): with its initial statistics a random
        MobileNetV2 in inference mode shrinks activations ~1e-12 by the top,
        so the "random features" would be constant.
    run_eagerly : bool, optional
        Run the passes op by op, not traced (``training.run_eagerly``);
        default: the model's own setting (False before it is compiled).

    Returns
    -------
    int
        Number of layers re-estimated.
    """
    layers = [layer for layer in _batchnorm_layers(model) if include_frozen or layer.trainable]
    if not layers:
        return 0
    momenta = [layer.momentum for layer in layers]
    flags = [layer.trainable for layer in layers]
    for layer, flag in zip(layers, flags, strict=True):
        if not flag:
            layer.trainable = True  # BatchNormalization updates its statistics only when trainable
    n_batches = min(len(batches), max_batches)
    try:
        if average_batch_statistics(model, layers, batches, n_batches, run_eagerly=run_eagerly):
            return len(layers)  # JAX: the same average, one jitted pass per batch
        for t in range(n_batches):
            x = batches[t][0]
            for layer in layers:
                layer.momentum = t / (t + 1.0)  # cumulative mean: batch t gets weight 1/(t+1)
            model(x, training=True)  # augmentation on, as in training; weights untouched
    finally:
        for layer, momentum, flag in zip(layers, momenta, flags, strict=True):
            layer.momentum = momentum
            if not flag:
                layer.trainable = flag
    return len(layers)
