"""Seeded synthetic card transactions with a known fraud signal.

Columns and their categories come from ``contract.yaml``; this module only knows how to
draw realistic values for them. Fraud is drawn from a logistic function of the features
(velocity, distance, unusual amount, risky merchant categories and channels, new cards,
night hours), so a working model must find it and a broken one cannot.

The cardholder's age band and sex are drawn independently of everything that drives fraud, so
an age- and sex-blind model's true disparity between groups is nil at any size (only sampling
noise; tests/test_generate.py measures it on a million rows). ``bias`` > 0 gives younger
cardholders newer cards (a real risk factor, so a proxy): a seeded biased variant for demos and
tests of a failing gate.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from ..core.contract import Contract

_FIRST = [
    "Ana",
    "Ben",
    "Chloe",
    "Dev",
    "Elif",
    "Femi",
    "Grace",
    "Hugo",
    "Ines",
    "Jon",
    "Kai",
    "Lena",
    "Marta",
    "Nils",
    "Omar",
    "Priya",
    "Quinn",
    "Rosa",
    "Sven",
    "Tara",
    "Umar",
    "Vera",
    "Wei",
    "Yara",
]
_LAST = [
    "Adams",
    "Brown",
    "Costa",
    "Dubois",
    "Evans",
    "Fischer",
    "Garcia",
    "Hansen",
    "Ito",
    "Jensen",
    "Khan",
    "Lopez",
    "Meyer",
    "Novak",
    "Okafor",
    "Patel",
    "Rossi",
    "Silva",
    "Tanaka",
    "Weber",
]

_MCC_RISK = {
    "grocery": -0.6,
    "fuel": -0.2,
    "restaurants": -0.4,
    "travel": 0.5,
    "electronics": 1.0,
    "online_retail": 0.8,
    "gambling": 1.2,
    "cash_advance": 1.1,
    "other": 0.0,
}
_CHANNEL_RISK = {"chip": -1.0, "contactless": -0.6, "online": 0.9, "manual_entry": 1.4}


def generate(
    contract: Contract, n_rows: int, seed: int, start_date: str = "2024-01-01", days: int = 365, bias: float = 0.0
) -> pd.DataFrame:
    """``n_rows`` seeded transactions; ``bias`` > 0 links the cardholder's age to risk through card age."""
    return generate_with_probability(contract, n_rows, seed, start_date, days, bias)[0]


