"""Stage ``model_card``: the model card (Markdown + JSON twin) and the lineage record of the run.

Nothing in the card is typed by hand for a particular run. Every number is read back from
the MLflow run (the system of record) and carried in the JSON as
``{"value": ..., "mlflow_metric": "<key>"}``, so a reviewer or a test can check each one
against the tracking store. The JSON is validated against the schema shipped in
``src/{{ cookiecutter.package }}/schemas/model_card.schema.json`` before anything is written.
"""

from __future__ import annotations

import json
import re
import sys
from importlib import resources
from typing import Any

import pandas as pd

from .. import __version__
from ..core import config
from ..core.contract import Contract, load_contract
from ..evaluation.explain import EXPLAIN
from ..evaluation.fairness import FAIRNESS, HEADLINE, OUTCOME, mlflow_key
from . import lineage

CARD_MD = config.REPORTS / "model_card.md"
CARD_JSON = config.REPORTS / "model_card.json"
SCHEMA_VERSION = "1.0"
CHANGE_LOG_RUNS = 5

USE = {
    "credit_scoring": {
        "purpose": "Estimate the probability that a consumer loan defaults (90+ days past due within 12 months) "
        "to support the credit decision on an application.",
        "users": "Credit risk and underwriting teams; the decision service applies the threshold and returns reason codes.",
        "decision": "Decline when the probability of default is at or above the threshold; otherwise approve "
        "(subject to policy rules and human review outside the model).",
        "out_of_scope": [
            "Pricing, credit limits or collections decisions: the model was not validated for them.",
            "Business, commercial or mortgage lending, or applicants outside the population in the training data.",
            "Fully automated adverse decisions without the human-review route described under human oversight.",
            "Any use of the protected attributes (or their proxies) as inputs: they are held apart for fairness "
            "measurement only.",
            "Employment, insurance, housing or any decision other than the credit decision it was built for.",
        ],
    },
    "fraud_detection": {
        "purpose": "Score card authorisations for the probability that they are fraudulent, to hold or step up "
        "authentication on suspicious transactions.",
        "users": "Fraud operations; the decision service flags transactions at or above the threshold for review or step-up.",
        "decision": "Flag when the fraud score is at or above the cost-tuned threshold; a flag triggers review or "
        "customer verification, never an automatic account closure.",
        "out_of_scope": [
            "Assessing the creditworthiness of a person or setting a credit score (a high-risk use under the EU AI Act).",
            "Anti-money-laundering or sanctions screening, account closure or law-enforcement referral without human review.",
            "Profiling customers for marketing, pricing or any purpose other than fraud prevention.",
            "Card populations, channels or countries not represented in the training data.",
        ],
    },
}

REGULATORY = {
    "credit_scoring": {
        "eu_ai_act": "high-risk",
        "classification": "High-risk AI system: Regulation (EU) 2024/1689 (AI Act), Annex III point 5(b), "
        "AI systems intended to evaluate the creditworthiness of natural persons or establish their credit score.",
        "obligations": [
            "Risk management system (Art. 9) and data governance (Art. 10): see data, fairness and limitations.",
            "Technical documentation and record-keeping (Art. 11, 12, Annex IV): this card, lineage.json, the MLflow run "
            "and the decision audit log.",
            "Transparency to deployers (Art. 13) and human oversight (Art. 14): see human oversight.",
            "Accuracy, robustness and cybersecurity (Art. 15): see metrics, monitoring and the signed release image.",
        ],
        "other": [
            "GDPR Art. 22 and Art. 13-15: automated credit decisions need a human-review route and meaningful "
            "information about the logic involved (reason codes).",
            "Adverse-action notices (e.g. ECOA / Regulation B in the US, consumer-credit rules in the EU): principal "
            "reasons for a decline come from the reason-code catalogue.",
        ],
    },
    "fraud_detection": {
        "eu_ai_act": "not high-risk under Annex III point 5(b) (fraud-detection exception)",
        "classification": "Regulation (EU) 2024/1689 (AI Act), Annex III point 5(b) lists creditworthiness assessment as "
        "high-risk 'with the exception of AI systems used for the purpose of detecting financial fraud'; "
        "this model is used only to detect fraud, so it is not high-risk under that point.",
        "obligations": [
            "Keep the model to fraud detection: reuse for creditworthiness or credit scoring would make it high-risk.",
            "Record-keeping and traceability are kept to the high-risk standard anyway: this card, lineage.json, the "
            "MLflow run and the audit log.",
        ],
        "other": [
            "GDPR Art. 22: a flag that blocks a transaction is an automated decision with significant effect; "
            "customers need a fast route to human review.",
            "Payment-services rules (e.g. PSD2 transaction monitoring and strong customer authentication) frame how "
            "flags are used.",
        ],
    },
}

