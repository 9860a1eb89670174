"""The analysis options, validated once: the proportion interval, bootstrap replicates and seed,
the AUC method and the calibration bins."""

from __future__ import annotations

from medrec.errors import ConfigError
from medrec.report import stats


class _Settings:
    def __init__(self, ci_method: str, n_boot: int, seed: int, auc_method: str, n_bins: int):
        if ci_method not in stats.PROPORTION_METHODS:
            raise ConfigError(f"ci_method {ci_method!r} is unknown; use one of {', '.join(stats.PROPORTION_METHODS)}")
        if auc_method not in ("auto", "delong", "bootstrap"):
            raise ConfigError(f"auc_method {auc_method!r} is unknown; use 'auto', 'delong' or 'bootstrap'")
        if int(n_boot) < 10:
            raise ConfigError(f"n_boot must be at least 10 (2000 or more for a report), got {n_boot}")
        self.ci_method = ci_method
        self.n_boot = int(n_boot)
        self.seed = int(seed)
        self.auc_method = auc_method
        self.n_bins = int(n_bins)

    @property
    def proportion_name(self) -> str:
        return "Wilson score interval" if self.ci_method == "wilson" else "Clopper-Pearson exact interval"
