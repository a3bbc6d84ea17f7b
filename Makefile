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

DB     ?= $(OUTPUT)/segrec.sqlite
HOST   ?= 127.0.0.1
PORT   ?= 8000

.PHONY: setup java lapack chromium jvm-cache pipeline publish serve run test bench bench-web cluster-test clean

setup: $(INSTALLED) java lapack

$(INSTALLED): setup.cfg pyproject.toml
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip "setuptools>=68,<81" wheel
	$(PY) -m pip install --quiet -e ".[test]"
	@touch $@

# Spark needs Java 17+. Install it when we can (root on Debian), otherwise say how.
java: $(INSTALLED)
	@$(PY) -m runtime.java --check-java 2>/dev/null || { \
	  if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
	    echo "Java 17+ not found: installing openjdk-17-jre-headless"; \
	    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq openjdk-17-jre-headless >/dev/null; \
	  fi; \
	  $(PY) -m runtime.java --check-java; }

# Spark's ALS solves each customer's and item's normal equations through LAPACK: the system's when it
# finds liblapack.so.3, else a Java translation (it says so once, "dlopen(liblapack.so.3) failed").
# Optional (a few percent of each fit), so never an error; installed when we can (root on Debian).
lapack:
	@ldconfig -p 2>/dev/null | grep -q "liblapack.so.3 " || { \
	  if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
	    echo "liblapack.so.3 not found: installing liblapack3 for Spark's ALS"; \
	    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq liblapack3 >/dev/null || true; \
	  fi; \
	  ldconfig -p 2>/dev/null | grep -q "liblapack.so.3 " || \
	    echo "liblapack.so.3 not found: Spark's ALS will use its Java LAPACK (install liblapack3, or your system's LAPACK, for native solves)"; }

# The browser test drives the Debian/Ubuntu Chromium through Playwright; install it when we can.
chromium:
	@command -v chromium >/dev/null || { \
	  if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
	    echo "Chromium not found: installing it for the browser test"; \
	    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null || true; \
	  fi; \
	  command -v chromium >/dev/null || echo "Chromium could not be installed: the browser test will be skipped"; }

# Java 25+: a training run (the pipeline on a small synthetic shop, about 2 minutes, once per Java and Spark
# installation) leaves an ahead-of-time cache that every later local JVM starts from, seconds sooner
# (devtools/jvm_cache.py). Older Javas: nothing to do.
jvm-cache: setup
	$(PY) -m devtools.jvm_cache

# The bundled data's currency and credit (jobs/profiles/online_retail_ii.toml); CONFIG= for none, or your own file.
CONFIG ?= $(if $(filter data/online_retail_ii.parquet,$(INPUT)),jobs/profiles/online_retail_ii.toml,)
pipeline: setup
	$(PY) -m jobs.pipeline --input $(INPUT) --output $(OUTPUT) $(if $(CONFIG),--config $(CONFIG)) $(PIPELINE_ARGS)

publish: setup
	$(PY) -m jobs.publish --output $(OUTPUT) --db $(DB)

# Production server; a secret key is made once per output directory unless SECRET_KEY is set.
serve: setup
	@test -s $(OUTPUT)/secret_key || { mkdir -p $(OUTPUT); umask 077; $(PY) -c "import secrets; print(secrets.token_hex(32))" > $(OUTPUT)/secret_key; }
	SECRET_KEY="$${SECRET_KEY:-$$(cat $(OUTPUT)/secret_key)}" SEGREC_DB=$(DB) SEGREC_STATE_DB=$(OUTPUT)/segrec-state.sqlite \
	  $(PY) -m webapp.serve --host $(HOST) --port $(PORT)

# The whole thing: pipeline, publish, then serve the app (Ctrl-C stops it). A demo: the ALS search gets
# DEMO_TUNE_BUDGET seconds instead of the default 240, so the app serves within minutes; make pipeline
# keeps the full search. A --tune-budget in PIPELINE_ARGS comes later and wins.
DEMO_TUNE_BUDGET ?= 30
run: PIPELINE_ARGS := --tune-budget $(DEMO_TUNE_BUDGET) $(PIPELINE_ARGS)
run: pipeline publish serve

test: setup chromium
	$(PY) -m pytest $(PYTEST_ARGS)

# Scale benchmark: the pipeline at 1M, 10M and 50M synthetic rows next to a pandas + lifetimes +
# implicit reference; writes BENCHMARKS.md and BENCHMARKS.png. SIZES=1e6,1e7 for fewer sizes.
SIZES ?= 1e6,1e7,5e7
BENCH_ARGS ?=
bench: setup jvm-cache
	$(PY) -m devtools.bench --sizes $(SIZES) $(BENCH_ARGS)

# The pipeline on a Spark standalone master + worker on 127.0.0.1 (spark-submit, project zipped for
# --py-files), compared table by table with a local-mode run on the same small synthetic input.
# The test suite runs the same check (tests/test_cluster.py) against its own local run.
CLUSTER_DIR ?= $(OUTPUT)/cluster-test
cluster-test: setup
	$(PY) -m jobs.synth --output $(CLUSTER_DIR)/input --customers 400 --seed 3
	$(PY) -m devtools.cluster_test --input $(CLUSTER_DIR)/input/transactions --work-dir $(CLUSTER_DIR) --config jobs/profiles/quick.toml

# Load benchmark of the API on loopback (needs a published store: make run or make publish).
bench-web: setup
	@command -v wrk >/dev/null || { [ "$$(id -u)" = 0 ] && apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq wrk >/dev/null; }
	$(PY) -m devtools.bench_web --db $(DB) --report $(OUTPUT)/bench-web.json

clean:
	rm -rf $(OUTPUT) .pytest_cache build *.egg-info
