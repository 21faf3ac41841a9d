"""Does the report find the phantom's planted truth, and flag its planted shortcut?

Usage::

    python benchmarks/phantom_acceptance.py                      # 3 clean + 3 confounded seeds
    python benchmarks/phantom_acceptance.py --seeds 0 --json acceptance.json
    python benchmarks/phantom_acceptance.py --strategies scratch  # faster: the paper's best strategy only
    python benchmarks/phantom_acceptance.py --only confounded --confounder-strength 1  # a tag that decides
    python benchmarks/phantom_acceptance.py --scheduler local:2   # folds side by side, as make demo

For every seed it runs what ``make demo`` runs (``analyses/quick.yaml``) on a
phantom drawn with that seed, once clean and once with the source confounder
(``data.phantom.confounder: true``: a burned-in tag outside the lungs, on 80 %
of COVID-19 patients and 20 % of the others; ``--confounder-strength`` sets
the 80 %): ``extract``, ``radiomics --run
--region zones`` and ``report``, through the same functions as the commands.
Then it scores the ``scratch`` strategy's report against the truth it was never
shown:

* **recovered**: for each of the six diseased classes, the report's pick
  (:func:`biomark.analysis.biomarkers.class_picks`: the top candidate, or when
  none passes every criterion the best stable, significant, unflagged feature;
  chosen without looking at severity) tracks the planted severity within its
  class, Spearman |rho| >= 0.5 (``ground_truth.csv``); a matched unit family
  is read from its consensus over the folds' models
  (:func:`biomark.analysis.unit_families.family_consensus`), and the same picks
  read from each image's out-of-fold member alone are printed beside it; where
  the pick is only the top-ranked feature, the JSON gives the report's reason
  (``why_unpicked``, :func:`biomark.analysis.unpicked.why_unpicked`);
* **the same picks against the planted burden** (printed, not scored): how
  much signature each film holds (the phantom's ``burden`` column), which a
  Pneumonia's randomly drawn lobe sets as much as its severity does
  (``rho_burden``, and the best of all features, ``best_any_rho_burden``);
* **radiomics right**: the strongest radiomic correlate the report attaches
  to a recovered pick is of the family group where the signature was planted,
  and the report places it in the right lung zones (``EXPECTED_ZONES`` below;
  e.g. lower-zone texture for Fibrosis): the zones of the candidate table's
  ``radiomic_zone`` (where the correlate, measured zone by zone, leads), or
  without one the correlate's own zone, which a whole-lung feature does not have;
* **source flag**: the shortcut audit finds the image source predictable within
  a class (per-class or pooled permutation test, Holm-adjusted);
* **tag flagged**: the source flag, or the blackout verdict "reads outside the
  lungs", or COVID-19 features (the tag's class) flagged as living outside the
  lungs, or the lung swap finding that COVID-19's surroundings sway its answers
  (:mod:`biomark.analysis.lung_swap`); outside-lung features and swap flags of
  other classes are printed, not counted as the tag found. On a clean phantom,
  which has no tag, a model-level or swap flag of any class is printed as a
  "false alarm", and so are outside-lung features when there are more of them
  than random units give (the report's one-sided binomial reading against its
  lung null: each feature's threshold lets 5 % of units without a learned
  preference through);
* **flagged candidates**: candidates that carry source beyond their class
  (must be 0: flagged features are excluded);
* **source in the images** (data level, no model): the same within-class
  test on the lung radiomics and on the outside-lung control's radiomics
  (:mod:`biomark.analysis.source_regions`); the tag lives outside the lungs,
  so a confounded seed should show the source there and a clean one nowhere;
* **tag counterfactual** (confounded seeds): the clean phantom of the same
  seed holds the same films without the tag, so each fold's model predicts its
  tagged test films with and without it. The share of changed predictions
  says whether the model took the shortcut at all, i.e. whether there was
  anything in it for the audit to flag.

Acceptance (issue 12): on every clean seed >= 5 of 6 classes recovered, the
radiomics of each recovered pick right, and no source flag; on every
confounded seed the tag flagged and no flagged candidate. Runs and reports
stay in ``--out`` for inspection.
"""  # noqa: E501

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from collections.abc import Collection, Mapping
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from biomark.allocator import keep_freed_memory

REPO = Path(__file__).resolve().parents[1]

