"""Stage ``model_card``: the model card (Markdown + JSON twin) and the lineage record of the run.

Nothing in the card is typed by hand for a particular run. Every number is read back from
the MLflow run (the system of record) and carried in the JSON as
``{"value": ..., "mlflow_metric": "<key>"}``, so a reviewer or a test can check each one
against the tracking store. The JSON is validated against the schema shipped in
``src/{{ cookiecutter.package }}/governance/schemas/model_card.schema.json`` before anything is written.
"""

from __future__ import annotations

import json
import logging
import re
from importlib import resources
from typing import Any

import pandas as pd

from .. import __version__, tracking
from ..core import config, use_case
from ..core.contract import Contract, load_contract
from ..core.errors import UserError
from ..core.params import Params, load_params
from ..core.reports import (
    BenchmarkMetrics,
    ExplainReport,
    FairnessReport,
    MetricsReport,
    ModelMeta,
    PrepareSummary,
    ValidationPackReport,
)
from ..core.stage import LOGGER, entry_point, write_json, write_text
from ..evaluation.fairness import mlflow_key
from ..evaluation.validation_pack import metric_key
from . import lineage
from .markdown import markdown_env

log = logging.getLogger(LOGGER)
SCHEMA_VERSION = "1.0"
CHANGE_LOG_RUNS = 5
REGULATORY_NOTE = (
    "Classification as assessed when this template was written; confirm it with your "
    "compliance function for your jurisdiction and use."
)


class CardError(UserError, RuntimeError):
    """The card cannot be built truthfully (a value is missing from the MLflow run, or the schema rejects it)."""


def schema() -> dict[str, Any]:
    """The JSON schema the card must satisfy (shipped in ``schemas/``)."""
    text = resources.files(__package__).joinpath("schemas/model_card.schema.json").read_text(encoding="utf-8")
    return json.loads(text)


def validate(card: dict[str, Any]) -> None:
    """Raise :class:`CardError` naming the first place where the card breaks its schema."""
    import jsonschema

    errors = sorted(jsonschema.Draft202012Validator(schema()).iter_errors(card), key=lambda e: list(e.absolute_path))
    if errors:
        first = errors[0]
        where = "/".join(map(str, first.absolute_path)) or "<root>"
        raise CardError(f"model card does not match its schema at {where}: {first.message} ({len(errors)} error(s))")


class Run:
    """Values of one MLflow run; every number in the card goes through ``logged``."""

    def __init__(self, run) -> None:
        self.id = run.info.run_id
        self.metrics = dict(run.data.metrics)
        self.params = dict(run.data.params)
        self.tags = dict(run.data.tags)
        self.start = pd.Timestamp(run.info.start_time, unit="ms", tz="UTC").isoformat()

    def logged(self, key: str, run_id: str | None = None) -> dict[str, Any]:
        """``{"value", "mlflow_metric"}`` for a metric the run logged; a missing one is a :class:`CardError`."""
        if key not in self.metrics:
            raise CardError(f"MLflow run {self.id} has no metric {key!r}: rerun the stage that logs it (dvc repro)")
        out: dict[str, Any] = {"value": self.metrics[key], "mlflow_metric": key}
        if run_id is not None:
            out["mlflow_run_id"] = run_id
        return out


def date_range(df: pd.DataFrame, contract: Contract) -> dict[str, str] | None:
    """First and last date of the timestamp column, if the contract has one."""
    ts = contract.timestamp
    if ts is None or ts not in df.columns or df.empty:
        return None
    s = pd.to_datetime(df[ts], errors="coerce").dropna()
    return {"from": s.min().date().isoformat(), "to": s.max().date().isoformat()} if len(s) else None


def data_tags(contract: Contract) -> dict[str, str]:
    """Row counts and date ranges of the prepared data, as MLflow tags and params for the card to read back."""
    tags = {}
    for name, path in (("train", config.TRAIN), ("test", config.TEST)):
        r = date_range(pd.read_parquet(path, columns=[contract.timestamp]) if contract.timestamp else pd.DataFrame(), contract)
        if r:
            tags[f"data.{name}_from"], tags[f"data.{name}_to"] = r["from"], r["to"]
    return tags


