"""What the decision service refuses before a request is parsed, and what it says about itself.

:class:`RequestGuard` is one ASGI middleware in front of the decision endpoints. In order, a
``POST /decide``, ``/decide_batch``, ``/review``, ``/stop`` or ``/resume``:

1. with a Content-Type other than ``application/json`` (a ``charset=utf-8`` parameter is fine)
   is refused with 415 before its body is read: a form post from a web page, ``text/plain``,
   XML, multipart and no Content-Type at all are not requests;
2. with a body larger than ``serving.max_body_bytes`` (params.yaml, or
   ``SERVICE_MAX_BODY_BYTES``) is refused with 413, by its Content-Length before anything is
   read, or while it streams (chunked) as soon as it passes the limit;
3. that is not JSON, or has a key twice in one object (at any depth: ``json`` would keep
   the last silently), is refused with 400 naming the key;

and then BentoML validates it against the contract's model (``schema.py``). Every 400 has one
shape, the document's ``Refusal``: ``{"error": "<field>: <what was wrong>", "detail":
[{"loc": [...], "msg": ..., "type": ...}]}`` (BentoML's own carries links naming pydantic's
version; they are dropped). The guard also answers ``GET /docs.json`` with an OpenAPI document
that describes exactly this (:func:`document`) and ``GET /`` with a Swagger page that loads
nothing from a third party, and drops the ``Server`` header naming the framework.

Metrics label a request by its route template (:class:`RouteLabels`), so unknown paths add no series.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel

from ..core.params import ServingParams, parse_section

MEDIA_TYPE = "application/json"
# Human oversight's endpoints (oversight.py): JSON bodies refused as the decisions' are.
OVERSIGHT_PATHS = ("/review", "/stop", "/resume")
UNMATCHED = "unmatched"  # the route label of every path the service does not serve
MAX_BODY_ENV = "SERVICE_MAX_BODY_BYTES"
HEADER_TIMEOUT_ENV = "SERVICE_HEADER_TIMEOUT_S"


def settings(root: Path) -> ServingParams:
    """params.yaml's ``serving`` section under ``root``, with the environment's overrides applied."""
    raw = yaml.safe_load((root / "params.yaml").read_text(encoding="utf-8")) or {}
    section = dict(raw.get("serving") or {})
    for env, key, kind in ((MAX_BODY_ENV, "max_body_bytes", int), (HEADER_TIMEOUT_ENV, "header_timeout_s", float)):
        if os.environ.get(env):
            try:
                section[key] = kind(os.environ[env])
            except ValueError:
                raise SystemExit(f"{env}={os.environ[env]!r} is not a number") from None
    return parse_section(ServingParams, section, "serving")


# --- refusals ------------------------------------------------------------------------------
class Refused(Exception):
    """A request refused before it reached the model: its status, and the ``Refusal`` body."""

    def __init__(self, status: int, kind: str, loc: list[Any], msg: str) -> None:
        super().__init__(msg)
        self.status, self.body = status, refusal([{"loc": loc, "msg": msg, "type": kind}])


def refusal(detail: list[dict[str, Any]]) -> dict[str, Any]:
    """The one shape of every refusal: a summary naming where, and each problem."""
    first = detail[0] if detail else {"loc": [], "msg": "the request was refused"}
    where = ".".join(str(part) for part in first["loc"])
    more = f" (and {len(detail) - 1} more)" if len(detail) > 1 else ""
    return {"error": f"{where}: {first['msg']}{more}" if where else f"{first['msg']}{more}", "detail": detail}


def plain_refusal(raw: bytes) -> bytes:
    """BentoML's 400 body in the ``Refusal`` shape, without pydantic's documentation links (they name its version)."""
    try:
        data = json.loads(raw)
    except ValueError:
        data = {"error": raw.decode("utf-8", "replace")}
    if isinstance(data, list):  # BentoML answers some refusals with a one-element array
        data = data[0] if data and isinstance(data[0], dict) else {"error": str(data)}
    detail = data.get("detail") if isinstance(data, dict) else None
    if isinstance(detail, list) and all(isinstance(d, dict) for d in detail):
        problems = [{"loc": list(d.get("loc", [])), "msg": str(d.get("msg", "")), "type": str(d.get("type", ""))} for d in detail]
    else:
        problems = [{"loc": [], "msg": str(data.get("error", data) if isinstance(data, dict) else data), "type": "invalid"}]
    return json.dumps(refusal(problems), separators=(",", ":")).encode()


class _Duplicate(ValueError):
    pass


def _no_duplicates(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    obj = dict(pairs)
    if len(obj) != len(pairs):
        seen: set[str] = set()
        key = next(k for k, _ in pairs if k in seen or seen.add(k))
        raise _Duplicate(key)
    return obj


def check_json(body: bytes) -> None:
    """Refuse a body that is not JSON or that has a key twice in one object (``Refused``, 400)."""
    try:
        json.loads(body, object_pairs_hook=_no_duplicates)
    except _Duplicate as dup:
        key = dup.args[0]
        raise Refused(400, "duplicate_key", ["body", key], f"key {key!r} appears more than once in one JSON object") from None
    except UnicodeDecodeError:
        raise Refused(400, "json_invalid", ["body"], "the body is not UTF-8 text") from None
    except json.JSONDecodeError as exc:
        raise Refused(
            400, "json_invalid", ["body"], f"not valid JSON: {exc.msg} at line {exc.lineno} column {exc.colno}"
        ) from None


def check_media_type(value: str | None) -> None:
    """Refuse (415) anything but ``application/json``, with at most a ``charset=utf-8`` parameter."""
    media, *params = (value or "").split(";")
    charset = [p.split("=", 1)[1].strip().strip('"').lower() for p in params if p.strip().lower().startswith("charset=")]
    if media.strip().lower() != MEDIA_TYPE or any(c != "utf-8" for c in charset):
        got = f"Content-Type {value!r}" if value else "no Content-Type"
        raise Refused(415, "unsupported_media_type", ["header", "content-type"], f"expected {MEDIA_TYPE}, got {got}")


# --- route labels --------------------------------------------------------------------------
class RouteLabels:
    """The route template a request matches (``/decide``, ``/static_content``), or ``UNMATCHED``.

    Found from the Starlette router at the end of a middleware chain, so a metric labelled with
    it has one series per route, however many paths are tried.
    """

    def __init__(self, app: Any) -> None:
        while not hasattr(app, "routes"):  # down the middleware chain to the router
            app = app.app
        self.routes = app.routes
        # Paths of plain routes (no parameters, not a mount): their label is the path, looked up
        # without matching. Only routes' own paths enter it, so it cannot grow with unknown ones.
        self.exact: dict[str, str] = {}

    def __call__(self, scope: dict[str, Any]) -> str:  # noqa: D102 - a label for a scope
        from starlette.routing import Match, Route

        path = scope["path"]
        if path in self.exact:
            return self.exact[path]
        for route in self.routes:
            if route.matches(scope)[0] is not Match.NONE:  # a wrong method is a PARTIAL match: its route
                label = getattr(route, "path", UNMATCHED) or "/"
                if isinstance(route, Route) and label == path and "{" not in label:
                    self.exact[path] = label
                return label
        return UNMATCHED


def route_labels(middleware: Any) -> RouteLabels:
    """The labeller of the router under ``middleware`` (kept on it: found once per application)."""
    labels = middleware.__dict__.get("_route_labels")
    if labels is None:
        labels = middleware.__dict__["_route_labels"] = RouteLabels(middleware.app)
    return labels


# --- the document and the page -------------------------------------------------------------
def _openapi_30(node: Any) -> Any:
    """A pydantic (JSON Schema 2020-12) schema as an OpenAPI 3.0 schema object: nullable, enum, refs."""
    if isinstance(node, list):
        return [_openapi_30(n) for n in node]
    if not isinstance(node, dict):
        return node
    node = {k: _openapi_30(v) for k, v in node.items() if k != "$defs"}
    if "$ref" in node:
        return {"$ref": node["$ref"].replace("#/$defs/", "#/components/schemas/")}
    members = node.get("anyOf")
    if members and {"type": "null"} in members and len(members) == 2:
        (other,) = [m for m in members if m != {"type": "null"}]
        node = {**{k: v for k, v in node.items() if k != "anyOf"}, **other, "nullable": True}
    if "const" in node:
        node["enum"] = [node.pop("const")]
    return node


def _schemas(*models: type[BaseModel]) -> dict[str, Any]:
    schemas: dict[str, Any] = {}
    for model in models:
        full = model.model_json_schema()
        for name, sub in full.get("$defs", {}).items():
            schemas[name] = _openapi_30(sub)
        schemas[model.__name__] = _openapi_30(full)
    return schemas


_REFUSAL = {
    "type": "object",
    "required": ["error", "detail"],
    "additionalProperties": False,
    "properties": {
        "error": {"type": "string", "description": "The first problem and where it is"},
        "detail": {
            "type": "array",
            "items": {
                "type": "object",
                "required": ["loc", "msg", "type"],
                "additionalProperties": False,
                "properties": {
                    "loc": {"type": "array", "items": {"oneOf": [{"type": "string"}, {"type": "integer"}]}},
                    "msg": {"type": "string"},
                    "type": {"type": "string"},
                },
            },
        },
    },
}
_ERROR = {"type": "object", "required": ["error"], "properties": {"error": {"type": "string"}}}


def document(
    title: str,
    version: str,
    record: type[BaseModel],
    batch: type[BaseModel],
    limits: ServingParams,
    review: type[BaseModel],
    switch: type[BaseModel],
) -> dict[str, Any]:
    """The OpenAPI document of the service: what it accepts and every answer it gives."""

    def refused(why: str) -> dict[str, Any]:
        return {"description": why, "content": {MEDIA_TYPE: {"schema": {"$ref": "#/components/schemas/Refusal"}}}}

    def error(why: str) -> dict[str, Any]:
        return {"description": why, "content": {MEDIA_TYPE: {"schema": {"$ref": "#/components/schemas/Error"}}}}

    def decision_api(model: str, summary: str, answer: str = "The decision(s)", **more: Any) -> dict[str, Any]:
        return {
            "post": {
                "summary": summary,
                "security": [{"bearer": []}, {"apiKey": []}],
                "requestBody": {"required": True, "content": {MEDIA_TYPE: {"schema": {"$ref": f"#/components/schemas/{model}"}}}},
                "responses": {
                    **more,
                    "200": {"description": answer, "content": {MEDIA_TYPE: {"schema": {"type": "object"}}}},
                    "400": refused("Not JSON, a key twice, or a field missing, mistyped, out of bounds or not accepted"),
                    "401": error("No valid API key (Authorization: Bearer <key>, or X-API-Key)"),
                    "413": refused(f"The body is larger than {limits.max_body_bytes} bytes"),
                    "415": refused(f"The Content-Type is not {MEDIA_TYPE}"),
                    "500": error("An unexpected error (the server log has it)"),
                    "503": error("The service cannot record decisions now"),
                    "504": error("Not answered within the request timeout"),
                },
            }
        }

    def probe(summary: str) -> dict[str, Any]:
        return {"get": {"summary": summary, "responses": {"200": {"description": "OK"}}}}

    return {
        "openapi": "3.0.3",
        "info": {
            "title": title,
            "version": version,
            "description": "Decisions from the pipeline's model; see docs/serving.md in the repository.",
        },
        "paths": {
            "/decide": decision_api("Record", "One decision"),
            "/decide_batch": decision_api("Batch", "Decisions for 1 to 1,000 records, in request order"),
            "/review": decision_api(
                review.__name__,
                "A person's final decision on a decision this service made (docs/serving.md, Human oversight)",
                "The review, as recorded in the audit log",
                **{"404": error("The decision_id is not in this service's audit log")},
            ),
            "/stop": decision_api(
                switch.__name__,
                "Operators: answer refer to every request until /resume",
                "The stop switch's new state",
                **{"403": error("The API key has no operator role (OPERATOR_KEY_IDS)")},
            ),
            "/resume": decision_api(
                switch.__name__,
                "Operators: lift the stop switch",
                "The stop switch's new state",
                **{"403": error("The API key has no operator role (OPERATOR_KEY_IDS)")},
            ),
            "/livez": probe("Liveness"),
            "/readyz": probe("Readiness"),
            "/metrics": probe("Prometheus metrics"),
        },
        "components": {
            "schemas": {**_schemas(record, batch, review, switch), "Refusal": _REFUSAL, "Error": _ERROR},
            # What serving/auth.py checks: a key from API_KEYS_FILE, either way (docs/serving.md, Authentication).
            "securitySchemes": {
                "bearer": {"type": "http", "scheme": "bearer"},
                "apiKey": {"type": "apiKey", "in": "header", "name": "X-API-Key"},
            },
        },
    }


# The Swagger UI from BentoML's own assets, without the Google Tag Manager its page loads.
SWAGGER_PAGE = b"""<!DOCTYPE html>
<html lang="en">
  <head>
    <meta charset="UTF-8">
    <title>Decision service</title>
    <link rel="stylesheet" type="text/css" href="./static_content/swagger-ui.css" />
    <link rel="stylesheet" type="text/css" href="./static_content/index.css" />
  </head>
  <body>
    <div id="swagger-ui"></div>
    <script src="./static_content/swagger-ui-bundle.js" charset="UTF-8"></script>
    <script src="./static_content/swagger-ui-standalone-preset.js" charset="UTF-8"></script>
    <script src="./static_content/swagger-initializer.js" charset="UTF-8"></script>
  </body>
