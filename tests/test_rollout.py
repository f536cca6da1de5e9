"""The release's rollout, for real on loopback: push by digest, `podman kube play`, roll out and back.

The service image is pushed to a real OCI registry on 127.0.0.1 (the session `registry`) and
named by the digest the registry reports from then on. The deploy and rollback steps of the
generated release.yml run as GitHub runs them (their own shell, `uv run` of the project's
`ci.rollout`), with ROLLOUT_BACKEND=podman: the overlay gets the digest (`release set-image`),
`kubectl kustomize` renders it, `podman kube play` runs the rendered Deployment (its
securityContext, env, volumes, Secret references and image by digest), the readinessProbe must
answer, then release.yml's smoke request must pass.

Tested vs not: what differs from a cluster is the backend (ci/rollout.py's Podman: one replica,
the http port published on 127.0.0.1, Secrets as podman secrets, readiness asked from the host)
and the smoke step's `kubectl port-forward`; `kubectl apply`/`rollout status` themselves run only
on a cluster. Service, HPA, PDB, NetworkPolicy and ServiceMonitor are checked by test_deploy.py.
"""

from __future__ import annotations

import json
import os
import subprocess
import time
from pathlib import Path

import pytest
import yaml
from containers import Keys, free_port, podman
from helpers import env
from registry import kube_env
from test_release import steps
from test_workflows import check, run, tool

pytestmark = pytest.mark.e2e
OVERLAY = "deploy/k8s/overlays/production"
POD_CONTAINER = "decision-service-pod-0-service"
TAG = "v0.1.0"


@pytest.fixture(scope="module")
def engine() -> dict[str, str]:
    """podman's environment for `kube play` (runc, rlimits, a local pause image)."""
    return kube_env()


@pytest.fixture(scope="module")
def repo(service_image) -> Path:
    """The repository the session's image was built in (set up: `uv run` is the project's own).

    The steps write the pushed digest into its production overlay and `dist/image/pushed.digest`;
    both are put back afterwards (a copy would need its own `make setup`: minutes of CI).
    """
    project = service_image.project
    overlay = project / OVERLAY / "kustomization.yaml"
    original = overlay.read_text()
    yield project
    overlay.write_text(original)
    (project / "dist/image/pushed.digest").unlink(missing_ok=True)


@pytest.fixture(scope="module")
def images(engine, registry, service_image, repo, tmp_path_factory) -> dict[str, str]:
    """Three releases pushed by digest: the session's image (`good`, pushed by release.yml's push step:
    the project's `ci.release push`), another digest of it (`next`, a label apart) and `broken`
    (its process exits at once: never ready)."""
    work = tmp_path_factory.mktemp("images")
    name = service_image.project.name
    to = f"{registry.host}/acme/{name}"
    proc = run(["uv", "run", "--locked", "python", "-m", f"{package(repo)}.ci.release", "push", "--to", to], repo,
               IMAGE_ENGINE="podman", GITHUB_OUTPUT=str(work / "output"), **engine)  # fmt: skip
    assert proc.returncode == 0, proc.stdout + proc.stderr
    tag = service_image.ref.rsplit(":", 1)[1]
    # by the digest the registry serves for the tag it pushed, and says so to the next steps
    good = f"{to}@{registry.digest(f'acme/{name}', tag)}"
    assert f"pushed {good}" in proc.stdout, proc.stdout
    assert (work / "output").read_text() == f"image={good}\ndigest={good.split('@')[1]}\n"
    pushed = {"good": good}
    for tag, extra in [("next", 'LABEL org.opencontainers.image.revision="next"'), ("broken", 'ENTRYPOINT ["false"]')]:
        (work / "Containerfile").write_text(f"FROM {service_image.ref}\n{extra}\n")
        podman("build", "-q", "-t", f"localhost/{name}:{tag}", str(work))
        pushed[tag] = registry.push(f"localhost/{name}:{tag}", f"acme/{name}", tag)
    assert len(set(pushed.values())) == 3, pushed
    return pushed


def package(repo: Path) -> str:
    return repo.name.replace("-", "_")


def helper(repo: Path, *args: str) -> subprocess.CompletedProcess:
    proc = run(["uv", "run", "--locked", *args], repo)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    return proc


