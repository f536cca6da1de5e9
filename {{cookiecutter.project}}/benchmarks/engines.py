"""pandas against Spark: ``make score`` on synthetic portfolios of growing size, time and peak memory.

Run from the repository root after ``make repro`` (the model must exist)::

    uv run python benchmarks/engines.py --sizes 1000000 10000000 30000000 --engines pandas spark
    uv run python benchmarks/engines.py --quick    # 20,000 rows, both engines: to see it runs

For each size a portfolio is generated once by the project's own generator (``data/synthetic.py``)
into a scratch directory as Parquet files of at most a million rows each (so generating it never
holds more than a million rows), then each engine scores it with ``python -m {{ cookiecutter.package }}.scoring.score``
in a fresh process, its audit log kept in the scratch directory. Time is the command's wall time.
Memory is the peak, sampled every 0.2 s, of the summed resident set of the whole process tree:
the Python driver, and for Spark the JVM (driver and executors in local mode) and its Python
workers. Shared pages are counted once per process, so the sum is an upper bound.

A run past ``--timeout`` seconds is stopped and reported as such; a run the kernel kills for
memory is reported with its exit status. Figures are measured, never asserted.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = "{{ cookiecutter.package }}"
CHUNK = 1_000_000
PAGE = os.sysconf("SC_PAGE_SIZE")


def generate(rows: int, dest: Path) -> None:
    """``rows`` synthetic records as Parquet files of at most ``CHUNK`` rows, each from its own seed."""
    code = (
        "import sys; from pathlib import Path\n"
        f"from {PACKAGE}.core.contract import load_contract\n"
        f"from {PACKAGE}.data import synthetic\n"
        "rows, dest, chunk = int(sys.argv[1]), Path(sys.argv[2]), int(sys.argv[3])\n"
        "contract = load_contract('contract.yaml')\n"
        "for i, start in enumerate(range(0, rows, chunk)):\n"
        "    df = synthetic.generate(contract, n_rows=min(chunk, rows - start), seed=10_000 + i)\n"
        "    df[contract.row_key] = [f'{i}-{k}' for k in range(len(df))]  # unique across files\n"
        "    df.to_parquet(dest / f'part-{i:05d}.parquet', index=False)\n"
    )
    dest.mkdir(parents=True)
    subprocess.run([sys.executable, "-c", code, str(rows), str(dest), str(CHUNK)], cwd=ROOT, check=True)


def tree_rss(root: int) -> int:
    """Summed resident bytes of ``root`` and every descendant process (Linux /proc)."""
    parents: dict[int, int] = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                stat = Path(f"/proc/{entry}/stat").read_text()
                parents[int(entry)] = int(stat.rsplit(")", 1)[1].split()[1])
            except (OSError, ValueError, IndexError):
                continue
    tree, frontier = {root}, [root]
    while frontier:
        children = [p for p, parent in parents.items() if parent in frontier and p not in tree]
        tree.update(children)
        frontier = children
    total = 0
    for pid in tree:
        try:
            total += int(Path(f"/proc/{pid}/statm").read_text().split()[1]) * PAGE
        except (OSError, ValueError, IndexError):
            continue
    return total


def measure(cmd: list[str], env: dict[str, str], timeout: float) -> dict[str, Any]:
    """Wall seconds, peak process-tree RSS and outcome of ``cmd``."""
    start = time.perf_counter()
    proc = subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, start_new_session=True)
    peak, status = 0, None
    while status is None:
        peak = max(peak, tree_rss(proc.pid))
        if time.perf_counter() - start > timeout:
            os.killpg(proc.pid, 9)
            proc.wait()
            return {"seconds": None, "peak_gib": peak / 2**30, "outcome": f"stopped after {timeout:.0f} s"}
        try:
            status = proc.wait(timeout=0.2)
        except subprocess.TimeoutExpired:
            pass
    seconds = time.perf_counter() - start
    err = proc.stderr.read().decode(errors="replace") if proc.stderr else ""
    outcome = (
        "ok"
        if status == 0
        else ("killed (out of memory?)" if status in (-9, 137) else f"exit {status}: {err.strip().splitlines()[-1:]}")
    )
    return {"seconds": round(seconds, 1), "peak_gib": round(peak / 2**30, 2), "outcome": outcome}


def run(sizes: list[int], engines: list[str], timeout: float, work: Path) -> dict[str, Any]:
    """Every engine on every size; an engine that fails a size is not run on larger ones."""
    results: list[dict[str, Any]] = []
    stopped: set[str] = set()
    for rows in sizes:
        data = work / f"in-{rows}"
        generate(rows, data)
        for engine in engines:
            if engine in stopped:
                results.append(
                    {
                        "rows": rows,
                        "engine": engine,
                        "seconds": None,
                        "peak_gib": None,
                        "outcome": "not run (failed a smaller size)",
                    }
                )
                continue
            env = {
                **os.environ,
                "AUDIT_LOG_PATH": str(work / "audit.jsonl"),
                "AUDIT_CHECKPOINT_PATH": str(work / "checkpoints.jsonl"),
            }
            cmd = [
                sys.executable,
                "-m",
                f"{PACKAGE}.scoring.score",
                "--input",
                str(data),
                "--output",
                str(work / f"out-{engine}-{rows}"),
                "--engine",
                engine,
            ]
            result = {"rows": rows, "engine": engine, "stage": "score", **measure(cmd, env, timeout)}
            results.append(result)
            print(json.dumps(result), flush=True)
            if result["outcome"] != "ok":
                stopped.add(engine)
            shutil.rmtree(work / f"out-{engine}-{rows}", ignore_errors=True)
        shutil.rmtree(data, ignore_errors=True)
    return {
        "machine": {
            "cpus": os.cpu_count(),
            "memory_gib": round(os.sysconf("SC_PHYS_PAGES") * PAGE / 2**30, 1),
            "platform": platform.platform(),
        },
        "timeout_s": timeout,
        "results": results,
    }


def markdown(report: dict[str, Any], command: str) -> str:
    """The table docs/benchmarks.md shows."""
    m = report["machine"]
    lines = [
        f"`{command}` on {m['cpus']} CPUs, {m['memory_gib']} GiB ({m['platform']}); "
        f"time limit {report['timeout_s']:.0f} s per run.",
        "",
        "| rows | engine | seconds | s per million | peak memory GiB | outcome |",
        "|---:|---|---:|---:|---:|---|",
    ]
    for r in report["results"]:
        per = f"{r['seconds'] / (r['rows'] / 1e6):.1f}" if r["seconds"] else ""
        peak = "" if r["peak_gib"] is None else f"{r['peak_gib']:.2f}"
        lines.append(f"| {r['rows']:,} | {r['engine']} | {r['seconds'] or ''} | {per} | {peak} | {r['outcome']} |")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    """Benchmark the engines and write reports/bench/engines.json and engines.md."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[1_000_000, 10_000_000, 30_000_000])
    parser.add_argument("--engines", nargs="+", choices=["pandas", "spark"], default=["pandas", "spark"])
    parser.add_argument("--timeout", type=float, default=3600, help="seconds one run may take before it is stopped")
    parser.add_argument("--quick", action="store_true", help="20,000 rows: seconds, to see it runs")
    parser.add_argument("--out", type=Path, default=ROOT / "reports" / "bench")
    args = parser.parse_args(argv)
    sizes = [20_000] if args.quick else args.sizes
    with tempfile.TemporaryDirectory(prefix="bench-engines-") as tmp:
        report = run(sizes, args.engines, args.timeout, Path(tmp))
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "engines.json").write_text(json.dumps(report, indent=2) + "\n", encoding="utf-8")
    table = markdown(report, "python benchmarks/engines.py " + " ".join(argv if argv is not None else sys.argv[1:]))
    (args.out / "engines.md").write_text(table, encoding="utf-8")
    print(table)
    return 0


if __name__ == "__main__":
    sys.exit(main())
