"""From a predictions table to the numbers of a clinical validation report (``report.json``).

:func:`analyse_predictions` (:mod:`~medrec.report.analysis.analyse`, whose docstring gives the
report's schema and its statistical choices) assembles the report dict from these parts:

* :mod:`~medrec.report.analysis.table`: which rows of the predictions table are analysed, labels as 1 / 0;
* :mod:`~medrec.report.analysis.settings`: the validated options (interval method, bootstrap, AUC method);
* :mod:`~medrec.report.analysis.metrics`: one METRIC dict per binary metric, with its interval;
* :mod:`~medrec.report.analysis.sections`: the sample- and patient-level sections and calibration;
* :mod:`~medrec.report.analysis.prevalence`: PPV / NPV at a stated prevalence;
* :mod:`~medrec.report.analysis.threshold_table`: exploratory thresholds and the threshold table;
* :mod:`~medrec.report.analysis.subgroups`, :mod:`~medrec.report.analysis.curves`,
  :mod:`~medrec.report.analysis.flagged`, :mod:`~medrec.report.analysis.comparison`: those sections;
* :mod:`~medrec.report.analysis.multiclass`: the multi-class report;
* :mod:`~medrec.report.analysis.methods`: one sentence per statistical method;
* :mod:`~medrec.report.analysis.schema`: the schema version, the METRIC dict, plain JSON values.
"""

from __future__ import annotations

from medrec.report.analysis.analyse import analyse_predictions
from medrec.report.analysis.schema import SCHEMA_VERSION
from medrec.report.analysis.subgroups import AGE_BANDS
from medrec.report.analysis.table import analysed_rows
from medrec.report.analysis.threshold_table import choose_threshold

__all__ = ["AGE_BANDS", "SCHEMA_VERSION", "analyse_predictions", "analysed_rows", "choose_threshold"]
