"""The two fixes to the HTTP server (serving/server.py), checked in-process.

The p99 they fixed is a benchmark figure (``make bench``); these check the behaviours behind
it: a finished request leaves nothing alive behind its timeout timer, a slow one still gets
BentoML's 504, and a worker takes one waiting connection per wake-up.
"""

from __future__ import annotations

import asyncio
import contextvars
import gc
import socket
import weakref

from bentoml._internal.server.http.traffic import TimeoutMiddleware

from {{ cookiecutter.package }}.serving import server

server.apply()
REQUEST = contextvars.ContextVar("request")  # stands for the tracing span set outside the timeout


class RequestState:
    """What a request leaves in its context (span, headers, request object)."""


async def _receive() -> dict:
    return {"type": "http.request", "body": b""}


def _serve(middleware, n: int) -> tuple[int, list[dict]]:
    states: list[weakref.ref] = []
    sent: list[dict] = []

    async def send(message: dict) -> None:
        sent.append(message)

    async def one_request() -> None:
        state = RequestState()
        states.append(weakref.ref(state))
        REQUEST.set(state)
        await middleware({"type": "http", "path": "/decide"}, _receive, send)

    async def main() -> int:
        for _ in range(n):
            await asyncio.create_task(one_request())  # one task, one context, per request (as uvicorn does)
        await asyncio.sleep(0.01)  # the last request's callbacks run
        gc.collect()
        return sum(ref() is not None for ref in states)

    return asyncio.run(main()), sent


async def _fast_app(scope, receive, send) -> None:
    await send({"type": "http.response.start", "status": 200, "headers": []})
    await send({"type": "http.response.body", "body": b"{}"})


def test_a_finished_request_leaves_nothing_alive_behind_its_timer():
    alive, sent = _serve(TimeoutMiddleware(_fast_app, timeout=30), n=60)
    assert [m["status"] for m in sent if m["type"] == "http.response.start"] == [200] * 60
    # BentoML's own timer kept each request's context for the whole 30 s: 60 alive here.
    assert alive == 0


def test_a_request_slower_than_the_timeout_still_gets_504():
    async def slow_app(scope, receive, send) -> None:
        await asyncio.sleep(5)
        await _fast_app(scope, receive, send)

    _, sent = _serve(TimeoutMiddleware(slow_app, timeout=0.05), n=1)
    assert [m["status"] for m in sent if m["type"] == "http.response.start"] == [504]
    assert b"0.05 seconds" in b"".join(m.get("body", b"") for m in sent)


def test_a_worker_takes_one_waiting_connection_per_wake_up():
    async def main() -> int:
        loop = asyncio.get_running_loop()
        listener = socket.create_server(("127.0.0.1", 0), backlog=16)
        listener.setblocking(False)
        port = listener.getsockname()[1]
        clients = [socket.create_connection(("127.0.0.1", port)) for _ in range(4)]
        await asyncio.sleep(0.05)
        # What the event loop does when the shared socket is readable; asyncio's own loop
        # accepted up to `backlog` (here 100) connections at once.
        loop._accept_connection(asyncio.Protocol, listener, backlog=100)
        await asyncio.sleep(0.05)
        left = 0
        while True:
            try:
                conn, _ = listener.accept()
            except BlockingIOError:
                break
            left += 1
            conn.close()
        for c in clients:
            c.close()
        listener.close()
        return left

    assert asyncio.run(main()) == 3  # one taken, three left for the other workers


def test_the_fixes_are_applied_once_and_report_what_they_changed():
    assert server.apply() == ["timeout", "accept"]
    assert TimeoutMiddleware.__call__ is server.timeout_call
