"""Statistics for clinical validation reports: pure functions on numpy arrays.

What lives here and why it is hand-written:

* :func:`proportion_ci`: Wilson score and Clopper-Pearson intervals (scipy gives the beta / normal
  quantiles; the Wald interval is deliberately absent, it fails at 0/n and n/n).
* :func:`delong_auc_variance`, :func:`delong_ci`, :func:`delong_paired_test`: the fast DeLong
  algorithm of Sun & Xu (2014, IEEE Signal Processing Letters 21:1389), O(n log n) through midranks.
  Neither scipy nor scikit-learn offers DeLong. Where the variance of a paired AUC difference is 0
  (identical rankings), :func:`paired_auc_difference_fallback`: a paired bootstrap, else an exact
  bound from the pairs the two models order alike.
* :func:`mcnemar`, :func:`mcnemar_exact`, :func:`mcnemar_test`: McNemar's test on discordant pairs.
* :func:`brier_score`, :func:`expected_calibration_error`, :func:`reliability_curve`.
* :func:`adjusted_ppv_npv`: predictive values at another prevalence (Bayes' rule), and
  :func:`predictive_values_ci`: their logit intervals (Mercaldo, Lau & Zhou 2007).
* :func:`clustered_proportion_ci`: a proportion from patients with several samples: Wilson at the
  effective sample size n / DE, the design effect from the ratio estimator (:func:`ratio_design_effect`).
* :func:`obuchowski_auc_variance`, :func:`obuchowski_paired_test`: the clustered AUC variance of
  Obuchowski (1997, Biometrics 53:567), patients as clusters; DeLong's with one sample per patient.
* :func:`auc_ci`: the AUC interval on the logit scale from the DeLong / Obuchowski variance, and
  Newcombe's (2006) score interval (:func:`newcombe_auc_ci`) where that is undefined (AUC 0 or 1).
* :func:`count_statistic_ci`: BCa intervals for F1, MCC and balanced accuracy (:func:`bca_interval`),
  with a Jeffreys-posterior fallback (:func:`confusion_posterior_ci`) where every replicate is equal.
* :func:`logistic_calibration`: calibration intercept and slope with Wald intervals, observed /
  expected, scaled Brier; :func:`decision_curve`: net benefit (Vickers & Elkin 2006).
  Neither scipy nor scikit-learn has these (statsmodels, which would fit the recalibration
  models, is not a dependency; two-parameter Newton iterations do not justify one).
* :func:`mover_mean_ci`, :func:`mean_proportion_ci`: the interval of a macro average of proportions
  (multi-class sensitivity, ...) by the MOVER from each proportion's own Wilson interval (Zou &
  Donner 2008): neither scipy nor statsmodels has one, and a percentile bootstrap collapses to a
  point when every class's proportion is 0 or 1.
* :func:`cluster_bootstrap`: a patient-clustered, outcome-stratified percentile bootstrap that
  evaluates all replicates at once from one integer weight matrix. scikit-learn's metrics accept
  ``sample_weight`` but would need one Python call per replicate, far too slow for 2000 replicates of
  100,000 predictions.
* Point metrics (:func:`binary_point_metrics`): scikit-learn where it has the metric
  (``roc_auc_score``, ``average_precision_score``), plain counts otherwise.

Conventions: ``labels`` are 0/1 (1 = positive, the tumor class), ``scores`` are probabilities of the
positive class, ``predictions`` are 0/1. A metric that is undefined on the data (0/0) is ``nan``.

The modules, one concept each: ``inputs`` (argument checks shared by all), ``proportions``,
``clustered_proportions``, ``predictive_values``, ``point_metrics``, ``auc_variance`` (DeLong,
Obuchowski), ``auc_intervals``, ``auc_comparison``, ``mcnemar_tests``, ``resampling`` (cluster
bootstrap weights), ``replicates`` (the vectorised weighted statistics), ``bootstrap``,
``count_intervals`` (BCa and posterior intervals), ``calibration`` and ``decision_curves``. This
package re-exports their public names.
"""

from __future__ import annotations

from medrec.report.stats.auc_comparison import (
    delong_paired_test,
    obuchowski_paired_test,
    paired_auc_difference_fallback,
)
from medrec.report.stats.auc_intervals import AucInterval, auc_ci, newcombe_auc_ci, newcombe_auc_variance
from medrec.report.stats.auc_variance import delong_auc_variance, delong_ci, midranks, obuchowski_auc_variance
from medrec.report.stats.bootstrap import (
    BootstrapResult,
    bootstrap_method_text,
    cluster_bootstrap,
    cluster_bootstrap_multiclass,
    cluster_bootstrap_shared,
)
from medrec.report.stats.calibration import logistic_calibration
from medrec.report.stats.clustered_proportions import ClusteredProportion, clustered_proportion_ci, ratio_design_effect
from medrec.report.stats.count_intervals import (
    COUNT_STATISTIC_RANGES,
    bca_interval,
    bca_method_text,
    confusion_posterior_ci,
    count_statistic_ci,
    multiclass_posterior_ci,
)
from medrec.report.stats.decision_curves import DECISION_THRESHOLDS, decision_curve
from medrec.report.stats.mcnemar_tests import mcnemar, mcnemar_exact, mcnemar_table, mcnemar_test
from medrec.report.stats.point_metrics import (
    binary_point_metrics,
    brier_score,
    confusion_counts,
    expected_calibration_error,
    metrics_from_counts,
    reliability_curve,
)
from medrec.report.stats.predictive_values import adjusted_ppv_npv, predictive_values_ci
from medrec.report.stats.proportions import (
    PROPORTION_METHODS,
    bounded_statistic_ci,
    mean_proportion_ci,
    mover_mean_ci,
    proportion_ci,
)
from medrec.report.stats.replicates import BOOTSTRAP_STATISTICS, EXTRA_BOOTSTRAP_STATISTICS, weighted_statistics
from medrec.report.stats.resampling import bootstrap_cluster_weights

__all__ = [
    "BOOTSTRAP_STATISTICS",
    "COUNT_STATISTIC_RANGES",
    "DECISION_THRESHOLDS",
    "EXTRA_BOOTSTRAP_STATISTICS",
    "PROPORTION_METHODS",
    "AucInterval",
    "BootstrapResult",
    "ClusteredProportion",
    "adjusted_ppv_npv",
    "auc_ci",
    "bca_interval",
    "bca_method_text",
    "binary_point_metrics",
    "bootstrap_cluster_weights",
    "bootstrap_method_text",
    "bounded_statistic_ci",
    "brier_score",
    "cluster_bootstrap",
    "cluster_bootstrap_multiclass",
    "cluster_bootstrap_shared",
    "clustered_proportion_ci",
    "confusion_counts",
    "confusion_posterior_ci",
    "count_statistic_ci",
    "decision_curve",
    "delong_auc_variance",
    "delong_ci",
    "delong_paired_test",
    "expected_calibration_error",
    "logistic_calibration",
    "mcnemar",
    "mcnemar_exact",
    "mcnemar_table",
    "mcnemar_test",
    "mean_proportion_ci",
    "metrics_from_counts",
    "midranks",
    "mover_mean_ci",
    "multiclass_posterior_ci",
    "newcombe_auc_ci",
    "newcombe_auc_variance",
    "obuchowski_auc_variance",
    "obuchowski_paired_test",
    "paired_auc_difference_fallback",
    "predictive_values_ci",
    "proportion_ci",
    "ratio_design_effect",
    "reliability_curve",
    "weighted_statistics",
]
