"""Serving benchmark: the decision service against a minimal FastAPI app on the same model.

Run from the repository root after ``make repro`` (``make bench`` runs it with the pipeline
benchmark; needs ``wrk`` and ``hey``: ``apt-get install wrk hey``)::

    uv run python benchmarks/serve.py [--duration 10] [--concurrency 1 8 32 64] [--quick]

Everything compared is measured in the same run, on the same machine:

- the floor: the model's own time per record in this process, one record at a time and in
  batches (what no server can beat);
- the decision service (``bentoml serve`` as deployed: API key checked on every request,
  validation, score, reasons on declines, audit log, metrics) and a minimal FastAPI + uvicorn
  app with the same request model and the same decisions (one process, no batching, no audit log);
- closed loop (wrk; each client sends its next request when the last is answered), POST
  /decide bodies cycling through held-out rows, at each concurrency: requests/s, p50, p99,
  p99.9, non-2xx. A closed loop hides queueing: a slow server is sent less work;
- fixed rate (hey at a set rate per client): the latency a client sees when requests keep
  arriving at 3x the rate the FastAPI app peaked at, corrected for coordinated omission the
  way HdrHistogram does (a reply later than the send interval also delayed the sends behind
  it; those missed sends are counted with the latency they would have seen);
- the batch endpoint's records per second;
- with ``--image REF`` (``make image`` builds it), the same service from its container image,
  run as production runs it (read-only root, uid 1034, no capabilities, the audit log on a
  volume, the port on loopback), under the same closed loop: the image's cost against source,
  and the time each takes from start to ready.

Every request to the service carries its API key (wrk and hey send the header), and the service
(from source and from its image) runs with a deployment's secrets (fresh audit keys, a keys
file). ``--auth-cost`` measures what authentication costs instead: the service with keys and the
service in development mode with none, alternately, at 32 clients.
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import platform
import re
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pandas as pd

# The floor is measured in this process: one OpenMP thread, as in the service (set before
# scikit-learn is imported; OpenMP's default costs many times over on small batches here).
os.environ.setdefault("OMP_NUM_THREADS", "1")
ROOT = Path(__file__).resolve().parents[1]
PACKAGE = next(p.name for p in (ROOT / "src").iterdir() if (p / "serving").is_dir())
ENV = {**os.environ, "OMP_NUM_THREADS": "1", "BENTOML_DO_NOT_TRACK": "true", "PYTHONWARNINGS": "ignore"}
ENV.pop("SERVICE_MODE", None)  # measured as deployed, whatever the shell says
SERVERS = ("bentoml", "fastapi", "container")
# What the container is given of the source service's environment (the API keys file is mounted).
CONTAINER_ENV = ("SERVICE_MODE", "AUDIT_HMAC_KEY", "AUDIT_CHAIN_KEY", "PII_HMAC_KEY", "API_KEYS_FILE")

# wrk prints its own summary; this adds p99.9 and the error counts as one JSON line.
WRK_DONE = """
done = function(summary, latency, requests)
  local e = summary.errors
  io.write(string.format('BENCH {"requests":%d,"duration_us":%d,"p50_us":%d,"p99_us":%d,"p999_us":%d,'
    .. '"non2xx":%d,"socket_errors":%d}\\n', summary.requests, summary.duration, latency:percentile(50),
    latency:percentile(99), latency:percentile(99.9), e.status, e.connect + e.read + e.write + e.timeout))
end
"""


def free_port() -> int:
    """A free loopback port."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _package(module: str) -> Any:
    import importlib

    if str(ROOT / "src") not in sys.path:
        sys.path.insert(0, str(ROOT / "src"))
    return importlib.import_module(f"{PACKAGE}.{module}")


def baseline(port: int) -> None:
    """The FastAPI baseline: same request model, same decisions, default uvicorn (one worker)."""
    import uvicorn
    from fastapi import FastAPI

    contract = _package("core.contract").load_contract(ROOT / "contract.yaml")
    service = _package("serving.decider").Decider(ROOT)
    Record = _package("serving.schema").record_model(contract, service.meta.explanations)
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