#: Where each signature was planted: family groups and lung zones (data/PHANTOM.md);
#: an empty zone tuple accepts any region. The effusion is basal fluid whose meniscus rises
#: laterally, so it lies in the lower and the peripheral (lateral) zones: on the demo phantom the
#: 40 radiomic features that track its severity best are 20 lower-zone, 13 peripheral and 7
#: whole-lung ones, none of another zone.
EXPECTED_ZONES: dict[str, tuple[str, ...]] = {
    "COVID-19": ("lower", "peripheral"),
    "Edema": ("middle", "central"),
    "Effusion": ("lower", "peripheral"),
    "Emphysema": (),
    "Fibrosis": ("lower", "peripheral"),
    "Pneumonia": (),
}
MIN_RHO = 0.5
#: The class the confounder's tag goes with (site_B: a share ``confounder_strength`` of its
#: patients).
TAG_CLASS = "COVID-19"


def phantom_tag(seed: int, confounder: bool, strength: float = 0.8) -> str:
    """The name of one phantom's run and data folders (the default strength keeps the historical
    names)."""
    if not confounder:
        return f"seed{seed}_clean"
    return f"seed{seed}_confounded" + ("" if strength == 0.8 else f"{strength:g}")


def run_seed(
    seed: int,
    confounder: bool,
    strategies: list[str] | None,
    out: Path,
    plan_path: Path,
    strength: float = 0.8,
    min_match_r: float | None = None,
    scheduler: str | None = None,
) -> dict[str, Any]:
    """Extract, radiomics and report for one phantom; return the scores.

    ``min_match_r`` overrides the report's criterion of the same name (None: the report's default);
    ``scheduler`` runs the extract's folds on a Dask cluster as ``make demo`` does (``local:N``;
    None: one fold at a time in this process, the same weights with the plan's fixed threads).
    """
    import dataclasses

    from biomark.analysis.biomarkers import Criteria
    from biomark.cli import main as cli
    from biomark.config import load_plan
    from biomark.pipelines.executor import executor_for
    from biomark.pipelines.extract import run_extract
    from biomark.pipelines.report import analyse_run
    from biomark.report.report_page import write_report
    from biomark.report.report_strategy import ReportSettings

    tag = phantom_tag(seed, confounder, strength)
    plan = load_plan(
        plan_path,
        {
            "name": tag,
            "seed": seed,
            "output_dir": str(out / "runs"),
            "data.dir": str(out / "data" / tag),
            "data.phantom.seed": seed,
            "data.phantom.confounder": confounder,
            **({"data.phantom.confounder_strength": strength} if confounder else {}),
        },
    )
    times: dict[str, float] = {}
    t0 = time.perf_counter()
    run_dir = run_extract(plan, strategies=strategies, executor=executor_for(scheduler))
    times["extract"] = time.perf_counter() - t0
    t0 = time.perf_counter()
    reports = out / "reports"
    status = cli(
        [
            "-q",
            "radiomics",
            "--data",
            plan.data.dir,
            "--run",
            str(run_dir),
            "--region",
            "zones",
            "--jobs",
            "-1",
            "--reports",
            str(reports),
        ]
    )
    if status != 0:
        raise RuntimeError(f"radiomics failed for {tag} (exit {status})")
    times["radiomics"] = time.perf_counter() - t0
    t0 = time.perf_counter()
    criteria = Criteria()
    if min_match_r is not None:
        criteria = dataclasses.replace(criteria, min_match_r=min_match_r)
    settings = ReportSettings(strategies=("scratch",), criteria=criteria)
    data = analyse_run(run_dir, settings, reports=reports)
    write_report(data)
    times["report"] = time.perf_counter() - t0
    scores = score(data, seed, confounder, times)
    scores["confounder_strength"] = strength if confounder else None
    if confounder:
        scores["tag_use"] = tag_use(out, seed, tag)
    return scores


