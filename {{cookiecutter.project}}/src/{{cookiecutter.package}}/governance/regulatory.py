"""Stage ``regulatory``: the documents a regulator reads, generated from the run.

Writes three Markdown documents to ``reports/regulatory/``:

- ``technical_documentation.md``: the sections of the EU AI Act's Annex IV;
- ``instructions_for_use.md``: what Art. 13 asks a deployer be told (accuracy overall and by
  group, the input specification, human oversight, how to collect and read the logs);
- ``post_market_monitoring_plan.md``: Art. 72 (what is monitored, thresholds, cadence, who is told).

Every claim is backed by a file of the repository or left out. A value read from a file is
written as ``VALUE [`path`: `key`]`` (``key``: ``/``-separated, ``name=X`` picks the list item
whose ``name`` is X), so a reader, and ``tests/test_regulatory.py``, can check it against its
source; a file named without a value is checked to exist. A cited file that is missing stops the
stage naming it. What the run cannot know (the provider's identity, harmonised standards applied,
the declaration of conformity) is marked "PROVIDER TO COMPLETE", never invented. The regulations
themselves, with their status and "as of" date, come from ``regulations.yaml`` beside this module.

Parts other stages may add are included when their files exist: a ``benchmark`` section in
``reports/metrics.json``, ``reports/validation_pack.json``, ``serving.refer_band`` in params.yaml,
``src/{{ cookiecutter.package }}/monitoring/outcomes.py``.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from ..core import config, use_case
from ..core.contract import load_contract
from ..core.errors import UserError
from ..core.params import load_params
from ..core.stage import LOGGER, entry_point, write_text
from .markdown import markdown_env

log = logging.getLogger(LOGGER)
OUT_DIR = config.REGULATORY_DIR
DOCUMENTS = ("technical_documentation", "instructions_for_use", "post_market_monitoring_plan")
PACKAGE_DIR = "src/{{ cookiecutter.package }}"
REGULATIONS = f"{PACKAGE_DIR}/governance/regulations.yaml"
PROVIDER = "**PROVIDER TO COMPLETE:**"  # what the run cannot know; docs/regulatory.md lists these
DIGITS = 4  # decimals of a cited float; the check allows half a unit of the last one
# Optional inputs other parts of the pipeline add; their sections appear when these exist.
VALIDATION_PACK = "reports/validation_pack.json"
OUTCOMES_MODULE = f"{PACKAGE_DIR}/monitoring/outcomes.py"
MAX_FLAT = 40  # scalar values listed from an optional section whose shape this module does not fix


class RegDocsError(UserError, RuntimeError):
    """A file or a value the regulatory documents cite is missing."""


def fmt(value: Any) -> str:
    """The one way a cited value is printed: numbers bare (floats to ``DIGITS`` places), text in backticks."""
    if isinstance(value, bool) or value is None:
        return json.dumps(value)
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        return f"{value:.{DIGITS}f}"
    return f"`{value}`"


def resolve(data: Any, key: str) -> Any:
    """The value at ``key`` in parsed JSON/YAML; raises KeyError naming the segment that is missing."""
    node = data
    for seg in key.split("/"):
        if isinstance(node, dict):
            if seg in node:
                node = node[seg]
            elif seg == "on" and True in node:  # YAML 1.1 (PyYAML) reads a workflow's `on:` as true
                node = node[True]
            else:
                raise KeyError(seg)
        elif isinstance(node, list) and seg.isdigit() and int(seg) < len(node):
            node = node[int(seg)]
        elif isinstance(node, list) and "=" in seg:
            field, want = seg.split("=", 1)
            node = next((x for x in node if isinstance(x, dict) and str(x.get(field)) == want), KeyError)
            if node is KeyError:
                raise KeyError(seg)
        else:
            raise KeyError(seg)
    return node


@dataclass(frozen=True)
class Cited:
    """A value and where it was read from."""

    value: Any
    path: str
    key: str

    def __str__(self) -> str:
        return f"{fmt(self.value)} [`{self.path}`: `{self.key}`]"


class Sources:
    """The repository's files as the documents cite them: every read and every named file is checked."""

    def __init__(self, root: Path = Path()) -> None:
        self.root = root
        self._parsed: dict[str, Any] = {}
        self.cited: set[str] = set()

    def exists(self, path: str) -> bool:
        """Whether ``path`` exists (for optional parts; it is not cited by this)."""
        return (self.root / path).exists()

    def file(self, path: str) -> str:
        """``path``, after checking it exists: a document never names a file the repository lacks."""
        if not self.exists(path):
            raise RegDocsError(f"{path}: cited by the regulatory documents but missing; run `dvc repro` or restore it")
        self.cited.add(path)
        return path

    def data(self, path: str) -> Any:
        """The parsed JSON or YAML file at ``path``."""
        if path not in self._parsed:
            text = (self.root / self.file(path)).read_text(encoding="utf-8")
            self._parsed[path] = json.loads(text) if path.endswith(".json") else yaml.safe_load(text)
        return self._parsed[path]

    def get(self, path: str, key: str) -> Cited:
        """The value at ``key`` in ``path``, cited; a missing key stops the stage naming both."""
        try:
            return Cited(resolve(self.data(path), key), path, key)
        except KeyError as exc:
            raise RegDocsError(f"{path}: no value at {key!r} (missing {exc.args[0]!r}); rerun the stage that writes it") from None

    def maybe(self, path: str, key: str) -> Cited | None:
        """Like :meth:`get`, or None when the file or the key is absent (an optional part)."""
        if not self.exists(path):
            return None
        try:
            return self.get(path, key)
        except RegDocsError:
            return None

    def flat(self, path: str, key: str = "") -> list[Cited]:
        """Every scalar under ``key`` in ``path``, cited (at most ``MAX_FLAT``): for sections whose shape is another stage's."""
        node = self.data(path) if not key else resolve(self.data(path), key)
        out: list[Cited] = []

        def walk(n: Any, where: str) -> None:
            if len(out) >= MAX_FLAT:
                return
            if isinstance(n, dict):
                for k, v in n.items():
                    if isinstance(k, str) and "/" not in k:
                        walk(v, f"{where}/{k}" if where else k)
            elif isinstance(n, list):
                for i, v in enumerate(n):
                    walk(v, f"{where}/{i}")
            elif isinstance(n, (int, float, str, bool)) and not (isinstance(n, str) and ("`" in n or len(n) > 80)):
                out.append(Cited(n, path, where))

        walk(node, key)
        return out


