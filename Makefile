# Two commands do all set-up: `make demo` and `make test` (each installs into .venv if needed).
SHELL := /bin/bash
VENV ?= .venv
PY := $(if $(VIRTUAL_ENV),python,$(VENV)/bin/python)
STAMP := $(if $(VIRTUAL_ENV),$(VIRTUAL_ENV),$(VENV))/.ferlib-installed

.PHONY: install demo test test-fast notebooks figures bench gpu-check lab test-browser clean

$(STAMP): pyproject.toml
	@if [ -z "$(VIRTUAL_ENV)" ] && [ ! -x $(VENV)/bin/python ]; then python3 -m venv $(VENV); fi
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e ".[notebooks,dev]"
	$(PY) -m pip install -q --no-deps "facenet-pytorch>=2.5"  # MTCNN with its weights inside the wheel; its metadata pins an old torch
	$(PY) -m ipykernel install --sys-prefix --name python3 >/dev/null
	touch $(STAMP)

install: $(STAMP)

demo: $(STAMP)
	$(PY) -m ferlib demo

test: $(STAMP)
	$(PY) -m pytest -x -q --durations=15

test-fast: $(STAMP)
	$(PY) -m pytest -q -m "not slow" --timeout 300  # pytest-timeout: no fast test may hang the tier

notebooks: $(STAMP)
	$(PY) -m ferlib notebooks run-all

figures: $(STAMP)
	$(PY) -m ferlib notebooks run 09_figures 10_results

# The benchmarks only, one script per question (benchmarks/*.py; what they share lives in benchmarks/support/).
bench: $(STAMP)
	for b in benchmarks/*.py; do PYTHONPATH=. $(PY) $$b || exit 1; done

# One prepared run proving the GPU path (benchmarks/support/gpu_check.py): pytest -m gpu tests/engine/test_cuda.py and the
# benchmarks, one table in results/bench/gpu_check.md, < 8 minutes on a CUDA machine, no network, no install step
# (a lent machine's own python3, with torch and pytest, when there is no venv); without CUDA the CPU smoke (--tiny).
GPU_PY := $(if $(or $(VIRTUAL_ENV),$(wildcard $(VENV)/bin/python)),$(PY),python3)
gpu-check:
	PYTHONPATH=. $(GPU_PY) benchmarks/support/gpu_check.py --out results/bench/

# JupyterLab on the project's kernel (python3 from the venv), notebooks/ as root. LAB_IP=0.0.0.0 to reach it
# from another machine (an SSH tunnel to 127.0.0.1 is safer); the token is printed with the URL.
LAB_IP ?= 127.0.0.1
LAB_PORT ?= 8888
lab: $(STAMP)
	@token=$${JUPYTER_TOKEN:-$$($(PY) -c 'import secrets; print(secrets.token_hex(24))')}; \
	printf '\n  JupyterLab (kernel python3 = %s, root notebooks/) will be at:\n\n    http://%s:%s/lab?token=%s\n\n' \
	  "$$($(PY) -c 'import sys; print(sys.executable)')" "$(LAB_IP)" "$(LAB_PORT)" "$$token"; \
	JUPYTER_TOKEN=$$token exec $(PY) -m jupyter lab --ServerApp.root_dir=notebooks --allow-root --no-browser \
	  --ip=$(LAB_IP) --port=$(LAB_PORT) --ServerApp.port_retries=0

# The JupyterLab browser test (tests/notebooks/test_browser.py): Debian's chromium + the playwright package, then pytest -m browser.
SUDO := $(shell [ "$$(id -u)" = 0 ] || echo sudo)
test-browser: $(STAMP)
	@command -v chromium >/dev/null || command -v chromium-browser >/dev/null || { \
	  echo "installing Debian's chromium"; \
	  $(SUDO) apt-get update -qq && $(SUDO) apt-get install -y -qq --no-install-recommends chromium; }
	@$(PY) -c "import playwright.sync_api" 2>/dev/null || $(PY) -m pip install -q playwright
	$(PY) -m pytest -m browser -q -rs -s --durations=5

clean:
	rm -rf results/runs results/notebooks results/figures data/synthetic data/cache .pytest_cache
