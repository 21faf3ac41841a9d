"""The run's lung-fraction null: random-weight copies of its network on its films.

:func:`run_lung_null` measures, once per run, the lung fraction of every unit
of :data:`N_NETWORKS` seeded random MobileNetV2s (every block active, as in the
run's random-features controls' backbone,
:func:`biomark.features.report_inputs.open_random_models`), each on its own
share of a class-stratified subset of the run's out-of-fold films, by the method the
strategies use at the run's image size (occlusion when the ``out_relu`` maps
are too coarse, else the maps; the rule of
:func:`biomark.report.report_models.model_evidence`). Every strategy's
features are then read against it (:class:`biomark.analysis.lung_null.LungNull`).

It does not depend on the strategy, so :mod:`biomark.pipelines.report_workers`
computes it once, in a worker of its own beside the strategies', and hands it
over through a file (:class:`PendingNull`): the strategies need it only after
their own model passes, by when it is ready.
"""

from __future__ import annotations

import logging
import pickle
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from biomark.analysis.attribution import stratified_subset
from biomark.analysis.localisation import cell_fractions, lung_mass, occlusion_effects
from biomark.analysis.lung_null import LungNull, unit_lung_fractions
from biomark.data.dataset import Dataset
from biomark.exceptions import BiomarkError, ConfigError
from biomark.features.report_inputs import lung_masks, open_random_models, run_fold_model
from biomark.features.run_folder import RunFolder
from biomark.features.run_info import RunInfo
from biomark.io.atomic import atomic_path
from biomark.report.report_models import by_occlusion, maps_attainable, read_rows
from biomark.report.strategy_report import ReportSettings

__all__ = ["N_NETWORKS", "NULL_SEED_OFFSET", "PendingNull", "compute_and_store", "run_lung_null"]

logger = logging.getLogger(__name__)

#: Offset of the random network's seed from the report's (controls +2000, lung swap +3000).
NULL_SEED_OFFSET = 4000
#: Random networks pooled in the null: networks differ (on the demo phantom, per network on 256
#: films, median 0.484-0.495 and 5th percentile 0.456-0.469 over 6 seeds), and one network
#: alone on every film gave a band too narrow for another's units (40 of a random control's
#: 140 shortlisted units below its 5th percentile).
N_NETWORKS = 3
#: How long a strategy waits for the null computed beside it before going on without it.
WAIT_SECONDS = 1800.0


def run_lung_null(
    run: RunFolder, info: RunInfo, dataset: Dataset, settings: ReportSettings
) -> LungNull:
    """The lung fractions of random-weight copies of the run's network on the run's films.

    Parameters
    ----------
    run : RunFolder
        Its ``folds.csv`` names the out-of-fold films.
    info : RunInfo
        The plan's model settings and classes.
    dataset : Dataset
    settings : ReportSettings
        ``n_controls`` films per fold (class-stratified; None: all),
        ``min_map_attainable`` (occlusion or maps), ``seed``.

    Returns
    -------
    LungNull

    Raises
    ------
    BiomarkError
        If the plan, the folds, the masks or the network cannot be read or built.
    """
    t0 = time.perf_counter()
    model_settings = info.plan_settings().model
    folds = run.read_folds()
    ids = dataset.manifest["image_id"].astype(str).to_numpy()
    rows = np.flatnonzero(np.isin(ids, folds["image_id"].astype(str).to_numpy()))
    if rows.size == 0:
        raise ConfigError(f"{run.folds_csv}: no image of the fold table is in the dataset")
    labels = dataset.manifest["label"].astype(str).to_numpy()[rows]
    n_films = (
        rows.size if settings.n_controls is None else settings.n_controls * max(1, info.k or 1)
    )
    pick = np.sort(stratified_subset(labels, n_films, seed=settings.seed + NULL_SEED_OFFSET))
    masks = lung_masks(dataset, rows[pick])
    usable = masks.usable
    if not usable.any():
        raise ConfigError("no usable lung mask among the films")
    films = read_rows(dataset, rows[pick][usable])
    fmasks = masks.masks[usable]
    occlusion = by_occlusion(
        maps_attainable(fmasks, int(info.image_size or dataset.size)), settings
    )
    seeds = [settings.seed + NULL_SEED_OFFSET + i for i in range(N_NETWORKS)]
    # each network reads its own random third of the films: the band then holds both
    # how random networks differ and how the films sampled differ
    shares = [
        np.sort(s)
        for s in np.array_split(np.random.default_rng(seeds[0]).permutation(len(films)), N_NETWORKS)
    ]
    models = open_random_models(
        model_settings, len(info.classes), [films[s] for s in shares], seeds=seeds
    )
    fill = read_rows(dataset, rows).mean(axis=0) if occlusion else None
    try:
        fractions = np.concatenate(
            [
                _unit_fractions(fm, films[s], fmasks[s], fill)
                for fm, s in zip(models, shares, strict=True)
            ]
        )
    finally:
        models[0].close()  # one holder for all
    null = LungNull(
        fractions,
        n_images=len(films),
        source=(
            f"{int(np.isfinite(fractions).sum()):,} units of {N_NETWORKS} random backbones (seeds "
            f"{seeds[0]}-{seeds[-1]}, each on its own share of the films)"
        ),
        method="occlusion" if occlusion else "out_relu",
    )
    logger.info(
        "lung fractions of %s on %d films (%s, %.0f s): %s",
        null.source,
        null.n_images,
        null.method,
        time.perf_counter() - t0,
        null.band(),
    )
    return null


