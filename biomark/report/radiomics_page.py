"""The radiomics report: deep features versus radiomics, controls, masks, truth.

:func:`biomark.pipelines.radiomics.associate_run` relates every strategy's
out-of-fold deep features of a run folder to the radiomics of the same images
(:mod:`biomark.analysis`) into :class:`StrategyAnalysis` objects;
:func:`write_radiomics_report` writes ``<reports>/<name>/radiomics.html`` (via
:class:`biomark.report.page.Page`: self-contained, opens offline) and the
tables as CSV next to it.

Aligning deep and radiomic tables
    Rows are matched by ``image_id`` (:mod:`biomark.report.radiomics_alignment`:
    :func:`align_features`, :func:`excluded_images`, :class:`StrategyAnalysis`;
    re-exported here).
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from biomark.analysis.associate import AssociationResult
from biomark.analysis.controls import ControlThresholds, compare_controls
from biomark.io.atomic import write_csv_atomic
from biomark.report.guards import add_chance_guard
from biomark.report.radiomics_alignment import (
    MIN_OVERLAP,
    StrategyAnalysis,
    align_features,
    covariates_from_manifest,
    excluded_images,
)

__all__ = [
    "MIN_OVERLAP",
    "truth_sentences",
    "truth_table",
    "StrategyAnalysis",
    "align_features",
    "build_page",
    "covariates_from_manifest",
    "strategy_verdicts",
    "excluded_images",
    "heatmap_figure",
    "write_radiomics_report",
]

logger = logging.getLogger(__name__)


def heatmap_figure(
    result: AssociationResult, *, max_deep: int = 30, max_radiomic: int = 60, title: str = ""
) -> Any:
    """Clustered heat map of the strongest deep x radiomic correlations.

    The ``max_deep`` deep features and ``max_radiomic`` radiomic features with
    the largest maximum |rho| are shown, both axes ordered by average-linkage
    hierarchical clustering of their correlation profiles
    (``scipy.cluster.hierarchy.leaves_list``).
    """
    import plotly.graph_objects as go
    from scipy.cluster.hierarchy import leaves_list, linkage

    absr = np.abs(result.rho)
    di = np.argsort(-absr.max(axis=1))[:max_deep]
    ri = np.argsort(-absr.max(axis=0))[:max_radiomic]
    sub = result.rho[np.ix_(di, ri)]

    def order(matrix: np.ndarray) -> np.ndarray:
        if matrix.shape[0] < 3:
            return np.arange(matrix.shape[0])
        return leaves_list(linkage(matrix, method="average", metric="euclidean"))

    rows, cols = order(sub), order(sub.T)
    sub = sub[np.ix_(rows, cols)]
    fig = go.Figure(
        go.Heatmap(
            z=sub,
            x=[result.radiomic_names[j] for j in ri[cols]],
            y=[result.deep_names[i] for i in di[rows]],
            zmid=0,
            zmin=-1,
            zmax=1,
            colorscale="RdBu_r",
            colorbar={"title": "rho"},
            hovertemplate="%{y} vs %{x}<br>rho=%{z:.2f}<extra></extra>",
        )
    )
    fig.update_layout(
        title=title,
        height=320 + 14 * len(rows),
        margin={"l": 80, "r": 20, "t": 50, "b": 200},
        xaxis={"tickangle": -60, "tickfont": {"size": 9}},
        yaxis={"tickfont": {"size": 9}},
    )
    return fig


def _gallery_html(out_dir: Path, masks: pd.DataFrame, names: list[str]) -> str:
    """The thumbnails ``biomark radiomics`` stored in ``gallery/`` (when the dataset is not readable
    here)."""
    from biomark.report.mask_gallery import gallery_html, thumbnail_figure

    cells = []
    for name in names:
        path = out_dir / "gallery" / name
        if not path.is_file():
            continue
        info = masks.iloc[int(name.split("_", 1)[0])]
        flags = str(info.get("flags", "") or "")
        caption = f"{info['image_id']} · area {float(info['area_fraction']):.2f}" + (
            f" · {flags}" if flags else ""
        )
        cells.append(
            thumbnail_figure(path.read_bytes(), str(info["image_id"]), caption, bool(flags))
        )
    return gallery_html(cells)


def _mask_gallery(run: Any, n: int = 24) -> str:
    """:func:`~biomark.report.mask_gallery.mask_gallery_html` of a radiomics folder's masks on the
    dataset's films.

    Falls back to the thumbnails ``biomark radiomics`` wrote (``gallery/``)
    when the dataset folder is not readable here.
    """
    from biomark.data.dataset import load_dataset
    from biomark.exceptions import BiomarkError
    from biomark.report.mask_gallery import mask_gallery_html

    table = run.masks
    root = run.info.get("dataset", {}).get("root")
    try:
        dataset = load_dataset(root)
        masks = np.load(run.out_dir / "masks.npy", mmap_mode="r")
    except (BiomarkError, OSError, ValueError, TypeError) as err:
        logger.warning(
            "mask gallery: dataset %s or %s not readable (%s); showing the stored thumbnails",
            root,
            run.out_dir / "masks.npy",
            err,
        )
        return _gallery_html(run.out_dir, table, list(run.info.get("gallery", [])))
    same = (
        masks.shape == dataset.images.shape
        and len(table) == len(dataset)
        and (
            table["image_id"].astype(str).to_numpy()
            == dataset.manifest["image_id"].astype(str).to_numpy()
        ).all()
    )
    if not same:
        logger.warning(
            "mask gallery: %s no longer matches dataset %s; showing the stored thumbnails",
            run.out_dir,
            root,
        )
        return _gallery_html(run.out_dir, table, list(run.info.get("gallery", [])))
    return mask_gallery_html(dataset.images, masks, table, n=n)


def _cca_table(analyses: Mapping[str, StrategyAnalysis]) -> pd.DataFrame:
    rows = []
    for name, a in analyses.items():
        cc = a.cca.get("canonical_correlations", [])
        rows.append(
            {
                "strategy": name,
                "units": a.unit_basis,
                "n": a.n_images,
                **{f"cc{k + 1}": float(v) for k, v in enumerate(cc)},
                "r2_deep_pcs": a.cca.get("r2_deep_pcs", np.nan),
                "variance_explained": a.cca.get("variance_explained", np.nan),
                "folds": a.cca.get("n_folds", np.nan),
                "note": a.cca.get("error", ""),
            }
        )
    return pd.DataFrame(rows)


def build_page(
    title: str,
    run: Any,
    manifest: pd.DataFrame,
    analyses: Mapping[str, StrategyAnalysis] | None = None,
    truth: pd.DataFrame | None = None,
    *,
    top: int = 25,
) -> tuple[Any, dict[str, pd.DataFrame]]:
    """Assemble the page and the tables it shows.

    Parameters
    ----------
    title : str
    run : RadiomicsRun
        What ``biomark radiomics`` wrote (features, failures, masks, info).
    manifest : DataFrame
    analyses : mapping of str to StrategyAnalysis, optional
    truth : DataFrame, optional
        :func:`biomark.analysis.phantom_truth.phantom_truth` output.
    top : int, default 25
        Rows of the top-associations table per strategy.

    Returns
    -------
    page : biomark.report.page.Page
    tables : dict of str to DataFrame
        Written as CSV next to the page by :func:`write_radiomics_report`.
    """
    from biomark.report.page import Page

    info = run.info
    page = Page(
        title,
        subtitle=(
            "pyradiomics features of the images the CNN saw, and what the deep features relate to"
        ),
        provenance={
            "radiomics folder": str(run.out_dir),
            "parameter file": (
                f"{info['params']['path']} (sha256 {info['params']['file_sha256'][:16]})"
            ),
            "region": f"{info['region']} ({info.get('mask_source', '')})",
            "versions": ", ".join(f"{k} {v}" for k, v in info.get("versions", {}).items()),
            "dataset manifest sha256": info.get("dataset", {}).get("manifest_sha256", ""),
        },
    )
    tables: dict[str, pd.DataFrame] = {}
    comparison = _controls(analyses or {})
    if analyses:
        page.section("Summary")
        _summary(page, analyses, comparison)
    _extraction_section(page, run, tables)
    _masks_section(page, run, tables)
    if truth is not None and len(truth):
        _truth_section(page, truth, tables)
    if analyses:
        _associations_section(page, analyses, tables, top=top)
        _cca_section(page, analyses, tables)
        if comparison is not None:
            _controls_section(page, comparison, tables)
    return page, tables


def _extraction_section(page: Any, run: Any, tables: dict[str, pd.DataFrame]) -> None:
    """What was extracted, and the failures table."""
    info = run.info
    counts = info.get("counts", {})
    page.section("Extraction")
    page.paragraph(
        f"{counts.get('extracted', 0)} of {counts.get('images', 0)} images extracted, "
        f"{counts.get('features', 0)} features each (region: {info['region']}); "
        f"{counts.get('masks_flagged', 0)} implausible mask(s) excluded; "
        f"{counts.get('computed', 0)} computed in this run, {counts.get('from_cache', 0)} from the "
        "cache."
    )
    failures = run.failures
    tables["failures"] = failures
    if len(failures):
        page.note(
            f"{len(failures)} failure row(s): images or values left out, never silently NaN.",
            kind="warning",
        )
        page.table(failures.head(50), caption="Failures (first 50; all in failures.csv)")


def _masks_section(page: Any, run: Any, tables: dict[str, pd.DataFrame]) -> None:
    """The lung masks: their source, the gallery of outlines, the flagged ones."""
    page.section("Lung masks")
    masks = run.masks
    tables["masks"] = masks
    flagged = masks[~masks["plausible"].astype(bool)]
    page.paragraph(
        f"Mask source: {run.info.get('mask_source', '')}. Area fraction median "
        f"{masks['area_fraction'].median():.3f}; {len(flagged)} flagged (excluded)."
    )
    page.paragraph(
        "Mask outlines on their films, worst first: flagged masks (red, most flags first), then "
        "accepted masks (green) from the least lung-like up (lowest contrast with their "
        "surroundings). Look for outlines that run into the neck, the shoulders, the axillae or "
        "below the diaphragm."
    )
    page.html(_mask_gallery(run))
    if len(flagged):
        page.table(flagged.head(50), caption="Flagged masks (excluded from extraction)")


def _truth_section(page: Any, truth: pd.DataFrame, tables: dict[str, pd.DataFrame]) -> None:
    """The phantom's planted signatures: found or not."""
    page.section("Phantom ground truth")
    page.paragraph(
        "For each planted signature, the radiomic feature whose value best tracks the planted "
        "severity (Spearman rho within the class; and across the class plus Normal images)."
    )
    tables["phantom_truth"] = truth
    shown = truth_table(truth)
    for text in truth_sentences(truth):
        page.paragraph(text)
    page.table(
        shown,
        caption="found: an expected family's best |rho| beats the null (null_rho99: 99th "
        "percentile of the best |rho| over all features searched under permuted severity; "
        "chance_rho ≈ 3.3/sqrt(n) where no null was run). Every column in "
        "radiomics_phantom_truth.csv.",
    )


