"""channel_maps: the out_relu maps whose spatial mean is the GAP feature."""

from __future__ import annotations

from pathlib import Path

import keras
import numpy as np
import pytest

from biomark.config import ModelSettings, StrategySpec
from biomark.features.deep import META_COLUMNS, write_features
from biomark.models.mobilenet import build_model
from biomark.train.maps import channel_maps, maps_model
from biomark.train.predict import predict_features


@pytest.fixture(scope="module")
def model_and_images(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, np.ndarray]:
    settings = ModelSettings(image_size=64, weights="none", alpha=0.35, head_units=8)
    model = build_model(StrategySpec("scratch"), 3, settings, seed=0)
    path = tmp_path_factory.mktemp("maps") / "model.keras"
    model.save(path)
    keras.backend.clear_session()
    images = (
        np.random.default_rng(0).integers(0, 256, size=(9, 48, 48)).astype(np.uint8)
    )  # resized to 64
    return path, images


def test_spatial_mean_of_the_map_is_the_dumped_gap_value(model_and_images, tmp_path: Path) -> None:
    import pandas as pd

    path, images = model_and_images
    dumped = predict_features(path, images, batch_size=4)
    meta = pd.DataFrame({c: [f"{c}{i}" for i in range(len(images))] for c in META_COLUMNS})
    table = write_features(
        tmp_path / "features.parquet", meta, dumped["gap"], dumped["probs"], ["a", "b", "c"]
    )
    from_parquet = pd.read_parquet(table).filter(regex=r"^f\d{4}$").to_numpy()
    channels = [0, 7, 600, 1279]
    out = channel_maps(path, images, channels, batch_size=4)
    assert out["maps"].shape == (9, 4, 2, 2)  # 64 px / 32
    np.testing.assert_allclose(out["maps"].mean(axis=(2, 3)), from_parquet[:, channels], atol=1e-4)
    np.testing.assert_allclose(out["gap"], dumped["gap"], atol=1e-5)
    np.testing.assert_allclose(out["probs"], dumped["probs"], atol=1e-6)
    assert (out["maps"] >= 0).all()


def test_all_channels_and_bad_channels(model_and_images) -> None:
    path, images = model_and_images
    out = channel_maps(path, images[:2])
    assert out["maps"].shape == (2, 1280, 2, 2)
    with pytest.raises(ValueError, match="channels"):
        channel_maps(path, images[:2], [1280])
    with pytest.raises(ValueError, match="no images|n >= 1"):
        channel_maps(path, images[:0])


def test_maps_model_outputs() -> None:
    settings = ModelSettings(image_size=32, weights="none", alpha=0.35, head_units=8)
    model = build_model(StrategySpec("frozen"), 3, settings, seed=0)
    outputs = maps_model(model).output
    assert tuple(outputs["maps"].shape[1:]) == (1, 1, 1280) and tuple(
        outputs["probs"].shape[1:]
    ) == (3,)
    keras.backend.clear_session()
