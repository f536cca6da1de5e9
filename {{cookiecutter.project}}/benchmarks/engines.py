"""pandas against Spark: prepare, validate, score and monitor on synthetic data of growing size; time and peak memory.

Run from the repository root after ``make repro`` (the model and models/reference.json must exist)::

    uv run python benchmarks/engines.py --sizes 1000000 10000000 30000000 --engines pandas spark
    uv run python benchmarks/engines.py --quick    # 20,000 rows, every stage, both engines: to see it runs

For each size the project's own generator (``data/synthetic.py``) writes one Parquet file into a
scratch directory a million rows at a time (so generating it never holds more than a million
rows in memory), in row groups of ``ROW_GROUP`` rows. Then, for each engine, each stage runs in a
fresh process, in a scratch copy of the repository whose params.yaml points ``data.path`` at that
file (``models/`` is the repository's own, read only):

- prepare: ``python -m {{ cookiecutter.package }}.data.prepare`` | ``...data.spark_prepare`` (pseudonymise, minimise, split);
- validate: ``...data.validate`` | ``...data.spark_validate`` on that engine's prepared files;
- score: ``...scoring.score --engine pandas|spark`` (``make score``) on the generated file;
- monitor: the drift figures of ``make monitor`` on the generated file, PSI of the score and CSI
  of every feature against models/reference.json: pandas as monitoring/monitor.py computes them
  (``model.scores`` and ``drift.compare``), Spark with ``monitoring/spark_drift.figures``.

Time is the process's wall time, Spark's start included. Memory is sampled every 0.2 s from
/proc over the whole process tree and reported as the peak of the sum, and apart, the peaks of
the Python driver, of the JVM (in local mode driver and executors are one JVM) and of Spark's
Python workers (the executors' Python side). Shared pages are counted once per process, so the
sums are upper bounds.

A run past ``--timeout`` seconds, or whose tree grows past ``--memory-limit`` GiB, is stopped and
reported as such (the limits stand for what the machine can give: it may be shared); that engine
is then not run on that stage at larger sizes. A run the kernel kills is reported with its exit
status. Figures are measured, never asserted. The load average before each run is recorded: on
a shared machine, read the figures with it.
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

import yaml

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = "{{ cookiecutter.package }}"
CHUNK = 1_000_000
ROW_GROUP = 131_072
PAGE = os.sysconf("SC_PAGE_SIZE")
STAGES = ("prepare", "validate", "score", "monitor")
# A benchmark key, never a real one: the generated input is not the pipeline's synthetic file,
# so prepare asks for a pseudonymisation key.
BENCH_KEY = "benchmark-only-key-not-for-real-data"


def generate(rows: int, dest: Path) -> None:
    """``rows`` synthetic records as one Parquet file, written a million rows at a time, each from its own seed."""
    code = (
        "import sys; from pathlib import Path\n"
        "import pyarrow as pa, pyarrow.parquet as pq\n"
        f"from {PACKAGE}.core.contract import load_contract\n"
        f"from {PACKAGE}.data import synthetic\n"
        "rows, dest, chunk, group = int(sys.argv[1]), Path(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4])\n"
        "contract = load_contract('contract.yaml')\n"
        "writer = None\n"
        "for i, start in enumerate(range(0, rows, chunk)):\n"
        "    df = synthetic.generate(contract, n_rows=min(chunk, rows - start), seed=10_000 + i)\n"
        "    df[contract.row_key] = [f'{i}-{k}' for k in range(len(df))]  # unique across chunks\n"
        "    table = pa.Table.from_pandas(df, preserve_index=False)\n"
        "    writer = writer or pq.ParquetWriter(dest, table.schema)\n"
        "    writer.write_table(table, row_group_size=group)\n"
        "writer.close()\n"
    )
    dest.parent.mkdir(parents=True, exist_ok=True)
    subprocess.run([sys.executable, "-c", code, str(rows), str(dest), str(CHUNK), str(ROW_GROUP)], cwd=ROOT, check=True)


def workspace(base: Path, data: Path) -> Path:
    """A scratch copy of the repository's inputs with ``data.path`` at ``data``; models/ linked, read only."""
    base.mkdir(parents=True)
    params = yaml.safe_load((ROOT / "params.yaml").read_text(encoding="utf-8"))
    params["data"]["path"] = str(data)
    (base / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False), encoding="utf-8")
    shutil.copy(ROOT / params["data"]["contract"], base / params["data"]["contract"])
    ledger = ROOT / params["prepare"]["erasure_ledger"]
    (base / ledger.relative_to(ROOT)).parent.mkdir(parents=True, exist_ok=True)
    if ledger.exists():
        shutil.copy(ledger, base / ledger.relative_to(ROOT))
    (base / "models").symlink_to(ROOT / "models")
    return base