def change_log(client, run: Run, experiment_id: str) -> list[dict[str, Any]]:
    """The previous runs of this experiment and what changed since each (params, data hashes)."""
    headline = f"test_{use_case.load().headline_metric}"
    previous = client.search_runs(
        [experiment_id],
        filter_string=f"attributes.run_id != '{run.id}'",
        order_by=["attributes.start_time DESC"],
        max_results=CHANGE_LOG_RUNS,
    )
    entries = []
    for p in previous:
        other = Run(p)
        changed = sorted(k for k in set(run.params) | set(other.params) if run.params.get(k) != other.params.get(k))
        entry: dict[str, Any] = {
            "run_id": other.id,
            "started": other.start,
            "git_sha": other.tags.get("git_sha", "unknown"),
            "changes_since": [f"{k}: {other.params.get(k, '(unset)')} -> {run.params.get(k, '(unset)')}" for k in changed]
            or ["no parameter or data-hash change"],
        }
        if headline in other.metrics:
            entry["headline"] = other.logged(headline, run_id=other.id)
        entries.append(entry)
    return entries


def validation_section(pack: ValidationPackReport, run: Run) -> dict[str, Any]:
    """The validation pack's headline figures, each read back from the run (the pack's stage logged them)."""
    d = pack.discrimination
    out: dict[str, Any] = {
        "source": config.VALIDATION_PACK.as_posix(),
        "significance": f"{pack.significance:g}",
        "roc_auc": run.logged("validation.roc_auc"),
        "ci_low": run.logged("validation.roc_auc_ci_low"),
        "ci_high": run.logged("validation.roc_auc_ci_high"),
        "reference_roc_auc": run.logged("validation.reference_roc_auc"),
        "reference_run_id": d.reference.run_id,
        "decline_p": run.logged("validation.roc_auc_decline_p"),
        "ks": run.logged("validation.ks"),
        "failed_tests": pack.failed_tests,
        "grades": [],
        "value_bands": [],
    }
    if pack.grades is not None:
        for r in pack.grades.rows:
            key = f"validation.grade.{metric_key(r.grade)}"
            row = {"grade": r.grade, "pd_range": f"{r.pd_low:g}-{r.pd_high:g}"}
            for name in ("n", "defaults") + (("observed_rate", "mean_pd", "jeffreys_p", "binomial_p") if r.rows else ()):
                row[name] = run.logged(f"{key}.{name}")
            out["grades"].append(row)
        for name, suffix in (("hosmer_lemeshow", ""), ("hosmer_lemeshow_p", "_p")):
            out[name] = run.logged(f"validation.hosmer_lemeshow{suffix}")
        out["herfindahl"] = run.logged("validation.herfindahl")
        out["herfindahl_normalised"] = run.logged("validation.herfindahl_normalised")
    if pack.value_bands is not None:
        for b in [*pack.value_bands.bands, pack.value_bands.overall]:
            key = f"validation.band.{metric_key(b.band)}"
            band = {"band": b.band, "n": run.logged(f"{key}.n")}
            for name in ("precision", "recall", "fraud_rate_by_value"):
                if getattr(b, name) is not None:
                    band[name] = run.logged(f"{key}.{name}")
            out["value_bands"].append(band)
    return out


def algorithm(params: Params) -> str:
    """What the model is (params.yaml ``model.kind``), in words."""
    if params.model.kind == "scorecard":
        return (
            f"{config.BENCHMARK_NAME} (model.kind: scorecard): optbinning's WoE bins (monotone where the contract "
            "declares a direction) and a logistic regression, as points per bin scaled by points to double the odds; "
            "the benchmark stage's fit"
        )
    return "scikit-learn HistGradientBoostingClassifier" + (
        " (monotone, additive: no feature interactions)"
        if params.model.interaction_cst == "no_interactions"
        else " (monotone where the contract declares a direction)"
    )


def hyperparameters(run: Run, headline: str) -> dict[str, Any]:
    """How the model's hyperparameters were chosen (training/tuning.py), from what the train stage logged."""
    method = run.tags.get("search.method")
    if method is None:
        raise CardError(f"MLflow run {run.id} has no tag 'search.method': rerun the train stage (dvc repro)")
    prefix = "search.chosen."
    out: dict[str, Any] = {
        "method": method,
        "chosen": {k.removeprefix(prefix): run.logged(k) for k in sorted(run.metrics) if k.startswith(prefix)},
    }
    if method == "cross_validation":
        for key in ("cv_folds", "rows", "candidates", "grid_size", "cv_log_loss"):
            out[key] = run.logged(f"search.{key}")
        out["metric"], out["cv_score"] = headline, run.logged(f"search.cv_{headline}")
    return out


