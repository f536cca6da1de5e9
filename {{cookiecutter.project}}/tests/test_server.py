"""The two fixes to the HTTP server (serving/server.py): what they do, and that they prove themselves.

The p99 they fixed is a benchmark figure (``make bench``); these check the behaviours behind
it (a finished request leaves nothing alive behind its timeout timer, a slow one still gets
BentoML's 504, a worker takes one waiting connection per wake-up), that a replacement which
breaks them, or an original which no longer needs them, is refused and the original left in
place, and that only the service's startup installs them: no test patches asyncio for the
session (each test here puts the originals back).
"""

from __future__ import annotations

import asyncio
import contextvars
import dataclasses
import gc
import logging
import socket
import subprocess
import sys
import weakref
from asyncio import selector_events

import pytest
from bentoml._internal.server.http.traffic import TimeoutMiddleware

from {{ cookiecutter.package }}.serving import server

from .pipeline_run import ROOT

ORIGINAL_CALL = TimeoutMiddleware.__dict__["__call__"]
ORIGINAL_ACCEPT = selector_events.BaseSelectorEventLoop.__dict__["_accept_connection"]
TIMEOUT, ACCEPT, LABELS, HEADERS = server.PATCHES
REQUEST = contextvars.ContextVar("request")  # stands for the tracing span set outside the timeout


@pytest.fixture(autouse=True)
def originals_restored():
    """Each test starts and ends with BentoML's and asyncio's own methods in place."""
    server.undo()
    yield
    server.undo()
    assert TimeoutMiddleware.__dict__["__call__"] is ORIGINAL_CALL
    assert selector_events.BaseSelectorEventLoop.__dict__["_accept_connection"] is ORIGINAL_ACCEPT


class RequestState:
    """What a request leaves in its context (span, headers, request object)."""


async def _receive() -> dict:
    return {"type": "http.request", "body": b""}


def _serve(call, middleware, n: int) -> tuple[int, list[dict]]:
    states: list[weakref.ref] = []
    sent: list[dict] = []

    async def send(message: dict) -> None:
        sent.append(message)

    async def one_request() -> None:
        state = RequestState()
        states.append(weakref.ref(state))
        REQUEST.set(state)
        await call(middleware, {"type": "http", "path": "/decide"}, _receive, send)

    async def main() -> int:
        # Another request's timer, due first, as on a busy server: the loop drops cancelled timers
        # only from the front of its schedule, so cancelling a timer that holds a context is not enough.
        other = asyncio.get_running_loop().call_later(20, lambda: None)
        for _ in range(n):
            await asyncio.create_task(one_request())  # one task, one context, per request (as uvicorn does)
        await asyncio.sleep(0.01)  # the last request's callbacks run
        gc.collect()
        other.cancel()
        return sum(ref() is not None for ref in states)

    return asyncio.run(main()), sent


async def _fast_app(scope, receive, send) -> None:
    await send({"type": "http.response.start", "status": 200, "headers": []})
    await send({"type": "http.response.body", "body": b"{}"})


async def _slow_app(scope, receive, send) -> None:
    await asyncio.sleep(5)
    await _fast_app(scope, receive, send)


def _statuses(sent: list[dict]) -> list[int]:
    return [m["status"] for m in sent if m["type"] == "http.response.start"]


# --- what the fixes do -----------------------------------------------------------------------
def test_a_finished_request_leaves_nothing_alive_behind_its_timer():
    middleware = TimeoutMiddleware(_fast_app, timeout=30)
    alive, sent = _serve(server.timeout_call, middleware, n=60)
    assert _statuses(sent) == [200] * 60
    assert alive == 0
    # BentoML's own timer keeps each request's context for the whole 30 s: what the fix is for.
    assert _serve(ORIGINAL_CALL, middleware, n=60)[0] == 60


def test_a_request_slower_than_the_timeout_still_gets_504():
    _, sent = _serve(server.timeout_call, TimeoutMiddleware(_slow_app, timeout=0.05), n=1)
    assert _statuses(sent) == [504]
    assert b"0.05 seconds" in b"".join(m.get("body", b"") for m in sent)


def _waiting_left_after_one_wake_up(accept) -> int:
    async def main() -> int:
        loop = asyncio.get_running_loop()
        listener = socket.create_server(("127.0.0.1", 0), backlog=16)
        listener.setblocking(False)
        port = listener.getsockname()[1]
        clients = [socket.create_connection(("127.0.0.1", port)) for _ in range(4)]
        await asyncio.sleep(0.05)
        # What the event loop does when the shared socket is readable.
        accept(loop, asyncio.Protocol, listener, backlog=100)
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

    return asyncio.run(main())


def test_a_worker_takes_one_waiting_connection_per_wake_up():
    assert _waiting_left_after_one_wake_up(server.accept_one(ORIGINAL_ACCEPT)) == 3  # three left for the other workers
    assert _waiting_left_after_one_wake_up(ORIGINAL_ACCEPT) == 0  # asyncio's own accept takes all of them


# --- proved where applied, applied where the server starts ------------------------------------
def test_every_fix_proves_itself_and_is_installed_then_undone():
    assert server.apply() == ["timeout", "accept", "route_labels", "header_timeout"]
    assert TimeoutMiddleware.__call__ is server.timeout_call
    assert selector_events.BaseSelectorEventLoop._accept_connection is not ORIGINAL_ACCEPT
    assert server.apply() == ["timeout", "accept", "route_labels", "header_timeout"]  # idempotent
    server.undo()
    assert TimeoutMiddleware.__dict__["__call__"] is ORIGINAL_CALL
    assert selector_events.BaseSelectorEventLoop.__dict__["_accept_connection"] is ORIGINAL_ACCEPT


