"""Validate every answer before anything is written.

A bad answer stops generation with a message naming the option, the value and the rule;
cookiecutter then removes the half-made output directory, so nothing is left behind.
"""

from __future__ import annotations

import json
import keyword
import re
import sys

CONTEXT = json.loads({{ cookiecutter | jsonify | tojson }})

CHOICES = {
    "use_case": ["credit_scoring", "fraud_detection"],
    "python_version": ["3.11", "3.12", "3.13"],
    "dvc_remote": ["local", "s3", "gcs", "azure"],
    "deploy_target": ["kubernetes", "bentocloud", "none"],
    "publish_report_images": ["no", "yes"],
    "compute": ["pandas", "spark"],
}
# Import names the generated package must not take: they would shadow a dependency.
DEPENDENCY_MODULES = {
    "bentoml", "dvc", "fairlearn", "great_expectations", "jsonschema", "matplotlib", "mlflow",
    "numpy", "pandas", "pyarrow", "pyspark", "pytest", "hypothesis", "sklearn", "skops", "yaml", "tests",
}
DISTRIBUTION = re.compile(r"^[a-z][a-z0-9]*(-[a-z0-9]+)*$")
PACKAGE = re.compile(r"^[a-z][a-z0-9_]*$")
GITHUB_OWNER = re.compile(r"^[A-Za-z0-9](?:[A-Za-z0-9]|-(?=[A-Za-z0-9])){0,38}$")
EMAIL = re.compile(r"^[A-Za-z0-9.!#$%&'*+/=?^_`{|}~-]+@[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?(?:\.[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?)+$")


def problems(ctx: dict) -> list[str]:
    found = []

    def bad(option: str, rule: str) -> None:
        found.append(f"option '{option}' = {ctx.get(option)!r}: {rule}")

    name = str(ctx.get("project_name", ""))
    if not name.strip() or len(name) > 80 or any(not ch.isprintable() for ch in name) or re.search(r"[\"'`\\{}<>$]", name):
        bad("project_name", "must be 1-80 printable characters without quotes, backslashes, braces, angle brackets or '$'")
    project = str(ctx.get("project", ""))
    if not DISTRIBUTION.match(project) or len(project) > 64:
        bad("project", "must be a normalised distribution name: lowercase letters, digits and single hyphens, "
                       "starting with a letter, at most 64 characters (e.g. credit-risk-model)")
    package = str(ctx.get("package", ""))
    if not PACKAGE.match(package) or not package.isidentifier():
        bad("package", "must be a valid Python identifier in lowercase letters, digits and underscores, starting with a letter")
    elif keyword.iskeyword(package) or keyword.issoftkeyword(package):
        bad("package", "is a Python keyword")
    elif package in sys.stdlib_module_names:
        bad("package", f"shadows the Python standard library module '{package}'; choose another import name")
    elif package in DEPENDENCY_MODULES:
        bad("package", f"shadows the dependency '{package}' the generated project imports; choose another import name")
    for option, allowed in CHOICES.items():
        if ctx.get(option) not in allowed:
            bad(option, f"must be one of {', '.join(allowed)}")
    if not GITHUB_OWNER.match(str(ctx.get("github_owner", ""))):
        bad("github_owner", "must be a GitHub user or organisation name: letters, digits and single hyphens, at most 39 characters")
    author = str(ctx.get("author_name", ""))
    if not author.strip() or any(not ch.isprintable() for ch in author) or re.search(r"[\"\\<>]", author):
        bad("author_name", "must be non-empty printable text without double quotes, backslashes or angle brackets")
    email = str(ctx.get("author_email", ""))
    if not EMAIL.match(email) or len(email) > 254:
        bad("author_email", "must be an email address like name@example.com")
    return found


def main() -> int:
    found = problems(CONTEXT)
    if found:
        print("cookiecutter-fintech-mlops: cannot generate the project:", file=sys.stderr)
        for line in found:
            print(f"  - {line}", file=sys.stderr)
        print("Nothing was written. Rerun with corrected answers.", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