def build(
    params: Params,
    contract: Contract,
    run: Run,
    lineage_record: dict[str, Any],
    fairness: FairnessReport,
    explain: ExplainReport,
    metrics_keys: list[str],
    history: list[dict[str, Any]],
    have: dict[str, bool] | None = None,
    pack: ValidationPackReport | None = None,
) -> dict[str, Any]:
    """The card as a dict (the JSON twin): text from ``use_case.yaml``, every number from the run.

    ``have`` says which parts the repository has (``use_case.capabilities``): the card's text
    mentions the decision service, monitoring or release only when they exist.
    """
    facts = use_case.load()
    have = use_case.capabilities() if have is None else have
    text = facts.card
    outcome, headline = facts.fairness_outcome, facts.headline_metric
    slices = []
    for attribute, result in fairness.attributes.items():
        for group, entry in result.groups.items():
            row: dict[str, Any] = {"attribute": attribute, "group": group}
            for k in ("n", outcome, "tpr", "fpr", "positive_rate", headline):
                if getattr(entry, k) is not None:
                    row[k] = run.logged(mlflow_key("fairness", attribute, group, k))
            slices.append(row)
    gates = []
    for g in fairness.gates:
        item: dict[str, Any] = {"gate": str(g.id), "passed": g.passed, "status": g.status, "detail": g.reason}
        attribute, metric = g.id.attribute, g.id.metric or ""
        if attribute is not None:
            item["value"] = run.logged(mlflow_key("fairness", attribute, metric))
            item["threshold"] = run.logged(mlflow_key("fairness", attribute, metric, "threshold"))
            if g.ci:
                item["ci_low"] = run.logged(mlflow_key("fairness", attribute, metric, "ci_low"))
                item["ci_high"] = run.logged(mlflow_key("fairness", attribute, metric, "ci_high"))
        gates.append(item)
    rc = explain.reason_codes
    reason_section: dict[str, Any] = {"available": rc.available, "catalogue": [c.model_dump() for c in rc.catalogue]}
    if rc.available:
        reason_section["max_additivity_error"] = run.logged("reasons.max_additivity_error")
        reason_section["base_score"] = run.logged("reasons.base_score")
        reason_section["principal_reason_counts"] = [
            {"code": c.code, "count": run.logged(f"reasons.principal.{c.code}")} for c in rc.catalogue
        ]
    else:
        reason_section["why"] = rc.why
    reg = text["regulatory"]
    dates = {
        name: {"from": run.tags[f"data.{name}_from"], "to": run.tags[f"data.{name}_to"]}
        for name in ("train", "test")
        if f"data.{name}_from" in run.tags
    }
    if pack is None:
        pack = ValidationPackReport.read(config.VALIDATION_PACK)
    return {
        "schema_version": SCHEMA_VERSION,
        "validation": validation_section(pack, run),
        "model": {
            "name": params.mlflow.experiment,
            "use_case": facts.name,
            "version": __version__,
            "mlflow_run_id": run.id,
            "trained_at": run.start,
            "algorithm": algorithm(params),
            "decision_rule": text["decision"],
            "threshold": run.logged("decision_threshold"),
            "hyperparameters": hyperparameters(run, headline),
        },
        "intended_use": {
            "purpose": text["purpose"],
            "users": text["users"],
            "out_of_scope": use_case.applicable(text["out_of_scope"], have),
        },
        "regulatory": {
            "eu_ai_act": reg["eu_ai_act"],
            "classification": reg["classification"],
            "obligations": use_case.applicable(reg["obligations"], have),
            "other": use_case.applicable(reg["other"], have),
            "note": REGULATORY_NOTE,
        },
        "data": {
            "contract": f"{contract.name} v{contract.version}",
            "description": contract.description,
            "source": params.data.path,
            "files": lineage_record["files"],
            "rows": {
                "train": run.logged("train_rows"),
{%- if cookiecutter.compute == "spark" %}
                # Spark: the model trained on a stratified sample of the training split (training/spark_sample.py).
                "train split (train: its stratified sample)": run.logged("train_split.rows"),
{%- endif %}
                "test": run.logged("test_rows"),
                "input": run.logged("data.rows_in"),
                "erased": run.logged("data.rows_erased"),
            },
            "date_range": dates,
            "target": contract.target,
            "positive_rate_train": run.logged("train_positive_rate"),
            "features": [
                {"name": c.name, "dtype": c.dtype, "monotone": c.monotone, "reason_code": c.reason_code or ""}
                for c in contract.columns
                if c.role == "feature"
            ],
            "pii_pseudonymised": contract.pii,
            "protected_measured_only": contract.protected,
        },
        "metrics": {
            "overall": [{"name": k, **run.logged(f"test_{k}")} for k in metrics_keys],
            "by_slice": slices,
            # The benchmark fitted beside the model on the same split (evaluation/benchmark.py).
            "benchmark": {
                "name": config.BENCHMARK_NAME,
                "metric": headline,
                # The numbers, as logged (a spark repository's section also says in words how its rows were drawn).
                **{
                    k: run.logged(f"benchmark.{k}")
                    for k, f in BenchmarkMetrics.model_fields.items()
                    if f.annotation in (int, float)
                },
                "model_is_benchmark": params.model.kind == "scorecard",
            },
        },
        "fairness": {
            "passed": fairness.passed,
            "rule": fairness.settings.rule,
            "gates": gates,
            "not_gated": [n.reason for n in fairness.not_gated],
        },
        "explanations": {
            "permutation_importance": [
                {"feature": f.feature, **run.logged(f"importance.{f.feature}")} for f in explain.permutation_importance.features
            ],
            "importance_scoring": explain.permutation_importance.scoring,
            "reason_codes": reason_section,
        },
        "limitations": use_case.applicable(text["limitations"], have),
        "human_oversight": use_case.applicable(text["human_oversight"], have),
        "monitoring": use_case.applicable(text["monitoring"], have),
        "version": {
            "model_version": f"{__version__}+{run.id[:8]}",
            "git_sha": lineage_record["git"]["sha"],
            "git_dirty": lineage_record["git"]["dirty"],
            "change_log": history,
        },
    }