def tag_use(out: Path, seed: int, confounded: str) -> dict[str, float]:
    """Does the confounded run's model use the tag? Its test films predicted with and without it.

    The clean phantom of the same seed has the same films without the tag
    (``data/PHANTOM.md``), so each fold's scratch model predicts its tagged test
    films twice; the share of changed predictions and the mean shift of
    P(COVID-19) say how much the model reads the tag, whatever the audit says.
    ``confounded`` names the confounded phantom's run and data folders.
    """
    import keras

    from biomark.models import layers  # noqa: F401 - registers the custom layers of model.keras
    from biomark.train import schedule  # noqa: F401 - registers the learning-rate schedule

    def cache(name: str) -> tuple[pd.DataFrame, pd.Series, np.ndarray]:
        d = out / "data" / name
        rows = pd.read_csv(d / "cache" / "index.csv").set_index("image_id")["row"]
        return (
            pd.read_csv(d / "manifest.csv").set_index("image_id"),
            rows,
            np.load(d / "cache" / "images.npy", mmap_mode="r"),
        )

    clean_name = phantom_tag(seed, confounder=False)
    if not (out / "data" / clean_name).is_dir():
        return {"changed": float("nan"), "covid_shift": float("nan"), "n_tagged": 0}
    manifest, rows_tag, tagged = cache(confounded)
    _, rows_clean, clean = cache(clean_name)
    run = out / "runs" / confounded / "scratch"
    changed, shift, n = [], [], 0
    for fold_dir in sorted(run.glob("fold_*")):
        split = pd.read_csv(fold_dir / "split.csv")
        test = split.loc[split["role"] == "test", "image_id"]
        test = test[manifest.loc[test, "artifact"].astype(bool).to_numpy()]
        if test.empty:
            continue
        model = keras.saving.load_model(fold_dir / "model.keras", compile=False)
        with_tag = model.predict(
            np.asarray(tagged[rows_tag.loc[test].to_numpy()])[..., None].astype("float32"),
            verbose=0,
        )
        without = model.predict(
            np.asarray(clean[rows_clean.loc[test].to_numpy()])[..., None].astype("float32"),
            verbose=0,
        )
        covid = 0  # PHANTOM_CLASSES order: COVID-19 first
        changed.append(float((with_tag.argmax(1) != without.argmax(1)).sum()))
        shift.append(float((with_tag[:, covid] - without[:, covid]).sum()))
        n += len(test)
    return {
        "changed": sum(changed) / n if n else float("nan"),
        "covid_shift": sum(shift) / n if n else float("nan"),
        "n_tagged": n,
    }


def _text(value: Any) -> str:
    """A text cell of a report table, ``""`` for a missing one."""
    text = str(value or "")
    return "" if text == "nan" else text


def _top_correlate(correlates: Any) -> str:
    """The first name of a ``name (+rho); name (+rho)`` list (``radiomic_correlates``,
    ``top_correlates``)."""
    text = _text(correlates)
    return text.split(";")[0].split(" (")[0].strip() if text else ""


def _placed(cls: str, correlate: str, leading: str) -> tuple[str, str, bool]:
    """Where the report places a class's correlate, its family group, and whether both are where
    the signature was planted.

    The place is the zones the correlate leads in (``radiomic_zone``, ``top_zone``), else the
    correlate's own region (``lung`` for a whole-lung feature, never expected); ``("", "",
    False)`` without a correlate.
    """
    from biomark.analysis.phantom_truth import EXPECTED, family_group, feature_region

    if not correlate:
        return "", "", False
    zones = leading.split(", ") if leading else [feature_region(correlate)]
    group = family_group(correlate)
    right = group in EXPECTED[cls] and (
        not EXPECTED_ZONES[cls] or all(z in EXPECTED_ZONES[cls] for z in zones)
    )
    return ", ".join(zones), group, right


