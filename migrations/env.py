"""Alembic environment: the URL comes from the caller (core.db.migrate) or LORABAKE_* settings."""

from alembic import context

from core.db import engine_for
from core.models import Base

config = context.config


def _url() -> str:
    url = config.attributes.get("url")
    if url:
        return url
    from core.settings import get_settings

    return get_settings().db_url


def run_migrations_offline() -> None:
    context.configure(url=_url(), target_metadata=Base.metadata, literal_binds=True, render_as_batch=True)
    with context.begin_transaction():
        context.run_migrations()


def run_migrations_online() -> None:
    with engine_for(_url()).connect() as connection:
        sqlite = connection.dialect.name == "sqlite"
        if sqlite:
            # SQLite changes a table's constraints by copying it and dropping the old one; with foreign keys on,
            # that drop would cascade into every table that refers to it (users → datasets, tokens, jobs …). The
            # pragma only works outside a transaction, hence before it.
            connection.exec_driver_sql("PRAGMA foreign_keys=OFF")
        try:
            context.configure(connection=connection, target_metadata=Base.metadata, render_as_batch=True)
            with context.begin_transaction():
                context.run_migrations()
            connection.commit()
        finally:
            if sqlite:  # the pooled connection goes back as the app expects it
                connection.rollback()
                connection.exec_driver_sql("PRAGMA foreign_keys=ON")


if context.is_offline_mode():
    run_migrations_offline()
else:
    run_migrations_online()
