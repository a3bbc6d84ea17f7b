# segrec: `make run` sets everything up and runs the pipeline on the bundled data;
# `make test` sets everything up and runs the test suite. Both work on a fresh clone.

PYTHON ?= python3
VENV   ?= .venv
PY     := $(VENV)/bin/python
INPUT  ?= data/online_retail_ii.parquet
OUTPUT ?= output
PIPELINE_ARGS ?=
PYTEST_ARGS ?=

# The stamp depends on the dependency declarations, so editing setup.cfg reinstalls.
INSTALLED := $(VENV)/.installed

.PHONY: setup java run test clean

setup: $(INSTALLED) java

$(INSTALLED): setup.cfg pyproject.toml
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip "setuptools>=68,<81" wheel
	$(PY) -m pip install --quiet -e ".[test]"
	@touch $@

# Spark needs Java 17+. Install it when we can (root on Debian), otherwise say how.
java: $(INSTALLED)
	@$(PY) -m jobs.spark --check-java 2>/dev/null || { \
	  if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
	    echo "Java 17+ not found: installing openjdk-17-jre-headless"; \
	    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq openjdk-17-jre-headless >/dev/null; \
	  fi; \
	  $(PY) -m jobs.spark --check-java; }

run: setup
	$(PY) -m jobs.pipeline --input $(INPUT) --output $(OUTPUT) $(PIPELINE_ARGS)

test: setup
	$(PY) -m pytest $(PYTEST_ARGS)

clean:
	rm -rf $(OUTPUT) .pytest_cache build *.egg-info