async def _answers_500_when_slow(self, scope, receive, send) -> None:
    """Cancels its timer like the fix, but answers a slow request with a 500 instead of the 504."""
    try:
        await asyncio.wait_for(self.app(scope, receive, send), self.timeout)
    except TimeoutError:
        await send({"type": "http.response.start", "status": 500, "headers": []})
        await send({"type": "http.response.body", "body": b""})


@pytest.mark.parametrize(
    ("broken", "differed"),
    [
        (lambda original: original, "the replacement keeps a finished request's context alive"),
        (lambda original: _answers_500_when_slow, "a request slower than the timeout"),
    ],
    ids=["leaks-like-the-original", "no-504"],
)
def test_a_timeout_replacement_that_breaks_the_fix_is_refused_and_the_original_kept(broken, differed, caplog):
    patch = dataclasses.replace(TIMEOUT, replace=broken)
    with caplog.at_level(logging.WARNING, logger=server.__name__):
        assert server.install(patch) is False
    assert TimeoutMiddleware.__dict__["__call__"] is ORIGINAL_CALL
    assert "server fix 'timeout' not applied" in caplog.text and differed in caplog.text


def test_an_accept_replacement_that_takes_every_connection_is_refused(caplog):
    patch = dataclasses.replace(ACCEPT, replace=lambda original: original)
    with caplog.at_level(logging.WARNING, logger=server.__name__):
        assert server.install(patch) is False
    assert selector_events.BaseSelectorEventLoop.__dict__["_accept_connection"] is ORIGINAL_ACCEPT
    assert "the replacement took and served (4, 4) of 4 waiting connections, not 1" in caplog.text


def test_an_original_that_no_longer_behaves_as_assumed_is_left_alone(caplog):
    """What a signature check let through: same shape, other behaviour (here, already leak-free)."""

    class AlreadyFixed:
        __call__ = server.timeout_call

    patch = dataclasses.replace(
        TIMEOUT, target=lambda: (AlreadyFixed, "__call__"), replace=lambda original: _answers_500_when_slow
    )
    with caplog.at_level(logging.WARNING, logger=server.__name__):
        assert server.install(patch) is False
    assert AlreadyFixed.__dict__["__call__"] is server.timeout_call
    assert "BentoML's timer no longer keeps a finished request's context alive" in caplog.text


def test_on_versions_it_was_not_proved_on_a_fix_warns_and_is_proved_here(caplog):
    patch = dataclasses.replace(ACCEPT, proved_on={"python": ("3.0",)})
    with caplog.at_level(logging.WARNING, logger=server.__name__):
        assert server.install(patch) is True
    assert "server fix 'accept' was proved on {'python': ('3.0',)}" in caplog.text
    assert selector_events.BaseSelectorEventLoop.__dict__["_accept_connection"] is not ORIGINAL_ACCEPT


def test_the_versions_proved_on_include_the_locked_bentoml_and_uvicorn():
    assert TIMEOUT.versions()["bentoml"] in TIMEOUT.proved_on["bentoml"]
    assert LABELS.versions()["bentoml"] in LABELS.proved_on["bentoml"]
    assert HEADERS.versions()["uvicorn"] in HEADERS.proved_on["uvicorn"]


def test_a_label_or_header_fix_that_does_not_do_its_job_is_refused(caplog):
    # Replacements that change nothing: each proof must notice and leave the original alone.
    for patch in (LABELS, HEADERS):
        idle = dataclasses.replace(patch, replace=lambda original: original)
        with caplog.at_level(logging.WARNING, logger=server.__name__):
            assert server.install(idle) is False
        assert f"server fix {patch.name!r} not applied" in caplog.text


def test_importing_the_service_patches_nothing():
    check = (
        "import asyncio.selector_events as s\n"
        "from bentoml._internal.server.http import traffic as t\n"
        "from bentoml._internal.server.http import instruments as i\n"
        "from uvicorn.protocols.http import auto as u\n"
        "def methods():\n"
        "    return (s.BaseSelectorEventLoop._accept_connection, t.TimeoutMiddleware.__call__,\n"
        "            i.RunnerTrafficMetricsMiddleware.__call__, u.AutoHTTPProtocol.connection_made)\n"
        "before = methods()\n"
        "import {{ cookiecutter.package }}.serving.service\n"
        "assert methods() == before\n"
    )
    result = subprocess.run([sys.executable, "-c", check], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr[-2000:]


def test_the_service_installs_the_fixes_in_its_startup_hook():
    from {{ cookiecutter.package }}.serving.service import DecisionService

    hooks = [
        getattr(DecisionService.inner, name)
        for name in dir(DecisionService.inner)
        if getattr(getattr(DecisionService.inner, name), "__bentoml_startup_hook__", False)
    ]
    assert len(hooks) == 1
    hooks[0](None)  # the hook uses nothing of the service instance
    assert TimeoutMiddleware.__call__ is server.timeout_call
    assert selector_events.BaseSelectorEventLoop._accept_connection is not ORIGINAL_ACCEPT
