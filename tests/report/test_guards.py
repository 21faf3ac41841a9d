"""The chance guard as the pages show it (biomark.report.guards)."""

from __future__ import annotations

import numpy as np

from biomark.analysis.chance import chance_guard
from biomark.report.guards import add_chance_guard, guard_frame
from biomark.report.page import Page


def test_guard_is_a_warning_and_a_table_in_percent() -> None:
    labels = np.repeat(["COVID-19", "Normal", "Edema"], 20)
    guessing = chance_guard(labels, np.roll(labels, 20), strategy="scratch", positive="COVID-19")
    learned = chance_guard(labels, labels, strategy="frozen", positive="COVID-19")
    frame = guard_frame([guessing, learned])
    assert frame["strategy"].tolist() == ["scratch", "scratch", "frozen", "frozen"]
    assert frame["majority rate % (answer)"].iat[0] == "33.3 (COVID-19)"
    assert frame["accuracy % [95% CI]"].iat[2] == "100.0 [94.0, 100.0]"
    html = add_chance_guard(Page("x"), [guessing, learned]).render()
    assert html.count('class="note warning"') == 1 and "scratch has NOT learned" in html
    assert "Chance guard:" in html and add_chance_guard(Page("y"), []).render().count("<table") == 0
