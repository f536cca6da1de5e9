"""This repository's use case: one object, chosen when the template was baked.

Its facts (headline metric, decision words, the outcome compared between groups, the model
card's text) are read from ``use_case.yaml`` beside this module; its behaviour (the metrics,
the headline scorer, the fairness outcome, the explanations it can give) is the subclass in
``{{ cookiecutter.use_case }}.py``. Every stage, the service and the card ask :func:`load`, so
no module compares a use-case name.
"""

from __future__ import annotations

import functools
import importlib.util
from abc import ABC, abstractmethod
from dataclasses import dataclass
from enum import StrEnum
from importlib import resources
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar, Protocol

import numpy as np
import yaml

from .decision import Outcome
from .errors import UserError

if TYPE_CHECKING:
    import pandas as pd
    from sklearn.pipeline import Pipeline

    from .contract import Contract
    from .params import Params

PACKAGE = __package__.rsplit(".", 1)[0]
# Parts of the repository the card's text may depend on (``requires:`` in use_case.yaml).
CAPABILITIES = ("serving", "monitoring", "release")


class Explanations(StrEnum):
    """How decisions are explained (``model.explanations`` in params.yaml)."""

    # Exact per-feature contributions of an additive model, as the contract's reason codes (core/reasons.py).
    REASON_CODES = "reason_codes"
    # Shapley contributions of a model with interactions, on request (core/attributions.py, needs shap).
    FEATURE_CONTRIBUTIONS = "feature_contributions"


class FeatureExplainer(Protocol):
    """Per-record top feature contributions (the service's ``top_features``)."""

    def top_features(self, frame: pd.DataFrame) -> list[list[dict[str, Any]]]:
        """Per record, its leading features: feature, value, contribution, direction."""


@dataclass(frozen=True)
class UseCase(ABC):
    """What the model decides, how its outputs are named and measured, and how it explains itself."""

    name: str
    title: str
    headline_metric: str
    explain_scoring: str
    score: str
    decisions: dict[str, str]  # {"adverse": ..., "favourable": ..., "refer": ...}
    fairness_outcome: str
    fairness_outcome_label: str
    fairness_definitions: dict[str, str]
    card: dict[str, Any]

    # The explanation kinds this repository can give (its modules and dependencies allow).
    explanations: ClassVar[tuple[Explanations, ...]]

    def decision(self, adverse: bool) -> str:
        """The word for one decision, e.g. ``decline`` / ``approve``."""
        return self.decisions["adverse" if adverse else "favourable"]

    def word(self, outcome: Outcome) -> str:
        """The word for an :class:`~.decision.Outcome`, e.g. ``refer``."""
        return self.decisions[outcome.key]

    @abstractmethod
    def metrics(self, y: np.ndarray, score: np.ndarray, threshold: float, params: Params) -> dict[str, float]:
        """The use case's metrics on held-out labels and scores (unrounded; see ``metrics.compute``)."""

    @abstractmethod
    def headline_score(self, y: np.ndarray, score: np.ndarray) -> float:
        """The headline ranking metric (``headline_metric``) of labels ``y`` and scores."""

    @abstractmethod
    def outcome_rate(self, flag_rate: np.ndarray) -> np.ndarray:
        """The fairness outcome (``fairness_outcome``) from the share of adverse decisions."""

    def check_params(self, params: Params) -> None:
        """Refuse settings this use case cannot run with (``ValueError`` naming the key); by default none."""
        return None

    def explanation_background(self, train: pd.DataFrame, contract: Contract, seed: int) -> list[dict[str, Any]] | None:
        """Training rows the service's feature contributions are measured against (None: none needed)."""
        return None

    def feature_explainer(self, pipeline: Pipeline, contract: Contract, background: Path) -> FeatureExplainer:
        """The explainer of ``Explanations.FEATURE_CONTRIBUTIONS`` (only where :attr:`explanations` has it)."""
        raise UserError(f"{self.title} explains by {', '.join(self.explanations)} only")


@functools.cache
def load() -> UseCase:
    """This repository's use case (baked in by the template)."""
    from .{{ cookiecutter.use_case }} import USE_CASE

    text = resources.files(__package__).joinpath("use_case.yaml").read_text(encoding="utf-8")
    raw = yaml.safe_load(text)
    try:
        return USE_CASE(**raw)
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
