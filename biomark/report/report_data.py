"""Everything the biomarker report shows for a run, before any HTML: :class:`ReportData`.

:func:`biomark.pipelines.report.analyse_run` fills it (every strategy's
analysis, the CKA between strategies, the overlap of radiomic correlates, the
phantom's ground truth, and what is missing with the command that fills it);
:mod:`biomark.report.report_page` renders it.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd

from biomark.analysis.source_regions import RegionAudit
from biomark.data.dataset import Dataset
from biomark.features.run_info import RunInfo
from biomark.report.strategy_report import ReportSettings, StrategyReport

__all__ = ["ReportData", "report_dir"]

logger = logging.getLogger(__name__)


@dataclass
class ReportData:
    """Inputs of the report page (see :func:`biomark.pipelines.report.analyse_run`).

    Attributes
    ----------
    run_dir : Path
    name : str
    info : RunInfo
        ``run.json``.
    settings : ReportSettings
    out_dir : Path
        ``<reports>/<run name>``.
    dataset : Dataset or None
    strategies : dict of str to StrategyReport
    cka : DataFrame
        ``a, b, linear_cka_debiased, folds, source``.
    overlap : DataFrame or None
        :func:`biomark.analysis.biomarkers.correlate_overlap`.
    truth : DataFrame or None
        Phantom ground truth, all strategies.
    evidence : DataFrame or None
        Per strategy and diseased class, what the network's own evidence for
        the class tracks within it (:func:`biomark.analysis.class_evidence.evidence_table`
        plus ``strategy`` and ``learned``).
    radiomics_source : str
    source_regions : RegionAudit or None
        Where the images carry their source (lung vs outside-lung radiomics);
        None without the radiomics' outside control or with one source.
    missing : list of dict
        ``section, reason, command``.
    links : dict of str to str
        Other pages of the run (relative paths).
    seconds : float
    onednn : str
        ``TF_ENABLE_ONEDNN_OPTS`` as the model passes ran
        (:func:`biomark.onednn.onednn_kernels`).
    """

    run_dir: Path
    name: str
    info: RunInfo
    settings: ReportSettings
    out_dir: Path
    dataset: Dataset | None
    strategies: dict[str, StrategyReport]
    cka: pd.DataFrame = field(default_factory=pd.DataFrame)
    overlap: pd.DataFrame | None = None
    truth: pd.DataFrame | None = None
    evidence: pd.DataFrame | None = None
    radiomics_source: str = ""
    source_regions: RegionAudit | None = None
    missing: list[dict[str, str]] = field(default_factory=list)
    links: dict[str, str] = field(default_factory=dict)
    seconds: float = 0.0
    onednn: str = ""

    @property
    def warnings(self) -> list[dict[str, str]]:
        """Every strategy's input warnings (``strategy, fold, feature, check, message``), shown at
        the top."""
        return [w for rep in self.strategies.values() for w in rep.warnings]

    @property
    def candidates(self) -> pd.DataFrame:
        """All strategies' candidate tables, concatenated."""
        frames = [
            s.candidates
            for s in self.strategies.values()
            if s.candidates is not None and len(s.candidates)
        ]
        return pd.concat(frames, ignore_index=True) if frames else pd.DataFrame()


def report_dir(reports: str | Path, run_dir: str | Path) -> Path:
    """``<reports>/<run folder name>``."""
    return Path(reports) / Path(run_dir).resolve().name
