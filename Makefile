# Cairn: `make run` starts the whole stack, `make test` runs the whole suite. Both install what they need.
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
PROTOS := $(shell find proto -name '*.proto')
PROTO_STAMP := build/.proto-stamp

.PHONY: help setup lock proto run test test-fast faults fuzz bench bench-tools bench-micro bench-overhead conformance daml-client lint typecheck check clean

help: ## list the targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | sed 's/:.*## /\t/'

# xds-protos (Envoy's ext_authz API) ships an old copy of opentelemetry/proto/*, without
# InstrumentationScope; whichever package pip installs last owns those files, and with xds-protos'
# copy the OTLP exporter cannot be imported (every traced service exits). Install ours last.
OTEL_PROTO_LAST = $(PY) -m pip install --quiet --no-deps --force-reinstall -c constraints.txt opentelemetry-proto

$(STAMP): pyproject.toml constraints.txt
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -c constraints.txt -e '.[dev]'
	$(OTEL_PROTO_LAST)
	touch $@

setup: $(STAMP) ## create .venv and install the package with its dev and stack extras

lock: $(BENCH_STAMP) ## after a green `make test`: record the installed versions in constraints.txt
	{ sed -n '/^#/p' constraints.txt; $(PY) -m pip freeze --exclude-editable | grep -v '^cairn=='; } \
	  > constraints.txt.new && mv constraints.txt.new constraints.txt

$(PROTO_STAMP): $(STAMP) $(PROTOS) scripts/gen_protos.py
	$(PY) scripts/gen_protos.py
	touch $@

proto: $(PROTO_STAMP) ## generate Python stubs (services/cairn/*/v1) and Envoy's descriptor set (build/cairn.binpb)

run: proto ## start Redis, the four services and Envoy in the foreground (Ctrl-C stops all)
	exec $(PY) -m cairn.stack

test: proto ## run the whole test suite (unit, service, integration and end-to-end)
	$(PY) -m pytest

test-fast: proto ## the suite without the slow end-to-end tests
	$(PY) -m pytest -m 'not e2e and not bench'

BENCH_STAMP := $(VENV)/.bench-installed
# root installs directly (containers, CI); anyone else through sudo
SUDO := $(shell [ "$$(id -u)" = 0 ] || echo sudo)

$(BENCH_STAMP): $(STAMP) pyproject.toml constraints.txt
	$(PY) -m pip install --quiet -c constraints.txt -e '.[dev,bench]'
	$(OTEL_PROTO_LAST)
	touch $@

faults: proto ## kill -9 every part 3 times under load with 40 MB uploads; prints docs/faults.md's figures
	CAIRN_FAULTS_ROUNDS=3 CAIRN_FAULTS_UPLOAD_MB=40 CAIRN_FAULTS_RECOVERY_LIMIT=5 \
	  $(PY) -m pytest tests/e2e/test_faults.py -s -p no:randomly

bench-tools: ## the load generators (Debian's wrk and nghttp2-client), installed if missing
	@command -v wrk >/dev/null && command -v h2load >/dev/null || { \
	  $(SUDO) apt-get update -qq && \
	  DEBIAN_FRONTEND=noninteractive $(SUDO) apt-get install -y -qq wrk nghttp2-client >/dev/null; }

bench: proto bench-tools $(BENCH_STAMP) ## start the stack, load it, write docs/benchmarks/report.{md,json}
	$(PY) -m tests.bench.harness

bench-overhead: proto bench-tools $(BENCH_STAMP) ## metrics on vs off on the create benchmark (paired runs; docs/benchmarks/overhead.json)
	$(PY) -m tests.bench.harness.overhead

bench-micro: proto ## in-process benchmarks of single parts (engine, WASM, blob store, streams)
	$(PY) -m pytest -m bench -s -p no:randomly

conformance: proto ## schemathesis: Cairn's OpenAPI document and Golem's Dec 2024 one, longer runs (docs/openapi.md)
	CAIRN_OPENAPI_EXAMPLES=$${CAIRN_OPENAPI_EXAMPLES:-40} CAIRN_OPENAPI_COVERAGE=1 \
	    $(PY) -m pytest -m e2e -p no:randomly \
	    tests/e2e/test_openapi_conformance.py tests/e2e/test_golem_document_conformance.py

daml-client: proto ## the real npm @daml/ledger client against a fresh stack: every operation, and streamQuery resuming after a disconnect (needs the npm registry; not in `make test`)
	cd tests/daml_client && npm ci --no-audit --no-fund --loglevel=error
	CAIRN_PYTHON=$(abspath $(PY)) node tests/daml_client/check.js

fuzz: proto ## hardening acceptance run: 2,000+ mutated requests, 300 damaged uploads, 150 slow drips (docs/hardening.md)
	FUZZ_REQUESTS=$${FUZZ_REQUESTS:-2000} FUZZ_BINARIES=$${FUZZ_BINARIES:-300} \
	FUZZ_SCHEMA_EXAMPLES=$${FUZZ_SCHEMA_EXAMPLES:-250} FUZZ_DRIPS=$${FUZZ_DRIPS:-150} \
	FUZZ_RANDOM=$${FUZZ_RANDOM:-1} FUZZ_REPORT=$${FUZZ_REPORT:-build/fuzz-report.json} \
	    $(PY) -m pytest -m e2e -p no:randomly --timeout=3600 -s tests/e2e/test_fuzz.py

lint: $(STAMP) ## ruff
	$(VENV)/bin/ruff check services tests scripts

typecheck: proto ## mypy --strict
	$(VENV)/bin/mypy

check: lint typecheck test ## everything CI cares about

clean: ## remove generated code and build output (keeps .venv and .run)
	rm -rf build
	find services -path '*/v1/*_pb2*' -delete
