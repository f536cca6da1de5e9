"""Seeded synthetic consumer-credit applications with a known signal.

Columns and their categories come from ``contract.yaml``; this module only knows how to
draw realistic values for them. The default probability is a logistic function of the
features (documented in ``TRUE_EFFECTS``), so a working model must rank applications well
and a broken one cannot.

Age is linked to risk only through the features that really grow with it (income, credit
history, years in work), weakly: an age-blind model then treats age bands within the default
fairness gates at any size (true equalized-odds gap about 0.04 at the 0.25 threshold, approval
ratio about 0.94; tests/test_generate.py measures it on a million rows). ``bias`` > 0 makes
the link stronger, for demos and tests of a failing gate: ``bias: 0.7`` gives a gap of about
0.14, ``bias: 2`` about 0.3.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from ..core.contract import Contract

# Log-odds contribution of each feature in the data-generating process (for documentation
# and tests): positive = raises the default probability.
TRUE_EFFECTS = {
    "annual_income": "decreasing",
    "debt_to_income": "increasing",
    "credit_utilisation": "increasing",
    "delinquencies_24m": "increasing",
    "credit_history_months": "decreasing",
    "recent_inquiries": "increasing",
    "employment_years": "decreasing",
    "loan_amount": "increasing",
}

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


# How strongly age shifts the age-linked features (1.0 = the full slopes below) when bias is 0.
FAIR_AGE_LINK = 0.3


def generate(
    contract: Contract, n_rows: int, seed: int, start_date: str = "2023-01-01", days: int = 730, bias: float = 0.0
) -> pd.DataFrame:
    """``n_rows`` seeded applications; ``bias`` strengthens the age-linked risk (0: within the fairness gates)."""
    return generate_with_probability(contract, n_rows, seed, start_date, days, bias)[0]


def generate_with_probability(
    contract: Contract, n_rows: int, seed: int, start_date: str = "2023-01-01", days: int = 730, bias: float = 0.0
) -> tuple[pd.DataFrame, np.ndarray]:
    """The data and each row's true default probability (the data-generating process, for tests)."""
    rng = np.random.default_rng(seed)
    # Centred on the middle age band, so the link changes the spread between bands, not the mix.
    link = FAIR_AGE_LINK + bias
    cat = contract.categories

    age_band = rng.choice(cat("age_band"), size=n_rows, p=[0.10, 0.22, 0.22, 0.19, 0.15, 0.12])
    sex = rng.choice(cat("sex"), size=n_rows, p=[0.49, 0.51])
    age_idx = pd.Series(age_band).map({b: i for i, b in enumerate(cat("age_band"))}).to_numpy()
    age_shift = link * (age_idx - 2.5)

    employment_status = rng.choice(cat("employment_status"), size=n_rows, p=[0.66, 0.14, 0.07, 0.07, 0.06])
    employed = np.isin(employment_status, ["employed", "self_employed"])
    employment_years = np.where(employed, np.round(rng.gamma(2.0, 4.75 + 0.3 * age_shift, n_rows), 1), np.nan)
    employment_years = np.clip(employment_years, 0, 60)

    income = rng.lognormal(mean=10.775 + 0.03 * age_shift, sigma=0.45, size=n_rows)
    income = np.where(employment_status == "unemployed", income * 0.35, income)
    income = np.where(employment_status == "student", income * 0.4, income)
    income = np.round(np.clip(income, 0, 5_000_000), 2)

    history = np.clip(np.round(rng.normal(150 + 16 * age_shift, 60, n_rows)), 0, 900).astype(int)
    dti = np.round(np.clip(rng.beta(2.2, 6.0, n_rows) * 1.4, 0, 5), 4)
    util = np.round(np.clip(rng.beta(1.6, 3.2, n_rows) * 1.2, 0, 2), 4)
    delinq = np.clip(rng.poisson(0.35 + 0.9 * util, n_rows), 0, 60).astype(int)
    inquiries = np.clip(rng.poisson(1.1, n_rows), 0, 50).astype(int)
    home = rng.choice(cat("home_ownership"), size=n_rows, p=[0.38, 0.40, 0.18, 0.04])
    purpose = rng.choice(cat("loan_purpose"), size=n_rows, p=[0.34, 0.14, 0.18, 0.08, 0.06, 0.08, 0.12])
    loan = np.round(np.clip(rng.lognormal(9.4, 0.7, n_rows), 500, 150_000), 2)

    emp_years_filled = np.nan_to_num(employment_years, nan=0.0)
    logit = (
        -2.35
        - 0.9 * (np.log(income) - 10.7)
        + 2.4 * (dti - 0.35)
        + 1.6 * (util - 0.4)
        + 0.45 * delinq
        - 0.006 * (history - 150)
        + 0.16 * inquiries
        - 0.05 * emp_years_filled
        + 0.35 * (np.log(loan) - 9.4)
        + np.select(
            [employment_status == "unemployed", employment_status == "student", employment_status == "self_employed"],
            [0.9, 0.4, 0.2],
            0.0,
        )
        + np.where(home == "rent", 0.15, 0.0)
        + np.where(purpose == "business", 0.35, np.where(purpose == "debt_consolidation", 0.15, 0.0))
    )
    default_prob = 1.0 / (1.0 + np.exp(-logit))
    defaulted = (rng.random(n_rows) < default_prob).astype(int)

    first = rng.choice(_FIRST, n_rows)
    last = rng.choice(_LAST, n_rows)
    serial = rng.permutation(n_rows) + 100_000
    dates = pd.Timestamp(start_date) + pd.to_timedelta(np.sort(rng.integers(0, days, n_rows)), unit="D")

    values = {
        "application_id": [f"APP-{seed:04d}-{i:07d}" for i in range(n_rows)],
        "application_date": dates,
        "full_name": [f"{f} {ln}" for f, ln in zip(first, last, strict=True)],
        "email": [f"{f.lower()}.{ln.lower()}{s}@mail.example" for f, ln, s in zip(first, last, serial, strict=True)],
        "national_id": [f"NID{100_000_000 + s * 7919:010d}" for s in serial],
        "age_band": age_band,
        "sex": sex,
        "annual_income": income,
        "debt_to_income": dti,
        "credit_utilisation": util,
        "delinquencies_24m": delinq,
        "credit_history_months": history,
        "recent_inquiries": inquiries,
        "employment_status": employment_status,
        "employment_years": employment_years,
        "home_ownership": home,
        "loan_amount": loan,
        "loan_purpose": purpose,
        "defaulted": defaulted,
    }
    # Column order and names come from the contract, so the contract stays the authority.
    return pd.DataFrame({name: values[name] for name in contract.column_names}), default_prob
