# syntax=docker/dockerfile:1
# One image for the four Streamwise services; the command chooses the service:
#   trainer    python -m streamwise_trainer worker             (STREAMWISE_HTTP_HOST/PORT: 0.0.0.0/8003)
#   ingest     uvicorn streamwise_ingest.app:create_app --factory --host 0.0.0.0 --port 8001 ...
#   predictor  uvicorn streamwise_predictor.app:create_app --factory --host 0.0.0.0 --port 8002 ...
#   webapp     uvicorn streamwise_webapp.app:create_app --factory --host 0.0.0.0 --port 8000 ...
# docker-compose.yml and deploy/k8s give the exact commands (the same as service_specs() in
# devtools/streamwise_devstack/suite.py). Health checks live there, not here.
ARG PYTHON_IMAGE=python:3.11-slim

# --- build: a virtualenv with the pinned dependencies and the project (not editable) -------------
FROM ${PYTHON_IMAGE} AS build
ENV PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PIP_ROOT_USER_ACTION=ignore
RUN python -m venv /opt/streamwise
ENV PATH=/opt/streamwise/bin:$PATH
WORKDIR /src
# Dependencies first, so a source change does not reinstall them. Every pinned package ships a
# manylinux wheel for CPython 3.11: no compiler is needed (and none is in the slim image).
COPY requirements.lock ./
RUN pip install --only-binary=:all: -r requirements.lock
COPY pyproject.toml ./
COPY libs ./libs
COPY services ./services
COPY devtools ./devtools
# A normal install (wheel built from the source tree): migrations, templates and static files
# come along as package data. --no-deps: everything needed is pinned above; pip check proves it.
RUN pip install --no-deps . \
 && pip check \
 && python -m compileall -q /opt/streamwise/lib

# --- runtime: the virtualenv, the app spec, a non-root user -------------------------------------
FROM ${PYTHON_IMAGE} AS runtime
ARG UID=10001
ENV PATH=/opt/streamwise/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    STREAMWISE_APP_SPEC=/app/examples/fraud/lifecycle.toml \
    STREAMWISE_LOG_FORMAT=json
RUN groupadd --system --gid "${UID}" streamwise \
 && useradd --system --uid "${UID}" --gid streamwise --no-create-home \
      --home-dir /var/lib/streamwise --shell /usr/sbin/nologin streamwise \
 && install -d -o streamwise -g streamwise -m 0750 /var/lib/streamwise
COPY --from=build /opt/streamwise /opt/streamwise
COPY examples/fraud/streamwise.toml /app/examples/fraud/streamwise.toml
COPY examples/fraud/lifecycle.toml /app/examples/fraud/lifecycle.toml
# The working directory is the only place a service writes to: faust keeps the trainer's
# "<app id>-data" folder in the current directory. Kubernetes mounts an emptyDir here (and on
# /tmp) because the root filesystem is read-only there.
WORKDIR /var/lib/streamwise
USER ${UID}:${UID}
EXPOSE 8000 8001 8002 8003
CMD ["python", "-m", "streamwise_trainer", "worker"]
