"""The generated deploy/ files, checked with the tools an SRE would use.

Kubernetes: every overlay is rendered by kustomize (kubectl's), validated against the
Kubernetes schemas shipped with `kubernetes-validate --strict` (offline) and checkov's
Kubernetes policies (skips justified in deploy/k8s/.checkov.yaml). Prometheus: `promtool
check rules` and `promtool test rules` (Debian's prometheus package, installed by .ci/run).
Compose: the compose-spec JSON schema vendored in check-jsonschema. The live checks against a
running service (real Prometheus scraping it, the dashboard's queries, an alert provoked)
are in test_monitoring.py.
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml
from helpers import bake, env
from test_workflows import check, run, tool

OVERLAYS = ["staging", "production"]

# Prometheus's own series and functions' words that are not metric names.
PROMQL_WORDS = {
    "sum", "by", "rate", "increase", "histogram_quantile", "abs", "ignoring", "group_left", "offset", "or",
    "vector", "topk", "le", "endpoint", "outcome", "code", "reason", "http_response_code", "on", "without",
}


def promtool() -> str:
    found = shutil.which("promtool")
    if found is None:
        pytest.fail("promtool is not installed: `apt-get install prometheus` (.ci/run does it)")
    return found


@pytest.fixture(scope="module")
def k8s_repo(tmp_path_factory) -> Path:
    return bake(tmp_path_factory.mktemp("deploy-k8s"), deploy_target="kubernetes")


def render(repo: Path, overlay: str) -> list[dict]:
    out = check([tool("kubectl"), "kustomize", f"deploy/k8s/overlays/{overlay}"], repo)
    return [doc for doc in yaml.safe_load_all(out) if doc]


def by_kind(docs: list[dict]) -> dict[str, dict]:
    return {doc["kind"]: doc for doc in docs}


def validate(manifests: str, cwd: Path) -> subprocess.CompletedProcess:
    return subprocess.run([tool("kubernetes-validate"), "--strict", "-"], input=manifests, cwd=cwd,
                          capture_output=True, text=True, timeout=120)


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_overlay_passes_the_kubernetes_schemas(k8s_repo, overlay):
    docs = render(k8s_repo, overlay)
    proc = validate(yaml.safe_dump_all(docs), k8s_repo)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    for kind in ["deployment", "service", "horizontalpodautoscaler", "poddisruptionbudget", "networkpolicy",
                 "persistentvolumeclaim", "serviceaccount"]:
        assert f"passed for resource {kind}/" in proc.stdout + proc.stderr, f"{kind} was not validated"
    # The custom resources have no schema there: the rules are checked by promtool below,
    # the ServiceMonitor by what it must point at.
    kinds = by_kind(docs)
    monitor, service = kinds["ServiceMonitor"], kinds["Service"]
    assert monitor["spec"]["endpoints"][0]["port"] in {p["name"] for p in service["spec"]["ports"]}
    assert monitor["spec"]["selector"]["matchLabels"].items() <= service["metadata"]["labels"].items()


def test_schema_validation_rejects_a_misspelt_field(k8s_repo):
    """The validator is not a rubber stamp: one unknown field in the Deployment fails it."""
    docs = render(k8s_repo, "staging")
    by_kind(docs)["Deployment"]["spec"]["template"]["spec"]["containers"][0]["resource"] = {"limits": {"cpu": "1"}}
    proc = validate(yaml.safe_dump_all(docs), k8s_repo)
    assert proc.returncode != 0 and "resource" in proc.stdout + proc.stderr, proc.stdout + proc.stderr


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_the_deployment_is_locked_down_scaled_and_watched(k8s_repo, overlay):
    docs = render(k8s_repo, overlay)
    kinds = by_kind(docs)
    deployment = kinds["Deployment"]
    assert deployment["metadata"]["namespace"] == f"{k8s_repo.name}-{overlay}"
    pod = deployment["spec"]["template"]["spec"]
    [container] = pod["containers"]
    assert pod["securityContext"]["runAsNonRoot"] is True and pod["securityContext"]["runAsUser"] > 0
    assert pod["automountServiceAccountToken"] is False
    security = container["securityContext"]
    assert security["readOnlyRootFilesystem"] is True and security["allowPrivilegeEscalation"] is False
    assert security["capabilities"]["drop"] == ["ALL"]
    assert re.fullmatch(r"ghcr\.io/[\w.-]+/[\w.-]+@sha256:[0-9a-f]{64}", container["image"]), container["image"]
    assert container["livenessProbe"]["httpGet"]["path"] == "/livez"
    assert container["readinessProbe"]["httpGet"]["path"] == "/readyz"
    assert container["ports"][0]["containerPort"] == 3000
    limits, requests = container["resources"]["limits"], container["resources"]["requests"]
    assert {"cpu", "memory"} <= limits.keys() and {"cpu", "memory"} <= requests.keys()
    # Thread settings follow the CPU limit: one OpenMP thread per CPU.
    env = {e["name"]: e for e in container["env"]}
    assert env["OMP_NUM_THREADS"]["value"] == str(int(float(limits["cpu"])))
    # The audit log goes to a persistent volume, one file per pod.
    assert env["AUDIT_LOG_PATH"]["value"].startswith("/var/lib/audit/$(POD_NAME)")
    volumes = {v["name"]: v for v in pod["volumes"]}
    claims = {d["metadata"]["name"] for d in docs if d["kind"] == "PersistentVolumeClaim"}
    assert volumes["audit"]["persistentVolumeClaim"]["claimName"] in claims
    # The chain's signed checkpoints on a second claim: a rewrite of the log's volume cannot reach its anchor.
    assert env["AUDIT_CHECKPOINT_PATH"]["value"].startswith("/var/lib/audit-checkpoints/$(POD_NAME)")
    anchor = volumes["audit-checkpoints"]["persistentVolumeClaim"]["claimName"]
    assert anchor in claims and anchor != volumes["audit"]["persistentVolumeClaim"]["claimName"]
    mounts = {m["name"]: m["mountPath"] for m in container["volumeMounts"]}
    assert mounts["audit"] == "/var/lib/audit" and mounts["audit-checkpoints"] == "/var/lib/audit-checkpoints"
    hpa, pdb = kinds["HorizontalPodAutoscaler"], kinds["PodDisruptionBudget"]
    assert hpa["spec"]["scaleTargetRef"]["name"] == deployment["metadata"]["name"]
    assert 1 <= hpa["spec"]["minReplicas"] < hpa["spec"]["maxReplicas"]
    if overlay == "production":
        assert hpa["spec"]["minReplicas"] >= 2 and pdb["spec"]["minAvailable"] >= 1
    selector = deployment["spec"]["selector"]["matchLabels"]
    for doc in (kinds["Service"]["spec"]["selector"], pdb["spec"]["selector"]["matchLabels"],
                kinds["NetworkPolicy"]["spec"]["podSelector"]["matchLabels"]):
        assert doc == selector, "every selector must pick the deployment's pods"
    assert kinds["NetworkPolicy"]["spec"]["egress"] == []


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_the_deployment_takes_its_audit_keys_and_api_keys_from_the_secret(k8s_repo, overlay):
    pod = by_kind(render(k8s_repo, overlay))["Deployment"]["spec"]["template"]["spec"]
    [container] = pod["containers"]
    env = {e["name"]: e for e in container["env"]}
    refs = {name: env[name]["valueFrom"]["secretKeyRef"] for name in ("AUDIT_HMAC_KEY", "AUDIT_CHAIN_KEY")}
    assert {r["name"] for r in refs.values()} == {"decision-service"}
    assert refs["AUDIT_HMAC_KEY"]["key"] != refs["AUDIT_CHAIN_KEY"]["key"], "one secret would key both the hashes and the chain"
    assert "SERVICE_MODE" not in env, "a deployment must not run in development mode"
    # API_KEYS_FILE names a file of a read-only mount of the Secret.
    keys_file = env["API_KEYS_FILE"]["value"]
    [mount] = [m for m in container["volumeMounts"] if keys_file.startswith(m["mountPath"].rstrip("/") + "/")]
    volume = {v["name"]: v for v in pod["volumes"]}[mount["name"]]
    assert mount["readOnly"] is True and volume["secret"]["secretName"] == "decision-service"
    assert {"key": "api-keys", "path": keys_file.removeprefix(mount["mountPath"].rstrip("/") + "/")} in volume["secret"]["items"]


def checkov(repo: Path, manifests: dict[str, str], tmp_path: Path) -> subprocess.CompletedProcess:
    for name, text in manifests.items():
        (tmp_path / name).write_text(text)
    return subprocess.run([tool("checkov"), "--config-file", str(repo / "deploy/k8s/.checkov.yaml"), "-d", str(tmp_path),
                           "--compact", "--quiet", "--output", "json"],
                          capture_output=True, text=True, timeout=600, cwd=repo, env=env(BC_SKIP_MAPPING="TRUE"))


def test_checkov_kubernetes_policies_pass_and_catch_a_privileged_pod(k8s_repo, tmp_path):
    rendered = {f"{o}.yaml": check([tool("kubectl"), "kustomize", f"deploy/k8s/overlays/{o}"], k8s_repo) for o in OVERLAYS}
    (tmp_path / "good").mkdir()
    proc = checkov(k8s_repo, rendered, tmp_path / "good")
    assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-2000:]
    summary = json.loads(proc.stdout)["summary"]
    assert summary["failed"] == 0 and summary["passed"] >= 80, summary

    docs = list(yaml.safe_load_all(rendered["production.yaml"]))
    container = by_kind(docs)["Deployment"]["spec"]["template"]["spec"]["containers"][0]
    container["securityContext"]["privileged"] = True
    (tmp_path / "bad").mkdir()
    proc = checkov(k8s_repo, {"bad.yaml": yaml.safe_dump_all(docs)}, tmp_path / "bad")
    assert proc.returncode != 0
    failed = {c["check_id"] for c in json.loads(proc.stdout)["results"]["failed_checks"]}
    assert "CKV_K8S_16" in failed, failed  # "Container should not be privileged"


def test_checkov_skips_are_justified(k8s_repo):
    text = (k8s_repo / "deploy/k8s/.checkov.yaml").read_text()
    config = yaml.safe_load(text)
    lines = text.splitlines()
    for check_id in config["skip-check"]:
        index = next(i for i, line in enumerate(lines) if line.strip() == f"- {check_id}")
        assert lines[index - 1].strip().startswith("#"), f"{check_id} is skipped without a reason above it"


# --- Prometheus rules ------------------------------------------------------------------


def test_promtool_checks_and_unit_tests_the_alert_rules(k8s_repo):
    out = check([promtool(), "check", "rules", "deploy/prometheus/alerts.yml"], k8s_repo)
    assert "SUCCESS: 7 rules found" in out
    check([promtool(), "test", "rules", "deploy/prometheus/alerts.test.yml"], k8s_repo)
    alerts = {r["alert"] for g in yaml.safe_load((k8s_repo / "deploy/prometheus/alerts.yml").read_text())["groups"]
              for r in g["rules"]}
    tests = (k8s_repo / "deploy/prometheus/alerts.test.yml").read_text()
    for alert in alerts:
        assert re.search(rf"alertname: {alert}\n\s+exp_alerts:\n\s+- exp_labels", tests), f"no test fires {alert}"


def test_the_rule_tests_fail_when_a_threshold_moves(k8s_repo, tmp_path):
    """promtool's tests pin the thresholds: an error-rate alert at 50% no longer fires on 9%."""
    shutil.copy(k8s_repo / "deploy/prometheus/alerts.test.yml", tmp_path)
    rules = (k8s_repo / "deploy/prometheus/alerts.yml").read_text()
    assert "sum(rate(bentoml_service_request_total[5m])) > 0.01" in rules
    (tmp_path / "alerts.yml").write_text(rules.replace("sum(rate(bentoml_service_request_total[5m])) > 0.01",
                                                       "sum(rate(bentoml_service_request_total[5m])) > 0.5"))
    proc = run([promtool(), "test", "rules", "alerts.test.yml"], tmp_path)
    assert proc.returncode != 0 and "DecisionServiceErrorRate" in proc.stdout + proc.stderr


