from __future__ import annotations

from pathlib import Path

import pytest

from biomark.data.labels import map_finding
from biomark.data.sources import SourceOptions, parse_cohen
from biomark.data.sources.cohen import cohen_source_name
from biomark.exceptions import DataError


@pytest.mark.parametrize(
    "finding, label",
    [
        ("COVID-19", "COVID-19"),
        ("COVID-19, ARDS", "COVID-19"),
        ("Pneumonia/Viral/COVID-19", "COVID-19"),
        ("No Finding", "Normal"),
        ("No finding", "Normal"),
        ("normal", "Normal"),
        ("SARS", "Pneumonia"),
        ("Streptococcus", "Pneumonia"),
        ("Klebsiella", "Pneumonia"),
        ("Pneumocystis", "Pneumonia"),
        ("Pneumonia/Bacterial/Legionella", "Pneumonia"),
        ("Mycoplasma Bacterial Pneumonia", "Pneumonia"),
        ("todo", ""),
        ("Unknown", ""),
        ("Tuberculosis", ""),
        ("", ""),
    ],
)
def test_map_finding(finding: str, label: str) -> None:
    assert map_finding(finding) == label


def test_finding_map_is_checked_first() -> None:
    assert map_finding("tuberculosis", {"Tuberculosis": "Pneumonia"}) == "Pneumonia"


def test_cohen_keeps_frontal_xrays_and_maps_findings(cohen_dir: Path) -> None:
    result = parse_cohen(cohen_dir)
    frame = result.candidates
    assert sorted(frame["label"].value_counts().items()) == [
        ("COVID-19", 3),
        ("Normal", 2),
        ("Pneumonia", 3),
    ]
    assert set(frame["source"]) == {"cohen"}
    assert frame["patient_id"].str.startswith("cohen-").all()
    assert "lat.png" not in " ".join(frame["path"]) and "ct.png" not in " ".join(frame["path"])
    assert result.skipped == {"not an X-ray (CT, ...)": 1, "lateral or other non-frontal view": 1}
    assert frame.loc[frame["finding"] == "SARS", "label"].item() == "Pneumonia"
    assert all(Path(p).is_absolute() for p in frame["path"])
    assert {"sex", "age", "modality", "date"} <= set(frame.columns)


def test_cohen_problems_missing_file_and_unknown_findings(cohen_dir: Path) -> None:
    problems = parse_cohen(cohen_dir).problems
    reasons = sorted(p.reason for p in problems)
    assert len(problems) == 3
    assert any("absent.png" in r and "missing" in r for r in reasons)
    assert "unknown finding 'todo'" in reasons and "unknown finding 'Tuberculosis'" in reasons
    assert all("finding_map" in p.action for p in problems if "unknown" in p.reason)


def test_cohen_finding_map_rescues_unknown(cohen_dir: Path) -> None:
    result = parse_cohen(cohen_dir, SourceOptions(finding_map={"Tuberculosis": "Pneumonia"}))
    assert (result.candidates["finding"] == "Tuberculosis").sum() == 1
    assert len(result.problems) == 2


def test_cohen_strict_raises_first_problem(cohen_dir: Path) -> None:
    with pytest.raises(DataError, match="unknown finding 'todo'"):
        parse_cohen(cohen_dir, SourceOptions(strict=True))


def test_actualmed_columns_and_missing_rows(actualmed_dir: Path) -> None:
    result = parse_cohen(actualmed_dir)
    assert list(result.candidates["label"]) == ["COVID-19", "Normal"]
    assert set(result.candidates["source"]) == {"actualmed"}
    assert result.candidates["patient_id"].tolist() == ["actualmed-ANON1", "actualmed-ANON2"]
    assert len(result.problems) == 1 and "a3.png" in result.problems[0].reason


def test_figure1_without_filename_column(figure1_dir: Path) -> None:
    result = parse_cohen(figure1_dir)
    assert len(result.candidates) == 2
    assert set(result.candidates["source"]) == {"figure1"}
    assert result.candidates["path"].str.endswith((".jpg", ".png")).all()


@pytest.mark.parametrize(
    "name, source",
    [
        ("covid-chestxray-dataset", "cohen"),
        ("cohen", "cohen"),
        ("Actualmed-COVID-chestxray-dataset", "actualmed"),
        ("Figure1-COVID-chestxray-dataset", "figure1"),
        ("SIRM set", "sirm_set"),
    ],
)
def test_source_name_rule(name: str, source: str) -> None:
    assert cohen_source_name(Path("/x") / name) == source


def test_missing_metadata_and_folder(tmp_path: Path) -> None:
    (tmp_path / "empty").mkdir()
    with pytest.raises(DataError, match="metadata.csv not found"):
        parse_cohen(tmp_path / "empty")
    with pytest.raises(DataError, match="folder not found"):
        parse_cohen(tmp_path / "nowhere")
