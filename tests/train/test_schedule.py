"""The per-strategy training settings and the schedule's lengths (biomark.train.schedule)."""

from __future__ import annotations

import pytest

from biomark.config import Plan, StrategySpec, TrainingSettings, apply_overrides
from biomark.exceptions import ConfigError
from biomark.train.schedule import schedule_lengths, training_for


@pytest.mark.parametrize(
    ("strategy", "weights", "expected"),
    [
        (StrategySpec("frozen"), "none", 4),  # random-features control
        (StrategySpec("finetune", 3), "none", 4),  # random-features control
        (StrategySpec("finetune", 3), "/models/mobilenet.h5", 12),  # pretrained: the full budget
        (StrategySpec("frozen"), "imagenet", 12),
        (StrategySpec("scratch"), "none", 12),  # scratch is never a control
    ],
)
def test_only_random_feature_controls_train_for_control_epochs(strategy, weights, expected):
    training = TrainingSettings(epochs=12, control_epochs=4)
    assert training_for(strategy, training, weights).epochs == expected


def test_control_epochs_zero_keeps_the_plan_epochs_and_the_schedule_follows():
    training = TrainingSettings(epochs=12, control_epochs=0, warmup_epochs=2)
    same = training_for(StrategySpec("frozen"), training, "none")
    assert same is training
    short = training_for(
        StrategySpec("frozen"), TrainingSettings(epochs=12, control_epochs=4), "none"
    )
    assert schedule_lengths(short, 10) == (20, 40)  # warm-up, then decay to 0 within the 4 epochs


def test_a_negative_control_epochs_is_refused_by_name():
    with pytest.raises(ConfigError, match="training.control_epochs=-1"):
        apply_overrides(Plan(), {"training.control_epochs": -1})
