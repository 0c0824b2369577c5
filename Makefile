# Each target creates the project's virtual environment (.venv) on first use and installs what it
# needs, so a fresh machine with Python 3.11 needs nothing else.

PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
# The compiled detectors (fraud_rules/native.py), rebuilt when any detector source changes. Without
# a C compiler the build says why and the pure-Python detectors run.
COMPILED := fraud_rules/_compiled/manifest.json

.PHONY: demo test bench venv clean

demo: $(STAMP) $(COMPILED)
	$(BIN)/meterseal demo

test: $(STAMP) $(COMPILED)
	$(BIN)/python -m pytest -n auto

bench: $(STAMP) $(COMPILED)
	$(BIN)/meterseal bench

venv: $(STAMP) $(COMPILED)

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[device,test,postgres,plots,compile]'
	touch $(STAMP)

$(COMPILED): $(STAMP) $(wildcard fraud_rules/*.py)
	$(BIN)/meterseal compile-detectors --if-possible

clean:
	rm -rf $(VENV) fraud_rules/_compiled build dist *.egg-info .pytest_cache .hypothesis
