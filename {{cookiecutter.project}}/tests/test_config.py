"""One place per fact: core/config.py holds the telemetry switches and the audit log's location.

The Makefile, the workflows and the service's environments cannot import it; these tests hold
each of them to it, so a switch changed or added in one place only fails here.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys

import pytest
import yaml

from {{ cookiecutter.package }}.core import config

from .pipeline_run import ROOT

# A variable that switches some tool's usage reporting, by its name.
TELEMETRY_NAME = re.compile(r"DO_NOT_TRACK|ANALYTICS|TELEMETRY")
# The service image holds BentoML and this package only.
SERVICE_TELEMETRY = {"BENTOML_DO_NOT_TRACK", "DO_NOT_TRACK"}


def telemetry(env: dict[str, str]) -> dict[str, str]:
    return {k: str(v) for k, v in env.items() if TELEMETRY_NAME.search(k)}


def makefile_exports() -> dict[str, str]:
    text = (ROOT / "Makefile").read_text(encoding="utf-8")
    return {m[1]: m[2].strip() for m in re.finditer(r"^export (\w+) [:?]?= ?(.*)$", text, flags=re.M)}


def workflow_env(name: str) -> dict[str, str]:
    return yaml.safe_load((ROOT / ".github" / "workflows" / name).read_text(encoding="utf-8"))["env"]


def service_envs() -> dict[str, dict[str, str]]:
    bento = yaml.safe_load((ROOT / "bentofile.yaml").read_text(encoding="utf-8"))["docker"]["env"]
    compose = yaml.safe_load((ROOT / "deploy" / "compose.yaml").read_text(encoding="utf-8"))
    envs = {"bentofile.yaml": bento, "deploy/compose.yaml": compose["services"]["service"]["environment"]}
{%- if cookiecutter.deploy_target == "kubernetes" %}
    deployment = yaml.safe_load((ROOT / "deploy" / "k8s" / "base" / "deployment.yaml").read_text(encoding="utf-8"))
    (container,) = deployment["spec"]["template"]["spec"]["containers"]
    envs["deploy/k8s/base/deployment.yaml"] = {e["name"]: e.get("value") for e in container["env"]}
{%- endif %}
    return envs


def test_the_makefile_switches_off_exactly_the_listed_telemetry():
    assert telemetry(makefile_exports()) == config.TELEMETRY_OFF


@pytest.mark.parametrize("workflow", sorted(p.name for p in (ROOT / ".github" / "workflows").glob("*.yml")))
def test_every_workflow_switches_off_exactly_the_listed_telemetry(workflow):
    assert telemetry(workflow_env(workflow)) == config.TELEMETRY_OFF


def test_the_service_environments_switch_off_the_service_tools_telemetry():
    envs = service_envs()
    for where, env in envs.items():
        found = telemetry(env)
        assert SERVICE_TELEMETRY <= set(found), f"{where}: sets {sorted(found)}, needs {sorted(SERVICE_TELEMETRY)}"
        assert found.items() <= config.TELEMETRY_OFF.items(), f"{where}: {found} differs from core/config.py"


def test_importing_the_package_switches_telemetry_off():
    """Stages run outside make too (``python -m``, a notebook): the package itself sets the list."""
    env = {k: v for k, v in os.environ.items() if not TELEMETRY_NAME.search(k)}
    code = "import json, os; from {{ cookiecutter.package }}.core import config; print(json.dumps(dict(os.environ)))"
    proc = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True)
    assert telemetry(json.loads(proc.stdout)) == config.TELEMETRY_OFF


def test_the_audit_log_path_follows_its_variable_and_the_deployments_set_it(monkeypatch, tmp_path):
    monkeypatch.delenv(config.AUDIT_LOG_ENV, raising=False)
    assert config.audit_log() == config.AUDIT_LOG
    monkeypatch.setenv(config.AUDIT_LOG_ENV, str(tmp_path / "a.jsonl"))
    assert config.audit_log() == tmp_path / "a.jsonl"
    # The deployments set the variable the package reads.
    for where, env in service_envs().items():
        if where != "bentofile.yaml":  # the bento keeps the default; the deployment chooses where
            assert config.AUDIT_LOG_ENV in env, f"{where} does not set {config.AUDIT_LOG_ENV}"
