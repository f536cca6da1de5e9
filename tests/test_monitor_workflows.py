"""The generated monitor.yml and retrain.yml: static checks as for ci.yml, then real act runs.

Static: GitHub's schema, zizmor (pedantic), shellcheck of every run script, SHA pins with
their version, least privilege per job, no expression spliced into a script.

act (host mode, stand-ins from tests/act/, see its README): `monitor.yml` is dispatched twice,
first on a batch drifted in two features, then on an undrifted batch with matured labels
beside an audit log (the outcomes step runs `make outcomes`, whose failed tests alone raise
the alert); the issue step opens one issue the first time and comments on it the second time
(the `gh` stand-in keeps the issues between runs, as GitHub would). `retrain.yml` brings a new version of an imported data file in with `dvc update`,
retrains with `dvc repro`, pushes a branch to a real (bare, local) origin and calls
`gh pr create` with that branch and a body that says CI will not start by itself.
The line: GitHub's API (the `gh` stand-in records calls), the App token (a stand-in
hands out a fixed one) and the DVC remote (act copies the DVC-tracked outputs the remote
would provide: `--use-gitignore=false`).
"""

from __future__ import annotations

import json
import re
import time
from pathlib import Path

import pytest
import yaml
from helpers import copy_project
from test_workflows import (
    STANDIN_DIRS,
    STANDINS,
    STATIC_BAKES,
    TELEMETRY_ENV,
    USES,
    ActRun,
    bake,
    check,
    git,
    load,
    make,
    run,
    run_scripts,
    run_step,
    shellcheck,
    tool,
)

NEW = ("monitor.yml", "retrain.yml")
APP_TOKEN_ACTION = "actions/create-github-app-token"
STANDINS_HERE = {**STANDIN_DIRS, APP_TOKEN_ACTION: "create-github-app-token"}
OWNER = "acme-bank"
DRIFT = {"credit_scoring": "annual_income=-1 debt_to_income=1"}


@pytest.fixture(scope="module", params=sorted(STATIC_BAKES))
def baked(request, tmp_path_factory) -> Path:
    return bake(tmp_path_factory.mktemp(request.param), **STATIC_BAKES[request.param])


def workflow(repo: Path, name: str) -> dict:
    return load(repo / ".github" / "workflows" / name)


# --- static checks ---------------------------------------------------------------------


def test_schema_and_zizmor_pedantic(baked):
    paths = [str(baked / ".github/workflows" / name) for name in NEW]
    check([tool("check-jsonschema"), "--builtin-schema", "vendor.github-workflows", *paths], baked)
    proc = run([tool("zizmor"), "--offline", "--no-progress", "--persona", "pedantic", *paths], baked)
    assert proc.returncode == 0 and "No findings to report" in proc.stdout + proc.stderr, proc.stdout + proc.stderr


def test_shellcheck_every_run_script(baked, tmp_path):
    scripts = [(name, where, script) for name in NEW for where, script in run_scripts(workflow(baked, name))]
    assert len(scripts) >= 10, scripts
    problems = [shellcheck(f"{name}, {where}", script, tmp_path) for name, where, script in scripts]
    assert not [p for p in problems if p], "\n".join(p for p in problems if p)


def test_pinned_to_the_same_commits_as_ci(baked):
    pins: dict[str, set[str]] = {}
    for name in (*NEW, "ci.yml"):
        for line in (baked / ".github/workflows" / name).read_text().splitlines():
            if m := USES.match(line):
                assert re.fullmatch(r"[0-9a-f]{40}", m["ref"]), f"{name}: not pinned to a commit: {line}"
                assert re.fullmatch(r"\s+# v\d+\.\d+\.\d+", m["comment"]), f"{name}: no `# vX.Y.Z`: {line}"
                pins.setdefault(m["action"], set()).add(m["ref"])
    assert all(len(refs) == 1 for refs in pins.values()), pins
    assert pins[APP_TOKEN_ACTION] == {"1b10c78c7865c340bc4f6099eb2f838309f1e8c3"}


def job_writes(job: dict) -> dict[str, str]:
    return {k: v for k, v in (job.get("permissions") or {}).items() if v == "write"}


