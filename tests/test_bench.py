"""`make bench` in its quick mode, on the reproduced repository: it runs and reports every figure.

The quick mode measures nothing worth quoting (1 s load cells, tiny pipeline sizes); it is run
here so the benchmark cannot rot. No timing is asserted: what is asserted is that each figure
the report promises is there, came from the run, and is consistent with the others.
"""

from __future__ import annotations

import json
import shutil
import subprocess

import pytest
import yaml

from containers import containers_env
from helpers import run

pytestmark = pytest.mark.e2e


@pytest.fixture(scope="module")
def bench(pipeline_repo, service_image):
    if shutil.which("wrk") is None or shutil.which("hey") is None:
        pytest.fail("wrk and hey must be installed (.ci/run installs them: apt-get install wrk hey)")
    project = pipeline_repo("credit_scoring")
    assert service_image.project == project  # the session's image of this very repository
    out = project / "reports" / "bench"
    shutil.rmtree(out, ignore_errors=True)
    done = run(["make", "bench", "IMAGE_ENGINE=podman", f"BENCH_ARGS=--quick --image {service_image.ref}"], cwd=project,
               **containers_env())  # fmt: skip
    return project, json.loads((out / "bench.json").read_text()), (out / "bench.md").read_text(), done.stdout


def test_serving_figures_cover_both_servers_at_each_concurrency(bench):
    _, result, _, _ = bench
    s = result["serving"]
    assert s["settings"]["concurrency"] == [1, 8]
    # Measured with authentication on: a request without the key is refused (and the ones with it
    # were all answered: non2xx == 0 below).
    assert s["settings"]["unauthenticated_status"] == 401
    for kind in ("bentoml", "fastapi"):
        for c in ("1", "8"):
            cell = s["closed_loop"][kind][c]
            assert cell["rps"] > 0 and 0 < cell["p50_ms"] <= cell["p99_ms"] <= cell["p999_ms"]
            assert cell["non2xx"] == 0 and cell["socket_errors"] == 0, (kind, c, cell)
    for c in ("1", "8"):
        assert s["ratio"][c] == pytest.approx(s["closed_loop"]["bentoml"][c]["rps"] / s["closed_loop"]["fastapi"][c]["rps"])
    peak = max(cell["rps"] for cell in s["closed_loop"]["fastapi"].values())
    fixed = s["fixed_rate"]
    assert fixed["settings"]["rate_rps"] == pytest.approx(3 * peak)
    assert fixed["bentoml"]["rps"] > 0 and fixed["bentoml"]["non2xx"] == 0
    assert [c["offered_rps"] for c in s["load_curve"]] == pytest.approx([peak])  # quick mode: one point, at 1/3 of 3x
    assert s["load_curve"][0]["non2xx"] == 0
    assert s["batch_endpoint"]["records_per_s"] == pytest.approx(100 * s["batch_endpoint"]["rps"])
    assert set(s["floor"]) == {"ms_per_record_batch_1", "ms_per_record_batch_32", "ms_per_record_batch_50"}
    assert all(v > 0 for v in s["floor"].values())


def test_the_image_is_loaded_beside_the_source_service(bench):
    _, result, report, _ = bench
    s = result["serving"]
    for c in ("1", "8"):
        cell = s["closed_loop"]["container"][c]
        assert cell["rps"] > 0 and 0 < cell["p50_ms"] <= cell["p99_ms"] <= cell["p999_ms"]
        assert cell["non2xx"] == 0 and cell["socket_errors"] == 0, (c, cell)
    assert set(s["start_to_ready_s"]) == {"fastapi", "bentoml", "container"}
    assert all(v > 0 for v in s["start_to_ready_s"].values())
    ratio = s["closed_loop"]["container"]["8"]["rps"] / s["closed_loop"]["bentoml"]["8"]["rps"]
    assert f"8 clients: {ratio:.0%} of the throughput" in report
    assert f"The image `{s['image']}`" in report and "| 8 | container |" in report


def test_pipeline_figures_cover_every_stage_at_each_size(bench):
    project, result, _, _ = bench
    p = result["pipeline"]
    stages = list(yaml.safe_load((project / "dvc.yaml").read_text())["stages"])
    assert len(p["sizes"]) >= 2
    for n in p["sizes"]:
        for stage in stages:
            cell = p["stages"][stage][str(n)]
            # Seconds are rounded to 0.1: a stage on 2,000 rows can take "0.0".
            assert cell["seconds"] >= 0 and cell["peak_mib"] > 0, (stage, n)
        # The whole repro includes every stage (each rounded to 0.1 s) and DVC's own work.
        staged = sum(p["stages"][stage][str(n)]["seconds"] for stage in stages)
        assert p["total"][str(n)]["seconds"] >= staged - 0.05 * len(stages), n
        assert p["fairness_gates_pass"][str(n)] is True, n
    assert p["noop_repro_seconds"] > 0
    assert set(p["growth"]) >= set(stages)


def test_report_tables_plots_and_versions(bench):
    project, result, report, stdout = bench
    assert "## Pipeline" in report and "## Serving" in report
    assert "| 8 | bentoml |" in report and "| 8 | fastapi |" in report
    assert f"Command: `make bench BENCH_ARGS='--quick --image {result['serving']['image']}'`" in report
    assert result["versions"]["bentoml"] and result["versions"]["wrk"].startswith("wrk")
    for name in ("latency.png", "pipeline.png"):
        assert (project / "reports" / "bench" / name).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert "Wrote" in stdout
    # The report is not tracked: it is this machine's figures, regenerated on demand.
    status = subprocess.run(["git", "status", "--porcelain", "reports/bench"], cwd=project, capture_output=True, text=True)
    assert status.stdout == ""