def generate_with_probability(
    contract: Contract, n_rows: int, seed: int, start_date: str = "2024-01-01", days: int = 365, bias: float = 0.0
) -> tuple[pd.DataFrame, np.ndarray]:
    """The data and each row's true fraud probability (the data-generating process, for tests)."""
    rng = np.random.default_rng(seed)
    cat = contract.categories

    n_cards = max(n_rows // 8, 1)
    card_ids = rng.integers(0, n_cards, n_rows)
    card_serial = rng.permutation(n_cards)
    card_age_band = rng.choice(cat("customer_age_band"), size=n_cards, p=[0.12, 0.24, 0.22, 0.18, 0.14, 0.10])
    card_sex = rng.choice(cat("customer_sex"), size=n_cards, p=[0.5, 0.5])
    card_first = rng.choice(_FIRST, n_cards)
    card_last = rng.choice(_LAST, n_cards)
    card_issue_age = rng.integers(0, 3650, n_cards)
    if bias > 0:  # the youngest band's cards are newest: exp(-bias) of the oldest band's age
        young = 1.0 - pd.Series(card_age_band).map({b: i for i, b in enumerate(cat("customer_age_band"))}).to_numpy() / 5
        card_issue_age = (card_issue_age * np.exp(-bias * young)).astype(int)

    mcc_names = cat("merchant_category")
    mcc = rng.choice(mcc_names, size=n_rows, p=[0.24, 0.12, 0.16, 0.06, 0.07, 0.2, 0.03, 0.02, 0.10])
    channel = rng.choice(cat("channel"), size=n_rows, p=[0.42, 0.33, 0.22, 0.03])
    hour = np.clip(np.round(rng.normal(14, 4.5, n_rows)) % 24, 0, 23).astype(int)
    base_amount = rng.lognormal(3.6, 0.9, n_rows)
    ratio = np.round(np.clip(rng.lognormal(0.0, 0.6, n_rows), 0, 1000), 4)
    amount = np.round(np.clip(base_amount * ratio, 0.01, 100_000), 2)
    is_foreign = (rng.random(n_rows) < 0.06).astype(int)
    distance = np.round(
        np.clip(np.where(is_foreign == 1, rng.lognormal(7.2, 0.8, n_rows), rng.lognormal(2.0, 1.1, n_rows)), 0, 20_100), 2
    )
    velocity = np.clip(rng.poisson(0.6, n_rows), 0, 500).astype(int)
    card_age = np.clip(card_issue_age[card_ids] + rng.integers(0, 30, n_rows), 0, 20_000).astype(int)

    night = (hour <= 4).astype(float)
    logit = (
        -4.9
        + 0.55 * np.log1p(ratio * 2)
        + 0.45 * np.log1p(velocity) * 2
        + 0.35 * np.log1p(distance) / 2
        + 0.9 * is_foreign
        + pd.Series(mcc).map(_MCC_RISK).to_numpy()
        + pd.Series(channel).map(_CHANNEL_RISK).to_numpy()
        + 0.8 * night
        - 0.5 * np.log1p(card_age / 30)
    )
    fraud_prob = 1.0 / (1.0 + np.exp(-logit))
    is_fraud = (rng.random(n_rows) < fraud_prob).astype(int)
    # Fraudsters also push the observable velocity and amount up, as in real attacks.
    velocity = np.where(is_fraud == 1, velocity + rng.poisson(1.5, n_rows), velocity)
    ratio = np.where(is_fraud == 1, np.round(ratio * rng.uniform(1.0, 3.0, n_rows), 4), ratio)
    amount = np.round(np.clip(base_amount * ratio, 0.01, 100_000), 2)
    ratio = np.clip(ratio, 0, 1000)

    # Online merchants often report no usable location.
    distance = np.where((channel == "online") & (rng.random(n_rows) < 0.5), np.nan, distance)

    seconds = np.sort(rng.integers(0, days * 86_400, n_rows))
    times = pd.Timestamp(start_date) + pd.to_timedelta(seconds, unit="s")
    # Strings are formatted once per card, then indexed per row (8x fewer Python formats).
    card_pan = np.array([f"4{900_000_000_000_000 + int(s) * 7919:015d}" for s in card_serial], dtype=object)
    card_name = np.array([f"{f} {ln}" for f, ln in zip(card_first, card_last, strict=True)], dtype=object)
    card_email = np.array(
        [f"{f.lower()}.{ln.lower()}{s}@mail.example" for f, ln, s in zip(card_first, card_last, card_serial, strict=True)],
        dtype=object,
    )
    values = {
        "transaction_id": [f"TXN-{seed:04d}-{i:08d}" for i in range(n_rows)],
        "transaction_time": times,
        "card_number": card_pan[card_ids],
        "cardholder_name": card_name[card_ids],
        "customer_email": card_email[card_ids],
        "customer_age_band": card_age_band[card_ids],
        "customer_sex": card_sex[card_ids],
        "amount": amount,
        "amount_to_avg_ratio": ratio,
        "merchant_category": mcc,
        "channel": channel,
        "hour_of_day": hour,
        "distance_from_home_km": distance,
        "is_foreign": is_foreign,
        "txn_count_1h": velocity,
        "card_age_days": card_age,
        "is_fraud": is_fraud,
    }
    return pd.DataFrame({name: values[name] for name in contract.column_names}), fraud_prob
