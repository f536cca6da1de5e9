"""The generated GitHub workflows, checked as GitHub would and then run for real with act.

Static checks (schema, zizmor, shellcheck, pins, permissions) run on bakes that together
cover every `dvc_remote` and `publish_report_images` value and both use cases.

The act tests bake a repository per use case, run its pipeline on `main` and commit the
result (the champion), then open pull requests as branches and run the `pull_request` event
of `ci.yml` with act in host mode. Remote actions are mapped to the stand-ins in
`tests/act/` (see its README); uv, ruff, pytest, DVC, the gates and the report run for real.
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import pytest
import yaml
from helpers import TELEMETRY_OFF, bake, copy_project, env

ROOT = Path(__file__).resolve().parent.parent
STANDINS = ROOT / "tests" / "act"
sys.path.insert(0, str(STANDINS))
import npm_registry  # noqa: E402  (tests/act is not a package)
OWNER = "acme-bank"

# Bakes for the static checks: every remote, both image options, both use cases.
STATIC_BAKES = {
    "credit-local-noimages": {"use_case": "credit_scoring", "dvc_remote": "local", "publish_report_images": "no"},
    "fraud-local-images": {"use_case": "fraud_detection", "dvc_remote": "local", "publish_report_images": "yes"},
    "credit-s3-images": {"use_case": "credit_scoring", "dvc_remote": "s3", "publish_report_images": "yes"},
    "fraud-gcs-noimages": {"use_case": "fraud_detection", "dvc_remote": "gcs", "publish_report_images": "no"},
    "credit-azure-noimages": {"use_case": "credit_scoring", "dvc_remote": "azure", "publish_report_images": "no"},
}

# Which remote actions the stand-ins replace (owner/repo -> tests/act/<dir>).
STANDIN_DIRS = {
    "actions/checkout": "checkout",
    "actions/setup-python": "setup-python",
    "astral-sh/setup-uv": "setup-uv",
    "actions/upload-artifact": "upload-artifact",
    "actions/download-artifact": "download-artifact",
}

TELEMETRY_ENV = TELEMETRY_OFF


def tool(name: str) -> str:
    """A command-line tool from requirements-dev.txt: next to this Python, else on PATH."""
    beside = Path(sys.executable).parent / name
    if beside.exists():
        return str(beside)
    found = shutil.which(name)
    if found is None:
        pytest.fail(f"`{name}` is not installed: `make test` installs it from requirements-dev.txt")
    return found


def run(cmd: list[str], cwd: Path, timeout: int = 600, **extra_env: str) -> subprocess.CompletedProcess:
    return subprocess.run(cmd, cwd=cwd, capture_output=True, text=True, timeout=timeout, env=env(**extra_env))


def check(cmd: list[str], cwd: Path, timeout: int = 600) -> str:
    proc = run(cmd, cwd, timeout)
    assert proc.returncode == 0, f"`{' '.join(cmd)}` failed in {cwd} ({proc.returncode}):\n{proc.stdout}\n{proc.stderr}"
    return proc.stdout


def workflows(repo: Path) -> list[Path]:
    found = sorted((repo / ".github" / "workflows").glob("*.yml"))
    assert found, f"no workflows in {repo}/.github/workflows"
    return found


def load(path: Path) -> dict:
    # PyYAML reads the key `on` as True; give it back its name.
    data = yaml.safe_load(path.read_text())
    if True in data:
        data["on"] = data.pop(True)
    return data


def checkout_state() -> str:
    """The template checkout as git sees it, ignored files one by one (except the venv and caches)."""
    return check(["git", "status", "--porcelain", "--ignored=traditional", "--untracked-files=all", "--", ".",
                  ":(exclude).venv", ":(exclude).pytest_cache", ":(exclude,glob)**/__pycache__/**"], ROOT)


@pytest.fixture(autouse=True)
def the_checkout_is_left_alone():
    """Every test here writes into its tmp_path only: the template checkout is unchanged afterwards."""
    before = checkout_state()
    yield
    after = checkout_state()
    assert after == before, f"the test changed the template checkout {ROOT}:\n" + "\n".join(
        sorted(set(after.splitlines()) ^ set(before.splitlines()))
    )


@pytest.fixture(scope="module", params=sorted(STATIC_BAKES))
def baked(request, tmp_path_factory) -> Path:
    return bake(tmp_path_factory.mktemp(request.param), **STATIC_BAKES[request.param])


@pytest.fixture
def options(request) -> dict:
    return STATIC_BAKES[request.node.callspec.params["baked"]]


# --- static checks ---------------------------------------------------------------------


def test_workflows_and_dependabot_match_githubs_schemas(baked):
    check([tool("check-jsonschema"), "--builtin-schema", "vendor.github-workflows", *map(str, workflows(baked))], baked)
    check([tool("check-jsonschema"), "--builtin-schema", "vendor.dependabot", ".github/dependabot.yml"], baked)
    ecosystems = {u["package-ecosystem"] for u in yaml.safe_load((baked / ".github/dependabot.yml").read_text())["updates"]}
    assert {"github-actions", "uv", "docker"} <= ecosystems


@pytest.mark.parametrize("persona", ["regular", "pedantic"])
def test_zizmor_finds_nothing(baked, persona):
    """Clean at the default persona; pedantic findings are fixed or carry a reasoned ignore."""
    proc = run([tool("zizmor"), "--offline", "--no-progress", "--persona", persona, ".github"], baked)
    assert proc.returncode == 0, f"zizmor ({persona}) findings:\n{proc.stdout}\n{proc.stderr}"
    assert "No findings to report" in proc.stdout + proc.stderr
    for line in (baked / ".github/workflows/ci.yml").read_text().splitlines():
        if "zizmor: ignore" in line:
            assert re.search(r"zizmor: ignore\[[\w-]+\]\s+\S", line), f"ignore without a reason: {line.strip()}"


def run_scripts(workflow: dict) -> list[tuple[str, str]]:
    """Every `run:` script of a workflow or composite action, as (where, script)."""
    scripts = []
    steps_by_owner = {f"job {job_id}": job.get("steps", []) for job_id, job in (workflow.get("jobs") or {}).items()}
    if "runs" in workflow:
        steps_by_owner["composite"] = workflow["runs"].get("steps", [])
    for owner, steps in steps_by_owner.items():
        for index, step in enumerate(steps):
            if "run" in step:
                scripts.append((f"{owner}, step {step.get('name', index)!r}", step["run"]))
    return scripts


def shellcheck(where: str, script: str, tmp_path: Path) -> str | None:
    # An expression is replaced by a plain word: shellcheck then judges the shell around it.
    text = re.sub(r"\$\{\{.*?\}\}", "GITHUB_EXPRESSION", script, flags=re.S)
    path = tmp_path / "step.sh"
    path.write_text("#!/usr/bin/env bash\n" + text)
    proc = run([tool("shellcheck"), "--shell=bash", "--severity=style", str(path)], tmp_path)
    return None if proc.returncode == 0 else f"{where}:\n{proc.stdout}"


def test_shellcheck_every_run_script(baked, tmp_path):
    problems, count = [], 0
    for path in workflows(baked):
        for where, script in run_scripts(load(path)):
            count += 1
            problems.append(shellcheck(f"{path.name}, {where}", script, tmp_path))
    assert count >= 8, f"expected the ci.yml steps to be found, found {count} run scripts"
    assert not [p for p in problems if p], "\n".join(p for p in problems if p)


def test_shellcheck_act_standins(tmp_path):
    problems = [shellcheck(f"{action.parent.name}, {where}", script, tmp_path)
                for action in sorted(STANDINS.glob("*/action.yml")) for where, script in run_scripts(load(action))]
    assert problems, "no stand-in actions found"
    assert not [p for p in problems if p], "\n".join(p for p in problems if p)


USES = re.compile(r"^\s*(?:-\s+)?uses:\s*(?P<action>[\w.-]+/[\w./-]+)@(?P<ref>\S+)(?P<comment>.*)$")


def test_every_action_is_pinned_to_a_sha_with_its_version(baked):
    pins: dict[str, set[str]] = {}
    for path in workflows(baked):
        for line in path.read_text().splitlines():
            if (m := USES.match(line)) is None:
                continue
            assert re.fullmatch(r"[0-9a-f]{40}", m["ref"]), f"{path.name}: {m['action']} is not pinned to a commit: {line}"
            assert re.fullmatch(r"\s+# v\d+\.\d+\.\d+", m["comment"]), f"{path.name}: no `# vX.Y.Z` comment: {line}"
            pins.setdefault(m["action"], set()).add(m["ref"])
    assert pins, "no `uses:` found"
    assert all(len(refs) == 1 for refs in pins.values()), f"one action pinned to several commits: {pins}"
    assert not {"iterative/setup-cml", "iterative/setup-dvc"} & set(pins), "node16 actions; CML comes from npm, DVC from uv"


def test_ci_security_and_shape(baked):
    ci = load(baked / ".github/workflows/ci.yml")
    assert set(ci["on"]) == {"pull_request", "push"} and ci["on"]["push"]["branches"] == ["main"]
    assert "pull_request_target" not in (baked / ".github/workflows/ci.yml").read_text()
    assert ci["permissions"] == {"contents": "read"}
    assert ci["concurrency"]["group"] == "${{ github.workflow }}-${{ github.ref }}"
    assert "cancel-in-progress" in ci["concurrency"]
    assert TELEMETRY_ENV.items() <= ci["env"].items()
    assert re.fullmatch(r"\d+\.\d+\.\d+", ci["env"]["CML_VERSION"]), "CML must be installed at an exact version"
    assert set(ci["jobs"]) == {"lint", "tests", "pipeline", "comment"}
    # The suite checks the run's own model card against its dvc.lock and MLflow store, so the
    # tests job runs after the pipeline job, on the files that job kept for it.
    tests = ci["jobs"]["tests"]
    assert tests["needs"] == "pipeline" and "always()" in tests["if"]
    kept = next(s for s in ci["jobs"]["pipeline"]["steps"] if s.get("name") == "Keep the run for the tests job")
    assert {"dvc.lock", "mlflow.db", "models/model_meta.json", "reports/"} <= set(kept["with"]["path"].split())
    order = [s.get("name") for s in tests["steps"]]
    taken = next(s for s in tests["steps"] if "actions/download-artifact@" in s.get("uses", ""))
    assert taken["with"]["name"] == kept["with"]["name"]
    assert order.index(taken["name"]) < order.index("Unit, property and data tests")
    for job_id, job in ci["jobs"].items():
        assert isinstance(job.get("timeout-minutes"), int), f"job {job_id} has no timeout-minutes"
        writes = {k for k, v in (job.get("permissions") or {}).items() if v == "write"}
        assert writes == ({"pull-requests"} if job_id == "comment" else set()), f"job {job_id} may write {writes}"
        for step in job["steps"]:
            if "run" in step:  # values reach the shell through env:, never spliced into the script
                assert "${{" not in step["run"], f"job {job_id}: expression inside a run script: {step['run']}"
            if "actions/checkout@" in step.get("uses", ""):
                assert step["with"]["persist-credentials"] is False
    comment_if = ci["jobs"]["comment"]["if"]
    assert "github.event.pull_request.head.repo.full_name == github.repository" in comment_if, "forks must not comment"
    assert "always()" in comment_if, "the comment must also be posted when a gate failed"
    steps = {s.get("name"): s for s in ci["jobs"]["pipeline"]["steps"]}
    assert steps["Gates"]["run"].startswith("make gates")
    assert "always()" in steps["Gates"]["if"] and "always()" in steps["Report"]["if"]
    assert 'cat reports/report.md >> "$GITHUB_STEP_SUMMARY"' in steps["Report"]["run"]


def test_report_images_follow_the_bake_option(baked, options):
    ci = load(baked / ".github/workflows/ci.yml")
    comment = next(s for s in ci["jobs"]["comment"]["steps"] if "cml comment update" in s.get("run", ""))["run"]
    report = next(s for s in ci["jobs"]["pipeline"]["steps"] if s.get("name") == "Report")
    publish = "--publish " in comment
    assert publish != ("--no-publish" in comment), comment
    assert report["env"]["REPORT_IMAGES"] == ("embed" if publish else "link")
    assert "--target=pr" in comment and "--watermark-title=" in comment
    assert publish == (options["publish_report_images"] == "yes")


# --- act -------------------------------------------------------------------------------


@dataclass
class ActRun:
    returncode: int
    seconds: float
    events: list[dict]
    comments: list[dict]
    artifacts: Path
    log_path: Path
    jobs: dict[str, str] = field(default_factory=dict)
    steps: dict[tuple[str, str], str] = field(default_factory=dict)

    def __post_init__(self) -> None:
        for e in self.events:
            if "jobResult" in e:
                self.jobs[e["jobID"]] = e["jobResult"]
            if "stepResult" in e and e.get("stage") == "Main":
                self.steps[(e["jobID"], e["step"])] = e["stepResult"]

    def summary(self, job: str) -> str:
        """What the job wrote to $GITHUB_STEP_SUMMARY."""
        return "".join(e["content"] for e in self.events if e.get("jobID") == job and e.get("command") == "summary")

    def output(self, job: str) -> str:
        return "".join(e["msg"] for e in self.events if e.get("jobID") == job and e.get("raw_output"))

    def describe(self) -> str:
        return f"act exited {self.returncode} after {self.seconds:.0f}s; jobs {self.jobs}; full log: {self.log_path}"


def git(repo: Path, *args: str) -> str:
    return check(["git", "-c", "user.name=CI", "-c", "user.email=ci@example.com", *args], repo)


def make(repo: Path, *targets: str, timeout: int = 1200) -> None:
    proc = run(["make", *targets], repo, timeout=timeout)
    assert proc.returncode == 0, f"make {' '.join(targets)} failed in {repo}:\n{proc.stdout[-4000:]}\n{proc.stderr[-4000:]}"


def pinned_actions(repo: Path, workflow: str | None = None) -> dict[str, str]:
    pins = {}
    for path in workflows(repo) if workflow is None else [repo / ".github/workflows" / workflow]:
        for line in path.read_text().splitlines():
            if m := USES.match(line):
                pins[m["action"]] = m["ref"]
    return pins


def pull_request_event(repo: Path, branch: str, number: int, fork: bool = False) -> dict:
    project = repo.name
    head_repo = f"{'someone-else' if fork else OWNER}/{project}"
    return {
        "action": "synchronize",
        "number": number,
        "pull_request": {
            "number": number,
            "head": {"ref": branch, "sha": git(repo, "rev-parse", branch).strip(),
                     "repo": {"full_name": head_repo, "fork": fork}},
            "base": {"ref": "main", "sha": git(repo, "rev-parse", "main").strip(),
                     "repo": {"full_name": f"{OWNER}/{project}"}},
        },
        "repository": {"full_name": f"{OWNER}/{project}", "name": project, "owner": {"login": OWNER}},
    }


def run_act(repo: Path, work: Path, event: dict, job: str | None = None, secrets: dict[str, str] | None = None,
            workflow: str = "ci.yml", event_name: str = "pull_request",
            standins: dict[str, Path] | None = None, act_env: dict[str, str] | None = None,
            act_vars: dict[str, str] | None = None) -> ActRun:
    """Run ``event_name`` (the pull_request event of ci.yml by default) on the checked-out branch of ``repo``.

    Every action of ci.yml must have a stand-in. For another workflow run with ``job``,
    actions without one are left unmapped: they belong to jobs act does not run.
    ``standins`` adds stand-ins (owner/repo -> directory) for that run; ``act_vars`` are the
    repository variables (``vars.X``) the run sees.
    """
    work.mkdir(parents=True, exist_ok=True)
    event_path = work / "event.json"
    event_path.write_text(json.dumps(event))
    artifacts, comments, log_path = work / "artifacts", work / "cml-calls.jsonl", work / "act.log.jsonl"
    artifacts.mkdir(exist_ok=True)
    mappings = []
    dirs = {**{a: STANDINS / d for a, d in STANDIN_DIRS.items()}, **(standins or {})}
    for action, sha in pinned_actions(repo, workflow).items():
        if action not in dirs and workflow != "ci.yml" and job is not None:
            continue
        assert action in dirs, f"{workflow} uses {action}, which has no stand-in in tests/act/ for act runs"
        mappings += ["--local-repository", f"{action}@{sha}={dirs[action]}"]
    ci = load(repo / ".github/workflows/ci.yml")
    cml_version = ci["env"]["CML_VERSION"]
    with npm_registry.serve(STANDINS / "cml", cml_version) as registry:
        cmd = [
            tool("act"), event_name,
            "--workflows", f".github/workflows/{workflow}",
            "--eventpath", str(event_path),
            "-P", "ubuntu-latest=-self-hosted",
            "--json", "--no-cache-server",
            "--action-cache-path", str(work / "act-cache"),
            "--secret", "GITHUB_TOKEN=token-for-act",
            *[arg for name, value in (secrets or {}).items() for arg in ("--secret", f"{name}={value}")],
            "--env", f"ACT_ARTIFACTS_DIR={artifacts}",
            *[arg for name, value in (act_env or {}).items() for arg in ("--env", f"{name}={value}")],
            *[arg for name, value in (act_vars or {}).items() for arg in ("--var", f"{name}={value}")],
            "--env", f"CML_STANDIN_LOG={comments}",
            "--env", f"npm_config_registry={registry}",
            "--env", f"npm_config_cache={work / 'npm-cache'}",
            *mappings,
            *(["--job", job] if job else []),
        ]
        started = time.monotonic()
        proc = run(cmd, repo, timeout=2400)
        seconds = time.monotonic() - started
    log_path.write_text(proc.stdout + proc.stderr)
    events = []
    for line in proc.stdout.splitlines():
        if line.startswith("{"):
            try:
                events.append(json.loads(line))
            except json.JSONDecodeError:
                pass
    calls = [json.loads(line) for line in comments.read_text().splitlines()] if comments.exists() else []
    result = ActRun(proc.returncode, seconds, events, calls, artifacts, log_path)
    # The run's time, beside its log in the test's own directory (never in the template checkout).
    timing = f"{repo.name} {git(repo, 'branch', '--show-current').strip()} job={job or 'all'}: {seconds:.0f}s, exit {proc.returncode}"
    (work / "act-timing.txt").write_text(timing + "\n")
    print(timing)
    print(result.describe())
    return result


@pytest.fixture(scope="module", params=["credit_scoring", "fraud_detection"])
def champion(request, tmp_path_factory, pipeline_repo) -> Path:
    """A baked repository whose main branch carries a reproduced pipeline and its metrics."""
    use_case = request.param
    repo = copy_project(pipeline_repo(use_case), tmp_path_factory.mktemp(f"act-{use_case}") / pipeline_repo(use_case).name)
    make(repo, "setup")
    git(repo, "add", "-A")
    git(repo, "commit", "-q", "--allow-empty", "-m", "Champion: pipeline reproduced on main")
    assert (repo / "reports/metrics.json").exists(), "make repro wrote no reports/metrics.json"
    git(repo, "remote", "add", "origin", f"https://github.com/{OWNER}/{repo.name}.git")
    # What actions/checkout with fetch-depth: 0 gives: the base branch as origin/main.
    git(repo, "update-ref", "refs/remotes/origin/main", "main")
    return repo


def use_case_facts(repo: Path) -> dict:
    """The baked use case's facts (src/<package>/core/use_case.yaml)."""
    (facts,) = repo.glob("src/*/core/use_case.yaml")
    return yaml.safe_load(facts.read_text())


