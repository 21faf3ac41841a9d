"""End to end: phantom -> extract -> compare -> radiomics -> report, serial vs a Dask cluster.

Usage::

    python benchmarks/e2e.py                        # quick plan size: 7 classes x 24 phantom images, 64 px
    python benchmarks/e2e.py --n-per-class 12 --epochs 2 --scheduler local:2

Every stage runs as the ``biomark`` command in a child process, once serially
and once with ``--scheduler`` (default ``local:2``) for the stages that take
it (extract, radiomics); phantom, compare and report have no cluster mode and
run serially in both passes. Per stage it prints wall time, peak memory (the
largest summed RSS of the stage's process tree, sampled every 0.2 s with
psutil: Dask workers and job processes included) and throughput (images per
second: dataset images x jobs for extract, images for the others), then the
serial / cluster ratio. ``biomark report`` is run when the command exists.
Results go to a temporary folder (``--keep DIR`` to keep them).
"""  # noqa: E501

from __future__ import annotations

import argparse
import os
import platform
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import psutil

from biomark.provenance import describe_cpu

REPO = Path(__file__).resolve().parents[1]
BIOMARK = [sys.executable, "-m", "biomark", "-q"]


def run_stage(args: list[str], cwd: Path) -> tuple[float, float, int]:
    """Run a command; return (wall seconds, peak tree RSS in MiB, exit status)."""
    t0 = time.perf_counter()
    proc = subprocess.Popen(
        args, cwd=cwd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
    )
    peak = 0
    done = threading.Event()

    def sample() -> None:
        nonlocal peak
        try:
            root = psutil.Process(proc.pid)
        except psutil.Error:
            return
        while not done.is_set():
            total = 0
            try:
                for p in [root, *root.children(recursive=True)]:
                    try:
                        total += p.memory_info().rss
                    except psutil.Error:
                        pass
            except psutil.Error:
                pass
            peak = max(peak, total)
            done.wait(0.2)

    watcher = threading.Thread(target=sample, daemon=True)
    watcher.start()
    output, _ = proc.communicate()
    done.set()
    watcher.join()
    seconds = time.perf_counter() - t0
    if proc.returncode != 0:
        sys.stderr.write(f"FAILED ({proc.returncode}): {' '.join(args)}\n{output[-3000:]}\n")
    return seconds, peak / 2**20, proc.returncode


def has_report() -> bool:
    return (REPO / "biomark" / "cli" / "report.py").is_file()


def pipeline(
    base: Path, scheduler: str | None, n_per_class: int, size: int, epochs: int
) -> list[dict]:
    """One pass of every stage into ``base``; returns one dict per stage."""
    data = base / "data"
    runs = base / "runs"
    reports = base / "reports"
    n_images = 7 * n_per_class
    plan = REPO / "analyses" / "quick.yaml"
    sched = ["--scheduler", scheduler] if scheduler else []
    stages = [
        (
            "phantom",
            [
                *BIOMARK,
                "data",
                "phantom",
                "--out",
                str(data),
                "--n-per-class",
                str(n_per_class),
                "--seed",
                "0",
                "--size",
                str(size),
                "--raw-size",
                str(max(64, size)),
                "--images-per-patient",
                "2",
            ],
            n_images,
            False,
        ),
        (
            "extract",
            [
                *BIOMARK,
                "extract",
                "--plan",
                str(plan),
                "--data",
                str(data),
                "--out",
                str(runs),
                "--epochs",
                str(epochs),
                *sched,
            ],
            n_images * 3 * 3,
            bool(scheduler),
        ),
        (
            "compare",
            [
                *BIOMARK,
                "compare",
                "--run",
                str(runs / "quick"),
                "--all",
                "--reports",
                str(reports),
                "--no-umap",
            ],
            n_images,
            False,
        ),
        (
            "radiomics",
            [
                *BIOMARK,
                "radiomics",
                "--data",
                str(data),
                "--run",
                str(runs / "quick"),
                "--reports",
                str(reports),
                *sched,
            ],
            n_images,
            bool(scheduler),
        ),
    ]
    if has_report():
        stages.append(
            (
                "report",
                [*BIOMARK, "report", "--run", str(runs / "quick"), "--reports", str(reports)],
                n_images,
                False,
            )
        )
    rows = []
    for name, args, images, on_cluster in stages:
        seconds, peak, status = run_stage(args, REPO)
        rows.append(
            {
                "stage": name,
                "seconds": seconds,
                "peak_mib": peak,
                "images": images,
                "rate": images / seconds if seconds > 0 else float("nan"),
                "cluster": on_cluster,
                "status": status,
            }
        )
        print(
            f"  {name:<10} {seconds:8.1f} s  {peak:8.0f} MiB  {images / seconds:8.2f} img/s"
            f"{'  (' + scheduler + ')' if on_cluster else ''}{'  FAILED' if status else ''}",
            flush=True,
        )
    return rows


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--n-per-class",
        type=int,
        default=24,
        help="phantom images per class (7 classes; default 24)",
    )
    parser.add_argument(
        "--size", type=int, default=64, help="image side in pixels (default 64, as the quick plan)"
    )
    parser.add_argument(
        "--epochs",
        type=int,
        default=5,
        help="maximum epochs per fold (default 5, as the quick plan)",
    )
    parser.add_argument(
        "--scheduler", default="local:2", help="cluster for the second pass (default local:2)"
    )
    parser.add_argument("--keep", type=Path, help="keep the outputs in this folder")
    args = parser.parse_args()

    mem = psutil.virtual_memory().total / 2**30
    print(
        f"machine: {describe_cpu()}, {os.cpu_count()} CPU cores, "
        f"{mem:.0f} GiB, load average {os.getloadavg()[0]:.2f}; python {platform.python_version()}"
    )
    print(
        f"size: phantom 7 classes x {args.n_per_class} = {7 * args.n_per_class} images at "
        f"{args.size} px; quick plan (3 strategies x 3 folds, MobileNetV2 alpha 1.0, up to "
        f"{args.epochs} epochs)"
    )
    base = args.keep or Path(tempfile.mkdtemp(prefix="biomark-e2e-"))
    results = {}
    for label, scheduler in (("serial", None), (args.scheduler, args.scheduler)):
        print(f"{label}:", flush=True)
        results[label] = pipeline(
            base / label.replace(":", "_"), scheduler, args.n_per_class, args.size, args.epochs
        )
    serial, spread = results["serial"], results[args.scheduler]
    print(
        f"\n| stage | serial s | {args.scheduler} s | ratio | serial peak MiB | {args.scheduler} "
        f"peak MiB | serial img/s | {args.scheduler} img/s |"
    )
    print("|---|---|---|---|---|---|---|---|")
    for a, b in zip(serial, spread, strict=True):
        print(
            f"| {a['stage']} | {a['seconds']:.1f} | {b['seconds']:.1f} | "
            f"{a['seconds'] / b['seconds']:.2f}x | {a['peak_mib']:.0f} | {b['peak_mib']:.0f} | "
            f"{a['rate']:.2f} | {b['rate']:.2f} |"
        )
    total_a, total_b = sum(r["seconds"] for r in serial), sum(r["seconds"] for r in spread)
    print(f"| total | {total_a:.1f} | {total_b:.1f} | {total_a / total_b:.2f}x | | | | |")
    print(f"load average after: {os.getloadavg()[0]:.2f}")
    return int(any(r["status"] for r in serial + spread))


if __name__ == "__main__":
    sys.exit(main())
