"""Tests for biomark.data.image_info: original size/mode/bit depth and the per-source size mix."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pydicom
import pytest
from PIL import Image
from pydicom.dataset import FileDataset, FileMetaDataset
from pydicom.uid import ExplicitVRLittleEndian, generate_uid

from biomark.data.image_info import ImageInfo, read_image_info, size_flags, size_mix
from biomark.exceptions import ImageReadError


def test_header_of_each_kind(tmp_path: Path) -> None:
    gray = np.zeros((30, 40), np.uint8)
    Image.fromarray(gray).save(tmp_path / "l.png")
    Image.fromarray(np.zeros((30, 40, 3), np.uint8)).save(tmp_path / "rgb.jpg")
    Image.fromarray(np.full((30, 40), 4000, np.uint16)).save(tmp_path / "i16.png")
    Image.fromarray(gray).convert("P").save(tmp_path / "p.png")
    Image.fromarray(gray > 0).save(tmp_path / "bw.png")
    assert read_image_info(tmp_path / "l.png") == ImageInfo(40, 30, "L", 8)
    assert read_image_info(tmp_path / "rgb.jpg") == ImageInfo(40, 30, "RGB", 8)
    assert read_image_info(tmp_path / "i16.png") == ImageInfo(40, 30, "I;16", 16)
    assert read_image_info(tmp_path / "p.png") == ImageInfo(40, 30, "P", 8)
    assert read_image_info(tmp_path / "bw.png") == ImageInfo(40, 30, "1", 1)
    assert read_image_info(tmp_path / "l.png").as_dict() == {
        "width": 40,
        "height": 30,
        "mode": "L",
        "bit_depth": 8,
    }


def _write_dicom(path: Path) -> None:
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = "1.2.840.10008.5.1.4.1.1.1.1"
    meta.MediaStorageSOPInstanceUID = generate_uid()
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds = FileDataset(str(path), {}, file_meta=meta, preamble=b"\0" * 128)
    ds.Rows, ds.Columns, ds.SamplesPerPixel, ds.BitsAllocated, ds.BitsStored, ds.HighBit = (
        4,
        6,
        1,
        16,
        12,
        11,
    )
    ds.PhotometricInterpretation, ds.PixelRepresentation = "MONOCHROME2", 0
    ds.PixelData = bytes(4 * 6 * 2)
    pydicom.dcmwrite(path, ds, enforce_file_format=True)


def test_dicom_header(tmp_path: Path) -> None:
    _write_dicom(tmp_path / "x.dcm")
    assert read_image_info(tmp_path / "x.dcm") == ImageInfo(6, 4, "MONOCHROME2", 12)


def test_unreadable_header_is_an_image_read_error(tmp_path: Path) -> None:
    (tmp_path / "bad.png").write_bytes(b"not a png")
    with pytest.raises(ImageReadError, match=r"bad.png: cannot read the image header"):
        read_image_info(tmp_path / "bad.png")


def _sizes(source: str, sizes: list[tuple[int, int]]) -> pd.DataFrame:
    return pd.DataFrame(
        {
            "source": source,
            "width": [w for w, _ in sizes],
            "height": [h for _, h in sizes],
            "mode": "L",
            "bit_depth": 8,
        }
    )


def test_square_resaves_among_landscape_films_are_flagged() -> None:
    rng = np.random.default_rng(0)
    films = [
        (int(w), int(w / a))
        for w, a in zip(rng.integers(900, 1900, 60), rng.uniform(1.1, 1.75, 60), strict=True)
    ]
    genuine = _sizes("kermany", films)
    mixed = _sizes(
        "kermany_copy", films + [(224, 224)] * 140
    )  # 70 % squashed re-saves, as in issue 13
    nih = _sizes("nih", [(1024, 1024)] * 30)
    mix = size_mix(pd.concat([genuine, mixed, nih], ignore_index=True)).set_index("source")
    assert mix.loc["kermany", ["shape_mix", "resolution_mix"]].tolist() == [False, False]
    assert mix.loc["nih", ["shape_mix", "resolution_mix", "square"]].tolist() == [False, False, 30]
    copy = mix.loc["kermany_copy"]
    big = sum(min(w, h) > 224 * 2.5 for w, h in films)  # the 224-px majority sets the median
    assert 50 < big < 60
    assert copy[
        ["shape_mix", "resolution_mix", "square", "landscape", "off_resolution"]
    ].tolist() == [True, True, 140, 60, big]
    assert copy["warning"].startswith(
        "source kermany_copy: mixes image shapes (140 square, 60 landscape of 200; e.g. landscape "
    )
    assert (
        "squashed re-saves" in copy["warning"]
        and f"mixes resolutions ({big} of 200 images" in copy["warning"]
    )
    assert mix.loc["kermany", "warning"] == ""
    assert (copy["modes"], copy["bit_depths"]) == ("L:200", "8:200")


def test_a_few_odd_images_are_not_a_mix() -> None:
    sizes = [(1200, 900)] * 40 + [(900, 1200)]  # 1 portrait of 41 (2.4 % < 5 %)
    row = size_mix(_sizes("s", sizes)).iloc[0]
    assert not row["shape_mix"] and row["portrait"] == 1


def test_size_flags_use_each_sources_median() -> None:
    frame = pd.concat(
        [_sizes("a", [(1000, 800)] * 5 + [(300, 300)]), _sizes("b", [(300, 300)] * 3)],
        ignore_index=True,
    )
    flags = size_flags(frame)
    assert (
        flags["off_resolution"].tolist() == [False] * 5 + [True] + [False] * 3
    )  # 300 < 800 / 2.5 in a only
    assert flags["shape"].tolist() == ["landscape"] * 5 + ["square"] * 4
    assert flags["short_side"].tolist() == [800] * 5 + [300] * 4


SHARED = Path(__file__).resolve().parents[2].parent / "shared" / "data"


@pytest.mark.shared_data
@pytest.mark.skipif(not SHARED.is_dir(), reason=f"real sample data not found at {SHARED}")
def test_real_films_headers_and_size_mix() -> None:
    rows = []
    for source, pattern in (
        ("kermany", "kermany/chest_xray/*/*/*.jpeg"),
        ("nih", "nih/images/*.png"),
        ("actualmed", "actualmed/images/*.png"),
        ("cohen", "cohen/images/*"),
    ):
        for path in sorted(SHARED.glob(pattern)):
            rows.append({"source": source, **read_image_info(path).as_dict()})
    frame = pd.DataFrame(rows)
    nih = frame[frame["source"] == "nih"]
    assert (
        (nih["width"] == 1024).all()
        and (nih["height"] == 1024).all()
        and (nih["mode"] == "L").all()
    )
    mix = size_mix(frame).set_index("source")
    # original Kermany films and NIH's uniform 1024x1024 PNGs are not a mix; Cohen's web figures are
    assert mix.loc[["kermany", "nih", "actualmed"], "warning"].tolist() == ["", "", ""]
    assert mix.loc["cohen", "shape_mix"] and mix.loc["cohen", "resolution_mix"]
    assert mix.loc["kermany", "landscape"] == 24
