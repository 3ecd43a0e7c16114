FROM python:3.11-slim

ENV PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1 \
    GATEWAY_DATABASE=sqlite:////data/gateway.db

WORKDIR /app
COPY pyproject.toml README.md ./
COPY gateway ./gateway
COPY examples ./examples
RUN pip install --no-cache-dir ".[postgres]" \
 && useradd --system --uid 10001 --home-dir /data gateway \
 && mkdir -p /data && chown gateway /data
COPY config.example.yaml /etc/gateway/config.yaml

USER gateway
VOLUME ["/data"]
EXPOSE 8080 8081
HEALTHCHECK --interval=10s --timeout=3s --start-period=5s --retries=3 \
  CMD python -c "import urllib.request; urllib.request.urlopen('http://127.0.0.1:8081/healthz', timeout=2)"
ENTRYPOINT ["gateway", "serve"]
CMD ["--config", "/etc/gateway/config.yaml"]
