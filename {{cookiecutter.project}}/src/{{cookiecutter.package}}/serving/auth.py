"""Who may ask for a decision: API keys, held by the service only as hashes, checked on every request.

Callers send ``Authorization: Bearer <key>`` (or ``X-API-Key: <key>``). The service reads
``API_KEYS_FILE``, one ``key_id:sha256hex`` line per key (``#`` comments and blank lines
allowed; mounted from a secret), and answers anything but the probes and ``/metrics`` with a
401 and ``WWW-Authenticate: Bearer`` unless the key's SHA-256 is in that file. The 401 says
the same whatever was wrong (no header, another scheme, an unknown key). The caller's key id
and the request id (``X-Request-ID`` when it is a sane token, else a new one; echoed in the
response) go into every audit record of the request.

Why a dict keyed by the digest, and why that is safe: a key is 32 random bytes
(:func:`new_key`), so its SHA-256 is as good as a password hash here (nothing to brute-force,
no need for a slow hash) and one lookup per request is O(1) whatever the number of keys. The
lookup's timing depends only on the SHA-256 of what the caller sent, which the caller already
knows and which tells them nothing about any stored key (finding a key from its hash is a
pre-image of SHA-256); the match is still confirmed with :func:`hmac.compare_digest`.

Mint and revoke keys (``make api-key NAME=<id>`` runs the first)::

    python -m {{ cookiecutter.package }}.serving.auth new-key partner-a [--file secrets/api-keys]
    python -m {{ cookiecutter.package }}.serving.auth revoke partner-a [--file secrets/api-keys]

Outside ``SERVICE_MODE=development`` the service refuses to start without ``API_KEYS_FILE``
or with the development audit keys (:func:`startup_problems`); in development mode it starts,
with a warning, and without ``API_KEYS_FILE`` it asks no credentials at all.
"""

from __future__ import annotations

import argparse
import contextvars
import hashlib
import hmac
import os
import re
import secrets
import sys
import uuid
from collections.abc import Collection, Mapping
from pathlib import Path

KEYS_ENV = "API_KEYS_FILE"
MODE_ENV = "SERVICE_MODE"
DEVELOPMENT = "development"
DEFAULT_KEYS_FILE = Path("secrets/api-keys")
# The probes and the scrape stay open: the kubelet and Prometheus hold no key, and they answer
# nothing about applicants.
OPEN_PATHS = frozenset({"/livez", "/readyz", "/metrics"})
KEY_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}")
DIGEST = re.compile(r"[0-9a-f]{64}")
# A caller's request id is kept only if it is a short plain token: it goes into the audit log
# and a response header, so no spaces, quotes, control characters or unbounded length.
REQUEST_ID = re.compile(rb"[A-Za-z0-9._:-]{1,128}")

# (key id, request id) of the request being served; read where its audit records are made.
CALLER: contextvars.ContextVar[tuple[str | None, str]] = contextvars.ContextVar("caller", default=(None, ""))

_UNAUTHORIZED = b'{"error":"Unauthorized: send a valid API key as \'Authorization: Bearer <key>\'"}'


class KeyFileError(ValueError):
    """``API_KEYS_FILE`` cannot be used; the message names the file and the line."""


def digest(key: str | bytes) -> bytes:
    """The SHA-256 of a key (what the keys file holds, in hex)."""
    return hashlib.sha256(key.encode() if isinstance(key, str) else key).digest()


def load_keys(path: Path) -> dict[bytes, str]:
    """``{sha256 digest: key id}`` from a keys file; a malformed line is an error naming it."""
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise KeyFileError(f"{KEYS_ENV}={path} cannot be read: {exc}") from None
    keys: dict[bytes, str] = {}
    for number, raw in enumerate(text.splitlines(), start=1):
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        key_id, sep, hexdigest = line.partition(":")
        where = f"{KEYS_ENV}={path} line {number}"
        if not sep or not KEY_ID.fullmatch(key_id) or not DIGEST.fullmatch(hexdigest):
            raise KeyFileError(
                f"{where} is not 'key_id:sha256hex' (an id of letters, digits, '.', '_', '-'; 64 lowercase hex digits)"
            )
        if key_id in keys.values():
            raise KeyFileError(f"{where}: key id {key_id!r} appears twice")
        if bytes.fromhex(hexdigest) in keys:
            raise KeyFileError(f"{where}: the same key hash as key id {keys[bytes.fromhex(hexdigest)]!r}")
        keys[bytes.fromhex(hexdigest)] = key_id
    return keys


