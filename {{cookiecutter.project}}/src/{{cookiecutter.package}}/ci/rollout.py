"""Roll the decision service out by digest, and back: the deploy and rollback steps of release.yml.

    python -m {{ cookiecutter.package }}.ci.rollout deploy --overlay deploy/k8s/overlays/production --image REG/NAME@sha256:...
    python -m {{ cookiecutter.package }}.ci.rollout rollback --overlay deploy/k8s/overlays/production --previous REG/NAME@sha256:...

`deploy` records the image serving now (step output `previous`, empty on a first deploy), writes
the new digest into the overlay (`release set-image`), renders it with `kubectl kustomize`,
applies it and waits until the Deployment is ready. `rollback` does the same with the recorded
previous digest: a rollback is a deploy of the last good digest, so it needs no revision history
and works the same on every backend.

Two backends run the same steps (`--backend`, or ROLLOUT_BACKEND):
- `kubectl` (release.yml): `kubectl apply -f` of the rendered overlay, `kubectl rollout status`.
- `podman` (the template's tests, or a laptop): `podman kube play --replace` of the rendered
  Deployment, on one pod with its port published on 127.0.0.1. Kubernetes objects podman cannot
  run (Service, HPA, PDB, NetworkPolicy, ServiceMonitor, PrometheusRule, ServiceAccount) are
  left out; the namespace is ignored; the audit claims become podman volumes of their names;
  Secrets become podman secrets, and a Secret mounted as files a read-only hostPath directory
  the backend writes (podman 4.3's kube play crashes on a Deployment's secret volume);
  readiness is the Deployment's readinessProbe, asked from the host (podman 4 runs no
  readiness probe of its own).
"""

from __future__ import annotations

import argparse
import base64
import json
import os
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from {{ cookiecutter.package }}.ci.release import ReleaseError, on_loopback, set_image, write_output
from {{ cookiecutter.package }}.core.errors import UserError
from {{ cookiecutter.package }}.core.stage import setup_logging

DEPLOYMENT = "decision-service"
CONTAINER = "service"
# Objects `podman kube play` runs; everything else stays with the cluster (and its static checks).
PLAYABLE = {"Deployment", "Secret"}


def run(args: list[str], stdin: str | None = None) -> str:
    """A command's standard output; ReleaseError naming the command when it fails."""
    proc = subprocess.run(args, input=stdin, capture_output=True, text=True)
    if proc.returncode != 0:
        raise ReleaseError(f"`{' '.join(args[:3])} ...` failed ({proc.returncode}): {proc.stderr.strip()[-2000:]}")
    return proc.stdout


def go_template(field: str) -> str:
    """A Go template printing ``field`` (podman's --format), built so no template engine reads it as its own."""
    return "{" * 2 + field + "}" * 2


def render(overlay: Path) -> list[dict[str, Any]]:
    """The objects `kubectl apply -k <overlay>` would send: `kubectl kustomize`'s output."""
    return [doc for doc in yaml.safe_load_all(run(["kubectl", "kustomize", str(overlay)])) if doc]


def deployment_of(objects: list[dict[str, Any]]) -> dict[str, Any]:
    """The decision service's Deployment among the rendered objects."""
    for obj in objects:
        if obj.get("kind") == "Deployment" and obj["metadata"]["name"] == DEPLOYMENT:
            return obj
    raise ReleaseError(f"the rendered overlay has no Deployment named {DEPLOYMENT}")


def service_container(deployment: dict[str, Any]) -> dict[str, Any]:
    """The Deployment's `service` container."""
    for container in deployment["spec"]["template"]["spec"]["containers"]:
        if container["name"] == CONTAINER:
            return container
    raise ReleaseError(f"Deployment {DEPLOYMENT} has no container named {CONTAINER}")


class Kubectl:
    """A cluster through kubectl (KUBECONFIG): what release.yml deploys to."""

    def __init__(self, namespace: str, timeout: str = "10m") -> None:
        self.namespace = namespace
        self.timeout = timeout

    def current_image(self) -> str:
        """The image the Deployment runs now; empty when there is no Deployment yet."""
        proc = subprocess.run(
            ["kubectl", "-n", self.namespace, "get", f"deployment/{DEPLOYMENT}", "-o",
             'jsonpath={.spec.template.spec.containers[?(@.name=="' + CONTAINER + '")].image}'],
            capture_output=True, text=True,
        )  # fmt: skip
        return proc.stdout.strip() if proc.returncode == 0 else ""

    def apply(self, objects: list[dict[str, Any]]) -> None:
        """`kubectl apply` of the rendered objects (what `kubectl apply -k <overlay>` sends)."""
        run(["kubectl", "apply", "-f", "-"], stdin=yaml.safe_dump_all(objects, sort_keys=False))

    def wait_ready(self, objects: list[dict[str, Any]]) -> None:
        """Until the Deployment's rollout completes (its pods ready), or ReleaseError after the timeout."""
        run(["kubectl", "-n", self.namespace, "rollout", "status", f"deployment/{DEPLOYMENT}", f"--timeout={self.timeout}"])


