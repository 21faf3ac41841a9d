from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest

from biomark.data.sources import SourceOptions, parse_folder, parse_manifest
from biomark.exceptions import DataError, ManifestError


def test_folder_labels_normalised(folder_dir: Path) -> None:
    result = parse_folder(folder_dir)
    frame = result.candidates
    assert sorted(frame["label"]) == ["COVID-19", "COVID-19", "Normal", "Pneumonia"]
    assert set(frame["source"]) == {"myxrays"}  # the folder's own name
    assert set(frame["patient_id"]) == {"myxrays-a", "myxrays-b", "myxrays-c", "myxrays-d"}
    assert result.problems == [] and result.skipped == {}


def test_folder_patients_csv(folder_dir: Path) -> None:
    pd.DataFrame({"file": ["covid19/a.png", "b.png"], "patient_id": ["P1", "P1"]}).to_csv(
        folder_dir / "patients.csv", index=False
    )
    frame = parse_folder(folder_dir).candidates
    assert (frame["patient_id"] == "myxrays-P1").sum() == 2


def test_files_of_one_name_in_two_class_folders_are_two_patients(
    tmp_path: Path, make_xray, save_png, caplog
) -> None:
    """Without ``patients.csv`` every image is its own patient, named by its file stem: but
    ``covid/1.png`` and ``normal/1.png`` were then one patient (forced into one fold, counted
    once). A stem that repeats now takes the end of the path that tells the files apart, and a
    warning names it; a stem of its own is kept as before. The same in a manifest without a
    patient_id column."""
    root = tmp_path / "xrays"
    for k, name in enumerate(["covid/1.png", "normal/1.png", "normal/2.png"]):
        save_png(root / name, make_xray(30 + k))
    frame = parse_folder(root).candidates.sort_values("path")
    assert frame["patient_id"].tolist() == ["xrays-covid/1", "xrays-normal/1", "xrays-2"]
    assert "1 file name(s) repeat in different folders (e.g. 1)" in caplog.text
    assert "own patient, named by its path (e.g. covid/1)" in caplog.text
    manifest = tmp_path / "list.csv"
    pd.DataFrame(
        {"path": [str(root / "covid/1.png"), str(root / "normal/1.png")], "label": ["a", "b"]}
    ).to_csv(manifest, index=False)
    assert parse_manifest(manifest).candidates["patient_id"].tolist() == [
        "manifest-covid/1",
        "manifest-normal/1",
    ]


def test_two_hospital_folders_keep_patient_282_apart(tmp_path: Path, make_xray, save_png) -> None:
    frames = []
    for k, hospital in enumerate(["Hospital A", "hospital_b"]):
        root = tmp_path / hospital
        save_png(root / "covid" / "x.png", make_xray(10 + k))
        pd.DataFrame({"file": ["x.png"], "patient_id": ["282"]}).to_csv(
            root / "patients.csv", index=False
        )
        frames.append(parse_folder(root).candidates)
    assert [f["patient_id"].item() for f in frames] == ["hospital_a-282", "hospital_b-282"]
    assert [f["source"].item() for f in frames] == ["hospital_a", "hospital_b"]


def test_every_unreadable_file_is_a_problem(folder_dir: Path, make_xray) -> None:
    from PIL import Image

    image = Image.fromarray(make_xray(50))
    for suffix in (".bmp", ".tif", ".gif", ".webp"):
        image.save(folder_dir / "covid19" / f"resave{suffix}")
    (folder_dir / "Normal" / "notes.txt").write_text("acquired 2020")
    (folder_dir / "Normal" / ".DS_Store").write_bytes(b"\0")
    result = parse_folder(folder_dir)
    assert len(result.candidates) == 4
    reasons = {Path(p.path).name: p.reason for p in result.problems}
    assert set(reasons) == {"resave.bmp", "resave.tif", "resave.gif", "resave.webp", "notes.txt"}
    assert reasons["resave.bmp"].startswith(
        "unsupported image format .bmp: biomark reads PNG, JPEG and DICOM"
    )
    assert reasons["notes.txt"] == "not an image file (.txt)"
    assert all(p.stage == "parse" and p.source == "myxrays" and p.action for p in result.problems)
    assert "convert it to PNG" in next(
        p.action for p in result.problems if p.path.endswith(".webp")
    )
    assert result.skipped == {"hidden file": 1}
    with pytest.raises(
        DataError, match=r"Normal/notes.txt: not an image file \(.txt\); left out"
    ):  # first in path order
        parse_folder(folder_dir, SourceOptions(strict=True))