LIMITATIONS = {
    "credit_scoring": [
        "Trained on the data described above only; performance on other populations, products or periods is unknown.",
        "Labels exist only for approved loans (reject inference is not modelled): the score may be biased for profiles "
        "rarely approved in the past.",
        "Monotone and additive by design: exact reason codes and stable behaviour, at some cost in accuracy compared "
        "with an unconstrained model.",
        "Fairness is measured on the held-out period only and for the protected attributes declared in contract.yaml; "
        "groups below the minimum size are reported but not gated.",
    ],
    "fraud_detection": [
        "Fraud patterns change quickly and adversarially: performance decays and must be monitored on fresh labels.",
        "Labels (confirmed fraud within 90 days) arrive late and miss undetected fraud: recall is measured against known "
        "fraud only.",
        "The threshold is tuned for the costs in params.yaml; different costs need a new threshold.",
        "Fraud is rare, so per-group error rates rest on few cases; groups with too few frauds are reported but not gated.",
    ],
}

OVERSIGHT = {
    "credit_scoring": [
        "Every decline carries up to four reason codes and can be reviewed by an underwriter, who may override it; "
        "overrides are logged.",
        "Applicants can request human review of an automated decision (GDPR Art. 22(3)).",
        "Model-risk sign-off is required before a release: pull-request gates (metrics, fairness) and this card are the "
        "evidence.",
    ],
    "fraud_detection": [
        "A flag holds or steps up a transaction; fraud analysts review holds and release false positives.",
        "Customers can contact the issuer to have a blocked transaction reviewed by a person.",
        "Model-risk sign-off is required before a release: pull-request gates (metrics, fairness) and this card are the "
        "evidence.",
    ],
}

MONITORING = [
    "Input drift per feature (PSI/CSI) and score drift on a schedule; an issue is opened when a threshold is crossed.",
    "Performance and the fairness gates recomputed as labels arrive; a retraining pull request compares challenger with "
    "champion.",
    "Service health: latency, error rate and decisions by outcome scraped from /metrics with alerts.",
    "Every decision is written to an audit log with its model version and reason codes (no raw PII) for traceability.",
]


class CardError(RuntimeError):
    """The card cannot be built truthfully (a value is missing from the MLflow run, or the schema rejects it)."""


def schema() -> dict[str, Any]:
    text = resources.files(__package__).joinpath("schemas/model_card.schema.json").read_text(encoding="utf-8")
    return json.loads(text)


def validate(card: dict[str, Any]) -> None:
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
        if key not in self.metrics:
            raise CardError(f"MLflow run {self.id} has no metric {key!r}: rerun the stage that logs it (dvc repro)")
        out: dict[str, Any] = {"value": self.metrics[key], "mlflow_metric": key}
        if run_id is not None:
            out["mlflow_run_id"] = run_id
        return out


def date_range(df: pd.DataFrame, contract: Contract) -> dict[str, str] | None:
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


def change_log(client, run: Run, experiment_id: str, use_case: str) -> list[dict[str, Any]]:
    """The previous runs of this experiment and what changed since each (params, data hashes)."""
    headline = f"test_{HEADLINE[use_case]}"
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


