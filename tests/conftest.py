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
            done = run(["make", "repro"], cwd=project, PROGRESS_EVERY="0")
            get.repro_logs[use_case] = done.stdout + done.stderr
            cache[use_case] = project
        return cache[use_case]

    get.repro_logs = {}
    return get
