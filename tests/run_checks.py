"""Helpers shared by the cluster and URL tests: a run equals a reference run; stopping Dask
processes.

A helper module (not a test): ``tests/`` is on ``sys.path`` (see ``tests/conftest.py``).
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest

from biomark.features.deep import fold_dir
from biomark.features.run_folder import RunFolder

#: Tolerance on features and probabilities (CPU kernels may differ across machines).
ATOL = 1e-5

#: The strategies of the cluster and URL reference run (``cluster_reference`` in
#: tests/conftest.py). Neither trains the whole network: these tests are about the jobs'
#: machinery, not the strategy, and a ``scratch`` step costs about twice a ``finetune:1``
#: one (eager, 2026-12-01, AVX2 CPU). ``finetune:1`` still trains backbone weights and
#: BatchNormalization statistics.
CLUSTER_STRATEGIES = ("frozen", "finetune:1")


def assert_same_run(run: Path, ref: Path, strategies: Sequence[str], k: int) -> None:
    """Feature tables (atol 1e-5), splits and metrics of ``run`` equal ``ref``'s."""
    assert (run / "folds.csv").read_text() == (ref / "folds.csv").read_text()
    for strategy in strategies:
        for fold in range(k):
            a, b = fold_dir(run, strategy, fold), fold_dir(ref, strategy, fold)
            assert (a / "done.json").is_file(), a
            assert (a / "split.csv").read_text() == (b / "split.csv").read_text()
            fa, fb = (
                pd.read_parquet(a / "features.parquet"),
                pd.read_parquet(b / "features.parquet"),
            )
            numeric = [c for c in fa.columns if c.startswith(("f", "prob_")) and c != "fold"]
            pd.testing.assert_frame_equal(fa.drop(columns=numeric), fb.drop(columns=numeric))
            np.testing.assert_allclose(
                fa[numeric].to_numpy(), fb[numeric].to_numpy(), rtol=0, atol=ATOL
            )
            ma = json.loads((a / "metrics.json").read_text())["metrics"]
            mb = json.loads((b / "metrics.json").read_text())["metrics"]
            for name in ("accuracy", "binary_accuracy", "sensitivity", "specificity"):
                assert ma[name] == pytest.approx(mb[name], abs=1e-9, nan_ok=True), (
                    strategy,
                    fold,
                    name,
                )
    assert (run / "summary.md").is_file()


def attempts(run: Path) -> list[dict[str, Any]]:
    """The attempt records of a run's cluster jobs, oldest first (:meth:`RunFolder.attempts`)."""
    return RunFolder(run).attempts()


def stop_process_group(proc: subprocess.Popen, grace: float = 15.0) -> None:
    """SIGTERM a process started with ``start_new_session=True`` and its group; SIGKILL after
    ``grace`` s."""
    if proc.poll() is None:
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(grace)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(10)
