"""masked loss: an image's mask (a grayscale PNG in storage, white trained and black not)

Revision ID: 0015
Revises: 0014
"""

import sqlalchemy as sa
from alembic import op

revision = "0015"
down_revision = "0014"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("images") as images:
        images.add_column(sa.Column("mask_key", sa.String(512), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("images") as images:
        images.drop_column("mask_key")
