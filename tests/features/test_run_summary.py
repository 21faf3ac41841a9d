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


def test_summary_header_says_what_the_validation_split_is_for() -> None:
    from biomark.features.run_info import RunInfo
    from biomark.features.run_summary import _header

    training = {"epochs": 16, "early_stopping": {"enabled": False, "patience": 4}}
    plan = {"cv": {"validation_fraction": 0.15}, "training": training}
    off = "\n".join(_header(RunInfo(name="quick", plan=plan)))
    assert "0.15 of the training folds (validation metrics only: early stopping off)" in off
    assert ", 16 epochs, batch" in off  # every fold trains them all

    training["early_stopping"] = {"enabled": True, "monitor": "val_loss", "patience": 5}
    on = "\n".join(_header(RunInfo(name="paper", plan=plan)))
    assert "(early stopping on `val_loss`, patience 5)" in on
    assert "up to 16 epochs" in on


def test_summary_header_without_a_validation_split() -> None:
    from biomark.features.run_info import RunInfo
    from biomark.features.run_summary import _header

    training = {"epochs": 16, "early_stopping": {"enabled": False, "patience": 4}}
    plan = {"cv": {"validation_fraction": 0.0}, "training": training}
    header = "\n".join(_header(RunInfo(name="quick", plan=plan)))
    assert "no validation split (each model trains on every image of its training folds)" in header
    assert "validation fraction" not in header and "validation metrics" not in header


def test_the_controls_training_length_is_named_where_it_differs() -> None:
    from biomark.features.run_info import RunInfo
    from biomark.features.run_summary import _header, epochs_words

    training = {"epochs": 16, "control_epochs": 4, "early_stopping": {"enabled": False}}
    plan = {"model": {"weights": "none"}, "training": training}
    demo = RunInfo(name="quick", plan=plan, strategies=("scratch", "frozen", "finetune:3"))
    header = "\n".join(_header(demo))
    assert "16 epochs (the random-backbone controls 4), batch" in header
    # pretrained weights: frozen and finetune:N are the paper's strategies, trained as scratch is
    pretrained = RunInfo(
        name="paper",
        plan={"model": {"weights": "imagenet"}, "training": training},
        strategies=demo.strategies,
    )
    assert epochs_words(pretrained) == "16 epochs"
    # no control_epochs: the controls train as long as scratch
    plain = {"model": {"weights": "none"}, "training": {"epochs": 12}}
    assert epochs_words(RunInfo(plan=plain, strategies=demo.strategies)) == "up to 12 epochs"
