"""The content-addressed source cache: deterministic packing, dedup, excludes, safe extraction."""
from __future__ import annotations

import io
import logging
import os
import tarfile

import pytest

from iworkflow import source_cache
from iworkflow.errors import ConfigurationError, UnsafeArchiveError
from iworkflow.source_cache import SourceStore, pack, safe_extract


@pytest.fixture
def tree(tmp_path):
    root = tmp_path / "src"
    (root / "pkg").mkdir(parents=True)
    (root / "driver.py").write_text("import pkg.helpers\n")
    (root / "pkg" / "__init__.py").write_text("")
    (root / "pkg" / "helpers.py").write_text("VALUE = 42\n")
    (root / "__pycache__").mkdir()
    (root / "__pycache__" / "driver.cpython-311.pyc").write_bytes(b"junk")
    (root / "data.bin").write_bytes(b"\x00" * 100)
    return root


def _names(data: bytes) -> list[str]:
    with tarfile.open(fileobj=io.BytesIO(data)) as tar:
        return tar.getnames()


def test_identical_trees_pack_to_the_same_hash(tree, tmp_path):
    digest1, data1 = pack(tree)
    (tree / "driver.py").touch()  # a new mtime changes nothing
    digest2, data2 = pack(tree)
    assert digest1 == digest2 and data1 == data2


def test_a_changed_file_changes_the_hash(tree):
    before, _ = pack(tree)
    (tree / "pkg" / "helpers.py").write_text("VALUE = 43\n")
    assert pack(tree)[0] != before


def test_default_and_user_excludes_leave_files_out(tree):
    _, data = pack(tree, excludes=["*.bin"])
    assert sorted(_names(data)) == ["driver.py", "pkg/__init__.py", "pkg/helpers.py"]


def test_a_tree_is_stored_once_however_often_it_is_added(tree, tmp_path):
    store = SourceStore(tmp_path / "store")
    d1 = store.add_tree(tree)
    d2 = store.add_tree(tree)
    assert d1 == d2 and [p.name for p in store.path.glob("*.tar.gz")] == [f"{d1}.tar.gz"]
    assert store.put(d1, store.get(d1)) is False


def test_unpacked_trees_are_cached_by_hash_and_importable(tree, tmp_path):
    store = SourceStore(tmp_path / "store")
    digest = store.add_tree(tree)
    path = store.unpacked(digest)
    assert (path / "pkg" / "helpers.py").read_text() == "VALUE = 42\n"
    assert store.unpacked(digest) == path


def test_a_tarball_not_matching_its_name_is_refused(tmp_path):
    store = SourceStore(tmp_path / "store")
    with pytest.raises(UnsafeArchiveError, match="does not match"):
        store.put("0" * 64, b"not the right content")


def test_an_oversized_tree_is_refused_with_advice(tree):
    (tree / "big.dat").write_bytes(b"\x01" * (2 * 1024 * 1024))
    with pytest.raises(ConfigurationError, match="exclude_source_files"):
        pack(tree, max_mb=1)


def _tar_with(member: tarfile.TarInfo, payload: bytes = b"") -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz") as tar:
        member.size = len(payload)
        tar.addfile(member, io.BytesIO(payload) if payload else None)
    return buf.getvalue()


def test_absolute_member_paths_are_rejected(tmp_path):
    with pytest.raises(UnsafeArchiveError, match="absolute"):
        safe_extract(_tar_with(tarfile.TarInfo("/etc/evil"), b"x"), tmp_path / "t")


def test_symlink_members_are_rejected(tmp_path):
    link = tarfile.TarInfo("innocent")
    link.type = tarfile.SYMTYPE
    link.linkname = "/etc/passwd"
    with pytest.raises(UnsafeArchiveError, match="link"):
        safe_extract(_tar_with(link), tmp_path / "t")


def test_hardlink_members_are_rejected(tmp_path):
    link = tarfile.TarInfo("hard")
    link.type = tarfile.LNKTYPE
    link.linkname = "../../outside"
    with pytest.raises(UnsafeArchiveError):
        safe_extract(_tar_with(link), tmp_path / "t")


def test_a_missing_source_dir_is_a_clear_error(tmp_path):
    with pytest.raises(ConfigurationError, match="is not a directory"):
        pack(tmp_path / "nope")


