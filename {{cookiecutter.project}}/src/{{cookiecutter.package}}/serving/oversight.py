"""Human oversight of the service's decisions (EU AI Act Art. 14, GDPR Art. 22).

- :class:`DecisionIndex`: which decision ids this service's audit log holds, and their
  decisions, so ``POST /review`` answers 404 for an id it never gave.
- :func:`review_model`: the body of ``POST /review``: the final decision on a decision id, a
  reason code and the reviewer's pseudonym.
- :class:`StopSwitch`: the operators' switch that makes every answer ``refer`` until lifted.

Both kinds of action go into the audit chain as ``"event": "review"`` and ``"event":
"stop_switch"`` records (docs/serving.md, "Human oversight", lists their fields).
"""

from __future__ import annotations

import json
import os
import re
import sqlite3
import threading
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, create_model

from ..core.use_case import UseCase

INDEX_ENV = "AUDIT_INDEX_PATH"
STOP_ENV = "SERVICE_STOP_PATH"
OPERATORS_ENV = "OPERATOR_KEY_IDS"
# A pseudonym, never a name: letters then digits, e.g. "uw-0042" or "E123456" (docs/serving.md).
REVIEWER = r"^[A-Za-z]{1,8}-?[0-9]{3,12}$"
REASON_CODE = r"^[A-Z][A-Z0-9_]{1,39}$"
DECISION_ID = r"^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$"
# The reason code every answer carries while the stop switch is on.
STOPPED = "SERVICE_STOPPED"
STOPPED_TEXT = "Automated decisions are suspended by an operator; a person decides this case."


def index_path(log: Path) -> Path:
    """``$AUDIT_INDEX_PATH``, else ``<log>.index.sqlite`` beside the log."""
    return Path(os.environ.get(INDEX_ENV) or log.with_name(log.name + ".index.sqlite"))


def stop_path(log: Path) -> Path:
    """``$SERVICE_STOP_PATH``, else ``stop-switch.json`` beside the audit log (the volume that persists)."""
    return Path(os.environ.get(STOP_ENV) or log.with_name("stop-switch.json"))


def operators(environ: Mapping[str, str]) -> frozenset[str]:
    """API key ids with the operator role (``OPERATOR_KEY_IDS``, comma- or space-separated)."""
    return frozenset(re.split(r"[\s,]+", environ.get(OPERATORS_ENV, "").strip())) - {""}


class DecisionIndex:
    """Decision id -> (seq, decision) of the audit log's decision records, in SQLite beside the log.

    Built lazily: a lookup that misses reads the log from where the index last stopped to its
    end (the tail written since), so a review costs one indexed query plus the new records, never
    a read of the whole log, and the index survives restarts. The service's worker processes
    share it (SQLite's write lock serialises their catch-ups). A log replaced by a new file (a
    rotation) is read from its start; ids indexed from the old file stay known. The index is
    derived data: delete it and it is rebuilt from the log on the next miss.
    """

    def __init__(self, log: Path, path: Path) -> None:
        self.log, self.path = log, path
        self.lock = threading.Lock()
        path.parent.mkdir(parents=True, exist_ok=True)
        self.db = sqlite3.connect(path, timeout=30, check_same_thread=False, isolation_level=None)
        self.db.executescript(
            "CREATE TABLE IF NOT EXISTS decisions (decision_id TEXT PRIMARY KEY, seq INTEGER, decision TEXT);"
            # Where the last catch-up stopped: the log file (inode, device) and the byte offset in it.
            "CREATE TABLE IF NOT EXISTS progress"
            " (id INTEGER PRIMARY KEY CHECK (id = 0), ino INTEGER, dev INTEGER, offset INTEGER);"
        )

    def _find(self, decision_id: str) -> tuple[int, str] | None:
        row = self.db.execute("SELECT seq, decision FROM decisions WHERE decision_id = ?", (decision_id,)).fetchone()
        return None if row is None else (int(row[0]), str(row[1]))

    def lookup(self, decision_id: str) -> tuple[int, str] | None:
        """(seq, decision) of a decision this log recorded, or None."""
        with self.lock:
            found = self._find(decision_id)
            if found is None:
                self.catch_up()
                found = self._find(decision_id)
            return found

    def catch_up(self) -> int:
        """Index the decision records written since the last catch-up; returns how many."""
        try:
            fh = self.log.open("rb")
        except FileNotFoundError:
            return 0
        with fh:
            st = os.fstat(fh.fileno())
            self.db.execute("BEGIN IMMEDIATE")
            try:
                row = self.db.execute("SELECT ino, dev, offset FROM progress WHERE id = 0").fetchone()
                offset = row[2] if row and (row[0], row[1]) == (st.st_ino, st.st_dev) and row[2] <= st.st_size else 0
                fh.seek(offset)
                data = fh.read(st.st_size - offset)
                end = data.rfind(b"\n") + 1  # a line still being written waits for the next catch-up
                rows = []
                for line in data[:end].split(b"\n"):
                    if not line:
                        continue
                    record = json.loads(line)
                    if "event" not in record and "decision_id" in record:
                        rows.append((record["decision_id"], record["seq"], record["decision"]))
                self.db.executemany("INSERT OR IGNORE INTO decisions VALUES (?, ?, ?)", rows)
                self.db.execute("INSERT OR REPLACE INTO progress VALUES (0, ?, ?, ?)", (st.st_ino, st.st_dev, offset + end))
                self.db.execute("COMMIT")
            except BaseException:
                self.db.execute("ROLLBACK")
                raise
        return len(rows)

    def close(self) -> None:
        """Close the database."""
        self.db.close()


