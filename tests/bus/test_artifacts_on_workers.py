"""Artifacts saved by jobs on `iworkflow worker` processes over RabbitMQ: into the shared iworkflow home, and
from a worker with a home of its own (another machine) through the server."""
from __future__ import annotations

import os

import pytest

from iworkflow import artifacts, get_unique_id_for_dict, work
from iworkflow.artifact_http import HttpBackend
from iworkflow.artifacts import Artifacts

from .test_broker_e2e import Deployment

pytestmark = [pytest.mark.timeout(120), pytest.mark.rabbitmq]
TOKEN = "artifact-token-" + os.urandom(4).hex()


@pytest.fixture
def deploy(tmp_path):
    d = Deployment("rabbitmq", tmp_path)
    yield d
    d.close()


@pytest.fixture
def server_url(tmp_path):
    """A server of its own (own memory bus, SQLite): only its artifact endpoints are used here."""
    from iworkflow.server.service import Server, ServerOptions

    from iworkflow.bus.memory import MemoryBus
    from iworkflow.config import load_settings

    bus = MemoryBus()
    settings = load_settings(db=f"sqlite:///{tmp_path / 'server.db'}", token=TOKEN,
                             source_store=str(tmp_path / "server-store"))
    srv = Server(settings, bus, ServerOptions(host="127.0.0.1", port=0))
    srv.start_background()
    yield srv.url
    srv.stop()
    bus.close()


@work(map_results=True)
def fit(seed):
    record = artifacts.save("rmq-model", {"seed": seed}, metadata={"seed": seed})
    return record.version, os.environ.get("IWORKFLOW_WORKER_NAME"), os.getpid()


def test_a_job_on_a_rabbitmq_worker_saves_and_the_driver_loads_it_with_the_workers_lineage(deploy):
    deploy.start_worker(slots=2, elsewhere=False)  # this machine: the shared iworkflow home
    deploy.driver()
    results = fit(multi_jobs_kwargs_list=[{"seed": s} for s in range(3)])
    for seed in range(3):
        version, worker, pid = results.get_result(args={"seed": seed})
        assert artifacts.load("rmq-model", version) == {"seed": seed}
        lin = artifacts.lineage("rmq-model", version)
        # the worker's one name (the same its jobs are shown under), given to the runner that ran the job
        assert lin.executor == "broker" and worker and lin.worker == worker and pid != os.getpid()
        assert lin.work_id == results._work_id and lin.job_key == get_unique_id_for_dict({"seed": seed})
    assert sorted(v.version for v in artifacts.list("rmq-model"))[-3:] == sorted(
        results.get_result(args={"seed": s})[0] for s in range(3))


def test_a_worker_with_its_own_home_saves_through_the_server(deploy, server_url, tmp_path):
    deploy.start_worker(slots=1, IWORKFLOW_HOME=str(tmp_path / "other-machine"), IWORKFLOW_SERVER_URL=server_url,
                        IWORKFLOW_TOKEN=TOKEN)
    deploy.driver()
    version, worker, _pid = fit(multi_jobs_kwargs_list=[{"seed": 42}]).get_result(args={"seed": 42})
    reader = Artifacts(HttpBackend(server_url, "", tmp_path / "reader" / "cache"), tmp_path / "reader" / "files")
    assert reader.load("rmq-model", version) == {"seed": 42}
    assert worker and reader.lineage("rmq-model", version).worker == worker
    here = artifacts.list("rmq-model") if any(n.name == "rmq-model" for n in artifacts.names()) else []
    assert {"seed": 42} not in [v.metadata for v in here], "the save went to the server, not to this home"
