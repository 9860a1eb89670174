"""Pre-specified acceptance criteria: PASS / FAIL per criterion, the sample size each lower-CI criterion needs
(checked against brute-force computations written from the formulas), and how criteria reach the report."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import yaml
from scipy import stats as sps

from medrec.config import AcceptanceCriteria, parse_acceptance
from medrec.errors import ConfigError
from medrec.report.acceptance import (
    FAIL,
    NOT_EVALUABLE,
    PASS,
    auc_sample_size,
    hanley_mcneil_se,
    judge_acceptance,
    proportion_sample_size,
)
from medrec.report.build import write_report

Z = 1.959963984540054


def _wilson_lower(successes: int, n: int) -> float:
    """Wilson's (1927) lower bound, from its textbook form."""
    p = successes / n
    centre = p + Z * Z / (2 * n)
    half = Z * math.sqrt(p * (1 - p) / n + Z * Z / (4 * n * n))
    return (centre - half) / (1 + Z * Z / n)


def _power(n: int, observed: float, bound: float) -> float:
    """P(Wilson lower bound >= bound) for X ~ Binomial(n, observed), summed over every outcome."""
    return sum(sps.binom.pmf(x, n, observed) for x in range(n + 1) if _wilson_lower(x, n) >= bound - 1e-12)


@pytest.mark.parametrize(("observed", "bound"), [(0.95, 0.8), (0.9, 0.75), (1.0, 0.8), (0.85, 0.7)])
def test_proportion_sample_size_is_where_the_exact_power_stays_above_80_percent(observed: float, bound: float) -> None:
    n = proportion_sample_size(observed, bound)
    assert n is not None
    assert all(_power(m, observed, bound) >= 0.8 for m in range(n, n + 40))
    assert _power(n - 1, observed, bound) < 0.8


def test_proportion_sample_size_of_a_perfect_observation_is_the_smallest_n_whose_bound_reaches() -> None:
    # 16 of 16: Wilson lower bound 16 / (16 + z^2) = 0.806 >= 0.8; 15 of 15 gives 0.796
    assert proportion_sample_size(1.0, 0.8) == 16
    assert _wilson_lower(16, 16) >= 0.8 > _wilson_lower(15, 15)


def test_proportion_sample_size_near_the_normal_approximation() -> None:
    # textbook one-sample formula: ((z_a sqrt(p0 q0) + z_b sqrt(p1 q1)) / (p1 - p0))^2 = 107.4 for 0.9 vs 0.8
    approximate = ((Z * math.sqrt(0.8 * 0.2) + 0.8416212 * math.sqrt(0.9 * 0.1)) / 0.1) ** 2
    assert abs(proportion_sample_size(0.9, 0.8) - approximate) < 15


@pytest.mark.parametrize(("observed", "bound"), [(0.8, 0.8), (0.7, 0.8), (0.9, 1.0), (0.8001, 0.8)])
def test_proportion_sample_size_unreachable(observed: float, bound: float) -> None:
    assert proportion_sample_size(observed, bound) is None


def test_hanley_mcneil_standard_error_by_hand() -> None:
    # A = 0.8, 50 + 50: Q1 = 0.8 / 1.2, Q2 = 1.28 / 1.8; var = (0.16 + 49 (Q1 - 0.64) + 49 (Q2 - 0.64)) / 2500
    q1, q2 = 0.8 / 1.2, 1.28 / 1.8
    by_hand = math.sqrt((0.16 + 49 * (q1 - 0.64) + 49 * (q2 - 0.64)) / 2500)
    assert hanley_mcneil_se(0.8, 50, 50) == pytest.approx(by_hand, abs=1e-12)
    assert hanley_mcneil_se(0.8, 50, 50) == pytest.approx(0.04450, abs=5e-5)


def test_auc_sample_size_is_the_first_size_that_shows_the_bound() -> None:
    n_positive, n_negative = auc_sample_size(0.9, 0.8, 2.0)
    assert n_negative == 2 * n_positive

    def shown(n1: int) -> bool:
        n0 = 2 * n1
        return 0.9 - 0.8 >= Z * hanley_mcneil_se(0.8, n1, n0) + sps.norm.ppf(0.8) * hanley_mcneil_se(0.9, n1, n0)

    assert shown(n_positive) and not shown(n_positive - 1)
    assert auc_sample_size(0.8, 0.8, 1.0) is None and auc_sample_size(0.75, 0.8, 1.0) is None


def _report(**metrics) -> dict:
    return {"metrics": metrics, "n_samples": 60, "n_positive": 30, "n_negative": 30, "threshold_kind": "validation"}