def score(data: Any, seed: int, confounder: bool, times: dict[str, float]) -> dict[str, Any]:
    """The acceptance figures of the ``scratch`` strategy of one report."""
    from biomark.analysis.audit import POOLED_RECOVERABLE, recoverable_classes

    rep = data.strategies["scratch"]
    truth = (
        data.truth[data.truth["strategy"] == "scratch"].set_index("class")
        if data.truth is not None
        else None
    )
    table = rep.candidates if rep.candidates is not None else pd.DataFrame()
    unpicked = (
        rep.unpicked.set_index("class")["why"]
        if rep.unpicked is not None and len(rep.unpicked)
        else pd.Series(dtype=object)
    )
    recovered, recovered_oof, radiomics_right, details = [], [], [], {}
    recovered_burden: list[str] = []
    for cls in EXPECTED_ZONES:
        row = truth.loc[cls] if truth is not None and cls in truth.index else None
        rho = float(row["rho"]) if row is not None and pd.notna(row["rho"]) else float("nan")
        eligible = row is not None and "top-ranked" not in str(row["chosen_as"])
        ok = bool(eligible and abs(rho) >= MIN_RHO)
        correlate, leading = "", ""
        if row is not None and len(table):
            hit = table[(table["class"] == cls) & (table["feature"] == row["feature"])]
            if len(hit):
                correlate = _top_correlate(hit.iloc[0].get("radiomic_correlates"))
                leading = _text(hit.iloc[0].get("radiomic_zone"))
        zone, group, right = _placed(cls, correlate, leading)
        if ok:
            recovered.append(cls)
            if right:
                radiomics_right.append(cls)
        best = (
            float(row["best_shortlist_rho"])
            if row is not None and pd.notna(row.get("best_shortlist_rho"))
            else float("nan")
        )
        ceiling = (
            float(row["best_any_rho"])
            if row is not None and pd.notna(row.get("best_any_rho"))
            else float("nan")
        )
        oof = (
            float(row["rho_out_of_fold"])
            if row is not None and pd.notna(row.get("rho_out_of_fold"))
            else float("nan")
        )
        if eligible and abs(oof) >= MIN_RHO:
            recovered_oof.append(cls)
        burden, burden_ceiling = (
            float(row[column])
            if row is not None and pd.notna(row.get(column, float("nan")))
            else float("nan")
            for column in ("rho_burden", "best_any_rho_burden")
        )
        if eligible and abs(burden) >= MIN_RHO:
            recovered_burden.append(cls)
        details[cls] = {
            "rho": rho,
            "rho_out_of_fold": oof,
            "rho_burden": burden,
            "best_any_rho_burden": burden_ceiling,
            "best_shortlist_rho": best,
            "best_any_rho": ceiling,
            "chosen_as": None if row is None else str(row["chosen_as"]),
            "feature": None if row is None else str(row["feature"]),
            "correlate": correlate,
            "correlate_group": group,
            "correlate_zone": zone,
            "radiomics_right": right,
            # why the pick is only the top-ranked feature (biomark.analysis.unpicked), else None
            "why_unpicked": str(unpicked[cls]) if cls in unpicked.index else None,
        }
    # The network's own class evidence (log p(class) - log p(Normal)), scored the same way.
    evidence_recovered, evidence_right = [], []
    ev = data.evidence
    ev = ev[ev["strategy"] == "scratch"].set_index("class") if ev is not None and len(ev) else None
    for cls in EXPECTED_ZONES:
        if ev is None or cls not in ev.index:
            continue
        e = ev.loc[cls]
        rho = float(e["severity_rho"]) if pd.notna(e.get("severity_rho")) else float("nan")
        first = _top_correlate(e.get("top_correlates"))
        zone, _, right = _placed(cls, first, _text(e.get("top_zone")))
        details[cls].update(
            {
                "evidence_rho": rho,
                "evidence_correlate": first,
                "evidence_zone": zone,
                "evidence_right": right,
            }
        )
        if abs(rho) >= MIN_RHO:
            evidence_recovered.append(cls)
            if right:
                evidence_right.append(cls)
    audit = rep.source_predictability
    flagged_classes = []
    pooled_verdict = ""
    if audit is not None:
        flagged_classes = recoverable_classes(audit)
        pooled_verdict = str(audit.attrs.get("pooled", {}).get("verdict", ""))
    source_flag = bool(flagged_classes) or pooled_verdict == POOLED_RECOVERABLE
    reading = rep.blackout_reading
    blackout_verdict = reading.verdict if reading is not None else ""
    swap = rep.lung_swap_reading
    swap_classes = list(swap.flagged) if swap is not None else []
    outside = (
        table["flag_outside_lungs"].astype("boolean").fillna(False).astype(bool)
        if len(table)
        else pd.Series()
    )
    outside_classes = (
        sorted(set(table.loc[outside.to_numpy(), "class"].astype(str))) if len(table) else []
    )
    # the flags' run-level reading, as the report's limitations give it: random units fall below
    # the outside threshold at a known rate, so some flags are expected by chance
    # (without a null, any flag counts, and there is no chance rate to print)
    outside_expected, outside_p = float("nan"), float("nan")
    outside_beyond_chance = bool(outside.any())
    if rep.lung_null is not None and len(table):
        _, outside_expected, outside_p = rep.lung_null.outside_excess(
            int(outside.sum()),
            pd.to_numeric(table["lung_fraction"], errors="coerce").to_numpy(),
            data.settings.criteria.min_lung_fraction,
        )
        outside_beyond_chance = outside_p < data.settings.criteria.alpha
    # flags that do not depend on which class a feature or a swap belongs to
    model_flag = source_flag or blackout_verdict == "reads outside the lungs"
    candidates = (
        table[table["is_candidate"].astype("boolean").fillna(False).astype(bool)]
        if len(table)
        else table
    )
    flagged_candidates = (
        int(candidates["flag_source"].astype("boolean").fillna(False).sum())
        if len(candidates)
        else 0
    )
    guard = rep.chance
    regions = data.source_regions
    in_images = None  # not tested: no outside control, one source, or no class with two sources
    if regions is not None and regions.tested:
        from biomark.analysis.source_regions import LUNGS, OUTSIDE

        # a weak per-class verdict counts, as it does for the model-level source flag
        in_images = {
            "outside": regions.carries(OUTSIDE) or bool(regions.classes(OUTSIDE)),
            "lungs": regions.carries(LUNGS) or bool(regions.classes(LUNGS)),
            "outside_classes": regions.classes(OUTSIDE),
            "lungs_classes": regions.classes(LUNGS),
            "outside_auc": regions.pooled.get(OUTSIDE, {}).get("auc", float("nan")),
            "lungs_auc": regions.pooled.get(LUNGS, {}).get("auc", float("nan")),
        }
    return {
        "seed": seed,
        "confounder": confounder,
        "accuracy": guard.multiclass.accuracy if guard else float("nan"),
        "covid_vs_rest": guard.binary.accuracy if guard and guard.binary else float("nan"),
        "learned": bool(guard and guard.learned),
        "recovered": recovered,
        # the same picks read from each image's out-of-fold member alone (before the family
        # consensus)
        "recovered_out_of_fold": recovered_oof,
        "tracks_burden": recovered_burden,
        "radiomics_right": radiomics_right,
        "evidence_recovered": evidence_recovered,
        "evidence_radiomics_right": evidence_right,
        "n_candidates": int(len(candidates)),
        "source_flag": source_flag,
        "source_flag_classes": flagged_classes,
        "pooled_verdict": pooled_verdict,
        "blackout_verdict": blackout_verdict,
        "outside_lung_features": int(outside.sum()),
        "outside_lung_classes": outside_classes,
        "outside_lung_expected": outside_expected,
        "outside_lung_p": outside_p,
        "swap_verdict": swap.verdict if swap is not None else "",
        "swap_classes": swap_classes,
        "swap_summary": swap.summary if swap is not None else "",
        # the tag sits on site_B films, which are mostly (strength 1: exactly) the COVID-19
        # patients: the lung swap finds it when COVID-19's surroundings sway its answers, and a
        # COVID-19 feature living outside the lungs may be reading it (COVID-19's own signature lies
        # inside the lungs); such flags of other classes are reported and count as shortcut flags,
        # not as the tag found
        "tag_flagged": model_flag or TAG_CLASS in outside_classes or TAG_CLASS in swap_classes,
        # a false alarm on a clean phantom: a model-level flag, a swap flag, or more features
        # outside the lungs than units without a learned preference give
        "any_flag": model_flag or outside_beyond_chance or bool(swap_classes),
        "flagged_candidates": flagged_candidates,
        "source_in_images": in_images,
        "units": _units(rep),
        "classes": details,
        "seconds": {k: round(v, 1) for k, v in times.items()},
    }


