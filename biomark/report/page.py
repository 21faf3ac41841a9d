"""A small builder for self-contained HTML report pages.

A page is a list of blocks (headings, paragraphs, tables, plotly figures,
notes) rendered into one HTML file that opens offline: plotly.js is embedded
once, inline, however many figures the page has; the CSS is inline too.

Examples
--------
>>> import pandas as pd
>>> page = Page("Demo report", subtitle="what this page shows")
>>> page.section("Numbers").paragraph("Two rows.").table(pd.DataFrame({"x": [1, 2]}))  # doctest: +ELLIPSIS
<biomark.report.page.Page object at ...>
>>> "<h2" in page.render()
True

Other report pages (compare, radiomics, the biomarker report) build on this:
``Page(title).section(...).paragraph(...).figure(fig).write(path)``.
"""  # noqa: E501

from __future__ import annotations

import html
import logging
import math
import re
from collections.abc import Mapping
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Literal

import pandas as pd

from biomark import __version__
from biomark.analysis.chance import SMALLEST_P, p_value_text
from biomark.io.atomic import write_text_atomic

__all__ = ["Page", "escape", "percent", "percent_ci"]

logger = logging.getLogger(__name__)

NoteKind = Literal["info", "warning"]

#: Columns that hold p- or q-values, by name (``p``, ``q``, ``p_adjusted``, ``mixed_q``,
#: ``severity_p``, ...): an exact 0 there is a value that underflowed, shown as a bound.
_P_VALUE_COLUMN = re.compile(r"^(p|q)$|_(p|q)$|^(p|q)_")


def _number(value: float, column: Any, float_format: str) -> str:
    """A finite float as a table cell shows it: ``< 1e-300`` for a p- or q-value that underflowed
    to 0 (:func:`biomark.analysis.chance.p_value_text`), else ``float_format``."""
    if 0 <= value < SMALLEST_P and _P_VALUE_COLUMN.search(str(column)):
        return p_value_text(value)
    return float_format.format(value)


_CSS = """
:root { --fg:#1d2330; --muted:#5b6475; --line:#dde2ea; --accent:#2f5d9e; --bg:#ffffff; --soft:#f5f7fa; }
* { box-sizing: border-box; }
body { margin:0; background:var(--soft); color:var(--fg);
       font: 15px/1.55 -apple-system, "Segoe UI", Roboto, "Helvetica Neue", Arial, sans-serif; }
main { max-width: 1180px; margin: 0 auto; padding: 28px 32px 40px; background: var(--bg);
       min-height: 100vh; box-shadow: 0 0 0 1px var(--line); }
header.page-header { border-bottom: 2px solid var(--accent); margin-bottom: 18px; padding-bottom: 10px; }
h1 { font-size: 1.7em; margin: 0 0 4px; }
.subtitle { color: var(--muted); margin: 0; }
h2 { font-size: 1.3em; margin: 34px 0 10px; padding-bottom: 4px; border-bottom: 1px solid var(--line); }
h3 { font-size: 1.08em; margin: 26px 0 8px; }
p { margin: 8px 0 12px; max-width: 78ch; }
nav.toc { font-size: .92em; color: var(--muted); margin: 8px 0 0; }
nav.toc a { color: var(--accent); text-decoration: none; margin-right: 14px; }
figure { margin: 14px 0 22px; }
figcaption { color: var(--muted); font-size: .9em; margin-top: 4px; max-width: 90ch; }
table.data { border-collapse: collapse; font-size: .9em; margin: 6px 0; }
table.data th, table.data td { padding: 5px 10px; border-bottom: 1px solid var(--line); text-align: right; }
table.data th { background: var(--soft); font-weight: 600; }
table.data td:first-child, table.data th:first-child { text-align: left; }
table.data tbody tr:hover { background: #eef3fb; }
.table-wrap { overflow-x: auto; }
.note { border-left: 4px solid var(--accent); background: #eef3fb; padding: 8px 12px; margin: 10px 0; max-width: 90ch; }
.note.warning { border-color: #c77700; background: #fff5e6; }
footer.provenance { margin-top: 40px; padding-top: 10px; border-top: 1px solid var(--line);
                    color: var(--muted); font-size: .82em; }
footer.provenance dl { display: grid; grid-template-columns: max-content 1fr; gap: 2px 14px; margin: 6px 0; }
footer.provenance dt { font-weight: 600; }
footer.provenance dd { margin: 0; word-break: break-all; }
code { background: var(--soft); padding: 1px 4px; border-radius: 3px; font-size: .92em; }
.table-scroll { max-height: 520px; overflow: auto; border: 1px solid var(--line); }
.table-scroll table.data { margin: 0; }
.table-scroll thead th { position: sticky; top: 0; z-index: 1; }
table.data th.sortable { cursor: pointer; white-space: nowrap; }
table.data th.sortable::after { content: " \\2195"; color: var(--muted); font-weight: 400; }
table.data td.wrap { text-align: left; white-space: normal; min-width: 32ch; max-width: 60ch; }
table.data div.wrap { text-align: left; white-space: normal; min-width: 32ch; max-width: 60ch; }
.table-tools { display: flex; gap: 12px; align-items: center; margin: 6px 0; font-size: .9em; color: var(--muted); }
.table-tools input { font: inherit; padding: 3px 8px; min-width: 40ch; border: 1px solid var(--line);
                     border-radius: 3px; }
"""  # noqa: E501

