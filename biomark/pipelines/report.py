"""``biomark report``: are the learned features biomarkers or shortcuts? Everything the page needs.

:func:`analyse_run` reads the run folder (:class:`~biomark.features.run_folder.RunFolder`),
opens the run's dataset when it is readable, analyses every strategy
(:func:`biomark.report.report_strategy.analyse_strategy`; side by side in
worker processes, :mod:`biomark.pipelines.report_workers`, with TensorFlow's
oneDNN kernels for the model passes, :mod:`biomark.onednn`), then compares
strategies: CKA (from ``reports/<run>/compare_<a>_vs_<b>.csv`` when
``biomark compare`` wrote it, else debiased linear CKA computed here per fold
on the out-of-fold features) and the overlap of the candidates' radiomic
correlates (from ``reports/<run>/radiomics_associations.csv``, else from the
dataset's ``radiomics/*/features.parquet`` correlated here). On the phantom
(a ``severity`` column) it adds the ground-truth check. Missing inputs become
entries of :attr:`~biomark.report.report_data.ReportData.missing` with the
command that fills them. :func:`run_report` is the command: the analysis,
the page (:func:`biomark.report.report_page.write_report`) and the top
candidates.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from biomark.analysis.biomarkers import correlate_overlap
from biomark.analysis.cka import linear_cka
from biomark.analysis.class_evidence import evidence_scores, evidence_table
from biomark.analysis.picks import ground_truth
from biomark.analysis.source_regions import LUNGS, OUTSIDE, RegionAudit, source_by_region
from biomark.config.seeds import check_seed
from biomark.data.dataset import Dataset
from biomark.exceptions import BiomarkError, ConfigError, RunError
from biomark.features.run_folder import RunFolder
from biomark.features.run_info import RunInfo
from biomark.io.disk import check_free_space, check_writable_dir
from biomark.onednn import onednn_kernels
from biomark.pipelines.report_workers import analyse_strategies, open_run_dataset
from biomark.report.radiomic_correlates import radiomic_columns
from biomark.report.report_data import ReportData, report_dir
from biomark.report.report_strategy import RadiomicsInput, ReportSettings, StrategyReport

__all__ = ["ReportCommand", "analyse_run", "report_space", "run_report"]

logger = logging.getLogger(__name__)

#: Free space the report's folder must have before the analysis starts, so that a full disk is
#: named before the minute of work and not after it: the page, which inlines plotly.js (4.6 MiB),
#: and per strategy its figures and tables (a one-strategy phantom report writes 6.0 MiB in all).
#: A report that writes more still gets a named error from each atomic write.
REPORT_BASE_SPACE = 5 * 2**20
REPORT_SPACE_PER_STRATEGY = 2 * 2**20


def report_space(n_strategies: int) -> int:
    """Bytes a report of ``n_strategies`` strategies is allowed to need (:data:`REPORT_BASE_SPACE`
    plus :data:`REPORT_SPACE_PER_STRATEGY` each).

    Examples
    --------
    >>> report_space(3) / 2**20
    11.0
    """
    return REPORT_BASE_SPACE + REPORT_SPACE_PER_STRATEGY * int(n_strategies)


def _radiomics_table(dataset: Dataset | None) -> Path | None:
    """The dataset's per-image radiomics table (a ``*_lung`` run first), or None."""
    if dataset is None:
        return None
    tables = sorted((dataset.root / "radiomics").glob("*/features.parquet"))
    if not tables:
        return None
    return next((t for t in tables if t.parent.name.endswith("_lung")), tables[0])


def _source_regions(
    dataset: Dataset | None, lung_table: pd.DataFrame | None, info: RunInfo, seed: int
) -> RegionAudit | None:
    """The data-level source audit (lung vs outside-lung radiomics), when the dataset has both and
    2+ sources.

    ``lung_table`` is the dataset's radiomics table as :func:`_radiomics_input` read it (not read
    again); its outside control lies beside it.
    """
    path = _radiomics_table(dataset)
    if dataset is None or path is None or lung_table is None:
        return None
    outside = path.parent / "controls" / "outside" / "features.parquet"
    manifest = dataset.manifest
    if not outside.is_file() or "source" not in manifest or manifest["source"].nunique() < 2:
        return None
    meta = manifest.assign(
        patient_id=manifest["patient_id"] if "patient_id" in manifest else manifest["image_id"]
    )
    thresholds = info.report_settings()
    outside_table, why = _read_table(outside, pd.read_parquet)
    if outside_table is None:
        logger.warning(
            "source in the images not audited: %s; re-run `biomark radiomics --data %s` to "
            "rewrite it",
            why,
            dataset.root,
        )
        return None
    try:
        return source_by_region(
            {LUNGS: lung_table, OUTSIDE: outside_table},
            meta,
            seed=seed,
            auc_recoverable=thresholds.source_auc_recoverable,
            auc_weak=thresholds.source_auc_weak,
        )
    except BiomarkError as err:
        logger.warning("source in the images not audited (%s)", err)
        return None


