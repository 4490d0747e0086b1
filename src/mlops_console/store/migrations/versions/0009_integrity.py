"""integrity: runs carry their process and a heartbeat; datasets keep their reading options

Revision ID: 0009_integrity
Revises: 0008_schedule_state
Create Date: 2026-12-01

A run killed without a daemon stayed RUNNING forever. A run now records the pid and the
start time of the process that runs it (/proc/PID/stat field 22, so a reused pid is not
it) and a heartbeat it renews; a RUNNING run whose process is gone is marked when the
workspace is next opened. A dataset keeps how its files are read (delimiter, decimal
separator, NA spellings, encoding, date formats) so every ingest reads them the same way.
"""

import sqlalchemy as sa
from alembic import op

revision = "0009_integrity"
down_revision = "0008_schedule_state"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("run", schema=None) as batch_op:
        batch_op.add_column(sa.Column("pid", sa.Integer(), nullable=True))
        batch_op.add_column(sa.Column("pid_start", sa.Integer(), nullable=True))
        batch_op.add_column(sa.Column("heartbeat_at", sa.Float(), nullable=True))
    with op.batch_alter_table("dataset", schema=None) as batch_op:
        # JSON: {"delimiter", "decimal", "thousands", "na_values", "encoding", "date_formats"}
        batch_op.add_column(
            sa.Column("read_options", sa.String(), nullable=False, server_default="{}")
        )


def downgrade() -> None:
    with op.batch_alter_table("dataset", schema=None) as batch_op:
        batch_op.drop_column("read_options")
    with op.batch_alter_table("run", schema=None) as batch_op:
        batch_op.drop_column("heartbeat_at")
        batch_op.drop_column("pid_start")
        batch_op.drop_column("pid")
