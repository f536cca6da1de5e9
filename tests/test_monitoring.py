"""A real Prometheus scrapes a running decision service with the shipped config and rules.

The service is the baked credit repository's own (`make serve`, from the session
`pipeline_repo`), Prometheus is Debian's server on loopback (installed by .ci/run). The test
sends real decisions and a burst of requests outside the data contract, then asks:
- does `/metrics` expose every metric name the alerts and the dashboard use?
- does every dashboard query return series?
- does the refused-request alert go active (pending; it fires after its `for: 5m`)?
What differs from the shipped files: the scrape target (127.0.0.1:<free port> instead of
`service:3000`), 1 s scrape and evaluation intervals instead of 15 s, and the rule file's
absolute path. The rules themselves are loaded unchanged.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from contextlib import contextmanager
from pathlib import Path

import pytest
import yaml
from helpers import env
from test_deploy import dashboard, shipped_metric_names

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "docs"))
import render_dashboard  # noqa: E402  (docs/ is not a package)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_for(url: str, seconds: float, proc: subprocess.Popen, log: Path) -> None:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            pytest.fail(f"{proc.args[0]} exited {proc.returncode} before {url} answered:\n{log.read_text()[-4000:]}")
        try:
            with urllib.request.urlopen(url, timeout=2):
                return
        except (urllib.error.URLError, ConnectionError, TimeoutError):
            time.sleep(0.5)
    pytest.fail(f"{url} did not answer within {seconds:.0f}s:\n{log.read_text()[-4000:]}")


@contextmanager
def started(cmd: list[str], cwd: Path, log: Path, **extra_env: str):
    with log.open("w") as fh:
        proc = subprocess.Popen(cmd, cwd=cwd, stdout=fh, stderr=subprocess.STDOUT, env=env(**extra_env),
                                start_new_session=True)
    try:
        yield proc
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGTERM)  # the process group this test started, nothing else
            try:
                proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)


def post(url: str, body: dict) -> int:
    req = urllib.request.Request(url, data=json.dumps(body).encode(), headers={"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(req, timeout=10) as resp:
            return resp.status
    except urllib.error.HTTPError as exc:
        return exc.code


def exposed_names(metrics_text: str) -> set[str]:
    """Metric family names in a Prometheus text exposition (from its # TYPE lines and samples)."""
    names = set(re.findall(r"^# TYPE (\S+) ", metrics_text, flags=re.M))
    names |= {re.sub(r"_(bucket|sum|count|created)$", "", n) for n in re.findall(r"^([a-zA-Z_:][\w:]*)[{ ]", metrics_text, flags=re.M)}
    return names | {f"{n}_total" for n in names}


@pytest.mark.e2e
def test_prometheus_scrapes_the_service_dashboard_queries_answer_and_an_alert_goes_active(pipeline_repo, tmp_path):
    promtool_dir = shutil.which("prometheus")
    if promtool_dir is None:
        pytest.fail("prometheus is not installed: `apt-get install prometheus` (.ci/run does it)")
    repo = pipeline_repo("credit_scoring")
    package = repo.name.replace("-", "_")
    port, prom_port = free_port(), free_port()
    records = subprocess.run(
        ["uv", "run", "--locked", "python", "-c",
         "import json, sys; import pandas as pd;"
         f"from {package}.core.contract import load_contract; c = load_contract();"
         "df = pd.read_parquet('data/prepared/test.parquet')[c.model_input_order()].head(40);"
         "print(df.to_json(orient='records'))"],
        cwd=repo, capture_output=True, text=True, env=env(), check=True).stdout
    good = json.loads(records)
    contract = yaml.safe_load((repo / "contract.yaml").read_text())
    column = next(c for c in contract["columns"] if c["role"] == "feature" and isinstance(c.get("max"), int | float))
    bad = {**good[0], column["name"]: column["max"] * 10 + 1}

    config = yaml.safe_load((repo / "deploy/prometheus/prometheus.yml").read_text())
    config["global"] = {"scrape_interval": "1s", "evaluation_interval": "1s"}
    config["rule_files"] = [str(repo / "deploy/prometheus/alerts.yml")]
    config["scrape_configs"][0]["static_configs"][0]["targets"] = [f"127.0.0.1:{port}"]
    (tmp_path / "prometheus.yml").write_text(yaml.safe_dump(config))
    prometheus = f"http://127.0.0.1:{prom_port}"

    serve = ["make", "serve", f"PORT={port}"]
    with started(serve, repo, tmp_path / "serve.log", AUDIT_LOG_PATH=str(tmp_path / "audit.jsonl")) as service, \
            started(["prometheus", f"--config.file={tmp_path / 'prometheus.yml'}",
                     f"--storage.tsdb.path={tmp_path / 'tsdb'}", f"--web.listen-address=127.0.0.1:{prom_port}"],
                    tmp_path, tmp_path / "prometheus.log") as server:
        wait_for(f"http://127.0.0.1:{port}/readyz", 180, service, tmp_path / "serve.log")
        wait_for(f"{prometheus}/-/ready", 60, server, tmp_path / "prometheus.log")
        # A counter's first sample is its baseline for rate(): create every series, let
        # Prometheus scrape them, then send the traffic the queries and the alert must see.
        assert post(f"http://127.0.0.1:{port}/decide", good[0]) == 200
        assert 400 <= post(f"http://127.0.0.1:{port}/decide", bad) < 500
        time.sleep(4)
        statuses = [post(f"http://127.0.0.1:{port}/decide", record) for record in good]
        assert set(statuses) == {200}, statuses
        refused = [post(f"http://127.0.0.1:{port}/decide", bad) for _ in range(30)]  # the burst
        assert all(400 <= s < 500 for s in refused), refused

        with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10) as resp:
            text = resp.read().decode()
        missing = shipped_metric_names(repo) - exposed_names(text)
        assert not missing, f"alerts or dashboard use metrics the service does not expose: {sorted(missing)}\n{text[:3000]}"

        # Let Prometheus take a few scrapes and evaluate the rules.
        deadline, active = time.monotonic() + 90, {}
        while time.monotonic() < deadline:
            time.sleep(3)
            answer = json.loads(urllib.request.urlopen(f"{prometheus}/api/v1/alerts", timeout=10).read())
            active = {a["labels"]["alertname"]: a["state"] for a in answer["data"]["alerts"]}
            if "DecisionServiceRefusedRequests" in active:
                break
        assert active.get("DecisionServiceRefusedRequests") in {"pending", "firing"}, active
        assert "DecisionServiceErrorRate" not in active and "DecisionServiceDown" not in active, active

        empty = []
        for panel in dashboard(repo)["panels"]:
            for target in panel["targets"]:
                expr = render_dashboard.expand(target["expr"], minutes=5)
                if not render_dashboard.query(prometheus, expr):
                    empty.append(f"{panel['title']}: {expr}")
        assert not empty, "dashboard queries without series:\n" + "\n".join(empty)

        # The release's smoke test against this real service: its model is this repository's.
        helper = ["uv", "run", "--locked", "python", "-m", f"{package}.ci.release"]
        smoke_dir = tmp_path / "smoke.json"
        subprocess.run([*helper, "smoke-request", "--out", str(smoke_dir)], cwd=repo, env=env(), check=True)
        ok = subprocess.run([*helper, "smoke", "--url", f"http://127.0.0.1:{port}", "--tag", "v0.1.0",
                             "--request", str(smoke_dir)], cwd=repo, env=env(), capture_output=True, text=True)
        assert ok.returncode == 0 and "serves release v0.1.0" in ok.stdout, ok.stderr
        wrong = subprocess.run([*helper, "smoke", "--url", f"http://127.0.0.1:{port}", "--tag", "v0.2.0",
                                "--request", str(smoke_dir)], cwd=repo, env=env(), capture_output=True, text=True)
        assert wrong.returncode == 1 and "package_version '0.1.0' (release: '0.2.0')" in wrong.stderr, wrong.stderr

        # UPDATE_DASHBOARD_PICTURE=1 refreshes the picture in the template's docs/ and the generated docs/serving.md's.
        picture = tmp_path / "dashboard.png"
        drawn = render_dashboard.render(prometheus, dashboard(repo), picture, minutes=2)
        assert picture.stat().st_size > 10_000 and drawn >= len(dashboard(repo)["panels"])
        if os.environ.get("UPDATE_DASHBOARD_PICTURE"):
            for target in (ROOT / "docs", ROOT / "{{cookiecutter.project}}" / "docs"):
                shutil.copy(picture, target / "dashboard.png")
