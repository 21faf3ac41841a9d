"""Speed and peak memory of linear CKA, next to the arithmetic floor of this machine.

Usage::

    python benchmarks/cka.py                       # n = 4,000 and 100,000, d = 1,280
    python benchmarks/cka.py --sizes 100000 --no-resampling --results benchmarks/RESULTS.md

What it prints, in one run:

1. the machine: cores, BLAS (threadpoolctl), load average before and after;
2. the peak GEMM rate of this machine, measured here: the best of a few
   float64 and float32 ``gemm`` calls of the shape CKA needs
   ((d1 + d2) x rows by rows x (d1 + d2));
3. per size: the feature-space form as shipped (float64 ``syrk`` on blocks of
   rows), the same with float32 products, and the previous implementation
   (three numpy products per chunk of 8,192 rows, kept below as the
   reference), each with seconds, peak memory beyond the inputs
   (:mod:`tracemalloc`), the CKA value and its difference from the shipped
   one; next to them the floor: the ``(d1 + d2)^2 n`` flops of the three
   d x d products divided by the measured peak rate. The Gram form runs when
   its n x n matrices fit under ``--gram-limit-gb``;
4. with ``--resampling`` (default on), the permutation test and bootstrap of
   ``biomark compare`` on one n = 4,000 fold and on 10 folds of 400.

Inputs are float32, as ``features.parquet`` stores them. On a shared machine
the figures vary with the load: the CPU seconds (this process, all its BLAS
threads) change less than the wall seconds, and on an idle machine the wall
time approaches CPU seconds / cores; the table's rows state the load.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
import tracemalloc
from pathlib import Path

import numpy as np

from biomark.analysis.cka import linear_cka
from biomark.analysis.similarity import bootstrap_cka, permutation_test_cka

sys.path.insert(0, str(Path(__file__).resolve().parent))
from results_table import Row, update_results  # noqa: E402


def measure(func, *args, **kwargs):  # noqa: ANN001, ANN201 - benchmark helper
    """(value, wall seconds, peak MiB beyond what existed before); CPU seconds in
    ``measure.cpu``."""
    tracemalloc.start()
    start, cpu = time.perf_counter(), time.process_time()
    value = func(*args, **kwargs)
    seconds = time.perf_counter() - start
    measure.cpu = time.process_time() - cpu
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    return value, seconds, peak / 2**20


def peak_gemm(dtype: type, width: int, rows: int = 4096, repeats: int = 3) -> float:
    """Best FLOP/s of ``A @ B`` with A (width x rows), B (rows x width) in ``dtype``."""
    rng = np.random.default_rng(1)
    a = rng.standard_normal((width, rows)).astype(dtype)
    b = rng.standard_normal((rows, width)).astype(dtype)
    best = np.inf
    for _ in range(repeats):
        start = time.perf_counter()
        a @ b
        best = min(best, time.perf_counter() - start)
    return 2.0 * width * width * rows / best


def reference_linear_cka(X: np.ndarray, Y: np.ndarray, chunk: int = 8192) -> float:
    """The feature-space debiased CKA as it was before (numpy products in float64 per chunk)."""
    n = X.shape[0]
    mx, my = X.mean(axis=0, dtype=np.float64), Y.mean(axis=0, dtype=np.float64)
    xtx = np.zeros((X.shape[1],) * 2)
    yty = np.zeros((Y.shape[1],) * 2)
    ytx = np.zeros((Y.shape[1], X.shape[1]))
    sa = sb = sab = saa = sbb = 0.0
    for s in range(0, n, chunk):
        xc = X[s : s + chunk].astype(np.float64) - mx
        yc = Y[s : s + chunk].astype(np.float64) - my
        xtx += xc.T @ xc
        yty += yc.T @ yc
        ytx += yc.T @ xc
        a, b = np.einsum("ij,ij->i", xc, xc), np.einsum("ij,ij->i", yc, yc)
        sa, sb, sab, saa, sbb = sa + a.sum(), sb + b.sum(), sab + a @ b, saa + a @ a, sbb + b @ b

    def hsic(cross: float, ab: float, s1: float, s2: float) -> float:
        return (cross - ab + s1 * s2 / ((n - 1) * (n - 2)) - 2.0 * ab / (n - 2)) / (n * (n - 3))

    hxy = hsic(float(np.vdot(ytx, ytx)), sab, sa, sb)
    return hxy / np.sqrt(
        hsic(float(np.vdot(xtx, xtx)), saa, sa, sa) * hsic(float(np.vdot(yty, yty)), sbb, sb, sb)
    )


def gram_bytes(n: int) -> float:
    """Bytes the Gram form needs at its peak: about three float64 n x n matrices."""
    return 3 * 8.0 * n * n


def _blas() -> str:
    try:
        from threadpoolctl import threadpool_info

        libs = [
            f"{i.get('internal_api')} {i.get('version')} ({i.get('architecture')} kernels, "
            f"{i.get('num_threads')} threads)"
            for i in threadpool_info()
            if i.get("user_api") == "blas"
        ]
        return "; ".join(dict.fromkeys(libs)) or "unknown"
    except ImportError:
        return "unknown (threadpoolctl missing)"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[4000, 100_000])
    parser.add_argument("--dim", type=int, default=1280)
    parser.add_argument("--gram-limit-gb", type=float, default=10.0)
    parser.add_argument(
        "--no-reference", action="store_true", help="skip the previous implementation"
    )
    parser.add_argument("--no-resampling", action="store_true")
    parser.add_argument("--permutations", type=int, default=1000)
    parser.add_argument("--bootstrap", type=int, default=1000)
    parser.add_argument(
        "--results", help="rewrite this script's rows of RESULTS.md's summary table"
    )
    args = parser.parse_args(argv)
    rng = np.random.default_rng(0)
    d = args.dim
    load_before = os.getloadavg()
    print(
        f"machine: {os.cpu_count()} cores; BLAS: {_blas()}; OPENBLAS_CORETYPE="
        f"{os.environ.get('OPENBLAS_CORETYPE', '(unset)')}; load average {load_before[0]:.2f}"
    )
    peak64 = peak_gemm(np.float64, 2 * d)
    peak32 = peak_gemm(np.float32, 2 * d)
    print(
        f"peak GEMM here ({2 * d} x 4096 by 4096 x {2 * d}, best of 3): float64 {peak64 / 1e9:.1f} "
        f"GFLOP/s, float32 {peak32 / 1e9:.1f} GFLOP/s"
    )
    print(
        f"linear CKA, d = {d}, inputs float32; memory = peak beyond the inputs; "
        f"floor = (2d)^2 n flops / peak GEMM rate"
    )
    print(
        f"{'n':>8} {'estimator':>9} {'form':>22} {'seconds':>8} {'CPU s':>7} {'floor s':>8} "
        f"{'x floor':>8} {'peak MiB':>9} {'CKA':>10} {'|diff|':>8}"
    )
    summary: dict[str, float] = {}
    for n in args.sizes:
        X = rng.standard_normal((n, d), dtype=np.float32)
        Y = (0.5 * X[:, ::-1] + rng.standard_normal((n, d), dtype=np.float32)).astype(np.float32)
        flops = (2 * d) ** 2 * n
        for debiased in (True, False):
            label = "debiased" if debiased else "biased"
            forms = [("features float64", dict(method="features"), peak64)]
            forms.append(
                ("features float32 prod.", dict(method="features", precision="float32"), peak32)
            )
            if debiased and not args.no_reference:
                forms.append(("previous (numpy, f64)", None, peak64))
            shipped = None
            for name, kwargs, peak in forms:
                if kwargs is None:
                    value, secs, mem = measure(reference_linear_cka, X, Y)
                else:
                    value, secs, mem = measure(linear_cka, X, Y, debiased=debiased, **kwargs)
                shipped = value if shipped is None else shipped
                floor = flops / peak
                print(
                    f"{n:>8} {label:>9} {name:>22} {secs:>8.2f} {measure.cpu:>7.1f} {floor:>8.2f} "
                    f"{secs / floor:>7.2f}x {mem:>9.0f} {value:>10.6f} "
                    f"{abs(value - shipped):>8.1e}",
                    flush=True,
                )
                summary[f"{n}/{label}/{name}/cpu"] = measure.cpu
                summary[f"{n}/{label}/{name}"] = secs
                summary[f"{n}/{label}/{name}/floor"] = floor
                summary[f"{n}/{label}/{name}/mem"] = mem
                summary[f"{n}/{label}/{name}/diff"] = abs(value - shipped)
            need = gram_bytes(n)
            if need > args.gram_limit_gb * 2**30:
                print(
                    f"{n:>8} {label:>9} {'gram':>22}   skipped: would need ~{need / 2**30:.0f} GiB "
                    f"(> {args.gram_limit_gb:g} GiB)"
                )
                continue
            value_g, t_gram, m_gram = measure(linear_cka, X, Y, debiased=debiased, method="gram")
            print(
                f"{n:>8} {label:>9} {'gram (n x n, float64)':>22} {t_gram:>8.2f} "
                f"{measure.cpu:>7.1f} {'':>8} {'':>8} {m_gram:>9.0f} "
                f"{value_g:>10.6f} {abs(value_g - shipped):>8.1e}",
                flush=True,
            )
    load_after = os.getloadavg()
    print(
        f"load average before {load_before[0]:.2f}, after {load_after[0]:.2f} (1-minute, "
        f"{os.cpu_count()} cores)"
    )
    if not args.no_resampling:
        n = 4000
        X = rng.standard_normal((n, d), dtype=np.float32)
        Y = (0.5 * X[:, ::-1] + rng.standard_normal((n, d), dtype=np.float32)).astype(np.float32)
        for max_rows in (1000, 2000):
            (p, *_), secs, mem = measure(
                permutation_test_cka,
                [X],
                [Y],
                n_permutations=args.permutations,
                max_rows=max_rows,
                random_state=0,
                show_progress=False,
            )
            print(
                f"permutation test, one fold n={n}, d={d}, {args.permutations} permutations on a "
                f"{max_rows}-image subset: {secs:.1f} s, peak {mem:.0f} MiB, p = {p:.4f}"
            )
        boot, secs, mem = measure(
            bootstrap_cka, [X], [Y], n_bootstrap=args.bootstrap, random_state=0, show_progress=False
        )
        lo, hi = np.quantile(boot[:, 0], [0.025, 0.975])
        print(
            f"bootstrap, one fold n={n}, d={d}, {args.bootstrap} resamples (all images): "
            f"{secs:.1f} s, peak {mem:.0f} MiB, 95% CI {lo:.4f}-{hi:.4f}"
        )
        folds = [rng.standard_normal((400, d), dtype=np.float32) for _ in range(10)]
        others = [
            (0.5 * f[:, ::-1] + rng.standard_normal((400, d), dtype=np.float32)) for f in folds
        ]
        _, secs, _ = measure(
            permutation_test_cka,
            folds,
            others,
            n_permutations=args.permutations,
            random_state=0,
            show_progress=False,
        )
        _, secs_b, _ = measure(
            bootstrap_cka,
            folds,
            others,
            n_bootstrap=args.bootstrap,
            random_state=0,
            show_progress=False,
        )
        print(
            f"10 folds x 400 images, d={d}: {args.permutations} permutations {secs:.1f} s, "
            f"{args.bootstrap} bootstrap resamples {secs_b:.1f} s"
        )
    if args.results:
        n = max(args.sizes)
        key = f"{n}/debiased/features float64"
        if key in summary:
            load = f"load {load_before[0]:.1f}-{load_after[0]:.1f} on {os.cpu_count()} cores"
            rows = [
                Row(
                    f"Debiased linear CKA, n = {n:,}, d = {d:,}, float64 (shipped)",
                    f"{summary[key]:.1f} s ({summary[key + '/cpu']:.1f} CPU s), "
                    f"{summary[key + '/mem']:.0f} MiB beyond the inputs ({load})",
                    "<= 10 s on 2 cores, memory O(n d)",
                    f"{summary[key + '/floor']:.1f} s = {(2 * d) ** 2 * n / 1e12:.2f} TFLOP at the "
                    f"measured {peak64 / 1e9:.0f} GFLOP/s float64 peak",
                ),
            ]
            f32 = f"{n}/debiased/features float32 prod."
            rows.append(
                Row(
                    f"Debiased linear CKA, n = {n:,}, d = {d:,}, float32 products (opt-in)",
                    f"{summary[f32]:.1f} s, |CKA difference| {summary[f32 + '/diff']:.0e} ({load})",
                    "-",
                    f"{summary[f32 + '/floor']:.1f} s at the measured {peak32 / 1e9:.0f} GFLOP/s "
                    "float32 peak",
                )
            )
            ref = f"{n}/debiased/previous (numpy, f64)"
            if ref in summary:
                rows.append(
                    Row(
                        f"Debiased linear CKA, n = {n:,}, d = {d:,}, previous implementation",
                        f"{summary[ref]:.1f} s ({load})",
                        "-",
                        "same run as the rows above",
                    )
                )
            update_results(args.results, "cka.py", rows)
            print(f"updated the cka.py rows of {args.results}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
