"""The generated release workflow: checked as GitHub would, then its verify and image jobs run with act.

Static checks (GitHub's schema, zizmor pedantic, shellcheck of every run script, SHA pins,
least-privilege permissions, images by digest) run on bakes of every deploy_target; the
kubernetes bakes of test_workflows.py check release.yml alongside ci.yml too.

The act tests push a tag to a copy of the baked, reproduced credit repository (the session
`pipeline_repo`) and run the `verify` job in host mode: the tag/version/main checks, the
model check against dvc.lock, the gates, the bento build and the release notes run for
real. For a good tag the `image` job runs too: `make image` with podman on the session's
local base and the push to the session's loopback registry (repository variables
IMAGE_REGISTRY and BASE_IMAGE); the login, Trivy, cosign and the attestation are stand-ins
that record their inputs (tests/act/). Signing, attesting, the registry, the GitHub release
and deploy need Sigstore, GitHub or a cluster: they are checked statically here, and their
logic (`<package>.ci.release`) is run directly against real MLflow and a real HTTP service.
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from helpers import bake, copy_project
from test_workflows import OWNER, STANDINS, check, git, load, make, run, run_act, run_scripts, shellcheck, tool

RELEASE_BAKES = {
    "kubernetes-s3": {"deploy_target": "kubernetes", "dvc_remote": "s3"},
    "bentocloud-gcs": {"deploy_target": "bentocloud", "dvc_remote": "gcs", "use_case": "fraud_detection"},
    "none-azure": {"deploy_target": "none", "dvc_remote": "azure"},
    "kubernetes-local": {"deploy_target": "kubernetes", "dvc_remote": "local"},
}
IMAGE_WRITERS = {"contents": "read", "packages": "write", "id-token": "write", "attestations": "write"}


@pytest.fixture(scope="module", params=sorted(RELEASE_BAKES))
def baked(request, tmp_path_factory) -> Path:
    return bake(tmp_path_factory.mktemp(request.param), **RELEASE_BAKES[request.param])


@pytest.fixture
def options(request) -> dict:
    return RELEASE_BAKES[request.node.callspec.params["baked"]]


def release(repo: Path) -> dict:
    return load(repo / ".github/workflows/release.yml")


# --- static checks ---------------------------------------------------------------------


def test_release_passes_schema_zizmor_and_shellcheck(baked, tmp_path):
    path = baked / ".github/workflows/release.yml"
    check([tool("check-jsonschema"), "--builtin-schema", "vendor.github-workflows", str(path)], baked)
    proc = run([tool("zizmor"), "--offline", "--no-progress", "--persona", "pedantic", str(path)], baked)
    assert proc.returncode == 0 and "No findings to report" in proc.stdout + proc.stderr, proc.stdout + proc.stderr
    scripts = run_scripts(release(baked))
    assert len(scripts) >= 8
    problems = [shellcheck(f"release.yml, {where}", script, tmp_path) for where, script in scripts]
    assert not [p for p in problems if p], "\n".join(p for p in problems if p)


def test_release_runs_on_tags_with_least_privilege(baked, options):
    wf = release(baked)
    assert wf["on"] == {"push": {"tags": ["v*"]}}
    assert wf["permissions"] == {"contents": "read"}
    assert wf["concurrency"] == {"group": "release", "cancel-in-progress": False}
    expected_jobs = {"verify", "image", "register", "release"} | ({"deploy"} if options["deploy_target"] != "none" else set())
    assert set(wf["jobs"]) == expected_jobs
    grants = {job_id: job.get("permissions") for job_id, job in wf["jobs"].items()}
    assert grants["image"] == IMAGE_WRITERS
    assert grants["release"] == {"contents": "write"}
    assert all(grants[j] is None for j in expected_jobs - {"image", "release"}), grants
    for job_id, job in wf["jobs"].items():
        assert isinstance(job.get("timeout-minutes"), int), job_id
        for step in job["steps"]:
            if "run" in step:
                assert "${{" not in step["run"], f"{job_id}: expression inside a run script: {step['run']}"
            if "actions/checkout@" in step.get("uses", ""):
                assert step["with"]["persist-credentials"] is False
            if "setup-uv@" in step.get("uses", ""):
                assert step["with"]["enable-cache"] is False, "a release must not restore a cache PRs can write"


def steps(wf: dict, job: str) -> dict[str, dict]:
    return {s.get("name") or s["uses"].split("@")[0]: s for s in wf["jobs"][job]["steps"]}


def test_verify_checks_tag_model_and_gates_before_building(baked):
    names = list(steps(release(baked), "verify"))
    order = ["Check the tag", "Get the model of this commit", "Gates", "Build the bento", "Release notes and smoke request"]
    assert [n for n in names if n in order] == order
    verify = steps(release(baked), "verify")
    assert "check-tag" in verify["Check the tag"]["run"] and "--main-ref origin/main" in verify["Check the tag"]["run"]
    assert "verify-model" in verify["Get the model of this commit"]["run"]
    assert verify["Gates"]["run"] == "make gates BASELINE=HEAD"
    assert verify["Gates"]["if"] == "always() && steps.tag.outcome == 'success'"
    assert verify["Build the bento"]["run"].startswith("# `make bento`")
    assert 'make bento BENTO_VERSION="$VERSION"\n' in verify["Build the bento"]["run"]
    assert "b.tag.version == sys.argv[1]" in verify["Build the bento"]["run"], "the bento must carry the tag's version"


def test_image_is_pushed_scanned_signed_and_attested_by_digest(baked):
    wf = release(baked)
    image = steps(wf, "image")
    # The image is `make image`'s (what the template's tests build and run), from the bento verify built.
    build = image["Build the image (make image, from the bento verify built)"]
    assert build["run"].rstrip().splitlines()[-1].strip() == 'make image BENTO_VERSION="${BENTO#*:}" BASE_IMAGE="$BASE_IMAGE"'
    assert build["env"]["BENTO"] == "${{ needs.verify.outputs.bento }}"
    # Production unless a repository variable says otherwise: GHCR, the Dockerfile's pinned base.
    assert build["env"]["BASE_IMAGE"] == "${{ vars.BASE_IMAGE }}"
    assert wf["jobs"]["image"]["env"] == {"REGISTRY": "${{ vars.IMAGE_REGISTRY || 'ghcr.io' }}"}
    assert image["docker/login-action"]["with"]["registry"] == "${{ env.REGISTRY }}"
    push = image["Push (every later step names the image by the digest the registry answered)"]
    assert push["id"] == "push" and 'ci.release push --to "$REGISTRY/${REPOSITORY,,}"' in push["run"]
    assert list(image).index("docker/login-action") < list(image).index(push["name"])
    scan = image["Scan (fixable HIGH and CRITICAL fail the release)"]
    assert scan["with"]["image-ref"] == "${{ steps.push.outputs.image }}"
    assert scan["with"]["ignore-unfixed"] is True and scan["with"]["exit-code"] == "1"
    assert scan["with"]["version"] == "${{ env.TRIVY_VERSION }}" and re.fullmatch(r"v\d+\.\d+\.\d+", wf["env"]["TRIVY_VERSION"])
    assert image["Sign (keyless)"]["env"]["IMAGE"] == "${{ steps.push.outputs.image }}"
    assert image["Attest build provenance"]["with"]["subject-digest"] == "${{ steps.push.outputs.digest }}"
    assert wf["jobs"]["image"]["outputs"] == {"image": "${{ steps.push.outputs.image }}", "digest": "${{ steps.push.outputs.digest }}"}
    # After the push, the image is named only by digest (needs.image.outputs.image).
    text = (baked / ".github/workflows/release.yml").read_text()
    later = text.split("\n  register:", 1)[1]
    assert "outputs.version" not in later and re.findall(r"needs\.image\.outputs\.(\w+)", later) != []
    assert set(re.findall(r"needs\.image\.outputs\.(\w+)", later)) == {"image"}


def test_release_attaches_what_a_reviewer_signs_off(baked):
    create = steps(release(baked), "release")["Create the GitHub release"]["run"]
    for attached in ["reports/model_card.md", "reports/metrics.json", "reports/fairness.json", "release/lineage.json",
                     "reports/validation_pack.json", "reports/regulatory/*.md",
                     "release/requirements.txt", "dist/image/sbom.cdx.json", "--notes-file release/notes.md", "--verify-tag"]:
        assert attached in create
    # What the release job attaches must reach it: verify's release-files artifact carries it.
    kept = steps(release(baked), "verify")["Keep the release files"]["with"]["path"].split()
    assert {"reports/validation_pack.json", "reports/regulatory/"} <= set(kept), kept
    register = steps(release(baked), "register")["Register the model as champion"]
    assert register["env"]["MLFLOW_TRACKING_URI"] == "${{ secrets.MLFLOW_TRACKING_URI }}"


def test_deploy_waits_for_approval_smoke_tests_and_rolls_back(baked, options):
    wf = release(baked)
    if options["deploy_target"] == "none":
        assert "deploy" not in wf["jobs"]
        return
    deploy = wf["jobs"]["deploy"]
    assert deploy["environment"]["name"] == "production"
    assert deploy["concurrency"] == {"group": "deploy-production", "cancel-in-progress": False}
    named = steps(wf, "deploy")
    smoke = named["Smoke test (the service reports this release's model)"]
    assert "ci.release smoke --url" in smoke["run"] and '--tag "$TAG"' in smoke["run"]
    rollback = next(s for n, s in named.items() if n.startswith("Roll back"))
    assert rollback["if"].startswith("failure() && steps.apply.outputs.previous") and rollback["run"].rstrip().endswith("exit 1")
    assert list(named).index(rollback.get("name")) == len(named) - 1
    if options["deploy_target"] == "kubernetes":
        # deploy and rollback are one path (ci.rollout; run for real under podman kube play by test_rollout.py)
        assert 'ci.rollout rollback --overlay deploy/k8s/overlays/production --previous "$PREVIOUS"' in rollback["run"]
        assert 'ci.rollout deploy --overlay deploy/k8s/overlays/production --image "$IMAGE"' in named["Deploy the image by digest"]["run"]
    else:
        assert "bentoml deployment update" in rollback["run"] and "--bento \"$PREVIOUS\"" in rollback["run"]


def test_kubernetes_deploy_and_rollback_scripts_with_a_recording_kubectl(tmp_path):
    """The deploy and rollback steps' shell, run as GitHub runs them, against a recording kubectl.

    `uv run` runs the project's ci.rollout for real (with the template's Python and PyYAML) and
    `kubectl kustomize` is the real one; get/apply/rollout are recorded. test_rollout.py runs the
    same steps on podman kube play with the real image.
    """
    repo = bake(tmp_path / "bake", deploy_target="kubernetes")
    named = steps(release(repo), "deploy")
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    # records its arguments; `get` answers with the image serving now; `apply` keeps the image it got
    (bin_dir / "kubectl").write_text('#!/usr/bin/env bash\necho "$*" >> "$KUBECTL_LOG"\n'
                                     'if [ "$1" = kustomize ]; then exec "$REAL_KUBECTL" "$@"; fi\n'
                                     'if [ "$3" = get ]; then printf %s "$FAKE_IMAGE"; fi\n'
                                     'if [ "$1" = apply ]; then grep -o "image: .*" >> "$KUBECTL_APPLIED"; fi\n')
    (bin_dir / "kubectl").chmod(0o755)
    # `uv run --locked python -m <pkg>...` without a set-up environment: the helper module itself.
    (bin_dir / "uv").write_text(f'#!/usr/bin/env bash\nshift 3\nPYTHONPATH=src exec {sys.executable} "$@"\n')
    (bin_dir / "uv").chmod(0o755)
    old = "ghcr.io/acme/credit-risk-model@sha256:" + "cd" * 32
    image = "ghcr.io/acme/credit-risk-model@sha256:" + "ab" * 32
    environ = {"PATH": f"{bin_dir}:/usr/bin:/bin", "KUBECTL_LOG": str(tmp_path / "kubectl.log"), "RUNNER_TEMP": str(tmp_path),
               "KUBECTL_APPLIED": str(tmp_path / "applied"), "REAL_KUBECTL": tool("kubectl"),
               "NAMESPACE": "credit-risk-model-production", "IMAGE": image, "KUBECONFIG_DATA": "apiVersion: v1",
               "PACKAGE": "credit_risk_model"}  # fmt: skip
    (tmp_path / "github_output").touch()
    environ["GITHUB_OUTPUT"] = str(tmp_path / "github_output")

    def step(name: str, **extra: str) -> subprocess.CompletedProcess:
        script = tmp_path / "step.sh"
        script.write_text(named[name]["run"])
        return subprocess.run(["bash", "--noprofile", "--norc", "-eo", "pipefail", str(script)], cwd=repo,
                              capture_output=True, text=True, env={**environ, **extra}, timeout=60)

    proc = step("Deploy the image by digest", FAKE_IMAGE=old)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert (tmp_path / "github_output").read_text() == f"previous={old}\n"
    # the new image failed its smoke test: back to the old digest, and the run fails
    proc = step("Roll back to the previous image", FAKE_IMAGE=image, PREVIOUS=old)
    assert proc.returncode == 1 and f"{old} serves again" in proc.stdout, proc.stdout + proc.stderr
    # nothing new was rolled out (apply failed): nothing is applied, the run still fails
    proc = step("Roll back to the previous image", FAKE_IMAGE=old, PREVIOUS=old)
    assert proc.returncode == 1 and "nothing new was rolled out" in proc.stdout
    get = "-n credit-risk-model-production get deployment/decision-service -o " \
          'jsonpath={.spec.template.spec.containers[?(@.name=="service")].image}'
    render = "kustomize deploy/k8s/overlays/production"
    status = "-n credit-risk-model-production rollout status deployment/decision-service --timeout=10m"
    calls = (tmp_path / "kubectl.log").read_text().splitlines()
    assert calls == [get, render, "apply -f -", status, get, render, "apply -f -", status, get]
    assert (tmp_path / "applied").read_text().splitlines() == [f"image: {image}", f"image: {old}"]
    assert (tmp_path / "kubeconfig").stat().st_mode & 0o077 == 0, "the kubeconfig must be private"
    # The overlay the rollback applied names the old image by digest, and kustomize agrees.
    rendered = check([tool("kubectl"), "kustomize", "deploy/k8s/overlays/production"], repo)
    assert f"image: {old}" in rendered


# --- the helper and act ----------------------------------------------------------------


@pytest.fixture(scope="module")
def release_repo(tmp_path_factory, pipeline_repo) -> Path:
    """A copy of the reproduced credit repository with its pipeline committed on main (= origin/main)."""
    source = pipeline_repo("credit_scoring")
    repo = copy_project(source, tmp_path_factory.mktemp("release") / source.name)
    make(repo, "setup")
    git(repo, "add", "-A")
    git(repo, "commit", "-q", "--allow-empty", "-m", "Pipeline reproduced on main")
    git(repo, "remote", "add", "origin", f"https://github.com/{OWNER}/{repo.name}.git")
    git(repo, "update-ref", "refs/remotes/origin/main", "main")
    return repo


def helper(repo: Path, *args: str, **extra_env: str) -> subprocess.CompletedProcess:
    package = repo.name.replace("-", "_")
    return run(["uv", "run", "--locked", "python", "-m", f"{package}.ci.release", *args], repo, **extra_env)


@pytest.mark.e2e
def test_helper_refuses_a_wrong_tag_a_commit_off_main_and_a_model_dvc_lock_does_not_record(release_repo):
    repo = release_repo
    proc = helper(repo, "check-tag", "--tag", "v9.9.9")
    assert proc.returncode == 1
    [line] = proc.stderr.strip().splitlines()  # one line, naming what was wrong
    assert line.endswith("tag 'v9.9.9' does not match the package version 0.1.0 in pyproject.toml; "
                         "bump the version on main or tag v0.1.0"), line
    assert helper(repo, "check-tag", "--tag", "0.1.0").stderr.strip().endswith("tag '0.1.0' is not vX.Y.Z")
    assert helper(repo, "check-tag", "--tag", "v0.1.0").returncode == 0

    git(repo, "checkout", "-q", "-b", "side")
    git(repo, "commit", "-q", "--allow-empty", "-m", "not reviewed")
    try:
        proc = helper(repo, "check-tag", "--tag", "v0.1.0")
        assert proc.returncode == 1 and "which is not on origin/main: release only what main reviewed" in proc.stderr
    finally:
        git(repo, "checkout", "-q", "main")
        git(repo, "branch", "-q", "-D", "side")

    assert helper(repo, "verify-model").returncode == 0
    model = repo / "models/model.skops"
    saved = model.read_bytes()
    try:
        model.write_bytes(saved + b"\0")
        proc = helper(repo, "verify-model")
        assert proc.returncode == 1 and "this is not the model the commit reviewed" in proc.stderr, proc.stderr
    finally:
        model.write_bytes(saved)


@pytest.mark.e2e
def test_helper_registers_champion_in_a_real_mlflow_registry_and_skips_without_one(release_repo, tmp_path):
    repo = release_repo
    check(["make", "gates", "BASELINE=HEAD"], repo)
    image = f"ghcr.io/{OWNER}/{repo.name}@sha256:" + "c" * 64
    proc = helper(repo, "register", "--tag", "v0.1.0", "--image", image, MLFLOW_TRACKING_URI="")
    assert proc.returncode == 0 and "No MLflow tracking server configured" in proc.stdout

    uri = f"sqlite:///{tmp_path / 'registry.db'}"
    proc = helper(repo, "register", "--tag", "v0.1.0", "--image", image, MLFLOW_TRACKING_URI=uri)
    assert proc.returncode == 0, proc.stderr[-3000:]
    script = ("import json, sys; from mlflow import MlflowClient; c = MlflowClient(sys.argv[1]);"
              "v = c.get_model_version_by_alias(sys.argv[2], 'champion'); print(json.dumps(v.tags))")
    tags = json.loads(run(["uv", "run", "--locked", "python", "-c", script, uri, repo.name], repo).stdout)
    assert tags["image_digest"] == "sha256:" + "c" * 64 and tags["release_tag"] == "v0.1.0"
    assert tags["git_sha"] == git(repo, "rev-parse", "HEAD").strip()

    proc = helper(repo, "lineage", "--tag", "v0.1.0", "--image", f"ghcr.io/{OWNER}/x:latest")
    assert proc.returncode == 1 and "is not a reference by digest" in proc.stderr
    assert helper(repo, "lineage", "--tag", "v0.1.0", "--image", image).returncode == 0
    record = json.loads((repo / "release/lineage.json").read_text())
    assert record["release"]["image"] == image and record["mlflow"]["run_id"] == record["release"]["run_id"]
    shutil.rmtree(repo / "release")


def tag_event(repo: Path, tag: str) -> dict:
    sha = git(repo, "rev-parse", "HEAD").strip()
    return {
        "ref": f"refs/tags/{tag}", "before": "0" * 40, "after": sha, "created": True,
        "head_commit": {"id": sha},
        "repository": {"full_name": f"{OWNER}/{repo.name}", "name": repo.name, "owner": {"login": OWNER}},
    }


# The image job's actions that need GHCR, Sigstore or GitHub: stand-ins that record their inputs
# (tests/act/record.py) to $ACT_STANDIN_LOG.
RELEASE_STANDINS = {
    "docker/login-action": "login",
    "aquasecurity/trivy-action": "trivy",
    "sigstore/cosign-installer": "cosign-installer",
    "actions/attest-build-provenance": "attest",
}


def act_release(repo: Path, work: Path, tag: str, job: str = "verify", act_env: dict | None = None,
                act_vars: dict | None = None):
    git(repo, "tag", "-f", tag)
    try:
        # A bento store of its own, as on a fresh runner (BentoML refuses to overwrite a bento tag).
        return run_act(repo, work, tag_event(repo, tag), job=job, workflow="release.yml", event_name="push",
                       act_env={"BENTOML_HOME": str(work / "bentoml"), **(act_env or {})}, act_vars=act_vars,
                       standins={action: STANDINS / d for action, d in RELEASE_STANDINS.items()})
    finally:
        git(repo, "tag", "-d", tag)


def standin_calls(log: Path) -> dict[str, list[dict]]:
    calls: dict[str, list[dict]] = {}
    for line in log.read_text().splitlines() if log.exists() else []:
        call = json.loads(line)
        calls.setdefault(call["action"], []).append(call["inputs"])
    return calls


@pytest.mark.e2e
def test_act_release_refuses_a_tag_that_is_not_the_package_version(release_repo, tmp_path):
    result = act_release(release_repo, tmp_path, "v9.9.9")
    assert result.returncode != 0 and result.jobs == {"verify": "failure"}, result.describe()
    assert result.steps[("verify", "Check the tag")] == "failure"
    assert "does not match the package version 0.1.0" in result.output("verify")
    assert ("verify", "Gates") not in result.steps and ("verify", "Build the bento") not in result.steps


@pytest.mark.e2e
def test_act_release_builds_pushes_and_names_the_image_by_digest_for_a_good_tag(release_repo, service_image, registry, tmp_path):
    """verify, then the image job for real: `make image` with podman on the session's local base
    (its layers cached by the session's build), pushed to the loopback registry by digest."""
    from containers import containers_env

    repo = release_repo
    record = tmp_path / "standin-calls.jsonl"
    result = act_release(repo, tmp_path, "v0.1.0", job="image",
                         act_env={**containers_env(), "ACT_STANDIN_RECORD": str(STANDINS / "record.py"),
                                  "ACT_STANDIN_LOG": str(record)},
                         act_vars={"IMAGE_REGISTRY": registry.host, "BASE_IMAGE": service_image.base})
    assert result.returncode == 0, result.describe() + "\n" + result.output("image")[-4000:]
    assert result.jobs == {"verify": "success", "image": "success"}, result.describe()
    for step in ["Check the tag", "Get the model of this commit", "Gates", "Build the bento",
                 "Release notes and smoke request"]:
        assert result.steps[("verify", step)] == "success", f"{step}: {result.describe()}"
    output = result.output("verify")
    assert "tag v0.1.0 = package version 0.1.0, on origin/main" in output
    assert "md5" in output and "as recorded in dvc.lock" in output
    bento = result.artifacts / "bento"
    dockerfile = bento / "env/docker/Dockerfile"
    assert dockerfile.exists(), sorted(p.name for p in bento.iterdir())
    assert yaml.safe_load((bento / "bento.yaml").read_text())["version"] == "0.1.0"
    files = result.artifacts / "release-files"
    for path in ["reports/model_card.md", "reports/lineage.json", "release/requirements.txt", "release/smoke_request.json",
                 "reports/validation_pack.json", "reports/regulatory/technical_documentation.md",
                 "reports/regulatory/instructions_for_use.md", "reports/regulatory/post_market_monitoring_plan.md"]:
        assert (files / path).exists(), path
    notes = result.summary("verify")
    sha = git(repo, "rev-parse", "HEAD").strip()
    assert f"| commit | `{sha}` |" in notes and "### Gates: all" in notes and "passed on this commit" in notes
    # The bento's Dockerfile passes hadolint (findings fixed or justified in .hadolint.yaml).
    shutil.copy(dockerfile, tmp_path / "Dockerfile")
    proc = run([tool("hadolint"), "--config", str(repo / ".hadolint.yaml"), str(tmp_path / "Dockerfile")], repo)
    assert proc.returncode == 0, proc.stdout + proc.stderr

    # The image job: the digest the push answered is the one the registry serves for the tag.
    repository = f"{OWNER}/{repo.name}".lower()
    pushed = re.search(rf"{re.escape(registry.host)}/{re.escape(repository)}@(sha256:[0-9a-f]{{64}})", result.output("image"))
    assert pushed, result.output("image")[-3000:]
    digest = pushed[1]
    assert registry.digest(repository, "0.1.0") == digest
    image = f"{registry.host}/{repository}@{digest}"
    sbom = json.loads((result.artifacts / "sbom/sbom.cdx.json").read_text())
    assert sbom["bomFormat"] == "CycloneDX" and any(c["name"] == "bentoml" for c in sbom["components"])
    # Scan, signature and attestation were handed the digest reference, never a tag.
    calls = standin_calls(record)
    [login] = calls["docker/login-action"]
    assert login["registry"] == registry.host and login["password-given"] == "yes", login
    [scan] = calls["aquasecurity/trivy-action"]
    assert scan["image-ref"] == image and scan["exit-code"] == "1" and scan["ignore-unfixed"] == "true", scan
    assert calls["cosign"] == [{"args": f"sign --yes {image}"}], calls
    [attest] = calls["actions/attest-build-provenance"]
    assert attest["subject-digest"] == digest and attest["subject-name"].lower() == f"{registry.host}/{repository}", attest


@pytest.mark.e2e
def test_act_release_stops_when_a_gate_fails_on_the_tagged_commit(release_repo, tmp_path):
    """main carries a fairness bound the model cannot meet: the release stops at the gates."""
    repo = release_repo
    params = repo / "params.yaml"
    original = params.read_text()
    assert "      min: 0.8\n" in original and "  rule: significant\n" in original
    # Judged on the point estimate: a ratio's interval reaches 1.0 whenever the groups are
    # close, so under the default rule no bound, however strict, would fail it.
    strict = original.replace("      min: 0.8\n", "      min: 0.999\n", 1).replace("  rule: significant\n", "  rule: point\n", 1)
    params.write_text(strict)
    git(repo, "commit", "-q", "-am", "Demographic parity ratio must be 0.999, judged on the estimate")
    git(repo, "update-ref", "refs/remotes/origin/main", "main")
    try:
        result = act_release(repo, tmp_path, "v0.1.0")
        assert result.returncode != 0 and result.jobs == {"verify": "failure"}, result.describe()
        assert result.steps[("verify", "Check the tag")] == "success"
        # the fairness stage stops `dvc repro` (a real reproduction: act's workspace has only
        # the committed files), and the gates still run and name it
        assert result.steps[("verify", "Get the model of this commit")] == "failure"
        assert result.steps[("verify", "Gates")] == "failure", result.describe()
        output = result.output("verify")
        assert "fairness gate(s) failed: fairness:age_band:demographic_parity_ratio" in output
        assert re.search(r"FAIL fairness\S*: ", output), output[-3000:]
        assert ("verify", "Build the bento") not in result.steps
    finally:
        git(repo, "reset", "-q", "--hard", "HEAD~1")
        git(repo, "update-ref", "refs/remotes/origin/main", "main")
