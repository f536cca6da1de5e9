"""Bake every sensible combination of options and check exactly what comes out."""

from __future__ import annotations

import ast
import itertools
import json
import subprocess
import tomllib
from pathlib import Path

import pytest
import yaml

from helpers import DEFAULTS, TEMPLATE, bake, generated_files, unrendered

EXPECTED = TEMPLATE / "tests" / "expected_files.txt"

USE_CASES = ["credit_scoring", "fraud_detection"]
REMOTES = ["local", "s3", "gcs", "azure"]
DEPLOY = ["kubernetes", "bentocloud", "none"]
IMAGES = ["no", "yes"]
PYTHONS = ["3.11", "3.12", "3.13"]

# Every combination of the options that change files, on the default Python; the Python
# versions on both use cases. (python_version only changes values, checked below.)
COMBINATIONS = [
    {"use_case": u, "dvc_remote": r, "deploy_target": d, "publish_report_images": i}
    for u, r, d, i in itertools.product(USE_CASES, REMOTES, DEPLOY, IMAGES)
] + [{"use_case": u, "python_version": p} for u, p in itertools.product(USE_CASES, PYTHONS[1:])] + [
    {"use_case": u, "compute": "spark"} for u in USE_CASES
]


def expected_files(ctx: dict) -> set[str]:
    """The exact file list for a bake: the manifest, adjusted for the options that prune."""
    files = set()
    for line in EXPECTED.read_text().splitlines():
        line = line.split("#", 1)[0].strip()
        if not line:
            continue
        condition, _, path = line.rpartition(" ") if " " in line else ("", "", line)
        if condition:
            key, _, value = condition.partition("=")
            negate = key.endswith("!")
            key = key.rstrip("!")
            if (ctx[key] == value) == negate:
                continue
        files.add(path.replace("<package>", ctx["package"]))
    return files


def _id(ctx: dict) -> str:
    return "-".join(str(v) for v in ctx.values())


@pytest.mark.parametrize("options", COMBINATIONS, ids=_id)
def test_bake_produces_exactly_the_expected_files(tmp_path, options):
    ctx = {**DEFAULTS, **options, "package": "credit_risk_model"}
    project = bake(tmp_path, **options)
    assert project.name == "credit-risk-model"
    produced = generated_files(project)
    want = expected_files(ctx)
    assert produced == want, f"unexpected: {sorted(produced - want)}; missing: {sorted(want - produced)}"
    assert unrendered(project) == []


@pytest.fixture(scope="module")
def default_bake(tmp_path_factory):
    return bake(tmp_path_factory.mktemp("default"))


def test_every_file_is_well_formed(default_bake):
    for rel in generated_files(default_bake):
        path = default_bake / rel
        if rel.endswith(".py"):
            ast.parse(path.read_text(), filename=rel)
        elif rel.endswith((".yaml", ".yml")):
            yaml.safe_load(path.read_text())
        elif rel.endswith(".toml") or rel == "uv.lock":
            tomllib.loads(path.read_text())
        elif rel.endswith(".json"):
            json.loads(path.read_text())


def test_bake_is_a_git_repository_with_one_clean_commit(default_bake):
    log = subprocess.run(["git", "log", "--format=%an <%ae>|%s"], cwd=default_bake, capture_output=True, text=True, check=True)
    assert log.stdout.strip().splitlines() == ["Model Development Team <ml-team@example.com>|Initial commit from cookiecutter-fintech-mlops"]
    status = subprocess.run(["git", "status", "--porcelain"], cwd=default_bake, capture_output=True, text=True, check=True)
    assert status.stdout == ""
    branch = subprocess.run(["git", "branch", "--show-current"], cwd=default_bake, capture_output=True, text=True, check=True)
    assert branch.stdout.strip() == "main"


