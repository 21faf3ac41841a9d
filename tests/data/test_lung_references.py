"""Reference films with hand-drawn lung masks, in their public layouts
(biomark.data.lung_references)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from biomark.data.lung_references import read_lung_references
from biomark.data.phantom import PHANTOM_CLASSES, render_phantom
from biomark.exceptions import DataError


def _film(i: int, size: int = 80) -> tuple[np.ndarray, np.ndarray]:
    image, truth = render_phantom(
        PHANTOM_CLASSES[i % 7], 0.5, np.random.default_rng(200 + i), size=size
    )
    return image, truth.astype(bool)


def _save(path: Path, array: np.ndarray) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(array.astype(np.uint8)).save(path)


def test_shenzhen_and_montgomery_layouts_read_letterboxed(tmp_path: Path) -> None:
    shenzhen, montgomery = tmp_path / "Shenzhen", tmp_path / "Montgomery"
    for i in range(2):
        image, truth = _film(i)
        _save(shenzhen / "CXR_png" / f"CHNCXR_000{i}_0.png", image)
        _save(
            shenzhen / "mask" / f"CHNCXR_000{i}_0_mask.png", truth * (255 if i == 0 else 1)
        )  # 0/255 or 0/1
    image, truth = _film(3)
    left, right = truth.copy(), truth.copy()
    left[:, 40:], right[:, :40] = False, False
    _save(montgomery / "CXR_png" / "MCUCXR_0001_0.png", image)
    _save(montgomery / "ManualMask" / "leftMask" / "MCUCXR_0001_0.png", left * 255)
    _save(montgomery / "ManualMask" / "rightMask" / "MCUCXR_0001_0.png", right * 255)
    _save(montgomery / "CXR_png" / "MCUCXR_0002_0.png", image)  # no mask: left out

    refs = read_lung_references([shenzhen, montgomery], size=64)

    assert refs.ids == [
        "Shenzhen/CHNCXR_0000_0",
        "Shenzhen/CHNCXR_0001_0",
        "Montgomery/MCUCXR_0001_0",
    ]
    assert refs.folders == ["Shenzhen", "Shenzhen", "Montgomery"]
    assert refs.images.shape == refs.masks.shape == (3, 64, 64)
    assert refs.images.dtype == np.uint8 and set(np.unique(refs.masks)) == {0, 1}
    assert 0.15 < refs.masks[1].mean() < 0.5  # the 0/1 mask is read as a mask, not as empty
    # the two Montgomery halves are joined into the whole mask
    whole = np.asarray(Image.fromarray(truth.astype(np.uint8)).resize((64, 64), Image.NEAREST)) > 0
    assert (refs.masks[2] == whole).mean() > 0.97


def test_unknown_layout_missing_folder_wrong_size_and_no_pairs_are_named(tmp_path: Path) -> None:
    with pytest.raises(DataError, match="no such folder"):
        read_lung_references([tmp_path / "absent"])
    (tmp_path / "loose").mkdir()
    with pytest.raises(DataError, match=r"loose: not a reference folder.*images/"):
        read_lung_references([tmp_path / "loose"])
    image, truth = _film(0)
    _save(tmp_path / "bad" / "images" / "a.png", image)
    _save(tmp_path / "bad" / "masks" / "a.png", truth[:40] * 255)
    with pytest.raises(DataError, match=r"a.png: its mask is 80x40 px but the film is 80x80 px"):
        read_lung_references([tmp_path / "bad"])
    _save(tmp_path / "unpaired" / "images" / "a.png", image)
    _save(tmp_path / "unpaired" / "masks" / "b.png", truth * 255)
    with pytest.raises(DataError, match="no film in images/ has a mask named like it"):
        read_lung_references([tmp_path / "unpaired"])
