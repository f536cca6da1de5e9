"""Request models generated from the contract: features only, with their types and bounds.

A field the contract declares as PII, protected, id, target or timestamp, or does not
declare at all, is refused by name: the service never accepts data it must not see. The one
field that is not a feature, ``explain`` (a JSON boolean, default false), exists only for a model
explained by feature contributions (``model.explanations``): it asks for the record's top ones.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, create_model, model_validator
from pydantic_core import PydanticCustomError

from ..core.contract import Column, Contract
from ..core.use_case import Explanations

MAX_BATCH = 1000  # records per /decide_batch request
EXPLAIN = "explain"  # the request field asking for top feature contributions (feature_contributions only)
# Each explained record costs tens of milliseconds (docs/serving.md, "Cost of explanations"): a batch asking
# for more would outlast the request timeout, so it is refused up front with a clear message.
MAX_EXPLAIN = 32

_WHY = {
    "pii": "is personal data (role pii): the service never takes it",
    "protected": "is a protected attribute: it must never influence a decision",
    "id": "is the record id: decisions are keyed by their own decision_id",
    "target": "is the outcome the model predicts",
    "timestamp": "is the record's timestamp, not a model input",
}


def _json_type(value: Any) -> str:
    """How a JSON value was sent, for an error message (``true``, ``a string``, ...)."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str):
        return "a string"
    if isinstance(value, float):
        return f"the number {value!r}"
    return {int: "an integer", list: "an array", dict: "an object"}.get(type(value), type(value).__name__)


def _number(value: Any) -> Any:
    # A decision is made on what was sent: pydantic would turn true into 1.0 and "4.9e4" into
    # 49000.0, so anything but a JSON number is refused before it can be coerced.
    if value is None or (isinstance(value, (int, float)) and not isinstance(value, bool)):
        return value
    raise PydanticCustomError("number_type", "expected a JSON number, got {got}", {"got": _json_type(value)})


def _integer(value: Any) -> Any:
    # JSON has one number type, and JSON Schema's "integer" (the OpenAPI document's type for
    # these fields) is any number without a fractional part: 3.0 is the integer 3, as a JavaScript
    # or pandas client may write it; 3.5, true and "3" are refused.
    if isinstance(value, float) and value.is_integer():
        return int(value)
    if value is None or (isinstance(value, int) and not isinstance(value, bool)):
        return value
    raise PydanticCustomError("integer_type", "expected a JSON integer, got {got}", {"got": _json_type(value)})


def _field(col: Column) -> tuple[Any, Any]:
    """The pydantic type and default of one feature: strictly the JSON type the contract's dtype names."""
    if col.categories:
        kind: Any = Literal[tuple(col.categories)]
    else:
        bounds = {k: v for k, v in (("ge", col.min), ("le", col.max)) if v is not None}
        if col.dtype == "int":
            kind, strict = Annotated[int, Field(strict=True, **bounds)], _integer
        else:
            kind, strict = Annotated[float, Field(allow_inf_nan=False, **bounds)], _number
    description = col.description or col.name
    if col.nullable:
        kind = kind | None
    if not col.categories:
        # Outside the union, so a wrong type is one error naming the field, not one per member.
        kind = Annotated[kind, BeforeValidator(strict)]
    if col.nullable:
        return kind, Field(default=None, description=description)
    return kind, Field(description=description)


def record_model(contract: Contract, explanations: Explanations) -> type[BaseModel]:
    """The model of one record: every feature of the contract, and ``explain`` where contributions are given."""
    declared = {c.name: c.role for c in contract.columns}

    class Base(BaseModel):
        model_config = ConfigDict(extra="forbid", strict=False)

        @model_validator(mode="before")
        @classmethod
        def _refuse_non_features(cls, data: Any) -> Any:
            if isinstance(data, dict):
                for name in data:
                    role = declared.get(name)
                    if role is not None and role != "feature":
                        raise ValueError(f"field {name!r} is not accepted: it {_WHY[role]}")
            return data

    fields: dict[str, Any] = {c.name: _field(c) for c in contract.columns if c.role == "feature"}
    if explanations is Explanations.FEATURE_CONTRIBUTIONS:
        # Strict: only a JSON true or false; "yes", 1 or "true" are refused by name.
        fields[EXPLAIN] = (
            Annotated[bool, Field(strict=True)],
            Field(default=False, description="Return the record's top feature contributions (top_features)"),
        )
    return create_model("Record", __base__=Base, **fields)


def batch_model(record: type[BaseModel]) -> type[BaseModel]:
    """The model of a batch request: ``{"records": [...]}``, 1 to ``MAX_BATCH`` records (at most ``MAX_EXPLAIN`` explained)."""
    explainable = EXPLAIN in record.model_fields

    class Base(BaseModel):
        model_config = ConfigDict(extra="forbid")

        @model_validator(mode="after")
        def _few_explanations(self) -> Any:
            asked = sum(bool(getattr(r, EXPLAIN)) for r in self.records) if explainable else 0
            if asked > MAX_EXPLAIN:
                raise ValueError(f"records: at most {MAX_EXPLAIN} records of a batch may set {EXPLAIN} to true (got {asked})")
            return self

    return create_model(
        "Batch",
        __base__=Base,
        records=(Annotated[list[record], Field(min_length=1, max_length=MAX_BATCH)], ...),
    )
