# cookiecutter-fintech-mlops: `make help` lists every verb.
.DEFAULT_GOAL := help
SHELL := /bin/bash
.SHELLFLAGS := -eu -o pipefail -c

PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
BUILD := build
DEMO := $(BUILD)/credit-risk-model

export DO_NOT_TRACK := 1
export ITERATIVE_DO_NOT_TRACK := 1
export BENTOML_DO_NOT_TRACK := true
export GX_ANALYTICS_ENABLED := false
export MLFLOW_DISABLE_TELEMETRY := true
export UV_PYTHON_DOWNLOADS := never
# The generated projects' Makefiles find uv (installed into the venv) on PATH.
export PATH := $(CURDIR)/$(BIN):$(PATH)

.PHONY: help venv demo test test-fast clean

help: ## Show this help
	@awk 'BEGIN {FS = ":.*## "} /^[a-zA-Z_-]+:.*## / {printf "  \033[36m%-10s\033[0m %s\n", $$1, $$2}' $(MAKEFILE_LIST)

$(BIN)/cookiecutter: requirements-dev.txt
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -r requirements-dev.txt
	@touch $@

venv: $(BIN)/cookiecutter ## Install the template's test tools into .venv

demo: venv ## Bake the defaults into build/, set the repo up, run its pipeline, print where the reports are
	rm -rf $(DEMO)
	$(BIN)/cookiecutter --no-input --output-dir $(BUILD) .
	$(MAKE) -C $(DEMO) setup repro
	@echo ""
	@echo "Baked and ran: $(DEMO)"
	@echo "  metrics:        $(DEMO)/reports/metrics.json"
	@echo "  plots:          $(DEMO)/reports/plots/"
	@echo "  data docs:      $(DEMO)/reports/data_docs/index.html"
	@echo "  validation:     $(DEMO)/reports/validation.json"
	@echo "  MLflow UI:      cd $(DEMO) && uv run mlflow ui --backend-store-uri sqlite:///mlflow.db"

test: venv ## Run the template's whole test suite (bakes, hooks, end-to-end pipelines, workflows)
	$(BIN)/pytest

test-fast: venv ## Everything except the slow end-to-end runs
	$(BIN)/pytest -m "not e2e"

clean: ## Remove build/ and .venv
	rm -rf $(BUILD) $(VENV) .pytest_cache
