# One build, three images that differ only in their entry point, so they share
# every layer: modelrollout-controller, modelrollout-suggest, modelrollout-training.
#   docker build --target suggest -t modelrollout-suggest .
# BASE_IMAGE is any Debian-like image with python3 (3.11+) and its venv module; the
# public python image by default. hack/images.sh builds from a base made locally
# (mmdebstrap) on machines that reach no image registry. No BuildKit-only syntax
# (no `# syntax=` line, no RUN --mount), so the classic builder builds it too.
ARG BASE_IMAGE=python:3.11-slim

FROM ${BASE_IMAGE} AS runtime
# LightGBM needs OpenMP at run time; a base that already has it needs no network here.
RUN if ! ldconfig -p | grep -q 'libgomp\.so\.1'; then \
      apt-get update \
      && apt-get install -y --no-install-recommends libgomp1 \
      && rm -rf /var/lib/apt/lists/*; \
    fi \
 && groupadd --system --gid 10001 app \
 && useradd --system --uid 10001 --gid 10001 --home-dir /app --no-create-home app

# The builder installs uv and the locked environment; only /app reaches the images.
FROM runtime AS builder
ARG UV_VERSION=0.13.9
# UV_NATIVE_TLS: trust the base's CA store (a proxy's CA, when the build needs one).
ENV PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1 \
    UV_COMPILE_BYTECODE=1 UV_LINK_MODE=copy UV_NATIVE_TLS=1 UV_NO_CACHE=1 \
    UV_PYTHON_DOWNLOADS=never UV_PROJECT_ENVIRONMENT=/app/.venv
RUN python3 -m venv /opt/uv && /opt/uv/bin/pip install "uv==${UV_VERSION}"
WORKDIR /app
# Dependencies first: this layer changes only with uv.lock.
COPY pyproject.toml uv.lock README.md ./
RUN /opt/uv/bin/uv sync --frozen --no-dev --no-install-project --python "$(command -v python3)"
COPY controller ./controller
COPY service ./service
COPY training ./training
COPY testbed ./testbed
RUN /opt/uv/bin/uv sync --frozen --no-dev --no-editable --python "$(command -v python3)"

FROM runtime AS app
ENV PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1 PATH=/app/.venv/bin:$PATH
COPY --from=builder /app/.venv /app/.venv
WORKDIR /app
USER 10001:10001

FROM app AS controller
EXPOSE 8000 8443
ENTRYPOINT ["python", "-m", "controller"]

FROM app AS suggest
EXPOSE 8080
ENTRYPOINT ["python", "-m", "service"]

# The training data's brand lexicon (name-suggestion-index, BSD-3-Clause, licence in the
# tarball and LICENSES/): the npm registry's tarball of the pinned version (hack/
# versions.env), checked against its sha256. Without it the Job trains on the committed
# US sample only, which the rules already know: the gate refuses that model (found when
# the chart's first training Job ran on a node). Only the training target builds this.
FROM runtime AS lexicon
ARG NSI_VERSION=8.0.20260918
ARG NSI_SHA256=3ee22f0f0a99528ac9c65a57211575defd968e21fd6374e746bfd02e94422121
RUN mkdir -p /opt/modelrollout/lexicon && python3 -c "import hashlib, sys, urllib.request; \
v, want = sys.argv[1:3]; \
url = f'https://registry.npmjs.org/name-suggestion-index/-/name-suggestion-index-{v}.tgz'; \
data = urllib.request.urlopen(url, timeout=300).read(); \
got = hashlib.sha256(data).hexdigest(); \
sys.exit(f'{url}: sha256 {got} differs from the pin {want}') if got != want else None; \
open(f'/opt/modelrollout/lexicon/name-suggestion-index-{v}.tgz', 'wb').write(data)" \
    "$NSI_VERSION" "$NSI_SHA256"

FROM app AS training
# GNU ld links the trees lleaves compiles into the trees.so a version publishes
# (training/trees.py, --compile-trees); only the training image has it.
USER root
RUN if ! command -v ld >/dev/null; then \
      apt-get update \
      && apt-get install -y --no-install-recommends binutils \
      && rm -rf /var/lib/apt/lists/*; \
    fi
USER 10001:10001
COPY --from=lexicon /opt/modelrollout/lexicon /opt/modelrollout/lexicon
# training.lexicon reads $MODELROLLOUT_CACHE/lexicon/ (read only).
ENV MODELROLLOUT_CACHE=/opt/modelrollout
ENTRYPOINT ["python", "-m", "training"]
