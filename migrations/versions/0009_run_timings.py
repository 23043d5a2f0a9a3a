"""run_timings: how long this server's finished training runs took, split into setup, steps and epoch ends, so
estimates are learned from the machine itself

Revision ID: 0009
Revises: 0008
"""

import sqlalchemy as sa
from alembic import op

revision = "0009"
down_revision = "0008"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "run_timings",
        sa.Column("id", sa.String(32), primary_key=True),
        sa.Column("family", sa.String(32), nullable=False),
        sa.Column("resolution", sa.String(16), nullable=False),
        sa.Column("batch_size", sa.Integer, nullable=False),
        sa.Column("steps", sa.Integer, nullable=False),
        sa.Column("epochs", sa.Integer, nullable=False),
        sa.Column("setup_s", sa.Float, nullable=False),
        sa.Column("step_s", sa.Float, nullable=False),
        sa.Column("epoch_s", sa.Float, nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
    )
    op.create_index("ix_run_timings_family", "run_timings", ["family", "resolution", "batch_size"])


def downgrade() -> None:
    op.drop_index("ix_run_timings_family", "run_timings")
    op.drop_table("run_timings")
