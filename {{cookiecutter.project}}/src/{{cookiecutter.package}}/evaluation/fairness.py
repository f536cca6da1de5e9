"""Stage ``fairness``: outcomes and error rates by protected group at the production threshold.

Protected attributes are never model inputs: ``prepare`` stores them apart and this stage
joins them back on the id column only to measure. Per attribute and group it reports the
outcome rate (credit: approval rate; fraud: flag rate), TPR, FPR and group size, then the
demographic parity ratio and difference and the equalized-odds difference. Point estimates come
from fairlearn's ``MetricFrame``; confidence intervals from a seeded bootstrap that resamples
data subjects within each group (a vectorised twin of the same table, tested equal to it).

Gates (``params.yaml: fairness.gates``) fail the stage, and so ``dvc repro``, with a message
naming the attribute, the groups, the metric and the threshold. The report is written first,
so a failed run still leaves ``reports/fairness.json`` for the reviewer and the CI report.
"""

from __future__ import annotations

import json
import re
import sys
from typing import Any

import numpy as np
import pandas as pd

from ..core import config, model
from ..core.contract import Contract, load_contract
from ..core.metrics import HEADLINE

FAIRNESS = config.REPORTS / "fairness.json"
MISSING_GROUP = "(missing)"

# What is compared between groups, per use case. Credit: approval is the favourable outcome
# (score below the threshold); error rates are about declines against actual defaults.
# Fraud: a flag (score at or above the threshold) is the adverse outcome.
OUTCOME = {"credit_scoring": "approval_rate", "fraud_detection": "flag_rate"}
DEFINITIONS = {
    "credit_scoring": {
        "approval_rate": "share of applications approved (probability of default < threshold)",
        "tpr": "share of applicants who defaulted that the model declined",
        "fpr": "share of applicants who repaid that the model declined (creditworthy applicants turned away)",
        "positive_rate": "observed default rate",
    },
    "fraud_detection": {
        "flag_rate": "share of transactions flagged (fraud score >= threshold)",
        "tpr": "share of fraudulent transactions flagged (fraud caught)",
        "fpr": "share of legitimate transactions flagged (customers wrongly stopped)",
        "positive_rate": "observed fraud rate",
    },
}
SUMMARIES = {
    "demographic_parity_ratio": "lowest group outcome rate divided by the highest",
    "demographic_parity_difference": "highest group outcome rate minus the lowest",
    "equalized_odds_difference": "the larger of the TPR and FPR differences between groups",
    "tpr_difference": "highest group TPR minus the lowest",
    "fpr_difference": "highest group FPR minus the lowest",
}
RULES = ("point", "significant")


class FairnessGateError(RuntimeError):
    """At least one fairness gate failed."""


# --- per-group metrics (used by MetricFrame) ---------------------------------------------
def _count(y_true, y_pred) -> float:
    return float(len(y_true))


def _positives(y_true, y_pred) -> float:
    return float(np.sum(y_true))


def _flag_rate(y_true, y_pred) -> float:
    return float(np.mean(y_pred)) if len(y_pred) else np.nan


def _tpr(y_true, y_pred) -> float:
    pos = np.asarray(y_true) == 1
    return float(np.mean(np.asarray(y_pred)[pos])) if pos.any() else np.nan


def _fpr(y_true, y_pred) -> float:
    neg = np.asarray(y_true) == 0
    return float(np.mean(np.asarray(y_pred)[neg])) if neg.any() else np.nan


def _positive_rate(y_true, y_pred) -> float:
    return float(np.mean(y_true)) if len(y_true) else np.nan


_METRICS = {
    "n": _count,
    "positives": _positives,
    "flag_rate": _flag_rate,
    "tpr": _tpr,
    "fpr": _fpr,
    "positive_rate": _positive_rate,
}


def by_group(y: np.ndarray, flagged: np.ndarray, groups: np.ndarray, use_case: str) -> pd.DataFrame:
    """One row per group: n, positives, outcome rate, TPR, FPR, positive rate."""
    from fairlearn.metrics import MetricFrame

    frame = MetricFrame(metrics=_METRICS, y_true=y, y_pred=flagged, sensitive_features=pd.Series(groups, name="group"))
    table = frame.by_group.copy()
    table.index = table.index.astype(str)
    if OUTCOME[use_case] == "approval_rate":
        table["approval_rate"] = 1.0 - table["flag_rate"]
        table = table.drop(columns="flag_rate")
    return table