def headline(repo: Path) -> str:
    return use_case_facts(repo)["headline_metric"]


def set_param(repo: Path, dotted: str, value) -> None:
    """Change one value in params.yaml, keeping the file's comments and layout."""
    path = repo / "params.yaml"
    lines = path.read_text().splitlines(keepends=True)
    *parents, key = dotted.split(".")
    depth, indent = 0, ""
    for i, line in enumerate(lines):
        stripped = line.strip()
        if depth < len(parents) and stripped.startswith(f"{parents[depth]}:") and line.startswith(indent):
            depth += 1
            indent += "  "
        elif depth == len(parents) and line.startswith(indent) and stripped.startswith(f"{key}:"):
            comment = "  #" + line.split("#", 1)[1].rstrip("\n") if "#" in line else ""
            lines[i] = f"{indent}{key}: {json.dumps(value)}{comment}\n"
            path.write_text("".join(lines))
            assert yaml.safe_load(path.read_text()) is not None
            return
    pytest.fail(f"params.yaml has no {dotted}")


def open_pull_request(repo: Path, branch: str, changes: dict) -> None:
    git(repo, "checkout", "-q", "-B", branch, "main")
    for dotted, value in changes.items():
        set_param(repo, dotted, value)
    git(repo, "commit", "-q", "-am", f"Change {', '.join(changes)}")


