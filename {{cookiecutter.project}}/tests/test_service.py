"""The decision service, served for real: `bentoml serve` on loopback over the pipeline's model.

The service runs in the session's pipeline run (tests/pipeline_run.py), so it loads exactly the
model, metadata and contract the real stages produced, and its answers are compared with the
pipeline's own scores and reason codes on held-out rows.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import numpy as np
import pandas as pd
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from {{ cookiecutter.package }}.core import model, reasons, use_case
from {{ cookiecutter.package }}.core.contract import load_contract
from {{ cookiecutter.package }}.core.decision import DecisionRule, Outcome
from {{ cookiecutter.package }}.core.params import load_params
from {{ cookiecutter.package }}.core.use_case import Explanations
from {{ cookiecutter.package }}.serving import audit, auth, guard, schema
from {{ cookiecutter.package }}.serving.schema import MAX_BATCH

from .pipeline_run import ROOT, pipeline_run
from .strategies import records

CONTRACT = load_contract(ROOT / "contract.yaml")
FACTS = use_case.load()
# How the pipeline's model explains its decisions (params.yaml: model.explanations).
REASON_CODES = load_params(ROOT / "params.yaml").model.explanations is Explanations.REASON_CODES
SERVICE = "{{ cookiecutter.package }}.serving.service:DecisionService"
# The tests' client key (the servers below accept it): every request but a probe must carry it.
API_KEY_ID, API_KEY = "tests", auth.new_key()
AUTH = {"Authorization": f"Bearer {API_KEY}"}
HEAVY = ("great_expectations", "matplotlib", "fairlearn", "dvc", "mlflow", "shap", "numba")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def loopback(port: int) -> list[str]:
    return ["--host", "127.0.0.1", "--port", str(port)]


def keys_file(path: Path) -> Path:
    """A keys file (API_KEYS_FILE) holding the tests' key."""
    path.write_text(f"# the tests' key\n{API_KEY_ID}:{auth.digest(API_KEY).hex()}\n", encoding="utf-8")
    return path


class Server:
    """A `bentoml serve` process on loopback (or ``command(port)``); stopped with SIGTERM.

    ``wrap`` is a command prefix the process runs through, if given.

    It asks for the tests' API key (``AUTH``); the audit keys are left to development mode, so the
    tests read the log with the same keys as the service wrote it.
    """

    def __init__(
        self,
        workdir: Path,
        log: Path,
        target: str = SERVICE,
        env: dict[str, str] | None = None,
        command: Callable[[int], list[str]] | None = None,
        wrap: tuple[str, ...] = (),
    ) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log = log
        self.checkpoints = log.with_suffix(".checkpoints.jsonl")  # each server its own chain and anchor
        log.parent.mkdir(parents=True, exist_ok=True)
        keys = keys_file(log.with_name("api-keys"))
        # Its own BentoML home: the metrics of every process share its multiprocess directory,
        # which each server clears when it starts (another server's start would empty /metrics).
        # Not beside the log: a test fills the log's filesystem, which BentoML's files must not share.
        home = Path(tempfile.mkdtemp(prefix="bentoml-home-"))
        environment = {
            **os.environ,
            "BENTOML_DO_NOT_TRACK": "true",
            "BENTOML_HOME": str(home),
            "AUDIT_LOG_PATH": str(log),
            "AUDIT_CHECKPOINT_PATH": str(self.checkpoints),
            "SERVICE_MODE": "development",
            "API_KEYS_FILE": str(keys),
            **(env or {}),
        }
        # The server's output goes to a file: an unread pipe fills up and blocks the server.
        self.output = log.with_suffix(".server.log")
        served = command(self.port) if command else [sys.executable, "-m", "bentoml", "serve", target, *loopback(self.port)]
        with self.output.open("w") as out:
            self.proc = subprocess.Popen(
                [*wrap, *served],
                cwd=workdir,
                env=environment,
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"bentoml serve exited with {self.proc.returncode}:\n{self.output.read_text()[-4000:]}")
            try:
                if httpx.get(f"{self.url}/readyz", timeout=1).status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            time.sleep(0.3)
        self.stop()
        raise RuntimeError("bentoml serve did not become ready in 120 s")

    def stop(self) -> int:
        if self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(timeout=60)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait()
        return self.proc.returncode


@pytest.fixture(scope="module")
def run():
    return pipeline_run()