def summarise(
    table: pd.DataFrame, outcome: str, rate_groups: list[str], tpr_groups: list[str], fpr_groups: list[str]
) -> dict[str, dict[str, Any]]:
    """Between-group summaries over the groups large enough to judge (None when fewer than two)."""
    out: dict[str, dict[str, Any]] = {}

    def spread(column: str, groups: list[str]) -> tuple[float, str, str] | None:
        values = table.loc[groups, column].dropna() if groups else pd.Series(dtype=float)
        if len(values) < 2:
            return None
        return float(values.max() - values.min()), str(values.idxmin()), str(values.idxmax())

    rates = table.loc[rate_groups, outcome].dropna() if rate_groups else pd.Series(dtype=float)
    if len(rates) >= 2:
        lo, hi = str(rates.idxmin()), str(rates.idxmax())
        ratio = float(rates.min() / rates.max()) if rates.max() > 0 else 1.0
        out["demographic_parity_ratio"] = {"value": ratio, "low_group": lo, "high_group": hi}
        out["demographic_parity_difference"] = {"value": float(rates.max() - rates.min()), "low_group": lo, "high_group": hi}
    tpr, fpr = spread("tpr", tpr_groups), spread("fpr", fpr_groups)
    for name, found in (("tpr_difference", tpr), ("fpr_difference", fpr)):
        if found is not None:
            out[name] = {"value": found[0], "low_group": found[1], "high_group": found[2]}
    # Equalized odds compares both error rates, so only over groups where both can be judged.
    both = [g for g in tpr_groups if g in fpr_groups]
    eo_tpr, eo_fpr = spread("tpr", both), spread("fpr", both)
    if eo_tpr is not None and eo_fpr is not None:
        component, (value, lo, hi) = max((("tpr", eo_tpr), ("fpr", eo_fpr)), key=lambda kv: kv[1][0])
        out["equalized_odds_difference"] = {"value": value, "low_group": lo, "high_group": hi, "component": component}
    return out


class _Resampler:
    """Stratified cluster bootstrap: within each group, resample whole subjects with replacement.

    Decisions about one subject (every transaction on a card, say) are not independent, so
    resampling rows would understate the noise. With one row per subject this is the ordinary
    row bootstrap within groups.
    """

    def __init__(self, codes: np.ndarray, clusters: np.ndarray | None) -> None:
        clusters = np.arange(len(codes)) if clusters is None else pd.factorize(clusters)[0]
        # One unit per (group, subject); rows ordered so each unit's rows are contiguous.
        units = pd.factorize(pd.MultiIndex.from_arrays([codes, clusters]), sort=True)[0]
        self.order = np.argsort(units, kind="stable")
        counts = np.bincount(units)
        self.starts = np.concatenate([[0], np.cumsum(counts)[:-1]])
        self.lengths = counts
        unit_group = codes[self.order][self.starts]
        self.group_units = [np.flatnonzero(unit_group == g) for g in np.unique(codes)]
        self.n_units = len(counts)

    def sample(self, rng: np.random.Generator) -> np.ndarray:
        chosen = np.concatenate([rng.choice(u, size=len(u), replace=True) for u in self.group_units])
        lengths = self.lengths[chosen]
        offsets = np.arange(lengths.sum()) - np.repeat(np.cumsum(lengths) - lengths, lengths)
        return self.order[np.repeat(self.starts[chosen], lengths) + offsets]


def _fast_table(y: np.ndarray, flagged: np.ndarray, codes: np.ndarray, index: pd.Index, use_case: str) -> pd.DataFrame:
    """The same numbers as ``by_group`` for integer group codes, vectorised for the bootstrap."""
    k = len(index)
    n = np.bincount(codes, minlength=k).astype(float)
    pos = np.bincount(codes, weights=y, minlength=k)
    flags = np.bincount(codes, weights=flagged, minlength=k)
    tp = np.bincount(codes, weights=y * flagged, minlength=k)
    with np.errstate(invalid="ignore", divide="ignore"):
        table = pd.DataFrame(
            {
                "n": n,
                "positives": pos,
                "flag_rate": flags / n,
                "tpr": tp / pos,
                "fpr": (flags - tp) / (n - pos),
                "positive_rate": pos / n,
            },
            index=index,
        )
    if OUTCOME[use_case] == "approval_rate":
        table["approval_rate"] = 1.0 - table.pop("flag_rate")
    return table


