"""What a report was made from and with: ``report.json`` beside ``index.html``.

The page says what it found; this record says how to make it again and what
it rests on: the report's settings (seed, criteria, sample sizes), the run it
read (plan hash, digest of ``run.json``), the dataset (manifest digest, or
that it was not found), the radiomics it used, per strategy the folds
analysed and left out with the input warnings and the candidate count, and
the software it ran on.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

from biomark.features.run_folder import RUN_FILE
from biomark.provenance import environment, file_sha256
from biomark.report.report_data import ReportData
from biomark.report.report_text import learned, n_candidates, strategy_summary
from biomark.report.strategy_report import StrategyReport

__all__ = ["REPORT_RECORD", "report_record"]

#: The record's file name in the report folder.
REPORT_RECORD = "report.json"


def report_record(data: ReportData) -> dict[str, Any]:
    """The provenance record of one report (JSON-able; written as :data:`REPORT_RECORD`)."""
    info = data.info
    strategies = {}
    for label, rep in data.strategies.items():
        table = rep.candidates
        strategies[label] = {
            "folds": list(rep.folds),
            "folds_not_finished": list(rep.missing_folds),
            "learned": learned(rep),
            "unit_basis": rep.unit_basis,
            "n_shortlisted": 0 if table is None else len(table),
            "n_candidates": n_candidates(rep),
            "summary": strategy_summary(rep),
            "lung_null": _lung_null(rep, data.settings.criteria.min_lung_fraction),
        }
    return {
        "report": data.name,
        "out_dir": str(data.out_dir),
        "run": {
            "dir": str(data.run_dir),
            "name": info.name,
            "plan_hash": info.plan_hash,
            "run_json_sha256": _digest(data.run_dir / RUN_FILE),
        },
        "dataset": {
            "dir": info.dataset.dir,
            "manifest_sha256": info.dataset.manifest_sha256,
            "found": data.dataset is not None,
        },
        "radiomics": {
            "source": data.radiomics_source or None,
            "sha256": _digest(Path(data.radiomics_source)) if data.radiomics_source else None,
        },
        "settings": dataclasses.asdict(data.settings),
        "strategies": strategies,
        "warnings": data.warnings,
        "missing": data.missing,
        "seconds": round(data.seconds, 1),
        "environment": {**environment(), "tf_enable_onednn_opts": data.onednn},
    }


def _lung_null(rep: StrategyReport, min_lung_fraction: float) -> dict[str, Any] | None:
    """What the strategy's lung fractions were read against (None: the fixed threshold)."""
    null = rep.lung_null
    if null is None:
        return None
    return {
        "source": null.source,
        "method": null.method,
        "n_images": null.n_images,
        "n_units": int(null.fractions.size),
        "median": round(null.median, 4),
        "low": round(null.low, 4),
        "high": round(null.high, 4),
        "in_lungs_from": round(null.inside_threshold(min_lung_fraction), 4),
        "outside_below": round(null.outside_threshold(min_lung_fraction), 4),
    }


def _digest(path: Path) -> str | None:
    """SHA-256 of a local file; None for anything else (a description, a URL, a folder)."""
    try:
        return file_sha256(path) if path.is_file() else None
    except OSError:
        return None
