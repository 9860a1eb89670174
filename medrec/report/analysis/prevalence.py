"""The prevalence a PPV, NPV or net benefit holds at (the test set's, or one the user states), and
PPV / NPV at a stated prevalence with Mercaldo, Lau & Zhou (2007) logit intervals."""

from __future__ import annotations

from typing import Any

from medrec.errors import ConfigError
from medrec.report import stats
from medrec.report.analysis.schema import _metric

TEST_SET_PREVALENCE = "test set"
STATED_PREVALENCE = "stated by the user (--prevalence or the recipe's evaluation.prevalence)"


def _prevalence_adjusted(section: dict[str, Any], prevalence: float, source: str) -> dict[str, Any]:
    """PPV and NPV at a stated prevalence: Mercaldo, Lau & Zhou (2007) logit intervals.

    When patients contribute several samples, the sizes behind sensitivity and specificity are
    their effective sizes (``n_effective`` of those metrics: n / design effect).
    """
    if not 0.0 < prevalence < 1.0:
        raise ConfigError(f"prevalence must lie strictly between 0 and 1 (a clinical prevalence such as 0.1), "
                          f"got {prevalence}")
    counts, metrics = section["confusion_matrix"], section["metrics"]
    n_diseased = metrics["sensitivity"].get("n_effective")
    n_healthy = metrics["specificity"].get("n_effective")
    result = stats.predictive_values_ci(counts["tp"], counts["fn"], counts["fp"], counts["tn"], prevalence,
                                        n_diseased=n_diseased, n_healthy=n_healthy)
    tp, fn, fp, tn = (counts[key] for key in ("tp", "fn", "fp", "tn"))
    method = (f"Mercaldo, Lau & Zhou (2007) logit interval at the stated prevalence {prevalence:g} ({source}), from "
              f"sensitivity {tp}/{tp + fn} and specificity {tn}/{tn + fp}")
    if n_diseased is not None or n_healthy is not None:
        method += (f"; effective sizes {n_diseased if n_diseased is not None else tp + fn:.1f} diseased and "
                   f"{n_healthy if n_healthy is not None else tn + fp:.1f} healthy (n / design effect: patients "
                   "contribute several samples)")
    if result["adjusted"]:
        method += ("; a cell of the 2x2 table is 0, so the estimate and interval are their adjusted ones "
                   "(z^2/2 added to the successes and z^2 to the totals of sensitivity and specificity)")
    out: dict[str, Any] = {"prevalence": prevalence, "prevalence_source": source}
    for index, name in enumerate(("ppv", "npv")):
        value, lower, upper = result[name]
        out[name] = _metric(value, (lower, upper), method, prevalence=prevalence, prevalence_source=source,
                            plug_in=result["plug_in"][index], adjusted=result["adjusted"])
    return out
