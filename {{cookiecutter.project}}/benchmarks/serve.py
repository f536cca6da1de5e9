"""Serving benchmark: the decision service against a minimal FastAPI app on the same model.

Run by hand from the repository root after ``make repro`` (needs ``wrk`` on PATH, e.g.
``apt-get install wrk``)::

    uv run python benchmarks/serve.py [--duration 20] [--concurrency 1 8 32 64]

Both servers run here, one after the other, in the same run: ``bentoml serve`` on the real
service (validation, score, reasons on declines, audit log, metrics) and a FastAPI + uvicorn
app doing the same validation (the same request model, generated from the contract) and the
same scoring, without the audit log. Each is driven by wrk with POST /decide bodies cycling
through held-out rows; the script prints throughput, p50/p99 latency, non-2xx answers and
the service/FastAPI throughput ratio. wrk is a closed loop (a slow answer delays the next
request), so its p99 understates queueing under an open arrival rate; compare like with like.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx
import pandas as pd

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = next(p.name for p in (ROOT / "src").iterdir() if (p / "serving").is_dir())
ENV = {**os.environ, "OMP_NUM_THREADS": "1", "BENTOML_DO_NOT_TRACK": "true", "PYTHONWARNINGS": "ignore"}


def free_port() -> int:
    """A free loopback port."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def baseline(port: int) -> None:
    """The FastAPI baseline: same request model, same decisions, default uvicorn (one worker)."""
    import importlib

    import uvicorn
    from fastapi import FastAPI

    schema = importlib.import_module(f"{PACKAGE}.serving.schema")
    decider = importlib.import_module(f"{PACKAGE}.serving.decider")
    contract = importlib.import_module(f"{PACKAGE}.core.contract").load_contract(ROOT / "contract.yaml")
    Record = schema.record_model(contract)
    service = decider.Decider(ROOT)
    app = FastAPI()

    def decide(record):  # noqa: ANN001, ANN202 - annotated below
        return service.decide([record.model_dump()])[0]

    # Set after definition: the annotation is a model built at run time, which FastAPI could
    # not resolve from a postponed (string) annotation and would treat as a query parameter.
    decide.__annotations__ = {"record": Record, "return": dict}
    app.post("/decide")(decide)

    @app.get("/readyz")
    def ready() -> str:
        return "ok"

    uvicorn.run(app, host="127.0.0.1", port=port, log_level="warning", access_log=False)


def start(kind: str, port: int, audit_dir: Path) -> subprocess.Popen:
    """Start one server and wait until it answers /readyz."""
    if kind == "bentoml":
        cmd = [sys.executable, "-m", "bentoml", "serve", f"{PACKAGE}.serving.service:DecisionService"]
        cmd += ["--host", "127.0.0.1", "--port", str(port)]
    else:
        cmd = [sys.executable, __file__, "--baseline", str(port)]
    env = {**ENV, "AUDIT_LOG_PATH": str(audit_dir / "decisions.jsonl")}
    proc = subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        try:
            if httpx.get(f"http://127.0.0.1:{port}/readyz", timeout=1).status_code == 200:
                return proc
        except httpx.HTTPError:
            time.sleep(0.3)
    stop(proc)
    raise SystemExit(f"{kind} did not become ready in 120 s")


def stop(proc: subprocess.Popen) -> None:
    """SIGTERM the server's process group and wait for it."""
    if proc.poll() is None:
        os.killpg(proc.pid, signal.SIGTERM)
        proc.wait(timeout=60)


def lua_script(path: Path, bodies: list[str]) -> Path:
    """A wrk script posting the bodies round-robin."""
    quoted = ",\n".join("[==[" + b + "]==]" for b in bodies)
    path.write_text(
        "local bodies = {\n" + quoted + "\n}\nlocal i = 0\n"
        'wrk.method = "POST"\nwrk.headers["Content-Type"] = "application/json"\n'
        "request = function()\n  i = i % #bodies + 1\n  return wrk.format(nil, '/decide', nil, bodies[i])\nend\n",
        encoding="utf-8",
    )
    return path


