"""users.webhook_url / webhook_secret: where finished and failed jobs are announced; jobs.webhook_status: how the
announcement went; datasets.crop_family: the model family its crop boxes were made for

Revision ID: 0008
Revises: 0007
"""

import sqlalchemy as sa
from alembic import op

revision = "0008"
down_revision = "0007"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("users") as batch:
        batch.add_column(sa.Column("webhook_url", sa.String(2000), nullable=True))
        batch.add_column(sa.Column("webhook_secret", sa.String(64), nullable=True))
    with op.batch_alter_table("jobs") as batch:
        batch.add_column(sa.Column("webhook_status", sa.String(300), nullable=True))
    with op.batch_alter_table("datasets") as batch:
        batch.add_column(sa.Column("crop_family", sa.String(32), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("datasets") as batch:
        batch.drop_column("crop_family")
    with op.batch_alter_table("jobs") as batch:
        batch.drop_column("webhook_status")
    with op.batch_alter_table("users") as batch:
        batch.drop_column("webhook_secret")
        batch.drop_column("webhook_url")
