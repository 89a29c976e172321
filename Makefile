# driftrec — two commands: `make demo` and `make test` (each sets everything up).
PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed

.PHONY: setup demo test bench chaos lint fmt clean k8s-tools browser

setup: $(STAMP)

# The venv is cached: reinstalled only when pyproject.toml changes.
$(STAMP): pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e '.[dev]'
	touch $(STAMP)

demo: $(STAMP)
	$(VENV)/bin/driftrec demo

# The tests talk to a real broker: start it first, stop it after, also on failure.
test: $(STAMP) k8s-tools browser
	$(VENV)/bin/ruff check .
	$(VENV)/bin/mypy
	bash deploy/kafka/kafka.sh up
	$(PY) -m pytest -q; status=$$?; bash deploy/kafka/kafka.sh down; exit $$status

# Benchmarks (not tests): figures side by side with the baselines, written to
# docs/benchmarks.md + docs/benchmarks/*.png. BENCH_ARGS="--only clustering" etc.
bench: $(STAMP)
	bash deploy/kafka/kafka.sh up
	$(PY) -m benchmarks run $(BENCH_ARGS); status=$$?; bash deploy/kafka/kafka.sh down; exit $$status

# The whole fault suite (tests/faults): workers killed, volumes lost, the broker
# restarted, the encoder hung, under load; figures to docs/reliability.md.
# CHAOS_ARGS="--only crash-loop --events 3000" etc. (make test runs a bounded subset.)
chaos: $(STAMP)
	bash deploy/kafka/kafka.sh up
	$(PY) -m tests.faults $(CHAOS_ARGS); status=$$?; bash deploy/kafka/kafka.sh down; exit $$status

# The manifest tests render deploy/k8s with kubectl's built-in kustomize (v5 needed);
# without it: Debian's kubectl, else kustomize built from the Go module proxy into
# .cache/bin, else the tests say why they skip.
KUSTOMIZE_VERSION := v5.7.1
k8s-tools:
	@if kubectl version --client 2>/dev/null | grep -q 'Kustomize Version: v[5-9]'; then :; \
	elif [ -x .cache/bin/kustomize ] || command -v kustomize >/dev/null; then :; \
	elif (apt-get update -qq && apt-get install -y -qq kubectl) >/dev/null 2>&1 && \
	     kubectl version --client 2>/dev/null | grep -q 'Kustomize Version: v[5-9]'; then :; \
	elif command -v go >/dev/null && \
	     GOBIN=$(CURDIR)/.cache/bin go install sigs.k8s.io/kustomize/kustomize/v5@$(KUSTOMIZE_VERSION); then :; \
	else echo "warning: found and installed neither kubectl nor kustomize;" \
	     "the manifest tests will skip" >&2; fi

# The console test drives a real headless Chromium: Debian's chromium and chromium-driver
# (no browser downloads here); without apt-get the test says why it skips.
browser:
	@if command -v chromium >/dev/null && command -v chromedriver >/dev/null; then :; \
	elif (apt-get update -qq && DEBIAN_FRONTEND=noninteractive \
	      apt-get install -y -qq chromium chromium-driver) >/dev/null 2>&1; then :; \
	else echo "warning: could not install chromium/chromium-driver;" \
	     "the console browser test will skip" >&2; fi

lint: $(STAMP)
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	$(VENV)/bin/mypy

fmt: $(STAMP)
	$(VENV)/bin/ruff check --fix .
	$(VENV)/bin/ruff format .

clean:
	rm -rf $(VENV) .pytest_cache .ruff_cache demo-out

# Local single-node Apache Kafka (KRaft) on 127.0.0.1:9092 from Maven Central
# jars (Java 17 + Maven); KAFKA_PORT, KAFKA_DATA_DIR, ... pass through.
.PHONY: kafka-up kafka-down
kafka-up:
	bash deploy/kafka/kafka.sh up

kafka-down:
	bash deploy/kafka/kafka.sh down
