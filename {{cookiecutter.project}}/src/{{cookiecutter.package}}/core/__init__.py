"""The light core: contract, parameters, model, metrics and reason codes.

Imported by every layer above it and by the decision service, so it never imports Great
Expectations, matplotlib, fairlearn, DVC, MLflow or BentoML (enforced by import-linter,
see pyproject.toml).
"""
