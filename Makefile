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
export DVC_NO_ANALYTICS := 1
export BENTOML_DO_NOT_TRACK := true
export GX_ANALYTICS_ENABLED := false
export MLFLOW_DISABLE_TELEMETRY := true
export UV_PYTHON_DOWNLOADS := never
# The generated projects' Makefiles find uv (installed into the venv) on PATH.
export PATH := $(CURDIR)/$(BIN):$(PATH)

.PHONY: help venv system-deps demo lock test test-fast clean

# Debian packages the suite drives: Prometheus and promtool (alert rules, live scrape), wrk and hey
# (the generated `make bench`), podman with runc, buildah, skopeo, docker-registry and mmdebstrap
# (the release image: built, run, pushed to a loopback registry, rolled out with `podman kube play`),
# and Java 17 for pyspark (the spark bake's data stages, tests/test_spark.py).
SYSTEM_TOOLS := prometheus promtool wrk hey podman runc buildah skopeo docker-registry mmdebstrap java
SYSTEM_PACKAGES := prometheus wrk hey podman runc buildah skopeo docker-registry mmdebstrap uidmap openjdk-17-jre-headless

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

# Each use case has its own dependencies, so its own lock, and a spark bake (compute=spark) adds
# pyspark, so a second one (uv-spark.lock): bake each, `uv lock` there (keeping every pin the change
# does not touch), and copy the lock back with the project name templated again.
LOCK_PROJECT := credit-risk-model
lock: venv ## Re-lock each use case x compute ({{cookiecutter.project}}/_use_cases/<use case>/uv.lock, uv-spark.lock) after editing the generated pyproject.toml
	@for uc in credit_scoring fraud_detection; do for compute in pandas spark; do \
	  lockfile=uv.lock; [ $$compute = pandas ] || lockfile=uv-$$compute.lock; \
	  out=$(BUILD)/lock-$$uc-$$compute; rm -rf $$out; \
	  $(BIN)/cookiecutter --no-input --output-dir $$out . use_case=$$uc compute=$$compute project_name=$(LOCK_PROJECT) >/dev/null; \
	  (cd $$out/$(LOCK_PROJECT) && uv lock --quiet); \
	  sed 's/"$(LOCK_PROJECT)"/"{{ cookiecutter.project }}"/g' $$out/$(LOCK_PROJECT)/uv.lock \
	    > '{{cookiecutter.project}}/_use_cases/'$$uc/$$lockfile; \
	  echo "locked $$uc ($$compute): {{cookiecutter.project}}/_use_cases/$$uc/$$lockfile"; \
	done; done

system-deps: ## Install (if missing) the Debian packages the suite drives; needs root or sudo and apt-get
	@missing=""; for t in $(SYSTEM_TOOLS); do command -v $$t >/dev/null 2>&1 || missing="$$missing $$t"; done; \
	if [ -z "$$missing" ]; then echo "system tools present: $(SYSTEM_TOOLS)"; exit 0; fi; \
	echo "missing:$$missing; installing $(SYSTEM_PACKAGES) with apt-get"; \
	if ! command -v apt-get >/dev/null; then echo "error: no apt-get; install$$missing yourself (see README: Requirements)" >&2; exit 1; fi; \
	sudo=""; if [ "$$(id -u)" != 0 ]; then sudo=sudo; fi; \
	$$sudo apt-get update -qq && DEBIAN_FRONTEND=noninteractive $$sudo apt-get install -y -qq --no-install-recommends $(SYSTEM_PACKAGES) >/dev/null

test: venv system-deps ## Run the template's whole test suite (bakes, hooks, end-to-end pipelines, workflows)
	$(BIN)/pytest

test-fast: venv system-deps ## Everything except the slow end-to-end runs
	$(BIN)/pytest -m "not e2e"

clean: ## Remove build/ and .venv
	rm -rf $(BUILD) $(VENV) .pytest_cache
