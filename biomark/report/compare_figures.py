"""The figures of the ``biomark compare`` page (plotly): similarity per fold, its null, per block,
UMAP.

Each builder takes the :class:`~biomark.analysis.compare.CompareResult` (or
one of its :class:`~biomark.analysis.similarity.FoldSimilarity` entries) and
returns a plotly figure for :meth:`biomark.report.page.Page.figure`;
:mod:`biomark.report.compare_page` places them.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd

from biomark.analysis.compare import CompareResult
from biomark.analysis.similarity import FoldSimilarity

__all__ = ["METRIC_NAMES", "fold_figure", "heatmap_figure", "null_figure", "umap_figure"]

#: Display names of the similarity metrics.
METRIC_NAMES = {
    "linear_cka_debiased": "Linear CKA, debiased (headline)",
    "linear_cka_biased": "Linear CKA, biased (as in Kornblith et al. 2019)",
    "rbf_cka_debiased": "RBF CKA, debiased",
}


def fold_figure(result: CompareResult) -> Any:
    import plotly.graph_objects as go

    fig = go.Figure()
    for metric, sim in result.cka.items():
        x = [f"fold {f}" for f in sim.folds]
        has_ci = np.isfinite(sim.fold_ci).all()
        fig.add_trace(
            go.Scatter(
                x=x,
                y=sim.values,
                mode="markers+lines",
                name=METRIC_NAMES.get(metric, metric),
                error_y=dict(
                    type="data",
                    array=sim.fold_ci[:, 1] - sim.values,
                    arrayminus=sim.values - sim.fold_ci[:, 0],
                    visible=bool(has_ci),
                ),
                customdata=np.stack([sim.n_images], axis=1),
                hovertemplate="%{x}: %{y:.3f}<br>n = %{customdata[0]} images<extra>"
                + metric
                + "</extra>",
            )
        )
    fig.add_hline(y=0, line_color="#999", line_dash="dot")
    fig.update_layout(
        height=380,
        margin=dict(l=50, r=20, t=30, b=40),
        yaxis_title="CKA",
        yaxis_range=[
            min(
                -0.05,
                float(
                    min(
                        s.fold_ci[:, 0].min() if np.isfinite(s.fold_ci).all() else s.values.min()
                        for s in result.cka.values()
                    )
                ),
            ),
            1.05,
        ],
        legend=dict(orientation="h", y=1.12),
        template="plotly_white",
    )
    return fig


def null_figure(sim: FoldSimilarity) -> Any:
    import plotly.graph_objects as go

    fig = go.Figure(
        go.Histogram(x=sim.null_means, nbinsx=40, name="shuffled pairing", marker_color="#9fb3d1")
    )
    fig.add_vline(x=sim.mean, line_color="#c0392b", annotation_text=f"observed {sim.mean:.3f}")
    fig.update_layout(
        height=300,
        margin=dict(l=50, r=20, t=30, b=40),
        template="plotly_white",
        xaxis_title="fold-mean debiased linear CKA under permutation",
        yaxis_title="permutations",
        showlegend=False,
    )
    return fig


def heatmap_figure(result: CompareResult) -> Any:
    import plotly.graph_objects as go

    lw = result.layerwise
    assert lw is not None
    fig = go.Figure(
        go.Heatmap(
            z=lw.matrix,
            x=list(lw.blocks_b),
            y=list(lw.blocks_a),
            colorscale="Viridis",
            zmin=0,
            zmax=1,
            colorbar=dict(title="CKA"),
            hovertemplate=(
                f"{result.a} %{{y}}<br>{result.b} %{{x}}<br>CKA %{{z:.3f}}<extra></extra>"
            ),
        )
    )
    fig.update_layout(
        height=560,
        margin=dict(l=90, r=20, t=30, b=90),
        template="plotly_white",
        xaxis_title=f"{result.b} block",
        yaxis_title=f"{result.a} block",
    )
    return fig


#: Hover text of a UMAP point (the columns of :func:`_umap_panel`'s ``custom``).
_UMAP_HOVER = (
    "%{customdata[0]}<br>label %{customdata[1]}<br>prediction %{customdata[2]}"
    "<br>fold %{customdata[3]} · source %{customdata[4]} · patient "
    "%{customdata[5]}<extra></extra>"
)


@dataclass(frozen=True)
class _UmapPanel:
    """One strategy's side of the UMAP figure: its map and the hover data of its points."""

    coords: np.ndarray  # (n_images, 2) UMAP coordinates
    custom: np.ndarray  # (n_images, 6) image, label, prediction, fold, source, patient as text
    first: bool  # the left panel, whose traces carry the legend


