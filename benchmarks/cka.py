"""Speed and peak memory of linear CKA: feature-space form vs Gram-matrix form.

Usage::

    python benchmarks/cka.py                 # n = 4,000 and 100,000, d = 1,280
    python benchmarks/cka.py --sizes 4000 --no-resampling

Inputs are float32 (as ``features.parquet`` stores them); every estimator
computes in float64. Peak memory is measured with :mod:`tracemalloc` (numpy
reports its buffers to it) and excludes the inputs themselves. The Gram form
is skipped when its n x n matrices would need more than ``--gram-limit-gb``
(it then prints the estimate). With ``--resampling`` (default on) it also
times the permutation test and bootstrap used by ``biomark compare`` on one
n = 4,000 fold.
"""

from __future__ import annotations

import argparse
import time
import tracemalloc

import numpy as np

from biomark.analysis.cka import linear_cka
from biomark.analysis.similarity import bootstrap_cka, permutation_test_cka


def measure(func, *args, **kwargs):  # noqa: ANN001, ANN201 - benchmark helper
    tracemalloc.start()
    start = time.perf_counter()
    value = func(*args, **kwargs)
    seconds = time.perf_counter() - start
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    return value, seconds, peak / 2**20


def gram_bytes(n: int) -> float:
    """Bytes the Gram form needs at its peak: about three float64 n x n matrices."""
    return 3 * 8.0 * n * n


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[4000, 100_000])
    parser.add_argument("--dim", type=int, default=1280)
    parser.add_argument("--gram-limit-gb", type=float, default=10.0)
    parser.add_argument("--no-resampling", action="store_true")
    parser.add_argument("--permutations", type=int, default=1000)
    parser.add_argument("--bootstrap", type=int, default=1000)
    args = parser.parse_args()
    rng = np.random.default_rng(0)
    d = args.dim
    print(f"linear CKA, d = {d}, inputs float32, computed in float64; memory = peak beyond the inputs")
    print(f"{'n':>8} {'estimator':>9} {'form':>8} {'seconds':>9} {'peak MiB':>9} {'CKA':>9} {'time ratio':>11}")
    for n in args.sizes:
        X = rng.standard_normal((n, d), dtype=np.float32)
        Y = (0.5 * X[:, ::-1] + rng.standard_normal((n, d), dtype=np.float32)).astype(np.float32)
        for debiased in (True, False):
            label = "debiased" if debiased else "biased"
            value, t_feat, m_feat = measure(linear_cka, X, Y, debiased=debiased, method="features")
            print(f"{n:>8} {label:>9} {'features':>8} {t_feat:>9.2f} {m_feat:>9.0f} {value:>9.5f} {'':>11}")
            need = gram_bytes(n)
            if need > args.gram_limit_gb * 2**30:
                print(f"{n:>8} {label:>9} {'gram':>8}   skipped: would need ~{need / 2**30:.0f} GiB "
                      f"(> {args.gram_limit_gb:g} GiB)")
                continue
            value_g, t_gram, m_gram = measure(linear_cka, X, Y, debiased=debiased, method="gram")
            print(f"{n:>8} {label:>9} {'gram':>8} {t_gram:>9.2f} {m_gram:>9.0f} {value_g:>9.5f} "
                  f"{t_gram / t_feat:>10.1f}x")
            print(f"{'':>8} {'':>9} {'':>8} memory ratio gram/features: {m_gram / m_feat:.1f}x, "
                  f"|difference| = {abs(value - value_g):.1e}")
    if not args.no_resampling:
        n = 4000
        X = rng.standard_normal((n, d), dtype=np.float32)
        Y = (0.5 * X[:, ::-1] + rng.standard_normal((n, d), dtype=np.float32)).astype(np.float32)
        for max_rows in (1000, 2000):
            (p, *_), secs, mem = measure(permutation_test_cka, [X], [Y], n_permutations=args.permutations,
                                         max_rows=max_rows, random_state=0, show_progress=False)
            print(f"permutation test, one fold n={n}, d={d}, {args.permutations} permutations on a "
                  f"{max_rows}-image subset: {secs:.1f} s, peak {mem:.0f} MiB, p = {p:.4f}")
        boot, secs, mem = measure(bootstrap_cka, [X], [Y], n_bootstrap=args.bootstrap, random_state=0,
                                  show_progress=False)
        lo, hi = np.quantile(boot[:, 0], [0.025, 0.975])
        print(f"bootstrap, one fold n={n}, d={d}, {args.bootstrap} resamples (all images): {secs:.1f} s, "
              f"peak {mem:.0f} MiB, 95% CI {lo:.4f}-{hi:.4f}")
        folds = [rng.standard_normal((400, d), dtype=np.float32) for _ in range(10)]
        others = [(0.5 * f[:, ::-1] + rng.standard_normal((400, d), dtype=np.float32)) for f in folds]
        _, secs, _ = measure(permutation_test_cka, folds, others, n_permutations=args.permutations,
                             random_state=0, show_progress=False)
        _, secs_b, _ = measure(bootstrap_cka, folds, others, n_bootstrap=args.bootstrap, random_state=0,
                               show_progress=False)
        print(f"10 folds x 400 images, d={d}: {args.permutations} permutations {secs:.1f} s, "
              f"{args.bootstrap} bootstrap resamples {secs_b:.1f} s")


if __name__ == "__main__":
    main()
