"""Article images: a thumbnail URL and its alt text (issue 17).

Revision ID: 0008
Revises: 0005 (the lead re-chains after 0006/0007 at merge)
"""

import sqlalchemy as sa
from alembic import op

revision = "0008"
down_revision = "0007"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("articles") as batch:
        batch.add_column(sa.Column("image_url", sa.String(2000), nullable=False, server_default=""))
        batch.add_column(sa.Column("image_alt", sa.String(500), nullable=False, server_default=""))


def downgrade() -> None:
    with op.batch_alter_table("articles") as batch:
        batch.drop_column("image_alt")
        batch.drop_column("image_url")
