"""A random-weight copy of a run's network: units with no learned preference for any region.

The biomarker report reads each feature's lung fraction against what a unit
that has learned nothing reads on the same films by the same method
(:class:`biomark.analysis.lung_null.LungNull`). :func:`random_unit_models`
builds such networks as a random-features control's backbone is built
(:func:`biomark.models.mobilenet.build_model` with random weights,
then its BatchNormalization statistics taken from films,
:func:`biomark.train.batchnorm.recalibrate_batchnorm`, as
:mod:`biomark.train.loop` does before training a control; with its initial
statistics a random MobileNetV2 shrinks its activations to nothing) and
opens it as a fold model (:class:`biomark.train.unit_maps.FoldModel`), so the
report's passes run over it unchanged.
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Sequence

import numpy as np

from biomark.config import ModelSettings
from biomark.config.strategy import StrategySpec
from biomark.models.mobilenet import build_model
from biomark.train.batchnorm import recalibrate_batchnorm
from biomark.train.loader import ImageBatches
from biomark.train.unit_maps import FoldModel, StrategyModels, batch_size_for

__all__ = ["random_unit_models"]

logger = logging.getLogger(__name__)

#: Batches of films the BatchNormalization statistics are averaged over.
_CALIBRATION_BATCHES = 1


def random_unit_models(
    settings: ModelSettings, n_classes: int, films: Sequence[np.ndarray], *, seeds: Sequence[int]
) -> list[FoldModel]:
    """The run's architecture with seeded random backbones, ready for the report's passes.

    Parameters
    ----------
    settings : ModelSettings
        The run's model settings (input size, width, intensity scaling);
        ``weights`` is ignored: the backbones are random.
    n_classes : int
        Size of the (unused) head, as in the run's models.
    films : sequence of ndarray of shape (n, side, side), uint8
        Per seed, the films its BatchNormalization statistics come from (up
        to ``_CALIBRATION_BATCHES`` batches of them).
    seeds : sequence of int
        One network per seed.

    Returns
    -------
    list of FoldModel
        One per seed (folds 0, 1, ... of one :class:`StrategyModels`: the
        networks share a compiled pass); closing one closes them all.
    """
    holder = StrategyModels()
    out = []
    # Every block active, as in a random-features control's frozen backbone: zero-gamma residual
    # blocks (model.zero_init_residual, for training from scratch) would pass their input through,
    # and such a network's units read lung fractions about 0.02 lower on the demo phantom (median
    # 0.468 vs 0.490 over 6 seeds each), a null of a shallower network than any the run trains.
    random = dataclasses.replace(settings, weights="none", zero_init_residual=False)
    first = None
    for i, (seed, calibration) in enumerate(zip(seeds, films, strict=True)):
        # "scratch" builds the same random backbone as a control's (the same weights for the same
        # seed, measured), without the control's warning
        model = build_model(StrategySpec("scratch"), n_classes, random, seed=seed)
        if first is None:
            first = model
        else:
            # Every network is calibrated through the first one, which takes all its variables
            # (weights and random-generator states, so each gets the statistics it would get on its
            # own, tested): the calibration pass is traced once, not once per network (1.3-1.4 s
            # saved per network after the first, measured on the 2-core EPYC).
            for mine, theirs in zip(first.variables, model.variables, strict=True):
                mine.assign(theirs.value)
            model = first
        batches = ImageBatches(
            np.asarray(calibration),
            np.zeros(len(calibration), dtype=np.int64),
            batch_size=batch_size_for(int(settings.image_size)),
            image_size=int(settings.image_size),
        )
        n_layers = recalibrate_batchnorm(
            model, batches, max_batches=_CALIBRATION_BATCHES, include_frozen=True
        )
        logger.debug(
            "random backbone (seed %d): %d BatchNormalization layers from %d films",
            seed,
            n_layers,
            min(len(calibration), _CALIBRATION_BATCHES * batches.batch_size),
        )
        out.append(holder.adopt(i, model, f"random backbone (seed {seed})"))
    return out
