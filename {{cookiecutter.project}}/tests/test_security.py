"""What the decision service refuses, and what it gives away: tried over loopback on the real service.

One `bentoml serve` for the module, with a short header-read timeout so a slow-header client is
seen being closed in about a second. Each test was written against a defect of issue 17 and
fails on the service as it was before the fix.
"""

from __future__ import annotations

import json
import socket
import time
import uuid
from importlib.metadata import version

import httpx
import jsonschema
import pytest
import schemathesis
import yaml
from hypothesis import HealthCheck, given, settings
from schemathesis import GenerationMode
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    negative_data_rejection,
    response_schema_conformance,
    status_code_conformance,
)

from {{ cookiecutter.package }}.core.contract import load_contract
from {{ cookiecutter.package }}.core.errors import ParamsError
from {{ cookiecutter.package }}.serving import guard

from .pipeline_run import ROOT, pipeline_run
from .test_service import AUTH, Server, features

CONTRACT = load_contract(ROOT / "contract.yaml")
HEADER_TIMEOUT_S = 0.5
MAX_BODY = guard.ServingParams().max_body_bytes  # params.yaml's default: the server below runs with it
FEATURES = [c for c in CONTRACT.columns if c.role == "feature"]


@pytest.fixture(scope="module")
def run():
    return pipeline_run()


@pytest.fixture(scope="module")
def server(run, tmp_path_factory):
    srv = Server(
        run.dir, tmp_path_factory.mktemp("audit") / "decisions.jsonl", env={guard.HEADER_TIMEOUT_ENV: str(HEADER_TIMEOUT_S)}
    )
    yield srv
    srv.stop()


@pytest.fixture(scope="module")
def client(server):
    with httpx.Client(base_url=server.url, timeout=30, headers=AUTH) as c:
        yield c


@pytest.fixture(scope="module")
def good(run) -> dict:
    import pandas as pd

    return features(pd.read_parquet(run.path("data/prepared/test.parquet")).head(1))[0]


def post(client: httpx.Client, body: bytes | str, path: str = "/decide", **headers: str) -> httpx.Response:
    return client.post(path, content=body, headers={"Content-Type": "application/json", **headers})


# --- 1. strict types from the contract -----------------------------------------------------
def test_a_feature_gets_exactly_its_json_type_or_a_400_naming_field_and_types(client, good):
    numeric = [c for c in FEATURES if c.is_numeric]
    assert numeric
    for col in numeric:
        expected = "integer" if col.dtype == "int" else "number"
        wrong = [True, False, "3", " 4.9e4 ", [1], {"v": 1}] + ([2.5] if col.dtype == "int" else [])
        for value in wrong:
            r = post(client, json.dumps({**good, col.name: value}))
            assert r.status_code == 400, (col.name, value, r.text)
            body = r.json()
            assert body["detail"][0]["loc"] == [col.name], body
            assert f"expected a JSON {expected}, got" in body["error"] and body["error"].startswith(f"{col.name}: "), body
    # JSON Schema's integer is a number without a fraction: 3.0 is the integer 3, the same decision.
    integer = next((c for c in numeric if c.dtype == "int" and not c.nullable), None)
    if integer is not None:
        whole = int(good[integer.name] if good[integer.name] is not None else integer.min)
        as_int = post(client, json.dumps({**good, integer.name: whole}))
        as_float = post(client, json.dumps({**good, integer.name: float(whole)}))
        assert as_int.status_code == as_float.status_code == 200, (as_int.text, as_float.text)
        assert as_int.json()["score"] == as_float.json()["score"]


