"""Whether one training step of a model can fit in this machine's memory, known before it runs.

A plan can ask for a network no machine holds: ``model.image_size: 4096``
on the 2-core, 24 GiB machine built its MobileNetV2 and was killed for
memory (exit -9, no message) about 80 s into ``biomark extract``. A training
step keeps the output of every layer from the first trained one on for the
backward pass, so the sum of those outputs (:func:`activation_bytes_per_image`)
gives the step's memory before any step runs. :func:`check_training_fits`
stops the run with a plain error when even half of that sum, times the
batch, exceeds the machine's physical memory; a step that might fit runs as
before.

Why half: measured on the 2-core AVX2 EPYC (TensorFlow, ``scratch``,
``alpha`` 0.35), one training step's peak memory grew by 21.5 MiB per image
at 200 px (batch 32 -> 64: +688 MiB) and about 160 MiB per image at 512 px,
against sums of layer outputs of 29 and 186 MiB: 0.74-0.86 of the sum (oneDNN
fuses some layers, so not every output is kept). Half of it is a lower
bound with room to spare: the check fails only a step that cannot fit.

The check reads the host's memory, which limits training on the CPU. On a
GPU the limit is the device's memory, which this module does not read; there
the check is not made.
"""

from __future__ import annotations

import math
import os
from collections.abc import Iterator
from typing import Any

from biomark.exceptions import ConfigError

__all__ = [
    "LOWER_BOUND_SHARE",
    "activation_bytes_per_image",
    "check_training_fits",
    "physical_memory_bytes",
]

#: The share of the summed layer outputs a training step surely keeps (see the module docstring).
LOWER_BOUND_SHARE = 0.5


def activation_bytes_per_image(model: Any) -> int:
    """Bytes of the layer outputs one image keeps in a training step (float32), at least.

    The backward pass keeps the outputs of every layer from the first one with
    trainable weights on; the layers before it (a frozen backbone) need only
    be held one at a time. So this is the sum of the outputs from the first
    trained layer on, or the largest single output if that is larger (a
    frozen backbone's first map at a large input).

    Parameters
    ----------
    model : keras.Model
        A built functional model (:func:`biomark.models.mobilenet.build_model`),
        its trainable flags set.

    Returns
    -------
    int
        Bytes per image, nested models' layers counted in their place.
    """
    import keras

    sizes, trained = [], []
    for layer in _leaf_layers(model):
        for output in keras.tree.flatten(layer.output):
            shape = tuple(output.shape[1:])
            if all(isinstance(d, int) for d in shape):
                sizes.append(math.prod(shape) * 4)
                trained.append(bool(layer.trainable_weights))
    if not sizes:
        return 0
    first = trained.index(True) if True in trained else len(sizes)
    return max(sum(sizes[first:]), max(sizes))


def _leaf_layers(model: Any) -> Iterator[Any]:
    """The layers of ``model``, those of nested models in their place, without input layers.

    A nested model's output is its last layer's, and its input layer's is the
    tensor that fed it: neither holds memory of its own.
    """
    import keras

    for layer in model.layers:
        if isinstance(layer, keras.Model):
            yield from _leaf_layers(layer)
        elif not isinstance(layer, keras.layers.InputLayer):
            yield layer


def physical_memory_bytes() -> int | None:
    """This machine's physical memory in bytes, or None where the system does not say."""
    try:
        return int(os.sysconf("SC_PHYS_PAGES")) * int(os.sysconf("SC_PAGE_SIZE"))
    except (ValueError, OSError, AttributeError):  # not a POSIX system, or the name is unknown
        return None


def _trains_on_cpu() -> bool:
    """Whether Keras's backend computes on the CPU (TensorFlow without a GPU, or JAX on the CPU)."""
    import keras

    if keras.backend.backend() == "jax":
        import jax

        return jax.default_backend() == "cpu"
    if keras.backend.backend() == "tensorflow":
        import tensorflow as tf

        return not tf.config.list_logical_devices("GPU")
    return True


def check_training_fits(
    model: Any,
    batch_size: int,
    *,
    name: str,
    size_setting: str = "model.image_size",
    batch_setting: str | None = "training.batch_size",
    memory_bytes: int | None = None,
) -> None:
    """Raise a :class:`~biomark.exceptions.ConfigError` if a training step surely exceeds memory.

    Parameters
    ----------
    model : keras.Model
        The fold's model, built.
    batch_size : int
        Images in one training batch (the plan's ``training.batch_size``, or
        the fold's training images when fewer).
    name : str
        What is being trained, for the message (``"scratch fold 0"``).
    size_setting, batch_setting : str
        What the user calls the input size and the batch size, for the message
        (a plan's keys by default; ``biomark data mask-model``'s ``--size``, and
        None for its batch, which no setting changes).
    memory_bytes : int, optional
        The memory to compare with (default: :func:`physical_memory_bytes`,
        and no check on a GPU or where the system does not say).

    Raises
    ------
    ConfigError
        Naming the input size, the batch, the memory the step needs at least
        and the machine's, and what to lower.
    """
    if memory_bytes is None:
        if not _trains_on_cpu():
            return
        memory_bytes = physical_memory_bytes()
        if memory_bytes is None:
            return
    per_image = LOWER_BOUND_SHARE * activation_bytes_per_image(model)
    needed = per_image * int(batch_size)
    if needed > memory_bytes:
        gib = 2**30
        lower = f"{batch_setting} or {size_setting}" if batch_setting else size_setting
        raise ConfigError(
            f"{name}: one training step at {size_setting}={model.input_shape[1]} with a batch "
            f"of {int(batch_size)} images needs at least {needed / gib:,.1f} GiB of memory "
            f"({per_image / 2**20:,.0f} MiB per image), more than this machine's "
            f"{memory_bytes / gib:,.1f} GiB; lower {lower}"
        )
