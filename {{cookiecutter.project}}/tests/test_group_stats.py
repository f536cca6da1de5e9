"""Which groups are large enough to judge: one rule for the fairness stage and the monitor."""

from __future__ import annotations

import pandas as pd

from {{ cookiecutter.package }}.core.params import load_params
from {{ cookiecutter.package }}.evaluation import group_stats

from .pipeline_run import ROOT


def test_group_minimums_are_inclusive_and_judged_per_rate():
    settings = load_params(ROOT / "params.yaml").fairness.model_copy(update={"min_group_size": 100, "min_group_outcomes": 30})
    table = pd.DataFrame(
        {"n": [100, 99, 130, 130], "positives": [30, 50, 29, 101]},
        index=["at_minimum", "too_small", "few_positives", "few_negatives"],
    )
    rate, tpr, fpr = group_stats.eligible_groups(table, settings)
    assert rate == ["at_minimum", "few_positives", "few_negatives"]
    assert tpr == ["at_minimum", "few_negatives"]  # 29 actual positives are too few for a TPR
    assert fpr == ["at_minimum", "few_positives"]  # 29 actual negatives are too few for an FPR