# --- 2. only application/json is a request -------------------------------------------------
@pytest.mark.parametrize(
    "content_type",
    [
        None,
        "text/plain",
        "application/xml",
        "application/x-www-form-urlencoded",
        "multipart/form-data",
        "multipart/form-data; boundary=x1",
        "application/json; charset=latin-1",
        "application/jsonx",
    ],
)
def test_anything_but_application_json_gets_415_naming_the_type(client, good, content_type):
    headers = {} if content_type is None else {"Content-Type": content_type}
    r = client.post("/decide", content=json.dumps(good), headers=headers)
    assert r.status_code == 415, r.text
    assert r.json()["detail"][0]["loc"] == ["header", "content-type"]
    assert (repr(content_type) if content_type else "no Content-Type") in r.json()["error"]


def test_a_browser_form_post_makes_no_decision(client, good):
    assert client.post("/decide", data={k: str(v) for k, v in good.items()}).status_code == 415
    assert client.post("/decide", files={"f": ("r.json", json.dumps(good), "application/json")}).status_code == 415
    assert post(client, json.dumps(good), **{"Content-Type": "Application/JSON; charset=UTF-8"}).status_code == 200


# --- 3. duplicate keys ---------------------------------------------------------------------
def test_a_key_sent_twice_is_refused_by_name_at_any_depth(client, good):
    name = FEATURES[0].name
    record = json.dumps(good)
    twice = record[:-1] + ', "' + name + '": ' + json.dumps(good[name]) + "}"
    r = post(client, twice)
    assert r.status_code == 400 and r.json()["detail"][0]["type"] == "duplicate_key", r.text
    assert repr(name) in r.json()["error"]
    batch = '{"records": [' + record + ", " + twice + "]}"
    r = post(client, batch, "/decide_batch")
    assert r.status_code == 400 and repr(name) in r.json()["error"], r.text
    r = post(client, '{"records": [' + record + '], "records": [' + record + "]}", "/decide_batch")
    assert r.status_code == 400 and "'records'" in r.json()["error"], r.text


# --- 4. body size ---------------------------------------------------------------------------
# A caller with a key: the guard below stands behind authentication (an unknown caller gets its 401 first).
RAW_AUTH = "".join(f"{name}: {value}\r\n" for name, value in AUTH.items()).encode()


def raw_exchange(server: Server, head: bytes, chunks=(), timeout: float = 10) -> tuple[bytes, int]:
    """The answer to ``head`` (+ ``chunks``) up to the server's close, and how many chunks were sent before it came."""
    with socket.create_connection(("127.0.0.1", server.port), timeout=timeout) as s:
        s.sendall(head)
        sent = 0
        for chunk in chunks:
            try:
                s.sendall(chunk)
            except OSError:  # the server answered and closed: it stopped reading
                break
            sent += 1
        answer = b""
        while piece := s.recv(65536):
            answer += piece
        return answer, sent


