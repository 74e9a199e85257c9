# iworkflow worker image: serves jobs from a broker with `iworkflow worker`, and the base image that
# `container_options={"container_image": ..., "runtime": "docker"|"podman"}` runs jobs in (add your
# libraries on top; your code arrives from the source cache, see docs/containers.md).
# Build from the repository root (the build context):
#   docker build -f containers/worker.Dockerfile -t iworkflow-worker .
#   podman build -f containers/worker.Dockerfile --build-arg BASE_IMAGE=localhost/debian:bookworm -t iworkflow-worker .
# Run:
#   docker run --network host -e IWORKFLOW_SECRET -e IWORKFLOW_BROKER=amqp://guest:guest@127.0.0.1:5672/ \
#     iworkflow-worker --queue default --slots 4
# BASE_IMAGE: any image with Python >= 3.11 and its venv module (the default is the public Python image),
#   e.g. your own base container with its system libraries.
# EXTRA_PACKAGES: pip requirements your jobs import, installed with iworkflow's dependencies in a layer that
#   a change to the code leaves cached, e.g. --build-arg EXTRA_PACKAGES="numpy scikit-learn xgboost-cpu".
ARG BASE_IMAGE=python:3.11-slim-bookworm
FROM ${BASE_IMAGE}
ARG EXTRA_PACKAGES=""

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
    && python3 requirements.py pyproject.toml amqp,stomp > requirements.txt \
    && for req in $EXTRA_PACKAGES; do echo "$req" >> requirements.txt; done \
    && pip install --no-cache-dir -r requirements.txt "setuptools>=68" "wheel>=0.40"
COPY README.md ./
COPY iworkflow ./iworkflow
COPY executors ./executors
COPY server ./server
RUN pip install --no-cache-dir --no-deps --no-build-isolation /opt/iworkflow \
    && python3 -I -c "import iworkflow.runner, iworkflow.executors"

USER 1000:1000
WORKDIR /home/iworkflow
ENV IWORKFLOW_HOME=/home/iworkflow/.iworkflow
ENTRYPOINT ["iworkflow", "worker"]
