# iworkflow worker image: serves jobs from a broker with `iworkflow worker`, and is the image that
# `container_options={"container_image": ..., "runtime": "docker"}` runs jobs in.
# Build from the repository root (the build context):
#   docker build -f containers/worker.Dockerfile -t iworkflow-worker .
# Run:
#   docker run -e IWORKFLOW_SECRET -e IWORKFLOW_BROKER=amqp://guest:guest@rabbit:5672/ iworkflow-worker --queue default --slots 4
FROM python:3.11-slim-bookworm

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1

RUN groupadd --system --gid 1000 iworkflow \
    && useradd --system --uid 1000 --gid iworkflow --create-home --home-dir /home/iworkflow iworkflow

WORKDIR /opt/iworkflow
COPY pyproject.toml README.md ./
COPY iworkflow ./iworkflow
COPY executors ./executors
COPY server ./server
# the broker clients are extras: AMQP (RabbitMQ) and STOMP (ActiveMQ)
RUN pip install --no-cache-dir "/opt/iworkflow[amqp,stomp]"

USER 1000:1000
WORKDIR /home/iworkflow
ENV IWORKFLOW_HOME=/home/iworkflow/.iworkflow
ENTRYPOINT ["iworkflow", "worker"]