def test_verdicts_follow_the_bounds() -> None:
    criteria = parse_acceptance({"sensitivity": {"lower_ci": 0.8}, "specificity": {"value": 0.85},
                                 "auc": {"value": 0.9, "lower_ci": 0.8}, "f1": {"value": 0.5}})
    report = _report(
        sensitivity={"value": 0.93, "ci95": [0.81, 0.98], "numerator": 28, "denominator": 30},
        specificity={"value": 0.8, "ci95": [0.6, 0.9], "numerator": 24, "denominator": 30},
        auc={"value": 0.95, "ci95": [0.79, 0.99]},
    )
    judged = judge_acceptance(criteria, report, "test")
    verdicts = {entry["metric"]: entry["verdict"] for entry in judged["criteria"]}
    assert verdicts == {"sensitivity": PASS, "specificity": FAIL, "auc": FAIL, "f1": NOT_EVALUABLE}
    assert judged["overall"] == FAIL and (judged["n_pass"], judged["n_fail"]) == (1, 2)
    auc = next(entry for entry in judged["criteria"] if entry["metric"] == "auc")
    assert auc["reasons"] == ["point estimate 0.950 >= 0.9", "lower 95% CI bound 0.790 < 0.8"]
    specificity = next(entry for entry in judged["criteria"] if entry["metric"] == "specificity")
    assert specificity["sample_size"] is None  # a point-estimate criterion needs no power calculation
    sensitivity = next(entry for entry in judged["criteria"] if entry["metric"] == "sensitivity")["sample_size"]
    assert sensitivity["n_needed"] == proportion_sample_size(0.93, 0.8)
    assert sensitivity["unit"] == "reference-positive samples" and sensitivity["n_in_test_set"] == 30
    assert sensitivity["total_needed"] == math.ceil(sensitivity["n_needed"] * 60 / 30)
    auc_size = auc["sample_size"]
    assert (auc_size["n_needed"], auc_size["n_negative_needed"]) == auc_sample_size(0.95, 0.8, 1.0)
    assert auc_size["enough"] is (30 >= auc_size["n_needed"])


def test_a_design_effect_multiplies_the_sample_size() -> None:
    criteria = parse_acceptance({"sensitivity": {"lower_ci": 0.8}})
    plain = _report(sensitivity={"value": 0.95, "ci95": [0.85, 0.99], "numerator": 38, "denominator": 40})
    clustered = _report(sensitivity={"value": 0.95, "ci95": [0.83, 0.99], "numerator": 38, "denominator": 40,
                                     "design_effect": 1.5})
    n_plain = judge_acceptance(criteria, plain, "t")["criteria"][0]["sample_size"]["n_needed"]
    n_clustered = judge_acceptance(criteria, clustered, "t")["criteria"][0]["sample_size"]["n_needed"]
    assert n_clustered == math.ceil(1.5 * n_plain)


def test_all_passing_and_no_criteria() -> None:
    criteria = parse_acceptance({"accuracy": {"value": 0.5}})
    judged = judge_acceptance(criteria, _report(accuracy={"value": 0.7, "ci95": [0.6, 0.8]}), "t")
    assert judged["overall"] == PASS
    assert judge_acceptance(AcceptanceCriteria(), _report(), "t") is None
    assert judge_acceptance(None, _report(), "t") is None


def test_exploratory_threshold_is_flagged() -> None:
    report = {**_report(sensitivity={"value": 0.9, "ci95": [0.8, 0.95]}), "threshold_kind": "exploratory"}
    judged = judge_acceptance(parse_acceptance({"sensitivity": {"value": 0.8}}), report, "t")
    assert "exploratory" in judged["caveat"]


@pytest.mark.parametrize(("data", "message"), [
    ({"sensitivty": {"lower_ci": 0.8}}, "did you mean 'sensitivity'"),
    ({"auc": {"lowerci": 0.8}}, "did you mean 'lower_ci'"),
    ({"auc": {}}, "give 'value'"),
    ({"auc": {"lower_ci": 80}}, "auc.lower_ci"),
    ({"brier": {"value": 0.1}}, "unknown key 'brier'"),
    ([0.8], "a mapping of metric"),
])
def test_bad_criteria_name_the_key(data: object, message: str) -> None:
    with pytest.raises(ConfigError, match="acceptance") as raised:
        parse_acceptance(data, "crit.yaml")
    assert message in str(raised.value)


def test_a_recipe_file_gives_its_evaluation_acceptance() -> None:
    criteria = parse_acceptance({"name": "x", "evaluation": {"acceptance": {"auc": {"lower_ci": 0.8}}}})
    assert [name for name, _ in criteria.criteria()] == ["auc"]
    assert parse_acceptance({"acceptance": {"npv": {"value": 0.9}}}).npv.value == 0.9


def test_the_demo_recipe_states_its_criteria() -> None:
    from medrec.workflow import read_recipe

    config, _ = read_recipe("ct_lesion_annotated")
    criteria = dict(config.evaluation.acceptance.criteria())
    assert criteria["auc"].lower_ci == 0.8
    assert criteria["sensitivity"].value == 0.8 and criteria["specificity"].value == 0.8


