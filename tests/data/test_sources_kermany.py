from __future__ import annotations

import logging
from pathlib import Path

import pytest

from biomark.data.sources import SourceOptions, parse_kermany
from biomark.data.sources.kermany import kermany_patient
from biomark.exceptions import DataError


@pytest.mark.parametrize(
    "stem, patient, subtype",
    [
        ("person123_bacteria_456", "person123", "bacteria"),
        ("person1946_virus_3377", "person1946", "virus"),
        ("IM-0115-0001", "IM-0115", ""),
        ("IM-0505-0001-0002", "IM-0505", ""),
        ("NORMAL2-IM-1427-0001", "NORMAL2-IM-1427", ""),
    ],
)
def test_patient_from_file_name(stem: str, patient: str, subtype: str) -> None:
    assert kermany_patient(stem) == (patient, subtype)


def test_unmatched_name_gives_none() -> None:
    assert kermany_patient("oddname") is None


def test_parse_labels_splits_and_patients(
    kermany_dir: Path, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.WARNING):
        frame = parse_kermany(kermany_dir).candidates
    assert len(frame) == 8
    assert frame.groupby(["split", "label"]).size().to_dict() == {
        ("test", "Normal"): 1,
        ("train", "Normal"): 3,
        ("train", "Pneumonia"): 3,
        ("val", "Pneumonia"): 1,
    }
    by_name = dict(zip(frame["path"].map(lambda p: Path(p).name), frame["patient_id"], strict=True))
    assert by_name["IM-0505-0001-0002.jpeg"] == "kermany-IM-0505"
    assert by_name["NORMAL2-IM-1427-0001.jpeg"] == "kermany-NORMAL2-IM-1427"
    assert by_name["person123_bacteria_456.jpeg"] == "kermany-person123"
    assert by_name["oddname.jpeg"] == "kermany-oddname"
    assert "match no Kermany pattern" in caplog.text
    assert set(frame.loc[frame["label"] == "Pneumonia", "subtype"]) == {"bacteria", "virus", ""}


def test_accepts_chest_xray_itself(kermany_dir: Path) -> None:
    assert len(parse_kermany(kermany_dir / "chest_xray").candidates) == 8


def test_wrong_folder_is_a_clear_error(tmp_path: Path) -> None:
    (tmp_path / "x").mkdir()
    with pytest.raises(DataError, match=r"no chest_xray/\{train,test,val\}"):
        parse_kermany(tmp_path / "x")
    (tmp_path / "y" / "chest_xray" / "train" / "NORMAL").mkdir(parents=True)
    with pytest.raises(DataError, match="no .jpeg"):
        parse_kermany(tmp_path / "y")


def test_stray_files_in_class_folders_are_problems(kermany_dir: Path, make_xray) -> None:
    from PIL import Image

    normal = kermany_dir / "chest_xray" / "train" / "NORMAL"
    Image.fromarray(make_xray(9)).save(normal / "IM-0999-0001.bmp")
    (normal / "Thumbs.db").write_bytes(b"\0\1")
    (normal / ".DS_Store").write_bytes(b"\0")
    result = parse_kermany(kermany_dir)
    assert len(result.candidates) == 8
    assert sorted((Path(p.path).name, p.stage, p.source) for p in result.problems) == [
        ("IM-0999-0001.bmp", "parse", "kermany"),
        ("Thumbs.db", "parse", "kermany"),
    ]
    assert result.skipped == {"hidden file": 1}
    with pytest.raises(DataError, match=r"IM-0999-0001.bmp: unsupported image format \.bmp"):
        parse_kermany(kermany_dir, SourceOptions(strict=True))
