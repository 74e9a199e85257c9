"""Stable identifiers: job keys derived from a job's kwargs, and fresh ids."""
from __future__ import annotations

import hashlib
import json
import os
import random
from typing import Any

# Ids need uniqueness, not secrecy: a generator seeded from the OS (again in every forked child) makes
# them without a system call, which on a busy driver would also hand the GIL to another thread.
_rng = random.Random(os.urandom(32))
os.register_at_fork(after_in_child=lambda: _rng.seed(os.urandom(32)))


def _json_default(value: Any) -> Any:
    """Make numpy scalars and other simple objects hashable by value instead of failing."""
    item = getattr(value, "item", None)
    if callable(item):
        try:
            return item()
        except (TypeError, ValueError):
            pass
    if isinstance(value, (set, frozenset)):
        return sorted(value, key=repr)
    return repr(value)


_key_json = json.JSONEncoder(sort_keys=True, default=_json_default)


def get_unique_id_for_dict(d: Any) -> str:
    """SHA-1 hex of ``json.dumps(d, sort_keys=True)``: the iDDS job key of a kwargs entry."""
    return hashlib.sha1(_key_json.encode(d).encode("utf-8")).hexdigest()


#: the version (4) and variant (RFC 4122) bits of a UUID held as a 128-bit integer
_V4_CLEAR = ~((0xF000 << 64) | (0xC000 << 48))
_V4_SET = (0x4000 << 64) | (0x8000 << 48)


def new_id() -> str:
    """A random (version 4, RFC 4122 variant) UUID string."""
    h = f"{_rng.getrandbits(128) & _V4_CLEAR | _V4_SET:032x}"
    return f"{h[:8]}-{h[8:12]}-{h[12:16]}-{h[16:20]}-{h[20:]}"


def random_hex(nbytes: int) -> str:
    """``nbytes`` random bytes as hex, e.g. for message ids."""
    return f"{_rng.getrandbits(nbytes * 8):0{nbytes * 2}x}"
