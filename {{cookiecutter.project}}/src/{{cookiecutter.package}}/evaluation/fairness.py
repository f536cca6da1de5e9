"""Stage ``fairness``: outcomes and error rates by protected group at the production threshold.

Protected attributes are never model inputs: ``prepare`` stores them apart and this stage
joins them back on the id column only to measure. Per attribute and group it reports the
outcome rate (credit: approval rate; fraud: flag rate), TPR, FPR and group size, then the
demographic parity ratio and difference and the equalized-odds difference. Point estimates are
per-group counts (tested equal to fairlearn's ``MetricFrame``); confidence intervals from a
seeded bootstrap that resamples data subjects within each group (a vectorised twin of the same
table, tested equal to it).

Gates (``params.yaml: fairness.gates``) fail the stage, and so ``dvc repro``, with a message
naming the attribute, the groups, the metric and the threshold. The report is written first,
so a failed run still leaves ``reports/fairness.json`` for the reviewer and the CI report.
"""

from __future__ import annotations

import logging
import re

import numpy as np
import pandas as pd

from .. import tracking
from ..core import config, model, use_case
from ..core.contract import Contract, ContractError, load_contract
from ..core.errors import DataError, StageOrderError
from ..core.params import FairnessParams, Params, load_params
from ..core.reports import AttributeFairness, FairnessReport, FairnessSettings, FairnessVerdict, GateId, ModelMeta
from ..core.stage import LOGGER, entry_point
from .group_stats import assess_attribute

log = logging.getLogger(LOGGER)
MISSING_GROUP = "(missing)"
SUMMARIES = {
    "demographic_parity_ratio": "lowest group outcome rate divided by the highest",
    "demographic_parity_difference": "highest group outcome rate minus the lowest",
    "equalized_odds_difference": "the larger of the TPR and FPR differences between groups",
    "tpr_difference": "highest group TPR minus the lowest",
    "fpr_difference": "highest group FPR minus the lowest",
}


def _label(metric: str) -> str:
    rate = use_case.load().fairness_outcome_label
    return {
        "demographic_parity_ratio": f"{rate} ratio",
        "demographic_parity_difference": f"{rate} difference",
        "equalized_odds_difference": "equalized-odds difference",
        "tpr_difference": "TPR difference",
        "fpr_difference": "FPR difference",
    }[metric]


def verdicts(attributes: dict[str, AttributeFairness], settings: FairnessParams) -> list[FairnessVerdict]:
    """One verdict per attribute and gate; the CI gates and the PR report read them."""
    rule = settings.rule
    outcome = use_case.load().fairness_outcome
    out = []
    for attribute, result in attributes.items():
        for gate in settings.gates:
            metric, bound, threshold = gate.metric, gate.bound, gate.threshold
            label = _label(metric)
            stat = result.summary.get(metric)
            if stat is None or stat.value is None:
                continue  # listed in the report's not_gated section instead
            value, ci = stat.value, stat.ci
            breached = value < threshold if bound == "min" else value > threshold
            if rule == "significant" and ci is not None:
                # Fail only when the whole confidence interval lies beyond the threshold.
                significant = ci[1] < threshold if bound == "min" else ci[0] > threshold
            else:
                significant = breached
            status = "pass" if not breached else ("fail" if significant else "warn")
            groups = result.groups
            column = outcome if metric.startswith("demographic") else stat.component or metric.split("_")[0]
            lo, hi = stat.low_group, stat.high_group
            what = (
                f"{attribute}: {label} {value:.3f} (group '{lo}' {column} {getattr(groups[lo], column):.3f} vs "
                f"group '{hi}' {getattr(groups[hi], column):.3f}"
            )
            what += f"; {settings.confidence:.0%} CI {ci[0]:.3f}-{ci[1]:.3f})" if ci else ")"
            need = f"{'at least' if bound == 'min' else 'at most'} {threshold:g}"
            if status == "pass":
                reason = f"{what} meets the gate: {need}"
            elif status == "warn":
                reason = f"{what} breaches {need} but the interval includes it (rule 'significant'): passes with a warning"
            else:
                reason = f"{what} breaches the gate: must be {need} (params.yaml fairness.gates, rule '{rule}')"
            out.append(
                FairnessVerdict(
                    id=GateId(gate="fairness", attribute=attribute, metric=metric),
                    status=status,
                    value=value,
                    threshold=threshold,
                    bound=bound,
                    ci=ci,
                    reason=reason,
                )
            )
    return out


