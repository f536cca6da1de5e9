"""Four fixes to the HTTP server the service runs in, proved and applied when a worker starts.

The first two were found by tracing the p99 at 32 clients (``make bench``, which measures them
again on your machine), which they brought within the latency objective; the last two by a
security review.

1. **A request's timer outlived it.** BentoML's ``TimeoutMiddleware`` (the ``traffic.timeout``
   guard) schedules a timer per request and never cancels it. The timer holds the request's
   context (tracing span, request, headers) until it fires, so under load thousands of
   finished requests stay alive for the whole timeout, and every full garbage collection walks
   them: pauses grew to the size of the whole p99 within seconds. Here the timer is cancelled
   when the response starts (the timeout still answers a slow request with BentoML's 504), and it
   holds no request context while it waits.
2. **One worker took every connection.** The workers share one listening socket, and asyncio
   accepts up to ``backlog`` (2,048) connections per wake-up, so the first worker to wake took
   all of a burst: many runs had every connection on one worker and the other idle. Here a
   worker accepts one connection per wake-up and goes back to its loop (nginx's default,
   ``multi_accept off``), so an idle worker gets the next one and a busy worker takes fewer.
   (It is asyncio's selector loop's, which the server runs on while uvloop is not installed.)
3. **Every unknown path added series to /metrics.** BentoML's request counters, histograms and
   gauges label ``endpoint`` with the raw path, so a scan of random paths grew ``/metrics``
   without bound (about 21 series per path). Here they are labelled with the route template the
   request matched (``guard.RouteLabels``), and every unknown path with one value, ``unmatched``;
   the application below still sees the real path.
4. **Slow headers held connections open.** uvicorn times out an idle kept-alive connection but
   not one that trickles its request line and headers (or sends nothing): a few hundred such
   clients hold every connection. Here a connection that has waited for a request's headers for
   a whole ``serving.header_timeout_s`` (params.yaml) is closed, within twice that time.

All four replace private methods of other people's code, so neither is trusted on its shape: before
it is installed, each :class:`Patch` runs the original and its replacement on a tiny real case
(a request through a throwaway app; a listening socket with waiting connections) and is
installed only if the original behaves as the fix assumes and the replacement behaves as the
fix promises. Otherwise the original stays, with a warning naming what differed. ``PROVED_ON``
records the versions the proofs passed on when the fixes were written; on other versions a
warning says so and the proof decides. The service applies them in its startup hook
(``service.py``), so importing this module, or the service, changes nothing.
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import functools
import gc
import json
import logging
import platform
import socket
import threading
import weakref
from collections.abc import Callable, Coroutine
from dataclasses import dataclass
from importlib.metadata import version
from typing import Any

log = logging.getLogger(__name__)

# The versions each proof passed on when the fix was written (the lock pins BentoML and uvicorn;
# Python is the project's python_version). Elsewhere the proof still runs and decides; a warning says so.
PROVED_ON: dict[str, dict[str, tuple[str, ...]]] = {
    "timeout": {"bentoml": ("1.4.40",), "python": ("3.11",)},
    "accept": {"python": ("3.11",)},
    "route_labels": {"bentoml": ("1.4.40",)},
    "header_timeout": {"uvicorn": ("0.54.0",)},
}
# Set by the service from params.yaml before it applies the fixes (``configure``).
SETTINGS = {"header_timeout_s": 10.0}


def configure(header_timeout_s: float) -> None:
    """The header-read timeout the ``header_timeout`` fix enforces."""
    SETTINGS["header_timeout_s"] = header_timeout_s


# --- 1. a request timeout that ends with the request ---------------------------------------
def _expire(started: asyncio.Future) -> None:
    if not started.done():
        started.set_exception(TimeoutError())


async def timeout_call(self: Any, scope: dict, receive: Any, send: Any) -> None:
    """``TimeoutMiddleware.__call__`` whose timer ends with the request (same 504 on a timeout)."""
    if scope["type"] not in ("http", "websocket"):
        await self.app(scope, receive, send)
        return
    from starlette.responses import JSONResponse

    loop = asyncio.get_running_loop()
    started = loop.create_future()  # done when the response starts, or failed by the timer
    # An empty context: the waiting timer must not keep the request's span and objects alive.
    timer = loop.call_later(self.timeout, _expire, started, context=contextvars.Context())

    async def on_send(message: dict) -> None:
        if not started.done():
            started.set_result(None)
        await send(message)

    task = asyncio.ensure_future(self.app(scope, receive, on_send))
    try:
        await started
    except TimeoutError:
        if task.cancel():
            body = {"error": f"Not able to process the request in {self.timeout} seconds"}
            await JSONResponse(body, status_code=504)(scope, receive, send)
        return
    finally:
        timer.cancel()
    await task


_REQUEST: contextvars.ContextVar[object] = contextvars.ContextVar("request")  # stands for the request's span


class _RequestState:
    """What a request leaves in its context (span, headers, request object)."""


async def _through(call: Callable, middleware: Any, state: _RequestState | None = None) -> list[dict]:
    """The ASGI messages ``call(middleware, ...)`` sends for one HTTP request."""
    sent: list[dict] = []

    async def receive() -> dict:
        return {"type": "http.request", "body": b""}

    async def send(message: dict) -> None:
        sent.append(message)

    if state is not None:
        _REQUEST.set(state)
    await call(middleware, {"type": "http", "method": "POST", "path": "/decide", "headers": []}, receive, send)
    return sent


async def _prove_timeout(original: Callable, replacement: Callable) -> list[str]:
    """What differs from the fix's assumptions and promises on one fast and one slow request."""
    from bentoml._internal.server.http.traffic import TimeoutMiddleware

    async def fast_app(scope: dict, receive: Any, send: Any) -> None:
        await send({"type": "http.response.start", "status": 200, "headers": [(b"content-type", b"application/json")]})
        await send({"type": "http.response.body", "body": b"{}"})

    cancelled: list[str] = []

    async def slow_app(scope: dict, receive: Any, send: Any) -> None:
        try:
            await asyncio.sleep(30)
        except asyncio.CancelledError:
            cancelled.append("yes")
            raise
        await fast_app(scope, receive, send)

    problems: list[str] = []
    outcomes = {}
    # Another request's timer, due first, as on a busy server: the loop drops cancelled timers
    # only from the front of its schedule, so a cancelled one that still held a context would too.
    other = asyncio.get_running_loop().call_later(20, lambda: None)
    for name, call in (("original", original), ("replacement", replacement)):
        state = _RequestState()
        alive = weakref.ref(state)
        # Its own task, so its own context, per request (as the server runs each request).
        fast = await asyncio.ensure_future(_through(call, TimeoutMiddleware(fast_app, timeout=30), state))
        del state
        gc.collect()  # only cycles could keep it: what remains is held by the timer's context
        slow = await asyncio.ensure_future(_through(call, TimeoutMiddleware(slow_app, timeout=0.02)))
        outcomes[name] = fast, alive() is not None, slow
    other.cancel()
    (fast_o, kept_o, slow_o), (fast_r, kept_r, slow_r) = outcomes["original"], outcomes["replacement"]
    if not kept_o:
        problems.append("BentoML's timer no longer keeps a finished request's context alive (the fix is not needed)")
    if kept_r:
        problems.append("the replacement keeps a finished request's context alive")
    if fast_r != fast_o or [m.get("status") for m in fast_r][:1] != [200]:
        problems.append(f"a fast request: original sent {fast_o}, replacement {fast_r}")
    expected = {"error": "Not able to process the request in 0.02 seconds"}
    status = [m.get("status") for m in slow_r if m["type"] == "http.response.start"]
    body = b"".join(m.get("body", b"") for m in slow_r)
    if slow_r != slow_o or status != [504] or json.loads(body or b"null") != expected:
        problems.append(f"a request slower than the timeout: original sent {slow_o}, replacement {slow_r}")
    if cancelled != ["yes", "yes"]:
        problems.append(f"the slow request's handler was cancelled {len(cancelled)} time(s), not once by each")
    return problems


