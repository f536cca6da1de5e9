"""Pipeline benchmark: ``dvc repro`` from scratch at several data sizes, stage by stage.

Run from the repository root (after ``make setup``)::

    uv run python benchmarks/pipeline.py --sizes 10000 100000 1000000 --out reports/bench/pipeline.json
    uv run python benchmarks/pipeline.py --quick   # 2,000 and 5,000 rows: seconds, to see it works

For each size the repository's files (``git ls-files``: tracked and untracked-but-not-ignored,
so uncommitted edits are measured too) are copied into a scratch directory; your own data/,
models/, mlruns/ and mlflow.db are never read or written. There ``generate.n_rows`` is set,
``dvc.lock`` is dropped and ``dvc repro`` runs every stage from scratch. Each stage's last line
(``stage <name> finished in N s, peak memory M MiB``, core/stage.py) gives its wall time and
peak resident memory; the whole reproduction is timed here and its peak is the largest
resident set of any process in it (``ru_maxrss`` of the finished children: DVC or a stage,
whichever was larger; they run one after the other). At the largest size a second
``dvc repro`` with nothing changed measures the no-op cost. The fairness stage's gates are read
from ``reports/fairness.json`` at each size.

``growth`` is seconds at the largest size over seconds at the one before it: with sizes
growing tenfold, 10 is linear. Figures are measured, never asserted: this is a benchmark,
not a test.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import re
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import yaml

ROOT = Path(__file__).resolve().parents[1]
QUICK_SIZES = [2000, 5000]
STAGE_LINE = re.compile(
    r"stage (?P<stage>\w+) (?P<status>finished|FAILED) in (?P<seconds>[\d.]+) s, peak memory (?P<mib>[\d.]+) MiB"
)
# Never copied even when not git-ignored: the user's own outputs and state.
SKIP = ("data/raw/", "data/prepared/", "models/", "mlruns/", "mlartifacts/", "reports/", "logs/", ".venv/")
SKIP += (".dvc/cache/", ".dvc/tmp/")
SKIP_FILES = {"mlflow.db", "dvc.lock"}

# Runs a command and reports the largest resident set among its finished descendants (KiB on
# Linux): the peak of the whole reproduction, read from the kernel, without /usr/bin/time.
_PEAK_WRAPPER = (
    "import resource, subprocess, sys\n"
    "status = subprocess.run(sys.argv[1:]).returncode\n"
    "print('PEAK_KIB', resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss, file=sys.stderr)\n"
    "sys.exit(status)\n"
)


def parse_stage_lines(log: str) -> dict[str, dict[str, Any]]:
    """Stage name -> {"seconds", "peak_mib", "ok"} from the stages' finishing lines in ``log``."""
    out: dict[str, dict[str, Any]] = {}
    for match in STAGE_LINE.finditer(log):
        out[match["stage"]] = {
            "seconds": float(match["seconds"]),
            "peak_mib": float(match["mib"]),
            "ok": match["status"] == "finished",
        }
    return out


def repository_files(root: Path) -> list[str]:
    """The repository's own files: tracked plus untracked-not-ignored, minus outputs and state."""
    try:
        listed = subprocess.run(
            ["git", "ls-files", "--cached", "--others", "--exclude-standard", "-z"],
            cwd=root,
            capture_output=True,
            check=True,
        ).stdout.decode()
        names = [n for n in listed.split("\0") if n]
    except (OSError, subprocess.CalledProcessError):
        sys.exit(f"benchmarks/pipeline.py: {root} is not a git repository (run make setup first)")
    return [n for n in names if not n.startswith(SKIP) and Path(n).name not in SKIP_FILES and (root / n).is_file()]


