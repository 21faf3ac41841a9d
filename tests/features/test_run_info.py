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


def test_attempts_come_oldest_first_whatever_the_process_ids(tmp_path) -> None:
    """Attempt files are named after the process id; "10123" sorts before "9980" as text, so a
    rerun in a process with a longer id must still come after the attempt it replaced."""
    import json

    from biomark.features.run_folder import ATTEMPTS_DIR, RunFolder

    folder = tmp_path / "run" / ATTEMPTS_DIR
    folder.mkdir(parents=True)
    for pid, started in (
        (9980, "2026-12-05T15:00:00.000+00:00"),
        (10123, "2026-12-05T15:00:09.000+00:00"),
    ):
        record = {"job": "scratch_fold_00", "pid": pid, "started": started}
        (folder / f"scratch_fold_00-{pid}-abcd1234.json").write_text(json.dumps(record))
    assert [a["pid"] for a in RunFolder(tmp_path / "run").attempts()] == [9980, 10123]
