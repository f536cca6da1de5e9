"""Who may ask for a decision (serving/auth.py): API keys, the request id in the audit log, secrets at start.

One server for the module, started as a deployment runs it and through `make serve`: production
mode, audit keys and a keys file from the environment. The refusals to start need no server.
"""

from __future__ import annotations

import errno
import json
import os
import socket
import subprocess
import sys

import httpx
import pandas as pd
import pytest

from {{ cookiecutter.package }}.serving import audit, auth

from .pipeline_run import ROOT, pipeline_run
from .test_service import API_KEY, API_KEY_ID, AUTH, SERVICE, Server, free_port, loopback, valid_record

# A deployment's audit secrets: not the development key, and two different secrets.
SECRETS = {"AUDIT_HMAC_KEY": "h" * 40, "AUDIT_CHAIN_KEY": "c" * 40}
UNAUTHORIZED_BODY = {"error": "Unauthorized: send a valid API key as 'Authorization: Bearer <key>'"}


def make_serve(port: int, keys, *args: str) -> list[str]:
    """`make serve` of this repository, run from the pipeline run with this Python (not uv)."""
    return [
        "make",
        "--no-print-directory",
        "-f",
        str(ROOT / "Makefile"),
        "serve",
        f"PORT={port}",
        f"API_KEYS_FILE={keys}",
        f"RUN={sys.executable} -m",
        *args,
    ]


@pytest.fixture(scope="module")
def run():
    return pipeline_run()


@pytest.fixture(scope="module")
def held_out(run) -> pd.DataFrame:
    return pd.read_parquet(run.path("data/prepared/test.parquet"))


@pytest.fixture(scope="module")
def server(run, tmp_path_factory):
    log = tmp_path_factory.mktemp("audit") / "decisions.jsonl"
    keys = log.with_name("api-keys")  # Server writes the tests' key there
    # HOST as some shells and CI runners export it: it must not open the service to the network.
    env = {**SECRETS, "HOST": "0.0.0.0", "SERVICE_MODE": "production"}  # noqa: S104 - what must be ignored
    srv = Server(run.dir, log, env=env, command=lambda port: make_serve(port, keys, "SERVICE_MODE=production"))
    yield srv
    srv.stop()


def records(log) -> list[dict]:
    return [json.loads(line) for line in log.read_text(encoding="utf-8").splitlines()]


def test_make_serve_listens_on_loopback_only(server):
    assert httpx.get(f"{server.url}/livez", timeout=5).status_code == 200
    others = ["127.0.0.2"]  # Linux routes all of 127/8 to the loopback: a wildcard bind answers here
    try:
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
            probe.connect(("192.0.2.1", 9))  # no packet is sent: this only asks for the outgoing address
            others.append(probe.getsockname()[0])
    except OSError:
        pass  # no network route: the loopback alias still tells a wildcard bind
    for address in others:
        with socket.socket() as s:
            s.settimeout(2)
            code = s.connect_ex((address, server.port))
        assert code in (errno.ECONNREFUSED, errno.EADDRNOTAVAIL, errno.ENETUNREACH), f"the service answers on {address}"


def test_make_serve_runs_in_development_mode_unless_told(tmp_path):
    dry = subprocess.run(make_serve(3000, tmp_path / "none", "-n"), cwd=tmp_path, capture_output=True, text=True, check=True)
    assert "SERVICE_MODE=development " in dry.stdout and "--host 127.0.0.1 " in dry.stdout, dry.stdout
    told = subprocess.run(
        make_serve(3000, tmp_path / "none", "-n", "HOST=0.0.0.0", "SERVICE_MODE=production"),
        cwd=tmp_path,
        capture_output=True,
        text=True,
        check=True,
    )
    assert "SERVICE_MODE=production " in told.stdout and "--host 0.0.0.0 " in told.stdout, told.stdout


@pytest.mark.parametrize(
    "headers",
    [
        {},
        {"Authorization": "Bearer wrong-key-0123456789abcdef0123456789abcdef"},
        {"Authorization": f"Basic {API_KEY}"},  # the right key under another scheme
        {"Authorization": "Bearer"},
        {"X-API-Key": API_KEY[:-1]},
    ],
    ids=["none", "wrong-key", "basic-scheme", "empty-bearer", "truncated-x-api-key"],
)
def test_a_request_without_a_valid_key_is_refused_alike(server, held_out, headers):
    before = len(records(server.log)) if server.log.exists() else 0
    for path in ("/decide", "/decide_batch", "/docs.json", "/no-such-path"):
        r = httpx.post(f"{server.url}{path}", json=valid_record(held_out), headers=headers, timeout=10)
        assert r.status_code == 401, (path, r.status_code, r.text)
        assert r.headers["www-authenticate"].startswith("Bearer")
        assert r.json() == UNAUTHORIZED_BODY  # the same answer whatever was wrong: no hint for a guesser
    assert (len(records(server.log)) if server.log.exists() else 0) == before, "a refused request left an audit record"


def test_probes_and_metrics_need_no_key_and_count_refusals(server):
    for path in ("/livez", "/readyz"):
        assert httpx.get(f"{server.url}{path}", timeout=5).status_code == 200, path
    metrics = httpx.get(f"{server.url}/metrics", timeout=5)
    assert metrics.status_code == 200 and 'reason="unauthorized"' in metrics.text


