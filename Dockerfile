# syntax=docker/dockerfile:1
# The pg-scheduler image: the package in a virtualenv on python:3.11-slim, run as uid 10001.
# It holds no app: build yours FROM it and copy your tasks in (docs/kubernetes.md), e.g.
#
#   FROM pg-scheduler:1.0.0
#   USER root
#   COPY requirements.txt .
#   RUN pip install --no-cache-dir -r requirements.txt
#   COPY myapp/ ./myapp/
#   USER 10001
#   ENV PG_SCHEDULER_APP=myapp.tasks
#
# Build: docker build -t pg-scheduler:1.0.0 .      (BuildKit, the default builder since Docker 23)

ARG PYTHON_IMAGE=python:3.11-slim-bookworm

# ---- build: one wheel for pg-scheduler and one per dependency --------------------------------
FROM ${PYTHON_IMAGE} AS build
ENV PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1
WORKDIR /src
# Only what the wheel needs (.dockerignore keeps the rest of the context out).
COPY pyproject.toml README.md LICENSE ./
COPY pg_scheduler ./pg_scheduler
# Every dependency ships binary wheels for this Python on amd64 and arm64, so no compiler is
# needed even here; a platform without them would need build-essential in this stage only.
# The dashboard extra too: the chart's dashboard Deployment runs `pg-scheduler dashboard` from
# this image.
RUN python -m pip wheel --wheel-dir /wheels '.[dashboard]'

# ---- final: the wheels installed into a virtualenv, nothing else -----------------------------
FROM ${PYTHON_IMAGE}
LABEL org.opencontainers.image.title="pg-scheduler" \
      org.opencontainers.image.description="Async job scheduler for Python on PostgreSQL: pg-scheduler run" \
      org.opencontainers.image.licenses="MIT"

ENV VIRTUAL_ENV=/opt/pg-scheduler \
    PATH=/opt/pg-scheduler/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1

# The wheels are bind-mounted from the build stage, so they never land in a layer. --no-index:
# pip sees only the wheels built above from this source, so nothing here needs a version pin.
# hadolint ignore=DL3013
RUN --mount=type=bind,from=build,source=/wheels,target=/wheels \
    python -m venv "$VIRTUAL_ENV" \
    && pip install --no-index --find-links=/wheels 'pg-scheduler[dashboard]' \
    && groupadd --system --gid 10001 pgscheduler \
    && useradd --system --uid 10001 --gid 10001 --home-dir /app --no-create-home \
       --shell /usr/sbin/nologin pgscheduler \
    && mkdir /app && chown 10001:10001 /app

# `run APP` imports a module APP with the working directory on sys.path: copy apps here.
WORKDIR /app
# Numeric, so that Kubernetes' runAsNonRoot can verify it without reading /etc/passwd.
USER 10001:10001
# /metrics, /healthz, /readyz
EXPOSE 9464
ENTRYPOINT ["pg-scheduler"]
# The APP comes from PG_SCHEDULER_APP (set it in your image or in the chart's `app`).
CMD ["run"]
