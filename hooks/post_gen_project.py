"""Keep what the chosen options use, remove the rest, and make the result a git repository."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

CONTEXT = json.loads({{ cookiecutter | jsonify | tojson }})
ROOT = Path.cwd()
PACKAGE_DIR = ROOT / "src" / CONTEXT["package"]


# Files only one use case needs, by use case; a bake keeps its own and removes the others'.
# ("<package>" is the import name.)
ONLY_FOR = {
    "credit_scoring": [
        "src/<package>/core/credit_scoring.py",
        # The benchmark scorecard's points table: the fraud benchmark is a logistic regression.
        "src/<package>/core/scorecard.py",
    ],
    "fraud_detection": [
        "src/<package>/core/fraud_detection.py",
        # Per-decision feature contributions (shap): credit explains declines by exact reason codes.
        "src/<package>/core/attributions.py",
        "tests/test_attributions.py",
        "benchmarks/explain.py",
    ],
}


# Files only a spark bake needs (compute=spark): the Spark twins of the data stages and their tests.
SPARK_ONLY = [
    "src/<package>/core/spark.py",
    "src/<package>/data/spark_prepare.py",
    "src/<package>/data/spark_validate.py",
    "src/<package>/monitoring/spark_drift.py",
    "src/<package>/monitoring/spark_monitor.py",
    "src/<package>/monitoring/spark_reference.py",
    "src/<package>/training/spark_sample.py",
    "src/<package>/scoring/spark.py",
    "src/<package>/evaluation/spark_stats.py",
    "src/<package>/evaluation/spark_evaluate.py",
    "src/<package>/evaluation/spark_fairness.py",
    "src/<package>/evaluation/spark_explain.py",
    "src/<package>/evaluation/spark_validation_pack.py",
    "tests/test_score_spark.py",
    "tests/test_spark.py",
    "tests/test_spark_evaluation.py",
    "docs/spark.md",
]


def keep_compute(compute: str) -> None:
    if compute != "spark":
        remove(*(f.replace("<package>", CONTEXT["package"]) for f in SPARK_ONLY))


def keep_use_case(use_case: str, compute: str) -> None:
    chosen = ROOT / "_use_cases" / use_case
    for other, files in ONLY_FOR.items():
        if other != use_case:
            remove(*(f.replace("<package>", CONTEXT["package"]) for f in files))
    # Each use case has its own dependencies (fraud's shap), so its own lock; a spark bake's adds pyspark.
    shutil.move(str(chosen / ("uv-spark.lock" if compute == "spark" else "uv.lock")), ROOT / "uv.lock")
    shutil.move(str(chosen / "contract.yaml"), ROOT / "contract.yaml")
    shutil.move(str(chosen / "synthetic.py"), PACKAGE_DIR / "data" / "synthetic.py")
    shutil.move(str(chosen / "use_case.yaml"), PACKAGE_DIR / "core" / "use_case.yaml")
    # A real monitoring report of this use case's demo batch, shown in docs/monitoring.md.
    (ROOT / "docs" / "images").mkdir(parents=True, exist_ok=True)
    shutil.move(str(chosen / "monitoring-report.png"), ROOT / "docs" / "images" / "monitoring-report.png")
    shutil.rmtree(ROOT / "_use_cases")


def remove(*relative: str) -> None:
    for rel in relative:
        path = ROOT / rel
        if path.is_dir():
            shutil.rmtree(path)
        elif path.exists():
            path.unlink()


def git_init() -> None:
    if shutil.which("git") is None:
        print("warning: git not found; run `git init` yourself before `make setup`", file=sys.stderr)
        return
    identity = ["-c", f"user.name={CONTEXT['author_name']}", "-c", f"user.email={CONTEXT['author_email']}", "-c", "commit.gpgsign=false"]
    steps = [
        ["git", "init", "-q", "-b", "main"],
        ["git", "add", "-A"],
        ["git", *identity, "commit", "-q", "--no-verify", f"--author={CONTEXT['author_name']} <{CONTEXT['author_email']}>",
         "-m", "Initial commit from cookiecutter-fintech-mlops"],
    ]
    for step in steps:
        result = subprocess.run(step, capture_output=True, text=True)
        if result.returncode != 0:
            print(f"warning: `{' '.join(step)}` failed: {result.stderr.strip()}; the files are in place, commit them yourself",
                  file=sys.stderr)
            return


def where() -> str:
    """The new repository's path as the person who ran cookiecutter would type it."""
    invoked_from = os.environ.get("PWD")
    if invoked_from:
        relative = os.path.relpath(ROOT, invoked_from)
        if not relative.startswith(".."):
            return relative
    return str(ROOT)


def next_steps() -> str:
    """What to do now: printed after every bake, interactive or not, and nothing else."""
    use_case = CONTEXT["use_case"].replace("_", " ")
    return f"""
Created {where()} ({use_case}). Next:

  cd {where()}
  make setup repro test    # locked environment, the whole pipeline on synthetic data, the tests

Then look at:
  reports/metrics.json, reports/fairness.json, reports/model_card.md, reports/plots/
  reports/data_docs/index.html                          data validation (Great Expectations)
  uv run mlflow ui --backend-store-uri sqlite:///mlflow.db    runs, params, metrics, models
  make help                                             every command

Your own data: put a CSV or Parquet file in data/external/, point data.path in params.yaml
at it, describe its columns in contract.yaml, export PII_HMAC_KEY, then make repro.
"""


def main() -> int:
    keep_use_case(CONTEXT["use_case"], CONTEXT.get("compute", "pandas"))
    keep_compute(CONTEXT.get("compute", "pandas"))
    # Each target keeps its own deployment files; Prometheus, Grafana and the local stack are for all.
    if CONTEXT["deploy_target"] != "kubernetes":
        remove("deploy/k8s")
    if CONTEXT["deploy_target"] != "bentocloud":
        remove("deploy/bentocloud")
    git_init()
    print(next_steps())
    return 0


if __name__ == "__main__":
    sys.exit(main())