def build(
    params: dict[str, Any],
    contract: Contract,
    run: Run,
    lineage_record: dict[str, Any],
    fairness: dict[str, Any],
    explain: dict[str, Any],
    metrics_keys: list[str],
    history: list[dict[str, Any]],
) -> dict[str, Any]:
    use_case = params["use_case"]
    outcome = OUTCOME[use_case]
    slices = []
    for attribute, result in fairness["attributes"].items():
        for group, entry in result["groups"].items():
            row: dict[str, Any] = {"attribute": attribute, "group": group}
            for k in ("n", outcome, "tpr", "fpr", "positive_rate", HEADLINE[use_case]):
                if entry.get(k) is not None:
                    row[k] = run.logged(mlflow_key("fairness", attribute, group, k))
            slices.append(row)
    gates = []
    for g in fairness["gates"]:
        _, attribute, metric = g["gate"].split(":")
        item: dict[str, Any] = {"gate": g["gate"], "passed": g["passed"], "status": g["status"], "detail": g["detail"]}
        if attribute != "all":
            item["value"] = run.logged(mlflow_key("fairness", attribute, metric))
            item["threshold"] = run.logged(mlflow_key("fairness", attribute, metric, "threshold"))
            if g.get("ci"):
                item["ci_low"] = run.logged(mlflow_key("fairness", attribute, metric, "ci_low"))
                item["ci_high"] = run.logged(mlflow_key("fairness", attribute, metric, "ci_high"))
        gates.append(item)
    rc = explain["reason_codes"]
    reason_section: dict[str, Any] = {"available": rc["available"], "catalogue": rc["catalogue"]}
    if rc["available"]:
        reason_section["max_additivity_error"] = run.logged("reasons.max_additivity_error")
        reason_section["base_score"] = run.logged("reasons.base_score")
        reason_section["principal_reason_counts"] = [
            {"code": c["code"], "count": run.logged(f"reasons.principal.{c['code']}")} for c in rc["catalogue"]
        ]
    else:
        reason_section["why"] = rc["why"]
    reg = REGULATORY[use_case]
    dates = {
        name: {"from": run.tags[f"data.{name}_from"], "to": run.tags[f"data.{name}_to"]}
        for name in ("train", "test")
        if f"data.{name}_from" in run.tags
    }
    return {
        "schema_version": SCHEMA_VERSION,
        "model": {
            "name": config.param(params, "mlflow.experiment", str),
            "use_case": use_case,
            "version": __version__,
            "mlflow_run_id": run.id,
            "trained_at": run.start,
            "algorithm": "scikit-learn HistGradientBoostingClassifier"
            + (
                " (monotone, additive: no feature interactions)"
                if params["model"].get("interaction_cst") == "no_interactions"
                else " (monotone where the contract declares a direction)"
            ),
            "decision_rule": USE[use_case]["decision"],
            "threshold": run.logged("decision_threshold"),
        },
        "intended_use": {k: USE[use_case][k] for k in ("purpose", "users", "out_of_scope")},
        "regulatory": {
            **reg,
            "note": "Classification as assessed when this template was written; confirm it with your "
            "compliance function for your jurisdiction and use.",
        },
        "data": {
            "contract": f"{contract.name} v{contract.version}",
            "description": contract.description,
            "source": config.param(params, "data.path", str),
            "files": lineage_record["files"],
            "rows": {
                "train": run.logged("train_rows"),
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
        },
        "fairness": {
            "passed": fairness["passed"],
            "rule": fairness["settings"]["rule"],
            "gates": gates,
            "not_gated": [n["detail"] for n in fairness["not_gated"]],
        },
        "explanations": {
            "permutation_importance": [
                {"feature": f["feature"], **run.logged(f"importance.{f['feature']}")}
                for f in explain["permutation_importance"]["features"]
            ],
            "importance_scoring": explain["permutation_importance"]["scoring"],
            "reason_codes": reason_section,
        },
        "limitations": LIMITATIONS[use_case],
        "human_oversight": OVERSIGHT[use_case],
        "monitoring": MONITORING,
        "version": {
            "model_version": f"{__version__}+{run.id[:8]}",
            "git_sha": lineage_record["git"]["sha"],
            "git_dirty": lineage_record["git"]["dirty"],
            "change_log": history,
        },
    }


_COUNT = re.compile(r"(^|[._])(n|rows|rows_in|rows_erased|train_rows|test_rows|positives)$|^reasons\.principal\.")


def _n(item: dict[str, Any], digits: int = 4) -> str:
    """The one way the Markdown prints a logged number: counts as integers, the rest to ``digits`` places."""
    v = item["value"]
    return f"{int(v)}" if _COUNT.search(item["mlflow_metric"]) else f"{v:.{digits}f}"


def render(card: dict[str, Any]) -> str:
    m, d, f, e, v = card["model"], card["data"], card["fairness"], card["explanations"], card["version"]
    dirty = " (uncommitted changes)" if str(v["git_dirty"]) == "True" else ""
    lines = [
        f"# Model card: {m['name']}",
        "",
        f"Version **{v['model_version']}** ({m['use_case'].replace('_', ' ')}), MLflow run `{m['mlflow_run_id']}`, "
        f"trained {m['trained_at']}, git `{v['git_sha'][:12]}`{dirty}.",
        "Generated by the `model_card` stage from the MLflow run; every number below is the run's logged value.",
        "",
        "## Intended use",
        "",
        card["intended_use"]["purpose"],
        "",
        f"- **Users:** {card['intended_use']['users']}",
        f"- **Decision:** {m['decision_rule']} Threshold: {_n(m['threshold'])}.",
        f"- **Model:** {m['algorithm']}.",
        "",
        "**Out of scope:**",
        "",
        *[f"- {x}" for x in card["intended_use"]["out_of_scope"]],
        "",
        "## Regulatory classification",
        "",
        f"**EU AI Act: {card['regulatory']['eu_ai_act']}.** {card['regulatory']['classification']}",
        "",
        *[f"- {x}" for x in card["regulatory"]["obligations"] + card["regulatory"]["other"]],
        "",
        f"_{card['regulatory']['note']}_",
        "",
        "## Data",
        "",
        f"Contract `{d['contract']}`: {d['description']} Source: `{d['source']}`.",
        "",
        "| Rows | Count |",
        "|---|---|",
        *[f"| {k} | {_n(x)} |" for k, x in d["rows"].items()],
        "",
    ]
    if d["date_range"]:
        lines += [
            "| Split | From | To |",
            "|---|---|---|",
            *[f"| {k} | {r['from']} | {r['to']} |" for k, r in d["date_range"].items()],
            "",
        ]
    lines += [
        "Files (md5 as in `dvc.lock`):",
        "",
        "| File | md5 | DVC stage |",
        "|---|---|---|",
        *[f"| `{x['path']}` | `{x['md5']}` | {x['dvc_stage'] or 'not in dvc.lock'} |" for x in d["files"]],
        "",
        f"PII pseudonymised (HMAC-SHA-256): {', '.join(d['pii_pseudonymised']) or 'none'}. "
        "Protected attributes, stored apart and used only to measure fairness: "
        f"{', '.join(d['protected_measured_only']) or 'none'}.",
        "",
        "## Metrics (out-of-time test set)",
        "",
        "| Metric | Value |",
        "|---|---|",
        *[f"| {x['name']} | {_n(x)} |" for x in card["metrics"]["overall"]],
        "",
    ]
    slice_keys = (
        [k for k in card["metrics"]["by_slice"][0] if k not in ("attribute", "group")] if card["metrics"]["by_slice"] else []
    )
    if slice_keys:
        lines += [
            "### By protected group",
            "",
            "| Attribute | Group | " + " | ".join(slice_keys) + " |",
            "|---|---|" + "---|" * len(slice_keys),
        ]
        lines += [
            f"| {s['attribute']} | {s['group']} | " + " | ".join(_n(s[k]) if k in s else "n/a" for k in slice_keys) + " |"
            for s in card["metrics"]["by_slice"]
        ]
        lines.append("")
    lines += [
        "## Fairness",
        "",
        f"Gates {'**passed**' if f['passed'] else '**FAILED**'} (rule `{f['rule']}`, see `reports/fairness.json`).",
        "",
        "| Gate | Status | Value | CI | Threshold |",
        "|---|---|---|---|---|",
    ]
    for g in f["gates"]:
        ci = f"{_n(g['ci_low'])}-{_n(g['ci_high'])}" if "ci_low" in g else "n/a"
        lines.append(
            f"| {g['gate']} | {g['status']} | {_n(g['value']) if 'value' in g else 'n/a'} | {ci} | "
            f"{_n(g['threshold']) if 'threshold' in g else 'n/a'} |"
        )
    lines += [
        "",
        *[f"- {g['detail']}" for g in f["gates"]],
        *[f"- {x}" for x in f["not_gated"]],
        "",
        "## Explanations",
        "",
        f"Permutation importance on the held-out set ({e['importance_scoring']} drop when shuffled):",
        "",
        "| Feature | Importance |",
        "|---|---|",
        *[f"| {x['feature']} | {_n(x)} |" for x in e["permutation_importance"]],
        "",
    ]
    rc = e["reason_codes"]
    if rc["available"]:
        lines += [
            f"Reason codes are exact: contributions plus the base score reproduce the model's log-odds within "
            f"{rc['max_additivity_error']['value']:.1e} on every held-out row.",
            "",
            "| Code | Feature | Consumer text | Principal reason for declines |",
            "|---|---|---|---|",
        ]
        counts = {c["code"]: c["count"] for c in rc["principal_reason_counts"]}
        lines += [f"| {c['code']} | {c['feature']} | {c['text']} | {_n(counts[c['code']])} |" for c in rc["catalogue"]]
    else:
        lines += [
            f"Per-decision reason codes: not available for this model ({rc['why']}).",
            "",
            "| Code | Feature | Text |",
            "|---|---|---|",
            *[f"| {c['code']} | {c['feature']} | {c['text']} |" for c in rc["catalogue"]],
        ]
    lines += [
        "",
        "## Limitations",
        "",
        *[f"- {x}" for x in card["limitations"]],
        "",
        "## Human oversight",
        "",
        *[f"- {x}" for x in card["human_oversight"]],
        "",
        "## Monitoring plan",
        "",
        *[f"- {x}" for x in card["monitoring"]],
        "",
        "## Version and change log",
        "",
        f"Model version {v['model_version']}; lineage in `reports/lineage.json`.",
        "",
    ]
    if v["change_log"]:
        lines += ["| Earlier run | Started | Git | Headline | Changed since |", "|---|---|---|---|---|"]
        lines += [
            f"| `{c['run_id'][:8]}` | {c['started']} | `{c['git_sha'][:8]}` | "
            f"{_n(c['headline']) if 'headline' in c else 'n/a'} | " + "; ".join(c["changes_since"]).replace("|", "/") + " |"
            for c in v["change_log"]
        ]
    else:
        lines.append("First run of this experiment.")
    return "\n".join(lines) + "\n"


def main() -> int:
    log = config.setup_logging()
    params = config.load_params()
    contract = load_contract(config.param(params, "data.contract", str))
    meta = json.loads(config.MODEL_META.read_text(encoding="utf-8"))
    fairness = json.loads(FAIRNESS.read_text(encoding="utf-8"))
    explain = json.loads(EXPLAIN.read_text(encoding="utf-8"))
    metrics_keys = sorted(json.loads(config.METRICS.read_text(encoding="utf-8")))
    summary = json.loads((config.PREPARED_DIR / "summary.json").read_text(encoding="utf-8"))

    import mlflow
    from mlflow.tracking import MlflowClient

    mlflow.set_tracking_uri(meta["tracking_uri"])
    client = MlflowClient(tracking_uri=meta["tracking_uri"])
    try:
        record = lineage.build(params, meta, client.get_run(meta["run_id"]).data.tags)
    except lineage.LineageError as exc:
        log.error("%s", exc)
        return 1
    config.write_json(lineage.LINEAGE, record)
    with mlflow.start_run(run_id=meta["run_id"]):
        mlflow.log_metrics({"data.rows_in": float(summary["rows_in"]), "data.rows_erased": float(summary["rows_erased"])})
        mlflow.set_tags(data_tags(contract))
        mlflow.log_artifact(str(lineage.LINEAGE))
    run = Run(client.get_run(meta["run_id"]))  # read back: the card shows what the store holds
    try:
        card = build(
            params,
            contract,
            run,
            record,
            fairness,
            explain,
            metrics_keys,
            change_log(client, run, run_experiment(client, meta["run_id"]), params["use_case"]),
        )
        validate(card)
    except CardError as exc:
        log.error("%s", exc)
        return 1
    config.write_json(CARD_JSON, card)
    CARD_MD.write_text(render(card), encoding="utf-8")
    with mlflow.start_run(run_id=meta["run_id"]):
        mlflow.log_artifact(str(CARD_JSON))
        mlflow.log_artifact(str(CARD_MD))
    log.info("model card %s (+ %s), lineage %s, attached to MLflow run %s", CARD_MD, CARD_JSON.name, lineage.LINEAGE, run.id)
    return 0


def run_experiment(client, run_id: str) -> str:
    return client.get_run(run_id).info.experiment_id


if __name__ == "__main__":
    sys.exit(main())