def startup_problems(environ: Mapping[str, str], dev_keys: Collection[bytes]) -> tuple[list[str], dict[bytes, str] | None]:
    """What stops the service from starting outside development mode, and the keys it would use.

    Returns ``(problems, keys)``: each problem one line naming its variable; ``keys`` is None
    when no ``API_KEYS_FILE`` is set (only allowed in development mode: no credentials asked).
    ``dev_keys`` are the public development keys of the audit log. A malformed keys file raises
    :class:`KeyFileError` in any mode.
    """
    problems = []
    hmac_key, chain_key = environ.get("AUDIT_HMAC_KEY", ""), environ.get("AUDIT_CHAIN_KEY", "")
    if not hmac_key or hmac_key.encode() in dev_keys:
        problems.append("AUDIT_HMAC_KEY is not set or is the development key (anyone could confirm inputs from the log)")
    if not chain_key or chain_key.encode() in dev_keys:
        problems.append("AUDIT_CHAIN_KEY is not set or is the development key (anyone could rewrite the audit chain)")
    elif chain_key == hmac_key:
        problems.append("AUDIT_CHAIN_KEY equals AUDIT_HMAC_KEY: the chain's key must be a different secret")
    keys = None
    if environ.get(KEYS_ENV):
        keys = load_keys(Path(environ[KEYS_ENV]))
        if not keys:
            problems.append(f"{KEYS_ENV}={environ[KEYS_ENV]} holds no key: mint one with `make api-key NAME=<id>`")
    else:
        problems.append(f"{KEYS_ENV} is not set: no caller could be authenticated (mint a key with `make api-key NAME=<id>`)")
    return problems, keys


def development(environ: Mapping[str, str]) -> bool:
    """Whether ``SERVICE_MODE=development`` (the only mode that may run without secrets)."""
    return environ.get(MODE_ENV) == DEVELOPMENT


def check_startup(environ: Mapping[str, str], dev_keys: Collection[bytes]) -> None:
    """Exits non-zero with one line naming the variable unless the service may start; warns in development mode.

    Run once by the service before its workers start (``on_deployment``).
    """
    try:
        problems, keys = startup_problems(environ, dev_keys)
    except KeyFileError as exc:
        sys.exit(f"decision service not started: {exc}")
    if not development(environ):
        if problems:
            sys.exit(f"decision service not started: {problems[0]} (only {MODE_ENV}={DEVELOPMENT} may run without it)")
        return
    warnings = problems + (["no API_KEYS_FILE: every caller is served without a credential"] if keys is None else [])
    if warnings:  # on stderr, whatever the logging configuration: nobody should miss it
        banner = f"*** {MODE_ENV}={DEVELOPMENT}: NOT FOR PRODUCTION ***"
        print("\n".join([banner, *(f"*** {w}" for w in warnings), banner]), file=sys.stderr, flush=True)


def serving_keys(environ: Mapping[str, str]) -> dict[bytes, str] | None:
    """The keys a worker authenticates with; None (serve everyone) only in development mode without a keys file."""
    if environ.get(KEYS_ENV):
        try:
            return load_keys(Path(environ[KEYS_ENV]))
        except KeyFileError as exc:
            sys.exit(f"decision service not started: {exc}")
    if not development(environ):
        sys.exit(f"decision service not started: {KEYS_ENV} is not set (only {MODE_ENV}={DEVELOPMENT} may run without it)")
    return None


def _request_id(raw: bytes | None) -> str:
    return raw.decode() if raw is not None and REQUEST_ID.fullmatch(raw) else uuid.uuid4().hex