def _timeout_target() -> tuple[type, str]:
    from bentoml._internal.server.http import traffic

    return traffic.TimeoutMiddleware, "__call__"


# --- 2. one connection per wake-up ---------------------------------------------------------
def accept_one(original: Callable) -> Callable:
    """The event loop's ``_accept_connection`` taking one waiting connection per wake-up, not up to ``backlog``."""

    def _accept_connection(
        self: Any,
        protocol_factory: Any,
        sock: Any,
        sslcontext: Any = None,
        server: Any = None,
        backlog: int = 100,
        *args: Any,
        **kwargs: Any,
    ) -> Any:
        # ``backlog`` here is how many connections to accept per wake-up (the socket's listen
        # queue was sized when it was bound and stays 2,048).
        return original(self, protocol_factory, sock, sslcontext, server, 1, *args, **kwargs)

    return _accept_connection


class _Counted(asyncio.Protocol):
    """Records each connection it is given."""

    def __init__(self, served: list[asyncio.BaseTransport]) -> None:
        self.served = served

    def connection_made(self, transport: asyncio.BaseTransport) -> None:  # noqa: D102 - asyncio's interface
        self.served.append(transport)


async def _prove_accept(original: Callable, replacement: Callable) -> list[str]:
    """How many of four waiting connections one wake-up takes, and serves, with each."""
    loop = asyncio.get_running_loop()
    taken = {}
    for name, call in (("original", original), ("replacement", replacement)):
        served: list[asyncio.BaseTransport] = []
        with socket.create_server(("127.0.0.1", 0), backlog=16) as listener:
            listener.setblocking(False)
            clients = [socket.create_connection(listener.getsockname()[:2], timeout=5) for _ in range(4)]
            try:
                await asyncio.sleep(0.01)  # the kernel completes the handshakes
                # What the loop runs when the socket is readable, with asyncio's default batch of 100.
                call(loop, functools.partial(_Counted, served), listener, None, None, 100)
                for _ in range(20):  # the accepted connections get their transports on the next iterations
                    await asyncio.sleep(0)
                left = 0
                while True:
                    try:
                        listener.accept()[0].close()
                    except BlockingIOError:
                        break
                    left += 1
            finally:
                for transport in served:
                    transport.close()
                for client in clients:
                    client.close()
            await asyncio.sleep(0)  # let the transports finish closing
        taken[name] = (len(served), 4 - left)
    problems = []
    if taken["original"] != (4, 4):
        problems.append(f"asyncio's accept took and served {taken['original']} of 4 waiting connections, not all 4")
    if taken["replacement"] != (1, 1):
        problems.append(f"the replacement took and served {taken['replacement']} of 4 waiting connections, not 1")
    return problems


