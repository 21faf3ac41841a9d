"""Where a GAP feature fires: the last convolutional maps of a trained model.

GAP feature ``j`` is the spatial mean of channel ``j`` of MobileNetV2's last
convolutional output ``out_relu`` (``Conv_1`` -> BN -> ReLU6), of shape
``(side / 32, side / 32, 1280)``: 2 x 2 at 64 px, 7 x 7 at 200-224 px.
:func:`channel_maps` returns those maps (channels first) for given images and
channels, together with the GAP vector and the probabilities computed in the
same pass, so callers can check the identity ``maps.mean(axis=(2, 3)) == gap``
and need no Keras themselves.

Examples
--------
>>> out = channel_maps("runs/quick/scratch/fold_00/model.keras", images, channels=[3, 17])  # doctest: +SKIP
>>> out["maps"].shape, out["gap"].shape  # doctest: +SKIP
((56, 2, 2, 2), (56, 1280))
"""  # noqa: E501

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import keras
import numpy as np

from biomark.models.mobilenet import GAP_LAYER, HEAD_LAYERS, PREPROCESS_LAYER
from biomark.models.strategies import BACKBONE_NAME, get_backbone

__all__ = ["LAST_CONV_LAYER", "channel_maps", "free_models", "maps_model"]

logger = logging.getLogger(__name__)

#: The backbone layer whose spatial mean is the GAP vector.
LAST_CONV_LAYER = "out_relu"


def maps_model(model: keras.Model) -> keras.Model:
    """An inference model with outputs ``{"maps", "gap", "probs"}`` sharing ``model``'s weights.

    ``maps`` is ``out_relu`` of shape (batch, h, w, n_features); ``gap`` and
    ``probs`` are as in :func:`biomark.models.mobilenet.feature_model`.
    """
    backbone = get_backbone(model)
    tapped = keras.Model(
        backbone.inputs,
        [backbone.output, backbone.get_layer(LAST_CONV_LAYER).output],
        name=f"{BACKBONE_NAME}_last_conv",
    )
    pooled, fmap = tapped(model.get_layer(PREPROCESS_LAYER).output)
    gap = model.get_layer(GAP_LAYER)(pooled)
    x = gap
    for name in HEAD_LAYERS:
        x = model.get_layer(name)(x)
    return keras.Model(
        model.inputs, {"maps": fmap, "gap": gap, "probs": x}, name=f"{model.name}_maps"
    )


def channel_maps(
    model: str | Path | Any,
    images: np.ndarray,
    channels: Sequence[int] | np.ndarray | None = None,
    *,
    batch_size: int = 32,
    image_size: int | None = None,
) -> dict[str, np.ndarray]:
    """``out_relu`` maps of chosen channels, the GAP vector and probabilities.

    Parameters
    ----------
    model : keras.Model, or str or Path
        A trained model from :func:`biomark.models.mobilenet.build_model`, or
        its ``model.keras``.
    images : ndarray of shape (n_images, side, side), uint8
        Images in cache format (0..255).
    channels : sequence of int, optional
        GAP feature indices whose maps to return (default: all).
    batch_size : int, default 32
    image_size : int, optional
        Model input side; images are resized once when it differs (default:
        the model's input side).

    Returns
    -------
    dict of str to ndarray, float32
        ``"maps"`` of shape (n_images, n_channels, h, w) (channels in the
        order given), ``"gap"`` of shape (n_images, n_features) and
        ``"probs"`` of shape (n_images, n_classes).

    Raises
    ------
    ValueError
        If no images are given or a channel is out of range.
    """
    from biomark.train.loader import ImageBatches
    from biomark.train.predict import load_model

    if isinstance(model, (str, Path)):
        model = load_model(model)
    if images.ndim != 3 or images.shape[0] == 0:
        raise ValueError(
            f"channel_maps: images must have shape (n >= 1, side, side), got {images.shape}"
        )
    if image_size is None:
        image_size = int(model.input_shape[1])
    extractor = maps_model(model)
    n_features = int(extractor.output["gap"].shape[-1])
    chosen = np.arange(n_features) if channels is None else np.asarray(channels, dtype=np.int64)
    if chosen.size and (chosen.min() < 0 or chosen.max() >= n_features):
        raise ValueError(
            f"channels must lie in [0, {n_features - 1}], got {chosen.min()}..{chosen.max()}"
        )
    data = ImageBatches(images, batch_size=batch_size, image_size=image_size)
    maps, gaps, probs = [], [], []
    for i in range(len(data)):
        out = extractor([data[i]], training=False)
        fmap = keras.ops.convert_to_numpy(out["maps"]).astype(np.float32)  # (b, h, w, C)
        maps.append(np.transpose(fmap[..., chosen], (0, 3, 1, 2)))
        gaps.append(keras.ops.convert_to_numpy(out["gap"]).astype(np.float32))
        probs.append(keras.ops.convert_to_numpy(out["probs"]).astype(np.float32))
    result = {
        "maps": np.concatenate(maps),
        "gap": np.concatenate(gaps),
        "probs": np.concatenate(probs),
    }
    logger.debug(
        "channel_maps: %d images, %d channels, map %s",
        images.shape[0],
        chosen.size,
        result["maps"].shape[2:],
    )
    return result


def free_models() -> None:
    """Release Keras's global graph state after a fold's model is done
    (``keras.backend.clear_session``)."""
    keras.backend.clear_session()