def common_shape(wf: dict, text: str) -> None:
    assert wf["permissions"] == {"contents": "read"}
    assert "pull_request" not in text, "never triggered by pull requests (no fork code near a write token)"
    assert TELEMETRY_ENV.items() <= wf["env"].items()
    assert wf["concurrency"]["cancel-in-progress"] is False
    for job_id, job in wf["jobs"].items():
        assert isinstance(job.get("timeout-minutes"), int), job_id
        for step in job["steps"]:
            if "run" in step:
                assert "${{" not in step["run"], f"{job_id}: expression inside a run script: {step['run']}"
            if "actions/checkout@" in step.get("uses", ""):
                assert step["with"]["persist-credentials"] is False


def test_monitor_least_privilege_and_one_issue_by_label(baked):
    wf = workflow(baked, "monitor.yml")
    common_shape(wf, (baked / ".github/workflows/monitor.yml").read_text())
    assert set(wf["on"]) == {"schedule", "workflow_dispatch"}
    jobs = wf["jobs"]
    assert {k: job_writes(j) for k, j in jobs.items()} == {"monitor": {}, "alert": {"issues": "write"}, "retrain": {"actions": "write"}}
    assert jobs["alert"]["if"] == "needs.monitor.outputs.status == 'ALERT' || needs.monitor.outputs.outcomes == 'FAIL'"
    assert "vars.RETRAIN_ON_ALERT == 'true'" in jobs["retrain"]["if"] and "drift == 'true'" in jobs["retrain"]["if"]
    steps = {s.get("name"): s for s in jobs["monitor"]["steps"]}
    assert steps["Monitor"]["run"].strip() == "make monitor BATCH=data/monitoring/batch.parquet"
    assert "reports/monitoring/latest.md >> \"$GITHUB_STEP_SUMMARY\"" in steps["Verdict"]["run"]
    assert "make monitor-fetch" in steps["Get the newest batch"]["run"]
    # Matured labels: `make outcomes` runs only when a labels file arrived; its FAIL opens the same issue.
    outcomes = steps["Outcomes on matured labels"]
    assert outcomes["if"] == "hashFiles('data/monitoring/outcomes.csv') != ''"
    assert "make outcomes LABELS=data/monitoring/outcomes.csv" in outcomes["run"]
    assert 'echo "status=$verdict" >> "$GITHUB_OUTPUT"' in outcomes["run"] and outcomes["env"]["AUDIT_CHAIN_KEY"].startswith("${{ secrets.")
    assert jobs["monitor"]["outputs"]["outcomes"] == "${{ steps.outcomes.outputs.status }}"
    issue = next(s for s in jobs["alert"]["steps"] if s.get("name") == "Open or update the monitoring issue")
    assert '--label "$ISSUE_LABEL" --state open' in issue["run"] and "gh issue comment" in issue["run"]
    assert "cat reports/monitoring/outcomes.md" in issue["run"]
    assert "RUN_URL" in issue["env"] and issue["env"]["GH_TOKEN"] == "${{ github.token }}"


def test_retrain_opens_a_pull_request_with_an_app_token_when_configured(baked):
    wf = workflow(baked, "retrain.yml")
    common_shape(wf, (baked / ".github/workflows/retrain.yml").read_text())
    assert set(wf["on"]) == {"schedule", "workflow_dispatch"}
    job = wf["jobs"]["retrain"]
    assert job_writes(job) == {"contents": "write", "pull-requests": "write"}
    steps = {s.get("name"): s for s in job["steps"]}
    app = steps["GitHub App token"]
    assert app["uses"].startswith(APP_TOKEN_ACTION + "@") and app["if"] == "vars.RETRAIN_APP_ID != ''"
    assert {k for k in app["with"] if k.startswith("permission-")} == {"permission-contents", "permission-pull-requests"}
    assert steps["Bring the new data in"]["run"].strip() == "make data-update"
    assert steps["Retrain (dvc repro)"]["run"].strip() == "make repro"
    for name in ("Push the branch", "Open the pull request"):
        token = steps[name]["env"].get("GH_TOKEN") or steps[name]["env"].get("TOKEN")
        assert token == "${{ steps.app.outputs.token || github.token }}", name
    assert "no workflow" in steps["Open the pull request"]["run"]


