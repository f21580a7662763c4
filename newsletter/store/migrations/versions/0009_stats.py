"""Reading statistics: stats_events (opens, clicks, provider events) and stats_counts (pruned).

Revision ID: 0009
Revises: 0005
"""

import sqlalchemy as sa
from alembic import op

from newsletter.store.tables import UTCDateTime

revision = "0009"
down_revision = "0008"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "stats_events",
        sa.Column("id", sa.Integer, primary_key=True),
        sa.Column("edition_id", sa.Integer, sa.ForeignKey("editions.id", ondelete="CASCADE"), nullable=False),
        sa.Column("kind", sa.String(16), nullable=False),
        sa.Column("link", sa.Integer, nullable=True),
        sa.Column("article_id", sa.Integer, nullable=True),
        sa.Column("part", sa.String(8), nullable=True),
        sa.Column("fields", sa.String(500), nullable=True),
        sa.Column("reader", sa.String(40), nullable=True),
        sa.Column("subscriber_id", sa.Integer, sa.ForeignKey("subscribers.id", ondelete="CASCADE"), nullable=True),
        sa.Column("machine", sa.Boolean, nullable=False),
        sa.Column("reason", sa.String(32), nullable=True),
        sa.Column("via_proxy", sa.Boolean, nullable=False),
        sa.Column("source", sa.String(32), nullable=False),
        sa.Column("sent_at", UTCDateTime, nullable=True),
        sa.Column("at", UTCDateTime, nullable=False),
    )
    op.create_index("ix_stats_events_edition_id_kind", "stats_events", ["edition_id", "kind"])
    op.create_index("ix_stats_events_at", "stats_events", ["at"])
    op.create_table(
        "stats_counts",
        sa.Column("id", sa.Integer, primary_key=True),
        sa.Column("edition_id", sa.Integer, sa.ForeignKey("editions.id", ondelete="CASCADE"), nullable=False),
        sa.Column("kind", sa.String(16), nullable=False),
        sa.Column("link", sa.Integer, nullable=True),
        sa.Column("article_id", sa.Integer, nullable=True),
        sa.Column("part", sa.String(8), nullable=True),
        sa.Column("fields", sa.String(500), nullable=True),
        sa.Column("machine", sa.Boolean, nullable=False),
        sa.Column("via_proxy", sa.Boolean, nullable=False),
        sa.Column("hour", sa.Integer, nullable=True),
        sa.Column("events", sa.Integer, nullable=False),
        sa.Column("readers", sa.Integer, nullable=False),
    )
    op.create_index("ix_stats_counts_edition_id", "stats_counts", ["edition_id"])


def downgrade() -> None:
    op.drop_table("stats_counts")
    op.drop_table("stats_events")