def _planted(dataset: Dataset | None, column: str = "severity") -> pd.Series | None:
    """A phantom's planted ``severity`` (or ``burden``) by image id (numeric, NaN where
    unreadable); None elsewhere, or for a phantom written before the column existed."""
    if dataset is None or column not in dataset.manifest.columns:
        return None
    manifest = dataset.manifest
    return pd.to_numeric(
        manifest.set_index(manifest["image_id"].astype(str))[column], errors="coerce"
    )


def _class_evidence(
    strategies: dict[str, StrategyReport],
    lung_table: pd.DataFrame | None,
    severity: pd.Series | None,
    normal: str = "Normal",
    burden: pd.Series | None = None,
) -> pd.DataFrame | None:
    """Per strategy and diseased class, what the network's own class evidence tracks within the
    class.

    From each strategy's out-of-fold probabilities; lung radiomics when the
    dataset has them, the planted severity and burden (:func:`_planted`) on a phantom.
    None when no strategy has the probabilities or a ``normal`` class.
    """
    frames = []
    for label, rep in strategies.items():
        columns = [f"prob_{c}" for c in rep.classes]
        if normal not in rep.classes or not set(columns) <= set(rep.meta.columns):
            continue
        ids = rep.meta["image_id"].astype(str).to_numpy()
        radiomics = None
        if lung_table is not None:
            numeric = radiomic_columns(lung_table)
            radiomics = lung_table.reindex(ids)[numeric].reset_index(drop=True)
        table = evidence_table(
            evidence_scores(rep.meta[columns].to_numpy(), rep.classes, normal=normal),
            rep.meta["label"].astype(str).to_numpy(),
            radiomics=radiomics,
            severity=None if severity is None else severity.reindex(ids).to_numpy(),
            burden=None if burden is None else burden.reindex(ids).to_numpy(),
        )
        learned = rep.chance.learned if rep.chance is not None else True
        frames.append(table.assign(strategy=label, learned=learned))
    if not frames:
        return None
    out = pd.concat(frames, ignore_index=True)
    return out[
        ["strategy", "learned", *[c for c in out.columns if c not in ("strategy", "learned")]]
    ]


def _read_table(
    path: Path, read: Callable[[Path], pd.DataFrame]
) -> tuple[pd.DataFrame | None, str]:
    """``read(path)``, or None and why not: a truncated or foreign file is reported, not raised."""
    try:
        return read(path), ""
    except (OSError, ValueError) as err:  # pandas' ParserError and pyarrow's ArrowInvalid too
        return None, f"cannot read {path} ({type(err).__name__}: {str(err).splitlines()[0]})"


def _radiomics_input(
    out_dir: Path, dataset: Dataset | None
) -> tuple[RadiomicsInput | None, list[str]]:
    """The radiomics the report can use: the radiomics page's pairs and/or the dataset's per-image
    table; and why a file that is there could not be used (the report goes on without it)."""
    pairs, table, sources, unreadable = None, None, [], []
    csv = out_dir / "radiomics_associations.csv"
    if csv.is_file():
        frame, why = _read_table(csv, pd.read_csv)
        if frame is None:
            unreadable.append(why)
        elif {"deep", "radiomic", "family", "rho", "strategy"} <= set(frame.columns):
            frame["strategy"] = frame["strategy"].astype(str).str.replace(":", "_")
            pairs = frame
            sources.append(str(csv))
    path = _radiomics_table(dataset)
    if path is not None:
        rad, why = _read_table(path, pd.read_parquet)
        if rad is None or "image_id" not in rad.columns:
            unreadable.append(why or f"{path} has no image_id column")
        else:
            table = rad.set_index(rad["image_id"].astype(str))
            sources.append(str(path))
    if pairs is None and table is None:
        return None, unreadable
    return RadiomicsInput(pairs=pairs, table=table, source=" and ".join(sources)), unreadable