# --- the pull-request step on its own: with and without the App token ---------------------


def retrain_step(repo: Path, name: str) -> str:
    return next(s["run"] for s in workflow(repo, "retrain.yml")["jobs"]["retrain"]["steps"] if s.get("name") == name)


@pytest.mark.parametrize("app_token", ["", "app-token-from-standin"])
def test_pull_request_body_says_whether_ci_will_run(tmp_path, app_token):
    repo = bake(tmp_path / "bake", use_case="credit_scoring")
    work = tmp_path / "work"
    check(["git", "init", "-q", "-b", "retrain/x", str(work)], tmp_path)
    for message in ("champion", "retrained"):
        (work / "dvc.lock").write_text(message)
        git(work, "add", "-A")
        git(work, "commit", "-q", "-m", message)
    git(work, "update-ref", "refs/remotes/origin/main", "HEAD~1")
    gh_bin = tmp_path / "gh-bin"
    gh_bin.mkdir()
    (gh_bin / "gh").symlink_to(STANDINS / "gh" / "gh")
    env = {"GH_TOKEN": app_token or "github-token", "APP_TOKEN": app_token, "BRANCH": "retrain/x", "BASE": "main",
           "REASON": "monitoring ALERT", "RUN_URL": "https://github.com/o/r/actions/runs/1", "GITHUB_REPOSITORY": "o/r",
           "GH_STANDIN_STATE": str(tmp_path / "state.json"), "GH_STANDIN_LOG": str(tmp_path / "calls.jsonl"),
           "PATH": f"{gh_bin}:/usr/bin:/bin"}
    step_dir = tmp_path / "step"
    step_dir.mkdir()
    script = f"cd {work}\n" + retrain_step(repo, "Open the pull request")
    proc = run_step(script, step_dir, **env)
    assert proc.returncode == 0, proc.stderr
    (call,) = [json.loads(line) for line in (tmp_path / "calls.jsonl").read_text().splitlines()]
    assert call["argv"][:2] == ["pr", "create"] and call["body"].startswith("## Retraining: monitoring ALERT")
    assert "dvc.lock" in call["body"]
    assert ("no workflow" in call["body"]) == (not app_token)
    assert ("::warning title=CI will not run" in proc.stdout) == (not app_token)


def test_branch_push_keeps_the_token_out_of_the_repository(tmp_path):
    repo = bake(tmp_path / "bake", use_case="credit_scoring")
    bare, work = tmp_path / "origin.git", tmp_path / "work"
    check(["git", "init", "-q", "--bare", str(bare)], tmp_path)
    check(["git", "init", "-q", "-b", "retrain/x", str(work)], tmp_path)
    (work / "dvc.lock").write_text("retrained")
    git(work, "add", "-A")
    git(work, "commit", "-q", "-m", "retrained")
    git(work, "remote", "add", "origin", str(bare))
    step_dir = tmp_path / "step"
    step_dir.mkdir()
    script = f"cd {work}\n" + retrain_step(repo, "Push the branch")
    proc = run_step(script, step_dir, TOKEN="secret-token-value", BRANCH="retrain/x", PATH="/usr/bin:/bin")
    assert proc.returncode == 0, proc.stderr
    assert check(["git", "rev-parse", "retrain/x"], bare).strip() == git(work, "rev-parse", "HEAD").strip()
    assert "secret-token-value" not in (work / ".git" / "config").read_text()


# --- act ---------------------------------------------------------------------------------


