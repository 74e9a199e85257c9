"""``exclude_source_files`` are iDDS regular expressions, applied as iDDS applies them; secrets never ship
by accident."""
from __future__ import annotations

import io
import logging
import tarfile

import pytest

from iworkflow.errors import ConfigurationError
from iworkflow.source_cache import pack


def shipped(tree, excludes=(), include=()) -> set[str]:
    _, data = pack(tree, excludes=excludes, include=include)
    with tarfile.open(fileobj=io.BytesIO(data), mode="r:gz") as tar:
        return {m.name for m in tar.getmembers()}


@pytest.fixture
def tree(tmp_path):
    files = ["main.py", "lib/util.py", "lib/run.log", "logs/a.txt", "lib/logs/b.txt", "results_1.json",
             "lib/results_2.json", "data/x.csv", "notes.md"]
    for rel in files:
        path = tmp_path / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(rel)
    return tmp_path


def test_patterns_are_regular_expressions_matched_like_idds(tree):
    # re.match against top-level names and against the base name of every file (not nested folder names)
    got = shipped(tree, excludes=[r".*\.log", "logs", r"results_\d+\.json"])
    assert got == {"main.py", "lib/util.py", "lib/logs/b.txt", "data/x.csv", "notes.md"}


def test_a_pattern_is_anchored_at_the_start_only_as_re_match_is(tree):
    assert "notes.md" not in shipped(tree, excludes=["note"])  # a prefix match, as in iDDS
    assert "main.py" in shipped(tree, excludes=[r"ain\.py"])     # not a search


def test_patterns_that_are_no_regular_expression_are_globs_and_glob_prefix_makes_one(tree):
    assert "lib/run.log" not in shipped(tree, excludes=["*.log"])       # invalid regex: a glob
    assert "data/x.csv" not in shipped(tree, excludes=["glob:data/*.csv"])


def test_a_glob_that_reads_as_a_regex_matching_nothing_is_warned_about(tree, caplog):
    caplog.set_level(logging.WARNING, logger="iworkflow.source_filter")
    assert "data/x.csv" in shipped(tree, excludes=["data/*.csv"])
    assert "'data/*.csv' excluded nothing" in caplog.text and "glob:data/*.csv" in caplog.text


def test_an_invalid_explicit_regex_is_a_clear_error(tree):
    with pytest.raises(ConfigurationError, match="not a valid regular expression"):
        shipped(tree, excludes=["re:*.log"])


def test_a_single_pattern_string_is_one_pattern_as_in_idds(tree):
    from iworkflow.workflow import Workflow

    assert Workflow(source_dir=str(tree), exclude_source_files="logs").exclude_source_files == ["logs"]


def test_secret_looking_files_never_ship_and_a_warning_names_them(tree, caplog):
    secrets = [".env", "lib/.netrc", "certs/server.pem", "api_token.txt", ".ssh/id_rsa", "deploy/.env.prod",
               "x509up_u1000"]
    for rel in secrets:
        (tree / rel).parent.mkdir(parents=True, exist_ok=True)
        (tree / rel).write_text("hunter2")
    caplog.set_level(logging.WARNING, logger="iworkflow.source_filter")
    got = shipped(tree, excludes=[r"logs"])
    assert not got & set(secrets) and {"main.py", "lib/util.py"} <= got
    for rel in (".env", ".ssh/", "lib/.netrc", "certs/server.pem", "api_token.txt", "deploy/.env.prod",
                "x509up_u1000"):
        assert rel in caplog.text
    assert "7 file(s) that look like secrets were NOT shipped" in caplog.text and "include_source_files" in caplog.text


def test_a_secret_listed_in_include_source_files_ships_and_nothing_beside_it(tree):
    (tree / ".env").write_text("NEEDED=1")
    (tree / "cfg").mkdir()
    (tree / "cfg" / "token_map.json").write_text("{}")
    (tree / ".aws").mkdir()
    (tree / ".aws" / "config").write_text("[default]")
    (tree / ".aws" / "cache.json").write_text("{}")
    got = shipped(tree, include=[".env", "cfg/token_map.json", ".aws/config"])
    assert {".env", "cfg/token_map.json", ".aws/config"} <= got and ".aws/cache.json" not in got


def test_a_workflow_ships_what_include_source_files_lists(embedded, tree):
    from iworkflow.workflow import Workflow

    (tree / ".env").write_text("NEEDED=1")
    ref = Workflow(source_dir=str(tree), include_source_files=[".env"]).source_ref()
    from iworkflow.source_cache import SourceStore

    unpacked = SourceStore(ref.store).unpacked(ref.digest)
    assert (unpacked / ".env").read_text() == "NEEDED=1"


def test_python_modules_named_like_secrets_ship_because_jobs_import_them(tree):
    for rel in ("tokenizer.py", "lib/secrets_manager.py", "password_rules.py", "api_token.txt", "db_password.cfg"):
        (tree / rel).parent.mkdir(parents=True, exist_ok=True)
        (tree / rel).write_text("x = 1")
    got = shipped(tree)
    assert {"tokenizer.py", "lib/secrets_manager.py", "password_rules.py"} <= got
    assert not got & {"api_token.txt", "db_password.cfg"}
