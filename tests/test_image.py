"""The release image, built by the generated `make image` and run as production runs it.

One image per session (conftest.py: `service_image`, on a local Debian bookworm base), one
container per module for the answers; the stop and restart tests start their own. Each run is
the Deployment's: read-only root, uid 1034, every capability dropped, /tmp a tmpfs, the audit
log on a volume, a full set of production keys. Compared over HTTP on loopback with the
pipeline's own scores and with the service run from source.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
import yaml

from containers import GRACE_S, PIPELINE_ONLY, USER, Keys, checkpoints_dir, free_port, http, podman, ready
from helpers import bake, env, run

PACKAGE = "acme_credit_scoring"  # conftest's pipeline_repo bakes "Acme Credit Scoring"
SERVICE = f"{PACKAGE}.serving.service:DecisionService"

# The pipeline's own scores and reason codes on held-out rows, computed in the project's environment.
EXPECTED = f"""
import json
import pandas as pd
from {PACKAGE}.core import model, reasons
from {PACKAGE}.core.contract import load_contract
contract = load_contract("contract.yaml")
rows = pd.read_parquet("data/prepared/test.parquet").head(300)
pipeline = model.load("models/model.skops")
scores = model.scores(pipeline, rows, contract)
codes = reasons.reason_codes(pipeline, contract, rows)
records = json.loads(rows[contract.features].to_json(orient="records"))
print(json.dumps({{"records": records, "scores": [float(s) for s in scores],
                  "reasons": [[[r["code"], r["text"]] for r in c] for c in codes]}}))
"""


# --- the Dockerfile, without building it ---------------------------------------------------
@pytest.mark.parametrize("python_version", ["3.11", "3.12", "3.13"])
def test_the_default_base_is_pinned_by_digest_where_dependabot_watches_it(tmp_path, python_version):
    project = bake(tmp_path, python_version=python_version)
    dockerfile = project / "deploy/image/Dockerfile"
    text = dockerfile.read_text()
    froms = [line.split() for line in text.splitlines() if line.startswith("FROM ")]
    # A literal FROM (Dependabot reads FROM lines, not ARG defaults), of the project's Python, by digest.
    assert froms[0][1].startswith(f"docker.io/library/python:{python_version}-slim-bookworm@sha256:")
    assert len(froms[0][1].split("@sha256:")[1]) == 64 and froms[0][2:] == ["AS", "default-base"]
    assert "ARG BASE_IMAGE=default-base" in text and all(f[1] == "${BASE_IMAGE}" for f in froms[1:])
    updates = yaml.safe_load((project / ".github/dependabot.yml").read_text())["updates"]
    assert {"package-ecosystem": "docker", "directory": "/deploy/image"}.items() <= next(
        u for u in updates if u["package-ecosystem"] == "docker"
    ).items()
    done = run(["hadolint", "--config", ".hadolint.yaml", "deploy/image/Dockerfile"], cwd=project, check=False)
    assert done.returncode == 0, done.stdout + done.stderr


# --- the image, run -----------------------------------------------------------------------
@pytest.fixture(scope="module")
def keys(tmp_path_factory):
    return Keys(tmp_path_factory.mktemp("keys"))


@pytest.fixture(scope="module")
def container(service_image, keys, tmp_path_factory):
    c = service_image.container(tmp_path_factory.mktemp("audit"), keys)
    print(f"\nimage {service_image.ref}: {service_image.size_bytes / 1e6:.0f} MB, built in {service_image.build_s:.0f} s; "
          f"start to ready {c.ready_s:.1f} s")  # fmt: skip
    yield c
    c.stop()
    c.remove()


class Client:
    """Requests to one service with the client's API key."""

    def __init__(self, url: str, keys: Keys) -> None:
        self.url, self.headers = url, keys.headers

    def post(self, path: str, body: bytes | dict, headers: dict | None = None) -> tuple[int, str]:
        return http("POST", self.url + path, body, {**self.headers, **(headers or {})})


@pytest.fixture(scope="module")
def client(container, keys):
    return Client(container.url, keys)


@pytest.fixture(scope="module")
def expected(service_image):
    done = run(["uv", "run", "--locked", "python", "-c", EXPECTED], cwd=service_image.project)
    return json.loads(done.stdout.strip().splitlines()[-1])


