"""RunInfo's readers of the plan's sections (compare:, report:) from run.json."""

from __future__ import annotations

import pytest

from biomark.config import ReportPlanSettings
from biomark.exceptions import ConfigError
from biomark.features.run_info import RunInfo


def test_report_settings_default_when_the_run_predates_them() -> None:
    assert (
        RunInfo.from_json({"plan": {"model": {"weights": "none"}}}).report_settings()
        == ReportPlanSettings()
    )


def test_report_settings_come_from_the_plan_and_bad_ones_name_run_json() -> None:
    info = RunInfo.from_json(
        {"plan": {"report": {"cka_alpha": 0.2, "criteria": {"min_stability": 0.5}}}}
    )
    settings = info.report_settings()
    assert settings.cka_alpha == 0.2 and settings.criteria.min_stability == 0.5
    assert settings.chance_alpha == ReportPlanSettings().chance_alpha
    with pytest.raises(ConfigError, match=r"run\.json: unknown setting\(s\) report\.top_k"):
        RunInfo.from_json({"plan": {"report": {"top_k": 3}}}).report_settings()
    with pytest.raises(ConfigError, match=r"run\.json: .*compare\.n_permutations"):
        RunInfo.from_json({"plan": {"compare": {"n_permutations": "many"}}}).compare_settings()
