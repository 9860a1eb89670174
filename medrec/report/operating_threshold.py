"""The report's operating threshold and the sentence that says where it came from.

In order: a user-given threshold (``--threshold``), an exploratory one chosen on the test data
(``--exploratory-threshold``), the run's (``model.json``, chosen on validation; its ``threshold_tta``
for predictions scored with test-time augmentation), the one the predictions were scored at (their
sidecar), or argmax for multi-class predictions.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from medrec.errors import ConfigError, InputError, ModelError
from medrec.runinfo import RunInfo
from medrec.thresholds import parse_rule


@dataclass(frozen=True)
class ScoredThreshold:
    """The operating threshold the predictions were made at, as ``medrec score`` recorded it in their sidecar.

    Attributes:
        value: the threshold.
        kind: ``validation`` (scoring took it from the run, chosen there on validation) or
            ``user-given`` (``medrec score --threshold``, the 0.5 default, or a run that does not say).
        method: how it was chosen, in a few words.
        source_text: the sentence for ``threshold_source`` when the report uses it.
        origin: a short phrase for the note when the report uses another threshold.
    """

    value: float
    kind: str
    method: str
    source_text: str
    origin: str

    def decision(self) -> tuple[float, str, str, str]:
        """As :func:`resolve_threshold` returns a threshold."""
        return self.value, self.kind, self.method, self.source_text


def scored_threshold(record: Mapping | None, sidecar: Path) -> ScoredThreshold | None:
    """The operating threshold the predictions were made at, from their sidecar.

    Args:
        record: the sidecar written by ``medrec score`` (None when there is none).
        sidecar: its path, named in the source text and in errors.

    Returns:
        The :class:`ScoredThreshold`, or None when the sidecar records no threshold (multi-class
        runs, hand-made predictions).

    Raises:
        InputError: the recorded threshold is not a number in [0, 1].
    """
    if record is None or record.get("threshold") is None:
        return None
    try:
        number = float(record["threshold"])
    except (TypeError, ValueError) as e:
        raise InputError(f"{sidecar}: threshold {record['threshold']!r} is not a number; score again or pass "
                         "--threshold T") from e
    if math.isnan(number) or not 0.0 <= number <= 1.0:
        raise InputError(f"{sidecar}: threshold {number} lies outside [0, 1]; score again or pass --threshold T")
    source = str(record.get("threshold_source") or "").strip()
    where = f"recorded in {sidecar.name} by 'medrec score'"
    if source.startswith("run:"):
        detail = source[len("run:"):].strip()
        if "chosen on validation" in detail:
            method = detail.split(",", 1)[0].strip()
            how = f" by {method}" if method and method != "chosen on validation" else ""
            return ScoredThreshold(
                number, "validation", method,
                f"validation: chosen on the validation split{how} and frozen before these predictions were made "
                f"(the run's model.json, {where})",
                f"the run's threshold chosen on validation, per {sidecar.name}")
        return ScoredThreshold(number, "user-given", detail,
                               f"the run's operating threshold ({detail or 'model.json'}), {where}",
                               f"the run's threshold, per {sidecar.name}")
    if source.startswith("command line"):
        return ScoredThreshold(number, "user-given", "given on the command line of 'medrec score'",
                               f"user-given when scoring (medrec score --threshold), {where}; not chosen by medrec",
                               f"medrec score --threshold, per {sidecar.name}")
    return ScoredThreshold(number, "user-given", source, f"{source or 'source not recorded'}, {where}",
                           f"{source or 'source not recorded'}, per {sidecar.name}")


def resolve_threshold(
    run_info: RunInfo | None,
    model_json_path: Path | None,
    threshold: float | None,
    exploratory_threshold: str | None,
    multiclass: bool,
    scored: ScoredThreshold | None = None,
) -> tuple[float | None, str, str, str]:
    """Decide the operating threshold and how to describe where it came from.

    The order: ``threshold`` (--threshold), ``exploratory_threshold``, the run's ``model.json``
    (--run), then ``scored``, the threshold the predictions were made at (their sidecar). An
    explicit choice that differs from the scored threshold is used, and its source text says that
    the predictions were made at the other threshold and their decisions recomputed.

    Args:
        run_info: the run's model.json (None without --run).
        model_json_path: its path, for errors.
        threshold: the --threshold value.
        exploratory_threshold: the --exploratory-threshold rule.
        multiclass: the predictions are multi-class (argmax, no threshold).
        scored: :func:`scored_threshold` of the predictions' sidecar.

    Returns:
        ``(threshold, kind, method, source_text)``: ``kind`` is ``validation`` (from the run,
        frozen), ``user-given``, ``exploratory`` or ``argmax``; ``source_text`` is the sentence
        written to ``threshold_source`` (the analysis replaces it for exploratory thresholds).

    Raises:
        ConfigError: both a fixed and an exploratory threshold, a threshold outside [0, 1], an
            unknown exploratory rule, or no threshold source at all.
        ModelError: the run's model.json lacks a usable ``threshold``.
    """
    value, kind, method, text = _chosen_threshold(run_info, model_json_path, threshold, exploratory_threshold,
                                                  multiclass, scored)
    if scored is not None and value is not None and kind != "exploratory" \
            and not math.isclose(value, scored.value, rel_tol=0.0, abs_tol=1e-12):
        text = (f"{text}; the predictions were made at {scored.value:g} ({scored.origin}) and their decisions "
                f"were recomputed at {value:g}")
    return value, kind, method, text


def _chosen_threshold(
    run_info: RunInfo | None,
    model_json_path: Path | None,
    threshold: float | None,
    exploratory_threshold: str | None,
    multiclass: bool,
    scored: ScoredThreshold | None,
) -> tuple[float | None, str, str, str]:
    """:func:`resolve_threshold` without the note on the scored threshold."""
    if threshold is not None and exploratory_threshold:
        raise ConfigError("give either --threshold or --exploratory-threshold, not both")
    if threshold is not None:
        if not (isinstance(threshold, int | float) and 0.0 <= float(threshold) <= 1.0):
            raise ConfigError(f"--threshold must lie in [0, 1], got {threshold}")
        return float(threshold), "user-given", "given on the command line", \
            "user-given (--threshold); not chosen by medrec"
    if exploratory_threshold:
        rule = parse_rule(exploratory_threshold, "--exploratory-threshold").text
        return None, "exploratory", rule, f"EXPLORATORY: chosen on the test data ({rule})"
    if run_info is not None:
        entry = run_info.threshold
        if entry is None or entry.value is None:
            if multiclass:
                return None, "argmax", "argmax", "argmax (multi-class)"
            raise ModelError(
                f"{model_json_path}: has no 'threshold' with a 'value'; re-run 'medrec train' to store one, or "
                "give --threshold T or --exploratory-threshold youden"
            )
        value, method, chosen_on = entry.value, entry.method or "", entry.chosen_on or "validation"
        how = f" by {method}" if method else ""
        if chosen_on in ("validation", "val"):
            return value, "validation", method, \
                f"validation: chosen on the validation split{how} and frozen before the test data were scored " \
                "(run's model.json)"
        return value, "user-given", method, f"run's model.json, chosen on {chosen_on}{how}"
    if scored is not None:
        return scored.decision()
    if multiclass:
        return None, "argmax", "argmax", "argmax (multi-class)"
    raise ConfigError(
        "no operating threshold: pass --run RUN (its model.json holds the threshold chosen on validation), "
        "--threshold T (user-given) or --exploratory-threshold youden|sensitivity:0.95 (exploratory); "
        "predictions written by 'medrec score' record theirs in their sidecar (PREDICTIONS.json)"
    )


def tta_run_info(
    run_info: RunInfo | None, record: Mapping | None, scored: ScoredThreshold | None, sidecar: Path,
    threshold: float | None, exploratory_threshold: str | None,
) -> tuple[RunInfo | None, bool]:
    """The run description whose ``threshold`` belongs to the predictions' scoring setting.

    Predictions scored with test-time augmentation (``tta`` in their sidecar) are compared with
    the threshold chosen on validation scored with TTA (``model.json`` ``threshold_tta``, written
    by ``medrec score --tta``), never with the one chosen without it: flip averaging moves the
    scores (on the demo every negative ended above the plain threshold).

    Returns:
        ``(run description, used the TTA threshold)``; the description is None when the sidecar's
        threshold (chosen with TTA) is the one to use.

    Raises:
        ModelError: TTA predictions and no threshold chosen with TTA (a run or a sidecar from
            before such thresholds existed).
    """
    if not (record or {}).get("tta") or threshold is not None or exploratory_threshold:
        return run_info, False
    from medrec.score.operating_point import TTA_SOURCE_MARK  # deferred: imports torch

    scored_with_tta = scored is not None and TTA_SOURCE_MARK in str((record or {}).get("threshold_source") or "")
    fix = ("score them again with 'medrec score --tta' or 'medrec evaluate RUN --tta' (it chooses the threshold on "
           "validation scored with TTA and keeps it in model.json), or pass --threshold T")
    if run_info is not None:
        entry = run_info.threshold_tta
        if entry is not None and entry.value is not None:
            return run_info.model_copy(update={"threshold": entry}), True
        if scored_with_tta:
            return None, True
        if run_info.threshold is not None and run_info.threshold.value is None:
            return run_info, False  # multi-class: argmax, no threshold
        raise ModelError(f"{sidecar.name}: the predictions were scored with test-time augmentation, but the run's "
                         f"model.json holds only the threshold chosen on validation without it, which does not "
                         f"apply to TTA scores; {fix}")
    if scored is not None and scored.kind == "validation" and not scored_with_tta:
        raise ModelError(f"{sidecar.name}: the predictions were scored with test-time augmentation at the run's "
                         f"threshold chosen without it ({scored.value:g}), which does not apply to TTA scores; {fix}")
    return run_info, scored_with_tta
