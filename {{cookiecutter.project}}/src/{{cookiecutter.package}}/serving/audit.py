"""The decision audit log: append-only JSON lines, in a keyed hash chain, holding no raw input values.

Each record carries a keyed hash of the decision's input features (HMAC-SHA-256 with
``AUDIT_HMAC_KEY``, so the input can be matched later by whoever holds that key, but not read
from the log), the score, the decision, its reasons, the model identity and the latency;
``prev_hash`` is the hash of the record before, ``key_id`` names the chain key and ``hash`` is an
HMAC-SHA-256 with that key (``AUDIT_CHAIN_KEY``, a different secret) over everything else in the
record. Whoever can write the file but lacks the chain key can neither edit, insert, delete nor
reorder a record, nor append one, without breaking the chain at that record.

After every append the writer also signs a checkpoint (record count, head hash, time) into a
second store, ``AUDIT_CHECKPOINT_PATH``, kept on another volume: a log cut short, or rewritten
by someone holding the chain key, no longer matches the checkpoints. The verifier checks both:

    python -m {{ cookiecutter.package }}.serving.audit verify [LOG ...]

Each record is written whole or not at all: one ``os.write`` of the complete lines on a file
opened with ``O_APPEND`` (no Python buffer that could flush a fragment later); a short or failed
write (a full disk) is cut back to the previous length, and the decision is refused with
``AuditUnavailable`` until the log can be written again. The service's worker processes share
one file and one chain: each append holds an exclusive lock on the file (``flock``), checks that
the path still names the file it holds (else it follows the path, and a new file starts with a
record linking it to the last head of the replaced one) and continues the chain from the file's
last record. A crash in the middle of a write can still leave a torn last line: the next writer
moves it aside to ``<log>.truncated-<time>`` and continues from the last complete record.
"""

from __future__ import annotations

import argparse
import errno
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
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..core import config

KEY_ENV = "AUDIT_HMAC_KEY"
CHAIN_KEY_ENV = "AUDIT_CHAIN_KEY"
# Chain keys no longer used for writing, kept so older records still verify (whitespace-separated).
RETIRED_CHAIN_KEYS_ENV = "AUDIT_CHAIN_RETIRED_KEYS"
# Development only: real deployments set AUDIT_HMAC_KEY and AUDIT_CHAIN_KEY from their secret store.
DEV_KEY = b"DEVELOPMENT-ONLY-audit-key-never-in-production"
DEV_CHAIN_KEY = b"DEVELOPMENT-ONLY-audit-chain-key-never-in-production"
GENESIS = "0" * 64
# The first record of a file that replaced one removed or moved while the service ran.
CONTINUES = "continues_replaced_log"
# Free bytes a store needs before a service that failed to write it reports ready again.
HEADROOM = 1 << 20


class AuditUnavailable(RuntimeError):
    """The audit log (or its checkpoint store) cannot be written: no decision may be answered."""


def canonical(data: Any) -> bytes:
    """The one byte form that is hashed: sorted keys, no spaces, UTF-8."""
    return json.dumps(data, sort_keys=True, separators=(",", ":"), ensure_ascii=False, default=str).encode()


def _secret(env: str, default: bytes) -> bytes:
    value = os.environ.get(env, "")
    if value and len(value) < 32:
        raise ValueError(f"{env} must be at least 32 characters long (got {len(value)})")
    return value.encode() if value else default


def audit_key() -> bytes:
    """``AUDIT_HMAC_KEY`` (at least 32 characters), else the development key."""
    return _secret(KEY_ENV, DEV_KEY)


def key_id(key: bytes) -> str:
    """A short public name for a chain key, stored in each record it signs."""
    return hashlib.sha256(b"audit-chain-key-id\0" + key).hexdigest()[:16]


