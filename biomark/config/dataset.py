"""The ``data:`` and ``cv:`` sections of a plan: where the dataset lives, how to generate the
phantom there, and how the images are split into folds."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from biomark.exceptions import ConfigError


@dataclass(frozen=True)
class PhantomSettings:
    """How to generate the phantom dataset when the plan's data folder is empty.

    ``image_size`` is the side of the letterboxed image cache (what the model
    reads); ``raw_size`` the side the radiographs are drawn at before
    letterboxing (default: ``image_size``). Drawing larger and averaging down
    keeps fine signatures (fibrosis's reticular net) that a small drawing
    would alias away. ``signature_strength`` multiplies every planted
    signature (1: the default, deliberately hard phantom; see
    ``data/PHANTOM.md``). With ``confounder`` true, a COVID-19 patient is
    from the tagged ``site_B`` with probability ``confounder_strength`` and
    any other patient with ``1 - confounder_strength`` (0.5: the tag carries
    no class information; 1: it separates COVID-19 perfectly).
    """

    n_per_class: int = 40
    seed: int = 0
    image_size: int = 200
    raw_size: int | None = None
    images_per_patient: int = 2
    confounder: bool = False
    confounder_strength: float = 0.8
    signature_strength: float = 1.0


@dataclass(frozen=True)
class DataSettings:
    """Where the dataset (manifest + image cache) lives.

    ``dir`` is a folder written by ``biomark data build`` or ``biomark data
    phantom``. When it holds no manifest and ``phantom`` is given, the phantom
    is generated there first.
    """

    dir: str = "data/phantom"
    phantom: PhantomSettings | None = None


@dataclass(frozen=True)
class CVSettings:
    """Cross-validation shared by every strategy of a run.

    k : int, default 10
        Number of test folds. With ``grouping: source`` it must equal the
        number of sources in the dataset (one test fold per source); the
        error names the value to set.
    grouping : {"patient", "source", "none"}, default "patient"
        ``patient`` keeps all images of a patient, and every exact copy of
        them (same file SHA-256, as in ``duplicates.csv``, even under another
        patient id), in one fold (scikit-learn's ``StratifiedGroupKFold``).
        ``source`` is leave-one-source-out (DeGrave et al. 2021): fold ``i``
        tests on the ``i``-th source in name order, so every test is on a
        hospital or collection the model never saw; every class must come
        from at least two sources, otherwise the run stops before training
        naming each single-source class (such a class would be absent from
        training when its source is tested, and its features cannot be told
        from its source's). ``none`` reproduces the paper's plain stratified
        split over images.
    validation_fraction : float, default 0.1
        Share of each training fold held out (by patient group under
        ``patient`` and ``source``) for early stopping.
    near_duplicate_distance : int, default -1
        Also keep *near* duplicates in one fold: images whose perceptual
        hashes differ by at most this many of 256 bits (14 matches what
        ``data build`` lists in ``duplicates.csv``; scaled for the 64-bit
        hashes of older manifests). -1: exact copies only.
        Used by ``patient`` folds and by the validation split under
        ``patient`` and ``source`` (``none`` groups nothing).
    """

    k: int = 10
    grouping: Literal["patient", "source", "none"] = "patient"
    validation_fraction: float = 0.1
    near_duplicate_distance: int = -1

    def __post_init__(self) -> None:
        if not -1 <= self.near_duplicate_distance <= 256:
            raise ConfigError(
                f"cv.near_duplicate_distance={self.near_duplicate_distance}: use -1 (exact copies "
                "only) or a number of differing phash bits in 0-256 (14 matches duplicates.csv)"
            )
