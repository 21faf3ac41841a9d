"""Reading a plan: YAML files, mappings and dotted-key overrides (CLI flags), through the same
validation; the plan back as plain data, and its hash."""

from __future__ import annotations

import dataclasses
import hashlib
import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from biomark.config.coerce import from_mapping
from biomark.config.plan import Plan
from biomark.config.strategy import StrategySpec
from biomark.exceptions import ConfigError


def read_yaml_file(
    path: Path, *, kind: str = "file", advice: str = "give the path of a YAML file"
) -> tuple[bytes, Any]:
    """A YAML file's bytes and content (None for an empty file), with errors that name the file.

    Parameters
    ----------
    path : Path
    kind : str, default "file"
        What the file is, for the messages (``"parameter file"``).
    advice : str
        What to give instead, ending each message.

    Raises
    ------
    ConfigError
        If ``path`` is a folder, missing, unreadable, not UTF-8 text, or not
        valid YAML.
    """
    import yaml

    if path.is_dir():
        raise ConfigError(f"{path}: a folder, not a {kind}; {advice}")
    if not path.is_file():
        raise ConfigError(f"{path}: {kind} not found; {advice}")
    try:
        raw = path.read_bytes()
    except OSError as err:
        raise ConfigError(f"{path}: cannot be read ({err.strerror or err})") from err
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as err:
        raise ConfigError(
            f"{path}: not a text file (byte {err.start} is not UTF-8); {advice}"
        ) from err
    try:
        return raw, yaml.safe_load(text)
    except yaml.YAMLError as err:
        raise ConfigError(f"{path}: not valid YAML ({err}); fix the syntax") from err


def load_yaml(path: str | Path) -> dict[str, Any]:
    """Read a YAML file into a dict, with errors that name the file.

    Raises
    ------
    ConfigError
        If the file is missing, is not valid YAML (:func:`read_yaml_file`), or
        is not a mapping.

    Examples
    --------
    >>> import biomark
    >>> raw = load_yaml(Path(biomark.__file__).parents[1] / "analyses" / "quick.yaml")
    >>> raw["name"], raw["cv"]
    ('quick', {'k': 3, 'grouping': 'patient', 'validation_fraction': 0.0})
    """
    path = Path(path)
    _, content = read_yaml_file(path)
    if content is None:
        return {}
    if not isinstance(content, dict):
        raise ConfigError(f"{path}: expected a mapping of settings at the top level")
    return content


def plan_from_mapping(mapping: Mapping[str, Any]) -> Plan:
    """Build a :class:`Plan` from a mapping (as read from YAML).

    Examples
    --------
    >>> plan = plan_from_mapping({"name": "demo", "cv": {"k": 5}, "strategies": ["scratch"]})
    >>> plan.name, plan.cv.k, plan.cv.grouping, [s.label for s in plan.strategies]
    ('demo', 5, 'patient', ['scratch'])
    >>> plan_from_mapping({"cv": {"folds": 5}})
    Traceback (most recent call last):
    ...
    biomark.exceptions.ConfigError: unknown setting(s) cv.folds; valid keys under cv are: k, ...
    """
    return from_mapping(Plan, mapping)


def load_plan(path: str | Path, overrides: Mapping[str, Any] | None = None) -> Plan:
    """Load and validate an analysis plan.

    Parameters
    ----------
    path : str or Path
        YAML plan file (see ``analyses/``).
    overrides : mapping, optional
        Dotted keys (``"training.epochs"``) to values, e.g. from CLI flags.

    Returns
    -------
    Plan

    Raises
    ------
    ConfigError
        With the file name, if the file or any setting is invalid.

    Examples
    --------
    The quick demo plan, with two settings overridden as CLI flags would:

    >>> import biomark
    >>> path = Path(biomark.__file__).parents[1] / "analyses" / "quick.yaml"
    >>> plan = load_plan(path, {"cv.k": 5, "training.epochs": 2})
    >>> plan.name, plan.cv.k, plan.training.epochs, plan.model.image_size
    ('quick', 5, 2, 96)
    >>> [s.label for s in plan.strategies]
    ['scratch', 'frozen', 'finetune:3']

    An override goes through the same validation as the file:

    >>> load_plan(path, {"cv.k": 1})
    Traceback (most recent call last):
    ...
    biomark.exceptions.ConfigError: ...quick.yaml: cv.k=1: need at least 2 folds
    """
    mapping = load_yaml(path)
    try:
        plan = plan_from_mapping(mapping)
        return apply_overrides(plan, overrides or {})
    except ConfigError as err:
        raise ConfigError(f"{path}: {err}") from err


def plan_to_dict(plan: Plan) -> dict[str, Any]:
    """The plan as plain data (strategies as their labels), for JSON/YAML.

    Examples
    --------
    >>> data = plan_to_dict(Plan())
    >>> data["strategies"], data["cv"]["k"]
    (['scratch', 'frozen', 'finetune:11'], 10)
    >>> plan_from_mapping(data) == Plan()  # the plan back, unchanged
    True
    """

    def convert(obj: Any) -> Any:
        if isinstance(obj, StrategySpec):
            return obj.label
        if dataclasses.is_dataclass(obj):
            return {f.name: convert(getattr(obj, f.name)) for f in dataclasses.fields(obj)}
        if isinstance(obj, (list, tuple)):
            return [convert(o) for o in obj]
        return obj

    return convert(plan)


def apply_overrides(plan: Plan, overrides: Mapping[str, Any]) -> Plan:
    """Return a new plan with dotted-key overrides applied and validated.

    Examples
    --------
    >>> plan = apply_overrides(Plan(), {"training.epochs": 2, "data.dir": "x"})
    >>> plan.training.epochs, plan.data.dir
    (2, 'x')
    """
    data = plan_to_dict(plan)
    for dotted, value in overrides.items():
        if value is None:
            continue
        node = data
        parts = dotted.split(".")
        for part in parts[:-1]:
            if node.get(part) is None:
                node[part] = {}
            node = node[part]
        node[parts[-1]] = value
    return plan_from_mapping(data)


def plan_hash(plan: Plan) -> str:
    """SHA-256 of the plan's canonical JSON form (first 16 hex digits).

    Examples
    --------
    >>> digest = plan_hash(Plan())
    >>> len(digest), digest == plan_hash(Plan())
    (16, True)
    >>> plan_hash(apply_overrides(Plan(), {"seed": 1})) == digest  # any change, another hash
    False
    """
    text = json.dumps(plan_to_dict(plan), sort_keys=True)
    return hashlib.sha256(text.encode()).hexdigest()[:16]
