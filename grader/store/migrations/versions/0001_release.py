"""The gradebook of the last grader before migrations: students, submissions, grading runs,
check results and the staff's overrides (grader/migrations/release1.py).

Revision ID: 0001
"""

from alembic import op

from grader.store.migrations import release1

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None


def upgrade() -> None:
    release1.metadata.create_all(op.get_bind())


def downgrade() -> None:
    release1.metadata.drop_all(op.get_bind())
