"""datasets: versioned data snapshots with contracts, and the forced flag on run inputs

Revision ID: 0002_datasets
Revises: 0001_foundation
Create Date: 2026-11-28
"""

import sqlalchemy as sa
from alembic import op

revision = "0002_datasets"
down_revision = "0001_foundation"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "dataset",
        sa.Column("name", sa.String(), nullable=False),
        sa.Column("source", sa.String(), nullable=False),
        sa.Column("timestamp_column", sa.String(), nullable=True),
        sa.Column("entity_columns", sa.String(), nullable=False),
        sa.Column("description", sa.String(), nullable=False),
        sa.Column("created_at", sa.Float(), nullable=False),
        sa.Column("current_version", sa.Integer(), nullable=True),
        sa.PrimaryKeyConstraint("name"),
    )
    op.create_table(
        "dataset_version",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("dataset_name", sa.String(), nullable=False),
        sa.Column("version", sa.Integer(), nullable=False),
        sa.Column("digest", sa.String(), nullable=False),
        sa.Column("status", sa.String(), nullable=False),
        sa.Column("rows", sa.Integer(), nullable=False),
        sa.Column("columns", sa.String(), nullable=False),
        sa.Column("sources", sa.String(), nullable=False),
        sa.Column("lake_path", sa.String(), nullable=False),
        sa.Column("snapshot_sha256", sa.String(), nullable=False),
        sa.Column("profile_hash", sa.String(), nullable=True),
        sa.Column("report", sa.String(), nullable=False),
        sa.Column("contract_sha256", sa.String(), nullable=True),
        sa.Column("created_at", sa.Float(), nullable=False),
        sa.Column("created_by", sa.String(), nullable=False),
        sa.ForeignKeyConstraint(["dataset_name"], ["dataset.name"], ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("dataset_name", "version", name="uq_dataset_version"),
    )
    with op.batch_alter_table("dataset_version", schema=None) as batch_op:
        batch_op.create_index("ix_dataset_version_digest", ["dataset_name", "digest"], unique=False)
    with op.batch_alter_table("run_input", schema=None) as batch_op:
        batch_op.add_column(
            sa.Column("forced", sa.Boolean(), nullable=False, server_default=sa.false())
        )


def downgrade() -> None:
    with op.batch_alter_table("run_input", schema=None) as batch_op:
        batch_op.drop_column("forced")
    op.drop_table("dataset_version")
    op.drop_table("dataset")
