from __future__ import annotations

from pathlib import Path

import pytest

from helpers import bake, run


@pytest.fixture(scope="session")
def pipeline_repo(tmp_path_factory):
    """One baked, set-up repository per use case whose pipeline has run (`make setup repro`).

    Tests that change it must work on a copy (helpers.copy_project, then `make setup`).
    """
    cache: dict[str, Path] = {}

    def get(use_case: str) -> Path:
        if use_case not in cache:
            out = tmp_path_factory.mktemp(f"e2e-{use_case}")
            project = bake(out, use_case=use_case, project_name=f"Acme {use_case.replace('_', ' ').title()}")
            run(["make", "setup"], cwd=project)
            # PROGRESS_EVERY=0: every step of long loops is logged, so the log shows the progress lines.
            done = run("make repro 2>&1", cwd=project, PROGRESS_EVERY="0")  # DVC's and the stages' lines interleaved
            get.repro_logs[use_case] = done.stdout
            cache[use_case] = project
        return cache[use_case]

    get.repro_logs = {}
    return get


@pytest.fixture(scope="session")
def service_image(pipeline_repo):
    """The credit decision service's image, built ONCE per session: `make bento image` in the credit
    pipeline repository, with podman on a local Debian bookworm base (tests/containers.py).

    Gives a containers.ServiceImage: `.ref` (name:tag), `.id`, `.project` (the repository),
    `.size_bytes`, `.build_s`, `.base`, `.sbom`, and `.container(audit_dir, keys)` to run it as
    production does (read-only root, uid 1034, no capabilities, tmpfs /tmp, audit volume).
    """
    from containers import build_service_image

    return build_service_image(pipeline_repo("credit_scoring"))


@pytest.fixture(scope="session")
def registry(tmp_path_factory):
    """One real OCI registry per session on 127.0.0.1 (Debian's docker-registry, storage in tmp): a registry.Registry."""
    from registry import Registry

    served = Registry(tmp_path_factory.mktemp("registry"))
    yield served
    served.stop()