def _unit_fractions(
    fm: Any, films: np.ndarray, masks: np.ndarray, fill: np.ndarray | None
) -> np.ndarray:
    """Every unit's lung fraction of one network on some films: by occlusion with ``fill``, else
    by its ``out_relu`` maps."""
    if fill is not None:
        out = run_fold_model(fm, films, strategy="random backbone", occlusion=(masks, fill))
        assert out.gap_lungs_filled is not None and out.gap_outside_filled is not None
        inside, total = occlusion_effects(out.gap, out.gap_lungs_filled, out.gap_outside_filled)
    else:

        def reduce(maps: np.ndarray, p: np.ndarray) -> tuple:
            return lung_mass(maps, cell_fractions(masks[p], maps.shape[2:]))

        out = run_fold_model(fm, films, strategy="random backbone", reduce=reduce)
        inside = np.concatenate([r[0] for r in out.reduced])
        total = np.concatenate([r[1] for r in out.reduced])
    return unit_lung_fractions(inside, total)


@dataclass(frozen=True)
class PendingNull:
    """The run's lung null, written to ``path`` by whoever computes it and read by every strategy.

    The file holds a pickled :class:`LungNull`, or the text of why there is none.
    """

    path: str

    def write(self, null: LungNull | str) -> None:
        """Store the null (or why there is none), atomically."""
        with atomic_path(self.path) as tmp:
            Path(tmp).write_bytes(pickle.dumps(null))

    def read(self, timeout: float = WAIT_SECONDS) -> LungNull | str:
        """The null, or why there is none; waits until it is written (at most ``timeout`` s)."""
        deadline = time.monotonic() + timeout
        path = Path(self.path)
        while not path.is_file():
            if time.monotonic() > deadline:
                return f"the random network's lung fractions were not ready after {timeout:.0f} s"
            time.sleep(0.2)
        result = pickle.loads(path.read_bytes())  # written by this report run, not user input
        return result if isinstance(result, LungNull) else str(result)


def compute_and_store(
    run: RunFolder,
    info: RunInfo,
    dataset: Dataset | None,
    settings: ReportSettings,
    pending: PendingNull,
) -> None:
    """:func:`run_lung_null` into ``pending`` (why not, as text, when it fails)."""
    if dataset is None:
        pending.write("the run's dataset is not readable here")
        return
    try:
        null = run_lung_null(run, info, dataset, settings)
    except (BiomarkError, ValueError, MemoryError) as err:
        logger.warning("no random network to read lung fractions against: %s", err)
        pending.write(f"no random network to read lung fractions against ({err})")
        return
    except BaseException as err:  # the strategies wait for the file: never leave them waiting
        pending.write(f"the random network failed ({type(err).__name__}: {err})")
        raise
    pending.write(null)
