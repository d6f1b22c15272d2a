# The driftwarden services image (monitor now; trainer and serving join it as they land).
FROM python:3.11-slim

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    DRIFTWARDEN_STATE_DIR=/var/lib/driftwarden \
    DRIFTWARDEN_METRICS_HOST=0.0.0.0

WORKDIR /app
COPY pyproject.toml README.md ./
COPY services ./services
COPY load ./load
RUN pip install --no-cache-dir . \
    && useradd --system --uid 10001 driftwarden \
    && mkdir -p /var/lib/driftwarden \
    && chown driftwarden /var/lib/driftwarden

USER driftwarden
ENTRYPOINT ["driftwarden"]
CMD ["--help"]
