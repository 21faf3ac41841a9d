from __future__ import annotations

from pathlib import Path

import pytest

from biomark.data.sources import SourceOptions, parse_nih
from biomark.data.sources.nih import find_label_table, index_images
from biomark.exceptions import DataError


def test_picks_newest_table_and_indexes_nested_images(nih_dir: Path) -> None:
    assert find_label_table(nih_dir).name == "Data_Entry_2017_v2020.csv"
    index = index_images(nih_dir)
    assert len(index) == 9
    assert all("/images/" in p for p in index.values())


def test_single_label_default(nih_dir: Path) -> None:
    result = parse_nih(nih_dir)
    frame = result.candidates
    present = frame.loc[frame["exists"]]
    assert sorted(present["label"]) == [
        "Edema",
        "Effusion",
        "Emphysema",
        "Fibrosis",
        "Normal",
        "Normal",
    ]
    assert set(frame.loc[~frame["exists"], "image_index"]) == {
        "00000009_000.png",
        "00000010_000.png",
    }
    assert present["patient_id"].tolist()[0] == "nih-1"
    assert result.skipped["label rows without an image"] == 2
    assert {"age", "sex", "follow_up"} <= set(frame.columns)


def test_multi_label_takes_first_recipe_class(nih_dir: Path) -> None:
    options = SourceOptions(multi_label=True, classes=("Effusion", "Edema", "Normal"))
    frame = parse_nih(nih_dir, options).candidates.set_index("image_index")
    assert frame.loc["00000006_000.png", "label"] == "Edema"
    assert frame.loc["00000007_000.png", "label"] == "Effusion"
    assert "00000008_000.png" not in frame.index
    assert "00000003_000.png" not in frame.index  # Emphysema is not a recipe class


def test_views_filter(nih_dir: Path) -> None:
    result = parse_nih(nih_dir, SourceOptions(views=("AP",)))
    assert result.candidates.empty
    assert result.skipped["non-frontal view"] == 11


def test_missing_table_and_images(tmp_path: Path, nih_dir: Path) -> None:
    (tmp_path / "n").mkdir()
    with pytest.raises(DataError, match="no Data_Entry_2017"):
        parse_nih(tmp_path / "n")
    for png in nih_dir.rglob("*.png"):
        png.unlink()
    with pytest.raises(DataError, match="no .png images"):
        parse_nih(nih_dir)
