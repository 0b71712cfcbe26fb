"""Credentials are bound to their source's destination: each sealed field records the destination that is part
of its ciphertext's associated data. Existing rows keep NULL (the older binding) until the first start with the
master key re-seals them (`KeyVault.rebind_legacy`); a migration cannot decrypt.

Revision ID: 0003
Revises: 0002
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("source_secrets") as batch:
        batch.add_column(sa.Column("destination", sa.Text))


def downgrade() -> None:
    with op.batch_alter_table("source_secrets") as batch:
        batch.drop_column("destination")
