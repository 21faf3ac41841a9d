"""biomark.report.strategy_folds: a random-features control whose folds were trained from
different backbones is named at the top of the report."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import pytest

from biomark.features.deep import fold_dir
from biomark.features.run_folder import RunFolder
from biomark.pipelines.report import analyse_run
from biomark.report.report_page import write_report
from biomark.report.report_strategy import ReportSettings
from biomark.report.strategy_folds import mixed_backbones_warning


def _record(run: Path, strategy: str, fold: int, backbone_seed: int | None) -> None:
    record: dict[str, object] = {"strategy": strategy, "fold": fold}
    if backbone_seed is not None:
        record["backbone_seed"] = backbone_seed
    path = fold_dir(run, strategy, fold) / "metrics.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(record), encoding="utf-8")


@pytest.mark.parametrize(
    "seeds",
    [
        (77, 77, 77),  # one shared backbone
        (None, None, None),  # an earlier version's run: a backbone per fold, consistently
    ],
)
def test_consistent_folds_get_no_warning(tmp_path: Path, seeds: tuple) -> None:
    for f, seed in enumerate(seeds):
        _record(tmp_path, "frozen", f, seed)
    assert mixed_backbones_warning(RunFolder(tmp_path), "frozen", [0, 1, 2]) is None


def test_a_run_resumed_across_the_change_names_each_group_of_folds(tmp_path: Path) -> None:
    _record(tmp_path, "finetune:3", 0, None)
    _record(tmp_path, "finetune:3", 1, 4242)
    _record(tmp_path, "finetune:3", 2, 4242)
    warning = mixed_backbones_warning(RunFolder(tmp_path), "finetune:3", [0, 1, 2])
    assert warning is not None
    assert warning["strategy"] == "finetune:3" and warning["check"] == "mixed backbones"
    assert warning["fold"] == "0, 1, 2"
    message = warning["message"]
    assert "fold(s) [0] drew a backbone of their own" in message
    assert "fold(s) [1, 2] share the backbone of seed 4242" in message
    assert "biomark extract --force --strategies finetune:3" in message


def test_two_seeds_and_unreadable_records(tmp_path: Path) -> None:
    _record(tmp_path, "frozen", 0, 1)
    _record(tmp_path, "frozen", 1, 2)
    (fold_dir(tmp_path, "frozen", 2) / "metrics.json").parent.mkdir(parents=True)
    (fold_dir(tmp_path, "frozen", 2) / "metrics.json").write_text("{not json", encoding="utf-8")
    (fold_dir(tmp_path, "frozen", 4) / "metrics.json").parent.mkdir(parents=True)
    (fold_dir(tmp_path, "frozen", 4) / "metrics.json").write_text(
        json.dumps({"backbone_seed": "not a seed"}), encoding="utf-8"
    )
    warning = mixed_backbones_warning(RunFolder(tmp_path), "frozen", [0, 1, 2, 3, 4])
    # fold 2 unreadable, fold 3 absent, fold 4 with a seed that is no number: left out
    assert warning is not None and warning["fold"] == "0, 1"
    assert "fold(s) [0] share the backbone of seed 1" in warning["message"]
    assert "fold(s) [1] share the backbone of seed 2" in warning["message"]


def test_the_report_shows_it_at_the_top_for_the_control_only(
    tmp_path: Path, make_feature_run
) -> None:
    run = make_feature_run(
        tmp_path / "runs" / "synth", strategies=("scratch", "frozen"), n_per_fold=30, d=12
    )
    for strategy in ("scratch", "frozen"):
        for f in range(3):
            (fold_dir(run, strategy, f) / "done.json").write_text(json.dumps({"fold": f}))
            # scratch is never a control: a missing backbone seed there means nothing
            _record(run, strategy, f, None if (strategy == "scratch" or f == 0) else 9)
    settings = replace(ReportSettings(top_k=4, n_bootstrap=50, n_mixed=1), workers=1)
    data = analyse_run(run, settings, reports=tmp_path / "reports")
    checks = {s: [w["check"] for w in rep.warnings] for s, rep in data.strategies.items()}
    assert "mixed backbones" in checks["frozen"]
    assert "mixed backbones" not in checks["scratch"]
    page = Path(write_report(data)["index"]).read_text(encoding="utf-8")
    assert "drew a backbone of their own" in page


@pytest.mark.parametrize(
    ("frozen", "finetune", "one"),
    [
        ((5, 5), (5, 5), True),  # one backbone per run, as biomark draws it
        ((5, 5), (6, 6), False),  # one per strategy, as biomark drew it before
        ((None, None), (None, None), False),  # one per fold, before that
        ((5, 5), (5, None), False),
        ((), (), True),  # no record: nothing tells otherwise
    ],
)
def test_controls_share_one_backbone_only_when_every_fold_records_one_seed(
    tmp_path: Path, frozen: tuple, finetune: tuple, one: bool
) -> None:
    from biomark.analysis.construction import shared_by_construction

    for strategy, seeds in (("frozen", frozen), ("finetune:3", finetune)):
        for f, seed in enumerate(seeds):
            _record(tmp_path, strategy, f, seed)
    run = RunFolder(tmp_path)
    assert run.one_random_backbone(("frozen", "finetune:3")) is one
    pair = shared_by_construction(
        "frozen",
        "finetune:3",
        "none",
        one_random_backbone=run.one_random_backbone(("frozen", "finetune:3")),
    )
    assert (pair.shared_text() == "the stem and blocks 1–13 of 16") is one
    assert (pair.shared == ()) is not one
    assert pair.controls == ("frozen", "finetune:3") and not pair.tests_claim