def test_a_body_over_the_limit_gets_413_before_it_is_read(server, client, good):
    # Declared: answered from the headers alone, without a byte of the body sent.
    head = (
        b"POST /decide HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
        + RAW_AUTH
        + f"Content-Length: {100 * MAX_BODY}\r\n\r\n".encode()
    )
    answer, _ = raw_exchange(server, head)
    assert answer.startswith(b"HTTP/1.1 413"), answer[:200]
    assert str(MAX_BODY).encode() in answer
    # Streamed (chunked, no length): refused once past the limit, long before 64 MiB arrive.
    head = b"POST /decide HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
    head += RAW_AUTH + b"Transfer-Encoding: chunked\r\n\r\n"
    chunk = b"10000\r\n" + b" " * 0x10000 + b"\r\n"
    answer, sent = raw_exchange(server, head, [chunk] * 1024)
    assert answer.startswith(b"HTTP/1.1 413"), answer[:200]
    assert sent < 1024, "the server read the whole 64 MiB stream"
    # A valid record padded with whitespace past the limit: still JSON, still refused.
    padded = json.dumps(good) + " " * MAX_BODY
    assert post(client, padded).status_code == 413
    assert post(client, json.dumps(good) + " " * (MAX_BODY // 2)).status_code == 200


def test_the_limit_comes_from_params_or_the_environment(tmp_path, monkeypatch):
    (tmp_path / "params.yaml").write_text(yaml.safe_dump({"serving": {"max_body_bytes": 4096, "header_timeout_s": 2.5}}))
    monkeypatch.delenv(guard.MAX_BODY_ENV, raising=False)
    monkeypatch.delenv(guard.HEADER_TIMEOUT_ENV, raising=False)
    assert (guard.settings(tmp_path).max_body_bytes, guard.settings(tmp_path).header_timeout_s) == (4096, 2.5)
    monkeypatch.setenv(guard.MAX_BODY_ENV, "8192")
    assert guard.settings(tmp_path).max_body_bytes == 8192
    monkeypatch.setenv(guard.MAX_BODY_ENV, "12")
    with pytest.raises(ParamsError, match="max_body_bytes"):
        guard.settings(tmp_path)


def series(client: httpx.Client) -> set[str]:
    """Every series /metrics exposes (name and labels, without the value)."""
    text = client.get("/metrics").text
    return {line.rsplit(" ", 1)[0] for line in text.splitlines() if line and not line.startswith("#")}


def test_refusals_are_counted_as_documented(client, good):
    post(client, json.dumps(good) + " " * MAX_BODY)
    client.post("/decide", content=json.dumps(good), headers={"Content-Type": "text/plain"})
    counted = series(client)
    for reason in ("too_large", "unsupported_media_type"):
        assert 'refused_requests_total{endpoint="/decide",reason="' + reason + '"}' in counted, sorted(counted)


# --- 6. /metrics by route -------------------------------------------------------------------
def test_random_unknown_paths_add_no_series(client):
    assert client.get(f"/{uuid.uuid4().hex}").status_code == 404  # the one 'unmatched' series exists from here
    before = series(client)
    for _ in range(25):
        assert client.get(f"/{uuid.uuid4().hex}/{uuid.uuid4().hex}").status_code == 404
        assert client.post(f"/decide/{uuid.uuid4().hex}", json={}).status_code == 404
    added = series(client) - before
    assert not added, sorted(added)[:10]
    assert any('endpoint="unmatched"' in s for s in before)


# --- also: third parties, versions, slow headers --------------------------------------------
def test_the_swagger_page_loads_nothing_from_a_third_party(client):
    page = client.get("/")
    assert page.status_code == 200 and "swagger-ui" in page.text
    assert "googletagmanager" not in page.text.lower()
    for attribute in ("src=", "href="):
        for value in page.text.split(attribute)[1:]:
            assert value.strip("'\"").startswith("./"), f"{attribute}{value[:80]}"


def test_no_library_or_its_version_is_named_in_errors_the_document_or_headers(client, good):
    leaks = (
        {f"{name}-{version(name)}" for name in ("bentoml",)}
        | {version(name) for name in ("bentoml", "pydantic", "starlette", "uvicorn")}
        | {"errors.pydantic.dev", "BentoML"}
    )
    answers = [
        post(client, json.dumps({**good, "x": 1})),
        post(client, json.dumps({k: v for k, v in good.items() if k != FEATURES[0].name})),
        post(client, '{"records": []}', "/decide_batch"),
        post(client, "[1, 2]"),
        client.get("/docs.json"),
        client.get("/schema.json"),  # BentoML's own description of the endpoints
        client.get("/no-such-page"),
    ]
    for r in answers:
        for leak in leaks:
            assert leak not in r.text, (r.request.url, leak, r.text[:300])
        assert "server" not in r.headers, r.headers


def test_a_connection_slow_to_send_its_headers_is_closed(server, client, good):
    silent = socket.create_connection(("127.0.0.1", server.port), timeout=10)
    trickling = socket.create_connection(("127.0.0.1", server.port), timeout=10)
    started = time.monotonic()
    request = b"POST /decide HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nX-Pad: " + b"a" * 200
    closed = {}
    try:
        for byte in request:  # one byte per tenth of the timeout: never done
            try:
                trickling.sendall(bytes([byte]))
            except OSError:  # closed by the server
                break
            time.sleep(HEADER_TIMEOUT_S / 10)
            if time.monotonic() - started > 4 * HEADER_TIMEOUT_S:
                break
        for name, sock in (("silent", silent), ("trickling", trickling)):
            sock.settimeout(max(0.1, 4 * HEADER_TIMEOUT_S - (time.monotonic() - started)))
            try:
                closed[name] = sock.recv(1024) == b""
            except (TimeoutError, ConnectionResetError) as exc:
                closed[name] = isinstance(exc, ConnectionResetError)
    finally:
        silent.close()
        trickling.close()
    assert closed == {"silent": True, "trickling": True}, closed
    # A client that sends its request promptly is answered, twice on one kept-alive connection.
    with httpx.Client(base_url=server.url, headers=AUTH) as keep:
        for _ in range(2):
            assert keep.post("/decide", json=good).status_code == 200


# --- 5. the document tells the truth, and a fuzzer holds the service to it -------------------
def test_the_document_describes_bodies_refusals_and_nullable_fields(client, good):
    doc = client.get("/docs.json").json()
    schemas = doc["components"]["schemas"]
    for path in ("/decide", "/decide_batch"):
        operation = doc["paths"][path]["post"]
        assert operation["requestBody"]["required"] is True
        assert set(operation["requestBody"]["content"]) == {"application/json"}
        for status in ("400", "413", "415"):
            answer = operation["responses"][status]["content"]["application/json"]["schema"]
            assert answer == {"$ref": "#/components/schemas/Refusal"}, (path, status)
    record = schemas["Record"]["properties"]
    assert {n for n, p in record.items() if p.get("nullable")} == {c.name for c in FEATURES if c.nullable}
    assert all("anyOf" not in p for p in record.values())  # OpenAPI 3.0 says nullable, not a null type
    refused = post(client, json.dumps({**good, FEATURES[0].name: "x"}))
    assert refused.status_code == 400
    jsonschema.validate(refused.json(), schemas["Refusal"])


CHECKS = [
    not_a_server_error,  # no 5xx
    status_code_conformance,  # every status is one the document lists
    content_type_conformance,
    response_schema_conformance,  # every body is the document's shape
    negative_data_rejection,  # no invalid request accepted
]
EXAMPLES = 10  # per operation and mode: this runs in every bake's suite, four times in the template's


def unexplained(case):
    """A valid case without explanations: each explained record costs ~60 ms (test_attributions.py covers them)."""
    body = case.body
    records = body.get("records") if isinstance(body, dict) else None
    for record in records if isinstance(records, list) else [body]:
        if isinstance(record, dict) and record.get("explain") is True:
            record["explain"] = False
    return case


def test_fuzzed_requests_get_no_5xx_no_answer_outside_the_document_and_no_invalid_one_accepted(server):
    # Each operation of the live document, with bodies that satisfy it and bodies that do not.
    # (schemathesis' pytest loader needs pytest internals that pytest 9 removed: its strategies are used here.)
    schema = schemathesis.openapi.from_url(f"{server.url}/docs.json", headers=AUTH)
    operations = [result.ok() for result in schema.get_all_operations()]
    assert {f"{op.method.upper()} {op.path}" for op in operations} >= {"POST /decide", "POST /decide_batch"}
    for operation in operations:
        # A GET without parameters has no invalid form; a decision endpoint has bodies of both kinds.
        modes = [GenerationMode.POSITIVE] + ([GenerationMode.NEGATIVE] if operation.method.upper() == "POST" else [])
        for mode in modes:
            strategy = operation.as_strategy(generation_mode=mode)

            @settings(max_examples=EXAMPLES, deadline=None, database=None, suppress_health_check=list(HealthCheck))
            @given(case=strategy.map(unexplained) if mode is GenerationMode.POSITIVE else strategy)
            def exchange(case):
                case.call_and_validate(checks=CHECKS, headers=AUTH)

            exchange()
