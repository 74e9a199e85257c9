"""Parse an executor spec's address: ``host:port?name=value&...`` into a location and known options."""
from __future__ import annotations

from urllib.parse import parse_qsl

from iworkflow.errors import ConfigurationError


def parse_address(executor: str, address: str | None, known: dict[str, str]) -> tuple[str, dict[str, str]]:
    """Split ``address`` at ``?``; reject option names not in ``known`` (name -> help text)."""
    location, _, query = (address or "").partition("?")
    options: dict[str, str] = {}
    for name, value in parse_qsl(query, keep_blank_values=True, strict_parsing=bool(query)):
        if name not in known:
            listing = "; ".join(f"{k}: {v}" for k, v in known.items()) or "none"
            raise ConfigurationError(f"unknown option {name!r} in executor spec '{executor}://{address}'; "
                                     f"known options: {listing}")
        options[name] = value
    return location, options


def flag(options: dict[str, str], name: str, default: bool = False) -> bool:
    """A boolean option: 1/true/yes/on or 0/false/no/off."""
    value = options.get(name)
    if value is None:
        return default
    lowered = value.strip().lower()
    if lowered in ("1", "true", "yes", "on", ""):
        return True
    if lowered in ("0", "false", "no", "off"):
        return False
    raise ConfigurationError(f"executor option {name}={value!r} must be a boolean (1/0, true/false)")


def number(options: dict[str, str], name: str, default: float) -> float:
    """A positive number option."""
    value = options.get(name)
    if value is None:
        return default
    try:
        parsed = float(value)
    except ValueError:
        parsed = -1.0
    if parsed <= 0:
        raise ConfigurationError(f"executor option {name}={value!r} must be a positive number")
    return parsed
