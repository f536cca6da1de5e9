"""Adaptive micro-batching: concurrent requests share one model call.

Scoring one record through the scikit-learn pipeline costs about as much as scoring dozens
(measured in-process): the cost is pandas and validation overhead, not trees. So every request, single or batch, is
queued, and one worker thread takes *everything waiting* as one batch: under load, batches grow
with the queue; when idle, a lone request is scored at once with no added wait (unlike a timer
based batcher, there is no ``max_latency_ms`` to tune and no 503 on a cold burst).

The one worker thread is also this process's only writer of the audit log, so a response is
sent only after its records are written (other worker processes take their turn on the file
through its lock; see audit.py).

BentoML's own adaptive batching needs a separate batchable service reached over a socket; on a
2-core machine the extra process and hop cost more than they save, so batching stays in-process.
"""

from __future__ import annotations

import asyncio
import threading
from collections import deque
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Generic, TypeVar

T = TypeVar("T")
R = TypeVar("R")


class MicroBatcher(Generic[T, R]):
    """Feeds lists of items to ``process`` in batches of up to ``max_items``, one batch at a time.

    ``process`` takes a list of items and returns one result per item, in order. An exception
    in ``process`` fails every request of that batch (each caller sees it), never the others.
    """

    def __init__(self, process: Callable[[list[T]], list[R]], max_items: int = 1024) -> None:
        self.process = process
        self.max_items = max_items
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="decide")
        # Requests waiting for the worker, oldest first. An owned deque, not an asyncio.Queue:
        # taking a batch peeks at the next request's size, which a Queue offers no public way to do.
        self._waiting: deque[tuple[list[T], asyncio.Future[list[R]]]] = deque()
        self._arrived: asyncio.Condition | None = None  # created on the service's event loop
        self._worker: asyncio.Task[None] | None = None
        self._lock = threading.Lock()
        self.closed = False

    def _start(self) -> asyncio.Condition:
        with self._lock:
            if self._arrived is None:
                self._arrived = asyncio.Condition()
                self._worker = asyncio.get_running_loop().create_task(self._run(self._arrived))
            return self._arrived

    async def submit(self, items: list[T]) -> list[R]:
        """Queue ``items`` and wait for their results."""
        if self.closed:
            raise RuntimeError("the service is shutting down")
        arrived = self._arrived or self._start()
        future: asyncio.Future[list[R]] = asyncio.get_running_loop().create_future()
        async with arrived:
            self._waiting.append((items, future))
            arrived.notify()
        return await future

    def _take(self) -> list[tuple[list[T], asyncio.Future[list[R]]]]:
        """The first waiting request and everything behind it, up to ``max_items`` items."""
        batch = [self._waiting.popleft()]
        size = len(batch[0][0])
        # A request is never split across batches: the next one joins only if it fits whole.
        while self._waiting and size + len(self._waiting[0][0]) <= self.max_items:
            batch.append(self._waiting.popleft())
            size += len(batch[-1][0])
        return batch

    async def _run(self, arrived: asyncio.Condition) -> None:
        loop = asyncio.get_running_loop()
        while True:
            async with arrived:
                await arrived.wait_for(lambda: self._waiting)
                batch = self._take()
            flat = [item for items, _ in batch for item in items]
            try:
                results = await loop.run_in_executor(self._executor, self.process, flat)
            except Exception as exc:  # noqa: BLE001 - handed to every waiting request
                for _, future in batch:
                    if not future.done():
                        future.set_exception(exc)
                continue
            start = 0
            for items, future in batch:
                if not future.done():  # the client may have gone; its records are still logged
                    future.set_result(results[start : start + len(items)])
                start += len(items)

    def close(self) -> None:
        """Refuse new work and wait for the batch in progress to finish."""
        self.closed = True
        self._executor.shutdown(wait=True)