def ms(value: str) -> float:
    """Latency text from wrk (``850.00us``, ``12.3ms``, ``1.2s``) in milliseconds."""
    number, unit = re.fullmatch(r"([\d.]+)(us|ms|s|m)", value).groups()
    return float(number) * {"us": 0.001, "ms": 1.0, "s": 1000.0, "m": 60000.0}[unit]


def drive(port: int, script: Path, concurrency: int, duration: int) -> dict[str, float]:
    """One wrk run: requests/s, p50, p99 (ms) and non-2xx answers."""
    threads = min(2, concurrency)
    out = subprocess.run(
        ["wrk", f"-t{threads}", f"-c{concurrency}", f"-d{duration}s", "--latency", "-s", str(script), f"http://127.0.0.1:{port}"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    non2xx = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    errors = re.search(r"Socket errors: (.*)", out)
    return {
        "rps": float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1)),
        "p50": ms(re.search(r"\s50%\s+(\S+)", out).group(1)),
        "p99": ms(re.search(r"\s99%\s+(\S+)", out).group(1)),
        "non2xx": int(non2xx.group(1)) if non2xx else 0,
        "socket_errors": errors.group(1) if errors else "",
    }


def main() -> int:
    """Benchmark both servers at each concurrency and print the comparison."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--duration", type=int, default=20, help="seconds per measurement (default 20)")
    parser.add_argument("--concurrency", type=int, nargs="+", default=[1, 8, 32, 64])
    parser.add_argument("--rows", type=int, default=500, help="held-out rows cycled through as request bodies")
    parser.add_argument("--baseline", type=int, help=argparse.SUPPRESS)  # internal: run the FastAPI app on this port
    args = parser.parse_args()
    if args.baseline:
        baseline(args.baseline)
        return 0
    if shutil.which("wrk") is None:
        raise SystemExit("benchmarks/serve.py needs wrk on PATH (Debian/Ubuntu: apt-get install wrk)")
    sys.path.insert(0, str(ROOT / "src"))
    contract = __import__(f"{PACKAGE}.core.contract", fromlist=["load_contract"]).load_contract(ROOT / "contract.yaml")
    rows = pd.read_parquet(ROOT / "data/prepared/test.parquet")[contract.features].head(args.rows)
    bodies = [json.dumps(r) for r in json.loads(rows.to_json(orient="records"))]
    results: dict[str, dict[int, dict[str, float]]] = {}
    with tempfile.TemporaryDirectory() as tmp:
        script = lua_script(Path(tmp) / "post.lua", bodies)
        for kind in ("bentoml", "fastapi"):
            port = free_port()
            proc = start(kind, port, Path(tmp) / kind)
            try:
                drive(port, script, 8, 3)  # warm-up, not measured
                results[kind] = {c: drive(port, script, c, args.duration) for c in args.concurrency}
            finally:
                stop(proc)
    print(f"POST /decide, {len(bodies)} held-out rows round-robin, {args.duration}s per cell, wrk closed loop,", end=" ")
    print(f"{os.cpu_count()} CPUs")
    print(f"{'clients':>7}  {'server':<8} {'req/s':>8} {'p50 ms':>8} {'p99 ms':>8} {'non-2xx':>8}  ratio")
    for c in args.concurrency:
        for kind in ("bentoml", "fastapi"):
            r = results[kind][c]
            ratio = r["rps"] / results["fastapi"][c]["rps"] if kind == "bentoml" else 1.0
            cells = f"{r['rps']:>8.0f} {r['p50']:>8.1f} {r['p99']:>8.1f} {r['non2xx']:>8}"
            print(f"{c:>7}  {kind:<8} {cells}  {ratio:.2f}x {r['socket_errors']}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