@pytest.mark.e2e
def test_act_pull_request_passes_and_comments(champion, tmp_path):
    repo = champion
    open_pull_request(repo, "tune-learning-rate", {"model.learning_rate": 0.06})
    result = run_act(repo, tmp_path, pull_request_event(repo, "tune-learning-rate", 7))

    assert result.returncode == 0, result.describe()
    assert result.jobs == {"lint": "success", "tests": "success", "pipeline": "success", "comment": "success"}, \
        result.describe()
    # everything of consequence ran, for real
    for step in ["Set up the environment from uv.lock", "Run the pipeline (dvc repro)", "Gates", "Report"]:
        assert result.steps[("pipeline", step)] == "success", f"{step}: {result.steps.get(('pipeline', step))}"
    assert "gates: all" in result.output("pipeline")
    # The repository's whole suite ran on the pipeline's outputs. One use case per repository: every test
    # applies there, so none may skip (a skip would hide a test that cannot run in a user's CI either).
    plain = re.sub(r"\x1b\[[0-9;]*m", "", result.output("tests"))  # pytest colours its lines on a runner
    summaries = [line.strip() for line in plain.splitlines() if re.fullmatch(r"=+ .* in [\d.]+s( \(.*\))? =+", line.strip())]
    assert summaries, result.describe()
    assert " passed" in summaries[-1] and "skipped" not in summaries[-1] and "failed" not in summaries[-1], summaries

    report = (result.artifacts / "reports" / "report.md").read_text()
    metric = headline(repo)
    assert "✅ **All " in report and "gates passed** against `origin/main`" in report
    assert re.search(rf"\| \*\*{metric}\*\* \(headline\) \| \d\.\d{{4}} \| \d\.\d{{4}} \| [+-]\d\.\d{{4}} \|", report), report
    assert "| `model.learning_rate` | 0.05 | 0.06 |" in report
    # The validator's and the regulator's documents this run wrote, listed as this run's.
    assert "| Technical documentation (EU AI Act Art. 11, Annex IV) | `reports/regulatory/technical_documentation.md` |" \
        in report.split("### Documents for validators and regulators", 1)[1].split("Not produced in this run", 1)[0], report

    assert len(result.comments) == 1, f"expected one cml call, got {result.comments}"
    call = result.comments[0]
    assert call["args"][:3] == ["comment", "update", "--target=pr"]
    assert any(a.startswith("--watermark-title=") for a in call["args"])
    assert "--no-publish" in call["args"] and call["args"][-1] == "reports/report.md"
    assert call["body"] == report, "the comment must be the report the pipeline wrote"
    assert result.summary("pipeline").strip() == report.strip(), "the step summary must carry the same report"
    assert call["token_present"] and call["event"] == "pull_request"