@pytest.fixture(scope="module")
def source(service_image, keys, tmp_path_factory):
    """The same service from source (`bentoml serve` in the project), with the same keys."""
    port = free_port()
    log = tmp_path_factory.mktemp("source") / "decisions.jsonl"
    out = log.with_suffix(".server.log").open("w")
    proc = subprocess.Popen(
        ["uv", "run", "--locked", "python", "-m", "bentoml", "serve", SERVICE, "--host", "127.0.0.1", "--port", str(port)],
        cwd=service_image.project, env=env(**keys.env, AUDIT_LOG_PATH=str(log), AUDIT_CHECKPOINT_PATH=str(log.with_suffix(".checkpoints.jsonl"))),
        stdout=out, stderr=subprocess.STDOUT, start_new_session=True,
    )  # fmt: skip
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 120
    while not ready(url):
        assert proc.poll() is None, log.with_suffix(".server.log").read_text()[-4000:]
        assert time.monotonic() < deadline, "the source service was not ready in 120 s"
        time.sleep(0.3)
    yield Client(url, keys)
    os.killpg(proc.pid, signal.SIGTERM)
    proc.wait(timeout=60)
    out.close()


def audit_verify(project: Path, log: Path, keys: Keys) -> subprocess.CompletedProcess:
    """The project's own verifier (`make audit-verify`) over a log the container wrote."""
    checkpoints = checkpoints_dir(log.parent) / "checkpoints.jsonl"  # where the image writes them (its ENV)
    return run(
        ["make", "audit-verify", f"AUDIT_LOG_PATH={log}", f"AUDIT_CHECKPOINT_PATH={checkpoints}"],
        cwd=project, check=False, **keys.env, AUDIT_LOG_PATH=str(log), AUDIT_CHECKPOINT_PATH=str(checkpoints),
    )  # fmt: skip


def records_in(log: Path) -> list[dict]:
    return [json.loads(line) for line in log.read_text(encoding="utf-8").splitlines()]


# --- how it runs --------------------------------------------------------------------------
@pytest.mark.e2e
def test_the_image_runs_as_non_root_on_a_read_only_root_without_capabilities(service_image, container):
    image = json.loads(podman("image", "inspect", service_image.ref).stdout)[0]
    # The image's own user, not only the one the run asks for: `docker run IMAGE` is non-root too.
    assert image["Config"]["User"] == USER
    probe = (
        "import os, pathlib\n"
        "caps = [l.split()[1] for l in open('/proc/self/status') if l.startswith(('CapEff', 'CapPrm'))]\n"
        "try:\n    pathlib.Path('/app/written').write_text('x'); ro = False\n"
        "except OSError:\n    ro = True\n"
        "print(os.getuid(), os.getgid(), ro, *caps)"
    )
    done = container.exec_python(probe)
    assert done.returncode == 0, done.stderr
    uid, gid, read_only, eff, prm = done.stdout.split()
    assert (uid, gid) == ("1034", "1034")
    assert read_only == "True", "the root filesystem is writable"
    assert int(eff, 16) == 0 and int(prm, 16) == 0, f"capabilities left: {eff} {prm}"


@pytest.mark.e2e
def test_the_images_python_finds_no_pipeline_package(container, service_image):
    code = (
        "import importlib.util, importlib.metadata as m, json\n"
        f"found = [p for p in {PIPELINE_ONLY!r} if importlib.util.find_spec(p)]\n"
        "dists = sorted(d.metadata['Name'].lower() for d in m.distributions())\n"
        "print(json.dumps([found, dists]))"
    )
    done = container.exec_python(code)
    assert done.returncode == 0, done.stderr
    found, dists = json.loads(done.stdout)
    assert found == [], f"the image carries pipeline packages: {found}"
    assert not {"dvc", "great-expectations", "mlflow", "matplotlib", "fairlearn", "shap"} & set(dists)
    # The SBOM beside the image lists exactly the image's Python environment.
    sbom = json.loads(service_image.sbom.read_text())
    assert sbom["bomFormat"] == "CycloneDX"
    assert sorted(c["name"].lower() for c in sbom["components"]) == dists
    print(f"\n{len(dists)} distributions; image {service_image.size_bytes / 1e6:.0f} MB; start to ready {container.ready_s:.1f} s")


# --- what it answers ----------------------------------------------------------------------
@pytest.mark.e2e
def test_decisions_equal_the_pipelines_scores_bitwise_with_the_same_reasons(client, expected):
    records = expected["records"]
    answers = []
    for start in range(0, len(records), 100):
        status, text = client.post("/decide_batch", {"records": records[start : start + 100]})
        assert status == 200, text
        answers += json.loads(text)["decisions"]
    served = [a["score"] for a in answers]
    different = [i for i, (s, e) in enumerate(zip(served, expected["scores"], strict=True)) if s != e]
    assert not different, f"{len(different)} scores differ, first row {different[0]}: {served[different[0]]!r} != {expected['scores'][different[0]]!r}"
    # Declined and referred (serving.refer_band) answers carry reason codes; approvals none.
    declined = [i for i, a in enumerate(answers) if a["decision"] != "approve"]
    assert declined, "no held-out row is declined or referred: the reasons are not compared"
    for i, a in enumerate(answers):
        want = expected["reasons"][i] if i in declined else []
        assert [[r["code"], r["text"]] for r in a["reasons"]] == want, f"row {i}"
    status, text = client.post("/decide", records[declined[0]])
    assert status == 200 and json.loads(text)["score"] == expected["scores"][declined[0]], text


