"""Tests for biomark.io.letterbox: aspect-preserving resize onto a black square."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest

from biomark.exceptions import ConfigError, DataError
from biomark.io.letterbox import LetterboxGeometry, letterbox, letterbox_geometry, letterbox_mask

# --------------------------------------------------------------------------- geometry


@pytest.mark.parametrize(
    ("height", "width", "size", "expected"),
    [
        # landscape / portrait / square
        (500, 1000, 200, (100, 200, 50, 0)),
        (1000, 500, 200, (200, 100, 0, 50)),
        (300, 300, 200, (200, 200, 0, 0)),
        (200, 200, 200, (200, 200, 0, 0)),
        # odd padding: the extra pixel goes to the bottom / right
        (200, 101, 200, (200, 101, 0, 49)),
        (101, 200, 200, (101, 200, 49, 0)),
        # shorter side rounds half up: 200 * 1 / 3 = 66.67 -> 67; 200 * 5 / 8 = 125
        (1, 3, 200, (67, 200, 66, 0)),
        (8, 5, 200, (200, 125, 0, 37)),
        (2, 1, 3, (3, 2, 0, 0)),  # 1.5 -> 2
        # tiny and huge
        (1, 1, 200, (200, 200, 0, 0)),
        (3, 2, 200, (200, 133, 0, 33)),
        (20000, 10, 200, (200, 1, 0, 99)),  # never less than 1 pixel
        (10000, 7000, 200, (200, 140, 0, 30)),
        (2447, 1585, 200, (200, 130, 0, 35)),
        (1024, 1024, 224, (224, 224, 0, 0)),
        (7, 3, 1, (1, 1, 0, 0)),
    ],
)
def test_geometry(height: int, width: int, size: int, expected: tuple[int, int, int, int]) -> None:
    geo = letterbox_geometry(height, width, size)
    assert (geo.new_height, geo.new_width, geo.top, geo.left) == expected
    assert geo.size == size
    assert geo.scale == pytest.approx(size / max(height, width))
    assert max(geo.new_height, geo.new_width) == size
    # centred: padding before and after differ by at most one, extra after
    assert 0 <= (size - geo.bottom) - geo.top <= 1
    assert 0 <= (size - geo.right) - geo.left <= 1


@pytest.mark.parametrize("seed", range(5))
def test_geometry_preserves_aspect_within_one_pixel(seed: int) -> None:
    rng = np.random.default_rng(seed)
    for height, width in rng.integers(1, 5000, size=(200, 2)):
        geo = letterbox_geometry(int(height), int(width), 200)
        assert abs(geo.new_height - height * geo.scale) <= 0.5 + 1e-9 or geo.new_height == 1
        assert abs(geo.new_width - width * geo.scale) <= 0.5 + 1e-9 or geo.new_width == 1


def test_geometry_default_size_and_frozen() -> None:
    geo = letterbox_geometry(1000, 500)
    assert geo == LetterboxGeometry(
        scale=0.2, new_height=200, new_width=100, top=0, left=50, size=200
    )
    assert (geo.bottom, geo.right) == (200, 150)
    with pytest.raises(dataclasses.FrozenInstanceError):
        geo.size = 100  # type: ignore[misc]


@pytest.mark.parametrize("size", [0, -1, 2.5, True, "200"])
def test_geometry_bad_size(size: object) -> None:
    with pytest.raises(ConfigError, match="letterbox size"):
        letterbox_geometry(10, 10, size)  # type: ignore[arg-type]


@pytest.mark.parametrize(("height", "width"), [(0, 10), (10, 0), (-5, 10), (1.5, 10)])
def test_geometry_bad_shape(height: object, width: object) -> None:
    with pytest.raises(DataError, match="at least 1 x 1"):
        letterbox_geometry(height, width)  # type: ignore[arg-type]


# --------------------------------------------------------------------------- images


@pytest.mark.parametrize(
    ("height", "width"), [(100, 50), (50, 100), (300, 300), (7, 3), (2000, 1300)]
)
def test_white_image_content_and_padding_exact(height: int, width: int) -> None:
    out = letterbox(np.ones((height, width), dtype=np.float32))
    geo = letterbox_geometry(height, width)
    expected = np.zeros((200, 200), dtype=np.uint8)
    expected[geo.top : geo.bottom, geo.left : geo.right] = 255
    assert out.dtype == np.uint8 and out.shape == (200, 200)
    np.testing.assert_array_equal(out, expected)


def test_content_is_centred() -> None:
    out = letterbox(np.ones((60, 200)), size=100)  # content 30 x 100 -> 35 rows above and below
    rows = np.flatnonzero(out.any(axis=1))
    assert (rows[0], rows[-1]) == (35, 64)
    assert (out[:35] == 0).all() and (out[65:] == 0).all()


def test_same_size_is_identity_after_rounding() -> None:
    image = np.random.default_rng(0).random((200, 200), dtype=np.float32)
    np.testing.assert_array_equal(letterbox(image), np.rint(image * 255).astype(np.uint8))


def test_downscale_is_area_average() -> None:
    # 2x2 blocks of four known values average exactly under BOX resampling
    block = np.array([[0.1, 0.3], [0.5, 0.7]], dtype=np.float32)  # mean 0.4 -> 102
    image = np.tile(block, (100, 100))  # 200 x 200 -> 100 x 100
    np.testing.assert_array_equal(letterbox(image, size=100), np.full((100, 100), 102, np.uint8))


def test_float_values_and_clipping() -> None:
    image = np.full((10, 10), 0.2, dtype=np.float64)
    image[0, 0] = 1.7  # out of range: clipped
    image[0, 1] = -0.3
    out = letterbox(image, size=10)
    assert out[5, 5] == 51 and out[0, 0] == 255 and out[0, 1] == 0


def test_uint8_input_matches_float_input() -> None:
    rng = np.random.default_rng(1)
    image8 = rng.integers(0, 256, size=(321, 123), dtype=np.uint8)
    from_uint8 = letterbox(image8).astype(int)
    from_float = letterbox(image8 / 255.0).astype(int)
    assert np.abs(from_uint8 - from_float).max() <= 1


@pytest.mark.parametrize("bad", [np.zeros((4, 4, 3)), np.zeros((0, 5)), np.zeros(5)])
def test_bad_shape(bad: np.ndarray) -> None:
    with pytest.raises(DataError, match="2-D"):
        letterbox(bad)


def test_bad_dtype() -> None:
    with pytest.raises(DataError, match="dtype int16"):
        letterbox(np.zeros((4, 4), dtype=np.int16))


# --------------------------------------------------------------------------- masks


@pytest.mark.parametrize(("height", "width"), [(300, 170), (170, 300), (5, 3), (1000, 1000)])
def test_mask_stays_binary_and_matches_image_geometry(height: int, width: int) -> None:
    rng = np.random.default_rng(2)
    mask = rng.random((height, width)) > 0.5
    out = letterbox_mask(mask)
    geo = letterbox_geometry(height, width)
    assert out.dtype == np.uint8 and out.shape == (200, 200)
    assert set(np.unique(out)) <= {0, 1}
    outside = np.ones((200, 200), dtype=bool)
    outside[geo.top : geo.bottom, geo.left : geo.right] = False
    assert (out[outside] == 0).all()
    np.testing.assert_array_equal(letterbox_mask(np.ones((height, width))) != 0, ~outside)


def test_mask_nearest_neighbour_keeps_blocks() -> None:
    mask = np.kron(np.array([[1, 0], [0, 1]]), np.ones((100, 100)))  # 200 x 200 -> 100 x 100
    out = letterbox_mask(mask, size=100)
    np.testing.assert_array_equal(out, np.kron(np.array([[1, 0], [0, 1]]), np.ones((50, 50))))


def test_mask_any_nonzero_is_one() -> None:
    out = letterbox_mask(np.array([[0, 255], [7, 0]], dtype=np.uint8), size=2)
    np.testing.assert_array_equal(out, [[0, 1], [1, 0]])