def test_pythons_without_extraction_filters_unpack_with_plain_permissions(tmp_path, monkeypatch):
    """Debian 12's Python 3.11.2 (the CI image base) predates ``extractall(filter=...)``: extraction still works,
    keeps the executable bit, and drops set-id bits and foreign owners as the "data" filter does."""
    plain = tarfile.TarFile.extractall

    def without_filter(self, path=".", members=None, *, numeric_owner=False, **kwargs):
        if "filter" in kwargs:
            raise TypeError("TarFile.extractall() got an unexpected keyword argument 'filter'")
        return plain(self, path, members, numeric_owner=numeric_owner, filter="fully_trusted")

    monkeypatch.delattr(tarfile, "data_filter")
    monkeypatch.setattr(tarfile.TarFile, "extractall", without_filter)
    raw = io.BytesIO()
    with tarfile.open(fileobj=raw, mode="w") as tar:
        for name, mode, body in (("run.sh", 0o4775, b"#!/bin/sh\n"), ("pkg/mod.py", 0o666, b"X = 1\n")):
            info = tarfile.TarInfo(name)
            info.size, info.mode, info.uid, info.uname = len(body), mode, 4242, "stranger"
            tar.addfile(info, io.BytesIO(body))
    safe_extract(raw.getvalue(), tmp_path / "out")
    assert (tmp_path / "out" / "pkg" / "mod.py").read_text() == "X = 1\n"
    assert (tmp_path / "out" / "run.sh").stat().st_mode & 0o7777 == 0o755
    assert (tmp_path / "out" / "pkg" / "mod.py").stat().st_mode & 0o7777 == 0o644
    assert (tmp_path / "out" / "run.sh").stat().st_uid == os.getuid()


def _listing_then(action):
    """``_members`` as pack() sees it, with ``action(members)`` run between the listing and the reading."""
    real = source_cache._members

    def members(root, patterns):
        found = real(root, patterns)
        action(found)
        return found

    return members


def test_a_file_that_vanishes_while_the_tree_is_packed_is_skipped_with_a_warning(tree, monkeypatch, caplog):
    monkeypatch.setattr(source_cache, "_members", _listing_then(lambda _found: (tree / "data.bin").unlink()))
    with caplog.at_level(logging.WARNING, logger="iworkflow.source_cache"):
        digest, data = pack(tree)
    assert "data.bin" not in _names(data)
    assert any("data.bin" in r.getMessage() for r in caplog.records if r.levelno == logging.WARNING)
    monkeypatch.undo()
    assert pack(tree)[0] == digest, "the digest is of what was packed"


def test_a_file_that_becomes_unreadable_while_the_tree_is_packed_is_skipped(tree, monkeypatch):
    def replace_by_directory(_found):
        (tree / "data.bin").unlink()
        (tree / "data.bin").mkdir()

    monkeypatch.setattr(source_cache, "_members", _listing_then(replace_by_directory))
    _digest, data = pack(tree)
    assert sorted(_names(data)) == ["driver.py", "pkg/__init__.py", "pkg/helpers.py"]


def test_an_unchanged_tree_is_not_packed_again(tree, tmp_path, monkeypatch):
    monkeypatch.setattr(source_cache, "RACY_SECONDS", -1.0)  # as if every file were written long ago
    packed = []
    real_pack = source_cache.pack
    monkeypatch.setattr(source_cache, "pack", lambda *a, **k: packed.append(1) or real_pack(*a, **k))
    store = SourceStore(tmp_path / "store")
    first = store.add_tree(tree)
    assert store.add_tree(tree) == first and len(packed) == 1
    (tree / "pkg" / "helpers.py").write_text("VALUE = 1234\n")
    assert store.add_tree(tree) == real_pack(tree)[0] != first and len(packed) == 2


def test_rapid_edits_of_the_same_size_always_change_the_digest(tree, tmp_path):
    """A file rewritten within one clock tick keeps its stat signature: such files are packed, never trusted."""
    store = SourceStore(tmp_path / "store")
    for i in range(30):
        (tree / "pkg" / "helpers.py").write_text(f"VALUE = {i % 10}\n")
        assert store.add_tree(tree) == pack(tree)[0]


def zeros_tarball(size: int) -> bytes:
    """A gzip-compressed tarball of a few KiB whose one member unpacks to ``size`` bytes."""
    import gzip

    raw = io.BytesIO()
    with tarfile.open(fileobj=raw, mode="w") as tar:
        member = tarfile.TarInfo("zeros.bin")
        member.size = size
        tar.addfile(member, io.BytesIO(bytes(size)))
    return gzip.compress(raw.getvalue(), compresslevel=9)


def test_an_archive_bomb_is_refused_before_its_data_is_written(tmp_path):
    bomb = zeros_tarball(32 * 2**20)
    assert len(bomb) < 2**20
    with pytest.raises(UnsafeArchiveError, match="max_unpacked_source_mb"):
        safe_extract(bomb, tmp_path / "t", max_bytes=4 * 2**20)
    assert not any(p.is_file() for p in (tmp_path / "t").rglob("*"))


def test_the_unpacked_size_bound_defaults_to_ten_times_the_source_limit():
    from iworkflow.config import load_settings

    assert load_settings(max_source_mb=3).unpacked_source_limit == 30 * 2**20
    assert load_settings(max_source_mb=3, max_unpacked_source_mb=5).unpacked_source_limit == 5 * 2**20
