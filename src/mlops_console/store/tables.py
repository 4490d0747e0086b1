"""The metadata tables, as SQLModel classes.

The schema itself is created and changed only by the Alembic migrations in
`store/migrations/versions`; a test checks that these classes and the migrated
database agree. Times are UTC epoch seconds (float).
"""

from __future__ import annotations

from sqlalchemy import Index, UniqueConstraint
from sqlmodel import Field, SQLModel


class Experiment(SQLModel, table=True):
    __tablename__ = "experiment"
    id: int | None = Field(default=None, primary_key=True)
    name: str = Field(unique=True)
    created_at: float


class Run(SQLModel, table=True):
    __tablename__ = "run"
    __table_args__ = (Index("ix_run_experiment_start", "experiment_id", "start_time"),)
    id: str = Field(primary_key=True)
    experiment_id: int = Field(foreign_key="experiment.id")
    name: str
    status: str  # RUNNING, FINISHED, FAILED, KILLED
    start_time: float
    end_time: float | None = None
    seed: int | None = None
    user: str = ""
    lineage: str = "{}"  # JSON: git, config and spec hashes, environment, seed
    pid: int | None = None  # the process running it, while RUNNING
    pid_start: int | None = None  # that process's start time (/proc/PID/stat field 22)
    heartbeat_at: float | None = None  # renewed while the run is alive


class Param(SQLModel, table=True):
    __tablename__ = "param"
    run_id: str = Field(foreign_key="run.id", primary_key=True, ondelete="CASCADE")
    key: str = Field(primary_key=True)
    value: str


class Tag(SQLModel, table=True):
    __tablename__ = "tag"
    run_id: str = Field(foreign_key="run.id", primary_key=True, ondelete="CASCADE")
    key: str = Field(primary_key=True)
    value: str


class Metric(SQLModel, table=True):
    """Every logged value of every metric (the series)."""

    __tablename__ = "metric"
    __table_args__ = (Index("ix_metric_run_key_step", "run_id", "key", "step"),)
    id: int | None = Field(default=None, primary_key=True)
    run_id: str = Field(foreign_key="run.id", ondelete="CASCADE")
    key: str
    value: float | None  # NULL stands for NaN
    step: int
    timestamp: float


class LatestMetric(SQLModel, table=True):
    """The value at the highest step of each metric, for search and ordering."""

    __tablename__ = "latest_metric"
    __table_args__ = (Index("ix_latest_metric_key_value", "key", "value"),)
    run_id: str = Field(foreign_key="run.id", primary_key=True, ondelete="CASCADE")
    key: str = Field(primary_key=True)
    value: float | None  # NULL stands for NaN
    step: int
    timestamp: float


class RunInput(SQLModel, table=True):
    """A dataset version a run read (its lineage)."""

    __tablename__ = "run_input"
    run_id: str = Field(foreign_key="run.id", primary_key=True, ondelete="CASCADE")
    name: str = Field(primary_key=True)
    version: str
    digest: str
    rows: int | None = None
    source: str = ""
    forced: bool = False  # the version broke its data contract and was accepted with --force


class RunArtifact(SQLModel, table=True):
    __tablename__ = "run_artifact"
    run_id: str = Field(foreign_key="run.id", primary_key=True, ondelete="CASCADE")
    name: str = Field(primary_key=True)
    hash: str
    size: int


class RegisteredModel(SQLModel, table=True):
    __tablename__ = "registered_model"
    name: str = Field(primary_key=True)
    description: str = ""
    created_at: float
    updated_at: float


class ModelVersion(SQLModel, table=True):
    __tablename__ = "model_version"
    __table_args__ = (UniqueConstraint("model_name", "version", name="uq_model_version"),)
    id: int | None = Field(default=None, primary_key=True)
    model_name: str = Field(foreign_key="registered_model.name", ondelete="CASCADE")
    version: int
    run_id: str | None = Field(default=None, foreign_key="run.id", ondelete="SET NULL")
    artifact_hash: str
    status: str = "ready"  # ready, archived
    signature: str = "{}"  # JSON: inputs and outputs
    metrics: str = "{}"  # JSON: metric name -> value at registration
    lineage: str = "{}"  # JSON: copied from the run, so it survives the run's deletion
    checks: str = "[]"  # JSON: model check results (filled by the testing stage)
    gates: str = "{}"  # JSON: the promotion gates evaluated at registration
    gates_passed: bool | None = None  # None: registered without gates (not by a pipeline)
    description: str = ""
    intended_use: str = ""
    created_at: float
    created_by: str = ""


class ModelAlias(SQLModel, table=True):
    __tablename__ = "model_alias"
    model_name: str = Field(
        foreign_key="registered_model.name", primary_key=True, ondelete="CASCADE"
    )
    alias: str = Field(primary_key=True)
    version: int


class AliasEvent(SQLModel, table=True):
    """Append-only history of every alias move: the answer to "what served when"."""

    __tablename__ = "alias_event"
    __table_args__ = (Index("ix_alias_event_model_alias_at", "model_name", "alias", "at"),)
    id: int | None = Field(default=None, primary_key=True)
    model_name: str
    alias: str
    kind: str  # set, rollback, remove
    from_version: int | None = None
    to_version: int | None = None
    at: float
    actor: str = ""
    reason: str = ""


class ObjectRef(SQLModel, table=True):
    """Who uses which artifact; `mlops gc` removes objects nothing refers to."""

    __tablename__ = "object_ref"
    __table_args__ = (Index("ix_object_ref_owner", "kind", "owner"),)
    hash: str = Field(primary_key=True)
    kind: str = Field(primary_key=True)  # run, model_version, ...
    owner: str = Field(primary_key=True)