def _units(rep: Any) -> dict[str, Any] | None:
    """How many directions the strategy's units span, and how well they match across folds."""
    from biomark.analysis.biomarkers import Criteria
    from biomark.report.unit_matching import share_agreeing_in_some_class

    red = rep.redundancy
    if red is None:
        return None
    out = {
        "n_live": red.n_live,
        "dimension": red.dimension,
        "first_share": red.first_share,
        "share_near_copies": red.share_near_copies,
        "nearest_r_median": red.nearest_r_median,
    }
    quality = rep.alignment_quality
    if quality is not None and len(quality):
        last = quality.iloc[-1]
        out.update(
            share_matched=float(last["share_matched"]),
            best_r_median=float(last["best_r_median"]),
            share_best_matched=float(last["share_best_matched"]),
        )
    # the class holding most of each network's within-class variation, which the match reads
    if rep.class_dominance:
        out["dominant_class"] = {
            str(f): [d.cls, round(d.median_share, 3)] for f, d in rep.class_dominance.items()
        }
    # families whose members agree on some class's images, as the report's matching note says
    agree = share_agreeing_in_some_class(rep, Criteria().min_match_r)
    if agree is not None:
        out["share_agree_in_a_class"] = agree
    return out


def _per_class(cells: Mapping[str, str], marked: Collection[str]) -> str:
    """``class cell`` for each class, comma-separated, ``*`` after the classes in ``marked``."""
    return ", ".join(f"{c} {cell}" + ("*" if c in marked else "") for c, cell in cells.items())


