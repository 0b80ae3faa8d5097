"""Alembic's environment for the gradebook: the migrations run on the connection, and in the
transaction, that grader.store.migrations.upgrade hands over in config.attributes."""

from alembic import context

context.configure(connection=context.config.attributes["connection"], render_as_batch=True)
with context.begin_transaction():
    context.run_migrations()
