"""The markdown tables of ``summary.md`` and ``biomark extract``'s printed table."""

from __future__ import annotations

import pandas as pd

from biomark.features.run_summary import markdown_table


def test_markdown_table_escapes_a_pipe_in_a_cell_and_a_header() -> None:
    frame = pd.DataFrame({"Strategy": ["a|b", "plain"], "Folds | k": [3, 10]})
    lines = markdown_table(frame).splitlines()
    assert len(lines) == 4
    # every row has exactly the column separators of a 2-column table: escaped pipes do not count
    for line in lines:
        unescaped = line.replace(r"\|", "")
        assert unescaped.count("|") == 3, line
    assert r"Folds \| k" in lines[0]
    assert r"a\|b" in lines[2] and "plain" in lines[3]
    assert set(lines[1]) <= {"|", "-"}


def test_markdown_table_writes_the_index_and_keeps_cells_as_text() -> None:
    frame = pd.DataFrame(
        {"x": ["1.50", "97.4 ± 1.2"]},
        index=pd.Index(["**a**", "**b**"], name="predicted \\ actual"),
    )
    lines = markdown_table(frame, index=True).splitlines()
    assert [c.strip() for c in lines[0].strip("|").split("|")] == ["predicted \\ actual", "x"]
    # numbers given as text are printed unchanged (no re-parsing into 1.5)
    assert [c.strip() for c in lines[2].strip("|").split("|")] == ["**a**", "1.50"]
    assert [c.strip() for c in lines[3].strip("|").split("|")] == ["**b**", "97.4 ± 1.2"]