def headline_by_group(y: np.ndarray, score: np.ndarray, groups: np.ndarray, use_case: str) -> pd.Series:
    """The headline ranking metric within each group (a slice metric; NaN where a group has one class)."""
    from fairlearn.metrics import MetricFrame
    from sklearn.metrics import average_precision_score, roc_auc_score

    fn = roc_auc_score if HEADLINE[use_case] == "roc_auc" else average_precision_score

    def safe(y_true, y_score) -> float:
        return float(fn(y_true, y_score)) if len(np.unique(y_true)) == 2 else np.nan

    frame = MetricFrame(metrics=safe, y_true=y, y_pred=score, sensitive_features=pd.Series(groups, name="group"))
    result = frame.by_group.copy()
    result.index = result.index.astype(str)
    return result


def assess_attribute(
    y: np.ndarray,
    flagged: np.ndarray,
    groups: np.ndarray,
    use_case: str,
    settings: dict[str, Any],
    seed: int,
    score: np.ndarray | None = None,
    clusters: np.ndarray | None = None,
) -> dict[str, Any]:
    outcome = OUTCOME[use_case]
    table = by_group(y, flagged, groups, use_case)
    if score is not None:
        table[HEADLINE[use_case]] = headline_by_group(y, score, groups, use_case).reindex(table.index)
    min_size, min_outcomes = int(settings["min_group_size"]), int(settings["min_group_outcomes"])
    negatives = table["n"] - table["positives"]
    rate_groups = [g for g in table.index if table.at[g, "n"] >= min_size]
    tpr_groups = [g for g in rate_groups if table.at[g, "positives"] >= min_outcomes]
    fpr_groups = [g for g in rate_groups if negatives[g] >= min_outcomes]
    summary = summarise(table, outcome, rate_groups, tpr_groups, fpr_groups)

    # Seeded stratified (cluster) bootstrap: the same resamples for every statistic of this attribute.
    n_boot, confidence = int(settings["bootstrap"]), float(settings["confidence"])
    q = [(1.0 - confidence) / 2.0, 1.0 - (1.0 - confidence) / 2.0]
    rng = np.random.default_rng(seed)
    columns = [outcome, "tpr", "fpr"]
    boot_groups: dict[str, list[np.ndarray]] = {c: [] for c in columns}
    boot_summary: dict[str, list[float]] = {k: [] for k in summary}
    codes = pd.Categorical(groups, categories=table.index).codes
    resampler = _Resampler(codes, clusters)
    for _ in range(n_boot):
        idx = resampler.sample(rng)
        t = _fast_table(y[idx], flagged[idx], codes[idx], table.index, use_case)
        for c in columns:
            boot_groups[c].append(t[c].to_numpy(dtype=float))
        s = summarise(t, outcome, rate_groups, tpr_groups, fpr_groups)
        for k in boot_summary:
            boot_summary[k].append(s[k]["value"] if k in s else np.nan)

    def ci(samples, estimate: float) -> list[float] | None:
        # A max-minus-min over noisy group rates is biased upwards (a ratio downwards), and
        # resampling adds the same noise again, so the plain percentile interval is shifted.
        # The basic (reverse-percentile) interval reflects about the estimate and cancels the
        # shift; near zero it collapses. Reporting the union of the two keeps the bias-corrected
        # bound on the side a gate judges, and never understates how large a disparity may be.
        arr = np.asarray(samples, dtype=float)
        if arr.size == 0 or np.all(np.isnan(arr)):
            return None
        lo, hi = np.nanquantile(arr, q)
        basic = (2 * estimate - hi, 2 * estimate - lo)
        # Every summary statistic lies in [0, 1].
        return [round(float(np.clip(min(basic[0], lo), 0.0, 1.0)), 6), round(float(np.clip(max(basic[1], hi), 0.0, 1.0)), 6)]

    group_ci = {c: np.nanquantile(np.vstack(boot_groups[c]), q, axis=0) if n_boot else None for c in columns}
    groups_out: dict[str, Any] = {}
    skipped = []
    for i, g in enumerate(table.index):
        row = table.loc[g]
        entry: dict[str, Any] = {
            "n": int(row["n"]),
            "positives": int(row["positives"]),
            **{c: _r(row[c]) for c in (outcome, "tpr", "fpr", "positive_rate", HEADLINE[use_case]) if c in row.index},
            "ci": {
                c: (
                    None
                    if group_ci[c] is None or np.isnan(group_ci[c][:, i]).any()
                    else [round(float(v), 6) for v in group_ci[c][:, i]]
                )
                for c in columns
            },
            "gated": {"outcome_rate": g in rate_groups, "tpr": g in tpr_groups, "fpr": g in fpr_groups},
        }
        if g not in rate_groups:
            entry["not_gated_reason"] = f"{int(row['n'])} rows < min_group_size {min_size}: reported, not gated"
        elif g not in tpr_groups or g not in fpr_groups:
            which, count, kind = (
                ("TPR", int(row["positives"]), "positives") if g not in tpr_groups else ("FPR", int(negatives[g]), "negatives")
            )
            entry["not_gated_reason"] = (
                f"{count} actual {kind} < min_group_outcomes {min_outcomes}: {which} (and equalized odds) reported, not gated"
            )
        if "not_gated_reason" in entry:
            skipped.append({"group": g, "reason": entry["not_gated_reason"]})
        groups_out[g] = entry
    summary_out = {k: {**v, "value": _r(v["value"]), "ci": ci(boot_summary[k], v["value"])} for k, v in summary.items()}
    return {"groups": groups_out, "summary": summary_out, "not_gated": skipped, "bootstrap_units": int(resampler.n_units)}


