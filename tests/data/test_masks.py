"""Lung masks of a whole dataset, supplied or segmented, stored once (biomark.data.masks)."""

from __future__ import annotations

import hashlib
import json
import logging
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from biomark.data import masks as masks_module
from biomark.data.cache import write_cache
from biomark.data.dataset import MANIFEST_COLUMNS, load_dataset
from biomark.data.lung_checks import check_mask
from biomark.data.lungs import SEGMENTER_VERSION, segment_lungs
from biomark.data.masks import LungMasks, dataset_lung_masks, dataset_region_masks, lung_mask_paths
from biomark.data.phantom import PHANTOM_CLASSES, render_phantom
from biomark.exceptions import DataError
from biomark.features.report_inputs import lung_masks

SIZE = 96


def _films(n: int = 4) -> tuple[list[np.ndarray], list[np.ndarray]]:
    images, truths = [], []
    for i in range(n):
        rng = np.random.default_rng(100 + i)
        image, truth = render_phantom(PHANTOM_CLASSES[i % 7], 0.5, rng, size=SIZE)
        images.append(image)
        truths.append(truth.astype(np.uint8))
    return images, truths


def _dataset(root: Path, *, with_masks: list[np.ndarray] | None = None, n: int = 4) -> Path:
    """A dataset folder written the way ``biomark data build`` writes one."""
    images, _ = _films(n)
    ids = [f"film-{i}" for i in range(n)]
    manifest = pd.DataFrame(
        {
            "image_id": ids,
            "path": [f"/raw/CHNCXR_000{i}_0.png" for i in range(n)],
            "label": "Normal",
            "patient_id": ids,
            "source": "test",
            "view": "PA",
            "sha256": "0",
        }
    )[list(MANIFEST_COLUMNS)]
    root.mkdir(parents=True)
    manifest.to_csv(root / "manifest.csv", index=False)
    sha = hashlib.sha256((root / "manifest.csv").read_bytes()).hexdigest()
    write_cache(
        root, ids, images, size=SIZE, classes=["Normal"], manifest_sha256=sha, masks=with_masks
    )
    return root


def test_segmented_once_then_read_from_the_dataset_cache(tmp_path: Path, monkeypatch) -> None:
    data = _dataset(tmp_path / "d")
    first = dataset_lung_masks(load_dataset(data), jobs=1)
    paths = lung_mask_paths(data)
    assert all(p.is_file() for p in paths.values())
    assert list(first.table["mask_source"]) == ["segmented"] * 4
    assert first.source == f"segmented (segment_lungs {SEGMENTER_VERSION})"
    expected = [segment_lungs(np.asarray(im)) for im in load_dataset(data).images]
    assert np.array_equal(first.masks, np.stack([m for m, _ in expected]))
    info = json.loads(paths["info"].read_text())
    assert info["key"]["segmenter"] == SEGMENTER_VERSION and info["counts"]["images"] == 4

    def fail(*args, **kwargs):
        raise AssertionError("segmented again although the cache matches")

    monkeypatch.setattr(masks_module, "segment_lungs", fail)
    again = dataset_lung_masks(load_dataset(data), jobs=1)
    assert np.array_equal(np.asarray(again.masks), first.masks)
    pd.testing.assert_frame_equal(again.table, first.table, check_dtype=False)
    assert [c.flags for c in again.checks()] == [c.flags for _, c in expected]
    assert again.checks()[0].fit_score == pytest.approx(expected[0][1].fit_score)


def test_changed_images_or_segmenter_invalidate_the_cache(tmp_path: Path, monkeypatch) -> None:
    data = _dataset(tmp_path / "d")
    dataset_lung_masks(load_dataset(data), jobs=1)
    calls = []
    real = masks_module.segment_lungs
    monkeypatch.setattr(masks_module, "segment_lungs", lambda image: calls.append(1) or real(image))
    images = np.load(data / "cache" / "images.npy")
    images[1] = np.flipud(images[1])
    np.save(data / "cache" / "images.npy", images)
    dataset_lung_masks(load_dataset(data), jobs=1)
    assert len(calls) == 4
    monkeypatch.setattr(masks_module, "SEGMENTER_VERSION", "template-next")
    dataset_lung_masks(load_dataset(data), jobs=1)
    assert len(calls) == 8


def test_dataset_masks_are_used_and_empty_rows_segmented(tmp_path: Path) -> None:
    _, truths = _films()
    given = [t.copy() for t in truths]
    given[2][:] = 0  # a manifest row without mask_path: empty in cache/masks.npy
    data = _dataset(tmp_path / "d", with_masks=given)
    result = dataset_lung_masks(load_dataset(data), jobs=1)
    assert list(result.table["mask_source"]) == ["dataset", "dataset", "segmented", "dataset"]
    assert np.array_equal(result.masks[0], truths[0]) and result.masks[2].any()
    assert result.source.startswith("mixed: 3 dataset, 1 segmented")
    assert result.usable.all(), result.problems


def test_masks_folder_by_id_stem_or_shenzhen_name_and_wrong_shape_segmented(tmp_path: Path) -> None:
    _, truths = _films()
    data = _dataset(tmp_path / "d")
    folder = data / "masks"
    folder.mkdir()
    Image.fromarray(truths[0] * 255).save(folder / "film-0.png")  # by image_id
    Image.fromarray(truths[1] * 255).save(folder / "CHNCXR_0001_0.png")  # by the image file's stem
    Image.fromarray(truths[3] * 255).save(
        folder / "CHNCXR_0003_0_mask.png"
    )  # Shenzhen's _mask names
    Image.fromarray(np.ones((SIZE, 2 * SIZE), np.uint8) * 255).save(
        folder / "film-2.png"
    )  # wrong aspect ratio
    result = dataset_lung_masks(load_dataset(data), jobs=1)
    assert list(result.table["mask_source"]) == ["folder", "folder", "segmented", "folder"]
    assert np.array_equal(result.masks[1], truths[1]) and np.array_equal(result.masks[3], truths[3])
    assert "aspect ratio" in result.table["note"].iat[2]
    assert result.table["note"].iat[3] == "CHNCXR_0003_0_mask.png"
    with pytest.raises(DataError, match="masks folder not found"):
        dataset_lung_masks(load_dataset(data), masks_dir=tmp_path / "nowhere")


