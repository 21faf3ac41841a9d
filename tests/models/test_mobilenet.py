"""Tests for biomark.models.mobilenet: graph, augmentation, seeding, features."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest

from biomark.config import StrategySpec
from biomark.models.mobilenet import (
    BACKBONE_NAME,
    BLOCK_OUTPUTS,
    GAP_LAYER,
    HEAD_LAYERS,
    PREPROCESS_LAYER,
    build_model,
    feature_model,
)
from biomark.models.strategies import get_backbone

keras = pytest.importorskip("keras")


def test_input_output_shapes_and_dtypes(scratch_model, settings):
    assert tuple(scratch_model.input.shape) == (None, settings.image_size, settings.image_size, 1)
    assert tuple(scratch_model.output.shape) == (None, 3)
    assert scratch_model.get_layer("probs").dtype_policy.compute_dtype == "float32"
    assert scratch_model.get_layer("probs").activation is keras.activations.softmax


def test_head_follows_the_paper(scratch_model, settings):
    dense, bn, dropout, probs = (scratch_model.get_layer(n) for n in HEAD_LAYERS)
    assert dense.units == settings.head_units and dense.activation is keras.activations.relu
    assert isinstance(bn, keras.layers.BatchNormalization)
    assert dropout.rate == settings.dropout
    assert probs.units == 3


def test_backbone_is_one_nested_mobilenetv2(scratch_model):
    backbone = scratch_model.get_layer(BACKBONE_NAME)
    assert isinstance(backbone, keras.Model)
    assert backbone.output.shape[-1] == 1280
    names = {layer.name for layer in backbone.layers}
    assert {"Conv1", "block_1_expand", "block_16_project_BN", "Conv_1", "out_relu"} <= names


def test_augmentation_layers_match_settings(scratch_model, settings):
    rotation = scratch_model.get_layer("augment_rotation")
    shift = scratch_model.get_layer("augment_shift")
    assert rotation.factor == pytest.approx((-10 / 360, 10 / 360))
    assert rotation.fill_mode == "constant" and rotation.fill_value == 0.0
    expected = settings.augment.shift_pixels / settings.image_size
    assert shift.height_factor == pytest.approx(expected)
    assert shift.width_factor == pytest.approx(expected)
    assert shift.fill_mode == "constant" and shift.fill_value == 0.0


def test_augmentation_only_in_training(scratch_model, images):
    white = np.full_like(images, 255.0)
    for name in ("augment_rotation", "augment_shift"):
        layer = scratch_model.get_layer(name)
        inference = keras.ops.convert_to_numpy(layer(white, training=False))
        np.testing.assert_array_equal(inference, white)
        augmented = keras.ops.convert_to_numpy(layer(white, training=True))
        assert augmented.min() < 255.0  # black (0) fill entered the frame


def test_no_augmentation_layers_when_disabled(make_settings):
    from biomark.config import AugmentSettings

    settings = make_settings(augment=AugmentSettings(rotation_degrees=0.0, shift_pixels=0))
    model = build_model(StrategySpec("scratch"), 2, settings, seed=0)
    names = {layer.name for layer in model.layers}
    assert not names & {"augment_rotation", "augment_shift"}


def test_per_image_standardisation_is_the_default_preprocessing(scratch_model, images, infer):
    probe = keras.Model(scratch_model.input, scratch_model.get_layer(PREPROCESS_LAYER).output)
    out = infer(probe, images)
    flat = np.repeat(images, 3, axis=-1).reshape(len(images), -1)
    expected = (flat - flat.mean(axis=1, keepdims=True)) / flat.std(axis=1, keepdims=True)
    np.testing.assert_allclose(out.reshape(len(images), -1), expected, atol=1e-4)


def test_fixed_preprocessing_is_mobilenet_v2_preprocess_input(make_settings, images, infer):
    model = build_model(StrategySpec("scratch"), 3, make_settings(intensity="fixed"), seed=0)
    probe = keras.Model(model.input, model.get_layer(PREPROCESS_LAYER).output)
    out = infer(probe, images)
    expected = keras.applications.mobilenet_v2.preprocess_input(np.repeat(images, 3, axis=-1))
    np.testing.assert_allclose(out, expected, atol=1e-6)


def test_batchnorm_momentum_and_zero_initialised_residual_blocks(make_settings):
    from biomark.models.strategies import get_backbone

    model = build_model(StrategySpec("scratch"), 3, make_settings(batchnorm_momentum=0.8), seed=0)
    backbone = get_backbone(model)
    batchnorms = [
        layer for layer in backbone.layers if isinstance(layer, keras.layers.BatchNormalization)
    ]
    assert batchnorms and all(layer.momentum == 0.8 for layer in batchnorms)
    assert model.get_layer("head_bn").momentum == 0.8
    names = {layer.name for layer in backbone.layers}
    residual = [
        n for n in names if n.endswith("_project_BN") and n.replace("_project_BN", "_add") in names
    ]
    assert len(residual) == 10  # MobileNetV2's residual inverted-residual blocks
    for name in residual:
        np.testing.assert_array_equal(
            keras.ops.convert_to_numpy(backbone.get_layer(name).gamma), 0.0
        )
    plain = backbone.get_layer("block_1_project_BN")  # not residual: untouched
    assert np.all(keras.ops.convert_to_numpy(plain.gamma) == 1.0)

    untouched = build_model(
        StrategySpec("scratch"), 3, make_settings(zero_init_residual=False), seed=0
    )
    gamma = keras.ops.convert_to_numpy(get_backbone(untouched).get_layer(residual[0]).gamma)
    assert np.all(gamma == 1.0)


def test_zero_init_leaves_frozen_random_blocks_alone(make_settings):
    """A frozen random backbone (weights: none) is a control: its blocks stay as initialised."""
    from biomark.models.strategies import get_backbone

    model = build_model(StrategySpec("frozen"), 3, make_settings(), seed=0)
    backbone = get_backbone(model)
    assert all(
        np.all(keras.ops.convert_to_numpy(layer.gamma) == 1.0)
        for layer in backbone.layers
        if layer.name.endswith("_project_BN")
    )
    finetune = get_backbone(build_model(StrategySpec("finetune", 3), 3, make_settings(), seed=0))
    zeroed = {
        layer.name
        for layer in finetune.layers
        if layer.name.endswith("_project_BN")
        and np.all(keras.ops.convert_to_numpy(layer.gamma) == 0.0)
    }
    assert zeroed == {"block_14_project_BN", "block_15_project_BN"}  # the trainable residual blocks


def test_same_seed_same_weights_other_seed_differs(make_settings):
    settings = make_settings()
    a = build_model(StrategySpec("scratch"), 3, settings, seed=5)
    b = build_model(StrategySpec("scratch"), 3, settings, seed=5)
    c = build_model(StrategySpec("scratch"), 3, settings, seed=6)
    for wa, wb in zip(a.get_weights(), b.get_weights(), strict=True):
        np.testing.assert_array_equal(wa, wb)
    assert not np.array_equal(
        a.get_layer("head_dense").get_weights()[0], c.get_layer("head_dense").get_weights()[0]
    )


def _weights_of(model, layer: str) -> list[np.ndarray]:
    return [np.asarray(w) for w in model.get_layer(layer).get_weights()]


def test_a_random_control_shares_its_backbone_seed_and_draws_its_own_head(make_settings):
    """Folds of a random-features control given one backbone seed share one backbone, as the folds
    of the pretrained strategy share ImageNet's; each fold's seed still draws its head."""
    settings = make_settings(weights="none")
    frozen = StrategySpec("frozen")
    fold0 = build_model(frozen, 3, settings, seed=5, backbone_seed=11)
    fold1 = build_model(frozen, 3, settings, seed=6, backbone_seed=11)
    other = build_model(frozen, 3, settings, seed=5, backbone_seed=12)
    for wa, wb in zip(
        _weights_of(fold0, BACKBONE_NAME), _weights_of(fold1, BACKBONE_NAME), strict=True
    ):
        np.testing.assert_array_equal(wa, wb)
    assert not np.array_equal(
        _weights_of(fold0, BACKBONE_NAME)[0], _weights_of(other, BACKBONE_NAME)[0]
    )
    # the head follows the fold's seed alone: another seed draws another head, another backbone
    # seed leaves it as it was
    assert not np.array_equal(
        _weights_of(fold0, "head_dense")[0], _weights_of(fold1, "head_dense")[0]
    )
    np.testing.assert_array_equal(
        _weights_of(fold0, "head_dense")[0], _weights_of(other, "head_dense")[0]
    )


def test_a_backbone_seed_changes_nothing_where_the_backbone_is_not_a_control(make_settings):
    """scratch trains its own backbone per fold: a backbone seed leaves its weights to the seed."""
    settings = make_settings(weights="none")
    plain = build_model(StrategySpec("scratch"), 3, settings, seed=5)
    given = build_model(StrategySpec("scratch"), 3, settings, seed=5, backbone_seed=11)
    for wa, wb in zip(plain.get_weights(), given.get_weights(), strict=True):
        np.testing.assert_array_equal(wa, wb)


def test_needs_two_classes(settings):
    with pytest.raises(ValueError, match="n_classes=1"):
        build_model(StrategySpec("scratch"), 1, settings)


def test_feature_model_outputs(scratch_model, images, infer):
    features = infer(feature_model(scratch_model), images)
    assert set(features) == {"probs", "gap"}
    assert features["gap"].shape == (4, 1280)
    np.testing.assert_allclose(features["probs"], infer(scratch_model, images), atol=1e-6)
    np.testing.assert_allclose(features["probs"].sum(axis=1), 1.0, atol=1e-5)


def test_gap_is_the_spatial_mean_of_the_last_conv_map(scratch_model, images, infer):
    """The channel-map identity: gap[c] == mean over (h, w) of out_relu[..., c]."""
    backbone = get_backbone(scratch_model)
    conv_map = keras.Model(backbone.input, backbone.get_layer("out_relu").output)
    maps = infer(conv_map, np.repeat(images, 3, axis=-1) / 127.5 - 1.0)
    gap = infer(feature_model(scratch_model), images)["gap"]
    np.testing.assert_allclose(gap, maps.mean(axis=(1, 2)), atol=1e-5)


def test_block_features(scratch_model, images, infer):
    plain = infer(feature_model(scratch_model), images)
    blocks = infer(feature_model(scratch_model, blocks=True), images)
    assert set(blocks) == {"probs", "gap", *BLOCK_OUTPUTS}
    assert len(BLOCK_OUTPUTS) == 17
    np.testing.assert_allclose(blocks["gap"], plain["gap"], atol=1e-5)
    np.testing.assert_allclose(blocks["probs"], plain["probs"], atol=1e-5)
    np.testing.assert_allclose(blocks["Conv_1"], plain["gap"], atol=1e-5)
    backbone = get_backbone(scratch_model)
    block_7 = keras.Model(backbone.input, backbone.get_layer("block_7_add").output)
    maps = infer(block_7, np.repeat(images, 3, axis=-1) / 127.5 - 1.0)
    np.testing.assert_allclose(blocks["block_7"], maps.mean(axis=(1, 2)), atol=1e-5)
    assert blocks["block_16"].shape[1] == backbone.get_layer("block_16_project_BN").output.shape[-1]
    # the shared GAP layer still answers for the original graph
    assert scratch_model.get_layer(GAP_LAYER).output.shape[-1] == 1280


def test_importing_the_package_does_not_import_keras():
    code = (
        "import sys; import biomark.models, biomark.models.strategies, biomark.train, "
        "biomark.train.metrics, biomark.data.folds; "
        "assert 'keras' not in sys.modules and 'tensorflow' not in sys.modules, 'keras imported'"
    )
    subprocess.run([sys.executable, "-c", code], check=True)


def test_probabilities_stay_float32_under_mixed_precision(make_settings):
    previous = keras.config.dtype_policy()
    keras.config.set_dtype_policy("mixed_float16")
    try:
        model = build_model(StrategySpec("scratch"), 3, make_settings(), seed=0)
    finally:
        keras.config.set_dtype_policy(previous)
    assert model.output.dtype == "float32"
    assert model.get_layer(GAP_LAYER).output.dtype == "float16"
