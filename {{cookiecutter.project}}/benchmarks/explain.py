"""Cost of per-decision feature contributions (``"explain": true``), measured against no explanation.

Run by hand from the repository root after ``make repro``::

    uv run python benchmarks/explain.py [--repeats 20] [--requests 100]

In process, it times ``Decider.decide`` on held-out rows, one record and a batch of 32, with
explanations off and on. Over HTTP, it starts ``bentoml serve`` on loopback and sends the same
``POST /decide`` requests one at a time with ``explain`` false and true. It prints the median
and p95 per call and the on/off ratio, all measured in the same run.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = next(p.name for p in (ROOT / "src").iterdir() if (p / "serving").is_dir())
os.environ["OMP_NUM_THREADS"] = "1"  # as the service runs

import httpx  # noqa: E402
import pandas as pd  # noqa: E402


def held_out(n: int) -> list[dict]:
    """``n`` held-out rows as request bodies (features only, NaN as null)."""
    from importlib import import_module

    contract = import_module(f"{PACKAGE}.core.contract").load_contract(ROOT / "contract.yaml")
    df = pd.read_parquet(ROOT / "data/prepared/test.parquet").head(n)
    return json.loads(df[contract.features].to_json(orient="records"))


def timed(fn, repeats: int) -> list[float]:
    """Milliseconds per call of ``fn``."""
    out = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        out.append((time.perf_counter() - start) * 1000)
    return out


def line(label: str, off: list[float], on: list[float]) -> str:
    """One row of the table: median and p95 off and on, and the ratio of medians."""
    p95 = lambda xs: sorted(xs)[max(0, int(round(0.95 * len(xs))) - 1)]  # noqa: E731
    m_off, m_on = statistics.median(off), statistics.median(on)
    return f"{label:<28} {m_off:>9.2f} {p95(off):>9.2f} {m_on:>9.2f} {p95(on):>9.2f} {m_on / m_off:>7.1f}x"


def in_process(rows: list[dict], repeats: int) -> list[str]:
    """Decider.decide with explanations off and on, for 1 and 32 records."""
    from importlib import import_module

    start = time.perf_counter()
    decider = import_module(f"{PACKAGE}.serving.decider").Decider(ROOT)
    out = [f"Decider start-up (model, background, shap import and warm-up): {time.perf_counter() - start:.1f} s"]
    for n in (1, 32):
        batch = rows[:n]
        off = timed(lambda b=batch: decider.decide(b), repeats)
        on = timed(lambda b=batch: decider.decide(b, explain=[True] * len(b)), repeats)
        out.append(line(f"in process, {n} record(s)", off, on))
    return out


def over_http(rows: list[dict], requests: int) -> list[str]:
    """Sequential POST /decide to a real ``bentoml serve``, explain false vs true."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    env = {**os.environ, "BENTOML_DO_NOT_TRACK": "true", "AUDIT_LOG_PATH": str(Path(tempfile.mkdtemp()) / "audit.jsonl")}
    # What explanations cost, not authentication (benchmarks/serve.py measures that): no secrets,
    # no API key, as `make serve` runs.
    env["SERVICE_MODE"] = "development"
    env.pop("API_KEYS_FILE", None)
    log = open(Path(tempfile.mkdtemp()) / "serve.log", "w")  # noqa: SIM115 - closed below
    target = f"{PACKAGE}.serving.service:DecisionService"
    proc = subprocess.Popen(
        [sys.executable, "-m", "bentoml", "serve", target, "--host", "127.0.0.1", "--port", str(port)],
        cwd=ROOT,
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 180
        while time.monotonic() < deadline:
            try:
                if httpx.get(f"{url}/readyz", timeout=1).status_code == 200:
                    break
            except httpx.HTTPError:
                time.sleep(0.3)
        else:
            raise SystemExit(f"bentoml serve did not become ready; see {log.name}")
        with httpx.Client(base_url=url, timeout=30) as client:
            results = {}
            for flag in (False, True):
                bodies = [{**rows[i % len(rows)], "explain": flag} for i in range(requests)]
                for b in bodies[:5]:  # warm up
                    client.post("/decide", json=b).raise_for_status()
                it = iter(bodies)
                results[flag] = timed(lambda it=it: client.post("/decide", json=next(it)).raise_for_status(), requests)
        return [line("HTTP POST /decide, 1 record", results[False], results[True])]
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        proc.wait(timeout=60)
        log.close()


def main() -> int:
    """Print the cost of explanations in process and over HTTP."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=20, help="timed calls per in-process case")
    parser.add_argument("--requests", type=int, default=100, help="timed requests per HTTP case")
    args = parser.parse_args()
    rows = held_out(max(32, 50))
    print(f"{'ms per call':<28} {'off p50':>9} {'off p95':>9} {'on p50':>9} {'on p95':>9} {'on/off':>8}")
    for text in in_process(rows, args.repeats) + over_http(rows, args.requests):
        print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
