# fpgaprune: `make prune && make hls` runs the whole flow on the embedded default config.
# Every target creates the local virtualenv (.venv) on first use, so a fresh machine needs
# nothing but Python 3.11 and g++.

PYTHON  ?= python3.11
VENV    ?= .venv
CONFIG  ?= configs/mnist_cnn.yaml
ARGS    ?=
BIN     := $(VENV)/bin
FP      := $(BIN)/fpgaprune
# The official MNIST test set is used for accuracy figures when this checkout has it beside
# it (../shared); the tool itself never needs it.
T10K    := ../shared/data/mnist-t10k
TEST_DATA ?= $(if $(wildcard $(T10K)/t10k-images-idx3-ubyte.gz),--test-data mnist-t10k:$(T10K),)

export TF_CPP_MIN_LOG_LEVEL ?= 3
export PYTHONHASHSEED ?= 0

.PHONY: install train analyze prune transfer transfer-demo hls synth report sweep test test-fast lint bench notebooks clean

install: $(VENV)/.installed

# TF 2.14 needs Python 3.11; most current distributions ship 3.12 or 3.13, so say what to do.
NEED_PY := needs Python 3.11 (pyenv install 3.11, uv python install 3.11, or your distribution's python3.11 \
	package); then make PYTHON=/path/to/python3.11

$(VENV)/.installed: pyproject.toml
	@test -x $(BIN)/python || $(PYTHON) -c 'import sys; sys.exit(sys.version_info[:2] != (3, 11))' 2>/dev/null \
		|| { echo "make: $(PYTHON) is not Python 3.11 or not found; fpgaprune $(NEED_PY)" >&2; exit 2; }
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip setuptools wheel
	$(BIN)/pip install --quiet -e '.[test]'
	touch $@

train: install
	$(FP) train --config $(CONFIG) $(TEST_DATA) $(ARGS)

analyze: install
	$(FP) analyze --config $(CONFIG) $(TEST_DATA) $(ARGS)

prune: install
	$(FP) prune --config $(CONFIG) $(TEST_DATA) $(ARGS)

transfer: install
	$(FP) transfer --config $(CONFIG) $(TEST_DATA) $(ARGS)

# Digits 0-4 -> 5-9 from 100 images per class, against the same network trained from scratch.
transfer-demo: install
	$(FP) transfer --demo --config $(CONFIG) $(TEST_DATA) $(ARGS)

hls: install
	$(FP) hls --config $(CONFIG) $(TEST_DATA) $(ARGS)

synth: install
	$(FP) synth --config $(CONFIG) $(ARGS)

report: install
	$(FP) report --config $(CONFIG) $(ARGS)

# Design-space sweep (the config's sweep section): Pareto front of accuracy against LUT-equivalents
# and DSPs; WORKERS local worker processes (capped by available memory).
WORKERS ?= 1
sweep: install
	$(FP) sweep --config $(CONFIG) --workers $(WORKERS) $(TEST_DATA) $(ARGS)

# The README's test command: the whole suite (slow checks included), under 20 minutes.
# pytest exits 5 when it collects nothing; that is reported, not hidden, by the line it prints.
# The tests are mostly single-threaded (hls4ml conversion, g++ builds, small models): one
# process per core roughly halves the suite's time on 2 cores.
TEST_WORKERS ?= 2

test: install
	$(BIN)/python -m pytest -q -n $(TEST_WORKERS) $(ARGS); rc=$$?; if [ $$rc -eq 5 ]; then echo "no tests collected"; fi; exit $$rc

test-fast: install
	$(BIN)/python -m pytest -q -n $(TEST_WORKERS) -m "not slow" $(ARGS)

lint: install
	$(BIN)/ruff check .

# All benchmarks (results and the commands that made them: bench/RESULTS.md); ARGS goes to each.
.PHONY: bench-masked-fit bench-compression
bench: bench-masked-fit bench-compression

bench-masked-fit: install
	$(BIN)/python bench/masked_fit.py $(ARGS)

# Kernel pruning against tfmot, hls4ml's DSP-aware pruning and filter pruning: 3 seeds x 5
# targets, 20-40 min on 2 cores (ARGS=--quick: 1 seed x 2 targets, a few minutes).
bench-compression: install
	$(BIN)/python bench/compression.py $(ARGS)

notebooks: install
	$(BIN)/python -m pytest -q tests/test_notebooks.py

clean:
	rm -rf runs build *.egg-info .pytest_cache .ruff_cache
	find hls_projects -mindepth 1 -maxdepth 1 ! -name README.md -exec rm -rf {} +