def test_prometheusrule_carries_the_same_rules(k8s_repo, tmp_path):
    rule = yaml.safe_load((k8s_repo / "deploy/k8s/base/prometheusrule.yaml").read_text())
    plain = yaml.safe_load((k8s_repo / "deploy/prometheus/alerts.yml").read_text())
    assert rule["kind"] == "PrometheusRule" and rule["spec"] == plain
    (tmp_path / "rules.yml").write_text(yaml.safe_dump(rule["spec"]))
    check([promtool(), "check", "rules", "rules.yml"], tmp_path)


# --- Grafana, compose, metric names ----------------------------------------------------


def dashboard(repo: Path) -> dict:
    return json.loads((repo / "deploy/grafana/dashboards/decision-service.json").read_text())


def metric_names(expr: str) -> set[str]:
    """The metric names a PromQL expression reads (words followed by `{`, `[` or a space, minus PromQL's own)."""
    expr = re.sub(r"\{[^}]*\}", "{}", expr)  # label matchers hold no metric names
    words = set(re.findall(r"\b([a-zA-Z_:][a-zA-Z0-9_:]*)\b\s*(?=[\[{)\s]|$)", expr))
    names = {w for w in words if w not in PROMQL_WORDS and not w.startswith("$") and "_" in w}
    return {re.sub(r"_(bucket|sum|count)$", "", n) if n.startswith(("decision_score", "bentoml_service_request_duration"))
            else n for n in names}


