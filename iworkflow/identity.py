"""Call identity: a digest of everything that decides a job's result, the only thing reuse may trust.

The iDDS job key (``ids.get_unique_id_for_dict``) names a job inside its work for ``get_result(args=...)``
and covers only the fan-out entry.  A call identity covers what the job receives: the function as shipped
(its cloudpickle bytes, closures and referenced globals included), the digest of the source tree it runs
with, its ``init_env`` prefix and container, and every argument as the exact pickled bytes the job gets
(positional, keyword, ``pre_kwargs`` and the fan-out entry merged).  Two jobs with equal identities
therefore receive byte-identical inputs; only hidden state (randomness, clocks, files) can still tell
them apart, which is why reuse is opt-in (``cache=True``) or an explicit resume.
"""
from __future__ import annotations

import hashlib
import json
from typing import Any

_VERSION = b"iworkflow-call-identity-v1"


def work_identity(func_digest: str, source_digest: str | None, init_env: str | None = None,
                  container_options: Any = None) -> bytes:
    """The part shared by every job of a work: function bytes' digest, source tree, environment."""
    container = json.dumps(container_options, sort_keys=True, default=repr) if container_options else ""
    h = hashlib.sha256(_VERSION)
    for part in (func_digest, source_digest or "", init_env or "", container):
        data = part.encode()
        h.update(len(data).to_bytes(8, "big"))
        h.update(data)
    return h.digest()


def call_identity(work: bytes, args: bytes) -> str:
    """One job's identity: its work's identity and the pickled ``(args, kwargs)`` the job receives."""
    return hashlib.sha256(work + args).hexdigest()  # ``work`` is a fixed 32 bytes: the split is unambiguous


def occurrence_key(identity: str, index: int) -> str:
    """The ``index``-th call of one identity in a run (0 for the first): a resume matches calls one to one,
    so a loop of identical calls to a random function gets back each of its own values, never one of them
    many times."""
    return identity if index == 0 else f"{identity}#{index}"
