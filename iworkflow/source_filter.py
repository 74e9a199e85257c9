"""Which files of a workflow's source tree ship with its jobs.

Three rules, in this order:

* our defaults (VCS folders, caches, virtualenvs) — glob patterns, at any depth;
* the user's ``exclude_source_files`` — **regular expressions, applied as iDDS applies them**:
  ``re.match`` (anchored at the start, not at the end) against the name of each top-level entry
  (file or folder) and against the base name of every file at any depth.  A pattern that is not a valid
  regular expression (``*.log``) is a glob; ``glob:`` and ``re:`` prefixes make either choice explicit;
* files that look like secrets (``.env``, ``.netrc``, ``*.pem``, ``*token*``...) never ship unless their
  relative path is listed in ``include_source_files``; what was held back is named in a WARNING.
"""
from __future__ import annotations

import fnmatch
import logging
import os
import re
from dataclasses import dataclass, field
from typing import Callable, Iterable

logger = logging.getLogger(__name__)

DEFAULT_EXCLUDES = (
    ".git", ".hg", ".svn", "__pycache__", "*.pyc", "*.pyo", ".venv", "venv", "node_modules",
    ".mypy_cache", ".pytest_cache", ".ruff_cache", ".ipynb_checkpoints", "*.egg-info", ".DS_Store",
    ".iworkflow",
)

#: base names (case-insensitive globs) of files that usually hold credentials
SECRET_FILES = (
    ".env", ".env.*", "*.env", ".envrc", ".netrc", "_netrc", ".pgpass", ".pypirc", ".npmrc", ".git-credentials",
    ".htpasswd", ".dockercfg", "*.pem", "*.key", "*.p12", "*.pfx", "*.jks", "*.keystore", "*.kdbx", "*.ovpn",
    "id_rsa*", "id_dsa*", "id_ecdsa*", "id_ed25519*", "x509up_u*",
)
#: words in a base name that usually mean a credential file -- except in Python modules (``tokenizer.py``,
#: ``secrets_manager.py``): code the jobs import must ship, or they fail on the worker
SECRET_WORDS = ("*token*", "*secret*", "*credential*", "*password*", "*passwd*")
CODE_SUFFIXES = (".py", ".pyi", ".pyx", ".pxd")
#: folder names (case-insensitive) that hold credentials as a whole
SECRET_DIRS = (".ssh", ".gnupg", ".aws", ".azure", ".kube", ".docker", ".gcloud")

_GLOB_PREFIX, _REGEX_PREFIX = "glob:", "re:"
_SECRET_FILE = re.compile("|".join(fnmatch.translate(p) for p in SECRET_FILES))
_SECRET_WORD = re.compile("|".join(fnmatch.translate(p) for p in SECRET_WORDS))
_DEFAULT = re.compile("|".join(fnmatch.translate(os.path.normcase(p)) for p in DEFAULT_EXCLUDES))


def looks_secret(name: str, is_dir: bool = False) -> bool:
    """True for a file or folder name that usually holds credentials."""
    lowered = name.lower()
    if is_dir:
        return lowered in SECRET_DIRS
    if _SECRET_FILE.match(lowered) is not None:
        return True
    return not lowered.endswith(CODE_SUFFIXES) and _SECRET_WORD.match(lowered) is not None


@dataclass
class _Pattern:
    text: str
    is_regex: bool
    test: Callable[[str], bool]
    hits: int = 0


