"""alerts: the scope of a fleet's alert (one device or group) has a column of its own

Revision ID: 0010_alert_scope
Revises: 0009_integrity
Create Date: 2026-12-02

An alert of one device or group of a fleet deployment ("device gw-01", "group plant-a")
kept its scope after the deployment's name in the `deployment` column ("m device
gw-01"), so every lookup by the alert's deployment had to split it. The scope moves to
`scope` ("" for the whole deployment) and the index covers it. Only the rows that way
of storing wrote are moved: a space followed by "device " or "group " (a deployment name
never holds a space).
"""

import sqlalchemy as sa
from alembic import op

revision = "0010_alert_scope"
down_revision = "0009_integrity"
branch_labels = None
depends_on = None

# what follows the first space of the deployment column; the rows to move are those where
# it starts with "device " or "group " ("m device gw-01", "m group plant-a")
AFTER_SPACE = "substr(deployment, instr(deployment, ' ') + 1)"
SCOPED = (
    f"instr(deployment, ' ') > 0 AND (substr({AFTER_SPACE}, 1, 7) = 'device ' "
    f"OR substr({AFTER_SPACE}, 1, 6) = 'group ')"
)


def upgrade() -> None:
    with op.batch_alter_table("alert", schema=None) as batch_op:
        batch_op.add_column(sa.Column("scope", sa.String(), nullable=False, server_default=""))
        batch_op.drop_index("ix_alert_state")
    op.execute(
        f"UPDATE alert SET scope = {AFTER_SPACE}, "
        f"deployment = substr(deployment, 1, instr(deployment, ' ') - 1) WHERE {SCOPED}"
    )
    with op.batch_alter_table("alert", schema=None) as batch_op:
        batch_op.create_index("ix_alert_state", ["state", "deployment", "scope"], unique=False)


def downgrade() -> None:
    with op.batch_alter_table("alert", schema=None) as batch_op:
        batch_op.drop_index("ix_alert_state")
    op.execute("UPDATE alert SET deployment = deployment || ' ' || scope WHERE scope != ''")
    # SQLite's own DROP COLUMN (3.35+): copying the table would drop `alert` under the
    # foreign key of its history's rows (foreign keys are on during migrations)
    with op.batch_alter_table("alert", schema=None, recreate="never") as batch_op:
        batch_op.drop_column("scope")
    with op.batch_alter_table("alert", schema=None) as batch_op:
        batch_op.create_index("ix_alert_state", ["state", "deployment"], unique=False)
