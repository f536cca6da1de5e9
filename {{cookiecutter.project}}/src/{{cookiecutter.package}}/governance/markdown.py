"""The Jinja environment the governance documents render with (the card, the regulatory documents).

A module of its own so that the regulatory stage depends on the templates, not on the card's
imports (evaluation, tracking): dvc.yaml's deps for each stage are exactly the layers it imports.
"""

from __future__ import annotations


def markdown_env():
    """The Jinja environment of governance/templates (the card, the regulatory documents): Markdown, strict."""
    import jinja2

    return jinja2.Environment(
        loader=jinja2.PackageLoader(__package__, "templates"),
        trim_blocks=True,
        lstrip_blocks=True,
        keep_trailing_newline=True,
        undefined=jinja2.StrictUndefined,
        autoescape=False,  # Markdown, not HTML  # noqa: S701
    )
