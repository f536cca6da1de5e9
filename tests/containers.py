"""The release image on this machine: a local Debian base, `make image` with podman, and the service run as production runs it.

No public registry is reachable here, so the image is built on a Debian bookworm base made with
mmdebstrap and `podman import` (the generated default stays the public base pinned by digest).
Podman is configured by a containers.conf named in CONTAINERS_CONF (runc, ulimits), never by
changing the machine: its default runtime crun and its default rlimits fail on these machines.
"""

from __future__ import annotations

import hashlib
import json
import os
import secrets
import socket
import subprocess
import time
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path

from helpers import run

CACHE = Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "cookiecutter-fintech-mlops"
# The test base: Debian bookworm's Python 3.11 with venv (the image's `python3 -m venv`) and CA certificates.
MMDEBSTRAP = ["--variant=minbase", "--include=python3,python3-venv,ca-certificates", "bookworm"]
BASE_NAME = "localhost/fintech-test-base"
# What the Deployment (deploy/k8s/base/deployment.yaml) gives the pod: uid 1034, a read-only root,
# no capabilities, /tmp as an emptyDir, the audit log on a volume. The grace period is Kubernetes' default.
USER = "1034:1034"
GRACE_S = 30
PIPELINE_ONLY = ("dvc", "great_expectations", "mlflow", "matplotlib", "fairlearn", "shap", "numba")

CONTAINERS_CONF = """\
# Podman for the template's tests: crun fails here ("cgroups in hybrid mode not supported") and
# podman's default rlimits are refused (setrlimit: operation not permitted).
[containers]
default_ulimits = ["nofile=1024:1024", "nproc=1024:1024"]
[engine]
runtime = "runc"
"""


def containers_env() -> dict[str, str]:
    """The environment podman runs with: our containers.conf, nothing changed on the machine."""
    conf = CACHE / "containers.conf"
    conf.parent.mkdir(parents=True, exist_ok=True)
    if not conf.exists() or conf.read_text() != CONTAINERS_CONF:
        conf.write_text(CONTAINERS_CONF)
    return {"CONTAINERS_CONF": str(conf)}


def podman(*args: str, check: bool = True, timeout: int = 600) -> subprocess.CompletedProcess:
    done = subprocess.run(["podman", *args], env={**os.environ, **containers_env()}, capture_output=True, text=True, timeout=timeout)
    if check and done.returncode != 0:
        raise RuntimeError(f"podman {' '.join(args)} failed ({done.returncode}):\n{done.stdout[-2000:]}\n{done.stderr[-4000:]}")
    return done


def local_base() -> str:
    """The local bookworm base, made once per machine: its tag is a hash of how it is made."""
    key = hashlib.sha256(json.dumps(MMDEBSTRAP).encode()).hexdigest()[:12]
    ref = f"{BASE_NAME}:{key}"
    if podman("image", "exists", ref, check=False).returncode == 0:
        return ref
    CACHE.mkdir(parents=True, exist_ok=True)
    tar = CACHE / f"bookworm-{key}.tar"
    if not tar.exists():
        partial = tar.with_suffix(".partial")
        subprocess.run(["mmdebstrap", "--quiet", *MMDEBSTRAP, str(partial)], check=True, timeout=900)
        partial.rename(tar)
    # An imported image has no PATH of its own.
    podman("import", "--change", "ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin", str(tar), ref)
    return ref


def http(method: str, url: str, body: bytes | dict | None = None, headers: dict | None = None, timeout: float = 30) -> tuple[int, str]:
    """(status, body) of one request; a refusal is an answer, not an exception. Raises OSError if nothing answered."""
    data = json.dumps(body).encode() if isinstance(body, dict) else body
    req = urllib.request.Request(url, data=data, method=method, headers={"Content-Type": "application/json", **(headers or {})})
    try:
        with urllib.request.urlopen(req, timeout=timeout) as r:  # noqa: S310 (loopback only)
            return r.status, r.read().decode()
    except urllib.error.HTTPError as e:
        return e.code, e.read().decode()


