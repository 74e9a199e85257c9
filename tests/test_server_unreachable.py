"""A driver whose IWORKFLOW_SERVER_URL points at a server that is down still runs: one warning line, no traceback."""
from __future__ import annotations

import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest

SCRIPT = '''
import iworkflow


@iworkflow.work(map_results=True)
def square(x):
    return x * x


@iworkflow.workflow(local=True, name="offline")
def main():
    return sum(square(multi_jobs_kwargs_list=[{"x": i} for i in range(4)]).get_all_results().values())
'''


def _closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def test_a_driver_runs_with_one_warning_when_the_server_is_down(tmp_path: Path):
    (tmp_path / "flow.py").write_text(SCRIPT)
    url = f"http://127.0.0.1:{_closed_port()}"
    env = dict(os.environ, IWORKFLOW_SERVER_URL=url, IWORKFLOW_HOME=str(tmp_path / "home"),
               IWORKFLOW_EXECUTOR="local", IWORKFLOW_BROKER="memory://")
    proc = subprocess.run([sys.executable, "-c", "from iworkflow.cli import main; main()", "run", "flow.py:main"],
                          cwd=tmp_path, env=env, capture_output=True, text=True, timeout=120, check=False)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip().splitlines()[-1] == "14"
    lines = [line for line in proc.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and url in lines[0] and "unreachable" in lines[0], proc.stderr
    assert "Traceback" not in proc.stderr


@pytest.mark.rabbitmq
@pytest.mark.timeout(180)
def test_with_the_server_down_a_worker_on_another_machine_gets_the_sources_from_the_driver(tmp_path, caplog):
    from other_machine import OtherMachine

    import iworkflow

    sys.path.insert(0, str(Path(__file__).parent / "server"))
    from cluster import AMQP_URL, CLI, Cluster

    cluster = Cluster(tmp_path)
    machine = OtherMachine(tmp_path)
    worker = machine.popen([*CLI, "worker", "--slots", "1", "--grace", "5"], {**cluster.env},
                           stdout=subprocess.PIPE, stderr=subprocess.DEVNULL)
    try:
        assert "ready" in worker.stdout.readline().decode()
        url = f"http://127.0.0.1:{_closed_port()}"
        iworkflow.configure(broker=AMQP_URL, executor="broker", queue="q", destination_prefix=cluster.prefix,
                            server_url=url, token=cluster.token, result_timeout=120)

        @iworkflow.work(map_results=True)
        def cube(x):
            return x ** 3

        @iworkflow.workflow(local=True, name="offline-broker")
        def flow():
            return sorted(cube(multi_jobs_kwargs_list=[{"x": i} for i in range(3)]).get_all_results().values())

        with caplog.at_level("WARNING", logger="iworkflow.source_http"):
            assert flow() == [0, 1, 8]
        warnings = [r for r in caplog.records if r.name == "iworkflow.source_http"]
        assert len(warnings) == 1 and "unreachable" in warnings[0].getMessage()
    finally:
        iworkflow.shutdown()
        worker.terminate()
        worker.wait(30)
        machine.cleanup()
        cluster.stop()
