"""Claims: which grader process grades a submission now, so that two `grader run` at once on one
gradebook grade it once (Gradebook.claim).

Revision ID: 0002
Revises: 0001
"""

import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "claims",
        sa.Column("id", sa.Integer, primary_key=True),
        sa.Column("assignment", sa.String(100), nullable=False),
        sa.Column("student", sa.String(200), nullable=False),
        sa.Column("notebook_sha256", sa.String(64), nullable=False),
        sa.Column("grading_key", sa.String(64), nullable=False),
        sa.Column("owner", sa.String(300), nullable=False),
        sa.Column("token", sa.String(32), nullable=False),
        sa.Column("claimed_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("expires_at", sa.DateTime(timezone=True), nullable=False),
        sa.UniqueConstraint("assignment", "student", "notebook_sha256", "grading_key",
                            name="uq_claims_submission"),
    )


def downgrade() -> None:
    op.drop_table("claims")
