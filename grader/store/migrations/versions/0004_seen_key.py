"""Each hand-in keeps the grading key it was last found under: the gradebook's result of a
student is the one of their current notebook under the key it was last graded or skipped with,
so a check put back as it was shows the grade given under it again, not the fault of the broken
check between (issue 28).

Revision ID: 0004
Revises: 0003
"""

import sqlalchemy as sa
from alembic import op

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("submissions") as batch:
        batch.add_column(sa.Column("seen_key", sa.String(64), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("submissions") as batch:
        batch.drop_column("seen_key")
