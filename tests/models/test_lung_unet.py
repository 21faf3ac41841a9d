"""The learned lung segmenter (biomark.models.lung_unet): shapes, learning, saving, errors."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from scipy import ndimage

from biomark.data.lungs import dice
from biomark.data.phantom import PHANTOM_CLASSES, render_phantom
from biomark.exceptions import ConfigError, DataError, WeightsError
from biomark.models.lung_unet import (
    build_lung_unet,
    load_lung_unet,
    predict_lung_masks,
    save_lung_unet,
    train_lung_unet,
)

TINY = {"size": 32, "depth": 2, "base_filters": 8, "batch_size": 4}


@pytest.fixture(scope="module")
def films() -> tuple[np.ndarray, np.ndarray]:
    """Ten 64 px phantom films with their true masks, letterboxed (padding exactly 0)."""
    images, masks = [], []
    for i in range(10):
        image, truth = render_phantom(
            PHANTOM_CLASSES[i % 7], 0.5, np.random.default_rng(300 + i), size=64
        )
        images.append(image)
        masks.append(truth.astype(np.uint8))
    images_array = np.stack(images)
    images_array[:, :6] = 0  # a letterbox band: predicted masks must stay out of it
    return images_array, np.stack(masks)


@pytest.fixture(scope="module")
def trained(films: tuple[np.ndarray, np.ndarray]):
    images, masks = films
    return train_lung_unet(images[:8], masks[:8], epochs=40, seed=0, **TINY)


def test_learns_the_lungs_of_films_it_never_saw(films, trained) -> None:
    images, masks = films
    predicted = predict_lung_masks(trained, images[8:])
    assert predicted.shape == (2, 64, 64) and predicted.dtype == np.uint8
    assert set(np.unique(predicted)) <= {0, 1}
    assert not predicted[:, :6].any()
    # 40 epochs on 8 tiny films reach Dice 0.7-0.75 here; an untrained model is near 0.2
    assert min(dice(p, m) for p, m in zip(predicted, masks[8:], strict=True)) > 0.5


def test_black_pixels_inside_a_lung_stay_lung(films, trained) -> None:
    """Only the letterbox padding is cleared, not every black pixel of the film."""
    images, masks = films
    film = images[8].copy()
    before = predict_lung_masks(trained, film[None])[0]
    depth = ndimage.distance_transform_edt(before & masks[8])
    centre = np.unravel_index(int(np.argmax(depth)), depth.shape)  # deepest inside a lung
    assert depth[centre] >= 3
    film[centre[0] - 1 : centre[0] + 2, centre[1] - 1 : centre[1] + 2] = 0  # an over-exposed spot
    after = predict_lung_masks(trained, film[None])[0]
    assert after[centre] == 1 and not after[:6].any()


def test_saved_model_predicts_the_same_and_keeps_its_record(films, trained, tmp_path: Path) -> None:
    images, _ = films
    path = save_lung_unet(trained, tmp_path / "lungs.keras", {"epochs": 40})
    loaded, info = load_lung_unet(path)
    assert info == {"epochs": 40}
    np.testing.assert_array_equal(
        predict_lung_masks(loaded, images), predict_lung_masks(trained, images)
    )
    assert sorted(p.name for p in tmp_path.iterdir()) == ["lungs.keras", "lungs.keras.json"]


def test_members_are_averaged_into_one_model_that_saves_and_loads(films, tmp_path: Path) -> None:
    images, masks = films
    epochs_seen: list[int] = []
    model = train_lung_unet(
        images[:8],
        masks[:8],
        epochs=2,
        members=2,
        on_epoch=lambda e, _: epochs_seen.append(e),
        run_eagerly=True,  # 8 steps: cheaper than tracing two models
        **TINY,
    )
    assert epochs_seen == [1, 2, 3, 4]  # counted over both members
    assert model.name == "lung_unet_average" and model.output_shape == (None, 32, 32, 1)
    loaded, _ = load_lung_unet(save_lung_unet(model, tmp_path / "two.keras", {}))
    np.testing.assert_array_equal(
        predict_lung_masks(loaded, images), predict_lung_masks(model, images)
    )
    # the average of the members' probabilities, not of their masks
    x = np.random.default_rng(0).normal(size=(2, 32, 32, 1)).astype("float32")
    members = [layer for layer in model.layers if layer.name.startswith("lung_unet_")]
    expected = np.mean([np.asarray(m.predict(x, verbose=0)) for m in members], axis=0)
    np.testing.assert_allclose(
        np.asarray(model.predict(x, verbose=0)), expected, rtol=1e-5, atol=1e-6
    )


def test_bad_settings_files_and_inputs_are_named(films, trained, tmp_path: Path) -> None:
    images, masks = films
    with pytest.raises(ValueError, match="must be a multiple of 2\\*\\*depth = 16"):
        build_lung_unet(40, depth=4)
    with pytest.raises(DataError, match=r"images \(10, 64, 64\) and masks \(9, 64, 64\)"):
        train_lung_unet(images, masks[:9], **TINY)
    with pytest.raises(DataError, match="at least 2"):
        train_lung_unet(images[:1], masks[:1], **TINY)
    with pytest.raises(ValueError, match="members=0: give at least 1"):
        train_lung_unet(images, masks, members=0, **TINY)
    with pytest.raises(ValueError, match="must end in .keras"):
        save_lung_unet(trained, tmp_path / "lungs.h5", {})
    with pytest.raises(
        WeightsError, match="no lung model file; train one with `biomark data mask-model`"
    ):
        load_lung_unet(tmp_path / "absent.keras")
    (tmp_path / "junk.keras").write_bytes(b"not a zip")
    with pytest.raises(WeightsError, match="junk.keras: not a lung model saved by biomark"):
        load_lung_unet(tmp_path / "junk.keras")


def test_a_size_no_step_can_train_at_is_named_before_the_films_are_enlarged(
    films, monkeypatch
) -> None:
    """With the machine's memory read as 1 MiB the U-Net stops before enlarging the films
    (at ``--size 4096`` they alone would fill the machine) and names ``--size``, the one
    setting of ``biomark data mask-model`` that sizes a step."""
    from biomark.models import memory

    images, masks = films
    monkeypatch.setattr(memory, "physical_memory_bytes", lambda: 2**20)
    with pytest.raises(
        ConfigError, match=r"the lung U-Net: one training step at --size=32 .* GiB; lower --size$"
    ):
        train_lung_unet(images, masks, **TINY)
