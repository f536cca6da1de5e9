"""Decisions for records: the pipeline's model, threshold and explanations, nothing else.

The model is the one ``model.kind`` trained (params.yaml): the boosted pipeline or the points
scorecard (core/scorecard.py), loaded from the same file through the same allowlist.
As the model was trained to be explained (``model.explanations``, recorded in its metadata):
adverse decisions carry exact reason codes (``core/reasons.py``), or any decision carries its top
feature contributions (the use case's explainer) when the caller asks for them.

Loads exactly what the pipeline produced (``models/model.skops`` through the skops allowlist,
``models/model_meta.json``, ``contract.yaml``); no MLflow, no network.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from ..core import config, model, reasons, use_case
from ..core.contract import Contract, load_contract
from ..core.decision import DecisionRule, Outcome
from ..core.reports import ModelMeta
from ..core.use_case import Explanations, FeatureExplainer


@dataclass(frozen=True)
class Identity:
    """Which model answered: enough to find its card, run and data years later."""

    package_version: str
    run_id: str
    git_sha: str
    contract: str
    contract_version: int

    def as_dict(self) -> dict[str, Any]:
        """JSON-ready."""
        return {
            "package_version": self.package_version,
            "run_id": self.run_id,
            "git_sha": self.git_sha,
            "contract": self.contract,
            "contract_version": self.contract_version,
        }


@dataclass(frozen=True)
class Verdicts:
    """A batch's answers as arrays (:meth:`Decider.verdicts`)."""

    scores: np.ndarray  # probability of the positive class
    outcomes: np.ndarray  # core/decision.py's Outcome codes
    explained: np.ndarray  # the records given reasons (adverse and referred), as row indices
    contributions: pd.DataFrame | None  # those records' contributions per feature (None: no such record)


class Decider:
    """Scores records and turns scores into decisions with their reasons."""

    def __init__(self, root: Path = Path(), band: tuple[float, float] | None = None) -> None:
        self.contract: Contract = load_contract(root / "contract.yaml")
        self.meta = ModelMeta.read(root / config.MODEL_META)
        self.pipeline = model.load(root / config.MODEL)
        self.facts = use_case.load()
        self.threshold = float(self.meta.threshold)
        # The threshold and params.yaml's serving.refer_band (a ParamsError if the band misses the threshold).
        self.rule = DecisionRule(self.threshold, band)
        package = __package__.split(".")[0]
        try:
            version = metadata.version(package.replace("_", "-"))
        except metadata.PackageNotFoundError:
            from .. import __version__ as version
        self.identity = Identity(version, self.meta.run_id, self.meta.git_sha, self.contract.name, self.contract.version)
        self.features = self.contract.model_input_order()
        # The boosted model's: no DataFrame per request (model.RecordScorer); a scorecard's (model.kind:
        # scorecard): each record's points per feature, the reason codes' measure too (core/scorecard.py).
        self.scorer = model.record_scorer(self.pipeline)
        self.explains = self.meta.explanations is Explanations.REASON_CODES
        if self.explains:
            reasons.explainer(self.pipeline, self.contract)  # computed once, not on the first decline
        # Feature contributions are given on request; their explainer (shap, numba) is loaded
        # here, never at import of the service module.
        self.feature_explainer: FeatureExplainer | None = (
            self.facts.feature_explainer(self.pipeline, self.contract, root / config.EXPLAIN_BACKGROUND)
            if self.meta.explanations is Explanations.FEATURE_CONTRIBUTIONS
            else None
        )

    def frame(self, records: list[dict[str, Any]]) -> pd.DataFrame:
        """Records as the model's input frame (missing optional features become NaN)."""
        return pd.DataFrame.from_records(records, columns=self.features)

    def verdicts(self, x: np.ndarray) -> Verdicts:
        """Scores, decision codes and (a reason-code model) the contributions behind the reasons, as arrays.

        The one place a score becomes a decision: the service (:meth:`outcomes`, :meth:`decide`) and
        portfolio scoring (``make score``, scoring/batch.py, which builds its columns from these
        arrays without a Python object per record) both call it, so a record gets the same answer.
        """
        scores = self.scorer.proba(x)
        outcomes = self.rule.outcomes(scores)  # approve / refer / decline (core/decision.py)
        # Reason codes for adverse and referred decisions (the reviewer reads them): an approval
        # needs none, and costs nothing.
        rows = np.flatnonzero(outcomes != Outcome.FAVOURABLE) if self.explains else np.empty(0, dtype=np.intp)
        contributions = None
        if len(rows):
            explainer = reasons.explainer(self.pipeline, self.contract)
            contributions = reasons.record_contributions(self.scorer, explainer, x[rows])
        return Verdicts(scores, outcomes, rows, contributions)

    def words(self) -> dict[int, str]:
        """Each decision code's word (``approve``, ``refer``, ``decline`` or the use case's)."""
        return {int(o): self.facts.word(o) for o in Outcome}

    def outcomes(self, x: np.ndarray) -> tuple[np.ndarray, list[str], list[list[dict[str, str]]] | None]:
        """Scores, decisions and (a reason-code model) each record's reasons, for records the scorer encoded."""
        v = self.verdicts(x)
        words = self.words()
        decisions = [words[o] for o in v.outcomes.tolist()]
        if not self.explains:
            return v.scores, decisions, None
        explained: dict[int, list[dict[str, Any]]] = {}
        if v.contributions is not None:
            codes = reasons.codes_from_contributions(v.contributions, reasons.explainer(self.pipeline, self.contract))
            explained = dict(zip(v.explained.tolist(), codes, strict=True))
        why = [
            [{"code": r["code"], "text": r["text"], "feature": r["feature"]} for r in explained.get(i, [])] for i in range(len(x))
        ]
        return v.scores, decisions, why

    def decide(self, records: list[dict[str, Any]], explain: list[bool] | None = None) -> list[dict[str, Any]]:
        """One decision per record: id, score, decision (core/decision.py), threshold, model identity and reasons.

        ``explain`` (one bool per record) asks for ``top_features`` on those records; it applies
        only to a model explained by feature contributions (the request model refuses it otherwise).
        """
        x = self.scorer.matrix(records)  # encoded once, for the scores and the reasons
        scores, decisions, why = self.outcomes(x)
        top: dict[int, list[dict[str, Any]]] = {}
        if self.feature_explainer is not None and explain and any(explain):
            if len(explain) != len(records):
                raise ValueError(f"explain has {len(explain)} flags for {len(records)} records")
            rows = np.flatnonzero(explain)
            frame = self.frame([records[i] for i in rows])
            top = dict(zip(rows.tolist(), self.feature_explainer.top_features(frame), strict=True))
        identity = self.identity.as_dict()
        out = []
        for i, score in enumerate(scores.tolist()):
            decision: dict[str, Any] = {
                "decision_id": str(uuid.uuid4()),
                "score": score,
                "decision": decisions[i],
                "threshold": self.threshold,
                "model": identity,
            }
            if why is not None:
                decision["reasons"] = why[i]
            if i in top:
                decision["top_features"] = top[i]
            out.append(decision)
        return out