def test_a_mask_at_the_original_size_of_a_film_with_black_edges_is_used(tmp_path: Path) -> None:
    """The aspect check reads the file's size from the manifest, not the film's non-zero box."""
    images, truths = _films(2)
    images[0][: SIZE // 8] = 0  # the film's top rows are truly black, as on many scanned films
    data = tmp_path / "d"
    _dataset(data, n=2)
    manifest = pd.read_csv(data / "manifest.csv", dtype=str)
    manifest["width"], manifest["height"] = "300", "300"
    manifest.to_csv(data / "manifest.csv", index=False)
    sha = hashlib.sha256((data / "manifest.csv").read_bytes()).hexdigest()
    write_cache(
        data, ["film-0", "film-1"], images, size=SIZE, classes=["Normal"], manifest_sha256=sha
    )
    (data / "masks").mkdir()
    big = np.asarray(Image.fromarray(truths[0] * 255).resize((300, 300), Image.Resampling.NEAREST))
    Image.fromarray(big).save(data / "masks" / "film-0.png")  # the original file's 300 x 300 px
    Image.fromarray(big[:, :200]).save(data / "masks" / "film-1.png")  # not its aspect ratio
    result = dataset_lung_masks(load_dataset(data), jobs=1)
    assert list(result.table["mask_source"]) == ["folder", "segmented"]
    assert (result.masks[0] == truths[0]).mean() > 0.98
    assert "200x300 px, not the image's aspect ratio" in result.table["note"].iat[1]


def test_flagged_supplied_mask_is_reported_not_replaced(tmp_path: Path) -> None:
    _, truths = _films()
    given = [t.copy() for t in truths]
    given[0][:, : SIZE // 2] = 0  # one lung only
    result = dataset_lung_masks(load_dataset(_dataset(tmp_path / "d", with_masks=given)), jobs=1)
    assert not result.usable[0] and "one_lung" in result.table["flags"].iat[0]
    assert np.array_equal(result.masks[0], given[0])
    assert list(result.problems["image_id"]) == ["film-0"]


def test_a_supplied_mask_over_a_whited_out_lung_is_kept(tmp_path: Path) -> None:
    """Severe disease fills the lung with density: the true mask has no contrast left, and is
    right."""
    images, truths = _films()
    root = _dataset(tmp_path / "d", with_masks=truths)
    dataset = load_dataset(root)
    cache = np.load(root / "cache" / "images.npy")
    mask = truths[0].astype(bool)
    cache[0][mask] = 250  # lungs as white as bone: filled with fluid
    np.save(root / "cache" / "images.npy", cache)
    segmented_view = check_mask(truths[0], image=cache[0])
    assert (
        "low_contrast" in segmented_view.flags
    )  # what a segmentation with this image would be flagged for
    result = dataset_lung_masks(load_dataset(root), jobs=1)
    assert result.usable.all() and result.table["flags"].fillna("").eq("").all()
    assert dataset is not None


def test_unwritable_dataset_folder_still_gives_masks(tmp_path: Path, monkeypatch, caplog) -> None:
    data = _dataset(tmp_path / "d")

    def refuse(*args, **kwargs):
        raise PermissionError("read-only share")

    monkeypatch.setattr(masks_module, "save_stack_atomic", refuse)
    with caplog.at_level(logging.WARNING, logger="biomark.data.masks"):
        result = dataset_lung_masks(load_dataset(data), jobs=1)
    assert len(result.table) == 4 and "could not store the lung masks" in caplog.text
    assert not lung_mask_paths(data)["info"].exists()


def test_parallel_segmentation_equals_serial(tmp_path: Path, monkeypatch) -> None:
    data = _dataset(tmp_path / "d")
    serial = dataset_lung_masks(load_dataset(data), jobs=1, refresh=True)
    monkeypatch.setattr(masks_module, "_SERIAL_BELOW", 0)
    parallel = dataset_lung_masks(load_dataset(data), jobs=2, refresh=True)
    assert np.array_equal(np.asarray(parallel.masks), np.asarray(serial.masks))
    assert list(parallel.table["flags"]) == list(serial.table["flags"])


def test_subset_region_masks_and_report_rows(tmp_path: Path) -> None:
    _, truths = _films()
    dataset = load_dataset(_dataset(tmp_path / "d", with_masks=truths))
    rows = np.array([3, 0, 2])
    part = lung_masks(dataset, rows)
    assert isinstance(part, LungMasks) and list(part.table["image_id"]) == [
        "film-3",
        "film-0",
        "film-2",
    ]
    assert np.array_equal(part.masks, np.stack([truths[3], truths[0], truths[2]]))
    assert part.usable.shape == (3,) and part.source == "dataset"
    masks, checks, source = dataset_region_masks(dataset, "lung", jobs=1)
    assert masks.dtype == np.uint8 and len(checks) == 4 and source == "dataset"
    content, checks, source = dataset_region_masks(dataset, "image")
    assert source == "content" and all(c.plausible for c in checks) and content.sum() > masks.sum()