def monitor_figures(engine: str, batch: Path) -> int:
    """The drift figures of ``make monitor`` for ``batch`` (run in a workspace): PSI of the score, CSI per feature."""
    from importlib import import_module

    config = import_module(f"{PACKAGE}.core.config")
    model = import_module(f"{PACKAGE}.core.model")
    contract = import_module(f"{PACKAGE}.core.contract").load_contract("contract.yaml")
    params = import_module(f"{PACKAGE}.core.params").load_params()
    reference = json.loads((config.MODEL_DIR / "reference.json").read_text(encoding="utf-8"))
    epsilon = params.monitor.epsilon
    pipeline = model.load(config.MODEL)
    if engine == "spark":
        spark_drift = import_module(f"{PACKAGE}.monitoring.spark_drift")
        spark = import_module(f"{PACKAGE}.core.spark").get_session(params)
        figures = spark_drift.figures(spark.read.parquet(str(batch)), reference, contract, pipeline, epsilon)
    else:  # as monitoring/monitor.py's run() computes them
        import pandas as pd

        drift = import_module(f"{PACKAGE}.monitoring.drift")
        df = pd.read_parquet(batch)
        figures = {"score": drift.compare(reference["score"], model.scores(pipeline, df, contract), epsilon)}
        frame = model.model_frame(df, contract)
        for name, entry in reference["features"].items():
            figures[name] = drift.compare(entry, frame[name], epsilon)
    print(json.dumps({name: round(f["value"], 6) for name, f in figures.items()}))
    return 0


def stage_command(stage: str, engine: str, data: Path, out: Path) -> list[str]:
    """The command one stage runs with in a workspace."""
    py = [sys.executable, "-m"]
    spark = engine == "spark"
    if stage == "prepare":
        return [*py, f"{PACKAGE}.data.{'spark_prepare' if spark else 'prepare'}"]
    if stage == "validate":
        return [*py, f"{PACKAGE}.data.{'spark_validate' if spark else 'validate'}"]
    if stage == "score":
        return [*py, f"{PACKAGE}.scoring.score", "--input", str(data), "--output", str(out), "--engine", engine]
    return [sys.executable, str(Path(__file__).resolve()), "--monitor-figures", engine, str(data)]


def process_tree(root: int) -> dict[int, str]:
    """``root`` and its descendants, each as ``driver``, ``jvm`` or ``python worker`` (Linux /proc)."""
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
    kinds = {}
    for pid in tree:
        try:
            cmd = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
        except OSError:
            continue
        first = cmd.split(" ", 1)[0]
        kinds[pid] = "jvm" if first.endswith("java") else "python_workers" if "pyspark" in cmd and pid != root else "driver"
    return kinds


def rss(pid: int) -> int:
    """Resident bytes of one process (0 once it has ended)."""
    try:
        return int(Path(f"/proc/{pid}/statm").read_text().split()[1]) * PAGE
    except (OSError, ValueError, IndexError):
        return 0


def measure(cmd: list[str], cwd: Path, env: dict[str, str], timeout: float, memory_limit: float) -> dict[str, Any]:
    """Wall seconds, peak memory (total and per kind of process) and outcome of ``cmd``."""
    load = os.getloadavg()[0]
    start = time.perf_counter()
    proc = subprocess.Popen(cmd, cwd=cwd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, start_new_session=True)
    peaks = {"total": 0, "driver": 0, "jvm": 0, "python_workers": 0}
    status, stopped = None, None
    err_tail: list[bytes] = []
    while status is None:
        sizes = {"driver": 0, "jvm": 0, "python_workers": 0}
        for pid, kind in process_tree(proc.pid).items():
            sizes[kind] += rss(pid)
        peaks = {k: max(v, sizes.get(k, 0) if k != "total" else sum(sizes.values())) for k, v in peaks.items()}
        elapsed = time.perf_counter() - start
        if elapsed > timeout:
            stopped = f"stopped after {timeout:.0f} s (time limit)"
        elif peaks["total"] > memory_limit * 2**30:
            stopped = f"stopped at {peaks['total'] / 2**30:.1f} GiB (memory limit {memory_limit:g} GiB)"
        if stopped:
            os.killpg(proc.pid, 9)
            proc.wait()
            break
        try:
            status = proc.wait(timeout=0.2)
        except subprocess.TimeoutExpired:
            pass
    seconds = time.perf_counter() - start
    if proc.stderr:
        err_tail = proc.stderr.read().splitlines()[-1:]
    if stopped:
        outcome = stopped
    elif status == 0:
        outcome = "ok"
    elif status in (-9, 137):
        outcome = "killed by the kernel (out of memory?)"
    else:
        outcome = f"exit {status}: {b''.join(err_tail).decode(errors='replace').strip()}"
    return {
        "seconds": round(seconds, 1) if outcome == "ok" else None,
        "peak_gib": {k: round(v / 2**30, 2) for k, v in peaks.items()},
        "load_1m": round(load, 1),
        "outcome": outcome,
    }


