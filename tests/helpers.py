"""Baking and running generated repositories, shared by the template's tests."""

from __future__ import annotations

import ast
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

TEMPLATE = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent

DEFAULTS = {
    "project_name": "Credit Risk Model",
    "use_case": "credit_scoring",
    "python_version": "3.11",
    "dvc_remote": "local",
    "deploy_target": "kubernetes",
    "publish_report_images": "no",
    "compute": "pandas",
}



def _telemetry_off() -> dict[str, str]:
    """The generated package's list of telemetry switches (``TELEMETRY_OFF`` in core/config.py): the one source."""
    path = TEMPLATE / "{{cookiecutter.project}}" / "src" / "{{cookiecutter.package}}" / "core" / "config.py"
    for node in ast.parse(path.read_text(encoding="utf-8")).body:
        if isinstance(node, ast.Assign) and [getattr(t, "id", None) for t in node.targets] == ["TELEMETRY_OFF"]:
            return ast.literal_eval(node.value)
    raise AssertionError(f"{path}: no TELEMETRY_OFF = {{...}} literal")


TELEMETRY_OFF = _telemetry_off()

# Every tool the generated project uses must stay quiet and offline.
ENV = {
    **TELEMETRY_OFF,
    "UV_PYTHON_DOWNLOADS": "never",
    "GIT_AUTHOR_NAME": "Template Tests",
    "GIT_AUTHOR_EMAIL": "tests@example.com",
    "GIT_COMMITTER_NAME": "Template Tests",
    "GIT_COMMITTER_EMAIL": "tests@example.com",
}


def env(**extra: str) -> dict[str, str]:
    merged = {**os.environ, **ENV, **extra}
    merged["PATH"] = f"{BIN}{os.pathsep}{merged.get('PATH', '')}"
    # A generated project's `uv run` must use its own .venv, not the template's.
    merged.pop("VIRTUAL_ENV", None)
    return merged


def bake(output_dir: Path, template: Path = TEMPLATE, **context: Any) -> Path:
    """Bake the template with --no-input; returns the generated project directory."""
    from cookiecutter.main import cookiecutter

    output_dir.mkdir(parents=True, exist_ok=True)
    extra = {k: v for k, v in context.items()}
    old = dict(os.environ)
    os.environ.update(ENV)
    try:
        path = cookiecutter(str(template), no_input=True, output_dir=str(output_dir), extra_context=extra)
    finally:
        os.environ.clear()
        os.environ.update(old)
    return Path(path)


def run(cmd: list[str] | str, cwd: Path, check: bool = True, timeout: int = 1200, **extra_env: str) -> subprocess.CompletedProcess:
    result = subprocess.run(
        cmd, cwd=cwd, env=env(**extra_env), capture_output=True, text=True, timeout=timeout, shell=isinstance(cmd, str)
    )
    if check and result.returncode != 0:
        raise AssertionError(
            f"command {cmd!r} failed in {cwd} with exit {result.returncode}\n--- stdout ---\n{result.stdout[-6000:]}"
            f"\n--- stderr ---\n{result.stderr[-6000:]}"
        )
    return result


def generated_files(project: Path) -> set[str]:
    """Every file in the project, relative, excluding git internals."""
    return {
        p.relative_to(project).as_posix()
        for p in project.rglob("*")
        if p.is_file() and ".git" not in p.relative_to(project).parts
    }


UNRENDERED = re.compile(r"(?<!\$)\{\{|\{%|\{#")


def unrendered(project: Path) -> list[str]:
    """Files (and line numbers) where a Jinja tag survived rendering."""
    hits = []
    for rel in sorted(generated_files(project)):
        if rel.endswith(".j2"):
            # The generated repository's own Jinja templates (copied without rendering): they
            # must not refer to the template's answers, which would never be filled in.
            text = (project / rel).read_text(encoding="utf-8")
            hits += [f"{rel}: refers to cookiecutter" for _ in [1] if "cookiecutter" in text]
            continue
        try:
            text = (project / rel).read_text(encoding="utf-8")
        except UnicodeDecodeError:
            continue
        for n, line in enumerate(text.splitlines(), 1):
            if UNRENDERED.search(line):
                hits.append(f"{rel}:{n}: {line.strip()}")
    return hits


def stages_run(dvc_output: str) -> list[str]:
    return re.findall(r"Running stage '([^']+)'", dvc_output)


def copy_project(src: Path, dst: Path) -> Path:
    """Copy a set-up project without its virtualenv (venvs are not relocatable)."""
    shutil.copytree(src, dst, ignore=shutil.ignore_patterns(".venv"), symlinks=True)
    return dst