def count(c: Cited) -> Cited:
    """A count the card carries as MLflow's float (20000.0), printed as the whole number it is."""
    return Cited(int(c.value), c.path, c.key) if float(c.value).is_integer() else c


def regulations(src: Sources) -> dict[str, Any]:
    """``regulations.yaml`` as {as_of, by_id}; an entry without its status fields stops the stage."""
    doc = src.data(REGULATIONS)
    by_id = {}
    for entry in doc["regulations"]:
        missing = [f for f in ("id", "name", "citation", "status", "as_of", "verified", "sources") if f not in entry]
        if missing:
            raise RegDocsError(f"{REGULATIONS}: entry {entry.get('id', '?')!r} lacks {', '.join(missing)}")
        by_id[entry["id"]] = entry
    return {"as_of": doc["as_of"], "all": doc["regulations"], "by_id": by_id}


def context(src: Sources) -> dict[str, Any]:
    """Everything the three templates render, read from the repository's files."""
    have = use_case.capabilities(src.root)
    facts = use_case.load()
    uc = f"{PACKAGE_DIR}/core/use_case.yaml"
    params, metrics, fairness, card = "params.yaml", str(config.METRICS), str(config.FAIRNESS), str(config.MODEL_CARD_JSON)
    contract = src.data("contract.yaml")
    metrics_data = src.data(metrics)
    fairness_data = src.data(fairness)
    outcome = facts.fairness_outcome
    groups = []
    for attribute, result in fairness_data["attributes"].items():
        for group, stats in result["groups"].items():
            base = f"attributes/{attribute}/groups/{group}"
            row = {"attribute": attribute, "group": group, "cells": {}}
            for k in ("n", outcome, "tpr", "fpr", facts.headline_metric):
                row["cells"][k] = src.get(fairness, f"{base}/{k}") if stats.get(k) is not None else None
            groups.append(row)
    gates = [
        {
            "id": g["id"],
            "status": src.get(fairness, f"gates/{i}/status"),
            "value": src.get(fairness, f"gates/{i}/value") if g.get("value") is not None else None,
            "threshold": src.get(fairness, f"gates/{i}/threshold") if g.get("threshold") is not None else None,
        }
        for i, g in enumerate(fairness_data["gates"])
    ]
    features = []
    for col in contract["columns"]:
        if col["role"] != "feature":
            continue
        sel = f"columns/name={col['name']}"
        features.append(
            {
                "name": col["name"],
                "dtype": src.get("contract.yaml", f"{sel}/dtype"),
                "bounds": [src.get("contract.yaml", f"{sel}/{b}") for b in ("min", "max") if col.get(b) is not None],
                "categories": len(col.get("categories") or []),
                "nullable": bool(col.get("nullable", False)),
                "monotone": col.get("monotone", "none"),
                "description": col.get("description", ""),
            }
        )
    refused = sorted({c["role"] for c in contract["columns"] if c["role"] != "feature"})
    workflow = ".github/workflows/monitor.yml"
    optional = {
        "benchmark": src.flat(metrics, "benchmark") if isinstance(metrics_data.get("benchmark"), dict) else [],
        "validation_pack": src.flat(VALIDATION_PACK) if src.exists(VALIDATION_PACK) else [],
        "refer_band": [c for c in [src.maybe(params, "serving/refer_band")] if c is not None],
        "outcomes": src.file(OUTCOMES_MODULE) if src.exists(OUTCOMES_MODULE) else None,
    }
    band = optional["refer_band"][0].value if optional["refer_band"] else None
    if band is None or band is False:  # no refer band configured: no claim that one exists
        optional["refer_band"] = []
    elif isinstance(band, (dict, list)):
        optional["refer_band"] = src.flat(params, "serving/refer_band")
    return {
        "have": have,
        "pkg": PACKAGE_DIR,
        "provider": PROVIDER,
        "reg": regulations(src),
        "regulations_file": src.file(REGULATIONS),
        "use_case_file": src.file(uc),
        "title": facts.title,
        "classification": src.get(uc, "card/regulatory/eu_ai_act"),
        "classification_text": facts.card["regulatory"]["classification"],
        "purpose": facts.card["purpose"],
        "users": facts.card["users"],
        "decision_rule": facts.card["decision"],
        "out_of_scope": use_case.applicable(facts.card["out_of_scope"], have),
        "limitations": use_case.applicable(facts.card["limitations"], have),
        "human_oversight": use_case.applicable(facts.card["human_oversight"], have),
        "headline": src.get(uc, "headline_metric"),
        "definitions": fairness_data["definitions"],
        "run_id": src.get(str(config.MODEL_META), "run_id"),
        "model_version": src.get(card, "version/model_version"),
        "trained_at": src.get(card, "model/trained_at"),
        "algorithm": src.get(card, "model/algorithm"),
        "git_sha": src.get(str(config.LINEAGE), "git/sha"),
        "earlier_runs": len(src.data(card)["version"]["change_log"]),
        "rows": {k: count(src.get(card, f"data/rows/{k}/value")) for k in src.data(card)["data"]["rows"]},
        "date_range": {
            k: (src.get(card, f"data/date_range/{k}/from"), src.get(card, f"data/date_range/{k}/to"))
            for k in src.data(card)["data"]["date_range"]
        },
        "files": [
            {"path": f["path"], "md5": src.get(str(config.LINEAGE), f"files/{i}/md5")}
            for i, f in enumerate(src.data(str(config.LINEAGE))["files"])
        ],
        "model_params": src.flat(params, "model"),
        "metrics": [
            src.get(metrics, k)
            for k, v in metrics_data.items()
            if isinstance(v, (int, float)) and not isinstance(v, bool) and k not in ("rows", "threshold")  # shown apart
        ],
        "threshold": src.get(metrics, "threshold"),
        "test_rows": src.get(metrics, "rows"),
        "gate_tolerance": src.get(params, "gates/metric/tolerance"),
        "require_baseline": src.get(params, "gates/require_baseline"),
        "validation": {
            "success": src.get(str(config.VALIDATION), "success"),
            "expectations": src.get(str(config.VALIDATION), "expectations"),
            "failed": src.get(str(config.VALIDATION), "failed"),
        },
        "fairness": {
            "passed": src.get(fairness, "passed"),
            "rule": src.get(fairness, "settings/rule"),
            "confidence": src.get(fairness, "settings/confidence"),
            "min_group_size": src.get(fairness, "settings/min_group_size"),
            "outcome": outcome,
            "groups": groups,
            "gates": gates,
        },
        "reason_codes": src.get(card, "explanations/reason_codes/available"),
        "contract": {
            "name": src.get("contract.yaml", "name"),
            "version": src.get("contract.yaml", "version"),
            "features": features,
            "refused_roles": refused,
        },
        "monitor": {k: src.get(params, f"monitor/{k}") for k in ("bins", "psi_warn", "psi_alert", "performance_tolerance")},
        "cron": src.get(workflow, "on/schedule/0/cron"),
        "issue_label": src.get(workflow, "env/ISSUE_LABEL"),
        "workflow": workflow,
        "alerts": _alerts(src) if have["serving"] else [],
        "optional": optional,
        "max_flat": MAX_FLAT,
        "file": src.file,
    }


