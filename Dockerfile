# The Delos Runtime gateway. Build: docker build -t delos-runtime .
# Run: docker run -p 9001:9001 -p 9464:9464 -e DELOS_RUNTIME_OPENAI_KEY=... delos-runtime
FROM python:3.11-slim

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1

WORKDIR /opt/delos
COPY pyproject.toml README.md ./
COPY src ./src
# The default install is the fast path (uvloop, the gateway's own HTTP/1.1 client).
RUN pip install . && rm -rf src
COPY deploy/healthcheck.py ./healthcheck.py

RUN groupadd --system --gid 10001 delos \
    && useradd --system --uid 10001 --gid delos --no-create-home --shell /usr/sbin/nologin delos
USER 10001:10001

# In a container the gateway must listen beyond loopback. Set DELOS_RUNTIME_API_KEYS (or
# DELOS_RUNTIME_API_KEYS_FILE) unless only your own network reaches it.
ENV DELOS_ENV=production \
    DELOS_RUNTIME_HOST=0.0.0.0 \
    DELOS_RUNTIME_PORT=9001 \
    DELOS_RUNTIME_METRICS_PORT=9464
# gRPC, and Prometheus (one endpoint for all the container's workers).
EXPOSE 9001 9464

HEALTHCHECK --interval=10s --timeout=5s --start-period=20s --retries=3 \
    CMD ["python", "/opt/delos/healthcheck.py"]

# SIGTERM (docker stop) drains in-flight calls within DELOS_RUNTIME_SHUTDOWN_GRACE_SECONDS.
ENTRYPOINT ["delos-runtime"]
CMD ["serve"]
