"""Artifacts kept by the server: REST round trips on SQLite and PostgreSQL, token-protected writes, corrupted
server blobs refused by the client, and concurrent saves from several processes on PostgreSQL and SQLite."""
from __future__ import annotations

import multiprocessing
import urllib.request
from pathlib import Path

import pytest

from iworkflow.artifact_catalog import ArtifactNotFound, Catalog
from iworkflow.artifact_http import HttpBackend
from iworkflow.artifacts import ArtifactCorrupted, Artifacts, configured
from iworkflow.source_http import ServerError


def client(url: str, token: str, home: Path) -> Artifacts:
    """The artifacts of a process on another machine: it shares nothing with the server but its URL."""
    return Artifacts(HttpBackend(url, token, home / "cache"), home / "files")


def test_save_list_promote_and_load_through_the_server(make_server, db_url, tmp_path):
    srv = make_server(db_url=db_url)
    a = client(srv.url, srv.token, tmp_path / "a")
    (tmp_path / "model").mkdir()
    (tmp_path / "model" / "w.bin").write_bytes(b"\x00\x01" * 40000)
    v1 = a.save("bdt", {"depth": 3}, metadata={"auc": 0.91})
    v2 = a.save("bdt", tmp_path / "model", metadata={"auc": 0.93})
    a.promote("bdt", 2, "production")
    b = client(srv.url, srv.token, tmp_path / "b")
    assert b.load("bdt", 1) == {"depth": 3}
    assert (b.load("bdt", "production") / "w.bin").read_bytes() == b"\x00\x01" * 40000
    assert [(v.version, v.metadata["auc"], v.tags) for v in b.list("bdt")] == [
        (1, 0.91, ()), (2, 0.93, ("production",))]
    assert b.show("bdt", v1.digest).version == 1 and b.lineage("bdt", 2).executor == "driver"
    assert [(n.name, n.latest, n.tags) for n in b.names()] == [("bdt", 2, {"production": 2})]
    assert v2.kind == "directory"
    with pytest.raises(ArtifactNotFound):
        b.load("bdt", 7)


def test_the_configured_store_is_the_server_when_server_url_is_set(make_server, runtime, tmp_path):
    srv = make_server()
    settings = runtime.settings.with_(server_url=srv.url, token=srv.token, home=str(tmp_path / "elsewhere"))
    configured(settings).save("via-settings", [1, 2, 3])
    assert client(srv.url, srv.token, tmp_path / "c").load("via-settings") == [1, 2, 3]


def test_writes_need_the_token_and_reads_do_not(make_server, tmp_path):
    srv = make_server()
    client(srv.url, srv.token, tmp_path / "ok").save("guarded", 1)
    with pytest.raises(ServerError, match="401"):
        client(srv.url, "wrong-token", tmp_path / "bad").save("guarded", 2)
    with pytest.raises(ServerError, match="401"):
        client(srv.url, "", tmp_path / "none").promote("guarded", 1, "production")
    assert client(srv.url, "", tmp_path / "reader").load("guarded") == 1
    assert [v.version for v in client(srv.url, "", tmp_path / "reader").list("guarded")] == [1]


def test_an_upload_whose_bytes_do_not_match_its_digest_is_refused(make_server):
    srv = make_server()
    req = urllib.request.Request(f"{srv.url}/api/artifact-blobs/{'ab' * 32}", data=b"other bytes", method="PUT",
                                 headers={"Authorization": f"Bearer {srv.token}"})
    with pytest.raises(urllib.error.HTTPError) as err:
        urllib.request.urlopen(req, timeout=30)
    assert err.value.code == 400 and b"is corrupted" in err.value.read()


def test_a_blob_corrupted_on_the_server_is_refused_by_the_client(make_server, tmp_path):
    srv = make_server()
    record = client(srv.url, srv.token, tmp_path / "w").save("fragile", {"x": list(range(50))})
    blob = Path(srv.server.store.location) / "artifacts" / record.digest[:2] / record.digest
    blob.chmod(0o644)
    blob.write_bytes(blob.read_bytes()[:-3] + b"xyz")
    reader = client(srv.url, srv.token, tmp_path / "r")
    with pytest.raises(ArtifactCorrupted, match=record.digest):
        reader.load("fragile")
    assert not reader.backend.blobs.has(record.digest), "the damaged download is not cached"


def _save_through_the_server_catalog(url: str, worker: int, count: int, barrier) -> None:
    from iworkflow.server.artifacts import SqlAlchemyConnector
    from iworkflow.server.db import make_engine

    from iworkflow.artifact_catalog import Lineage

    engine = make_engine(url)
    catalog = Catalog(SqlAlchemyConnector(engine))
    barrier.wait()
    for i in range(count):
        catalog.add_version("shared", f"{worker:032x}{i:032x}", 1, "object", "", {"worker": worker, "i": i},
                            Lineage(executor="test", worker=str(worker)))
    engine.dispose()


def test_concurrent_saves_from_several_processes_on_the_server_database_get_every_version_once(db_url):
    from iworkflow.server.artifacts import SqlAlchemyConnector
    from iworkflow.server.db import Database

    db = Database(db_url)  # migrations to head, 0005_artifacts included
    processes, count = 4, 10
    ctx = multiprocessing.get_context("spawn")
    barrier = ctx.Barrier(processes)
    procs = [ctx.Process(target=_save_through_the_server_catalog, args=(db_url, w, count, barrier))
             for w in range(processes)]
    for p in procs:
        p.start()
    for p in procs:
        p.join()
    assert [p.exitcode for p in procs] == [0] * processes
    versions = Catalog(SqlAlchemyConnector(db.engine)).versions("shared")
    assert [v.version for v in versions] == list(range(1, processes * count + 1))
    assert sorted((v.metadata["worker"], v.metadata["i"]) for v in versions) == [
        (w, i) for w in range(processes) for i in range(count)], "every save is one version: none lost, none twice"
    db.dispose()


def test_the_cli_reads_artifacts_from_the_server(make_server, tmp_path):
    import os
    import subprocess
    import sys

    srv = make_server()
    client(srv.url, srv.token, tmp_path / "w").save("from-server", {"k": 1}, metadata={"note": "hi"})
    env = dict(os.environ, IWORKFLOW_HOME=str(tmp_path / "cli-home"), IWORKFLOW_TOKEN="")
    proc = subprocess.run([sys.executable, "-c", "from iworkflow.cli import main; main()", "artifacts", "show",
                           "from-server@1", "--server", srv.url], capture_output=True, text=True, env=env,
                          timeout=120, check=False)
    assert proc.returncode == 0, proc.stderr
    assert 'metadata: {"note": "hi"}' in proc.stdout


def test_the_artifacts_migration_downgrades_and_upgrades_again(db_url):
    import sqlalchemy as sa
    from alembic import command
    from alembic.config import Config

    from iworkflow.server.db import MIGRATIONS, Database, upgrade

    db = Database(db_url)
    tables = {"iwf_artifact_names", "iwf_artifact_versions", "iwf_artifact_tags"}
    assert tables <= set(sa.inspect(db.engine).get_table_names())
    cfg = Config()
    cfg.set_main_option("script_location", str(MIGRATIONS))
    with db.engine.begin() as conn:
        cfg.attributes["connection"] = conn
        command.downgrade(cfg, "0003")  # before 0005_artifacts (and the workers table of 0006 above it)
    assert not tables & set(sa.inspect(db.engine).get_table_names())
    upgrade(db.engine)
    assert tables <= set(sa.inspect(db.engine).get_table_names())
    db.dispose()
