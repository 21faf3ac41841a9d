"""Dataset recipes: which classes, how many images, from which sources.

A recipe is one YAML file (``data/recipes/*.yaml``) loaded into frozen
dataclasses with :func:`biomark.config.from_mapping` (unknown keys are
errors)::

    name: apostolopoulos2020
    seed: 2020
    classes:                     # in the dataset's class order
      - {name: COVID-19, target: 455, sources: [cohen]}
      - {name: Normal, target: 1341, sources: [kermany], splits: [train]}
    views: [PA, AP, AP Supine, AP semi erect, AP erect]
    nih: {multi_label: false}
    finding_map: {Tuberculosis: Pneumonia}
    min_contrast: null           # null: biomark.io.contrast.DEFAULT_MIN_CONTRAST

A class's ``sources`` name either a parser (``cohen`` matches every folder
given with ``--cohen``, including Actualmed and Figure1) or a candidate's
``source`` value (``actualmed`` matches only those). The candidates of all
listed sources are pooled, sorted by path, shuffled once with a generator
seeded from ``seed``, and decoded in that order until ``target`` images
passed (``target: null`` takes every candidate). ``splits`` keeps only
candidates whose ``split`` metadata is listed (Kermany train/test/val).

Sampling itself lives in :mod:`biomark.data.build`; this module only holds
and validates the settings, and orders candidates
(:func:`shuffled_pool`).
"""

from __future__ import annotations

import dataclasses
import logging
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from biomark.config import from_mapping, load_yaml
from biomark.config.seeds import check_seed
from biomark.data.sources.base import DEFAULT_VIEWS
from biomark.exceptions import ConfigError

__all__ = [
    "ClassSpec",
    "NIHSettings",
    "Recipe",
    "load_recipe",
    "recipe_from_mapping",
    "recipe_to_dict",
    "shuffled_pool",
]

logger = logging.getLogger(__name__)

_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9 _.+-]*")


@dataclass(frozen=True)
class ClassSpec:
    """One class of the dataset.

    Parameters
    ----------
    name : str
        Class name (a canonical class such as ``COVID-19``, or your own).
    sources : tuple of str
        Parsers or source names whose candidates feed the class (pooled).
    target : int or None, default None
        Images to take; None takes every usable candidate.
    splits : tuple of str, default ()
        Only candidates whose ``split`` is listed (empty: any).
    """

    name: str
    sources: tuple[str, ...] = ()
    target: int | None = None
    splits: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        if not _NAME.fullmatch(self.name):
            raise ConfigError(
                f"classes: class name {self.name!r} must start with a letter or digit"
            )
        if not self.sources:
            raise ConfigError(
                f"classes: class {self.name} lists no sources; add e.g. sources: [cohen]"
            )
        if self.target is not None and self.target < 1:
            raise ConfigError(
                f"classes: class {self.name} has target={self.target}; use a positive count or "
                "null for all"
            )


@dataclass(frozen=True)
class NIHSettings:
    """NIH ChestX-ray14 options: ``multi_label`` allows images with several findings."""

    multi_label: bool = False


@dataclass(frozen=True)
class Recipe:
    """A whole dataset recipe (see the module docstring for the YAML form)."""

    name: str = "dataset"
    seed: int = 0
    classes: tuple[ClassSpec, ...] = ()
    views: tuple[str, ...] = DEFAULT_VIEWS
    nih: NIHSettings = field(default_factory=NIHSettings)
    finding_map: dict[str, str] = field(default_factory=dict)
    min_contrast: float | None = None
    description: str = ""

    def __post_init__(self) -> None:
        if not self.classes:
            raise ConfigError("classes: a recipe needs at least one class")
        check_seed(self.seed, "seed")
        names = [c.name for c in self.classes]
        repeated = sorted({n for n in names if names.count(n) > 1})
        if repeated:
            raise ConfigError(
                f"classes: class {', '.join(repeated)} is listed twice; list each class once"
            )
        if not isinstance(self.finding_map, Mapping) or not all(
            isinstance(k, str) and isinstance(v, str) for k, v in self.finding_map.items()
        ):
            raise ConfigError(
                f"finding_map={self.finding_map!r}: use a mapping of raw finding -> class name, "
                "e.g. {Tuberculosis: Pneumonia}"
            )
        bad = sorted({v for v in self.finding_map.values() if v not in names})
        if bad:
            raise ConfigError(
                f"finding_map maps to {', '.join(bad)}, which is not a class of the recipe "
                f"({', '.join(names)}); map to one of them or add the class"
            )
        if not self.views:
            raise ConfigError("views: list at least one allowed projection, e.g. [PA, AP]")
        if self.min_contrast is not None and not 0.0 <= self.min_contrast <= 1.0:
            raise ConfigError(
                f"min_contrast={self.min_contrast}: use a value in [0, 1] or null for the default"
            )

    @property
    def class_names(self) -> tuple[str, ...]:
        """Class names in the recipe's order."""
        return tuple(c.name for c in self.classes)


def recipe_from_mapping(mapping: Mapping[str, Any], where: str = "") -> Recipe:
    """Build a :class:`Recipe` from a mapping (as read from YAML).

    Raises
    ------
    ConfigError
        Unknown keys, wrong types or invalid values, prefixed with ``where``.
    """
    try:
        return from_mapping(Recipe, mapping)
    except ConfigError as err:
        if where:
            raise ConfigError(f"{where}: {err}") from err
        raise


def load_recipe(path: str | Path) -> Recipe:
    """Load and validate a recipe YAML file.

    Raises
    ------
    ConfigError
        Naming the file, when it is missing, not YAML, or a setting is invalid.
    """
    return recipe_from_mapping(load_yaml(path), where=str(path))


def recipe_to_dict(recipe: Recipe) -> dict[str, Any]:
    """The recipe as plain data (lists and dicts), for JSON provenance."""

    def convert(obj: Any) -> Any:
        if dataclasses.is_dataclass(obj):
            return {f.name: convert(getattr(obj, f.name)) for f in dataclasses.fields(obj)}
        if isinstance(obj, Mapping):
            return {str(k): convert(v) for k, v in obj.items()}
        if isinstance(obj, (list, tuple)):
            return [convert(o) for o in obj]
        return obj

    return convert(recipe)


def shuffled_pool(
    candidates: pd.DataFrame, spec: ClassSpec, rng: np.random.Generator
) -> pd.DataFrame:
    """The candidates of one class in the order they will be tried.

    Parameters
    ----------
    candidates : DataFrame
        All candidates, with columns ``label``, ``source``, ``parser``,
        ``path`` (and ``split`` when ``spec.splits`` is set).
    spec : ClassSpec
        The class.
    rng : numpy.random.Generator
        Consumed once (one permutation) per class, in recipe order.

    Returns
    -------
    DataFrame
        The class's candidates, duplicates of a path removed, sorted by path
        then permuted; the index is the candidates' index.
    """
    mask = candidates["label"].eq(spec.name) & (
        candidates["source"].isin(spec.sources) | candidates["parser"].isin(spec.sources)
    )
    if spec.splits:
        split = (
            candidates["split"]
            if "split" in candidates.columns
            else pd.Series("", index=candidates.index)
        )
        mask &= split.isin(spec.splits)
    pool = candidates.loc[mask].sort_values(["path", "source"], kind="stable")
    pool = pool.loc[~pool["path"].duplicated()]
    return pool.iloc[rng.permutation(len(pool))]
