"""The serving benchmark's arithmetic: wrk's report parsed, coordinated omission corrected."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import numpy as np
import pytest

SPEC = importlib.util.spec_from_file_location("bench_serve", Path(__file__).resolve().parents[1] / "benchmarks" / "serve.py")
serve = importlib.util.module_from_spec(SPEC)
SPEC.loader.exec_module(serve)


def test_wrk_summary_line_becomes_rates_and_milliseconds():
    out = (
        "Running 10s test @ http://127.0.0.1:3000\n  2 threads and 32 connections\n"
        'BENCH {"requests":5000,"duration_us":10000000,"p50_us":12500,"p99_us":48000,"p999_us":61000,'
        '"non2xx":3,"socket_errors":1}\n'
    )
    assert serve.parse_wrk(out) == {
        "rps": 500.0,
        "p50_ms": 12.5,
        "p99_ms": 48.0,
        "p999_ms": 61.0,
        "non2xx": 3,
        "socket_errors": 1,
    }


def test_wrk_output_without_the_summary_is_an_error_that_shows_the_output():
    with pytest.raises(ValueError, match="connection refused"):
        serve.parse_wrk("unable to connect to 127.0.0.1:3000 connection refused\n")


def test_a_slow_reply_counts_the_sends_it_held_back():
    # Sends every 10 ms; one reply took 45 ms, so the sends due at +10, +20, +30 ms would have
    # waited 35, 25 and 15 ms (HdrHistogram's recordValueWithExpectedInterval).
    corrected = serve.corrected_latencies(np.array([5.0, 45.0, 8.0]), 10.0)
    assert sorted(corrected.tolist()) == pytest.approx([5.0, 8.0, 15.0, 25.0, 35.0, 45.0])


def test_replies_within_the_interval_are_left_alone():
    latencies = np.array([1.0, 9.0, 10.0, 19.9])
    assert serve.corrected_latencies(latencies, 10.0).tolist() == latencies.tolist()


def test_capacity_is_the_highest_rate_within_the_objective_and_without_errors():
    curve = [
        {"offered_rps": 100.0, "p99_ms": 12.0, "non2xx": 0},
        {"offered_rps": 200.0, "p99_ms": 49.0, "non2xx": 0},
        {"offered_rps": 300.0, "p99_ms": 30.0, "non2xx": 2},  # fast, but refused some
        {"offered_rps": 400.0, "p99_ms": 80.0, "non2xx": 0},
    ]
    assert serve.capacity_at_slo(curve) == 200.0
    assert serve.capacity_at_slo(curve[3:]) is None
