"""Content-addressed source cache: a workflow's source tree packed into a tarball named by its hash.

Identical trees produce byte-identical tarballs (sorted members, zeroed times and owners), so a tree
is stored once however often a workflow runs.  Extraction rejects members that could escape the
target directory, and unpacked trees are cached by hash.
"""
from __future__ import annotations

import contextlib
import gzip
import hashlib
import io
import logging
import os
import shutil
import stat
import tarfile
import tempfile
import threading
import time
from pathlib import Path, PurePosixPath

from .errors import ConfigurationError, UnsafeArchiveError
from .source_filter import DEFAULT_EXCLUDES, SourceFilter  # noqa: F401 - DEFAULT_EXCLUDES re-exported

logger = logging.getLogger(__name__)

SUFFIX = ".tar.gz"


def _members(root: Path, keep: SourceFilter) -> list[tuple[str, Path]]:
    files: list[tuple[str, Path]] = []
    for dirpath, dirnames, filenames in os.walk(root):
        rel_dir = os.path.relpath(dirpath, root)
        rel_dir = "" if rel_dir == "." else rel_dir.replace(os.sep, "/")
        dirnames[:] = sorted(
            d for d in dirnames
            if not os.path.islink(os.path.join(dirpath, d))
            and not keep.excludes(f"{rel_dir}/{d}".lstrip("/"), d, is_dir=True)
        )
        for name in sorted(filenames):
            rel = f"{rel_dir}/{name}".lstrip("/")
            path = Path(dirpath, name)
            if path.is_symlink() or not path.is_file() or keep.excludes(rel, name, is_dir=False):
                continue
            files.append((rel, path))
    return files


def _too_big(root: Path, total: int, max_mb: float) -> ConfigurationError:
    return ConfigurationError(
        f"source tree {root} holds {total / 2**20:.0f} MiB (limit {max_mb:.0f} MiB): point source_dir= at "
        "the folder with your code, add exclude_source_files=[...] patterns, or raise max_source_mb"
    )


def _read(path: Path) -> tuple[bytes, int] | None:
    """A file's bytes and mode, or None (with a WARNING) when it vanished or cannot be read meanwhile."""
    try:
        with path.open("rb") as fh:
            mode = os.fstat(fh.fileno()).st_mode
            if not stat.S_ISREG(mode):
                raise IsADirectoryError(f"{path} is no longer a regular file")
            return fh.read(), mode
    except OSError as err:
        logger.warning("source tree: skipping %s, which changed while it was packed (%s)", path, err)
        return None


