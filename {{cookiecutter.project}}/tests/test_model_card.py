"""Model card and lineage: schema-valid, every number equal to the MLflow run's logged value,
data hashes equal to dvc.lock, lineage attached to the run."""

from __future__ import annotations

import copy
import json
import re
from pathlib import Path

import pytest
import yaml

from {{ cookiecutter.package }}.core import use_case
from {{ cookiecutter.package }}.core.params import load_params
from {{ cookiecutter.package }}.governance import lineage, model_card

from .pipeline_run import ROOT, pipeline_run


def card(run_dir: Path) -> dict:
    return json.loads((run_dir / "reports/model_card.json").read_text(encoding="utf-8"))


def logged_numbers(node, where="card"):
    """Yield (where, item) for every logged number; fail on any number that is not one."""
    if isinstance(node, dict):
        if "mlflow_metric" in node:
            yield where, node
            return
        for k, v in node.items():
            yield from logged_numbers(v, f"{where}.{k}")
    elif isinstance(node, list):
        for i, v in enumerate(node):
            yield from logged_numbers(v, f"{where}[{i}]")
    elif isinstance(node, (int, float)) and not isinstance(node, bool):
        raise AssertionError(f"{where} = {node!r} is a number that does not name the MLflow metric it came from")


def assert_card_matches_store(card_json: dict, tracking_uri: str) -> int:
    from mlflow.tracking import MlflowClient

    client = MlflowClient(tracking_uri=tracking_uri)
    runs = {}
    items = list(logged_numbers(card_json))
    for where, item in items:
        run_id = item.get("mlflow_run_id", card_json["model"]["mlflow_run_id"])
        if run_id not in runs:
            runs[run_id] = client.get_run(run_id).data.metrics
        assert item["mlflow_metric"] in runs[run_id], f"{where}: run {run_id} has no metric {item['mlflow_metric']}"
        assert item["value"] == runs[run_id][item["mlflow_metric"]], (
            f"{where}: card says {item['value']}, run {run_id} logged {runs[run_id][item['mlflow_metric']]} "
            "(a stage re-logged after the card was written? run `dvc repro`)"
        )
    return len(items)


def test_card_json_is_valid_against_the_shipped_schema():
    model_card.validate(card(pipeline_run().dir))
    assert (ROOT / "src" / "{{ cookiecutter.package }}" / "governance" / "schemas" / "model_card.schema.json").exists()


def test_schema_rejects_a_bare_number_and_a_missing_section():
    good = card(pipeline_run().dir)
    bare = copy.deepcopy(good)
    bare["metrics"]["overall"][0] = {"name": "roc_auc", "value": 0.99}
    with pytest.raises(model_card.CardError, match="metrics/overall/0"):
        model_card.validate(bare)
    missing = copy.deepcopy(good)
    del missing["human_oversight"]
    with pytest.raises(model_card.CardError, match="human_oversight"):
        model_card.validate(missing)


def test_every_number_in_the_card_equals_the_mlflow_runs_logged_value():
    run = pipeline_run()
    count = assert_card_matches_store(card(run.dir), run.tracking_uri)
    metrics = json.loads(run.path("reports/metrics.json").read_text(encoding="utf-8"))
    assert count >= len(metrics) + 10  # metrics, slices, fairness, importance, rows: not a near-empty card


def test_every_number_in_the_markdown_tables_is_a_logged_value():
    run = pipeline_run()
    c = card(run.dir)
    shown = {model_card._n(item) for _, item in logged_numbers(c)}
    text = run.path("reports/model_card.md").read_text(encoding="utf-8")
    cells = [cell.strip() for line in text.splitlines() if line.startswith("| ") for cell in line.strip("|").split("|")]
    numbers = [cell for cell in cells if re.fullmatch(r"-?\d+(\.\d+)?", cell)]
    assert numbers, "the card's tables show no numbers"
    stray = [n for n in numbers if n not in shown]
    assert not stray, f"numbers in model_card.md that are not logged values: {stray[:10]}"
    for _, item in logged_numbers(c["metrics"]["overall"]):
        assert f"| {model_card._n(item)} |" in text