def degrade_the_model(repo: Path) -> str:
    """A pull request that makes the model much weaker; the pipeline itself still succeeds."""
    # One stump instead of a boosted ensemble.
    open_pull_request(repo, "weaker-model", {"model.max_iter": 1, "model.max_leaf_nodes": 2})
    return "weaker-model"


def break_the_data(repo: Path, branch: str = "broken-data") -> tuple[str, str]:
    """A pull request that brings its own extract in which one feature breaks the contract."""
    contract = yaml.safe_load((repo / "contract.yaml").read_text())
    column = next(c for c in contract["columns"] if c["role"] == "feature" and isinstance(c.get("min"), int | float))
    git(repo, "checkout", "-q", "-B", branch, "main")
    source = yaml.safe_load((repo / "params.yaml").read_text())["data"]["path"]
    target = "data/external/new_extract.parquet"
    script = (
        "import pandas as pd\n"
        f"df = pd.read_parquet({source!r})\n"
        f"df.loc[df.index[:25], {column['name']!r}] = {column['min']} - 1\n"
        f"df.to_parquet({target!r}, index=False)\n"
    )
    proc = run(["uv", "run", "--locked", "python", "-c", script], repo)
    assert proc.returncode == 0, f"could not write the broken extract:\n{proc.stderr}"
    set_param(repo, "data.path", target)
    git(repo, "add", target, "params.yaml")
    git(repo, "commit", "-q", "-m", f"Use a new extract ({column['name']} below its contract minimum in 25 rows)")
    return branch, column["name"]


