# The two quick-start commands are `make run` and `make test`; everything else is a step of theirs.
SHELL := /bin/bash
PYTHON ?= python3.11
VENV := .venv
PY := $(VENV)/bin/python
UV := $(VENV)/bin/uv
STAMP := $(VENV)/.installed-$(shell sha1sum requirements.lock | cut -c1-12)

.PHONY: help setup lock ui run train package serve smoke batch-score traffic monitor lint test pipelines-check iac-check clean distclean

help:
	@echo "make run    - set up and run the whole local flow (train, evaluate, register, package, serve, smoke test)"
	@echo "make train  - train every declared use case (USE_CASE=name[,name] for some)"
	@echo "make test   - set up, lint and run the test suite"
	@echo "make serve  - serve every production model on 127.0.0.1:\$${SCORING_PORT:-5001} until interrupted"
	@echo "make batch-score - score new rows (generated) with every production model: local/batch/output (after make run)"
	@echo "make traffic - send realistic and shifted requests to the packaged models, collecting them (after make run)"
	@echo "make monitor - drift and decay of every production model from what was collected: local/monitoring/output"
	@echo "make ui     - the MLflow UI on the local registry at 127.0.0.1:\$${MLFLOW_UI_PORT:-5000}"
	@echo "make lint | lock | clean"

# A virtual environment with exactly the locked dependencies. uv comes from PyPI through pip, then installs the lock,
# compiled to bytecode once (start-up of every step process is seconds faster, also where PYTHONDONTWRITEBYTECODE is set).
$(STAMP): requirements.lock
	@command -v $(PYTHON) >/dev/null || { echo "error: $(PYTHON) not found: install Python 3.11 or pass PYTHON=/path/to/python3.11" >&2; exit 1; }
	@rm -f $(VENV)/.installed-*
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	@test -x $(UV) || $(PY) -m pip install --quiet --disable-pip-version-check "uv==0.13.9"
	$(UV) pip sync --quiet --compile-bytecode --python $(PY) requirements.lock
	@touch $@

setup: $(STAMP)

# Re-resolve the lock after editing pyproject.toml. The second lock is the environment of Azure ML parallel
# steps (runtime dependencies plus what the parallel driver imports), for the job's platform; it starts from
# requirements.lock's pins, so it differs from it only where the driver's packages need older versions.
PARALLEL_LOCK := environment_setup/parallel-requirements.lock
PARALLEL_COMPILE := pip compile pyproject.toml environment_setup/parallel-driver.in -p 3.11 --python-platform x86_64-manylinux_2_28
lock:
	@test -x $(UV) || $(MAKE) setup
	$(UV) pip compile pyproject.toml --extra dev -p 3.11 --universal -o requirements.lock -q
	cp requirements.lock $(PARALLEL_LOCK)
	$(UV) $(PARALLEL_COMPILE) -o $(PARALLEL_LOCK) -q

# The whole local flow: train every declared use case, package the production models, serve them on 127.0.0.1,
# smoke-test the service and stop it.
run: train package smoke
	@echo "make run: done; the run's report: $${LOCAL_DIR:-local}/runs/all/current/register/output/report.html (every run: $${LOCAL_DIR:-local}/runs/all/history/index.html)"

# Every use case declared in pyproject.toml ([tool.mlops.use-cases]), or USE_CASE=name[,name] (a group too).
# The steps share one process: with thousands of small models, starting Python and importing scikit-learn and
# MLflow once instead of four times is a large part of the run (bench/README.md). Without --in-process each step
# is its own process, the commands Azure ML runs.
USE_CASE ?=
train: setup
	$(PY) -m ml_service.pipelines.run_train_pipeline $(if $(USE_CASE),--use-case $(USE_CASE),--all) --in-process

package: setup
	$(PY) -m ml_service.scoring.package --output local/package

smoke: setup
	$(PY) -m ml_service.util.serve_and_smoke_test --package local/package

serve: package
	SCORING_COLLECT_RATE=$${SCORING_COLLECT_RATE:-1} $(PY) -m ml_service.scoring.serve --package local/package

# Batch scoring (docs/batch_scoring.md): new rows for every declared use case (or USE_CASE=name[,name]) written by
# the project (the energy use cases: the 48 hours after their training data, with weather; any other: its
# hold-out rows without the label), then every partition scored by its production model. A rerun after an
# interruption scores only the partitions not yet written.
BATCH_DIR ?= local/batch
batch-score: setup
	$(PY) -m ml_service.pipelines.steps.batch_input $(if $(USE_CASE),--use-case $(USE_CASE),--all) --output $(BATCH_DIR)/input
	$(PY) -m ml_service.pipelines.steps.batch_score $(if $(USE_CASE),--use-case $(USE_CASE),--all) \
	  --input $(BATCH_DIR)/input --output $(BATCH_DIR)/output

# Monitoring (docs/monitoring.md): `make traffic` serves the package with collection on and sends every production
# model rows drawn from its own data, shifting every third model (SHIFT_EVERY) by 3 standard deviations, and writes
# the actuals; `make monitor` measures drift and decay per model, writes the report and the models to retrain.
MONITOR_DIR ?= local/monitoring
SHIFT_EVERY ?= 3
traffic: setup
	$(PY) -m ml_service.monitoring.traffic $(if $(USE_CASE),--use-case $(USE_CASE),--all) --package local/package \
	  --output $(MONITOR_DIR) --shift-every $(SHIFT_EVERY)

monitor: setup
	$(PY) -m ml_service.pipelines.steps.monitor $(if $(USE_CASE),--use-case $(USE_CASE),--all) \
	  --collected $(MONITOR_DIR)/collected $(if $(wildcard $(MONITOR_DIR)/actuals),--actuals $(MONITOR_DIR)/actuals) \
	  --output $(MONITOR_DIR)/output

lint: setup
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .

# The platform's tests (tests/) and each use case's own (<use case>/tests/): they go with their folder.
test: setup lint
	$(PY) -m pytest -q -n 2 --dist loadfile

# The MLflow UI on the local registry. The project installs mlflow-skinny (no web UI), so uv runs the full mlflow
# package of the same version in a throw-away environment.
MLFLOW_VERSION := $(shell sed -n 's/^mlflow-skinny==//p' requirements.lock)
ui: setup
	$(UV) tool run --from "mlflow==$(MLFLOW_VERSION)" mlflow ui --host 127.0.0.1 --port $${MLFLOW_UI_PORT:-5000} \
	  --backend-store-uri "$$($(PY) -c 'from ml_service.util.env_variables import load_settings; print(load_settings().tracking_uri)')"

# Parts of `make test`, runnable alone.
pipelines-check: setup
	$(PY) -m pytest -q tests/test_pipelines_yaml.py

iac-check: setup
	$(VENV)/bin/checkov -d environment_setup --skip-download --quiet --compact

clean:
	rm -rf local .pytest_cache .ruff_cache
	find . -name __pycache__ -type d -prune -not -path './.venv/*' -exec rm -rf {} +

distclean: clean
	rm -rf $(VENV)