def _accept_target() -> tuple[type, str]:
    from asyncio import selector_events

    return selector_events.BaseSelectorEventLoop, "_accept_connection"


# --- 3. metrics labelled by route, not by path ---------------------------------------------
class _Relabelled:
    """BentoML's metrics middleware as seen by one request: its own state, an inner app given the real path."""

    def __init__(self, middleware: Any, path: str) -> None:
        self._middleware, self._path = middleware, path

    def __getattr__(self, name: str) -> Any:
        return getattr(self._middleware, name)

    async def app(self, scope: dict, receive: Any, send: Any) -> None:
        await self._middleware.app({**scope, "path": self._path}, receive, send)


def labelled_by_route(original: Callable) -> Callable:
    """``RunnerTrafficMetricsMiddleware.__call__`` labelling ``endpoint`` with the route template."""

    async def __call__(self: Any, scope: dict, receive: Any, send: Any) -> None:
        from .guard import route_labels

        if scope["type"] != "http":
            await original(self, scope, receive, send)
            return
        label = route_labels(self)(scope)
        if label == scope["path"]:
            await original(self, scope, receive, send)
        else:  # it labels with scope["path"]: give it the label, and the app below the real path
            await original(_Relabelled(self, scope["path"]), {**scope, "path": label}, receive, send)

    return __call__


class _Metric:
    """Stands for a prometheus metric: records the labels it is given."""

    def __init__(self, seen: list[dict]) -> None:
        self.seen = seen

    def labels(self, **labels: Any) -> _Metric:
        self.seen.append(labels)
        return self

    def __getattr__(self, name: str) -> Any:  # inc, observe, set_to_current_time, ...
        return lambda *args, **kwargs: None

    def track_inprogress(self) -> Any:
        return contextlib.nullcontext()


