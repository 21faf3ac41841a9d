"""``biomark report``'s pipeline on inputs it reads but does not need (biomark.pipelines.report).

The report's own pages and tables are tested in ``tests/report``; here, what the
report does with the optional files of the reports folder when they cannot be
read.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path

import pytest

from biomark.features.deep import fold_dir
from biomark.pipelines.report import analyse_run
from biomark.report.strategy_report import ReportSettings

STRATEGIES = ("scratch", "frozen")


def _finished_run(make_feature_run: Callable[..., Path], root: Path) -> Path:
    run = make_feature_run(root / "runs" / "synth", strategies=STRATEGIES, n_per_fold=30, d=12)
    for strategy in STRATEGIES:
        for f in range(3):
            (fold_dir(run, strategy, f) / "done.json").write_text(json.dumps({"fold": f}))
    return run


@pytest.mark.parametrize(
    "garbage",
    [b'deep,radiomic\n1,2,3\n"unclosed', b"\xff\xfe\xfa not text"],
    ids=["malformed", "not-utf8"],
)
def test_unreadable_radiomics_and_compare_tables_are_named_and_left_out(
    tmp_path: Path,
    make_feature_run: Callable[..., Path],
    garbage: bytes,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """A corrupt radiomics_associations.csv or compare_<a>_vs_<b>.csv (an interrupted copy) is
    named with the command that rewrites it, and the report goes on: CKA is computed here (before,
    a raw pandas traceback)."""
    run = _finished_run(make_feature_run, tmp_path)
    out = tmp_path / "reports" / "synth"
    out.mkdir(parents=True)
    (out / "radiomics_associations.csv").write_bytes(garbage)
    (out / "compare_scratch_vs_frozen.csv").write_bytes(garbage)
    settings = replace(ReportSettings(top_k=4, n_bootstrap=0, n_mixed=0), workers=1)
    with caplog.at_level(logging.WARNING, logger="biomark.pipelines.report"):
        data = analyse_run(run, settings, reports=tmp_path / "reports")
    assert set(data.strategies) == set(STRATEGIES)
    (radiomics,) = [m for m in data.missing if m["section"].startswith("Radiomic correlates")]
    assert radiomics["reason"].startswith(f"cannot read {out / 'radiomics_associations.csv'} (")
    assert radiomics["command"].startswith("biomark radiomics --data")
    assert data.radiomics_source == ""
    assert data.cka["source"].str.startswith("computed here").all()
    assert "compare_scratch_vs_frozen.csv" in caplog.text and "computed here instead" in caplog.text


def test_an_unreadable_radiomics_table_of_the_dataset_is_named(tmp_path: Path) -> None:
    """The dataset's per-image radiomics table, truncated: the reason names it; a readable
    associations table is still used."""
    from biomark.data.dataset import load_dataset
    from biomark.pipelines.report import _radiomics_input

    import tiny_data

    dataset = load_dataset(tiny_data.make_dataset(tmp_path / "data", n_per_class=2, size=32))
    table = dataset.root / "radiomics" / "radiomics_cxr2d_lung" / "features.parquet"
    table.parent.mkdir(parents=True)
    table.write_bytes(b"PAR1")
    out = tmp_path / "reports" / "run"
    out.mkdir(parents=True)
    (out / "radiomics_associations.csv").write_text(
        "deep,radiomic,family,rho,strategy\nf0001,glcm_Contrast,glcm,0.4,scratch\n"
    )
    radiomics, unreadable = _radiomics_input(out, dataset)
    assert radiomics is not None and radiomics.table is None and radiomics.pairs is not None
    assert radiomics.source == str(out / "radiomics_associations.csv")
    (why,) = unreadable
    assert why.startswith(f"cannot read {table} (")


def test_an_unreadable_strategy_summary_is_recomputed_from_the_folds(
    tmp_path: Path, make_feature_run: Callable[..., Path], caplog: pytest.LogCaptureFixture
) -> None:
    """A corrupt summary.json: the report warns, naming it, and goes on (before, a raw
    JSONDecodeError from a report worker)."""
    run = _finished_run(make_feature_run, tmp_path)
    (run / "scratch" / "summary.json").write_text("junk")
    settings = replace(ReportSettings(top_k=4, n_bootstrap=0, n_mixed=0), workers=1)
    with caplog.at_level(logging.WARNING):
        data = analyse_run(run, settings, reports=tmp_path / "reports")
    assert set(data.strategies) == set(STRATEGIES)
    assert f"{run / 'scratch' / 'summary.json'}: the strategy's summary cannot be read" in (
        caplog.text
    )