def _r(value: Any) -> float | None:
    value = float(value)
    return None if np.isnan(value) else round(value, 6)


def gate_settings(params: dict[str, Any]) -> dict[str, Any]:
    settings = dict(config.param(params, "fairness", dict))
    for key, kind in (
        ("min_group_size", int),
        ("min_group_outcomes", int),
        ("bootstrap", int),
        ("confidence", float),
        ("rule", str),
        ("gates", list),
    ):
        config.param(params, f"fairness.{key}", kind)
    if settings["rule"] not in RULES:
        raise config.ParamsError(f"params.yaml: 'fairness.rule' must be one of {list(RULES)}, got {settings['rule']!r}")
    if not 0.5 <= float(settings["confidence"]) < 1.0:
        raise config.ParamsError(f"params.yaml: 'fairness.confidence' must be in [0.5, 1), got {settings['confidence']}")
    if int(settings["bootstrap"]) < 0:
        raise config.ParamsError(f"params.yaml: 'fairness.bootstrap' must be >= 0, got {settings['bootstrap']}")
    for i, gate in enumerate(settings["gates"]):
        where = f"params.yaml: 'fairness.gates[{i}]'"
        if not isinstance(gate, dict) or gate.get("metric") not in SUMMARIES:
            raise config.ParamsError(f"{where} needs 'metric', one of {sorted(SUMMARIES)} (got {gate!r})")
        bounds = [k for k in ("min", "max") if k in gate]
        if len(bounds) != 1 or not isinstance(gate[bounds[0]], (int, float)) or isinstance(gate[bounds[0]], bool):
            raise config.ParamsError(f"{where} needs exactly one numeric bound, 'min' or 'max' (got {gate!r})")
    return settings


def _label(metric: str, use_case: str) -> str:
    rate = "approval-rate" if OUTCOME[use_case] == "approval_rate" else "flag-rate"
    return {
        "demographic_parity_ratio": f"{rate} ratio",
        "demographic_parity_difference": f"{rate} difference",
        "equalized_odds_difference": "equalized-odds difference",
        "tpr_difference": "TPR difference",
        "fpr_difference": "FPR difference",
    }[metric]


