"""What each command does with a setting a user got wrong: a plan value or a command-line flag.

Usage::

    python benchmarks/bad_settings.py --run runs/real4 --plan plan.yaml

``damaged_files.py`` damages the files of a finished run; this script keeps
them whole and gets the settings wrong instead, one at a time:

* **plan values** (``extract`` on a copy of ``--plan`` with one value
  changed, into a scratch folder): wrong types, values out of range, a seed
  numpy refuses, a network or a batch too large for the machine's memory, a
  network larger than the dataset's films, a weights file that is not one;
* **flags** of ``report``, ``compare``, ``radiomics``, ``extract`` and the
  ``data`` commands on the run and its dataset: negative or huge seeds and
  counts, unknown strategies and regions, a folder or a binary file where a
  YAML file belongs.

Each outcome is printed as in ``damaged_files.py``: ``ok`` (with its first
warning), ``error`` (biomark's one-line error), ``TRACEBACK`` (a raw Python
traceback reached the user) or ``KILLED`` (the process died of a signal,
e.g. for memory, with no message): the last two are the defects this script
looks for. Nothing is timed; a case that trains takes up to a minute on 2
cores.
"""

from __future__ import annotations

import argparse
import copy
import json
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

import yaml

sys.path.insert(0, str(Path(__file__).resolve().parent))
from damaged_files import biomark_script, outcome  # noqa: E402  (a sibling script, not a package)

#: Plan changes: (dotted key, value). Each is applied alone to the given plan.
PLAN_CASES: tuple[tuple[str, Any], ...] = (
    ("strategies", []),
    ("strategies", ["finetune:0"]),
    ("cv.k", 500),
    ("cv.k", "three"),
    ("cv.validation_fraction", 1.5),
    ("model.image_size", 64.5),
    ("model.image_size", 4096),
    ("model.image_size", 128),
    ("model.weights", "/nonexistent.h5"),
    ("model.head_units", 0),
    ("model.dropout", 1.0),
    ("training.learning_rate", 0),
    ("training.batch_size", 100_000),
    ("training.label_smoothing", 2),
    ("name", "../escape"),
    ("seed", -1),
    ("seed", 2**32),
    ("seed", "zero"),
    ("dump.all", "maybe"),
)


def _binary_file(folder: Path) -> Path:
    """A file that is not text (the first bytes of this interpreter), named like a YAML file."""
    path = folder / "binary.yaml"
    path.write_bytes(Path(sys.executable).resolve().read_bytes()[:4096])
    return path


def flag_cases(run: Path, dataset: Path, scratch: Path) -> list[tuple[str, list[str]]]:
    """Command lines with one wrong flag each: ``(label, arguments after biomark -q)``."""
    binary = _binary_file(scratch)
    reports = ["--reports", str(scratch / "reports")]
    report = ["report", "--run", str(run), *reports]
    compare = ["compare", "--run", str(run), *reports]
    radiomics = ["radiomics", "--data", str(dataset), "--region", "lung", *reports]
    phantom = ["data", "phantom", "--out", str(scratch / "p")]
    return [
        ("report --seed -1", [*report, "--seed", "-1"]),
        ("report --seed 2**32", [*report, "--seed", str(2**32)]),
        ("report --top-k 0", [*report, "--top-k", "0"]),
        ("report --shap-samples -3", [*report, "--shap-samples", "-3"]),
        ("report --workers 0", [*report, "--workers", "0"]),
        ("report --strategies foo", [*report, "--strategies", "foo"]),
        ("report --run <a file>", ["report", "--run", str(binary), *reports]),
        ("compare --b <unknown>", [*compare, "--a", "scratch", "--b", "nonexistent"]),
        ("compare --a = --b", [*compare, "--a", "scratch", "--b", "scratch"]),
        ("compare --permutations -1", [*compare, "--all", "--permutations", "-1"]),
        ("radiomics --seed -1", [*radiomics, "--seed", "-1"]),
        ("radiomics --params <folder>", [*radiomics, "--params", str(scratch)]),
        ("radiomics --params <binary>", [*radiomics, "--params", str(binary)]),
        ("extract --plan <folder>", ["extract", "--plan", str(scratch)]),
        ("extract --plan <binary>", ["extract", "--plan", str(binary)]),
        ("extract --plan <missing>", ["extract", "--plan", str(scratch / "missing.yaml")]),
        ("data build --recipe <binary>", ["data", "build", "--recipe", str(binary),
                                          "--manifest", str(binary), "--out", str(scratch / "b")]),
        ("data phantom --seed -1", [*phantom, "--seed", "-1"]),
        ("data phantom --n-per-class 0", [*phantom, "--n-per-class", "0"]),
        ("data mask-model --seed -1", ["data", "mask-model", "--references", str(dataset),
                                       "--out", str(scratch / "m.keras"), "--seed", "-1"]),
    ]  # fmt: skip


def with_value(plan: dict[str, Any], key: str, value: Any) -> dict[str, Any]:
    """A deep copy of ``plan`` with the dotted ``key`` set to ``value``."""
    changed = copy.deepcopy(plan)
    *parents, last = key.split(".")
    node = changed
    for name in parents:
        node = node.setdefault(name, {})
    node[last] = value
    return changed


def run_biomark(arguments: list[str]) -> tuple[str, str]:
    """Run ``biomark -q ARGUMENTS``; the verdict and the line that shows it."""
    done = subprocess.run(
        [biomark_script(), "-q", *arguments],
        capture_output=True,
        text=True,
        timeout=900,
        check=False,
    )
    if done.returncode < 0:
        return "KILLED", f"signal {-done.returncode}"
    return outcome(done.returncode, done.stdout + done.stderr)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--run", type=Path, required=True, help="a finished run folder")
    parser.add_argument("--plan", type=Path, required=True, help="the plan it was made with")
    args = parser.parse_args(argv)
    info = json.loads((args.run / "run.json").read_text(encoding="utf-8"))
    dataset = Path(info["dataset"]["dir"])
    plan = yaml.safe_load(args.plan.read_text(encoding="utf-8"))
    defects = 0
    with tempfile.TemporaryDirectory(prefix="biomark-bad-settings-") as tmp:
        scratch = Path(tmp)
        for number, (key, value) in enumerate(PLAN_CASES):
            plan_file = scratch / "plan.yaml"
            plan_file.write_text(yaml.safe_dump(with_value(plan, key, value)), encoding="utf-8")
            # a run folder of its own: a case that trains must not resume another's run
            out = scratch / f"runs{number}"
            verdict, line = run_biomark(["extract", "--plan", str(plan_file), "--out", str(out)])
            defects += verdict in ("TRACEBACK", "KILLED")
            print(f"{verdict:9s} plan {key}={value!r}: {line[:200]}", flush=True)
        for label, arguments in flag_cases(args.run, dataset, scratch):
            verdict, line = run_biomark(arguments)
            defects += verdict in ("TRACEBACK", "KILLED")
            print(f"{verdict:9s} {label}: {line[:200]}", flush=True)
    print(f"{defects} raw traceback(s) or kill(s)")
    return 1 if defects else 0


if __name__ == "__main__":
    raise SystemExit(main())
