"""Errors a user can cause. Each message says what was wrong and what to do."""


class MlopsError(Exception):
    """Base of every error the CLI reports as a plain message (exit code 1)."""


class WorkspaceNotFound(MlopsError):
    pass


class WorkspaceError(MlopsError):
    """The workspace exists but cannot be used as it is (corrupt, too new, ...)."""


class ConfigError(MlopsError):
    pass


class ArtifactIntegrityError(MlopsError):
    """An artifact's bytes do not match its recorded sha256; it is never unpickled."""


class NotFound(MlopsError):
    pass


class Conflict(MlopsError):
    """The operation contradicts the current state (e.g. deleting an aliased version)."""


class InvalidName(MlopsError):
    """A name a user gave (dataset, model, deployment, ...) is not allowed as it is."""
