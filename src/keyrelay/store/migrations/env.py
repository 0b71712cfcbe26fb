"""Alembic environment: keyrelay hands it an open connection (see store/engine.py `upgrade`)."""

from __future__ import annotations

from alembic import context

from keyrelay.store.tables import metadata

connection = context.config.attributes["connection"]
context.configure(connection=connection, target_metadata=metadata, render_as_batch=True)
with context.begin_transaction():
    context.run_migrations()
