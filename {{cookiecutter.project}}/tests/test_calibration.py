"""The validator's statistics (evaluation/calibration.py) against scipy and hand computations, and the pack they build."""

from __future__ import annotations

import json
import math
import subprocess

import numpy as np
import pandas as pd
import pytest
from scipy import stats
from sklearn.metrics import roc_auc_score

from {{ cookiecutter.package }}.ci import report
from {{ cookiecutter.package }}.core.errors import ParamsError
from {{ cookiecutter.package }}.core.params import load_params, parse
from {{ cookiecutter.package }}.core.reports import Grades, ModelMeta, ValidationPackReport, ValidationReference
from {{ cookiecutter.package }}.evaluation import calibration, validation_pack

from .pipeline_run import ROOT, pipeline_run

SCALE = {"A": 0.02, "B": 0.05, "C": 0.1, "D": 0.2, "E": 0.35, "F": 0.6, "G": 1.0}


def true_portfolio(n: int = 20_000, seed: int = 3) -> tuple[np.ndarray, np.ndarray]:
    """PDs spread over the scale and defaults drawn from exactly those PDs: a perfectly calibrated model."""
    rng = np.random.default_rng(seed)
    pd_ = 1 / (1 + np.exp(-rng.normal(-2.0, 1.2, n)))
    return pd_, (rng.random(n) < pd_).astype(int)


def grade_p_values(pd_: np.ndarray, y: np.ndarray) -> list[float]:
    rows, *_ = validation_pack.grade_table(y, pd_, SCALE, 0.05)
    return [r.jeffreys.p_value for r in rows if r.rows >= 100]


def test_jeffreys_p_value_is_the_beta_posterior_cdf_at_the_pd():
    # ECB: a = D + 1/2, b = N - D + 1/2, p = F_Beta(PD).
    assert calibration.jeffreys_p_value(3, 100, 0.02) == pytest.approx(stats.beta.cdf(0.02, 3.5, 97.5))
    # By hand, D=0, N=1: Beta(1/2, 3/2) has CDF (2/pi)(asin(sqrt x) + sqrt(x(1-x))), at 1/2: 1/2 + 1/pi.
    assert calibration.jeffreys_p_value(0, 1, 0.5) == pytest.approx(0.5 + 1 / math.pi)
    with pytest.raises(ValueError, match="defaults"):
        calibration.jeffreys_p_value(5, 4, 0.1)


def test_binomial_p_value_is_the_upper_tail():
    # P(X >= 2 | n=3, p=0.5) = (3 + 1) / 8
    assert calibration.binomial_p_value(2, 3, 0.5) == pytest.approx(0.5)
    assert calibration.binomial_p_value(0, 10, 0.1) == 1.0
    assert calibration.binomial_p_value(7, 50, 0.05) == pytest.approx(stats.binomtest(7, 50, 0.05, alternative="greater").pvalue)


def test_jeffreys_flags_pds_halved_on_purpose_and_passes_the_true_model():
    pd_, y = true_portfolio()
    true_p = grade_p_values(pd_, y)
    assert len(true_p) >= 5 and min(true_p) > 0.01, true_p
    halved = grade_p_values(pd_ / 2, y)
    assert len(halved) >= 4 and max(halved) < 0.001, halved


def test_hosmer_lemeshow_matches_a_hand_computation():
    # (5 - 100*0.04)^2 / (100*0.04*0.96) + (30 - 200*0.2)^2 / (200*0.2*0.8) = 1/3.84 + 100/32
    hl = calibration.hosmer_lemeshow([5, 30, 0], [100, 200, 0], [0.04, 0.2, 0.5])
    assert hl.statistic == pytest.approx(1 / 3.84 + 100 / 32)
    assert hl.df == 2  # the empty group is left out; G degrees of freedom on a validation sample
    assert hl.p_value == pytest.approx(math.exp(-hl.statistic / 2))  # chi2 with 2 df: sf(x) = e^(-x/2)


def test_herfindahl_is_even_at_zero_and_concentrated_at_one():
    assert calibration.herfindahl([10, 10, 10, 10]) == pytest.approx((0.25, 0.0))
    assert calibration.herfindahl([0, 40, 0, 0]) == pytest.approx((1.0, 1.0))
    hhi, normalised = calibration.herfindahl([1, 3])  # shares 1/4, 3/4
    assert hhi == pytest.approx(1 / 16 + 9 / 16)
    assert normalised == pytest.approx(1 + math.log(10 / 16) / math.log(2))


