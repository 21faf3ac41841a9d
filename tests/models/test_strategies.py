"""Tests for biomark.models.strategies: the block rule and trainable layers."""

from __future__ import annotations

import typing

import numpy as np
import pytest

from biomark.config import StrategyName, StrategySpec
from biomark.models.strategies import (
    BLOCKS,
    STRATEGIES,
    apply_strategy,
    block_of,
    get_backbone,
    needs_pretrained,
    trainable_backbone_layers,
    trainable_blocks,
)

keras = pytest.importorskip("keras")

HEAD_WITH_WEIGHTS = ("head_dense", "head_bn", "probs")


def test_registry_matches_config_names():
    assert tuple(STRATEGIES) == typing.get_args(StrategyName)


def test_blocks_are_the_16_inverted_residual_blocks_in_order():
    assert BLOCKS == tuple(f"block_{k}" for k in range(1, 17))


@pytest.mark.parametrize(
    ("name", "block"),
    [
        ("Conv1", "stem"),
        ("bn_Conv1", "stem"),
        ("Conv1_relu", "stem"),
        ("expanded_conv_depthwise", "stem"),
        ("expanded_conv_project_BN", "stem"),
        ("input_layer_3", "stem"),
        ("block_1_expand", "block_1"),
        ("block_1_pad", "block_1"),
        ("block_10_add", "block_10"),
        ("block_16_project_BN", "block_16"),
        ("Conv_1", "top"),
        ("Conv_1_bn", "top"),
        ("out_relu", "top"),
        ("global_average_pooling2d_7", "top"),
    ],
)
def test_block_of(name, block):
    assert block_of(name) == block


@pytest.mark.parametrize("name", ["block_17_expand", "block_0_expand", "dense", "head_bn"])
def test_block_of_rejects_other_names(name):
    with pytest.raises(ValueError, match="not a layer of Keras's MobileNetV2"):
        block_of(name)


def test_every_backbone_layer_has_a_block(scratch_model):
    backbone = get_backbone(scratch_model)
    blocks = [block_of(layer.name) for layer in backbone.layers]
    assert set(blocks) == {"stem", *BLOCKS, "top"}
    # network order: stem, block_1 .. block_16, top
    order = ["stem", *BLOCKS, "top"]
    ranks = [order.index(b) for b in blocks]
    assert ranks == sorted(ranks)


@pytest.mark.parametrize(
    ("label", "blocks"),
    [
        ("scratch", ("stem", *BLOCKS, "top")),
        ("frozen", ()),
        ("finetune:1", ("block_16", "top")),
        ("finetune:3", ("block_14", "block_15", "block_16", "top")),
        ("finetune:16", (*BLOCKS, "top")),
    ],
)
def test_trainable_blocks(label, blocks):
    assert trainable_blocks(StrategySpec.parse(label)) == blocks


@pytest.mark.parametrize(
    ("label", "pretrained"),
    [("scratch", False), ("frozen", True), ("finetune:11", True)],
)
def test_needs_pretrained(label, pretrained):
    assert needs_pretrained(StrategySpec.parse(label)) is pretrained


@pytest.fixture(scope="module")
def flag_model(make_settings):
    """One model whose flags each test re-sets with apply_strategy."""
    from biomark.models.mobilenet import build_model

    return build_model(StrategySpec("scratch"), 3, make_settings(), seed=1)


def _weighted_names(backbone, predicate) -> set[str]:
    return {layer.name for layer in backbone.layers if layer.weights and predicate(layer.name)}


@pytest.mark.parametrize(
    ("label", "rule"),
    [
        ("scratch", lambda n: True),
        ("frozen", lambda n: False),
        ("finetune:1", lambda n: n in {"Conv_1", "Conv_1_bn"} or n.startswith("block_16_")),
        (
            "finetune:3",
            lambda n: (
                n in {"Conv_1", "Conv_1_bn"}
                or n.startswith(("block_14_", "block_15_", "block_16_"))
            ),
        ),
        (
            "finetune:16",
            lambda n: not (n in {"Conv1", "bn_Conv1"} or n.startswith("expanded_conv_")),
        ),
    ],
)
def test_exactly_these_layers_train(flag_model, label, rule):
    apply_strategy(flag_model, StrategySpec.parse(label))
    backbone = get_backbone(flag_model)
    expected = _weighted_names(backbone, rule)
    assert set(trainable_backbone_layers(flag_model)) == expected
    if label == "finetune:1":
        assert expected == {
            "Conv_1",
            "Conv_1_bn",
            "block_16_expand",
            "block_16_expand_BN",
            "block_16_depthwise",
            "block_16_depthwise_BN",
            "block_16_project",
            "block_16_project_BN",
        }
    # Keras agrees: the model's trainable weights are the head's plus these layers'.
    trainable_ids = {id(w) for w in flag_model.trainable_weights}
    for layer in backbone.layers:
        for weight in layer.trainable_weights:
            assert (id(weight) in trainable_ids) == (layer.name in expected)
    for name in HEAD_WITH_WEIGHTS:
        layer = flag_model.get_layer(name)
        assert layer.trainable and layer.trainable_weights
        assert all(id(w) in trainable_ids for w in layer.trainable_weights)


def test_frozen_freezes_the_whole_backbone(flag_model):
    apply_strategy(flag_model, StrategySpec("frozen"))
    backbone = get_backbone(flag_model)
    assert not backbone.trainable
    assert backbone.trainable_weights == []
    head_weights = sum(len(flag_model.get_layer(n).trainable_weights) for n in HEAD_WITH_WEIGHTS)
    assert len(flag_model.trainable_weights) == head_weights


def test_apply_strategy_needs_a_backbone():
    inputs = keras.Input((4,))
    model = keras.Model(inputs, keras.layers.Dense(2)(inputs))
    with pytest.raises(ValueError, match="no nested layer named 'mobilenetv2'"):
        apply_strategy(model, StrategySpec("frozen"))


def test_frozen_batchnorm_keeps_its_statistics(make_settings):
    """A frozen block's BN runs in inference mode; a trainable block's updates."""
    from biomark.models.mobilenet import build_model

    model = build_model(StrategySpec("finetune", 1), 3, make_settings(), seed=0)
    model.compile(optimizer=keras.optimizers.SGD(0.01), loss="sparse_categorical_crossentropy")
    backbone = get_backbone(model)

    def stats(name):
        layer = backbone.get_layer(name)
        return [
            keras.ops.convert_to_numpy(layer.moving_mean),
            keras.ops.convert_to_numpy(layer.moving_variance),
        ]

    frozen_before, trained_before = stats("block_1_expand_BN"), stats("block_16_expand_BN")
    rng = np.random.default_rng(0)
    x = rng.integers(0, 256, size=(8, 32, 32, 1)).astype("float32")
    model.fit(x, np.arange(8) % 3, batch_size=8, epochs=1, verbose=0)
    frozen_after, trained_after = stats("block_1_expand_BN"), stats("block_16_expand_BN")
    assert all(np.array_equal(a, b) for a, b in zip(frozen_before, frozen_after, strict=True))
    assert not any(np.array_equal(a, b) for a, b in zip(trained_before, trained_after, strict=True))
