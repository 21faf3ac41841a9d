"""The self-contained HTML page builder (biomark.report.page)."""

from __future__ import annotations

import re

import pandas as pd
import plotly.graph_objects as go
import pytest

from biomark.report.page import Page


def _figure(n: int = 3) -> go.Figure:
    return go.Figure(go.Scatter(x=list(range(n)), y=list(range(n))))


def test_blocks_escaped_and_in_order():
    page = Page("Title <1>", subtitle="sub & title", provenance={"run": "runs/demo"})
    page.section("First").paragraph("a < b").note("careful", kind="warning").section("First")
    html = page.render()
    assert "Title &lt;1&gt;" in html and "sub &amp; title" in html and "a &lt; b" in html
    assert html.index("First") < html.index("a &lt; b") < html.index("careful")
    assert 'id="first"' in html and 'id="first-2"' in html  # unique anchors
    assert 'class="note warning"' in html
    assert "runs/demo" in html and "generated" in html  # provenance footer


def test_a_subsection_heads_its_blocks_without_entering_the_contents():
    page = Page("t").section("Results").subsection("Scratch <a>").paragraph("its table")
    html = page.section("Methods").render()
    assert "<h3>Scratch &lt;a&gt;</h3>" in html
    assert html.index("<h3>") < html.index("its table")
    assert 'href="#results"' in html and 'href="#methods"' in html and "#scratch" not in html


def test_table_formats_numbers_and_nan():
    page = Page("t").table(
        pd.DataFrame({"name": ["x<y"], "value": [0.123456], "missing": [float("nan")]}),
        caption="cap",
    )
    html = page.render()
    assert "0.123" in html and "0.123456" not in html
    assert "x&lt;y" in html and "–" in html and "<figcaption>cap</figcaption>" in html


def test_long_text_columns_are_wrapped_and_still_escaped():
    frame = pd.DataFrame({"class": ["Edema"], "top": ["a<b; " * 20], "rho": [0.5]})
    html = Page("t").table(frame, wrap=("top", "absent")).render()
    cells = re.findall(r"<td>(.*?)</td>", html, flags=re.S)
    assert cells[0] == "Edema" and cells[2] == "0.500"
    assert cells[1].startswith('<div class="wrap">a&lt;b; ') and cells[1].endswith("</div>")
    assert "table.data div.wrap" in html  # its style: a column of 32-60 characters


def test_p_and_q_values_that_underflowed_are_shown_as_a_bound_not_as_zero():
    frame = pd.DataFrame(
        {
            "q": [0.0, 1e-120],
            "mixed_q": [float("nan"), 0.0],
            "p_adjusted": [0.0, 0.5],
            "share": [0.0, 0.5],  # not a p-value: 0 is its value
        }
    )
    html = Page("t").table(frame, float_format="{:.3g}").render()
    cells = re.findall(r"<td>(.*?)</td>", html)
    assert cells == ["&lt; 1e-300", "–", "&lt; 1e-300", "0", "1e-120", "&lt; 1e-300", "0.5", "0.5"]
    sortable = Page("t").interactive_table(frame, float_format="{:.3g}").render()
    assert 'data-v="0.0">&lt; 1e-300</td>' in sortable  # sorts as the number it is
    assert 'data-v="0.0">0</td>' in sortable


def test_plotly_inlined_once_and_only_with_figures():
    from plotly.offline import get_plotlyjs

    plotly_js = get_plotlyjs()
    marker = plotly_js[:200]
    assert marker not in Page("no figures").paragraph("x").render()
    html = Page("figs").figure(_figure()).figure(_figure(), caption="second").render()
    assert html.count(marker) == 1
    assert html.count('class="plotly-graph-div"') == 2
    outside = html.replace(plotly_js, "")
    assert re.search(r"<script[^>]*\bsrc=", html) is None and "cdn" not in outside  # opens offline


def test_note_kind_validated():
    with pytest.raises(ValueError, match="note kind='error'"):
        Page("x").note("y", kind="error")  # type: ignore[arg-type]


