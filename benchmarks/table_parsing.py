"""Time of the vectorised table work that the tests check only for correctness.

Two figures, each the best of ``--repeat`` calls:

* :func:`biomark.data.sources.nih.parse_nih` on ``../shared/data/nih`` (the
  full 112,120-row ``Data_Entry_2017.csv`` with the images present there);
  skipped with a message when that folder is absent.
* :func:`biomark.analysis.associate.associate` (Spearman of every deep with
  every radiomic feature, Benjamini-Hochberg) at the demo's radiomics page size:
  2,100 images x 1,280 deep x 612 radiomic features, synthetic.

Usage::

    python benchmarks/table_parsing.py [--repeat 3] [--nih DIR]
"""

from __future__ import annotations

import argparse
import os
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from biomark.analysis.associate import associate
from biomark.data.sources.nih import parse_nih

SHARED_NIH = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "nih"


def _best(repeat: int, call: Callable[[], Any]) -> tuple[float, float, Any]:
    """Best wall-clock and CPU seconds over ``repeat`` calls, and the last result."""
    wall, cpu, out = float("inf"), float("inf"), None
    for _ in range(repeat):
        w0, c0 = time.perf_counter(), time.process_time()
        out = call()
        wall = min(wall, time.perf_counter() - w0)
        cpu = min(cpu, time.process_time() - c0)
    return wall, cpu, out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--repeat", type=int, default=3, help="report the best of this many runs")
    parser.add_argument("--nih", type=Path, default=SHARED_NIH, help="an NIH ChestX-ray14 folder")
    args = parser.parse_args()
    print(f"load average {os.getloadavg()[0]:.2f}, {os.cpu_count()} CPUs")

    if (args.nih / "Data_Entry_2017.csv").is_file() or any(args.nih.glob("Data_Entry_2017*.csv")):
        wall, cpu, result = _best(args.repeat, lambda: parse_nih(args.nih))
        print(
            f"parse_nih {args.nih}: {wall:.2f} s wall, {cpu:.2f} CPU s ({len(result.candidates):,} "
            f"single-label rows kept, {int(result.candidates['exists'].sum())} with their image "
            "present)"
        )
    else:
        print(f"parse_nih: skipped, no Data_Entry_2017*.csv under {args.nih}")

    rng = np.random.default_rng(0)
    deep = rng.gamma(1.5, 0.4, size=(2100, 1280)).astype(np.float32)
    radiomic = rng.normal(size=(2100, 612))
    wall, cpu, res = _best(args.repeat, lambda: associate(deep, radiomic))
    print(
        f"associate 2,100 images x 1,280 deep x 612 radiomic: {wall:.2f} s wall, {cpu:.2f} CPU s "
        f"({res.rho.size:,} pairs, {res.n_significant} FDR-significant on independent data)"
    )


if __name__ == "__main__":
    main()