def assess(
    y: np.ndarray,
    score: np.ndarray,
    threshold: float,
    protected: pd.DataFrame,
    settings: FairnessParams,
    seed: int,
    subjects: np.ndarray | None = None,
) -> FairnessReport:
    """The full fairness report for scores ``score`` on rows whose protected attributes are ``protected``.

    ``subjects`` (one id per row, e.g. the pseudonymised card number) makes the bootstrap resample
    subjects rather than rows.
    """
    flagged = (np.asarray(score) >= threshold).astype(int)
    y = np.asarray(y).astype(int)
    if len(protected) != len(y):
        raise ValueError(f"protected attributes have {len(protected)} rows but the scores have {len(y)}")
    attributes = {}
    for i, attribute in enumerate(protected.columns):
        groups = protected[attribute].astype(object).where(protected[attribute].notna(), MISSING_GROUP).astype(str).to_numpy()
        found = assess_attribute(
            y, flagged, groups, settings, seed + i, score=np.asarray(score), clusters=subjects, what=f"fairness: {attribute}"
        )
        attributes[attribute] = AttributeFairness.model_validate(found)
    return report(attributes, threshold, len(y), settings, "subject" if subjects is not None else "row")


def report(
    attributes: dict[str, AttributeFairness], threshold: float, rows: int, settings: FairnessParams, bootstrap_unit: str
) -> FairnessReport:
    """The report, its gates and what was not gated, from each attribute's figures (pandas or Spark)."""
    gates = verdicts(attributes, settings)
    if not gates:
        # Fail closed: a fairness check that could not compare any two groups has checked nothing.
        gates.append(
            FairnessVerdict(
                id=GateId(gate="fairness", metric="comparable_groups"),
                status="fail",
                value=0.0,
                threshold=2.0,
                bound="min",
                reason="no protected attribute has two groups large enough to compare "
                f"(min_group_size {settings.min_group_size}, min_group_outcomes "
                f"{settings.min_group_outcomes}): fairness is unassessed; use more held-out data",
            )
        )
    facts = use_case.load()
    return FairnessReport(
        use_case=facts.name,
        threshold=round(float(threshold), 6),
        rows=int(rows),
        outcome=facts.fairness_outcome,
        definitions={
            **facts.fairness_definitions,
            facts.headline_metric: "headline ranking metric within the group",
            **SUMMARIES,
        },
        settings=FairnessSettings.model_validate(settings.model_dump(include=set(FairnessSettings.model_fields))),
        bootstrap_unit=bootstrap_unit,
        attributes=attributes,
        gates=gates,
        not_gated=not_gated(attributes, settings),
        passed=all(g.passed for g in gates),
    )


def not_gated(attributes: dict[str, AttributeFairness], settings: FairnessParams) -> list[FairnessVerdict]:
    """Gates and groups that are reported but not judged (``skip``), each with the reason in a sentence."""
    out = []
    kinds = {"tpr_difference": ["tpr"], "fpr_difference": ["fpr"], "equalized_odds_difference": ["tpr", "fpr"]}
    for attribute, result in attributes.items():
        for gate in settings.gates:
            metric = gate.metric
            if metric not in result.summary:
                n = sum(
                    1 for g in result.groups.values() if all(getattr(g.gated, k) for k in kinds.get(metric, ["outcome_rate"]))
                )
                reason = (
                    f"{attribute}: {_label(metric)} not gated: {n} group(s) large enough "
                    "to compare, 2 needed (min_group_size / min_group_outcomes in params.yaml)"
                )
                out.append(
                    FairnessVerdict(id=GateId(gate="fairness", attribute=attribute, metric=metric), status="skip", reason=reason)
                )
        for item in result.not_gated:
            out.append(
                FairnessVerdict(
                    id=GateId(gate="fairness", attribute=attribute, group=item.group),
                    status="skip",
                    reason=f"{attribute} group '{item.group}': {item.reason}",
                )
            )
    return out


