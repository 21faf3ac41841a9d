"""The paper's network: MobileNetV2 backbone, global average pooling, dense head.

Graph of :func:`build_model` (layer names in quotes)::

    "image"            (S, S, 1) float32, values 0..255 (the uint8 image cache)
    "augment_rotation" RandomRotation(±rotation_degrees), black fill   } training
    "augment_shift"    RandomTranslation(±shift_pixels), black fill    } only
    "to_rgb"           grayscale repeated to 3 channels
    "preprocess"       x / 127.5 - 1 (keras.applications.mobilenet_v2.preprocess_input)
    "mobilenetv2"      keras.applications.MobileNetV2(include_top=False, pooling="avg")
    "gap"              the 1280-d global-average-pooled feature vector (identity)
    "head_dense"       Dense(head_units, relu)
    "head_bn"          BatchNormalization
    "head_dropout"     Dropout(dropout)
    "probs"            Dense(n_classes, softmax), float32 output

The backbone is nested as one layer, so pretrained weights load intact and
its block structure (see :mod:`biomark.models.strategies`) is addressable.

Examples
--------
>>> from biomark.config import ModelSettings, StrategySpec
>>> settings = ModelSettings(image_size=32, weights="none", alpha=0.35, head_units=8)
>>> model = build_model(StrategySpec("scratch"), 3, settings, seed=0)  # doctest: +SKIP
>>> feature_model(model).output_shape  # doctest: +SKIP
{'gap': (None, 1280), 'probs': (None, 3)}
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

from biomark.config import ModelSettings, StrategySpec
from biomark.models.strategies import (
    BACKBONE_NAME,
    BLOCKS,
    apply_strategy,
    block_of,
    get_backbone,
    is_random_control,
    needs_pretrained,
)
from biomark.models.weights import load_backbone

if TYPE_CHECKING:  # pragma: no cover - typing only
    import keras

__all__ = [
    "BACKBONE_NAME",
    "BLOCK_OUTPUTS",
    "GAP_LAYER",
    "HEAD_LAYERS",
    "INPUT_NAME",
    "PREPROCESS_LAYER",
    "backbone_is_random",
    "build_model",
    "feature_model",
    "set_batchnorm_momentum",
    "set_random_seed",
    "zero_init_residual",
]

logger = logging.getLogger(__name__)

#: Name of the layer whose output is the 1280-d global-average-pooled vector.
GAP_LAYER = "gap"
#: Name of the model's input.
INPUT_NAME = "image"
#: Name of the layer whose output enters the backbone ((S, S, 3) in [-1, 1]).
PREPROCESS_LAYER = "preprocess"
#: The head's layers, in order, after :data:`GAP_LAYER`.
HEAD_LAYERS: tuple[str, ...] = ("head_dense", "head_bn", "head_dropout", "probs")
#: Keys of the per-block outputs of ``feature_model(..., blocks=True)``.
BLOCK_OUTPUTS: tuple[str, ...] = (*BLOCKS, "Conv_1")


def build_model(
    strategy: StrategySpec,
    n_classes: int,
    settings: ModelSettings,
    *,
    seed: int = 0,
    backbone_seed: int | None = None,
) -> keras.Model:
    """Build the paper's MobileNetV2 classifier for one strategy (not compiled).

    Calls :func:`set_random_seed` before building, so the random initial
    weights (head, and backbone for ``scratch`` / ``weights: none``) and the
    augmentation streams are the same for the same seed. This resets Python's,
    NumPy's and Keras's global seeds.

    Parameters
    ----------
    strategy : StrategySpec
        Sets the backbone's initial weights and which layers train
        (:func:`biomark.models.strategies.apply_strategy`).
    n_classes : int
        Number of output classes.
    settings : ModelSettings
        ``image_size``, ``weights``, ``alpha``, ``head_units``, ``dropout`` and
        ``augment`` are used.
    seed : int, default 0
        Seed for weight initialisation and augmentation.
    backbone_seed : int, optional
        Seed of a random backbone's initial weights alone, for a pretrained
        strategy without pretrained weights (``model.weights: none``): the
        folds of such a random-features control then share one backbone, as
        the folds of the pretrained strategy share ImageNet's, while ``seed``
        still draws each fold's head, augmentation and dropout. Ignored for
        ``scratch`` and for pretrained weights. None: ``seed`` draws it.

    Returns
    -------
    keras.Model
        Input ``"image"`` of shape (batch, image_size, image_size, 1), float32
        in 0..255; output of shape (batch, n_classes), float32 softmax
        probabilities.

    Raises
    ------
    WeightsError
        If pretrained weights are needed but cannot be loaded.
    ValueError
        If ``n_classes`` < 2.
    """
    import keras
    from keras import layers

    from biomark.models.layers import PerImageStandardization

    if n_classes < 2:
        raise ValueError(f"n_classes={n_classes}: a classifier needs at least 2 classes")
    size = int(settings.image_size)
    set_random_seed(seed)

    inputs = keras.Input(shape=(size, size, 1), dtype="float32", name=INPUT_NAME)
    x = inputs
    augment = settings.augment
    if augment.rotation_degrees > 0:
        x = layers.RandomRotation(
            factor=augment.rotation_degrees / 360.0,
            fill_mode="constant",
            fill_value=0.0,
            interpolation=augment.interpolation,
            seed=seed,
            name="augment_rotation",
        )(x)
    if augment.shift_pixels > 0:
        shift = augment.shift_pixels / size
        x = layers.RandomTranslation(
            height_factor=shift,
            width_factor=shift,
            fill_mode="constant",
            fill_value=0.0,
            interpolation=augment.interpolation,
            seed=seed + 1,
            name="augment_shift",
        )(x)
    x = layers.Concatenate(axis=-1, name="to_rgb")([x, x, x])
    if settings.intensity == "per_image":
        x = PerImageStandardization(name=PREPROCESS_LAYER)(x)
    else:
        x = layers.Rescaling(1.0 / 127.5, offset=-1.0, name=PREPROCESS_LAYER)(x)

    own_backbone_seed = backbone_seed if is_random_control(strategy, settings.weights) else None
    if own_backbone_seed is not None:
        set_random_seed(own_backbone_seed)
    backbone = load_backbone(strategy, settings, (size, size, 3))
    if own_backbone_seed is not None:
        set_random_seed(seed)  # the head's draws stay the fold's own
    x = backbone(x)
    x = layers.Identity(name=GAP_LAYER)(x)
    x = layers.Dense(settings.head_units, activation="relu", name=HEAD_LAYERS[0])(x)
    x = layers.BatchNormalization(momentum=settings.batchnorm_momentum, name=HEAD_LAYERS[1])(x)
    x = layers.Dropout(settings.dropout, seed=seed + 2, name=HEAD_LAYERS[2])(x)
    outputs = layers.Dense(n_classes, activation="softmax", dtype="float32", name=HEAD_LAYERS[3])(x)

    model = keras.Model(inputs, outputs, name=f"biomark_{strategy.dirname}")
    apply_strategy(model, strategy)
    set_batchnorm_momentum(model, settings.batchnorm_momentum)
    if settings.zero_init_residual and backbone_is_random(strategy, settings):
        zero_init_residual(model)
    logger.debug(
        "built %s: %d classes, %d px, alpha %s, weights %s",
        model.name,
        n_classes,
        size,
        settings.alpha,
        settings.weights,
    )
    return model


def set_random_seed(seed: int) -> None:
    """``keras.utils.set_random_seed``, without resetting TensorFlow's global seed.

    ``tf.random.set_seed`` clears TensorFlow's kernel caches, after which every
    compiled ``tf.function`` is instantiated and optimised again on its next
    call: 40-90 s for MobileNetV2's training step on two busy cores, paid by
    every fold, even by a fold that reuses an earlier fold's compiled model
    (:mod:`biomark.train.reuse`). Keras 3 draws every random number of these
    models (initializers, augmentation, dropout) from its own seeded
    generators, so TensorFlow's global seed plays no part in them and is left
    alone. With other backends this is ``keras.utils.set_random_seed``.
    """
    import keras

    if keras.backend.backend() != "tensorflow":
        keras.utils.set_random_seed(seed)
        return
    import tensorflow as tf

    original = tf.random.set_seed
    tf.random.set_seed = lambda _seed: None
    try:
        keras.utils.set_random_seed(seed)
    finally:
        tf.random.set_seed = original


def backbone_is_random(strategy: StrategySpec, settings: ModelSettings) -> bool:
    """Whether the strategy's backbone starts from random weights (scratch, or
    ``weights: none``).

    Examples
    --------
    >>> backbone_is_random(StrategySpec("scratch"), ModelSettings(weights="imagenet"))
    True
    >>> backbone_is_random(StrategySpec("frozen"), ModelSettings(weights="imagenet"))
    False
    >>> backbone_is_random(StrategySpec("frozen"), ModelSettings(weights="none"))  # a control
    True
    """
    return not needs_pretrained(strategy) or is_random_control(strategy, settings.weights)


def set_batchnorm_momentum(model: keras.Model, momentum: float) -> int:
    """Set the moving-statistics momentum of every BatchNormalization layer; returns how many.

    Frozen layers (inference mode) never update their statistics, so the value
    only matters for the layers that train.
    """
    import keras

    count = 0
    for layer in _all_layers(model):
        if isinstance(layer, keras.layers.BatchNormalization):
            layer.momentum = float(momentum)
            count += 1
    return count


def zero_init_residual(model: keras.Model) -> list[str]:
    """Start every trainable residual block as the identity ("zero-gamma").

    The last BatchNormalization of a residual inverted-residual block
    (``block_k_project_BN`` of a block with a ``block_k_add``) gets scale
    (gamma) 0, so the block's branch outputs 0 and the block passes its input
    through until training grows gamma (Goyal et al. 2017, section 5.1). Only
    blocks that train are changed.

    Returns
    -------
    list of str
        The BatchNormalization layers set to zero, in network order.
    """
    import numpy as np

    backbone = get_backbone(model)
    names = {layer.name for layer in backbone.layers}
    changed = []
    for layer in backbone.layers:
        if not layer.name.endswith("_project_BN") or not layer.trainable:
            continue
        if layer.name.replace("_project_BN", "_add") not in names:
            continue
        layer.gamma.assign(np.zeros(tuple(layer.gamma.shape), dtype="float32"))
        changed.append(layer.name)
    return changed


def _all_layers(layer: keras.layers.Layer) -> list[keras.layers.Layer]:
    out = []
    for sub in getattr(layer, "layers", []):
        out.append(sub)
        out.extend(_all_layers(sub))
    return out


def _block_end_layers(backbone: keras.Model) -> dict[str, str]:
    """Last layer (in network order) of each block: ``{"block_1": ..., "Conv_1": "out_relu"}``."""
    ends: dict[str, str] = {}
    for layer in backbone.layers:
        block = block_of(layer.name)
        if block in BLOCKS:
            ends[block] = layer.name
    ends["Conv_1"] = "out_relu"
    return ends


def feature_model(model: keras.Model, *, blocks: bool = False) -> keras.Model:
    """An inference model giving the probabilities and the GAP features.

    The returned model shares its layers (and weights) with ``model``;
    augmentation layers are inactive at inference.

    Parameters
    ----------
    model : keras.Model
        A model from :func:`build_model`.
    blocks : bool, default False
        Also output the global-average-pooled output of every block.

    Returns
    -------
    keras.Model
        Input as ``model``; dict output ``{"probs": (n, n_classes),
        "gap": (n, 1280)}`` and, with ``blocks``, ``{"block_1": (n, c_1), ...,
        "block_16": (n, c_16), "Conv_1": (n, 1280)}``. A block's output is its
        last layer (``block_k_add`` for residual blocks, else
        ``block_k_project_BN``); ``Conv_1`` is the top stage's output
        ``out_relu``, whose pooled value equals ``gap``.
    """
    import keras
    from keras import layers

    if not blocks:
        return keras.Model(
            model.inputs,
            {"probs": model.output, "gap": model.get_layer(GAP_LAYER).output},
            name=f"{model.name}_features",
        )
    backbone = get_backbone(model)
    ends = _block_end_layers(backbone)
    tapped = keras.Model(
        backbone.inputs,
        [backbone.output] + [backbone.get_layer(ends[key]).output for key in BLOCK_OUTPUTS],
        name=f"{BACKBONE_NAME}_taps",
    )
    pooled, *maps = tapped(model.get_layer(PREPROCESS_LAYER).output)
    x = model.get_layer(GAP_LAYER)(pooled)
    outputs = {"gap": x}
    for name in HEAD_LAYERS:
        x = model.get_layer(name)(x)
    outputs["probs"] = x
    for key, fmap in zip(BLOCK_OUTPUTS, maps, strict=True):
        outputs[key] = layers.GlobalAveragePooling2D(name=f"{key}_gap")(fmap)
    return keras.Model(model.inputs, outputs, name=f"{model.name}_block_features")