async def _prove_route_labels(original: Callable, replacement: Callable) -> list[str]:
    """The endpoint labels, and the path the application sees, for a known and an unknown path."""
    from bentoml._internal.server.http.instruments import RunnerTrafficMetricsMiddleware
    from starlette.responses import PlainTextResponse
    from starlette.routing import Route, Router

    from .guard import UNMATCHED

    async def decide(request: Any) -> PlainTextResponse:
        return PlainTextResponse("ok")

    router = Router([Route("/decide", decide, methods=["POST"])])
    seen_paths: list[str] = []

    class Recorder:  # between the middleware and the router, as the service's own middlewares are
        app = router

        async def __call__(self, scope: dict, receive: Any, send: Any) -> None:
            seen_paths.append(scope["path"])
            await router(scope, receive, send)

    outcomes = {}
    for name, call in (("original", original), ("replacement", replacement)):
        labels: list[dict] = []
        middleware = RunnerTrafficMetricsMiddleware(Recorder())
        middleware._is_setup = True
        for metric in ("request_duration", "request_total", "request_in_progress", "last_request_timestamp"):
            setattr(middleware, f"metrics_{metric}", _Metric(labels))
        seen_paths.clear()
        statuses = []
        for path in ("/decide", "/no-such-path-7f3a"):
            sent = []

            async def send(message: dict, sent: list = sent) -> None:
                sent.append(message)

            async def receive() -> dict:
                return {"type": "http.request", "body": b""}

            scope = {"type": "http", "method": "POST", "path": path, "headers": [], "query_string": b"", "root_path": ""}
            await call(middleware, scope, receive, send)
            statuses.append(next(m["status"] for m in sent if m["type"] == "http.response.start"))
        endpoints = sorted({labels_["endpoint"] for labels_ in labels if "endpoint" in labels_})
        outcomes[name] = endpoints, list(seen_paths), statuses
    problems = []
    if outcomes["original"][0] != ["/decide", "/no-such-path-7f3a"]:
        problems.append(f"BentoML's metrics labelled endpoint {outcomes['original'][0]}, not by the raw path")
    if outcomes["replacement"][0] != sorted(["/decide", UNMATCHED]):
        problems.append(f"the replacement labelled endpoint {outcomes['replacement'][0]}, not by route")
    if outcomes["replacement"][1:] != outcomes["original"][1:] or outcomes["original"][2] != [200, 404]:
        problems.append(f"the application saw and answered {outcomes['replacement'][1:]}, not {outcomes['original'][1:]}")
    return problems


def _route_labels_target() -> tuple[type, str]:
    from bentoml._internal.server.http.instruments import RunnerTrafficMetricsMiddleware

    return RunnerTrafficMetricsMiddleware, "__call__"


# --- 4. a header-read timeout --------------------------------------------------------------
def _watch_headers(protocol: Any, timeout: float, waited_since: Any) -> None:
    """Close ``protocol``'s connection if it has waited for a request's headers since the last check."""
    import h11

    if protocol.transport is None or protocol.transport.is_closing():
        return
    waiting = protocol.conn.their_state is h11.IDLE
    # A weak reference: the check must not keep a finished request's cycle alive.
    current = weakref.ref(protocol.cycle) if protocol.cycle is not None else _NO_CYCLE
    if waiting and waited_since is not None and (waited_since is current or waited_since() is protocol.cycle):
        with contextlib.suppress(h11.LocalProtocolError):
            protocol.conn.send(h11.ConnectionClosed())
        protocol.transport.close()
        return
    protocol.loop.call_later(timeout, _watch_headers, protocol, timeout, current if waiting else None)


def _no_cycle() -> None:
    return None


_NO_CYCLE = _no_cycle  # "no request yet": calling it gives None, as a dead weak reference would


def header_deadline(original: Callable) -> Callable:
    """``H11Protocol.connection_made`` that also closes the connection when headers take too long."""

    def connection_made(self: Any, transport: Any) -> None:
        original(self, transport)
        timeout = SETTINGS["header_timeout_s"]
        self.loop.call_later(timeout, _watch_headers, self, timeout, None)

    return connection_made


