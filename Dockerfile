# The gateway's image. Dependencies come from requirements.lock, exactly (pip --no-deps, then
# pip check); the process runs as the numeric user 10001:10001, so a kubelet can verify
# runAsNonRoot without reading /etc/passwd. docs/deploy.md says how to build and run it.

FROM python:3.11-slim-bookworm AS build
ENV PIP_DISABLE_PIP_VERSION_CHECK=1 PIP_NO_CACHE_DIR=1
WORKDIR /src
COPY requirements.lock ./
RUN python -m venv /opt/gateway \
 && /opt/gateway/bin/pip install --no-deps -r requirements.lock
COPY pyproject.toml README.md ./
COPY gateway ./gateway
RUN /opt/gateway/bin/pip install --no-deps --no-build-isolation . \
 && /opt/gateway/bin/pip check

FROM python:3.11-slim-bookworm
ENV PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1 PATH=/opt/gateway/bin:$PATH \
    GATEWAY_DATABASE=sqlite:////data/gateway.db
RUN groupadd --system --gid 10001 gateway \
 && useradd --system --uid 10001 --gid 10001 --home-dir /data --no-create-home \
      --shell /usr/sbin/nologin gateway \
 && mkdir -p /data && chown 10001:10001 /data && chmod 0700 /data
COPY --from=build /opt/gateway /opt/gateway
# The sample upstream, for docker-compose.yaml's `upstream` service.
COPY examples/upstream.py /opt/gateway/examples/upstream.py
COPY config.example.yaml /etc/gateway/config.yaml

# The working directory is the state volume: the SQLite database, and whatever the gateway
# generates next to it (admin.token, the secret key) when no GATEWAY_*_FILE is given.
WORKDIR /data
USER 10001:10001
VOLUME ["/data"]
EXPOSE 8080 8081
# For docker and compose, which have no HTTP probe of their own (Kubernetes uses httpGet).
HEALTHCHECK --interval=10s --timeout=3s --start-period=10s --retries=3 \
  CMD ["python", "-c", "import urllib.request; urllib.request.urlopen('http://127.0.0.1:8081/healthz', timeout=2)"]
ENTRYPOINT ["gateway", "serve"]
CMD ["--config", "/etc/gateway/config.yaml"]
