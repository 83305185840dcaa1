# `make demo` and `make test` each do the whole set-up on a fresh machine.
VENV   ?= .venv
PYTHON ?= $(shell command -v python3.11 || command -v python3)
PY      = $(VENV)/bin/python
STAMP   = $(VENV)/.aelab-installed
DOCS_STAMP = $(VENV)/.aelab-docs-installed
# torch is pinned and installed first so that no dependency pulls a multi-GB
# CUDA build; set TORCH_SPEC (and PIP_EXTRA) to choose another build.
TORCH_SPEC ?= torch==2.13.0

.PHONY: demo test test-fast test-numerics-avx2 lint docs bench clean

$(STAMP): pyproject.toml Makefile
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q $(PIP_EXTRA) "$(TORCH_SPEC)"
	$(PY) -m pip install -q -e '.[dev]'
	touch $(STAMP)

demo: $(STAMP)
	$(VENV)/bin/aelab study --quick --out runs/demo --resume
	@echo "report: runs/demo/report.html"

# The whole suite, then the tests marked `numerics` again with oneDNN, MKL and ATen held to
# AVX2 kernels: their tolerances (tests/noise.py) must hold on AVX2-only and AVX-512 CPUs alike.
test: $(STAMP)
	$(PY) -m pytest -q $(PYTEST_ARGS)
	$(MAKE) --no-print-directory test-numerics-avx2

# The edit-test loop: everything but the tests marked `slow` (about a minute on 2 cores).
test-fast: $(STAMP)
	$(PY) -m pytest -q -m "not slow" $(PYTEST_ARGS)

AVX2_ENV = ONEDNN_MAX_CPU_ISA=AVX2 MKL_ENABLE_INSTRUCTIONS=AVX2 ATEN_CPU_CAPABILITY=avx2
test-numerics-avx2: $(STAMP)
	$(AVX2_ENV) $(PY) -m pytest -q -m numerics $(PYTEST_ARGS); rc=$$?; [ $$rc -eq 0 ] || [ $$rc -eq 5 ]

# The documentation site, warnings as errors; it runs every gallery example (examples/plot_*.py).
$(DOCS_STAMP): $(STAMP)
	$(PY) -m pip install -q -e '.[docs]'
	touch $(DOCS_STAMP)

docs: $(DOCS_STAMP)
	$(VENV)/bin/sphinx-build -W --keep-going -q -b html docs docs/_build/html
	@echo "docs: docs/_build/html/index.html"

lint: $(STAMP)
	$(PY) -m ruff check src tests benchmarks
	$(VENV)/bin/lint-imports

clean:
	rm -rf $(VENV) runs .pytest_cache docs/_build docs/auto_examples docs/gen_modules docs/api/generated docs/sg_execution_times.rst