@dataclass
class Podman:
    """One pod of the rendered Deployment under `podman kube play`, its port on 127.0.0.1:<port>."""

    port: int
    secrets: Path | None = None  # Secret objects the cluster would hold (YAML), when the overlay renders none
    timeout: float | None = None  # seconds; default: what the startupProbe allows

    @property
    def pod(self) -> str:
        """The pod `kube play` names after the Deployment."""
        return f"{DEPLOYMENT}-pod-0"

    @property
    def container(self) -> str:
        """The service's container in that pod."""
        return f"{self.pod}-{CONTAINER}"

    def current_image(self) -> str:
        """The image the pod's service container runs; empty when there is no pod."""
        proc = subprocess.run(["podman", "container", "inspect", "--format", go_template(".ImageName"), self.container],
                              capture_output=True, text=True)  # fmt: skip
        return proc.stdout.strip() if proc.returncode == 0 else ""

    def secret_objects(self, objects: list[dict[str, Any]]) -> list[dict[str, Any]]:
        """The rendered Secrets and those given with ``secrets``."""
        found = [o for o in objects if o.get("kind") == "Secret"]
        if self.secrets is not None:
            found += [d for d in yaml.safe_load_all(self.secrets.read_text(encoding="utf-8")) if d and d.get("kind") == "Secret"]
        return found

    def secret_files(self, secret: dict[str, Any], items: list[dict[str, Any]]) -> Path:
        """A Secret's keys as files in a directory (``items`` maps keys to paths, as a secret volume's)."""
        values = {k: base64.b64decode(v) for k, v in (secret.get("data") or {}).items()}
        values.update({k: v.encode() for k, v in (secret.get("stringData") or {}).items()})
        directory = Path(os.environ.get("RUNNER_TEMP") or tempfile.gettempdir()) / "rollout-secrets" / secret["metadata"]["name"]
        directory.mkdir(parents=True, exist_ok=True)
        directory.chmod(0o755)
        for item in items or [{"key": k, "path": k} for k in values]:
            if item["key"] not in values:
                raise ReleaseError(f"Secret {secret['metadata']['name']} has no key '{item['key']}' the Deployment mounts")
            path = directory / item["path"]
            path.write_bytes(values[item["key"]])
            path.chmod(0o444)  # the pod's non-root user reads it; nothing writes it
        return directory

    def playable(self, objects: list[dict[str, Any]]) -> list[dict[str, Any]]:
        """The Deployment as podman runs it: one replica, the http port published on loopback."""
        deployment = json.loads(json.dumps(deployment_of(objects)))
        secrets = {o["metadata"]["name"]: o for o in self.secret_objects(objects)}
        for volume in deployment["spec"]["template"]["spec"].get("volumes", []):
            if source := volume.pop("secret", None):
                name = source["secretName"]
                if name not in secrets:
                    raise ReleaseError(f"the Deployment mounts Secret {name}, which neither the overlay nor --secrets holds")
                volume["hostPath"] = {"path": str(self.secret_files(secrets[name], source.get("items", []))), "type": "Directory"}
        # one pod: a second replica would publish the same host port
        deployment["spec"]["replicas"] = 1
        for port in service_container(deployment).get("ports", []):
            if port.get("name") == "http":
                port.update(hostPort=self.port, hostIP="127.0.0.1")
        return [deployment]

    def create_secrets(self, objects: list[dict[str, Any]]) -> None:
        """Secrets as podman 4's kube play reads a secretKeyRef: a JSON object of base64 values."""
        for secret in self.secret_objects(objects):
            data = dict(secret.get("data") or {})
            data.update({k: base64.b64encode(v.encode()).decode() for k, v in (secret.get("stringData") or {}).items()})
            name = secret["metadata"]["name"]
            subprocess.run(["podman", "secret", "rm", name], capture_output=True)
            run(["podman", "secret", "create", name, "-"], stdin=json.dumps(data))

    def apply(self, objects: list[dict[str, Any]]) -> None:
        """`podman kube play --replace` of the Deployment, its Secrets and its claim's volume first."""
        self.create_secrets(objects)
        for volume in deployment_of(objects)["spec"]["template"]["spec"].get("volumes", []):
            if claim := volume.get("persistentVolumeClaim"):
                # the claim's data outlives a rollout, as a PersistentVolume's does
                if subprocess.run(["podman", "volume", "exists", claim["claimName"]]).returncode != 0:
                    run(["podman", "volume", "create", claim["claimName"]])
        # a registry on this machine's loopback serves plain HTTP; any other is verified
        insecure = ["--tls-verify=false"] if on_loopback(service_container(deployment_of(objects))["image"]) else []
        run(["podman", "kube", "play", "--replace", *insecure, "-"], stdin=yaml.safe_dump_all(self.playable(objects)))

    def wait_ready(self, objects: list[dict[str, Any]]) -> None:
        """Until the readinessProbe's path answers 200 through the published port."""
        container = service_container(deployment_of(objects))
        probe = container["readinessProbe"]["httpGet"]
        startup = container.get("startupProbe", {})
        timeout = self.timeout or startup.get("periodSeconds", 10) * startup.get("failureThreshold", 3)
        url = f"http://127.0.0.1:{self.port}{probe['path']}"
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            state = run(["podman", "container", "inspect", "--format", go_template(".State.Status"), self.container]).strip()
            if state not in ("running", "created", "configured"):
                logs = subprocess.run(["podman", "logs", "--tail", "20", self.container], capture_output=True, text=True)
                raise ReleaseError(f"pod {self.pod} is {state}, not ready; its last lines:\n{logs.stdout}{logs.stderr}")
            try:
                with urllib.request.urlopen(url, timeout=2) as resp:  # noqa: S310 (loopback, built above)
                    if resp.status == 200:
                        return
            except (urllib.error.URLError, ConnectionError, TimeoutError):
                pass
            time.sleep(0.2)
        raise ReleaseError(f"pod {self.pod} not ready after {timeout:.0f} s: {url} never answered 200")


