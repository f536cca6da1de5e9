"""How every stage runs: logging, the error policy, timing, progress and atomic writes.

The policy: a :class:`~.errors.UserError` (params, contract, data, keys, stage order) is
printed as one line and the stage exits 1; any other exception is a bug and keeps its
traceback. Each stage ends with one line saying whether it finished, how long it took and its
peak memory: ``stage <name> finished in N s, peak memory M MiB`` (benchmarks/pipeline.py
parses it).
"""

from __future__ import annotations

import json
import logging
import os
import resource
import secrets
import sys
import time
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, TypeVar

from . import config  # noqa: F401 - switches telemetry off before any tool is imported
from .errors import UserError

LOGGER = "{{ cookiecutter.package }}"
T = TypeVar("T")


def setup_logging() -> logging.Logger:
    """The package logger at ``LOG_LEVEL`` (default INFO); third-party libraries speak only on warnings."""
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    for chatty in ("great_expectations", "mlflow"):  # they log set-up details at INFO
        logging.getLogger(chatty).setLevel(logging.WARNING)
    logger = logging.getLogger(LOGGER)
    logger.setLevel(os.environ.get("LOG_LEVEL", "INFO"))
    return logger


def run_stage(main: Callable[[], int | None], name: str | None = None) -> int:
    """Run a stage's ``main()``: a user error becomes one line on stderr and exit status 1."""
    log = setup_logging()
    code = getattr(main, "__code__", None)
    name = name or (Path(code.co_filename).stem if code else "stage")
    start = time.perf_counter()
    try:
        status = main() or 0
    except UserError as exc:
        log.error("%s", exc)
        status = 1
    elapsed = time.perf_counter() - start
    log.info(
        "stage %s %s in %.1f s, peak memory %.0f MiB",
        name,
        "finished" if status == 0 else "FAILED",
        elapsed,
        peak_memory_mib(),
    )
    return status


def peak_memory_mib() -> float:
    """Peak resident memory of this process, or of its largest finished child if larger, in MiB.

    ``ru_maxrss`` is the high-water mark the kernel keeps (KiB on Linux), so it costs nothing
    to read and misses no short spike; a stage that spawns a tool is charged for the tool too.
    """
    own = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    children = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
    scale = 1 if sys.platform == "darwin" else 1024  # macOS reports bytes, Linux KiB
    return max(own, children) * scale / 2**20


def entry_point(main: Callable[[], int | None]) -> None:
    """``python -m <stage module>``: run the stage and exit with its status."""
    sys.exit(run_stage(main))


def progress(items: Iterable[T], total: int, what: str, every: float | None = None) -> Iterator[T]:
    """Yield ``items``, logging ``what: i/total (p%)`` at most every ``every`` seconds.

    Plain lines, no carriage returns, so CI logs stay readable; silent for work that ends
    within the first interval. The interval defaults to ``PROGRESS_EVERY`` (seconds, 5).
    """
    log = logging.getLogger(LOGGER)
    every = float(os.environ.get("PROGRESS_EVERY", "5")) if every is None else every
    start = last = time.perf_counter()
    done = 0
    for done, item in enumerate(items, start=1):
        yield item
        now = time.perf_counter()
        if now - last >= every:
            log.info("%s: %d/%d (%d%%), %.0f s", what, done, total, 100 * done // max(total, 1), now - start)
            last = now
    if last != start:
        log.info("%s: %d/%d done in %.1f s", what, done, total, time.perf_counter() - start)


@contextmanager
def atomic_path(path: Path) -> Iterator[Path]:
    """A temporary path beside ``path`` to write to; when the block ends, it replaces ``path`` in one step.

    Every file the package writes goes through here, so a reader (DVC, the service, a rerun)
    sees the old file or the new one, never half of one. If the block raises, the temporary file
    is removed and ``path`` is left as it was. The temporary name is hidden and ends in ``.tmp``
    (ignored by git), so writers that infer a format from the suffix must be told it.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{secrets.token_hex(4)}.tmp")  # in the same directory: os.replace is atomic there
    try:
        yield tmp
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def write_json(path: Path, data: Any) -> None:
    """Write JSON atomically so a failed stage never leaves a half-written file."""
    write_text(path, json.dumps(data, indent=2, sort_keys=True, default=str) + "\n")


def write_text(path: Path, text: str) -> None:
    """Write a text file atomically."""
    with atomic_path(path) as tmp:
        tmp.write_text(text, encoding="utf-8")


def write_parquet(df: Any, path: Path) -> None:
    """Write a DataFrame to Parquet atomically."""
    with atomic_path(path) as tmp:
        df.to_parquet(tmp, index=False)


def read_json(path: Path, stage: str) -> Any:
    """Read a JSON file another stage wrote; a missing or corrupt one names the stage to run."""
    from .errors import StageOrderError

    try:
        return json.loads(Path(path).read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise StageOrderError(f"{path} not found: run the {stage} stage first (dvc repro)") from None
    except json.JSONDecodeError as exc:
        raise StageOrderError(f"{path} is not valid JSON ({exc}): rerun the {stage} stage") from None