async def _prove_header_timeout(original: Callable, replacement: Callable) -> list[str]:
    """Whether a connection that trickles its headers is closed, and a prompt request still answered."""
    import uvicorn
    from uvicorn.server import ServerState

    owner, _ = _header_target()
    loop = asyncio.get_running_loop()

    async def app(scope: dict, receive: Any, send: Any) -> None:
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": b"ok"})

    config = uvicorn.Config(app, lifespan="off", log_config=None, access_log=False, timeout_keep_alive=30)
    config.load()
    saved, SETTINGS["header_timeout_s"] = SETTINGS["header_timeout_s"], 0.05
    outcomes = {}
    try:
        for name, call in (("original", original), ("replacement", replacement)):
            probe = type("Probe", (owner,), {"connection_made": call})
            state = ServerState()
            listener = await loop.create_server(lambda: probe(config, state, {}, loop), "127.0.0.1", 0)  # noqa: B023
            port = listener.sockets[0].getsockname()[1]
            try:
                reader, writer = await asyncio.open_connection("127.0.0.1", port)
                writer.write(b"GET / HTTP/1.1\r\nHost: x\r\n")  # and the rest never comes
                try:
                    closed = await asyncio.wait_for(reader.read(), 0.4) == b""
                except TimeoutError:
                    closed = False
                writer.close()
                reader, writer = await asyncio.open_connection("127.0.0.1", port)
                writer.write(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
                answered = (await asyncio.wait_for(reader.readline(), 2)).startswith(b"HTTP/1.1 200")
                writer.close()
            finally:
                for connection in list(state.connections):
                    connection.transport.close()
                listener.close()
                await listener.wait_closed()
            outcomes[name] = closed, answered
    finally:
        SETTINGS["header_timeout_s"] = saved
    problems = []
    if outcomes["original"] != (False, True):
        problems.append(f"uvicorn's connection (closed, answered) was {outcomes['original']}, not (False, True)")
    if outcomes["replacement"] != (True, True):
        problems.append(f"with the replacement (closed, answered) was {outcomes['replacement']}, not (True, True)")
    return problems


def _header_target() -> tuple[type, str]:
    from uvicorn.protocols.http.auto import AutoHTTPProtocol  # what the server runs: h11 here

    return AutoHTTPProtocol, "connection_made"


# --- proving and installing ----------------------------------------------------------------
@dataclass(frozen=True)
class Patch:
    """A replacement for ``attribute`` of a class in someone else's code, and its proof."""

    name: str
    target: Callable[[], tuple[type, str]]  # the class and attribute (imported only when applied)
    replace: Callable[[Callable], Callable]  # the original -> its replacement
    prove: Callable[[Callable, Callable], Coroutine[Any, Any, list[str]]]  # (original, replacement) -> what differed
    proved_on: dict[str, tuple[str, ...]]

    def versions(self) -> dict[str, str]:
        """The running versions of what ``proved_on`` names."""
        return {
            package: ".".join(platform.python_version_tuple()[:2]) if package == "python" else version(package)
            for package in self.proved_on
        }


PATCHES = (
    Patch("timeout", _timeout_target, lambda original: timeout_call, _prove_timeout, PROVED_ON["timeout"]),
    Patch("accept", _accept_target, accept_one, _prove_accept, PROVED_ON["accept"]),
    Patch("route_labels", _route_labels_target, labelled_by_route, _prove_route_labels, PROVED_ON["route_labels"]),
    Patch("header_timeout", _header_target, header_deadline, _prove_header_timeout, PROVED_ON["header_timeout"]),
)
_APPLIED: dict[str, Callable] = {}  # name -> the original it replaced


def _run(proof: Coroutine[Any, Any, list[str]]) -> list[str]:
    """Runs a proof on a throwaway selector loop in its own thread (the caller's loop may be running)."""
    result: list[list[str]] = []
    failure: list[BaseException] = []

    def main() -> None:
        loop = asyncio.SelectorEventLoop()
        try:
            result.append(loop.run_until_complete(proof))
        except BaseException as exc:  # noqa: BLE001 - reported by the caller
            failure.append(exc)
        finally:
            loop.close()

    thread = threading.Thread(target=main, name="prove-server-fix")
    thread.start()
    thread.join()
    if failure:
        raise failure[0]
    return result[0]


def install(patch: Patch) -> bool:
    """Prove ``patch`` on a tiny real case, then install it; ``False`` (and a warning) if it did not prove out."""
    if patch.name in _APPLIED:
        return True
    try:
        owner, attribute = patch.target()
        original = owner.__dict__[attribute]
        replacement = patch.replace(original)
        running = patch.versions()
        others = {k: v for k, v in running.items() if v not in patch.proved_on[k]}
        if others:
            log.warning("server fix %r was proved on %s, this is %s: proving it here", patch.name, patch.proved_on, others)
        problems = _run(patch.prove(original, replacement))
    except Exception as exc:  # noqa: BLE001 - any surprise in someone else's internals: leave them alone
        problems = [f"the proof failed: {type(exc).__name__}: {exc}"]
    if problems:
        log.warning("server fix %r not applied, the original is left as it is: %s", patch.name, "; ".join(problems))
        return False
    setattr(owner, attribute, replacement)
    _APPLIED[patch.name] = original
    log.info("server fix %r proved and applied (%s)", patch.name, running)
    return True


def apply(patches: tuple[Patch, ...] = PATCHES) -> list[str]:
    """Prove and install each fix (idempotent); returns the names of those in place."""
    return [p.name for p in patches if install(p)]


def undo(patches: tuple[Patch, ...] = PATCHES) -> None:
    """Put the originals back (for tests: a process that serves keeps its fixes)."""
    for patch in patches:
        if patch.name in _APPLIED:
            owner, attribute = patch.target()
            setattr(owner, attribute, _APPLIED.pop(patch.name))
