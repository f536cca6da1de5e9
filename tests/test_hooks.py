"""The pre-generation hook refuses bad answers, names the option and the rule, and writes nothing."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from helpers import TEMPLATE, env

COOKIECUTTER = [sys.executable, "-m", "cookiecutter"]


def bake_cli(tmp_path: Path, **answers: str) -> subprocess.CompletedProcess:
    args = [f"{k}={v}" for k, v in answers.items()]
    return subprocess.run([*COOKIECUTTER, "--no-input", "-o", str(tmp_path), str(TEMPLATE), *args],
                          capture_output=True, text=True, env=env(), timeout=120)


@pytest.mark.parametrize(
    ("answers", "option", "rule"),
    [
        ({"project": "Credit_Risk"}, "project", "normalised distribution name"),
        ({"project": "1credit"}, "project", "starting with a letter"),
        ({"project": "credit--risk"}, "project", "single hyphens"),
        ({"package": "credit-risk"}, "package", "valid Python identifier"),
        ({"package": "class"}, "package", "keyword"),
        ({"package": "json"}, "package", "standard library"),
        ({"package": "mlflow"}, "package", "shadows the dependency"),
        ({"author_email": "not-an-email"}, "author_email", "email address"),
        ({"author_email": "a@b"}, "author_email", "email address"),
        ({"github_owner": "-bad-owner"}, "github_owner", "GitHub user or organisation"),
        ({"project_name": 'Bad "quoted" name'}, "project_name", "without quotes"),
    ],
)
def test_bad_answer_stops_generation_and_leaves_nothing(tmp_path, answers, option, rule):
    result = bake_cli(tmp_path, **answers)
    assert result.returncode != 0, result.stdout
    assert f"option '{option}'" in result.stderr, result.stderr
    assert rule in result.stderr, result.stderr
    assert "Nothing was written" in result.stderr
    assert list(tmp_path.iterdir()) == [], f"output left behind: {list(tmp_path.iterdir())}"


@pytest.mark.parametrize(
    ("option", "value", "allowed"),
    [
        ("python_version", "3.10", ["3.11", "3.12", "3.13"]),
        ("use_case", "mortgages", ["credit_scoring", "fraud_detection"]),
        ("dvc_remote", "ftp", ["local", "s3", "gcs", "azure"]),
        ("deploy_target", "lambda", ["kubernetes", "bentocloud", "none"]),
        ("publish_report_images", "maybe", ["no", "yes"]),
    ],
)
def test_choice_outside_the_list_is_refused(tmp_path, option, value, allowed):
    """The hook's own check, run as cookiecutter runs it: a script rendered with the answers.

    cookiecutter refuses a value outside a choice list before any hook runs; replays and
    programmatic callers can get past that, and then this check is what stops them.
    """
    hook = tmp_path / "pre_gen_project.py"
    hook.write_text(_rendered_hook({**_good_context(), option: value}))
    result = subprocess.run([sys.executable, str(hook)], cwd=tmp_path, capture_output=True, text=True, timeout=60)
    assert result.returncode == 1, result.stderr
    [line] = [line for line in result.stderr.splitlines() if f"option '{option}'" in line]
    assert value in line and f"must be one of {', '.join(allowed)}" in line, line
    assert "Nothing was written" in result.stderr
    assert sorted(p.name for p in tmp_path.iterdir()) == ["pre_gen_project.py"]


def _good_context() -> dict:
    """The defaults of cookiecutter.json, as the hook receives them."""
    context = json.loads((TEMPLATE / "cookiecutter.json").read_text())
    good = {k: (v[0] if isinstance(v, list) else v) for k, v in context.items() if not k.startswith("_")}
    good.update(project="credit-risk-model", package="credit_risk_model")
    return good


def _rendered_hook(context: dict) -> str:
    """hooks/pre_gen_project.py rendered with ``context``, as cookiecutter renders it."""
    from jinja2 import Environment

    from cookiecutter.extensions import JsonifyExtension

    source = (TEMPLATE / "hooks" / "pre_gen_project.py").read_text()
    return Environment(extensions=[JsonifyExtension]).from_string(source).render(cookiecutter=context)


def _hook_problems(context: dict) -> list[str]:
    """Run the real pre-gen hook's checks (rendered by cookiecutter) on a context."""
    rendered = _rendered_hook(context)
    namespace: dict = {"__name__": "hook"}
    exec(compile(rendered, "pre_gen_project.py", "exec"), namespace)
    assert namespace["CONTEXT"] == json.loads(json.dumps(context))
    return namespace["problems"](context)


def test_hook_checks_choices_itself():
    good = _good_context()
    assert _hook_problems(good) == []
    found = _hook_problems({**good, "python_version": "3.10", "dvc_remote": "ftp", "compute": "dask"})
    assert any("option 'python_version'" in p and "3.11, 3.12, 3.13" in p for p in found)
    assert any("option 'dvc_remote'" in p for p in found)
    assert any("option 'compute'" in p and "pandas, spark" in p for p in found)


def test_all_problems_are_reported_at_once(tmp_path):
    result = bake_cli(tmp_path, package="os", author_email="x", github_owner="a_b")
    assert result.returncode != 0
    for option in ("package", "author_email", "github_owner"):
        assert f"option '{option}'" in result.stderr


def test_good_answers_pass(tmp_path):
    result = bake_cli(tmp_path, project_name="Loan Book Scoring", package="loan_book", author_email="risk.team@bank.example")
    assert result.returncode == 0, result.stderr
    assert (tmp_path / "loan-book-scoring" / "src" / "loan_book" / "training" / "train.py").is_file()