@pytest.fixture(scope="module")
def server(run, tmp_path_factory):
    srv = Server(run.dir, tmp_path_factory.mktemp("audit") / "decisions.jsonl")
    yield srv
    srv.stop()


@pytest.fixture(scope="module")
def client(server):
    with httpx.Client(base_url=server.url, timeout=30, headers=AUTH) as c:
        yield c


@pytest.fixture(scope="module")
def held_out(run) -> pd.DataFrame:
    return pd.read_parquet(run.path("data/prepared/test.parquet"))


def features(df: pd.DataFrame) -> list[dict]:
    """Rows as JSON-ready request bodies: the contract's features only, NaN as null."""
    cols = CONTRACT.features
    out = json.loads(df[cols].to_json(orient="records"))
    return out


def rule_of(threshold: float) -> DecisionRule:
    """The pipeline's decision rule: the model's threshold and params.yaml's serving.refer_band."""
    band = guard.settings(ROOT).refer_band
    return DecisionRule(threshold, None if band is None else (band.lower, band.upper))


def valid_record(held_out) -> dict:
    return features(held_out.head(1))[0]


# --- answers -----------------------------------------------------------------------------
def test_a_decision_carries_id_score_decision_threshold_model_and_reasons(client, held_out, run):
    body = client.post("/decide", json=valid_record(held_out))
    assert body.status_code == 200, body.text
    d = body.json()
    assert set(d) >= {"decision_id", "score", "decision", "threshold", "model"}
    assert 0.0 <= d["score"] <= 1.0
    assert d["decision"] in FACTS.decisions.values()
    assert d["decision"] == FACTS.word(Outcome(int(rule_of(d["threshold"]).outcomes([d["score"]])[0])))
    meta = json.loads(run.path("models/model_meta.json").read_text(encoding="utf-8"))
    assert d["threshold"] == meta["threshold"]
    assert d["model"]["run_id"] == meta["run_id"]
    assert d["model"]["contract"] == CONTRACT.name and d["model"]["contract_version"] == CONTRACT.version
    assert set(d["model"]) == {"package_version", "run_id", "git_sha", "contract", "contract_version"}
    if REASON_CODES:
        assert isinstance(d["reasons"], list) and len(d["reasons"]) <= 4


def test_scores_and_reasons_equal_the_pipelines_on_held_out_rows(client, held_out, run):
    rows = held_out.head(400)
    answers = []
    for start in range(0, len(rows), 100):
        r = client.post("/decide_batch", json={"records": features(rows.iloc[start : start + 100])})
        assert r.status_code == 200, r.text
        answers += r.json()["decisions"]
    pipeline = model.load(run.path("models/model.skops"))
    expected = model.scores(pipeline, rows, CONTRACT)
    served = np.array([a["score"] for a in answers])
    assert np.max(np.abs(served - expected)) <= 1e-12
    # The decisions are the pipeline's rule (core/decision.py: threshold and refer band) on its scores.
    outcomes = rule_of(answers[0]["threshold"]).outcomes(expected)
    assert [a["decision"] for a in answers] == [FACTS.word(Outcome(int(o))) for o in outcomes]
    if REASON_CODES:
        # Declined and referred decisions carry the pipeline's reason codes; approvals none.
        explained = np.flatnonzero(outcomes != Outcome.FAVOURABLE)
        assert len(explained) > 0
        codes = reasons.reason_codes(pipeline, CONTRACT, rows.iloc[explained])
        for i, want in zip(explained, codes, strict=True):
            assert [r["code"] for r in answers[i]["reasons"]] == [w["code"] for w in want]
            assert [r["text"] for r in answers[i]["reasons"]] == [w["text"] for w in want]
        approved = np.flatnonzero(outcomes == Outcome.FAVOURABLE)
        assert all(answers[i]["reasons"] == [] for i in approved)


# --- explain: accepted only where the model is explained by feature contributions ---------
def test_explain_is_accepted_only_where_contributions_are_given(client, held_out):
    answer = client.post("/decide", json={**valid_record(held_out), "explain": True})
    if REASON_CODES:
        text = refusal(answer)
        assert "explain" in text and "Extra inputs are not permitted" in text
    else:
        assert answer.status_code == 200, answer.text
        assert "top_features" in answer.json()


@pytest.mark.parametrize("kind", list(Explanations))
def test_the_request_model_has_explain_exactly_for_feature_contributions(kind):
    fields = schema.record_model(CONTRACT, kind).model_fields
    assert (schema.EXPLAIN in fields) == (kind is Explanations.FEATURE_CONTRIBUTIONS)
    assert set(fields) - {schema.EXPLAIN} == set(CONTRACT.features)


