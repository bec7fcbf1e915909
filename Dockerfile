# syntax=docker/dockerfile:1
# One image for every Handrail service; the first argument picks the service:
#   docker run handrail router | validator | worker-agent --agent NAME | circuit-breaker | human-review | cli ...
# Build: docker build -t handrail:0.1.0 .   (OTLP over gRPC too: --build-arg HANDRAIL_EXTRAS=[grpc])
# or `make image` (podman or docker), which builds its own base when no registry can be pulled from.

# The image both stages start from: any Debian-like image with python3.11+ as `python` and its venv
# module. Where python:*-slim cannot be pulled, tools/container/build-base.sh makes one from Debian
# packages (`make image` does it for you): --build-arg BASE_IMAGE=localhost/handrail-base:bookworm
ARG BASE_IMAGE=python:3.11.7-slim-bookworm

# ---- build: install Handrail and its dependencies into a virtualenv ---------------------------
FROM ${BASE_IMAGE} AS build
ENV PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PYTHONDONTWRITEBYTECODE=1
WORKDIR /src
RUN python -m venv /opt/handrail
# Dependencies first, so a code change does not reinstall them (every one ships a wheel: no compiler).
COPY pyproject.toml README.md ./
COPY libs ./libs
COPY services ./services
# Optional extras, e.g. "[grpc]" for OTLP over gRPC; the base install exports traces over OTLP/HTTP.
ARG HANDRAIL_EXTRAS=""
RUN /opt/handrail/bin/pip install ".${HANDRAIL_EXTRAS}" \
    && /opt/handrail/bin/pip uninstall --yes pip \
    && /opt/handrail/bin/python -m compileall -q /opt/handrail

# ---- runtime: the virtualenv, the contracts, nothing to build with ----------------------------
FROM ${BASE_IMAGE} AS runtime
LABEL org.opencontainers.image.title="handrail" \
      org.opencontainers.image.description="A production runtime for AI agents as event-driven microservices on Kafka." \
      org.opencontainers.image.licenses="Apache-2.0"
# No pip, setuptools or wheel in the final image: nothing in it can build or install packages.
# (python:*-slim ships them; Debian's python3, on the base build-base.sh makes, has none, only the
# wheels its venv module installs pip from, which go too.)
RUN if python -m pip --version >/dev/null 2>&1; then python -m pip uninstall --yes pip setuptools wheel; fi \
    && rm -rf /usr/share/python-wheels \
    && groupadd --system --gid 10001 handrail \
    && useradd --system --uid 10001 --gid handrail --home-dir /app --shell /usr/sbin/nologin handrail \
    && mkdir -p /app /var/lib/handrail /var/lib/handrail-keys /var/lib/handrail-redis /var/lib/handrail-reviewers \
    && chown handrail:handrail /var/lib/handrail /var/lib/handrail-keys /var/lib/handrail-redis \
        /var/lib/handrail-reviewers
COPY --from=build /opt/handrail /opt/handrail
COPY config /app/config
COPY --chmod=0755 deploy/docker/entrypoint.sh /usr/local/bin/handrail-entrypoint
COPY --chmod=0644 deploy/docker/healthcheck.py /usr/local/lib/handrail-healthcheck.py
ENV PATH=/opt/handrail/bin:$PATH \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    HANDRAIL_CONFIG_DIR=/app/config \
    HANDRAIL_DATA_DIR=/var/lib/handrail \
    HANDRAIL_HTTP_HOST=0.0.0.0
WORKDIR /app
USER 10001:10001
# Each service serves /healthz on its own port (8081-8086, or HANDRAIL_HTTP_PORT).
EXPOSE 8081 8082 8083 8085 8086
HEALTHCHECK --interval=15s --timeout=5s --start-period=30s --retries=3 \
    CMD ["python", "/usr/local/lib/handrail-healthcheck.py"]
ENTRYPOINT ["handrail-entrypoint"]
CMD ["--help"]
