"""A real OCI registry on 127.0.0.1 and podman set up for `podman kube play`, for the rollout tests.

Builds on containers.py (the local bookworm base, podman's containers.conf): `kube play` also
needs an infra (pause) image, which podman would pull or build from catatonit; neither is here,
so a pause image is built from the local base and named in a containers.conf of its own.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import time
import urllib.request
from pathlib import Path

from containers import CACHE, CONTAINERS_CONF, free_port, local_base, podman

PAUSE = "localhost/fintech-test-pause:1"
# Waits for SIGTERM: a PID 1 without a handler ignores it, and every `kube play --replace` would
# wait out podman's 10 s stop timeout.
PAUSE_CMD = ["python3", "-c", "import signal; signal.signal(signal.SIGTERM, lambda *_: exit(0)); signal.pause()"]


def kube_env() -> dict[str, str]:
    """CONTAINERS_CONF for `kube play`: containers.py's settings plus the local pause image (made once per machine)."""
    if podman("image", "exists", PAUSE, check=False).returncode != 0:
        context = CACHE / "pause"
        context.mkdir(parents=True, exist_ok=True)
        (context / "Containerfile").write_text(f"FROM {local_base()}\nENTRYPOINT {json.dumps(PAUSE_CMD)}\n")
        podman("build", "-q", "-t", PAUSE, str(context))
    conf = CACHE / "containers-kube.conf"
    text = CONTAINERS_CONF + f'infra_image = "{PAUSE}"\n'
    if not conf.exists() or conf.read_text() != text:
        conf.write_text(text)
    return {"CONTAINERS_CONF": str(conf)}


class Registry:
    """Debian's docker-registry serving plain HTTP on 127.0.0.1, its storage in a temporary directory."""

    def __init__(self, work: Path) -> None:
        self.work = work
        self.host = f"127.0.0.1:{free_port()}"
        config = work / "registry.yml"
        config.write_text(
            "version: 0.1\n"
            "log: {level: warn}\n"
            f"storage: {{filesystem: {{rootdirectory: '{work / 'storage'}'}}}}\n"
            f"http: {{addr: '{self.host}'}}\n"
        )
        self.log = (work / "registry.log").open("w")
        self.proc = subprocess.Popen([shutil.which("docker-registry") or "docker-registry", "serve", str(config)],
                                     stdout=self.log, stderr=subprocess.STDOUT)  # fmt: skip
        deadline = time.monotonic() + 30
        while True:
            try:
                with urllib.request.urlopen(f"http://{self.host}/v2/", timeout=1) as resp:  # noqa: S310 (loopback)
                    if resp.status == 200:
                        return
            except OSError:
                if self.proc.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError(f"docker-registry did not start: {(work / 'registry.log').read_text()}") from None
                time.sleep(0.1)

    def digest(self, repository: str, tag: str) -> str:
        """The manifest digest the registry serves for repository:tag (`skopeo inspect`)."""
        inspected = subprocess.run(["skopeo", "inspect", "--tls-verify=false", f"docker://{self.host}/{repository}:{tag}"],
                                   capture_output=True, text=True, check=True, env={**os.environ, **kube_env()})  # fmt: skip
        return json.loads(inspected.stdout)["Digest"]

    def push(self, local: str, repository: str, tag: str) -> str:
        """Push ``local`` as repository:tag; ``host/repository@sha256:...`` with the digest the registry serves.

        The digest is the registry's (`skopeo inspect`), and must be the one podman says it pushed.
        """
        tagged = f"{self.host}/{repository}:{tag}"
        digestfile = self.work / f"{repository.replace('/', '_')}-{tag}.digest"
        podman("push", "-q", "--tls-verify=false", "--digestfile", str(digestfile), local, tagged)
        digest = self.digest(repository, tag)
        assert digest == digestfile.read_text().strip(), f"registry serves {digest}, podman pushed {digestfile.read_text()}"
        return f"{self.host}/{repository}@{digest}"

    def stop(self) -> None:
        self.proc.terminate()
        self.proc.wait(timeout=30)
        self.log.close()
