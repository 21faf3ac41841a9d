"""FoldedBatchNorm: the inference copy computes what the source computes, with the foldable
BatchNormalization layers (and only those) folded into their convolutions."""

from __future__ import annotations

import keras
import numpy as np
import pytest

from biomark.config import ModelSettings, StrategySpec
from biomark.models.mobilenet import build_model
from biomark.models.strategies import get_backbone
from biomark.train.folded_batchnorm import FoldedBatchNorm, foldable_pairs


def _randomise_statistics(model: keras.Model, seed: int) -> None:
    """Non-trivial BatchNormalization weights and statistics, so that folding has work to do."""
    rng = np.random.default_rng(seed)
    for layer in model.layers:
        if isinstance(layer, keras.layers.BatchNormalization):
            n = int(layer.moving_mean.shape[0])
            layer.moving_mean.assign(rng.normal(0.0, 0.5, n).astype("float32"))
            layer.moving_variance.assign(rng.uniform(0.2, 3.0, n).astype("float32"))
            if layer.scale:
                layer.gamma.assign(rng.normal(1.0, 0.5, n).astype("float32"))
            if layer.center:
                layer.beta.assign(rng.normal(0.0, 0.5, n).astype("float32"))


def _small_network() -> keras.Model:
    """Three foldable pairs (a plain, a depthwise with multiplier 2, and a biased convolution) and
    three that are not: a convolution with its own activation, one whose output also feeds a skip
    connection, and a normalisation after an addition."""
    inputs = keras.Input((12, 12, 3))
    x = keras.layers.Conv2D(4, 3, padding="same", use_bias=False, name="plain")(inputs)
    x = keras.layers.BatchNormalization(name="plain_bn")(x)
    x = keras.layers.ReLU(6.0)(x)
    x = keras.layers.DepthwiseConv2D(
        3, depth_multiplier=2, padding="same", use_bias=False, name="dw"
    )(x)
    x = keras.layers.BatchNormalization(name="dw_bn")(x)
    x = keras.layers.Conv2D(6, 1, name="biased")(x)
    x = keras.layers.BatchNormalization(name="biased_bn", center=False)(x)
    x = keras.layers.Conv2D(6, 1, activation="relu", name="activated")(x)
    x = keras.layers.BatchNormalization(name="activated_bn")(x)
    branch = keras.layers.Conv2D(6, 1, use_bias=False, name="shared")(x)
    y = keras.layers.BatchNormalization(name="shared_bn", scale=False)(branch)
    y = keras.layers.Add()([y, branch])
    y = keras.layers.BatchNormalization(name="after_add")(y)
    return keras.Model(inputs, y)


def _images(n: int, side: int, channels: int, seed: int) -> np.ndarray:
    return np.random.default_rng(seed).normal(0.0, 1.0, (n, side, side, channels)).astype("float32")


def _relative_gap(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.abs(a - b).max() / np.abs(b).max())


def _run(model: keras.Model, x: np.ndarray) -> np.ndarray:
    return keras.ops.convert_to_numpy(model(x, training=False))


def test_only_convolutions_that_feed_their_normalisation_alone_are_folded() -> None:
    model = _small_network()
    assert foldable_pairs(model) == {"plain": "plain_bn", "dw": "dw_bn", "biased": "biased_bn"}


def test_the_folded_copy_computes_what_the_source_computes() -> None:
    model = _small_network()
    _randomise_statistics(model, seed=1)
    folded = FoldedBatchNorm(model)
    folded.assign(folded.folded_weights())
    x = _images(5, 12, 3, seed=2)
    assert _relative_gap(_run(folded.model, x), _run(model, x)) < 1e-5
    names = {layer.name for layer in folded.model.layers}
    assert not {"plain_bn", "dw_bn", "biased_bn"} & names  # folded away
    assert {"activated_bn", "shared_bn", "after_add"} <= names  # kept as they are
    # the source is left as it was
    assert not model.get_layer("plain").use_bias


def test_new_source_weights_reach_the_copy_through_folded_weights() -> None:
    model = _small_network()
    _randomise_statistics(model, seed=3)
    folded = FoldedBatchNorm(model)
    first = folded.folded_weights()
    _randomise_statistics(model, seed=4)  # as the report swaps in another fold's weights
    folded.assign(folded.folded_weights())
    x = _images(3, 12, 3, seed=5)
    expected = _run(model, x)
    assert _relative_gap(_run(folded.model, x), expected) < 1e-5
    folded.assign(first)  # and back: the stored weights of the first state still fit
    assert _relative_gap(_run(folded.model, x), expected) > 1e-2
    with pytest.raises(ValueError, match="folded weight arrays"):
        folded.assign(first[:-1])


def test_a_network_with_nothing_to_fold_is_its_own_copy() -> None:
    inputs = keras.Input((8, 8, 2))
    model = keras.Model(inputs, keras.layers.Conv2D(3, 3, activation="relu")(inputs))
    folded = FoldedBatchNorm(model)
    assert folded.pairs == {} and folded.model is model
    weights = folded.folded_weights()
    assert len(weights) == 2
    folded.assign(weights)  # a no-op, but checked like any other


def test_every_batchnorm_of_the_mobilenet_backbone_folds() -> None:
    settings = ModelSettings(image_size=32, weights="none", alpha=0.35, head_units=8)
    model = build_model(StrategySpec("scratch"), 3, settings, seed=0)
    backbone = get_backbone(model)
    maps = keras.Model(backbone.inputs, backbone.get_layer("out_relu").output)
    _randomise_statistics(backbone, seed=6)
    folded = FoldedBatchNorm(maps)
    n_norms = sum(isinstance(layer, keras.layers.BatchNormalization) for layer in maps.layers)
    assert len(folded.pairs) == n_norms == 52
    folded.assign(folded.folded_weights())
    x = _images(2, 32, 3, seed=7)
    expected = keras.ops.convert_to_numpy(maps([x], training=False))
    got = keras.ops.convert_to_numpy(folded.model([x], training=False))
    assert _relative_gap(got, expected) < 1e-4
    keras.backend.clear_session()
