"""Within-class splits of the source audit, made once per input (biomark.analysis.class_splits)."""

from __future__ import annotations

import threading
from pathlib import Path

import numpy as np
import pytest
from sklearn.model_selection import StratifiedGroupKFold, StratifiedKFold

from biomark.analysis import class_splits as class_splits_module
from biomark.analysis.class_splits import class_splits, shared_splits


def _class(seed: int = 0, n: int = 120) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    patients = np.array([f"p{i}" for i in rng.integers(0, n // 2, n)])
    # a patient's films share its source
    site = {p: ("site_A" if rng.random() < 0.6 else "site_B") for p in np.unique(patients)}
    return np.array([site[p] for p in patients]), patients


def _same(a: list, b: list) -> bool:
    return len(a) == len(b) and all(
        np.array_equal(x[0], y[0]) and np.array_equal(x[1], y[1]) for x, y in zip(a, b, strict=True)
    )


def test_grouped_splits_are_scikit_learns_shuffles_one_after_another() -> None:
    sources, patients = _class()
    got = class_splits(sources, patients, None, n_splits=5, n_repeats=3, seed=7)
    X = np.zeros((sources.size, 1))
    expected = [
        split
        for r in range(3)
        for split in StratifiedGroupKFold(5, shuffle=True, random_state=7 + r).split(
            X, sources, patients
        )
    ]
    assert _same(got, expected)
    for train, test in got:  # a patient's films on one side
        assert not set(patients[train]) & set(patients[test])


def test_without_patients_the_splits_are_stratified_k_fold() -> None:
    sources, _ = _class(1)
    got = class_splits(sources, None, None, n_splits=4, n_repeats=2, seed=0)
    X = np.zeros((sources.size, 1))
    expected = [
        s
        for r in range(2)
        for s in StratifiedKFold(4, shuffle=True, random_state=r).split(X, sources)
    ]
    assert _same(got, expected)


def test_the_same_inputs_get_the_same_read_only_arrays_and_other_inputs_other_splits() -> None:
    sources, patients = _class(2)
    first = class_splits(sources, patients, None, 5, 2, 0)
    again = class_splits(sources.copy(), patients.copy(), None, 5, 2, 0)  # equal, not identical
    assert all(a[1] is b[1] for a, b in zip(first, again, strict=True))  # made once
    assert not first[0][0].flags.writeable and not first[0][1].flags.writeable
    other_seed = class_splits(sources, patients, None, 5, 2, 1)
    assert not _same(first, other_seed)
    fewer = class_splits(sources[:-10], patients[:-10], None, 5, 2, 0)
    assert fewer is not None and max(test.max() for _, test in fewer) < sources.size - 10


def test_splits_are_capped_at_the_patients_of_the_smallest_source_and_need_two() -> None:
    sources = np.array(["a"] * 10 + ["b"] * 6)
    patients = np.array([f"a{i}" for i in range(10)] + ["b0", "b0", "b1", "b1", "b2", "b2"])
    splits = class_splits(sources, patients, None, n_splits=5, n_repeats=1, seed=0)
    assert splits is not None and len(splits) == 3  # source b has 3 patients
    one_patient = np.array([f"a{i}" for i in range(10)] + ["b0"] * 6)
    assert class_splits(sources, one_patient, None, 5, 1, 0) is None


def test_the_runs_folds_hold_each_fold_out_in_turn() -> None:
    folds = np.array([0, 1, 2, 0, 1, 2, 2])
    splits = class_splits(np.array(["a", "b"] * 3 + ["a"]), None, folds, 5, 3, 0)
    assert [test.tolist() for _, test in splits] == [[0, 3], [1, 4], [2, 5, 6]]
    assert [train.tolist() for train, _ in splits][0] == [1, 2, 4, 5, 6]


def _fresh_process(monkeypatch: pytest.MonkeyPatch) -> list[tuple]:
    """Forget this process's splits (as a new process would) and count the splits made here."""
    class_splits_module._cached_splits.cache_clear()
    made: list[tuple] = []
    make = class_splits_module._shuffled_splits

    def counted(*key: object) -> object:
        made.append(key)
        return make(*key)

    monkeypatch.setattr(class_splits_module, "_shuffled_splits", counted)
    return made


def _in_new_process(
    folder: Path, monkeypatch: pytest.MonkeyPatch, sources: np.ndarray, patients: np.ndarray
) -> tuple[list, list[tuple]]:
    """The splits (seed 11) asked for by a new process sharing ``folder``, and those it made."""
    made = _fresh_process(monkeypatch)
    with shared_splits(folder):
        splits = class_splits(sources, patients, None, 5, 2, 11)
    return splits, made


def test_a_process_reads_the_splits_another_wrote_to_the_shared_folder(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    sources, patients = _class(3)
    first, made = _in_new_process(tmp_path, monkeypatch, sources, patients)
    assert len(made) == 1 and len(list(tmp_path.glob("*.pickle"))) == 1
    assert not list(tmp_path.glob("*.claim"))  # released once written
    second, made = _in_new_process(tmp_path, monkeypatch, sources, patients)
    assert made == [] and _same(first, second)
    assert not second[0][0].flags.writeable and not second[0][1].flags.writeable
    made = _fresh_process(monkeypatch)  # outside the block nothing is read from the folder
    assert _same(class_splits(sources, patients, None, 5, 2, 11), first) and len(made) == 1


def test_a_claimed_key_is_waited_for_and_made_here_when_the_claimer_never_writes(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    sources, patients = _class(4)
    expected, _ = _in_new_process(tmp_path, monkeypatch, sources, patients)
    result = next(tmp_path.glob("*.pickle"))
    claim = result.with_suffix(".claim")
    # another process has claimed the key and writes its file while this one waits
    result.rename(tmp_path / "later")
    claim.touch()
    threading.Timer(0.3, lambda: (tmp_path / "later").rename(result)).start()
    got, made = _in_new_process(tmp_path, monkeypatch, sources, patients)
    assert made == [] and _same(got, expected)
    # a claimer that never writes: waited for CLAIM_WAIT_SECONDS, then made here
    result.unlink()
    monkeypatch.setattr(class_splits_module, "CLAIM_WAIT_SECONDS", 0.2)
    got, made = _in_new_process(tmp_path, monkeypatch, sources, patients)
    assert len(made) == 1 and _same(got, expected)


def test_a_claimer_that_fails_releases_its_claim(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    sources, patients = _class(5)
    class_splits_module._cached_splits.cache_clear()

    def broken(*key: object) -> object:
        raise MemoryError("no memory for the splits")

    monkeypatch.setattr(class_splits_module, "_shuffled_splits", broken)
    with shared_splits(tmp_path), pytest.raises(MemoryError):
        class_splits(sources, patients, None, 5, 2, 13)
    assert list(tmp_path.iterdir()) == []  # nothing for another process to wait on
