"""placement: a job's GPUs (one process each) and its estimated peak memory per GPU

Revision ID: 0014
Revises: 0013
"""

import sqlalchemy as sa
from alembic import op

revision = "0014"
down_revision = "0013"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("jobs") as jobs:
        jobs.add_column(sa.Column("gpus", sa.Integer, nullable=False, server_default="1"))
        jobs.add_column(sa.Column("memory_mib", sa.Integer, nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("jobs") as jobs:
        jobs.drop_column("memory_mib")
        jobs.drop_column("gpus")
