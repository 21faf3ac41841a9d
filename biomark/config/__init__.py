"""Analysis plans: one YAML file per run, loaded into frozen dataclasses.

Every setting and its default lives here, once. A plan file may set any subset
of them; unknown keys, wrong types and out-of-range values are errors that
name the file, the key and the fix. Command-line flags override a plan through
:func:`apply_overrides`, which goes through the same validation.

The package is split along the plan's sections, and every public name is
importable from ``biomark.config``:

- :mod:`~biomark.config.strategy` - ``strategies:`` (:class:`StrategySpec`);
- :mod:`~biomark.config.dataset` - ``data:`` and ``cv:``;
- :mod:`~biomark.config.training` - ``model:`` and ``training:``;
- :mod:`~biomark.config.outputs` - ``dump:``, ``compare:`` and ``radiomics:``;
- :mod:`~biomark.config.report` - ``positive_class`` and ``report:``;
- :mod:`~biomark.config.plan` - the whole :class:`Plan` and the checks across its sections;
- :mod:`~biomark.config.coerce` - mapping -> dataclass conversion (type coercion);
- :mod:`~biomark.config.load` - YAML files, dotted-key overrides, the plan as data and its hash.

Examples
--------
>>> from biomark.config import plan_from_mapping
>>> plan = plan_from_mapping({"name": "demo", "strategies": ["scratch", "finetune:3"]})
>>> [s.label for s in plan.strategies]
['scratch', 'finetune:3']
>>> plan.cv.k
10
"""

from __future__ import annotations

from biomark.config.coerce import from_mapping
from biomark.config.dataset import CVSettings, DataSettings, PhantomSettings
from biomark.config.load import (
    apply_overrides,
    load_plan,
    load_yaml,
    plan_from_mapping,
    plan_hash,
    plan_to_dict,
)
from biomark.config.outputs import CompareSettings, DumpSettings, RadiomicsSettings, Region
from biomark.config.plan import Plan, check_positive_class
from biomark.config.report import DEFAULT_POSITIVE_CLASS, Criteria, ReportPlanSettings
from biomark.config.strategy import StrategyName, StrategySpec
from biomark.config.training import (
    AugmentSettings,
    ClassWeightKind,
    EarlyStoppingSettings,
    ModelSettings,
    Monitor,
    TrainingSettings,
    parse_class_weight,
)

__all__ = [
    "AugmentSettings",
    "DEFAULT_POSITIVE_CLASS",
    "ClassWeightKind",
    "CompareSettings",
    "Criteria",
    "CVSettings",
    "DataSettings",
    "DumpSettings",
    "EarlyStoppingSettings",
    "ModelSettings",
    "Monitor",
    "PhantomSettings",
    "Plan",
    "RadiomicsSettings",
    "Region",
    "ReportPlanSettings",
    "StrategyName",
    "StrategySpec",
    "TrainingSettings",
    "apply_overrides",
    "check_positive_class",
    "from_mapping",
    "load_plan",
    "load_yaml",
    "parse_class_weight",
    "plan_from_mapping",
    "plan_hash",
    "plan_to_dict",
]
