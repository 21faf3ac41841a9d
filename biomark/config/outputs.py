"""The ``dump:``, ``compare:`` and ``radiomics:`` sections of a plan: what ``extract`` writes beside
the models, and how ``compare`` and ``radiomics`` run."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

#: Where radiomics are measured (``radiomics.region``, ``biomark radiomics --region``).
Region = Literal["lung", "image", "zones"]


@dataclass(frozen=True)
class DumpSettings:
    """What ``extract`` writes beside the models.

    ``features: oof`` dumps the GAP vector of each test-fold image;
    ``all`` dumps every image through every fold's model. ``blocks`` also
    dumps the global-average-pooled output of every MobileNetV2 block.
    """

    features: Literal["oof", "all"] = "oof"
    blocks: bool = False


@dataclass(frozen=True)
class CompareSettings:
    """Representation comparison (``biomark compare``)."""

    n_permutations: int = 1000
    n_bootstrap: int = 1000
    rbf_sigma_fraction: float = 0.8
    per_class: bool = True
    umap_neighbors: int = 15
    umap_min_dist: float = 0.1
    knn_k: int = 10


@dataclass(frozen=True)
class RadiomicsSettings:
    """Radiomics extraction (``biomark radiomics``)."""

    params: str = "analyses/radiomics_cxr2d.yaml"
    region: Region = "lung"
    jobs: int = -1
