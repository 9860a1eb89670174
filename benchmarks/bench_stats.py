"""Report statistics at scale: ``medrec.report`` against a scikit-learn loop over replicates.

Data: seeded synthetic binary predictions, 100,000 predictions of 50,000 patients (1-3 studies
per patient, labels per patient, scores with signal plus a per-patient effect), threshold 0.5.

Compared, in the same run:

* ``medrec.report.stats.cluster_bootstrap`` of every binary bootstrap statistic (sensitivity,
  specificity, PPV, NPV, accuracy, balanced accuracy, F1, MCC, AUC, PR-AUC, Brier, ECE) with 2,000
  patient-clustered, outcome-stratified replicates, plus ``stats.delong_ci``;
* a straightforward loop: per replicate, draw patients with replacement within outcome strata,
  turn the draw counts into ``sample_weight`` and call scikit-learn's metrics. The loop is timed on
  a few replicates (50 at full size) and extrapolated per replicate to 2,000;
* the whole ``medrec.report.analysis.analyse_predictions`` (every number of report.json,
  including the patient-level section, curves and threshold table) against the 10 s budget.

Usage: ``python benchmarks/bench_stats.py [--quick]``
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import Figure, bench_arguments, header, print_figures, say, timed, write_record  # noqa: E402

NAME = "stats"
SEED = 0
THRESHOLD = 0.5
FULL = {"predictions": 100_000, "patients": 50_000, "n_boot": 2_000, "loop_replicates": 50}
QUICK = {"predictions": 10_000, "patients": 5_000, "n_boot": 200, "loop_replicates": 10}
BUDGET_SECONDS = 10.0
N_BINS = 10


def synthetic_predictions(n_predictions: int, n_patients: int, seed: int):
    """Predictions table with 1-3 studies per patient, patient-level labels and scores with signal."""
    import pandas as pd

    rng = np.random.default_rng(seed)
    studies = rng.integers(1, 4, size=n_patients)
    # Nudge the counts (staying within 1-3) until they add up to exactly n_predictions.
    difference = n_predictions - int(studies.sum())
    while difference:
        step = 1 if difference > 0 else -1
        movable = np.flatnonzero((studies + step >= 1) & (studies + step <= 3))
        chosen = rng.choice(movable, size=min(abs(difference), movable.size), replace=False)
        studies[chosen] += step
        difference = n_predictions - int(studies.sum())
    patient_label = (rng.random(n_patients) < 0.3).astype(np.int8)
    patient_effect = rng.normal(0.0, 0.6, size=n_patients)
    patient = np.repeat(np.arange(n_patients), studies)
    label = patient_label[patient]
    logit = -0.8 + 1.8 * label + patient_effect[patient] + rng.normal(0.0, 1.0, size=patient.size)
    score = 1.0 / (1.0 + np.exp(-logit))
    study_index = np.concatenate([np.arange(k) for k in studies])
    frame = pd.DataFrame({
        "sample_id": [f"s{i:07d}" for i in range(patient.size)],
        "patient_id": [f"p{p:06d}" for p in patient],
        "study_uid": [f"1.2.826.0.1.{p}.{k}" for p, k in zip(patient, study_index, strict=True)],
        "score": score,
        "prediction": (score >= THRESHOLD).astype(int).astype(str),
        "label": label.astype(str),
        "error": "",
    })
    return frame, label, score, patient


def sklearn_replicate_loop(y: np.ndarray, s: np.ndarray, patient: np.ndarray, n_replicates: int,
                           seed: int) -> dict[str, list[float]]:
    """The straightforward way: one set of scikit-learn calls per replicate, with sample weights."""
    from sklearn import metrics as skm

    pred = (s >= THRESHOLD).astype(np.int8)
    n_patients = int(patient.max()) + 1
    positive_patient = np.zeros(n_patients, dtype=bool)
    positive_patient[patient[y == 1]] = True
    strata = [np.flatnonzero(positive_patient), np.flatnonzero(~positive_patient)]
    bins = np.minimum((s * N_BINS).astype(int), N_BINS - 1)
    rng = np.random.default_rng(seed)
    out: dict[str, list[float]] = {}
    for _ in range(n_replicates):
        drawn = np.concatenate([rng.choice(members, size=members.size, replace=True) for members in strata])
        w = np.bincount(drawn, minlength=n_patients)[patient].astype(np.float64)
        tn, fp, fn, tp = skm.confusion_matrix(y, pred, sample_weight=w, labels=[0, 1]).ravel()
        values = {
            "sensitivity": skm.recall_score(y, pred, sample_weight=w),
            "specificity": skm.recall_score(y, pred, pos_label=0, sample_weight=w),
            "ppv": skm.precision_score(y, pred, sample_weight=w),
            "npv": tn / (tn + fn),
            "accuracy": skm.accuracy_score(y, pred, sample_weight=w),
            "balanced_accuracy": skm.balanced_accuracy_score(y, pred, sample_weight=w),
            "f1": skm.f1_score(y, pred, sample_weight=w),
            "mcc": skm.matthews_corrcoef(y, pred, sample_weight=w),
            "auc": skm.roc_auc_score(y, s, sample_weight=w),
            "pr_auc": skm.average_precision_score(y, s, sample_weight=w),
            "brier": skm.brier_score_loss(y, s, sample_weight=w),
            "ece": float(np.abs(np.bincount(bins, weights=w * (s - y), minlength=N_BINS)).sum() / w.sum()),
        }
        for name, value in values.items():
            out.setdefault(name, []).append(float(value))
    return out


def run(quick: bool = False) -> dict:
    from medrec.report import stats
    from medrec.report.analysis import analyse_predictions

    size = QUICK if quick else FULL
    header(NAME, "medrec cluster bootstrap + DeLong, and analyse_predictions, vs a scikit-learn loop per replicate")
    frame, y, s, patient = synthetic_predictions(size["predictions"], size["patients"], SEED)
    pred = (s >= THRESHOLD).astype(np.int8)
    say(f"data: {len(frame)} predictions of {size['patients']} patients (1-3 studies each, seed {SEED}), "
        f"prevalence {y.mean():.3f}, threshold {THRESHOLD}; {size['n_boot']} replicates")
    names = list(stats.BOOTSTRAP_STATISTICS)

    # Warm-up on a small slice: imports and first-call costs are not what is compared.
    stats.cluster_bootstrap(names, y[:2000], s[:2000], patient[:2000], n_boot=20, predictions=pred[:2000])
    sklearn_replicate_loop(y[:2000], s[:2000], patient[:2000], 2, SEED)

    boot_s, boot = timed(lambda: stats.cluster_bootstrap(names, y, s, patient, n_boot=size["n_boot"], seed=SEED,
                                                         predictions=pred, n_bins=N_BINS))
    delong_s, delong = timed(lambda: stats.delong_ci(y, s))
    medrec_s = boot_s + delong_s
    loop_s, loop = timed(lambda: sklearn_replicate_loop(y, s, patient, size["loop_replicates"], SEED))
    loop_per_replicate = loop_s / size["loop_replicates"]
    loop_total = loop_per_replicate * size["n_boot"]
    cpu_start = time.process_time()
    analyse_s, report = timed(lambda: analyse_predictions(frame, threshold=THRESHOLD, threshold_source="benchmark",
                                                          n_boot=size["n_boot"], seed=SEED))
    analyse_cpu_s = time.process_time() - cpu_start
    say(f"  medrec cluster_bootstrap ({len(names)} statistics x {size['n_boot']} replicates): {boot_s:.2f} s; "
        f"delong_ci: {delong_s:.3f} s")
    say(f"  scikit-learn loop: {size['loop_replicates']} replicates in {loop_s:.2f} s = {loop_per_replicate:.3f} s "
        f"per replicate, extrapolated to {size['n_boot']}: {loop_total:.0f} s")
    say(f"  analyse_predictions (whole report.json, n_boot={size['n_boot']}): {analyse_s:.2f} s wall, "
        f"{analyse_cpu_s:.2f} s CPU (the machine is shared: wall > CPU means other work took the cores)")

    # The two sides compute the same statistics: their bootstrap means agree within sampling noise.
    agreement = {}
    for name in names:
        medrec_mean = float(np.nanmean(boot[name].replicates))
        loop_mean = float(np.mean(loop[name]))
        spread = float(np.nanstd(boot[name].replicates)) or 1e-12
        agreement[name] = round(abs(medrec_mean - loop_mean) / spread, 2)
    worst = max(agreement, key=agreement.get)
    say(f"  check: |mean(medrec) - mean(loop)| / sd(medrec) per statistic, worst {worst} = {agreement[worst]} "
        f"(loop mean over {size['loop_replicates']} replicates)")
    say(f"  AUC {delong[0]:.4f}, DeLong 95% CI [{delong[1]:.4f}, {delong[2]:.4f}]; report AUC CI "
        f"{report['metrics']['auc']['ci95']}")

    data_text = f"{len(frame)} predictions / {size['patients']} patients, {size['n_boot']} replicates"
    figures = [
        Figure(NAME, "bootstrap+DeLong vs scikit-learn loop", loop_total / medrec_s, 20.0, True,
               f"sklearn loop ({size['loop_replicates']} replicates timed, extrapolated to {size['n_boot']}) / "
               f"cluster_bootstrap(12 statistics) + delong_ci; {data_text}",
               {"loop_s_extrapolated": round(loop_total, 1), "medrec_s": round(medrec_s, 2),
                "bootstrap_s": round(boot_s, 2), "delong_s": round(delong_s, 3)}),
        Figure(NAME, "analyse_predictions vs 10 s budget", analyse_s / BUDGET_SECONDS, 1.0, False,
               f"analyse_predictions wall time / {BUDGET_SECONDS:g} s (absolute budget, not side by side); {data_text}",
               {"analyse_s": round(analyse_s, 2), "analyse_cpu_s": round(analyse_cpu_s, 2), "budget_s": BUDGET_SECONDS}),
        Figure(NAME, "analyse_predictions vs scikit-learn loop", loop_total / analyse_s, None, True,
               f"sklearn loop (extrapolated) / whole analyse_predictions; {data_text}",
               {"loop_s_extrapolated": round(loop_total, 1), "analyse_s": round(analyse_s, 2)}),
    ]
    print_figures(figures)
    return {
        "figures": [f.as_dict() for f in figures],
        "data": {"predictions": len(frame), "patients": size["patients"], "n_boot": size["n_boot"],
                 "loop_replicates_timed": size["loop_replicates"], "prevalence": round(float(y.mean()), 4),
                 "seed": SEED},
        "seconds": {"cluster_bootstrap": round(boot_s, 3), "delong_ci": round(delong_s, 4),
                    "sklearn_loop_timed": round(loop_s, 3), "analyse_predictions": round(analyse_s, 3),
                    "analyse_predictions_cpu": round(analyse_cpu_s, 3)},
        "agreement_sd_units": agreement,
        "notes": f"scikit-learn loop timed on {size['loop_replicates']} replicates and extrapolated per replicate to "
                 f"{size['n_boot']}; the 10 s target is an absolute wall time on a shared machine",
    }


def main() -> None:
    args = bench_arguments(__doc__)
    write_record(run(args.quick), args.json)


if __name__ == "__main__":
    main()
