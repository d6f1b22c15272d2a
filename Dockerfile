# The driftwarden services image. One image per install kind, chosen by the build argument EXTRAS
# (docker-compose.yml passes it per service): "" for the monitor and `topics create` (no scikit-learn,
# no onnxruntime), "trainer" for the trainer, "serving" for ONNX serving, "ui" for the live page.
FROM python:3.11-slim

ARG EXTRAS=""

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    DRIFTWARDEN_STATE_DIR=/var/lib/driftwarden \
    NUMBA_CACHE_DIR=/var/lib/driftwarden/numba-cache \
    DRIFTWARDEN_METRICS_HOST=0.0.0.0

WORKDIR /app
COPY pyproject.toml README.md ./
COPY services ./services
COPY load ./load
# A regular (not editable) install of the package with the extras this service needs.
RUN pip install --no-cache-dir ".${EXTRAS:+[$EXTRAS]}" \
    && useradd --system --uid 10001 driftwarden \
    && mkdir -p /var/lib/driftwarden \
    && chown driftwarden /var/lib/driftwarden

USER driftwarden
ENTRYPOINT ["driftwarden"]
CMD ["--help"]
