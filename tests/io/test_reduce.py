"""Big images: decoded at reduced size for the letterbox, the same result as the full decode.

The reduced path (JPEG draft mode, Pillow's ``reduce``, 16-bit block means)
must give the letterbox of the full decode to within rounding and edge
effects; the memory it saves is measured by ``benchmarks/io_decode.py --big``.
"""

from __future__ import annotations

import struct
import zlib
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from biomark.exceptions import ConfigError, ImageReadError
from biomark.io.images import MAX_PIXELS_ENV, read_image, read_image_reduced
from biomark.io.letterbox import letterbox, read_letterboxed
from biomark.io.reduce import OVERSAMPLE, reduction_factor

TARGET = 64  # images of 2 x 8 x 64 = 1024 pixels and more are reduced (by 2 or more)


def radiograph(height: int, width: int, seed: int = 0) -> np.ndarray:
    """Smooth anatomy, sharp-edged text and a border, and noise, in [0, 1]."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:height, 0:width] / max(height, width)
    image = 0.25 + 0.5 * yy + 0.3 * np.exp(-((xx - 0.3) ** 2 + (yy - 0.5) ** 2) / 0.02)
    image[height // 10 : height // 10 + height // 40, width // 2 : width // 2 + width // 5] = (
        1.0  # burned-in label
    )
    image += rng.normal(0, 0.03, image.shape)
    return np.clip(image, 0, 1)


def compare(path: Path, size: int = TARGET) -> np.ndarray:
    """|reduced letterbox - full letterbox| in gray levels."""
    full = letterbox(read_image(path), size).astype(int)
    reduced = read_letterboxed(path, size).astype(int)
    return np.abs(full - reduced)


def assert_close(diff: np.ndarray) -> None:
    assert diff.mean() < 0.5, diff.mean()
    assert np.quantile(diff, 0.99) <= 3, np.quantile(diff, 0.99)
    assert diff.max() <= 24, diff.max()  # only at the sharp edges of the label


def test_factor_keeps_the_oversampling() -> None:
    assert reduction_factor(12000, 12000, 200) == 12000 // (OVERSAMPLE * 200)
    assert reduction_factor(3199, 2000, 200) == 1, "ordinary radiographs are decoded in full"
    assert reduction_factor(5000, 100, None) == 1


@pytest.mark.parametrize(("height", "width"), [(1300, 1700), (1701, 1299)])
def test_8bit_png(tmp_path: Path, height: int, width: int) -> None:
    path = tmp_path / "big.png"
    Image.fromarray(np.rint(255 * radiograph(height, width)).astype(np.uint8)).save(
        path, compress_level=1
    )
    decoded = read_image_reduced(path, TARGET)
    assert decoded.shape == (height, width) and decoded.factor == max(height, width) // (
        OVERSAMPLE * TARGET
    )
    assert decoded.image.shape == tuple(-(-n // decoded.factor) for n in (height, width))
    assert_close(compare(path))


def test_jpeg_draft(tmp_path: Path) -> None:
    path = tmp_path / "big.jpg"
    Image.fromarray(np.rint(255 * radiograph(2600, 2000, 1)).astype(np.uint8)).save(
        path, quality=92
    )
    decoded = read_image_reduced(path, TARGET)
    # 2600 // 512 = 5 asks for >= 520 rows: libjpeg's 1/4 scale (650 rows) and no further reduce.
    assert decoded.factor == 4 and decoded.image.shape == (650, 500)
    assert_close(compare(path))


def test_colour_png(tmp_path: Path) -> None:
    gray = np.rint(255 * radiograph(1200, 1600, 2)).astype(np.uint8)
    rgb = np.stack([gray, gray, np.clip(gray.astype(int) + 3, 0, 255).astype(np.uint8)], axis=-1)
    path = tmp_path / "rgb.png"
    Image.fromarray(rgb).save(path, compress_level=1)
    assert_close(compare(path))


def test_16bit_keeps_the_bit_depth_of_the_full_image(tmp_path: Path) -> None:
    """One pixel at 4096 makes the file 13-bit; a block mean would hide it and halve the scale... if
    reduced first."""
    values = np.rint(4095 * radiograph(1400, 1100, 3)).astype(np.uint16)
    values[5, 5] = 4096
    path = tmp_path / "deep.png"
    Image.fromarray(values).save(path)
    decoded = read_image_reduced(path, TARGET)
    assert decoded.factor >= 2
    assert_close(compare(path))


def test_small_images_are_not_reduced(tmp_path: Path) -> None:
    path = tmp_path / "small.png"
    Image.fromarray(np.rint(255 * radiograph(300, 200)).astype(np.uint8)).save(path)
    decoded = read_image_reduced(path, TARGET)
    assert decoded.factor == 1 and decoded.image.shape == (300, 200)
    np.testing.assert_array_equal(
        read_letterboxed(path, TARGET), letterbox(read_image(path), TARGET)
    )


def png_header_only(path: Path, width: int, height: int) -> Path:
    """A PNG that declares ``width x height`` pixels (Pillow checks the limit at open, from the
    header)."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return (
            struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))
        )

    header = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IEND", b""))
    return path


def test_over_the_pixel_limit_is_named_with_the_fix(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A 20000 x 20000 PNG was reported as "truncated or corrupt ... download again"."""
    monkeypatch.setattr(
        Image, "MAX_IMAGE_PIXELS", Image.MAX_IMAGE_PIXELS
    )  # restored after the test
    monkeypatch.delenv(MAX_PIXELS_ENV, raising=False)
    path = png_header_only(tmp_path / "huge.png", 20000, 20000)
    with pytest.raises(ImageReadError) as info:
        read_image(path)
    message = str(info.value)
    assert "400,000,000 pixels, over the pixel limit" in message and "not corrupt" in message
    assert f"{MAX_PIXELS_ENV}=400000000" in message and "truncated" not in message
    # Following the advice lifts the limit: the header-only file then fails as what it is,
    # truncated.
    monkeypatch.setenv(MAX_PIXELS_ENV, "400000000")
    with pytest.raises(ImageReadError, match="truncated or corrupt"):
        read_image(path)
    monkeypatch.setenv(MAX_PIXELS_ENV, "lots")
    with pytest.raises(ConfigError, match=f"{MAX_PIXELS_ENV}='lots'"):
        read_image(path)
