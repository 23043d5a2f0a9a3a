"""screenings (what the site's classifier said of each image users upload and workers render, and what an admin
decided), reports of public models, and strikes per account

Revision ID: 0012
Revises: 0011
"""

import sqlalchemy as sa
from alembic import op

revision = "0012"
down_revision = "0011"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("users") as users:
        users.add_column(sa.Column("strikes", sa.Integer, nullable=False, server_default="0"))
    op.create_table(
        "screenings",
        sa.Column("id", sa.String(32), primary_key=True),
        sa.Column("owner_id", sa.String(32), sa.ForeignKey("users.id", ondelete="CASCADE"), nullable=False),
        sa.Column("subject", sa.String(16), nullable=False),
        sa.Column("subject_id", sa.String(32), nullable=False),
        sa.Column("key", sa.String(512), nullable=False),
        sa.Column("name", sa.String(255), nullable=False),
        sa.Column("state", sa.String(16), nullable=False),
        sa.Column("reason", sa.Text, nullable=False),
        sa.Column("scores", sa.JSON, nullable=False),
        sa.Column("decided_by", sa.String(320), nullable=True),
        sa.Column("decided_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
    )
    op.create_index("ix_screenings_key", "screenings", ["key"], unique=True)
    op.create_index("ix_screenings_state", "screenings", ["state"])
    op.create_index("ix_screenings_subject_id", "screenings", ["subject_id"])
    op.create_table(
        "reports",
        sa.Column("id", sa.String(32), primary_key=True),
        sa.Column("model_id", sa.String(32), sa.ForeignKey("published_models.id", ondelete="CASCADE"),
                  nullable=False),
        sa.Column("reporter_id", sa.String(32), sa.ForeignKey("users.id", ondelete="CASCADE"), nullable=False),
        sa.Column("reason", sa.Text, nullable=False),
        sa.Column("state", sa.String(16), nullable=False),
        sa.Column("decided_by", sa.String(320), nullable=True),
        sa.Column("decision", sa.Text, nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("decided_at", sa.DateTime(timezone=True), nullable=True),
    )
    op.create_index("ix_reports_model_id", "reports", ["model_id"])
    op.create_index("ix_reports_state", "reports", ["state"])


def downgrade() -> None:
    op.drop_index("ix_reports_state", "reports")
    op.drop_index("ix_reports_model_id", "reports")
    op.drop_table("reports")
    op.drop_index("ix_screenings_subject_id", "screenings")
    op.drop_index("ix_screenings_state", "screenings")
    op.drop_index("ix_screenings_key", "screenings")
    op.drop_table("screenings")
    with op.batch_alter_table("users") as users:
        users.drop_column("strikes")
