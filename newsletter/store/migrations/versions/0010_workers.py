"""Many processes on one database: the worker registry, named leases (the
scheduler role) and the shared limits (token buckets, provider throttle pauses);
the claim index gains ``id``, so a claim reads one chunk, not every pending row.

Revision ID: 0010
Revises: 0006
"""

import sqlalchemy as sa
from alembic import op

from newsletter.store.tables import UTCDateTime

revision = "0010"
down_revision = "0009"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.drop_index("ix_deliveries_edition_status", table_name="deliveries")
    op.create_index("ix_deliveries_edition_status_id", "deliveries", ["edition_id", "status", "id"])
    op.create_table(
        "workers",
        sa.Column("id", sa.String(200), primary_key=True),
        sa.Column("role", sa.String(16), nullable=False),
        sa.Column("host", sa.String(200), nullable=False),
        sa.Column("pid", sa.Integer, nullable=False),
        sa.Column("version", sa.String(64), nullable=False),
        sa.Column("state", sa.String(16), nullable=False),
        sa.Column("lease_seconds", sa.Float, nullable=False),
        sa.Column("started_at", UTCDateTime, nullable=False),
        sa.Column("seen_at", UTCDateTime, nullable=False),
    )
    op.create_table(
        "leases",
        sa.Column("name", sa.String(64), primary_key=True),
        sa.Column("holder", sa.String(200), nullable=True),
        sa.Column("until", UTCDateTime, nullable=False),
        sa.Column("acquired_at", UTCDateTime, nullable=True),
    )
    op.create_table(
        "shared_limits",
        sa.Column("key", sa.String(300), primary_key=True),
        sa.Column("tokens", sa.Float, nullable=False),
        sa.Column("stamp", UTCDateTime, nullable=False),
        sa.Column("until", UTCDateTime, nullable=True),
        sa.Column("reason", sa.Text, nullable=True),
    )


def downgrade() -> None:
    op.drop_index("ix_deliveries_edition_status_id", table_name="deliveries")
    op.create_index("ix_deliveries_edition_status", "deliveries", ["edition_id", "status"])
    op.drop_table("shared_limits")
    op.drop_table("leases")
    op.drop_table("workers")