def _compile(pattern: str) -> _Pattern:
    """An iDDS exclude pattern: a regular expression unless it is no valid one (then a glob) or says ``glob:``."""
    if not isinstance(pattern, str) or not pattern:
        from .errors import ConfigurationError

        raise ConfigurationError(f"exclude_source_files entries must be non-empty strings, got {pattern!r}")
    if pattern.startswith(_GLOB_PREFIX):
        glob = pattern[len(_GLOB_PREFIX):]
        return _Pattern(pattern, False, lambda s: fnmatch.fnmatchcase(s, glob))
    source = pattern[len(_REGEX_PREFIX):] if pattern.startswith(_REGEX_PREFIX) else pattern
    try:
        regex = re.compile(source)
    except re.error:
        if pattern.startswith(_REGEX_PREFIX):
            from .errors import ConfigurationError

            raise ConfigurationError(f"exclude_source_files pattern {pattern!r} is not a valid regular expression")
        logger.debug("exclude_source_files pattern %r is no regular expression: used as a glob", pattern)
        return _Pattern(pattern, False, lambda s: fnmatch.fnmatchcase(s, pattern))
    return _Pattern(pattern, True, lambda s: regex.match(s) is not None)


def _glob_like(pattern: str) -> bool:
    """A valid regular expression that was probably meant as a glob (``data/*.csv``, ``*.log`` inside a path)."""
    return "*" in pattern and not any(token in pattern for token in (".*", ".+", "\\", "(", "[", "^", "$"))


@dataclass
class SourceFilter:
    """Decides, entry by entry during one walk of a source tree, what is left out; then reports it."""

    patterns: Iterable[str] = ()
    include: Iterable[str] = ()
    skipped_secrets: list[str] = field(default_factory=list)

    def __post_init__(self) -> None:
        if isinstance(self.patterns, str):
            self.patterns = [self.patterns]
        if isinstance(self.include, str):
            self.include = [self.include]
        self._user = [_compile(p) for p in self.patterns]
        self._include = {p.strip("/").replace("\\", "/") for p in self.include}

    def _listed(self, rel: str) -> bool:
        """Named in ``include_source_files``: the path itself or one of its folders."""
        if not self._include:
            return False
        parts = rel.split("/")
        return any("/".join(parts[: i + 1]) in self._include for i in range(len(parts)))

    def _secret(self, rel: str, name: str, is_dir: bool) -> bool:
        """Held back as a secret: a secret-looking name, or anything in a secret folder, unless listed."""
        if self._listed(rel):
            return False
        if is_dir:
            # a secret folder is walked only for the paths listed beneath it
            return looks_secret(name, True) and not any(p.startswith(rel + "/") for p in self._include)
        return looks_secret(name) or ("/" in rel and any(p.lower() in SECRET_DIRS for p in rel.split("/")[:-1]))

    def _user_excludes(self, rel: str, name: str, is_dir: bool) -> bool:
        top_level = "/" not in rel
        for p in self._user:
            if p.is_regex:
                # iDDS: re.match against top-level names and against the base names of files
                hit = (top_level or not is_dir) and p.test(name)
            else:
                hit = p.test(name) or p.test(rel)
            if hit:
                p.hits += 1
                return True
        return False

    def excludes(self, rel: str, name: str, is_dir: bool) -> bool:
        """Whether the entry at ``rel`` (posix, relative to the source root) is left out."""
        if _DEFAULT.match(os.path.normcase(name)) or _DEFAULT.match(os.path.normcase(rel)):
            return True
        if self._user_excludes(rel, name, is_dir):
            return True
        if self._secret(rel, name, is_dir):
            self.skipped_secrets.append(rel + ("/" if is_dir else ""))
            return True
        return False

    def report(self, root: str) -> None:
        """Warn about the secrets held back and about glob-like patterns that, read as iDDS regexes, hit nothing."""
        if self.skipped_secrets:
            shown = ", ".join(self.skipped_secrets[:20]) + (" ..." if len(self.skipped_secrets) > 20 else "")
            logger.warning(
                "source tree %s: %d file(s) that look like secrets were NOT shipped with the jobs: %s "
                "(to ship one on purpose, list its relative path in include_source_files=[...])",
                root, len(self.skipped_secrets), shown)
        for p in self._user:
            if p.is_regex and p.hits == 0 and _glob_like(p.text):
                logger.warning(
                    "exclude_source_files pattern %r excluded nothing in %s: as in iDDS, patterns are regular "
                    "expressions matched (re.match) against file names; for a glob write 'glob:%s'",
                    p.text, root, p.text)
