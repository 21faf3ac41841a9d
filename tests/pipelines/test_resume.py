"""A killed ``extract`` resumes exactly: the same bytes as a run that was never interrupted.

Three processes of the same tiny run (one TensorFlow thread, ``training.threads``):
one uninterrupted; one SIGKILLed right after fold 0 of ``finetune:1`` wrote the
checkpoint of its second epoch (the real signal, no clean-up code runs); and one that
resumes the killed run. The resumed run must skip the finished work, continue fold 0
from epoch 3, and end with files equal byte for byte to the uninterrupted run's
(timings aside, which live in ``timings.json``).

``finetune:1`` trains backbone weights and BatchNormalization statistics as ``scratch``
does, with a cheaper backward pass; the steps run eagerly (``tiny_plan``), as a trace
would cost more than the few steps. ``scratch`` resuming exactly with traced steps, as
real runs train, is checked in-process by
``tests/train/test_loop.py::test_interrupted_training_resumes_exactly``.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]

_SCRIPT = textwrap.dedent(
    """
    import os, signal, sys
    from pathlib import Path
    sys.path.insert(0, sys.argv[1])
    from tiny_data import tiny_plan
    import biomark.train.loop as loop
    from biomark.pipelines.extract import run_extract

    data, out, kill = Path(sys.argv[2]), Path(sys.argv[3]), sys.argv[4] == "kill"
    plan = tiny_plan(data, out, strategies=["finetune:1"],
                     **{"training.epochs": 3, "training.early_stopping.patience": 5,
                        "training.fit_check_epoch": 2, "training.threads": 1})
    real = loop.train_fold

    def train_fold(*args, **kwargs):
        if kill and Path(kwargs["out_dir"]).name == "fold_00":
            def die(epoch):
                if epoch == 2:
                    os.kill(os.getpid(), signal.SIGKILL)
            kwargs["after_epoch"] = die
        return real(*args, **kwargs)

    loop.train_fold = train_fold
    run_extract(plan)
    """
)

#: Files whose bytes must not depend on the interruption.
COMPARED = [
    "folds.csv",
    "summary.md",
    "finetune_1/summary.json",
    "finetune_1/metrics.csv",
    "finetune_1/confusion.csv",
    *[
        f"finetune_1/fold_{f:02d}/{name}"
        for f in (0, 1)
        for name in ("features.parquet", "metrics.json", "split.csv")
    ],
]


def _run(data: Path, out: Path, mode: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"}
    return subprocess.run(
        [sys.executable, "-c", _SCRIPT, str(REPO / "tests"), str(data), str(out), mode],
        capture_output=True,
        text=True,
        env=env,
        cwd=REPO,
        timeout=900,
    )


@pytest.mark.slow
def test_a_killed_extract_resumes_bit_for_bit(tiny_dataset: Path, tmp_path: Path) -> None:
    whole = _run(tiny_dataset, tmp_path / "whole", "whole")
    assert whole.returncode == 0, whole.stderr[-3000:]

    killed = _run(tiny_dataset, tmp_path / "killed", "kill")
    assert killed.returncode == -9, killed.stderr[-3000:]
    fold = tmp_path / "killed" / "tiny" / "finetune_1" / "fold_00"
    assert (fold / "checkpoint.npz").is_file() and not (fold / "done.json").exists()

    resumed = _run(tiny_dataset, tmp_path / "killed", "resume")
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    timings = json.loads((fold / "timings.json").read_text())
    assert timings["execution"]["resumed_from_epoch"] == 2
    # training.threads reached TensorFlow before the run's start (which lists the devices) began its
    # runtime
    assert timings["execution"]["pipeline"]["threads"]["intra_op"] == 1
    assert not any("thread pools were already set up" in p.stderr for p in (whole, resumed))
    assert not (fold / "checkpoint.npz").exists()
    for name in COMPARED:
        a = (tmp_path / "whole" / "tiny" / name).read_bytes()
        b = (tmp_path / "killed" / "tiny" / name).read_bytes()
        if (
            name == "summary.md"
        ):  # the plan hash covers output_dir, which differs here by construction
            a, b = (
                b"\n".join(x for x in text.splitlines() if not x.startswith(b"- plan hash"))
                for text in (a, b)
            )
        assert a == b, f"{name} differs after the resume"
