"""Training stage and its MLflow tracking helpers."""
