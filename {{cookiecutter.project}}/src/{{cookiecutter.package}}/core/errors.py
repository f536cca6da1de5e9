"""The one family of errors a user can fix: each stage reports them in one line and exits 1.

Anything else is a bug and keeps its traceback (see :func:`stage.run_stage`).
"""

from __future__ import annotations


class UserError(Exception):
    """Something the user can fix (data, contract, params, keys): reported without a traceback."""


class ParamsError(UserError, ValueError):
    """params.yaml is missing a value or holds a wrong one."""


class DataError(UserError, ValueError):
    """An input data file cannot be used as it is."""


class StageOrderError(UserError, RuntimeError):
    """A stage's inputs are missing or were left by a stage that did not succeed."""
