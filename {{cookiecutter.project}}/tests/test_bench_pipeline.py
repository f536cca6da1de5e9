"""benchmarks/pipeline.py reads the stages' own finishing lines and writes the shape `make bench` reads."""

from __future__ import annotations

import importlib.util
import json
import logging
import re

import pytest

from {{ cookiecutter.package }}.core.errors import UserError
from {{ cookiecutter.package }}.core.stage import run_stage

from .pipeline_run import ROOT


@pytest.fixture(scope="module")
def bench():
    spec = importlib.util.spec_from_file_location("bench_pipeline", ROOT / "benchmarks" / "pipeline.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def stage_log(caplog, name: str, fails: bool = False) -> str:
    """The real finishing line of a stage, as core.stage.run_stage logs it."""

    def main():
        _ = bytearray(8 * 2**20)  # touch some memory, so the peak is visibly above zero
        if fails:
            raise UserError("bad input")
        return 0

    caplog.clear()
    with caplog.at_level(logging.INFO):
        run_stage(main, name)
    return caplog.text


def test_parser_reads_the_real_finishing_line(bench, caplog):
    text = stage_log(caplog, "train")
    assert re.search(r"stage train finished in \d+\.\d s, peak memory \d+ MiB", text), text
    parsed = bench.parse_stage_lines("Running stage 'train':\n" + text + "noise\n")
    assert set(parsed) == {"train"}
    assert parsed["train"]["ok"] is True
    assert parsed["train"]["seconds"] >= 0.0
    assert parsed["train"]["peak_mib"] >= 8  # at least what main() allocated, in MiB not KiB


def test_parser_marks_a_failed_stage(bench, caplog):
    parsed = bench.parse_stage_lines(stage_log(caplog, "fairness", fails=True))
    assert parsed["fairness"]["ok"] is False


def per_size(sizes: list[int], seconds: list[float]) -> dict:
    return {str(n): {"seconds": v, "peak_mib": 100.0} for n, v in zip(sizes, seconds, strict=True)}


def fake_result(bench, seconds: dict[str, list[float]]) -> dict:
    sizes = [10_000, 100_000]
    result = {
        "use_case": "credit_scoring",
        "machine": {"cpus": 2, "python": "3.11"},
        "sizes": sizes,
        "stages": {s: per_size(sizes, vals) for s, vals in seconds.items()},
        "total": {str(n): {"seconds": sum(v[i] for v in seconds.values()), "peak_mib": 150.0} for i, n in enumerate(sizes)},
        "noop_repro_seconds": 0.9,
        "fairness_gates_pass": {"10000": True, "100000": False},
    }
    result["growth"] = {s: bench.growth(by, sizes) for s, by in result["stages"].items()}
    result["growth"]["total"] = bench.growth(result["total"], sizes)
    return result


def test_growth_is_largest_over_previous_and_none_when_unmeasurable(bench):
    result = fake_result(bench, {"train": [2.0, 20.0], "validate": [0.0, 1.0]})
    assert result["growth"]["train"] == 10.0
    assert result["growth"]["validate"] is None  # 0.0 s at the smaller size: no ratio to give
    assert result["growth"]["total"] == 10.5
    assert json.loads(json.dumps(result)) == result  # plain JSON for `make bench`


def test_markdown_has_a_table_per_size_with_growth(bench):
    md = bench.markdown(fake_result(bench, {"train": [2.0, 20.0], "evaluate": [1.0, 3.0]}))
    assert "**10,000 rows**" in md and "**100,000 rows** (fairness gates FAILED)" in md
    assert "| train | 20.0 | 100 | 10.0x |" in md
    assert "| evaluate | 3.0 | 100 | 3.0x |" in md
    assert "| train | 2.0 | 100 | – |" in md  # no growth at the first size
    assert "No-op `dvc repro` at 100,000 rows: 0.9 s" in md


def test_scratch_copy_leaves_out_the_users_outputs(bench, tmp_path):
    names = bench.repository_files(ROOT)
    assert "params.yaml" in names and "dvc.yaml" in names
    assert not [n for n in names if n.startswith(("data/raw/", "data/prepared/", "models/", "mlruns/", "reports/", ".venv/"))]
    assert "mlflow.db" not in names and "dvc.lock" not in names
