# queue-autoscaler: one image for both `queue-autoscaler run` (controller) and `queue-autoscaler activator`.
# Stage 1 builds the wheel and installs it with its pinned dependencies into a virtualenv; the final stage
# copies only that virtualenv: no compilers, no build tools, no pip cache, a non-root user.

ARG PYTHON_IMAGE=python:3.11.11-slim-bookworm

FROM ${PYTHON_IMAGE} AS build
ENV PIP_DISABLE_PIP_VERSION_CHECK=1 PIP_NO_CACHE_DIR=1
WORKDIR /src
RUN python -m venv /opt/queue-autoscaler && /opt/queue-autoscaler/bin/pip install --upgrade pip build
COPY pyproject.toml constraints.txt README.md ./
COPY autoscaler ./autoscaler
RUN /opt/queue-autoscaler/bin/python -m build --wheel --outdir /dist . \
 && /opt/queue-autoscaler/bin/pip install -c constraints.txt /dist/*.whl \
 && /opt/queue-autoscaler/bin/pip uninstall -y build pip

FROM ${PYTHON_IMAGE}
LABEL org.opencontainers.image.title="queue-autoscaler" \
      org.opencontainers.image.description="Scale Kubernetes Deployments on queue depth, to and from zero"
COPY --from=build /opt/queue-autoscaler /opt/queue-autoscaler
RUN groupadd --system --gid 10001 autoscaler \
 && useradd --system --uid 10001 --gid autoscaler --no-create-home --shell /usr/sbin/nologin autoscaler
ENV PATH=/opt/queue-autoscaler/bin:$PATH PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1
USER 10001:10001
EXPOSE 8080 8081 9090 9091
ENTRYPOINT ["queue-autoscaler"]
CMD ["--help"]