#: Sorting and filtering of :meth:`Page.interactive_table` (inlined once; no library, no network).
_TABLE_JS = r"""
function bmSort(th) {
  const table = th.closest("table"), body = table.tBodies[0];
  const col = Array.prototype.indexOf.call(th.parentNode.children, th);
  const asc = th.dataset.dir !== "asc";
  th.parentNode.querySelectorAll("th").forEach(function (h) { delete h.dataset.dir; });
  th.dataset.dir = asc ? "asc" : "desc";
  const key = function (row) {
    const c = row.cells[col];
    return c.dataset.v !== undefined ? c.dataset.v : c.textContent;
  };
  const rows = Array.prototype.slice.call(body.rows);
  rows.sort(function (a, b) {
    const x = key(a), y = key(b), nx = parseFloat(x), ny = parseFloat(y);
    if (x === "" || y === "") { return (x === "") - (y === ""); }
    const c = (!isNaN(nx) && !isNaN(ny)) ? nx - ny : x.localeCompare(y);
    return asc ? c : -c;
  });
  rows.forEach(function (r) { body.appendChild(r); });
}
function bmFilter(input) {
  const table = document.getElementById(input.dataset.table), words = input.value.toLowerCase().split(/\s+/);
  let shown = 0;
  Array.prototype.forEach.call(table.tBodies[0].rows, function (row) {
    const text = row.textContent.toLowerCase();
    const ok = words.every(function (w) { return text.indexOf(w) >= 0; });
    row.style.display = ok ? "" : "none";
    shown += ok ? 1 : 0;
  });
  document.getElementById(input.dataset.table + "-count").textContent =
    shown + " of " + table.tBodies[0].rows.length + " rows";
}
"""  # noqa: E501


def escape(text: Any) -> str:
    """HTML-escape ``text`` (quotes included).

    Examples
    --------
    >>> escape('<b class="x">AUC & q</b>')
    '&lt;b class=&quot;x&quot;&gt;AUC &amp; q&lt;/b&gt;'
    """
    return html.escape(str(text), quote=True)


def percent(value: Any) -> str:
    """A fraction as a percentage with one decimal (``0.4567`` -> ``"45.7"``); "–" for None or
    NaN.

    Examples
    --------
    >>> percent(0.4567), percent(1), percent(None), percent(float("nan"))
    ('45.7', '100.0', '–', '–')
    """
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "–"
    return f"{100 * float(value):.1f}"


def percent_ci(value: float, low: float, high: float) -> str:
    """A fraction and its interval as percentages: ``"45.7 [40.1, 51.2]"``.

    Examples
    --------
    >>> percent_ci(0.4567, 0.401, 0.512)
    '45.7 [40.1, 51.2]'
    """
    return f"{percent(value)} [{percent(low)}, {percent(high)}]"


def _slug(text: str, taken: set[str]) -> str:
    base = re.sub(r"[^a-z0-9]+", "-", text.lower()).strip("-") or "section"
    slug, i = base, 2
    while slug in taken:
        slug, i = f"{base}-{i}", i + 1
    taken.add(slug)
    return slug


