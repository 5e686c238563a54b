# The two set-up commands of the README:
#   make sample   install, then run the pipeline on the bundled synthetic sample data
#   make test     install with test extras, then run the default (fast) test suite
# Both are idempotent and work offline given the package registries.

PYTHON ?= python3
VENV   ?= .venv
PY      = $(VENV)/bin/python
PIP     = $(PY) -m pip
# torch: the CPU build is all lesionq needs (brain extraction with deepbet).
TORCH  ?= torch==2.13.0
SAMPLE_OUT ?= out/sample

.PHONY: install install-test sample test test-all lint wheel-check clean

$(PY):
	$(PYTHON) -m venv $(VENV)
	$(PIP) install -q --upgrade pip

install: $(PY)
	$(PIP) install -q $(TORCH)
	$(PIP) install -q -e .

install-test: $(PY)
	$(PIP) install -q $(TORCH)
	$(PIP) install -q -e '.[test]'

sample: install
	$(VENV)/bin/lesionq run sample_data/bids $(SAMPLE_OUT) participant
	@echo "Per-visit counts: $(SAMPLE_OUT)/visits.tsv"

test: install-test
	$(VENV)/bin/python -m pytest -q

test-all: install-test
	$(VENV)/bin/python -m pytest -q -m "slow or not slow"

# Build the wheel, install it into a fresh environment outside the checkout and run it from
# outside (lesionq check and run on the sample data, no LESIONQ_* variables): .ci/wheel-check.sh
wheel-check:
	PYTHON=$(PYTHON) TORCH=$(TORCH) .ci/wheel-check.sh

lint: install-test
	$(VENV)/bin/ruff check src tests benchmarks sample_data atlases
	$(VENV)/bin/ruff format --check src tests benchmarks sample_data atlases

clean:
	rm -rf $(SAMPLE_OUT) .pytest_cache
