"""Training stage: fits the model and opens its MLflow run (helpers in the tracking layer)."""