def deployment_secrets(directory: Path) -> tuple[dict[str, str], str]:
    """A deployment's secrets for the service (fresh audit keys, a keys file of one key) and that API key."""
    auth = _package("serving.auth")
    key = auth.new_key()
    directory.mkdir(parents=True, exist_ok=True)
    keys = directory / "api-keys"
    keys.write_text(f"bench:{auth.digest(key).hex()}\n", encoding="utf-8")
    env = {"AUDIT_HMAC_KEY": secrets.token_hex(32), "AUDIT_CHAIN_KEY": secrets.token_hex(32), auth.KEYS_ENV: str(keys)}
    return env, key


def container_cmd(image: str, port: int, audit_dir: Path, env: dict[str, str]) -> list[str]:
    """`docker/podman run` in the foreground, as the Deployment runs the image; SIGTERM reaches the container."""
    engine = os.environ.get("IMAGE_ENGINE") or "podman"
    audit_dir.mkdir(parents=True, exist_ok=True)
    audit_dir.chmod(0o777)  # the image's uid 1034 writes the audit log here
    cmd = [engine, "run", "--rm", "--read-only", "--user", "1034:1034", "--cap-drop=ALL", "--security-opt", "no-new-privileges"]
    checkpoints = audit_dir / "checkpoints"  # the chain's anchor: another volume in a deployment
    checkpoints.mkdir(exist_ok=True)
    checkpoints.chmod(0o777)
    cmd += ["--tmpfs", "/tmp:rw,size=256m,mode=1777", "-v", f"{audit_dir}:/var/lib/audit", "-p", f"127.0.0.1:{port}:3000"]  # noqa: S108 - the container's own tmpfs
    cmd += ["-v", f"{checkpoints}:/var/lib/audit-checkpoints"]
    for name in CONTAINER_ENV:
        if name == "API_KEYS_FILE" and env.get(name):
            cmd += ["-v", f"{Path(env[name]).resolve()}:/run/secrets/api_keys:ro", "-e", "API_KEYS_FILE=/run/secrets/api_keys"]
        elif env.get(name):
            cmd += ["-e", f"{name}={env[name]}"]
    return [*cmd, image]


def start(
    kind: str, port: int, audit_dir: Path, env: dict[str, str] | None = None, image: str | None = None
) -> tuple[subprocess.Popen, float]:
    """Start one server (``env`` added to its environment) and wait until it answers /readyz; (process, seconds to ready)."""
    env = {**ENV, "AUDIT_LOG_PATH": str(audit_dir / "decisions.jsonl"), **(env or {})}
    if kind == "bentoml":
        cmd = [sys.executable, "-m", "bentoml", "serve", f"{PACKAGE}.serving.service:DecisionService"]
        cmd += ["--host", "127.0.0.1", "--port", str(port)]
    elif kind == "container":
        cmd = container_cmd(image or "", port, audit_dir, env)
    else:
        cmd = [sys.executable, __file__, "--baseline", str(port)]
    started = time.monotonic()
    proc = subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    deadline = started + 120
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise SystemExit(f"{kind} exited with {proc.returncode} before it was ready: run `{' '.join(cmd)}` to see why")
        try:
            if httpx.get(f"http://127.0.0.1:{port}/readyz", timeout=1).status_code == 200:
                return proc, time.monotonic() - started
        except httpx.HTTPError:
            time.sleep(0.1)
    stop(proc)
    raise SystemExit(f"{kind} did not become ready in 120 s")


def stop(proc: subprocess.Popen) -> None:
    """SIGTERM the server's process group and wait for it."""
    if proc.poll() is None:
        os.killpg(proc.pid, signal.SIGTERM)
        proc.wait(timeout=60)


def lua_script(path: Path, bodies: list[str], endpoint: str = "/decide", key: str = "") -> Path:
    """A wrk script posting the bodies round-robin (with the API key, if any) and reporting p99.9."""
    quoted = ",\n".join("[==[" + b + "]==]" for b in bodies)
    path.write_text(
        "local bodies = {\n" + quoted + "\n}\nlocal i = 0\n"
        'wrk.method = "POST"\nwrk.headers["Content-Type"] = "application/json"\n'
        + (f'wrk.headers["Authorization"] = "Bearer {key}"\n' if key else "")
        + f"request = function()\n  i = i % #bodies + 1\n  return wrk.format(nil, '{endpoint}', nil, bodies[i])\nend\n"
        + WRK_DONE,
        encoding="utf-8",
    )
    return path


