"""The data contract (``contract.yaml``): loading, checking and everything derived from it.

No other module names a column. Feature lists, dtypes, categories, monotonic constraints,
reason codes and the validation suite are all derived from the contract loaded here.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import yaml

from .config import ROW_KEY
from .errors import UserError

ROLES = ("id", "pii", "protected", "feature", "target", "timestamp")
DTYPES = ("string", "int", "float", "category", "datetime")
MONOTONE = ("increasing", "decreasing", "none")
_COLUMN_KEYS = {
    "name",
    "role",
    "dtype",
    "description",
    "min",
    "max",
    "categories",
    "nullable",
    "unique",
    "monotone",
    "reason_code",
    "reason",
    "positive",
    "proxy_for",
    "monetary",
}


class ContractError(UserError, ValueError):
    """The contract file itself is malformed."""


@dataclass(frozen=True)
class Column:
    """One column of the contract: role, dtype, bounds, categories and reason text."""

    name: str
    role: str
    dtype: str
    description: str = ""
    min: float | None = None
    max: float | None = None
    categories: tuple[Any, ...] | None = None
    nullable: bool = False
    unique: bool = False
    monotone: str = "none"
    reason_code: str | None = None
    reason: str | None = None
    positive: Any = None
    proxy_for: tuple[str, ...] = ()  # protected attributes this column is known to stand in for
    monetary: bool = False  # the row's value in money (a transaction's amount): the validation pack's value bands

    @property
    def is_numeric(self) -> bool:
        """Whether the column holds numbers (int or float)."""
        return self.dtype in ("int", "float")

    @property
    def numeric_categories(self) -> bool:
        """Whether the declared categories are numbers, booleans included: compared as values, not text.

        Booleans count because scikit-learn's encoder orders them as the numbers 0 and 1; read
        as text ("True"), no value would match its category and every one would encode as unknown.
        """
        return bool(self.categories) and all(isinstance(c, (bool, int, float)) for c in self.categories)

    @property
    def monotonic_cst(self) -> int:
        """Monotone constraint for scikit-learn: 1 increasing, -1 decreasing, 0 none."""
        return {"increasing": 1, "decreasing": -1}.get(self.monotone, 0)


@dataclass(frozen=True)
class Contract:
    """The data contract: every column and what is derived from it."""

    name: str
    version: int
    description: str
    columns: tuple[Column, ...]
    subject: str | None = None
    path: str = "contract.yaml"
    _by_name: dict[str, Column] = field(default_factory=dict, repr=False, compare=False)

    def __post_init__(self) -> None:
        self._by_name.update({c.name: c for c in self.columns})

    # --- lookups -------------------------------------------------------------------------
    def __getitem__(self, name: str) -> Column:
        try:
            return self._by_name[name]
        except KeyError:
            raise KeyError(f"{self.path}: no column named {name!r}") from None

    @property
    def column_names(self) -> list[str]:
        """Every declared column, in contract order."""
        return [c.name for c in self.columns]

    def names(self, role: str) -> list[str]:
        """The columns with ``role``."""
        return [c.name for c in self.columns if c.role == role]

    def categories(self, name: str) -> list[Any]:
        """The declared categories of column ``name`` (empty if none)."""
        return list(self[name].categories or ())

    @property
    def features(self) -> list[str]:
        """The model's input columns."""
        return self.names("feature")

    @property
    def numeric_features(self) -> list[str]:
        """Features with an int or float dtype."""
        return [c.name for c in self.columns if c.role == "feature" and c.is_numeric]

    @property
    def categorical_features(self) -> list[str]:
        """Features with dtype category."""
        return [c.name for c in self.columns if c.role == "feature" and c.dtype == "category"]

    @property
    def pii(self) -> list[str]:
        """Columns holding personal data (pseudonymised by prepare, never features)."""
        return self.names("pii")

    @property
    def protected(self) -> list[str]:
        """Protected attributes (kept apart, used only to measure fairness)."""
        return self.names("protected")

    @property
    def proxies(self) -> list[str]:
        """Columns flagged (``proxy_for``) as standing in for a protected attribute: never model inputs."""
        return [c.name for c in self.columns if c.proxy_for]

    @property
    def target(self) -> str:
        """The target column."""
        return self.names("target")[0]

    @property
    def positive_label(self) -> Any:
        """The target value that counts as the positive class (default, fraud)."""
        return self[self.target].positive

    @property
    def id_column(self) -> str | None:
        """The id column, if the contract declares one."""
        ids = self.names("id")
        return ids[0] if ids else None

    @property
    def row_key(self) -> str:
        """The column that keys rows across prepared files: the id column, or one ``prepare`` adds."""
        return self.id_column or ROW_KEY

    @property
    def monetary(self) -> str | None:
        """The column holding each row's value in money (``monetary: true``), if the contract declares one."""
        return next((c.name for c in self.columns if c.monetary), None)

    @property
    def timestamp(self) -> str | None:
        """The timestamp column, if the contract declares one."""
        ts = self.names("timestamp")
        return ts[0] if ts else None

    def model_input_order(self) -> list[str]:
        """Feature order after the feature pipeline: numeric first, then categorical."""
        return self.numeric_features + self.categorical_features

    def monotonic_cst(self) -> list[int]:
        """Monotone constraints in model input order."""
        return [self[name].monotonic_cst for name in self.model_input_order()]

    # --- data ---------------------------------------------------------------------------
    def coerce(self, df: pd.DataFrame) -> pd.DataFrame:
        """Cast the columns the contract declares to their dtypes (for model input).

        Values that do not fit become missing; validation is the stage that reports them.
        """
        out = df.copy()
        for col in self.columns:
            if col.name not in out.columns:
                continue
            s = out[col.name]
            if col.dtype in ("int", "float"):
                out[col.name] = pd.to_numeric(s, errors="coerce").astype("float64")
            elif col.dtype == "category":
                if col.numeric_categories:
                    out[col.name] = pd.to_numeric(s, errors="coerce")
                else:
                    out[col.name] = s.astype("string").astype(object).where(s.notna(), np.nan)
            elif col.dtype == "datetime":
                out[col.name] = pd.to_datetime(s, errors="coerce")
            else:
                out[col.name] = s.astype("string").astype(object).where(s.notna(), np.nan)
        return out

    def reason_catalogue(self) -> list[dict[str, str]]:
        """Every feature's reason code and consumer-facing text."""
        return [
            {"feature": c.name, "code": c.reason_code or "", "text": c.reason or ""} for c in self.columns if c.role == "feature"
        ]