def _associations_section(
    page: Any,
    analyses: Mapping[str, StrategyAnalysis],
    tables: dict[str, pd.DataFrame],
    *,
    top: int,
) -> None:
    """Each strategy's deep x radiomic correlations: a line, a heatmap, the top pairs."""
    page.section("Deep features versus radiomics")
    page.paragraph(
        "Spearman correlation of every deep feature with every radiomic feature; "
        "q = Benjamini-Hochberg FDR over all pairs of a strategy."
    )
    pair_tables, summaries, dropped = [], [], []
    for name, a in analyses.items():
        res = a.result
        if a.basis_note:
            page.note(
                f"{name}: {a.basis_note}.",
                kind="warning" if a.unit_basis == "unmatched" else "info",
            )
        line = (
            f"{name}: {a.n_images} images, {res.n_significant} of {res.rho.size} pairs with q < "
            f"{res.fdr_alpha}"
        )
        if a.partial is not None:
            line += (
                f"; {a.partial.n_significant} after partialling out "
                f"{', '.join(a.partial.covariates)}"
            )
        page.paragraph(line + ".")
        page.figure(
            heatmap_figure(res, title=f"{name}: strongest deep × radiomic correlations"),
            caption="Rows/columns ordered by hierarchical clustering; red = positive rho.",
        )
        pairs = _with_agreement(res.table().head(top), a)
        pairs.insert(0, "strategy", name)
        page.table(pairs, caption=f"{name}: top {top} associations", float_format="{:.3g}")
        pair_tables.append(
            _with_agreement(res.table(only_significant=True).head(5000), a).assign(strategy=name)
        )
        summaries.append(_with_agreement(res.summary(), a).assign(strategy=name))
        dropped.append(res.dropped.assign(strategy=name))
    tables["associations"] = pd.concat(pair_tables, ignore_index=True)
    tables["deep_summary"] = pd.concat(summaries, ignore_index=True)
    tables["dropped_features"] = pd.concat(dropped, ignore_index=True)
    n_dropped = len(tables["dropped_features"])
    if n_dropped:
        page.note(
            f"{n_dropped} constant or incomplete feature(s) dropped before correlating "
            "(dropped_features.csv)."
        )


