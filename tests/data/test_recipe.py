from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from biomark.data.recipe import (
    ClassSpec,
    load_recipe,
    recipe_from_mapping,
    recipe_to_dict,
    shuffled_pool,
)
from biomark.exceptions import ConfigError

REPO = Path(__file__).resolve().parents[2]


def test_paper_recipe_loads() -> None:
    recipe = load_recipe(REPO / "data" / "recipes" / "apostolopoulos2020.yaml")
    assert recipe.class_names == (
        "COVID-19",
        "Edema",
        "Effusion",
        "Emphysema",
        "Fibrosis",
        "Pneumonia",
        "Normal",
    )
    targets = {c.name: c.target for c in recipe.classes}
    assert targets == {
        "COVID-19": 455,
        "Edema": 293,
        "Effusion": 311,
        "Emphysema": 315,
        "Fibrosis": 280,
        "Pneumonia": 910,
        "Normal": 1341,
    }
    assert recipe.nih.multi_label is False
    assert recipe_to_dict(recipe)["classes"][0]["sources"] == ["cohen"]


@pytest.mark.parametrize(
    "mapping, match",
    [
        ({"classes": []}, "at least one class"),
        (
            {"classes": [{"name": "A", "sources": ["cohen"]}], "colour": 1},
            "unknown setting.*colour",
        ),
        ({"classes": [{"name": "A", "sources": ["cohen"], "target": 0}]}, "target=0"),
        ({"classes": [{"name": "A"}]}, "lists no sources"),
        (
            {"classes": [{"name": "A", "sources": "x"}, {"name": "A", "sources": "y"}]},
            "listed twice",
        ),
        (
            {"classes": [{"name": "A", "sources": "x"}], "finding_map": {"TB": "B"}},
            "not a class of the recipe",
        ),
        ({"classes": [{"name": "A", "sources": "x"}], "min_contrast": 2}, r"min_contrast=2.0"),
        (
            {"classes": [{"name": "A", "sources": "x"}], "nih": {"multi_label": "yes"}},
            "true or false",
        ),
        ({"classes": [{"name": "A", "sources": "x"}], "seed": -1}, r"seed=-1: a seed must be"),
    ],
)
def test_invalid_recipes(mapping: dict, match: str) -> None:
    with pytest.raises(ConfigError, match=match):
        recipe_from_mapping(mapping)


def test_load_recipe_names_file(tmp_path: Path) -> None:
    path = tmp_path / "r.yaml"
    path.write_text("classes: [{name: A, sources: [x], tagret: 3}]\n")
    with pytest.raises(ConfigError, match=r"r\.yaml.*tagret"):
        load_recipe(path)


def _candidates(n: int) -> pd.DataFrame:
    return pd.DataFrame(
        {
            "path": [f"/d/{i:03d}.png" for i in range(n)],
            "label": "A",
            "source": "cohen",
            "parser": "cohen",
            "exists": True,
        }
    )


def test_shuffled_pool_is_seeded_and_order_independent() -> None:
    spec = ClassSpec(name="A", sources=("cohen",))
    frame = _candidates(30)
    a = shuffled_pool(frame, spec, np.random.default_rng(1))["path"].tolist()
    b = shuffled_pool(frame.iloc[::-1], spec, np.random.default_rng(1))["path"].tolist()
    c = shuffled_pool(frame, spec, np.random.default_rng(2))["path"].tolist()
    assert a == b and a != c and sorted(a) == frame["path"].tolist()


def test_shuffled_pool_filters_sources_and_splits() -> None:
    frame = _candidates(4).assign(
        source=["cohen", "actualmed", "cohen", "actualmed"],
        split=["train", "train", "test", "train"],
    )
    pool = shuffled_pool(
        frame,
        ClassSpec(name="A", sources=("actualmed",), splits=("train",)),
        np.random.default_rng(0),
    )
    assert sorted(pool["path"]) == ["/d/001.png", "/d/003.png"]
    assert (
        len(shuffled_pool(frame, ClassSpec(name="A", sources=("cohen",)), np.random.default_rng(0)))
        == 4
    )
