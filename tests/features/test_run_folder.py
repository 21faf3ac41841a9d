"""The run folder's fold table (biomark.features.run_folder.RunFolder.read_folds)."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest

from biomark.exceptions import RunError
from biomark.features.run_folder import RunFolder


def _run(tmp_path: Path, folds_csv: bytes | None) -> RunFolder:
    run = RunFolder(tmp_path / "run")
    run.root.mkdir()
    if folds_csv is not None:
        run.folds_csv.write_bytes(folds_csv)
    return run


def test_the_fold_table_reads_back_with_text_identifiers(tmp_path: Path) -> None:
    run = _run(tmp_path, None)
    run.write_folds(
        pd.DataFrame(
            {"image_id": ["007", "NA"], "fold": [0, 1], "label": ["Normal", "Edema"]}
        ).assign(patient_id=["p1", "p2"])
    )
    folds = run.read_folds()
    assert folds["image_id"].tolist() == ["007", "NA"]  # not 7, not NaN
    assert folds["fold"].tolist() == [0, 1] and run.fold_ids() == (0, 1)


@pytest.mark.parametrize(
    ("content", "detail"),
    [
        (b"junk\n", "no image_id or fold column"),
        (b"image_id,label\na,Normal\n", "no fold column"),
        (b"image_id,fold\na,0\nb,one\n", "a fold that is not a whole number"),
        (b'image_id,fold\na,0\n"b,1\n', "ParserError"),
        (b"", "EmptyDataError"),
    ],
    ids=["junk", "no-fold", "text-fold", "truncated", "empty"],
)
def test_an_unreadable_fold_table_names_itself_and_what_to_do(
    tmp_path: Path, content: bytes, detail: str
) -> None:
    """A truncated or foreign folds.csv is a RunError naming the file and the way back (before,
    a KeyError from pandas deep inside the report's lung null)."""
    run = _run(tmp_path, content)
    with pytest.raises(RunError, match="the run's fold table cannot be read") as caught:
        run.read_folds()
    message = str(caught.value)
    assert message.startswith(str(run.folds_csv)) and detail in message
    assert "delete the file and re-run `biomark extract` with the same plan" in message


def test_a_missing_fold_table_says_how_to_recreate_it(tmp_path: Path) -> None:
    with pytest.raises(RunError, match="fold table missing; re-run `biomark extract`"):
        _run(tmp_path, None).read_folds()


@pytest.mark.parametrize(
    ("content", "detail"),
    [(b"junk", "JSONDecodeError"), (b"[1, 2]", "not a JSON object"), (b"\xff\xfe", "Unicode")],
)
def test_an_unreadable_strategy_summary_names_itself_and_what_to_do(
    tmp_path: Path, content: bytes, detail: str
) -> None:
    run = _run(tmp_path, None)
    path = run.strategy_dir("scratch") / "summary.json"
    path.parent.mkdir(parents=True)
    assert run.strategy_summary("scratch") is None  # not summarised yet
    path.write_bytes(content)
    with pytest.raises(RunError, match="the strategy's summary cannot be read") as caught:
        run.strategy_summary("scratch")
    assert str(caught.value).startswith(str(path)) and detail in str(caught.value)
    assert "rewrites the summary from the finished folds" in str(caught.value)


@pytest.mark.parametrize("content", [b"junk", b"[1, 2]"], ids=["not-json", "not-an-object"])
def test_an_unreadable_run_description_says_when_deleting_it_is_safe(
    tmp_path: Path, content: bytes
) -> None:
    run = _run(tmp_path, None)
    run.run_json.write_bytes(content)
    with pytest.raises(RunError) as caught:
        run.read_info()
    message = str(caught.value)
    assert message.startswith(str(run.run_json))
    assert "if the plan and the data are unchanged since the folds trained, delete it" in message
    assert "otherwise start over with `biomark extract --force`" in message


@pytest.mark.parametrize("content", [b"junk", b"[1, 2]", b"\xff"], ids=["json", "list", "bytes"])
def test_an_unreadable_fold_record_names_itself_and_how_to_redo_the_fold(
    tmp_path: Path, content: bytes
) -> None:
    run = _run(tmp_path, None)
    folder = run.fold_dir("scratch", 0)
    folder.mkdir(parents=True)
    assert run.fold_metrics("scratch", 0) is None  # not written yet
    (folder / "metrics.json").write_bytes(content)
    with pytest.raises(RunError, match="cannot be read") as caught:
        run.fold_metrics("scratch", 0)
    assert str(caught.value).startswith(str(folder / "metrics.json"))
    assert f"Delete the fold folder {folder} and re-run `biomark extract`" in str(caught.value)
    assert run.backbone_seeds("scratch") == {}  # left out there, as an absent record is