def run_act_dispatch(repo: Path, work: Path, workflow_file: str, inputs: dict, variables: dict | None = None,
                     secrets: dict | None = None) -> ActRun:
    """Dispatch ``workflow_file`` with act in host mode; gh calls go to the stand-in in ``work``."""
    work.mkdir(parents=True, exist_ok=True)
    event = work / "event.json"
    event.write_text(json.dumps({"inputs": inputs, "repository": {"full_name": f"{OWNER}/{repo.name}", "default_branch": "main"}}))
    artifacts = work / "artifacts"
    artifacts.mkdir(exist_ok=True)
    mappings = []
    for line in (repo / ".github/workflows" / workflow_file).read_text().splitlines():
        if m := USES.match(line):
            mappings += ["--local-repository", f"{m['action']}@{m['ref']}={STANDINS / STANDINS_HERE[m['action']]}"]
    cmd = [
        tool("act"), "workflow_dispatch",
        "--workflows", f".github/workflows/{workflow_file}",
        "--eventpath", str(event),
        "-P", "ubuntu-latest=-self-hosted",
        "--json", "--no-cache-server", "--use-gitignore=false",
        "--action-cache-path", str(work / "act-cache"),
        "--secret", "GITHUB_TOKEN=token-for-act",
        "--env", f"GITHUB_REPOSITORY={OWNER}/{repo.name}",
        "--env", f"ACT_ARTIFACTS_DIR={artifacts}",
        "--env", f"GH_STANDIN_STATE={work.parent / 'gh-state.json'}",
        "--env", f"GH_STANDIN_LOG={work / 'gh-calls.jsonl'}",
        *[arg for k, v in (variables or {}).items() for arg in ("--var", f"{k}={v}")],
        *[arg for k, v in (secrets or {}).items() for arg in ("--secret", f"{k}={v}")],
        *mappings,
    ]
    started = time.monotonic()
    proc = run(cmd, repo, timeout=2400, PATH=f"{STANDINS / 'gh'}:{__import__('os').environ['PATH']}")
    seconds = time.monotonic() - started
    log = work / "act.log.jsonl"
    log.write_text(proc.stdout + proc.stderr)
    events = []
    for line in proc.stdout.splitlines():
        if line.startswith("{"):
            try:
                events.append(json.loads(line))
            except json.JSONDecodeError:
                pass
    calls_path = work / "gh-calls.jsonl"
    calls = [json.loads(line) for line in calls_path.read_text().splitlines()] if calls_path.exists() else []
    result = ActRun(proc.returncode, seconds, events, calls, artifacts, log)
    print(f"{workflow_file}: {result.describe()}")
    return result


def committed_copy(pipeline_repo, use_case: str, dest: Path) -> Path:
    repo = copy_project(pipeline_repo(use_case), dest / pipeline_repo(use_case).name)
    git(repo, "add", "-A")
    git(repo, "commit", "-q", "--allow-empty", "-m", "Champion: pipeline reproduced on main")
    return repo


CHAIN_KEY = "act-monitor-chain-key-0123456789abcdef"
# Matured labels for decisions the service logged: an audit log chained and checkpointed by the
# service's own writer (serving/audit.py), and defaults drawn at twice each decision's PD, so the
# outcomes' calibration tests fail as they would for a model that under-predicts.
MATURED = """
import sys, uuid
from pathlib import Path
import numpy as np, pandas as pd
from {p}.core.contract import load_contract
from {p}.core.reports import ModelMeta
from {p}.serving.audit import AuditLog, KeyRing
meta, contract = ModelMeta.read(Path("models/model_meta.json")), load_contract(Path("contract.yaml"))
identity = {{"package_version": "0.1.0", "run_id": meta.run_id, "git_sha": meta.git_sha,
            "contract": contract.name, "contract_version": contract.version}}
rng = np.random.default_rng(7)
pd_ = rng.uniform(0.01, 0.45, 3000)
ids = [str(uuid.UUID(int=i + 1)) for i in range(len(pd_))]
writer = AuditLog(Path("data/monitoring/decisions.jsonl"), b"act-input-key", KeyRing.from_env(),
                  Path("data/monitoring/checkpoints.jsonl"))
writer.append({{"timestamp": "2026-01-05T10:00:00.000Z", "decision_id": i, "model": identity, "input_hash": "0" * 64,
               "score": float(s), "decision": "x", "reasons": [], "latency_ms": 1.0, "api_key_id": None,
               "request_id": ""}} for i, s in zip(ids, pd_))
writer.close()
outcome = (rng.random(len(pd_)) < np.minimum(2 * pd_, 1)).astype(int)
pd.DataFrame({{"decision_id": ids, "outcome": outcome, "date": "2026-11-30"}}).to_csv(sys.argv[1], index=False)
"""


