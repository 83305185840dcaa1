# `make demo` and `make test` each do the whole set-up on a fresh machine.
VENV   ?= .venv
PYTHON ?= $(shell command -v python3.11 || command -v python3)
PY      = $(VENV)/bin/python
STAMP   = $(VENV)/.aelab-installed
# torch is pinned and installed first so that no dependency pulls a multi-GB
# CUDA build; set TORCH_SPEC (and PIP_EXTRA) to choose another build.
TORCH_SPEC ?= torch==2.13.0

.PHONY: demo test lint bench clean

$(STAMP): pyproject.toml Makefile
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q $(PIP_EXTRA) "$(TORCH_SPEC)"
	$(PY) -m pip install -q -e '.[dev]'
	touch $(STAMP)

demo: $(STAMP)
	$(VENV)/bin/aelab study --quick --out runs/demo --resume
	@echo "report: runs/demo/report.html"

test: $(STAMP)
	$(PY) -m pytest -q $(PYTEST_ARGS)

lint: $(STAMP)
	$(PY) -m ruff check src tests benchmarks
	$(VENV)/bin/lint-imports

clean:
	rm -rf $(VENV) runs .pytest_cache