class Page:
    """A self-contained HTML page built block by block.

    Parameters
    ----------
    title : str
        Page title (``<title>`` and the top heading).
    subtitle : str, optional
        One line under the title.
    provenance : mapping of str to Any, optional
        Extra facts for the footer (run folder, settings, versions...). The
        footer always shows the generation time and the biomark version.
    toc : bool, default True
        Show a table of contents of the sections under the title.

    Notes
    -----
    Every method that adds a block returns the page, so calls chain. Text
    given to :meth:`paragraph`, :meth:`note`, :meth:`section` and captions is
    escaped; use :meth:`html` for trusted raw markup. plotly.js is inlined
    once (about 4.5 MB), at the first figure, so pages open without network.

    Examples
    --------
    Blocks chain; text is escaped, floats in tables follow ``float_format``
    and a p-value of exactly 0 (an underflow) shows as a bound:

    >>> import tempfile
    >>> from pathlib import Path
    >>> page = Page("Demo report", subtitle="a tiny page", provenance={"run": "demo"})
    >>> table = pd.DataFrame({"feature": ["f0012", "f0200"], "auc": [0.8123, 0.5], "q": [0.0, 0.4]})
    >>> _ = (
    ...     page.section("Results")
    ...     .paragraph("AUC & q per feature.")
    ...     .table(table, caption="Two features.")
    ...     .note("Only 40 images: wide intervals.", kind="warning")
    ... )
    >>> with tempfile.TemporaryDirectory() as tmp:
    ...     path = page.write(Path(tmp) / "report" / "index.html")
    ...     text = path.read_text(encoding="utf-8")
    ...     print(path.name, path.exists())
    index.html True
    >>> '<h2 id="results">Results</h2>' in text, "AUC &amp; q" in text
    (True, True)
    >>> "0.812" in text, "&lt; 1e-300" in text, 'class="note warning"' in text
    (True, True, True)
    >>> page.note("?", kind="error")
    Traceback (most recent call last):
    ...
    ValueError: note kind='error': use 'info' or 'warning'
    """

    def __init__(
        self,
        title: str,
        subtitle: str | None = None,
        *,
        provenance: Mapping[str, Any] | None = None,
        toc: bool = True,
    ) -> None:
        self.title = title
        self.subtitle = subtitle
        self.provenance: dict[str, Any] = dict(provenance or {})
        self.toc = toc
        self._blocks: list[str] = []
        self._sections: list[tuple[str, str]] = []
        self._slugs: set[str] = set()
        self._n_figures = 0
        self._n_tables = 0

    # ----------------------------------------------------------------- blocks
    def section(self, title: str) -> Page:
        """Start a section (an ``<h2>`` with an anchor listed in the contents)."""
        slug = _slug(title, self._slugs)
        self._sections.append((slug, title))
        self._blocks.append(f'<h2 id="{slug}">{escape(title)}</h2>')
        return self

    def subsection(self, title: str) -> Page:
        """A heading inside a section (an ``<h3>``, not listed in the contents)."""
        self._blocks.append(f"<h3>{escape(title)}</h3>")
        return self

    def paragraph(self, text: str) -> Page:
        """A paragraph of plain text (escaped)."""
        self._blocks.append(f"<p>{escape(text)}</p>")
        return self

    def note(self, text: str, kind: NoteKind = "info") -> Page:
        """A highlighted note; ``kind="warning"`` for things that limit the results.

        Raises
        ------
        ValueError
            If ``kind`` is not ``info`` or ``warning``.
        """
        if kind not in ("info", "warning"):
            raise ValueError(f"note kind={kind!r}: use 'info' or 'warning'")
        self._blocks.append(f'<div class="note {kind}">{escape(text)}</div>')
        return self

    def html(self, raw: str) -> Page:
        """Insert trusted raw HTML as is."""
        self._blocks.append(raw)
        return self

    def table(
        self,
        frame: pd.DataFrame,
        caption: str | None = None,
        *,
        float_format: str = "{:.3f}",
        index: bool = False,
        wrap: tuple[str, ...] = (),
    ) -> Page:
        """A table of a DataFrame (floats formatted with ``float_format``; NaN shown as an en
        dash; a p- or q-value column's exact 0, which underflowed, as ``< 1e-300``); the columns in
        ``wrap`` hold long text, wrapped in a column of 32-60 characters instead of squeezed into a
        narrow one."""

        def fmt(value: Any, column: Any) -> str:
            if isinstance(value, float):
                return "–" if value != value else escape(_number(value, column, float_format))
            return escape(value)

        formatted = frame.copy()
        for column in formatted.columns:
            formatted[column] = [
                f'<div class="wrap">{fmt(v, column)}</div>' if column in wrap else fmt(v, column)
                for v in formatted[column]
            ]
        body = formatted.to_html(index=index, escape=False, border=0, classes="data")
        cap = f"<figcaption>{escape(caption)}</figcaption>" if caption else ""
        self._blocks.append(
            f'<figure class="table"><div class="table-wrap">{body}</div>{cap}</figure>'
        )
        return self

    def interactive_table(
        self,
        frame: pd.DataFrame,
        caption: str | None = None,
        *,
        float_format: str = "{:.3f}",
        wrap: tuple[str, ...] = (),
        link: str | None = None,
    ) -> Page:
        """A long table in a scroll box: click a header to sort, type to filter rows.

        Plain HTML with a few lines of inline JavaScript (included once per
        page): the page stays self-contained. Cells keep their raw value in
        ``data-v`` so numbers sort as numbers; NaN shows as an en dash and sorts
        last.

        Parameters
        ----------
        frame : DataFrame
        caption : str, optional
        float_format : str, default "{:.3f}"
        wrap : tuple of str
            Columns of long text, wrapped instead of widening the table.
        link : str, optional
            Relative path of the full table (e.g. a CSV), linked under the box.
        """
        self._n_tables += 1
        table_id = f"table-{self._n_tables}"

        def cell(value: Any, column: str) -> str:
            cls = ' class="wrap"' if column in wrap else ""
            if isinstance(value, float):
                if value != value:
                    return f'<td{cls} data-v="">–</td>'
                shown = escape(_number(value, column, float_format))
                return f'<td{cls} data-v="{value!r}">{shown}</td>'
            if value is None or value is pd.NA:
                return f'<td{cls} data-v="">–</td>'
            return f"<td{cls}>{escape(value)}</td>"

        head = "".join(
            f'<th class="sortable" onclick="bmSort(this)" title="sort">{escape(c)}</th>'
            for c in frame.columns
        )
        body = "".join(
            "<tr>" + "".join(cell(v, c) for c, v in zip(frame.columns, row, strict=True)) + "</tr>"
            for row in frame.itertuples(index=False, name=None)
        )
        tools = (
            '<div class="table-tools"><input type="search" placeholder="filter rows (all words '
            f'must match)" data-table="{table_id}" oninput="bmFilter(this)" aria-label="filter '
            f'rows"><span id="{table_id}-count">{len(frame)} rows</span>'
            + (f'<a href="{escape(link)}">{escape(link)}</a>' if link else "")
            + "</div>"
        )
        cap = f"<figcaption>{escape(caption)}</figcaption>" if caption else ""
        self._blocks.append(
            f'<figure class="table interactive">{tools}<div class="table-scroll">'
            f'<table class="data" id="{table_id}"><thead><tr>{head}</tr></thead>'
            f"<tbody>{body}</tbody></table></div>{cap}</figure>"
        )
        return self

    def figure(self, fig: Any, caption: str | None = None) -> Page:
        """A plotly figure (rendered by the inlined plotly.js; no network needed)."""
        self._n_figures += 1
        div = fig.to_html(
            full_html=False,
            include_plotlyjs=False,
            div_id=f"figure-{self._n_figures}",
            config={"displaylogo": False, "responsive": True},
        )
        cap = f"<figcaption>{escape(caption)}</figcaption>" if caption else ""
        self._blocks.append(f'<figure class="plot">{div}{cap}</figure>')
        return self

    # ----------------------------------------------------------------- output
    def _footer(self) -> str:
        facts = {
            "generated": datetime.now(UTC).isoformat(timespec="seconds"),
            "biomark": __version__,
            **self.provenance,
        }
        rows = "".join(f"<dt>{escape(k)}</dt><dd>{escape(v)}</dd>" for k, v in facts.items())
        return f'<footer class="provenance"><strong>Provenance</strong><dl>{rows}</dl></footer>'

    def render(self) -> str:
        """The whole page as an HTML string."""
        script = ""
        if self._n_figures:
            from plotly.offline import get_plotlyjs

            script = f'<script type="text/javascript">{get_plotlyjs()}</script>'
        if self._n_tables:
            script += f'<script type="text/javascript">{_TABLE_JS}</script>'
        toc = ""
        if self.toc and len(self._sections) > 1:
            links = "".join(
                f'<a href="#{slug}">{escape(title)}</a>' for slug, title in self._sections
            )
            toc = f'<nav class="toc">{links}</nav>'
        subtitle = f'<p class="subtitle">{escape(self.subtitle)}</p>' if self.subtitle else ""
        return (
            '<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">'
            '<meta name="viewport" content="width=device-width, initial-scale=1">'
            f"<title>{escape(self.title)}</title><style>{_CSS}</style>{script}</head><body><main>"
            f'<header class="page-header"><h1>{escape(self.title)}</h1>{subtitle}{toc}</header>'
            + "\n".join(self._blocks)
            + self._footer()
            + "</main></body></html>\n"
        )

    def write(self, path: str | Path) -> Path:
        """Write the page atomically (parent folders created) and return its path."""
        path = write_text_atomic(path, self.render())
        logger.info("wrote %s", path)
        return Path(path)
