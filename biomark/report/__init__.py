"""biomark.report: plotly figures and self-contained HTML pages.

:class:`~biomark.report.page.Page` builds a page that opens offline; each
report (compare, radiomics, biomarkers) has its own module that fills one.
"""

from __future__ import annotations

from biomark.report.page import Page

__all__ = ["Page"]
