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

.PHONY: run test test-unit test-e2e serve index catalogue bench bench-precision bench-serving bench-scale bench-gpu \
	lint format manifests tools clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip

# Reinstalls only when the dependency list changes; the package itself is editable.
$(INSTALLED): pyproject.toml | $(BIN)/python
	$(BIN)/pip install --quiet -e '.[test]'
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

# Every part in one run; BENCH_ARGS adds options (e.g. BENCH_ARGS=--quick for a short smoke run of every part).
BENCH_ARGS ?=
bench: $(INSTALLED)
	hack/bench-data.sh
	$(BIN)/python -m benchmarks.run $(BENCH_ARGS)

# One part at a time: fp32/bf16/int8 side by side; the limit, this server and the naive one; search at scale.
bench-precision: $(INSTALLED)
	$(BIN)/python -m benchmarks.run --only precision $(BENCH_ARGS)

bench-serving: $(INSTALLED)
	$(BIN)/python -m benchmarks.run --only serving $(BENCH_ARGS)

bench-scale: $(INSTALLED)
	hack/bench-data.sh
	$(BIN)/python -m benchmarks.run --only scale $(BENCH_ARGS)

# On a machine with a CUDA GPU: fp32/fp16/bf16, the server up to 64 callers, and the GPU targets.
bench-gpu: $(INSTALLED)
	$(BIN)/python -m benchmarks.run --gpu --only precision,serving $(BENCH_ARGS)

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