def write_matured_labels(pipeline_repo, repo: Path) -> Path:
    """data/monitoring/{decisions,checkpoints}.jsonl and outcomes.csv, written with the bake's own code."""
    python = pipeline_repo("credit_scoring") / ".venv/bin/python"
    package = yaml.safe_load((repo / "dvc.yaml").read_text())["stages"]["generate"]["cmd"].split()[-1].split(".")[0]
    labels = repo / "data/monitoring/outcomes.csv"
    labels.parent.mkdir(parents=True, exist_ok=True)
    proc = run([str(python), "-c", MATURED.format(p=package), str(labels)], repo, AUDIT_CHAIN_KEY=CHAIN_KEY)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    return labels


@pytest.mark.e2e
def test_act_monitor_opens_one_issue_then_updates_it(pipeline_repo, tmp_path):
    """Run 1: drift opens the issue (no labels yet: the outcomes step is skipped). Run 2: no drift,
    but matured labels arrived whose defaults run at twice the predicted PD: `make outcomes`
    fails its tests, and that alone makes the alert job comment on the same issue."""
    repo = committed_copy(pipeline_repo, "credit_scoring", tmp_path)
    first = run_act_dispatch(repo, tmp_path / "run1", "monitor.yml", {"demo_drift": DRIFT["credit_scoring"]}, {"RETRAIN_ON_ALERT": "true"})
    assert first.returncode == 0, first.describe()
    assert first.jobs == {"monitor": "success", "alert": "success", "retrain": "success"}, first.describe()
    report = json.loads((first.artifacts / "monitoring" / "latest.json").read_text())
    alerts = {k for k, f in report["figures"].items() if f["verdict"]["status"] == "fail"}
    assert alerts == {"score", "annual_income", "debt_to_income"}, report["reasons"]
    summary = first.summary("monitor")
    assert "## Model monitoring: 🚨 ALERT" in summary and "| annual_income | CSI" in summary
    assert all(call["token"] for call in first.comments)
    # The alert and retrain jobs run side by side: order matters only within the issue job.
    issue_calls = [call for call in first.comments if call["argv"][0] != "workflow"]
    verbs = [call["argv"][:2] for call in issue_calls]
    assert verbs == [["issue", "list"], ["label", "create"], ["issue", "create"]], verbs
    create = issue_calls[2]
    assert create["argv"][create["argv"].index("--label") + 1] == "model-monitoring"
    assert create["body"].startswith("## Model monitoring: 🚨 ALERT") and "/actions/runs/" in create["body"]
    assert "![" not in create["body"] and "![" not in summary, "plot files are artifacts, not links that would break"
    dispatches = [call["argv"] for call in first.comments if call["argv"][0] == "workflow"]
    assert len(dispatches) == 1, dispatches
    dispatch = dispatches[0]
    assert dispatch[2] == "retrain.yml" and any(a.startswith("reason=monitoring ALERT: ") for a in dispatch)
    assert first.steps.get(("monitor", "Outcomes on matured labels")) in (None, "skipped"), first.describe()
    assert not (first.artifacts / "monitoring/outcomes.json").exists()

    write_matured_labels(pipeline_repo, repo)
    # A batch drifted by nothing: the same distribution as training, so drift raises no alert.
    second = run_act_dispatch(repo, tmp_path / "run2", "monitor.yml", {"demo_drift": "annual_income=0"},
                              secrets={"AUDIT_CHAIN_KEY": CHAIN_KEY})
    assert second.returncode == 0 and second.jobs["alert"] == "success", second.describe()
    assert second.steps[("monitor", "Outcomes on matured labels")] == "success", second.describe()
    assert "retrain" not in second.jobs or second.jobs["retrain"] == "skipped", "retraining is opt-in (RETRAIN_ON_ALERT)"
    drift = json.loads((second.artifacts / "monitoring/latest.json").read_text())
    assert drift["status"] != "ALERT", drift["reasons"]
    outcomes = json.loads((second.artifacts / "monitoring/outcomes.json").read_text())
    assert outcomes["status"] == "FAIL" and outcomes["joined"] == 3000, outcomes["failed_tests"]
    assert any(":jeffreys:" in t for t in outcomes["failed_tests"]), outcomes["failed_tests"]
    assert "Outcomes on matured labels: 🚨 FAIL" in second.summary("monitor")
    verbs = [call["argv"][:3] for call in second.comments]
    assert verbs == [["issue", "list", "--repo"], ["issue", "comment", "1"]], verbs
    state = json.loads((tmp_path / "gh-state.json").read_text())
    assert len(state["issues"]) == 1 and len(state["issues"][0]["comments"]) == 1
    comment = state["issues"][0]["comments"][0]
    assert comment.startswith(f"## Model monitoring: {'✅' if drift['status'] == 'OK' else '⚠️'} {drift['status']}")
    assert "Outcomes on matured labels: 🚨 FAIL" in comment