def _fail(path: str, where: str, message: str) -> None:
    raise ContractError(f"{path}: {where}: {message}")


def _column(path: str, index: int, raw: Any) -> Column:
    if not isinstance(raw, dict):
        _fail(path, f"columns[{index}]", "each column must be a mapping with at least name, role and dtype")
    name = raw.get("name")
    if not isinstance(name, str) or not name:
        _fail(path, f"columns[{index}]", "missing 'name'")
    where = f"column {name!r}"
    unknown = set(raw) - _COLUMN_KEYS
    if unknown:
        _fail(path, where, f"unknown key(s) {sorted(unknown)}; allowed: {sorted(_COLUMN_KEYS)}")
    role, dtype = raw.get("role"), raw.get("dtype")
    if role not in ROLES:
        _fail(path, where, f"role {role!r} is not one of {list(ROLES)}")
    if dtype not in DTYPES:
        _fail(path, where, f"dtype {dtype!r} is not one of {list(DTYPES)}")
    lo, hi = raw.get("min"), raw.get("max")
    for key, val in (("min", lo), ("max", hi)):
        if val is not None and (dtype not in ("int", "float") or not isinstance(val, (int, float))):
            _fail(path, where, f"'{key}' is only allowed as a number on int/float columns (got {val!r})")
    if lo is not None and hi is not None and lo > hi:
        _fail(path, where, f"min {lo} is greater than max {hi}")
    cats = raw.get("categories")
    if dtype == "category" and not cats:
        _fail(path, where, "dtype 'category' needs a non-empty 'categories' list")
    if cats is not None and (not isinstance(cats, list) or len(set(map(str, cats))) != len(cats)):
        _fail(path, where, "'categories' must be a list of distinct values")
    monotone = raw.get("monotone", "none")
    if monotone not in MONOTONE:
        _fail(path, where, f"monotone {monotone!r} is not one of {list(MONOTONE)}")
    if monotone != "none" and (role != "feature" or dtype not in ("int", "float")):
        _fail(path, where, "'monotone' applies only to numeric features")
    if role == "feature":
        if not raw.get("reason_code") or not raw.get("reason"):
            _fail(path, where, "every feature needs a 'reason_code' and consumer-facing 'reason' text")
        if dtype in ("string", "datetime"):
            _fail(path, where, f"a feature must be int, float or category, not {dtype!r}")
    proxy_for = raw.get("proxy_for") or []
    proxy_for = [proxy_for] if isinstance(proxy_for, str) else proxy_for
    if not isinstance(proxy_for, list) or not all(isinstance(p, str) and p for p in proxy_for):
        _fail(path, where, "'proxy_for' must name a protected column, or list several")
    if proxy_for and role == "feature":
        _fail(
            path,
            where,
            f"is flagged as a proxy for protected attribute(s) {proxy_for} but has role 'feature': a proxy "
            "must never be a model input; give it role 'protected' (kept apart, used only to measure "
            "fairness) or remove the column",
        )
    monetary = raw.get("monetary", False)
    if not isinstance(monetary, bool) or (monetary and dtype not in ("int", "float")):
        _fail(path, where, "'monetary' must be true or false, and true only on an int/float column")
    if role == "target":
        if not cats or len(cats) != 2:
            _fail(path, where, "the target must declare exactly two 'categories'")
        if raw.get("positive") not in cats:
            _fail(path, where, f"'positive' must be one of the target categories {cats}")
    return Column(
        name=name,
        role=role,
        dtype=dtype,
        description=str(raw.get("description", "")).strip(),
        min=lo,
        max=hi,
        categories=tuple(cats) if cats else None,
        nullable=bool(raw.get("nullable", False)),
        unique=bool(raw.get("unique", False)),
        monotone=monotone,
        reason_code=raw.get("reason_code"),
        reason=raw.get("reason"),
        positive=raw.get("positive"),
        proxy_for=tuple(proxy_for),
        monetary=monetary,
    )


