"""`iworkflow artifacts list|show|get|promote` as a user runs them, on the local home."""
from __future__ import annotations

import json
import os
import pickle
import subprocess
import sys
from pathlib import Path

import pytest

from iworkflow.artifacts import Artifacts, LocalBackend


def cli(home: Path, *args: str, ok: bool = True) -> subprocess.CompletedProcess:
    env = dict(os.environ, IWORKFLOW_HOME=str(home))
    env.pop("IWORKFLOW_SERVER_URL", None)
    proc = subprocess.run([sys.executable, "-c", "from iworkflow.cli import main; main()", "artifacts", *args],
                          capture_output=True, text=True, env=env, timeout=120, check=False)
    assert (proc.returncode == 0) == ok, proc.stdout + proc.stderr
    return proc


@pytest.fixture
def saved(tmp_path):
    home = tmp_path / "home"
    store = Artifacts(LocalBackend(home / "artifacts"), home / "artifacts" / "files")
    (tmp_path / "model.txt").write_text("trees: 400")
    store.save("bdt", tmp_path / "model.txt", metadata={"auc": 0.9})
    store.save("bdt", {"trees": 500}, metadata={"auc": 0.95})
    return home


def test_list_show_get_and_promote_a_local_artifact(saved, tmp_path):
    assert "bdt  latest 2  (2 versions)" in cli(saved, "list").stdout
    lines = cli(saved, "list", "bdt").stdout.splitlines()
    assert [line.split()[0] for line in lines] == ["bdt@1", "bdt@2"]
    record = json.loads(cli(saved, "show", "bdt@1", "--json").stdout)
    assert (record["kind"], record["metadata"], record["lineage"]["executor"]) == ("file", {"auc": 0.9}, "driver")
    cli(saved, "get", "bdt@1", "-o", str(tmp_path / "copy.txt"))
    assert (tmp_path / "copy.txt").read_text() == "trees: 400"
    cli(saved, "promote", "bdt@2", "production")
    assert "tags: production" in cli(saved, "show", "bdt:production").stdout
    cli(saved, "get", "bdt:production", "-o", str(tmp_path / "best.pkl"))
    assert pickle.loads((tmp_path / "best.pkl").read_bytes()) == {"trees": 500}


def test_a_missing_version_or_a_bad_name_fails_with_the_fix(saved):
    assert "`iworkflow artifacts list bdt`" in cli(saved, "show", "bdt@9", ok=False).stderr
    assert "is not valid" in cli(saved, "show", "no/such", ok=False).stderr
