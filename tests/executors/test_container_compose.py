"""The compose deployment end to end, as a user runs it: containers/compose.yaml brings up the server image and
two worker images (the HPO example's image: the worker image plus xgboost) on the host network, against the
host's RabbitMQ and PostgreSQL; the HPO example then runs from the host with a small budget, its jobs run in
the worker containers with the example's code fetched from the server's source cache, and the dashboard and
the REST API answer with what happened."""
from __future__ import annotations

import json
import os
import re
import socket
import subprocess
import sys
import time
import uuid
from pathlib import Path

import httpx
import pytest
from broker_cleanup import run_prefix
from pg_schema import private_schema
from waiting import wait_until

REPO = Path(__file__).resolve().parents[2]
COMPOSE = Path(sys.executable).parent / "podman-compose"
AMQP = os.environ.get("IWORKFLOW_TEST_AMQP", "amqp://guest:guest@127.0.0.1:5672/")

pytestmark = [pytest.mark.slow, pytest.mark.podman, pytest.mark.rabbitmq, pytest.mark.postgres]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
def pg_schema():
    with private_schema("iwf_compose") as url:
        yield url


class Deployment:
    """One `podman-compose` project of containers/compose.yaml, with its settings in the environment."""

    def __init__(self, env: dict[str, str], project: str):
        self.env = env
        self.project = project
        self.url = f"http://127.0.0.1:{env['IWORKFLOW_PORT']}"

    def compose(self, *args: str, timeout: float = 180) -> subprocess.CompletedProcess:
        proc = subprocess.run([str(COMPOSE), "-p", self.project, "-f", str(REPO / "containers" / "compose.yaml"),
                               *args], env=self.env, capture_output=True, text=True, timeout=timeout, check=False)
        assert proc.returncode == 0, f"podman-compose {' '.join(args)}:\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}"
        return proc

    def logs(self, service: str) -> str:
        proc = subprocess.run(["podman", "logs", f"{self.project}_{service}_1"], capture_output=True, text=True,
                              check=False)
        return proc.stdout + proc.stderr

    def wait_ready(self, timeout: float = 90.0) -> None:
        ready = {"server": "listening on", "worker-1": "ready", "worker-2": "ready"}
        wait_until(lambda: {s: self.logs(s)[-2000:] for s, word in ready.items() if word not in self.logs(s)},
                   lambda pending: not pending, timeout=timeout, what="services not ready (their logs)")


@pytest.fixture
def deployment(server_image, hpo_image, pg_schema, podman_ps):
    prefix = run_prefix("e2e")
    project = "iwf" + prefix.rstrip(".")
    env = dict(os.environ, IWORKFLOW_SERVER_IMAGE=server_image.image, IWORKFLOW_WORKER_IMAGE=hpo_image.image,
               IWORKFLOW_SECRET="compose-" + uuid.uuid4().hex, IWORKFLOW_TOKEN="compose-token-" + uuid.uuid4().hex,
               IWORKFLOW_BROKER=AMQP, IWORKFLOW_DB=pg_schema, IWORKFLOW_PORT=str(free_port()),
               IWORKFLOW_QUEUE="hpo", IWORKFLOW_DESTINATION_PREFIX=prefix)
    d = Deployment(env, project)
    try:
        d.compose("up", "-d")
        d.wait_ready()
        yield d
    finally:
        subprocess.run([str(COMPOSE), "-p", project, "-f", str(REPO / "containers" / "compose.yaml"), "down",
                        "-t", "10"], env=env, capture_output=True, timeout=180, check=False)
        assert podman_ps(project) == [], "compose down left containers behind"


def test_hpo_example_runs_on_the_compose_deployment(deployment, tmp_path):
    driver_env = {**deployment.env, "IWORKFLOW_SERVER_URL": deployment.url,
                  "IWORKFLOW_HOME": str(tmp_path / "driver-home")}
    out = tmp_path / "out"
    start = time.monotonic()
    run = subprocess.run([sys.executable, str(REPO / "examples" / "hpo_xgboost" / "run.py"), "--executor", "broker",
                          "--broker", AMQP, "--seeds", "1", "--iterations", "2", "--points", "3", "--n-estimators", "20",
                          "--folds", "3", "--metric", "roc_auc", "--out", str(out)],
                         cwd=tmp_path, env=driver_env, capture_output=True, text=True, timeout=300, check=False)
    print(f"HPO example on the compose deployment: {time.monotonic() - start:.1f} s")
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-3000:]
    result = json.loads((out / "hpo_xgboost.json").read_text())
    for method in ("bayes", "random"):
        (search,) = result["runs"][method]
        assert len(search["evaluations"]) == 6 and search["failures"] == 0
        assert search["best"]["score"] > 0.95  # ROC AUC on the breast-cancer data
        assert search["rescored"]["held_out"] > 0.9

    # the dashboard answers, and the server recorded the four workflows (two searches, the re-scoring, the kept
    # model) with every job finished
    api = httpx.Client(base_url=deployment.url, timeout=10,
                       headers={"Authorization": f"Bearer {deployment.env['IWORKFLOW_TOKEN']}"})
    page = api.get("/")
    assert page.status_code == 200 and "<html" in page.text.lower()
    workflows = wait_until(lambda: api.get("/api/workflows").json(),
                           lambda wfs: len(wfs) == 4 and all(w["status"] == "finished" for w in wfs),
                           what="the four workflows recorded as finished")
    jobs = [j for w in workflows for j in api.get("/api/jobs", params={"workflow_id": w["id"]}).json()]
    assert len(jobs) == 12 + 2 + 1 and {j["status"] for j in jobs} == {"finished"}
    # the winner's model, saved by a job in a worker container, is kept by the server
    (kept,) = api.get("/api/artifacts/hpo-xgboost-best").json()["versions"]
    assert kept["lineage"]["work_name"].endswith("train_best") and kept["lineage"]["executor"] == "broker"

    # the jobs ran in the worker containers: the only consumers of this run's queue; they say how many they served
    deployment.compose("stop", "-t", "30")
    served = 0
    for service in ("worker-1", "worker-2"):
        found = re.search(r"worker \S+ stopped after (\d+) job\(s\)", deployment.logs(service))
        assert found, deployment.logs(service)[-2000:]
        served += int(found.group(1))
    assert served >= 12

