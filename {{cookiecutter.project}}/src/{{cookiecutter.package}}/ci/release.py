"""Release helper: the checks and files of `.github/workflows/release.yml`, runnable anywhere.

    python -m {{ cookiecutter.package }}.ci.release check-tag --tag v1.2.0 --main-ref origin/main
    python -m {{ cookiecutter.package }}.ci.release verify-model
    python -m {{ cookiecutter.package }}.ci.release notes --tag v1.2.0 [--image ghcr.io/o/r@sha256:...]
    python -m {{ cookiecutter.package }}.ci.release lineage --tag v1.2.0 --image ghcr.io/o/r@sha256:...
    python -m {{ cookiecutter.package }}.ci.release register --tag v1.2.0 --image ghcr.io/o/r@sha256:...
    python -m {{ cookiecutter.package }}.ci.release push --to ghcr.io/o/r   (the image `make image` built)
    python -m {{ cookiecutter.package }}.ci.release set-image --overlay deploy/k8s/overlays/production --image ...@sha256:...
    python -m {{ cookiecutter.package }}.ci.release smoke-request
    python -m {{ cookiecutter.package }}.ci.release smoke --url http://127.0.0.1:3000 --tag v1.2.0

Each refusal is one line naming what was wrong and exits 1, so the workflow stops there.
The logic lives here, not in the workflow's shell, so it runs the same under act, in tests
and on a release manager's laptop.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
import tomllib
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

import yaml

from {{ cookiecutter.package }}.core import config
from {{ cookiecutter.package }}.core.errors import UserError
from {{ cookiecutter.package }}.core.reports import GatesReport
from {{ cookiecutter.package }}.core.stage import setup_logging, write_text

TAG = re.compile(r"v(?P<version>\d+\.\d+\.\d+)")
IMAGE = re.compile(r"[\w.-]+(?::\d+)?/[\w./-]+@sha256:[0-9a-f]{64}")


class ReleaseError(UserError):
    """A release that must not go ahead; the message says why."""


def file_md5(path: Path) -> str:
    """The hash DVC records for a file (the pipeline's own function; imported late, it pulls in MLflow)."""
    from {{ cookiecutter.package }}.tracking import file_md5 as md5

    return md5(path)


def load_contract():  # noqa: ANN201 (the contract type lives in core.contract)
    """The data contract (imported late: the deploy steps need only set-image)."""
    from {{ cookiecutter.package }}.core.contract import load_contract as load

    return load()


def git(*args: str) -> str:
    """A git command's output; ReleaseError when git fails."""
    proc = subprocess.run(["git", *args], capture_output=True, text=True)
    if proc.returncode != 0:
        raise ReleaseError(f"`git {' '.join(args)}` failed: {proc.stderr.strip()}")
    return proc.stdout.strip()


def package_version(pyproject: Path = config.PYPROJECT) -> str:
    """The version in pyproject.toml: the one source of the release's version."""
    return tomllib.loads(pyproject.read_text(encoding="utf-8"))["project"]["version"]


def check_tag(tag: str, main_ref: str) -> str:
    """The version a tag releases, or ReleaseError if the tag must not be released."""
    match = TAG.fullmatch(tag)
    if match is None:
        raise ReleaseError(f"tag '{tag}' is not vX.Y.Z")
    version = package_version()
    if match["version"] != version:
        raise ReleaseError(
            f"tag '{tag}' does not match the package version {version} in pyproject.toml; "
            f"bump the version on main or tag v{version}"
        )
    init = config.PACKAGE_INIT
    declared = re.search(r'^__version__ = "([^"]+)"', init.read_text(encoding="utf-8"), flags=re.M) if init.exists() else None
    if declared is not None and declared[1] != version:
        raise ReleaseError(f"{init} says __version__ = {declared[1]!r} but pyproject.toml says {version!r}: make them equal")
    head = git("rev-parse", "HEAD")
    if subprocess.run(["git", "merge-base", "--is-ancestor", head, main_ref]).returncode != 0:
        raise ReleaseError(f"tag '{tag}' points at {head[:12]}, which is not on {main_ref}: release only what main reviewed")
    return version


def verify_model() -> str:
    """The md5 of the model file, checked against the one dvc.lock records for this commit."""
    from {{ cookiecutter.package }}.governance import lineage

    path = config.MODEL
    expected, stage = lineage.lock_md5(lineage.read_dvc_lock(), path.as_posix())
    if expected is None:
        raise ReleaseError(f"dvc.lock records no {path}: commit the lock file that `dvc repro` wrote")
    if not config.MODEL.exists():
        raise ReleaseError(f"{path} is missing: `dvc pull` it or `dvc repro` before releasing")
    actual = file_md5(config.MODEL)
    if actual != expected:
        raise ReleaseError(
            f"{path} has md5 {actual}, but dvc.lock ({stage} stage) records {expected}: this is not the model the commit reviewed"
        )
    return actual


def read_json(path: Path) -> dict[str, Any]:
    """A report the pipeline or the gates wrote; ReleaseError when it is missing."""
    if not path.exists():
        raise ReleaseError(f"{path} is missing: run the pipeline (`make repro`) and the gates (`make gates`) first")
    return json.loads(path.read_text(encoding="utf-8"))


def identity(tag: str, image: str | None = None) -> dict[str, Any]:
    """What the release is: the version, commit, MLflow run, contract and (once pushed) image."""
    meta = read_json(config.MODEL_META)
    contract = load_contract()
    found = {
        "version": TAG.fullmatch(tag)["version"] if TAG.fullmatch(tag) else tag,
        "tag": tag,
        "git_sha": git("rev-parse", "HEAD"),
        "run_id": meta["run_id"],
        "contract": contract.name,
        "contract_version": contract.version,
        "model_md5": file_md5(config.MODEL),
    }
    if image is not None:
        if IMAGE.fullmatch(image) is None:
            raise ReleaseError(f"image '{image}' is not a reference by digest (registry/name@sha256:<64 hex>)")
        found["image"] = image
    return found


def notes(tag: str, image: str | None) -> str:
    """The body of the GitHub release, in Markdown, for a model-risk reviewer."""
    who = identity(tag, image)
    metrics = read_json(config.METRICS)
    gates = GatesReport.parse(read_json(config.GATES), config.GATES.as_posix())
    results = gates.gates
    failed = [r for r in results if not r.passed]
    if failed or not gates.passed:
        raise ReleaseError(f"gates failed on this commit: {', '.join(sorted({str(r.id) for r in failed}))}")
    lines = [
        f"## {Path.cwd().name} {tag}",
        "",
        "| | |",
        "|---|---|",
        f"| version | `{who['version']}` |",
        f"| commit | `{who['git_sha']}` |",
        f"| MLflow run | `{who['run_id']}` |",
        f"| data contract | `{who['contract']}` version `{who['contract_version']}` |",
        f"| model file md5 (as in dvc.lock) | `{who['model_md5']}` |",
        f"| image | `{who.get('image', 'not pushed yet')}` |",
        "",
        "### Metrics (test set)",
        "",
        "| metric | value |",
        "|---|---|",
        *[f"| {k} | {v:.4f} |" for k, v in metrics.items() if isinstance(v, int | float)],
        "",
        f"### Gates: all {len(results)} passed on this commit",
        "",
        *[f"- {r.id}: {r.reason}" for r in results],
        "",
        "### Attached",
        "",
        "model card, metrics, fairness report, gate results, lineage record (with the image digest) "
        "and the bento's requirements.",
    ]
    if image is not None:
        lines += [
            "",
            "### Verify the image",
            "",
            "```",
            f"cosign verify {image} \\",
            f"  --certificate-identity-regexp 'https://github.com/.+/.github/workflows/release.yml@refs/tags/{tag}' \\",
            "  --certificate-oidc-issuer https://token.actions.githubusercontent.com",
            f"gh attestation verify oci://{image} --owner <owner>",
            "```",
        ]
    return "\n".join(lines) + "\n"


def release_lineage(tag: str, image: str) -> dict[str, Any]:
    """The pipeline's lineage record with the release (tag, commit, image digest) added."""
    record = read_json(config.LINEAGE)
    record["release"] = identity(tag, image)
    return record


def register(tag: str, image: str, name: str) -> str:
    """Register the model in MLflow's registry as `champion`; a message when no server is configured."""
    uri = os.environ.get("MLFLOW_TRACKING_URI", "")
    if not uri:
        return "No MLflow tracking server configured (secret MLFLOW_TRACKING_URI): model not registered."
    import mlflow
    from mlflow import MlflowClient
    from mlflow.exceptions import MlflowException

    who = identity(tag, image)
    client = MlflowClient(tracking_uri=uri)
    mlflow.set_tracking_uri(uri)
    mlflow.set_experiment(name)
    tags = {
        "git_sha": who["git_sha"],
        "release_tag": tag,
        "image": image,
        "image_digest": image.split("@", 1)[1],
        "training_run_id": who["run_id"],
        "model_md5": who["model_md5"],
    }
    with mlflow.start_run(run_name=f"release {tag}", tags=tags) as run:
        mlflow.log_artifact(str(config.MODEL), artifact_path="model")
        mlflow.log_artifact(str(config.MODEL_META), artifact_path="model")
        metrics = read_json(config.METRICS)
        mlflow.log_metrics({k: float(v) for k, v in metrics.items() if isinstance(v, int | float)})
    try:
        client.create_registered_model(name)
    except MlflowException as exc:
        if "RESOURCE_ALREADY_EXISTS" not in str(exc.error_code):
            raise
    version = client.create_model_version(name, f"{run.info.artifact_uri}/model", run_id=run.info.run_id, tags=tags)
    client.set_registered_model_alias(name, "champion", version.version)
    return f"Registered {name} version {version.version} as champion (run {run.info.run_id})."


def on_loopback(reference: str) -> bool:
    """Whether an image reference's registry is this machine's loopback (a test's registry: plain HTTP)."""
    return reference.split("/", 1)[0].rsplit(":", 1)[0] in ("127.0.0.1", "localhost")


def push(to: str, built: Path = Path("dist/image/image.json"), engine: str = "") -> str:
    """Push the image `make image` built (recorded in ``built``) to repository ``to``; its reference by digest.

    The digest is the one the registry answered the push with, never computed beforehand:
    every later step (scan, signature, attestation, deployment) names the image by it.
    """
    if not built.exists():
        raise ReleaseError(f"{built} is missing: `make image` writes it when it builds the image")
    local = json.loads(built.read_text(encoding="utf-8"))["image"]
    remote = f"{to}:{local.rsplit(':', 1)[1]}"
    engine = engine or ("docker" if subprocess.run(["docker", "info"], capture_output=True).returncode == 0 else "podman")
    insecure = ["--tls-verify=false"] if engine == "podman" and on_loopback(to) else []
    subprocess.run([engine, "tag", local, remote], check=True)
    digestfile = built.with_name("pushed.digest")
    digestfile.unlink(missing_ok=True)  # only this push's digest may be read back
    cmd = [engine, "push", *insecure, *(["--digestfile", str(digestfile)] if engine == "podman" else []), remote]
    proc = subprocess.run(cmd, capture_output=True, text=True)
    if proc.returncode != 0:
        raise ReleaseError(f"`{' '.join(cmd)}` failed: {proc.stderr.strip()[-2000:]}")
    # docker prints "<tag>: digest: sha256:... size: N"; podman writes the digest to a file
    found = re.search(r"digest: (sha256:[0-9a-f]{64})", proc.stdout) if engine != "podman" else None
    digest = found[1] if found else digestfile.read_text(encoding="utf-8").strip() if digestfile.exists() else ""
    image = f"{to}@{digest}"
    if IMAGE.fullmatch(image) is None:
        raise ReleaseError(f"`{engine} push {remote}` reported no digest ({digest!r}): the image cannot be named by digest")
    return image


def set_image(overlay: Path, image: str) -> None:
    """Point a Kustomize overlay's `decision-service` image at ``image`` (by digest only)."""
    if IMAGE.fullmatch(image) is None:
        raise ReleaseError(f"image '{image}' is not a reference by digest (registry/name@sha256:<64 hex>)")
    path = overlay / "kustomization.yaml"
    if not path.exists():
        raise ReleaseError(f"{path} does not exist: deploy/k8s/overlays/<environment> is expected")
    kustomization = yaml.safe_load(path.read_text(encoding="utf-8"))
    name, digest = image.split("@", 1)
    entry = {"name": "decision-service", "newName": name, "digest": digest}
    others = [i for i in kustomization.get("images", []) if i.get("name") != "decision-service"]
    kustomization["images"] = [*others, entry]
    write_text(path, yaml.safe_dump(kustomization, sort_keys=False))


def smoke_request() -> dict[str, Any]:
    """One real record from the test set, as the service's request body (features only)."""
    import pandas as pd

    contract = load_contract()
    frame = pd.read_parquet(config.TEST)
    row = frame[contract.model_input_order()].iloc[0]
    return {k: (None if pd.isna(v) else v.item() if hasattr(v, "item") else v) for k, v in row.items()}


def expected_model(tag: str) -> dict[str, Any]:
    """The model identity the release's service must report (the bento carries this model_meta.json)."""
    meta = read_json(config.MODEL_META)
    contract = load_contract()
    match = TAG.fullmatch(tag)
    return {
        "package_version": match["version"] if match else tag,
        "run_id": meta["run_id"],
        "contract": contract.name,
        "contract_version": contract.version,
    }


def smoke(url: str, tag: str, request: dict[str, Any], timeout: float = 10.0) -> dict[str, Any]:
    """POST one decision to a deployed service; ReleaseError unless it reports this release's model."""
    if not url.startswith(("http://", "https://")):
        raise ReleaseError(f"smoke URL '{url}' is not http(s)")
    body = json.dumps(request).encode()
    headers = {"Content-Type": "application/json"}
    if key := os.environ.get("SMOKE_API_KEY"):  # the service asks every caller for an API key
        headers["Authorization"] = f"Bearer {key}"
    req = urllib.request.Request(f"{url.rstrip('/')}/decide", data=body, headers=headers)  # noqa: S310 (http(s) only)
    try:
        with urllib.request.urlopen(req, timeout=timeout) as resp:  # noqa: S310 (URL given by the workflow)
            answer = json.loads(resp.read())
    except (urllib.error.URLError, TimeoutError, json.JSONDecodeError) as exc:
        raise ReleaseError(f"smoke request to {url}/decide failed: {exc}") from exc
    want = expected_model(tag)
    got = {k: (answer.get("model") or {}).get(k) for k in want}
    if got != want:
        wrong = ", ".join(f"{k} {got[k]!r} (release: {want[k]!r})" for k in want if got[k] != want[k])
        raise ReleaseError(f"the service at {url} does not serve this release's model: {wrong}")
    return answer


def write_output(**values: str) -> None:
    """Step outputs for the workflow ($GITHUB_OUTPUT), when there is one."""
    if path := os.environ.get("GITHUB_OUTPUT"):
        with open(path, "a", encoding="utf-8") as fh:
            fh.writelines(f"{k}={v}\n" for k, v in values.items())


def main(argv: list[str] | None = None) -> int:
    """Command-line entry point (see the module docstring)."""
    parser = argparse.ArgumentParser(prog="release", description=__doc__.split("\n", 1)[0])
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("check-tag")
    p.add_argument("--tag", required=True)
    p.add_argument("--main-ref", default="origin/main")
    sub.add_parser("verify-model")
    for name in ("notes", "lineage", "register"):
        p = sub.add_parser(name)
        p.add_argument("--tag", required=True)
        p.add_argument("--image", required=name != "notes")
        p.add_argument("--out", type=Path)
    sub.choices["register"].add_argument("--name", default=Path.cwd().name)
    p = sub.add_parser("push")
    p.add_argument("--to", required=True, help="registry/repository (lower case), e.g. ghcr.io/owner/repo")
    p.add_argument("--engine", default=os.environ.get("IMAGE_ENGINE", ""))
    p = sub.add_parser("set-image")
    p.add_argument("--overlay", type=Path, required=True)
    p.add_argument("--image", required=True)
    p = sub.add_parser("smoke-request")
    p.add_argument("--out", type=Path, default=config.RELEASE_DIR / "smoke_request.json")
    p = sub.add_parser("smoke")
    for flag in ("--url", "--tag"):
        p.add_argument(flag, required=True)
    p.add_argument("--request", type=Path, default=config.RELEASE_DIR / "smoke_request.json")
    args = parser.parse_args(argv)

    def run() -> int:
        if args.command == "check-tag":
            version = check_tag(args.tag, args.main_ref)
            write_output(version=version)
            print(f"tag {args.tag} = package version {version}, on {args.main_ref}")
        elif args.command == "verify-model":
            print(f"{config.MODEL.name}: md5 {verify_model()} as recorded in dvc.lock")
        elif args.command in ("notes", "lineage"):
            text = (
                notes(args.tag, args.image)
                if args.command == "notes"
                else json.dumps(release_lineage(args.tag, args.image), indent=2) + "\n"
            )
            out = args.out or config.RELEASE_DIR / ("notes.md" if args.command == "notes" else "lineage.json")
            write_text(out, text)
            print(f"wrote {out}")
        elif args.command == "register":
            print(register(args.tag, args.image, args.name))
        elif args.command == "push":
            image = push(args.to, engine=args.engine)
            write_output(image=image, digest=image.split("@", 1)[1])
            print(f"pushed {image}")
        elif args.command == "set-image":
            set_image(args.overlay, args.image)
            print(f"{args.overlay}: decision-service = {args.image}")
        elif args.command == "smoke-request":
            write_text(args.out, json.dumps(smoke_request(), indent=2) + "\n")
            print(f"wrote {args.out}")
        else:
            answer = smoke(args.url, args.tag, json.loads(args.request.read_text(encoding="utf-8")))
            print(f"{args.url} serves release {args.tag}: model {answer['model']}")
        return 0

    log = setup_logging()
    try:
        return run()
    except UserError as exc:  # one line naming what was wrong, exit 1: the workflow stops there
        log.error("%s", exc)
        return 1


if __name__ == "__main__":
    sys.exit(main())