def test_write_is_atomic_and_creates_folders(tmp_path):
    path = Page("x").paragraph("y").write(tmp_path / "a" / "b" / "page.html")
    assert path.is_file() and path.read_text(encoding="utf-8").startswith("<!DOCTYPE html>")
    assert [p.name for p in path.parent.iterdir()] == ["page.html"]


def test_raw_html_kept():
    assert "<b>raw</b>" in Page("x").html("<b>raw</b>").render()


@pytest.mark.browser
def test_page_renders_in_chromium(tmp_path, render_in_chromium):
    page = (
        Page("Browser check").section("Plots").figure(_figure()).figure(_figure(5)).section("Table")
    )
    page.table(pd.DataFrame({"a": [1.0]}))
    result = render_in_chromium(page.write(tmp_path / "page.html"))
    assert result.errors == []
    assert result.plot_divs == 2 and result.plots_rendered == 2 and result.svg_layers >= 2
    assert result.headings == ["Browser check", "Plots", "Table"]
    assert result.title == "Browser check" and result.tables == 1


@pytest.mark.browser
def test_fixture_reports_javascript_errors(tmp_path, render_in_chromium):
    path = tmp_path / "broken.html"
    path.write_text(
        "<html><head></head><body><h1>x</h1><script>console.error('bad thing');"
        "undefinedFunction();</script></body></html>",
        encoding="utf-8",
    )
    result = render_in_chromium(path)
    assert any("bad thing" in e for e in result.errors)
    assert any("undefinedFunction" in e for e in result.errors)
    assert result.plots_rendered == 0


def _long_table() -> pd.DataFrame:
    return pd.DataFrame(
        {
            "feature": [f"f{i:04d}" for i in range(60)],
            "q": [0.5 - i / 200 for i in range(60)],
            "status": ["candidate" if i % 7 == 0 else "rejected: not stable" for i in range(60)],
            "missing": [float("nan")] * 60,
        }
    )


def test_interactive_table_keeps_the_page_self_contained():
    page = Page("t").interactive_table(
        _long_table(), caption="all rows", wrap=("status",), link="candidates.csv"
    )
    page.interactive_table(_long_table().head(3))
    html = page.render()
    assert (
        html.count("function bmSort") == 1 and html.count("function bmFilter") == 1
    )  # inlined once
    assert 'id="table-1"' in html and 'id="table-2"' in html and "60 rows" in html
    assert (
        'data-v="0.5"' in html and 'data-v="">–</td>' in html
    )  # raw values for sorting, NaN as a dash
    assert '<td class="wrap">rejected: not stable</td>' in html and 'href="candidates.csv"' in html
    assert re.search(r"<script[^>]*\bsrc=", html) is None
    assert "function bmSort" not in Page("plain").table(_long_table()).render()


@pytest.mark.browser
def test_interactive_table_sorts_and_filters_in_chromium(tmp_path, render_in_chromium):
    page = Page("Sort and filter").interactive_table(_long_table())
    # act as a reader: sort by q (ascending), then filter to the candidates, and write what is shown
    page.html(
        "<script>window.addEventListener('load', function () {"
        "bmSort(document.querySelectorAll('#table-1 th')[1]);"
        "const box = document.querySelector('.table-tools input'); box.value = 'candidate';"
        "bmFilter(box);"
        "const shown = Array.prototype.filter.call(document.querySelectorAll('#table-1 tbody tr'),"
        " function (r) { return r.style.display !== 'none'; })"
        ".map(function (r) { return r.cells[0].textContent; });"
        "document.body.insertAdjacentHTML('beforeend', '<p id=\"shown\">' + shown.join(',') + "
        "'</p>');});</script>"
    )
    result = render_in_chromium(page.write(tmp_path / "table.html"))
    assert result.errors == []
    shown = re.findall(r'<p id="shown">([^<\']*)</p>', result.dom)[-1].split(
        ","
    )  # the element, not the script
    # q falls with i, so ascending q is descending i
    assert shown == [f"f{i:04d}" for i in range(59, -1, -1) if i % 7 == 0]
    assert "9 of 60 rows" in result.dom