@pytest.mark.e2e
def test_act_pull_request_failing_a_gate_is_blocked_and_says_why(champion, tmp_path):
    """Credit: a weaker model fails the metric and benchmark gates. Fraud: broken data fails validation.

    One failing scenario per use case keeps the suite's act time down; together they
    cover both gates. Only the pipeline and comment jobs run (`--job comment`).
    """
    repo = champion
    use_case = use_case_facts(repo)["name"]
    metric = headline(repo)
    if use_case == "credit_scoring":
        branch = degrade_the_model(repo)
    else:
        branch, column = break_the_data(repo)
    # A repository with real data has this secret; without it prepare refuses the extract.
    secrets = {"PII_HMAC_KEY": "k" * 40}
    result = run_act(repo, tmp_path, pull_request_event(repo, branch, 8), job="comment", secrets=secrets)

    assert result.returncode != 0, result.describe()
    assert result.jobs == {"pipeline": "failure", "comment": "success"}, result.describe()
    assert result.steps[("pipeline", "Gates")] == "failure", result.describe()
    assert result.steps[("pipeline", "Report")] == "success", result.describe()
    output = result.output("pipeline")
    [call] = result.comments
    if use_case == "credit_scoring":
        assert result.steps[("pipeline", "Run the pipeline (dvc repro)")] == "success"
        assert "PASS data_validation" in output
        assert re.search(rf"FAIL headline_metric: {metric} = \d\.\d{{4}} < \d\.\d{{4}} \(baseline", output), output[-3000:]
        # The benchmark gate (issue 18) stops the same model: it trails the scorecard beyond noise.
        assert re.search(rf"FAIL benchmark: {metric}: model \d\.\d{{4}} vs benchmark \(.+\) \d\.\d{{4}}: difference -", output), output[-3000:]
        assert "❌ **Gate failed: headline_metric, benchmark**" in call["body"]
    else:
        # validate stops the pipeline; the gates still run and name the reason
        assert result.steps[("pipeline", "Run the pipeline (dvc repro)")] == "failure"
        assert re.search(rf"FAIL data_validation: \d+ expectation\(s\) failed: column '{column}'", output), output[-3000:]
        assert f"FAIL headline_metric: {metric}: not evaluated because data validation did not pass" in output
        assert "❌ **Gate failed: pipeline, data_validation, headline_metric" in call["body"]
        assert f"| {column} |" in call["body"]