def _for_strategy(radiomics: RadiomicsInput | None, label: str) -> RadiomicsInput | None:
    if radiomics is None or radiomics.pairs is None:
        return radiomics
    pairs = radiomics.pairs[radiomics.pairs["strategy"] == label.replace(":", "_")]
    return RadiomicsInput(pairs=pairs, table=radiomics.table, source=radiomics.source)


def _cka(out_dir: Path, reports: dict[str, StrategyReport]) -> pd.DataFrame:
    rows = []
    labels = list(reports)
    for i, a in enumerate(labels):
        for b in labels[i + 1 :]:
            row: dict[str, Any] = {"a": a, "b": b}
            for x, y in ((a, b), (b, a)):
                csv = out_dir / f"compare_{x.replace(':', '_')}_vs_{y.replace(':', '_')}.csv"
                t, why = _read_table(csv, pd.read_csv) if csv.is_file() else (None, "")
                if why:
                    logger.warning("report: %s; CKA of %s and %s computed here instead", why, a, b)
                if t is not None and {"metric", "fold", "statistic", "class", "value"} <= set(
                    t.columns
                ):
                    hit = t[
                        (t["metric"] == "linear_cka_debiased")
                        & (t["fold"].astype(str) == "all")
                        & (t["statistic"] == "mean")
                        & (t["class"].astype(object).fillna("").astype(str) == "")
                    ]
                    if len(hit):
                        row.update(
                            linear_cka_debiased=float(hit["value"].iat[0]),
                            source=csv.name,
                            folds="all",
                        )
                        break
            if "source" not in row:
                ra, rb = reports[a], reports[b]
                values, folds = [], []
                for f in sorted(set(ra.folds) & set(rb.folds)):
                    ia = ra.meta.index[ra.meta["fold"] == f]
                    ib = rb.meta.index[rb.meta["fold"] == f]
                    ida = ra.meta.loc[ia, "image_id"].astype(str)
                    idb = pd.Series(ib, index=rb.meta.loc[ib, "image_id"].astype(str).to_numpy())
                    common = ida[ida.isin(idb.index)]
                    if len(common) < 4:
                        continue
                    assert (
                        ra.X is not None and rb.X is not None
                    )  # a strategy with fold rows has its features
                    values.append(
                        linear_cka(ra.X[common.index], rb.X[idb[common.to_numpy()].to_numpy()])
                    )
                    folds.append(f)
                row.update(
                    linear_cka_debiased=float(np.mean(values)) if values else float("nan"),
                    folds=", ".join(map(str, folds)),
                    source="computed here (debiased linear CKA per fold)",
                )
            rows.append(row)
    return pd.DataFrame(rows, columns=["a", "b", "linear_cka_debiased", "folds", "source"])