def test_gains_table_by_hand():
    score = np.array([0.9, 0.8, 0.7, 0.6, 0.5, 0.4, 0.3, 0.2, 0.1, 0.05])
    y = np.array([1, 1, 0, 1, 0, 0, 0, 0, 1, 0])
    rows = calibration.gains_table(y, score, bands=5)
    assert [r.positives for r in rows] == [2, 1, 0, 0, 1]
    assert rows[0].cum_positive_share == pytest.approx(0.5) and rows[0].cum_negative_share == 0
    # after band 2: 3 of 4 positives, 1 of 6 negatives
    assert rows[1].ks == pytest.approx(3 / 4 - 1 / 6)
    assert max(r.ks for r in rows) == pytest.approx(3 / 4 - 1 / 6)
    assert rows[0].lift == pytest.approx(1.0 / 0.4)
    assert rows[-1].cum_positive_share == pytest.approx(1.0) and rows[-1].cum_negative_share == pytest.approx(1.0)


def test_delong_matches_sklearn_and_the_direct_placement_variance():
    rng = np.random.default_rng(0)
    y = rng.random(300) < 0.3
    score = np.round(rng.normal(y * 0.8, 1.0), 1)  # rounded: ties count half
    result = calibration.delong_auc(y, score)
    assert result.auc == pytest.approx(roc_auc_score(y, score))
    pos, neg = score[y], score[~y]
    psi = (pos[:, None] > neg[None, :]) + 0.5 * (pos[:, None] == neg[None, :])  # the O(mn) kernel of DeLong 1988
    v10, v01 = psi.mean(axis=1), psi.mean(axis=0)
    se = math.sqrt(v10.var(ddof=1) / len(pos) + v01.var(ddof=1) / len(neg))
    assert result.se == pytest.approx(se)
    assert result.low == pytest.approx(result.auc - 1.959964 * se, abs=1e-6)


def test_auc_decline_is_significant_only_when_the_fall_exceeds_the_noise():
    current = calibration.AucInterval(auc=0.75, se=0.01, low=0.73, high=0.77, confidence=0.95)
    assert calibration.auc_decline_p_value(0.80, current) == pytest.approx(stats.norm.sf(5.0))
    assert calibration.auc_decline_p_value(0.751, current) > 0.4


def test_grades_take_bounds_as_exclusive_upper_limits():
    idx = calibration.grade_index(np.array([0.0, 0.0199, 0.02, 0.5, 1.0]), [0.02, 0.1, 1.0])
    assert idx.tolist() == [0, 0, 1, 2, 2]
    with pytest.raises(ValueError, match="end at 1.0"):
        calibration.grade_index(np.array([0.1]), [0.02, 0.5])


def test_a_master_scale_out_of_order_is_refused_naming_the_key():
    raw = load_params(ROOT / "params.yaml").as_dict()
    with pytest.raises(ParamsError, match="'grades' needs at least 2 grades with increasing"):
        parse({**raw, "grades": {"A": 0.5, "B": 0.2, "C": 1.0}})
    with pytest.raises(ParamsError, match="'grades' the last grade's upper bound must be 1.0"):
        parse({**raw, "grades": {"A": 0.2, "B": 0.9}})
    assert parse({**raw, "grades": {"A": 0.2, "B": 1.0}}).grades == {"A": 0.2, "B": 1.0}


def test_migration_matrix_counts_moves():
    m = calibration.migration_matrix([0, 0, 1, 2], [0, 1, 1, 0], 3)
    assert m.tolist() == [[1, 1, 0], [0, 1, 0], [1, 0, 0]]