def refusal(response) -> str:
    assert 400 <= response.status_code < 500, (response.status_code, response.text)
    return response.text


def numeric_feature():
    return next(c for c in CONTRACT.columns if c.role == "feature" and c.is_numeric and c.min is not None and not c.nullable)


def test_every_kind_of_bad_request_is_a_4xx_naming_the_problem(client, held_out):
    good = valid_record(held_out)
    num = numeric_feature()
    cat = next(c for c in CONTRACT.columns if c.role == "feature" and c.categories)
    required = next(c for c in CONTRACT.columns if c.role == "feature" and not c.nullable)
    cases = {
        "missing field": ({k: v for k, v in good.items() if k != required.name}, [required.name, "required"]),
        "wrong type": ({**good, num.name: "lots"}, [num.name]),
        "out of bounds": ({**good, num.name: num.min - 1}, [num.name, "greater than or equal"]),
        "unknown category": ({**good, cat.name: "martian"}, [cat.name]),
        "extra field": ({**good, "favourite_colour": "blue"}, ["favourite_colour", "Extra inputs are not permitted"]),
    }
    for pii in CONTRACT.pii[:1] + CONTRACT.protected[:1]:
        role = CONTRACT[pii].role
        cases[f"{role} field"] = ({**good, pii: "x"}, [pii, "not accepted"])
    for name, (body, words) in cases.items():
        text = refusal(client.post("/decide", json=body))
        for word in words:
            assert word in text, f"{name}: {word!r} not in {text}"
    assert "records" in refusal(client.post("/decide_batch", json={"records": []}))
    oversize = refusal(client.post("/decide_batch", json={"records": [good] * (MAX_BATCH + 1)}))
    assert "records" in oversize and str(MAX_BATCH) in oversize
    refusal(client.post("/decide", content=b'{"annual', headers={"Content-Type": "application/json"}))
    refusal(client.post("/decide", content=b"[1, 2]", headers={"Content-Type": "application/json"}))


