# LineSight: `make demo` runs the whole pipeline locally; `make test` runs the tests.
# Both install what they need into .venv first.

PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed-stamp

.PHONY: install demo test test-unit test-functional test-infra test-e2e samples model lint bench clean

install: $(STAMP)

$(STAMP): requirements.txt requirements-train.txt pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --disable-pip-version-check --upgrade pip
	$(PY) -m pip install --quiet --disable-pip-version-check -r requirements.txt
	$(PY) -m pip install --quiet --disable-pip-version-check -r requirements-train.txt \
		|| echo "torch's CPU build is not available here: training will skip the cnn method" \
		   "(add --extra-index-url https://download.pytorch.org/whl/cpu to get it)"
	$(PY) -m pip install --quiet --disable-pip-version-check --no-deps -e .
	touch $(STAMP)

samples: install
	$(PY) -m scripts.make_samples --out resources/samples

model: samples
	test -f models/demo/model.json || $(VENV)/bin/linesight train resources/samples --out models/demo

demo: install
	$(VENV)/bin/linesight demo

# Tiers: doctests + unit (pure), functional (handlers against moto), infra (Pulumi mocks),
# then end-to-end on the local stack in its own process (it owns the process environment).
test: install lint
	$(PY) -m pytest -q --doctest-modules pipeline scripts/event_sources.py scripts/emulator.py scripts/uploadImages.py \
		scripts/cli_tokens.py scripts/cli_results.py scripts/cli_detector.py infra/alerting.py infra/package.py infra/monitoring.py \
		api/chalicelib/telemetry.py benchmarks/load.py \
		tests/unit tests/functional tests/infra
	$(PY) -m pytest -q tests/e2e

test-unit: install
	$(PY) -m pytest tests/unit -q

test-functional: install
	$(PY) -m pytest tests/functional -q

test-infra: install
	$(PY) -m pytest tests/infra -q

test-e2e: install
	$(PY) -m pytest tests/e2e -q

lint: install
	$(VENV)/bin/ruff check .
	$(VENV)/bin/mypy

bench: install
	$(PY) benchmarks/detector.py
	$(PY) benchmarks/load.py

# Build output and the demo's own model only: models/ also holds models people trained and
# deploy (`modelPath: models/line-1`), which `clean` must not delete.
clean:
	rm -rf .linesight out build models/demo
