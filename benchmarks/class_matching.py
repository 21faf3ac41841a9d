"""Do the folds' networks share a unit per class, matched on that class's films alone? (offline)

Usage::

    python benchmarks/phantom_acceptance.py --seeds 0,1,2 --only clean  # runs/ data/ reports/
    python benchmarks/class_matching.py --out /tmp/biomark-acceptance --strategy scratch

The report matches units across folds once, on their variation within every
class pooled (``align_folds(labels=...)``), and that pooled variation lies
mostly in one class (Emphysema on the phantom: ``biomark.analysis.class_variation``).
A family shortlisted for another class is then judged by whether its members
agree on that class's own films (``within_class_r`` in ``candidates.csv``).
This script asks whether a match made on the class's films themselves would
find agreeing members the pooled match misses. Per clean seed and diseased
class it matches the folds' units one to one on the class's films only
(:func:`biomark.analysis.alignment.align_folds` on those rows), and for the
class's 20 shortlisted families (anchored at their reference-fold unit)
prints:

* ``one-to-one r``: the weakest, over the other folds, of the anchor's
  correlation with its partner under the class's own one-to-one match;
* ``best r``: the same for the anchor's best partner in each fold with no
  one-to-one constraint (:attr:`~biomark.analysis.unit_match.UnitMatch.best_r`):
  what no matching rule can exceed;
* how many anchors reach r >= 0.5 (the report's agreement threshold) each
  way, and the within-class Spearman rho with the planted severity of the
  consensus of those that do under the one-to-one match (mean of the members,
  each standardised over the class's films).

Two more columns ask whether the networks grade the class's severity at
all, by anything the report could pick:

* ``log-odds rho``: the within-class Spearman rho with the planted severity
  of each film's out-of-fold log-odds of its class against Normal (the
  ``prob_*`` columns of the folds' ``features.parquet``): how strongly the
  network's own answer grows with the severity;
* ``shared directions``: the first 3 directions the folds' networks share
  within the class, found without the truth (each fold's 1,280 units reduced
  to their first 10 principal components on half of the class's films, then
  the multi-set CCA of those scores, MAXVAR form, as the leading left
  singular vectors of the folds' stacked orthonormal bases), each read on the
  other half as every fold's projection: their weakest cross-fold correlation
  and the severity rho of their mean. A shared direction is what a unit
  family would be if the networks coded the grade across several units.

Nothing is trained; every figure comes from the dumps and reports the
acceptance run left.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
import pandas as pd

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

AGREEMENT_R = 0.5
DISEASES = ("COVID-19", "Edema", "Effusion", "Emphysema", "Fibrosis", "Pneumonia")


def fold_activations(run: Path) -> tuple[dict[int, np.ndarray], pd.DataFrame]:
    """Every fold's units on every image (``features_all.parquet``), rows in one image order."""
    every: dict[int, np.ndarray] = {}
    meta = pd.DataFrame()
    for path in sorted(run.glob("fold_*/features_all.parquet")):
        frame = pd.read_parquet(path).sort_values("image_id", kind="stable")
        units = [c for c in frame.columns if c.startswith("f") and c[1:].isdigit()]
        every[int(path.parent.name.split("_")[1])] = frame[units].to_numpy(np.float64)
        meta = frame[["image_id", "label"]].reset_index(drop=True)
    return every, meta


def standardised(x: np.ndarray) -> np.ndarray:
    """Columns to mean 0 and standard deviation 1 (constant columns to 0)."""
    sd = x.std(axis=0)
    return (x - x.mean(axis=0)) / np.where(sd > 0, sd, 1.0)


def class_rows(
    every: dict[int, np.ndarray],
    labels: np.ndarray,
    severity: np.ndarray,
    disease: str,
    anchors: list[int],
) -> dict[str, object]:
    """The shortlist's agreement under a match made on ``disease``'s films alone."""
    from biomark.analysis.alignment import align_folds
    from biomark.analysis.phantom_truth import spearman_columns

    inside = labels == disease
    acts = {f: np.where(np.isfinite(x[inside]), x[inside], 0.0) for f, x in every.items()}
    match = align_folds(acts)
    others = [f for f in match.folds if f != match.reference_fold]
    one_to_one = np.min([match.r[f][anchors] for f in others], axis=0)
    best = np.min([match.best_r[f][anchors] for f in others], axis=0)
    agreeing = [a for a, r in zip(anchors, one_to_one, strict=True) if r >= AGREEMENT_R]
    rhos: list[float] = []
    if agreeing:
        z = {f: standardised(x) for f, x in acts.items()}
        consensus = np.mean([z[f][:, match.perms[f][agreeing]] for f in match.folds], axis=0)
        rhos = np.round(spearman_columns(consensus, severity[inside]), 2).tolist()
    return {
        "class": disease,
        "one-to-one r (max)": round(float(np.nanmax(one_to_one)), 2),
        "agree one-to-one": len(agreeing),
        "best r (max)": round(float(np.nanmax(best)), 2),
        "agree best": int((best >= AGREEMENT_R).sum()),
        "severity rho of agreeing": sorted(rhos, key=abs, reverse=True)[:5],
    }


