# syntax=docker/dockerfile:1
#
# results-receiver production image.
#
#   docker build -t results-receiver:0.1.0 .
#   docker run -d --name results-receiver -p 127.0.0.1:8000:8000 \
#       -v results-data:/data results-receiver:0.1.0
#
# Stage 1 installs the locked dependencies (uv.lock) into /app/.venv, then the project itself
# as a regular (non-editable) wheel: the venv is self-contained and carries the migration
# scripts as service/_migrations. Stage 2 is a slim runtime with that venv and nothing else:
# no compiler, no uv, no source tree, no secrets.

ARG PYTHON_IMAGE=python:3.11-slim

# ---------------------------------------------------------------------------------------------
FROM ${PYTHON_IMAGE} AS builder

# uv from PyPI, pinned.
RUN pip install --no-cache-dir uv==0.13.9

# Compile bytecode at build time (the runtime root filesystem may be read-only), copy files
# out of the cache mount instead of hard-linking, never download a Python: use the image's.
ENV UV_COMPILE_BYTECODE=1 \
    UV_LINK_MODE=copy \
    UV_PYTHON_DOWNLOADS=never \
    UV_PYTHON=/usr/local/bin/python3.11 \
    UV_PROJECT_ENVIRONMENT=/app/.venv

WORKDIR /app

# 1) Dependencies only: this layer is rebuilt only when pyproject.toml or uv.lock change.
COPY pyproject.toml uv.lock ./
RUN --mount=type=cache,target=/root/.cache/uv \
    uv sync --locked --no-dev --no-install-project

# 2) The project itself, installed as a wheel (hatchling), not as an editable link to /app.
COPY . .
RUN --mount=type=cache,target=/root/.cache/uv \
    uv sync --locked --no-dev --no-editable

# ---------------------------------------------------------------------------------------------
FROM ${PYTHON_IMAGE} AS runtime

ARG VERSION=0.1.0
ARG REVISION=unknown
LABEL org.opencontainers.image.title="results-receiver" \
      org.opencontainers.image.description="Receives signed result webhooks of a video/image analysis API, stores them in SQLite or PostgreSQL and serves a query API." \
      org.opencontainers.image.version="${VERSION}" \
      org.opencontainers.image.revision="${REVISION}" \
      org.opencontainers.image.licenses="MIT" \
      org.opencontainers.image.base.name="docker.io/library/python:3.11-slim"

# A system user with a fixed uid/gid (10001), matching runAsUser in deploy/k8s. /data holds
# the SQLite database and, when no RECEIVER_WEBHOOK_SECRETS is given, the generated
# webhook-secret file (mode 0600).
RUN groupadd --system --gid 10001 receiver \
    && useradd --system --uid 10001 --gid receiver --home-dir /data --no-create-home \
       --shell /usr/sbin/nologin receiver \
    && mkdir -p /data \
    && chown receiver:receiver /data \
    && chmod 0750 /data

# Same path as in the builder: the venv's scripts have absolute shebangs. Owned by root, so
# the service user cannot modify its own code.
COPY --from=builder /app/.venv /app/.venv

ENV PATH="/app/.venv/bin:${PATH}" \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    RECEIVER_DATABASE_URL=sqlite:////data/results.db

# The working directory is the data volume: with PostgreSQL and no RECEIVER_WEBHOOK_SECRETS,
# `serve` would put its generated secret in ./data, i.e. /data/data (set the variable instead
# whenever more than one replica runs: each would generate its own).
WORKDIR /data
VOLUME ["/data"]

USER 10001:10001

EXPOSE 8000

# Liveness only (/healthz). No curl in the slim image: Python's urllib does it (a non-2xx or
# no answer raises, so the exit status is 1). Assumes the default --port 8000.
HEALTHCHECK --interval=30s --timeout=5s --start-period=20s --retries=3 \
    CMD ["python", "-c", "import urllib.request,sys; urllib.request.urlopen('http://127.0.0.1:8000/healthz', timeout=3)"]

# uvicorn finishes in-flight requests for up to --graceful-timeout seconds after SIGTERM:
# give the container longer than that to stop (docker stop -t 40, compose stop_grace_period,
# Kubernetes terminationGracePeriodSeconds).
STOPSIGNAL SIGTERM

ENTRYPOINT ["results-receiver"]
CMD ["serve", "--host", "0.0.0.0", "--port", "8000", "--graceful-timeout", "30"]
