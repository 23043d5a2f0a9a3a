"""the gallery: a published model's cover, showcase images, license, recommended weight, tags and download count

Revision ID: 0013
Revises: 0012
"""

import sqlalchemy as sa
from alembic import op

revision = "0013"
down_revision = "0012"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("published_models") as models:
        models.add_column(sa.Column("cover_id", sa.String(32), nullable=True))
        models.add_column(sa.Column("license", sa.String(64), nullable=False, server_default=""))
        models.add_column(sa.Column("recommended_weight", sa.Float, nullable=False, server_default="0.8"))
        models.add_column(sa.Column("tags", sa.JSON, nullable=False, server_default="[]"))
        models.add_column(sa.Column("downloads", sa.Integer, nullable=False, server_default="0"))
        models.add_column(sa.Column("family", sa.String(32), nullable=False, server_default=""))
        models.add_column(sa.Column("keywords", sa.Text, nullable=False, server_default=""))
    op.create_table(
        "showcase_items",
        sa.Column("id", sa.String(32), primary_key=True),
        sa.Column("model_id", sa.String(32), sa.ForeignKey("published_models.id", ondelete="CASCADE"),
                  nullable=False),
        sa.Column("key", sa.String(512), nullable=False),
        sa.Column("source", sa.String(16), nullable=False),
        sa.Column("position", sa.Integer, nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
    )
    op.create_index("ix_showcase_items_model_id", "showcase_items", ["model_id"])


def downgrade() -> None:
    op.drop_index("ix_showcase_items_model_id", "showcase_items")
    op.drop_table("showcase_items")
    with op.batch_alter_table("published_models") as models:
        for column in ("keywords", "family", "downloads", "tags", "recommended_weight", "license", "cover_id"):
            models.drop_column(column)