def _with_agreement(table: pd.DataFrame, analysis: StrategyAnalysis) -> pd.DataFrame:
    """``table`` (one row per deep feature or pair, column ``deep``) with ``members_agree_in`` after
    ``deep``: the classes on whose images a matched family's members agree (unchanged without
    matched families)."""
    if not analysis.agree_in or "deep" not in table.columns:
        return table
    out = table.copy()
    out.insert(
        out.columns.get_loc("deep") + 1,
        "members_agree_in",
        out["deep"].map(analysis.agree_in).fillna(""),
    )
    return out


def _cca_section(
    page: Any, analyses: Mapping[str, StrategyAnalysis], tables: dict[str, pd.DataFrame]
) -> None:
    """The cross-validated canonical correlations of each strategy."""
    page.section("Canonical correlation")
    page.paragraph(
        "Cross-validated on the run's folds: deep features reduced by PCA (50 components), "
        "radiomics by PCA (20), CCA fitted on training folds; cc = held-out canonical "
        "correlations; r2_deep_pcs = out-of-fold R² of a ridge regression from radiomics to the "
        "deep PCA scores; variance_explained = that share of all deep-feature variance. The deep "
        "features are those of the section above (matched unit families where each fold trained "
        "its own backbone)."
    )
    for name, a in analyses.items():
        if a.unit_basis == "unmatched":
            page.note(
                f"{name}: units not matched across folds, so the held-out fold's unit j is another "
                "network's unit than the training folds' unit j; its figures here are not a "
                "reading of how much radiomics explain.",
                kind="warning",
            )
    tables["cca"] = _cca_table(analyses)
    page.table(tables["cca"])


