"""The whole analysis plan (:class:`Plan`), the checks that span its sections, and the check of
its positive class against a dataset."""

from __future__ import annotations

import re
import typing
from dataclasses import dataclass, field

from biomark.config.dataset import CVSettings, DataSettings
from biomark.config.outputs import CompareSettings, DumpSettings, RadiomicsSettings
from biomark.config.report import DEFAULT_POSITIVE_CLASS, ReportPlanSettings
from biomark.config.seeds import is_valid_seed, seed_message
from biomark.config.strategy import StrategySpec
from biomark.config.training import ModelSettings, TrainingSettings, parse_class_weight
from biomark.exceptions import ConfigError, DataError


def check_positive_class(
    plan: Plan, classes: typing.Collection[str], where: str = "the dataset"
) -> None:
    """Check that the plan's ``positive_class`` is one of the dataset's classes.

    Parameters
    ----------
    plan : Plan
    classes : collection of str
        The dataset's classes (its manifest's labels).
    where : str, default "the dataset"
        Names the dataset in the message (its folder).

    Raises
    ------
    DataError
        The positive class is not among ``classes`` (the dataset does not fit the plan).

    Examples
    --------
    >>> check_positive_class(Plan(positive_class="Normal"), ["COVID-19", "Normal"])
    """
    if plan.positive_class not in classes:
        raise DataError(
            f"positive_class={plan.positive_class!r} is not a class of {where} "
            f"({', '.join(map(str, classes))}); the 2-class metrics need it: set positive_class in "
            "the plan to one of these classes, or rebuild the dataset with that class (the "
            "recipe's finding_map)"
        )


@dataclass(frozen=True)
class Plan:
    """A whole analysis plan: the run's every decision, with defaults.

    ``positive_class`` (default ``"COVID-19"``, :data:`DEFAULT_POSITIVE_CLASS`) is the class of
    the 2-class task (it against the rest); it must be one of the dataset's classes
    (:func:`check_positive_class`). ``report`` holds the thresholds of the pages
    (:class:`ReportPlanSettings`).
    """

    name: str = "run"
    seed: int = 0
    output_dir: str = "runs"
    data: DataSettings = field(default_factory=DataSettings)
    cv: CVSettings = field(default_factory=CVSettings)
    strategies: tuple[StrategySpec, ...] = (
        StrategySpec("scratch"),
        StrategySpec("frozen"),
        StrategySpec("finetune", 11),
    )
    model: ModelSettings = field(default_factory=ModelSettings)
    training: TrainingSettings = field(default_factory=TrainingSettings)
    dump: DumpSettings = field(default_factory=DumpSettings)
    compare: CompareSettings = field(default_factory=CompareSettings)
    radiomics: RadiomicsSettings = field(default_factory=RadiomicsSettings)
    positive_class: str = DEFAULT_POSITIVE_CLASS
    report: ReportPlanSettings = field(default_factory=ReportPlanSettings)

    def __post_init__(self) -> None:
        _check_plan(self)


def _model_checks(plan: Plan) -> list[tuple[bool, str]]:
    """The ``cv`` and ``model`` sections: (holds, message if not)."""
    return [
        (plan.cv.k >= 2, f"cv.k={plan.cv.k}: need at least 2 folds"),
        (
            0.0 <= plan.cv.validation_fraction < 0.5,
            f"cv.validation_fraction={plan.cv.validation_fraction}: use a value in [0, 0.5)",
        ),
        (
            plan.model.image_size >= 32,
            f"model.image_size={plan.model.image_size}: MobileNetV2 needs at least 32",
        ),
        (
            0.0 <= plan.model.dropout < 1.0,
            f"model.dropout={plan.model.dropout}: use a value in [0, 1)",
        ),
        (
            plan.model.alpha > 0,
            f"model.alpha={plan.model.alpha}: MobileNetV2's width multiplier must be positive "
            "(0.35, 0.5, 0.75, 1.0, 1.3 or 1.4 have ImageNet weights)",
        ),
        (plan.model.head_units >= 1, f"model.head_units={plan.model.head_units}: must be positive"),
        (
            0.0 <= plan.model.augment.rotation_degrees <= 180.0,
            f"model.augment.rotation_degrees={plan.model.augment.rotation_degrees}: use a value in "
            "[0, 180] (the paper: 10)",
        ),
        (
            plan.model.augment.shift_pixels >= 0,
            f"model.augment.shift_pixels={plan.model.augment.shift_pixels}: must be >= 0 (the "
            "paper: 20)",
        ),
        (
            0.0 < plan.model.batchnorm_momentum < 1.0,
            f"model.batchnorm_momentum={plan.model.batchnorm_momentum}: use a value in (0, 1), "
            "e.g. 0.9",
        ),
    ]


