"""The decision service: ``bentoml serve {{ cookiecutter.package }}.serving.service:DecisionService``.

``POST /decide`` takes one record (the contract's features as JSON fields), ``POST
/decide_batch`` takes ``{"records": [...]}``; both answer with a decision per record and
append it to the audit log. ``POST /review`` records a person's final decision on one, ``POST
/stop`` and ``/resume`` turn the operators' stop switch (``oversight.py``; docs/serving.md,
"Human oversight"). ``/livez``, ``/readyz`` and ``/metrics`` are BentoML's, and
``/metrics`` also carries the domain metrics listed in ``docs/metrics.md``. Every other request
needs an API key, and the service starts only with a deployment's secrets (``auth.py``).
"""

from __future__ import annotations

import os

# One thread per OpenMP pool: the service scores small batches, where more threads only
# contend for the CPU (under load, throughput fell many times over with the default). Set
# before scikit-learn is imported.
os.environ.setdefault("OMP_NUM_THREADS", "1")

import gc  # noqa: E402
import json  # noqa: E402
import logging  # noqa: E402
import sys  # noqa: E402
import time  # noqa: E402
from pathlib import Path  # noqa: E402
from typing import Any  # noqa: E402

import bentoml  # noqa: E402
from pydantic import ValidationError  # noqa: E402
from starlette.responses import Response  # noqa: E402

from .. import __version__  # noqa: E402
from ..core import config, use_case  # noqa: E402
from ..core.contract import load_contract  # noqa: E402
from ..core.decision import DecisionRule, Outcome  # noqa: E402
from ..core.errors import ParamsError  # noqa: E402
from ..core.reports import ModelMeta  # noqa: E402
from . import auth, guard, oversight, schema, server  # noqa: E402
from .audit import DEV_CHAIN_KEY, DEV_KEY, AuditLog, AuditUnavailable, KeyRing, audit_key, check_writable  # noqa: E402
from .batcher import MicroBatcher  # noqa: E402
from .decider import Decider  # noqa: E402

# Absolute, taken while BentoML imports the service from the bento's directory: its on_deployment
# hooks run later in the starting process, from wherever `bentoml serve` was started.
ROOT = Path(os.environ.get("SERVICE_ROOT", ".")).resolve()
CONTRACT = load_contract(ROOT / "contract.yaml")
Record = schema.record_model(CONTRACT, ModelMeta.read(ROOT / config.MODEL_META).explanations)
Batch = schema.batch_model(Record)
FACTS = use_case.load()
Review = oversight.review_model(FACTS)
# params.yaml's serving section (body size limit, header-read timeout, refer band), or the environment's overrides.
LIMITS = guard.settings(ROOT)
BAND = None if LIMITS.refer_band is None else (LIMITS.refer_band.lower, LIMITS.refer_band.upper)

DECISIONS = bentoml.metrics.Counter(name="decisions", documentation="Decisions by outcome", labelnames=["outcome"])
SCORES = bentoml.metrics.Histogram(
    name="decision_score",
    documentation="Scores of the decisions made",
    buckets=tuple(round(0.05 * i, 2) for i in range(1, 20)) + (1.0,),
)
REASONS = bentoml.metrics.Counter(name="reason_codes", documentation="Reason codes returned", labelnames=["code"])
REFUSED = bentoml.metrics.Counter(
    name="refused_requests", documentation="Requests refused with a 4xx", labelnames=["endpoint", "reason"]
)
BATCH = bentoml.metrics.Histogram(
    name="decision_batch_size",
    documentation="Records scored together in one model call (adaptive micro-batching)",
    buckets=(1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024, 2048),
)
# The key under which a record carries its caller (key id, request id) to the audit record;
# not a contract field name (those are identifiers), so it cannot collide with a feature.
CALLER = "@caller"
# The chain's length and head, as the audit log's checkpoints hold them: a second anchor, kept by
# Prometheus, for "the log ends at record N" (the head as the integer of its first 13 hex digits).
CHAIN_RECORDS = bentoml.metrics.Gauge(
    name="audit_chain_records", documentation="Records in the audit log's chain", multiprocess_mode="max"
)
CHAIN_HEAD = bentoml.metrics.Gauge(
    name="audit_chain_head",
    documentation="First 52 bits of the audit chain's head hash",
    multiprocess_mode="mostrecent",
)
# Human oversight (oversight.py): every review by the service's answer and the final decision, the
# reviews that changed an automated (not referred) decision, and the stop switch.
REVIEWS = bentoml.metrics.Counter(
    name="reviews",
    documentation="Reviews recorded, by the service's decision and the final one",
    labelnames=["original", "final"],
)
OVERRIDES = bentoml.metrics.Counter(
    name="overrides",
    documentation="Reviews that reversed an automated decision, by the service's decision and the final one",
    labelnames=["original", "final"],
)
STOPPED = bentoml.metrics.Gauge(
    name="stop_switch", documentation="1 while the stop switch refers every decision", multiprocess_mode="mostrecent"
)
REFUSAL = {400: "invalid_request", 404: "not_found", 405: "method_not_allowed", 413: "too_large", 415: "unsupported_media_type"}
REFUSAL[401] = "unauthorized"  # no valid API key (auth.py)
REFUSAL[403] = "forbidden"  # a key without the operator role on /stop or /resume


