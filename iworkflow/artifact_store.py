"""Artifact bytes, content-addressed: a directory of blobs named by their SHA-256, written and read in chunks.

An object is kept as its cloudpickle, a file as-is, a directory as a deterministic tar (sorted members,
zeroed times and owners), so equal content is stored once.  Every read checks the digest: a blob changed on
disk is reported as corrupted, never handed back.
"""
from __future__ import annotations

import hashlib
import io
import logging
import os
import shutil
import stat
import tarfile
import tempfile
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import BinaryIO

from .errors import ConfigurationError, IWorkflowError
from .source_cache import check_members

logger = logging.getLogger(__name__)

CHUNK = 1 << 20


class ArtifactCorrupted(IWorkflowError):
    """A stored artifact's bytes no longer match the digest they were saved under."""


def check_digest(digest: str) -> str:
    if not (isinstance(digest, str) and len(digest) == 64 and all(c in "0123456789abcdef" for c in digest)):
        raise ConfigurationError(f"{digest!r} is not a sha256 hex digest (64 lower-case hex characters)")
    return digest


class PartialBlob(io.RawIOBase):
    """A blob being written to a temporary file, hashed as it goes; ``commit`` names it by its digest."""

    def __init__(self, store: BlobStore, out: BinaryIO, tmp: str):
        self.store = store
        self.out = out
        self.tmp = tmp
        self.sha = hashlib.sha256()
        self.size = 0

    def writable(self) -> bool:
        return True

    def write(self, data) -> int:  # type: ignore[override]
        self.sha.update(data)
        self.size += len(data)
        self.out.write(data)
        return len(data)

    def abort(self) -> None:
        self.out.close()
        if os.path.exists(self.tmp):
            os.unlink(self.tmp)

    def commit(self, expected: str | None = None, source: str = "") -> tuple[str, int]:
        """Move the bytes to ``<root>/<aa>/<digest>``; with ``expected``, other bytes are refused as corrupted."""
        self.out.close()
        digest = self.sha.hexdigest()
        if expected is not None and digest != expected:
            os.unlink(self.tmp)
            raise ArtifactCorrupted(corrupted_message(expected, source, digest))
        dest = self.store.path(digest)
        dest.parent.mkdir(parents=True, exist_ok=True)
        if dest.is_file():
            os.unlink(self.tmp)  # equal content is already there
        else:
            os.chmod(self.tmp, 0o444)
            os.replace(self.tmp, dest)
        return digest, self.size


class BlobStore:
    """``<root>/<aa>/<sha256>`` files, each written once through a temporary file and an atomic rename."""

    def __init__(self, root: str | os.PathLike):
        self.root = Path(root).expanduser()

    def path(self, digest: str) -> Path:
        return self.root / check_digest(digest)[:2] / digest

    def has(self, digest: str) -> bool:
        return self.path(digest).is_file()

    def begin(self) -> PartialBlob:
        """A blob being written: ``write`` chunks, then ``commit`` (or ``abort``)."""
        self.root.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=self.root, prefix=".part-")
        return PartialBlob(self, os.fdopen(fd, "wb"), tmp)

    def put_chunks(self, chunks: Iterable[bytes], expected: str | None = None, source: str = "") -> tuple[str, int]:
        """Store the concatenated ``chunks``; returns (digest, size).  With ``expected``, other bytes are refused
        as corrupted (``source`` says where they came from)."""
        part = self.begin()
        try:
            for chunk in chunks:
                part.write(chunk)
        except BaseException:
            part.abort()
            raise
        return part.commit(expected, source)

    def put_file(self, path: Path) -> tuple[str, int]:
        with path.open("rb") as fh:
            return self.put_chunks(iter(lambda: fh.read(CHUNK), b""))

    def put_directory(self, root: Path) -> tuple[str, int]:
        """Store a directory as a deterministic tar, streamed into the store."""
        part = self.begin()
        try:
            write_tar(root, part)
        except BaseException:
            part.abort()
            raise
        return part.commit()

    def chunks(self, digest: str) -> Iterator[bytes]:
        """The blob's bytes in chunks; raises ArtifactCorrupted after the last chunk if they do not match."""
        path = self.path(digest)
        if not path.is_file():
            raise FileNotFoundError(f"artifact blob {digest} is not in the store at {self.root}")
        sha = hashlib.sha256()
        with path.open("rb") as fh:
            while chunk := fh.read(CHUNK):
                sha.update(chunk)
                yield chunk
        if sha.hexdigest() != digest:
            raise ArtifactCorrupted(corrupted_message(digest, str(path), sha.hexdigest()))


