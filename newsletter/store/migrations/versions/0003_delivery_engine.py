"""Delivery engine: leases, recipient domains, unknown outcomes, bounce counts, edition notes.

Revision ID: 0003
Revises: 0002
"""

import sqlalchemy as sa
from alembic import op

from newsletter.store.tables import UTCDateTime

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("deliveries") as batch:
        batch.add_column(sa.Column("domain", sa.String(255), nullable=False, server_default=""))
        batch.add_column(sa.Column("lease_until", UTCDateTime, nullable=True))
        batch.add_column(sa.Column("unknown_outcomes", sa.Integer, nullable=False, server_default="0"))
    bind = op.get_bind()
    domain_sql = (
        "lower(substr(email, instr(email, '@') + 1))" if bind.dialect.name == "sqlite"
        else "lower(split_part(email, '@', 2))"
    )
    op.execute(f"UPDATE deliveries SET domain = {domain_sql}")
    op.create_index("ix_deliveries_status_updated_at", "deliveries", ["status", "updated_at"])
    with op.batch_alter_table("subscribers") as batch:
        batch.add_column(sa.Column("bounce_count", sa.Integer, nullable=False, server_default="0"))
    with op.batch_alter_table("editions") as batch:
        batch.add_column(sa.Column("note", sa.Text, nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("editions") as batch:
        batch.drop_column("note")
    with op.batch_alter_table("subscribers") as batch:
        batch.drop_column("bounce_count")
    op.drop_index("ix_deliveries_status_updated_at", "deliveries")
    with op.batch_alter_table("deliveries") as batch:
        batch.drop_column("unknown_outcomes")
        batch.drop_column("lease_until")
        batch.drop_column("domain")
