# Two commands do all set-up: `make demo` and `make test` (each installs into .venv if needed).
SHELL := /bin/bash
VENV ?= .venv
PY := $(if $(VIRTUAL_ENV),python,$(VENV)/bin/python)
STAMP := $(if $(VIRTUAL_ENV),$(VIRTUAL_ENV),$(VENV))/.ferlib-installed

.PHONY: install demo test test-fast notebooks figures bench lab test-browser clean

$(STAMP): pyproject.toml
	@if [ -z "$(VIRTUAL_ENV)" ] && [ ! -x $(VENV)/bin/python ]; then python3 -m venv $(VENV); fi
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e ".[notebooks,dev]"
	$(PY) -m pip install -q --no-deps "facenet-pytorch>=2.5"  # MTCNN with its weights inside the wheel; its metadata pins an old torch
	$(PY) -m ipykernel install --sys-prefix --name python3 >/dev/null
	touch $(STAMP)

install: $(STAMP)

demo: $(STAMP)
	$(PY) -m ferlib.demo

test: $(STAMP)
	$(PY) -m pytest -x -q --durations=15

test-fast: $(STAMP)
	$(PY) -m pytest -q -m "not slow"

notebooks: $(STAMP)
	$(PY) -m ferlib.notebooks run-all

figures: $(STAMP)
	$(PY) -m ferlib.notebooks run 09_figures 10_results

bench: $(STAMP)
	for b in benchmarks/*.py; do $(PY) $$b || exit 1; done

lab: $(STAMP)
	$(PY) -m jupyter lab --notebook-dir=notebooks --allow-root --no-browser --ip=127.0.0.1

clean:
	rm -rf results/runs results/notebooks results/figures data/synthetic data/cache .pytest_cache
