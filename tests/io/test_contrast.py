"""Tests for biomark.io.contrast: the low-contrast exclusion rule."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from biomark.exceptions import ConfigError, DataError
from biomark.io.contrast import DEFAULT_MIN_CONTRAST, contrast_score, is_low_contrast
from biomark.io.images import read_image
from biomark.io.letterbox import letterbox, letterbox_mask


def _ramp(lo: float = 0.0, hi: float = 1.0, shape: tuple[int, int] = (101, 101)) -> np.ndarray:
    """Every intensity from lo to hi equally often (rows are constant)."""
    return np.repeat(np.linspace(lo, hi, shape[0])[:, None], shape[1], axis=1).astype(np.float32)


def test_default_threshold() -> None:
    assert DEFAULT_MIN_CONTRAST == 0.15


def test_ramp_known_answer() -> None:
    # percentiles of 0, 0.01, ..., 1 are 0.02 and 0.98
    everything = np.ones((101, 101))
    assert contrast_score(_ramp(), mask=everything) == pytest.approx(0.96, abs=1e-6)
    # without a mask the all-zero first row counts as padding: 0.01 ... 1 remain
    assert contrast_score(_ramp()) == pytest.approx(0.9504, abs=1e-6)
    assert not is_low_contrast(_ramp())


def test_washed_out_ramp_is_low() -> None:
    washed = _ramp(0.45, 0.55)
    assert contrast_score(washed) == pytest.approx(0.096, abs=1e-6)
    assert is_low_contrast(washed)


@pytest.mark.parametrize("value", [0.0, 0.5, 1.0])
def test_flat_image_scores_zero(value: float) -> None:
    flat = np.full((40, 60), value, dtype=np.float32)
    assert contrast_score(flat) == 0.0
    assert is_low_contrast(flat)


def test_burned_in_text_does_not_rescue_a_washed_out_image() -> None:
    image = _ramp(0.45, 0.55, shape=(100, 100))
    image[:1, :] = 1.0  # 1 % white "text"
    image[50, :] = 0.0  # 1 % black marker (not a border row, so not cropped)
    assert is_low_contrast(image)


def test_letterbox_padding_is_ignored() -> None:
    washed = _ramp(0.45, 0.55, shape=(60, 200))  # landscape: 70 rows of padding
    boxed = letterbox(washed)
    assert float(np.percentile(boxed, 2)) == 0.0  # naive percentiles would see the padding
    assert contrast_score(boxed) == pytest.approx(contrast_score(washed), abs=2 / 255)
    assert is_low_contrast(boxed)


def test_mask_selects_the_content() -> None:
    washed = _ramp(0.45, 0.55, shape=(60, 200))
    boxed = letterbox(washed)
    content = letterbox_mask(np.ones(washed.shape))
    assert contrast_score(boxed, mask=content) == pytest.approx(contrast_score(boxed), abs=1e-6)
    assert is_low_contrast(boxed, mask=content)
    empty = np.zeros_like(boxed)
    assert contrast_score(boxed, mask=empty) == 0.0


def test_uint8_is_on_the_unit_scale() -> None:
    image8 = np.rint(_ramp() * 255).astype(np.uint8)
    assert contrast_score(image8) == pytest.approx(contrast_score(_ramp()), abs=1 / 255)


def test_all_black_scores_zero() -> None:
    assert contrast_score(np.zeros((10, 10), dtype=np.uint8)) == 0.0


def test_custom_threshold() -> None:
    assert is_low_contrast(_ramp(0.2, 0.8), min_contrast=0.9)
    assert not is_low_contrast(_ramp(0.2, 0.8), min_contrast=0.5)


@pytest.mark.parametrize("bad", [-0.1, 1.5, "0.2", None, True])
def test_bad_threshold(bad: object) -> None:
    with pytest.raises(ConfigError, match="min_contrast"):
        is_low_contrast(_ramp(), min_contrast=bad)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("bad", "match"),
    [
        (np.zeros((3, 3, 3)), "2-D"),
        (np.zeros((0, 3)), "2-D"),
        (np.zeros((3, 3), dtype=np.int32), "dtype int32"),
    ],
)
def test_bad_image(bad: np.ndarray, match: str) -> None:
    with pytest.raises(DataError, match=match):
        contrast_score(bad)


def test_mask_shape_mismatch() -> None:
    with pytest.raises(DataError, match="same shape"):
        contrast_score(_ramp(), mask=np.ones((5, 5)))


@pytest.mark.shared_data
def test_real_images_pass_and_squeezed_copies_fail(real_images: dict[str, list[Path]]) -> None:
    """Every real X-ray passes; the same X-ray squeezed into [0.45, 0.55] is flagged."""
    # two per source keep this quick; test_images checks every file's contrast
    for source, paths in real_images.items():
        for path in paths[:2]:
            image = read_image(path)
            assert not is_low_contrast(letterbox(image)), f"{source}/{path.name}"
            assert is_low_contrast(letterbox(0.45 + 0.1 * image)), f"{source}/{path.name}"
