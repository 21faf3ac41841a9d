"""Random-weight copies of the run's network: seeded, alive after BatchNorm statistics from films,
one compiled pass for all of them."""

from __future__ import annotations

import numpy as np

from biomark.config import ModelSettings
from biomark.train.random_units import random_unit_models


def test_random_networks_are_seeded_distinct_and_not_silent() -> None:
    settings = ModelSettings(image_size=64, weights="imagenet", alpha=0.35, head_units=8)
    films = np.random.default_rng(0).integers(0, 256, size=(3, 12, 64, 64)).astype(np.uint8)
    models = random_unit_models(
        settings, 3, list(films[:2]), seeds=[5, 6]
    )  # weights ignored: random
    try:
        assert [m.fold for m in models] == [0, 1]
        assert str(models[1].path) == "random backbone (seed 6)"
        gaps = [m.forward(films[0])["gap"] for m in models]
        again = models[0].forward(films[0])["gap"]  # switching back restores the first network
    finally:
        models[0].close()
    np.testing.assert_allclose(again, gaps[0], rtol=1e-5, atol=1e-7)
    assert not np.allclose(gaps[0], gaps[1])
    # with the statistics of films, the units vary from film to film (not ~1e-12 everywhere)
    assert (gaps[0].std(axis=0) > 1e-3 * np.abs(gaps[0]).mean()).mean() > 0.5
    assert np.abs(gaps[0]).max() > 1e-3
    for seed, calibration, expected in ((5, films[0], gaps[0]), (6, films[1], gaps[1])):
        # a network built alone is the one built beside others (the second is calibrated through
        # the first network's pass, with its own weights and random-generator states)
        alone = random_unit_models(settings, 3, [calibration], seeds=[seed])
        try:
            np.testing.assert_allclose(
                alone[0].forward(films[0])["gap"], expected, rtol=1e-4, atol=1e-6
            )
        finally:
            alone[0].close()