def shipped_metric_names(repo: Path) -> set[str]:
    names: set[str] = set()
    for group in yaml.safe_load((repo / "deploy/prometheus/alerts.yml").read_text())["groups"]:
        for rule in group["rules"]:
            names |= metric_names(rule["expr"])
    for panel in dashboard(repo)["panels"]:
        for target in panel["targets"]:
            names |= metric_names(target["expr"])
    return names - {"up"}  # Prometheus's own series for a target


def test_dashboard_shows_what_an_sre_needs(k8s_repo):
    board = dashboard(k8s_repo)
    titles = " | ".join(p["title"] for p in board["panels"]).lower()
    for words in ["requests", "latency", "errors", "decisions by outcome", "score distribution", "reason codes"]:
        assert words in titles, f"no panel for {words}: {titles}"
    assert all(t["datasource"]["uid"] == "prometheus" for p in board["panels"] for t in p["targets"])
    datasource = yaml.safe_load((k8s_repo / "deploy/grafana/provisioning/datasources/prometheus.yml").read_text())
    assert datasource["datasources"][0]["uid"] == "prometheus"
    assert shipped_metric_names(k8s_repo) == {
        "bentoml_service_request_total", "bentoml_service_request_duration_seconds", "decisions_total",
        "decision_score", "reason_codes_total", "refused_requests_total", "stop_switch",
    }


