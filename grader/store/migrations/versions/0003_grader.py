"""Each run keeps the grader that graded it (version and grading code): a new grader regrades
only when asked (`grader run --regrade-new-grader`), and staff see which graded each result.

Revision ID: 0003
Revises: 0002
"""

import sqlalchemy as sa
from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("grading_runs") as batch:
        batch.add_column(sa.Column("grader", sa.String(100), nullable=False, server_default=""))


def downgrade() -> None:
    with op.batch_alter_table("grading_runs") as batch:
        batch.drop_column("grader")