@pytest.mark.e2e
@pytest.mark.parametrize("champion", ["fraud_detection"], indirect=True)
def test_act_fork_pull_request_runs_without_secrets_or_comment(champion, tmp_path):
    """A fork's pull request: the pipeline runs and fails closed, the summary says why, no comment.

    Its new extract needs PII_HMAC_KEY, which GitHub does not give forks: prepare refuses
    it, so the gates judge an unfinished pipeline. One use case only (about 30 s).
    """
    repo = champion
    branch, _ = break_the_data(repo, branch="fork-extract")
    # `--job comment` runs pipeline, then decides on comment: exactly the part that differs for forks
    result = run_act(repo, tmp_path, pull_request_event(repo, branch, 9, fork=True), job="comment")

    assert result.returncode != 0, result.describe()
    assert result.jobs["pipeline"] == "failure", result.describe()
    assert "comment" not in result.jobs, f"a fork's run must not comment: {result.describe()}"
    assert result.comments == []
    assert result.steps[("pipeline", "Run the pipeline (dvc repro)")] == "failure"
    assert "PII_HMAC_KEY is not set" in result.output("pipeline")
    assert result.steps[("pipeline", "Gates")] == "failure"
    assert "FAIL pipeline: the pipeline did not finish in this run" in result.output("pipeline")
    summary = result.summary("pipeline")
    assert "❌ **Gate failed: pipeline, data_validation, headline_metric" in summary
    assert "Not known: the pipeline did not finish in this run" in summary


