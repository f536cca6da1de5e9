"""The synthetic data follows the contract, is seeded, and carries the known signal."""

from __future__ import annotations

import pandas as pd

from {{ cookiecutter.package }}.core import use_case
from {{ cookiecutter.package }}.data import generate


def test_same_seed_same_data_other_seed_other_data(contract):
    a = generate.generate(contract, n_rows=500, seed=1)
    b = generate.generate(contract, n_rows=500, seed=1)
    c = generate.generate(contract, n_rows=500, seed=2)
    pd.testing.assert_frame_equal(a, b)
    assert not a.equals(c)


def test_columns_and_values_follow_the_contract(raw, contract):
    assert list(raw.columns) == contract.column_names
    for col in contract.columns:
        values = raw[col.name].dropna()
        if col.categories:
            assert set(values.unique()) <= set(col.categories), col.name
        if col.min is not None:
            assert values.min() >= col.min, col.name
        if col.max is not None:
            assert values.max() <= col.max, col.name
        if not col.nullable:
            assert raw[col.name].notna().all(), col.name
    if contract.id_column:
        assert raw[contract.id_column].is_unique


def test_positive_rate_is_realistic(raw, contract, params):
    lo, hi = params.validate_.target_rate
    rate = (raw[contract.target] == contract.positive_label).mean()
    assert lo <= rate <= hi
    if use_case.load().name == "credit_scoring":
        assert 0.10 <= rate <= 0.22
    else:
        assert 0.005 <= rate <= 0.02


def test_synthetic_file_is_marked_as_synthetic(tmp_path, contract):
    from {{ cookiecutter.package }}.data import prepare

    path = tmp_path / "synthetic.parquet"
    generate.write_synthetic(generate.generate(contract, n_rows=200, seed=3), path)
    assert prepare.is_synthetic(path)
    plain = tmp_path / "plain.parquet"
    pd.read_parquet(path).to_parquet(plain)
    assert not prepare.is_synthetic(plain)


def true_gate_values(df: pd.DataFrame, prob, attribute: str, flag) -> dict[str, float]:
    """Each fairness gate metric of the ideal age- and sex-blind model, from the true probabilities.

    Flags are that model's decisions; TPR and FPR are expectations over the generating
    probabilities (no label noise), so this is the data's disparity, not a sample of it.
    """
    import numpy as np

    groups = df[attribute].astype(str).to_numpy()
    rates, tprs, fprs = [], [], []
    for g in np.unique(groups):
        here = groups == g
        p, f = prob[here], flag[here]
        rates.append(f.mean() if use_case.load().fairness_outcome == "flag_rate" else 1.0 - f.mean())
        tprs.append((p * f).sum() / p.sum())
        fprs.append(((1 - p) * f).sum() / (1 - p).sum())
    tpr_gap, fpr_gap = max(tprs) - min(tprs), max(fprs) - min(fprs)
    return {
        "demographic_parity_ratio": min(rates) / max(rates),
        "demographic_parity_difference": max(rates) - min(rates),
        "tpr_difference": tpr_gap,
        "fpr_difference": fpr_gap,
        "equalized_odds_difference": max(tpr_gap, fpr_gap),
    }


def breaches(params, contract, bias: float) -> list[str]:
    """Default fairness gates the synthetic data's true disparity breaches at a million rows."""
    from {{ cookiecutter.package }}.data import synthetic

    df, prob = synthetic.generate_with_probability(contract, n_rows=1_000_000, seed=params.seed, bias=bias)
    decision = params.decision
    # Credit declines at the fixed threshold; fraud's threshold is cost-tuned, and for true
    # probabilities the cost-optimal rule flags when p * cost_fn >= (1 - p) * cost_fp.
    threshold = decision.threshold or decision.cost_false_positive / (decision.cost_false_negative + decision.cost_false_positive)
    flag = prob >= threshold
    out = []
    for attribute in contract.protected:
        values = true_gate_values(df, prob, attribute, flag)
        for gate in params.fairness.gates:
            value = values[gate.metric]
            if (gate.min is not None and value < gate.min) or (gate.max is not None and value > gate.max):
                out.append(f"{attribute}:{gate.metric}={value:.3f}")
    return out


def test_true_disparity_is_within_the_default_fairness_gates_at_a_million_rows(params, contract):
    """So the default bake passes its own gates at any size (a gate judges real, not sampled, gaps)."""
    assert params.generate.bias == 0.0
    assert breaches(params, contract, bias=0.0) == []


def test_the_biased_variant_breaches_a_default_gate(params, contract):
    """generate.bias is the seeded biased variant for demos of a failing gate: it must really fail one."""
    assert breaches(params, contract, bias=1.5)
