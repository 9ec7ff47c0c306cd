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
# The venv is installed without bytecode (below); Python writes it for each module on its first import, unless the
# environment forbids it. Forbidden, every process compiles torch's thousands of modules again: `import torch` takes
# 7.3 s of CPU instead of 3.7, in each of the hundreds of processes the tests start.
unexport PYTHONDONTWRITEBYTECODE

.PHONY: help install run test test-checks test-units test-e2e-parallel test-timed test-unit test-slow test-e2e serve index catalogue bench bench-precision bench-serving bench-scale bench-filtered bench-gpu \
	bench-perf-analyzer \
	eval eval-served default-projection fuzz soak lock audit lint format manifests tools clean image image-test kind-up \
	kind-e2e kind-down

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip

# Reinstalls only when the dependency list changes; the package itself is editable. requirements/test.txt holds every
# transitive dependency at its exact version (`make lock` writes it). Without --no-compile pip writes the bytecode of
# all 23,000 modules (torch's and CUDA's included) on one core; Python writes it for the few thousand it imports.
$(INSTALLED): pyproject.toml requirements/test.txt | $(BIN)/python
	$(BIN)/pip install --quiet --no-compile --constraint requirements/test.txt -e '.[test]'
	touch $@

# Every target with a `## description` on its line, in the order of this file.
help: ## List the targets and what each does
	@grep -E '^[a-z0-9-]+:.*## ' $(MAKEFILE_LIST) | sed -E 's/^([a-z0-9-]+):.*## (.*)/\1\t\2/' | \
	  awk -F'\t' '{ printf "  %-20s %s\n", $$1, $$2 }'

install: $(INSTALLED) ## Install the package and every tool of the tests into .venv (reinstalls when pins change)

catalogue: $(INSTALLED) ## Write the sample catalogue to data/sample-catalogue
	$(BIN)/image-search sample-catalogue --out $(CATALOGUE)

index: catalogue ## Index the sample catalogue into data/milvus.db
	$(BIN)/image-search index $(CATALOGUE) --milvus-uri $(MILVUS_URI)

run: index ## Index the sample catalogue and serve it (REST 8080, gRPC 8081, the search page at /ui/)
	@$(BIN)/image-search query-example --http-port $(HTTP_PORT) --catalogue $(CATALOGUE)
	$(BIN)/image-search serve --milvus-uri $(MILVUS_URI) --http_port $(HTTP_PORT) --grpc_port $(GRPC_PORT) --ui

tools: $(INSTALLED) ## Install the test tools (helm, kubectl, Prometheus, ...)
	hack/test-tools.sh

# `make test` runs the checks, the unit and chart tests, the end-to-end tests, then the tests that time things against
# the clock, one group after another: each group keeps both cores busy in its own pytest workers, and two groups at
# once only slow each other (side by side with the unit tests and the image build, the end-to-end tests took 44
# minutes instead of 24). CI runs it with two jobs (`.ci/run`), so that only the image builds beside them.
# The e2e clients' gRPC stubs and KServe's own cannot be loaded side by side, so each group is a pytest process.
test: test-checks test-units test-e2e-parallel test-timed ## Lint, then every test: unit, chart, end-to-end, container

# The tools first: installing a Python's headers can upgrade that Python under a running mypy or pytest.
test-checks: tools
	$(MAKE) --no-print-directory lint

test-units: test-checks
	$(BIN)/python -m pytest -m "not slow" $(IN_PARALLEL) tests/unit tests/chart

# One pytest process leaves a core idle much of the time: the compile tests are single-threaded, and the end-to-end
# tests wait on the servers they start. Workers take whole test files, so a file's fixtures and servers start once.
# The tests that time the server against the clock (marked `serial`) and the image tests, which time a pod's start,
# run after the rest, alone. TEST_WORKERS=0 runs everything in one process.
TEST_WORKERS ?= 2
IN_PARALLEL := $(if $(filter-out 0,$(TEST_WORKERS)),--numprocesses=$(TEST_WORKERS) --dist=loadscope)
E2E_PARALLEL := $(BIN)/python -m pytest --durations=15 $(IN_PARALLEL) -m "not serial" tests/e2e
TIMED := $(BIN)/python -m pytest --durations=5 -m "serial or container" tests/e2e tests/container