def load_contract(path: str | Path = "contract.yaml") -> Contract:
    """Read and check ``contract.yaml``; a problem is one :class:`ContractError` naming the column."""
    path = str(path)
    try:
        with open(path, encoding="utf-8") as fh:
            raw = yaml.safe_load(fh)
    except FileNotFoundError:
        raise ContractError(f"{path}: file not found; every pipeline stage needs the data contract") from None
    except yaml.YAMLError as exc:
        raise ContractError(f"{path}: not valid YAML: {exc}") from None
    if not isinstance(raw, dict) or not isinstance(raw.get("columns"), list) or not raw["columns"]:
        raise ContractError(f"{path}: expected a mapping with a non-empty 'columns' list")
    columns = tuple(_column(path, i, c) for i, c in enumerate(raw["columns"]))
    names = [c.name for c in columns]
    dupes = sorted({n for n in names if names.count(n) > 1})
    if dupes:
        raise ContractError(f"{path}: duplicate column name(s) {dupes}")
    for role, lo, hi in (("target", 1, 1), ("id", 0, 1), ("timestamp", 0, 1), ("feature", 1, None)):
        count = sum(c.role == role for c in columns)
        if count < lo or (hi is not None and count > hi):
            want = f"exactly {lo}" if lo == hi else (f"at least {lo}" if hi is None else f"at most {hi}")
            raise ContractError(f"{path}: needs {want} column(s) with role {role!r}, found {count}")
    codes = [c.reason_code for c in columns if c.role == "feature"]
    dup_codes = sorted({c for c in codes if codes.count(c) > 1})
    if dup_codes:
        raise ContractError(f"{path}: reason_code(s) {dup_codes} are used by more than one feature")
    protected = {c.name for c in columns if c.role == "protected"}
    for c in columns:
        unknown_targets = [p for p in c.proxy_for if p not in protected]
        if unknown_targets:
            raise ContractError(
                f"{path}: column {c.name!r}: 'proxy_for' names {unknown_targets}, which are not "
                f"protected columns (protected: {sorted(protected)})"
            )
    if sum(c.monetary for c in columns) > 1:
        raise ContractError(f"{path}: at most one column may be 'monetary: true' (the row's value in money)")
    subject = raw.get("subject")
    if subject is not None and (subject not in names or next(c for c in columns if c.name == subject).role != "pii"):
        raise ContractError(f"{path}: 'subject' must name a column with role 'pii' (got {subject!r})")
    return Contract(
        name=str(raw.get("name", "dataset")),
        version=int(raw.get("version", 1)),
        description=str(raw.get("description", "")).strip(),
        columns=columns,
        subject=subject,
        path=path,
    )