def pack(source_dir: str | os.PathLike, excludes: list[str] | tuple[str, ...] = (),
         max_mb: float = 200.0, include: list[str] | tuple[str, ...] = ()) -> tuple[str, bytes]:
    """Pack a tree deterministically; returns (sha256 hex, tar.gz bytes).

    ``excludes`` are iDDS ``exclude_source_files`` patterns and ``include`` the secret-looking files to ship
    anyway (``iworkflow.source_filter``).  A file that vanishes or becomes unreadable while the tree is
    packed is left out with a WARNING: the digest is always of what was packed."""
    root = Path(source_dir).resolve()
    if not root.is_dir():
        raise ConfigurationError(f"source_dir {root} is not a directory; pass source_dir= an existing folder")
    keep = SourceFilter(excludes, include)
    members = _members(root, keep)
    keep.report(str(root))
    limit = max_mb * 1024 * 1024
    sizes = []
    for _rel, path in members:
        try:
            sizes.append(path.stat().st_size)
        except OSError:
            sizes.append(0)  # gone already: _read says so
    if sum(sizes) > limit:  # before reading anything
        raise _too_big(root, sum(sizes), max_mb)
    raw = io.BytesIO()
    total = 0
    with tarfile.open(fileobj=raw, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for rel, path in members:
            read = _read(path)
            if read is None:
                continue
            data, mode = read
            total += len(data)
            if total > limit:  # a file grew while the tree was packed
                raise _too_big(root, total, max_mb)
            info = tarfile.TarInfo(rel)
            info.size = len(data)
            info.mode = 0o755 if mode & stat.S_IXUSR else 0o644
            info.mtime = 0
            tar.addfile(info, io.BytesIO(data))
    data = gzip.compress(raw.getvalue(), compresslevel=6, mtime=0)
    return hashlib.sha256(data).hexdigest(), data


#: a file changed this recently is not trusted to keep its stat signature when it changes again
RACY_SECONDS = 2.0
_known_trees: dict[tuple[str, tuple[str, ...]], tuple[tuple, str]] = {}
_known_lock = threading.Lock()


def _signature(root: Path, keep: SourceFilter) -> tuple | None:
    """Every member's (name, size, mtime, ctime, inode): equal signatures mean no file was written, added,
    removed or replaced in between; None when a file changed too recently for that to hold."""
    now = time.time()
    signature = []
    for rel, path in _members(root, keep):
        try:
            st = path.stat()
        except OSError:
            return None
        if now - max(st.st_mtime, st.st_ctime) < RACY_SECONDS:
            return None
        signature.append((rel, st.st_size, st.st_mtime_ns, st.st_ctime_ns, st.st_ino, st.st_dev))
    return tuple(signature)


def add_tree(store, source_dir: str | os.PathLike, excludes=(), max_mb: float = 200.0, include=()) -> str:
    """Pack a tree into ``store`` unless this process packed it already and no file of it changed since."""
    root = Path(source_dir).resolve()
    key = (str(root), tuple(excludes), tuple(include))
    signature = _signature(root, SourceFilter(excludes, include)) if root.is_dir() else None
    with _known_lock:
        known = _known_trees.get(key)
    if signature is not None and known is not None and known[0] == signature and store.has(known[1]):
        return known[1]
    digest, data = pack(root, excludes, max_mb, include)
    if store.put_new(digest, data):
        logger.info("stored source %s (%d bytes) from %s in %s", digest[:12], len(data), source_dir, store.location)
    if signature is not None:
        with _known_lock:
            _known_trees[key] = (signature, digest)
    return digest


def check_members(tar: tarfile.TarFile, max_bytes: int | None = None) -> list[tarfile.TarInfo]:
    """Reject absolute paths, ``..`` components, links and device files before anything is written, and a
    tarball whose members add up to more than ``max_bytes`` (read member by member: a gzip bomb is refused
    at the header that passes the bound, before its data is inflated)."""
    members = []
    total = 0
    for m in tar:
        members.append(m)
        total += m.size
        if max_bytes is not None and total > max_bytes:
            raise UnsafeArchiveError(
                f"source tarball unpacks to more than {max_bytes / 2**20:.0f} MiB (member {m.name!r} passes the "
                "bound): refused as a possible archive bomb; raise max_unpacked_source_mb if the tree is real")
        name = m.name
        parts = PurePosixPath(name).parts
        if name.startswith(("/", "\\")) or (len(name) > 1 and name[1] == ":"):
            raise UnsafeArchiveError(f"source tarball member {name!r} has an absolute path")
        if ".." in parts:
            raise UnsafeArchiveError(f"source tarball member {name!r} escapes the target directory via '..'")
        if m.issym() or m.islnk():
            raise UnsafeArchiveError(f"source tarball member {name!r} is a link ({m.linkname!r}); links are refused")
        if not (m.isfile() or m.isdir()):
            raise UnsafeArchiveError(f"source tarball member {name!r} is not a regular file or directory")
    return members


def safe_extract(data: bytes, target: str | os.PathLike, max_bytes: int | None = None) -> None:
    """Unpack a source tarball into ``target``; refuses unsafe members and more than ``max_bytes`` in all."""
    target = Path(target)
    target.mkdir(parents=True, exist_ok=True)
    try:
        tar = tarfile.open(fileobj=io.BytesIO(data), mode="r:*")
    except tarfile.TarError as err:
        raise UnsafeArchiveError(f"source tarball is not a readable tar archive: {err}") from None
    with tar:
        members = check_members(tar, max_bytes)
        root = target.resolve()
        for m in members:
            dest = (root / m.name).resolve()
            if root != dest and root not in dest.parents:
                raise UnsafeArchiveError(f"source tarball member {m.name!r} resolves outside {root}")
        _extract_all(tar, root, members)


def _extract_all(tar: tarfile.TarFile, root: Path, members: list[tarfile.TarInfo]) -> None:
    """Extract checked members with the "data" filter; Pythons without extraction filters (before 3.11.4 and
    3.10.12, as Debian 12's 3.11.2) get its remaining effect by hand: plain permission bits, no owners."""
    if hasattr(tarfile, "data_filter"):
        tar.extractall(root, members=members, filter="data")
        return
    for m in members:
        m.mode = (m.mode & 0o755) | (0o700 if m.isdir() else 0o600)
        m.uid = m.gid = 0
        m.uname = m.gname = ""
    tar.extractall(root, members=members, numeric_owner=True)


class Upload:
    """One tarball being received (``SourceStore.receive``): ``write`` pieces, then ``commit`` or ``discard``."""

    def __init__(self, store: SourceStore, digest: str):
        self.store = store
        self.digest = digest
        self.size = 0
        self._hash = hashlib.sha256()
        fd, tmp = tempfile.mkstemp(dir=store.path, suffix=".part")
        self._tmp: str | None = tmp
        self._file = os.fdopen(fd, "wb")

    def write(self, chunk: bytes) -> None:
        self._file.write(chunk)
        self._hash.update(chunk)
        self.size += len(chunk)

    @property
    def actual(self) -> str:
        return self._hash.hexdigest()

    def commit(self) -> bool:
        """Store it under its digest (UnsafeArchiveError if the content does not match); False if already there."""
        self._file.close()
        if self.actual != self.digest:
            self.discard()
            raise UnsafeArchiveError(f"tarball content does not match its name {self.digest}")
        dest = self.store.tarball(self.digest)
        if dest.is_file():
            self.discard()
            return False
        assert self._tmp is not None, "commit() after discard()"
        os.replace(self._tmp, dest)
        self._tmp = None
        return True

    def discard(self) -> None:
        """Drop what was received (nothing once committed)."""
        self._file.close()
        if self._tmp is not None:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(self._tmp)
            self._tmp = None


class SourceStore:
    """A directory of tarballs named ``<sha256>.tar.gz`` and their unpacked trees under ``unpacked/``."""

    def __init__(self, path: str | os.PathLike):
        self.path = Path(path).expanduser()

    @property
    def location(self) -> str:
        return str(self.path)

    def tarball(self, digest: str) -> Path:
        if not (len(digest) == 64 and all(c in "0123456789abcdef" for c in digest)):
            raise ConfigurationError(f"{digest!r} is not a sha256 hex digest")
        return self.path / f"{digest}{SUFFIX}"

    def has(self, digest: str) -> bool:
        return self.tarball(digest).is_file()

    def put(self, digest: str, data: bytes) -> bool:
        """Store a tarball; returns False (and writes nothing) when that hash is already stored."""
        if hashlib.sha256(data).hexdigest() != digest:
            raise UnsafeArchiveError(f"tarball content does not match its name {digest}")
        dest = self.tarball(digest)
        if dest.is_file():
            return False
        self.path.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=self.path, suffix=".part")
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
        os.replace(tmp, dest)
        return True

    def receive(self, digest: str) -> Upload:
        """A tarball arriving in pieces: written to a temporary file, stored once its hash is checked."""
        self.tarball(digest)
        self.path.mkdir(parents=True, exist_ok=True)
        return Upload(self, digest)

    def get(self, digest: str) -> bytes:
        path = self.tarball(digest)
        if not path.is_file():
            raise FileNotFoundError(f"source {digest} is not in the store at {self.path}")
        return path.read_bytes()

    def put_new(self, digest: str, data: bytes) -> bool:
        return self.put(digest, data)

    def add_tree(self, source_dir: str | os.PathLike, excludes=(), max_mb: float = 200.0, include=()) -> str:
        return add_tree(self, source_dir, excludes, max_mb, include)

    def unpacked(self, digest: str, fetch=None, max_bytes: int | None = None) -> Path:
        """Path of the unpacked tree, unpacking it once (atomically) if needed; at most ``max_bytes`` (default:
        the ``max_unpacked_source_mb`` setting) are written."""
        dest = self.path / "unpacked" / digest
        if dest.is_dir():
            return dest
        data = self.get(digest) if fetch is None else fetch(digest)
        if hashlib.sha256(data).hexdigest() != digest:
            raise UnsafeArchiveError(f"fetched source does not match its hash {digest}")
        dest.parent.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(dir=dest.parent, prefix=f".{digest[:12]}-"))
        try:
            if max_bytes is None:
                from .config import load_settings

                max_bytes = load_settings().unpacked_source_limit
            safe_extract(data, tmp, max_bytes)
            os.replace(tmp, dest)
        except OSError:
            if not dest.is_dir():
                raise
        finally:
            if tmp.exists():
                shutil.rmtree(tmp, ignore_errors=True)
        return dest