def test_folder_of_only_unreadable_images_says_so(tmp_path: Path, make_xray) -> None:
    from PIL import Image

    (tmp_path / "bmp" / "covid").mkdir(parents=True)
    Image.fromarray(make_xray(1)).save(tmp_path / "bmp" / "covid" / "a.bmp")
    with pytest.raises(
        DataError, match=r"hold no .* images \(1 other file\(s\), e.g. a.bmp\); convert"
    ):
        parse_folder(tmp_path / "bmp")


def test_folder_class_not_in_recipe(folder_dir: Path) -> None:
    with pytest.raises(
        DataError, match=r"'pneumonia' matches none of the recipe's classes \(COVID-19, Normal\)"
    ):
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


def test_manifest_patient_ids_are_prefixed_with_their_source(
    manifest_csv: Path, tmp_path: Path, make_xray, save_png
) -> None:
    frame = parse_manifest(manifest_csv).candidates
    assert set(frame["patient_id"]) == {"site_A-pat0", "site_A-pat1", "site_A-pat2"}
    # patient 282 of two hospitals in one manifest: two patients
    for k in range(2):
        save_png(tmp_path / "two" / f"img{k}.png", make_xray(60 + k))
    two = tmp_path / "two" / "two.csv"
    pd.DataFrame(
        {
            "path": ["img0.png", "img1.png"],
            "label": ["COVID-19", "Normal"],
            "patient_id": ["282", "282"],
            "source": ["hospital_a", "hospital_b"],
        }
    ).to_csv(two, index=False)
    assert parse_manifest(two).candidates["patient_id"].tolist() == [
        "hospital_a-282",
        "hospital_b-282",
    ]
    # without a source column the source is "manifest"; without patient_id the stem is the patient
    pd.DataFrame({"path": ["img0.png"], "label": ["COVID-19"]}).to_csv(two, index=False)
    assert parse_manifest(two).candidates["patient_id"].tolist() == ["manifest-img0"]
    # a built manifest fed back in keeps its ids (no "cohen-cohen-25")
    pd.DataFrame(
        {
            "path": ["img0.png"],
            "label": ["COVID-19"],
            "patient_id": ["cohen-25"],
            "source": ["cohen"],
        }
    ).to_csv(two, index=False)
    assert parse_manifest(two).candidates["patient_id"].tolist() == ["cohen-25"]


def test_manifest_missing_file_and_columns(manifest_csv: Path, tmp_path: Path) -> None:
    (manifest_csv.parent / "images" / "ph001.png").unlink()
    result = parse_manifest(manifest_csv)
    assert len(result.problems) == 1 and "ph001.png" in result.problems[0].reason
    with pytest.raises(ManifestError, match="file is missing"):
        parse_manifest(manifest_csv, SourceOptions(strict=True))
    (manifest_csv.parent / "images" / "ph001.png").mkdir()  # a folder where an image belongs
    with pytest.raises(ManifestError, match=r"ph001\.png, a folder, not an image file"):
        parse_manifest(manifest_csv, SourceOptions(strict=True))
    bad = tmp_path / "bad.csv"
    pd.DataFrame({"path": ["x.png"]}).to_csv(bad, index=False)
    with pytest.raises(ManifestError, match="missing column.*label"):
        parse_manifest(bad)
