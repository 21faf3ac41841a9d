"""Small synthetic images (PNG, JPEG, DICOM) with known pixel values.

There is deliberately no ``tests/io/__init__.py``: with pytest's
``--import-mode=importlib`` and no ``tests/__init__.py`` it would make this
folder a package named ``io`` and shadow the standard library's :mod:`io`.
Helpers are therefore handed to tests as fixtures, not imported.
"""

from __future__ import annotations

import struct
import zlib
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from PIL import Image

SHARED_DATA = Path(__file__).resolve().parents[2].parent / "shared" / "data"
REAL_IMAGE_GLOBS = {
    "cohen": "cohen/images/*",
    "actualmed": "actualmed/images/*",
    "kermany": "kermany/chest_xray/**/*",
    "nih": "nih/images/*",
}
REAL_SUFFIXES = (".png", ".jpg", ".jpeg", ".dcm", ".dicom")

# 2 x 4 gray ramp with exactly representable 8-bit values
GRAY8 = np.array([[0, 51, 102, 153], [204, 255, 17, 34]], dtype=np.uint8)


@pytest.fixture
def shared_data_dir() -> Path:
    """The real chest X-rays in ``../shared/data``, or skip."""
    if not SHARED_DATA.is_dir():
        pytest.skip(
            f"real X-ray sample not found at {SHARED_DATA} (it sits next to the repository)"
        )
    return SHARED_DATA


@pytest.fixture
def real_images(shared_data_dir: Path) -> dict[str, list[Path]]:
    """Every real image file per source folder (cohen, actualmed, kermany, nih)."""
    found: dict[str, list[Path]] = {}
    for source, pattern in REAL_IMAGE_GLOBS.items():
        found[source] = sorted(
            p
            for p in shared_data_dir.glob(pattern)
            if p.is_file() and p.suffix.lower() in REAL_SUFFIXES
        )
    return found


@pytest.fixture
def gray8() -> np.ndarray:
    """A 2 x 4 uint8 array with exactly known values."""
    return GRAY8.copy()


@pytest.fixture
def save_image() -> Callable[..., Path]:
    """``save_image(path, pil_image, **save_kwargs) -> path``."""
    return save_pil


@pytest.fixture
def png_with_sbit() -> Callable[[Path, int], Path]:
    """``png_with_sbit(path, bits) -> path``: add an sBIT chunk to a PNG in place."""
    return add_png_sbit


def save_pil(path: Path, image: Image.Image, **kwargs: Any) -> Path:
    image.save(path, **kwargs)
    return path


def add_png_sbit(path: Path, bits: int) -> Path:
    """Insert an ``sBIT`` chunk right after ``IHDR`` (Pillow does not write one)."""
    data = path.read_bytes()
    ihdr_end = 8 + 8 + 13 + 4  # signature, IHDR length+type, IHDR data, CRC
    body = b"sBIT" + bytes([bits])
    chunk = struct.pack(">I", 1) + body + struct.pack(">I", zlib.crc32(body) & 0xFFFFFFFF)
    path.write_bytes(data[:ihdr_end] + chunk + data[ihdr_end:])
    return path


@pytest.fixture
def gray8_png(tmp_path: Path) -> Path:
    return save_pil(tmp_path / "gray8.png", Image.fromarray(GRAY8))


@pytest.fixture
def noise_png(tmp_path: Path) -> Path:
    """A 128 x 128 noise PNG: large enough that cutting it in half cuts IDAT."""
    rng = np.random.default_rng(0)
    pixels = rng.integers(0, 256, size=(128, 128), dtype=np.uint8)
    return save_pil(tmp_path / "noise.png", Image.fromarray(pixels))


@pytest.fixture
def noise_jpeg(tmp_path: Path) -> Path:
    rng = np.random.default_rng(1)
    pixels = rng.integers(0, 256, size=(128, 128), dtype=np.uint8)
    return save_pil(tmp_path / "noise.jpg", Image.fromarray(pixels), quality=95)


@pytest.fixture
def make_dicom(tmp_path: Path) -> Callable[..., Path]:
    """Factory writing an uncompressed Explicit VR Little Endian DICOM file.

    ``make_dicom(name, pixels, photometric="MONOCHROME2", bits_stored=None,
    pixel_data=True, **tags)``; ``pixels`` of shape (rows, cols),
    (frames, rows, cols) or (rows, cols, 3) with ``photometric="RGB"``.
    Extra keyword arguments become DICOM attributes (``RescaleSlope=2``).
    """
    from pydicom.dataset import FileDataset, FileMetaDataset
    from pydicom.uid import ExplicitVRLittleEndian, SecondaryCaptureImageStorage, generate_uid

    def make(
        name: str,
        pixels: np.ndarray | None,
        photometric: str = "MONOCHROME2",
        bits_stored: int | None = None,
        **tags: Any,
    ) -> Path:
        path = tmp_path / name
        meta = FileMetaDataset()
        meta.MediaStorageSOPClassUID = SecondaryCaptureImageStorage
        meta.MediaStorageSOPInstanceUID = generate_uid()
        meta.TransferSyntaxUID = ExplicitVRLittleEndian
        ds = FileDataset(str(path), {}, file_meta=meta, preamble=b"\0" * 128)
        ds.SOPClassUID = SecondaryCaptureImageStorage
        ds.SOPInstanceUID = meta.MediaStorageSOPInstanceUID
        ds.Modality = "CR"
        ds.PatientID = "TEST"
        if pixels is not None:
            arr = np.ascontiguousarray(pixels)
            bits = bits_stored or arr.dtype.itemsize * 8
            ds.set_pixel_data(arr, photometric, bits, generate_instance_uid=False)
        for key, value in tags.items():
            setattr(ds, key, value)
        ds.save_as(path, enforce_file_format=True)
        return path

    return make
