"""A PostgreSQL schema private to one test, so parallel runs on the shared database never collide."""
from __future__ import annotations

import contextlib
import os
import uuid
from collections.abc import Iterator

PG_URL = os.environ.get("IWORKFLOW_TEST_PG", "postgresql+psycopg://postgres@127.0.0.1:5432/test")


@contextlib.contextmanager
def private_schema(prefix: str = "iwf_test") -> Iterator[str]:
    """Create a schema, yield a URL whose connections use it, drop it afterwards.

    Connections made through the URL carry the schema as ``application_name``, so the teardown can end any
    that are still open (a server not yet stopped) instead of deadlocking against their writes."""
    import sqlalchemy as sa

    schema = f"{prefix}_{uuid.uuid4().hex[:12]}"
    admin = sa.create_engine(PG_URL)
    with admin.begin() as conn:
        conn.execute(sa.text(f'CREATE SCHEMA "{schema}"'))
    try:
        yield f"{PG_URL}?application_name={schema}&options=-csearch_path%3D{schema}"
    finally:
        with admin.begin() as conn:
            conn.execute(sa.text("SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                                 "WHERE application_name = :name AND pid <> pg_backend_pid()"), {"name": schema})
            conn.execute(sa.text(f'DROP SCHEMA "{schema}" CASCADE'))
        admin.dispose()