def analyse_run(
    run_dir: str | Path,
    settings: ReportSettings | None = None,
    *,
    reports: str | Path = "reports",
    setup: Callable[[], None] | None = None,
) -> ReportData:
    """Analyse a run folder for the biomarker report.

    Parameters
    ----------
    run_dir : str or Path
        A run folder of ``biomark extract``.
    settings : ReportSettings, optional
        Default: the defaults, with the candidate criteria of the run's plan (``report.criteria``).
    reports : str or Path, default "reports"
        Reports folder; the page goes to ``<reports>/<run name>/``.
    setup : callable, optional
        Run first in each worker process when the strategies are analysed
        side by side (:func:`biomark.pipelines.report_workers.analyse_strategies`).

    Returns
    -------
    ReportData

    Raises
    ------
    RunError
        No ``run.json``, or no strategy with a finished fold.
    ConfigError
        A requested strategy is not in the run.
    """
    t0 = time.perf_counter()
    run = RunFolder(run_dir)
    info = run.read_info()
    settings = settings or ReportSettings(criteria=info.report_settings().criteria)
    name = info.name or run.name
    # an unwritable --reports is named before the minute of work, not after it
    out_dir = check_writable_dir(report_dir(reports, run.root), "--reports")
    known = list(info.strategies)
    chosen = list(settings.strategies) if settings.strategies else known
    unknown = [s for s in chosen if s.replace("_", ":") not in [k.replace("_", ":") for k in known]]
    if unknown:
        raise ConfigError(
            f"--strategies {', '.join(unknown)}: not in run {run.root} (it has {', '.join(known)})"
        )
    check_free_space(out_dir, report_space(len(chosen)), "the report's pages and tables")
    dataset, why = open_run_dataset(info)
    data = ReportData(
        run_dir=run.root,
        name=name,
        info=info,
        settings=settings,
        out_dir=out_dir,
        dataset=dataset,
        strategies={},
    )
    if dataset is None:
        data.missing.append(
            {
                "section": "Image maps, lung fractions, blackout, phantom ground truth",
                "reason": why,
                # the reason names the folder and the commands that restore it; then this one
                "command": f"biomark report --run {run.root}",
            }
        )
    ready = _ready_strategies(run, chosen, data)
    if not ready:
        raise RunError(
            f"{run.root}: no strategy has a finished fold with features.parquet; run `biomark "
            "extract`"
        )
    radiomics, unreadable = _radiomics_input(out_dir, dataset)
    data.radiomics_source = radiomics.source if radiomics is not None else ""
    for why in unreadable:
        logger.warning("report %s: %s; the report goes on without it", name, why)
    if unreadable or not data.radiomics_source:
        data.missing.append(
            {
                "section": "Radiomic correlates and the strategies' overlap",
                "reason": "; ".join(unreadable) or "no radiomics outputs for this run",
                "command": f"biomark radiomics --data {info.dataset.dir or 'DIR'} --run {run.root}",
            }
        )
    lung_table = radiomics.table if radiomics is not None else None

    def audit_the_images() -> None:
        # needs no strategy: done while the last worker finishes, on the core the others freed
        data.source_regions = _source_regions(dataset, lung_table, info, settings.seed)

    with onednn_kernels() as kernels:  # for the model passes: the workers inherit it
        data.onednn = kernels
        analysed = analyse_strategies(
            run,
            ready,
            info,
            dataset,
            settings,
            {label: _for_strategy(radiomics, label) for label in ready},
            setup=setup,
            while_last_runs=audit_the_images,
        )
    _keep_analysed(analysed, data)
    if not data.strategies:
        raise RunError(
            f"{run.root}: no strategy could be read "
            f"({'; '.join(m['reason'] for m in data.missing)})"
        )
    if len(data.strategies) >= 2:
        _across_strategies(data, run.root)
    severity, burden = _planted(dataset), _planted(dataset, "burden")
    if severity is not None:
        data.truth = _ground_truth(data, severity, burden)
    data.evidence = _class_evidence(data.strategies, lung_table, severity, burden=burden)
    data.links = _page_links(out_dir)
    data.seconds = time.perf_counter() - t0
    return data


def _ready_strategies(run: RunFolder, chosen: list[str], data: ReportData) -> list[str]:
    """The chosen strategies with a finished fold; the others go to ``data.missing``."""
    ready = []
    for label in chosen:
        if not run.finished_folds(label):
            data.missing.append(
                {
                    "section": f"strategy {label}",
                    "reason": "no finished fold (done.json)",
                    "command": f"biomark extract --plan PLAN --strategies {label}",
                }
            )
            continue
        ready.append(label)
    return ready


def _keep_analysed(analysed: Mapping[str, StrategyReport | RunError], data: ReportData) -> None:
    """Each analysed strategy into ``data.strategies``; one that failed goes to ``data.missing``."""
    for label, result in analysed.items():
        if isinstance(result, RunError):
            logger.warning("report %s: strategy %s left out: %s", data.name, label, result)
            data.missing.append(
                {
                    "section": f"strategy {label}",
                    "reason": str(result),
                    "command": f"biomark extract --plan PLAN --strategies {label} --force",
                }
            )
            continue
        data.strategies[label] = result


