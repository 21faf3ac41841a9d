"""The trained classifier head as numpy arrays (for backend-agnostic attributions).

:func:`extract_head` reads the weights of the head layers ``head_dense``,
``head_bn``, ``head_dropout`` and ``probs`` (:data:`biomark.models.mobilenet.HEAD_LAYERS`)
from a trained model and returns them in inference form: batch normalisation
folded to an affine map ``u = bn_scale * h + bn_shift`` (moving statistics),
dropout dropped (identity at inference). :class:`biomark.analysis.head.Head`
turns the arrays into a numpy function whose output equals the model's
softmax for the same GAP features (tested to 1e-5).

Examples
--------
>>> arrays = extract_head("runs/quick/scratch/fold_00/model.keras")  # doctest: +SKIP
>>> sorted(arrays)  # doctest: +SKIP
['bias', 'bn_scale', 'bn_shift', 'kernel', 'out_bias', 'out_kernel']
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import keras
import numpy as np

from biomark.exceptions import RunError
from biomark.models.mobilenet import HEAD_LAYERS

__all__ = ["extract_head"]

logger = logging.getLogger(__name__)


def _activation_name(layer: Any) -> str:
    act = getattr(layer, "activation", None)
    return str(getattr(act, "__name__", act))


def extract_head(model: str | Path | keras.Model) -> dict[str, np.ndarray]:
    """The head's inference weights as float64 numpy arrays.

    Parameters
    ----------
    model : keras.Model, or str or Path
        A model from :func:`biomark.models.mobilenet.build_model` (trained), or
        its saved ``model.keras``.

    Returns
    -------
    dict of str to ndarray
        ``kernel`` (n_features, n_hidden) and ``bias`` (n_hidden,) of
        ``head_dense`` (ReLU); ``bn_scale = gamma / sqrt(moving_var + eps)``
        and ``bn_shift = beta - moving_mean * bn_scale`` (n_hidden,) of
        ``head_bn``; ``out_kernel`` (n_hidden, n_classes) and ``out_bias``
        (n_classes,) of ``probs`` (softmax).

    Raises
    ------
    RunError
        If the model lacks a head layer or a layer is not what the builder
        makes (activation, BatchNorm axis).
        Also if a path is given and no file is there.
    """
    from biomark.train.predict import load_model

    where = str(model) if isinstance(model, (str, Path)) else getattr(model, "name", "model")
    if isinstance(model, (str, Path)):
        model = load_model(model)
    try:
        dense, bn, _dropout, out = (model.get_layer(name) for name in HEAD_LAYERS)
    except ValueError as err:
        raise RunError(
            f"{where}: no classifier head {HEAD_LAYERS} ({err}); the model was not built by "
            "biomark.models.mobilenet.build_model"
        ) from err
    if _activation_name(dense) != "relu" or _activation_name(out) != "softmax":
        raise RunError(
            f"{where}: head activations are {_activation_name(dense)!r}/{_activation_name(out)!r}, "
            "expected 'relu'/'softmax'; biomark.analysis.head cannot reproduce this head"
        )
    kernel, bias = (
        keras.ops.convert_to_numpy(w).astype(np.float64) for w in (dense.kernel, dense.bias)
    )
    h = kernel.shape[1]
    gamma = keras.ops.convert_to_numpy(bn.gamma).astype(np.float64) if bn.scale else np.ones(h)
    beta = keras.ops.convert_to_numpy(bn.beta).astype(np.float64) if bn.center else np.zeros(h)
    mean = keras.ops.convert_to_numpy(bn.moving_mean).astype(np.float64)
    var = keras.ops.convert_to_numpy(bn.moving_variance).astype(np.float64)
    if gamma.shape != (h,) or mean.shape != (h,):
        raise RunError(
            f"{where}: head_bn normalises {mean.shape} values, expected ({h},) (axis -1)"
        )
    scale = gamma / np.sqrt(var + float(bn.epsilon))
    arrays = {
        "kernel": kernel,
        "bias": bias,
        "bn_scale": scale,
        "bn_shift": beta - mean * scale,
        "out_kernel": keras.ops.convert_to_numpy(out.kernel).astype(np.float64),
        "out_bias": keras.ops.convert_to_numpy(out.bias).astype(np.float64),
    }
    logger.debug("%s: head %d -> %d -> %d", where, kernel.shape[0], h, arrays["out_bias"].shape[0])
    return arrays