@settings(max_examples=1000, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
@given(
    body=st.one_of(
        records(CONTRACT, roles=("feature",)),
        records(CONTRACT),
        st.dictionaries(
            st.sampled_from([*CONTRACT.column_names, "x"]),
            st.one_of(st.none(), st.booleans(), st.integers(), st.floats(), st.text(max_size=5), st.lists(st.integers())),
        ),
    )
)
def test_fuzz_no_request_gets_a_5xx(client, body):
    r = client.post("/decide", content=json.dumps(body, default=str), headers={"Content-Type": "application/json"})
    assert r.status_code < 500, r.text


def test_domain_metrics_are_exposed(client, held_out):
    assert client.post("/decide", json={**valid_record(held_out), "favourite_colour": 1}).status_code == 400
    assert client.post("/decide_batch", json={"records": features(held_out.head(50))}).status_code == 200
    # The worker processes share their metrics through prometheus_client's multiprocess files;
    # a scrape that races a worker's write can miss a series once, so a scrape is retried
    # briefly (a missing counter stays missing and still fails).
    for _ in range(10):
        text = client.get("/metrics").text
        if "refused_requests_total" in text and "decisions_total" in text:
            break
        time.sleep(0.3)
    for name in ("decisions_total", "decision_score_bucket", "refused_requests_total", "bentoml_service_request_total"):
        assert name in text, name
    if REASON_CODES:
        assert "reason_codes_total" in text
    assert 'refused_requests_total{endpoint="/decide",reason="invalid_request"}' in text


# --- the audit log -----------------------------------------------------------------------
def test_every_decision_is_in_the_audit_chain_without_raw_values(client, server, held_out):
    batch = features(held_out.head(20))
    ids = [d["decision_id"] for d in client.post("/decide_batch", json={"records": batch}).json()["decisions"]]
    ids.append(client.post("/decide", json=batch[0]).json()["decision_id"])
    lines = [json.loads(x) for x in server.log.read_text(encoding="utf-8").splitlines()]
    logged = {r["decision_id"]: r for r in lines}
    assert set(ids) <= set(logged)
    record = logged[ids[-1]]
    assert set(record) >= {"timestamp", "decision_id", "model", "input_hash", "score", "decision", "reasons", "latency_ms"}
    assert record["input_hash"] == logged[ids[0]]["input_hash"]  # same input, same keyed hash
    # No input value, categorical or numeric, reaches the log: compare with every value these
    # decisions logged, but the chain's own record counter (`seq`), which counts past any number.
    logged_values = set()
    for decision_id in ids:
        logged_values |= {json.dumps(v) for v in leaves({k: v for k, v in logged[decision_id].items() if k != "seq"})}
    for sent in batch:
        for name, value in sent.items():
            if value is None or (isinstance(value, int | float) and not isinstance(value, bool) and abs(value) < 100):
                continue  # small numbers (counts, 0/1) are no one's fingerprint and collide with any count
            shown = {json.dumps(value), json.dumps(str(value))}
            if isinstance(value, float) and value.is_integer():
                shown |= {json.dumps(int(value)), json.dumps(str(int(value)))}
            assert not shown & logged_values, f"the raw value of {name!r} ({value!r}) is in the audit log"
    assert sum(isinstance(v, int | float) and abs(v) >= 100 for r in batch for v in r.values()) >= len(batch), (
        "the records sent hold too few distinctive numeric values to check"
    )
    count, problem = audit.verify(server.log)
    assert problem is None and count == len(lines)


def leaves(node):
    """Every scalar in a JSON document, and every word of its strings."""
    if isinstance(node, dict):
        for v in node.values():
            yield from leaves(v)
    elif isinstance(node, list):
        for v in node:
            yield from leaves(v)
    else:
        yield node
        if isinstance(node, str):
            yield from node.split()


def tampered(tmp_path: Path, source: Path, how: str) -> Path:
    lines = source.read_text(encoding="utf-8").splitlines(keepends=True)
    if how == "edited":
        record = json.loads(lines[2])
        record["score"] = 0.0
        lines[2] = json.dumps(record, sort_keys=True, separators=(",", ":")) + "\n"
    elif how == "deleted":
        del lines[2]
    elif how == "inserted":
        lines.insert(2, lines[5])
    elif how == "reordered":
        lines[2], lines[3] = lines[3], lines[2]
    elif how == "truncated":
        lines[-1] = lines[-1][: len(lines[-1]) // 2]
    path = tmp_path / f"{how}.jsonl"
    path.write_text("".join(lines), encoding="utf-8")
    return path


@pytest.mark.parametrize("how", ["edited", "deleted", "inserted", "reordered", "truncated"])
def test_the_verifier_names_the_first_broken_record(client, server, held_out, tmp_path, how):
    client.post("/decide_batch", json={"records": features(held_out.head(10))})
    path = tampered(tmp_path, server.log, how)
    count, problem = audit.verify(path)
    assert problem is not None
    expected = len(path.read_text(encoding="utf-8").splitlines()) - 1 if how == "truncated" else 2
    assert count == expected and f"record {expected} " in problem, problem
    done = subprocess.run([sys.executable, "-m", audit.__name__, "verify", str(path)], capture_output=True, text=True)
    assert done.returncode == 1 and "BROKEN" in done.stderr


def test_a_torn_last_line_is_moved_aside_on_restart_and_the_chain_continues(tmp_path):
    log = tmp_path / "decisions.jsonl"
    writer = audit.AuditLog(log, b"k" * 32)
    writer.append([{"decision_id": str(i), "score": 0.1} for i in range(3)])
    writer.close()
    with log.open("a", encoding="utf-8") as fh:
        fh.write('{"decision_id": "half-writ')  # a crash mid-write
    assert audit.verify(log)[1] is not None
    again = audit.AuditLog(log, b"k" * 32)
    again.append([{"decision_id": "after", "score": 0.2}])
    again.close()
    assert audit.verify(log) == (4, None)
    assert [p.name.startswith("decisions.jsonl.truncated-") for p in tmp_path.iterdir()].count(True) == 1


WRITER = """
import importlib, sys
from pathlib import Path
audit = importlib.import_module(sys.argv[3] + ".serving.audit")
log = audit.AuditLog(Path(sys.argv[1]), b"k" * 32)
for i in range(200):
    log.append([dict(decision_id=f"{sys.argv[2]}-{i}-{j}", score=0.5) for j in range(i % 3 + 1)])
log.close()
"""


def test_writer_processes_share_one_unbroken_chain(tmp_path):
    # The service runs one process per CPU; all of them append to one file and one chain.
    log = tmp_path / "decisions.jsonl"
    package = audit.__name__.split(".")[0]
    writers = [subprocess.Popen([sys.executable, "-c", WRITER, str(log), f"w{n}", package]) for n in range(3)]
    assert [w.wait(timeout=120) for w in writers] == [0, 0, 0]
    records = [json.loads(x) for x in log.read_text(encoding="utf-8").splitlines()]
    per_writer = sum(i % 3 + 1 for i in range(200))
    assert len(records) == 3 * per_writer
    assert [r["seq"] for r in records] == list(range(3 * per_writer))
    assert {r["decision_id"].split("-")[0] for r in records} == {"w0", "w1", "w2"}
    assert audit.verify(log) == (3 * per_writer, None)


def test_a_writer_moves_aside_a_line_torn_by_another_and_continues_the_chain(tmp_path):
    log = tmp_path / "decisions.jsonl"
    survivor = audit.AuditLog(log, b"k" * 32)
    survivor.append([{"decision_id": "a", "score": 0.1}])
    with log.open("a", encoding="utf-8") as fh:  # another worker crashed in the middle of a write
        fh.write('{"decision_id": "torn')
    survivor.append([{"decision_id": "b", "score": 0.2}])
    survivor.close()
    assert audit.verify(log) == (2, None)
    assert [p.name.startswith("decisions.jsonl.truncated-") for p in tmp_path.iterdir()].count(True) == 1


def test_sigterm_during_a_burst_loses_no_answered_decision(run, held_out, tmp_path):
    srv = Server(run.dir, tmp_path / "decisions.jsonl")
    bodies = features(held_out.head(50))
    answered: list[str] = []

    def call(i):
        try:
            r = httpx.post(f"{srv.url}/decide", json=bodies[i % len(bodies)], timeout=10, headers=AUTH)
        except httpx.HTTPError:
            return
        if r.status_code == 200:
            answered.append(r.json()["decision_id"])

    with ThreadPoolExecutor(max_workers=16) as pool:
        futures = [pool.submit(call, i) for i in range(2000)]
        deadline = time.monotonic() + 60
        while len(answered) < 100 and time.monotonic() < deadline:  # stop in the middle of the burst
            time.sleep(0.05)
        code = srv.stop()
        for f in futures:
            f.cancel()  # requests not yet sent are of no interest; those in flight finish or fail
    assert code == 0, f"the service did not stop cleanly on SIGTERM (exit {code})"
    assert len(answered) >= 100, "too few requests were answered before the stop"
    logged = {json.loads(x)["decision_id"] for x in srv.log.read_text(encoding="utf-8").splitlines()}
    assert set(answered) <= logged, f"{len(set(answered) - logged)} answered decisions are missing from the audit log"
    assert audit.verify(srv.log)[1] is None


# --- the service's imports ---------------------------------------------------------------
def test_the_service_loads_no_heavy_pipeline_library(run, held_out, tmp_path):
    """Built and deciding, as a worker is: the service has imported none of the pipeline's heavy libraries."""
    log = tmp_path / "decisions.jsonl"
    code = "\n".join(
        [
            "import json, sys",
            "import {{ cookiecutter.package }}.serving.service as s",
            "svc = s.DecisionService()  # what a worker does at start: load the model, open the audit log",
            f"[decision] = svc._decide([json.loads({json.dumps(valid_record(held_out))!r})])",
            "assert 0 <= decision['score'] <= 1 and decision['decision_id'], decision",
            "svc.batcher.close(); svc.explaining.close()",
            "print(sorted(set(m.split('.')[0] for m in sys.modules) & set(" + repr(HEAVY) + ")))",
        ]
    )
    env = {
        **os.environ,
        "SERVICE_ROOT": str(run.dir),
        "AUDIT_LOG_PATH": str(log),
        "AUDIT_CHECKPOINT_PATH": str(tmp_path / "cp.jsonl"),
    }
    done = subprocess.run([sys.executable, "-c", code], cwd=run.dir, env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    loaded = set(json.loads(done.stdout.strip().splitlines()[-1].replace("'", '"')))
    # A use case that explains by feature contributions builds its shap explainer at start, and
    # shap brings numba and matplotlib: that is the service's own library, not the pipeline's.
    explainer = set() if REASON_CODES else {"shap", "numba", "matplotlib"}
    assert loaded <= explainer, f"the built service loaded pipeline libraries: {sorted(loaded - explainer)}"
    assert len(log.read_text(encoding="utf-8").splitlines()) == 1, "the built service did not audit its decision"
