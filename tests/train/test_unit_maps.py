"""StrategyModels: one architecture per strategy, each fold's weights swapped in, the same outputs
as predict."""

from __future__ import annotations

from pathlib import Path

import keras
import numpy as np
import pytest

from biomark.analysis.head import Head
from biomark.config import ModelSettings, StrategySpec
from biomark.exceptions import RunError
from biomark.models.mobilenet import build_model, feature_model
from biomark.train.unit_maps import StrategyModels, batch_size_for


@pytest.fixture(scope="module")
def two_folds(
    tmp_path_factory: pytest.TempPathFactory,
) -> tuple[dict[int, Path], np.ndarray, dict[int, dict]]:
    """Two folds of one architecture (two different networks) saved as model.keras, and what each
    gives."""
    settings = ModelSettings(image_size=64, weights="none", alpha=0.35, head_units=8)
    root = tmp_path_factory.mktemp("unit_maps")
    images = np.random.default_rng(0).integers(0, 256, size=(6, 64, 64)).astype(np.uint8)
    paths, expected = {}, {}
    for fold, seed in ((0, 0), (1, 7)):
        model = build_model(StrategySpec("scratch"), 3, settings, seed=seed)
        out = feature_model(model)(
            [images[..., None].astype("float32")], training=False
        )  # the dump's computation
        expected[fold] = {k: keras.ops.convert_to_numpy(v) for k, v in out.items()}
        paths[fold] = root / f"fold_{fold}" / "model.keras"
        paths[fold].parent.mkdir()
        model.save(paths[fold])
        keras.backend.clear_session()
    return paths, images, expected


def test_each_fold_gives_its_own_model_outputs(two_folds) -> None:
    paths, images, expected = two_folds
    models = StrategyModels()
    try:
        folds = {f: models.open(f, p) for f, p in paths.items()}  # fold 1 loads weights only
        for f in (1, 0):  # switching back restores each fold's weights
            out = folds[f].forward(images, maps=True, channels=[0, 5, 1279], batch_size=4)
            assert out["maps"].shape == (6, 3, 2, 2) and (out["maps"] >= 0).all()
            # untrained networks: activations of ~1e-11, so compare relative to their scale
            scale = np.abs(expected[f]["gap"]).max()
            np.testing.assert_allclose(out["gap"], expected[f]["gap"], atol=1e-4 * scale)
            np.testing.assert_allclose(
                out["maps"].mean(axis=(2, 3)),
                expected[f]["gap"][:, [0, 5, 1279]],
                atol=1e-4 * scale,
            )
            probs = Head.from_arrays(folds[f].head_arrays()).probs(out["gap"])
            np.testing.assert_allclose(probs, expected[f]["probs"], atol=1e-5)
        scale = np.abs(expected[0]["gap"]).max()
        assert (
            np.abs(expected[0]["gap"] - expected[1]["gap"]).max() > 0.1 * scale
        )  # two different networks
        assert folds[0].image_size == 64 and folds[0].n_features == 1280
        with pytest.raises(ValueError, match="channels"):
            folds[0].forward(images[:2], maps=True, channels=[1280])
        with pytest.raises(ValueError, match="n >= 1"):
            folds[0].forward(images[:0])
    finally:
        models.close()
        keras.backend.clear_session()


def test_a_file_that_is_no_model_archive_is_named_as_such(two_folds, tmp_path: Path) -> None:
    # Keras calls a non-zip file "File not found"; the error must say the file is there but broken
    paths, _, _ = two_folds
    truncated = tmp_path / "fold_01" / "model.keras"
    truncated.parent.mkdir()
    truncated.write_bytes(paths[1].read_bytes()[:2000])
    models = StrategyModels()
    try:
        models.open(0, paths[0])  # the first fold builds the architecture; the next load weights
        with pytest.raises(RunError, match="not a Keras model archive .*2000 bytes") as err:
            models.open(1, truncated)
        assert str(truncated) in str(err.value)
        with pytest.raises(RunError, match="no trained model here"):
            models.open(2, tmp_path / "fold_02" / "model.keras")
    finally:
        models.close()
        keras.backend.clear_session()


@pytest.mark.parametrize(("side", "batch"), [(32, 256), (64, 256), (96, 113), (200, 26), (1024, 8)])
def test_batch_size_follows_the_image_size(side: int, batch: int) -> None:
    assert batch_size_for(side) == batch
