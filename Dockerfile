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
# numba writes its compiled-kernel cache beside the sources; keep it writable.
ENV NUMBA_CACHE_DIR=/tmp/numba-cache
CMD ["streamrec", "--help"]