def ready(url: str) -> bool:
    try:
        return http("GET", f"{url}/readyz", timeout=1)[0] == 200
    except OSError:
        return False


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@dataclass
class Keys:
    """A full set of production keys: the audit keys and one API key (the service holds only its hash)."""

    dir: Path
    client_key: str = field(default_factory=lambda: secrets.token_urlsafe(32))

    def __post_init__(self) -> None:
        self.dir.mkdir(parents=True, exist_ok=True)
        digest = hashlib.sha256(self.client_key.encode()).hexdigest()
        (self.dir / "api_keys").write_text(f"tests:{digest}\n")
        self.env = {
            "AUDIT_HMAC_KEY": secrets.token_hex(32),
            "AUDIT_CHAIN_KEY": secrets.token_hex(32),
            "PII_HMAC_KEY": secrets.token_hex(32),
            "API_KEYS_FILE": str(self.dir / "api_keys"),
        }
        self.headers = {"Authorization": f"Bearer {self.client_key}"}


@dataclass
class Container:
    """One run of the image, as the Deployment runs it; `stop()` sends SIGTERM and times the exit."""

    image: str
    audit_dir: Path
    keys: Keys
    name: str = field(default_factory=lambda: f"fintech-test-{secrets.token_hex(4)}")
    port: int = field(default_factory=free_port)
    extra: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        self.audit_dir.mkdir(parents=True, exist_ok=True)
        os.chmod(self.audit_dir, 0o777)  # the container's uid 1034 writes here (an fsGroup in Kubernetes)
        self.url = f"http://127.0.0.1:{self.port}"
        env = {**self.keys.env, "API_KEYS_FILE": "/run/secrets/api_keys"}
        started = time.monotonic()
        podman(
            "run", "--detach", "--name", self.name,
            "--read-only", "--user", USER, "--cap-drop=ALL", "--security-opt", "no-new-privileges",
            "--tmpfs", "/tmp:rw,size=256m,mode=1777",
            "-v", f"{self.audit_dir}:/var/lib/audit:rw",
            "-v", f"{self.keys.dir / 'api_keys'}:/run/secrets/api_keys:ro",
            *[a for k, v in env.items() for a in ("-e", f"{k}={v}")],
            "-p", f"127.0.0.1:{self.port}:3000",
            *self.extra, self.image,
        )  # fmt: skip
        self.ready_s = self.wait_ready(started)

    def wait_ready(self, started: float, timeout: float = 120) -> float:
        while time.monotonic() - started < timeout:
            state = json.loads(podman("inspect", "--format", "json", self.name).stdout)[0]["State"]
            if not state["Running"]:
                raise RuntimeError(f"the container exited ({state['ExitCode']}) before it was ready:\n{self.logs()[-4000:]}")
            if ready(self.url):
                return time.monotonic() - started
            time.sleep(0.2)
        raise RuntimeError(f"the container was not ready in {timeout} s:\n{self.logs()[-4000:]}")

    def logs(self) -> str:
        done = podman("logs", self.name, check=False)
        return done.stdout + done.stderr

    def exec_python(self, code: str) -> subprocess.CompletedProcess:
        return podman("exec", self.name, "python", "-c", code, check=False)

    def stop(self) -> tuple[int, float]:
        """SIGTERM, as the kubelet sends it; (exit code, seconds to exit). SIGKILL only after the grace period."""
        started = time.monotonic()
        podman("stop", "--time", str(GRACE_S), self.name, timeout=GRACE_S + 60)
        took = time.monotonic() - started
        code = json.loads(podman("inspect", "--format", "json", self.name).stdout)[0]["State"]["ExitCode"]
        return code, took

    def remove(self) -> None:
        podman("rm", "--force", self.name, check=False)


@dataclass
class ServiceImage:
    """The credit service's image built once per session by `make image` (what `service_image` gives)."""

    ref: str
    id: str
    project: Path
    size_bytes: int
    build_s: float
    base: str
    sbom: Path

    def container(self, audit_dir: Path, keys: Keys, **kw) -> Container:
        return Container(self.ref, audit_dir, keys, **kw)


def build_service_image(project: Path) -> ServiceImage:
    """`make bento image` in the project with podman on the local base; the image's facts from `make image`'s output."""
    base = local_base()
    run(["make", "bento"], cwd=project)
    started = time.monotonic()
    run(["make", "image", "IMAGE_ENGINE=podman", f"BASE_IMAGE={base}"], cwd=project, **containers_env())
    took = time.monotonic() - started
    facts = json.loads((project / "dist/image/image.json").read_text())
    ref = facts["image"]
    image_id = podman("image", "inspect", "--format", "{{.Id}}", ref).stdout.strip()
    return ServiceImage(ref, image_id, project, facts["size_bytes"], took, base, project / facts["sbom"])