class _NoTracebackForRefusals(logging.Filter):
    """Drops BentoML's ERROR traceback for a request that failed validation.

    A refused request is the client's mistake, answered with a 400 and counted in
    ``refused_requests_total``; a traceback per bad request would flood the log and cost
    CPU on the hot path. Real exceptions are still logged.
    """

    def filter(self, record: logging.LogRecord) -> bool:  # noqa: D102 - logging's interface
        return not (record.exc_info and isinstance(record.exc_info[1], ValidationError))


logging.getLogger("bentoml._internal.server.http_app").addFilter(_NoTracebackForRefusals())


class CountRefusals:
    """Counts every 4xx answer: the request was refused, whatever refused it.

    Labelled by route template, not by path: a scan of random paths adds one series, not one per
    path. A plain ASGI middleware: Starlette's BaseHTTPMiddleware wraps each response in a stream
    and can stall when a response carries background tasks, as BentoML's do.
    """

    def __init__(self, app) -> None:
        self.app = app

    async def __call__(self, scope, receive, send) -> None:  # noqa: D102 - the ASGI interface
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return

        async def observe(message) -> None:
            if message["type"] == "http.response.start" and 400 <= message["status"] < 500:
                reason = REFUSAL.get(message["status"], str(message["status"]))
                REFUSED.labels(endpoint=guard.route_labels(self)(scope), reason=reason).inc()
            await send(message)

        await self.app(scope, receive, observe)


def _json(body: dict[str, Any]) -> Response:
    # The decisions are plain JSON types already; answering with the bytes skips BentoML's
    # output model, which re-validates the dict and derives a JSON schema on every response (a
    # visible share of the service's CPU under load). The OpenAPI document still shows the dict type.
    return Response(json.dumps(body, separators=(",", ":")).encode(), media_type="application/json")


def _error(status: int, message: str) -> Response:
    return Response(json.dumps({"error": message}).encode(), status_code=status, media_type="application/json")


def _now() -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime()) + f".{int(time.time() * 1000) % 1000:03d}Z"


def _unavailable(exc: AuditUnavailable) -> Response:
    # Nothing is answered without its record: 503, the audit store named, until it can be written.
    body = {"error": "audit_log_unavailable", "detail": f"{exc}; the decision was not made, retry later"}
    return Response(json.dumps(body).encode(), status_code=503, media_type="application/json", headers={"Retry-After": "5"})


