"""Serving benchmark: the decision service against a minimal FastAPI app, same model, same run.

    uv run python benchmarks/serve.py [--seconds 10] [--concurrency 1 8 32 64]

Both servers answer POST /decide with the same request model (generated from the contract)
and the same Decider; the FastAPI baseline is one uvicorn process without the audit log or
metrics. A closed-loop client holds each concurrency for ``--seconds`` and reports
throughput, p50, p99, p99.9 and non-2xx; the ratio of throughputs is the figure to compare
(these machines are noisy: compare within one run, never across runs).
Needs ``make repro`` first (models/ and data/prepared/test.parquet).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx
import numpy as np
import pandas as pd

PACKAGE = "{{ cookiecutter.package }}"
BASELINE_APP = f"""
import os
os.environ.setdefault("OMP_NUM_THREADS", "1")
from fastapi import FastAPI
from {PACKAGE}.core.contract import load_contract
from {PACKAGE}.serving import schema
from {PACKAGE}.serving.decider import Decider

Record = schema.record_model(load_contract("contract.yaml"))
decider = Decider()
app = FastAPI()

@app.post("/decide")
def decide(record: Record) -> dict:
    return decider.decide([record.model_dump()])[0]

@app.get("/readyz")
def ready() -> str:
    return "ok"
"""


def free_port() -> int:
    """A free loopback port."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start(cmd: list[str], port: int, env: dict[str, str]) -> subprocess.Popen:
    """Start a server and wait until it is ready."""
    proc = subprocess.Popen(cmd, env={**os.environ, **env}, stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT)
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        try:
            if httpx.get(f"http://127.0.0.1:{port}/readyz", timeout=1).status_code == 200:
                return proc
        except httpx.HTTPError:
            time.sleep(0.3)
    proc.kill()
    raise SystemExit(f"server {' '.join(cmd)} did not start")


async def load(url: str, bodies: list[dict], concurrency: int, seconds: float) -> dict:
    """``concurrency`` clients in a closed loop for ``seconds``; latency percentiles and failures."""
    latencies: list[float] = []
    failures = 0
    stop = time.perf_counter() + seconds
    limits = httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)
    async with httpx.AsyncClient(base_url=url, timeout=30, limits=limits) as client:

        async def worker(k: int) -> None:
            nonlocal failures
            i = k
            while time.perf_counter() < stop:
                start = time.perf_counter()
                r = await client.post("/decide", json=bodies[i % len(bodies)])
                latencies.append(time.perf_counter() - start)
                failures += r.status_code >= 300
                i += concurrency

        began = time.perf_counter()
        await asyncio.gather(*(worker(k) for k in range(concurrency)))
        elapsed = time.perf_counter() - began
    ms = np.array(latencies) * 1000
    return {
        "concurrency": concurrency,
        "requests": len(ms),
        "rps": round(len(ms) / elapsed, 1),
        "p50_ms": round(float(np.percentile(ms, 50)), 1),
        "p99_ms": round(float(np.percentile(ms, 99)), 1),
        "p999_ms": round(float(np.percentile(ms, 99.9)), 1),
        "non_2xx": failures,
    }


def main() -> int:
    """Run both servers at each concurrency; print the table and the throughput ratios."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--concurrency", type=int, nargs="+", default=[1, 8, 32, 64])
    parser.add_argument("--output", type=Path, default=Path("reports/bench_serve.json"))
    args = parser.parse_args()
    sys.path.insert(0, "src")
    from {{ cookiecutter.package }}.core.contract import load_contract

    contract = load_contract("contract.yaml")
    rows = pd.read_parquet("data/prepared/test.parquet").head(500)
    bodies = json.loads(rows[contract.features].to_json(orient="records"))
    results: dict[str, list[dict]] = {}
    with tempfile.TemporaryDirectory() as tmp:
        app_file = Path(tmp) / "baseline_app.py"
        app_file.write_text(BASELINE_APP, encoding="utf-8")
        servers = {
            "bentoml": (
                [sys.executable, "-m", "bentoml", "serve", f"{PACKAGE}.serving.service:DecisionService", "--port", "{port}"],
                {"AUDIT_LOG_PATH": str(Path(tmp) / "audit.jsonl")},
            ),
            "fastapi": (
                [sys.executable, "-m", "uvicorn", "baseline_app:app", "--port", "{port}", "--no-access-log", "--app-dir", tmp],
                {},
            ),
        }
        for name, (cmd, env) in servers.items():
            port = free_port()
            proc = start([c.replace("{port}", str(port)) for c in cmd], port, env)
            try:
                asyncio.run(load(f"http://127.0.0.1:{port}", bodies, 4, 2.0))  # warm-up
                url = f"http://127.0.0.1:{port}"
                results[name] = [asyncio.run(load(url, bodies, c, args.seconds)) for c in args.concurrency]
            finally:
                proc.terminate()
                proc.wait(timeout=60)
    print(f"{'server':<8} " + " ".join(f"{h:>8}" for h in ("conc", "req/s", "p50 ms", "p99 ms", "p99.9 ms", "non-2xx")))
    for name, rows_ in results.items():
        for r in rows_:
            cells = (r["concurrency"], r["rps"], r["p50_ms"], r["p99_ms"], r["p999_ms"], r["non_2xx"])
            print(f"{name:<8} " + " ".join(f"{c:>8}" for c in cells))
    for b, f in zip(results["bentoml"], results["fastapi"], strict=True):
        print(f"concurrency {b['concurrency']}: bentoml/fastapi throughput ratio {b['rps'] / max(f['rps'], 1e-9):.2f}")
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text(json.dumps(results, indent=2) + "\n", encoding="utf-8")
    return 0


if __name__ == "__main__":
    sys.exit(main())
