"""Parsers and a full build on the real sample chest X-rays in ``shared/data``."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest

from biomark.data.build import build_dataset
from biomark.data.dataset import load_dataset
from biomark.data.recipe import recipe_from_mapping
from biomark.data.sources import parse_cohen, parse_kermany, parse_nih

SHARED = Path(__file__).resolve().parents[2].parent / "shared" / "data"

pytestmark = [
    pytest.mark.shared_data,
    pytest.mark.skipif(not SHARED.is_dir(), reason=f"real sample data not found at {SHARED}"),
]

RECIPE = {
    "name": "shared-sample",
    "seed": 7,
    "classes": [
        {"name": "COVID-19", "target": 20, "sources": ["cohen", "actualmed"]},
        {"name": "Edema", "target": 2, "sources": ["nih"]},
        {"name": "Effusion", "target": 2, "sources": ["nih"]},
        {"name": "Emphysema", "target": 2, "sources": ["nih"]},
        {"name": "Fibrosis", "target": 2, "sources": ["nih"]},
        {"name": "Pneumonia", "target": 5, "sources": ["kermany"]},
        {"name": "Normal", "target": 5, "sources": ["kermany"]},
    ],
    "nih": {"multi_label": True},  # the sample has no single-finding Edema image
}


def _lateral_and_ct_files() -> set[str]:
    meta = pd.read_csv(SHARED / "cohen" / "metadata.csv", dtype=str, keep_default_na=False)
    excluded = meta["view"].eq("L") | meta["modality"].ne("X-ray")
    return set(meta.loc[excluded, "filename"])


def test_cohen_real() -> None:
    result = parse_cohen(SHARED / "cohen")
    frame = result.candidates
    assert frame["label"].value_counts().to_dict() == {"COVID-19": 24, "Pneumonia": 8, "Normal": 5}
    assert result.skipped == {"not an X-ray (CT, ...)": 3, "lateral or other non-frontal view": 4}
    assert not {Path(p).name for p in frame["path"]} & _lateral_and_ct_files()
    assert result.problems == []


def test_actualmed_real_missing_rows() -> None:
    result = parse_cohen(SHARED / "actualmed")
    assert result.candidates["label"].value_counts().to_dict() == {"COVID-19": 4, "Normal": 4}
    assert set(result.candidates["source"]) == {"actualmed"}
    assert len(result.problems) == 2 and all("missing" in p.reason for p in result.problems)


def test_kermany_real_patients() -> None:
    frame = parse_kermany(SHARED / "kermany").candidates
    assert frame["label"].value_counts().to_dict() == {"Normal": 12, "Pneumonia": 12}
    patients = dict(
        zip(frame["path"].map(lambda p: Path(p).stem), frame["patient_id"], strict=True)
    )
    assert patients["IM-0505-0001-0002"] == "kermany-IM-0505"
    assert patients["NORMAL2-IM-0485-0001"] == "kermany-NORMAL2-IM-0485"
    assert patients["person1155_virus_1934"] == "kermany-person1155"
    assert patients["person23_bacteria_87"] == "kermany-person23"
    assert all(p != f"kermany-{stem}" for stem, p in patients.items())


def test_nih_real_is_single_label() -> None:
    # the 112,120-row table; its parsing time is a figure of benchmarks/table_parsing.py, not a test
    result = parse_nih(SHARED / "nih")
    present = result.candidates.loc[result.candidates["exists"]]
    assert present["label"].value_counts().to_dict() == {
        "Normal": 6,
        "Emphysema": 5,
        "Effusion": 2,
        "Fibrosis": 1,
    }
    assert result.skipped["label rows without an image"] == 112120 - 25


def test_build_real(tmp_path: Path) -> None:
    sources = {
        "cohen": [SHARED / "cohen", SHARED / "actualmed"],
        "kermany": [SHARED / "kermany"],
        "nih": [SHARED / "nih"],
    }
    result = build_dataset(
        tmp_path / "ds", sources=sources, recipe=recipe_from_mapping(RECIPE), jobs=2
    )
    dataset = load_dataset(tmp_path / "ds")
    counts = dataset.manifest["label"].value_counts().to_dict()
    assert counts == {
        "COVID-19": 20,
        "Edema": 2,
        "Effusion": 2,
        "Emphysema": 2,
        "Fibrosis": 2,
        "Pneumonia": 5,
        "Normal": 5,
    }
    assert dataset.images.shape == (38, 200, 200)
    assert set(dataset.manifest.loc[dataset.manifest["label"] == "COVID-19", "source"]) <= {
        "cohen",
        "actualmed",
    }
    assert not {Path(p).name for p in dataset.manifest["path"]} & _lateral_and_ct_files()
    failures = pd.read_csv(tmp_path / "ds" / "failures.csv")
    actualmed = failures.loc[failures["source"] == "actualmed"]
    assert len(actualmed) == 2 and actualmed["reason"].str.contains("missing").all()
    nih = failures.loc[failures["source"] == "nih"]
    assert (nih["stage"] == "select").all() and len(nih) <= 8  # at most the NIH targets
    assert result.n_failures == len(failures)
    assert dataset.manifest["patient_id"].str.match(r"^(cohen|actualmed|kermany|nih)-").all()
