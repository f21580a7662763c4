"""Several processes, one set of rules: the ``workers`` table is the one registry
(the old ``daemons`` heartbeat table goes), quotas count live claims (an index on
``deliveries.lease_until``), and a provider's webhook retry of a reading event is
stored once (``stats_events.event_id``, unique per source).

Revision ID: 0013
Revises: 0012
"""

import sqlalchemy as sa
from alembic import op

from newsletter.store.tables import UTCDateTime

revision = "0013"
down_revision = "0012"
branch_labels = None
depends_on = None


def upgrade() -> None:
    # Rows of running daemons need not move: every process registers in ``workers``
    # at its next heartbeat, and one still running old code stops writing nowhere it
    # can see (restart every process after upgrading, as after any migration).
    op.drop_table("daemons")
    op.create_index("ix_deliveries_lease_until", "deliveries", ["lease_until"])
    with op.batch_alter_table("stats_events") as batch:
        batch.add_column(sa.Column("event_id", sa.String(300), nullable=True))
        batch.create_unique_constraint("uq_stats_events_source_event_id", ["source", "event_id"])


def downgrade() -> None:
    with op.batch_alter_table("stats_events") as batch:
        batch.drop_constraint("uq_stats_events_source_event_id", type_="unique")
        batch.drop_column("event_id")
    op.drop_index("ix_deliveries_lease_until", table_name="deliveries")
    op.create_table(
        "daemons",
        sa.Column("id", sa.String(200), primary_key=True),
        sa.Column("host", sa.String(200), nullable=False),
        sa.Column("pid", sa.Integer, nullable=False),
        sa.Column("started_at", UTCDateTime, nullable=False),
        sa.Column("seen_at", UTCDateTime, nullable=False),
    )