def test_card_shows_the_benchmark_beside_the_model_with_the_difference_and_its_interval():
    run = pipeline_run()
    bench = json.loads(run.path("reports/metrics.json").read_text(encoding="utf-8"))["benchmark"]
    bench.pop("resampled", None)  # a spark repository's words on how the resampled rows were drawn: not a logged number
    logged = card(run.dir)["metrics"]["benchmark"]
    model_is_benchmark = bench.pop("model_is_benchmark")
    assert logged["model_is_benchmark"] is model_is_benchmark is (load_params(run.dir / "params.yaml").model.kind == "scorecard")
    assert {k: logged[k]["value"] for k in bench} == pytest.approx(bench)
    text = run.path("reports/model_card.md").read_text(encoding="utf-8")
    section = text[text.index("### Against the benchmark") :]
    if model_is_benchmark:  # model.kind: scorecard: nothing to compare, and the card says so
        assert section.split("\n\n")[1].startswith("The model **is** the benchmark (`model.kind: scorecard`)")
        return
    assert f"| {logged['name']} | {bench['roc_auc']:.4f} | {bench['pr_auc']:.4f} |" in section
    interval = f"{bench['difference_ci_low']:+.4f} to {bench['difference_ci_high']:+.4f}"
    assert f"**{bench['difference']:+.4f}** (95% interval {interval}, {bench['bootstrap']} paired bootstrap" in section


def test_card_data_hashes_equal_dvc_lock():
    run = pipeline_run()
    lock = lineage.read_dvc_lock(run.path("dvc.lock"))
    files = card(run.dir)["data"]["files"]
    stated = {f["path"] for f in files}
    assert {"data/prepared/train.parquet", "data/prepared/test.parquet", "models/model.skops"} <= stated
    for f in files:
        md5, _ = lineage.lock_md5(lock, f["path"])
        assert md5 == f["md5"], f"{f['path']}: card says {f['md5']}, dvc.lock says {md5}"


def test_card_states_rows_and_dates_of_the_data():
    run = pipeline_run()
    c = card(run.dir)
    summary = json.loads(run.path("data/prepared/summary.json").read_text(encoding="utf-8"))
    assert c["data"]["rows"]["train"]["value"] == summary["rows_train"]
    assert c["data"]["rows"]["test"]["value"] == summary["rows_test"]
    assert c["data"]["rows"]["erased"]["value"] == summary["rows_erased"] == len(run.erased_ids) > 0
    ranges = c["data"]["date_range"]
    assert ranges["train"]["to"] <= ranges["test"]["from"]  # out-of-time split, stated


def test_regulatory_classification_follows_the_use_case():
    reg = card(pipeline_run().dir)["regulatory"]
    if use_case.load().name == "credit_scoring":
        assert reg["eu_ai_act"] == "high-risk"
        assert "Annex III point 5(b)" in reg["classification"]
    else:
        assert reg["eu_ai_act"].startswith("not high-risk")
        assert "detecting financial fraud" in reg["classification"]


def test_card_lists_intended_use_oversight_monitoring_and_limitations():
    run = pipeline_run()
    text = run.path("reports/model_card.md").read_text(encoding="utf-8")
    for heading in (
        "Intended use",
        "Regulatory classification",
        "Data",
        "Metrics",
        "By protected group",
        "Fairness",
        "Explanations",
        "Limitations",
        "Human oversight",
        "Monitoring plan",
        "Version and change log",
    ):
        assert re.search(rf"^##+ {heading}", text, re.MULTILINE), heading
    assert "{" + "{" not in text
    assert "nan" not in text.lower().split()


def test_lineage_is_attached_to_the_run_and_complete():
    from mlflow.tracking import MlflowClient

    run = pipeline_run()
    record = json.loads(run.path("reports/lineage.json").read_text(encoding="utf-8"))
    meta = json.loads(run.path("models/model_meta.json").read_text(encoding="utf-8"))
    assert record["mlflow"]["run_id"] == meta["run_id"]
    assert record["params"] == yaml.safe_load(run.path("params.yaml").read_text(encoding="utf-8"))
    import sklearn

    assert record["packages"]["versions"]["scikit-learn"] == sklearn.__version__
    assert set(record["git"]) >= {"sha", "dirty"}
    client = MlflowClient(tracking_uri=run.tracking_uri)
    tags = client.get_run(meta["run_id"]).data.tags
    assert record["git"]["sha"] == tags["git_sha"]
    attached = Path(client.download_artifacts(meta["run_id"], "lineage.json", str(run.dir / "downloaded")))
    assert json.loads(attached.read_text(encoding="utf-8")) == record