def _controls_section(page: Any, comparison: pd.DataFrame, tables: dict[str, pd.DataFrame]) -> None:
    """The negative controls per strategy, with each strategy's verdict."""
    page.section("Negative controls")
    page.paragraph(
        "shuffled: lung pixels randomly permuted (texture destroyed, histogram kept); "
        "outside: the image content outside the lungs. " + _THRESHOLDS_TEXT
    )
    tables["controls"] = comparison
    page.table(
        comparison[
            [
                "strategy",
                "variant",
                "n_pairs",
                "n_significant",
                "n_associated",
                "fraction_associated",
                "n_associated_texture",
                "n_associated_firstorder",
            ]
        ],
        float_format="{:.3g}",
        caption="Pairs per strategy and variant: FDR-significant, and associated (significant with "
        f"|rho| >= {_TH.min_abs_rho:g}, what the verdicts count); median |rho| per family in "
        "radiomics_controls.csv.",
    )
    for name, verdict in _verdicts(comparison).items():
        page.note(
            f"{name}: {verdict}", kind="info" if verdict.startswith("Consistent") else "warning"
        )


_TH = ControlThresholds()
_THRESHOLDS_TEXT = (
    "Verdicts follow stated thresholds (biomark.analysis.controls.ControlThresholds): a pair is "
    f"associated when FDR-significant with |rho| >= {_TH.min_abs_rho:g} (with thousands of images, "
    "significance alone is reached below |rho| 0.1, by anything that differs between classes); at "
    f"least {_TH.min_significant} associated pairs and {_TH.min_fraction:.0%} of the pairs to "
    f"compare; outside the lungs below {_TH.max_outside_ratio:.0%} of the lung rate of associated "
    "pairs to count as specific to the lungs (at 100 % or more: shortcut suspected); with the lung "
    f"pixels shuffled, at most {_TH.max_texture_retention:.0%} as many associated texture pairs as "
    f"with the real pixels; radiomics explaining at least {_TH.min_variance_explained:.0%} of the "
    "deep-feature variance out of fold (0 under the null); and a model above chance."
)


