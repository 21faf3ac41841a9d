"""Custom Keras layers of the biomark model (registered, so ``model.keras`` files load).

:class:`PerImageStandardization`
    ``(x - mean) / std`` over each image's pixels and channels: the
    ``model.intensity: per_image`` input normalisation.
"""

from __future__ import annotations

import keras

__all__ = ["PerImageStandardization"]


@keras.saving.register_keras_serializable(package="biomark")
class PerImageStandardization(keras.layers.Layer):
    """Standardise every image to zero mean and unit standard deviation.

    The same formula as ``tf.image.per_image_standardization``, written with
    ``keras.ops`` so that it runs on every backend: ``(x - mean) /
    max(std, 1 / sqrt(n))`` with ``n`` the number of values per image, so a
    constant image (e.g. the black padding of a last batch) maps to zeros
    instead of dividing by zero.

    Examples
    --------
    >>> import numpy as np
    >>> x = np.array([[[[0.0], [2.0]], [[4.0], [6.0]]]], dtype="float32")
    >>> y = keras.ops.convert_to_numpy(PerImageStandardization()(x))
    >>> np.round(y.ravel().astype("float64"), 4).tolist()
    [-1.3416, -0.4472, 0.4472, 1.3416]
    """

    def call(self, inputs):  # noqa: D102 - Keras API
        x = keras.ops.cast(inputs, self.compute_dtype)
        axes = tuple(range(1, len(x.shape)))
        mean = keras.ops.mean(x, axis=axes, keepdims=True)
        std = keras.ops.std(x, axis=axes, keepdims=True)
        n = 1
        for dim in x.shape[1:]:
            n *= int(dim)
        floor = keras.ops.cast(1.0 / n**0.5, x.dtype)
        return (x - mean) / keras.ops.maximum(std, floor)

    def compute_output_shape(self, input_shape):  # noqa: D102 - Keras API
        return input_shape
