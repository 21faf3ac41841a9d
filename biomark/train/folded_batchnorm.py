"""An inference copy of a functional model with each BatchNormalization folded into its convolution.

At inference a BatchNormalization layer is an affine map per channel,
``y = (x - mean) * gamma / sqrt(var + eps) + beta``. When its input is the
output of a convolution that feeds nothing else and has no activation of its
own, the map can be folded into that convolution: the kernel is scaled per
output channel by ``s = gamma / sqrt(var + eps)`` and the convolution gets the
bias ``(b - mean) * s + beta``. The folded network computes the same function
(up to float32 rounding) with two elementwise passes fewer per folded layer.

MobileNetV2 has 52 such pairs. The biomarker report runs every fold's network
over thousands of images (:mod:`biomark.train.unit_maps`), and on the demo's
96 px films the folded backbone passes a batch in about 18 % less time on one
core (2-core AMD EPYC with AVX2, ``benchmarks/RESULTS.md``). Training keeps
the original layers: it needs the batch statistics.

Keras has no folding of its own (TensorFlow's graph tools fold only frozen
graphs, and Keras 3 emits BatchNormalization as plain arithmetic), so the copy
is made here with :func:`keras.models.clone_model`: the convolutions are cloned
with a bias, the folded BatchNormalization layers are left out of the call
graph, and :meth:`FoldedBatchNorm.folded_weights` computes the copy's weights
from the source's current ones (the source's weights may be swapped, as the
report swaps folds).

Examples
--------
>>> folded = FoldedBatchNorm(backbone)  # doctest: +SKIP
>>> folded.assign(folded.folded_weights())  # doctest: +SKIP
>>> maps = folded.model(images, training=False)  # doctest: +SKIP
"""

from __future__ import annotations

from typing import Any

import keras
import numpy as np

__all__ = ["FoldedBatchNorm", "foldable_pairs"]

_CONVOLUTIONS = (keras.layers.Conv2D, keras.layers.DepthwiseConv2D)


def _single_parent(layer: Any) -> Any | None:
    """The one layer whose output is ``layer``'s only input, else None.

    Keras keeps the call graph on private attributes (``_inbound_nodes``);
    anything unexpected there means "not foldable", never an error.
    """
    nodes = getattr(layer, "_inbound_nodes", None)
    if not nodes or len(nodes) != 1:
        return None
    parents = getattr(nodes[0], "parent_nodes", None)
    if not parents or len(parents) != 1:
        return None
    return getattr(parents[0], "operation", None)


def _is_linear(conv: Any) -> bool:
    activation = getattr(conv, "activation", None)
    return activation is None or getattr(activation, "__name__", "") == "linear"


def foldable_pairs(model: keras.Model) -> dict[str, str]:
    """Convolutions of ``model`` whose BatchNormalization can be folded into them.

    A pair qualifies when the BatchNormalization normalises the last (channel)
    axis, is called once, and its input is the output of a ``Conv2D`` or
    ``DepthwiseConv2D`` (channels last, no activation of its own) that is
    called once and feeds nothing else.

    Parameters
    ----------
    model : keras.Model
        A functional model.

    Returns
    -------
    dict of str to str
        Convolution layer name -> the name of the BatchNormalization after it.
    """
    pairs: dict[str, str] = {}
    for layer in model.layers:
        if not isinstance(layer, keras.layers.BatchNormalization):
            continue
        axis = layer.axis if isinstance(layer.axis, int) else None
        if axis not in (-1, 3):
            continue
        conv = _single_parent(layer)
        if (
            isinstance(conv, _CONVOLUTIONS)
            and conv.data_format == "channels_last"
            and _is_linear(conv)
            and len(getattr(conv, "_inbound_nodes", ())) == 1
            and len(getattr(conv, "_outbound_nodes", ())) == 1
        ):
            pairs[conv.name] = layer.name
    return pairs


class FoldedBatchNorm:
    """An inference copy of ``source`` with its foldable BatchNormalization layers folded.

    Parameters
    ----------
    source : keras.Model
        A functional model (its layers' weights are read, never changed).

    Attributes
    ----------
    source : keras.Model
    pairs : dict of str to str
        :func:`foldable_pairs` of ``source``.
    model : keras.Model
        The copy (``source`` itself when nothing can be folded). Its weights
        are whatever :meth:`assign` last gave it; call
        ``assign(folded_weights())`` after the source's weights change.
    """

    def __init__(self, source: keras.Model) -> None:
        self.source = source
        self.pairs = foldable_pairs(source)
        folded_norms = set(self.pairs.values())
        if not self.pairs:
            self.model = source
        else:

            def clone(layer: Any) -> Any:
                config = layer.get_config()
                if layer.name in self.pairs:
                    config["use_bias"] = True
                return layer.__class__.from_config(config)

            def call(layer: Any, *args: Any, **kwargs: Any) -> Any:
                if layer.name in folded_norms:
                    return args[0]  # the folded normalisation is in the convolution now
                return layer(*args, **kwargs)

            self.model = keras.models.clone_model(source, clone_function=clone, call_function=call)
        self._variables = [v for layer in self.model.layers for v in layer.weights]

    def folded_weights(self) -> list[np.ndarray]:
        """The copy's weights computed from the source's current ones, in the order
        :meth:`assign` takes them."""
        if self.model is self.source:
            return [np.asarray(v.numpy()) for v in self._variables]
        out: list[np.ndarray] = []
        for layer in self.model.layers:
            if not layer.weights:
                continue
            src = self.source.get_layer(layer.name)
            if layer.name in self.pairs:
                kernel, bias = _fold(src, self.source.get_layer(self.pairs[layer.name]))
                by_variable = {id(layer.kernel): kernel, id(layer.bias): bias}
                out.extend(by_variable[id(v)].astype(v.dtype, copy=False) for v in layer.weights)
            else:
                out.extend(np.asarray(w) for w in src.get_weights())
        return out

    def assign(self, weights: list[np.ndarray]) -> None:
        """Give the copy the weights of :meth:`folded_weights`."""
        if len(weights) != len(self._variables):
            raise ValueError(
                f"expected {len(self._variables)} folded weight arrays, got {len(weights)}"
            )
        if self.model is self.source:
            return  # nothing folded: the copy is the source and already holds them
        for variable, value in zip(self._variables, weights, strict=True):
            variable.assign(value)


def _fold(conv: Any, norm: Any) -> tuple[np.ndarray, np.ndarray]:
    """Kernel and bias of ``conv`` followed by the inference map of ``norm``, in float64."""
    variance = np.asarray(norm.moving_variance.numpy(), dtype=np.float64)
    mean = np.asarray(norm.moving_mean.numpy(), dtype=np.float64)
    scale = 1.0 / np.sqrt(variance + float(norm.epsilon))
    if norm.scale:
        scale = scale * np.asarray(norm.gamma.numpy(), dtype=np.float64)
    shift = np.asarray(norm.beta.numpy(), dtype=np.float64) if norm.center else 0.0
    kernel = np.asarray(conv.kernel.numpy(), dtype=np.float64)
    bias = np.asarray(conv.bias.numpy(), dtype=np.float64) if conv.use_bias else 0.0
    if isinstance(conv, keras.layers.DepthwiseConv2D):
        # kernel (h, w, in, multiplier); output channel c * multiplier + m
        kernel = kernel * scale.reshape(kernel.shape[2], kernel.shape[3])
    else:
        kernel = kernel * scale  # kernel (h, w, in / groups, out): one scale per output channel
    return kernel, (bias - mean) * scale + shift