def test_answers_reach_the_files(tmp_path):
    project = bake(tmp_path, project_name="Loan Book", package="loanbook", use_case="fraud_detection",
                   python_version="3.12", dvc_remote="s3", github_owner="acme-bank", author_email="risk@acme.example")
    pyproject = tomllib.loads((project / "pyproject.toml").read_text())
    assert pyproject["project"]["name"] == "loan-book"
    assert pyproject["tool"]["uv"]["build-backend"]["module-name"] == "loanbook"
    assert pyproject["tool"]["ruff"]["target-version"] == "py312"
    assert pyproject["project"]["authors"] == [{"name": "Model Development Team", "email": "risk@acme.example"}]
    assert (project / ".python-version").read_text().strip() == "3.12"
    assert "url = s3://acme-bank-loan-book-dvc" in (project / ".dvc" / "config").read_text()
    assert "EXTRAS := --extra s3" in (project / "Makefile").read_text()
    params = yaml.safe_load((project / "params.yaml").read_text())
    assert params["decision"]["threshold"] is None
    facts = yaml.safe_load((project / "src" / "loanbook" / "core" / "use_case.yaml").read_text())
    assert facts["name"] == "fraud_detection" and facts["headline_metric"] == "pr_auc"
    contract = yaml.safe_load((project / "contract.yaml").read_text())
    assert contract["name"] == "card_transactions"
    assert "python -m loanbook.data.prepare" in (project / "dvc.yaml").read_text()
    lock = tomllib.loads((project / "uv.lock").read_text())
    assert any(p["name"] == "loan-book" and p["source"] == {"editable": "."} for p in lock["package"])


def test_dvc_is_initialised_with_analytics_off(default_bake):
    config = (default_bake / ".dvc" / "config").read_text()
    assert "analytics = false" in config
    assert "remote = local" in config


def test_lock_is_consistent_with_pyproject(default_bake):
    """`uv lock --check` re-resolves and fails if uv.lock does not match pyproject.toml."""
    from helpers import run

    run(["uv", "lock", "--check"], cwd=default_bake)


# What only fraud's per-decision feature contributions (core/attributions.py) pull in.
SHAP_ONLY = {"shap", "numba", "llvmlite"}


@pytest.mark.parametrize("use_case", USE_CASES)
def test_each_use_case_locks_only_its_own_dependencies(tmp_path, use_case):
    """Each bake gets its use case's own lock: shap only where decisions are explained by feature contributions."""
    from helpers import run

    project = bake(tmp_path, use_case=use_case)
    locked = {p["name"] for p in tomllib.loads((project / "uv.lock").read_text())["package"]}
    if use_case == "fraud_detection":
        assert SHAP_ONLY <= locked
    else:
        assert not SHAP_ONLY & locked, sorted(SHAP_ONLY & locked)
        assert not (project / "src" / "credit_risk_model" / "core" / "attributions.py").exists()
    requires = tomllib.loads((project / "pyproject.toml").read_text())["project"]["dependencies"]
    assert any(r.startswith("shap") for r in requires) == (use_case == "fraud_detection")
    # The serving patches were proved on one bentoml: pyproject pins it and the lock holds it.
    (pin,) = [r for r in requires if r.startswith("bentoml")]
    bentoml = next(p for p in tomllib.loads((project / "uv.lock").read_text())["package"] if p["name"] == "bentoml")
    assert pin == f"bentoml=={bentoml['version']}"
    run(["uv", "lock", "--check"], cwd=project)  # the shipped lock is this pyproject's, re-resolved


@pytest.mark.e2e
@pytest.mark.parametrize("use_case", USE_CASES)
def test_the_environment_has_shap_only_where_the_use_case_needs_it(pipeline_repo, use_case):
    """After `make setup`, the repository's .venv holds shap exactly when its use case explains by feature contributions."""
    from helpers import run

    project = pipeline_repo(use_case)
    probe = "import importlib.util as u; print(sorted(m for m in ('shap', 'numba') if u.find_spec(m)))"
    found = run([".venv/bin/python", "-c", probe], cwd=project).stdout.strip()
    assert found == ("['numba', 'shap']" if use_case == "fraud_detection" else "[]")
