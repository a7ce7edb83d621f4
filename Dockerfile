# crosslens image: API, UI and Dask workers run from it, configured only by CROSSLENS_* env.
# Needs a connected machine (PyTorch's CPU wheel index); the development machines cannot build
# it, so docker-compose.yml is validated with `docker compose config` and the same topology is
# tested without containers.
FROM python:3.11-slim

ENV PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1 OMP_WAIT_POLICY=PASSIVE \
    CROSSLENS_DATA_DIR=/data CROSSLENS_HOST=0.0.0.0
RUN useradd --create-home --uid 10001 crosslens && mkdir /data && chown crosslens /data
WORKDIR /opt/crosslens

RUN pip install --no-cache-dir --index-url https://download.pytorch.org/whl/cpu torch==2.13.0
COPY pyproject.toml README.md ./
COPY estimators estimators
COPY backend backend
COPY app app
COPY assets assets
RUN pip install --no-cache-dir '.[minilm]'

USER crosslens
VOLUME ["/data"]
EXPOSE 8000 8050
CMD ["crosslens", "serve"]