def scratch_copy(root: Path, dest: Path, n_rows: int) -> None:
    """Copy the repository into ``dest`` with ``generate.n_rows`` set, as a fresh git + DVC repo."""
    for name in repository_files(root):
        target = dest / name
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(root / name, target)
    params_file = dest / "params.yaml"
    params = yaml.safe_load(params_file.read_text(encoding="utf-8"))
    params["generate"]["n_rows"] = n_rows
    params_file.write_text(yaml.safe_dump(params, sort_keys=False), encoding="utf-8")
    # dvc repro needs a git repository (DVC's SCM); nothing is committed.
    subprocess.run(["git", "init", "-q"], cwd=dest, check=True)
    if not (dest / ".dvc" / "config").exists():
        subprocess.run([_dvc(), "init", "-q"], cwd=dest, check=True, env=_env(dest))
    subprocess.run([_dvc(), "config", "core.analytics", "false"], cwd=dest, check=True, env=_env(dest))


def _dvc() -> str:
    """The dvc of this environment (the one the benchmark runs in)."""
    found = Path(sys.executable).with_name("dvc")
    return str(found) if found.exists() else (shutil.which("dvc") or "dvc")


def _env(work: Path) -> dict[str, str]:
    """The stages' environment: this Python first, the scratch copy's src first, quiet progress."""
    return {
        **os.environ,
        "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}",
        "PYTHONPATH": str(work / "src"),
        "PROGRESS_EVERY": "0",
        "DVC_NO_ANALYTICS": "1",
    }


def timed_repro(work: Path) -> tuple[int, float, float, str]:
    """Run ``dvc repro`` in ``work``: (exit status, wall seconds, peak MiB, combined log)."""
    start = time.perf_counter()
    proc = subprocess.run(
        [sys.executable, "-c", _PEAK_WRAPPER, _dvc(), "repro"],
        cwd=work,
        env=_env(work),
        capture_output=True,
        text=True,
    )
    seconds = time.perf_counter() - start
    log = proc.stdout + proc.stderr
    peak = re.search(r"PEAK_KIB (\d+)", proc.stderr)
    peak_mib = int(peak.group(1)) * (1 if sys.platform == "darwin" else 1024) / 2**20 if peak else float("nan")
    return proc.returncode, seconds, peak_mib, log


def fairness_passed(work: Path) -> bool:
    """Whether the fairness stage's gates all passed (reports/fairness.json); False if it did not run."""
    path = work / "reports" / "fairness.json"
    if not path.exists():
        return False
    return json.loads(path.read_text(encoding="utf-8")).get("passed") is True  # the report checks it against its gates


def use_case_name(root: Path) -> str:
    """The baked use case (src/{{ cookiecutter.package }}/core/use_case.yaml)."""
    found = sorted((root / "src").glob("*/core/use_case.yaml"))
    return yaml.safe_load(found[0].read_text(encoding="utf-8"))["name"] if found else "unknown"


def growth(by_size: dict[str, dict[str, float]], sizes: list[int]) -> float | None:
    """Seconds at the largest size over seconds at the previous one (None if not measurable)."""
    if len(sizes) < 2:
        return None
    last, previous = by_size.get(str(sizes[-1])), by_size.get(str(sizes[-2]))
    if not last or not previous or previous["seconds"] <= 0:
        return None
    return round(last["seconds"] / previous["seconds"], 2)


