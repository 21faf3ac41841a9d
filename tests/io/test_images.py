"""Tests for biomark.io.images: decoding PNG/JPEG/DICOM to float32 [0, 1]."""

from __future__ import annotations

import re
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from biomark.exceptions import DataError, ImageReadError
from biomark.io import images
from biomark.io.contrast import DEFAULT_MIN_CONTRAST, contrast_score
from biomark.io.images import SUPPORTED_SUFFIXES, is_dicom_file, read_image
from biomark.io.letterbox import letterbox

GRAY8 = np.array([[0, 51, 102, 153], [204, 255, 17, 34]], dtype=np.uint8)  # as in conftest


def save_pil(path: Path, image: Image.Image, **kwargs: object) -> Path:
    image.save(path, **kwargs)
    return path


def _check_image(image: np.ndarray, shape: tuple[int, int]) -> None:
    assert image.shape == shape
    assert image.dtype == np.float32
    assert image.flags.c_contiguous
    assert float(image.min()) >= 0.0 and float(image.max()) <= 1.0


# --------------------------------------------------------------------------- API


def test_supported_suffixes() -> None:
    assert SUPPORTED_SUFFIXES == (".png", ".jpg", ".jpeg", ".dcm", ".dicom")


def test_importing_io_does_not_import_pydicom() -> None:
    code = "import sys, biomark.io; print('pydicom' in sys.modules, 'SimpleITK' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.split() == ["False", "False"]


def test_image_read_error_is_a_data_error() -> None:
    assert issubclass(ImageReadError, DataError) and issubclass(ImageReadError, ValueError)


# --------------------------------------------------------------------------- 8-bit PNG / JPEG


def test_gray8_png_is_divided_by_255(gray8_png: Path, gray8: np.ndarray) -> None:
    np.testing.assert_array_equal(gray8, GRAY8)
    image = read_image(gray8_png)
    _check_image(image, GRAY8.shape)
    np.testing.assert_array_equal(image, GRAY8.astype(np.float32) / np.float32(255))


def test_8bit_is_not_stretched(tmp_path: Path) -> None:
    washed = np.array([[100, 110], [120, 130]], dtype=np.uint8)
    path = save_pil(tmp_path / "washed.png", Image.fromarray(washed))
    np.testing.assert_allclose(read_image(path), washed / 255.0, atol=1e-7)


@pytest.mark.parametrize("suffix", [".PNG", ".Png", ".JPEG", ".JPG"])
def test_suffix_is_case_insensitive(tmp_path: Path, suffix: str) -> None:
    path = save_pil(
        tmp_path / f"img{suffix}",
        Image.fromarray(np.full((8, 8), 128, np.uint8)),
        format="PNG" if "P" in suffix.upper() else "JPEG",
    )
    np.testing.assert_allclose(read_image(path), 128 / 255, atol=2 / 255)


def test_str_path_is_accepted(gray8_png: Path) -> None:
    np.testing.assert_array_equal(read_image(str(gray8_png)), read_image(gray8_png))


@pytest.mark.parametrize("mode", ["RGB", "RGBA", "LA"])
def test_grayscale_stored_as_colour_is_exact(tmp_path: Path, mode: str) -> None:
    rgb = np.stack([GRAY8] * 3, axis=-1)
    alpha = np.array([[0, 255, 10, 128], [255, 0, 5, 255]], dtype=np.uint8)  # ignored
    if mode == "RGB":
        im = Image.fromarray(rgb)
    elif mode == "RGBA":
        im = Image.fromarray(np.dstack([rgb, alpha]))
    else:
        im = Image.fromarray(np.dstack([GRAY8, alpha]), mode="LA")
    assert im.mode == mode
    image = read_image(save_pil(tmp_path / f"{mode}.png", im))
    _check_image(image, GRAY8.shape)
    np.testing.assert_array_equal(image, GRAY8.astype(np.float32) / np.float32(255))


def test_true_colour_becomes_bt601_luma(tmp_path: Path) -> None:
    rgb = np.array([[[255, 0, 0], [0, 255, 0], [0, 0, 255], [255, 255, 255]]], dtype=np.uint8)
    image = read_image(save_pil(tmp_path / "colour.png", Image.fromarray(rgb)))
    np.testing.assert_allclose(image, [[0.299, 0.587, 0.114, 1.0]], atol=1e-6)


def test_palette_png_goes_through_its_palette(tmp_path: Path) -> None:
    im = Image.new("P", (3, 1))
    im.putpalette([0, 0, 0, 200, 200, 200, 255, 0, 0] + [0] * (256 * 3 - 9))
    im.putdata([0, 1, 2])
    image = read_image(save_pil(tmp_path / "palette.png", im))
    np.testing.assert_allclose(image, [[0.0, 200 / 255, 0.299]], atol=1e-6)


