# iworkflow server image: records the event stream, runs the monitor, serves the REST API, the source
# cache and the dashboard with `iworkflow server`.
# Build from the repository root (the build context):
#   docker build -f containers/server.Dockerfile -t iworkflow-server .
#   podman build -f containers/server.Dockerfile --build-arg BASE_IMAGE=localhost/debian:bookworm -t iworkflow-server .
# Run (PostgreSQL and RabbitMQ elsewhere):
#   docker run -p 8765:8765 -e IWORKFLOW_SECRET -e IWORKFLOW_TOKEN -e IWORKFLOW_BROKER=amqp://guest:guest@rabbit:5672/ \
#     -e IWORKFLOW_DB=postgresql+psycopg://iworkflow:secret@db/iworkflow iworkflow-server
# BASE_IMAGE: any image with Python >= 3.11 and its venv module (the default is the public Python image).
ARG BASE_IMAGE=python:3.11-slim-bookworm
FROM ${BASE_IMAGE}

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    VIRTUAL_ENV=/opt/venv \
    PATH=/opt/venv/bin:$PATH

RUN groupadd --system --gid 1000 iworkflow \
    && useradd --system --uid 1000 --gid iworkflow --create-home --home-dir /home/iworkflow iworkflow

WORKDIR /opt/iworkflow
# the dependencies in a layer of their own: a change to the code leaves it cached
COPY pyproject.toml containers/requirements.py ./
RUN python3 -m venv /opt/venv \
    && python3 requirements.py pyproject.toml server,amqp,stomp > requirements.txt \
    && pip install --no-cache-dir -r requirements.txt "setuptools>=68" "wheel>=0.40"
COPY README.md ./
COPY iworkflow ./iworkflow
COPY executors ./executors
COPY server ./server
RUN pip install --no-cache-dir --no-deps --no-build-isolation /opt/iworkflow \
    && python3 -I -c "import iworkflow.server.service"

USER 1000:1000
WORKDIR /home/iworkflow
ENV IWORKFLOW_HOME=/home/iworkflow/.iworkflow
EXPOSE 8765
ENTRYPOINT ["iworkflow", "server", "--host", "0.0.0.0", "--port", "8765"]
