"""One settings object: environment ``IWORKFLOW_*`` over a TOML file over defaults."""
from __future__ import annotations

import logging
import os
import secrets as _secrets
from dataclasses import dataclass, field, fields, replace
from pathlib import Path
from typing import Any

try:
    import tomllib
except ModuleNotFoundError:  # Python 3.10
    import tomli as tomllib  # type: ignore[no-redef]

from .errors import ConfigurationError

logger = logging.getLogger(__name__)

CONFIG_FILES = ("iworkflow.toml", "~/.config/iworkflow/config.toml")


def _default_home() -> str:
    return str(Path(os.environ.get("IWORKFLOW_HOME", "~/.iworkflow")).expanduser())


@dataclass(frozen=True)
class Settings:
    """Where jobs go, where results come back, and how long anyone waits."""

    broker: str = "memory://"
    #: the broker password, when the ``broker`` URL names only the user (env ``IWORKFLOW_BROKER_PASSWORD``), or
    #: a file holding it: either keeps it off command lines, where ``ps`` shows it to every user
    broker_password: str = ""
    broker_password_file: str = ""
    executor: str = "local"
    queue: str = "default"
    slots: int = 0
    db: str = ""
    secret: str = ""
    home: str = field(default_factory=_default_home)
    source_store: str = ""
    server_url: str = ""
    token: str = ""
    destination_prefix: str = "iworkflow."
    result_timeout: float = 0.0
    heartbeat_interval: float = 5.0
    heartbeat_timeout: float = 30.0
    max_attempt: int = 5
    max_source_mb: float = 200.0
    events: str = "auto"
    #: "on": every work memoizes its results across runs by call identity (as ``@work(cache=True)``)
    cache: str = "off"
    #: "last" (or a run id): this run reuses the results of the last run of the same driver where a call
    #: matches one of its calls exactly; "" runs everything
    resume: str = ""
    #: how many recent runs of each driver keep their results for a resume (0: record none)
    resume_runs: int = 5
    #: events kept for an absent server (its durable ``events`` queue): at most this many, this many seconds
    event_backlog_max: int = 500_000
    event_backlog_ttl: float = 86400.0
    #: job results larger than this go to the result store; the message carries a reference
    result_inline_max_mb: float = 1.0
    #: how long a worker (or driver) waits for the next part of a source tree (or large result) it fetches over
    #: the broker from the process that holds it, before it gives up saying so
    blob_fetch_timeout: float = 30.0
    #: "auto": large fan-outs of a function measured to be short travel in bundles; "off": one job per message
    bundles: str = "auto"
    #: RabbitMQ job queues: "classic" (lowest latency; iworkflow counts lost deliveries) or "quorum"
    #: (replicated over a RabbitMQ cluster; the broker counts deliveries)
    job_queue_type: str = "classic"
    log_level: str = "WARNING"
    #: the driver's progress bars while it waits: "auto" (on a terminal only), "on" or "off"
    progress: str = "auto"
    #: a worker refuses a job message signed longer ago than this (seconds), allowing ``clock_skew`` between
    #: machines: a captured message cannot be replayed later (the job fails, saying so)
    job_max_age: float = 6 * 3600.0
    clock_skew: float = 300.0
    #: a source tarball may unpack to at most this many MiB (0: ten times ``max_source_mb``)
    max_unpacked_source_mb: float = 0.0
    #: the dead-letter queue keeps at most this many messages (oldest dropped first), each this many seconds
    dlq_max_length: int = 100_000
    dlq_ttl: float = 7 * 86400.0

    @property
    def effective_slots(self) -> int:
        return self.slots if self.slots > 0 else (os.cpu_count() or 1)

    def broker_url_for(self, url: str) -> str:
        """``url`` with the configured broker password filled in (when it names a user but no password)."""
        password = self.broker_password
        if self.broker_password_file:
            path = Path(self.broker_password_file).expanduser()
            try:
                password = path.read_text().strip("\r\n")
            except OSError as err:
                raise ConfigurationError(f"cannot read the broker password file {path}: {err.strerror or err}") from None
        if not password:
            return url
        return with_password(url, password)

    @property
    def unpacked_source_limit(self) -> int:
        """Bytes a source tarball may unpack to (a gzip bomb is refused before it fills the disk)."""
        mb = self.max_unpacked_source_mb if self.max_unpacked_source_mb > 0 else 10 * self.max_source_mb
        return int(mb * 2**20)

    @property
    def store_path(self) -> Path:
        return Path(self.source_store or os.path.join(self.home, "store")).expanduser()

    @property
    def database_url(self) -> str:
        return self.db or f"sqlite:///{os.path.join(self.home, 'iworkflow.db')}"

    @property
    def secret_bytes(self) -> bytes:
        return self.secret.encode()

    @property
    def is_embedded(self) -> bool:
        return self.broker.startswith("memory:")

    @property
    def emits_events(self) -> bool:
        """Lifecycle events go out when someone may record them: a broker, a server, or events="on"."""
        return self.events == "on" or (self.events == "auto" and (not self.is_embedded or bool(self.server_url)))

    @property
    def cache_enabled(self) -> bool:
        value = self.cache.strip().lower()
        if value in ("on", "1", "true", "yes"):
            return True
        if value in ("off", "0", "false", "no", ""):
            return False
        raise ConfigurationError(f"setting cache={self.cache!r} must be 'on' or 'off' (IWORKFLOW_CACHE)")

    @property
    def bundles_enabled(self) -> bool:
        return self.bundles.lower() not in ("off", "0", "false", "no")

    def with_(self, **changes: Any) -> "Settings":
        return replace(self, **changes)