def _umap_panel(result: CompareResult, strategy: str, first: bool) -> _UmapPanel:
    """The panel of ``strategy``: left when ``first`` (predictions ``pred``), else ``pred_b``."""
    meta = result.meta
    coords = result.embedding[strategy].coords
    assert coords is not None, "the UMAP figure is drawn only when both strategies have a map"
    blank = pd.Series("", index=meta.index)
    pred_column = "pred" if first else "pred_b"  # load_pair puts B's predictions in pred_b
    custom = np.stack(
        [
            meta[c].astype(str) if c in meta else blank
            for c in ("image_id", "label", pred_column, "fold", "source", "patient_id")
        ],
        axis=1,
    )
    return _UmapPanel(coords=coords, custom=custom, first=first)


def _option_traces(
    panel: _UmapPanel, option: str, values: np.ndarray, palette: list[str]
) -> list[Any]:
    """The scatter traces of one panel coloured by one option (one per category, or one scale).

    Parameters
    ----------
    panel : _UmapPanel
    option : str
        What the points are coloured by (``class``, ``fold``, ``source``, ``patient``); the
        ``class`` traces are the visible ones at first.
    values : ndarray of str, shape (n_images,)
        The option's value of every point.
    palette : list of str
        Colours of the categories; with more categories than colours, and for patients,
        one trace on a continuous scale instead.

    Returns
    -------
    list of plotly.graph_objects.Scatter
    """
    import plotly.graph_objects as go

    coords, custom = panel.coords, panel.custom
    categories = sorted(np.unique(values), key=lambda v: (len(v), v))
    many = option == "patient" or len(categories) > len(palette)
    if many:
        codes = pd.Series(values).astype("category").cat.codes.to_numpy()
        return [
            go.Scatter(
                x=coords[:, 0],
                y=coords[:, 1],
                mode="markers",
                name=f"{option} ({len(categories)})",
                marker=dict(color=codes, colorscale="Turbo", size=6, opacity=0.8),
                customdata=custom,
                hovertemplate=_UMAP_HOVER,
                showlegend=False,
                visible=option == "class",
            )
        ]
    traces = []
    for c_i, category in enumerate(categories):
        rows = values == category
        traces.append(
            go.Scatter(
                x=coords[rows, 0],
                y=coords[rows, 1],
                mode="markers",
                name=f"{option} {category}",
                legendgroup=f"{option}-{category}",
                showlegend=panel.first,
                marker=dict(color=palette[c_i % len(palette)], size=6, opacity=0.8),
                customdata=custom[rows],
                hovertemplate=_UMAP_HOVER,
                visible=option == "class",
            )
        )
    return traces


def _colour_buttons(visibility: dict[str, list[int]], n_traces: int) -> list[dict[str, Any]]:
    """One 'colour by' menu button per option, showing only that option's traces."""
    buttons = []
    for option in visibility:
        mask = [False] * n_traces
        for i in visibility[option]:
            mask[i] = True
        buttons.append(dict(label=f"colour by {option}", method="update", args=[{"visible": mask}]))
    return buttons


def umap_figure(result: CompareResult) -> Any:
    from plotly.colors import qualitative
    from plotly.subplots import make_subplots

    meta = result.meta
    strategies = [result.a, result.b]
    fig = make_subplots(
        rows=1,
        cols=2,
        subplot_titles=[f"{s} (d = {result.dims[s]})" for s in strategies],
        horizontal_spacing=0.06,
    )
    columns = {"class": "label", "fold": "fold", "source": "source", "patient": "patient_id"}
    columns = {k: v for k, v in columns.items() if v in meta}
    palette = qualitative.Plotly + qualitative.D3
    visibility: dict[str, list[int]] = {k: [] for k in columns}
    for col_i, strategy in enumerate(strategies, start=1):
        panel = _umap_panel(result, strategy, first=col_i == 1)
        for option, column in columns.items():
            values = meta[column].astype(str).to_numpy()
            for trace in _option_traces(panel, option, values, palette):
                fig.add_trace(trace, row=1, col=col_i)
                visibility[option].append(len(fig.data) - 1)
    buttons = _colour_buttons(visibility, len(fig.data))
    fig.update_layout(
        height=520,
        template="plotly_white",
        margin=dict(l=30, r=20, t=70, b=30),
        updatemenus=[
            dict(buttons=buttons, direction="down", x=0.0, xanchor="left", y=1.16, yanchor="top")
        ],
        legend=dict(itemsizing="constant"),
    )
    fig.update_xaxes(showticklabels=False, title_text="UMAP 1")
    fig.update_yaxes(showticklabels=False, title_text="UMAP 2")
    return fig