def set_data_path(repo: Path, path: str) -> None:
    params = repo / "params.yaml"
    text = params.read_text()
    new = re.sub(r"(?m)^(  path: ).*$", rf"\g<1>{path}", text, count=1)
    assert new != text
    params.write_text(new)


@pytest.mark.e2e
def test_act_retrain_pushes_a_branch_and_opens_the_pull_request(pipeline_repo, tmp_path):
    repo = committed_copy(pipeline_repo, "credit_scoring", tmp_path)
    make(repo, "setup")
    package = yaml.safe_load((repo / "dvc.yaml").read_text())["stages"]["generate"]["cmd"].split()[-1].split(".")[0]
    source = tmp_path / "source" / "applications.parquet"
    source.parent.mkdir()
    # The "new data" arriving upstream: the same file first (a pointer change only), then fresh rows.
    write = (
        "import sys; from pathlib import Path; from {p}.core.contract import load_contract; "
        "from {p}.data.generate import generate, write_synthetic; "
        "write_synthetic(generate(load_contract('contract.yaml'), 20000, int(sys.argv[1])), Path(sys.argv[2]))"
    ).format(p=package)
    check(["uv", "run", "--locked", "python", "-c", write, "42", str(source)], repo)
    check(["uv", "run", "--locked", "dvc", "import-url", str(source), "data/external/applications.parquet"], repo)
    set_data_path(repo, "data/external/applications.parquet")
    make(repo, "repro")
    bare = tmp_path / "origin.git"
    check(["git", "init", "-q", "--bare", str(bare)], tmp_path)
    git(repo, "add", "-A")
    git(repo, "commit", "-q", "-m", "Data imported with dvc import-url")
    git(repo, "remote", "add", "origin", str(bare))
    git(repo, "push", "-q", "origin", "main")
    before = git(repo, "rev-parse", "main").strip()
    check(["uv", "run", "--locked", "python", "-c", write, "4242", str(source)], repo)

    result = run_act_dispatch(repo, tmp_path / "run", "retrain.yml", {"reason": "monitoring ALERT: drift in annual_income"})
    assert result.returncode == 0 and result.jobs == {"retrain": "success"}, result.describe()
    branches = check(["git", "for-each-ref", "--format=%(refname:short)", "refs/heads/"], bare).split()
    retrain = [b for b in branches if b.startswith("retrain/")]
    assert len(retrain) == 1, branches
    changed = set(check(["git", "diff", "--name-only", before, retrain[0]], bare).split())
    assert {"dvc.lock", "data/external/applications.parquet.dvc", "models/model_meta.json", "models/reference.json",
            "reports/metrics.json"} <= changed, changed
    assert check(["git", "log", "-1", "--format=%s", retrain[0]], bare).strip() == "Retrain: monitoring ALERT: drift in annual_income"
    assert [c["argv"][:2] for c in result.comments] == [["pr", "create"]]
    argv, body = result.comments[0]["argv"], result.comments[0]["body"]
    assert argv[argv.index("--head") + 1] == retrain[0] and argv[argv.index("--base") + 1] == "main"
    assert argv[argv.index("--title") + 1] == "Retrain: monitoring ALERT: drift in annual_income"
    assert body.startswith("## Retraining: monitoring ALERT: drift in annual_income")
    assert "GitHub started **no workflow** on it" in body and "dvc.lock" in body
    assert result.steps.get(("retrain", "GitHub App token")) in (None, "skipped")
