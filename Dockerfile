# queue-autoscaler: one image for both `queue-autoscaler run` (controller) and `queue-autoscaler activator`,
# with the example workers of manifests/examples (`python -m devstack.workers.kafka_worker` / `http_worker`).
# Stage 1 builds the wheel and installs it with its pinned dependencies into a virtualenv; the final stage
# copies only that virtualenv: no compilers, no build tools, no pip, no caches, a non-root user.
#   docker build -t queue-autoscaler:0.1.0 .
# Without a registry, devstack/build-image builds it with buildah on a base made from Debian packages
# (PYTHON_IMAGE: any image with python3.11 and venv support as `python`).

ARG PYTHON_IMAGE=python:3.11.11-slim-bookworm

FROM ${PYTHON_IMAGE} AS build
# A CA bundle (mounted for the build) for pip behind a TLS-intercepting proxy; never part of the image.
ARG BUILD_CA_FILE=""
ENV PIP_DISABLE_PIP_VERSION_CHECK=1 PIP_NO_CACHE_DIR=1
WORKDIR /src
# The wheel is built in a venv of its own, so that no build tool ends up in the image's venv.
RUN if [ -n "$BUILD_CA_FILE" ]; then export PIP_CERT="$BUILD_CA_FILE"; fi \
 && python -m venv /build && /build/bin/pip install -q build
COPY pyproject.toml constraints.txt README.md ./
COPY autoscaler ./autoscaler
RUN if [ -n "$BUILD_CA_FILE" ]; then export PIP_CERT="$BUILD_CA_FILE"; fi \
 && /build/bin/python -m build --wheel --outdir /dist . \
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
