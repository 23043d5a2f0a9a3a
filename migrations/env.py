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
        context.configure(connection=connection, target_metadata=Base.metadata, render_as_batch=True)
        with context.begin_transaction():
            context.run_migrations()
        connection.commit()


if context.is_offline_mode():
    run_migrations_offline()
else:
    run_migrations_online()