@dataclass(frozen=True)
class KeyRing:
    """The chain key that signs new records, and the retired ones that still verify old records."""

    current: bytes
    retired: tuple[bytes, ...] = ()
    by_id: dict[str, bytes] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "by_id", {key_id(k): k for k in (*self.retired, self.current)})

    @property
    def current_id(self) -> str:
        """The key id written into new records."""
        return key_id(self.current)

    @classmethod
    def from_env(cls) -> KeyRing:
        """``AUDIT_CHAIN_KEY`` (else the development key) and ``AUDIT_CHAIN_RETIRED_KEYS``; never the input-hash key."""
        current = _secret(CHAIN_KEY_ENV, DEV_CHAIN_KEY)
        retired = tuple(k.encode() for k in os.environ.get(RETIRED_CHAIN_KEYS_ENV, "").split())
        if current == audit_key() or audit_key() in retired:
            # One key for both would let whoever may match inputs (analysts, with AUDIT_HMAC_KEY) rewrite the chain.
            raise ValueError(f"{CHAIN_KEY_ENV} must differ from {KEY_ENV}: the chain needs its own secret")
        return cls(current, retired)


def record_hash(record: dict[str, Any], key: bytes) -> str:
    """HMAC-SHA-256 with the chain key over every field of the record except ``hash`` itself."""
    return hmac.new(key, canonical({k: v for k, v in record.items() if k != "hash"}), hashlib.sha256).hexdigest()


def checkpoint_signature(checkpoint: dict[str, Any], key: bytes) -> str:
    """HMAC of a checkpoint; the prefix keeps a checkpoint from ever passing as a record, or back."""
    rest = {k: v for k, v in checkpoint.items() if k != "sig"}
    return hmac.new(key, b"checkpoint\0" + canonical(rest), hashlib.sha256).hexdigest()


def check_writable(*paths: Path) -> None:
    """Open each path for appending (creating its directory): raise one line naming the first that fails."""
    for path in paths:
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            os.close(os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o640))
        except OSError as exc:
            raise AuditUnavailable(f"cannot write the audit store {path}: {exc.strerror or exc}") from None


class _AppendFile:
    """A file written only by whole ``os.write`` calls with ``O_APPEND``; reopened when its path moves."""

    def __init__(self, path: Path) -> None:
        self.path = path
        path.parent.mkdir(parents=True, exist_ok=True)
        self.fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o640)

    def replaced(self) -> bool:
        """True when the path no longer names the open file (removed, moved or swapped)."""
        try:
            st = os.stat(self.path)
        except FileNotFoundError:
            return True
        mine = os.fstat(self.fd)
        return (st.st_ino, st.st_dev) != (mine.st_ino, mine.st_dev)

    def reopen(self) -> None:
        """Open whatever the path names now, creating it (and its directory) if it is gone."""
        os.close(self.fd)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o640)

    def size(self) -> int:
        return os.fstat(self.fd).st_size

    def write_whole(self, data: bytes, before: int) -> None:
        """All of ``data`` or nothing: a short or failed write is cut back to ``before`` bytes."""
        try:
            written = os.write(self.fd, data)
            if written != len(data):
                raise OSError(errno.ENOSPC, f"short write ({written} of {len(data)} bytes)")
        except OSError as exc:
            self.cut(before)
            raise AuditUnavailable(f"audit store {self.path} cannot be written: {exc.strerror or exc}") from exc

    def cut(self, length: int) -> None:
        try:
            os.ftruncate(self.fd, length)
        except OSError:
            pass  # nothing more to do here: the torn tail is moved aside by the next writer

    def close(self) -> None:
        os.fsync(self.fd)
        os.close(self.fd)


