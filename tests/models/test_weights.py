"""Tests for biomark.models.weights: ImageNet cache, local files, none - offline."""

from __future__ import annotations

import logging

import numpy as np
import pytest

from biomark.config import StrategySpec
from biomark.exceptions import WeightsError
from biomark.models.mobilenet import build_model
from biomark.models.strategies import get_backbone
from biomark.models.weights import (
    IMAGENET_FILENAME,
    imagenet_cache_path,
    imagenet_filename,
    imagenet_url,
    load_backbone,
    resolve_backbone_weights,
)

keras = pytest.importorskip("keras")

FROZEN = StrategySpec("frozen")


def assert_same_weights(model, reference):
    got, want = model.get_weights(), reference.get_weights()
    assert len(got) == len(want)
    for a, b in zip(got, want, strict=True):
        np.testing.assert_array_equal(a, b)


@pytest.mark.parametrize(
    ("alpha", "rows", "name"),
    [
        (1.0, 224, IMAGENET_FILENAME),
        (1.0, 200, IMAGENET_FILENAME),
        (0.35, 96, "mobilenet_v2_weights_tf_dim_ordering_tf_kernels_0.35_96_no_top.h5"),
        (0.5, 160, "mobilenet_v2_weights_tf_dim_ordering_tf_kernels_0.5_160_no_top.h5"),
        (1.4, 224, "mobilenet_v2_weights_tf_dim_ordering_tf_kernels_1.4_224_no_top.h5"),
    ],
)
def test_imagenet_filename_follows_keras(alpha, rows, name):
    assert imagenet_filename(alpha, rows) == name
    assert imagenet_url(alpha, rows).endswith("/keras-applications/mobilenet_v2/" + name)


def test_cache_path_honours_keras_home(tmp_path, monkeypatch):
    monkeypatch.setenv("KERAS_HOME", str(tmp_path))
    assert imagenet_cache_path() == tmp_path / "models" / IMAGENET_FILENAME
    monkeypatch.delenv("KERAS_HOME")
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    (tmp_path / "home").mkdir()
    assert imagenet_cache_path() == tmp_path / "home" / ".keras" / "models" / IMAGENET_FILENAME


def test_resolve_none_and_uncached_imagenet(tmp_path, monkeypatch):
    monkeypatch.setenv("KERAS_HOME", str(tmp_path))
    assert resolve_backbone_weights("none", alpha=1.0, image_size=200) is None
    assert resolve_backbone_weights("imagenet", alpha=1.0, image_size=200) == "imagenet"


def test_resolve_cached_imagenet(tmp_path, monkeypatch, weights_files):
    monkeypatch.setenv("KERAS_HOME", str(tmp_path))
    cached = imagenet_cache_path(0.35, 32)
    cached.parent.mkdir(parents=True)
    cached.write_bytes(weights_files["h5"].read_bytes())
    assert resolve_backbone_weights("imagenet", alpha=0.35, image_size=32) == str(cached)


@pytest.mark.parametrize(
    ("spec", "match"),
    [
        ("/no/such/file.h5", "file not found"),
        ("imagenet", "only for model.alpha in"),
    ],
)
def test_resolve_errors(spec, match):
    with pytest.raises(WeightsError, match=match):
        resolve_backbone_weights(spec, alpha=0.6, image_size=32)


def test_resolve_rejects_other_file_types(tmp_path):
    path = tmp_path / "weights.pt"
    path.write_bytes(b"x")
    with pytest.raises(WeightsError, match="not a Keras weights file"):
        resolve_backbone_weights(str(path), alpha=0.35, image_size=32)


@pytest.mark.parametrize("kind", ["weights.h5", "h5"])
def test_local_file_loads_exactly(weights_files, reference_backbone, make_settings, kind):
    settings = make_settings(weights=str(weights_files[kind]))
    model = build_model(FROZEN, 3, settings, seed=0)
    assert_same_weights(get_backbone(model), reference_backbone)


def test_cached_imagenet_file_is_used_without_download(
    tmp_path, monkeypatch, weights_files, reference_backbone, make_settings
):
    monkeypatch.setenv("KERAS_HOME", str(tmp_path))
    cached = imagenet_cache_path(0.35, 32)
    cached.parent.mkdir(parents=True)
    cached.write_bytes(weights_files["h5"].read_bytes())
    backbone = load_backbone(FROZEN, make_settings(weights="imagenet"), (32, 32, 3))
    assert_same_weights(backbone, reference_backbone)


def test_no_network_no_file_says_what_to_do(tmp_path, monkeypatch, make_settings):
    monkeypatch.setenv("KERAS_HOME", str(tmp_path / "empty"))
    settings = make_settings(weights="imagenet")
    expected_path = imagenet_cache_path(0.35, 32)
    with pytest.raises(WeightsError) as info:
        build_model(StrategySpec("finetune", 2), 3, settings, seed=0)
    message = str(info.value)
    assert str(expected_path) in message
    assert imagenet_url(0.35, 32) in message
    assert "model.weights: /path/to/file.h5" in message
    assert "URL fetch failure" in message


def test_wrong_alpha_file_is_a_weights_error(weights_files, make_settings):
    settings = make_settings(weights=str(weights_files["weights.h5"]), alpha=0.5)
    with pytest.raises(WeightsError, match=r"do not fit MobileNetV2\(alpha=0.5"):
        build_model(FROZEN, 3, settings, seed=0)


def test_corrupt_file_is_a_weights_error(tmp_path, make_settings):
    path = tmp_path / "broken.h5"
    path.write_bytes(b"not hdf5")
    with pytest.raises(WeightsError, match="broken.h5"):
        build_model(FROZEN, 3, make_settings(weights=str(path)), seed=0)


def test_none_for_pretrained_strategy_warns_and_is_seeded(make_settings, caplog, monkeypatch):
    import biomark.models.weights as weights_module

    monkeypatch.setattr(
        weights_module, "_WARNED_RANDOM", set()
    )  # warned once per strategy and process
    settings = make_settings(weights="none")
    with caplog.at_level(logging.WARNING, logger="biomark.models.weights"):
        a = build_model(FROZEN, 3, settings, seed=3)
    assert "random-features control, not ImageNet" in caplog.text
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="biomark.models.weights"):
        b = build_model(FROZEN, 3, settings, seed=3)
    assert caplog.text == ""  # every fold would say the same: once is enough
    assert_same_weights(get_backbone(a), get_backbone(b))


def test_scratch_ignores_weights_and_never_warns(
    weights_files, reference_backbone, make_settings, caplog
):
    settings = make_settings(weights=str(weights_files["weights.h5"]))
    with caplog.at_level(logging.WARNING, logger="biomark.models.weights"):
        model = build_model(StrategySpec("scratch"), 3, settings, seed=0)
    assert caplog.text == ""
    first = get_backbone(model).get_layer("Conv1").get_weights()[0]
    assert not np.array_equal(first, reference_backbone.get_layer("Conv1").get_weights()[0])
