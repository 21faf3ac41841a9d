"""The chance guard as every page shows it: a warning per strategy that has not learned, then the
numbers.

One renderer for the report, compare and radiomics pages, so the three say
the same thing in the same words (:mod:`biomark.analysis.chance` computes).
"""

from __future__ import annotations

import logging
from collections.abc import Iterable

import pandas as pd

from biomark.analysis.chance import ChanceGuard, guard_table, p_value_text
from biomark.report.page import Page

__all__ = ["GUARD_CAPTION", "add_chance_guard", "guard_frame"]

logger = logging.getLogger(__name__)

GUARD_CAPTION = (
    "Chance guard: pooled out-of-fold accuracy with its 95% Wilson interval, against always giving "
    "the most frequent answer (the majority rate; one-sided exact binomial test, scipy binomtest). "
    "A strategy whose n-class accuracy is not above it has not learned: none of its features is "
    "called a candidate and no feature-level verdict is drawn from them."
)


def _pct(value: float) -> str:
    return f"{100 * value:.1f}"


def guard_frame(guards: Iterable[ChanceGuard]) -> pd.DataFrame:
    """:func:`biomark.analysis.chance.guard_table` formatted for reading (percentages, interval in
    one cell).

    Examples
    --------
    >>> from biomark.analysis.chance import chance_guard
    >>> guessing = chance_guard(["a", "b", "c"] * 20, ["a"] * 60, strategy="scratch")
    >>> seeing = chance_guard(["a", "b", "c"] * 20, ["a", "b", "c"] * 20, strategy="frozen")
    >>> guard_frame([guessing, seeing])[["strategy", "accuracy % [95% CI]", "verdict"]]
      strategy  accuracy % [95% CI]                      verdict
    0  scratch    33.3 [22.7, 45.9]  not above the majority rate
    1   frozen  100.0 [94.0, 100.0]      above the majority rate
    """
    t = guard_table(guards)
    return pd.DataFrame(
        {
            "strategy": t["strategy"],
            "task": t["task"],
            "images": t["n"],
            "accuracy % [95% CI]": [
                f"{_pct(a)} [{_pct(lo)}, {_pct(hi)}]"
                for a, lo, hi in zip(t["accuracy"], t["ci_low"], t["ci_high"], strict=True)
            ],
            "majority rate % (answer)": [
                f"{_pct(v)} ({c})"
                for v, c in zip(t["majority_rate"], t["majority_class"], strict=True)
            ],
            "chance %": [_pct(v) for v in t["chance_rate"]],
            "p (> majority)": [p_value_text(v) for v in t["p_value"]],
            "verdict": t["verdict"],
        }
    )


def add_chance_guard(page: Page, guards: Iterable[ChanceGuard]) -> Page:
    """Add a warning note for each strategy that has not learned (or whose 2-class figure is not
    above the majority rate), then the table of :func:`guard_frame`. Nothing is added without
    guards.

    Examples
    --------
    >>> from biomark.analysis.chance import chance_guard
    >>> guessing = chance_guard(["a", "b", "c"] * 20, ["a"] * 60, strategy="scratch")
    >>> seeing = chance_guard(["a", "b", "c"] * 20, ["a", "b", "c"] * 20, strategy="frozen")
    >>> html = add_chance_guard(Page("Demo"), [guessing, seeing]).render()
    >>> html.count('class="note warning"'), html.count("<table")  # one warning: scratch
    (1, 1)
    >>> "<table" in add_chance_guard(Page("Demo"), []).render()
    False
    """
    guards = list(guards)
    for guard in guards:
        banner = guard.banner()
        if banner:
            page.note(banner, kind="warning")
    if guards:
        page.table(guard_frame(guards), caption=GUARD_CAPTION)
    return page
