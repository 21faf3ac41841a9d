"""The ``positive_class`` key and the ``report:`` section of a plan: the class of the 2-class task
and the thresholds the report, compare and radiomics pages judge by."""

from __future__ import annotations

from dataclasses import dataclass, field

from biomark.exceptions import ConfigError

#: The paper's positive class: its 2-class task is this class against the rest.
DEFAULT_POSITIVE_CLASS = "COVID-19"


@dataclass(frozen=True)
class Criteria:
    """Thresholds of the four candidate-biomarker criteria (``report.criteria``).

    Attributes
    ----------
    alpha : float, default 0.05
        FDR level for significance and for the source association.
    min_stability : float, default 0.7
        Minimum top-k frequency across folds (with 2 folds: both).
    min_lung_fraction : float, default 0.5
        Minimum share of activation mass inside the lungs.
    max_blackout_survival : float, default 0.5
        Model-level flag when this share of above-chance accuracy survives
        the lung blackout.
    min_match_r : float, default 0.5
        A unit family whose weakest member matches its reference unit below
        this activation correlation is poorly matched: its stability is
        judged on its class effect per fold, not on the top-k frequency.
    min_fold_effect : float, default 0.147
        |Cliff's delta| a member must reach in its fold, with the family's
        sign, to count as showing the class effect (0.147: the upper bound of
        a "negligible" delta, Romano et al. 2006).

    Raises
    ------
    ConfigError
        ``alpha`` outside (0, 1) or another threshold outside [0, 1].
    """

    alpha: float = 0.05
    min_stability: float = 0.7
    min_lung_fraction: float = 0.5
    max_blackout_survival: float = 0.5
    min_match_r: float = 0.5
    min_fold_effect: float = 0.147

    def __post_init__(self) -> None:
        if not 0.0 < self.alpha < 1.0:
            raise ConfigError(f"report.criteria.alpha={self.alpha!r}: must lie in (0, 1)")
        for name in (
            "min_stability",
            "min_lung_fraction",
            "max_blackout_survival",
            "min_match_r",
            "min_fold_effect",
        ):
            value = getattr(self, name)
            if not 0.0 <= value <= 1.0:
                raise ConfigError(f"report.criteria.{name}={value!r}: must lie in [0, 1]")


@dataclass(frozen=True)
class ReportPlanSettings:
    """The ``report:`` section: thresholds the report, compare and radiomics pages judge by.

    Attributes
    ----------
    criteria : Criteria
        The candidate-biomarker criteria (:class:`Criteria`).
    chance_alpha : float, default 0.05
        Level of the test that a model is above chance
        (:func:`biomark.analysis.chance.chance_guard`).
    source_auc_recoverable : float, default 0.7
        Source AUC above which a significant source audit reads "source is
        recoverable" (:func:`biomark.analysis.audit.source_predictability`).
    source_auc_weak : float, default 0.6
        Source AUC reported as the "weak" band of the audit.
    cka_alpha : float, default 0.05
        Permutation p-value at or above which two strategies' CKA reads "not
        distinguishable from unrelated representations" (``biomark compare``).
    min_overlap : float, default 0.9
        Share of a run's images that must have radiomic features before the
        radiomics association is computed (``biomark radiomics``).

    Raises
    ------
    ConfigError
        A level outside (0, 1), a share outside (0, 1], or ``source_auc_weak``
        above ``source_auc_recoverable``.
    """

    criteria: Criteria = field(default_factory=Criteria)
    chance_alpha: float = 0.05
    source_auc_recoverable: float = 0.7
    source_auc_weak: float = 0.6
    cka_alpha: float = 0.05
    min_overlap: float = 0.9

    def __post_init__(self) -> None:
        for name in ("chance_alpha", "cka_alpha"):
            value = getattr(self, name)
            if not 0.0 < value < 1.0:
                raise ConfigError(f"report.{name}={value!r}: must lie in (0, 1), e.g. 0.05")
        if not 0.0 < self.min_overlap <= 1.0:
            raise ConfigError(
                f"report.min_overlap={self.min_overlap!r}: must lie in (0, 1], e.g. 0.9"
            )
        if not 0.5 <= self.source_auc_weak <= self.source_auc_recoverable <= 1.0:
            raise ConfigError(
                f"report.source_auc_weak={self.source_auc_weak!r}, report.source_auc_recoverable="
                f"{self.source_auc_recoverable!r}: use 0.5 <= weak <= recoverable <= 1 (AUCs; 0.5 "
                "is chance)"
            )
