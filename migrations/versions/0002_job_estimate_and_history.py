"""jobs.estimated_s (the duration estimated at creation, for queue ETAs) and jobs.history (points for the charts)

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
    with op.batch_alter_table("jobs") as batch:
        batch.add_column(sa.Column("estimated_s", sa.Float(), nullable=True))
        batch.add_column(sa.Column("history", sa.JSON(), nullable=False, server_default="[]"))


def downgrade() -> None:
    with op.batch_alter_table("jobs") as batch:
        batch.drop_column("history")
        batch.drop_column("estimated_s")
