"""The generated README is a front door and its docs/ pages hold together, in every kind of bake.

What a newcomer reads must be true of the repository in front of them: links resolve, the
verbs exist, nothing is left unrendered, and no other use case's columns appear.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import yaml

from helpers import TEMPLATE, bake, generated_files

README_MAX_LINES = 200
# Each role the README routes to its page, and the page it must link (issue 20, item 8).
ROLE_PAGES = ["docs/pull-requests.md", "docs/releasing.md", "docs/model-risk.md", "docs/serving.md",
              "docs/monitoring.md", "docs/metrics.md", "docs/your-data.md", "docs/benchmarks.md"]

# Both use cases, and between them every value of the options the pages branch on.
BAKES = {
    "credit": {},
    "fraud": {"use_case": "fraud_detection", "project_name": "Card Fraud", "deploy_target": "bentocloud",
              "dvc_remote": "s3", "publish_report_images": "yes"},
    "credit-no-deploy": {"deploy_target": "none", "dvc_remote": "gcs", "compute": "spark"},
}

LINK = re.compile(r"!?\[[^\]]*\]\(([^)\s]+)\)")
FENCE = re.compile(r"```[^\n]*\n(.*?)```", re.S)
CODE_SPAN = re.compile(r"`([^`\n]+)`")
TARGET = re.compile(r"^([A-Za-z0-9_.-]+):", re.M)


@pytest.fixture(scope="module", params=list(BAKES), ids=list(BAKES))
def project(request, tmp_path_factory) -> Path:
    return bake(tmp_path_factory.mktemp(request.param), **BAKES[request.param])


def pages(project: Path) -> list[Path]:
    return [project / "README.md", *sorted((project / "docs").glob("*.md"))]


def slug(heading: str) -> str:
    """GitHub's anchor for a heading: lower case, punctuation dropped, spaces to hyphens."""
    text = re.sub(r"[`*_]", "", heading.strip().lower())
    return re.sub(r"[^\w\- ]", "", text).replace(" ", "-")


def anchors(page: Path) -> set[str]:
    body = FENCE.sub("", page.read_text())
    return {slug(m.group(1)) for m in re.finditer(r"^#{1,6} (.+)$", body, re.M)}


def make_verbs(text: str) -> set[str]:
    """Every verb after `make` in code: inline spans and fenced blocks (comments dropped)."""
    code = [line.split("#", 1)[0] for block in FENCE.findall(text) for line in block.splitlines()]
    code += CODE_SPAN.findall(FENCE.sub("", text))
    verbs = set()
    for snippet in code:
        for m in re.finditer(r"(?<![\w/.-])make\s+([^#&|;`]*)", snippet):
            for token in m.group(1).split():
                if token.startswith("-"):
                    continue  # a flag (-k)
                if "=" in token:
                    break  # variables (BATCH=...) follow the verbs here
                if not re.fullmatch(r"[a-z][a-z0-9_-]*", token):
                    break
                verbs.add(token)
    return verbs


def test_readme_is_a_short_front_door(project):
    readme = (project / "README.md").read_text()
    lines = readme.count("\n")
    assert lines <= README_MAX_LINES, f"README.md has {lines} lines; the front door keeps to {README_MAX_LINES}"
    assert "make setup repro test" in readme or all(f"make {v}" in readme for v in ("setup", "repro", "test"))
    linked = {m.group(1).split("#")[0] for m in LINK.finditer(readme)}
    assert set(ROLE_PAGES) <= linked, f"README does not route to {sorted(set(ROLE_PAGES) - linked)}"


def broken_links(project: Path) -> list[str]:
    """Relative links in the README and docs/ whose file, or heading in a Markdown file, is missing."""
    broken = []
    for page in pages(project):
        for target in LINK.findall(page.read_text()):
            if re.match(r"[a-z]+:", target):
                continue  # https:, mailto:
            path, _, anchor = target.partition("#")
            dest = (page.parent / path).resolve() if path else page
            rel = page.relative_to(project)
            if not dest.exists():
                broken.append(f"{rel}: {target} (no such file)")
            elif anchor and dest.suffix == ".md" and anchor not in anchors(dest):
                broken.append(f"{rel}: {target} (no heading #{anchor} in {dest.relative_to(project)})")
    return broken


def test_every_relative_link_resolves(project):
    assert broken_links(project) == []


def test_the_link_check_catches_a_missing_file_and_heading(tmp_path):
    (tmp_path / "docs").mkdir()
    (tmp_path / "docs" / "serving.md").write_text("# Serving\n\n## Operating the service\n\n```\n# not a heading\n```\n")
    (tmp_path / "README.md").write_text(
        "[ok](docs/serving.md#operating-the-service) [gone](docs/gone.md) [bad](docs/serving.md#not-a-heading) "
        "[web](https://example.com/x) ![pic](docs/serving.md)\n"
    )
    assert broken_links(tmp_path) == [
        "README.md: docs/gone.md (no such file)",
        "README.md: docs/serving.md#not-a-heading (no heading #not-a-heading in docs/serving.md)",
    ]