class Authenticate:
    """ASGI middleware: a 401 unless the request carries a known key (probes and ``/metrics`` excepted).

    ``keys`` None serves everyone (development mode without a keys file). Every response carries
    ``X-Request-ID``.
    """

    def __init__(self, app, keys: dict[bytes, str] | None | str = "environment") -> None:
        self.app = app
        if keys == "environment":  # as BentoML builds it, in each worker
            keys = serving_keys(os.environ)
        # digest -> (key id, the stored digest): the stored digest to compare in constant time.
        self.keys = None if keys is None else {d: (key_id, d) for d, key_id in keys.items()}

    def caller(self, headers: list[tuple[bytes, bytes]]) -> tuple[str | None, bytes | None, bool]:
        """(key id, request id header, authenticated) from the request's headers."""
        token = request_id = None
        for name, value in headers:
            if name == b"authorization":
                scheme, _, credential = value.partition(b" ")
                token = credential.strip() if scheme.lower() == b"bearer" else b""
            elif name == b"x-api-key" and token is None:
                token = value.strip()
            elif name == b"x-request-id":
                request_id = value
        if self.keys is None:
            return None, request_id, True
        if not token:
            return None, request_id, False
        sent = digest(token)
        found = self.keys.get(sent)
        if found is None or not hmac.compare_digest(sent, found[1]):
            return None, request_id, False
        return found[0], request_id, True

    async def __call__(self, scope, receive, send) -> None:  # noqa: D102 - the ASGI interface
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        key_id, raw_id, ok = self.caller(scope["headers"])
        request_id = _request_id(raw_id)
        echo = (b"x-request-id", request_id.encode())

        async def tagged(message) -> None:
            if message["type"] == "http.response.start":
                message["headers"] = [*message.get("headers", []), echo]
            await send(message)

        if not ok and scope.get("path") not in OPEN_PATHS:
            await tagged(
                {
                    "type": "http.response.start",
                    "status": 401,
                    "headers": [
                        (b"content-type", b"application/json"),
                        (b"content-length", str(len(_UNAUTHORIZED)).encode()),
                        (b"www-authenticate", b'Bearer realm="decision-service"'),
                    ],
                }
            )
            await send({"type": "http.response.body", "body": _UNAUTHORIZED})
            return
        CALLER.set((key_id, request_id))
        await self.app(scope, receive, tagged)


# --- minting and revoking keys -----------------------------------------------------------
def new_key() -> str:
    """A new API key: 32 random bytes, URL-safe (43 characters)."""
    return secrets.token_urlsafe(32)


def add_key(path: Path, key_id: str) -> str:
    """Mint a key for ``key_id``, append its hash line to ``path`` and return the key (shown once)."""
    if not KEY_ID.fullmatch(key_id):
        raise KeyFileError(f"key id {key_id!r}: use 1-64 letters, digits, '.', '_' or '-', starting with a letter or digit")
    keys = load_keys(path) if path.exists() else {}
    if key_id in keys.values():
        raise KeyFileError(f"key id {key_id!r} is already in {path}: revoke it first, or mint the new key under a new id")
    key = new_key()
    path.parent.mkdir(parents=True, exist_ok=True)
    text = path.read_text(encoding="utf-8") if path.exists() else "# API keys of the decision service: key_id:sha256(key)\n"
    # Hashes only: the hash of a 256-bit random key gives nothing to guess from, so the file may
    # be readable by the service's user in a container (compose bind-mounts it as it is).
    line = f"{key_id}:{digest(key).hex()}\n"
    path.write_text(text + ("" if text.endswith("\n") or not text else "\n") + line, encoding="utf-8")
    return key


def revoke(path: Path, key_id: str) -> None:
    """Remove ``key_id``'s line from ``path`` (the key stops working once the file is deployed)."""
    keys = load_keys(path)
    if key_id not in keys.values():
        raise KeyFileError(f"key id {key_id!r} is not in {path} (it has: {', '.join(sorted(keys.values())) or 'no keys'})")
    kept = [line for line in path.read_text(encoding="utf-8").splitlines() if line.strip().partition(":")[0] != key_id]
    path.write_text("\n".join(kept) + "\n", encoding="utf-8")


def main(argv: list[str] | None = None) -> int:
    """``new-key ID`` or ``revoke ID`` on a keys file."""
    parser = argparse.ArgumentParser(description="Mint or revoke the decision service's API keys.")
    parser.add_argument("command", choices=["new-key", "revoke"])
    parser.add_argument("key_id", help="who the key is for, e.g. partner-a or loan-frontend-2026q1")
    default = Path(os.environ.get(KEYS_ENV) or DEFAULT_KEYS_FILE)
    parser.add_argument("--file", type=Path, default=default, help=f"keys file (default: ${KEYS_ENV}, else {DEFAULT_KEYS_FILE})")
    args = parser.parse_args(argv)
    try:
        if args.command == "new-key":
            key = add_key(args.file, args.key_id)
            print(f"API key for {args.key_id} (shown once; its hash is now in {args.file}):\n{key}")
        else:
            revoke(args.file, args.key_id)
            print(f"{args.key_id} removed from {args.file}; deploy the file for it to take effect")
    except KeyFileError as exc:
        print(exc, file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