test-e2e-parallel: test-units
	$(E2E_PARALLEL)

test-timed: test-e2e-parallel $(if $(filter yes,$(BUILD_IMAGE)),image)
	$(TIMED)

test-unit: $(INSTALLED) ## The unit tests only
	$(BIN)/python -m pytest -m "not slow" $(IN_PARALLEL) tests/unit

# The checks marked `slow`, too long for make test's budget (the full int8 probe, for one).
test-slow: $(INSTALLED) ## The checks marked slow (the full int8 probe, for one)
	$(BIN)/python -m pytest -m slow tests/unit

test-e2e: $(INSTALLED) ## The end-to-end and container tests only
	$(E2E_PARALLEL) && $(TIMED)

# The image serves with tcmalloc (Dockerfile); the benchmarks and the soak run with it too, to measure what pods do.
WITH_TCMALLOC := hack/with-tcmalloc.sh

# Every part in one run; BENCH_ARGS adds options (e.g. BENCH_ARGS=--quick for a short smoke run of every part).
BENCH_ARGS ?=
bench: $(INSTALLED) test-slow ## Every benchmark (BENCH_ARGS=--quick for a short smoke run)
	hack/bench-data.sh
	$(WITH_TCMALLOC) $(BIN)/python -m benchmarks run $(BENCH_ARGS)

# One part at a time: fp32/bf16/int8 side by side; the limit, this server and the naive one; search at scale.
bench-precision: $(INSTALLED) test-slow ## fp32/bf16/int8 side by side
	$(WITH_TCMALLOC) $(BIN)/python -m benchmarks run --only precision $(BENCH_ARGS)

bench-serving: $(INSTALLED) ## The server under load, against the naive one and the LitServe peer
	$(WITH_TCMALLOC) $(BIN)/python -m benchmarks run --only serving $(BENCH_ARGS)

bench-scale: $(INSTALLED) ## Search at scale
	hack/bench-data.sh
	$(WITH_TCMALLOC) $(BIN)/python -m benchmarks run --only scale $(BENCH_ARGS)

bench-filtered: $(INSTALLED) ## Filtered search: recall@10 and latency by catalogue size x filter selectivity, both Milvus kinds
	$(WITH_TCMALLOC) $(BIN)/python -m benchmarks run --only filtered $(BENCH_ARGS)

# On a machine with a CUDA GPU: fp32/fp16/bf16, the server up to 64 callers, and the GPU targets.
# Triton's perf_analyzer over gRPC and REST at 1, 8 and 32 callers, from a Debian 13 container (it needs glibc 2.38).
bench-perf-analyzer: $(INSTALLED) ## Triton's perf_analyzer over gRPC and REST at 1, 8 and 32 callers
	hack/image-tools.sh
	hack/perf-analyzer-image.sh
	$(WITH_TCMALLOC) $(BIN)/python -m benchmarks perf-analyzer $(BENCH_ARGS)

bench-gpu: $(INSTALLED) ## fp32/fp16/bf16 and the server on a CUDA GPU
	$(WITH_TCMALLOC) $(BIN)/python -m benchmarks run --gpu --only serving,precision $(BENCH_ARGS)

# Retrieval quality: builds the evaluation sets from Debian packages under $(EVAL_DATA), compares every option
# (quality and in-process speed, docs/evaluation.md) and gates the default model on the development set.
EVAL_DATA := data/eval
EVAL_SETS := --labelled $(EVAL_DATA)/gcompris --near-duplicates $(EVAL_DATA)/near-duplicates
eval: $(INSTALLED) ## Retrieval quality of every option, and the default model's gate (builds the sets from Debian packages)
	hack/eval-packages.sh
	$(BIN)/python -m tools.eval_sets --out $(EVAL_DATA)
	$(BIN)/image-search eval --compare $(EVAL_SETS) --cross-check $(EVAL_DATA)/wesnoth --fit-set $(EVAL_DATA)/fit \
	  --set clipart=$(EVAL_DATA)/clipart:$(EVAL_DATA)/near-duplicates-plain --set drawings=$(EVAL_DATA)/drawings \
	  --report $(EVAL_DATA)/options.json
	$(BIN)/image-search eval $(EVAL_SETS) --report $(EVAL_DATA)/default.json --min-precision 0.7 --min-recall 0.95

