"""extract_head: the numpy head reproduces the Keras model's probabilities from the GAP features."""

from __future__ import annotations

from pathlib import Path

import keras
import numpy as np
import pytest

from biomark.analysis.head import Head
from biomark.config import ModelSettings, StrategySpec
from biomark.exceptions import RunError
from biomark.models.mobilenet import build_model
from biomark.train.head import extract_head
from biomark.train.predict import predict_features


@pytest.fixture(scope="module")
def saved_model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny model with non-trivial BatchNorm statistics in the head, saved as model.keras."""
    settings = ModelSettings(image_size=32, weights="none", alpha=0.35, head_units=16)
    model = build_model(StrategySpec("scratch"), 4, settings, seed=0)
    rng = np.random.default_rng(0)
    bn = model.get_layer("head_bn")
    bn.moving_mean.assign(rng.random(16).astype("float32"))
    bn.moving_variance.assign((rng.random(16) + 0.5).astype("float32"))
    bn.gamma.assign((rng.random(16) + 0.5).astype("float32"))
    bn.beta.assign(rng.standard_normal(16).astype("float32"))
    path = tmp_path_factory.mktemp("head") / "model.keras"
    model.save(path)
    keras.backend.clear_session()
    return path


def test_head_reproduces_the_model_probabilities(saved_model: Path) -> None:
    images = np.random.default_rng(1).integers(0, 256, size=(12, 32, 32)).astype(np.uint8)
    out = predict_features(saved_model, images)
    arrays = extract_head(saved_model)
    assert arrays["kernel"].shape == (1280, 16) and arrays["out_kernel"].shape == (16, 4)
    head = Head.from_arrays(arrays, where=str(saved_model))
    np.testing.assert_allclose(head.probs(out["gap"]), out["probs"], atol=1e-5)
    assert (head.probs(out["gap"]).argmax(1) == out["probs"].argmax(1)).all()


def test_a_model_without_the_head_is_refused(tmp_path: Path) -> None:
    inputs = keras.Input(shape=(4,))
    model = keras.Model(inputs, keras.layers.Dense(2, name="probs")(inputs))
    with pytest.raises(RunError, match="no classifier head"):
        extract_head(model)
    with pytest.raises(RunError, match="no trained model"):
        extract_head(tmp_path / "missing.keras")