def run(sizes: list[int], root: Path = ROOT, keep: bool = False, echo: bool = True) -> dict[str, Any]:
    """Benchmark ``dvc repro`` at each size; the result dict described in the module docstring."""
    sizes = sorted(set(sizes))
    result: dict[str, Any] = {
        "use_case": use_case_name(root),
        "machine": {"cpus": os.cpu_count() or 1, "python": platform.python_version()},
        "sizes": sizes,
        "stages": {},
        "total": {},
        "growth": {},
        "noop_repro_seconds": None,
        "fairness_gates_pass": {},
        "repro_ok": {},
    }
    for n in sizes:
        work = Path(tempfile.mkdtemp(prefix=f"bench-pipeline-{n}-"))
        try:
            scratch_copy(root, work, n)
            status, seconds, peak, log = timed_repro(work)
            stages = parse_stage_lines(log)
            if status != 0:
                failed = log.strip().splitlines()[-3:]
                print(f"  {n} rows: dvc repro failed ({status}): {' | '.join(failed)}", file=sys.stderr)
            for stage, figures in stages.items():
                result["stages"].setdefault(stage, {})[str(n)] = {"seconds": figures["seconds"], "peak_mib": figures["peak_mib"]}
            result["total"][str(n)] = {"seconds": round(seconds, 2), "peak_mib": round(peak, 1)}
            result["fairness_gates_pass"][str(n)] = fairness_passed(work)
            result["repro_ok"][str(n)] = status == 0
            if echo:
                print(
                    f"  {n:>9} rows: {seconds:7.1f} s, peak {peak:7.0f} MiB, fairness gates "
                    f"{'pass' if result['fairness_gates_pass'][str(n)] else 'FAIL'}",
                    file=sys.stderr,
                )
            if n == sizes[-1]:
                start = time.perf_counter()
                subprocess.run([_dvc(), "repro"], cwd=work, env=_env(work), capture_output=True, check=False)
                result["noop_repro_seconds"] = round(time.perf_counter() - start, 2)
        finally:
            if keep:
                print(f"  kept {work}", file=sys.stderr)
            else:
                shutil.rmtree(work, ignore_errors=True)
    for stage, by_size in result["stages"].items():
        result["growth"][stage] = growth(by_size, sizes)
    result["growth"]["total"] = growth(result["total"], sizes)
    return result


def _cell(value: float | None, fmt: str) -> str:
    return "–" if value is None else format(value, fmt)


def markdown(result: dict) -> str:
    """A Markdown table per size: stage, seconds, peak MiB, growth over the previous size."""
    sizes = result["sizes"]
    lines = [
        f"### Pipeline: `dvc repro` from scratch ({result['use_case']}, {result['machine']['cpus']} CPUs, "
        f"Python {result['machine']['python']})",
        "",
    ]
    for i, n in enumerate(sizes):
        previous = str(sizes[i - 1]) if i else None
        lines += [f"**{n:,} rows**" + ("" if result["fairness_gates_pass"].get(str(n)) else " (fairness gates FAILED)"), ""]
        lines += ["| stage | s | peak MiB | growth |", "|---|---:|---:|---:|"]
        rows = [(stage, by_size) for stage, by_size in result["stages"].items()] + [("**total**", result["total"])]
        for stage, by_size in rows:
            here = by_size.get(str(n))
            if here is None:
                continue
            before = by_size.get(previous) if previous else None
            ratio = here["seconds"] / before["seconds"] if before and before["seconds"] > 0 else None
            lines.append(
                f"| {stage} | {here['seconds']:.1f} | {here['peak_mib']:.0f} | {_cell(ratio, '.1f')}x |"
                if ratio is not None
                else f"| {stage} | {here['seconds']:.1f} | {here['peak_mib']:.0f} | – |"
            )
        lines.append("")
    lines.append(
        f"No-op `dvc repro` at {sizes[-1]:,} rows: {_cell(result['noop_repro_seconds'], '.1f')} s. "
        f"Growth is seconds over the previous size's (sizes x{sizes[-1] / sizes[-2]:.0f}: that ratio is linear)."
        if len(sizes) > 1
        else f"No-op `dvc repro`: {_cell(result['noop_repro_seconds'], '.1f')} s."
    )
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    """Command line: run the benchmark, write the JSON, print the Markdown."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[10_000, 100_000, 1_000_000], help="rows to generate")
    parser.add_argument("--quick", action="store_true", help=f"sizes {QUICK_SIZES} only: seconds, to see it works")
    parser.add_argument("--out", type=Path, default=ROOT / "reports" / "bench" / "pipeline.json")
    parser.add_argument("--keep", action="store_true", help="keep the scratch copies (printed) for a look")
    args = parser.parse_args(argv)
    sizes = QUICK_SIZES if args.quick else args.sizes
    if any(n < 100 for n in sizes):
        parser.error("every size must be at least 100 rows (generate.n_rows)")
    result = run(sizes, keep=args.keep)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n", encoding="utf-8")
    print(markdown(result))
    print(f"wrote {args.out}", file=sys.stderr)
    return 0 if all(result["repro_ok"].values()) else 1


if __name__ == "__main__":
    sys.exit(main())