def test_bilevel_png(tmp_path: Path) -> None:
    bits = np.array([[0, 1, 0], [1, 1, 0]], dtype=bool)
    image = read_image(save_pil(tmp_path / "bits.png", Image.fromarray(bits)))
    np.testing.assert_array_equal(image, bits.astype(np.float32))


def test_jpeg_flat_blocks(tmp_path: Path) -> None:
    pixels = np.zeros((16, 16), dtype=np.uint8)
    pixels[:, 8:] = 200  # 8x8-aligned blocks survive JPEG almost exactly
    image = read_image(save_pil(tmp_path / "blocks.jpeg", Image.fromarray(pixels), quality=95))
    _check_image(image, (16, 16))
    np.testing.assert_allclose(image, pixels / 255.0, atol=3 / 255)


def test_colour_jpeg_of_gray(tmp_path: Path) -> None:
    pixels = np.full((16, 16, 3), 90, dtype=np.uint8)
    image = read_image(save_pil(tmp_path / "rgb.jpg", Image.fromarray(pixels), quality=95))
    np.testing.assert_allclose(image, 90 / 255, atol=2 / 255)


def test_cmyk_jpeg_is_converted(tmp_path: Path) -> None:
    im = Image.new("CMYK", (8, 8), (0, 0, 0, 0))  # no ink = white
    image = read_image(save_pil(tmp_path / "cmyk.jpg", im, quality=95))
    np.testing.assert_allclose(image, 1.0, atol=2 / 255)


# --------------------------------------------------------------------------- 16-bit PNG


