"""The facts of this repository's use case, read from ``use_case.yaml`` beside this module.

The headline metric, the decision wording, the outcome compared between groups and the
model card's text live there, once, so changing one changes the gate, the fairness stage,
the decision service and the card together.
"""

from __future__ import annotations

import functools
import importlib.util
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any

import yaml

from .errors import UserError

PACKAGE = __package__.rsplit(".", 1)[0]
# Parts of the repository the card's text may depend on (``requires:`` in use_case.yaml).
CAPABILITIES = ("serving", "monitoring", "release")


@dataclass(frozen=True)
class UseCase:
    """What the model decides and how its outputs are named."""

    name: str
    title: str
    headline_metric: str
    explain_scoring: str
    score: str
    decisions: dict[str, str]  # {"adverse": ..., "favourable": ...}
    fairness_outcome: str
    fairness_outcome_label: str
    reason_codes: bool
    fairness_definitions: dict[str, str]
    card: dict[str, Any]

    def decision(self, adverse: bool) -> str:
        """The word for one decision, e.g. ``decline`` / ``approve``."""
        return self.decisions["adverse" if adverse else "favourable"]


@functools.cache
def load() -> UseCase:
    """This repository's use case (baked in by the template)."""
    text = resources.files(__package__).joinpath("use_case.yaml").read_text(encoding="utf-8")
    raw = yaml.safe_load(text)
    try:
        return UseCase(**raw)
    except TypeError as exc:
        raise UserError(f"{__package__}/use_case.yaml: {exc}") from None


def capabilities(root: Path = Path()) -> dict[str, bool]:
    """Which optional parts this repository has, so documents claim only what exists."""
    return {
        "serving": importlib.util.find_spec(f"{PACKAGE}.serving") is not None,
        "monitoring": importlib.util.find_spec(f"{PACKAGE}.monitoring") is not None,
        "release": (root / ".github" / "workflows" / "release.yml").exists(),
    }


def applicable(items: list[Any], have: dict[str, bool]) -> list[str]:
    """The list items whose ``requires:`` part exists (plain strings always apply)."""
    out = []
    for item in items:
        if isinstance(item, str):
            out.append(item)
        elif have.get(item["requires"], False):
            out.append(item["text"])
    return out