# --- step scripts, run on their own ----------------------------------------------------


def step_script(repo: Path, job: str, name: str) -> str:
    steps = load(repo / ".github/workflows/ci.yml")["jobs"][job]["steps"]
    return next(s["run"] for s in steps if s.get("name") == name)


def run_step(script: str, tmp_path: Path, **step_env: str) -> subprocess.CompletedProcess:
    """Run a step's script the way GitHub does (bash -e -o pipefail), with a recording `uv`."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir(exist_ok=True)
    fake_uv = bin_dir / "uv"
    fake_uv.write_text('#!/usr/bin/env bash\necho "$*" >> "$FAKE_UV_LOG"\n'
                       'if [ "$*" = "run dvc remote list" ]; then printf "%s" "$FAKE_REMOTES"; fi\n')
    fake_uv.chmod(0o755)
    path = tmp_path / "step.sh"
    path.write_text(script)
    outputs = tmp_path / "github_output"
    outputs.touch()
    base = {"PATH": f"{bin_dir}:/usr/bin:/bin", "FAKE_UV_LOG": str(tmp_path / "uv.log"), "GITHUB_OUTPUT": str(outputs),
            "RUNNER_TEMP": str(tmp_path), "HOME": str(tmp_path)}
    return subprocess.run(["bash", "--noprofile", "--norc", "-eo", "pipefail", str(path)], cwd=tmp_path,
                          capture_output=True, text=True, env={**base, **step_env}, timeout=60)


def test_baseline_is_the_target_branch_on_a_pr_and_the_commit_itself_on_main(baked, tmp_path):
    script = step_script(baked, "pipeline", "Choose the baseline")
    assert run_step(script, tmp_path, BASE_REF="release-2").returncode == 0
    assert (tmp_path / "github_output").read_text() == "rev=origin/release-2\n"
    (tmp_path / "github_output").write_text("")
    assert run_step(script, tmp_path, BASE_REF="").returncode == 0
    assert (tmp_path / "github_output").read_text() == "rev=HEAD\n"


CREDENTIALS = {
    "s3": {"AWS_ACCESS_KEY_ID": "AKIA-test", "AWS_SECRET_ACCESS_KEY": "secret"},
    "gcs": {"GCP_CREDENTIALS_JSON": '{"type": "service_account"}'},
    "azure": {"AZURE_STORAGE_CONNECTION_STRING": "DefaultEndpointsProtocol=https;AccountName=x"},
}


def test_dvc_pull_runs_only_with_a_remote_and_its_credentials(baked, options, tmp_path):
    script = step_script(baked, "pipeline", "Pull data from the DVC remote")
    remote = options["dvc_remote"]
    url = {"local": "../x-dvc-storage", "s3": "s3://b/x", "gcs": "gs://b/x", "azure": "azure://x"}[remote]
    log = tmp_path / "uv.log"

    proc = run_step(script, tmp_path, FAKE_REMOTES="")
    assert proc.returncode == 0, proc.stderr
    assert "No DVC remote configured" in proc.stdout
    assert "dvc pull" not in log.read_text()

    # a fork's run: the remote is there, the secrets are not
    proc = run_step(script, tmp_path, FAKE_REMOTES=f"storage\t{url}\n")
    assert proc.returncode == 0, proc.stderr
    assert "dvc pull" not in log.read_text()
    if remote == "local":
        assert "local path, not reachable from CI" in proc.stdout
        return
    assert "::notice title=dvc pull skipped::" in proc.stdout

    proc = run_step(script, tmp_path, FAKE_REMOTES=f"storage\t{url}\n", **CREDENTIALS[remote])
    assert proc.returncode == 0, proc.stderr
    assert log.read_text().splitlines()[-1] == "run dvc pull --allow-missing"
    assert not (tmp_path / "gcp-credentials.json").exists(), "the credentials file must not outlive the step"
