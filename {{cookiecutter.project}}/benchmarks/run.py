"""``make bench``: the pipeline at growing sizes, then the decision service under load.

Writes ``reports/bench/bench.json`` (every figure), ``reports/bench/bench.md`` (the tables)
and ``reports/bench/latency.png`` (latency against concurrency, service and FastAPI) plus
``reports/bench/pipeline.png`` (wall time against rows, per stage). Benchmarks print figures;
nothing here passes or fails on a timing. Compare ratios measured in the same run, not
absolute figures from different machines.

    uv run python benchmarks/run.py                       # 10k/100k/1M rows, 10 s per load cell
    uv run python benchmarks/run.py --quick               # seconds: checks everything runs
    uv run python benchmarks/run.py --only serving        # or: --only pipeline
    uv run python benchmarks/run.py --image NAME:TAG      # also the image from `make image`, beside the source
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import subprocess
import sys
import time
from importlib import metadata
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
OUT = ROOT / "reports" / "bench"
sys.path.insert(0, str(HERE))

import serve  # noqa: E402 - the sibling script, importable once HERE is on the path

PACKAGES = ("bentoml", "fastapi", "uvicorn", "scikit-learn", "pandas", "numpy", "dvc", "great-expectations", "mlflow")


def versions() -> dict[str, str]:
    """The versions that shape the figures: Python packages and the load generators."""
    found = {name: metadata.version(name) for name in PACKAGES}
    for tool, flag in (("wrk", "-v"), ("hey", "-h")):
        path = shutil.which(tool)
        if path is None:
            found[tool] = "missing"
            continue
        out = subprocess.run([tool, flag], capture_output=True, text=True, check=False)
        first = (out.stdout + out.stderr).strip().splitlines()[:1]
        found[tool] = first[0] if tool == "wrk" and first else path
    return found


def pipeline(sizes: list[int], quick: bool) -> dict[str, Any]:
    """benchmarks/pipeline.py in its own process (it runs ``dvc repro`` in scratch copies)."""
    target = OUT / "pipeline.json"
    cmd = [sys.executable, str(HERE / "pipeline.py"), "--out", str(target)]
    cmd += ["--quick"] if quick else ["--sizes", *map(str, sizes)]
    subprocess.run(cmd, cwd=ROOT, check=True)
    return json.loads(target.read_text(encoding="utf-8"))


def plots(result: dict[str, Any]) -> list[Path]:
    """Latency against concurrency, and pipeline time against rows."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    written = []
    if "serving" in result:
        s = result["serving"]
        fig, ax = plt.subplots(figsize=(6, 4))
        clients = s["settings"]["concurrency"]
        for kind, colour in (("bentoml", "tab:blue"), ("fastapi", "tab:orange")):
            cells = [s["closed_loop"][kind][str(c)] for c in clients]
            ax.plot(clients, [c["p50_ms"] for c in cells], "o--", color=colour, label=f"{kind} p50")
            ax.plot(clients, [c["p99_ms"] for c in cells], "o-", color=colour, label=f"{kind} p99")
        ax.axhline(50, color="grey", linewidth=0.8, linestyle=":", label="p99 target 50 ms")
        ax.set(xscale="log", yscale="log", xlabel="concurrent clients (closed loop)", ylabel="latency, ms")
        ax.set_xticks(clients, [str(c) for c in clients])
        ax.set_title("POST /decide latency against concurrency")
        ax.legend(fontsize=8)
        fig.tight_layout()
        written.append(OUT / "latency.png")
        fig.savefig(written[-1], dpi=120)
        plt.close(fig)
    if "pipeline" in result:
        p = result["pipeline"]
        fig, ax = plt.subplots(figsize=(6, 4))
        sizes = p["sizes"]
        for stage, cells in [*p["stages"].items(), ("total", p["total"])]:
            ys = [cells[str(n)]["seconds"] for n in sizes if str(n) in cells]
            ax.plot(sizes[: len(ys)], ys, "o-", label=stage, linewidth=2.5 if stage == "total" else 1)
        ax.set(xscale="log", yscale="log", xlabel="rows", ylabel="wall time, s")
        ax.set_title(f"dvc repro from scratch, {p.get('use_case', '')}")
        ax.legend(fontsize=7, ncol=2)
        fig.tight_layout()
        written.append(OUT / "pipeline.png")
        fig.savefig(written[-1], dpi=120)
        plt.close(fig)
    return written


def markdown(result: dict[str, Any], command: str) -> str:
    """The report: machine, versions, command, then each benchmark's tables."""
    m = result["machine"]
    lines = [
        "# Benchmarks",
        "",
        f"Measured {result['date']} on {m['cpus']} CPUs, Python {m['python']}, {m['platform']}.",
        f"Command: `{command}`.",
        "",
        "Versions: " + ", ".join(f"{k} {v}" for k, v in result["versions"].items()) + ".",
        "",
    ]
    if "pipeline" in result:
        sys.path.insert(0, str(HERE))
        import pipeline as pipeline_bench

        lines += ["## Pipeline", "", pipeline_bench.markdown(result["pipeline"]), ""]
    if "serving" in result:
        lines += ["## Serving", "", serve.markdown(result["serving"]), ""]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    """Run the benchmarks and write the report."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="small sizes, 1 s cells: checks it runs, measures nothing")
    parser.add_argument("--only", choices=("pipeline", "serving"), help="run one benchmark")
    parser.add_argument("--sizes", type=int, nargs="+", default=[10_000, 100_000, 1_000_000], help="pipeline rows")
    parser.add_argument("--duration", type=float, default=10, help="seconds per load cell (default 10)")
    parser.add_argument("--concurrency", type=int, nargs="+", default=[1, 8, 32, 64])
    parser.add_argument("--image", help="also load this image of the service (`make image`), run as production runs it")
    args = parser.parse_args(argv)
    if not (ROOT / "models" / "model_meta.json").exists() and args.only != "pipeline":
        raise SystemExit("models/model_meta.json not found: run `make repro` first (the serving benchmark serves its model)")
    OUT.mkdir(parents=True, exist_ok=True)
    command = "make bench" + (f" BENCH_ARGS='{' '.join(argv)}'" if argv else "")
    result: dict[str, Any] = {
        "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
        "machine": {"cpus": os.cpu_count(), "python": platform.python_version(), "platform": platform.platform()},
        "versions": versions(),
        "command": command,
    }
    if args.only in (None, "pipeline"):
        result["pipeline"] = pipeline(args.sizes, args.quick)
    if args.only in (None, "serving"):
        if args.quick:
            result["serving"] = serve.run(duration=1, concurrency=[1, 8], rows=50, image=args.image)
        else:
            result["serving"] = serve.run(duration=args.duration, concurrency=args.concurrency, image=args.image)
    # Written only once every figure is in: a failed run leaves the last complete report.
    tmp = OUT / "bench.json.tmp"
    tmp.write_text(json.dumps(result, indent=2) + "\n", encoding="utf-8")
    tmp.replace(OUT / "bench.json")
    written = plots(result)
    report = markdown(result, command)
    (OUT / "bench.md").write_text(report + "\n", encoding="utf-8")
    print(report)
    print(f"\nWrote {OUT / 'bench.json'}, {OUT / 'bench.md'}" + "".join(f", {p}" for p in written))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