def verdicts(report: dict[str, Any], settings: dict[str, Any]) -> list[dict[str, Any]]:
    """One verdict per attribute and gate, in the shape the CI gates and PR report read."""
    use_case, rule = report["use_case"], settings["rule"]
    out = []
    for attribute, result in report["attributes"].items():
        for gate in settings["gates"]:
            metric = gate["metric"]
            bound = "min" if "min" in gate else "max"
            threshold = float(gate[bound])
            label = _label(metric, use_case)
            stat = result["summary"].get(metric)
            name = f"fairness:{attribute}:{metric}"
            if stat is None:
                continue  # listed in the report's not_gated section instead
            value, ci = stat["value"], stat["ci"]
            breached = value < threshold if bound == "min" else value > threshold
            if rule == "significant" and ci is not None:
                # Fail only when the whole confidence interval lies beyond the threshold.
                significant = ci[1] < threshold if bound == "min" else ci[0] > threshold
            else:
                significant = breached
            passed = not (breached and significant)
            status = "pass" if not breached else ("fail" if not passed else "warn")
            groups = result["groups"]
            column = OUTCOME[use_case] if metric.startswith("demographic") else stat.get("component", metric.split("_")[0])
            lo, hi = stat["low_group"], stat["high_group"]
            what = (
                f"{attribute}: {label} {value:.3f} (group '{lo}' {column} {groups[lo][column]:.3f} vs "
                f"group '{hi}' {groups[hi][column]:.3f}"
            )
            what += f"; {settings['confidence']:.0%} CI {ci[0]:.3f}-{ci[1]:.3f})" if ci else ")"
            need = f"{'at least' if bound == 'min' else 'at most'} {threshold:g}"
            if status == "pass":
                detail = f"{what} meets the gate: {need}"
            elif status == "warn":
                detail = f"{what} breaches {need} but the interval includes it (rule 'significant'): passes with a warning"
            else:
                detail = f"{what} breaches the gate: must be {need} (params.yaml fairness.gates, rule '{rule}')"
            out.append(
                {
                    "gate": name,
                    "passed": passed,
                    "status": status,
                    "value": value,
                    "threshold": threshold,
                    "bound": bound,
                    "ci": ci,
                    "detail": detail,
                }
            )
    return out


def assess(
    use_case: str,
    y: np.ndarray,
    score: np.ndarray,
    threshold: float,
    protected: pd.DataFrame,
    settings: dict[str, Any],
    seed: int,
    subjects: np.ndarray | None = None,
) -> dict[str, Any]:
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
        attributes[attribute] = assess_attribute(
            y, flagged, groups, use_case, settings, seed + i, score=np.asarray(score), clusters=subjects
        )
    report: dict[str, Any] = {
        "use_case": use_case,
        "threshold": round(float(threshold), 6),
        "rows": int(len(y)),
        "outcome": OUTCOME[use_case],
        "definitions": {**DEFINITIONS[use_case], HEADLINE[use_case]: "headline ranking metric within the group", **SUMMARIES},
        "settings": {k: settings[k] for k in ("min_group_size", "min_group_outcomes", "bootstrap", "confidence", "rule")},
        "bootstrap_unit": "subject" if subjects is not None else "row",
        "attributes": attributes,
    }
    report["gates"] = verdicts(report, settings)
    report["not_gated"] = not_gated(report, settings)
    if not report["gates"]:
        # Fail closed: a fairness check that could not compare any two groups has checked nothing.
        report["gates"].append(
            {
                "gate": "fairness:all:comparable_groups",
                "passed": False,
                "status": "fail",
                "value": 0.0,
                "threshold": 2.0,
                "bound": "min",
                "ci": None,
                "detail": "no protected attribute has two groups large enough to compare "
                f"(min_group_size {settings['min_group_size']}, min_group_outcomes "
                f"{settings['min_group_outcomes']}): fairness is unassessed; use more held-out data",
            }
        )
    report["passed"] = all(g["passed"] for g in report["gates"])
    return report


def not_gated(report: dict[str, Any], settings: dict[str, Any]) -> list[dict[str, str]]:
    """Gates and groups that are reported but not judged, each with the reason in a sentence."""
    out = []
    for attribute, result in report["attributes"].items():
        for gate in settings["gates"]:
            metric = gate["metric"]
            if metric not in result["summary"]:
                kinds = {"tpr_difference": ["tpr"], "fpr_difference": ["fpr"], "equalized_odds_difference": ["tpr", "fpr"]}
                n = sum(1 for g in result["groups"].values() if all(g["gated"][k] for k in kinds.get(metric, ["outcome_rate"])))
                out.append(
                    {
                        "gate": f"fairness:{attribute}:{metric}",
                        "detail": f"{attribute}: {_label(metric, report['use_case'])} not gated: {n} group(s) large enough "
                        "to compare, 2 needed (min_group_size / min_group_outcomes in params.yaml)",
                    }
                )
        for item in result["not_gated"]:
            out.append(
                {"gate": f"fairness:{attribute}:group", "detail": f"{attribute} group '{item['group']}': {item['reason']}"}
            )
    return out