def test_lineage_refuses_a_dvc_lock_that_does_not_describe_the_files(tmp_path, monkeypatch):
    run = pipeline_run()
    lock = yaml.safe_load(run.path("dvc.lock").read_text(encoding="utf-8"))
    for out in lock["stages"]["prepare"]["outs"]:
        if out["path"] == "data/prepared/train.parquet":
            out["md5"] = "0" * 32
    for rel in ("data/prepared/train.parquet", "data/prepared/test.parquet"):
        (tmp_path / rel).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / rel).write_bytes(run.path(rel).read_bytes())
    (tmp_path / "dvc.lock").write_text(yaml.safe_dump(lock), encoding="utf-8")
    monkeypatch.chdir(tmp_path)
    with pytest.raises(lineage.LineageError, match=r"data/prepared/train\.parquet.*dvc repro"):
        lineage.traced_files("data/raw/none.parquet", lineage.read_dvc_lock())


def test_the_repositorys_own_card_matches_its_dvc_lock_and_mlflow_store():
    """After `make repro`: the committed-to-be card agrees with this repository's dvc.lock and MLflow store.

    A card left from another run, or no run at all, fails here rather than skipping: a stale card
    is exactly what this test exists to catch. CI's tests job runs after the pipeline job, with
    its outputs.
    """
    needed = ("reports/model_card.json", "models/model_meta.json", "dvc.lock")
    missing = [name for name in needed if not (ROOT / name).exists()]
    assert not missing, f"the pipeline has not run in {ROOT} ({', '.join(missing)} missing): run `make repro` first"
    c = card(ROOT)
    meta = json.loads((ROOT / "models" / "model_meta.json").read_text(encoding="utf-8"))
    assert c["model"]["mlflow_run_id"] == meta["run_id"], (
        f"reports/model_card.json describes MLflow run {c['model']['mlflow_run_id']} but models/model_meta.json "
        f"holds run {meta['run_id']}: the card is stale; run `make repro`"
    )
    uri = meta["tracking_uri"]
    if uri.startswith("sqlite:///") and not Path(uri.removeprefix("sqlite:///")).is_absolute():
        store = ROOT / uri.removeprefix("sqlite:///")  # relative to the repository, where the stages ran
        assert store.exists(), f"{store.name} (the MLflow store of {uri}) is missing: run `make repro` first"
        uri = f"sqlite:///{store}"
    assert assert_card_matches_store(c, uri) > 0
    lock = lineage.read_dvc_lock(ROOT / "dvc.lock")
    assert c["data"]["files"], "the card names no data files"
    for f in c["data"]["files"]:
        md5 = lineage.lock_md5(lock, f["path"])[0]
        assert md5 == f["md5"], f"{f['path']}: the card's hash is not dvc.lock's: run `make repro`"


def _card_text(have: dict[str, bool]) -> str:
    """Every sentence the card takes from use_case.yaml, for a repository that has ``have``."""
    text = use_case.load().card
    lists = [text["out_of_scope"], text["limitations"], text["human_oversight"], text["monitoring"]]
    lists += [text["regulatory"]["obligations"], text["regulatory"]["other"]]
    return " ".join(
        [text["purpose"], text["users"], text["decision"], *(s for items in lists for s in use_case.applicable(items, have))]
    )


CLAIMS = {"serving": ("audit log", "/metrics"), "monitoring": ("PSI", "drift"), "release": ("signed",)}


@pytest.mark.parametrize("part", sorted(CLAIMS))
def test_the_card_claims_a_part_only_when_the_repository_has_it(part):
    nothing = dict.fromkeys(use_case.CAPABILITIES, False)
    without = _card_text(nothing)
    with_part = _card_text({**nothing, part: True})
    for claim in CLAIMS[part]:
        assert claim not in without, f"the card mentions {claim!r} although the repository has no {part}"
    assert any(claim in with_part for claim in CLAIMS[part]), f"the card never mentions the {part} when it exists"


def test_the_written_card_matches_what_this_repository_has():
    """Each part's claims are in the written card exactly when the run's repository has that part."""
    run = pipeline_run()
    text = run.path("reports/model_card.md").read_text(encoding="utf-8")
    package = run.path("src/{{ cookiecutter.package }}")
    # judged from the files, not from use_case.capabilities(), which the card itself used
    have = {
        "serving": (package / "serving" / "__init__.py").exists(),
        "monitoring": (package / "monitoring" / "__init__.py").exists(),
        "release": run.path(".github/workflows/release.yml").exists(),
    }
    assert set(have) == set(CLAIMS) == set(use_case.CAPABILITIES)
    for part, claims in CLAIMS.items():
        found = [claim for claim in claims if claim in text]
        if have[part]:
            assert found, f"the repository has {part} but model_card.md mentions none of {claims}"
        else:
            assert not found, f"model_card.md mentions {found} but the repository has no {part}"
