"""The reports stages write and others read, as typed models shared by writer and reader.

A stage writes a report with :meth:`Report.write`; the gates, the PR report and the model
card read it with :meth:`Report.read`. A renamed, missing or misspelt key fails the reader
with the file and the key named, instead of quietly dropping out of a PR comment.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Any, Literal, TypeVar

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from .errors import StageOrderError
from .use_case import Explanations

R = TypeVar("R", bound="Report")


class ReportError(StageOrderError):
    """A report file is missing, unreadable or not in the shape its reader expects."""


class Report(BaseModel):
    """Base of every report: strict about unknown keys and types, written as sorted, indented JSON."""

    model_config = ConfigDict(extra="forbid", strict=True)

    @classmethod
    def read(cls: type[R], path: str | Path) -> R:
        """Load and check a report; every problem is a :class:`ReportError` naming the file."""
        path = Path(path)
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
        except FileNotFoundError:
            raise ReportError(f"{path} not found: the stage that writes it did not run (dvc repro)") from None
        except json.JSONDecodeError as exc:
            raise ReportError(f"{path}: not valid JSON ({exc})") from None
        return cls.parse(data, path)

    @classmethod
    def parse(cls: type[R], data: Any, source: str | Path) -> R:
        """Check an already-read report; a wrong shape is a :class:`ReportError` naming ``source`` and the key."""
        try:
            return cls.model_validate(data)
        except ValidationError as exc:
            first = exc.errors(include_url=False)[0]
            where = ".".join(str(p) for p in first["loc"]) or "<root>"
            raise ReportError(f"{source}: '{where}': {first['msg']} ({exc.error_count()} problem(s))") from None

    def write(self, path: str | Path) -> None:
        """Write the report atomically."""
        from .stage import write_json

        write_json(Path(path), self.model_dump(mode="json"))


class ExpectationFailure(BaseModel):
    """One failed (or unevaluable) expectation, in words a person can act on."""

    model_config = ConfigDict(extra="forbid", strict=True)
    column: str
    expectation: str
    kwargs: dict[str, Any] = {}
    unexpected_count: int | None = None
    element_count: int | None = None
    observed_value: Any = None
    examples: list[Any] = []
    error: str | None = None


class ValidationReport(Report):
    """``reports/validation.json``: written by ``validate``, read by train, gates and the PR report."""

    success: bool
    contract: str
    rows: int
    expectations: int  # how many expectations were evaluated
    failed: int
    failures: list[ExpectationFailure]


class FairnessVerdict(BaseModel):
    """One fairness gate's verdict for one protected attribute."""

    model_config = ConfigDict(extra="forbid", strict=True)
    gate: str
    passed: bool
    status: Literal["pass", "warn", "fail"]
    value: float
    threshold: float
    bound: Literal["min", "max"]
    ci: list[float] | None
    detail: str


class FairnessReport(Report):
    """``reports/fairness.json``: written by ``fairness``, read by the gates, the PR report and the card."""

    use_case: str
    threshold: float
    rows: int
    outcome: str
    definitions: dict[str, str]
    settings: dict[str, Any]
    bootstrap_unit: Literal["subject", "row"]
    attributes: dict[str, Any]
    gates: list[FairnessVerdict]
    not_gated: list[dict[str, str]]
    passed: bool


class ExplainReport(Report):
    """``reports/explain.json``: written by ``explain``, read by the model card."""

    permutation_importance: dict[str, Any]
    reason_codes: dict[str, Any]


class ModelMeta(Report):
    """``models/model_meta.json``: the model's threshold and MLflow run, written by ``train``.

    Read by every later stage and by the decision service.
    """

    run_id: str
    tracking_uri: str
    threshold: float
    threshold_source: Literal["params", "cost_tuned"]
    tuning_rows: int | None = None
    # How the service explains this model's decisions (params.yaml: model.explanations).
    explanations: Annotated[Explanations, Field(strict=False)]
    features: list[str]
    data: dict[str, str]
    git_sha: str = "unknown"  # the commit that trained the model


class PrepareSummary(Report):
    """``data/prepared/summary.json``: what ``prepare`` read, erased, dropped and split."""

    rows_in: int
    rows_erased: int
    columns_dropped: list[str]
    rows_train: int
    rows_test: int