def roll(backend: Kubectl | Podman, overlay: Path, image: str) -> list[dict[str, Any]]:
    """Set the image by digest, render, apply, wait ready: the one path of a deploy and a rollback."""
    set_image(overlay, image)
    objects = render(overlay)
    rendered = service_container(deployment_of(objects))["image"]
    if rendered != image:
        raise ReleaseError(f"{overlay} renders image {rendered}, not {image}: is the container's image named 'decision-service'?")
    backend.apply(objects)
    backend.wait_ready(objects)
    return objects


def deploy(backend: Kubectl | Podman, overlay: Path, image: str) -> str:
    """Roll ``image`` out; returns the image that served before (empty on a first deploy)."""
    previous = backend.current_image()
    write_output(previous=previous)
    print(f"serving before: {previous or 'nothing (first deploy)'}")
    roll(backend, overlay, image)
    return previous


def rollback(backend: Kubectl | Podman, overlay: Path, previous: str) -> str:
    """Roll back to ``previous``; a message saying what serves now."""
    current = backend.current_image()
    if current == previous:
        return f"nothing new was rolled out; {previous} still serves"
    roll(backend, overlay, previous)
    return f"the new image failed; {previous} serves again"


def main(argv: list[str] | None = None) -> int:
    """Command-line entry point (see the module docstring)."""
    parser = argparse.ArgumentParser(prog="rollout", description=__doc__.split("\n", 1)[0])
    sub = parser.add_subparsers(dest="command", required=True)
    for name in ("deploy", "rollback"):
        p = sub.add_parser(name)
        p.add_argument("--overlay", type=Path, required=True)
        p.add_argument("--image" if name == "deploy" else "--previous", required=True)
        p.add_argument("--backend", choices=["kubectl", "podman"], default=os.environ.get("ROLLOUT_BACKEND", "kubectl"))
        p.add_argument("--namespace", default=os.environ.get("NAMESPACE", "default"), help="kubectl backend")
        p.add_argument("--port", type=int, default=int(os.environ.get("ROLLOUT_PORT", "18080")), help="podman backend")
        p.add_argument("--secrets", type=Path, default=os.environ.get("ROLLOUT_SECRETS") or None, help="podman backend")
    args = parser.parse_args(argv)
    backend = Kubectl(args.namespace) if args.backend == "kubectl" else Podman(args.port, args.secrets)
    log = setup_logging()
    try:
        if args.command == "deploy":
            deploy(backend, args.overlay, args.image)
            print(f"{args.image} is ready")
        else:
            print(rollback(backend, args.overlay, args.previous))
    except UserError as exc:  # one line naming what was wrong, exit 1: the workflow stops there
        log.error("%s", exc)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