def _tag_cell(row: dict[str, Any]) -> str:
    """The 'tag flagged' cell: on a clean phantom there is no tag, so a flag there is a false
    alarm."""
    if row["confounder"]:
        return "yes" if row["tag_flagged"] else "no"
    return "false alarm" if row["any_flag"] else "no"


def _region_cell(flag: bool, classes: list[str] | None) -> str:
    """A region's data-level verdict: "no", or "yes" with the flagged classes."""
    return ("yes" + (f" ({', '.join(classes)})" if classes else "")) if flag else "no"


def _with_burden(row: dict[str, Any]) -> list[str]:
    """The classes whose pick was read against the planted burden in one scored run."""
    return [
        c for c in EXPECTED_ZONES if np.isfinite(row["classes"][c].get("rho_burden", float("nan")))
    ]


def print_table(rows: list[dict[str, Any]]) -> None:
    from biomark.analysis.alignment import GOOD_MATCH_R
    from biomark.analysis.biomarkers import Criteria

    print(
        f"\n{'seed':>4} {'phantom':<11} {'acc':>6} {'covid':>6} {'recovered':>9} {'radiomics':>9} "
        f"{'source flag':<22} {'tag flagged':<11} {'flagged cand.':>13}  rho of each class's pick "
        "(best of its shortlist / of all features); * recovered"
    )
    for r in rows:
        cls = r["classes"]
        rhos = _per_class(
            {
                c: f"{cls[c]['rho']:+.2f} ({cls[c]['best_shortlist_rho']:+.2f} / "
                f"{cls[c].get('best_any_rho', float('nan')):+.2f})"
                for c in EXPECTED_ZONES
            },
            r["recovered"],
        )
        src = (
            ("yes: " + ", ".join(r["source_flag_classes"] or ["pooled"]))
            if r["source_flag"]
            else "no"
        )
        kind = phantom_tag(r["seed"], r["confounder"], r.get("confounder_strength") or 0.8).split(
            "_", 1
        )[1]
        print(
            f"{r['seed']:>4} {kind:<11} {100 * r['accuracy']:5.1f}% "
            f"{100 * r['covid_vs_rest']:5.1f}% {len(r['recovered']):>7}/6 "
            f"{len(r['radiomics_right']):>5}/{len(r['recovered'])} {src[:22]:<22} "
            f"{_tag_cell(r):<11} {r['flagged_candidates']:>13}  {rhos}"
        )
        if any(
            np.isfinite(r["classes"][c].get("rho_out_of_fold", float("nan")))
            for c in EXPECTED_ZONES
        ):
            oof = _per_class(
                {c: f"{cls[c]['rho_out_of_fold']:+.2f}" for c in EXPECTED_ZONES},
                r["recovered_out_of_fold"],
            )
            print(
                f"{'':>17}the same picks from each image's out-of-fold member alone: "
                f"{len(r['recovered_out_of_fold'])}/6 recovered: {oof}"
            )
        burdened = _with_burden(r)
        if burdened:
            load = _per_class(
                {
                    c: f"{cls[c]['rho_burden']:+.2f} ({cls[c]['best_any_rho_burden']:+.2f})"
                    for c in burdened
                },
                r["tracks_burden"],
            )
            print(
                f"{'':>17}the same picks against the planted burden (the best of all features): "
                f"{len(r['tracks_burden'])} at |rho| >= {MIN_RHO}: {load}"
            )
        if "evidence_recovered" in r:
            ev = _per_class(
                {c: f"{cls[c].get('evidence_rho', float('nan')):+.2f}" for c in EXPECTED_ZONES},
                r["evidence_recovered"],
            )
            print(
                f"{'':>17}the network's own class evidence: {len(r['evidence_recovered'])}/6 "
                "recovered, radiomics right "
                f"{len(r['evidence_radiomics_right'])}/{len(r['evidence_recovered'])}: {ev}"
            )
        if r.get("source_in_images"):
            g = r["source_in_images"]
            print(
                f"{'':>17}source in the images (radiomics, within class): outside the lungs "
                f"{_region_cell(g['outside'], g.get('outside_classes'))} (pooled AUC "
                f"{g['outside_auc']:.2f}), inside "
                f"{_region_cell(g['lungs'], g.get('lungs_classes'))} (pooled AUC "
                f"{g['lungs_auc']:.2f})"
            )
        if r.get("units"):
            u = r["units"]
            text = (
                f"units: {u['n_live']} span {u['dimension']} directions (90% of the variance; the "
                f"first {100 * u['first_share']:.0f}%), {100 * u['share_near_copies']:.0f}% have a "
                "near-copy"
            )
            if "share_matched" in u:
                text += (
                    f"; matched one to one within classes at r >= {GOOD_MATCH_R:g}: "
                    f"{100 * u['share_matched']:.0f}%, best counterpart at r >= {GOOD_MATCH_R:g}: "
                    f"{100 * u['share_best_matched']:.0f}%"
                )
            if "share_agree_in_a_class" in u:
                text += (
                    f"; members agreeing at r >= {Criteria().min_match_r:g} on some class's "
                    "images: "
                    f"{100 * u['share_agree_in_a_class']:.0f}% of families"
                )
            if u.get("dominant_class"):
                text += "; within-class variation mostly in " + ", ".join(
                    f"fold {f} {c} ({100 * share:.0f}%)"
                    for f, (c, share) in u["dominant_class"].items()
                )
            print(f"{'':>17}{text}")
        if r.get("outside_lung_features"):
            expected = r.get("outside_lung_expected", float("nan"))
            chance = (
                f"; random units would give about {expected:.1f}, p {r['outside_lung_p']:.2g}"
                if np.isfinite(expected)
                else ""
            )
            print(
                f"{'':>17}shortlisted features living outside the lungs: "
                f"{r['outside_lung_features']} ({', '.join(r['outside_lung_classes'])}{chance}); "
                f"only the tag's class ({TAG_CLASS}) counts as the tag found"
            )
        if r.get("swap_summary"):
            print(f"{'':>17}lung swap: {r['swap_summary']}")
        if r.get("tag_use"):
            u = r["tag_use"]
            if u["n_tagged"]:
                print(
                    f"{'':>17}tag counterfactual: removing the tag from {u['n_tagged']} tagged "
                    f"test films changes {100 * u['changed']:.1f} % of predictions, P(COVID-19) by "
                    f"{u['covid_shift']:+.3f}"
                )
            else:
                # the clean phantom's films do not depend on the confounder strength: a link to one
                # will do
                print(
                    f"{'':>17}tag counterfactual: not measured (no "
                    f"data/{phantom_tag(r['seed'], False)} under --out: run the clean seed there "
                    "too, or link its data folder)"
                )
    clean = [r for r in rows if not r["confounder"]]
    confounded = [r for r in rows if r["confounder"]]
    checks = {  # None: no phantom of that kind was run
        ">= 5 of 6 recovered on every clean seed": all(len(r["recovered"]) >= 5 for r in clean)
        if clean
        else None,
        # issue 12: "the radiomics the report attaches to those candidates belong to the right
        # family and zone"
        "the radiomics of every recovered pick of the planted family and zone, on every clean "
        "seed": (
            all(set(r["radiomics_right"]) == set(r["recovered"]) for r in clean) if clean else None
        ),
        "no source flag on clean seeds": not any(r["source_flag"] for r in clean)
        if clean
        else None,
        "no shortcut flag of any kind (source, blackout, outside-lung features beyond chance, "
        "lung swap) on clean seeds": (not any(r["any_flag"] for r in clean) if clean else None),
        "tag flagged on every confounded seed": all(r["tag_flagged"] for r in confounded)
        if confounded
        else None,
        "no flagged candidate": all(r["flagged_candidates"] == 0 for r in rows) if rows else None,
        "tag found in the images (outside-lung radiomics) on every confounded seed where "
        "testable": (
            all(r["source_in_images"]["outside"] for r in confounded if r.get("source_in_images"))
            if any(r.get("source_in_images") for r in confounded)
            else None
        ),
        "no source in the images on clean seeds": (
            not any(
                r["source_in_images"]["outside"] or r["source_in_images"]["lungs"]
                for r in clean
                if r.get("source_in_images")
            )
            if any(r.get("source_in_images") for r in clean)
            else None
        ),
    }
    ceilings = [
        sum(
            abs(r["classes"][c].get("best_any_rho", float("nan"))) >= MIN_RHO
            for c in EXPECTED_ZONES
        )
        for r in clean
    ]
    if ceilings:
        print(
            "\nceiling (the best of all features, picked with the truth): "
            f"{', '.join(f'{n}/6' for n in ceilings)} on the clean seeds; below 5 no rule that "
            "picks one feature per class can reach the target"
        )
    burden_ceilings = [
        [c for c in _with_burden(r) if abs(r["classes"][c]["best_any_rho_burden"]) >= MIN_RHO]
        for r in clean
        if _with_burden(r)
    ]
    if burden_ceilings:
        print(
            "against the planted burden instead (Emphysema has none): the best of all features "
            f"reaches |rho| >= {MIN_RHO} in "
            + "; ".join(f"{len(c)} ({', '.join(c)})" for c in burden_ceilings)
            + " on the clean seeds; the picks in "
            + ", ".join(str(len(r["tracks_burden"])) for r in clean)
        )
    print()
    for text, ok in checks.items():
        print(f"{'NOT RUN' if ok is None else 'PASS' if ok else 'MISS'}  {text}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--plan", type=Path, default=REPO / "analyses" / "quick.yaml")
    parser.add_argument("--seeds", default="0,1,2", help="comma-separated phantom seeds")
    parser.add_argument("--only", choices=("clean", "confounded"), help="run one kind of phantom")
    parser.add_argument(
        "--strategies", default=None, help="comma-separated subset of the plan's strategies"
    )
    parser.add_argument(
        "--confounder-strength",
        type=float,
        default=0.8,
        help="share of COVID-19 patients (and 1 - it of the others) carrying the tag",
    )
    parser.add_argument(
        "--out", type=Path, default=Path(tempfile.gettempdir()) / "biomark-acceptance"
    )
    parser.add_argument("--json", type=Path, help="also write the figures here")
    parser.add_argument(
        "--min-match-r",
        type=float,
        default=None,
        help="the report's min_match_r criterion (default: the report's own), for sensitivity runs",
    )
    parser.add_argument(
        "--scheduler",
        default=None,
        help="train each phantom's folds side by side as make demo does (local:N, or a Dask "
        "scheduler's tcp://HOST:PORT; default: one fold at a time in this process)",
    )
    args = parser.parse_args(argv)
    keep_freed_memory()  # as the biomark command does, before TensorFlow allocates
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    # Python puts this script's folder first on sys.path, where benchmarks/radiomics.py would shadow
    # pyradiomics's `radiomics` package: drop it, and import biomark from the repository.
    here = Path(__file__).resolve().parent
    sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != here]
    sys.path.insert(0, str(REPO))
    strategies = [s.strip() for s in args.strategies.split(",")] if args.strategies else None
    kinds = [False, True] if args.only is None else [args.only == "confounded"]
    rows = []
    for seed in [int(s) for s in args.seeds.split(",")]:
        for confounder in kinds:
            t0 = time.perf_counter()
            rows.append(
                run_seed(
                    seed,
                    confounder,
                    strategies,
                    args.out,
                    args.plan,
                    args.confounder_strength,
                    args.min_match_r,
                    args.scheduler,
                )
            )
            r = rows[-1]
            print(
                f"seed {seed} {phantom_tag(seed, confounder, args.confounder_strength)}: "
                f"{len(r['recovered'])}/6 recovered, source flag {r['source_flag']}, tag flagged "
                f"{r['tag_flagged']} ({time.perf_counter() - t0:.0f} s; load "
                f"{os.getloadavg()[0]:.1f})",
                flush=True,
            )
            if args.json:
                args.json.write_text(json.dumps(rows, indent=2, default=float))
    print_table(rows)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
