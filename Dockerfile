# The leadledger service for compose.yaml: the same `leadledger up`, pointed at external
# PostgreSQL and NATS by LEADLEDGER_* variables (no embedded servers start then).
FROM python:3.11-slim

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PIP_NO_CACHE_DIR=1

RUN useradd --create-home --uid 10001 leadledger
WORKDIR /app
# The whole tree minus .dockerignore: every package folder that exists (some start empty).
COPY . .
# Editable, as in development and CI: the migrations are read from schema/migrations in place.
RUN pip install -e .

USER leadledger
ENV LEADLEDGER_HOST=0.0.0.0 \
    LEADLEDGER_PORT=8000 \
    LEADLEDGER_LOG_FORMAT=json
EXPOSE 8000
HEALTHCHECK --interval=10s --timeout=3s --start-period=20s --retries=3 \
    CMD python -c "import urllib.request; urllib.request.urlopen('http://127.0.0.1:8000/health', timeout=2)"
# exec form: `leadledger` is PID 1 and receives SIGTERM from `docker stop` directly.
CMD ["leadledger", "up"]
