"""Two fixes to the HTTP server the service runs in, proved and applied when a worker starts.

Both were found by tracing the p99 at 32 clients (``make bench``, which measures them again on
your machine), which they brought within the latency objective.

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

Both replace private methods of other people's code, so neither is trusted on its shape: before
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

# The versions each proof passed on when the fix was written (the lock pins BentoML; Python is
# the project's python_version). Elsewhere the proof still runs and decides; a warning says so.
PROVED_ON: dict[str, dict[str, tuple[str, ...]]] = {
    "timeout": {"bentoml": ("1.4.40",), "python": ("3.11",)},
    "accept": {"python": ("3.11",)},
}


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