def test_every_make_verb_mentioned_exists(project):
    defined = set(TARGET.findall((project / "Makefile").read_text()))
    assert {"setup", "repro", "test"} <= make_verbs((project / "README.md").read_text())
    for page in pages(project):
        missing = make_verbs(page.read_text()) - defined
        assert not missing, f"{page.relative_to(project)} mentions `make {sorted(missing)}`, which the Makefile lacks"


def test_the_verb_check_catches_an_unknown_verb():
    text = ("Run `make setup repro` then `make monitor BATCH=<csv or parquet>`\n"
            "```bash\nmake -k repro gates BASELINE=main   # then make nothing\nmake deploy-all &\n```\n")
    assert make_verbs(text) == {"setup", "repro", "monitor", "gates", "deploy-all"}


def layout_paths(readme: str) -> list[str]:
    """The paths the README's layout tree names, nested by indentation (two spaces a level)."""
    block = FENCE.search(readme[readme.index("## Layout"):]).group(1)
    paths, parents = [], []
    for line in block.splitlines():
        m = re.match(r"^( *)(\S.*?)(?:\s+<-.*)?$", line)
        if not m or len(m.group(1)) >= 20:
            continue  # a continuation of the description above
        depth = len(m.group(1)) // 2
        parents = parents[:depth]
        names = [n.strip() for n in m.group(2).split(" / ")]
        if len(names) == 1 and re.fullmatch(r"[\w.-]+\.\w+/\.\w+", names[0]):  # use_case.yaml/.py
            stem = names[0].split(".", 1)[0]
            names = [names[0].split("/")[0], stem + names[0].split("/")[1]]
        paths += ["/".join([*parents, n]).replace("//", "/") for n in names]
        if names[0].endswith("/"):
            parents.append(names[0].rstrip("/"))
    return paths


def test_layout_tree_names_only_what_exists(project):
    """Every path in the layout exists in the bake, or is one the pipeline or the service writes."""
    readme = (project / "README.md").read_text()
    paths = layout_paths(readme)
    assert len(paths) >= 30 and "contract.yaml" in paths, paths
    written = (project / "dvc.yaml").read_text() + "\ndvc.lock"  # dvc.lock: DVC's own record of a run
    ignored = [line.strip() for line in (project / ".gitignore").read_text().splitlines() if line.strip().endswith("/")]
    missing = [p for p in paths if not (project / p).exists() and p.rstrip("/") not in written
               and not any(p.startswith(i) for i in ignored) and not any(o.startswith(p) for o in written.split())]
    assert missing == []


def test_the_layout_parser_nests_and_splits():
    readme = "## Layout\n\n```\na.yaml / a.lock    <- x\nsrc/pkg/\n  core/     <- y\n    use_case.yaml/.py <- z\n" \
             "                            continued\n  data/     <- w\nb/        <- v\n```\n"
    assert layout_paths(readme) == ["a.yaml", "a.lock", "src/pkg/", "src/pkg/core/", "src/pkg/core/use_case.yaml",
                                    "src/pkg/core/use_case.py", "src/pkg/data/", "b/"]


def test_nothing_is_left_unrendered(project):
    for page in pages(project):
        text = page.read_text()
        for token in ("{{", "{%", "{#", "cookiecutter."):
            assert token not in text, f"{page.relative_to(project)} still holds {token!r}"


def test_no_other_use_cases_columns_in_the_bake(project):
    """A credit bake never names a fraud feature and a fraud bake never a credit one (issue 20, item 7)."""
    ours = yaml.safe_load((project / "contract.yaml").read_text())
    other = "fraud_detection" if ours["name"] == "credit_applications" else "credit_scoring"
    theirs = yaml.safe_load((TEMPLATE / "{{cookiecutter.project}}" / "_use_cases" / other / "contract.yaml").read_text())
    # Feature names with an underscore are unmistakable; a one-word name (amount, channel) is also English.
    words = {c["name"] for c in theirs["columns"] if c["role"] == "feature" and "_" in c["name"]}
    words -= {c["name"] for c in ours["columns"]}
    assert len(words) >= 5, words
    pattern = re.compile(r"\b(" + "|".join(sorted(words)) + r")\b")
    found = []
    for rel in sorted(generated_files(project)):
        if rel == "uv.lock" or not (project / rel).is_file():
            continue
        try:
            text = (project / rel).read_text()
        except UnicodeDecodeError:
            continue  # pictures
        found += [f"{rel}:{text.count(chr(10), 0, m.start()) + 1}: {m.group(0)}" for m in pattern.finditer(text)]
    assert found == []


def test_no_package_placeholder_in_the_bake(project):
    """Paths and commands name the real package, never `<package>`."""
    found = []
    for rel in sorted(generated_files(project)):
        try:
            text = (project / rel).read_text()
        except UnicodeDecodeError:
            continue
        if "<package>" in text:
            found.append(rel)
    assert found == []
