"""Tests for biomark.data.sources.base: id prefixes, readable image ids, image listing."""

from __future__ import annotations

from pathlib import Path

import pytest

from biomark.data.sources.base import (
    Problem,
    folder_source_name,
    list_images,
    make_image_id,
    prefix_id,
)


@pytest.mark.parametrize(
    ("source", "text", "expected"),
    [
        ("hospital_a", "282", "hospital_a-282"),
        ("cohen", "cohen-25", "cohen-25"),  # already prefixed: kept
        ("nih", "NIH_00001", "NIH_00001"),  # case-insensitive, "_" separator
        ("nih", "nihil", "nih-nihil"),  # a word that merely starts like the source
        ("site_A", "pat0", "site_A-pat0"),
        ("kermany", "", ""),  # unknown patient stays unknown
        ("", "282", "282"),
    ],
)
def test_prefix_id(source: str, text: str, expected: str) -> None:
    assert prefix_id(source, text) == expected


@pytest.mark.parametrize(
    ("source", "path", "expected"),
    [
        ("kermany", "/x/person1_bacteria_1.jpeg", "kermany-person1_bacteria_1"),
        ("nih", "/x/00000001_000.png", "nih-00000001_000"),
        ("cohen", "/x/cohen-0001.png", "cohen-0001"),  # the source is not doubled
        ("figure1", "/x/Figure1-COVID-00001.jpg", "Figure1-COVID-00001"),
        ("cohen", "/x/covid 19 (1).jpg", "cohen-covid_19_1"),  # file-system safe
    ],
)
def test_make_image_id_is_readable(source: str, path: str, expected: str) -> None:
    assert make_image_id(source, path) == expected
    assert Problem(source, path, "parse", "r", "a").as_row()["image_id"] == expected


def test_folder_source_name() -> None:
    assert folder_source_name("/data/Hospital A", "folder") == "hospital_a"
    assert folder_source_name("/data/***", "folder") == "folder"


def test_list_images_keeps_readable_and_reports_the_rest(
    tmp_path: Path, make_xray, save_png
) -> None:
    save_png(tmp_path / "a.png", make_xray(1))
    save_png(tmp_path / "sub" / "b.JPG", make_xray(2))
    (tmp_path / "c").write_bytes(
        b"\0" * 128 + b"DICM" + b"\0" * 16
    )  # no suffix, DICOM magic: listed
    (tmp_path / "d.tiff").write_bytes(b"II*\0")
    (tmp_path / "e").write_bytes(b"no magic")
    (tmp_path / ".hidden").mkdir()
    (tmp_path / ".hidden" / "f.png").write_bytes(b"x")
    files, problems, hidden = list_images(tmp_path, "src", recursive=True)
    assert [p.name for p in files] == ["a.png", "c", "b.JPG"]
    assert [(Path(p.path).name, p.reason.split(":")[0]) for p in problems] == [
        ("d.tiff", "unsupported image format .tiff"),
        ("e", "not an image file (no suffix)"),
    ]
    assert hidden == 1
    files, problems, _ = list_images(tmp_path, "src", recursive=False)
    assert [p.name for p in files] == ["a.png", "c"] and len(problems) == 2