_COUNT = re.compile(
    r"(^|[._])(n|defaults|rows|rows_in|rows_erased|train_rows|test_rows|positives|bootstrap|cv_folds|candidates|grid_size)$"
    r"|^reasons\.principal\.|^search\.chosen\.(max_iter|max_leaf_nodes|min_samples_leaf|bins)$"
)


def _n(item: dict[str, Any], digits: int = 4) -> str:
    """The one way the Markdown prints a logged number: counts as integers, the rest to ``digits`` places."""
    v = item["value"]
    return f"{int(v)}" if _COUNT.search(item["mlflow_metric"]) else f"{v:.{digits}f}"


def render(card: dict[str, Any]) -> str:
    """The card's Markdown, from ``templates/model_card.md.j2``."""
    env = markdown_env()
    env.filters["num"] = _n
    by_slice = card["metrics"]["by_slice"]
    slice_keys = [k for k in by_slice[0] if k not in ("attribute", "group")] if by_slice else []
    rc = card["explanations"]["reason_codes"]
    counts = {c["code"]: c["count"] for c in rc.get("principal_reason_counts", [])}
    overall = {x["name"]: x for x in card["metrics"]["overall"]}
    return env.get_template("model_card.md.j2").render(card=card, slice_keys=slice_keys, counts=counts, overall=overall)


def main() -> int:
    """Write the lineage record and the model card (Markdown + JSON), and attach them to the run."""
    params = load_params()
    contract = load_contract(params.data.contract)
    meta = ModelMeta.read(config.MODEL_META)
    fairness = FairnessReport.read(config.FAIRNESS)
    explain = ExplainReport.read(config.EXPLAIN)
    metrics_keys = MetricsReport.read(config.METRICS).metric_names()
    summary = PrepareSummary.read(config.PREPARE_SUMMARY)

    import mlflow
    from mlflow.tracking import MlflowClient

    tracking.quiet_mlflow()
    mlflow.set_tracking_uri(meta.tracking_uri)
    client = MlflowClient(tracking_uri=meta.tracking_uri)
    record = lineage.build(params, meta, client.get_run(meta.run_id).data.tags)
    write_json(config.LINEAGE, record)
    with mlflow.start_run(run_id=meta.run_id):
        mlflow.log_metrics({"data.rows_in": float(summary.rows_in), "data.rows_erased": float(summary.rows_erased)})
        mlflow.set_tags(data_tags(contract))
        mlflow.log_artifact(str(config.LINEAGE))
    run = Run(client.get_run(meta.run_id))  # read back: the card shows what the store holds
    history = change_log(client, run, client.get_run(meta.run_id).info.experiment_id)
    card = build(params, contract, run, record, fairness, explain, metrics_keys, history)
    validate(card)
    write_json(config.MODEL_CARD_JSON, card)
    write_text(config.MODEL_CARD_MD, render(card))
    with mlflow.start_run(run_id=meta.run_id):
        mlflow.log_artifact(str(config.MODEL_CARD_JSON))
        mlflow.log_artifact(str(config.MODEL_CARD_MD))
    md, card_json = config.MODEL_CARD_MD, config.MODEL_CARD_JSON.name
    log.info("model card %s (+ %s), lineage %s, attached to MLflow run %s", md, card_json, config.LINEAGE, run.id)
    return 0


if __name__ == "__main__":
    entry_point(main)
