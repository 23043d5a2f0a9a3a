# Production image for the api and the worker (one image, two commands). The default torch wheel is the CUDA build.
FROM python:3.11-slim
ENV PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1 PIP_NO_CACHE_DIR=1
WORKDIR /app
COPY pyproject.toml README.md ./
COPY trainer trainer
COPY core core
COPY api api
COPY worker worker
COPY migrations migrations
COPY scripts scripts
RUN pip install '.[train,gpu,tagger]'
COPY web web
RUN useradd --create-home lorabake && mkdir -p /data && chown lorabake /data
USER lorabake
ENV LORABAKE_VAR_DIR=/data
EXPOSE 8000
CMD ["uvicorn", "api.main:create_app", "--factory", "--host", "0.0.0.0", "--port", "8000"]
