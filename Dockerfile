# One image for the four Streamwise services; the command chooses the service:
#   trainer    python -m streamwise_trainer worker             (STREAMWISE_HTTP_HOST/PORT: 0.0.0.0/8003)
#   ingest     uvicorn streamwise_ingest.app:create_app --factory --host 0.0.0.0 --port 8001 ...
#   predictor  uvicorn streamwise_predictor.app:create_app --factory --host 0.0.0.0 --port 8002 ...
#   webapp     uvicorn streamwise_webapp.app:create_app --factory --host 0.0.0.0 --port 8000 ...
# docker-compose.yml and deploy/k8s give the exact commands (the same as service_specs() in
# devtools/streamwise_devstack/suite.py). Health checks live there, not here.
#
# No "# syntax=" line on purpose: it makes BuildKit fetch a frontend image from Docker Hub; the
# frontend built into the engine reads everything below.
#
#   docker build -t streamwise:local .
#   docker build --secret id=ca-bundle,src=/etc/ssl/certs/ca-certificates.crt ...   # behind a TLS-intercepting proxy
#   docker build --build-arg PYTHON_IMAGE=registry.example.com/python:3.11-slim ...  # a mirror of the base
ARG PYTHON_IMAGE=python:3.11-slim

# --- build: a virtualenv with the pinned dependencies and the project (not editable) -------------
FROM ${PYTHON_IMAGE} AS build
ENV PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PIP_ROOT_USER_ACTION=ignore \
    DEBIAN_FRONTEND=noninteractive
RUN python3 -m venv /opt/streamwise
ENV PATH=/opt/streamwise/bin:$PATH
WORKDIR /src
# Dependencies first, so a source change does not reinstall them. On x86-64 every pinned package
# ships a wheel for CPython 3.11; where one does not (faust-streaming on arm64), the build stage
# gets a compiler and builds it. The optional secret "ca-bundle" is a PEM file of extra CAs that
# pip trusts (PIP_CERT), for networks that intercept TLS; it never reaches an image layer.
COPY requirements.lock ./
# The compiler is whatever the base image's Debian release ships; it never reaches the runtime.
# hadolint ignore=DL3008
RUN --mount=type=secret,id=ca-bundle,required=false \
    if [ -s /run/secrets/ca-bundle ]; then export PIP_CERT=/run/secrets/ca-bundle; fi \
 && if ! pip install --only-binary=:all: -r requirements.lock; then \
      echo "some pinned package has no wheel for $(uname -m): installing a compiler to build it" \
      && apt-get update && apt-get install -y --no-install-recommends build-essential \
      && pip install -r requirements.lock; \
    fi
COPY pyproject.toml ./
COPY libs ./libs
COPY services ./services
COPY devtools ./devtools
# A normal install (wheel built from the source tree): migrations, templates and static files
# come along as package data. --no-deps: everything needed is pinned above; pip check proves it.
RUN --mount=type=secret,id=ca-bundle,required=false \
    if [ -s /run/secrets/ca-bundle ]; then export PIP_CERT=/run/secrets/ca-bundle; fi \
 && pip install --no-deps . \
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