def _training_checks(plan: Plan) -> list[tuple[bool, str]]:
    """The ``training`` section: (holds, message if not)."""
    return [
        (plan.training.epochs >= 1, f"training.epochs={plan.training.epochs}: must be at least 1"),
        (
            plan.training.batch_size >= 1,
            f"training.batch_size={plan.training.batch_size}: must be at least 1",
        ),
        (
            plan.training.learning_rate > 0,
            f"training.learning_rate={plan.training.learning_rate}: must be positive",
        ),
        (
            plan.training.finetune_learning_rate > 0,
            f"training.finetune_learning_rate={plan.training.finetune_learning_rate}: must be "
            "positive",
        ),
        (
            plan.training.weight_decay >= 0,
            f"training.weight_decay={plan.training.weight_decay}: must be >= 0",
        ),
        (
            plan.training.warmup_epochs >= 0,
            f"training.warmup_epochs={plan.training.warmup_epochs}: must be >= 0",
        ),
        (
            0.0 <= plan.training.label_smoothing < 1.0,
            f"training.label_smoothing={plan.training.label_smoothing}: use a value in [0, 1)",
        ),
        (
            plan.training.fit_check_epoch >= 0,
            f"training.fit_check_epoch={plan.training.fit_check_epoch}: use 0 (off) or an epoch",
        ),
        (
            plan.training.control_epochs >= 0,
            f"training.control_epochs={plan.training.control_epochs}: use 0 (same as "
            "training.epochs) or an epoch count",
        ),
        (
            plan.training.early_stopping.patience >= 0,
            f"training.early_stopping.patience={plan.training.early_stopping.patience}: must be "
            ">= 0",
        ),
        (
            not (
                plan.training.early_stopping.enabled
                and plan.training.early_stopping.monitor.startswith("val_")
                and plan.cv.validation_fraction == 0
            ),
            f"training.early_stopping monitors {plan.training.early_stopping.monitor}, but "
            "cv.validation_fraction is 0, so there are no validation images: hold some out "
            "(cv.validation_fraction: 0.1) or set training.early_stopping.enabled: false",
        ),
        (
            plan.training.threads >= 0,
            f"training.threads={plan.training.threads}: use 0 (every core) or a count",
        ),
        (
            plan.training.loader_workers >= 1,
            f"training.loader_workers={plan.training.loader_workers}: use 1 (no extra thread) or "
            "more",
        ),
        (
            plan.training.loader_queue_size >= 1,
            f"training.loader_queue_size={plan.training.loader_queue_size}: must be at least 1",
        ),
        (
            plan.training.xla_cache.strip() != "",
            "training.xla_cache='': use 'auto', 'none' or a folder path",
        ),
    ]


def _data_checks(plan: Plan) -> list[tuple[bool, str]]:
    """The ``data.phantom`` section: (holds, message if not); nothing to check without one."""
    phantom = plan.data.phantom
    if phantom is None:
        return []
    return [
        (
            phantom.n_per_class >= 1,
            f"data.phantom.n_per_class={phantom.n_per_class}: must be at least 1",
        ),
        (
            phantom.images_per_patient >= 1,
            f"data.phantom.images_per_patient={phantom.images_per_patient}: must be at least 1",
        ),
        (
            phantom.image_size >= 32,
            f"data.phantom.image_size={phantom.image_size}: MobileNetV2 needs at least 32",
        ),
        (is_valid_seed(phantom.seed), seed_message("data.phantom.seed", phantom.seed)),
        (
            phantom.raw_size is None or phantom.raw_size >= 64,
            "data.phantom.raw_size: the phantom is drawn at 64 px or more",
        ),
        (
            0.0 < phantom.signature_strength <= 4.0,
            "data.phantom.signature_strength: use a number in (0, 4] (1 = the default phantom)",
        ),
        (
            0.5 <= phantom.confounder_strength <= 1.0,
            "data.phantom.confounder_strength: use a number in [0.5, 1] (the share of COVID-19 "
            "patients from the tagged site; 0.8 = the default)",
        ),
    ]


def _run_checks(plan: Plan) -> list[tuple[bool, str]]:
    """Strategies, positive class, the run name, its seed and the comparison's settings: (holds,
    message if not)."""
    compare = plan.compare
    return [
        (len(plan.strategies) >= 1, "strategies: list at least one strategy"),
        (is_valid_seed(plan.seed), seed_message("seed", plan.seed)),
        (
            compare.n_permutations >= 0 and compare.n_bootstrap >= 0,
            f"compare.n_permutations={compare.n_permutations}, compare.n_bootstrap="
            f"{compare.n_bootstrap}: must be >= 0 (0: no permutation p or no bootstrap interval)",
        ),
        (compare.knn_k >= 1, f"compare.knn_k={compare.knn_k}: must be at least 1"),
        (
            compare.umap_neighbors >= 2 and compare.umap_min_dist >= 0,
            f"compare.umap_neighbors={compare.umap_neighbors}, compare.umap_min_dist="
            f"{compare.umap_min_dist}: UMAP needs at least 2 neighbours and a distance >= 0",
        ),
        (
            compare.rbf_sigma_fraction > 0,
            f"compare.rbf_sigma_fraction={compare.rbf_sigma_fraction}: must be positive",
        ),
        (
            plan.positive_class.strip() != "",
            "positive_class='': name the class of the 2-class task, e.g. COVID-19",
        ),
        (
            len({s.label for s in plan.strategies}) == len(plan.strategies),
            "strategies: a strategy is listed twice",
        ),
        (
            re.fullmatch(r"[A-Za-z0-9_.-]+", plan.name) is not None,
            f"name={plan.name!r}: use letters, digits, '_', '-' or '.' (it names the run folder)",
        ),
    ]


def _check_plan(plan: Plan) -> None:
    checks = [
        *_model_checks(plan),
        *_training_checks(plan),
        *_data_checks(plan),
        *_run_checks(plan),
    ]
    for ok, message in checks:
        if not ok:
            raise ConfigError(message)
    parse_class_weight(
        plan.training.class_weight
    )  # raises ConfigError naming training.class_weight
