"""Reference implementations the production code is tested against (never imported by it)."""

from __future__ import annotations

import numpy as np
import pandas as pd

from {{ cookiecutter.package }}.core import use_case


def _count(y_true, y_pred) -> float:
    return float(len(y_true))


def _positives(y_true, y_pred) -> float:
    return float(np.sum(y_true))


def _flag_rate(y_true, y_pred) -> float:
    return float(np.mean(y_pred)) if len(y_pred) else np.nan


def _tpr(y_true, y_pred) -> float:
    pos = np.asarray(y_true) == 1
    return float(np.mean(np.asarray(y_pred)[pos])) if pos.any() else np.nan


def _fpr(y_true, y_pred) -> float:
    neg = np.asarray(y_true) == 0
    return float(np.mean(np.asarray(y_pred)[neg])) if neg.any() else np.nan


def _positive_rate(y_true, y_pred) -> float:
    return float(np.mean(y_true)) if len(y_true) else np.nan


_METRICS = {
    "n": _count,
    "positives": _positives,
    "flag_rate": _flag_rate,
    "tpr": _tpr,
    "fpr": _fpr,
    "positive_rate": _positive_rate,
}


def by_group_fairlearn(y: np.ndarray, flagged: np.ndarray, groups: np.ndarray) -> pd.DataFrame:
    """The per-group table of ``evaluation.group_stats.by_group``, from fairlearn's ``MetricFrame``."""
    from fairlearn.metrics import MetricFrame

    frame = MetricFrame(metrics=_METRICS, y_true=y, y_pred=flagged, sensitive_features=pd.Series(groups, name="group"))
    table = frame.by_group.copy()
    table.index = table.index.astype(str)
    if use_case.load().fairness_outcome == "approval_rate":
        table.insert(table.columns.get_loc("flag_rate"), "approval_rate", 1.0 - table.pop("flag_rate"))
    return table
