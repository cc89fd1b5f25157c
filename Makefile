# Two commands do all set-up on a fresh machine: `make demo` and `make test`.
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
PIP := $(BIN)/python -m pip
# The runtimes of the NGC 24.10 Triton container, for tests/integration/test_fidelity.py.
NGC_VENV := .venv-ngc
NGC_STAMP := $(NGC_VENV)/.installed

.PHONY: setup demo test lint perf bench clean

setup: $(STAMP) $(NGC_STAMP)

$(STAMP): pyproject.toml Makefile
	$(PY) -m venv $(VENV)
	$(PIP) install -q --upgrade pip
	# torch first and pinned: an open range would pull a multi-GB CUDA build.
	$(PIP) install -q torch==2.13.0
	$(PIP) install -q "numpy<2" -e ".[export,serve,perf,dev]"
	# perf_analyzer (from the tritonclient wheel) needs Debian's libb64.
	@if ! ldconfig -p | grep -q libb64.so.0d; then \
	  if [ "$$(id -u)" = 0 ]; then apt-get update -qq && apt-get install -y -qq libb64-0d >/dev/null; \
	  else echo "note: install libb64-0d (apt-get) to use perf_analyzer"; fi; fi
	touch $(STAMP)

$(NGC_STAMP): Makefile
	$(PY) -m venv $(NGC_VENV)
	$(NGC_VENV)/bin/python -m pip install -q "numpy<2" onnxruntime==1.19.2 openvino==2024.4.0
	touch $(NGC_STAMP)

demo: setup
	$(BIN)/brats-demo run --out out/demo

test: setup
	$(BIN)/ruff check client export serve demo tests benchmarks
	$(BIN)/python -m pytest -q tests

lint: setup
	$(BIN)/ruff check client export serve demo tests benchmarks

perf: setup
	$(BIN)/brats-client perf --help

bench: setup
	$(BIN)/python benchmarks/bench_end_to_end.py

clean:
	rm -rf $(VENV) $(NGC_VENV) out .pytest_cache .ruff_cache
