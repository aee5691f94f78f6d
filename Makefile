# Two commands a newcomer needs: `make run` and `make test`.
SHELL := /bin/bash
PYTHON ?= python3.11
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
PROTOS := $(shell find proto -name '*.proto')
GEN_STAMP := gen/.generated

.PHONY: run test test-domain test-integration test-external proto venv clean migrate rebuild-projection k8s-check verify bench test-faults test-fuzz

$(STAMP): pyproject.toml
	@command -v $(PYTHON) >/dev/null || { echo "needs $(PYTHON)"; exit 1; }
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e '.[test]'
	touch $(STAMP)

venv: $(STAMP)

# Protobuf modules are generated at build time into gen/ (ignored by git).
$(GEN_STAMP): $(STAMP) $(PROTOS)
	mkdir -p gen
	$(PY) -m grpc_tools.protoc -Iproto \
	  -I$$($(PY) -c 'import grpc_tools, os; print(os.path.join(os.path.dirname(grpc_tools.__file__), "_proto"))') \
	  --python_out=gen --grpc_python_out=gen --pyi_out=gen $(PROTOS)
	touch $(GEN_STAMP)

proto: $(GEN_STAMP)

run: $(GEN_STAMP)
	$(PY) -m petitions.devstack run

migrate: $(GEN_STAMP)
	$(PY) -m petitions.devstack migrate

# The whole suite but the slow fault-injection tests (`make test-faults`).
test: $(GEN_STAMP)
	$(PY) -m pytest -q -m "not slow"

test-domain: $(GEN_STAMP)
	$(PY) -m pytest -q tests/domain tests/test_proto_roundtrip.py

# The integration and end-to-end tests against servers named by POSTGRES_DSN and NATS_URL.
test-external: $(GEN_STAMP)
	$(PY) -m pytest -q -m "(integration or e2e) and not slow"

clean:
	rm -rf gen .pytest_cache

rebuild-projection: $(GEN_STAMP)
	$(PY) -m petitions.devstack rebuild-projection

# Renders deploy/k8s/overlays/* with kubectl's built-in kustomize and validates them offline
# (kubernetes-validate, strict, pinned Kubernetes version) plus the project's own rules.
k8s-check: $(STAMP)
	$(PY) deploy/k8s/check.py

# Recomputes every case's hash chain (or one: make verify CASE=<id>) on POSTGRES_DSN or the
# embedded database; exits 1 naming the first altered, removed or reordered event.
verify: $(STAMP)
	$(PY) -m petitions.audit verify $(if $(CASE),--case $(CASE))

# Throughput, latency, memory, rebuild and routing figures, each beside a baseline measured in
# the same run (a few minutes); prints the table and writes docs/benchmarks.md.
bench: $(GEN_STAMP)
	$(PY) -m bench

# Fault injection under load (kill -9 of each service, NATS down 10 s, PostgreSQL restarted,
# two replicas of each consumer), each on its own database, stream and servers; a few minutes.
test-faults: $(GEN_STAMP)
	$(PY) -m pytest -q -p no:cacheprovider tests/faults -m slow

# Bad input: schemathesis against every service's OpenAPI, raw bytes at gRPC, and
# property-based tests of the parsers and validators.
test-fuzz: $(GEN_STAMP)
	$(PY) -m pytest -q -p no:cacheprovider tests/fuzz