def run(
    sizes: list[int], engines: list[str], stages: list[str], timeout: float, memory_limit: float, work: Path
) -> dict[str, Any]:
    """Every stage of every engine on every size; a stage an engine failed at one size is not run at larger ones."""
    results: list[dict[str, Any]] = []
    stopped: set[tuple[str, str]] = set()
    for rows in sizes:
        data = work / f"in-{rows}" / "portfolio.parquet"
        started = time.perf_counter()
        generate(rows, data)
        print(json.dumps({"rows": rows, "generated_s": round(time.perf_counter() - started, 1)}), flush=True)
        for engine in engines:
            space = workspace(work / f"{engine}-{rows}", data)
            env = {
                **os.environ,
                "PII_HMAC_KEY": BENCH_KEY,
                "AUDIT_LOG_PATH": str(space / "audit.jsonl"),
                "AUDIT_CHECKPOINT_PATH": str(space / "checkpoints.jsonl"),
            }
            for stage in stages:
                result: dict[str, Any] = {"rows": rows, "engine": engine, "stage": stage}
                if (engine, stage) in stopped:
                    result.update(seconds=None, peak_gib=None, outcome="not run (stopped at a smaller size)")
                elif stage == "validate" and "prepare" in stages and results[-1]["outcome"] != "ok":
                    result.update(seconds=None, peak_gib=None, outcome="not run (its prepare did not finish)")
                else:
                    cmd = stage_command(stage, engine, data, space / "scored")
                    result.update(measure(cmd, space, env, timeout, memory_limit))
                    if result["outcome"] != "ok":
                        stopped.add((engine, stage))
                results.append(result)
                print(json.dumps(result), flush=True)
            shutil.rmtree(space, ignore_errors=True)
        shutil.rmtree(data.parent, ignore_errors=True)
    return {
        "machine": {
            "cpus": os.cpu_count(),
            "memory_gib": round(os.sysconf("SC_PHYS_PAGES") * PAGE / 2**30, 1),
            "platform": platform.platform(),
        },
        "timeout_s": timeout,
        "memory_limit_gib": memory_limit,
        "results": results,
    }


def markdown(report: dict[str, Any], command: str) -> str:
    """The table docs/benchmarks.md shows."""
    m = report["machine"]
    lines = [
        f"`{command}` on {m['cpus']} CPUs, {m['memory_gib']} GiB ({m['platform']}); per run a time limit of "
        f"{report['timeout_s']:.0f} s and a memory limit of {report['memory_limit_gib']:g} GiB.",
        "",
        "| rows | stage | engine | seconds | s per million | peak GiB (driver / JVM / Python workers) | load | outcome |",
        "|---:|---|---|---:|---:|---|---:|---|",
    ]
    order = {s: i for i, s in enumerate(STAGES)}
    for r in sorted(report["results"], key=lambda r: (r["rows"], order[r["stage"]], r["engine"])):
        per = f"{r['seconds'] / (r['rows'] / 1e6):.1f}" if r["seconds"] else ""
        p = r["peak_gib"]
        peak = "" if p is None else f"{p['total']:.2f} ({p['driver']:.2f} / {p['jvm']:.2f} / {p['python_workers']:.2f})"
        lines.append(
            f"| {r['rows']:,} | {r['stage']} | {r['engine']} | {r['seconds'] or ''} | {per} | {peak} | "
            f"{r.get('load_1m', '')} | {r['outcome']} |"
        )
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    """Benchmark the engines and write reports/bench/engines.json and engines.md."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[1_000_000, 10_000_000, 30_000_000])
    parser.add_argument("--engines", nargs="+", choices=["pandas", "spark"], default=["pandas", "spark"])
    parser.add_argument("--stages", nargs="+", choices=STAGES, default=list(STAGES))
    parser.add_argument("--timeout", type=float, default=3600, help="seconds one run may take before it is stopped")
    parser.add_argument(
        "--memory-limit", type=float, default=16, help="GiB one run's process tree may reach before it is stopped"
    )
    parser.add_argument("--quick", action="store_true", help="20,000 rows: seconds, to see it runs")
    parser.add_argument("--out", type=Path, default=ROOT / "reports" / "bench")
    parser.add_argument("--monitor-figures", nargs=2, metavar=("ENGINE", "BATCH"), help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.monitor_figures:  # one measured run of the monitor stage (see stage_command)
        return monitor_figures(args.monitor_figures[0], Path(args.monitor_figures[1]))
    sizes = [20_000] if args.quick else args.sizes
    with tempfile.TemporaryDirectory(prefix="bench-engines-") as tmp:
        report = run(sizes, args.engines, args.stages, args.timeout, args.memory_limit, Path(tmp))
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "engines.json").write_text(json.dumps(report, indent=2) + "\n", encoding="utf-8")
    table = markdown(report, "python benchmarks/engines.py " + " ".join(argv if argv is not None else sys.argv[1:]))
    (args.out / "engines.md").write_text(table, encoding="utf-8")
    print(table)
    return 0


if __name__ == "__main__":
    sys.exit(main())