def test_a_good_key_is_served_and_audited_with_its_id_and_the_request_id(server, held_out):
    body = valid_record(held_out)
    by_bearer = httpx.post(f"{server.url}/decide", json=body, headers={**AUTH, "X-Request-ID": "req-2026.1:a"}, timeout=30)
    by_header = httpx.post(f"{server.url}/decide", json=body, headers={"X-API-Key": API_KEY}, timeout=30)
    # An id that could forge a log line or a header is replaced by the service's own.
    odd = httpx.post(
        f"{server.url}/decide_batch", json={"records": [body, body]}, headers={**AUTH, "X-Request-ID": "x" * 129}, timeout=30
    )
    for r in (by_bearer, by_header, odd):
        assert r.status_code == 200, r.text
    assert by_bearer.headers["x-request-id"] == "req-2026.1:a"
    generated = {by_header.headers["x-request-id"], odd.headers["x-request-id"]}
    assert all(len(g) == 32 and int(g, 16) >= 0 for g in generated) and len(generated) == 2
    logged = {r["decision_id"]: r for r in records(server.log)}
    ids = [by_bearer.json()["decision_id"], by_header.json()["decision_id"]] + [d["decision_id"] for d in odd.json()["decisions"]]
    expected = [by_bearer.headers["x-request-id"], by_header.headers["x-request-id"]] + [odd.headers["x-request-id"]] * 2
    assert [(logged[i]["api_key_id"], logged[i]["request_id"]) for i in ids] == [(API_KEY_ID, e) for e in expected]


def test_outside_development_mode_the_service_refuses_to_start_without_api_keys(run, tmp_path):
    clean = {k: v for k, v in os.environ.items() if k not in ("SERVICE_MODE", "API_KEYS_FILE", *SECRETS)}
    done = subprocess.run(
        [sys.executable, "-m", "bentoml", "serve", SERVICE, *loopback(free_port())],
        cwd=run.dir,
        env={**clean, **SECRETS, "BENTOML_DO_NOT_TRACK": "true", "AUDIT_LOG_PATH": str(tmp_path / "a.jsonl")},
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode != 0
    [line] = done.stderr.strip().splitlines()  # one line, not a traceback
    assert line.startswith("decision service not started: API_KEYS_FILE is not set"), line


@pytest.mark.parametrize(
    ("env", "named"),
    [
        ({**SECRETS, "AUDIT_HMAC_KEY": audit.DEV_KEY.decode()}, "AUDIT_HMAC_KEY is not set or is the development key"),
        ({"AUDIT_HMAC_KEY": SECRETS["AUDIT_HMAC_KEY"]}, "AUDIT_CHAIN_KEY is not set"),
        ({**SECRETS, "AUDIT_CHAIN_KEY": SECRETS["AUDIT_HMAC_KEY"]}, "AUDIT_CHAIN_KEY equals AUDIT_HMAC_KEY"),
        ({**SECRETS, "API_KEYS_FILE": "{empty}"}, "API_KEYS_FILE={empty} holds no key"),
        ({**SECRETS, "API_KEYS_FILE": "{bad}"}, "API_KEYS_FILE={bad} line 2 is not 'key_id:sha256hex'"),
    ],
    ids=["development-audit-key", "no-chain-key", "one-key-for-both", "no-api-key-in-file", "malformed-line"],
)
def test_the_service_refuses_development_or_missing_secrets_naming_them(tmp_path, env, named):
    # What the service runs once before its workers start (the start above shows it is wired in).
    files = {"empty": tmp_path / "empty", "bad": tmp_path / "bad"}
    files["empty"].write_text("# no keys yet\n", encoding="utf-8")
    files["bad"].write_text(f"# keys\n{API_KEY}\n", encoding="utf-8")
    env = {k: v.format(**files) for k, v in env.items()}
    with pytest.raises(SystemExit) as refused:
        auth.check_startup(env, (audit.DEV_KEY,))
    assert str(refused.value).startswith(f"decision service not started: {named.format(**files)}"), refused.value
    assert "\n" not in str(refused.value)
    if "line 2" not in named:  # a malformed file is refused in development mode too; the rest only warn there
        auth.check_startup({**env, "SERVICE_MODE": "development"}, (audit.DEV_KEY,))


# --- the keys file ------------------------------------------------------------------------
def test_a_keys_file_holds_ids_and_hashes_with_comments(tmp_path):
    path = tmp_path / "keys"
    path.write_text(f"# partners\n\n{API_KEY_ID}:{auth.digest(API_KEY).hex()}\n  other:{'0' * 64}  \n", encoding="utf-8")
    assert auth.load_keys(path) == {auth.digest(API_KEY): API_KEY_ID, bytes(32): "other"}


@pytest.mark.parametrize(
    "line",
    [API_KEY, f"a:{'A' * 64}", f"a:{'0' * 63}", f"a b:{'0' * 64}", f"a:{'0' * 64}\nb:{'0' * 64}", f"a:{'0' * 64}\na:{'1' * 64}"],
    ids=["a-raw-key", "upper-hex", "short-hash", "space-in-id", "same-hash", "same-id"],
)
def test_a_malformed_keys_file_names_its_line(tmp_path, line):
    path = tmp_path / "keys"
    path.write_text("# comment\n" + line + "\n", encoding="utf-8")
    bad_line = 3 if "\n" in line else 2
    with pytest.raises(auth.KeyFileError, match=f"API_KEYS_FILE={path} line {bad_line}"):
        auth.load_keys(path)


def test_a_minted_key_is_shown_once_stored_hashed_and_revocable(tmp_path):
    path = tmp_path / "secrets" / "api-keys"
    first, second = auth.add_key(path, "partner-a"), auth.add_key(path, "partner-b")
    assert first != second and len(first) >= 43
    assert first not in path.read_text() and second not in path.read_text()
    assert auth.load_keys(path) == {auth.digest(first): "partner-a", auth.digest(second): "partner-b"}
    with pytest.raises(auth.KeyFileError, match="already in"):
        auth.add_key(path, "partner-a")
    auth.revoke(path, "partner-a")
    assert auth.load_keys(path) == {auth.digest(second): "partner-b"}
