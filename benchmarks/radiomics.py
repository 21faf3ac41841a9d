"""Speed of ``biomark radiomics``: serial vs worker processes vs a warm re-run, in one script run.

What it measures (lung region with negative controls, the shipped parameter
file, a phantom dataset of ``--images`` images of ``--size`` px built here or
given with ``--data``):

1. **serial vs ``--jobs`` workers, interleaved**: ``--repeats`` rounds, each
   running :func:`biomark.features.radiomics_run.run_radiomics` with
   ``jobs=1`` and with ``jobs=--jobs`` (the order alternates between rounds),
   each in a fresh Python process (as ``biomark radiomics`` runs: imports and
   worker start-up included) on an empty output folder. Per run: seconds of
   ``run_radiomics``, seconds of the whole process, CPU seconds of the
   process and its workers (and within ``run_radiomics``: this process, the
   workers), and the load average before and after. The CPU seconds bound the
   ratio an idle machine can give: serial CPU / (parallel CPU / jobs).
2. **warm re-run**: the same run again, inputs unchanged, in a fresh process:
   ``run_radiomics`` finds the finished outputs (``finished.json``,
   :mod:`biomark.features.radiomics_result_cache`) and reads the tables; the
   script checks that it left every output file byte-identical. Next to it,
   the re-run with only the per-image cache warm (the record deleted, as after
   a change of the seed or of one image: masks, controls, gallery and tables
   recomputed), and the extraction alone
   (:func:`biomark.features.radiomics.extract_features` of the lung region,
   cold with ``--jobs`` workers vs warm).
3. the time of :func:`biomark.analysis.associate.associate` for 4,000 images
   x 1,280 deep x 100 radiomic features (synthetic).

The machine may be shared: the load average is printed next to every
figure; with a load above the number of cores the ratios are not
trustworthy (the script says so).

Usage::

    python benchmarks/radiomics.py [--images 203] [--size 200] [--jobs 2] [--repeats 2]
                                   [--data DIR] [--results benchmarks/RESULTS.md]
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import logging
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
HERE = Path(__file__).resolve().parent
# This file is called radiomics.py: keep its folder off the import path so that
# `import radiomics` finds pyradiomics.
sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != HERE]
PARAMS = ROOT / "analyses" / "radiomics_cxr2d.yaml"


def _results_table():  # noqa: ANN202 - the helper module next to this file (its folder is off sys.path)
    spec = importlib.util.spec_from_file_location("results_table", HERE / "results_table.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules["results_table"] = module  # dataclasses look their module up there
    spec.loader.exec_module(module)
    return module


def _children_cpu_seconds() -> float:
    """CPU seconds of this process's children: the finished (reaped) ones and those still
    running."""
    import resource

    import psutil

    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    total = usage.ru_utime + usage.ru_stime
    for child in psutil.Process().children(recursive=True):
        try:
            total += sum(child.cpu_times()[:2])
        except psutil.Error:
            pass
    return total


def child(data: str, jobs: int, out_json: str) -> int:
    """One measured run, in its own process: ``run_radiomics`` on ``data``, figures to
    ``out_json``."""
    os.environ.setdefault("BIOMARK_PROGRESS", "0")
    logging.basicConfig(level=logging.WARNING)
    from biomark.features.radiomics_params import load_params
    from biomark.features.radiomics_run import run_radiomics

    params = load_params(PARAMS)
    load = os.getloadavg()[0]
    start, cpu, children = time.perf_counter(), time.process_time(), _children_cpu_seconds()
    run = run_radiomics(data, params, region="lung", jobs=jobs, controls=True)
    seconds, cpu = time.perf_counter() - start, time.process_time() - cpu
    workers = _children_cpu_seconds() - children
    Path(out_json).write_text(
        json.dumps(
            {
                "seconds": seconds,
                "cpu": time.process_time() + workers,
                "run_cpu": cpu,
                "workers_cpu": workers,
                "load_before": load,
                "load_after": os.getloadavg()[0],
                "computed": run.info["counts"]["computed"],
                "controls_computed": sum(c["computed"] for c in run.info["controls"].values()),
                "images": run.info["counts"]["images"],
            }
        )
    )
    return 0


def _measured_run(data: Path, jobs: int, fresh: bool, forget: bool = False) -> dict[str, float]:
    if fresh:
        shutil.rmtree(data / "radiomics", ignore_errors=True)
    if forget:  # only the per-image cache stays warm
        from biomark.features.radiomics_result_cache import RECORD

        for record in (data / "radiomics").glob(f"*/{RECORD}"):
            record.unlink()
    with tempfile.NamedTemporaryFile(suffix=".json") as handle:
        start = time.perf_counter()
        subprocess.run(
            [sys.executable, __file__, "--child", str(data), str(jobs), handle.name],
            check=True,
            cwd=ROOT,
            env={**os.environ, "PYTHONPATH": str(ROOT)},
        )
        total = time.perf_counter() - start
        figures = json.loads(Path(handle.name).read_text())
    figures["process_seconds"] = total
    return figures


def _output_digests(data: Path) -> dict[str, str]:
    """SHA-256 of every output file (the per-image cache and the record left out)."""
    import hashlib

    return {
        str(p.relative_to(data)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted((data / "radiomics").rglob("*"))
        if p.is_file()
        and "cache" not in p.relative_to(data).parts[2:3]
        and p.name != "finished.json"
    }


def _build_phantom(base: Path, n_images: int, size: int) -> Path:
    from biomark.data.build import build_dataset
    from biomark.data.phantom import generate_phantom

    csv = generate_phantom(base / "raw", n_per_class=-(-n_images // 7), seed=0, image_size=size)
    build_dataset(base / "data", sources={"manifest": [csv]}, image_size=size, jobs=1)
    return base / "data"


def _extraction_warm_vs_cold(data: Path, jobs: int) -> tuple[float, float, int]:
    """Seconds of extract_features on the lung region: cold with ``jobs`` workers, then warm."""
    os.environ.setdefault("BIOMARK_PROGRESS", "0")
    from biomark.data.dataset import load_dataset
    from biomark.features.radiomics import extract_features
    from biomark.features.radiomics_params import load_params

    dataset = load_dataset(data)
    params = load_params(PARAMS)
    ids = dataset.manifest["image_id"].astype(str).tolist()
    images, masks = np.asarray(dataset.images), np.asarray(dataset.masks)
    with tempfile.TemporaryDirectory() as tmp:
        start = time.perf_counter()
        cold = extract_features(images, masks, ids, params, cache_dir=tmp, jobs=jobs)
        t_cold = time.perf_counter() - start
        start = time.perf_counter()
        warm = extract_features(images, masks, ids, params, cache_dir=tmp, jobs=jobs)
        t_warm = time.perf_counter() - start
    assert cold.n_computed == len(ids) and warm.n_cached == len(ids)
    return t_cold, t_warm, len(ids)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--images", type=int, default=203, help="phantom images (rounded up to a multiple of 7)"
    )
    parser.add_argument("--size", type=int, default=200)
    parser.add_argument("--jobs", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument(
        "--data", type=Path, help="an existing dataset folder (default: build a phantom)"
    )
    parser.add_argument("--no-associate", action="store_true")
    parser.add_argument(
        "--results", help="rewrite this script's rows of RESULTS.md's summary table"
    )
    parser.add_argument(
        "--child", nargs=3, metavar=("DATA", "JOBS", "OUT_JSON"), help=argparse.SUPPRESS
    )
    args = parser.parse_args(argv)
    if args.child:
        return child(args.child[0], int(args.child[1]), args.child[2])
    logging.basicConfig(level=logging.WARNING)
    cores = os.cpu_count() or 1
    with tempfile.TemporaryDirectory() as tmp:
        data = args.data or _build_phantom(Path(tmp), args.images, args.size)
        if args.data:  # work on a copy: the runs delete and rewrite <data>/radiomics
            data = Path(
                shutil.copytree(
                    args.data, Path(tmp) / "data", ignore=shutil.ignore_patterns("radiomics")
                )
            )
        print(
            f"machine: {cores} cores; dataset {data}; lung region + controls (shuffled, outside); "
            f"{args.repeats} rounds of serial and {args.jobs} jobs, interleaved, each in a fresh "
            "process"
        )
        runs: dict[int, list[dict[str, float]]] = {1: [], args.jobs: []}
        for r in range(args.repeats):
            order = (1, args.jobs) if r % 2 == 0 else (args.jobs, 1)
            for jobs in order:
                fig = _measured_run(data, jobs, fresh=True)
                runs[jobs].append(fig)
                print(
                    f"round {r + 1}, jobs={jobs}: run_radiomics {fig['seconds']:6.1f} s, process "
                    f"{fig['process_seconds']:6.1f} s, CPU {fig['cpu']:5.1f} s (in run_radiomics: "
                    f"this process {fig['run_cpu']:4.1f} s, workers {fig['workers_cpu']:4.1f} s), "
                    f"{fig['computed']} images + {fig['controls_computed']} control regions "
                    f"computed, load {fig['load_before']:.1f} -> {fig['load_after']:.1f}",
                    flush=True,
                )
        warm_images = _measured_run(data, args.jobs, fresh=False, forget=True)
        before = _output_digests(data)
        warm = _measured_run(data, args.jobs, fresh=False)
        unchanged = _output_digests(data) == before
        assert warm["computed"] == 0 and warm["controls_computed"] == 0 and unchanged
        assert warm_images["computed"] == 0 and warm_images["controls_computed"] == 0
        t_cold, t_warm, n = _extraction_warm_vs_cold(data, args.jobs)
    serial = statistics.median(f["seconds"] for f in runs[1])
    parallel = statistics.median(f["seconds"] for f in runs[args.jobs])
    serial_p = statistics.median(f["process_seconds"] for f in runs[1])
    parallel_p = statistics.median(f["process_seconds"] for f in runs[args.jobs])
    loads = [
        f[k]
        for fs in [*runs.values(), [warm, warm_images]]
        for f in fs
        for k in ("load_before", "load_after")
    ]
    cpu_serial = statistics.median(f["run_cpu"] + f["workers_cpu"] for f in runs[1])
    cpu_parallel = statistics.median(f["run_cpu"] + f["workers_cpu"] for f in runs[args.jobs])
    print(
        f"CPU in run_radiomics: serial {cpu_serial:.1f} s, {args.jobs} jobs {cpu_parallel:.1f} s "
        f"(workers' start-up included): on {args.jobs} idle cores the ratio can reach at most "
        f"x{cpu_serial / (cpu_parallel / args.jobs):.2f}"
    )
    print(
        f"median run_radiomics: serial {serial:.1f} s, {args.jobs} jobs {parallel:.1f} s -> "
        f"x{serial / parallel:.2f} (whole process: {serial_p:.1f} vs {parallel_p:.1f} s, "
        f"x{serial_p / parallel_p:.2f})"
    )
    print(
        f"warm re-run (inputs unchanged, finished outputs read; {len(before)} output files left "
        f"byte-identical): run_radiomics {warm['seconds']:.3f} s, "
        f"x{parallel / warm['seconds']:.1f} faster than cold with {args.jobs} jobs, "
        f"x{serial / warm['seconds']:.1f} than serial; whole process {warm['process_seconds']:.1f} "
        f"s vs {parallel_p:.1f} s (x{parallel_p / warm['process_seconds']:.1f}; imports included), "
        f"load {warm['load_before']:.1f}"
    )
    idle = (cpu_parallel / args.jobs) / warm["run_cpu"]
    print(
        f"idle-machine estimate: cold with {args.jobs} jobs needs at least "
        f"{cpu_parallel / args.jobs:.1f} s ({cpu_parallel:.1f} CPU s / {args.jobs} cores), the "
        f"warm re-run {warm['run_cpu']:.3f} CPU s in one thread -> about x{idle:.0f}"
    )
    print(
        "re-run with only the per-image cache warm (masks, controls, gallery, tables recomputed): "
        f"run_radiomics {warm_images['seconds']:.2f} s, x{parallel / warm_images['seconds']:.1f} "
        "faster than cold"
    )
    print(
        f"extraction alone, lung region, {n} images: cold {args.jobs} jobs {t_cold:.2f} s, warm "
        f"{t_warm:.3f} s -> x{t_cold / t_warm:.0f}"
    )
    load_text = f"load {min(loads):.1f}-{max(loads):.1f} on {cores} cores"
    print(
        f"load average during the runs: {load_text}"
        + ("; ABOVE the core count: the ratios are not trustworthy" if max(loads) > cores else "")
    )
    if not args.no_associate:
        from biomark.analysis.associate import associate

        rng = np.random.default_rng(0)
        X = rng.normal(size=(4000, 1280)).astype(np.float32)
        R = rng.normal(size=(4000, 100))
        start = time.perf_counter()
        result = associate(X, R)
        assoc = time.perf_counter() - start
        start = time.perf_counter()
        result.table()
        tidy = time.perf_counter() - start
        print(
            f"associate 4000 x 1280 x 100: {assoc:.2f} s (+ {tidy:.2f} s for the 128,000-row tidy "
            "table)"
        )
    if args.results:
        rt = _results_table()
        size = f"{n} phantom images of {args.size} px, lung + 2 controls"
        rt.update_results(
            args.results,
            "radiomics.py",
            [
                rt.Row(
                    f"Radiomics, {size}: {args.jobs} jobs vs serial (`run_radiomics`, median of "
                    f"{args.repeats})",
                    f"x{serial / parallel:.2f} ({serial:.1f} s vs {parallel:.1f} s; whole process "
                    f"x{serial_p / parallel_p:.2f}; {load_text}); CPU {cpu_serial:.1f} vs "
                    f"{cpu_parallel:.1f} s, so at most "
                    f"x{cpu_serial / (cpu_parallel / args.jobs):.2f} on idle cores",
                    f">= 1.8x on {args.jobs} cores",
                    f"x{args.jobs:.1f} (perfect scaling)",
                ),
                rt.Row(
                    f"Radiomics, {size}: warm re-run from the cache vs cold ({args.jobs} jobs)",
                    f"whole run x{idle:.0f} on idle cores, from CPU seconds (cold "
                    f"{cpu_parallel:.1f} CPU s / {args.jobs} = {cpu_parallel / args.jobs:.1f} s; "
                    f"warm {warm['run_cpu']:.3f} CPU s); measured "
                    f"x{parallel / warm['seconds']:.0f} ({warm['seconds']:.3f} s vs {parallel:.1f} "
                    f"s; whole process x{parallel_p / warm['process_seconds']:.1f}, imports "
                    "included). Finished tables read, outputs left byte-identical. Only the "
                    f"per-image cache warm: x{parallel / warm_images['seconds']:.1f} "
                    f"({warm_images['seconds']:.2f} s); extraction alone x{t_cold / t_warm:.0f} "
                    f"({load_text})",
                    ">= 50x",
                    "-",
                ),
            ],
        )
        print(f"updated the radiomics.py rows of {args.results}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