# Refits the bundled default's projection from the fitting set; on the same CPU the file comes out byte for byte.
default-projection: $(INSTALLED) ## Refit the bundled default's projection (maintainers)
	hack/tools/eval-data.sh
	$(BIN)/python -m tools.eval_sets --out $(EVAL_DATA)
	rm -rf $(EVAL_DATA)/default-package
	$(BIN)/image-search fit-projection --catalogue $(EVAL_DATA)/fit --sample 400 --seed 0 --device cpu \
	  --out $(EVAL_DATA)/default-package
	$(BIN)/python -m tools.default_projection $(EVAL_DATA)/default-package
	git diff --stat predictor/embedding/defaults

# The default model's figures through a real server: index the development set, query it over the V2 API.
eval-served: $(INSTALLED) ## The default model's figures through a real server
	hack/eval-packages.sh
	$(BIN)/python -m tools.eval_sets --out $(EVAL_DATA)
	hack/eval-served.sh $(EVAL_DATA)

# A long mixed load (good and bad requests, REST and gRPC) on a real server and Milvus: errors, p99 drift, RSS growth.
SOAK_DURATION_S ?= 600
SOAK_CONCURRENCY ?= 32
soak: $(INSTALLED) ## A long mixed load on a real server and Milvus (SOAK_DURATION_S, SOAK_CONCURRENCY)
	$(WITH_TCMALLOC) $(BIN)/python -m benchmarks soak --duration-s $(SOAK_DURATION_S) --concurrency $(SOAK_CONCURRENCY)

# Every property test marked `fuzz` (tests/unit), with FUZZ_EXAMPLES examples each instead of make test's few.
FUZZ_EXAMPLES ?= 20000
fuzz: $(INSTALLED) ## Every property test with FUZZ_EXAMPLES examples
	HYPOTHESIS_PROFILE=fuzz FUZZ_EXAMPLES=$(FUZZ_EXAMPLES) $(BIN)/python -m pytest -m fuzz tests/unit

# After a change of pins in pyproject.toml and `make install`: the exact transitive set, for the image and for CI.
lock: $(INSTALLED) ## Rewrite requirements/ from the installed environment after a change of pins
	$(BIN)/python hack/lock-requirements.py

# pip-audit of every locked package, where a vulnerability database can be reached (it says so when none can).
audit: $(INSTALLED) ## pip-audit of every locked package
	hack/audit.sh

manifests: tools ## Render manifests/ from the chart
	hack/render-manifests.sh

# Style, the layers (pyproject's [tool.importlinter] contracts) and the types (mypy over predictor/).
lint: $(INSTALLED) ## ruff check and format --check, lint-imports (the layers), mypy
	$(BIN)/ruff check predictor tests benchmarks harness tools
	$(BIN)/ruff format --check predictor tests benchmarks harness tools
	$(BIN)/lint-imports
	$(BIN)/mypy

format: $(INSTALLED) ## Format and fix what ruff can
	$(BIN)/ruff format predictor tests benchmarks harness tools
	$(BIN)/ruff check --fix predictor tests benchmarks harness tools

# The predictor image, with Docker or else podman (installed from Debian packages when missing). `make test` runs its
# tests when it is built from this checkout and skips them otherwise; .ci/run builds it first, and under CI=true a
# missing image fails them.
IMAGE ?= $(shell bash -c 'source hack/container-engine.sh && default_image')

image: ## Build the predictor image (Docker or podman)
	hack/image-tools.sh
	hack/build-image.sh $(IMAGE)

# Runs the image as the chart's CPU pod runs it and queries it; tritonclient's stubs need their own pytest process.
image-test: $(INSTALLED) tools image ## Build the image and run it as the chart does
	IMAGE=$(IMAGE) $(BIN)/python -m pytest tests/container

# The kind end-to-end run of CI on your own machine (needs kind, docker or podman, helm, kubectl).
kind-up: ## Start a kind cluster with KServe and Milvus
	hack/kind-up.sh

kind-e2e: $(INSTALLED) kind-up ## The kind end-to-end run of CI
	hack/kind-e2e.sh

kind-down: ## Delete the kind cluster
	kind delete cluster --name image-search

clean: ## Remove .venv and the generated data
	rm -rf $(VENV) data/milvus.db $(CATALOGUE) .pytest_cache