def corrupted_message(digest: str, where: str, actual: str) -> str:
    return (f"artifact blob {digest} from {where} is corrupted: its bytes hash to {actual}. The copy was changed "
            "or damaged after it was saved; restore the stored blob from a backup, or save the artifact again")


def write_tar(root: Path, out: BinaryIO) -> None:
    """A directory's regular files as an uncompressed tar with sorted members and no times or owners; links
    and special files are refused (an artifact holds content only)."""
    root = root.resolve()
    with tarfile.open(fileobj=out, mode="w|", format=tarfile.PAX_FORMAT) as tar:
        for dirpath, dirnames, filenames in os.walk(root):
            dirnames.sort()
            for name in sorted(dirnames + filenames):
                path = Path(dirpath, name)
                rel = path.relative_to(root).as_posix()
                st = path.lstat()
                if stat.S_ISLNK(st.st_mode):
                    raise ConfigurationError(f"{path} is a symbolic link: an artifact directory may hold only files "
                                             "and folders; copy the target in instead")
                info = tarfile.TarInfo(rel)
                info.mtime = 0
                if stat.S_ISDIR(st.st_mode):
                    info.type = tarfile.DIRTYPE
                    info.mode = 0o755
                    tar.addfile(info)
                elif stat.S_ISREG(st.st_mode):
                    info.size = st.st_size
                    info.mode = 0o755 if st.st_mode & stat.S_IXUSR else 0o644
                    with path.open("rb") as fh:
                        tar.addfile(info, fh)
                else:
                    raise ConfigurationError(f"{path} is not a regular file or folder; it cannot be part of an "
                                             "artifact")


def extract_tar(tar_path: Path, target: Path) -> None:
    """Unpack a stored directory artifact, refusing members that could escape ``target``."""
    with tarfile.open(tar_path, mode="r:") as tar:
        members = check_members(tar)
        target.mkdir(parents=True, exist_ok=True)
        if hasattr(tarfile, "data_filter"):
            tar.extractall(target, members=members, filter="data")
        else:
            tar.extractall(target, members=members, numeric_owner=True)


def materialize(chunks: Iterable[bytes], kind: str, filename: str, digest: str, dest: Path) -> Path:
    """Write a file or directory artifact to ``dest`` (a new path) from its verified chunks: the bytes go to
    a temporary file first, so a corrupted blob leaves nothing behind."""
    dest = dest.expanduser()
    if dest.exists():
        raise FileExistsError(f"{dest} already exists: choose a new path, or remove it first")
    dest.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=dest.parent, prefix=f".{digest[:12]}-")
    try:
        with os.fdopen(fd, "wb") as fh:
            for chunk in chunks:
                fh.write(chunk)
        if kind == "directory":
            work = Path(tempfile.mkdtemp(dir=dest.parent, prefix=f".{digest[:12]}-"))
            try:
                extract_tar(Path(tmp), work)
                os.replace(work, dest)
            finally:
                shutil.rmtree(work, ignore_errors=True)
        else:
            os.chmod(tmp, 0o644)
            os.replace(tmp, dest)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
    logger.debug("artifact %s (%s) written to %s", digest[:12], filename, dest)
    return dest