def test_report_judges_the_criteria_on_page_one_and_in_report_json(report_inputs, tmp_path) -> None:
    import pypdfium2 as pdfium

    criteria = parse_acceptance({"sensitivity": {"lower_ci": 0.5}, "specificity": {"value": 0.99},
                                 "auc": {"lower_ci": 0.6}})
    out = tmp_path / "report"
    report = write_report(report_inputs.predictions, out, run_dir=report_inputs.run, n_boot=50,
                          acceptance=criteria, acceptance_source="--acceptance crit.yaml")
    stored = json.loads((out / "report.json").read_text(encoding="utf-8"))["acceptance"]
    assert stored == json.loads(json.dumps(report["acceptance"]))
    metrics = report["metrics"]
    verdicts = {entry["metric"]: entry["verdict"] for entry in stored["criteria"]}
    assert verdicts["sensitivity"] == (PASS if metrics["sensitivity"]["ci95"][0] >= 0.5 else FAIL)
    assert verdicts["specificity"] == (PASS if metrics["specificity"]["value"] >= 0.99 else FAIL)
    assert verdicts["auc"] == (PASS if metrics["auc"]["ci95"][0] >= 0.6 else FAIL)
    pdf = pdfium.PdfDocument(str(out / "report.pdf"))
    try:
        first = " ".join(pdf[0].get_textpage().get_text_range().split())
    finally:
        pdf.close()
    assert "Pre-specified acceptance criteria" in first and f"Overall: {stored['overall']}" in first
    assert "--acceptance crit.yaml" in first


def test_cli_acceptance_file_fail_keeps_exit_status_zero(report_inputs, tmp_path, run_medrec) -> None:
    criteria = tmp_path / "crit.yaml"
    criteria.write_text(yaml.safe_dump({"auc": {"lower_ci": 0.99}, "sensitivity": {"value": 0.999}}))
    out = tmp_path / "report"
    code, output = run_medrec(["report", str(report_inputs.predictions), "-o", str(out), "--run",
                               str(report_inputs.run), "--bootstrap", "50", "--acceptance", str(criteria)])
    assert code == 0, output
    assert "Acceptance criteria (--acceptance crit.yaml): FAIL" in output
    stored = json.loads((out / "report.json").read_text(encoding="utf-8"))["acceptance"]
    assert stored["overall"] == FAIL and stored["source"] == "--acceptance crit.yaml"


def test_cli_refuses_a_bad_acceptance_file(report_inputs, tmp_path, run_medrec) -> None:
    criteria = tmp_path / "crit.yaml"
    criteria.write_text("sensitivty: {lower_ci: 0.8}\n")
    code, output = run_medrec(["report", str(report_inputs.predictions), "-o", str(tmp_path / "r"), "--run",
                               str(report_inputs.run), "--acceptance", str(criteria)])
    assert code != 0 and "did you mean 'sensitivity'" in output


def test_evaluate_passes_the_runs_recipe_through(tmp_path, run_medrec, monkeypatch) -> None:
    """'medrec evaluate RUN' gives the report the prevalence, acceptance criteria and context of the run's recipe."""
    import medrec.evaluate

    run = tmp_path / "run"
    run.mkdir()
    (run / "workflow.yaml").write_text(yaml.safe_dump({
        "name": "x", "evaluation": {"prevalence": 0.1, "acceptance": {"auc": {"lower_ci": 0.8}}},
        "context": {"intended_use": "triage", "sites": ["A", "B"]}}))
    seen = {}

    def fake_evaluate_run(run_dir, **kw):
        seen.update(kw)
        return {"metrics": {}, "n_samples": 0, "n_patients": 0}

    monkeypatch.setattr(medrec.evaluate, "evaluate_run", fake_evaluate_run)
    code, output = run_medrec(["evaluate", str(run)])
    assert code == 0, output
    assert seen["prevalence"] == 0.1 and seen["prevalence_source"] == "recipe evaluation.prevalence"
    assert [name for name, _ in seen["acceptance"].criteria()] == ["auc"]
    assert seen["acceptance_source"] == "recipe evaluation.acceptance"
    assert seen["context"].intended_use == "triage" and seen["context"].sites == "A, B"
    code, output = run_medrec(["evaluate", str(run), "--prevalence", "0.2"])
    assert code == 0 and seen["prevalence"] == 0.2 and seen["prevalence_source"] == "--prevalence"


def test_a_fold_run_reads_the_recipe_of_its_run(tmp_path) -> None:
    from medrec.evaluate import recipe_evaluation

    fold = tmp_path / "run" / "folds" / "fold_0"
    fold.mkdir(parents=True)
    (tmp_path / "run" / "workflow.yaml").write_text("evaluation: {acceptance: {npv: {value: 0.9}}}\n")
    assert recipe_evaluation(fold).acceptance.npv.value == 0.9
    assert recipe_evaluation(tmp_path).acceptance is None  # no recipe: no criteria


def test_sample_sizes_grow_as_the_observed_value_nears_the_bound() -> None:
    sizes = [proportion_sample_size(p, 0.8) for p in (0.99, 0.95, 0.9, 0.85)]
    assert sizes == sorted(sizes) and len(set(sizes)) == 4
    aucs = [auc_sample_size(a, 0.8, 1.0)[0] for a in (0.97, 0.92, 0.87, 0.84)]
    assert aucs == sorted(aucs)
    assert np.all(np.diff(aucs) > 0)
