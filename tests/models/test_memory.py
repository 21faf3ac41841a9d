"""The memory check made before a training step (biomark.models.memory)."""

from __future__ import annotations

import pytest

keras = pytest.importorskip("keras")

from biomark.exceptions import ConfigError  # noqa: E402
from biomark.models.memory import (  # noqa: E402
    activation_bytes_per_image,
    check_training_fits,
    physical_memory_bytes,
)


def _small_model(*, frozen_first: bool = False) -> keras.Model:
    """16x16x1 -> Conv(4) 16x16x4 -> nested [Conv(2) 8x8x2] -> GAP 2 -> Dense 3."""
    inputs = keras.Input((16, 16, 1))
    first = keras.layers.Conv2D(4, 3, padding="same")
    first.trainable = not frozen_first
    x = first(inputs)
    inner_in = keras.Input((16, 16, 4))
    nested = keras.Model(inner_in, keras.layers.Conv2D(2, 3, strides=2, padding="same")(inner_in))
    x = nested(x)
    x = keras.layers.GlobalAveragePooling2D()(x)
    return keras.Model(inputs, keras.layers.Dense(3)(x))


def test_layer_outputs_are_summed_from_the_first_trained_layer_on() -> None:
    """Every leaf layer's output, a nested model's layers in their place, 4 bytes each: conv
    1024, nested conv 128, pooling 2, dense 3 (input layers, the nested one included, hold the
    tensor that fed them). With the first conv frozen its output is not kept either, but a
    single output larger than the rest together still counts."""
    assert activation_bytes_per_image(_small_model()) == 4 * (1024 + 128 + 2 + 3)
    assert activation_bytes_per_image(_small_model(frozen_first=True)) == 4 * 1024


def test_a_step_that_cannot_fit_is_an_error_naming_the_size_the_batch_and_what_to_lower() -> None:
    model = _small_model()
    per_image = activation_bytes_per_image(model) / 2  # the lower bound's share
    check_training_fits(model, 32, name="scratch fold 0", memory_bytes=int(per_image * 32))
    with pytest.raises(ConfigError) as caught:
        check_training_fits(model, 33, name="scratch fold 0", memory_bytes=int(per_image * 32))
    message = str(caught.value)
    assert message.startswith("scratch fold 0: one training step at model.image_size=16 with a ")
    assert "batch of 33 images" in message
    assert "lower training.batch_size or model.image_size" in message


def test_the_machine_memory_is_read() -> None:
    memory = physical_memory_bytes()
    assert memory is None or memory > 2**28
