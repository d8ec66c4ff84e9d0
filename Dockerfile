# syntax=docker/dockerfile:1.7
# One build, three images that differ only in their entry point, so they share
# every layer: modelrollout-controller, modelrollout-suggest, modelrollout-training.
#   docker build --target suggest -t modelrollout-suggest .
ARG PYTHON_VERSION=3.11
FROM python:${PYTHON_VERSION}-slim AS base
ENV PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1 PIP_NO_CACHE_DIR=1 \
    UV_COMPILE_BYTECODE=1 UV_LINK_MODE=copy UV_PROJECT_ENVIRONMENT=/app/.venv
# LightGBM needs OpenMP at run time.
RUN apt-get update \
 && apt-get install -y --no-install-recommends libgomp1 \
 && rm -rf /var/lib/apt/lists/*
RUN pip install "uv==0.13.9"
WORKDIR /app
# Dependencies first: this layer changes only with uv.lock.
COPY pyproject.toml uv.lock README.md ./
RUN --mount=type=cache,target=/root/.cache/uv uv sync --frozen --no-install-project
COPY controller ./controller
COPY service ./service
COPY training ./training
COPY testbed ./testbed
RUN --mount=type=cache,target=/root/.cache/uv uv sync --frozen
ENV PATH=/app/.venv/bin:$PATH
USER 10001:10001

FROM base AS controller
EXPOSE 8000 8443
ENTRYPOINT ["python", "-m", "controller"]

FROM base AS suggest
EXPOSE 8080
ENTRYPOINT ["python", "-m", "service"]

FROM base AS training
ENTRYPOINT ["python", "-m", "training"]
