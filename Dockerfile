# minewatch service image. The same install steps as scripts/setup.sh (pinned by constraints.txt).
FROM node:20-bookworm-slim AS web
WORKDIR /web
COPY dashboard/package.json dashboard/package-lock.json ./
RUN npm ci --no-audit --no-fund

FROM python:3.11-slim-bookworm
ENV PYTHONUNBUFFERED=1 PIP_NO_CACHE_DIR=1
WORKDIR /app
COPY pyproject.toml constraints.txt README.md ./
COPY minewatch ./minewatch
COPY ingest ./ingest
COPY alarms ./alarms
COPY api ./api
COPY dashboard ./dashboard
COPY simulators ./simulators
COPY --from=web /web/node_modules/echarts/dist /opt/echarts
ENV MINEWATCH_VENDOR_DIR=/opt/echarts
RUN pip install -c constraints.txt . && useradd --system --home /data minewatch \
    && mkdir -p /data && chown minewatch /data
USER minewatch
VOLUME /data
EXPOSE 8000
# With no MINEWATCH_DATABASE_URL the embedded store is used and the sample mine is simulated.
CMD ["minewatch", "run", "--host", "0.0.0.0", "--port", "8000", "--data-dir", "/data"]
