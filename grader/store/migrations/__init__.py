"""The gradebook's schema migrations (Alembic), run whenever a gradebook is opened.

Revision 0001 is the schema of the last grader before migrations (release1.py); each later
revision is a script in versions/. A new gradebook is made at the newest revision; one made
before migrations (no alembic_version table) is brought to revision 0001 and stamped, then
upgraded; one at a revision this grader does not know (made by a newer grader) is refused.

Alembic is imported only where a gradebook must be upgraded (or its revision is not HEAD): a
gradebook at HEAD is opened with one query, and every command starts 0.15 s sooner.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from sqlalchemy import Connection, inspect, text

from grader.model.errors import GradebookError
from grader.store.migrations import release1

if TYPE_CHECKING:
    from alembic.config import Config

FOLDER = Path(__file__).resolve().parent
RELEASE1 = "0001"  # the schema of the last grader before migrations
# The newest revision, the last script's in versions/ (a test holds it to Alembic's own head):
# bump it with each new script.
HEAD = "0004"
VERSION_TABLE = "alembic_version"  # Alembic's default, which env.py keeps
_LOCK = 0x6772616465  # PostgreSQL advisory lock of the migrations: one grader at a time


def config(connection: Connection | None = None) -> Config:
    """Alembic's configuration: the scripts in this package, run on CONNECTION."""
    from alembic.config import Config

    settings = Config(attributes={"connection": connection})
    settings.set_main_option("script_location", str(FOLDER).replace("%", "%%"))
    settings.set_main_option("path_separator", "os")
    return settings


def head() -> str:
    """The newest revision this grader knows."""
    return HEAD


def script_head() -> str | None:
    """The newest revision of the scripts in versions/, as Alembic reads them."""
    from alembic.script import ScriptDirectory

    return ScriptDirectory.from_config(config()).get_current_head()


def current(connection: Connection) -> str | None:
    """The revision of the gradebook on CONNECTION (None: before migrations, or empty), read
    from Alembic's version table as Alembic reads it."""
    if not inspect(connection).has_table(VERSION_TABLE):
        return None
    rows = connection.execute(text(f"SELECT version_num FROM {VERSION_TABLE}")).scalars().all()
    if len(rows) > 1:
        raise GradebookError(f"it is at several schema revisions at once ({', '.join(sorted(rows))})")
    return rows[0] if rows else None


def upgrade(connection: Connection) -> None:
    """Bring the gradebook on CONNECTION, in its transaction, to the newest revision; a
    GradebookError if a newer grader made it."""
    from alembic import command

    if connection.dialect.name == "postgresql":  # two graders opening one new gradebook at once
        connection.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": _LOCK})
    settings = config(connection)
    found = current(connection)
    if found is None and inspect(connection).has_table("students"):
        release1.complete(connection)
        command.stamp(settings, RELEASE1)
    elif found is not None:
        _known(settings, found)
    if found != head():
        command.upgrade(settings, "head")


def _known(settings: Config, revision: str) -> None:
    """Refuse a gradebook at REVISION where this grader does not know it."""
    from alembic.script import ScriptDirectory
    from alembic.script.revision import RevisionError
    from alembic.util import CommandError

    try:
        ScriptDirectory.from_config(settings).get_revision(revision)
    except (CommandError, RevisionError):
        raise GradebookError(
            f"it is at schema revision {revision}, which this grader does not know (it knows up "
            f"to {head()}): a newer grader made it; upgrade the grader to open it"
        ) from None
