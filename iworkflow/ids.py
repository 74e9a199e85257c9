"""Stable identifiers: job keys derived from a job's kwargs, and fresh ids."""
from __future__ import annotations

import hashlib
import json
import uuid
from typing import Any


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


def get_unique_id_for_dict(d: Any) -> str:
    """SHA-1 hex of ``json.dumps(d, sort_keys=True)``: the iDDS job key of a kwargs entry."""
    text = json.dumps(d, sort_keys=True, default=_json_default)
    return hashlib.sha1(text.encode("utf-8")).hexdigest()


def new_id() -> str:
    return str(uuid.uuid4())
