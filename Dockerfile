# queue-autoscaler: one image for both `queue-autoscaler run` (controller) and `queue-autoscaler activator`,
# with the example workers of manifests/examples (`python -m devstack.workers.kafka_worker` / `http_worker`).
# Stage 1 builds the wheel, with the activator's request path compiled by mypyc (setup.py), and installs it
# with its pinned dependencies into a virtualenv; the final stage copies only that virtualenv: no compilers,
# no build tools, no pip, no caches, a non-root user.
#   docker build -t queue-autoscaler:0.1.0 .
# Without a registry, devstack/build-image builds it with buildah on a base made from Debian packages
# (PYTHON_IMAGE: any image with python3.11 and venv support as `python`).

ARG PYTHON_IMAGE=python:3.11.11-slim-bookworm

FROM ${PYTHON_IMAGE} AS build
# A CA bundle (mounted for the build) for pip behind a TLS-intercepting proxy; never part of the image.
ARG BUILD_CA_FILE=""
ENV PIP_DISABLE_PIP_VERSION_CHECK=1 PIP_NO_CACHE_DIR=1
WORKDIR /src
# mypyc needs a C compiler and Python's headers (the python images have the headers; a Debian python does not).
RUN pkgs="gcc libc6-dev" \
 && python -c 'import os, sys, sysconfig; sys.exit(not os.path.exists(sysconfig.get_paths()["include"] + "/Python.h"))' \
 || pkgs="$pkgs python3.11-dev"; \
 apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends $pkgs >/dev/null \
 && rm -rf /var/lib/apt/lists/*
# The wheel is built in a venv of its own, with mypy and the package's dependencies (mypyc type-checks against
# them), so that no build tool ends up in the image's venv.
COPY pyproject.toml setup.py constraints.txt README.md ./
COPY autoscaler ./autoscaler
RUN if [ -n "$BUILD_CA_FILE" ]; then export PIP_CERT="$BUILD_CA_FILE"; fi \
 && python -m venv /build && /build/bin/pip install -q -c constraints.txt mypy setuptools \
 && /build/bin/pip install -q --no-build-isolation -c constraints.txt . \
 && QUEUE_AUTOSCALER_COMPILE=1 /build/bin/pip wheel -q --no-build-isolation --no-deps --wheel-dir /dist . \
 && python -m venv /opt/queue-autoscaler \
 && /opt/queue-autoscaler/bin/pip install -q -c constraints.txt /dist/*.whl \
 && /opt/queue-autoscaler/bin/pip uninstall -y -q pip setuptools

FROM ${PYTHON_IMAGE}
LABEL org.opencontainers.image.title="queue-autoscaler" \
      org.opencontainers.image.description="Scale Kubernetes Deployments on queue depth, to and from zero"
COPY --from=build /opt/queue-autoscaler /opt/queue-autoscaler
COPY devstack/__init__.py /opt/queue-autoscaler/examples/devstack/
COPY devstack/workers/__init__.py devstack/workers/kafka_worker.py devstack/workers/http_worker.py \
     /opt/queue-autoscaler/examples/devstack/workers/
RUN groupadd --system --gid 10001 autoscaler \
 && useradd --system --uid 10001 --gid autoscaler --no-create-home --shell /usr/sbin/nologin autoscaler
ENV PATH=/opt/queue-autoscaler/bin:$PATH PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1
WORKDIR /opt/queue-autoscaler/examples
USER 10001:10001
EXPOSE 8080 8081 9090 9091
ENTRYPOINT ["queue-autoscaler"]
CMD ["--help"]