class AuditLog:
    """A writer of the chained log and its checkpoints; several processes may write one file together."""

    TAIL = 1 << 20  # bytes read from the end to find the last record (records are < 1 KiB)

    def __init__(self, path: Path, key: bytes, keys: KeyRing | None = None, checkpoints: Path | None = None) -> None:
        self.path = path
        self.key = key
        self.keys = keys or KeyRing(DEV_CHAIN_KEY)
        self.lock = threading.Lock()
        self.file = _AppendFile(path)
        self.checkpoints = _AppendFile(checkpoints) if checkpoints else None
        self.failure: str | None = None  # why the last append failed, until one succeeds
        self.seq, self.prev, self._size = 0, GENESIS, -1
        with self._exclusive():
            self._sync()

    @contextmanager
    def _exclusive(self) -> Iterator[None]:
        """This thread alone, and this process alone among the writers of the file the path names."""
        with self.lock:
            while True:
                fcntl.flock(self.file.fd, fcntl.LOCK_EX)
                if not self.file.replaced():
                    break
                # The lock is on the file, not the path: follow the path to the file the others lock.
                fcntl.flock(self.file.fd, fcntl.LOCK_UN)
                self.file.reopen()
                self._size = -1
            try:
                yield
            finally:
                fcntl.flock(self.file.fd, fcntl.LOCK_UN)

    def _sync(self) -> None:
        """Continue the chain from the file, unless nobody else wrote since our last append."""
        size = self.file.size()
        if size == self._size:
            return
        if size == 0 and (self.seq > 0 or self._last_checkpoint()):
            self._link_replaced_file()
        else:
            self.seq, self.prev = self._recover()
        self._size = self.file.size()

    def _last_checkpoint(self) -> bool:
        """Take the head from the checkpoints when this process knows none (a start on an empty log)."""
        if self.checkpoints is None or self.seq > 0:
            return False
        last = _last_line(self.checkpoints.path)
        if last is None:
            return False
        self.seq, self.prev = int(last["records"]), str(last["head"])
        return self.seq > 0

    def _link_replaced_file(self) -> None:
        """A new, empty file where the chain had records: its first record names the last head."""
        now = _now()
        print(f"audit log {self.path} was removed or replaced: continuing the chain at record {self.seq}", file=sys.stderr)
        self._write([{"timestamp": now, "event": CONTINUES, "replaced_records": self.seq}])

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

    def _write(self, entries: Iterable[dict[str, Any]]) -> None:
        """Chain entries, write them in one piece, then sign a checkpoint of the new head."""
        seq, prev, lines = self.seq, self.prev, []
        key, kid = self.keys.current, self.keys.current_id
        for entry in entries:
            record = {**entry, "seq": seq, "prev_hash": prev, "key_id": kid}
            record["hash"] = record_hash(record, key)
            lines.append(json.dumps(record, sort_keys=True, separators=(",", ":"), default=str))
            seq, prev = seq + 1, record["hash"]
        before = self.file.size()
        self.file.write_whole(("\n".join(lines) + "\n").encode(), before)
        if self.checkpoints is not None:
            if self.checkpoints.replaced():
                self.checkpoints.reopen()
            point = {"timestamp": _now(), "log": self.path.name, "records": seq, "head": prev, "key_id": kid}
            point["sig"] = checkpoint_signature(point, key)
            try:
                self.checkpoints.write_whole((json.dumps(point, sort_keys=True) + "\n").encode(), self.checkpoints.size())
            except AuditUnavailable:
                self.file.cut(before)  # a record is kept only with its anchor
                raise
        self.seq, self.prev = seq, prev

    def append(self, entries: Iterable[dict[str, Any]]) -> None:
        """Chain and write entries: on return they are in the file, else ``AuditUnavailable`` is raised."""
        with self._exclusive():
            try:
                self._sync()
                self._write(entries)
            except AuditUnavailable as exc:
                self.failure = str(exc)
                self._size = -1  # re-read the file before the next append
                raise
            except OSError as exc:  # the log's directory is gone and cannot be made again, say
                self.failure = f"audit log {self.path} cannot be written: {exc.strerror or exc}"
                self._size = -1
                raise AuditUnavailable(self.failure) from exc
            self.failure = None
            self._size = self.file.size()

    def writable(self) -> bool:
        """Ready to record decisions: every store has room, and is writable again if an append failed.

        Asked by each worker's /readyz; the free space is the same for every worker, so all of them
        report not ready together, before or after the write that fails.
        """
        stores = [self.path.parent] + ([self.checkpoints.path.parent] if self.checkpoints else [])
        try:
            room = all(_free(d) >= HEADROOM for d in stores)
        except OSError:  # a store's directory is gone
            return False
        return room and (self.failure is None or all(os.access(d, os.W_OK) for d in stores))

    def close(self) -> None:
        """Fsync: the records survive the machine, not only the process."""
        with self.lock:
            self.file.close()
            if self.checkpoints is not None:
                self.checkpoints.close()


def _free(directory: Path) -> int:
    st = os.statvfs(directory)
    return st.f_bavail * st.f_frsize