@bentoml.service(
    name="decision_service",
    # One process per CPU the service may use (BentoML reads the container's CPU quota), or
    # SERVICE_WORKERS. The processes share the audit file and its chain (see audit.py); within
    # one, concurrent requests are batched (see batcher.py), not spread over threads.
    workers=int(os.environ["SERVICE_WORKERS"]) if os.environ.get("SERVICE_WORKERS") else "cpu_count",
    threads=1,
    logging={"access": {"enabled": False}},  # no per-request log line on the hot path; the audit log is the record
    traffic={"timeout": 10},
)
class DecisionService:
    """Decisions from the pipeline's model, explained and audited."""

    def __init__(self) -> None:
        self.decider = Decider(ROOT, BAND)
        self.audit = AuditLog(config.audit_log(), audit_key(), KeyRing.from_env(), config.audit_checkpoints())
        self.index = oversight.DecisionIndex(config.audit_log(), oversight.index_path(config.audit_log()))
        self.switch = oversight.StopSwitch(oversight.stop_path(config.audit_log()))
        self.operators = oversight.operators(os.environ)
        STOPPED.set(int(self.switch.stopped()))
        # A batch request is never split, and its records plus a queue's worth of single ones
        # are scored together: at most MAX_BATCH + 1024 records per model call.
        self.batcher = MicroBatcher(self._decide, max_items=schema.MAX_BATCH + 1024)
        # Requests that ask for feature explanations (tens of ms per record) queue on their own
        # thread, so they never hold up the batches of plain decisions.
        self.explaining = MicroBatcher(self._decide, max_items=schema.MAX_BATCH)
        # The model, pandas and BentoML leave many long-lived objects; without this every full
        # collection walks them all and stalls the event loop (it showed as the p99 tail).
        gc.freeze()

    def _decide(self, records: list[dict[str, Any]]) -> list[dict[str, Any]]:
        explain = [bool(r.pop(schema.EXPLAIN, False)) for r in records]  # a request option, not an input feature
        callers = [r.pop(CALLER, (None, "")) for r in records]  # who asked, and in which request (see auth.py)
        start = time.perf_counter()
        BATCH.observe(len(records))
        decisions = self.decider.decide(records, explain=explain)
        if self.switch.stopped():  # every answer is a person's to give (the operators' stop switch)
            stop = {"code": oversight.STOPPED, "text": oversight.STOPPED_TEXT, "feature": None}
            for d in decisions:
                d["decision"] = FACTS.word(Outcome.REFER)
                d["reasons"] = [stop, *d.get("reasons", [])[:3]]
        # Every record of a batch waited for the whole model call: that is its latency here.
        batch_ms = (time.perf_counter() - start) * 1000
        now = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime()) + f".{int(time.time() * 1000) % 1000:03d}Z"
        self.audit.append(
            {
                "timestamp": now,
                "decision_id": d["decision_id"],
                "model": d["model"],
                "input_hash": self.audit.input_hash(r),
                "score": d["score"],
                "decision": d["decision"],
                "reasons": [x["code"] for x in d.get("reasons", [])],
                **({"top_features": [x["feature"] for x in d["top_features"]]} if "top_features" in d else {}),
                "latency_ms": round(batch_ms, 3),
                "api_key_id": key_id,  # the caller (auth.py); "key_id" names the chain key (audit.py)
                "request_id": request_id,
            }
            for d, r, (key_id, request_id) in zip(decisions, records, callers, strict=True)
        )
        CHAIN_RECORDS.set(self.audit.seq)
        CHAIN_HEAD.set(int(self.audit.prev[:13], 16))
        for d in decisions:
            DECISIONS.labels(outcome=d["decision"]).inc()
            SCORES.observe(d["score"])
            for r in d.get("reasons", []):
                REASONS.labels(code=r["code"]).inc()
        return decisions

    @bentoml.api(input_spec=Record)
    async def decide(self, **record: Any) -> dict[str, Any]:
        """One decision."""
        batcher = self.explaining if record.get(schema.EXPLAIN) else self.batcher
        record[CALLER] = auth.CALLER.get()
        try:
            return _json((await batcher.submit([record]))[0])
        except AuditUnavailable as exc:
            return _unavailable(exc)

    @bentoml.api(input_spec=Batch)
    async def decide_batch(self, records: list[Any]) -> dict[str, Any]:
        """Up to ``MAX_BATCH`` decisions, in request order."""
        caller = auth.CALLER.get()
        dumped = [{**r.model_dump(), CALLER: caller} for r in records]
        batcher = self.explaining if any(d.get(schema.EXPLAIN) for d in dumped) else self.batcher
        try:
            return _json({"decisions": await batcher.submit(dumped)})
        except AuditUnavailable as exc:
            return _unavailable(exc)

    def _record(self, entry: dict[str, Any]) -> Response | None:
        """Append one oversight event with its caller; a 503 response if the log cannot take it."""
        key_id, request_id = auth.CALLER.get()
        try:
            self.audit.append([{"timestamp": _now(), **entry, "api_key_id": key_id, "request_id": request_id}])
        except AuditUnavailable as exc:
            return _unavailable(exc)
        CHAIN_RECORDS.set(self.audit.seq)
        CHAIN_HEAD.set(int(self.audit.prev[:13], 16))
        return None

    @bentoml.api(input_spec=Review)
    async def review(self, **body: Any) -> dict[str, Any]:
        """A person's final decision on a decision this service made (appended to the audit chain)."""
        found = self.index.lookup(body["decision_id"])
        if found is None:
            return _error(404, f"decision_id {body['decision_id']} is not in this service's audit log")
        seq, original = found
        entry = {
            "event": "review",
            "decision_id": body["decision_id"],
            "decision_seq": seq,
            "original_decision": original,
            "final_decision": body["decision"],
            "reason_code": body["reason_code"],
            "reviewer": body["reviewer"],
        }
        failed = self._record(entry)
        if failed is not None:
            return failed
        REVIEWS.labels(original=original, final=body["decision"]).inc()
        overridden = original != FACTS.word(Outcome.REFER) and original != body["decision"]
        if overridden:
            OVERRIDES.labels(original=original, final=body["decision"]).inc()
        return _json({k: entry[k] for k in ("decision_id", "original_decision", "final_decision")} | {"overridden": overridden})

    async def _turn(self, stopped: bool, reason: str) -> Response:
        key_id, _ = auth.CALLER.get()
        # Without API_KEYS_FILE (development mode only) there are no callers to tell apart.
        if key_id not in self.operators and not (key_id is None and auth.development(os.environ)):
            return _error(403, f"API key {key_id!r} has no operator role (${oversight.OPERATORS_ENV})")
        state = {"stopped": stopped, "reason": reason, "since": _now(), "by": key_id}
        tmp = self.switch.prepare(state)
        failed = self._record({"event": "stop_switch", "stopped": stopped, "reason": reason})
        if failed is not None:
            tmp.unlink(missing_ok=True)
            return failed
        self.switch.commit(tmp)  # in force only once the audit log holds it
        STOPPED.set(int(stopped))
        return _json({"stop_switch": "on" if stopped else "off", **state})

    @bentoml.api(input_spec=oversight.Switch)
    async def stop(self, reason: str) -> dict[str, Any]:
        """Operators: answer refer to every request from now on, until ``/resume``."""
        return await self._turn(True, reason)

    @bentoml.api(input_spec=oversight.Switch)
    async def resume(self, reason: str) -> dict[str, Any]:
        """Operators: lift the stop switch; the model decides again."""
        return await self._turn(False, reason)

    def __is_ready__(self) -> bool:
        # BentoML's /readyz asks this: not ready while the audit log cannot be written.
        return self.audit.writable()

    @bentoml.on_deployment
    def _check_audit_store() -> None:  # type: ignore[misc] - BentoML calls it once, before any worker
        # An unwritable log or checkpoint store, or a chain key equal to the input-hash key, stops
        # `bentoml serve` here with one line, instead of workers failing and restarting forever.
        try:
            KeyRing.from_env()
            check_writable(config.audit_log(), config.audit_checkpoints())
        except (AuditUnavailable, ValueError) as exc:
            print(f"decision service: {exc}", file=sys.stderr)
            sys.exit(2)

    @bentoml.on_deployment
    def _check_refer_band() -> None:  # type: ignore[misc] - BentoML calls it once, before any worker
        # A cost-tuned threshold is known only from the model's metadata: a band that misses it
        # stops the start here, in one line naming the key.
        try:
            DecisionRule(float(ModelMeta.read(ROOT / config.MODEL_META).threshold), BAND)
        except ParamsError as exc:
            print(f"decision service: {exc}", file=sys.stderr)
            sys.exit(2)

    @bentoml.on_deployment
    def _check_secrets() -> None:
        # Once, in the process that starts the workers: outside SERVICE_MODE=development, no
        # start without API keys or on a development audit key (one line naming the variable).
        auth.check_startup(os.environ, (DEV_KEY, DEV_CHAIN_KEY))

    @bentoml.on_startup
    def _fix_server(self) -> None:
        # A leak-free request timeout, fair accepts across workers, metrics labelled by route and
        # a header-read timeout (see server.py), each proved before it is installed. Here, in each
        # worker before it accepts connections, not at import: importing the service (the tests
        # do) leaves asyncio, uvicorn and BentoML alone.
        server.configure(header_timeout_s=LIMITS.header_timeout_s)
        server.apply()

    @bentoml.on_shutdown
    def _close_audit(self) -> None:
        # In-flight requests have been answered by now (the server drains them first); wait for
        # a batch still being written, then fsync the log.
        self.batcher.close()
        self.explaining.close()
        self.audit.close()
        self.index.close()


# In this order: CountRefusals sees the guard's 413 and 415 too.
DecisionService.add_asgi_middleware(CountRefusals)
# Inside CountRefusals, so a 401 is counted; before anything reads the body, so an unknown caller
# costs no parsing (the guard below parses). Each worker loads API_KEYS_FILE when it builds its app.
DecisionService.add_asgi_middleware(auth.Authenticate)
DecisionService.add_asgi_middleware(
    guard.RequestGuard,
    api_paths=("/decide", "/decide_batch", *guard.OVERSIGHT_PATHS),
    limits=LIMITS,
    document=guard.document("decision_service", __version__, Record, Batch, LIMITS, Review, oversight.Switch),
)
DecisionService.add_asgi_middleware(oversight.ReadyReport, switch=oversight.StopSwitch(oversight.stop_path(config.audit_log())))
