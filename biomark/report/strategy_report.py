"""What the biomarker report holds for one strategy, and the report's settings.

:class:`ReportSettings` are the settings of ``biomark report``;
:class:`RadiomicsInput` the radiomics it can read; :class:`StrategyReport`
everything it shows about one strategy, filled by
:func:`biomark.report.report_strategy.analyse_strategy` and rendered by the
page modules. Plain data, so that the analysis, the model evidence and the
pages can share it without importing one another.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd

from biomark.analysis.alignment import FoldAlignment
from biomark.analysis.attribution import Method
from biomark.analysis.biomarkers import Criteria, StrategyEvidence
from biomark.analysis.blackout import BlackoutReading
from biomark.analysis.chance import ChanceGuard
from biomark.analysis.cka import Precision
from biomark.analysis.class_variation import ClassDominance
from biomark.analysis.lung_null import LungNull
from biomark.analysis.lung_swap import LungSwapReading
from biomark.analysis.picks import ClassPicks, class_picks
from biomark.analysis.redundancy import UnitRedundancy

__all__ = ["RadiomicsInput", "ReportSettings", "StrategyReport"]


@dataclass(frozen=True)
class ReportSettings:
    """Settings of ``biomark report`` (CLI flags in brackets).

    Attributes
    ----------
    strategies : tuple of str, optional
        Strategies to report (``--strategies``); default all of the run's.
    top_k : int, default 20
        Features shortlisted per class, and the k of the top-k stability (``--top-k``).
    shap_samples : int or None, default 64
        Test images explained per fold (``--shap-samples``): a seeded,
        class-stratified subset when the fold has more; None explains every
        test image. The exact method costs ~13 ms per image on the paper's
        head (2 cores), so 64 bound it to ~1 s per fold at any run size.
    shap_method : {"auto", "expected-gradients", "permutation", "exact", "shap-permutation"},
    default "expected-gradients"
        :func:`biomark.analysis.attribution.explain_head` method: exact Expected
        Gradients of the logits (Aumann--Shapley values; closed form for this
        head), or ``permutation`` for sampled discrete Shapley values (the
        report's method before; ~100x slower on the paper's head).
    n_background : int, default 16
        Background rows of the attributions per fold.
    n_permutations : int, default 2
        Antithetic permutation pairs per explained image (``permutation`` only).
    shap_precision : {"float32", "float64"}, default "float32"
        Arithmetic of the attributions; float32 values differ from float64's
        by ~1e-6 of their scale and additivity holds to ~1e-6.
    blackout : bool, default True
        Run the image-level controls of where the model looks: the lung
        blackout and the lung swap (``--no-blackout`` turns both off).
    n_bootstrap : int, default 1000
        Bootstrap draws of the AUC intervals.
    n_mixed : int, default 20
        Top shortlisted features per class fitted with the mixed model when significant at the image
        level (a confirmation, not a criterion): the whole default shortlist. Each fit takes 1-2 ms
        (:mod:`biomark.analysis.random_intercept`; statsmodels MixedLM took ~1 s per fit with ~1,000
        patients, which had kept this at 1).
    n_gallery : int, default 4
        Features per strategy shown with map thumbnails.
    n_thumbnails : int, default 3
        Highest and lowest images shown per feature.
    n_gradcam : int, default 4
        Grad-CAM sample images per strategy.
    n_reference : int, default 256
        Reference images (class-stratified) every fold's model embeds to match
        units across folds, when the run did not dump ``features_all``.
    min_map_attainable : float, default 0.8
        Localise with the ``out_relu`` maps when they can show a lung fraction
        of at least this (:func:`biomark.analysis.localisation.attainable_lung_fraction`,
        mean over images; on the phantom 0.30 at 64 px, 0.49 at 96, 0.70 at 128, 0.99 at
        200); otherwise by occlusion
        (:func:`biomark.analysis.localisation.occlusion_effects`).
    n_controls : int or None, default 256
        Test images per fold that get the image-level controls (a seeded,
        class-stratified subset; None: all): the lung blackout (one more
        forward pass each), the lung swap (one more) and, when the maps are
        too coarse to localise, occlusion (two more: lungs filled, outside filled). The blackout
        verdict and a feature's occlusion lung fraction are pooled over these
        images (768 on the demo's 3 folds).
    swap_margin : float, default 0.02
        The lung swap pastes the union of both lung masks grown by this share
        of the image side (2 px at 96 px, 4 at 200): a finding's rim just
        outside its mask goes with its lungs. On the demo's clean phantom
        (seed 0) without it the dense bases of Effusion spilled into that
        rim and its answers read as swayed by the surroundings (9.0 % vs
        3.8 %, Holm p 0.03); with it 5.4 % vs 5.3 %, and the tag of the
        confounded phantom is still found (COVID-19 31.5 % vs 6.8 %).
    min_group_size : int, default 3
        Classes with fewer images are not tested.
    seed : int, default 0
    criteria : Criteria
    workers : int or None, default None
        Worker processes that analyse the strategies side by side (``--workers``;
        :mod:`biomark.pipelines.report_workers`): None is one per strategy
        on a machine with at least 2 cores, 1 analyses them one after another
        in this process. The same candidates, flags and verdicts either way; a
        few numbers may differ in their last digits (libraries run with fewer
        threads in a worker and sum in another order).
    """

    strategies: tuple[str, ...] | None = None
    top_k: int = 20
    shap_samples: int | None = 64
    shap_method: Method = "expected-gradients"
    n_background: int = 16
    n_permutations: int = 2
    shap_precision: Precision = "float32"
    blackout: bool = True
    n_bootstrap: int = 1000
    n_mixed: int = 20
    n_gallery: int = 4
    n_thumbnails: int = 3
    n_gradcam: int = 4
    n_reference: int = 256
    min_map_attainable: float = 0.8
    n_controls: int | None = 256
    swap_margin: float = 0.02
    min_group_size: int = 3
    seed: int = 0
    criteria: Criteria = field(default_factory=Criteria)
    workers: int | None = None


@dataclass(frozen=True)
class RadiomicsInput:
    """Radiomics available to the report.

    Attributes
    ----------
    pairs : DataFrame, optional
        ``radiomics_associations.csv`` of ``biomark radiomics --run``
        (``deep, radiomic, family, rho, strategy``): deep features by index.
    table : DataFrame, optional
        The dataset's per-image radiomic features, index ``image_id``.
    source : str
        Where they came from (shown in the report).
    """

    pairs: pd.DataFrame | None = None
    table: pd.DataFrame | None = None
    source: str = ""


@dataclass
class StrategyReport:
    """Everything the report shows about one strategy (see
    :func:`biomark.report.report_strategy.analyse_strategy`).

    ``feature_names`` are ``f0123`` for a shared backbone (or when units could
    not be matched) and ``u0123`` for a matched unit family (reference fold's
    unit 123 with its members, :attr:`units`); ``X`` holds the tested
    features in that order, each image's out-of-fold member.
    ``X_consensus`` (matched families whose every image went through every
    fold's model) holds each family's consensus in the same rows and columns
    (:func:`biomark.analysis.unit_families.family_consensus`): what a family
    tracks within a class is read from it (:meth:`within_class_values`).
    ``redundancy`` says how many directions the units span over one network's
    images (:func:`biomark.analysis.redundancy.unit_redundancy`) and, where
    most units are near-copies, ``directions`` lists those directions
    (:func:`biomark.analysis.redundancy.direction_table`).
    ``model_views`` (fold -> activations) holds what each fold's own model gives
    the images ``model_view_ids`` (every image, or the reference subset) when
    the folds train networks of their own: the source audit probes each
    network on its own units there (:func:`biomark.analysis.audit.source_predictability`'s
    views), since a probe fitted on one network's units does not carry over to another's.
    ``lung_null`` holds the lung fractions of a random-weight copy of the
    network's units on the same films (the null that the features' lung
    fractions are read against, :class:`biomark.analysis.lung_null.LungNull`).
    ``unpicked`` says, per class whose pick is only the top-ranked feature,
    why no feature qualified (:func:`biomark.analysis.unpicked.why_unpicked`).
    """

    label: str
    title: str
    classes: list[str]
    folds: list[int]
    missing_folds: list[int]
    meta: pd.DataFrame
    feature_names: list[str]
    n_constant: int
    classification: dict[str, Any] | None = None
    classification_source: str = ""
    fold_metrics: pd.DataFrame | None = None
    additivity: pd.DataFrame | None = None
    importance: dict[str, pd.Series] = field(default_factory=dict)
    kendall: pd.DataFrame | None = None
    tests: dict[str, pd.DataFrame] = field(default_factory=dict)
    evidence: StrategyEvidence | None = None
    source_predictability: pd.DataFrame | None = None
    lung: pd.DataFrame | None = None
    lung_area_fraction: float = float("nan")
    lung_attainable: float = float("nan")
    lung_method: str = ""
    lung_null: LungNull | None = None
    mask_source: str = ""
    blackout: pd.DataFrame | None = None
    candidates: pd.DataFrame | None = None
    unpicked: pd.DataFrame | None = None
    thumbnails: list[dict[str, Any]] = field(default_factory=list)
    gradcam: list[dict[str, Any]] = field(default_factory=list)
    identity_error: float = float("nan")
    shared_features: bool = False
    unit_basis: str = "shared"
    alignment: FoldAlignment | None = None
    alignment_quality: pd.DataFrame | None = None
    redundancy: UnitRedundancy | None = None
    directions: pd.DataFrame | None = None
    units: pd.DataFrame | None = None
    within_class_match: pd.DataFrame | None = None
    class_dominance: dict[int, ClassDominance] = field(default_factory=dict)
    image_size: int = 0
    reference_ids: np.ndarray | None = None
    model_views: dict[int, np.ndarray] = field(default_factory=dict)
    model_view_ids: pd.Index | None = None
    warnings: list[dict[str, str]] = field(default_factory=list)
    skipped: list[dict[str, Any]] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    seconds: dict[str, float] = field(default_factory=dict)
    X: np.ndarray | None = None
    X_consensus: np.ndarray | None = None
    per_image_lung: np.ndarray | None = None
    per_image_lung_measured: np.ndarray | None = None
    chance: ChanceGuard | None = None
    blackout_reading: BlackoutReading | None = None
    lung_swap: pd.DataFrame | None = None
    lung_swap_reading: LungSwapReading | None = None

    @property
    def heading(self) -> str:
        """The title and the label, e.g. "Fine-Tuning 3 (finetune:3)"; the label once where the
        title names it."""
        return self.title if f"({self.label})" in self.title else f"{self.title} ({self.label})"

    def within_class_values(self) -> np.ndarray | None:
        """The features' values for within-class readings: the family consensus where there is one,
        else ``X``."""
        return self.X_consensus if self.X_consensus is not None else self.X

    def picks(self) -> ClassPicks | None:
        """Per class, the candidate or the best stable significant feature, and its per-image
        values.

        :func:`biomark.analysis.biomarkers.class_picks` on this strategy
        (index of ``values``: ``image_id``; values from
        :meth:`within_class_values`); None without a candidate table.
        """
        values = self.within_class_values()
        if self.candidates is None or self.candidates.empty or values is None:
            return None
        return class_picks(
            self.candidates,
            values,
            self.meta["image_id"].astype(str).to_numpy(),
            feature_names=self.feature_names,
        )
