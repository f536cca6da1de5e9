"""The decision audit log: append-only JSON lines, hash-chained, holding no raw input values.

Each record carries a keyed hash of the decision's input features (HMAC-SHA-256, so the
input can be matched later by whoever holds the key, but not read from the log), the score,
the decision, its reasons, the model identity and the latency; ``prev_hash`` is the hash of
the record before and ``hash`` covers everything else in the record. Editing, inserting,
deleting or reordering a record breaks the chain at that record; the verifier names it:

    python -m {{ cookiecutter.package }}.serving.audit verify [logs/audit/decisions.jsonl]

Writes are serialised and flushed before the HTTP response leaves, so a decision answered
with 200 is in the file even if the service is stopped right after. The service's worker
processes share one file and one chain: each append holds an exclusive lock on the file
(``flock``) and continues the chain from the file's last record. A crash in the middle of a
write can leave a truncated last line: the next writer (or the next start) moves that fragment
aside to ``<log>.truncated-<time>`` and continues the chain from the last complete record.
"""

from __future__ import annotations

import argparse
import fcntl
import hashlib
import hmac
import json
import os
import sys
import threading
import time
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from ..core import config

KEY_ENV = "AUDIT_HMAC_KEY"
# Development only: real deployments set AUDIT_HMAC_KEY from their secret store.
DEV_KEY = b"DEVELOPMENT-ONLY-audit-key-never-in-production"
GENESIS = "0" * 64


def canonical(data: Any) -> bytes:
    """The one byte form that is hashed: sorted keys, no spaces, UTF-8."""
    return json.dumps(data, sort_keys=True, separators=(",", ":"), ensure_ascii=False, default=str).encode()


def record_hash(record: dict[str, Any]) -> str:
    """SHA-256 over every field of the record except ``hash`` itself."""
    return hashlib.sha256(canonical({k: v for k, v in record.items() if k != "hash"})).hexdigest()


def audit_key() -> bytes:
    """``AUDIT_HMAC_KEY`` (at least 32 characters), else the development key."""
    key = os.environ.get(KEY_ENV, "")
    if key and len(key) < 32:
        raise ValueError(f"{KEY_ENV} must be at least 32 characters long (got {len(key)})")
    return key.encode() if key else DEV_KEY


class AuditLog:
    """A writer of the chained log; several processes may write one file together."""

    TAIL = 1 << 20  # bytes read from the end to find the last record (records are < 1 KiB)

    def __init__(self, path: Path, key: bytes) -> None:
        self.path = path
        self.key = key
        self.lock = threading.Lock()
        path.parent.mkdir(parents=True, exist_ok=True)
        self.file = path.open("a", encoding="utf-8")
        self.seq, self.prev, self._size = 0, GENESIS, -1
        with self._exclusive():
            self._sync()

    @contextmanager
    def _exclusive(self) -> Iterator[None]:
        """This thread alone, and this process alone among the file's writers."""
        with self.lock:
            fcntl.flock(self.file.fileno(), fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(self.file.fileno(), fcntl.LOCK_UN)

    def _sync(self) -> None:
        """Continue the chain from the file, unless nobody else wrote since our last append."""
        if os.fstat(self.file.fileno()).st_size != self._size:
            self.seq, self.prev = self._recover()
            self._size = os.fstat(self.file.fileno()).st_size

    def _recover(self) -> tuple[int, str]:
        """Next sequence number and last hash; a torn last line is moved aside, never kept."""
        size = self.path.stat().st_size
        if size == 0:
            return 0, GENESIS
        with self.path.open("r+b") as fh:
            start = max(0, size - self.TAIL)
            fh.seek(start)
            data = fh.read()
            end = data.rfind(b"\n") + 1
            if end < len(data):
                aside = self.path.with_name(f"{self.path.name}.truncated-{time.strftime('%Y%m%dT%H%M%S')}")
                aside.write_bytes(data[end:])
                fh.truncate(start + end)
                data = data[:end]
            if not data:
                return 0, GENESIS
            if start > 0 and b"\n" not in data[: end - 1]:  # a last record longer than the tail read
                fh.seek(0)
                data = fh.read(start + end)
        last = json.loads(data[: len(data) - 1].rsplit(b"\n", 1)[-1])
        return int(last["seq"]) + 1, str(last["hash"])

    def input_hash(self, features: dict[str, Any]) -> str:
        """Keyed hash of the input features: matchable with the key, unreadable without it."""
        return hmac.new(self.key, canonical(features), hashlib.sha256).hexdigest()

    def append(self, entries: Iterable[dict[str, Any]]) -> None:
        """Chain and write entries, then flush: on return they are in the file."""
        with self._exclusive():
            self._sync()
            lines = []
            for entry in entries:
                record = {**entry, "seq": self.seq, "prev_hash": self.prev}
                record["hash"] = record_hash(record)
                lines.append(json.dumps(record, sort_keys=True, separators=(",", ":"), default=str))
                self.seq, self.prev = self.seq + 1, record["hash"]
            self.file.write("\n".join(lines) + "\n")
            self.file.flush()
            self._size = os.fstat(self.file.fileno()).st_size

    def close(self) -> None:
        """Flush and fsync: the records survive the machine, not only the process."""
        with self.lock:
            self.file.flush()
            os.fsync(self.file.fileno())
            self.file.close()


def verify(path: Path) -> tuple[int, str | None]:
    """(records that verify, None) or (index of the first broken record, why)."""
    prev, expected_seq = GENESIS, 0
    with path.open("rb") as fh:
        data = fh.read()
    lines = data.split(b"\n")
    torn = lines[-1] != b""
    for n, raw in enumerate(lines[:-1] if not torn else lines):
        where = f"record {n} (line {n + 1})"
        if torn and n == len(lines) - 1:
            return n, f"{where} is truncated (an interrupted write): the service moves it aside on restart"
        try:
            record = json.loads(raw)
        except json.JSONDecodeError:
            return n, f"{where} is not valid JSON"
        if record.get("seq") != expected_seq:
            return n, f"{where} has seq {record.get('seq')!r}, expected {expected_seq}: a record was deleted, inserted or moved"
        if record.get("prev_hash") != prev:
            return n, f"{where} does not follow the record before it (prev_hash differs): deleted, inserted or reordered"
        if record.get("hash") != record_hash(record):
            return n, f"{where} was edited: its content does not match its hash"
        prev, expected_seq = record["hash"], expected_seq + 1
    return expected_seq, None


def main(argv: list[str] | None = None) -> int:
    """``verify [PATH]``: exit 0 if the chain is intact, 1 naming the first broken record."""
    parser = argparse.ArgumentParser(prog=f"python -m {__package__}.audit", description="Verify a decision audit log.")
    parser.add_argument("command", choices=["verify"])
    default = f"default: ${config.AUDIT_LOG_ENV} or {config.AUDIT_LOG}"
    parser.add_argument("path", nargs="?", type=Path, default=None, help=default)
    args = parser.parse_args(argv)
    path = args.path or config.audit_log()
    if not path.exists():
        print(f"{path}: no audit log here (the service writes it on its first decision)", file=sys.stderr)
        return 1
    count, problem = verify(path)
    if problem:
        print(f"{path}: BROKEN at {problem}", file=sys.stderr)
        return 1
    print(f"{path}: OK, {count} records, chain intact")
    return 0


if __name__ == "__main__":
    sys.exit(main())
