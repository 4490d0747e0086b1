"""jobs: a typed outcome, and the lease of the process that runs a chain

Revision ID: 0007_job_lease_outcome
Revises: 0006_monitoring
Create Date: 2026-12-01
"""

import sqlalchemy as sa
from alembic import op

revision = "0007_job_lease_outcome"
down_revision = "0006_monitoring"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("job", schema=None) as batch_op:
        # succeeded, quarantined, gates_failed, cancelled, timed_out, interrupted, error
        batch_op.add_column(sa.Column("outcome", sa.String(), nullable=False, server_default=""))
        # the chain process's start time (/proc/PID/stat field 22): a reused pid is not it
        batch_op.add_column(sa.Column("pid_start", sa.Integer(), nullable=True))
        # renewed by the daemon that runs the chain; a chain whose lease ran out stops
        batch_op.add_column(sa.Column("lease_until", sa.Float(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("job", schema=None) as batch_op:
        batch_op.drop_column("lease_until")
        batch_op.drop_column("pid_start")
        batch_op.drop_column("outcome")