_FIELD_TYPES = {f.name: f.type for f in fields(Settings)}


def _coerce(name: str, value: Any) -> Any:
    kind = _FIELD_TYPES[name]
    try:
        if kind == "int":
            return int(value)
        if kind == "float":
            return float(value)
        return str(value)
    except (TypeError, ValueError):
        raise ConfigurationError(f"setting {name!r} must be {kind}, got {value!r}") from None


def _read_toml(path: Path) -> dict[str, Any]:
    try:
        with path.open("rb") as fh:
            data = tomllib.load(fh)
    except tomllib.TOMLDecodeError as err:
        raise ConfigurationError(f"cannot parse {path}: {err}") from None
    section = data.get("iworkflow", data)
    unknown = set(section) - set(_FIELD_TYPES)
    if unknown:
        raise ConfigurationError(
            f"unknown setting(s) {sorted(unknown)} in {path}; known: {sorted(_FIELD_TYPES)}"
        )
    return section


def load_settings(config_file: str | os.PathLike | None = None, **overrides: Any) -> Settings:
    """Defaults, then the first TOML file found, then ``IWORKFLOW_*`` env vars, then explicit overrides."""
    values: dict[str, Any] = {}
    candidates = [config_file] if config_file else [os.environ.get("IWORKFLOW_CONFIG"), *CONFIG_FILES]
    for candidate in candidates:
        if candidate:
            path = Path(candidate).expanduser()
            if path.is_file():
                values.update(_read_toml(path))
                break
            if config_file:
                raise ConfigurationError(f"config file {path} does not exist")
    for name in _FIELD_TYPES:
        env = os.environ.get(f"IWORKFLOW_{name.upper()}")
        if env is not None and env != "":
            values[name] = env
    for name, value in overrides.items():
        if name not in _FIELD_TYPES:
            raise ConfigurationError(f"unknown setting {name!r}; known: {sorted(_FIELD_TYPES)}")
        if value is not None:
            values[name] = value
    settings = Settings(**{k: _coerce(k, v) for k, v in values.items()})
    if not settings.secret:
        if not settings.is_embedded:
            logger.warning(
                "IWORKFLOW_SECRET is not set while using broker %s: messages are signed with a random "
                "per-process key, so remote workers will reject them; set the same IWORKFLOW_SECRET "
                "on drivers and workers",
                redact_url(settings.broker),
            )
        settings = settings.with_(secret=_process_secret())
    return settings


_PROCESS_SECRET = ""


def _process_secret() -> str:
    """A random key for the embedded default; child processes inherit it through IWORKFLOW_SECRET."""
    global _PROCESS_SECRET
    if not _PROCESS_SECRET:
        _PROCESS_SECRET = _secrets.token_hex(32)
    return _PROCESS_SECRET


def has_password(url: str) -> bool:
    """Whether a URL carries a password (``scheme://user:password@host``)."""
    from urllib.parse import urlsplit

    try:
        return urlsplit(url).password is not None
    except ValueError:
        return False


def with_password(url: str, password: str) -> str:
    """``url`` with ``password`` for its user; a URL that already has one, or names no user, is refused."""
    from urllib.parse import quote, urlsplit, urlunsplit

    parts = urlsplit(url)
    if parts.password is not None:
        raise ConfigurationError(f"broker URL {redact_url(url)!r} already has a password; give it in one place only")
    if not parts.username:
        raise ConfigurationError(f"broker URL {redact_url(url)!r} names no user for the broker password: "
                                 "write it as scheme://USER@host:port/")
    host = parts.netloc.rsplit("@", 1)[1]
    netloc = f"{parts.username}:{quote(password, safe='')}@{host}"
    return urlunsplit(parts._replace(netloc=netloc))


def redact_url(url: str) -> str:
    """Hide the password of a broker or database URL before it reaches a log or an error message."""
    from urllib.parse import urlsplit, urlunsplit

    try:
        parts = urlsplit(url)
    except ValueError:
        return "<unparseable url>"
    if parts.password is None:
        return url
    netloc = parts.netloc.replace(f":{parts.password}@", ":***@", 1)
    return urlunsplit(parts._replace(netloc=netloc))