def _across_strategies(data: ReportData, run_root: Path) -> None:
    """CKA between the strategies (from the compare pages, else computed) and their candidates'
    overlap."""
    data.cka = _cka(data.out_dir, data.strategies)
    if not any(data.cka["source"].astype(str).str.startswith("compare_")):
        data.missing.append(
            {
                "section": "Compare page (CKA, UMAP, probes)",
                "reason": "no compare_<a>_vs_<b>.csv in the reports folder; CKA computed here",
                "command": f"biomark compare --run {run_root} --all",
            }
        )
    if data.radiomics_source:
        data.overlap = correlate_overlap(
            {k: v.candidates for k, v in data.strategies.items() if v.candidates is not None}
        )


def _ground_truth(
    data: ReportData, severity: pd.Series, burden: pd.Series | None = None
) -> pd.DataFrame | None:
    """Per strategy and class, how its pick tracks the phantom's planted severity, and its
    burden where the manifest has one (None: no candidates)."""
    frames = []
    for rep in data.strategies.values():
        if rep.candidates is None or rep.candidates.empty:
            continue
        ids = rep.meta["image_id"].astype(str)
        s = severity.reindex(ids).to_numpy()
        values = rep.within_class_values()
        assert values is not None  # candidates are ranked from the features
        frames.append(
            ground_truth(
                rep.candidates,
                values,
                rep.meta["label"].astype(str),
                s,
                feature_names=rep.feature_names,
                out_of_fold=rep.X if rep.X_consensus is not None else None,
                burden=None if burden is None else burden.reindex(ids).to_numpy(),
            )
        )
    return pd.concat(frames, ignore_index=True) if frames else None


def _page_links(out_dir: Path) -> dict[str, str]:
    """The run's other pages in the reports folder: radiomics and the compare pages."""
    links = {}
    if (out_dir / "radiomics.html").is_file():
        links["radiomics"] = "radiomics.html"
    for path in sorted(out_dir.glob("compare_*.html")):
        links[path.stem.replace("_", " ")] = path.name
    return links


@dataclass(frozen=True)
class ReportCommand:
    """What ``biomark report`` did (for the CLI to print).

    Attributes
    ----------
    data : ReportData
    paths : dict of str to Path
        The files written (``index``, ``candidates``, ...;
        :func:`biomark.report.report_page.write_report`).
    top : DataFrame
        The best rows of the candidate table (:func:`biomark.report.report_page.top_candidates`).
    """

    data: ReportData
    paths: dict[str, Path]
    top: pd.DataFrame


def run_report(
    run_dir: str | Path,
    *,
    strategies: tuple[str, ...] | None = None,
    top_k: int = 20,
    shap_samples: int = 64,
    blackout: bool = True,
    seed: int = 0,
    reports: str | Path = "reports",
    workers: int | None = None,
    setup: Callable[[], None] | None = None,
) -> ReportCommand:
    """``biomark report``: analyse the run (:func:`analyse_run`) and write its page.

    Parameters
    ----------
    run_dir : path
    strategies : tuple of str, optional
        Default: all of the run's.
    top_k, shap_samples, blackout, seed
        :class:`~biomark.report.report_strategy.ReportSettings`; its candidate criteria are the
        run's plan's ``report.criteria``.
    reports : path, default "reports"
    workers : int, optional
        ``ReportSettings.workers``: processes analysing the strategies side by
        side (default one per strategy on 2 or more cores).
    setup : callable, optional
        Run first in each worker process (:func:`analyse_run`).

    Returns
    -------
    ReportCommand

    Raises
    ------
    ConfigError
        ``top_k``, ``shap_samples`` or ``workers`` below 1, a seed out of range
        (:func:`biomark.config.seeds.check_seed`), or a strategy not in the run.
    RunError
        As :func:`analyse_run`.
    """
    from biomark.report.report_page import top_candidates, write_report

    for flag, value in (
        ("--top-k", top_k),
        ("--shap-samples", shap_samples),
        ("--workers", workers),
    ):
        if value is not None and value < 1:
            raise ConfigError(f"{flag}={value}: must be at least 1")
    check_seed(seed, "--seed")
    criteria = RunFolder(run_dir).read_info().report_settings().criteria
    settings = ReportSettings(
        strategies=strategies,
        top_k=top_k,
        shap_samples=shap_samples,
        blackout=blackout,
        seed=seed,
        criteria=criteria,
        workers=workers,
    )
    data = analyse_run(run_dir, settings, reports=reports, setup=setup)
    paths = write_report(data)
    return ReportCommand(data, paths, top_candidates(data))
