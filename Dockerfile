# Lean inference image: ONNX Runtime + the HTTP service, no torch (about 480 MB of Python packages).
#   maskcls export runs/train --out model/model.onnx      # on a training install
#   docker build -t maskcls .
#   docker run --rm -p 8000:8000 -e MASKCLS_API_KEY=change-me -v "$PWD/model:/model:ro" maskcls
# The default command serves /model/model.onnx on every interface of the container; binding beyond
# 127.0.0.1 requires an API key (header X-API-Key), so pass one: -e MASKCLS_API_KEY=...
FROM python:3.12-slim

ENV PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1 PIP_NO_CACHE_DIR=1 \
    XDG_CACHE_HOME=/tmp/cache OMP_NUM_THREADS=2
WORKDIR /app
COPY pyproject.toml README.md ./
COPY src ./src
RUN pip install ".[serve]" && useradd --create-home --uid 1000 maskcls
USER maskcls
EXPOSE 8000
VOLUME ["/model"]
HEALTHCHECK --interval=30s --timeout=5s CMD python -c "import urllib.request as u; u.urlopen('http://127.0.0.1:8000/health')" || exit 1
CMD ["maskcls", "serve", "/model/model.onnx", "--host", "0.0.0.0", "--port", "8000"]
