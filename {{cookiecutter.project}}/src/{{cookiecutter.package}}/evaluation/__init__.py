"""Evaluation stages: metrics and plots, fairness by protected group, explanations."""
