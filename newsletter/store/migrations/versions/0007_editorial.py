"""Editorial workflow: edition drafts and approvals, users, the audit log, content versions.

Existing editions keep their state (``sending``/``paused``/``done``/``cancelled``)
and work as before: the new edition columns are nullable or default to 0, and an
edition without ``content_hash`` is simply one that was never a draft.

Revision ID: 0007
Revises: 0005 (the lead re-chains it after 0006 at merge; it touches nothing 0006 adds)
"""

import sqlalchemy as sa
from alembic import op

from newsletter.store.tables import UTCDateTime

revision = "0007"
down_revision = "0006"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("editions") as batch:
        batch.add_column(sa.Column("content_hash", sa.String(64), nullable=True))
        batch.add_column(sa.Column("revision", sa.Integer, nullable=False, server_default="0"))
        batch.add_column(sa.Column("created_by", sa.String(64), nullable=True))
        batch.add_column(sa.Column("edited_by", sa.String(64), nullable=True))
        batch.add_column(sa.Column("edited_at", UTCDateTime, nullable=True))
        batch.add_column(sa.Column("approved_by", sa.String(64), nullable=True))
        batch.add_column(sa.Column("approved_at", UTCDateTime, nullable=True))
        batch.add_column(sa.Column("approved_hash", sa.String(64), nullable=True))
        batch.add_column(sa.Column("approved_content", sa.Text, nullable=True))
    op.create_table(
        "users",
        sa.Column("id", sa.Integer, primary_key=True),
        sa.Column("name", sa.String(64), nullable=False),
        sa.Column("email", sa.String(320), nullable=False),
        sa.Column("role", sa.String(16), nullable=False),
        sa.Column("password_hash", sa.String(200), nullable=True),
        sa.Column("disabled", sa.Boolean, nullable=False, server_default=sa.false()),
        sa.Column("created_at", UTCDateTime, nullable=False),
        sa.Column("updated_at", UTCDateTime, nullable=False),
        sa.UniqueConstraint("name", name="uq_users_name"),
    )
    op.create_table(
        "audit_log",
        sa.Column("id", sa.Integer, primary_key=True),
        sa.Column("at", UTCDateTime, nullable=False),
        sa.Column("actor", sa.String(64), nullable=True),
        sa.Column("interface", sa.String(16), nullable=False),
        sa.Column("action", sa.String(32), nullable=False),
        sa.Column("publication", sa.String(64), nullable=True),
        sa.Column(
            "edition_id", sa.Integer,
            sa.ForeignKey("editions.id", ondelete="CASCADE", name="fk_audit_log_edition_id_editions"),
            nullable=True,
        ),
        sa.Column("detail", sa.Text, nullable=True),
    )
    op.create_index("ix_audit_log_edition_id", "audit_log", ["edition_id"])
    op.create_table(
        "edition_versions",
        sa.Column("id", sa.Integer, primary_key=True),
        sa.Column(
            "edition_id", sa.Integer,
            sa.ForeignKey("editions.id", ondelete="CASCADE", name="fk_edition_versions_edition_id_editions"),
            nullable=False,
        ),
        sa.Column("hash", sa.String(64), nullable=False),
        sa.Column("content", sa.Text, nullable=False),
        sa.Column("created_at", UTCDateTime, nullable=False),
        sa.UniqueConstraint("edition_id", "hash", name="uq_edition_versions_edition_id"),
    )


def downgrade() -> None:
    op.drop_table("edition_versions")
    op.drop_index("ix_audit_log_edition_id", table_name="audit_log")
    op.drop_table("audit_log")
    op.drop_table("users")
    with op.batch_alter_table("editions") as batch:
        for name in ("approved_content", "approved_hash", "approved_at", "approved_by", "edited_at", "edited_by",
                     "created_by", "revision", "content_hash"):
            batch.drop_column(name)