def log_odds_rho(run: Path, manifest: pd.DataFrame, disease: str) -> float:
    """Spearman rho of the out-of-fold log-odds of ``disease`` against Normal with the severity."""
    from biomark.analysis.phantom_truth import spearman_columns

    tables = [pd.read_parquet(p) for p in sorted(run.glob("fold_*/features.parquet"))]
    films = pd.concat(tables).query("label == @disease")
    tiny = 1e-9  # a probability of exactly 0 has no logarithm
    log_odds = np.log(films[f"prob_{disease}"].to_numpy() + tiny) - np.log(
        films["prob_Normal"].to_numpy() + tiny
    )
    severity = manifest["severity"].reindex(films["image_id"]).to_numpy(np.float64)
    return float(spearman_columns(log_odds[:, None], severity)[0])


def shared_directions(
    acts: dict[int, np.ndarray],
    severity: np.ndarray,
    *,
    n_components: int = 10,
    n_directions: int = 3,
    seed: int = 0,
) -> list[tuple[float, float]]:
    """The folds' first shared directions on one class's films: (agreement, severity rho) each.

    Fitted on a random half of the films (principal components per fold, then
    multi-set CCA of the folds' whitened scores), read on the other half.
    Hand-written because scikit-learn's CCA takes two sets, not one per fold.
    """
    from biomark.analysis.phantom_truth import spearman_columns

    order = np.random.default_rng(seed).permutation(len(severity))
    fit, held = order[: len(order) // 2], order[len(order) // 2 :]
    fitted, read = [], []
    for x in acts.values():
        mean, sd = x[fit].mean(axis=0), x[fit].std(axis=0)
        sd = np.where(sd > 0, sd, 1.0)
        fit_z, held_z = (x[fit] - mean) / sd, (x[held] - mean) / sd
        components = np.linalg.svd(fit_z, full_matrices=False)[2][:n_components]
        fitted.append(fit_z @ components.T)
        read.append(held_z @ components.T)
    bases = np.hstack([np.linalg.qr(f - f.mean(axis=0))[0] for f in fitted])
    shared = np.linalg.svd(bases, full_matrices=False)[0][:, :n_directions]
    rows = []
    for direction in shared.T:
        projections = np.array(
            [
                (r - f.mean(axis=0)) @ np.linalg.lstsq(f - f.mean(axis=0), direction, rcond=None)[0]
                for f, r in zip(fitted, read, strict=True)
            ]
        )
        r = np.corrcoef(projections)
        agreement = float(np.min(r[np.triu_indices(len(projections), 1)]))
        rho = float(spearman_columns(projections.mean(axis=0)[:, None], severity[held])[0])
        rows.append((round(agreement, 2), round(rho, 2)))
    return rows


def seed_table(out: Path, seed_dir: str, strategy: str) -> pd.DataFrame:
    """One row per diseased class of one seed."""
    run = out / "runs" / seed_dir / strategy.replace(":", "_")
    every, meta = fold_activations(run)
    manifest = pd.read_csv(out / "data" / seed_dir / "phantom.csv").set_index("image_id")
    severity = manifest["severity"].reindex(meta["image_id"]).to_numpy(np.float64)
    labels = meta["label"].astype(str).to_numpy()
    shortlist = pd.read_csv(out / "reports" / seed_dir / "candidates.csv")
    shortlist = shortlist[shortlist["strategy"] == strategy]
    rows = []
    for disease in DISEASES:
        members = shortlist.loc[shortlist["class"] == disease, "members"].astype(str)
        anchors = [int(m.split(",")[0].split(":")[1]) for m in members]
        row = class_rows(every, labels, severity, disease, anchors)
        inside = labels == disease
        acts = {f: np.where(np.isfinite(x[inside]), x[inside], 0.0) for f, x in every.items()}
        row["log-odds rho"] = round(log_odds_rho(run, manifest, disease), 2)
        row["shared directions (agreement, rho)"] = shared_directions(acts, severity[inside])
        rows.append(row)
    return pd.DataFrame(rows).assign(seed=seed_dir)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, required=True, help="phantom_acceptance.py's --out")
    parser.add_argument("--strategy", default="scratch")
    args = parser.parse_args(argv)
    seeds = sorted(p.name for p in (args.out / "reports").glob("seed*_clean"))
    if not seeds:
        raise SystemExit(f"{args.out}: no reports/seed*_clean (run phantom_acceptance.py first)")
    with pd.option_context("display.width", 200, "display.max_colwidth", 60):
        for seed_dir in seeds:
            print(seed_table(args.out, seed_dir, args.strategy).to_string(index=False))


if __name__ == "__main__":
    main()