@pytest.mark.parametrize(
    ("maximum", "bits"),
    [(255, 8), (1000, 10), (4095, 12), (4096, 14), (16383, 14), (40000, 16), (65535, 16)],
)
def test_16bit_png_scaled_by_inferred_bit_depth(tmp_path: Path, maximum: int, bits: int) -> None:
    values = np.array([[0, maximum // 2], [maximum // 4, maximum]], dtype=np.uint16)
    im = Image.fromarray(values)
    assert im.mode == "I;16"
    image = read_image(save_pil(tmp_path / "deep.png", im))
    _check_image(image, (2, 2))
    np.testing.assert_allclose(image, values / (2**bits - 1), rtol=1e-6)


def test_16bit_png_uses_sbit_when_present(
    tmp_path: Path, png_with_sbit: Callable[[Path, int], Path]
) -> None:
    values = np.array([[0, 500], [1000, 250]], dtype=np.uint16)  # max would say 10 bits
    path = png_with_sbit(save_pil(tmp_path / "sbit.png", Image.fromarray(values)), 12)
    with Image.open(path) as im:  # the file is still valid for Pillow
        im.load()
    np.testing.assert_allclose(read_image(path), values / 4095, rtol=1e-6)


def test_16bit_big_endian_png(tmp_path: Path) -> None:
    values = np.array([[0, 2048], [4095, 1024]], dtype=">u2")
    im = Image.fromarray(values)
    assert im.mode == "I;16B"
    image = read_image(save_pil(tmp_path / "be.png", im))
    np.testing.assert_allclose(image, values.astype(float) / 4095, rtol=1e-6)


@pytest.mark.parametrize(
    ("values", "expected"),
    [
        (np.array([[0, 4095]], dtype=np.int32), [[0.0, 1.0]]),
        (np.array([[-10, 90]], dtype=np.int32), [[0.0, 1.0]]),  # negative: min-max
        (np.array([[70000, 170000]], dtype=np.int32), [[0.0, 1.0]]),  # > 16 bit: min-max
        (np.array([[0, 0]], dtype=np.int32), [[0.0, 0.0]]),
    ],
)
def test_32bit_integer_mode(values: np.ndarray, expected: list[list[float]]) -> None:
    im = Image.fromarray(values)
    assert im.mode == "I"
    np.testing.assert_allclose(images._pil_to_float(im, None), expected, atol=1e-7)


def test_16bit_12bit_radiograph_is_not_black(tmp_path: Path) -> None:
    """A 12-bit detector image in a 16-bit PNG must not come out nearly black."""
    ramp = np.linspace(300, 3800, 64 * 64).reshape(64, 64).astype(np.uint16)
    image = read_image(save_pil(tmp_path / "cr.png", Image.fromarray(ramp)))
    assert 0.4 < float(np.median(image)) < 0.6


# --------------------------------------------------------------------------- DICOM


def test_dicom_mono2_min_max(make_dicom: Callable[..., Path]) -> None:
    path = make_dicom("mono2.dcm", np.array([[0, 100], [200, 400]], np.uint16), bits_stored=12)
    image = read_image(path)
    _check_image(image, (2, 2))
    np.testing.assert_allclose(image, [[0.0, 0.25], [0.5, 1.0]], atol=1e-7)


def test_dicom_mono1_is_inverted(make_dicom: Callable[..., Path]) -> None:
    path = make_dicom(
        "mono1.dcm", np.array([[0, 100], [200, 400]], np.uint16), "MONOCHROME1", bits_stored=12
    )
    np.testing.assert_allclose(read_image(path), [[1.0, 0.75], [0.5, 0.0]], atol=1e-7)


# stored s -> value v = 2 s - 1024 -> linear window (c = 0.5, w = 1001): v / 1000 + 0.5
RESCALED = np.array([[12, 412, 512, 612, 1012]], np.uint16)
WINDOWED = [[0.0, 0.3, 0.5, 0.7, 1.0]]


@pytest.mark.parametrize(
    ("center", "width"),
    [("0.5", "1001"), (0.5, 1001), ([0.5, 100.0], [1001.0, 50.0])],  # multi-valued: the first
)
def test_dicom_rescale_then_window(
    make_dicom: Callable[..., Path], center: object, width: object
) -> None:
    path = make_dicom(
        "win.dcm",
        RESCALED,
        bits_stored=12,
        RescaleSlope="2",
        RescaleIntercept="-1024",
        RescaleType="US",
        WindowCenter=center,
        WindowWidth=width,
    )
    np.testing.assert_allclose(read_image(path), WINDOWED, atol=1e-6)


def test_dicom_mono1_window_is_inverted(make_dicom: Callable[..., Path]) -> None:
    path = make_dicom(
        "win1.dcm",
        RESCALED,
        "MONOCHROME1",
        bits_stored=12,
        RescaleSlope=2,
        RescaleIntercept=-1024,
        RescaleType="US",
        WindowCenter=0.5,
        WindowWidth=1001,
    )
    np.testing.assert_allclose(read_image(path), 1.0 - np.array(WINDOWED), atol=1e-6)


def test_dicom_rescale_without_window_is_min_max(make_dicom: Callable[..., Path]) -> None:
    path = make_dicom(
        "rescale.dcm",
        RESCALED,
        bits_stored=12,
        RescaleSlope=2,
        RescaleIntercept=-1024,
        RescaleType="US",
    )
    np.testing.assert_allclose(read_image(path), [[0.0, 0.4, 0.5, 0.6, 1.0]], atol=1e-6)


def test_dicom_signed_linear_exact_window(make_dicom: Callable[..., Path]) -> None:
    path = make_dicom(
        "signed.dcm",
        np.array([[-600, -200, 0, 200, 600]], np.int16),
        WindowCenter=0,
        WindowWidth=1000,
        VOILUTFunction="LINEAR_EXACT",
    )
    np.testing.assert_allclose(read_image(path), WINDOWED, atol=1e-6)


def test_dicom_sigmoid_window(make_dicom: Callable[..., Path]) -> None:
    path = make_dicom(
        "sigmoid.dcm",
        np.array([[0, 100, 200]], np.uint16),
        WindowCenter=100,
        WindowWidth=100,
        VOILUTFunction="SIGMOID",
    )
    expected = 1 / (1 + np.exp(-4 * (np.array([0, 100, 200]) - 100) / 100))
    np.testing.assert_allclose(read_image(path), [expected], atol=1e-6)


def test_dicom_multiframe_takes_first_frame(make_dicom: Callable[..., Path]) -> None:
    frames = np.array([[[0, 1], [2, 4]], [[9, 9], [9, 0]]], np.uint8)
    image = read_image(make_dicom("multi.dcm", frames))
    np.testing.assert_allclose(image, [[0.0, 0.25], [0.5, 1.0]], atol=1e-7)


def test_dicom_rgb_becomes_luma(make_dicom: Callable[..., Path]) -> None:
    rgb = np.zeros((1, 2, 3), np.uint8)
    rgb[0, 0] = (255, 0, 0)
    rgb[0, 1] = (255, 255, 255)
    np.testing.assert_allclose(
        read_image(make_dicom("rgb.dcm", rgb, "RGB")), [[0.299, 1.0]], atol=1e-6
    )


@pytest.mark.parametrize("name", ["scan.DCM", "scan.dicom", "IM000001"])
def test_dicom_suffixes_and_magic(make_dicom: Callable[..., Path], name: str) -> None:
    path = make_dicom(name, np.array([[0, 10]], np.uint16))
    assert is_dicom_file(path)
    np.testing.assert_allclose(read_image(path), [[0.0, 1.0]])


def test_is_dicom_file_false_for_png_and_missing(gray8_png: Path, tmp_path: Path) -> None:
    assert not is_dicom_file(gray8_png)
    assert not is_dicom_file(tmp_path / "absent")


# --------------------------------------------------------------------------- errors


def _raises(path: Path, problem: str) -> pytest.ExceptionInfo[ImageReadError]:
    with pytest.raises(ImageReadError, match=re.escape(str(path))) as info:
        read_image(path)
    assert re.search(problem, str(info.value)), str(info.value)
    return info


def test_missing_file(tmp_path: Path) -> None:
    _raises(tmp_path / "absent.png", "does not exist")


def test_folder(tmp_path: Path) -> None:
    folder = tmp_path / "folder.png"
    folder.mkdir()
    _raises(folder, "is a folder")


@pytest.mark.parametrize("name", ["empty.png", "empty.jpg", "empty.dcm", "empty"])
def test_empty_file(tmp_path: Path, name: str) -> None:
    path = tmp_path / name
    path.touch()
    _raises(path, "empty")


@pytest.mark.parametrize("fixture", ["noise_png", "noise_jpeg"])
def test_truncated_file(request: pytest.FixtureRequest, tmp_path: Path, fixture: str) -> None:
    whole: Path = request.getfixturevalue(fixture)
    cut = tmp_path / f"cut{whole.suffix}"
    data = whole.read_bytes()
    cut.write_bytes(data[: len(data) // 2])
    info = _raises(cut, "truncated or corrupt")
    assert info.value.__cause__ is not None


@pytest.mark.parametrize("name", ["random.jpg", "random.png", "random.jpeg"])
def test_random_bytes(tmp_path: Path, name: str) -> None:
    path = tmp_path / name
    path.write_bytes(np.random.default_rng(2).bytes(2000))
    _raises(path, "not a readable PNG or JPEG")


def test_gif_with_png_suffix(tmp_path: Path) -> None:
    path = save_pil(tmp_path / "fake.png", Image.new("L", (4, 4)), format="GIF")
    _raises(path, "not a readable PNG or JPEG.*Supported: PNG, JPEG")


@pytest.mark.parametrize(("name", "fmt"), [("a.gif", "GIF"), ("a.bmp", "BMP"), ("a.tif", "TIFF")])
def test_other_raster_formats_are_unsupported(tmp_path: Path, name: str, fmt: str) -> None:
    path = save_pil(tmp_path / name, Image.new("L", (4, 4)), format=fmt)
    _raises(path, rf"unsupported image format \.{name.split('.')[1]}.*Supported: PNG, JPEG")


def test_text_file_is_unsupported(tmp_path: Path) -> None:
    path = tmp_path / "notes.txt"
    path.write_text("not an image")
    _raises(path, "unsupported image format .txt")


def test_no_suffix_without_dicm_is_unsupported(tmp_path: Path) -> None:
    path = tmp_path / "README"
    path.write_text("not an image at all, and no DICM magic")
    _raises(path, "no suffix, no DICM magic")


def test_dicom_without_pixel_data(make_dicom: Callable[..., Path]) -> None:
    _raises(make_dicom("header.dcm", None), "no pixel data")


def test_random_bytes_dcm(tmp_path: Path) -> None:
    path = tmp_path / "random.dcm"
    path.write_bytes(np.random.default_rng(3).bytes(1000))
    _raises(path, "DICOM")


def test_truncated_dicom_pixels(make_dicom: Callable[..., Path], tmp_path: Path) -> None:
    whole = make_dicom("whole.dcm", np.arange(64, dtype=np.uint16).reshape(8, 8))
    cut = tmp_path / "cut.dcm"
    cut.write_bytes(whole.read_bytes()[:-40])
    info = _raises(cut, "cannot be decoded|not a readable DICOM")
    assert info.value.__cause__ is not None


# --------------------------------------------------------------------------- real X-rays


@pytest.mark.shared_data
def test_every_real_image(real_images: dict[str, list[Path]]) -> None:
    found = real_images
    assert all(found.values()), {source: len(paths) for source, paths in found.items()}
    problems: list[str] = []
    for paths in found.values():
        for path in paths:
            image = read_image(path)
            with Image.open(path) as im:
                expected_shape = (im.height, im.width)
            score = contrast_score(letterbox(image))
            if image.shape != expected_shape or image.dtype != np.float32:
                problems.append(f"{path.name}: shape {image.shape} dtype {image.dtype}")
            if not (0.0 <= image.min() and image.max() <= 1.0 and image.max() > 0.5):
                problems.append(f"{path.name}: range {image.min()}..{image.max()}")
            if score < DEFAULT_MIN_CONTRAST:
                problems.append(f"{path.name}: low contrast {score:.3f}")
            if path.parent.parent.name == "actualmed":  # large CR radiographs
                median = float(np.median(image))
                if not 0.2 < median < 0.8:
                    problems.append(f"{path.name}: median {median:.3f}, looks too dark/bright")
    assert not problems, "\n".join(problems)