def _now() -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime()) + f".{int(time.time() * 1000) % 1000:03d}Z"


def _last_line(path: Path) -> dict[str, Any] | None:
    """The last complete JSON line of a file, or None."""
    try:
        with path.open("rb") as fh:
            fh.seek(max(0, path.stat().st_size - AuditLog.TAIL))
            lines = [x for x in fh.read().split(b"\n")[:-1] if x]
    except FileNotFoundError:
        return None
    return json.loads(lines[-1]) if lines else None


@dataclass
class Report:
    """What ``verify`` checked, and the first problem if any."""

    records: int = 0
    first: int = 0  # seq of the first record checked
    key_ids: set[str] = field(default_factory=set)
    checkpoints: int = 0
    last_checkpoint: dict[str, Any] | None = None
    notes: list[str] = field(default_factory=list)
    problem: str | None = None


def load_checkpoints(path: Path, keys: KeyRing, report: Report) -> dict[int, dict[str, Any]]:
    """Signed checkpoints by record count; a forged or unreadable one is the report's problem."""
    points: dict[int, dict[str, Any]] = {}
    for n, raw in enumerate(path.read_bytes().split(b"\n")[:-1], start=1):
        try:
            point = json.loads(raw)
            key = keys.by_id[point["key_id"]]
        except (json.JSONDecodeError, KeyError, TypeError):
            report.problem = f"{path} line {n} is not a checkpoint signed by a key in the ring"
            return points
        if not hmac.compare_digest(str(point.get("sig")), checkpoint_signature(point, key)):
            report.problem = f"{path} line {n} is forged: its signature does not match"
            return points
        points[int(point["records"])] = point
    return points


def _check_record(record: dict[str, Any], expected: int, prev: str, keys: KeyRing) -> str | None:
    """Why one record breaks the chain, or None."""
    if record.get("seq") != expected:
        return f"has seq {record.get('seq')!r}, expected {expected}: a record was deleted, inserted or moved"
    if record.get("prev_hash") != prev:
        return "does not follow the record before it (prev_hash differs): deleted, inserted or reordered"
    key = keys.by_id.get(record.get("key_id"))
    if key is None:
        return f"names chain key {record.get('key_id')!r}, which is not in the key ring"
    if not hmac.compare_digest(str(record.get("hash")), record_hash(record, key)):
        return "was edited or forged: its content does not match its keyed hash (HMAC with the chain key)"
    return None


def verify_chain(logs: list[Path], keys: KeyRing, checkpoints: Path | None = None) -> Report:
    """Check the chain across ``logs`` (oldest first) and, if given, against the signed checkpoints."""
    report = Report()
    points = load_checkpoints(checkpoints, keys, report) if checkpoints and checkpoints.exists() else {}
    if report.problem:
        return report
    prev, expected, retired_from = GENESIS, 0, None
    order = {kid: i for i, kid in enumerate(keys.by_id)}  # retired keys first, in the order given
    for f, path in enumerate(logs):
        lines = path.read_bytes().split(b"\n")
        torn = lines[-1] != b""
        for n, raw in enumerate(lines if torn else lines[:-1]):
            report.records = expected - report.first
            where = f"{path} record {expected} (line {n + 1})"
            if torn and n == len(lines) - 1:
                report.problem = f"{where} is truncated (an interrupted write): the service moves it aside on restart"
                return report
            try:
                record = json.loads(raw)
            except json.JSONDecodeError:
                report.problem = f"{where} is not valid JSON"
                return report
            if isinstance(record, dict) and record.get("event"):  # a review, a stop switch: named as what it is
                about = f" on decision {record['decision_id']}" if "decision_id" in record else ""
                where = f"{where}, a {record['event']} record{about},"
            if n == 0 and record.get("event") == CONTINUES and f == 0 and isinstance(record.get("seq"), int):
                report.notes.append(
                    f"{path} continues a log replaced at record {record['seq']}: records 0-{record['seq'] - 1} "
                    "are in that file (pass it first to check them too)"
                )
                prev, expected, report.first = record.get("prev_hash"), record["seq"], record["seq"]
                points = {m: p for m, p in points.items() if m > expected}
            report.problem = _check_record(record, expected, prev, keys)
            if report.problem:
                report.problem = f"{where} {report.problem}"
                return report
            rank = order[record["key_id"]]
            if retired_from is not None and rank < retired_from:
                report.problem = f"{where} is signed by a key retired before it (key {record['key_id']})"
                return report
            retired_from = rank if retired_from is None else max(retired_from, rank)
            report.key_ids.add(record["key_id"])
            prev, expected = record["hash"], expected + 1
            point = points.get(expected)
            if point is not None:
                report.checkpoints += 1
                report.last_checkpoint = point
                if point["head"] != prev:
                    report.problem = (
                        f"{where} differs from the checkpoint at {point['timestamp']} (head {point['head'][:12]}, "
                        f"this record {prev[:12]}): the log was rewritten at or before record {expected - 1}"
                    )
                    return report
    report.records = expected - report.first
    beyond = [p for m, p in sorted(points.items()) if m > expected]
    if beyond:
        last = beyond[-1]
        report.problem = (
            f"log ends at record {expected - 1} but the checkpoint at {last['timestamp']} says {last['records']} records: "
            f"{last['records'] - expected} records were dropped from the end"
        )
    elif points and report.last_checkpoint and report.last_checkpoint["records"] < expected:
        report.notes.append(
            f"{expected - report.last_checkpoint['records']} records after the last checkpoint "
            "(a crash between a record and its checkpoint leaves one batch so)"
        )
    if report.notes and report.first > 0 and report.problem is None:
        report.problem = report.notes.pop(0)  # records the service wrote are not in the files given
    return report