def load_scored(contract: Contract) -> tuple[np.ndarray, np.ndarray, pd.DataFrame, np.ndarray | None]:
    """Held-out labels, scores, protected attributes (joined on the id column only here) and subjects."""
    test = pd.read_parquet(config.TEST)
    protected = pd.read_parquet(config.PROTECTED)
    leaked = sorted(set(contract.protected) & set(test.columns))
    if leaked:
        raise RuntimeError(f"{config.TEST} holds protected attribute(s) {leaked}: they must be stored apart (prepare stage)")
    pipeline = model.load(config.MODEL)
    score = model.scores(pipeline, test, contract)
    id_col = contract.id_column
    joined = test[[id_col]].merge(protected, on=id_col, how="left", validate="one_to_one")
    attrs = [c for c in contract.protected if c in joined.columns]
    subjects = test[contract.subject].to_numpy(dtype=object) if contract.subject in test.columns else None
    return model.target_vector(test, contract), score, joined[attrs], subjects


_KEY = re.compile(r"[^A-Za-z0-9_.\-]")


def mlflow_key(*parts: str) -> str:
    """An MLflow metric name for a report value (``+`` in group names becomes ``plus``)."""
    return ".".join(_KEY.sub("_", str(p).replace("+", "plus")) for p in parts)


def mlflow_metrics(report: dict[str, Any]) -> dict[str, float]:
    """Every number of the report as an MLflow metric; the model card reads them back from the run."""
    out: dict[str, float] = {"fairness.passed": float(report["passed"])}
    for attribute, result in report["attributes"].items():
        for group, entry in result["groups"].items():
            for k in ("n", "positives", report["outcome"], "tpr", "fpr", "positive_rate", HEADLINE[report["use_case"]]):
                if entry.get(k) is not None:
                    out[mlflow_key("fairness", attribute, group, k)] = float(entry[k])
        for metric, stat in result["summary"].items():
            out[mlflow_key("fairness", attribute, metric)] = float(stat["value"])
            if stat["ci"]:
                out[mlflow_key("fairness", attribute, metric, "ci_low")] = float(stat["ci"][0])
                out[mlflow_key("fairness", attribute, metric, "ci_high")] = float(stat["ci"][1])
    for gate in report["gates"]:
        _, attribute, metric = gate["gate"].split(":")
        out[mlflow_key("fairness", attribute, metric, "threshold")] = float(gate["threshold"])
    return out


def main() -> int:
    log = config.setup_logging()
    try:
        params = config.load_params()
        contract = load_contract(config.param(params, "data.contract", str))
        settings = gate_settings(params)
    except (config.ParamsError, ValueError) as exc:
        log.error("%s", exc)
        return 1
    meta = json.loads(config.MODEL_META.read_text(encoding="utf-8"))
    y, score, protected, subjects = load_scored(contract)
    if protected.shape[1] == 0:
        log.error(
            "%s declares no protected attributes: fairness cannot be measured; declare them (role: protected)", contract.path
        )
        return 1
    report = assess(
        params["use_case"], y, score, float(meta["threshold"]), protected, settings, config.param(params, "seed", int), subjects
    )
    config.write_json(FAIRNESS, report)

    import mlflow

    mlflow.set_tracking_uri(meta["tracking_uri"])
    with mlflow.start_run(run_id=meta["run_id"]):
        mlflow.log_metrics(mlflow_metrics(report))
        mlflow.log_artifact(str(FAIRNESS))
    for gate in report["gates"]:
        {"pass": log.info, "warn": log.warning}.get(gate["status"], log.error)("%s %s", gate["status"].upper(), gate["detail"])
    if not report["passed"]:
        failed = [g["gate"] for g in report["gates"] if not g["passed"]]
        log.error("fairness gate(s) failed: %s; the pipeline stops here (see %s)", ", ".join(failed), FAIRNESS)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