def inspect(engine: dict[str, str], *args: str) -> str:
    proc = subprocess.run(["podman", *args], env={**os.environ, **engine}, capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    return proc.stdout.strip()


def serving(engine: dict[str, str]) -> str:
    """The image the container `kube play` runs now: its reference, checked against the content it runs."""
    ref = inspect(engine, "container", "inspect", "--format", "{{.ImageName}}", POD_CONTAINER)
    image_id = inspect(engine, "container", "inspect", "--format", "{{.Image}}", POD_CONTAINER)
    assert image_id == inspect(engine, "image", "inspect", "--format", "{{.Id}}", ref), f"{POD_CONTAINER} runs {image_id}, not {ref}"
    return ref


def remove(engine: dict[str, str]) -> None:
    """What the test's `kube play` made: the pod, the audit claim's volume, the Secret."""
    for args in (["pod", "rm", "-f", "decision-service-pod-0"], ["volume", "rm", "-f", "decision-audit"],
                 ["volume", "rm", "-f", "decision-audit-checkpoints"],
                 ["secret", "rm", "decision-service"]):  # fmt: skip
        subprocess.run(["podman", *args], env={**os.environ, **engine}, capture_output=True, timeout=120)


def test_release_rolls_out_by_digest_under_kube_play_and_back(repo, images, engine, tmp_path):
    named = steps(yaml.safe_load((repo / ".github/workflows/release.yml").read_text()), "deploy")
    port = free_port()
    keys = Keys(tmp_path / "keys")
    secrets = tmp_path / "secrets.yaml"
    # What the cluster's Secret holds (deploy/k8s names it); the Deployment reads it into env.
    secrets.write_text(yaml.safe_dump({
        "apiVersion": "v1", "kind": "Secret", "metadata": {"name": "decision-service"},
        "stringData": {"pii-hmac-key": keys.env["PII_HMAC_KEY"], "audit-hmac-key": keys.env["AUDIT_HMAC_KEY"],
                       "audit-chain-key": keys.env["AUDIT_CHAIN_KEY"],
                       "api-keys": (keys.dir / "api_keys").read_text()},
    }))  # fmt: skip
    output = tmp_path / "github_output"
    environ = {**env(**engine), "ROLLOUT_BACKEND": "podman", "ROLLOUT_PORT": str(port), "ROLLOUT_SECRETS": str(secrets),
               "RUNNER_TEMP": str(tmp_path), "NAMESPACE": f"{repo.name}-production", "KUBECONFIG_DATA": "",
               "PACKAGE": package(repo), "GITHUB_OUTPUT": str(output)}  # fmt: skip
    times = []

    def step(name: str, **extra: str) -> subprocess.CompletedProcess:
        """A step of release.yml's deploy job, its shell as GitHub runs it."""
        output.write_text("")
        script = tmp_path / "step.sh"
        script.write_text(named[name]["run"])
        start = time.monotonic()
        proc = subprocess.run(["bash", "--noprofile", "--norc", "-eo", "pipefail", str(script)], cwd=repo,
                              capture_output=True, text=True, env={**environ, **extra}, timeout=600)  # fmt: skip
        times.append(f"{name.split()[0].lower()} {time.monotonic() - start:.1f}")
        return proc

    # release.yml's smoke request: one real row of the test set (verify writes it; here, into tmp)
    request = tmp_path / "smoke_request.json"
    helper(repo, "python", "-m", f"{package(repo)}.ci.release", "smoke-request", "--out", str(request))

    def smoke() -> None:
        """release.yml's smoke step (the helper's `smoke`) against the pod's published port."""
        # SMOKE_API_KEY: the release's smoke secret; the service asks every caller for a key.
        proc = run(["uv", "run", "--locked", "python", "-m", f"{package(repo)}.ci.release", "smoke",
                    "--url", f"http://127.0.0.1:{port}", "--tag", TAG, "--request", str(request)],
                   repo, SMOKE_API_KEY=keys.client_key)  # fmt: skip
        assert proc.returncode == 0, proc.stdout + proc.stderr
        assert f"serves release {TAG}" in proc.stdout, proc.stdout + proc.stderr

    remove(engine)  # a first deploy: nothing of an earlier run serves
    try:
        # First deploy: nothing served before; the overlay names the pushed digest; the pod is ready.
        proc = step("Deploy the image by digest", IMAGE=images["good"])
        assert proc.returncode == 0, proc.stdout + proc.stderr
        assert output.read_text() == "previous=\n"
        assert f"image: {images['good']}" in check([tool("kubectl"), "kustomize", OVERLAY], repo)
        assert serving(engine) == images["good"]
        played = json.loads(inspect(engine, "container", "inspect", POD_CONTAINER))[0]
        # the Deployment's securityContext, env and volumes as a cluster would apply them
        assert played["HostConfig"]["ReadonlyRootfs"] is True and played["Config"]["User"] == "1034:1034"
        assert not played["EffectiveCaps"], played["EffectiveCaps"]
        assert "OMP_NUM_THREADS=1" in played["Config"]["Env"]
        assert {m["Destination"] for m in played["Mounts"]} >= {"/tmp", "/var/lib/audit"}
        smoke()

        # A second release rolls out (the previous digest recorded), then back: the first serves again.
        proc = step("Deploy the image by digest", IMAGE=images["next"])
        assert proc.returncode == 0 and output.read_text() == f"previous={images['good']}\n", proc.stdout + proc.stderr
        assert serving(engine) == images["next"]
        smoke()
        proc = step("Roll back to the previous image", PREVIOUS=images["good"])
        assert proc.returncode == 1 and f"{images['good']} serves again" in proc.stdout, proc.stdout + proc.stderr
        assert serving(engine) == images["good"]
        smoke()

        # A release whose pod never becomes ready fails its deploy step; the rollback restores the first.
        proc = step("Deploy the image by digest", IMAGE=images["broken"])
        assert proc.returncode == 1 and "not ready" in proc.stdout + proc.stderr, proc.stdout + proc.stderr
        assert output.read_text() == f"previous={images['good']}\n"
        proc = step("Roll back to the previous image", PREVIOUS=images["good"])
        assert proc.returncode == 1 and f"{images['good']} serves again" in proc.stdout, proc.stdout + proc.stderr
        assert serving(engine) == images["good"]
        smoke()

        # Nothing new rolled out (the deploy failed before applying): the rollback changes nothing.
        proc = step("Roll back to the previous image", PREVIOUS=images["good"])
        assert proc.returncode == 1 and "nothing new was rolled out" in proc.stdout, proc.stdout + proc.stderr
        # A tag is refused before anything is applied: only digests are deployed.
        proc = step("Deploy the image by digest", IMAGE=images["next"].split("@")[0] + ":next")
        assert proc.returncode == 1 and "is not a reference by digest" in proc.stdout + proc.stderr
        assert serving(engine) == images["good"]
    finally:
        remove(engine)
        print("rollout steps (s):", ", ".join(times))
