"""Database engine and sessions; the schema is brought to the latest Alembic revision on start."""
from __future__ import annotations

import logging
from pathlib import Path

from sqlalchemy import Engine, create_engine, event
from sqlalchemy.engine import make_url
from sqlalchemy.exc import ArgumentError, NoSuchModuleError, OperationalError
from sqlalchemy.orm import Session, sessionmaker

from iworkflow.config import redact_url
from iworkflow.errors import ConfigurationError

logger = logging.getLogger(__name__)

MIGRATIONS = Path(__file__).with_name("migrations")


def make_engine(url: str) -> Engine:
    """An engine for ``url``; SQLite gets WAL mode and a busy timeout so readers never block the recorder."""
    try:
        parsed = make_url(url)
    except ArgumentError:
        raise ConfigurationError(
            f"database URL {redact_url(url)!r} is not a SQLAlchemy URL; use sqlite:///path/to/iworkflow.db "
            "or postgresql+psycopg://user@host:5432/dbname"
        ) from None
    kwargs: dict = {"pool_pre_ping": True}
    if parsed.get_backend_name() == "sqlite":
        if parsed.database and parsed.database != ":memory:":
            Path(parsed.database).expanduser().parent.mkdir(parents=True, exist_ok=True)
        kwargs["connect_args"] = {"check_same_thread": False, "timeout": 30}
    try:
        engine = create_engine(parsed, **kwargs)
    except NoSuchModuleError:
        raise ConfigurationError(
            f"database URL {redact_url(url)!r} names an unknown driver; use sqlite:/// or postgresql+psycopg://"
        ) from None
    except ImportError as err:
        raise ConfigurationError(
            f"database URL {redact_url(url)!r} needs {err.name}: pip install 'iworkflow[server]'"
        ) from None
    if engine.dialect.name == "sqlite":
        event.listen(engine, "connect", _sqlite_pragmas)
    return engine


def _sqlite_pragmas(dbapi_conn, _record) -> None:
    cur = dbapi_conn.cursor()
    cur.execute("PRAGMA journal_mode=WAL")
    cur.execute("PRAGMA busy_timeout=30000")
    cur.execute("PRAGMA foreign_keys=ON")
    cur.close()


def upgrade(engine: Engine, revision: str = "head") -> None:
    """Apply the Alembic migrations up to ``revision`` on this engine's database."""
    from alembic import command
    from alembic.config import Config

    cfg = Config()
    cfg.set_main_option("script_location", str(MIGRATIONS))
    with engine.begin() as conn:
        cfg.attributes["connection"] = conn
        command.upgrade(cfg, revision)
    logger.info("database %s is at revision %s", redact_url(engine.url.render_as_string(hide_password=True)),
                revision)


def _unusable(engine: Engine, err: OperationalError) -> str:
    """Why the database cannot be used, in one line, with the command that fixes it when there is one."""
    url = engine.url
    shown = redact_url(url.render_as_string(hide_password=True))
    reason = str(err.orig or err).strip().splitlines()
    detail = next((line for line in reason if "FATAL" in line or "error" in line.lower()), reason[0] if reason else "")
    detail = detail.split("FATAL:", 1)[-1].strip()
    if engine.dialect.name == "postgresql" and "does not exist" in detail and url.database:
        where = f"-h {url.host or 'localhost'} -p {url.port or 5432}" + (f" -U {url.username}" if url.username else "")
        return (f"database {url.database!r} does not exist on the PostgreSQL server of {shown}: create it first "
                f"with `createdb {where} {url.database}`, then start the server again")
    return f"cannot use the database {shown}: {detail}"


class Database:
    """The engine plus a session factory; ``Database(url)`` migrates the schema before first use."""

    def __init__(self, url: str, migrate: bool = True):
        self.url = url
        self.engine = make_engine(url)
        if migrate:
            try:
                upgrade(self.engine)
            except OperationalError as err:
                self.engine.dispose()
                raise ConfigurationError(_unusable(self.engine, err)) from None
        self.sessions = sessionmaker(self.engine, expire_on_commit=False)

    def session(self) -> Session:
        return self.sessions()

    def dispose(self) -> None:
        self.engine.dispose()
