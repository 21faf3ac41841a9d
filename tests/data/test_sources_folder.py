from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest

from biomark.data.sources import SourceOptions, parse_folder, parse_manifest
from biomark.exceptions import DataError, ManifestError


def test_folder_labels_normalised(folder_dir: Path) -> None:
    frame = parse_folder(folder_dir).candidates
    assert sorted(frame["label"]) == ["COVID-19", "COVID-19", "Normal", "Pneumonia"]
    assert set(frame["patient_id"]) == {"folder-a", "folder-b", "folder-c", "folder-d"}


def test_folder_patients_csv(folder_dir: Path) -> None:
    pd.DataFrame({"file": ["covid19/a.png", "b.png"], "patient_id": ["P1", "P1"]}).to_csv(
        folder_dir / "patients.csv", index=False)
    frame = parse_folder(folder_dir).candidates
    assert (frame["patient_id"] == "folder-P1").sum() == 2


def test_folder_class_not_in_recipe(folder_dir: Path) -> None:
    with pytest.raises(DataError, match=r"'pneumonia' matches none of the recipe's classes \(COVID-19, Normal\)"):
        parse_folder(folder_dir, SourceOptions(classes=("COVID-19", "Normal")))


def test_folder_without_recipe_keeps_unknown_names(folder_dir: Path) -> None:
    (folder_dir / "Tuberculosis").mkdir()
    (folder_dir / "pneumonia" / "d.png").rename(folder_dir / "Tuberculosis" / "t.png")
    assert "Tuberculosis" in set(parse_folder(folder_dir).candidates["label"])


def test_folder_empty_is_error(tmp_path: Path) -> None:
    (tmp_path / "e" / "covid").mkdir(parents=True)
    with pytest.raises(DataError, match="hold no"):
        parse_folder(tmp_path / "e")
    (tmp_path / "f").mkdir()
    with pytest.raises(DataError, match="no class sub-folders"):
        parse_folder(tmp_path / "f")


def test_manifest_resolves_and_keeps_columns(manifest_csv: Path) -> None:
    frame = parse_manifest(manifest_csv).candidates
    assert frame["path"].map(lambda p: Path(p).is_file()).all()
    assert frame["mask_path"].map(lambda p: Path(p).is_file()).all()
    assert {"image_id", "severity", "artifact"} <= set(frame.columns)
    assert set(frame["source"]) == {"site_A"}
    assert "Tuberculosis" in set(frame["label"])


def test_manifest_missing_file_and_columns(manifest_csv: Path, tmp_path: Path) -> None:
    (manifest_csv.parent / "images" / "ph001.png").unlink()
    result = parse_manifest(manifest_csv)
    assert len(result.problems) == 1 and "ph001.png" in result.problems[0].reason
    with pytest.raises(ManifestError, match="file is missing"):
        parse_manifest(manifest_csv, SourceOptions(strict=True))
    bad = tmp_path / "bad.csv"
    pd.DataFrame({"path": ["x.png"]}).to_csv(bad, index=False)
    with pytest.raises(ManifestError, match="missing column.*label"):
        parse_manifest(bad)
