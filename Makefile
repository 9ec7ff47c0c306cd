# Two commands a user needs: `make run` and `make test`. Everything else is a helper for them.
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
INSTALLED := $(VENV)/.installed
CATALOGUE := data/sample-catalogue
MILVUS_URI ?= data/milvus.db
HTTP_PORT ?= 8080
GRPC_PORT ?= 8081

.PHONY: run test test-unit test-e2e serve index catalogue bench fuzz soak lock audit lint format manifests tools clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip

# Reinstalls only when the dependency list changes; the package itself is editable. requirements/test.txt holds every
# transitive dependency at its exact version (`make lock` writes it).
$(INSTALLED): pyproject.toml requirements/test.txt | $(BIN)/python
	$(BIN)/pip install --quiet --constraint requirements/test.txt -e '.[test]'
	touch $@

install: $(INSTALLED)

catalogue: $(INSTALLED)
	$(BIN)/image-search sample-catalogue --out $(CATALOGUE)

index: catalogue
	$(BIN)/image-search index $(CATALOGUE) --milvus-uri $(MILVUS_URI)

run: index
	@$(BIN)/image-search query-example --http-port $(HTTP_PORT) --catalogue $(CATALOGUE)
	$(BIN)/image-search serve --milvus-uri $(MILVUS_URI) --http_port $(HTTP_PORT) --grpc_port $(GRPC_PORT)

tools:
	hack/test-tools.sh

# Two processes: the e2e clients' gRPC stubs and KServe's own cannot be loaded side by side.
test: $(INSTALLED) tools
	$(BIN)/python -m pytest tests/unit tests/chart
	$(BIN)/python -m pytest tests/e2e

test-unit: $(INSTALLED)
	$(BIN)/python -m pytest tests/unit

test-e2e: $(INSTALLED)
	$(BIN)/python -m pytest tests/e2e

bench: $(INSTALLED)
	$(BIN)/python -m benchmarks.run

# A long mixed load (good and bad requests, REST and gRPC) on a real server and Milvus: errors, p99 drift, RSS growth.
SOAK_DURATION_S ?= 600
SOAK_CONCURRENCY ?= 32
soak: $(INSTALLED)
	$(BIN)/python -m benchmarks.soak --duration-s $(SOAK_DURATION_S) --concurrency $(SOAK_CONCURRENCY)

# Every property test marked `fuzz` (tests/unit), with FUZZ_EXAMPLES examples each instead of make test's few.
FUZZ_EXAMPLES ?= 20000
fuzz: $(INSTALLED)
	HYPOTHESIS_PROFILE=fuzz FUZZ_EXAMPLES=$(FUZZ_EXAMPLES) $(BIN)/python -m pytest -m fuzz tests/unit

# After a change of pins in pyproject.toml and `make install`: the exact transitive set, for the image and for CI.
lock: $(INSTALLED)
	$(BIN)/python hack/lock-requirements.py

# pip-audit of every locked package, where a vulnerability database can be reached (it says so when none can).
audit: $(INSTALLED)
	hack/audit.sh

manifests: tools
	hack/render-manifests.sh

lint: $(INSTALLED)
	$(BIN)/ruff check predictor tests benchmarks
	$(BIN)/ruff format --check predictor tests benchmarks

format: $(INSTALLED)
	$(BIN)/ruff format predictor tests benchmarks
	$(BIN)/ruff check --fix predictor tests benchmarks

clean:
	rm -rf $(VENV) data/milvus.db $(CATALOGUE) .pytest_cache