def _controls(analyses: Mapping[str, StrategyAnalysis]) -> pd.DataFrame | None:
    """The controls table with each strategy's verdict (None without controls)."""
    per_strategy = {n: a.controls for n, a in analyses.items() if len(a.controls) > 1}
    if not per_strategy:
        return None
    return compare_controls(
        per_strategy,
        variance_explained={  # unmatched units: the CCA tests one network's units on another's
            n: float(a.cca.get("variance_explained", np.nan))
            if a.unit_basis != "unmatched"
            else np.nan
            for n, a in analyses.items()
        },
        learned={n: a.learned for n, a in analyses.items()},
    )


def _verdicts(comparison: pd.DataFrame) -> dict[str, str]:
    return comparison.drop_duplicates("strategy").set_index("strategy")["verdict"].to_dict()


def strategy_verdicts(
    analyses: Mapping[str, StrategyAnalysis], comparison: pd.DataFrame | None = None
) -> dict[str, str]:
    """Per strategy, the sentence the page's summary gives it (the negative controls' verdict, or
    why none).

    Parameters
    ----------
    analyses : mapping of str to StrategyAnalysis
    comparison : DataFrame, optional
        :func:`biomark.analysis.controls.compare_controls` of ``analyses``
        (computed here when not given).
    """
    if comparison is None:
        comparison = _controls(analyses)
    verdicts = _verdicts(comparison) if comparison is not None else {}
    out = {}
    for name, a in analyses.items():
        if name in verdicts:
            out[name] = verdicts[name]
        elif not a.learned:
            out[name] = "No feature-level verdict: the model is not above chance."
        else:
            out[name] = (
                "No verdict: the negative controls were not extracted (biomark radiomics "
                "--controls)."
            )
    return out


