"""A baked repository can take later template releases: cruft create, then cruft update."""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

from helpers import TEMPLATE, run

CRUFT = str(Path(__import__("sys").executable).parent / "cruft")


def template_repo(dst: Path) -> tuple[Path, str]:
    """A git repository holding this template's tracked files; returns (path, commit)."""
    tracked = subprocess.run(["git", "ls-files", "-z"], cwd=TEMPLATE, capture_output=True, text=True, check=True).stdout
    for rel in filter(None, tracked.split("\0")):
        src = TEMPLATE / rel
        if src.is_file():
            (dst / rel).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(src, dst / rel)
    run(["git", "init", "-q", "-b", "main"], cwd=dst)
    run(["git", "add", "-A"], cwd=dst)
    run(["git", "commit", "-q", "-m", "template v1"], cwd=dst)
    return dst, run(["git", "rev-parse", "HEAD"], cwd=dst).stdout.strip()


def test_cruft_create_then_update_to_a_later_template_commit(tmp_path):
    template, first = template_repo(tmp_path / "template")
    out = tmp_path / "projects"
    out.mkdir()
    run([CRUFT, "create", "--no-input", "--output-dir", str(out), str(template)], cwd=tmp_path)
    project = out / "credit-risk-model"
    state = json.loads((project / ".cruft.json").read_text())
    assert state["commit"] == first
    assert (project / "contract.yaml").is_file() and not (project / "_use_cases").exists()
    run(["git", "add", ".cruft.json"], cwd=project)
    run(["git", "commit", "-q", "-m", "Track template state"], cwd=project)
    run([CRUFT, "check"], cwd=project)

    # The team changes a tunable in their repository...
    params = project / "params.yaml"
    params.write_text(params.read_text().replace("seed: 42", "seed: 7"))
    run(["git", "commit", "-qam", "Our own seed"], cwd=project)

    # ...while the template ships a release: an edited file and a new one.
    readme = template / "{{cookiecutter.project}}" / "README.md"
    readme.write_text(readme.read_text() + "\n## Support\n\nAsk #model-platform.\n")
    (template / "{{cookiecutter.project}}" / "CHANGELOG.md").write_text("# Changelog for {{ cookiecutter.project_name }}\n")
    run(["git", "add", "-A"], cwd=template)
    run(["git", "commit", "-q", "-m", "template v2"], cwd=template)
    second = run(["git", "rev-parse", "HEAD"], cwd=template).stdout.strip()

    check = subprocess.run([CRUFT, "check"], cwd=project, capture_output=True, text=True)
    assert check.returncode != 0, "cruft check should report the project is behind the template"

    run([CRUFT, "update", "--skip-apply-ask", "-y"], cwd=project)
    assert json.loads((project / ".cruft.json").read_text())["commit"] == second
    assert "Ask #model-platform." in (project / "README.md").read_text()
    assert (project / "CHANGELOG.md").read_text() == "# Changelog for Credit Risk Model\n"
    assert "seed: 7" in params.read_text(), "the team's own change must survive the update"
    assert not list(project.rglob("*.rej")), "the update left rejected hunks"
    assert not (project / ".git" / "config.orig").exists()
    run([CRUFT, "check"], cwd=project)
