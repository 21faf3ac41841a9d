"""Analysis-plan loading and validation (the biomark/config package)."""

from __future__ import annotations

from pathlib import Path

import pytest

from biomark.config import (
    DEFAULT_POSITIVE_CLASS,
    Criteria,
    Plan,
    StrategySpec,
    apply_overrides,
    check_positive_class,
    load_plan,
    plan_from_mapping,
    plan_hash,
    plan_to_dict,
)
from biomark.exceptions import ConfigError, DataError

REPO = Path(__file__).resolve().parents[1]


@pytest.mark.parametrize(
    ("text", "label", "blocks"),
    [
        ("scratch", "scratch", None),
        ("frozen", "frozen", None),
        ("finetune:3", "finetune:3", 3),
        ("finetune_11", "finetune:11", 11),
        (" finetune : 16 ", "finetune:16", 16),
    ],
)
def test_strategy_parse(text: str, label: str, blocks: int | None) -> None:
    spec = StrategySpec.parse(text)
    assert spec.label == label
    assert spec.blocks == blocks
    assert ":" not in spec.dirname


@pytest.mark.parametrize(
    ("text", "match"),
    [
        ("resnet", "unknown strategy"),
        ("finetune", "needs the number"),
        ("finetune:0", "outside 1-16"),
        ("finetune:17", "outside 1-16"),
        ("scratch:3", "only 'finetune'"),
    ],
)
def test_strategy_parse_errors(text: str, match: str) -> None:
    with pytest.raises(ConfigError, match=match):
        StrategySpec.parse(text)


def test_defaults_follow_the_paper() -> None:
    plan = Plan()
    assert plan.cv.k == 10
    assert plan.model.image_size == 200
    assert plan.model.head_units == 2500
    assert plan.model.dropout == 0.5
    assert plan.model.augment.rotation_degrees == 10.0
    assert plan.model.augment.shift_pixels == 20


@pytest.mark.parametrize(
    ("mapping", "match"),
    [
        ({"trainin": {}}, "unknown setting"),
        ({"training": {"epoch": 3}}, r"training\.epoch"),
        ({"training": {"optimizer": "adagrad"}}, "not allowed"),
        ({"training": {"epochs": "many"}}, "whole number"),
        ({"training": {"epochs": 0}}, "at least 1"),
        ({"cv": {"k": 1}}, "at least 2"),
        ({"cv": {"grouping": "site"}}, "not allowed"),
        ({"strategies": ["scratch", "scratch"]}, "listed twice"),
        ({"strategies": ["vgg"]}, "unknown strategy"),
        ({"name": "a b"}, "names the run folder"),
        ({"model": {"image_size": 16}}, "at least 32"),
        ({"model": {"alpha": -1}}, r"model\.alpha=-1\.0: MobileNetV2's width multiplier"),
        ({"model": {"alpha": 0}}, r"model\.alpha=0\.0: .* must be positive"),
        ({"model": {"augment": {"rotation_degrees": -5}}}, r"rotation_degrees=-5\.0: use a value"),
        ({"model": {"augment": {"shift_pixels": -3}}}, r"shift_pixels=-3: must be >= 0"),
        ({"training": {"early_stopping": {"patience": -1}}}, r"patience=-1: must be >= 0"),
        (
            {"cv": {"validation_fraction": 0}, "training": {"early_stopping": {"enabled": True}}},
            r"monitors val_loss, but cv\.validation_fraction is 0, so there are no validation",
        ),
        ({"seed": -1}, r"seed=-1: a seed must be an integer from 0 to 2,147,483,647"),
        ({"seed": 2**32}, r"seed=4294967296: a seed must be an integer from 0"),
        ({"compare": {"n_permutations": -5}}, r"compare\.n_permutations=-5"),
        ({"compare": {"knn_k": 0}}, r"compare\.knn_k=0"),
        ({"compare": {"umap_neighbors": 1}}, "UMAP needs at least 2 neighbours"),
        ({"compare": {"rbf_sigma_fraction": 0}}, r"rbf_sigma_fraction=0\.0: must be positive"),
        ({"data": {"phantom": {"n_per_class": 0}}}, r"data\.phantom\.n_per_class=0"),
        ({"data": {"phantom": {"images_per_patient": 0}}}, r"images_per_patient=0"),
        ({"data": {"phantom": {"image_size": 8}}}, r"data\.phantom\.image_size=8: MobileNetV2"),
        ({"data": {"phantom": {"seed": -2}}}, r"data\.phantom\.seed=-2: a seed must be"),
        ({"data": {"phantom": {"seed": 2**31}}}, r"data\.phantom\.seed=2147483648: a seed must"),
        ({"dump": {"blocks": "yes"}}, "true or false"),
        ({"training": {"loader_workers": 0}}, r"training\.loader_workers=0"),
        ({"training": {"loader_queue_size": 0}}, r"training\.loader_queue_size=0"),
        ({"training": {"cache_in_memory": "yes"}}, "true or false"),
        ({"training": {"drop_remainder": 1}}, "true or false"),
        ({"training": {"xla_cache": " "}}, "'auto', 'none' or a folder"),
        ({"training": {"xla_cache": False}}, "must be text"),
        (
            {"training": {"early_stopping": {"monitor": "val_auc"}}},
            "monitor='val_auc' is not allowed",
        ),
        ({"positive_class": " "}, "positive_class=''"),
        ({"report": {"criteria": {"alpha": 1.5}}}, r"report\.criteria\.alpha=1\.5"),
        ({"report": {"criteria": {"min_stability": -0.1}}}, r"report\.criteria\.min_stability"),
        ({"report": {"chance_alpha": 0}}, r"report\.chance_alpha=0"),
        ({"report": {"min_overlap": 1.2}}, r"report\.min_overlap=1\.2"),
        ({"report": {"source_auc_weak": 0.8}}, "weak <= recoverable"),
        ({"report": {"top_k": 5}}, r"unknown setting\(s\) report\.top_k"),
        ({"radiomics": {"region": "lobes"}}, "not allowed"),
        (
            {"data": {"phantom": {"confounder_strength": 0.3}}},
            r"data\.phantom\.confounder_strength",
        ),
    ],
)
def test_invalid_plans_are_rejected(mapping: dict, match: str) -> None:
    with pytest.raises(ConfigError, match=match):
        plan_from_mapping(mapping)


