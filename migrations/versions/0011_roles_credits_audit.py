"""roles, suspension and per-user limits on users; the credit ledger and what each job holds; the audit log of
admin actions; the workers' own heartbeats; a public
model hidden by moderation or suspension

Revision ID: 0011
Revises: 0010
"""

import sqlalchemy as sa
from alembic import op

revision = "0011"
down_revision = "0010"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("users") as users:
        users.add_column(sa.Column("role", sa.String(16), nullable=False, server_default="user"))
        users.add_column(sa.Column("suspended_reason", sa.Text, nullable=True))
        users.add_column(sa.Column("suspended_at", sa.DateTime(timezone=True), nullable=True))
        users.add_column(sa.Column("credits", sa.BigInteger, nullable=False, server_default="0"))
        users.add_column(sa.Column("granted_month", sa.String(7), nullable=True))
        users.add_column(sa.Column("max_running_jobs", sa.Integer, nullable=True))
        users.add_column(sa.Column("max_waiting_jobs", sa.Integer, nullable=True))
        users.create_check_constraint("ck_users_credits_not_negative", "credits >= 0")
    with op.batch_alter_table("jobs") as jobs:
        jobs.add_column(sa.Column("epoch_price", sa.BigInteger, nullable=False, server_default="0"))
        jobs.add_column(sa.Column("credits_held", sa.BigInteger, nullable=False, server_default="0"))
        jobs.add_column(sa.Column("charged_epochs", sa.Integer, nullable=False, server_default="0"))
        jobs.create_check_constraint("ck_jobs_credits_held_not_negative", "credits_held >= 0")
    with op.batch_alter_table("published_models") as models:
        models.add_column(sa.Column("hidden_reason", sa.Text, nullable=True))
    op.create_table(
        "credit_moves",
        sa.Column("id", sa.String(32), primary_key=True),
        sa.Column("user_id", sa.String(32), sa.ForeignKey("users.id", ondelete="CASCADE"), nullable=False),
        sa.Column("job_id", sa.String(32), nullable=True),
        sa.Column("kind", sa.String(16), nullable=False),
        sa.Column("amount", sa.BigInteger, nullable=False),
        sa.Column("balance", sa.BigInteger, nullable=False),
        sa.Column("note", sa.Text, nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
    )
    op.create_index("ix_credit_moves_user_id", "credit_moves", ["user_id", "created_at"])
    op.create_table(
        "audit_entries",
        sa.Column("id", sa.String(32), primary_key=True),
        sa.Column("actor_id", sa.String(32), nullable=True),
        sa.Column("actor_email", sa.String(320), nullable=False),
        sa.Column("action", sa.String(32), nullable=False),
        sa.Column("target_kind", sa.String(16), nullable=False),
        sa.Column("target_id", sa.String(32), nullable=False),
        sa.Column("reason", sa.Text, nullable=False),
        sa.Column("details", sa.JSON, nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
    )
    op.create_index("ix_audit_entries_created_at", "audit_entries", ["created_at"])
    op.create_table(
        "workers",
        sa.Column("name", sa.String(200), primary_key=True),
        sa.Column("queues", sa.JSON, nullable=False),
        sa.Column("gpus", sa.JSON, nullable=False),
        sa.Column("started_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("heartbeat_at", sa.DateTime(timezone=True), nullable=False),
    )


def downgrade() -> None:
    op.drop_table("workers")
    op.drop_index("ix_audit_entries_created_at", "audit_entries")
    op.drop_table("audit_entries")
    op.drop_index("ix_credit_moves_user_id", "credit_moves")
    op.drop_table("credit_moves")
    with op.batch_alter_table("published_models") as models:
        models.drop_column("hidden_reason")
    with op.batch_alter_table("jobs") as jobs:
        jobs.drop_constraint("ck_jobs_credits_held_not_negative", type_="check")
        for column in ("charged_epochs", "credits_held", "epoch_price"):
            jobs.drop_column(column)
    with op.batch_alter_table("users") as users:
        users.drop_constraint("ck_users_credits_not_negative", type_="check")
        for column in ("max_waiting_jobs", "max_running_jobs", "granted_month", "credits", "suspended_at",
                       "suspended_reason", "role"):
            users.drop_column(column)