def parse_wrk(out: str) -> dict[str, float]:
    """The BENCH line of a wrk run as requests/s, latencies in ms and error counts."""
    found = re.search(r"^BENCH (\{.*\})$", out, re.MULTILINE)
    if found is None:
        raise ValueError(f"wrk printed no BENCH line; its output was:\n{out}")
    raw = json.loads(found.group(1))
    return {
        "rps": raw["requests"] / (raw["duration_us"] / 1e6),
        "p50_ms": raw["p50_us"] / 1000,
        "p99_ms": raw["p99_us"] / 1000,
        "p999_ms": raw["p999_us"] / 1000,
        "non2xx": raw["non2xx"],
        "socket_errors": raw["socket_errors"],
    }


def closed_loop(port: int, script: Path, concurrency: int, duration: float) -> dict[str, float]:
    """One wrk run at ``concurrency`` connections."""
    threads = min(2, concurrency)
    seconds = max(1, round(duration))  # wrk takes whole seconds
    cmd = ["wrk", f"-t{threads}", f"-c{concurrency}", f"-d{seconds}s", "-s", str(script), f"http://127.0.0.1:{port}"]
    done = subprocess.run(cmd, capture_output=True, text=True, check=False)
    if done.returncode != 0:
        raise SystemExit(f"wrk failed (exit {done.returncode}): {(done.stderr or done.stdout).strip()[:500]}")
    out = done.stdout
    return parse_wrk(out)


def corrected_latencies(latencies_ms: np.ndarray, interval_ms: float) -> np.ndarray:
    """Latencies plus the ones a fixed-rate client missed while it waited (coordinated omission).

    HdrHistogram's ``recordValueWithExpectedInterval``: a reply that took ``v`` > ``interval``
    held back the sends due during it, which would have waited ``v - interval``,
    ``v - 2*interval``, ... down to ``interval``.
    """
    extra = [np.arange(v - interval_ms, interval_ms - 1e-9, -interval_ms) for v in latencies_ms if v > 2 * interval_ms]
    return np.concatenate([latencies_ms, *extra]) if extra else latencies_ms