def test_positive_class_and_report_defaults_are_the_former_constants() -> None:
    """The ``positive_class`` key and the ``report:`` section default to the values the code used
    before."""
    plan = Plan()
    assert plan.positive_class == DEFAULT_POSITIVE_CLASS == "COVID-19"
    report = plan.report
    assert (
        report.chance_alpha,
        report.source_auc_recoverable,
        report.source_auc_weak,
        report.cka_alpha,
        report.min_overlap,
    ) == (0.05, 0.7, 0.6, 0.05, 0.9)
    assert report.criteria == Criteria(
        alpha=0.05,
        min_stability=0.7,
        min_lung_fraction=0.5,
        max_blackout_survival=0.5,
        min_match_r=0.5,
        min_fold_effect=0.147,
    )
    changed = plan_from_mapping(
        {
            "positive_class": "Normal",
            "report": {"criteria": {"min_stability": 0.5}, "source_auc_recoverable": 0.8},
        }
    )
    assert changed.positive_class == "Normal"
    assert (
        changed.report.criteria.min_stability == 0.5
        and changed.report.source_auc_recoverable == 0.8
    )
    assert plan_from_mapping(plan_to_dict(changed)) == changed


def test_positive_class_must_be_a_class_of_the_dataset() -> None:
    check_positive_class(Plan(), ["COVID-19", "Normal"])
    with pytest.raises(
        DataError, match=r"positive_class='Edema' is not a class of data/x \(COVID-19, Normal\)"
    ):
        check_positive_class(Plan(positive_class="Edema"), ["COVID-19", "Normal"], where="data/x")


def test_input_pipeline_defaults() -> None:
    training = Plan().training
    assert training.cache_in_memory and training.drop_remainder
    assert (training.loader_workers, training.loader_queue_size, training.xla_cache) == (
        2,
        8,
        "auto",
    )
    assert not training.mixed_precision


def test_overrides_go_through_validation() -> None:
    plan = apply_overrides(Plan(), {"training.epochs": 2, "cv.k": 3, "data.dir": "x"})
    assert (plan.training.epochs, plan.cv.k, plan.data.dir) == (2, 3, "x")
    with pytest.raises(ConfigError, match="at least 2"):
        apply_overrides(Plan(), {"cv.k": 1})


def test_round_trip_and_hash_are_stable() -> None:
    plan = plan_from_mapping({"name": "r", "strategies": ["scratch", "finetune:3"]})
    again = plan_from_mapping(plan_to_dict(plan))
    assert again == plan
    assert plan_hash(again) == plan_hash(plan)
    assert plan_hash(apply_overrides(plan, {"seed": 1})) != plan_hash(plan)


def test_load_plan_names_the_file(tmp_path: Path) -> None:
    path = tmp_path / "bad.yaml"
    path.write_text("training:\n  epochs: -1\n")
    with pytest.raises(ConfigError, match="bad.yaml"):
        load_plan(path)
    path.write_text("training: [unclosed\n")
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_plan(path)
    with pytest.raises(ConfigError, match="file not found"):
        load_plan(tmp_path / "missing.yaml")
    with pytest.raises(ConfigError, match="a folder, not a file"):
        load_plan(tmp_path)
    path.write_bytes(b"seed: 1\n\xf0\x28\x8c\x28\n")  # a binary file given by mistake
    with pytest.raises(ConfigError, match=r"bad\.yaml: not a text file \(byte 8 is not UTF-8\)"):
        load_plan(path)


@pytest.mark.parametrize(
    "name", sorted(p.name for p in (REPO / "analyses").glob("*.yaml") if "radiomics" not in p.name)
)
def test_shipped_plans_load(name: str) -> None:
    plan = load_plan(REPO / "analyses" / name)
    assert plan.strategies


def test_a_seed_out_of_range_is_named_by_every_command_before_any_work(tmp_path: Path) -> None:
    """A negative seed, or one of 2**32 or more, ended in numpy's raw ``ValueError`` deep in
    ``biomark report`` and ``radiomics`` (``expected non-negative integer``, ``Seed must be
    between 0 and 2**32 - 1``); each entry point now names the setting and its range first."""
    from biomark.data.build import build_dataset
    from biomark.pipelines.lung_model import train_lung_model
    from biomark.pipelines.radiomics import run_radiomics_command

    message = r"--seed=-1: a seed must be an integer from 0 to 2,147,483,647"
    with pytest.raises(ConfigError, match=message):
        run_radiomics_command(str(tmp_path), tmp_path / "params.yaml", seed=-1)
    with pytest.raises(ConfigError, match=message):
        train_lung_model([tmp_path], tmp_path / "lungs.keras", seed=-1)
    with pytest.raises(ConfigError, match=message):
        build_dataset(tmp_path / "out", sources={}, seed=-1)
    assert not (tmp_path / "out").exists()
