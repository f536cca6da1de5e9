"""Two fixes to the HTTP server the service runs in, applied in each worker process at import.

Both were found by tracing the p99 at 32 clients (``make bench``), which they brought within
the latency objective; the template's docs/benchmarks.md has the figures.

1. **A request's timer outlived it.** BentoML's ``TimeoutMiddleware`` (the ``traffic.timeout``
   guard) schedules a timer per request and never cancels it. The timer holds the request's
   context (tracing span, request, headers) until it fires, so under load thousands of
   finished requests stay alive for the whole timeout, and every full garbage collection walks
   them: pauses grew to the size of the whole p99 within seconds. Here the timer is cancelled when the
   response starts (the timeout still answers a slow request with BentoML's 504), and it
   holds no request context while it waits.
2. **One worker took every connection.** The workers share one listening socket, and asyncio
   accepts up to ``backlog`` (2,048) connections per wake-up, so the first worker to wake took
   all of a burst: many runs had every connection on one worker and the other idle. Here a
   worker accepts one connection per wake-up and goes back to its loop (nginx's default,
   ``multi_accept off``), so an idle worker gets the next one and a busy worker takes fewer.

Both patch private methods of pinned versions (BentoML 1.4, CPython 3.11's asyncio); each
checks the shape it expects and leaves the original alone, with a warning, if it changed. The
generated tests check both behaviours.
"""

from __future__ import annotations

import asyncio
import contextvars
import inspect
import logging
from asyncio import selector_events
from typing import Any

log = logging.getLogger(__name__)
_ORIGINAL_ACCEPT = selector_events.BaseSelectorEventLoop._accept_connection


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


def _accept_one(
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
    return _ORIGINAL_ACCEPT(self, protocol_factory, sock, sslcontext, server, 1, *args, **kwargs)


def apply() -> list[str]:
    """Apply both fixes (idempotent); returns the names of those applied."""
    applied = []
    from bentoml._internal.server.http import traffic

    middleware = traffic.TimeoutMiddleware
    if middleware.__call__ is timeout_call or (
        hasattr(middleware, "_set_timer_out")
        and list(inspect.signature(middleware.__init__).parameters) == ["self", "app", "timeout"]
    ):
        middleware.__call__ = timeout_call
        applied.append("timeout")
    else:
        log.warning("BentoML's TimeoutMiddleware changed shape; its per-request timer is left as it is")
    params = list(inspect.signature(_ORIGINAL_ACCEPT).parameters)
    if params[1:6] == ["protocol_factory", "sock", "sslcontext", "server", "backlog"]:
        selector_events.BaseSelectorEventLoop._accept_connection = _accept_one
        applied.append("accept")
    else:
        log.warning("asyncio's accept loop changed shape; connections may gather on one worker")
    return applied
