"""The report's matching note: how many poorly matched families still agree within a class."""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import pandas as pd

from biomark.report.unit_matching import share_agreeing_in_some_class


def test_share_of_families_agreeing_on_some_class() -> None:
    table = pd.DataFrame(
        {"a": [0.8, 0.1, np.nan, 0.2], "b": [0.2, 0.6, np.nan, 0.49]},
        index=["u0000", "u0001", "u0002", "u0003"],
    )
    # u0000 agrees on a, u0001 on b; u0002 is never measured, u0003 never reaches 0.5
    assert share_agreeing_in_some_class(SimpleNamespace(within_class_match=table), 0.5) == 0.5
    assert share_agreeing_in_some_class(SimpleNamespace(within_class_match=table), 0.9) == 0.0
    assert share_agreeing_in_some_class(SimpleNamespace(within_class_match=None), 0.5) is None
    empty = table.iloc[:, :0]
    assert share_agreeing_in_some_class(SimpleNamespace(within_class_match=empty), 0.5) is None
    silent = table.loc[["u0002"]]
    assert share_agreeing_in_some_class(SimpleNamespace(within_class_match=silent), 0.5) is None