def fixed_rate(port: int, body: Path, rate: float, concurrency: int, duration: float, key: str = "") -> dict[str, float]:
    """Hey at ``rate`` requests/s in all, spread over ``concurrency`` clients (sending the API key, if any)."""
    per_client = rate / concurrency
    out = subprocess.run(
        ["hey", "-z", f"{max(1, round(duration))}s", "-c", str(concurrency), "-q", f"{per_client:.3f}", "-m", "POST"]
        + (["-H", f"Authorization: Bearer {key}"] if key else [])
        + ["-T", "application/json", "-D", str(body), "-o", "csv", f"http://127.0.0.1:{port}/decide"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    rows = list(csv.DictReader(out.splitlines()))
    if not rows:
        raise ValueError(f"hey returned no requests; its output was:\n{out[:2000]}")
    latencies = np.array([float(r["response-time"]) * 1000 for r in rows])
    corrected = corrected_latencies(latencies, 1000 / per_client)
    p50, p99, p999 = np.percentile(corrected, [50, 99, 99.9])
    return {
        "offered_rps": rate,
        "rps": len(rows) / max(1, round(duration)),
        "p50_ms": float(p50),
        "p99_ms": float(p99),
        "p999_ms": float(p999),
        "non2xx": sum(r["status-code"] != "200" for r in rows),
    }


SLO_P99_MS = 50.0


def load_rates(rate: float, quick: bool) -> list[float]:
    """Offered rates for the load curve: fractions of ``rate`` (one in quick mode)."""
    return [rate / 3] if quick else [rate * f for f in (1 / 3, 2 / 3, 4 / 3)]


def capacity_at_slo(curve: list[dict[str, float]]) -> float | None:
    """The highest offered rate whose p99 stayed within the objective with no non-2xx, if any."""
    ok = [c["offered_rps"] for c in curve if c["p99_ms"] <= SLO_P99_MS and c["non2xx"] == 0]
    return max(ok) if ok else None


def floor(records: list[dict[str, Any]]) -> dict[str, float]:
    """In-process time per record of the service's own decider: one at a time, then batched."""
    decider = _package("serving.decider").Decider(ROOT)
    for r in records[:5]:
        decider.decide([r])
    out = {}
    for size in (1, 32, len(records)):
        start = time.perf_counter()
        for i in range(0, len(records), size):
            decider.decide(records[i : i + size])
        out[f"ms_per_record_batch_{size}"] = (time.perf_counter() - start) * 1000 / len(records)
    return out


def run(duration: float = 10, concurrency: list[int] | None = None, rows: int = 500, image: str | None = None) -> dict[str, Any]:
    """The whole serving benchmark; returns the figures (see the module docstring)."""
    concurrency = concurrency or [1, 8, 32, 64]
    missing = [tool for tool in ("wrk", "hey") if shutil.which(tool) is None]
    if missing:
        raise SystemExit(f"benchmarks/serve.py needs {' and '.join(missing)} on PATH (Debian/Ubuntu: apt-get install wrk hey)")
    contract = _package("core.contract").load_contract(ROOT / "contract.yaml")
    test = pd.read_parquet(ROOT / "data/prepared/test.parquet")[contract.features].head(rows)
    records = json.loads(test.to_json(orient="records"))
    bodies = [json.dumps(r) for r in records]
    result: dict[str, Any] = {
        "machine": {"cpus": os.cpu_count(), "python": platform.python_version(), "platform": platform.platform()},
        "settings": {"duration_s": duration, "concurrency": concurrency, "rows": len(records)},
        "floor": floor(records[:200]),
        "closed_loop": {},
        "fixed_rate": {},
        "start_to_ready_s": {},
    }
    # The fixed-rate body: a declined applicant where the use case gives reasons (the costlier path).
    scores = _package("serving.decider").Decider(ROOT).decide(records)
    worst = next((i for i, d in enumerate(scores) if d.get("reasons")), 0)
    with tempfile.TemporaryDirectory() as tmp:
        secret_env, key = deployment_secrets(Path(tmp) / "secrets")
        script = lua_script(Path(tmp) / "post.lua", bodies, key=key)  # FastAPI ignores the key
        batch_script = lua_script(Path(tmp) / "batch.lua", [json.dumps({"records": records[:100]})], "/decide_batch", key)
        body = Path(tmp) / "body.json"
        body.write_text(bodies[worst], encoding="utf-8")
        # FastAPI first: the fixed-rate run of the service is set from its peak.
        for kind in ("fastapi", "bentoml", *(["container"] if image else [])):
            port = free_port()
            secrets_for = secret_env if kind in ("bentoml", "container") else None
            proc, result["start_to_ready_s"][kind] = start(kind, port, Path(tmp) / kind, secrets_for, image)
            try:
                if kind == "bentoml":  # the figures are of the service with authentication on: check it is
                    result["settings"]["unauthenticated_status"] = httpx.post(
                        f"http://127.0.0.1:{port}/decide", content=bodies[0], headers={"Content-Type": "application/json"}
                    ).status_code
                closed_loop(port, script, 8, min(3, duration))  # warm-up, not measured
                result["closed_loop"][kind] = {str(c): closed_loop(port, script, c, duration) for c in concurrency}
                if kind == "bentoml":
                    # 3x the rate the FastAPI app peaked at (the load the service must carry to be
                    # "3x FastAPI"), from 32 clients (or the most asked for).
                    clients = 32 if 32 in concurrency else max(concurrency)
                    rate = 3 * max(v["rps"] for v in result["closed_loop"]["fastapi"].values())
                    result["fixed_rate"] = {
                        "settings": {"clients": clients, "rate_rps": rate, "basis": "3x FastAPI's closed-loop peak"},
                        "bentoml": fixed_rate(port, body, rate, clients, duration, key),
                    }
                    # Latency against offered load, for capacity planning: the highest rate that
                    # keeps p99 within the objective is what one instance carries.
                    result["load_curve"] = [
                        fixed_rate(port, body, r, clients, duration, key) for r in load_rates(rate, quick=duration <= 1)
                    ]
                    batch = closed_loop(port, batch_script, 4, duration)
                    result["batch_endpoint"] = {"records_per_request": 100, "records_per_s": batch["rps"] * 100, **batch}
            finally:
                stop(proc)
    result["ratio"] = {
        c: result["closed_loop"]["bentoml"][c]["rps"] / result["closed_loop"]["fastapi"][c]["rps"] for c in map(str, concurrency)
    }
    if image:
        result["image"] = image
    return result


def auth_cost(duration: float = 10, clients: int = 32, rounds: int = 3, rows: int = 500) -> dict[str, Any]:
    """Requests/s and p99 at ``clients`` of the service with API keys ("on") and in development mode without ("off").

    Both servers run side by side and are measured in turns (on, off, on, off, ...), so a busy
    moment of the machine falls on both; each figure is the median of its rounds.
    """
    contract = _package("core.contract").load_contract(ROOT / "contract.yaml")
    test = pd.read_parquet(ROOT / "data/prepared/test.parquet")[contract.features].head(rows)
    bodies = [json.dumps(r) for r in json.loads(test.to_json(orient="records"))]
    out: dict[str, Any] = {"settings": {"clients": clients, "duration_s": duration, "rounds": rounds}}
    with tempfile.TemporaryDirectory() as tmp:
        secret_env, key = deployment_secrets(Path(tmp) / "secrets")
        setups = {"on": (secret_env, key), "off": ({"SERVICE_MODE": "development"}, "")}
        servers = {}
        try:
            for name, (env, k) in setups.items():
                port = free_port()
                script = lua_script(Path(tmp) / f"{name}.lua", bodies, key=k)
                servers[name] = (port, start("bentoml", port, Path(tmp) / name, env)[0], script)
            for port, _, script in servers.values():
                closed_loop(port, script, 8, min(3, duration))  # warm-up, not measured
            runs: dict[str, list[dict[str, float]]] = {name: [] for name in setups}
            for _ in range(rounds):
                for name, (port, _, script) in servers.items():
                    runs[name].append(closed_loop(port, script, clients, duration))
        finally:
            for _, proc, _ in servers.values():
                stop(proc)
    for name, cells in runs.items():
        out[name] = {
            "rps": float(np.median([c["rps"] for c in cells])),
            "p99_ms": float(np.median([c["p99_ms"] for c in cells])),
            "non2xx": sum(c["non2xx"] + c["socket_errors"] for c in cells),
            "rounds": cells,
        }
    out["rps_ratio"] = out["on"]["rps"] / out["off"]["rps"]
    out["p99_ratio"] = out["on"]["p99_ms"] / out["off"]["p99_ms"]
    return out


def auth_markdown(result: dict[str, Any]) -> str:
    """The cost of authentication as a Markdown table and a sentence."""
    rows = [f"| {n} | {r['rps']:.0f} | {r['p99_ms']:.1f} | {r['non2xx']} |" for n, r in ((n, result[n]) for n in ("on", "off"))]
    s = result["settings"]
    return "\n".join(
        ["| authentication | req/s | p99 ms | non-2xx |", "|---|---:|---:|---:|", *rows, ""]
        + [
            f"With authentication: {result['rps_ratio']:.3f}x the requests/s and {result['p99_ratio']:.3f}x the p99 "
            f"({s['clients']} clients, median of {s['rounds']} alternating rounds of {s['duration_s']:.0f} s)."
        ]
    )


def markdown(result: dict[str, Any]) -> str:
    """The serving figures as Markdown tables."""
    lines = [
        "| clients | server | req/s | p50 ms | p99 ms | p99.9 ms | non-2xx | vs FastAPI |",
        "|---:|---|---:|---:|---:|---:|---:|---:|",
    ]
    for c in map(str, result["settings"]["concurrency"]):
        for kind in (k for k in SERVERS if k in result["closed_loop"]):
            r = result["closed_loop"][kind][c]
            ratio = f"{r['rps'] / result['closed_loop']['fastapi'][c]['rps']:.1f}x"
            lines.append(
                f"| {c} | {kind} | {r['rps']:.0f} | {r['p50_ms']:.1f} | {r['p99_ms']:.1f} | {r['p999_ms']:.1f} "
                f"| {r['non2xx'] + r['socket_errors']} | {ratio} |"
            )
    if "container" in result["closed_loop"]:
        src, ctr = result["closed_loop"]["bentoml"], result["closed_loop"]["container"]
        lines += [
            "",
            f"The image `{result['image']}` (read-only root, uid 1034, no capabilities) against the same service from "
            "source: "
            + "; ".join(
                f"{c} clients: {ctr[c]['rps'] / src[c]['rps']:.0%} of the throughput, p99 {ctr[c]['p99_ms']:.1f} ms "
                f"against {src[c]['p99_ms']:.1f} ms"
                for c in map(str, result["settings"]["concurrency"])
            )
            + ".",
        ]
    ready = result.get("start_to_ready_s", {})
    if ready:
        lines += ["", "Start to ready: " + ", ".join(f"{k} {v:.1f} s" for k, v in ready.items()) + "."]
    fr = result["fixed_rate"]
    s, b = fr["settings"], fr["bentoml"]
    lines += [
        "",
        f"Fixed rate, {s['clients']} clients, {s['rate_rps']:.0f} req/s offered ({s['basis']}), corrected for "
        f"coordinated omission: served {b['rps']:.0f} req/s, p50 {b['p50_ms']:.1f} ms, p99 {b['p99_ms']:.1f} ms, "
        f"p99.9 {b['p999_ms']:.1f} ms, non-2xx {b['non2xx']}.",
        "",
        f"Latency against offered load ({s['clients']} clients, fixed rate, corrected): "
        + "; ".join(
            f"{c['offered_rps']:.0f} req/s -> p50 {c['p50_ms']:.1f} ms, p99 {c['p99_ms']:.1f} ms, p99.9 {c['p999_ms']:.1f} ms"
            for c in result["load_curve"]
        )
        + ". "
        + (
            f"Highest tested rate with p99 <= {SLO_P99_MS:.0f} ms: {cap:.0f} req/s."
            if (cap := capacity_at_slo(result["load_curve"])) is not None
            else f"No tested rate kept p99 <= {SLO_P99_MS:.0f} ms."
        ),
        "",
        f"Batch endpoint: {result['batch_endpoint']['records_per_s']:.0f} records/s "
        f"({result['batch_endpoint']['records_per_request']} records per request, 4 clients).",
        "",
        "In-process floor (the service's decider, no HTTP): "
        + ", ".join(
            f"{ms:.3f} ms/record ({key.removeprefix('ms_per_record_').replace('_', ' ')})" for key, ms in result["floor"].items()
        )
        + ".",
    ]
    return "\n".join(lines)


def main() -> int:
    """Run the serving benchmark and print its tables (``--json`` also writes the figures)."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--duration", type=float, default=10, help="seconds per measurement (default 10)")
    parser.add_argument("--concurrency", type=int, nargs="+", default=[1, 8, 32, 64])
    parser.add_argument("--rows", type=int, default=500, help="held-out rows cycled through as request bodies")
    parser.add_argument("--quick", action="store_true", help="1 s per cell at 1 and 8 clients: checks it runs, measures nothing")
    parser.add_argument("--json", type=Path, help="also write the figures to this file")
    parser.add_argument("--auth-cost", action="store_true", help="only: the service with API keys vs without, 32 clients")
    parser.add_argument("--image", help="also load the service's image (`make image`), run as production runs it")
    parser.add_argument("--baseline", type=int, help=argparse.SUPPRESS)  # internal: run the FastAPI app on this port
    args = parser.parse_args()
    if args.baseline:
        baseline(args.baseline)
        return 0
    if args.quick:
        args.duration, args.concurrency, args.rows = 1, [1, 8], 50
    if args.auth_cost:
        result = auth_cost(args.duration, rows=args.rows)
    else:
        result = run(args.duration, args.concurrency, args.rows, args.image)
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(result, indent=2) + "\n", encoding="utf-8")
    if args.auth_cost:
        print(auth_markdown(result))
        return 0
    print(markdown(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
