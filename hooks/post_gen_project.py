"""Keep what the chosen options use, remove the rest, and make the result a git repository."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

CONTEXT = json.loads({{ cookiecutter | jsonify | tojson }})
ROOT = Path.cwd()
PACKAGE_DIR = ROOT / "src" / CONTEXT["package"]


def keep_use_case(use_case: str) -> None:
    chosen = ROOT / "_use_cases" / use_case
    shutil.move(str(chosen / "contract.yaml"), ROOT / "contract.yaml")
    shutil.move(str(chosen / "synthetic.py"), PACKAGE_DIR / "data" / "synthetic.py")
    shutil.rmtree(ROOT / "_use_cases")


def remove(*relative: str) -> None:
    for rel in relative:
        path = ROOT / rel
        if path.is_dir():
            shutil.rmtree(path)
        elif path.exists():
            path.unlink()


def git_init() -> None:
    if shutil.which("git") is None:
        print("warning: git not found; run `git init` yourself before `make setup`", file=sys.stderr)
        return
    identity = ["-c", f"user.name={CONTEXT['author_name']}", "-c", f"user.email={CONTEXT['author_email']}", "-c", "commit.gpgsign=false"]
    steps = [
        ["git", "init", "-q", "-b", "main"],
        ["git", "add", "-A"],
        ["git", *identity, "commit", "-q", "--no-verify", f"--author={CONTEXT['author_name']} <{CONTEXT['author_email']}>",
         "-m", "Initial commit from cookiecutter-fintech-mlops"],
    ]
    for step in steps:
        result = subprocess.run(step, capture_output=True, text=True)
        if result.returncode != 0:
            print(f"warning: `{' '.join(step)}` failed: {result.stderr.strip()}; the files are in place, commit them yourself",
                  file=sys.stderr)
            return


def main() -> int:
    keep_use_case(CONTEXT["use_case"])
    # Each target keeps its own deployment files; Prometheus, Grafana and the local stack are for all.
    if CONTEXT["deploy_target"] != "kubernetes":
        remove("deploy/k8s")
    if CONTEXT["deploy_target"] != "bentocloud":
        remove("deploy/bentocloud")
    git_init()
    return 0


if __name__ == "__main__":
    sys.exit(main())
