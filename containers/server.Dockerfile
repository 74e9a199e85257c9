# iworkflow server image: records the event stream, runs the monitor, serves the REST API and the
# dashboard with `iworkflow server`.
# Build from the repository root (the build context):
#   docker build -f containers/server.Dockerfile -t iworkflow-server .
# Run (PostgreSQL and RabbitMQ elsewhere):
#   docker run -p 8765:8765 -e IWORKFLOW_SECRET -e IWORKFLOW_BROKER=amqp://guest:guest@rabbit:5672/ \
#     -e IWORKFLOW_DB=postgresql+psycopg://iworkflow:secret@db/iworkflow iworkflow-server
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
RUN pip install --no-cache-dir "/opt/iworkflow[server,amqp,stomp]"

USER 1000:1000
WORKDIR /home/iworkflow
ENV IWORKFLOW_HOME=/home/iworkflow/.iworkflow
EXPOSE 8765
ENTRYPOINT ["iworkflow", "server", "--host", "0.0.0.0", "--port", "8765"]
