# Two commands do all set-up on a fresh machine: `make demo` and `make test`.
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
PIP := $(BIN)/python -m pip
# The runtimes of the NGC 24.10 Triton container, for tests/integration/test_fidelity.py.
NGC_VENV := .venv-ngc
NGC_STAMP := $(NGC_VENV)/.installed

# A client user's environment: the newest numpy and tritonclient, this checkout without extras (no torch, no
# nvidia-pytriton). `make test` runs the client's tests again from it, against a server run by .venv.
CLIENT_VENV := .venv-client
CLIENT_BIN := $(CLIENT_VENV)/bin
CLIENT_STAMP := $(CLIENT_VENV)/.installed
CLIENT_TESTS := tests/unit/test_client_*.py tests/unit/test_local_ladder.py tests/cli/test_import_boundaries.py \
	tests/cli/test_bad_inputs.py tests/integration/test_client_segment.py tests/integration/test_client_evaluate.py

.PHONY: setup setup-client demo test test-unit test-client lint perf bench clean

setup: $(STAMP) $(NGC_STAMP)

$(STAMP): pyproject.toml Makefile
	$(PY) -m venv $(VENV)
	$(PIP) install -q --upgrade pip
	# torch first and pinned: an open range would pull a multi-GB CUDA build.
	$(PIP) install -q torch==2.13.0
	$(PIP) install -q "numpy<2" -e ".[export,int8,serve,perf,dev]"
	# perf_analyzer (from the tritonclient wheel) needs Debian's libb64.
	@if ! ldconfig -p | grep -q libb64.so.0d; then \
	  if [ "$$(id -u)" = 0 ]; then apt-get update -qq && apt-get install -y -qq libb64-0d >/dev/null; \
	  else echo "note: install libb64-0d (apt-get) to use perf_analyzer"; fi; fi
	touch $(STAMP)

$(NGC_STAMP): Makefile
	$(PY) -m venv $(NGC_VENV)
	$(NGC_VENV)/bin/python -m pip install -q "numpy<2" onnxruntime==1.19.2 openvino==2024.4.0
	touch $(NGC_STAMP)

setup-client: $(CLIENT_STAMP)

$(CLIENT_STAMP): pyproject.toml Makefile
	rm -rf $(CLIENT_VENV)
	$(PY) -m venv $(CLIENT_VENV)
	$(CLIENT_BIN)/python -m pip install -q --upgrade pip
	$(CLIENT_BIN)/python -m pip install -q --upgrade "numpy>=2" "tritonclient[grpc]" pytest hypothesis
	$(CLIENT_BIN)/python -m pip install -q -e .
	@$(CLIENT_BIN)/python -c "import numpy; assert int(numpy.__version__.split('.')[0]) >= 2, \
	  'installing the client replaced numpy 2 by ' + numpy.__version__"
	touch $(CLIENT_STAMP)

demo: setup
	$(BIN)/brats-demo run --out out/demo

test: setup
	$(BIN)/ruff check client export serve demo tests benchmarks
	$(BIN)/python -m pytest -q tests
	$(MAKE) test-client

# The fast suite alone: in-process tests, no tritonserver and no child process (about a minute).
test-unit: setup
	$(BIN)/python -m pytest -q tests/unit

# Tests marked torch compare with the eager network: they need .venv, where they ran above.
test-client: setup $(CLIENT_STAMP)
	@$(CLIENT_BIN)/python -c "import numpy, tritonclient; from importlib.metadata import version; \
	  print('client environment: numpy', numpy.__version__, 'tritonclient', version('tritonclient'))"
	BRATS_TEST_SERVER_PYTHON=$(abspath $(BIN)/python) $(CLIENT_BIN)/python -m pytest -q -m "not torch" \
	  -p no:cacheprovider $(CLIENT_TESTS)

lint: setup
	$(BIN)/ruff check client export serve demo tests benchmarks

perf: setup
	$(BIN)/brats-client perf --help

bench: setup
	$(BIN)/python benchmarks/bench_end_to_end.py
	$(BIN)/python benchmarks/bench_precision.py

clean:
	rm -rf $(VENV) $(NGC_VENV) $(CLIENT_VENV) out .pytest_cache .ruff_cache
