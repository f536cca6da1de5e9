"""The micro-batcher (serving/batcher.py): what waits is scored together, in order, never split.

In-process with a stand-in model call, so each batch's contents are known exactly. The batcher
owns its queue; it reads no other object's private attributes (it used to peek at
``asyncio.Queue._queue``).
"""

from __future__ import annotations

import ast
import asyncio
import inspect
import threading

import pytest

from {{ cookiecutter.package }}.serving import batcher
from {{ cookiecutter.package }}.serving.batcher import MicroBatcher


def _held(first_batch_released: threading.Event, calls: list[list[int]]):
    """A model call that records each batch, holds the first until released, and answers 10x each item."""

    def process(items: list[int]) -> list[int]:
        calls.append(list(items))
        if len(calls) == 1:
            assert first_batch_released.wait(10)
        return [10 * i for i in items]

    return process


async def _submitted_behind_a_busy_batch(b: MicroBatcher, calls: list, release: threading.Event, requests: list[list[int]]):
    first = asyncio.create_task(b.submit([0]))
    while not calls:  # the first request is being scored: everything else now waits
        await asyncio.sleep(0.001)
    waiting = []
    for items in requests:
        waiting.append(asyncio.create_task(b.submit(items)))
        await asyncio.sleep(0)  # each request is queued before the next (submission order)
    release.set()
    return await asyncio.gather(first, *waiting)


def test_requests_waiting_behind_a_batch_are_scored_together_in_order_and_never_split():
    calls: list[list[int]] = []
    release = threading.Event()
    b = MicroBatcher(_held(release, calls), max_items=5)
    try:
        results = asyncio.run(_submitted_behind_a_busy_batch(b, calls, release, [[1, 2], [3], [4, 5, 6], [7]]))
    finally:
        b.close()
    # [1, 2] + [3] = 3 items; adding [4, 5, 6] would make 6 > 5, so it starts the next batch.
    assert calls == [[0], [1, 2, 3], [4, 5, 6, 7]]
    assert results == [[0], [10, 20], [30], [40, 50, 60], [70]]


def test_a_request_larger_than_a_batch_is_scored_whole_and_alone():
    calls: list[list[int]] = []
    release = threading.Event()
    b = MicroBatcher(_held(release, calls), max_items=3)
    try:
        results = asyncio.run(_submitted_behind_a_busy_batch(b, calls, release, [[1, 2, 3, 4], [5]]))
    finally:
        b.close()
    assert calls == [[0], [1, 2, 3, 4], [5]]
    assert results == [[0], [10, 20, 30, 40], [50]]


def test_a_lone_request_is_scored_at_once():
    calls: list[list[int]] = []
    release = threading.Event()
    release.set()
    b = MicroBatcher(_held(release, calls))

    async def main() -> list[int]:
        return await asyncio.wait_for(b.submit([7]), 5)  # no timer to wait for: answered as soon as scored

    try:
        assert asyncio.run(main()) == [70]
    finally:
        b.close()
    assert calls == [[7]]


def test_a_failing_batch_fails_its_requests_only():
    calls: list[list[int]] = []
    release = threading.Event()

    def process(items: list[int]) -> list[int]:
        calls.append(list(items))
        if len(calls) == 1:
            assert release.wait(10)
        if -1 in items:
            raise ValueError("bad item")
        return [10 * i for i in items]

    b = MicroBatcher(process, max_items=2)

    async def main():
        first = asyncio.create_task(b.submit([0]))
        while not calls:
            await asyncio.sleep(0.001)
        bad = asyncio.create_task(b.submit([1, -1]))  # a batch of its own: 2 items fill it
        await asyncio.sleep(0)
        good = asyncio.create_task(b.submit([2]))
        await asyncio.sleep(0)
        release.set()
        return await asyncio.gather(first, bad, good, return_exceptions=True)

    try:
        first, bad, good = asyncio.run(main())
    finally:
        b.close()
    assert calls == [[0], [1, -1], [2]]
    assert first == [0] and good == [20]
    assert isinstance(bad, ValueError) and str(bad) == "bad item"


def test_after_close_new_work_is_refused():
    b = MicroBatcher(lambda items: items)
    b.close()
    with pytest.raises(RuntimeError, match="shutting down"):
        asyncio.run(b.submit([1]))


def test_the_batcher_reads_no_private_attribute_of_another_object():
    tree = ast.parse(inspect.getsource(batcher))
    foreign = [
        f"line {node.lineno}: {ast.unparse(node)}"
        for node in ast.walk(tree)
        if isinstance(node, ast.Attribute)
        and node.attr.startswith("_")
        and not node.attr.startswith("__")
        and not (isinstance(node.value, ast.Name) and node.value.id == "self")
    ]
    assert foreign == []
