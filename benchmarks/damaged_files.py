"""What each command does when one file of a finished run or its dataset is damaged.

Usage::

    python benchmarks/damaged_files.py --run runs/real4 --plan plan.yaml [--commands report,compare]

For every file of the run folder (its ``run.json``, ``folds.csv``, each
strategy's summary tables and one fold's records, feature tables, block outputs
and model) and of the run's dataset (manifest, image cache, lung masks,
radiomics outputs), one at a time: copy the run and the dataset to a scratch
folder, overwrite that file with a few bytes of junk (an interrupted copy, a
full disk), run each command on the copy and print what happened:

* ``ok``: it finished (exit 0); its first warning, if any, is shown;
* ``error``: it stopped with biomark's own one-line error (exit 1, no
  traceback), which is shown;
* ``TRACEBACK``: a raw Python traceback reached the user, the defect this
  script looks for; the exception is shown.

``--plan`` is the plan the run was made with: ``extract`` re-runs it on the
copy, so finished folds are skipped and only the damaged one is read. Nothing
here is timed; the 2026-12-07 sweep of the shared real films' run is in
``benchmarks/RESULTS.md``.
"""

from __future__ import annotations

import argparse
import json
import re
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

COMMANDS = ("report", "compare", "radiomics", "extract")
RUN_FILES = (
    "run.json",
    "folds.csv",
    "{s}/summary.json",
    "{s}/metrics.csv",
    "{s}/fold_01/done.json",
    "{s}/fold_01/metrics.json",
    "{s}/fold_01/timings.json",
    "{s}/fold_01/features.parquet",
    "{s}/fold_01/features_all.parquet",
    "{s}/fold_01/blocks.npz",
    "{s}/fold_01/model.keras",
)
DATA_FILES = (
    "manifest.csv",
    "cache/images.npy",
    "cache/index.csv",
    "cache/cache.json",
    "cache/lung_masks.npy",
    "cache/lung_masks.json",
    "radiomics/*/features.parquet",
    "radiomics/*/finished.json",
)


def outcome(returncode: int, output: str) -> tuple[str, str]:
    """``(verdict, the line that shows it)`` for one command's exit status and output."""
    if "Traceback (most recent call last)" in output:
        raised = [
            line for line in output.splitlines() if re.match(r"^[\w.]+(Error|Exception)", line)
        ]
        return "TRACEBACK", raised[-1] if raised else "(no exception line)"
    lines = output.splitlines()
    if returncode != 0:
        errors = [line for line in lines if ": error: " in line]
        return "error", errors[-1] if errors else f"exit {returncode}"
    warnings = [line for line in lines if " WARNING " in line and "majority rate" not in line]
    return "ok", warnings[0] if warnings else ""


def biomark_script() -> str:
    """The ``biomark`` console script of this interpreter's environment, else the one on PATH."""
    script = Path(sys.executable).with_name("biomark")
    return str(script) if script.is_file() else shutil.which("biomark") or "biomark"


def command_line(command: str, run: Path, plan: Path, reports: Path, dataset: Path) -> list[str]:
    """The biomark command line of ``command`` on the copied run."""
    biomark = [biomark_script()]
    if command == "report":
        return [*biomark, "-q", "report", "--run", str(run), "--reports", str(reports)]
    if command == "compare":
        return [*biomark, "-q", "compare", "--run", str(run), "--all", "--reports", str(reports)]
    if command == "radiomics":
        return [
            *biomark, "-q", "radiomics", "--data", str(dataset), "--run", str(run),
            "--region", "lung", "--reports", str(reports),
        ]  # fmt: skip
    return [*biomark, "-q", "extract", "--plan", str(plan), "--out", str(run.parent)]


def damage_one(
    run: Path, dataset: Path, plan: Path, target: str, in_dataset: bool, commands: list[str]
) -> list[tuple[str, str, str]]:
    """Copy the run and its dataset, junk ``target`` (relative to one of them), run each command."""
    rows = []
    for command in commands:
        with tempfile.TemporaryDirectory(prefix="biomark-damaged-") as tmp:
            work = Path(tmp)
            run_copy, data_copy = work / "runs" / run.name, work / "data"
            shutil.copytree(run, run_copy)
            shutil.copytree(dataset, data_copy)
            info = json.loads((run_copy / "run.json").read_text(encoding="utf-8"))
            info["dataset"]["dir"] = str(data_copy)
            (run_copy / "run.json").write_text(json.dumps(info), encoding="utf-8")
            plan_copy = work / "plan.yaml"
            plan_copy.write_text(
                plan.read_text(encoding="utf-8").replace(str(dataset), str(data_copy)),
                encoding="utf-8",
            )
            root = data_copy if in_dataset else run_copy
            hits = sorted(root.glob(target))
            if not hits:
                rows.append((command, "skipped", f"no {target}"))
                continue
            hits[0].write_bytes(b"junk\n")
            done = subprocess.run(
                command_line(command, run_copy, plan_copy, work / "reports", data_copy),
                capture_output=True,
                text=True,
                timeout=900,
                check=False,
            )
            rows.append((command, *outcome(done.returncode, done.stdout + done.stderr)))
    return rows


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--run", type=Path, required=True, help="a finished run folder")
    parser.add_argument("--plan", type=Path, required=True, help="the plan it was made with")
    parser.add_argument("--commands", default=",".join(COMMANDS))
    parser.add_argument("--strategy", default="scratch")
    args = parser.parse_args(argv)
    info = json.loads((args.run / "run.json").read_text(encoding="utf-8"))
    dataset = Path(info["dataset"]["dir"])
    commands = [c for c in args.commands.split(",") if c]
    unknown = sorted(set(commands) - set(COMMANDS))
    if unknown:
        parser.error(f"unknown command(s) {', '.join(unknown)}; use {', '.join(COMMANDS)}")
    targets = [(t.format(s=args.strategy.replace(":", "_")), False) for t in RUN_FILES]
    targets += [(t, True) for t in DATA_FILES]
    tracebacks = 0
    for target, in_dataset in targets:
        where = "dataset" if in_dataset else "run"
        for command, verdict, line in damage_one(
            args.run, dataset, args.plan, target, in_dataset, commands
        ):
            tracebacks += verdict == "TRACEBACK"
            print(f"{verdict:9s} {command:9s} {where}/{target}: {line[:160]}", flush=True)
    print(f"{tracebacks} raw traceback(s)")
    return 1 if tracebacks else 0


if __name__ == "__main__":
    raise SystemExit(main())
