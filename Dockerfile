# The `talk` gateway image. Users build and push it; nothing here builds it:
#   docker build -t registry.example.net/twinsite/talk:0.1.0 .
# and set `twinsite:gateway.image` to that reference (a tag or a digest, never `latest`).
FROM python:3.11-slim

ENV PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1 PIP_NO_CACHE_DIR=1
WORKDIR /src
COPY pyproject.toml README.md ./
COPY twinsite ./twinsite
RUN pip install . && rm -rf /src

# The Deployment runs as this uid with a read-only root filesystem (only /tmp is writable).
RUN useradd --uid 10001 --user-group --no-create-home --shell /usr/sbin/nologin talk
USER 10001:10001
WORKDIR /tmp
EXPOSE 8080
ENTRYPOINT ["twinsite"]
CMD ["talk", "serve", "--site", "local", "--nats", "nats://127.0.0.1:4222", "--listen", "0.0.0.0:8080"]
