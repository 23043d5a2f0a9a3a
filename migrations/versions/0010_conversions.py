"""conversions: an epoch turned into a plain LoRA of a chosen rank (DoRA, LoHa and LoKr files are applied differently
by different tools; a plain LoRA is applied the same everywhere)

Revision ID: 0010
Revises: 0009
"""

import sqlalchemy as sa
from alembic import op

revision = "0010"
down_revision = "0009"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "conversions",
        sa.Column("id", sa.String(32), primary_key=True),
        sa.Column("owner_id", sa.String(32), sa.ForeignKey("users.id", ondelete="CASCADE"), nullable=False),
        sa.Column("job_id", sa.String(32), sa.ForeignKey("jobs.id", ondelete="CASCADE"), nullable=False),
        sa.Column("epoch_n", sa.Integer, nullable=False),
        sa.Column("rank", sa.Integer, nullable=False),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("file_key", sa.String(512), nullable=True),
        sa.Column("report", sa.JSON, nullable=False),
        sa.Column("error", sa.Text, nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
    )
    op.create_index("ix_conversions_owner_id", "conversions", ["owner_id"])
    op.create_index("ix_conversions_job_id", "conversions", ["job_id"])


def downgrade() -> None:
    op.drop_index("ix_conversions_job_id", "conversions")
    op.drop_index("ix_conversions_owner_id", "conversions")
    op.drop_table("conversions")
