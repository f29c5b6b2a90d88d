# genvault: `make run` starts the product on its embedded default, `make test` proves it.

PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV := .venv
PY := $(VENV)/bin/python
PORT ?= 8000
DEMO_PORT ?= $(shell expr $(PORT) + 1)
export PATH := $(CURDIR)/$(VENV)/bin:$(PATH)

.PHONY: run test bench soak lint typecheck clean

$(VENV)/bin/python:
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip

$(VENV)/.installed-run: pyproject.toml | $(VENV)/bin/python
	$(PY) -m pip install --quiet -e .
	touch $@

$(VENV)/.installed-dev: pyproject.toml | $(VENV)/bin/python
	$(PY) -m pip install --quiet -e '.[dev]'
	touch $@ $(VENV)/.installed-run

run: $(VENV)/.installed-run
	$(PY) manage.py migrate --noinput --verbosity 0
	$(PY) manage.py ensure_admin
	@echo "genvault: http://127.0.0.1:$(PORT)/  (log in as admin)"
	@if [ -z "$$ARK_API_KEY" ]; then echo "genvault: no ARK_API_KEY, so images come from the demo upstream on port $(DEMO_PORT)"; fi
	GENVAULT_PORT=$(PORT) GENVAULT_DEMO_PORT=$(DEMO_PORT) \
	DEMO_UPSTREAM_URL=http://127.0.0.1:$(DEMO_PORT) \
	DJANGO_SETTINGS_MODULE=config.settings.local \
	honcho start -f Procfile $(if $(ARK_API_KEY),web worker generator,web worker generator demo) 2>&1 || true

test: $(VENV)/.installed-dev
	$(PY) scripts/run_tests.py $(ARGS)

bench: $(VENV)/.installed-dev
	$(PY) bench/run.py $(ARGS)

# The full soak: 2,000 generations over about ten minutes with faults at random moments
# (the test suite runs its short form). GENVAULT_SOAK_SEED=N replays a schedule.
soak: $(VENV)/.installed-dev
	GENVAULT_SOAK=full $(PY) -m pytest tests/faults/test_soak.py -s -p no:randomly $(ARGS)

lint: $(VENV)/.installed-dev
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .

typecheck: $(VENV)/.installed-dev
	$(VENV)/bin/mypy config generations gallery storage_backends

clean:
	rm -rf $(VENV) var staticfiles