def _summary(
    page: Any, analyses: Mapping[str, StrategyAnalysis], comparison: pd.DataFrame | None
) -> None:
    """Chance guard first, then each strategy's verdict, so nothing below is read without them."""
    add_chance_guard(page, [a.guard for a in analyses.values() if a.guard is not None])
    verdicts = strategy_verdicts(analyses, comparison)
    for name, a in analyses.items():
        page.paragraph(f"{name}: {verdicts[name]}")
        if a.unit_basis == "unmatched":
            page.note(f"{name}: {a.basis_note}.", kind="warning")
    controls = [name for name, a in analyses.items() if a.random_control]
    if controls:
        they = (
            "these start from one seeded random backbone, random-features controls"
            if len(controls) > 1
            else "it starts from a seeded random backbone, a random-features control"
        )
        page.note(
            f"{', '.join(controls)}: model.weights is 'none', so {they}, not ImageNet: what is "
            "read here of random features says nothing about pretrained ones.",
            kind="warning",
        )


def truth_table(truth: pd.DataFrame) -> pd.DataFrame:
    """The phantom ground truth narrowed to what a reader needs, the found/not-found column
    first."""
    found_col = "expected_found_overall" if "expected_found_overall" in truth else "expected_found"
    found = truth[found_col].map({True: "found", False: "not found"}).fillna("not scored")
    out = pd.DataFrame(
        {"class": truth["class"], "found": found, "expected": truth["expected"], "n": truth["n"]}
    )
    if "best_overall" in truth:
        out["best feature (region)"] = [
            f"{b} ({r})" if isinstance(b, str) and b else "–"
            for b, r in zip(truth["best_overall"], truth["region_overall"], strict=True)
        ]
        out["rho"] = truth["rho_overall"]
        out["null_rho99"] = truth["null_rho99"]
    else:
        out["best feature"] = truth["best_feature"]
        out["rho"] = truth["rho_within"]
        out["chance_rho"] = truth["chance_rho"]
    return out


def truth_sentences(truth: pd.DataFrame) -> list[str]:
    """One sentence per planted class: found or not, with the number and the bar it was read
    against."""
    out = []
    overall = "expected_found_overall" in truth
    for _, r in truth.iterrows():
        if isinstance(r.get("note"), str) and r["note"]:
            out.append(f"{r['class']}: {r['note']}.")
            continue
        groups = [g.strip() for g in str(r["expected"]).split(",") if g.strip()]
        key = "rho_overall_{}" if overall else "rho_{}"
        bar, bar_name = (
            (r["null_rho99"], "the null's 99th percentile")
            if overall
            else (r["chance_rho"], "chance")
        )

        def size(group: str) -> float:
            value = pd.to_numeric(r.get(key.format(group)), errors="coerce")  # noqa: B023 - used in this row
            return abs(float(value)) if np.isfinite(value) else 0.0

        best = max(groups, key=size, default="")
        value = size(best) if best else float("nan")
        found = bool(r["expected_found_overall" if overall else "expected_found"])
        burden = pd.to_numeric(r.get("rho_burden_overall"), errors="coerce")
        out.append(
            f"{r['class']}: {'found' if found else 'not found'}: the best expected-family ({best}) "
            f"feature has |rho| {value:.2f} {'>' if found else '≤'} {bar:.2f} ({bar_name})"
            + (
                f"; against the planted burden (how much signature the film holds) the best "
                f"feature, {r['best_burden_overall']}, has rho {burden:+.2f}"
                if np.isfinite(burden)
                else ""
            )
            + "."
        )
    return out


def write_radiomics_report(
    report_dir: str | Path,
    run: Any,
    manifest: pd.DataFrame,
    analyses: Mapping[str, StrategyAnalysis] | None = None,
    truth: pd.DataFrame | None = None,
    *,
    title: str = "Radiomics",
) -> Path:
    """Write ``radiomics.html`` and its tables (``radiomics_<table>.csv``) into ``report_dir``.

    Returns
    -------
    Path
        The HTML page.
    """
    report_dir = Path(report_dir)
    page, tables = build_page(title, run, manifest, analyses, truth)
    for name, frame in tables.items():
        write_csv_atomic(report_dir / f"radiomics_{name}.csv", frame)
    return page.write(report_dir / "radiomics.html")
