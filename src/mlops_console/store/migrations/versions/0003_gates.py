"""gates: promotion gate results on model versions

Revision ID: 0003_gates
Revises: 0002_datasets
Create Date: 2026-11-28
"""

import sqlalchemy as sa
from alembic import op

revision = "0003_gates"
down_revision = "0002_datasets"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("model_version", schema=None) as batch_op:
        batch_op.add_column(sa.Column("gates", sa.String(), nullable=False, server_default="{}"))
        batch_op.add_column(sa.Column("gates_passed", sa.Boolean(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("model_version", schema=None) as batch_op:
        batch_op.drop_column("gates_passed")
        batch_op.drop_column("gates")
