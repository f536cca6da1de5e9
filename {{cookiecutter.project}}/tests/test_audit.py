"""The audit log under attack and under a failing disk, with the real service where it matters.

One `bentoml serve` for the module. When this runs as root and `unshare` works (here, and in
act's host mode), the service runs in a private mount namespace with its audit log on a 4 MiB
tmpfs of its own, so the full disk below is a real one (the kernel's ENOSPC and short write);
the test reads that filesystem through ``/proc/<pid>/root``. The checkpoints stay on the
ordinary disk: a second store on another volume, as in a deployment. Without root the
service runs on the ordinary disk and only the full-disk test is skipped; the short write is
also checked in-process on every machine, by failing ``os.write`` on the log's descriptor.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import signal
import subprocess
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import pytest

from {{ cookiecutter.package }}.serving import audit

from .pipeline_run import pipeline_run
from .test_service import AUTH, SERVICE, Server, features, free_port, keys_file

CHAIN_KEY = "chain-key-for-the-audit-tests-0123456789"
INPUT_KEY = "input-key-for-the-audit-tests-0123456789"
KEYS = {"AUDIT_CHAIN_KEY": CHAIN_KEY, "AUDIT_HMAC_KEY": INPUT_KEY, "SERVICE_MODE": "development"}


def tmpfs_works() -> bool:
    if os.geteuid() != 0 or not shutil.which("unshare"):
        return False
    probe = subprocess.run(
        ["unshare", "-m", "--propagation", "private", "mount", "-t", "tmpfs", "tmpfs", "/mnt"], capture_output=True
    )
    return probe.returncode == 0


TMPFS = tmpfs_works()


class Service:
    """The module's server, and the paths of its log as the service sees them and as we can read them."""

    def __init__(self, run, base: Path) -> None:
        self.dir = base / "log-volume"
        self.dir.mkdir()
        log = self.dir / "decisions.jsonl"
        wrap: tuple[str, ...] = ()
        if TMPFS:
            # `exec` keeps the server's pid, so /proc/<pid>/root shows its mount namespace.
            mount = f'mount -t tmpfs -o size=4m tmpfs {self.dir} && exec "$0" "$@"'
            wrap = ("unshare", "-m", "--propagation", "private", "sh", "-c", mount)
        # The keys file beside the volume: the tmpfs mounted over it would hide one written inside.
        keys = keys_file(base / "api-keys")
        env = {**KEYS, "API_KEYS_FILE": str(keys), "AUDIT_CHECKPOINT_PATH": str(base / "checkpoints.jsonl")}
        self.server = Server(run.dir, log, env=env, wrap=wrap)
        self.server.checkpoints = base / "checkpoints.jsonl"
        self.url = self.server.url

    def seen(self, path: Path) -> Path:
        """A path inside the server's mount namespace, as this process can open it."""
        return Path(f"/proc/{self.server.proc.pid}/root{path}") if TMPFS else path

    @property
    def log(self) -> Path:
        return self.seen(self.server.log)


@pytest.fixture(scope="module")
def service(tmp_path_factory):
    svc = Service(pipeline_run(), tmp_path_factory.mktemp("audit-service"))
    yield svc
    svc.server.stop()


@pytest.fixture(scope="module")
def client(service):
    with httpx.Client(base_url=service.url, timeout=30, headers=AUTH) as c:
        yield c


@pytest.fixture(scope="module")
def bodies():
    import pandas as pd

    return features(pd.read_parquet(pipeline_run().path("data/prepared/test.parquet")).head(40))


def verify_cli(monkeypatch, capsys, *logs: Path, checkpoints: Path, env: dict[str, str] | None = None) -> tuple[int, str]:
    """`make audit-verify`'s command, in-process: its exit code and everything it printed."""
    for name, value in {**KEYS, "AUDIT_CHECKPOINT_PATH": str(checkpoints), **(env or {})}.items():
        monkeypatch.setenv(name, value)
    capsys.readouterr()
    code = audit.main(["verify", *map(str, logs)])
    out = capsys.readouterr()
    return code, out.out + out.err


def lines_of(path: Path) -> list[dict]:
    return [json.loads(x) for x in path.read_text(encoding="utf-8").splitlines()]


def write_lines(path: Path, records: list[dict]) -> Path:
    path.write_text("".join(json.dumps(r, sort_keys=True, separators=(",", ":")) + "\n" for r in records), encoding="utf-8")
    return path


def unkeyed(record: dict) -> str:
    """The hash an attacker without the chain key can compute: SHA-256 of the record's content."""
    return hashlib.sha256(audit.canonical({k: v for k, v in record.items() if k != "hash"})).hexdigest()


def rechain(records: list[dict], start: int, sign) -> list[dict]:
    for i in range(start, len(records)):
        records[i]["prev_hash"] = records[i - 1]["hash"] if i else audit.GENESIS
        records[i]["hash"] = sign(records[i])
    return records