def bad_requests(good: dict) -> dict[str, tuple[str, dict]]:
    """Request kinds the service refuses, sent as raw bytes so both services get the same ones."""
    name = next(iter(good))
    return {
        "missing field": ("/decide", {k: v for k, v in good.items() if k != name}),
        "wrong type": ("/decide", {**good, name: "lots"}),
        "extra field": ("/decide", {**good, "favourite_colour": "blue"}),
        "null everywhere": ("/decide", dict.fromkeys(good)),
        "empty batch": ("/decide_batch", {"records": []}),
        # One record past the batch bound, well under the body limit (a body past it gets its 413 before
        # it is read, which a client still sending sees as a reset connection: test_security covers it).
        "oversize batch": ("/decide_batch", {"records": [good] * 1001}),
        "torn JSON": ("/decide", b'{"annual'),
        "not an object": ("/decide", b"[1, 2]"),
        "not JSON at all": ("/decide", b"\xff\xfe"),
    }


@pytest.mark.e2e
def test_every_refusal_of_the_source_service_is_the_containers(client, source, expected):
    good = expected["records"][0]
    compared = 0
    for kind, (path, body) in bad_requests(good).items():
        want = source.post(path, body)
        got = client.post(path, body)
        assert 400 <= want[0] < 500, f"{kind}: the source service answered {want}"
        assert got == want, kind
        compared += 1
    # No key, a wrong key: whatever the source answers (401 once authentication is on), the container answers.
    for kind, key in {"no key": None, "wrong key": "Bearer not-a-key"}.items():
        headers = {"Authorization": key} if key else {}
        want = http("POST", f"{source.url}/decide", good, headers)
        got = http("POST", f"{client.url}/decide", good, headers)
        assert want[0] == got[0], kind
        if want[0] >= 400:
            assert got == want, kind
    assert compared == len(bad_requests(good))


# --- stopping and restarting --------------------------------------------------------------
@pytest.mark.e2e
def test_sigterm_during_a_burst_loses_no_answered_decision_and_a_restart_continues_the_chain(service_image, keys, expected, tmp_path):
    audit_dir = tmp_path / "audit"
    first = service_image.container(audit_dir, keys)
    records = expected["records"]
    answered: list[str] = []

    def call(i):
        try:
            status, text = http("POST", f"{first.url}/decide", records[i % len(records)], keys.headers, timeout=10)
        except OSError:
            return  # in flight when the server stopped: not answered
        if status == 200:
            answered.append(json.loads(text)["decision_id"])

    try:
        with ThreadPoolExecutor(max_workers=16) as pool:
            futures = [pool.submit(call, i) for i in range(3000)]
            deadline = time.monotonic() + 60
            while len(answered) < 100 and time.monotonic() < deadline:  # stop in the middle of the burst
                time.sleep(0.05)
            code, took = first.stop()
            for f in futures:
                f.cancel()
        output = first.logs()
    finally:
        first.remove()
    print(f"\nSIGTERM after {len(answered)} answers: exit {code} in {took:.1f} s")
    assert code == 0, f"the container did not stop cleanly on SIGTERM (exit {code}):\n{output[-3000:]}"
    assert took < GRACE_S, f"the container took {took:.1f} s to stop: the kubelet kills it after {GRACE_S} s"
    assert len(answered) >= 100, "too few requests were answered before the stop"
    log = audit_dir / "decisions.jsonl"
    logged = [r["decision_id"] for r in records_in(log)]
    assert set(answered) <= set(logged), f"{len(set(answered) - set(logged))} answered decisions are missing from the audit log"
    verified = audit_verify(service_image.project, log, keys)
    assert verified.returncode == 0, verified.stdout + verified.stderr

    second = service_image.container(audit_dir, keys)
    try:
        for record in records[:5]:
            status, text = http("POST", f"{second.url}/decide", record, keys.headers)
            assert status == 200, text
        code, _ = second.stop()
    finally:
        second.remove()
    assert code == 0
    after = records_in(log)
    assert [r["decision_id"] for r in after[: len(logged)]] == logged, "the restart rewrote earlier records"
    assert len(after) == len(logged) + 5
    assert after[len(logged)]["prev_hash"] == after[len(logged) - 1]["hash"], "the restart began a new chain"
    verified = audit_verify(service_image.project, log, keys)
    assert verified.returncode == 0, verified.stdout + verified.stderr
