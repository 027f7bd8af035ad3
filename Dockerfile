# syntax=docker/dockerfile:1
# Multi-stage image of the tickstream engine. Not built on the development
# machine (no Docker engine there): kept simple so it can be checked by reading.

FROM python:3.11-slim AS build
ENV PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1
WORKDIR /src
RUN python -m venv /opt/venv
ENV PATH=/opt/venv/bin:$PATH
COPY pyproject.toml README.md ./
COPY engine ./engine
COPY actors ./actors
COPY protocol ./protocol
COPY loadtest ./loadtest
RUN pip install --upgrade pip && pip install .

FROM python:3.11-slim AS runtime
ENV PATH=/opt/venv/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    TICKSTREAM_HOST=0.0.0.0 \
    TICKSTREAM_PORT=8081 \
    TICKSTREAM_CONFIG=/app/config/default.toml
RUN groupadd --system tickstream && useradd --system --gid tickstream --home /app tickstream
WORKDIR /app
COPY --from=build /opt/venv /opt/venv
COPY config ./config
RUN mkdir -p /app/var && chown tickstream:tickstream /app/var
USER tickstream
EXPOSE 8081
HEALTHCHECK --interval=15s --timeout=3s --start-period=30s --retries=3 \
  CMD ["python", "-c", "import urllib.request,sys; sys.exit(0 if urllib.request.urlopen('http://127.0.0.1:8081/health', timeout=2).status == 200 else 1)"]
# Secrets (TICKSTREAM_JWT_SECRET_FILE, TICKSTREAM_DATABASE_URL, ...) come from the
# orchestrator's environment or secret files, never from the image.
ENTRYPOINT ["tickstream"]
CMD ["serve"]