class Dataset(SQLModel, table=True):
    __tablename__ = "dataset"
    name: str = Field(primary_key=True)
    source: str  # a path or glob, relative to the workspace unless absolute
    timestamp_column: str | None = None
    entity_columns: str = "[]"  # JSON list
    description: str = ""
    created_at: float
    current_version: int | None = None  # the latest accepted (or forced) version
    read_options: str = "{}"  # JSON: delimiter, decimal, thousands, na_values, encoding, ...


class DatasetVersion(SQLModel, table=True):
    """One immutable snapshot of a dataset, identified by the content hash of its files."""

    __tablename__ = "dataset_version"
    __table_args__ = (
        UniqueConstraint("dataset_name", "version", name="uq_dataset_version"),
        Index("ix_dataset_version_digest", "dataset_name", "digest"),
    )
    id: int | None = Field(default=None, primary_key=True)
    dataset_name: str = Field(foreign_key="dataset.name", ondelete="CASCADE")
    version: int
    digest: str  # sha256 over the sorted sha256 of the source files
    status: str  # accepted, quarantined, forced
    rows: int
    columns: str = "[]"  # JSON: [{name, type}]
    sources: str = "[]"  # JSON: [{path, sha256, size, mtime}]
    lake_path: str  # the Parquet snapshot, relative to .mlops/lake
    snapshot_sha256: str
    profile_hash: str | None = None  # artifact holding the profile JSON
    report: str = "[]"  # JSON: contract check, one entry per rule
    contract_sha256: str | None = None
    created_at: float
    created_by: str = ""


class Deployment(SQLModel, table=True):
    __tablename__ = "deployment"
    name: str = Field(primary_key=True)
    target: str
    model_name: str
    version: int
    canary_version: int | None = None
    canary_percent: float = 0.0
    status: str  # running, stopped, failed
    endpoint: str = ""
    config: str = "{}"  # JSON: host, port, runtime, ...
    created_at: float
    updated_at: float


class DeploymentEvent(SQLModel, table=True):
    """Append-only history of what each deployment served and why it changed."""

    __tablename__ = "deployment_event"
    __table_args__ = (Index("ix_deployment_event_name_at", "name", "at"),)
    id: int | None = Field(default=None, primary_key=True)
    name: str
    at: float
    action: str  # create, update, canary, promote, rollback, stop, failed
    from_version: int | None = None
    to_version: int | None = None
    detail: str = ""


class Job(SQLModel, table=True):
    """A unit of automated work: a chain (retrain, test, redeploy) or one of its steps."""

    __tablename__ = "job"
    __table_args__ = (Index("ix_job_status_created", "status", "created_at"),)
    id: int | None = Field(default=None, primary_key=True)
    kind: str  # chain, ingest, features, train, deploy, judge
    pipeline: str = ""
    chain_id: int | None = None  # the chain a step belongs to
    status: str  # queued, running, succeeded, failed, cancelled
    trigger: str = ""  # schedule, watch, manual, retry, recovery
    attempt: int = 1
    max_attempts: int = 1
    cancel_requested: bool = False
    detail: str = ""  # the outcome in one or two sentences
    result: str = "{}"  # JSON
    log_path: str = ""
    pid: int | None = None
    pid_start: int | None = None  # the process's start time, so a reused pid is not it
    lease_until: float | None = None  # renewed by the daemon; a chain past it stops
    outcome: str = ""  # succeeded, quarantined, gates_failed, cancelled, timed_out, ...
    created_at: float
    started_at: float | None = None
    ended_at: float | None = None


class Alert(SQLModel, table=True):
    """An alert of a monitoring rule on one deployment (or one device or group of a fleet
    deployment): open, acknowledged, resolved."""

    __tablename__ = "alert"
    __table_args__ = (Index("ix_alert_state", "state", "deployment", "scope"),)
    id: int | None = Field(default=None, primary_key=True)
    rule: str
    deployment: str  # the deployment's name, whatever the scope
    scope: str = ""  # "": the whole deployment; "device D" or "group G" of a fleet
    measure: str
    severity: str = "warning"
    state: str  # open, acknowledged, resolved
    value: float | None = None  # the last value measured
    threshold: float
    window: str = ""
    detail: str = ""
    action: str = "none"
    action_result: str = ""
    opened_at: float
    updated_at: float
    acknowledged_at: float | None = None
    acknowledged_by: str = ""
    resolved_at: float | None = None


class AlertEvent(SQLModel, table=True):
    """The history of an alert: opened, notified, notify_failed, action, acknowledged, resolved."""

    __tablename__ = "alert_event"
    __table_args__ = (Index("ix_alert_event_alert", "alert_id"),)
    id: int | None = Field(default=None, primary_key=True)
    alert_id: int = Field(foreign_key="alert.id")
    at: float
    kind: str
    detail: str = ""


class ScheduleState(SQLModel, table=True):
    """What a schedule keeps across daemon restarts; the schedule itself is the spec's."""

    __tablename__ = "schedule_state"
    id: str = Field(primary_key=True)  # PIPELINE:cron, PIPELINE:interval, PIPELINE:score-...
    last_run_at: float | None = None  # the fire time of the last run (or missed run)
    paused: bool | None = None  # set by `mlops schedules pause|resume`; None: as the spec says
    paused_spec: bool | None = None  # the spec's `paused` when that was set
    updated_at: float