def verify(path: Path, keys: KeyRing | None = None, checkpoints: Path | None = None) -> tuple[int, str | None]:
    """(records that verify, None) or (the seq where the first problem is, why) for one log file."""
    report = verify_chain([path], keys or KeyRing.from_env(), checkpoints)
    if report.problem is None:
        return report.records, None
    return report.first + report.records, report.problem


def main(argv: list[str] | None = None) -> int:
    """``verify [LOG ...]``: exit 0 if the chain and its checkpoints agree, 1 naming the first problem."""
    parser = argparse.ArgumentParser(prog=f"python -m {__package__}.audit", description="Verify a decision audit log.")
    parser.add_argument("command", choices=["verify"])
    default = f"default: ${config.AUDIT_LOG_ENV} or {config.AUDIT_LOG}; several files (oldest first) when the log was rotated"
    parser.add_argument("logs", nargs="*", type=Path, help=default)
    parser.add_argument(
        "--checkpoints",
        type=Path,
        default=None,
        help=f"default: ${config.AUDIT_CHECKPOINTS_ENV} or {config.AUDIT_CHECKPOINTS}",
    )
    args = parser.parse_args(argv)
    logs = args.logs or [config.audit_log()]
    checkpoints = args.checkpoints or config.audit_checkpoints()
    for path in logs:
        if not path.exists():
            print(f"{path}: no audit log here (the service writes it on its first decision)", file=sys.stderr)
            return 1
    try:
        keys = KeyRing.from_env()
    except ValueError as exc:
        print(f"audit verify: {exc}", file=sys.stderr)
        return 1
    ring = f"{', '.join(keys.by_id)} ({CHAIN_KEY_ENV}, {RETIRED_CHAIN_KEYS_ENV})"
    print(f"checking {', '.join(map(str, logs))} with chain keys {ring}")
    if not checkpoints.exists():
        print(f"{checkpoints}: no checkpoints here: only the chain is checked, a dropped tail cannot show", file=sys.stderr)
    report = verify_chain(logs, keys, checkpoints if checkpoints.exists() else None)
    for note in report.notes:
        print(f"note: {note}")
    if report.problem:
        print(f"BROKEN: {report.problem}", file=sys.stderr)
        return 1
    last = report.last_checkpoint
    print(
        f"OK: {report.records} records (seq {report.first}-{report.first + report.records - 1}), "
        f"chain intact, keyed by {', '.join(sorted(report.key_ids)) or 'no key'}"
    )
    if last:
        print(
            f"OK: {report.checkpoints} checkpoints from {checkpoints} match; the last, at {last['timestamp']}, "
            f"says {last['records']} records with head {last['head'][:16]}"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
