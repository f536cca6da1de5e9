"""A spark bake (compute=spark) works end to end: `make setup repro test lint` on Spark in local mode.

The one spark bake of the suite (pyspark is 320 MB and a Spark session takes seconds to start):
its data stages run on Spark, its own suite (the Spark-vs-pandas parity tests included) passes
with nothing skipped, and what it prepares is what the pandas bake prepares from the same data.
"""

from __future__ import annotations

import json
import re
import time
from types import SimpleNamespace

import pytest

from helpers import bake, run

SPARK_STAGES = (
    "spark_prepare",
    "spark_validate",
    "spark_reference",
    "spark_evaluate",
    "spark_fairness",
    "spark_explain",
    "spark_validation_pack",
)


@pytest.fixture(scope="module")
def spark_repo(tmp_path_factory):
    """The credit use case baked with compute=spark, set up and reproduced; with the seconds each step took."""
    project = bake(tmp_path_factory.mktemp("spark"), compute="spark", project_name="Acme Spark Credit")
    times, logs = {}, {}
    for step in ("setup", "repro"):
        start = time.perf_counter()
        logs[step] = run(f"make {step} 2>&1", cwd=project).stdout
        times[step] = time.perf_counter() - start
    return SimpleNamespace(path=project, times=times, repro_log=logs["repro"])


@pytest.mark.e2e
def test_the_data_stages_run_on_spark(spark_repo):
    for stage in SPARK_STAGES:
        assert re.search(rf"stage {stage} finished in", spark_repo.repro_log), stage
    assert json.loads((spark_repo.path / "reports" / "validation.json").read_text())["success"] is True
    assert "pyspark" in (spark_repo.path / "uv.lock").read_text()
    print(f"spark bake: make setup {spark_repo.times['setup']:.0f} s, make repro {spark_repo.times['repro']:.0f} s")


# Run in the spark bake's own environment (the template's has no pandas): the prepared files of two
# repositories compared value by value (Spark keeps timestamps at microseconds).
COMPARE = """
import sys
import pandas as pd

spark_dir, pandas_dir = sys.argv[1:]
for name in ("train.parquet", "test.parquet", "protected.parquet"):
    s, p = pd.read_parquet(f"{spark_dir}/{name}"), pd.read_parquet(f"{pandas_dir}/{name}")
    assert list(s.columns) == list(p.columns), (name, list(s.columns), list(p.columns))
    for c in p.columns:
        a, b = p[c], s[c]
        if pd.api.types.is_datetime64_any_dtype(a):
            a, b = a.astype("datetime64[us]"), b.astype("datetime64[us]")
        assert a.astype(object).where(a.notna(), None).tolist() == b.astype(object).where(b.notna(), None).tolist(), (name, c)
    print(name, len(s), "rows equal")
"""


@pytest.mark.e2e
def test_spark_prepares_what_pandas_prepares_from_the_same_data(spark_repo, pipeline_repo):
    pandas_repo = pipeline_repo("credit_scoring")
    prepared = "data/prepared"
    summary = json.loads((spark_repo.path / prepared / "summary.json").read_text())
    assert summary == json.loads((pandas_repo / prepared / "summary.json").read_text())
    done = run(
        ["uv", "run", "--locked", "python", "-c", COMPARE, str(spark_repo.path / prepared), str(pandas_repo / prepared)],
        cwd=spark_repo.path,
    )
    assert done.stdout.count("rows equal") == 3, done.stdout


@pytest.mark.e2e
def test_the_spark_bakes_own_suite_and_lint_pass_with_nothing_skipped(spark_repo):
    start = time.perf_counter()
    done = run("make test 2>&1", cwd=spark_repo.path, PYTEST_ADDOPTS="-rs -v")
    took = time.perf_counter() - start
    # pytest's own summary line: under the template's `make test`, make prints "Leaving directory"
    # after it (MAKELEVEL is inherited), so the last line is not pytest's.
    found = re.findall(r"^=+ (.*\d+ passed.*) in [\d.]+s.*=+$", done.stdout, flags=re.M)
    assert found, done.stdout[-3000:]
    summary = found[-1]
    assert " passed" in summary and "skipped" not in summary and "failed" not in summary, summary
    assert "tests/test_spark.py::test_prepare_matches_pandas_row_for_row PASSED" in done.stdout
    assert "tests/test_spark.py::test_psi_and_csi_equal_pandas_to_1e_12 PASSED" in done.stdout
    assert "tests/test_spark_evaluation.py::test_validation_pack_equals_the_pandas_stage PASSED" in done.stdout
    assert "tests/test_spark_evaluation.py::test_fairness_equals_the_pandas_stage_interval_for_interval PASSED" in done.stdout
    for name in (
        "test_make_monitor_on_spark_writes_the_pandas_report_for_a_parquet_directory",
        "test_the_distributed_cut_takes_exactly_the_k_lowest_rows_ties_broken_by_position",
        "test_prepare_and_validate_run_over_spark_connect_from_spark_remote_alone",
    ):
        assert f"tests/test_spark.py::{name} PASSED" in done.stdout, name
    # `make monitor` in a spark bake is the Spark monitor.
    assert "monitoring.spark_monitor --batch" in run("make -n monitor BATCH=b.parquet", cwd=spark_repo.path).stdout
    run("make lint 2>&1", cwd=spark_repo.path)
    print(f"spark bake: make test {took:.0f} s ({summary})")
