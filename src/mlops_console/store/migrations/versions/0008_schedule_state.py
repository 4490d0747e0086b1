"""schedules: their state of our own; APScheduler's pickled job store is dropped

Revision ID: 0008_schedule_state
Revises: 0007_job_lease_outcome
Create Date: 2026-12-01

APScheduler's SQLAlchemy job store unpickled `apscheduler_jobs.job_state` at every start,
so a workspace handed over with its `.mlops/` could run a planted pickle. The schedules
are rebuilt from the pipeline specs instead; what has to survive a restart (the last run,
a pause or resume given on the command line) is kept here, as plain columns.
"""

import sqlalchemy as sa
from alembic import op

revision = "0008_schedule_state"
down_revision = "0007_job_lease_outcome"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "schedule_state",
        sa.Column("id", sa.String(), nullable=False),
        sa.Column("last_run_at", sa.Float(), nullable=True),
        sa.Column("paused", sa.Boolean(), nullable=True),
        sa.Column("paused_spec", sa.Boolean(), nullable=True),
        sa.Column("updated_at", sa.Float(), nullable=False),
        sa.PrimaryKeyConstraint("id"),
    )
    # never read again (not even to carry its next run times over: reading is unpickling)
    op.execute("DROP TABLE IF EXISTS apscheduler_jobs")


def downgrade() -> None:
    op.drop_table("schedule_state")