# --- 7: the chain is keyed and anchored outside the file ---------------------------------
@pytest.mark.parametrize("attack", ["dropped_tail", "rewritten_without_key", "rewritten_with_key", "forged_append"])
def test_verify_names_a_dropped_tail_a_rewrite_and_a_forged_record(
    client, service, bodies, tmp_path, monkeypatch, capsys, attack
):
    for i in range(4):
        assert client.post("/decide_batch", json={"records": bodies[i * 5 : i * 5 + 5]}).status_code == 200
    records = lines_of(service.log)
    checkpoints = tmp_path / "checkpoints.jsonl"
    shutil.copy(service.server.checkpoints, checkpoints)
    code, out = verify_cli(monkeypatch, capsys, write_lines(tmp_path / "intact.jsonl", records), checkpoints=checkpoints)
    assert code == 0 and f"OK: {len(records)} records" in out and "checkpoints from" in out, out
    n = len(records)
    if attack == "dropped_tail":
        kept = records[:-3]
        expected = f"log ends at record {n - 4} but the checkpoint at"
        expected_also = f"says {n} records"
    elif attack == "forged_append":
        forged = {**records[-1], "decision_id": "forged", "seq": n, "prev_hash": records[-1]["hash"]}
        forged["hash"] = unkeyed(forged)
        kept = [*records, forged]
        expected, expected_also = f"record {n} ", "edited or forged"
    else:
        flipped = records[n // 2]
        flipped["decision"] = "approve" if flipped["decision"] != "approve" else "decline"
        if attack == "rewritten_without_key":
            kept = rechain(records, n // 2, unkeyed)
            expected, expected_also = f"record {n // 2} ", "edited or forged"
        else:  # by someone holding the chain key: only the checkpoints can show it
            kept = rechain(records, n // 2, lambda r: audit.record_hash(r, CHAIN_KEY.encode()))
            expected, expected_also = "differs from the checkpoint", "rewritten at or before record"
    code, out = verify_cli(monkeypatch, capsys, write_lines(tmp_path / f"{attack}.jsonl", kept), checkpoints=checkpoints)
    assert code == 1 and "BROKEN" in out and expected in out and expected_also in out, out


def test_chain_keys_rotate_by_key_id_and_never_go_back(tmp_path):
    old, new = b"o" * 32, b"n" * 32
    log = tmp_path / "decisions.jsonl"
    first = audit.AuditLog(log, b"k" * 32, audit.KeyRing(old))
    first.append([{"decision_id": "a"}, {"decision_id": "b"}])
    first.close()
    second = audit.AuditLog(log, b"k" * 32, audit.KeyRing(new, (old,)))
    second.append([{"decision_id": "c"}])
    second.close()
    assert [r["key_id"] for r in lines_of(log)] == [audit.key_id(old)] * 2 + [audit.key_id(new)]
    assert audit.verify(log, audit.KeyRing(new, (old,))) == (3, None)
    count, problem = audit.verify(log, audit.KeyRing(new))
    assert count == 0 and "not in the key ring" in problem
    # A leaked retired key cannot extend the chain after the rotation.
    back = audit.AuditLog(log, b"k" * 32, audit.KeyRing(old))
    back.append([{"decision_id": "d"}])
    back.close()
    count, problem = audit.verify(log, audit.KeyRing(new, (old,)))
    assert count == 3 and "retired" in problem


def test_the_chain_key_must_differ_from_the_input_hash_key(monkeypatch):
    monkeypatch.setenv("AUDIT_HMAC_KEY", CHAIN_KEY)
    monkeypatch.setenv("AUDIT_CHAIN_KEY", CHAIN_KEY)
    with pytest.raises(ValueError, match="AUDIT_CHAIN_KEY must differ from AUDIT_HMAC_KEY"):
        audit.KeyRing.from_env()


# --- 9: a full disk ----------------------------------------------------------------------
def test_a_short_write_leaves_nothing_and_the_next_append_continues(tmp_path, monkeypatch):
    log, checkpoints = tmp_path / "decisions.jsonl", tmp_path / "cp" / "checkpoints.jsonl"
    writer = audit.AuditLog(log, b"k" * 32, audit.KeyRing(CHAIN_KEY.encode()), checkpoints)
    writer.append([{"decision_id": "before"}])
    size = log.stat().st_size
    real_write, fd = os.write, writer.file.fd

    def disk_full(target, data):  # what the kernel does on a full disk: part of the data, then ENOSPC
        return real_write(target, data[: len(data) // 2]) if target == fd else real_write(target, data)

    monkeypatch.setattr(os, "write", disk_full)
    with pytest.raises(audit.AuditUnavailable, match=str(log)):
        writer.append([{"decision_id": f"lost-{i}"} for i in range(5)])
    monkeypatch.undo()
    assert log.stat().st_size == size, "a fragment of the failed write stayed in the log"
    writer.append([{"decision_id": "after"}])
    writer.close()
    assert [r["decision_id"] for r in lines_of(log)] == ["before", "after"]
    assert audit.verify(log, audit.KeyRing(CHAIN_KEY.encode()), checkpoints) == (2, None)


@pytest.mark.skipif(not TMPFS, reason="a real full disk needs a tmpfs mount: root and unshare (act's host mode has them)")
def test_a_full_disk_answers_503_not_ready_then_recovers_clean(client, service, bodies, monkeypatch, capsys):
    filler = service.seen(service.dir / "filler")
    try:
        try:
            with filler.open("wb") as fh:
                while True:
                    fh.write(b"\0" * 65536)
                    fh.flush()
        except OSError:
            pass  # the disk is full
        before = service.log.read_bytes()
        # More than the slack of the log's last page: the kernel writes part of it, then says ENOSPC.
        refused = client.post("/decide_batch", json={"records": bodies[:40]})
        assert refused.status_code == 503, refused.text
        assert str(service.server.log) in refused.json()["detail"], refused.text
        assert service.log.read_bytes() == before, "the refused decisions left bytes in the log"
        assert client.get("/readyz").status_code == 503
    finally:
        filler.unlink(missing_ok=True)
    assert client.get("/readyz").status_code == 200
    answered = [client.post("/decide", json=b) for b in bodies[:5]]
    assert [r.status_code for r in answered] == [200] * 5
    logged = {r["decision_id"] for r in lines_of(service.log)}
    assert {r.json()["decision_id"] for r in answered} <= logged
    code, out = verify_cli(monkeypatch, capsys, service.log, checkpoints=service.server.checkpoints)
    assert code == 0, out


# --- 10: an unwritable audit path at start ------------------------------------------------
def test_an_unwritable_audit_path_stops_the_service_at_start_naming_it(tmp_path):
    (tmp_path / "a-file").write_text("not a directory")
    log = tmp_path / "a-file" / "audit" / "decisions.jsonl"  # its directory can never be made, even by root
    env = {**os.environ, **KEYS, "BENTOML_DO_NOT_TRACK": "true", "AUDIT_LOG_PATH": str(log)}
    env["AUDIT_CHECKPOINT_PATH"] = str(tmp_path / "checkpoints.jsonl")
    cmd = [sys.executable, "-m", "bentoml", "serve", SERVICE, "--host", "127.0.0.1", "--port", str(free_port())]
    start = time.monotonic()
    proc = subprocess.Popen(
        cmd, cwd=pipeline_run().dir, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, start_new_session=True
    )
    try:
        out, _ = proc.communicate(timeout=60)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)  # the server and the workers it keeps restarting
        out, _ = proc.communicate()
        pytest.fail(f"the service did not exit in 60 s with an unwritable audit path:\n{out[-2000:]}")
    assert proc.returncode != 0
    named = [line for line in out.splitlines() if str(log) in line]
    assert len(named) == 1 and "Traceback" not in out, out[-2000:]
    print(f"exited {proc.returncode} after {time.monotonic() - start:.1f} s: {named[0]}")


# --- 11: the log file removed while the service runs -------------------------------------
def test_a_log_removed_while_running_continues_linked_and_nothing_answered_is_lost(client, service, bodies, monkeypatch, capsys):
    assert client.post("/decide_batch", json={"records": bodies[:5]}).status_code == 200
    head = lines_of(service.log)[-1]
    answered: list[str] = []
    after: list[str] = []  # decisions asked for once the file was gone: their records must be in the new file
    statuses: list[int] = []
    removed = threading.Event()

    def call(i: int) -> None:
        late = removed.is_set()
        r = httpx.post(f"{service.url}/decide", json=bodies[i % len(bodies)], timeout=30, headers=AUTH)
        statuses.append(r.status_code)
        if r.status_code == 200:
            (after if late else answered).append(r.json()["decision_id"])

    with ThreadPoolExecutor(max_workers=8) as pool:
        futures = [pool.submit(call, i) for i in range(120)]
        deadline = time.monotonic() + 60
        while len(answered) < 20 and time.monotonic() < deadline:  # remove it in the middle of the run
            time.sleep(0.01)
        service.log.unlink()
        removed.set()
        for f in futures:
            f.result()
    assert set(statuses) == {200} and len(after) >= 20, (statuses, len(after))
    records = lines_of(service.log)
    first = records[0]
    assert first.get("event") == audit.CONTINUES and first["seq"] > head["seq"], first
    anchored = {(p["records"], p["head"]) for p in lines_of(service.server.checkpoints)}
    assert (first["seq"], first["prev_hash"]) in anchored, "the new file does not continue from a checkpointed head"
    lost = set(after) - {r.get("decision_id") for r in records}
    assert not lost, f"{len(lost)} of {len(after)} decisions answered after the log was removed are not in the file at its path"
    code, out = verify_cli(monkeypatch, capsys, service.log, checkpoints=service.server.checkpoints)
    assert code == 1 and f"continues a log replaced at record {first['seq']}" in out, out