</html>
"""


# --- the middleware ------------------------------------------------------------------------
@dataclass
class _Held:
    """A 400 response being collected to be rewritten in the ``Refusal`` shape."""

    start: dict[str, Any]
    body: bytes = b""


async def _answer(send: Any, status: int, body: bytes, media: str = MEDIA_TYPE, close: bool = False) -> None:
    headers = [(b"content-type", media.encode()), (b"content-length", str(len(body)).encode())]
    if close:  # the rest of an unread body would be taken for the next request
        headers.append((b"connection", b"close"))
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body})


class RequestGuard:
    """Content type, size and duplicate keys checked before BentoML parses a decision request (see the module)."""

    def __init__(self, app: Any, api_paths: tuple[str, ...], limits: ServingParams, document: dict[str, Any]) -> None:
        self.app = app
        self.api_paths = frozenset(api_paths)
        self.limit = limits.max_body_bytes
        self.document = json.dumps(document, separators=(",", ":")).encode()

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:  # noqa: D102 - the ASGI interface
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return

        async def anonymous(message: dict[str, Any]) -> None:
            if message["type"] == "http.response.start":  # no Server header naming the framework
                message = {**message, "headers": [(k, v) for k, v in message.get("headers", []) if k.lower() != b"server"]}
            await send(message)

        path, method = scope["path"], scope["method"]
        if method in ("GET", "HEAD") and path == "/docs.json":  # (the server sends no body for a HEAD)
            await _answer(anonymous, 200, self.document)
        elif method in ("GET", "HEAD") and path == "/":
            await _answer(anonymous, 200, SWAGGER_PAGE, "text/html; charset=utf-8")
        elif method == "POST" and path in self.api_paths:
            await self._decision_request(scope, receive, anonymous)
        else:
            await self.app(scope, receive, anonymous)

    async def _decision_request(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        headers = {k.lower(): v.decode("latin-1") for k, v in scope.get("headers", [])}
        try:
            check_media_type(headers.get(b"content-type"))
            declared = headers.get(b"content-length")
            if declared is not None and not declared.strip().isdigit():
                raise Refused(400, "invalid_header", ["header", "content-length"], f"not a length: {declared!r}")
            if declared is not None and int(declared) > self.limit:
                raise Refused(413, "too_large", ["body"], f"{int(declared)} bytes is more than the limit of {self.limit}")
            body = await self._read(receive)
            if body is None:  # the client went away
                return
            check_json(body)
        except Refused as refused:
            # A refused body may be partly unread: the connection is closed after the answer.
            await _answer(send, refused.status, json.dumps(refused.body, separators=(",", ":")).encode(), close=True)
            return

        delivered = False

        async def replay() -> dict[str, Any]:
            nonlocal delivered
            if not delivered:
                delivered = True
                return {"type": "http.request", "body": body, "more_body": False}
            return await receive()  # after the body: a disconnect, when it comes

        held: _Held | None = None

        async def plain_400(message: dict[str, Any]) -> None:
            nonlocal held
            if message["type"] == "http.response.start" and message["status"] == 400:
                held = _Held(message)
                return
            if held is None or message["type"] != "http.response.body":
                await send(message)
                return
            held.body += message.get("body", b"")
            if message.get("more_body"):
                return
            rewritten = plain_refusal(held.body)
            kept = [(k, v) for k, v in held.start.get("headers", []) if k.lower() not in (b"content-length", b"content-type")]
            kept += [(b"content-type", MEDIA_TYPE.encode()), (b"content-length", str(len(rewritten)).encode())]
            await send({**held.start, "headers": kept})
            await send({"type": "http.response.body", "body": rewritten})

        await self.app(scope, replay, plain_400)

    async def _read(self, receive: Any) -> bytes | None:
        """The whole body, refused (413) as soon as it passes the limit; ``None`` if the client disconnected."""
        chunks, size = [], 0
        while True:
            message = await receive()
            if message["type"] == "http.disconnect":
                return None
            chunk = message.get("body", b"")
            size += len(chunk)
            if size > self.limit:
                raise Refused(413, "too_large", ["body"], f"the body passed the limit of {self.limit} bytes")
            chunks.append(chunk)
            if not message.get("more_body", False):
                return b"".join(chunks)