def load_scored(contract: Contract) -> tuple[np.ndarray, np.ndarray, pd.DataFrame, np.ndarray | None]:
    """Held-out labels, scores, protected attributes (joined on the id column only here) and subjects."""
    test = pd.read_parquet(config.TEST)
    protected = pd.read_parquet(config.PROTECTED)
    leaked = sorted(set(contract.protected) & set(test.columns))
    if leaked:
        raise DataError(f"{config.TEST} holds protected attribute(s) {leaked}: they must be stored apart (prepare stage)")
    pipeline = model.load(config.MODEL)
    score = model.scores(pipeline, test, contract)
    key = contract.row_key
    if key not in test.columns or key not in protected.columns:
        raise StageOrderError(f"{config.TEST} and {config.PROTECTED} share no row key {key!r}: rerun the prepare stage")
    joined = test[[key]].merge(protected, on=key, how="left", validate="one_to_one")
    attrs = [c for c in contract.protected if c in joined.columns]
    subjects = test[contract.subject].to_numpy(dtype=object) if contract.subject in test.columns else None
    return model.target_vector(test, contract), score, joined[attrs], subjects


_KEY = re.compile(r"[^A-Za-z0-9_.\-]")


def mlflow_key(*parts: str) -> str:
    """An MLflow metric name for a report value (``+`` in group names becomes ``plus``)."""
    return ".".join(_KEY.sub("_", str(p).replace("+", "plus")) for p in parts)


def mlflow_metrics(report: FairnessReport) -> dict[str, float]:
    """Every number of the report as an MLflow metric; the model card reads them back from the run."""
    out: dict[str, float] = {"fairness.passed": float(report.passed)}
    headline = use_case.load().headline_metric
    for attribute, result in report.attributes.items():
        for group, entry in result.groups.items():
            for k in ("n", "positives", report.outcome, "tpr", "fpr", "positive_rate", headline):
                if getattr(entry, k) is not None:
                    out[mlflow_key("fairness", attribute, group, k)] = float(getattr(entry, k))
        for metric, stat in result.summary.items():
            if stat.value is None:
                continue
            out[mlflow_key("fairness", attribute, metric)] = float(stat.value)
            if stat.ci:
                out[mlflow_key("fairness", attribute, metric, "ci_low")] = float(stat.ci[0])
                out[mlflow_key("fairness", attribute, metric, "ci_high")] = float(stat.ci[1])
    for gate in report.gates:
        if gate.id.attribute is not None and gate.threshold is not None:
            out[mlflow_key("fairness", gate.id.attribute, gate.id.metric or "", "threshold")] = gate.threshold
    return out


def stage_inputs() -> tuple[Params, Contract, ModelMeta]:
    """params.yaml, the contract (which must declare protected attributes) and the model's metadata."""
    params = load_params()
    contract = load_contract(params.data.contract)
    if not contract.protected:
        raise ContractError(
            f"{contract.path} declares no protected attributes: fairness cannot be measured; declare them (role: protected)"
        )
    return params, contract, ModelMeta.read(config.MODEL_META)


def main() -> int:
    """Write ``reports/fairness.json``, log it to the run, and exit 1 when a gate fails."""
    params, contract, meta = stage_inputs()
    y, score, protected, subjects = load_scored(contract)
    return publish(assess(y, score, meta.threshold, protected, params.fairness, params.seed, subjects), meta)


def publish(report: FairnessReport, meta: ModelMeta) -> int:
    """Write the report, log it to the training run and its gates to the console; 1 when a gate fails."""
    report.write(config.FAIRNESS)

    import mlflow

    with tracking.resume_run(meta):
        mlflow.log_metrics(mlflow_metrics(report))
        mlflow.log_artifact(str(config.FAIRNESS))
    for gate in report.gates:
        {"pass": log.info, "warn": log.warning}.get(gate.status, log.error)("%s %s", gate.status.upper(), gate.reason)
    if not report.passed:
        failed = [str(g.id) for g in report.gates if not g.passed]
        log.error("fairness gate(s) failed: %s; the pipeline stops here (see %s)", ", ".join(failed), config.FAIRNESS)
        return 1
    return 0


if __name__ == "__main__":
    entry_point(main)
