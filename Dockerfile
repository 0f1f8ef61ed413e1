FROM python:3.11-slim
WORKDIR /app
COPY pyproject.toml README.md ./
COPY als als
COPY store store
COPY ingest ingest
COPY worker worker
COPY api api
COPY cli cli
COPY evaluation evaluation
COPY data data
RUN pip install --no-cache-dir .
# numba's compiled kernels; docker-compose.yml mounts a volume here, so a restarted container
# loads them instead of compiling them again.
ENV NUMBA_CACHE_DIR=/var/cache/numba
CMD ["streamrec", "--help"]
