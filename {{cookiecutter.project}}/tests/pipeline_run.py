"""Run the real pipeline, every stage from generate to regulatory, once per test session.

The run happens in a temporary copy of the repository with a small synthetic data set, in a
separate Python process (as DVC would run it), with one data subject put on the erasure
ledger before ``prepare``. ``dvc commit`` then writes the ``dvc.lock`` DVC would have written,
so tests can compare what the model card states with it. Governance tests read the artefacts.
"""

from __future__ import annotations

import atexit
import functools
import os
import shutil
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

import pandas as pd
import yaml

from {{ cookiecutter.package }}.core import config, use_case

ROOT = Path(__file__).resolve().parents[1]
STAGES = (
    "prepare",
    "validate",
    "benchmark",
    "train",
    "reference",
    "evaluate",
    "fairness",
    "explain",
    "validation_pack",
    "model_card",
    "regulatory",
)
# Repository files the `regulatory` stage cites (it stops when one is missing), copied into the run.
CITED_REPO_FILES = ("Makefile", "bentofile.yaml", "docs", ".github", "deploy")


def stage_modules() -> dict[str, str]:
    """Stage name -> module, read from dvc.yaml's ``cmd: python -m <module>`` lines (one source)."""
    stages = yaml.safe_load((ROOT / "dvc.yaml").read_text(encoding="utf-8"))["stages"]
    return {name: stage["cmd"].split()[-1] for name, stage in stages.items()}


@dataclass(frozen=True)
class PipelineRun:
    dir: Path
    raw: pd.DataFrame  # the input, with its raw PII
    subject: str  # raw value of the subject erased through the ledger
    erased_ids: tuple[str, ...]  # id-column values of the erased subject's rows
    log: str

    def path(self, relative: str) -> Path:
        return self.dir / relative

    @property
    def tracking_uri(self) -> str:
        return f"sqlite:///{self.dir / 'mlflow.db'}"


def small_params(params: dict) -> dict:
    """The repository's params with a small data set and fewer resamples, so the run takes seconds."""
    out = yaml.safe_load(yaml.safe_dump(params))
    out["generate"]["n_rows"] = 4000 if use_case.load().name == "credit_scoring" else 12000
    out["explain"]["n_repeats"] = 2
    out["fairness"]["bootstrap"] = 50
    return out


def _env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in ("MLFLOW_TRACKING_URI", "PII_HMAC_KEY")}
    env.update(config.TELEMETRY_OFF, LOG_LEVEL="WARNING", PYTHONWARNINGS="ignore")
    # Small data: OpenMP threads cost more than they save, and oversubscribe a busy CI runner.
    env.setdefault("OMP_NUM_THREADS", "1")
    return env


def run_stages(
    workdir: Path, *stages: str, erase: str | None = None, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess:
    """Run stage ``main()`` functions in order in one fresh interpreter; stop at the first failure."""
    script = "\n".join(
        [
            "import sys, importlib",
            f"modules = {stage_modules()!r}",
            f"erase = {erase!r}",
            f"for name in {list(stages)!r}:",
            "    mod = importlib.import_module(modules[name])",
            "    if name == 'prepare':",
            "        if erase is not None and mod.main(['--erase', erase]) != 0:",
            "            sys.exit('prepare --erase failed')",
            "        rc = mod.main([])",
            "    else:",
            "        rc = mod.main()",
            "    if rc:",
            "        sys.exit(f'stage {name} exited with {rc}')",
        ]
    )
    return subprocess.run(
        [sys.executable, "-c", script], cwd=workdir, env={**_env(), **(env or {})}, capture_output=True, text=True, timeout=900
    )


def make_workdir(params: dict) -> Path:
    workdir = Path(tempfile.mkdtemp(prefix="pipeline-run-"))
    atexit.register(shutil.rmtree, workdir, ignore_errors=True)
    for name in ("contract.yaml", "dvc.yaml", "pyproject.toml", "uv.lock"):
        if (ROOT / name).exists():
            shutil.copy2(ROOT / name, workdir / name)
    shutil.copytree(ROOT / "src", workdir / "src", ignore=shutil.ignore_patterns("__pycache__"))
    for name in CITED_REPO_FILES:
        if (ROOT / name).is_dir():
            shutil.copytree(ROOT / name, workdir / name)
        elif (ROOT / name).exists():
            shutil.copy2(ROOT / name, workdir / name)
    (workdir / "data").mkdir()
    (workdir / "data" / "erasure_ledger.csv").write_text("subject_pseudonym\n", encoding="utf-8")
    (workdir / "params.yaml").write_text(yaml.safe_dump(small_params(params), sort_keys=False), encoding="utf-8")
    return workdir


def pipeline_run() -> PipelineRun:
    """The session's pipeline run; a failure is raised once and then re-raised, never re-run."""
    result = _pipeline_run()
    if isinstance(result, Exception):
        raise result
    return result


@functools.cache
def _pipeline_run() -> PipelineRun | Exception:
    try:
        return _run_pipeline()
    except Exception as exc:  # noqa: BLE001 - cached and re-raised by pipeline_run()
        return exc


def _run_pipeline() -> PipelineRun:
    from {{ cookiecutter.package }}.core.contract import load_contract

    params = yaml.safe_load((ROOT / "params.yaml").read_text(encoding="utf-8"))
    contract = load_contract(ROOT / "contract.yaml")
    workdir = make_workdir(params)
    first = run_stages(workdir, "generate")
    if first.returncode:
        raise RuntimeError(f"generate failed:\n{first.stderr[-4000:]}")
    raw = pd.read_parquet(workdir / "data/raw/synthetic.parquet")
    subject = str(raw[contract.subject].iloc[len(raw) // 2])
    erased_ids = tuple(raw.loc[raw[contract.subject] == subject, contract.id_column].astype(str))
    rest = run_stages(workdir, *STAGES, erase=subject)
    if rest.returncode:
        raise RuntimeError(f"pipeline failed in {workdir}:\n{rest.stderr[-6000:]}")
    # Record the run in dvc.lock exactly as `dvc repro` would have (hashes of every dep and out).
    for args in (["init", "--no-scm", "-q"], ["commit", "-f", "-q"]):
        done = subprocess.run([sys.executable, "-m", "dvc", *args], cwd=workdir, env=_env(), capture_output=True, text=True)
        if done.returncode:
            raise RuntimeError(f"dvc {' '.join(args)} failed in {workdir}:\n{done.stderr[-3000:]}")
    return PipelineRun(dir=workdir, raw=raw, subject=subject, erased_ids=erased_ids, log=first.stderr + rest.stderr)