def _alerts(src: Sources) -> list[dict[str, Cited]]:
    """The Prometheus alert rules on the service (name, severity, for), cited from deploy/prometheus/alerts.yml."""
    path = "deploy/prometheus/alerts.yml"
    if not src.exists(path):
        return []
    out = []
    for gi, group in enumerate(src.data(path)["groups"]):
        for ri, rule in enumerate(group["rules"]):
            if "alert" in rule:
                base = f"groups/{gi}/rules/{ri}"
                out.append(
                    {
                        "alert": src.get(path, f"{base}/alert"),
                        "severity": src.maybe(path, f"{base}/labels/severity"),
                        "for": src.maybe(path, f"{base}/for"),
                    }
                )
    return out


def render(name: str, ctx: dict[str, Any]) -> str:
    """One document's Markdown, from ``templates/regulatory/<name>.md.j2``."""
    return markdown_env().get_template(f"regulatory/{name}.md.j2").render(**ctx)


def build(root: Path = Path()) -> dict[str, str]:
    """{document name: Markdown} for the repository at ``root``; raises :class:`RegDocsError` on a missing source."""
    src = Sources(root)
    ctx = context(src)
    return {name: render(name, ctx) for name in DOCUMENTS}


def main() -> int:
    """Write the three regulatory documents to ``reports/regulatory/``."""
    # As every stage does: a misspelt parameter or a broken contract is named first, in one line,
    # before a document cites anything.
    load_contract(load_params().data.contract)
    docs = build()
    for name, text in docs.items():
        write_text(OUT_DIR / f"{name}.md", text)
    log.info("regulatory documents: %s", ", ".join(str(OUT_DIR / f"{n}.md") for n in docs))
    return 0


if __name__ == "__main__":
    entry_point(main)
