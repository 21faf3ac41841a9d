"""Which one-feature-per-class rule would recover the phantom's planted severity? (offline, no training)

Usage::

    python benchmarks/phantom_acceptance.py --seeds 0,1,2 --only clean    # writes runs/ data/ reports/
    python benchmarks/acceptance_pick_rules.py --out /tmp/biomark-acceptance --strategy scratch

It reads what :mod:`benchmarks.phantom_acceptance` left in ``--out`` (each
seed's phantom manifest, run folder and report) and, per clean seed and
diseased class, prints the within-class Spearman rho with the planted severity
of:

* ``pick``: the report's pick (``ground_truth.csv``, the rule being scored);
* ``short~evidence``: the shortlisted unit (``candidates.csv``) most tied,
  within the class, to the network's own graded evidence for it: the
  out-of-fold log-odds ``log p(class) - log p(Normal)``;
* ``any~evidence``: the same over all matched units;
* ``evidence``: that log-odds itself (the network's output as a score);
* ``evidence/lobe``: for Pneumonia, the log-odds ranked within the lobe the
  phantom consolidated (is the density graded once the lobe's size is held
  fixed?);
* ``ceiling``: the best any matched unit reaches, picked with the truth.

Every rule but ``ceiling`` is chosen without looking at severity. A class
counts as recovered at abs(rho) >= 0.5, the acceptance threshold of issue 12.
Units are matched across folds as the report matches them
(:func:`biomark.analysis.alignment.align_folds` on every image through every
fold's model, ``features_all.parquet``).
"""  # noqa: E501

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
import pandas as pd
from scipy.stats import rankdata

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

RULES = ("pick", "short~evidence", "any~evidence", "evidence", "ceiling")
THRESHOLD = 0.5


def rank_correlations(X: np.ndarray, y: np.ndarray) -> np.ndarray:
    """Spearman rho of every column of ``X`` with ``y`` (constant columns give 0, not NaN)."""
    from biomark.analysis.phantom_truth import spearman_columns

    return np.nan_to_num(spearman_columns(X, y))


def within_strata(x: np.ndarray, y: np.ndarray, strata: np.ndarray) -> float:
    """Spearman rho of ``x`` and ``y`` after ranking both inside each stratum."""
    rx, ry = np.empty(len(x)), np.empty(len(y))
    for level in np.unique(strata):
        inside = strata == level
        rx[inside] = rankdata(x[inside]) / inside.sum()
        ry[inside] = rankdata(y[inside]) / inside.sum()
    return float(np.corrcoef(rx, ry)[0, 1])


def seed_table(out: Path, seed_dir: str, strategy: str) -> pd.DataFrame:
    """One row per diseased class: rho with the severity under each rule."""
    from biomark.analysis.alignment import align_folds, align_rows
    from biomark.analysis.class_evidence import evidence_scores

    manifest = pd.read_csv(out / "data" / seed_dir / "phantom.csv").set_index("image_id")
    run = out / "runs" / seed_dir / strategy.replace(":", "_")
    every, held_out = {}, []
    for path in sorted(run.glob("fold_*/features_all.parquet")):
        frame = pd.read_parquet(path).sort_values("image_id", kind="stable")
        fold = int(path.parent.name.split("_")[1])
        units = [c for c in frame.columns if c.startswith("f") and c[1:].isdigit()]
        every[fold] = frame[units].to_numpy(np.float64)
        held_out.append(frame[frame["in_test_fold"]].assign(fold=fold))
    rows = pd.concat(held_out, ignore_index=True).join(
        manifest[["severity", "lobe"]], on="image_id"
    )
    # matched as the report matches them: within the images' classes
    alignment = align_folds(every, labels=frame["label"].to_numpy())
    X = align_rows(rows[units].to_numpy(np.float64), rows["fold"].to_numpy(), alignment)
    report = out / "reports" / seed_dir
    shortlist = pd.read_csv(report / "candidates.csv")
    shortlist = shortlist[shortlist["strategy"] == strategy]
    truth = pd.read_csv(report / "ground_truth.csv")
    truth = truth[truth["strategy"] == strategy].set_index("class")
    classes = list(truth.index)
    names = [*classes, "Normal"]
    scores = evidence_scores(rows[[f"prob_{c}" for c in names]].to_numpy(), names)
    table = []
    for cls in classes:
        inside = (rows["label"] == cls).to_numpy()
        severity = rows["severity"].to_numpy()[inside]
        evidence = scores[cls].to_numpy()[inside]
        with_severity = rank_correlations(X[inside], severity)
        with_evidence = rank_correlations(X[inside], evidence)
        short = shortlist.loc[shortlist["class"] == cls, "feature_index"].to_numpy(int)
        table.append(
            {
                "class": cls,
                "pick": float(truth.at[cls, "rho"]),
                "short~evidence": with_severity[short[np.argmax(np.abs(with_evidence[short]))]],
                "any~evidence": with_severity[np.argmax(np.abs(with_evidence))],
                "evidence": rank_correlations(evidence[:, None], severity)[0],
                "evidence/lobe": (
                    within_strata(evidence, severity, rows["lobe"].to_numpy()[inside])
                    if cls == "Pneumonia"
                    else np.nan
                ),
                "ceiling": with_severity[np.argmax(np.abs(with_severity))],
            }
        )
    return pd.DataFrame(table).set_index("class")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path("/tmp/biomark-acceptance"))
    parser.add_argument("--strategy", default="scratch")
    parser.add_argument(
        "--seeds", default=None, help="comma-separated seed folders (default: every *_clean)"
    )
    args = parser.parse_args()
    seeds = (
        args.seeds.split(",")
        if args.seeds
        else sorted(p.name for p in (args.out / "reports").glob("*_clean"))
    )
    counts = []
    for seed_dir in seeds:
        table = seed_table(args.out, seed_dir, args.strategy)
        print(
            f"\n{seed_dir} ({args.strategy}): within-class Spearman rho with the planted severity"
        )
        print(table.round(2).to_string())
        counts.append(
            {"seed": seed_dir, **{r: int((table[r].abs() >= THRESHOLD).sum()) for r in RULES}}
        )
    print(f"\nclasses recovered (abs(rho) >= {THRESHOLD}) of 6, per rule:")
    print(pd.DataFrame(counts).set_index("seed").to_string())


if __name__ == "__main__":
    main()
