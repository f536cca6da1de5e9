"""The regulator's documents (reports/regulatory/): every value they cite equals its source file, every
file they name exists, a missing cited file stops the generator, and the parts other stages add appear
when their files exist. The documents are those the session's pipeline run wrote (stage `regulatory`).

The check below re-reads each ``VALUE [`path`: `key`]`` from its file with its own key walker: it does
not trust the generator's.
"""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path

import pytest
import yaml

from {{ cookiecutter.package }}.governance import regulatory

from .pipeline_run import pipeline_run

CITATION = re.compile(r"(`[^`\n]*`|-?\d+(?:\.\d+)?(?:[eE][-+]?\d+)?|true|false|null) \[`([^`\n]+)`: `([^`\n]+)`\]")
NAMED_PATH = re.compile(r"`((?:[\w.-]+/)+[\w.-]+|[\w.-]+\.(?:json|ya?ml|md|py|toml|lock|jsonl|parquet|skops)|Makefile)`")


def walk(data, key: str):
    node = data
    for seg in key.split("/"):
        if isinstance(node, dict):
            node = node[seg] if seg in node else node[True] if seg == "on" else node[seg]  # YAML 1.1 reads `on:` as true
        elif "=" in seg:
            field, want = seg.split("=", 1)
            (node,) = [x for x in node if str(x.get(field)) == want]
        else:
            node = node[int(seg)]
    return node


def problems(text: str, root: Path) -> tuple[int, list[str]]:
    """(citations checked, what is wrong): a cited value unlike its file's, a named path that does not exist."""
    found, wrong = 0, []
    for m in CITATION.finditer(text):
        shown, path, key = m.groups()
        found += 1
        file = root / path
        if not file.exists():
            wrong.append(f"{path} (cited for {key}) does not exist")
            continue
        raw = file.read_text(encoding="utf-8")
        data = json.loads(raw) if path.endswith(".json") else yaml.safe_load(raw)
        try:
            source = walk(data, key)
        except (KeyError, IndexError, ValueError, TypeError):
            wrong.append(f"{path} has no {key}")
            continue
        if isinstance(source, bool) or source is None or shown in ("true", "false", "null"):
            same = shown == json.dumps(source)
        elif isinstance(source, (int, float)):
            same = not shown.startswith("`") and abs(float(shown) - source) <= 0.5 * 10**-regulatory.DIGITS + 1e-12
        else:
            same = shown == f"`{source}`"
        if not same:
            wrong.append(f"{path}: {key} is {source!r} but the document says {shown}")
    for m in NAMED_PATH.finditer(CITATION.sub("", text)):
        if not (root / m.group(1)).exists():
            wrong.append(f"names {m.group(1)}, which does not exist")
    return found, wrong


@pytest.fixture(scope="module")
def run_copy(tmp_path_factory) -> Path:
    """A copy of the session's pipeline run (the tests below change files in theirs)."""
    root = tmp_path_factory.mktemp("regulatory") / "repo"
    shutil.copytree(pipeline_run().dir, root, ignore=shutil.ignore_patterns("mlflow.db", "mlartifacts", ".dvc"))
    return root


def written(root: Path) -> dict[str, str]:
    """The documents the `regulatory` stage wrote in ``root``."""
    return {name: (root / regulatory.OUT_DIR / f"{name}.md").read_text(encoding="utf-8") for name in regulatory.DOCUMENTS}


def test_every_cited_value_equals_its_file_and_every_named_path_exists(run_copy):
    docs = written(run_copy)
    as_of = yaml.safe_load((run_copy / regulatory.REGULATIONS).read_text(encoding="utf-8"))["as_of"]
    for name, text in docs.items():
        found, wrong = problems(text, run_copy)
        assert not wrong, f"{name}: " + "; ".join(wrong)
        assert found >= 10, f"{name} cites only {found} values"
        assert f"as of {as_of}" in text  # the regulations' status date, from regulations.yaml
    tech = docs["technical_documentation"]
    for n in range(1, 10):  # Annex IV's nine sections, in order
        assert f"\n## {n}. " in tech
    ifu = docs["instructions_for_use"]
    fairness = json.loads((run_copy / "reports/fairness.json").read_text(encoding="utf-8"))
    group_cells = [
        f"[`reports/fairness.json`: `attributes/{a}/groups/{g}/n`]"
        for a, r in fairness["attributes"].items()
        for g in r["groups"]
    ]
    assert group_cells and all(c in ifu for c in group_cells)  # accuracy by group: every group of every attribute
    assert "make audit-verify" in ifu and "`params.yaml`: `monitor/psi_alert`" in docs["post_market_monitoring_plan"]


def test_the_check_fails_on_a_changed_number_or_a_path_that_does_not_exist(run_copy):
    text = written(run_copy)["instructions_for_use"]
    m = re.search(r"(\d+\.\d{4}) \[`reports/metrics.json`: `(\w+)`\]", text)
    assert m, "no metric cited from reports/metrics.json"
    changed = text.replace(m.group(0), m.group(0).replace(m.group(1), f"{float(m.group(1)) + 0.01:.4f}"), 1)
    assert any(m.group(2) in w for w in problems(changed, run_copy)[1])
    assert problems(text.replace("`contract.yaml`", "`contracts.yaml`", 1), run_copy)[1]


def test_a_missing_cited_file_stops_the_generator_naming_it(run_copy, tmp_path):
    broken = tmp_path / "repo"
    shutil.copytree(run_copy, broken)
    (broken / ".github/workflows/monitor.yml").unlink()
    with pytest.raises(regulatory.RegDocsError, match=r"\.github/workflows/monitor\.yml"):
        regulatory.build(broken)


def test_other_stages_parts_appear_when_their_files_exist(run_copy, tmp_path):
    """Benchmark (metrics.json `benchmark`), validation pack, refer band: absent now, cited when present."""
    before = "\n".join(written(run_copy).values())
    root = tmp_path / "repo"
    shutil.copytree(run_copy, root)
    metrics = json.loads((root / "reports/metrics.json").read_text(encoding="utf-8"))
    metrics["benchmark"] = {"model": "logistic", "roc_auc": 0.7412, "difference": {"value": 0.0123, "ci": [0.001, 0.02]}}
    (root / "reports/metrics.json").write_text(json.dumps(metrics), encoding="utf-8")
    (root / "reports/validation_pack.json").write_text(json.dumps({"hosmer_lemeshow": {"p_value": 0.4321}}), encoding="utf-8")
    params = yaml.safe_load((root / "params.yaml").read_text(encoding="utf-8"))
    params["serving"]["refer_band"] = {"low": 0.1234, "high": 0.3456}
    (root / "params.yaml").write_text(yaml.safe_dump(params), encoding="utf-8")
    docs = regulatory.build(root)
    after = "\n".join(docs.values())
    for cited in (
        "0.0123 [`reports/metrics.json`: `benchmark/difference/value`]",
        "0.4321 [`reports/validation_pack.json`: `hosmer_lemeshow/p_value`]",
        "0.1234 [`params.yaml`: `serving/refer_band/low`]",
    ):
        assert cited in after and cited not in before
    for name, text in docs.items():
        assert not problems(text, root)[1], name