def review_model(facts: UseCase) -> type[BaseModel]:
    """The body of ``POST /review``: the final decision is one of the use case's two automated words."""
    final = Literal[facts.decisions["favourable"], facts.decisions["adverse"]]  # type: ignore[valid-type]
    return create_model(
        "Review",
        __config__=ConfigDict(extra="forbid", strict=True),
        __doc__="An underwriter's final decision on a decision the service made.",
        decision_id=(str, Field(pattern=DECISION_ID, description="The decision_id the service answered with")),
        decision=(final, Field(description="The final decision")),
        reason_code=(str, Field(pattern=REASON_CODE, description="Why, as a code (upper case, digits, _)")),
        reviewer=(str, Field(pattern=REVIEWER, description="The reviewer's pseudonym (letters then digits), never a name")),
    )


class Switch(BaseModel):
    """The body of ``POST /stop`` and ``POST /resume``: why, for the audit log."""

    model_config = ConfigDict(extra="forbid", strict=True)
    reason: str = Field(min_length=3, max_length=200, pattern=r"^[^\x00-\x1f\x7f]*$", description="Why (no names)")


class StopSwitch:
    """The stop switch's state, in a small JSON file every worker checks before each answer.

    A file on the audit log's volume, so the state is shared by the workers and survives a
    restart or a redeploy; read again only when its modification time, inode or size changes (one
    ``stat`` per request batch).
    """

    def __init__(self, path: Path) -> None:
        self.path = path
        self._seen: tuple[int, int, int] | None = None
        self._state: dict[str, Any] = {"stopped": False}

    def state(self) -> dict[str, Any]:
        """``{"stopped": bool, "reason": ..., "since": ..., "by": ...}`` as the file says now."""
        try:
            st = os.stat(self.path)
        except FileNotFoundError:
            self._seen, self._state = None, {"stopped": False}
            return self._state
        seen = (st.st_mtime_ns, st.st_ino, st.st_size)
        if seen != self._seen:
            try:
                state = json.loads(self.path.read_text(encoding="utf-8"))
                stopped = state.get("stopped") is True
            except (OSError, ValueError, AttributeError):
                # Unreadable: fail safe, every answer is referred until an operator sets it again.
                state, stopped = {"reason": f"{self.path} cannot be read"}, True
            self._seen, self._state = seen, {**state, "stopped": stopped}
        return self._state

    def stopped(self) -> bool:
        """Whether every answer is referred now."""
        return bool(self.state()["stopped"])

    def prepare(self, state: dict[str, Any]) -> Path:
        """Write the new state beside the file (not yet in force): :meth:`commit` puts it in force."""
        tmp = self.path.with_name(f".{self.path.name}.{os.getpid()}.tmp")
        tmp.parent.mkdir(parents=True, exist_ok=True)
        with tmp.open("w", encoding="utf-8") as fh:
            json.dump(state, fh, sort_keys=True)
            fh.flush()
            os.fsync(fh.fileno())
        return tmp

    def commit(self, tmp: Path) -> None:
        """Put a prepared state in force (an atomic rename)."""
        os.replace(tmp, self.path)


class ReadyReport:
    """ASGI middleware: ``/readyz`` says whether the stop switch is on (header ``X-Stop-Switch``, and its body).

    The status is left as the service gives it: a stopped service is still ready, because traffic
    must keep reaching it to get its ``refer`` answers; the probe's body and header tell an SRE why.
    """

    def __init__(self, app: Any, switch: StopSwitch) -> None:
        self.app, self.switch = app, switch

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:  # noqa: D102 - the ASGI interface
        if scope["type"] != "http" or scope["path"] != "/readyz":
            await self.app(scope, receive, send)
            return
        state = self.switch.state()
        flag = (b"x-stop-switch", b"on" if state["stopped"] else b"off")
        body = json.dumps({"ready": True, "stop_switch": "on", "since": state.get("since")}).encode()
        ok = False

        async def report(message: dict[str, Any]) -> None:
            nonlocal ok
            if message["type"] == "http.response.start":
                ok = message["status"] == 200 and state["stopped"]
                headers = message.get("headers", [])
                if ok:  # the body is replaced: its length and type too
                    headers = [(k, v) for k, v in headers if k.lower() not in (b"content-length", b"content-type")]
                    headers += [(b"content-length", str(len(body)).encode()), (b"content-type", b"application/json")]
                message = {**message, "headers": [*headers, flag]}
            elif message["type"] == "http.response.body" and ok:
                if message.get("more_body"):
                    return
                message = {**message, "body": body}
            await send(message)

        await self.app(scope, receive, report)
