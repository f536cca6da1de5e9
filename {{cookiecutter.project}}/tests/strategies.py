"""Hypothesis strategies derived from the contract: records that satisfy it."""

from __future__ import annotations

import datetime as dt

from hypothesis import strategies as st

from {{ cookiecutter.package }}.core.contract import Column, Contract


def value(col: Column) -> st.SearchStrategy:
    if col.categories:
        base = st.sampled_from(list(col.categories))
    elif col.dtype == "int":
        base = st.integers(int(col.min if col.min is not None else -(10**6)), int(col.max if col.max is not None else 10**6))
    elif col.dtype == "float":
        lo = float(col.min) if col.min is not None else -1e6
        hi = float(col.max) if col.max is not None else 1e6
        base = st.floats(lo, hi, allow_nan=False, allow_infinity=False)
    elif col.dtype == "datetime":
        base = st.datetimes(dt.datetime(2015, 1, 1), dt.datetime(2030, 12, 31))
    else:
        base = st.text(alphabet=st.characters(codec="utf-8", exclude_categories=["Cs", "Cc"]), min_size=1, max_size=40)
    return st.one_of(st.none(), base) if col.nullable else base


def records(contract: Contract, roles: tuple[str, ...] | None = None) -> st.SearchStrategy[dict]:
    """One record as a dict; ``roles`` limits the columns (e.g. only features)."""
    cols = [c for c in contract.columns if roles is None or c.role in roles]
    return st.fixed_dictionaries({c.name: value(c) for c in cols})
