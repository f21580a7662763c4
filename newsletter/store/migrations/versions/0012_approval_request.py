"""承認依頼: an editor asks for approval of a draft (issue 14, the editor's desk).

Two nullable columns on ``editions``: who asked and when.  The edition stays a
``draft`` (the life cycle of editions/state.py is unchanged); the request is
dropped when the draft's content changes, when it is approved, or when the
editor withdraws it.  Existing rows simply have no request.

Revision ID: 0012
Revises: 0011
"""

import sqlalchemy as sa
from alembic import op

from newsletter.store.tables import UTCDateTime

revision = "0012"
down_revision = "0011"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("editions") as batch:
        batch.add_column(sa.Column("approval_requested_by", sa.String(64), nullable=True))
        batch.add_column(sa.Column("approval_requested_at", UTCDateTime, nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("editions") as batch:
        batch.drop_column("approval_requested_at")
        batch.drop_column("approval_requested_by")