def test_value_bands_hold_precision_recall_and_the_fraud_rate_by_value():
    y = np.array([1, 0, 0, 1, 0, 1])
    flagged = np.array([1, 1, 0, 0, 0, 1])
    value = np.array([10.0, 20.0, 70.0, 200.0, 300.0, 5.0])
    out = validation_pack.value_bands(y, flagged, value, [0, 100], "amount")
    low, high = out.bands
    assert (low.band, high.band) == ("0-100", "100+")
    assert low.precision == pytest.approx(2 / 3) and low.recall == 1.0
    assert low.fraud_rate_by_value == pytest.approx(15 / 105)
    assert high.precision is None and high.recall == 0.0 and high.fraud_rate_by_value == pytest.approx(200 / 500)
    assert out.overall.fraud_rate_by_value == pytest.approx(215 / 605)


def test_grade_assignments_round_trip_in_key_order():
    keys = pd.Series(["c", "a", "b"])
    packed = validation_pack.encode_assignments(keys, np.array([2, 0, 1]))
    assert validation_pack.decode_assignments(packed).tolist() == [0, 1, 2]


def test_the_pipelines_pack_is_complete_and_its_reference_is_the_first_model():
    run = pipeline_run()
    pack = ValidationPackReport.read(run.path("reports/validation_pack.json"))
    meta = ModelMeta.read(run.path("models/model_meta.json"))
    reference = ValidationReference.read(run.path("models/validation_reference.json"))
    assert reference.run_id == meta.run_id and pack.discrimination.reference_is_this_model
    assert pack.discrimination.ci_low < pack.discrimination.roc_auc < pack.discrimination.ci_high
    assert sum(b.rows for b in pack.gains.bands) == pack.rows
    if pack.grades is not None:
        assert sum(r.rows for r in pack.grades.rows) == pack.rows
        assert sum(r.defaults for r in pack.grades.rows) == pack.positives
    else:
        assert pack.value_bands is not None and pack.value_bands.overall.rows == pack.rows
    card = json.loads(run.path("reports/model_card.json").read_text(encoding="utf-8"))
    assert card["validation"]["roc_auc"]["value"] == pack.discrimination.roc_auc


def with_grades(pack: ValidationPackReport, pd_: np.ndarray, y: np.ndarray, keys: pd.Series) -> ValidationPackReport:
    rows, idx, hl, concentration = validation_pack.grade_table(y, pd_, SCALE, 0.05)
    grades = Grades(
        scale=SCALE,
        rows=rows,
        hosmer_lemeshow=hl,
        concentration=concentration,
        assignments=validation_pack.encode_assignments(keys, idx),
    )
    return pack.model_copy(update={"grades": grades})


def test_pull_request_report_shows_the_migration_from_the_champions_committed_grades(tmp_path):
    pack = ValidationPackReport.read(pipeline_run().path("reports/validation_pack.json"))
    pd_, y = true_portfolio(2000)
    keys = pd.Series([f"id{i:05d}" for i in range(len(y))])
    champion, challenger = with_grades(pack, pd_, y, keys), with_grades(pack, np.minimum(pd_ * 1.6, 1), y, keys)
    git = ["git", "-C", str(tmp_path), "-c", "user.email=ci@example.com", "-c", "user.name=ci"]
    subprocess.run([*git, "init", "-q", "-b", "main"], check=True)
    champion.write(tmp_path / "reports/validation_pack.json")
    subprocess.run([*git, "add", "-A"], check=True)
    subprocess.run([*git, "commit", "-qm", "champion"], check=True)

    base = report.baseline_pack(tmp_path, "main")
    assert base is not None and base.grades.assignments == champion.grades.assignments
    text = report.migration_section(challenger, base, "main")
    old = validation_pack.decode_assignments(champion.grades.assignments)
    new = validation_pack.decode_assignments(challenger.grades.assignments)
    expected = calibration.migration_matrix(old, new, len(SCALE))
    assert (new >= old).all() and (new > old).any()  # higher PDs: only ever a worse grade
    first = "| **A** | " + " | ".join(str(c) for c in expected[0]) + " |"
    assert first in text
    stay = int(np.trace(expected))
    assert f"{stay} of {len(y)} rows keep their grade" in text and "0 move to a better grade" in text

    other_rows = with_grades(pack, pd_[:-1], y[:-1], keys[:-1])
    assert "Not comparable" in report.migration_section(other_rows, base, "main")
    assert report.baseline_pack(tmp_path, "main~0:no-such-dir") is None
    assert "No validation pack is committed" in report.migration_section(challenger, None, "main")