def test_compose_stack_matches_the_compose_spec_and_mounts_what_exists(k8s_repo):
    check([tool("check-jsonschema"), "--builtin-schema", "vendor.compose-spec", "deploy/compose.yaml"], k8s_repo)
    compose = yaml.safe_load((k8s_repo / "deploy/compose.yaml").read_text())
    assert set(compose["services"]) == {"service", "prometheus", "grafana"}
    for name, service in compose["services"].items():
        for volume in service.get("volumes", []):
            source = volume.split(":", 1)[0]
            if source.startswith("."):
                assert (k8s_repo / "deploy" / source).exists(), f"{name} mounts {source}, which is not in the repo"
    scrape = yaml.safe_load((k8s_repo / "deploy/prometheus/prometheus.yml").read_text())
    assert scrape["rule_files"] == ["alerts.yml"]
    assert scrape["scrape_configs"][0]["static_configs"][0]["targets"] == ["service:3000"]
    assert "/var/lib/audit" in compose["services"]["service"]["environment"]["AUDIT_LOG_PATH"]
    check([promtool(), "check", "config", "prometheus.yml"], k8s_repo / "deploy/prometheus")


def test_compose_publishes_on_loopback_and_takes_the_service_keys_from_secrets(k8s_repo):
    compose = yaml.safe_load((k8s_repo / "deploy/compose.yaml").read_text())
    for name, service in compose["services"].items():
        assert all(str(p).startswith("127.0.0.1:") for p in service.get("ports", [])), (name, service["ports"])
    service = compose["services"]["service"]
    env = service["environment"]
    for name in ("AUDIT_HMAC_KEY", "AUDIT_CHAIN_KEY"):
        # From the caller's environment or deploy/.env, and compose refuses to start without it.
        assert re.fullmatch(rf"\$\{{{name}:\?[^}}]+\}}", env[name]), env[name]
    assert "SERVICE_MODE" not in env
    [secret] = service["secrets"]
    assert env["API_KEYS_FILE"] == f"/run/secrets/{secret}"
    assert (k8s_repo / "deploy" / compose["secrets"][secret]["file"]).resolve() == (k8s_repo / "secrets/api-keys").resolve()
    assert "secrets/" in (k8s_repo / ".gitignore").read_text().splitlines(), "the keys file must stay out of git"


def test_bentocloud_takes_the_service_keys_from_its_secrets(tmp_path):
    repo = bake(tmp_path, deploy_target="bentocloud")
    config = yaml.safe_load((repo / "deploy/bentocloud/deployment.yaml").read_text())
    env = {e["name"]: e["value"] for e in config["envs"]}
    assert not {"AUDIT_HMAC_KEY", "AUDIT_CHAIN_KEY", "SERVICE_MODE"} & env.keys(), "keys come from secrets, not literals"
    assert set(config["secrets"]) == {"decision-service-audit", "decision-service-api-keys"}
    # BentoCloud mounts file secrets under BENTOML_HOME (/home/bentoml/bentoml in the image).
    assert env["API_KEYS_FILE"].startswith("/home/bentoml/bentoml/")
    # What the Secret must hold, and how to create it, is in the docs the file points to.
    docs = (repo / "docs/serving.md").read_text()
    assert "bentoml secret create decision-service-audit" in docs and "decision-service-api-keys" in docs


def test_compose_schema_check_is_not_a_rubber_stamp(k8s_repo, tmp_path):
    compose = yaml.safe_load((k8s_repo / "deploy/compose.yaml").read_text())
    compose["services"]["service"]["portz"] = ["3000:3000"]
    (tmp_path / "compose.yaml").write_text(yaml.safe_dump(compose))
    proc = run([tool("check-jsonschema"), "--builtin-schema", "vendor.compose-spec", "compose.yaml"], tmp_path)
    assert proc.returncode != 0 and "portz" in proc.stdout + proc.stderr
