"""The ``methods`` section of a report: one sentence per statistical method used (each metric's
``method`` says which one gave its interval), binary and multi-class."""

from __future__ import annotations

from medrec.report import stats
from medrec.report.analysis.settings import _Settings


def _methods(settings: _Settings, clustered: bool, stated_prevalence: bool = False,
             compared: bool = False) -> dict[str, str]:
    """One sentence per statistical method (each metric's ``method`` says which one gave its interval)."""
    boot = stats.bootstrap_method_text(settings.n_boot, True, True)
    bca = stats.bca_method_text(settings.n_boot, True, True)
    proportion = settings.proportion_name
    if clustered:
        proportion += (" where every patient contributes one sample to the denominator; otherwise the same interval "
                       "at the effective sample size n / DE, the design effect DE from the ratio estimator over "
                       "patients (Kish 1965), floored at 1 (each patient counted once where the proportion is 0 or "
                       "1 and DE cannot be estimated)")
    auc = ("Wald interval of logit(AUC) with the " + (
        "Obuchowski (1997) clustered variance, patients as clusters (DeLong's when each patient has one sample)"
        if clustered and settings.auc_method == "auto" else "DeLong variance (Sun & Xu 2014)")
        + ", back-transformed; where the AUC is 0 or 1 (perfect separation) Newcombe's (2006, method 5) score "
        "interval with the Hanley-McNeil variance")
    if settings.auc_method == "bootstrap":
        auc = f"{boot} (auc_method='bootstrap'; the interval above where the bootstrap has no width)"
    methods = {
        "proportions": proportion,
        "auc": auc,
        "bootstrap": (f"F1, MCC and balanced accuracy: {bca}, seed {settings.seed}, and where every replicate is equal "
                      "(no error to resample) the Jeffreys-posterior interval of the 2x2 table; PR-AUC, Brier, ECE "
                      f"and scaled Brier: {boot}; patients (not images) are resampled, positive-holding and "
                      "negative-only patients separately"),
        "calibration": f"ECE over {settings.n_bins} equal-width bins [0, 1/{settings.n_bins}), ..., "
                       f"[{settings.n_bins - 1}/{settings.n_bins}, 1], weighted by bin count; calibration intercept "
                       "(slope fixed at 1 by an offset) and slope by logistic recalibration on the sample-level "
                       "probabilities, Wald intervals" + (" with patient-clustered sandwich standard errors"
                                                          if clustered else "")
                       + "; observed / expected with a log-scale binomial interval; scaled Brier "
                       "1 - Brier / (prevalence (1 - prevalence))",
        "predictive_values": "PPV and NPV in the metric table hold at the test set's own prevalence (Wilson intervals "
                             "of TP / (TP + FP) and TN / (TN + FN))" + (
                                 "; at the stated prevalence, Mercaldo, Lau & Zhou (2007) logit intervals from "
                                 "sensitivity and specificity (their adjusted estimates when a cell is 0)"
                                 if stated_prevalence else ""),
        "decision_curve": "net benefit TP/N - FP/N x t/(1 - t) at threshold probabilities t = 0.01..0.99 (Vickers & "
                          "Elkin 2006), with treat-all and treat-none" + (
                              ", also at the stated prevalence from sensitivity and specificity"
                              if stated_prevalence else ""),
        "threshold_table": "rows at the operating threshold, a grid 0.1..0.9, and the thresholds reaching "
                           "sensitivity 0.90 / 0.95 on these data (exploratory)",
    }
    if compared:
        methods["comparison"] = (
            "AUC difference: paired DeLong test (Obuchowski's clustered covariance where a patient has several "
            "samples) with the Wald interval of the difference; where the variance of the difference is 0 (the "
            "models rank the samples alike) the paired percentile bootstrap of the difference on the same "
            f"resamples ({settings.n_boot} replicates, patients resampled), and where every resample gives the same "
            "difference d the exact bound [d - pi (1 + d), d + pi (1 - d)], pi the Clopper-Pearson upper bound for no "
            "differently ordered pair among the disjoint pairs of distinct patients (p-value by inverting it, 1 when "
            "d is 0); sensitivity and specificity: McNemar's test on the discordant pairs (exact binomial below 25)")
    return methods


def _macro_proportion_text(settings: _Settings) -> str:
    """The rule for a macro-averaged proportion, for its metric's method and the methods list."""
    return (f"MOVER interval of the mean of the per-class proportions (Zou & Donner 2008; Zou, Huang & Zhang 2009), "
            f"from each class's one-vs-rest {settings.proportion_name} (at the effective sample size n / DE where a "
            "patient contributes several samples to it), the classes taken as independent: mean - sqrt(sum_k "
            "(p_k - l_k)^2) / K to mean + sqrt(sum_k (u_k - p_k)^2) / K")


def _multiclass_methods(settings: _Settings, clustered: bool) -> dict[str, str]:
    """The binary methods (per class, one-vs-rest) with the macro averages' rules."""
    methods = _methods(settings, clustered)
    boot = stats.bootstrap_method_text(settings.n_boot, True, True)
    bca = stats.bca_method_text(settings.n_boot, True, True)
    methods["bootstrap"] = (f"per-class F1: {bca}, seed {settings.seed}, with the Jeffreys-posterior interval of the "
                            "2x2 table where every replicate is equal; macro F1, MCC, AUC, PR-AUC, Brier and ECE: "
                            f"{boot} of the macro average, patients (not images) resampled within strata of the "
                            "classes they hold, and where every replicate is equal the posterior interval of the "
                            "confusion matrix (F1, MCC) or the mean of the per-class bounds (AUC, PR-AUC, Brier, ECE)")
    methods["macro_average"] = ("macro sensitivity (= balanced accuracy), specificity, PPV and NPV: "
                                + _macro_proportion_text(settings))
    return methods
