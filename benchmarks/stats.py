"""Time of :func:`biomark.analysis.stats.feature_tests` at the paper's scale.

Synthetic GAP-like features (non-negative, ~10 % exact zeros, so ties occur)
for 3,905 images x 1,280 features in the paper's seven classes (COVID-19 455,
Pneumonia 910, Edema 293, Effusion 311, Emphysema 315, Fibrosis 280, Normal
1,341). Prints one line per configuration: the tests alone
(``n_bootstrap=0``), the full call with the stratified bootstrap AUC interval,
and the full call with the per-class one-vs-rest columns.

Usage::

    python benchmarks/stats.py [--n-bootstrap 1000] [--repeat 1] [--seed 0]
"""

from __future__ import annotations

import argparse
import time

import numpy as np

from biomark.analysis.stats import feature_tests
from biomark.data.phantom import PAPER_CLASS_COUNTS as CLASS_COUNTS

N_FEATURES = 1280


def _data(seed: int) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    labels = np.repeat(list(CLASS_COUNTS), list(CLASS_COUNTS.values()))
    X = rng.gamma(shape=1.5, scale=0.4, size=(labels.size, N_FEATURES)).astype(np.float32)
    X[rng.uniform(size=X.shape) < 0.1] = 0.0
    X[labels == "COVID-19", :20] += 0.3  # a few planted features
    return X, labels


def _time(repeat: int, **kwargs: object) -> tuple[float, float, object]:
    """Best wall-clock and CPU seconds over ``repeat`` calls, and the result."""
    wall, cpu, out = float("inf"), float("inf"), None
    for _ in range(repeat):
        start, start_cpu = time.perf_counter(), time.process_time()
        out = feature_tests(**kwargs)  # type: ignore[arg-type]
        wall = min(wall, time.perf_counter() - start)
        cpu = min(cpu, time.process_time() - start_cpu)
    return wall, cpu, out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--n-bootstrap", type=int, default=1000)
    parser.add_argument("--repeat", type=int, default=1, help="report the best of this many runs")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()

    X, labels = _data(args.seed)
    print(
        f"feature_tests on {X.shape[0]} images x {X.shape[1]} features, {len(CLASS_COUNTS)} "
        f"classes (best of {args.repeat})"
    )
    print(f"  {'configuration':<52} {'wall s':>7} {'cpu s':>7}")
    t0, c0, _ = _time(args.repeat, X=X, labels=labels, n_bootstrap=0)
    print(f"  {'tests only (Kruskal, Mann-Whitney, delta, AUC, BH)':<52} {t0:7.2f} {c0:7.2f}")
    t1, c1, df = _time(
        args.repeat, X=X, labels=labels, n_bootstrap=args.n_bootstrap, seed=args.seed
    )
    label = f"+ stratified bootstrap AUC CI, {args.n_bootstrap} draws"
    print(f"  {label:<52} {t1:7.2f} {c1:7.2f}")
    t2, c2, _ = _time(
        args.repeat,
        X=X,
        labels=labels,
        n_bootstrap=args.n_bootstrap,
        seed=args.seed,
        per_class=True,
    )
    print(f"  {'+ per-class one-vs-rest columns':<52} {t2:7.2f} {c2:7.2f}")
    per_draw = (c1 - c0) / max(args.n_bootstrap, 1) * 1e3
    print(f"  bootstrap: {per_draw:.1f} ms CPU per draw for all {X.shape[1]} features")
    print(
        f"  planted features found (mw_q < 0.05): {int(df['significant'].iloc[:20].sum())}/20; "
        f"null features significant: {int(df['significant'].iloc[20:].sum())}/{X.shape[1] - 20}"
    )


if __name__ == "__main__":
    main()
