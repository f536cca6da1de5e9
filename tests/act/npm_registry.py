"""A minimal npm registry on 127.0.0.1 serving one package, for `act` runs.

The generated workflow installs CML with a real `npm install @dvcorg/cml@<version>`.
Pointing npm at this registry (``npm_config_registry``) makes that command run unchanged
while installing the stand-in in ``tests/act/cml`` instead of CML, which would post to
GitHub. Only the two requests npm makes for an install are answered: the package document
and the tarball; anything else is a 404, so a surprise request shows up as an npm error.
"""

from __future__ import annotations

import base64
import hashlib
import io
import json
import tarfile
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import unquote


def pack(package_dir: Path, version: str) -> tuple[str, bytes]:
    """The package as an npm tarball (files under ``package/``), at ``version``."""
    manifest = json.loads((package_dir / "package.json").read_text())
    manifest["version"] = version
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w:gz") as tar:
        data = json.dumps(manifest, indent=2).encode()
        info = tarfile.TarInfo("package/package.json")
        info.size, info.mode = len(data), 0o644
        tar.addfile(info, io.BytesIO(data))
        for path in sorted(package_dir.rglob("*")):
            if path.is_file() and path.name != "package.json":
                tar.add(path, arcname=f"package/{path.relative_to(package_dir)}")
    return manifest["name"], buffer.getvalue()


@contextmanager
def serve(package_dir: Path, version: str) -> Iterator[str]:
    """Serve ``package_dir`` as its package name at ``version``; yields the registry URL."""
    name, tarball = pack(package_dir, version)
    integrity = "sha512-" + base64.b64encode(hashlib.sha512(tarball).digest()).decode()
    tarball_path = f"/{name}/-/{name.split('/')[-1]}-{version}.tgz"

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:  # noqa: N802 - the stdlib's name
            path = unquote(self.path.split("?")[0])
            if path == f"/{name}":
                base = f"http://{self.headers['Host']}"
                doc = {
                    "name": name,
                    "dist-tags": {"latest": version},
                    "versions": {version: {
                        "name": name, "version": version,
                        "bin": json.loads((package_dir / "package.json").read_text()).get("bin", {}),
                        "dist": {"tarball": base + tarball_path, "integrity": integrity,
                                 "shasum": hashlib.sha1(tarball).hexdigest()},  # noqa: S324 - npm's format
                    }},
                }
                self._send(200, "application/json", json.dumps(doc).encode())
            elif path == tarball_path:
                self._send(200, "application/octet-stream", tarball)
            else:
                self._send(404, "application/json", b'{"error": "not found"}')

        def _send(self, status: int, content_type: str, body: bytes) -> None:
            self.send_response(status)
            self.send_header("Content-Type", content_type)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args: object) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/"
    finally:
        server.shutdown()
        server.server_close()
